//! Parser tests: good lines, every strict prefix (need more), bad lines (exact error), and
//! properties over arbitrary bytes and arbitrary splits.

use proptest::prelude::*;

use super::parse;
use super::reply::TextReply;
use crate::protocol::command::{Cas, Command, Exptime, Refusal, SetMode, Tunable};
use crate::protocol::{ErrorKind, Limits, Parsed, Request};

fn limits() -> Limits {
    Limits::default()
}

fn done(input: &[u8]) -> (Request<'_>, usize) {
    match parse(input, &Limits::default()) {
        Parsed::Done(r, n) => (r, n),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

/// The text command of a complete line.
fn command(input: &[u8]) -> (Command<'_>, TextReply, usize) {
    match done(input) {
        (Request::Text(c, reply), n) => (c, reply, n),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

fn error(input: &[u8]) -> ErrorKind {
    match parse(input, &limits()) {
        Parsed::Invalid(e) => e.kind,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
    }
}

#[test]
fn set_parses_with_its_data() {
    let input = b"set k 5 10 3 noreply\r\nabc\r\nget k\r\n";
    let (c, reply, n) = command(input);
    assert_eq!(n, 27);
    assert!(reply.noreply);
    match c {
        Command::Store(s) => {
            assert_eq!(s.mode, SetMode::Set);
            assert_eq!(
                (s.key, s.flags, s.exptime, s.data, s.compare_cas),
                (&b"k"[..], 5, Exptime(10), &b"abc"[..], None)
            );
        }
        other => panic!("{other:?}"),
    }
    match command(b"cas k 0 -1 1 77\r\nx\r\n").0 {
        Command::Store(s) => assert_eq!((s.exptime, s.compare_cas), (Exptime(-1), Some(Cas(77)))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_strict_prefix_needs_more() {
    let requests: &[&[u8]] = &[
        b"set k 0 0 3\r\nabc\r\n",
        b"cas k 0 0 3 99\r\nabc\r\n",
        b"get a b c\r\n",
        b"gat 10 a\r\n",
        b"incr k 1\r\n",
        b"delete k\r\n",
        b"mg k v t\r\n",
        b"ms k 2 T10\r\nhi\r\n",
        b"ma k D5\r\n",
        b"md k q\r\n",
        b"mn\r\n",
        b"stats\r\n",
    ];
    for req in requests {
        for cut in 0..req.len() {
            match parse(&req[..cut], &limits()) {
                Parsed::Incomplete { .. } => {}
                other => panic!("{:?} cut at {cut}: {other:?}", String::from_utf8_lossy(req)),
            }
        }
        let (_, n) = done(req);
        assert_eq!(n, req.len());
    }
}

#[test]
fn bad_lines_get_memcached_errors() {
    assert_eq!(error(b"bogus\r\n"), ErrorKind::UnknownCommand);
    assert_eq!(error(b"set k 0 0\r\n"), ErrorKind::UnknownCommand);
    assert_eq!(error(b"set k x 0 1\r\n"), ErrorKind::BadFormat);
    assert_eq!(error(b"set k 0 0 1\r\nxy\r\n"), ErrorKind::BadDataChunk);
    assert_eq!(error(b"incr k x\r\n"), ErrorKind::InvalidDelta);
    assert_eq!(error(b"touch k x\r\n"), ErrorKind::InvalidExptime);
    assert_eq!(error(b"gat x k\r\n"), ErrorKind::InvalidExptime);
    assert_eq!(error(b"delete k 5\r\n"), ErrorKind::DeleteUsage);
    assert_eq!(error(b"GET / HTTP/1.1\r\n"), ErrorKind::Http);
    assert_eq!(error(&[b'x'; 2049]), ErrorKind::LineTooLong);
    assert_eq!(error(b"mg k v v\r\n"), ErrorKind::MetaDuplicateFlag);
    assert_eq!(
        error(b"md k v v\r\n"),
        ErrorKind::MetaInvalidOrDuplicateFlag
    );
    assert_eq!(error(b"ms k 2 MZ\r\nhi\r\n"), ErrorKind::MetaSetMode);
}

#[test]
fn too_large_is_a_request_that_swallows() {
    let (c, _, n) = command(b"set k 0 0 2000000\r\n");
    assert_eq!(n, 19);
    match c {
        Command::TooLarge(t) => assert_eq!((t.swallow, t.drop_old), (2_000_002, true)),
        other => panic!("{other:?}"),
    }
    // Only a refused set drops the old value.
    match command(b"add k 0 0 2000000\r\n").0 {
        Command::TooLarge(t) => assert!(!t.drop_old),
        other => panic!("{other:?}"),
    }
    match command(b"cas k 0 0 2000000 1\r\n").0 {
        Command::TooLarge(t) => assert!(!t.drop_old),
        other => panic!("{other:?}"),
    }
    match done(b"ms k 2000000 T0\r\n").0 {
        Request::Meta(m) => assert_eq!(m.too_large, Some((2_000_002, Refusal::TooLarge))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_value_waiting_tells_its_length_and_one_without_room_is_refused() {
    let whole = |input: &[u8]| match parse(input, &limits()) {
        Parsed::Incomplete { whole } => whole,
        other => panic!("{other:?}"),
    };
    assert_eq!(whole(b"set k 0 0 100000\r\nabc"), Some(18 + 100_002));
    assert_eq!(whole(b"ms k 100000 T0\r\n"), Some(16 + 100_002));
    assert_eq!(whole(b"set k 0 0 100000"), None);
    assert_eq!(whole(b"get k"), None);
    let tight = Limits {
        room: 1000,
        ..limits()
    };
    match parse(b"set k 0 0 100000\r\n", &tight) {
        Parsed::Done(Request::Text(Command::TooLarge(t), _), 18) => {
            assert_eq!(
                (t.why, t.drop_old, t.swallow),
                (Refusal::NoMemory, true, 100_002)
            )
        }
        other => panic!("{other:?}"),
    }
    match parse(b"ms k 100000\r\n", &tight) {
        Parsed::Done(Request::Meta(m), 13) => {
            assert_eq!(m.too_large, Some((100_002, Refusal::NoMemory)))
        }
        other => panic!("{other:?}"),
    }
    // One memcached would chain from its chunks fails as memcached's does, partway.
    match parse(b"set k 0 0 600000\r\n", &tight) {
        Parsed::Done(Request::Text(Command::TooLarge(t), _), _) => {
            assert_eq!(t.why, Refusal::NoMemoryReading)
        }
        other => panic!("{other:?}"),
    }
    // Over -I is said as such, room or not.
    match parse(b"set k 0 0 2000000\r\n", &tight) {
        Parsed::Done(Request::Text(Command::TooLarge(t), _), _) => {
            assert_eq!(t.why, Refusal::TooLarge)
        }
        other => panic!("{other:?}"),
    }
    // What fits the room is taken as always.
    assert!(matches!(
        parse(b"set k 0 0 2\r\nhi\r\n", &tight),
        Parsed::Done(Request::Text(Command::Store(_), _), 17)
    ));
}

/// Parses a whole stream as a connection would, returning a printable trace.
fn trace(stream: &[u8], chunks: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut cuts = chunks.iter().copied().chain(std::iter::once(usize::MAX));
    let mut swallow = 0usize;
    loop {
        // Feed the next chunk.
        let take = cuts.next().unwrap_or(usize::MAX).min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + take]);
        pos += take;
        loop {
            if swallow > 0 {
                let n = swallow.min(buf.len());
                buf.drain(..n);
                swallow -= n;
                if swallow > 0 {
                    break;
                }
            }
            if buf.is_empty() {
                break;
            }
            match parse(&buf, &limits()) {
                Parsed::Done(r, n) => {
                    let s = format!("{r:?}");
                    match r {
                        Request::Text(Command::TooLarge(t), _) => swallow = t.swallow,
                        Request::Meta(m) => swallow = m.too_large.map_or(0, |t| t.0),
                        _ => {}
                    }
                    out.push(s);
                    buf.drain(..n);
                }
                Parsed::Incomplete { .. } => break,
                Parsed::Invalid(e) => {
                    out.push(format!("{e:?}"));
                    if e.kind.next() == crate::protocol::Next::Close {
                        return out;
                    }
                    buf.drain(..e.consumed.min(buf.len()));
                    swallow = e.swallow;
                }
            }
        }
        if pos >= stream.len() {
            return out;
        }
    }
}

fn request_stream() -> impl Strategy<Value = Vec<u8>> {
    let one = prop_oneof![
        Just(b"set k 0 0 3\r\nabc\r\n".to_vec()),
        Just(b"get k j\r\n".to_vec()),
        Just(b"mg k v t c\r\n".to_vec()),
        Just(b"ms k 2 T5\r\nhi\r\n".to_vec()),
        Just(b"incr k 1\r\n".to_vec()),
        Just(b"bogus line\r\n".to_vec()),
        Just(b"set k 0 0 1\r\nxyz\r\n".to_vec()),
        Just(b"set k 0 0 5000000\r\n".to_vec()),
        "[a-z]{1,8}".prop_map(|k| format!("get {k}\n").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    proptest::collection::vec(one, 1..12).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn any_bytes_never_panic_and_consume_within_bounds(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        match parse(&input, &limits()) {
            Parsed::Done(_, n) => prop_assert!(n <= input.len() && n > 0),
            Parsed::Invalid(e) => prop_assert!(e.consumed <= input.len()),
            Parsed::Incomplete { .. } => {}
        }
    }

    #[test]
    fn splitting_a_stream_anywhere_gives_the_same_requests(
        stream in request_stream(),
        chunks in proptest::collection::vec(1usize..16, 0..40),
    ) {
        let whole = trace(&stream, &[]);
        let split = trace(&stream, &chunks);
        prop_assert_eq!(whole, split);
    }
}

#[test]
fn metadump_classes_as_memcached_checks_them() {
    let dump = |line: &[u8]| match command(line).0 {
        Command::Metadump { all } => Some(all),
        Command::Crawl { reply } => {
            assert_eq!(reply, b"BADCLASS invalid class id\r\n");
            None
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(dump(b"lru_crawler metadump all\r\n"), Some(true));
    assert_eq!(dump(b"lru_crawler metadump hash\r\n"), Some(true));
    assert_eq!(dump(b"lru_crawler metadump 2,1,\r\n"), Some(true));
    assert_eq!(dump(b"lru_crawler metadump 2,63\r\n"), Some(false));
    for bad in ["0", "64", "1,x", "-1", ""] {
        let line = format!("lru_crawler metadump {bad}\r\n");
        if bad.is_empty() {
            // No class at all is a different command shape: memcached says ERROR.
            assert!(
                matches!(command(line.as_bytes()).0, Command::Fixed { reply } if reply == b"ERROR\r\n")
            );
        } else {
            assert_eq!(dump(line.as_bytes()), None, "{bad}");
        }
    }
}

#[test]
fn pipelined_get_keys_walks_read_lines_only() {
    use super::retrieval::pipelined_get_keys;
    let mut out: [&[u8]; 64] = [&[]; 64];
    let mut keys = |b: &'static [u8]| {
        let n = pipelined_get_keys(b, &mut out);
        out[..n].to_vec()
    };
    assert_eq!(
        keys(b"get a  b\r\nmg c v t\r\ngets d\nset e 0 0 1\r\nx\r\nget f\r\n"),
        [&b"a"[..], b"b", b"c", b"d"]
    );
    // An incomplete line, or a verb without arguments, ends the walk.
    assert_eq!(keys(b"mg a v\r\nmg b"), [&b"a"[..]]);
    assert!(keys(b"mn\r\nmg a\r\n").is_empty());
    // No more keys than fit.
    let many: &'static [u8] = "mg k v\r\n".repeat(100).leak().as_bytes();
    assert_eq!(keys(many).len(), 64);
}

#[test]
fn crawler_and_reassign_arguments_as_memcached_checks_them() {
    let crawl = |line: &str| match command(line.as_bytes()).0 {
        Command::Crawl { reply } => String::from_utf8_lossy(reply).into_owned(),
        Command::Fixed { reply } => String::from_utf8_lossy(reply).into_owned(),
        // Answered OK once the setting is kept.
        Command::Tune(_) => "OK\r\n".to_string(),
        other => panic!("{other:?}"),
    };
    for (arg, reply) in [
        ("crawl all", "OK"),
        ("crawl 1,63", "OK"),
        ("crawl 64", "BADCLASS invalid class id"),
        ("crawl ,", "NOTSTARTED no items to crawl"),
        ("crawl hash", "ERROR an unknown error happened"),
        ("metadump ,", "NOTSTARTED no items to crawl"),
        ("sleep 1000000", "OK"),
        (
            "sleep 1000001",
            "CLIENT_ERROR sleep must be one second or less",
        ),
        ("sleep 4294967297", "OK"),
        ("tocrawl -1", "CLIENT_ERROR bad command line format"),
        ("enable x", "ERROR"),
    ] {
        assert_eq!(
            crawl(&format!("lru_crawler {arg}\r\n")),
            format!("{reply}\r\n"),
            "{arg}"
        );
    }
    assert!(matches!(
        command(b"lru_crawler enable\r\n").0,
        Command::Crawler { enable: true }
    ));
    // Read as memcached reads them: 64 bits kept to the low 32.
    assert!(matches!(
        command(b"lru_crawler sleep 4294967297\r\n").0,
        Command::Tune(Tunable::CrawlerSleep(1))
    ));
    assert!(matches!(
        command(b"lru_crawler tocrawl 7\r\n").0,
        Command::Tune(Tunable::CrawlerToCrawl(7))
    ));
    let reassign = |line: &[u8]| match command(line).0 {
        Command::SlabsReassign { classes } => classes,
        other => panic!("{other:?}"),
    };
    assert_eq!(reassign(b"slabs reassign -1 4294967297\r\n"), Some((-1, 1)));
    assert_eq!(reassign(b"slabs reassign 1 2x\r\n"), None);
}

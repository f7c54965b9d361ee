//! Text protocol conformance: (bytes sent, exact bytes expected) over a real socket, one test
//! per protocol.txt section. Expected replies are memcached 1.6's.

mod common;

use common::{cas_in, InProc};

fn table(cases: &[(&str, &str)]) {
    let s = InProc::default();
    let mut c = s.client();
    for (req, want) in cases {
        c.expect(req.as_bytes(), want.as_bytes());
    }
}

#[test]
fn storage_commands() {
    table(&[
        ("set a 0 0 1\r\nx\r\n", "STORED\r\n"),
        ("get a\r\n", "VALUE a 0 1\r\nx\r\nEND\r\n"),
        ("add a 0 0 1\r\ny\r\n", "NOT_STORED\r\n"),
        ("add b 5 0 1\r\ny\r\n", "STORED\r\n"),
        ("replace nokey 0 0 1\r\nz\r\n", "NOT_STORED\r\n"),
        ("replace a 7 0 1\r\nz\r\n", "STORED\r\n"),
        (
            "get a b\r\n",
            "VALUE a 7 1\r\nz\r\nVALUE b 5 1\r\ny\r\nEND\r\n",
        ),
        ("append a 0 0 2\r\n12\r\n", "STORED\r\n"),
        ("prepend a 0 0 2\r\n00\r\n", "STORED\r\n"),
        ("get a\r\n", "VALUE a 7 5\r\n00z12\r\nEND\r\n"),
        ("append nokey 0 0 1\r\nx\r\n", "NOT_STORED\r\n"),
        ("prepend nokey 0 0 1\r\nx\r\n", "NOT_STORED\r\n"),
        ("set e 0 0 0\r\n\r\n", "STORED\r\n"),
        ("get e\r\n", "VALUE e 0 0\r\n\r\nEND\r\n"),
        ("set f 4294967295 0 1\r\nx\r\n", "STORED\r\n"),
        ("get f\r\n", "VALUE f 4294967295 1\r\nx\r\nEND\r\n"),
        ("set q 0 0 1 noreply\r\nx\r\n", ""),
        ("get q\r\n", "VALUE q 0 1\r\nx\r\nEND\r\n"),
    ]);
}

#[test]
fn storage_errors() {
    let long_key = "k".repeat(251);
    table(&[
        ("set a 0 0\r\n", "ERROR\r\n"),
        ("set a 0 0 1 2 3\r\n", "ERROR\r\n"),
        // A bad header is answered at once; its data line is then read as a command.
        (
            "set a b c d\r\nx\r\n",
            "CLIENT_ERROR bad command line format\r\nERROR\r\n",
        ),
        (
            "set a 0 0 -1\r\n",
            "CLIENT_ERROR bad command line format\r\n",
        ),
        (
            &format!("set {long_key} 0 0 1\r\nx\r\n"),
            "CLIENT_ERROR bad command line format\r\nERROR\r\n",
        ),
        // The block is read by length: "abc" then "d\r" is no CRLF; the lone "\n" is an
        // empty command line.
        (
            "set a 0 0 3\r\nabcd\r\n",
            "CLIENT_ERROR bad data chunk\r\nERROR\r\n",
        ),
        ("set a 0 0 3 noreply\r\nabcd\r\n", "ERROR\r\n"),
        (
            "set a 0 0 1\r\nxx\r\n",
            "CLIENT_ERROR bad data chunk\r\nERROR\r\n",
        ),
        // As in memcached, only a key's length is checked: control bytes are allowed.
        (
            "set \x10k\x01ey 0 0 1\r\nx\r\nget \x10k\x01ey\r\n",
            "STORED\r\nVALUE \x10k\x01ey 0 1\r\nx\r\nEND\r\n",
        ),
        // memcached's int overflows: lengths near i32::MAX are bad format, not too large
        // (and no data is waited for); larger numbers keep their low 32 bits.
        (
            "set k 0 0 2147483647\r\n",
            "CLIENT_ERROR bad command line format\r\n",
        ),
        (
            "set k 0 0 4294967297\r\nx\r\nget k\r\n",
            "STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n",
        ),
        (
            "set k 0 -99999999999 1\r\nx\r\nget k\r\n",
            "STORED\r\nEND\r\n",
        ),
    ]);
}

#[test]
fn cas() {
    let s = InProc::default();
    let mut c = s.client();
    c.expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    let out = String::from_utf8(c.call_until(b"gets a\r\n", b"END\r\n")).unwrap();
    let cas = cas_in(out.as_bytes());
    assert!(cas > 0);
    c.expect(
        format!("cas a 0 0 1 {}\r\ny\r\n", cas + 1).as_bytes(),
        b"EXISTS\r\n",
    );
    c.expect(
        format!("cas a 0 0 1 {cas}\r\ny\r\n").as_bytes(),
        b"STORED\r\n",
    );
    c.expect(
        format!("cas a 0 0 1 {cas}\r\nz\r\n").as_bytes(),
        b"EXISTS\r\n",
    );
    c.expect(b"cas nokey 0 0 1 1\r\nx\r\n", b"NOT_FOUND\r\n");
    c.expect(b"cas a 0 0 1\r\nx\r\n", b"ERROR\r\nERROR\r\n");
    c.expect(
        b"cas a 0 0 1 abc\r\nx\r\n",
        b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
    );
    // A new version always gets a new, larger CAS.
    let out = String::from_utf8(c.call_until(b"gets a\r\n", b"END\r\n")).unwrap();
    let cas2: u64 = out
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cas2 > cas);
    assert_eq!(c.stat("cas_hits"), "1");
    assert_eq!(c.stat("cas_badval"), "2");
    assert_eq!(c.stat("cas_misses"), "1");
}

/// memcached's CAS is one counter for the whole server, so no two items share a value, and
/// its own suite checks that two keys set back to back get different ones.
#[test]
fn cas_values_differ_across_keys() {
    let s = InProc::default();
    let mut c = s.client();
    let mut req = Vec::new();
    let mut gets = b"gets".to_vec();
    for i in 0..256 {
        req.extend_from_slice(format!("set k{i} 0 0 1\r\nx\r\n").as_bytes());
        gets.extend_from_slice(format!(" k{i}").as_bytes());
    }
    gets.extend_from_slice(b"\r\n");
    c.expect(&req, "STORED\r\n".repeat(256).as_bytes());
    let out = String::from_utf8(c.call_until(&gets, b"END\r\n")).unwrap();
    let mut seen: Vec<u64> = out
        .lines()
        .filter(|l| l.starts_with("VALUE "))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seen.len(), 256);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 256, "two keys share a CAS value");
}

#[test]
fn retrieval() {
    let long_key = "k".repeat(251);
    table(&[
        ("get\r\n", "ERROR\r\n"),
        ("gets\r\n", "ERROR\r\n"),
        ("get nokey\r\n", "END\r\n"),
        ("set a 0 0 1\r\nx\r\n", "STORED\r\n"),
        (
            "get a a nokey a\r\n",
            "VALUE a 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
        ),
        // One bad key fails the whole multiget.
        (
            &format!("get a {long_key}\r\n"),
            "CLIENT_ERROR bad command line format\r\n",
        ),
        (
            "get  a   a\r\n",
            "VALUE a 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
        ),
    ]);
}

#[test]
fn multiget_of_hundreds_of_keys() {
    let s = InProc::default();
    let mut c = s.client();
    let mut req = String::from("get");
    let mut want = String::new();
    let mut sets = String::new();
    for i in 0..600 {
        sets.push_str(&format!("set key{i} {i} 0 3\r\nv{:02}\r\n", i % 100));
        req.push_str(&format!(" key{i}"));
        want.push_str(&format!("VALUE key{i} {i} 3\r\nv{:02}\r\n", i % 100));
    }
    c.expect(sets.as_bytes(), "STORED\r\n".repeat(600).as_bytes());
    req.push_str("\r\n");
    want.push_str("END\r\n");
    assert!(
        req.len() > 2048,
        "the line must exceed the plain line limit"
    );
    c.expect(req.as_bytes(), want.as_bytes());
}

#[test]
fn deletion() {
    table(&[
        ("delete a\r\n", "NOT_FOUND\r\n"),
        ("set a 0 0 1\r\nx\r\n", "STORED\r\n"),
        ("delete a\r\n", "DELETED\r\n"),
        ("get a\r\n", "END\r\n"),
        ("delete a 0\r\n", "NOT_FOUND\r\n"),
        (
            "delete a 1\r\n",
            "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
        ),
        ("delete a noreply\r\n", ""),
        ("delete a 0 noreply\r\n", ""),
        ("delete a b c d\r\n", "ERROR\r\n"),
        ("delete\r\n", "ERROR\r\n"),
    ]);
}

#[test]
fn increment_decrement() {
    table(&[
        ("incr nokey 1\r\n", "NOT_FOUND\r\n"),
        ("set a 0 0 1\r\n1\r\n", "STORED\r\n"),
        ("incr a 5\r\n", "6\r\n"),
        ("decr a 100\r\n", "0\r\n"),
        (
            "incr a abc\r\n",
            "CLIENT_ERROR invalid numeric delta argument\r\n",
        ),
        (
            "incr a -1\r\n",
            "CLIENT_ERROR invalid numeric delta argument\r\n",
        ),
        ("set b 0 0 20\r\n18446744073709551615\r\n", "STORED\r\n"),
        ("incr b 1\r\n", "0\r\n"),
        (
            "get b\r\n",
            "VALUE b 0 20\r\n0                   \r\nEND\r\n",
        ),
        ("set c 0 0 2\r\n10\r\n", "STORED\r\n"),
        ("decr c 1\r\n", "9\r\n"),
        ("get c\r\n", "VALUE c 0 2\r\n9 \r\nEND\r\n"),
        ("incr c 100\r\n", "109\r\n"),
        ("get c\r\n", "VALUE c 0 3\r\n109\r\nEND\r\n"),
        ("set d 0 0 3\r\nabc\r\n", "STORED\r\n"),
        (
            "incr d 1\r\n",
            "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        ("incr d 1 noreply\r\n", ""),
        ("incr\r\n", "ERROR\r\n"),
        ("incr a\r\n", "ERROR\r\n"),
    ]);
}

#[test]
fn touch_and_gat() {
    table(&[
        ("touch a 10\r\n", "NOT_FOUND\r\n"),
        ("set a 0 0 1\r\nx\r\n", "STORED\r\n"),
        ("touch a 10\r\n", "TOUCHED\r\n"),
        (
            "touch a abc\r\n",
            "CLIENT_ERROR invalid exptime argument\r\n",
        ),
        ("touch a\r\n", "ERROR\r\n"),
        ("gat 10 a nokey\r\n", "VALUE a 0 1\r\nx\r\nEND\r\n"),
        ("gat abc a\r\n", "CLIENT_ERROR invalid exptime argument\r\n"),
        ("gat 10\r\n", "END\r\n"),
        ("gats\r\n", "ERROR\r\n"),
    ]);
}

/// A touch keeps the CAS on a server without peers, as in memcached: `gets`, a touch,
/// then `cas` stores (the differential test compares the replies with memcached's).
#[test]
fn touch_and_gat_keep_the_cas_alone() {
    let s = InProc::default();
    let mut c = s.client();
    c.expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    let before = cas_in(&c.call_until(b"gets a\r\n", b"END\r\n"));
    c.expect(b"touch a 100\r\n", b"TOUCHED\r\n");
    let gat = cas_in(&c.call_until(b"gats 100 a\r\n", b"END\r\n"));
    assert_eq!(gat, before, "gats answers the CAS from before the touches");
    c.expect(
        format!("cas a 0 0 1 {before}\r\ny\r\n").as_bytes(),
        b"STORED\r\n",
    );
}

/// Replicating, a new expiry is a change like any other, so replication orders it: a new
/// version, and so a new CAS (see the README).
#[test]
fn touch_and_gat_give_a_new_cas_when_replicating() {
    let mut config = repcached::config::Config::for_tests();
    config.store.tombstone_secs = 3600;
    let s = InProc::start(config);
    let mut c = s.client();
    c.expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    let before = cas_in(&c.call_until(b"gets a\r\n", b"END\r\n"));
    c.expect(b"touch a 100\r\n", b"TOUCHED\r\n");
    c.expect(
        format!("cas a 0 0 1 {before}\r\ny\r\n").as_bytes(),
        b"EXISTS\r\n",
    );
    let touched = cas_in(&c.call_until(b"gets a\r\n", b"END\r\n"));
    assert!(touched > before);
    let gat = cas_in(&c.call_until(b"gats 100 a\r\n", b"END\r\n"));
    assert!(gat > touched, "gats answers the CAS it made");
    c.expect(
        format!("cas a 0 0 1 {gat}\r\ny\r\n").as_bytes(),
        b"STORED\r\n",
    );
}

#[test]
fn expiration_times() {
    let s = InProc::default();
    let mut c = s.client();
    c.expect(b"set a 0 10 1\r\nx\r\n", b"STORED\r\n");
    c.expect(b"set neg 0 -1 1\r\nx\r\n", b"STORED\r\n");
    c.expect(b"get neg\r\n", b"END\r\n");
    let unix = s.clock.unix_secs() + 100;
    c.expect(
        format!("set abs 0 {unix} 1\r\nx\r\n").as_bytes(),
        b"STORED\r\n",
    );
    c.expect(b"set past 0 2592001 1\r\nx\r\n", b"STORED\r\n");
    c.expect(b"get past\r\n", b"END\r\n");
    c.expect(
        b"get a abs\r\n",
        b"VALUE a 0 1\r\nx\r\nVALUE abs 0 1\r\nx\r\nEND\r\n",
    );
    s.clock.advance(11);
    c.expect(b"get a abs\r\n", b"VALUE abs 0 1\r\nx\r\nEND\r\n");
    c.expect(b"touch abs 1\r\n", b"TOUCHED\r\n");
    s.clock.advance(2);
    c.expect(b"get abs\r\n", b"END\r\n");
    assert_eq!(c.stat("get_expired"), "4");
    // Found dead by a command: counted as memcached's lookup counts it, not as reclaimed.
    assert_eq!(c.stat("reclaimed"), "0");
    assert_eq!(c.stat("expired_unfetched"), "0");
}

#[test]
fn flush_all() {
    let s = InProc::default();
    let mut c = s.client();
    c.expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    c.expect(b"flush_all\r\n", b"OK\r\n");
    c.expect(b"get a\r\n", b"END\r\n");
    c.expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    c.expect(b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n");
    c.expect(b"flush_all 10\r\n", b"OK\r\n");
    c.expect(b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n");
    s.clock.advance(11);
    c.expect(b"get a\r\n", b"END\r\n");
    c.expect(b"flush_all noreply\r\n", b"");
    c.expect(
        b"flush_all abc\r\n",
        b"CLIENT_ERROR invalid exptime argument\r\n",
    );
    c.expect(b"flush_all 1 2 3\r\n", b"ERROR\r\n");
    assert_eq!(c.stat("cmd_flush"), "4");
    assert_eq!(c.stat("get_flushed"), "2");
}

#[test]
fn misc_commands() {
    table(&[
        (
            "version\r\n",
            &format!("VERSION {}\r\n", repcached::server::VERSION),
        ),
        ("verbosity 1\r\n", "OK\r\n"),
        ("verbosity\r\n", "ERROR\r\n"),
        (
            "verbosity abc\r\n",
            "CLIENT_ERROR bad command line format\r\n",
        ),
        ("verbosity 1 noreply\r\n", ""),
        ("foo\r\n", "ERROR\r\n"),
        ("\r\n", "ERROR\r\n"),
        ("a\r\n", "ERROR\r\n"),
        ("shutdown\r\n", "ERROR: shutdown not enabled\r\n"),
        ("cache_memlimit 100\r\n", "OK\r\n"),
        (
            "cache_memlimit 1\r\n",
            "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
        ),
        ("cache_memlimit abc\r\n", "ERROR\r\n"),
        ("stats foo\r\n", "ERROR\r\n"),
        (
            "stats detail\r\n",
            "CLIENT_ERROR usage: stats detail on|off|dump\r\n",
        ),
        ("stats reset\r\n", "RESET\r\n"),
    ]);
}

#[test]
fn bare_newlines_and_pipelining() {
    table(&[
        (
            "set a 0 0 1\nx\r\nget a\n",
            "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
        ),
        (
            "set a 0 0 1\r\n1\r\nincr a 1\r\nincr a 1\r\nget a\r\ndelete a\r\nget a\r\n",
            "STORED\r\n2\r\n3\r\nVALUE a 0 1\r\n3\r\nEND\r\nDELETED\r\nEND\r\n",
        ),
    ]);
}

#[test]
fn one_byte_at_a_time() {
    let s = InProc::default();
    let mut c = s.client();
    let req = b"set a 0 0 5\r\nhello\r\nget a\r\nmg a v\r\n";
    for b in req.iter() {
        c.send(&[*b]);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let want = b"STORED\r\nVALUE a 0 5\r\nhello\r\nEND\r\nVA 5\r\nhello\r\n";
    assert_eq!(c.read_n(want.len()), want);
}

#[test]
fn http_line_closes_silently() {
    let s = InProc::default();
    let mut c = s.client();
    c.send(b"GET / HTTP/1.1\r\n");
    assert!(c.is_closed());
}

#[test]
fn long_line_without_newline_closes() {
    let s = InProc::default();
    let mut c = s.client();
    c.send(&[b'x'; 3000]);
    assert!(c.is_closed());
    // A long get line is fine.
    let mut c = s.client();
    let mut line = b"get ".to_vec();
    line.extend(std::iter::repeat_n(b"k ".as_slice(), 2000).flatten());
    line.extend_from_slice(b"\r\n");
    c.expect(&line, b"END\r\n");
}

#[test]
fn quit_closes() {
    let s = InProc::default();
    let mut c = s.client();
    c.send(b"set a 0 0 1\r\nx\r\nquit\r\nget a\r\n");
    assert_eq!(c.read_n(8), b"STORED\r\n");
    assert!(c.is_closed());
}

#[test]
fn binary_safe_values() {
    let s = InProc::default();
    let mut c = s.client();
    let value: Vec<u8> = (0..=255u8).chain(b"\r\nEND\r\n".iter().copied()).collect();
    let mut req = format!("set bin 0 0 {}\r\n", value.len()).into_bytes();
    req.extend_from_slice(&value);
    req.extend_from_slice(b"\r\n");
    c.expect(&req, b"STORED\r\n");
    let mut want = format!("VALUE bin 0 {}\r\n", value.len()).into_bytes();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\nEND\r\n");
    c.expect(b"get bin\r\n", &want);
}

#[test]
fn stats_counters_are_exact() {
    let s = InProc::default();
    let mut c = s.client();
    c.expect(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n");
    c.expect(b"get a nokey\r\n", b"VALUE a 0 1\r\n1\r\nEND\r\n");
    c.expect(
        b"incr a 1\r\nincr nokey 1\r\ndecr a 1\r\n",
        b"2\r\nNOT_FOUND\r\n1\r\n",
    );
    c.expect(
        b"touch a 0\r\ntouch nokey 0\r\n",
        b"TOUCHED\r\nNOT_FOUND\r\n",
    );
    c.expect(b"delete a\r\ndelete a\r\n", b"DELETED\r\nNOT_FOUND\r\n");
    for (name, want) in [
        ("cmd_get", "2"),
        ("get_hits", "1"),
        ("get_misses", "1"),
        ("cmd_set", "1"),
        ("incr_hits", "1"),
        ("incr_misses", "1"),
        ("decr_hits", "1"),
        ("decr_misses", "0"),
        ("cmd_touch", "2"),
        ("touch_hits", "1"),
        ("touch_misses", "1"),
        ("delete_hits", "1"),
        ("delete_misses", "1"),
        ("curr_items", "0"),
        ("total_items", "1"),
        ("curr_connections", "1"),
        ("threads", "2"),
    ] {
        assert_eq!(c.stat(name), want, "{name}");
    }
    let read: u64 = c.stat("bytes_read").parse().unwrap();
    assert!(read > 100);
    c.expect(b"stats reset\r\n", b"RESET\r\n");
    assert_eq!(c.stat("cmd_get"), "0");
    assert_eq!(c.stat("total_items"), "0");
}

/// `store_dead_bytes`: room that items gone (deleted, replaced, expired and reclaimed) still
/// take in their segments, until compaction; `bytes` counts only what lives.
#[test]
fn stats_show_the_room_dead_items_hold() {
    let s = InProc::default();
    let mut c = s.client();
    assert_eq!(c.stat("store_dead_bytes"), "0");
    let value = "v".repeat(1000);
    for i in 0..20 {
        c.expect(
            format!("set k{i} 0 0 1000\r\n{value}\r\n").as_bytes(),
            b"STORED\r\n",
        );
    }
    let live: u64 = c.stat("bytes").parse().unwrap();
    for i in 0..10 {
        c.expect(format!("delete k{i}\r\n").as_bytes(), b"DELETED\r\n");
    }
    let dead: u64 = c.stat("store_dead_bytes").parse().unwrap();
    let left: u64 = c.stat("bytes").parse().unwrap();
    // What the deletes took from `bytes` is now dead room (the markers a replicating node
    // would keep are not kept here).
    assert_eq!(dead, live - left, "live {live}, left {left}");
    assert!(dead >= 10 * 1000, "{dead}");
}

/// Counters memcached reports that are always zero here (listening never pauses, no item is
/// ever locked at an LRU tail) are still shown, in memcached's order.
#[test]
fn stats_shows_listen_disabled_and_reflocked_counters() {
    let s = InProc::default();
    let mut c = s.client();
    for name in [
        "listen_disabled_num",
        "time_in_listen_disabled_us",
        "lrutail_reflocked",
    ] {
        assert_eq!(c.stat(name), "0", "{name}");
    }
    let out = String::from_utf8(c.call_until(b"stats\r\n", b"END\r\n")).unwrap();
    assert!(out.contains(concat!(
        "STAT accepting_conns 1\r\nSTAT listen_disabled_num 0\r\n",
        "STAT time_in_listen_disabled_us 0\r\nSTAT threads "
    )));
}

#[test]
fn stats_groups() {
    let s = InProc::default();
    let mut c = s.client();
    c.expect(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n");
    assert_eq!(c.stat_group("settings", "maxconns"), "1024");
    assert_eq!(c.stat_group("settings", "item_size_max"), "1048576");
    assert_eq!(c.stat_group("settings", "evictions"), "on");
    assert_eq!(c.stat_group("items", "items:1:number"), "1");
    assert_eq!(c.stat_group("slabs", "active_slabs"), "1");
    let conns = String::from_utf8(c.call_until(b"stats conns\r\n", b"END\r\n")).unwrap();
    assert!(conns.contains(":addr tcp:127.0.0.1:"), "{conns}");
    // The listening socket is listed too, as memcached lists it.
    assert!(conns.contains(":state conn_listening\r\n"), "{conns}");
    // The asking connection is executing; others show what they wait for.
    assert!(conns.contains(":state conn_parse_cmd\r\n"), "{conns}");
    let _fresh = s.client();
    let mut mid_set = s.client();
    mid_set.send(b"set b 0 0 5\r\nab");
    let mut idle = s.client();
    idle.expect(b"mn\r\n", b"MN\r\n");
    // The other connections' tasks run on other threads: wait (bounded) until all three
    // have read what was sent to them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let conns = loop {
        let conns = String::from_utf8(c.call_until(b"stats conns\r\n", b"END\r\n")).unwrap();
        let done = ["conn_new_cmd", "conn_nread", "conn_read"]
            .iter()
            .all(|st| conns.contains(&format!(":state {st}\r\n")));
        if done || std::time::Instant::now() > deadline {
            break conns;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    for st in ["conn_new_cmd", "conn_nread", "conn_read"] {
        assert!(conns.contains(&format!(":state {st}\r\n")), "{st}: {conns}");
    }
    assert!(conns.contains(":secs_since_last_cmd "), "{conns}");
}

#[test]
fn lru_crawler_metadump_lists_live_items_then_serves_the_rest() {
    let s = InProc::default();
    let mut c = s.client();
    c.expect(b"set a:b 5 0 3\r\nxyz\r\n", b"STORED\r\n");
    c.expect(b"set gone 0 0 1\r\nx\r\n", b"STORED\r\n");
    c.expect(b"delete gone\r\n", b"DELETED\r\n");
    for i in 0..3000 {
        c.send(format!("set k{i} 0 100 1 noreply\r\nv\r\n").as_bytes());
    }
    c.expect(b"get k7\r\n", b"VALUE k7 0 1\r\nv\r\nEND\r\n");
    // A request pipelined behind the dump is answered after it.
    let out = c.call_until(b"lru_crawler metadump all\r\nmn\r\n", b"END\r\nMN\r\n");
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3001 + 2, "every live item, END and MN");
    let re = regex::Regex::new(
        r"^key=\S+ exp=(-1|\d{10}) la=\d{10} cas=\d+ fetch=(yes|no) cls=1 size=\d+$",
    )
    .unwrap();
    assert!(
        lines[..3001].iter().all(|l| re.is_match(l)),
        "{}",
        &text[..300]
    );
    assert!(text.contains("key=a%3Ab exp=-1 "));
    assert!(
        text.contains("fetch=no cls=1 size=69\n"),
        "flags add 4 bytes, as in memcached"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("key=k7 ") && l.contains(" fetch=yes ")));
    assert!(!text.contains("key=gone "));
    // Items end with a bare newline, END with CRLF, as memcached writes them.
    assert!(text.contains("\nEND\r\n") && !text.contains("\r\nkey="));
    c.expect(b"lru_crawler metadump 2,3\r\n", b"END\r\n");
    c.expect(
        b"lru_crawler metadump 64\r\n",
        b"BADCLASS invalid class id\r\n",
    );
}

/// As memcached's crawler: one metadump at a time, another told BUSY. Thirty clients
/// dumping at once, none reading, held every worker for half a second.
#[test]
fn one_metadump_at_a_time_others_are_told_busy() {
    let s = InProc::default();
    let mut c = s.client();
    for i in 0..50_000 {
        c.send(format!("set key{i} 0 0 10 noreply\r\n0123456789\r\n").as_bytes());
    }
    c.expect(b"mn\r\n", b"MN\r\n");
    // A dump whose client reads nothing: it stops once the socket is full.
    let mut stuck = s.client();
    let _ = socket2::SockRef::from(&stuck.stream).set_recv_buffer_size(4096);
    stuck.send(b"lru_crawler metadump all\r\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.expect(
        b"lru_crawler metadump all\r\n",
        b"BUSY currently processing crawler request\r\n",
    );
    c.expect(b"mn\r\n", b"MN\r\n");
    // Once that client is gone, the next dump runs whole.
    drop(stuck);
    assert!(common::eventually(
        std::time::Duration::from_secs(5),
        || {
            // Item lines end with a bare newline: the first CRLF ends BUSY or the dump.
            let out = c.call_until(b"lru_crawler metadump all\r\n", b"\r\n");
            if out.starts_with(b"BUSY") {
                return false;
            }
            assert!(out.ends_with(b"\nEND\r\n"));
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 50_001);
            true
        }
    ));
}

#[test]
fn stats_cachedump_lists_items_up_to_its_limit() {
    let s = InProc::default();
    let mut c = s.client();
    c.expect(b"set plain 0 0 3\r\nabc\r\n", b"STORED\r\n");
    c.expect(b"set timed 0 1000 1\r\nx\r\n", b"STORED\r\n");
    // Items stored under base64 keys are left out, as in memcached.
    c.expect(b"ms AAEC 2 b\r\nhi\r\n", b"HD\r\n");
    let all = String::from_utf8(c.call_until(b"stats cachedump 1 0\r\n", b"END\r\n")).unwrap();
    let mut lines: Vec<&str> = all.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 3, "{all}");
    assert_eq!(lines[1], "ITEM plain [3 b; 0 s]");
    let timed = regex::Regex::new(r"^ITEM timed \[1 b; \d{10} s\]$").unwrap();
    assert!(timed.is_match(lines[2]), "{all}");
    let one = c.call_until(b"stats cachedump 1 1\r\n", b"END\r\n");
    assert_eq!(one.split(|&b| b == b'\n').count(), 3, "one ITEM line, END");
    c.expect(b"stats cachedump 5 0\r\n", b"END\r\n");
    c.expect(
        b"stats cachedump 64 0\r\n",
        b"CLIENT_ERROR Illegal slab id\r\n",
    );
}

#[test]
fn stats_detail_counts_per_prefix_over_text_and_binary() {
    let s = InProc::default();
    let mut c = s.client();
    c.expect(b"stats detail dump\r\n", b"END\r\n");
    c.expect(b"stats detail on\r\n", b"OK\r\n");
    c.expect(b"set a:1 0 0 1\r\nx\r\n", b"STORED\r\n");
    c.expect(b"get a:1 a:2 b:1\r\n", b"VALUE a:1 0 1\r\nx\r\nEND\r\n");
    c.expect(b"delete b:1\r\n", b"NOT_FOUND\r\n");
    // A binary get counts too.
    let mut bin = s.client();
    use repcached::protocol::binary::{op, request};
    bin.send(&request(op::GET, &[], b"a:1", &[], 0, 0));
    let reply = bin.read_n(24 + 4 + 1);
    assert_eq!(reply[7], 0, "binary get hit");
    // A binary set refused as too large still counts as a set, as in memcached.
    let big = vec![b'v'; 1_100_000];
    bin.send(&request(op::SET, &[0; 8], b"c:1", &big, 0, 0));
    let reply = bin.read_n(24 + "Too large.".len());
    assert_eq!(reply[7], 3, "E2BIG");
    let dump: &[u8] = b"PREFIX a get 3 hit 2 set 1 del 0\r\nPREFIX b get 1 hit 0 set 0 del 1\r\n\
        PREFIX c get 0 hit 0 set 1 del 0\r\nEND\r\n";
    c.expect(b"stats detail dump\r\n", dump);
    c.expect(b"stats detail off\r\n", b"OK\r\n");
    c.expect(b"get a:1\r\n", b"VALUE a:1 0 1\r\nx\r\nEND\r\n");
    c.expect(b"stats detail dump\r\n", dump);
    c.expect(b"stats reset\r\n", b"RESET\r\n");
    c.expect(b"stats detail dump\r\n", b"END\r\n");
}

#[test]
fn pipelined_requests_past_reqs_per_event_count_yields() {
    // `-R 1`: after each request with more already read, the connection yields once.
    let s = InProc::start({
        let mut c = repcached::config::Config::for_tests();
        c.reqs_per_event = 1;
        c
    });
    let mut c = s.client();
    c.expect(
        b"set k 0 0 1\r\na\r\nset k 0 0 1\r\nb\r\nset k 0 0 1\r\nc\r\nset k 0 0 1\r\nd\r\n",
        b"STORED\r\nSTORED\r\nSTORED\r\nSTORED\r\n",
    );
    let yields: u64 = c.stat("conn_yields").parse().unwrap_or(0);
    assert!(yields >= 3, "conn_yields {yields}");
}

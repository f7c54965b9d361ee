//! What a connection may hold: replies stream as the socket drains, large values are shared
//! by stalled readers, idle connections hold no buffers, long get lines are answered as they
//! arrive, and `-o read_buf_mem_limit` caps all buffers with memcached's errors. Each test
//! runs the real binary and reads its resident memory from /proc.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, Proc};
use repcached::protocol::binary::{op, request as packet};

const MB: usize = 1024 * 1024;

/// The server's resident memory, in bytes.
fn rss(p: &Proc) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id()))
        .expect("read /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

/// Lets the server work through what it was sent, then reads its memory.
fn settled_rss(p: &Proc) -> usize {
    std::thread::sleep(Duration::from_millis(300));
    rss(p)
}

/// Room for many connections in this process and the server it starts.
fn raise_fd_limit(want: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A connection whose receive window is small, so the server meets a full socket fast.
/// A connection that never reads, with a small receive buffer, so the kernel cannot take
/// a large reply off the server whole (how much it would take varies with load).
fn non_reader(p: &Proc) -> TcpStream {
    let addr = p.addr();
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    s.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    s.connect(&addr.into()).expect("connect");
    s.set_tcp_nodelay(true).unwrap();
    s.into()
}

fn set_value(c: &mut Client, key: &str, value: &[u8]) {
    let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    c.send(&req);
    assert_eq!(c.read_n(8), b"STORED\r\n");
}

/// A get on another connection answers promptly.
fn assert_prompt(p: &Proc) {
    let mut c = p.client();
    let start = Instant::now();
    c.expect(b"get small\r\n", b"VALUE small 0 2\r\nhi\r\nEND\r\n");
    let took = start.elapsed();
    assert!(took < Duration::from_millis(500), "get took {took:?}");
}

#[test]
fn a_multiget_from_a_client_that_never_reads_stays_small() {
    // One worker: every connection shares it with the stalled ones.
    let p = Proc::start(&["-m", "64", "-t", "1"]);
    let mut c = p.client();
    let value = vec![b'v'; 1_000_000];
    set_value(&mut c, "big", &value);
    set_value(&mut c, "small", b"hi");
    let before = settled_rss(&p);
    // Four connections ask for 1000 times the value (1 GB each) and never read.
    let line = format!("get{}\r\n", " big".repeat(1000));
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = non_reader(&p);
            s.write_all(line.as_bytes()).unwrap();
            s
        })
        .collect();
    let after = settled_rss(&p);
    assert!(
        after < before + 32 * MB,
        "RSS grew from {before} to {after} bytes"
    );
    assert_prompt(&p);
    drop(stalled);
    // A client that reads gets every byte, in order.
    let n = 20;
    c.send(format!("get{}\r\n", " big".repeat(n)).as_bytes());
    let mut one = b"VALUE big 0 1000000\r\n".to_vec();
    one.extend_from_slice(&value);
    one.extend_from_slice(b"\r\n");
    for i in 0..n {
        assert_eq!(c.read_n(one.len()), one, "value {i}");
    }
    assert_eq!(c.read_n(5), b"END\r\n");
    assert_prompt(&p);
}

#[test]
fn stalled_readers_of_one_large_value_share_it() {
    raise_fd_limit(4096);
    let p = Proc::start(&["-m", "64", "-t", "2", "-c", "4096"]);
    let mut c = p.client();
    let value = vec![b'w'; 1_000_000];
    set_value(&mut c, "big", &value);
    set_value(&mut c, "small", b"hi");
    let before = settled_rss(&p);
    let n = 300;
    let stalled: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = non_reader(&p);
            s.write_all(b"get big\r\n").unwrap();
            s
        })
        .collect();
    let after = settled_rss(&p);
    // A copy each would be 300 MB; references cost a few KB each.
    assert!(
        after < before + 24 * MB,
        "{n} stalled readers: RSS grew from {before} to {after} bytes"
    );
    assert_prompt(&p);
    // Overwriting the value they hold changes nothing they read.
    set_value(&mut c, "big", &vec![b'x'; 1_000_000]);
    let mut first = stalled.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut want = b"VALUE big 0 1000000\r\n".to_vec();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\nEND\r\n");
    let mut got = vec![0; want.len()];
    first.read_exact(&mut got).unwrap();
    assert!(got == want, "the held value changed");
}

/// Sends a set's header and `part` bytes of its `len`-byte value.
fn half_set(p: &Proc, key: &str, len: usize, part: usize) -> TcpStream {
    let mut s = non_reader(p);
    let mut req = format!("set {key} 0 0 {len}\r\n").into_bytes();
    req.resize(req.len() + part, b'h');
    s.write_all(&req).unwrap();
    s
}

/// A reply line, read byte by byte so nothing after it is taken.
fn line_of(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut b).expect("reply");
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn values_still_arriving_count_against_the_memory_limit() {
    raise_fd_limit(4096);
    let p = Proc::start(&["-m", "64", "-t", "2", "-c", "4096"]);
    let mut c = p.client();
    set_value(&mut c, "small", b"hi");
    let before = settled_rss(&p);
    // 300 clients send 60 % of a 1 MB value each and stop: memcached takes an item's
    // memory before its value, so together they get no more than -m; the others are
    // refused at once, and their values are skipped, not buffered.
    let (n, len, part) = (300, 1_000_000, 600_000);
    let mut senders: Vec<TcpStream> = (0..n)
        .map(|i| half_set(&p, &format!("v{i}"), len, part))
        .collect();
    let after = settled_rss(&p);
    assert!(
        after < before + 100 * MB,
        "{n} half-sent values: RSS grew from {before} to {after} bytes"
    );
    // Holding the values took room from the cache, not the server from the others.
    let start = Instant::now();
    c.expect(b"mn\r\n", b"MN\r\n");
    assert!(start.elapsed() < Duration::from_millis(500));
    let rest = {
        let mut r = vec![b't'; len - part];
        r.extend_from_slice(b"\r\n");
        r
    };
    let mut stored = Vec::new();
    let mut refused = 0;
    for (i, s) in senders.iter_mut().enumerate() {
        s.write_all(&rest).unwrap();
        match line_of(s).as_str() {
            "STORED\r\n" => stored.push(i),
            // memcached's words for a value over its 512 KB chunks.
            "SERVER_ERROR Out of memory during read\r\n" => refused += 1,
            other => panic!("sender {i}: {other:?}"),
        }
        // The connection goes on serving.
        s.write_all(b"mn\r\n").unwrap();
        assert_eq!(line_of(s), "MN\r\n");
    }
    assert!(
        (20..=70).contains(&stored.len()) && refused >= 230,
        "{} stored, {refused} refused",
        stored.len()
    );
    // As memcached, a write refused partway through its value is not counted.
    assert_eq!(c.stat("store_no_memory"), "0");
    // A value that was taken in arrived whole.
    let key = format!("v{}", stored[stored.len() - 1]);
    c.send(format!("get {key}\r\n").as_bytes());
    let head = format!("VALUE {key} 0 {len}\r\n");
    assert_eq!(c.read_n(head.len()), head.as_bytes());
    let value = c.read_n(len + 7);
    assert!(value[..part].iter().all(|&b| b == b'h'));
    assert!(value[part..len].iter().all(|&b| b == b't'));
    assert_eq!(&value[len..], b"\r\nEND\r\n");
}

#[test]
fn a_value_with_no_room_left_is_refused_in_every_protocol() {
    // Once values on their way in hold all of the budget, text, meta and binary writes of
    // another large value are refused as memcached refuses one it has no memory for: at
    // its header for an item it allocates whole, partway for one it would chain from its
    // 512 KB chunks.
    let p = Proc::start(&["-m", "8"]);
    let mut holders = Vec::new();
    loop {
        let mut s = half_set(&p, &format!("h{}", holders.len()), 400_000, 1000);
        std::thread::sleep(Duration::from_millis(50));
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let answered = s.read(&mut b).is_ok_and(|n| n > 0);
        s.set_nonblocking(false).unwrap();
        if answered {
            assert_eq!(&b[..43], b"SERVER_ERROR out of memory storing object\r\n");
            break;
        }
        holders.push(s);
        assert!(
            holders.len() < 22,
            "8 MB took {} values of 400 KB",
            holders.len()
        );
    }
    let mut c = p.client();
    assert_eq!(c.stat("store_no_memory"), "1");
    let len = 1_000_000;
    let value = vec![b'm'; len];
    let mut ms = format!("ms big {len} T0\r\n").into_bytes();
    ms.extend_from_slice(&value);
    ms.extend_from_slice(b"\r\n");
    c.send(&ms);
    assert_eq!(c.read_n(40), b"SERVER_ERROR Out of memory during read\r\n");
    let mut b = p.client();
    b.send(&packet(op::SET, &[0; 8], b"big", &value, 0, 0));
    let header = b.read_n(24);
    assert_eq!(u16::from_be_bytes([header[6], header[7]]), 0x82, "ENOMEM");
    let body = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    assert_eq!(b.read_n(body as usize), b"Out of memory during read");
    // Only the refusal at a header is counted, as memcached counts it.
    assert_eq!(c.stat("store_no_memory"), "1");
    // Small writes need no room set aside.
    c.expect(b"set small 0 0 2\r\nhi\r\n", b"STORED\r\n");
    // Senders that go give their room back.
    drop(holders);
    std::thread::sleep(Duration::from_millis(200));
    c.send(&ms);
    assert_eq!(c.read_n(4), b"HD\r\n");
}

#[test]
fn values_replaced_under_slow_readers_stay_counted_until_read() {
    let p = Proc::start(&["-m", "64", "-I", "4m", "-t", "2"]);
    let mut c = p.client();
    set_value(&mut c, "small", b"hi");
    let before = settled_rss(&p);
    // Each 4 MB value is replaced while a client that never reads still holds it: as
    // memcached's referenced items, those values count against -m until they are written,
    // so the writes that would go beyond it are refused, and memory stays near -m.
    let len = 4_000_000;
    let mut readers = Vec::new();
    let mut refused = 0;
    for i in 0..40u8 {
        let mut req = format!("set big 0 0 {len}\r\n").into_bytes();
        req.resize(req.len() + len, b'a' + i % 26);
        req.extend_from_slice(b"\r\n");
        c.send(&req);
        match line_of(&mut c.stream).as_str() {
            "STORED\r\n" => {}
            "SERVER_ERROR out of memory storing object\r\n"
            | "SERVER_ERROR Out of memory during read\r\n" => refused += 1,
            other => panic!("set {i}: {other:?}"),
        }
        let mut s = non_reader(&p);
        s.write_all(b"get big\r\n").unwrap();
        readers.push(s);
    }
    let after = settled_rss(&p);
    assert!(
        after < before + 90 * MB,
        "40 values of 4 MB held by readers: RSS grew from {before} to {after} bytes"
    );
    // (A reply the kernel took whole holds nothing: how many are refused varies.)
    assert!(refused >= 10, "{refused} of 40 writes refused");
    // Once the readers go, their values give the room back.
    drop(readers);
    std::thread::sleep(Duration::from_millis(300));
    set_value(&mut c, "big", &vec![b'z'; len]);
    set_value(&mut c, "other", &vec![b'o'; len]);
}

#[test]
fn a_large_value_touched_under_slow_readers_is_not_copied_outside_the_limit() {
    let p = Proc::start(&["-m", "64", "-I", "4m", "-t", "2"]);
    let mut c = p.client();
    let len = 4_000_000;
    set_value(&mut c, "big", &vec![b'b'; len]);
    let before = settled_rss(&p);
    // Each client asks for the value with a new expiry, and never reads: a touch under a
    // reply writes the item anew (counted), never a copy that only the reply holds.
    let readers: Vec<TcpStream> = (0..40)
        .map(|i| {
            let mut s = non_reader(&p);
            s.write_all(format!("mg big v T{}\r\n", 100 + i).as_bytes())
                .unwrap();
            s
        })
        .collect();
    let after = settled_rss(&p);
    assert!(
        after < before + 90 * MB,
        "40 touches under readers: RSS grew from {before} to {after} bytes"
    );
    drop(readers);
    c.send(b"mg big s t\r\n");
    let line = line_of(&mut c.stream);
    assert!(line.starts_with("HD s4000000 t"), "{line:?}");
}

#[test]
fn a_kept_large_buffer_is_not_charged_to_a_small_request() {
    // One worker, 2 MB of buffers: a buffer kept from a 1.5 MB value must not be handed
    // to (and charged for) a stalled 20 KB request, or the next large value is refused.
    let p = Proc::start(&["-t", "1", "-I", "2m", "-o", "read_buf_mem_limit=2"]);
    let mut a = p.client();
    set_value(&mut a, "a", &vec![b'a'; 1_500_000]);
    let mut b = half_set(&p, "b", 20_000, 100);
    std::thread::sleep(Duration::from_millis(100));
    let mut c = p.client();
    set_value(&mut c, "c", &vec![b'c'; 600_000]);
    assert_eq!(c.stat("read_buf_oom"), "0");
    b.write_all(&[b'b'; 19_900]).unwrap();
    b.write_all(b"\r\n").unwrap();
    assert_eq!(line_of(&mut b), "STORED\r\n");
}

#[test]
fn idle_connections_hold_no_buffers() {
    raise_fd_limit(8192);
    let p = Proc::start(&["-t", "2", "-c", "8192"]);
    // A first batch warms up the allocator and the runtime.
    let warm: Vec<Client> = (0..200).map(|_| p.client()).collect();
    drop(warm);
    let before = settled_rss(&p);
    let n = 3000;
    let conns: Vec<Client> = (0..n)
        .map(|_| {
            let mut c = p.client();
            // Each one has used its buffers once.
            c.send(b"mn\r\n");
            assert_eq!(c.read_n(4), b"MN\r\n");
            c
        })
        .collect();
    let after = settled_rss(&p);
    let each = after.saturating_sub(before) / n;
    assert!(each < 4096, "{each} bytes per idle connection");
    drop(conns);
}

#[test]
fn a_long_get_line_arriving_in_pieces_is_answered_whole() {
    let p = Proc::start(&["-m", "64"]);
    let mut c = p.client();
    // 9000 keys of 250 bytes: a 2.3 MB line; every tenth key is stored.
    let key = |i: usize| format!("{i:0>250}");
    let mut want = Vec::new();
    let mut line = b"get".to_vec();
    for i in 0..9000 {
        line.push(b' ');
        line.extend_from_slice(key(i).as_bytes());
        if i % 10 == 0 {
            let v = format!("value-{i}");
            set_value(&mut c, &key(i), v.as_bytes());
            want.extend_from_slice(format!("VALUE {} 0 {}\r\n{v}\r\n", key(i), v.len()).as_bytes());
        }
    }
    line.extend_from_slice(b"\r\n");
    want.extend_from_slice(b"END\r\n");
    let mut reader = c.stream.try_clone().unwrap();
    let expect = want.len();
    let got = std::thread::spawn(move || {
        let mut got = vec![0; expect];
        reader.read_exact(&mut got).map(|_| got)
    });
    for piece in line.chunks(64 * 1024) {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = got.join().unwrap().expect("the whole reply");
    assert!(got == want, "reply differs");
    // The connection goes on.
    c.expect(b"get nothing\r\n", b"END\r\n");
    // A bad key in such a line gets memcached's error and the rest of the line is dropped.
    let mut bad = format!("get{}", " k".repeat(1500)).into_bytes();
    bad.extend_from_slice(format!(" {} k\r\n", "x".repeat(300)).as_bytes());
    c.send(&bad);
    c.expect(b"", b"CLIENT_ERROR bad command line format\r\n");
    c.expect(b"get nothing\r\n", b"END\r\n");
}

#[test]
fn a_long_get_line_cut_after_its_last_space_still_ends_with_end() {
    let p = Proc::start(&["-m", "64"]);
    let mut c = p.client();
    set_value(&mut c, "k0", b"zero");
    set_value(&mut c, "k499", b"last");
    // 500 keys: a line past 2048 bytes, so it is served as it arrives.
    let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    let line = format!("get {} ", keys.join(" "));
    let want = b"VALUE k0 0 4\r\nzero\r\nVALUE k499 0 4\r\nlast\r\nEND\r\n";
    // The line's end arrives on its own: after the trailing space, and inside its CR LF.
    for (head, tail) in [
        (line.clone(), "\r\n"),
        (format!("{line}\r"), "\n"),
        (format!("{line}   "), "\r\n"),
    ] {
        c.send(head.as_bytes());
        std::thread::sleep(Duration::from_millis(50));
        c.expect(
            format!("{tail}get k0\r\n").as_bytes(),
            &[&want[..], b"VALUE k0 0 4\r\nzero\r\nEND\r\n"].concat(),
        );
    }
}

#[test]
fn read_buf_mem_limit_refuses_with_memcached_errors() {
    // One worker with 1 MB: 64 buffers of 16 KB.
    let p = Proc::start(&["-t", "1", "-o", "read_buf_mem_limit=1"]);
    let mut stats = p.client();
    stats.expect(b"set foo 0 0 3\r\nbar\r\n", b"STORED\r\n");
    // A get that has begun to arrive holds a read buffer.
    let mut getter = p.client();
    getter.send(b"get fo");
    // Partial requests hold the others (the stats connection's goes back when idle).
    let mut held = Vec::new();
    for _ in 0..63 {
        let mut c = p.client();
        c.send(b"set foo 0 0 2\r\n");
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    // No buffer for a new request: the connection is closed.
    let mut late = p.client();
    late.send(b"version\r\n");
    let mut buf = [0u8; 64];
    assert!(matches!(late.stream.read(&mut buf), Ok(0) | Err(_)));
    // No output buffer for the get.
    getter.expect(
        b"o\r\n",
        b"SERVER_ERROR out of memory writing get response\r\n",
    );
    // A request larger than what is left: answered, then closed.
    held.pop();
    let mut big = p.client();
    big.send(format!("set big 0 0 100000\r\n{}", "b".repeat(50_000)).as_bytes());
    big.expect(b"", b"SERVER_ERROR out of memory reading request\r\n");
    assert!(matches!(big.stream.read(&mut buf), Ok(0) | Err(_)));
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(stats.stat("response_obj_oom"), "1");
    assert_eq!(stats.stat("read_buf_oom"), "2");
    // With the buffers back, everything works again.
    getter.expect(b"get foo\r\n", b"VALUE foo 0 3\r\nbar\r\nEND\r\n");
}

/// Reads what the server sends until it closes the connection or, once `want` bytes came,
/// stays quiet a moment; returns what came and whether it closed. Patient first (a busy
/// machine), brief after.
fn read_reply(c: &mut Client, want: usize) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let wait = if got.len() < want || want == 0 {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(150)
        };
        c.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .expect("read timeout");
        match c.stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// The connection closes with nothing sent.
fn closes_unanswered(c: &mut Client) -> bool {
    read_reply(c, 0) == (Vec::new(), true)
}

/// The connection answers exactly `want` and stays open.
fn answers(c: &mut Client, want: &[u8]) -> bool {
    let got = read_reply(c, want.len());
    if got != (want.to_vec(), false) {
        eprintln!("got {:?}", (String::from_utf8_lossy(&got.0), got.1));
        return false;
    }
    true
}

/// memcached's `t/conn-limits.t`: under the cap, replies pending count as memcached's
/// response objects (13 to a 16 KB unit), so a multiget of more keys than the room left
/// answers the out-of-memory error and pipelined requests past it close the connection,
/// with nothing sent; as many as fit are answered.
#[test]
fn read_buf_mem_limit_counts_replies_as_memcached_counts_response_objects() {
    // 32 workers share 1 MB: two 16 KB units each, a read buffer and one of replies.
    let p = Proc::start(&["-t", "32", "-R", "500", "-o", "read_buf_mem_limit=1"]);
    let mut stats = p.client();
    let keys = vec!["foo"; 500].join(" ");
    let mut c = p.client();
    c.expect(
        format!("get {keys}\r\n").as_bytes(),
        b"SERVER_ERROR out of memory writing get response\r\n",
    );
    assert_eq!(stats.stat("response_obj_oom"), "1");
    // Thirteen replies fit, pipelined; the fourteenth closes the connection unanswered.
    let mut fits = p.client();
    fits.send("mg foo v\r\n".repeat(13).as_bytes());
    assert!(answers(&mut fits, "EN\r\n".repeat(13).as_bytes()));
    let mut over = p.client();
    over.send("mg foo v\r\n".repeat(500).as_bytes());
    assert!(closes_unanswered(&mut over));
    assert_eq!(stats.stat("response_obj_oom"), "2");
    // A multiget that fits is answered, on a connection the error left open.
    c.expect(b"set foo 0 0 3\r\nbar\r\n", b"STORED\r\n");
    let twelve = ["foo"; 12].join(" ");
    c.expect(
        format!("get {twelve}\r\n").as_bytes(),
        format!("{}END\r\n", "VALUE foo 0 3\r\nbar\r\n".repeat(12)).as_bytes(),
    );
}

/// Under the cap, as in memcached: a request runs only once it has room for its reply (a
/// refused `incr` does not count), `mn` and a binary no-op write out what is pending and
/// free its room, and so does a turn's end (`-R`), even when the replies wrote nothing
/// (noreply). Each case was matched byte for byte against memcached 1.6.18.
#[test]
fn read_buf_mem_limit_frees_reply_room_where_memcached_does() {
    let p = Proc::start(&["-t", "32", "-R", "500", "-o", "read_buf_mem_limit=1"]);
    let mut c = p.client();
    c.send(&"mn\r\n".repeat(14).into_bytes());
    assert!(answers(&mut c, "MN\r\n".repeat(14).as_bytes()));
    let mut c = p.client();
    let pipeline = format!(
        "{}mn\r\n{}",
        "mg a v\r\n".repeat(12),
        "mg a v\r\n".repeat(13)
    );
    c.send(pipeline.as_bytes());
    let want = format!("{}MN\r\n{}", "EN\r\n".repeat(12), "EN\r\n".repeat(13));
    assert!(answers(&mut c, want.as_bytes()));
    let mut c = p.client();
    let noop = packet(op::NOOP, b"", b"", b"", 0, 0);
    c.send(&noop.repeat(14));
    let (got, closed) = read_reply(&mut c, 14 * 24);
    assert_eq!((got.len(), closed), (14 * 24, false));
    // The set takes one reply, twelve incrs the rest; the thirteenth closes unrun.
    let mut c = p.client();
    c.send(format!("set c 0 0 1\r\n5\r\n{}", "incr c 1\r\n".repeat(14)).as_bytes());
    assert!(closes_unanswered(&mut c));
    p.client()
        .expect(b"get c\r\n", b"VALUE c 0 2\r\n17\r\nEND\r\n");
    // No room for a get's first reply: closed, as memcached does, not answered.
    let mut c = p.client();
    c.send(format!("{}get a\r\n", "set a 0 0 1\r\nx\r\n".repeat(13)).as_bytes());
    assert!(closes_unanswered(&mut c));
    // With the default -R 20 at -t 4 (195 replies of room), 196 noreply sets pass: each
    // turn's end frees the room of the replies it counted.
    let p = Proc::start(&["-t", "4", "-o", "read_buf_mem_limit=1"]);
    let mut c = p.client();
    c.send(format!("{}mn\r\n", "set n 0 0 1 noreply\r\nx\r\n".repeat(196)).as_bytes());
    assert!(answers(&mut c, b"MN\r\n"));
}

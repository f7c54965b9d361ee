//! Resource limits: memory (-m, -M, -I), connections (-c), idle timeout, slow readers and
//! background expiry, over real sockets.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{rss_kb, InProc, Proc};
use repcached::protocol::binary::{op, request as packet, HEADER_LEN};

#[test]
fn eviction_keeps_memory_within_the_limit() {
    let limit = 2 * 1024 * 1024;
    // The real binary, with the flags an operator would give.
    let s = Proc::start(&["-m", "2", "-I", "512k"]);
    let mut c = s.client();
    let value = "v".repeat(1000);
    let mut batch = String::new();
    for i in 0..10_000 {
        batch.push_str(&format!("set key{i} 0 0 1000 noreply\r\n{value}\r\n"));
        if i % 500 == 499 {
            c.send(batch.as_bytes());
            batch.clear();
            let bytes: usize = c.stat("bytes").parse().unwrap();
            assert!(bytes <= limit, "bytes {bytes} over the limit {limit}");
        }
    }
    let evictions: u64 = c.stat("evictions").parse().unwrap();
    let items: u64 = c.stat("curr_items").parse().unwrap();
    assert!(evictions > 0);
    assert!(items < 10_000 && items > 500, "items {items}");
    // The newest item is never the one evicted.
    c.expect(
        b"get key9999\r\n",
        format!("VALUE key9999 0 1000\r\n{value}\r\nEND\r\n").as_bytes(),
    );
    // A large item still fits by evicting many small ones.
    let big = "b".repeat(400_000);
    c.expect(
        format!("set big 0 0 400000\r\n{big}\r\n").as_bytes(),
        b"STORED\r\n",
    );
    let bytes: usize = c.stat("bytes").parse().unwrap();
    assert!(bytes <= limit);
}

#[test]
fn disabled_evictions_answer_out_of_memory() {
    let s = Proc::start(&["-m", "1", "-I", "256k", "-M"]);
    let mut c = s.client();
    let value = "v".repeat(10_000);
    let mut saw_oom = false;
    for i in 0..200 {
        c.send(format!("set key{i} 0 0 10000\r\n{value}\r\n").as_bytes());
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            c.stream.read_exact(&mut b).unwrap();
            line.push(b[0]);
        }
        if line == b"SERVER_ERROR out of memory storing object\r\n" {
            saw_oom = true;
            break;
        }
        assert_eq!(line, b"STORED\r\n");
    }
    assert!(saw_oom);
    assert_eq!(c.stat("evictions"), "0");
    assert_eq!(c.stat_group("items", "items:1:outofmemory"), "1");
    c.expect(
        b"get key0\r\n",
        format!("VALUE key0 0 10000\r\n{value}\r\nEND\r\n").as_bytes(),
    );
}

/// A binary reply's status and body.
fn binary_reply(c: &mut common::Client) -> (u16, Vec<u8>) {
    let header = c.read_n(HEADER_LEN);
    let len = u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize;
    (u16::from_be_bytes([header[6], header[7]]), c.read_n(len))
}

/// With -M and a full store, a counter whose number grows, and an item an increment would
/// create, answer memcached's out-of-memory errors, in every protocol (they once answered
/// NOT_FOUND, NS and "Not stored", as if the key were missing), and the value stays.
#[test]
fn counters_without_room_answer_out_of_memory() {
    let s = Proc::start(&["-m", "1", "-I", "256k", "-M"]);
    let mut c = s.client();
    // Long keys: the items they need are larger than any room the filling leaves.
    let (n, fresh) = ("n".repeat(100), "f".repeat(100));
    c.expect(format!("set {n} 0 0 1\r\n9\r\n").as_bytes(), b"STORED\r\n");
    // Small items until a whole batch is refused: every shard is full.
    let mut next = 0;
    loop {
        let batch: String = (next..next + 1000)
            .map(|i| format!("set f{i} 0 0 1\r\n9\r\n"))
            .collect();
        next += 1000;
        let replies = c.call_until(format!("{batch}mn\r\n").as_bytes(), b"MN\r\n");
        let stored = replies.windows(8).filter(|w| w == b"STORED\r\n").count();
        if stored == 0 {
            break;
        }
        assert!(next < 1_000_000, "the store never filled");
    }
    c.expect(
        format!("incr {n} 1\r\n").as_bytes(),
        b"SERVER_ERROR out of memory\r\n",
    );
    c.expect(
        format!("ma {n} v\r\n").as_bytes(),
        b"SERVER_ERROR out of memory\r\n",
    );
    c.expect(
        format!("ma {fresh} N0 J5 v\r\n").as_bytes(),
        b"SERVER_ERROR Out of memory allocating new item\r\n",
    );
    c.expect(
        format!("incr {n} 1 noreply\r\nmn\r\n").as_bytes(),
        b"MN\r\n",
    );
    // Binary increment, on a connection of its own: delta 1, initial 0, expiry 0 (create
    // if missing); then a binary set of a new key.
    let mut c = s.client();
    let extras = [
        &1u64.to_be_bytes()[..],
        &0u64.to_be_bytes(),
        &0u32.to_be_bytes(),
    ]
    .concat();
    for (key, text) in [
        (&n, &b"Out of memory incrementing value"[..]),
        (&fresh, b"Out of memory allocating new item"),
    ] {
        c.send(&packet(op::INCREMENT, &extras, key.as_bytes(), &[], 0, 0));
        assert_eq!(binary_reply(&mut c), (0x82, text.to_vec()));
    }
    c.send(&packet(op::SET, &[0; 8], fresh.as_bytes(), b"x", 0, 0));
    assert_eq!(
        binary_reply(&mut c),
        (0x82, b"Out of memory allocating item".to_vec())
    );
    let mut c = s.client();
    c.expect(
        format!("get {n}\r\n").as_bytes(),
        format!("VALUE {n} 0 1\r\n9\r\nEND\r\n").as_bytes(),
    );
}

#[test]
fn too_large_items_are_refused_and_swallowed() {
    let s = Proc::start(&["-I", "64k"]);
    let mut c = s.client();
    c.expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    let mut req = b"set a 0 0 100000\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'x', 100_000));
    req.extend_from_slice(b"\r\nget a\r\n");
    c.expect(&req, b"SERVER_ERROR object too large for cache\r\nEND\r\n");
    // Just under the limit still works.
    let n = 64 * 1024 - 100;
    let mut req = format!("set b 0 0 {n}\r\n").into_bytes();
    req.extend(std::iter::repeat_n(b'y', n));
    req.extend_from_slice(b"\r\n");
    c.expect(&req, b"STORED\r\n");
    assert_eq!(c.stat("store_too_large"), "1");
}

#[test]
fn connection_limit() {
    let s = Proc::start(&["-c", "2"]);
    let mut a = s.client();
    // The readiness probe's connection may not be closed on the server side yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.stat("curr_connections") != "1" {
        assert!(
            Instant::now() < deadline,
            "probe connection never went away"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut b = s.client();
    a.expect(
        b"version\r\n",
        format!("VERSION {}\r\n", repcached::server::VERSION).as_bytes(),
    );
    b.expect(b"mn\r\n", b"MN\r\n");
    let mut c = s.client();
    let mut buf = Vec::new();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = c.stream.read_to_end(&mut buf);
    assert_eq!(buf, b"ERROR Too many open connections\r\n");
    assert_eq!(a.stat("rejected_connections"), "1");
    drop(b);
    // Once a slot frees up, new clients are served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = s.client();
        d.send(b"mn\r\n");
        let mut r = [0u8; 4];
        if d.stream.read_exact(&mut r).is_ok() && &r == b"MN\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_connections_are_closed() {
    let s = Proc::start(&["-o", "idle_timeout=1"]);
    let mut c = s.client();
    c.expect(b"mn\r\n", b"MN\r\n");
    assert_eq!(c.stat("idle_kicks"), "0");
    let start = Instant::now();
    assert!(c.is_closed());
    assert!(start.elapsed() < Duration::from_secs(3));
    // Counted as memcached counts it (and shown only with -o idle_timeout).
    assert_eq!(s.client().stat("idle_kicks"), "1");
    // One stopped in the middle of a value is left alone, as memcached leaves it, and its
    // request completes when the rest comes.
    let mut v = s.client();
    v.send(b"set a 0 0 5\r\nab");
    std::thread::sleep(Duration::from_millis(2500));
    v.expect(b"cde\r\n", b"STORED\r\n");
    assert_eq!(s.client().stat("idle_kicks"), "1");
    let plain = Proc::start(&[]);
    let stats = plain.client().call_until(b"stats\r\n", b"END\r\n");
    assert!(!String::from_utf8_lossy(&stats).contains("idle_kicks"));
}

#[test]
fn expired_items_are_reclaimed_in_the_background() {
    let s = InProc::default();
    let mut c = s.client();
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!("set t{i} 0 1 1 noreply\r\nx\r\n"));
    }
    c.send(batch.as_bytes());
    assert_eq!(c.stat("curr_items"), "1000");
    s.clock.advance(5);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.stat("curr_items") != "0" {
        assert!(
            Instant::now() < deadline,
            "expired items were not reclaimed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.stat("reclaimed"), "1000");
    assert_eq!(c.stat("expired_unfetched"), "1000");
    assert_eq!(c.stat("bytes"), "0");
}

#[test]
fn a_client_that_never_reads_cannot_grow_server_memory() {
    let p = Proc::start(&["-m", "64"]);
    let mut setup = p.client();
    let value = "v".repeat(512 * 1024);
    setup.expect(
        format!("set big 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
        b"STORED\r\n",
    );
    let before = rss_kb(p.child.id());
    // 2000 gets of 512 KiB = 1 GiB of replies that this client never reads.
    let mut hog = p.client();
    hog.stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let req = "get big\r\n".repeat(2000);
    let _ = std::io::Write::write_all(&mut hog.stream, req.as_bytes());
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kb(p.child.id());
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // Others are still served.
    let mut other = p.client();
    other.expect(b"mn\r\n", b"MN\r\n");
}

#[test]
fn resident_memory_stays_close_to_the_limit_when_item_sizes_change() {
    let p = Proc::start(&["-m", "16", "-t", "4"]);
    let addr = p.addr();
    for size in [1000usize, 3000, 200, 2000, 500] {
        // Four connections (so four worker threads allocate and free), ~120 MB a round:
        // far past the 16 MB budget.
        std::thread::scope(|sc| {
            for t in 0..4 {
                sc.spawn(move || {
                    let mut c = common::Client::connect(addr);
                    let value = "v".repeat(size);
                    let mut batch = String::new();
                    for i in 0..(30_000_000 / size) {
                        batch.push_str(&format!("set t{t}k{i} 0 0 {size} noreply\r\n{value}\r\n"));
                        if batch.len() > 256 * 1024 {
                            c.send(batch.as_bytes());
                            batch.clear();
                        }
                    }
                    c.send(batch.as_bytes());
                    c.expect(b"mn\r\n", b"MN\r\n");
                });
            }
        });
    }
    let mut c = p.client();
    let bytes: usize = c.stat("bytes").parse().unwrap();
    assert!(bytes <= 16 * 1024 * 1024);
    // Resident memory: the 16 MB of items, the index and buffers, and allocator slack, which
    // the server hands back to the system every few seconds; 2.5x the budget at most.
    let limit_kb = 40 * 1024;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rss = rss_kb(p.child.id());
        if rss < limit_kb {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS {rss} KiB stays above {limit_kb} KiB with -m 16"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

//! Memory bounds and storage outcomes beside memcached 1.6.18 at the same flags: room held
//! by items already gone comes back with `-M`, and resident memory follows `-m` under churn
//! of large items. Each test runs the real binary.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{Client, Proc};

const MB: usize = 1024 * 1024;

fn reply_line(c: &mut Client) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        c.stream.read_exact(&mut b).expect("reply");
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

fn set(c: &mut Client, key: &str, n: usize) -> String {
    set_ttl(c, key, n, 0)
}

fn set_ttl(c: &mut Client, key: &str, n: usize, ttl: u32) -> String {
    let mut req = format!("set {key} 0 {ttl} {n}\r\n").into_bytes();
    req.resize(req.len() + n, b'v');
    req.extend_from_slice(b"\r\n");
    c.send(&req);
    reply_line(c)
}

/// The server's resident memory, in bytes.
fn rss(p: &Proc) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id()))
        .expect("read /proc status");
    let kb: usize = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

/// Fills a `-M` store until it answers out of memory, flushes it, and stores half as many
/// items again: memcached 1.6.18 stores them all, reusing the flushed items' memory.
fn flushed_room_comes_back(args: &[&str], size: usize) {
    room_comes_back(args, size, 0, |c, _| c.expect(b"flush_all\r\n", b"OK\r\n"));
}

/// As [`flushed_room_comes_back`], the items stored with `ttl`, then `free` making them
/// dead (given how many).
fn room_comes_back(args: &[&str], size: usize, ttl: u32, free: impl Fn(&mut Client, usize)) {
    let s = Proc::start(args);
    let mut c = s.client();
    let filled = fill(&mut c, size, ttl);
    free(&mut c, filled);
    for i in 0..filled / 2 {
        assert_eq!(
            set(&mut c, &format!("n{i}"), size),
            "STORED\r\n",
            "{args:?}: set {i} of {} after freeing ({filled} fitted before)",
            filled / 2
        );
    }
    assert_eq!(c.stat("evictions"), "0");
}

/// Stores `k0`, `k1`, ... until a `-M` store is full; how many it took.
fn fill(c: &mut Client, size: usize, ttl: u32) -> usize {
    let mut filled = 0;
    loop {
        let r = set_ttl(c, &format!("k{filled}"), size, ttl);
        if r != "STORED\r\n" {
            assert_eq!(r, "SERVER_ERROR out of memory storing object\r\n");
            return filled;
        }
        filled += 1;
    }
}

/// A read that wins a recache token marks the item, which takes a byte more; in a full
/// `-M` store there was no room to write it anew, and the read answered a miss for an
/// item that is there. It answers the hit (the token unrecorded: the next read may win
/// it too).
#[test]
fn a_read_in_a_full_store_without_eviction_answers_the_item() {
    let s = Proc::start(&["-m", "2", "-M", "-I", "512k"]);
    let mut c = s.client();
    let filled = fill(&mut c, 1000, 10);
    assert!(filled > 100, "{filled} items");
    for i in [0, filled / 2, filled - 1] {
        let reply = c.call_until(format!("mg k{i} v R30\r\nmn\r\n").as_bytes(), b"MN\r\n");
        let want = format!("VA 1000 W\r\n{}\r\nMN\r\n", "v".repeat(1000));
        assert!(
            reply == want.as_bytes(),
            "k{i}: {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(40)])
        );
    }
}

/// Items touched to expire at once (`touch k -1`) give their room back in the same
/// second, as flushed ones do (a full store that found nothing to free remembers it until
/// something changes).
#[test]
fn without_eviction_items_touched_to_expire_give_their_room_back() {
    room_comes_back(&["-m", "2", "-M", "-I", "512k"], 1000, 1000, |c, filled| {
        let touches: String = (0..filled).map(|i| format!("touch k{i} -1\r\n")).collect();
        c.send(touches.as_bytes());
        let replies: Vec<String> = (0..filled).map(|_| reply_line(c)).collect();
        let touched = replies.iter().filter(|r| *r == "TOUCHED\r\n").count();
        assert_eq!(
            touched,
            filled,
            "{:?}",
            replies.iter().find(|r| *r != "TOUCHED\r\n")
        );
    });
}

#[test]
fn without_eviction_flushed_small_items_give_their_room_back() {
    flushed_room_comes_back(&["-m", "2", "-M", "-I", "512k"], 1000);
}

#[test]
fn without_eviction_flushed_large_items_give_their_room_back() {
    // 4 KiB segments: each item has a segment of its own, in one shard of 64.
    flushed_room_comes_back(&["-m", "2", "-M", "-I", "512k"], 100_000);
}

#[test]
fn without_eviction_flushed_items_give_their_room_back_at_the_default_budget() {
    flushed_room_comes_back(&["-m", "64", "-M"], 5000);
}

#[test]
fn large_items_of_changing_sizes_keep_resident_memory_near_the_budget() {
    // Items up to half of -m, stored over several connections (so several worker
    // threads allocate and free segments and read buffers). memcached 1.6.18 settles at
    // about 37 MB here.
    let limit = 16 * MB;
    let s = Proc::start(&["-m", "16", "-I", "8m", "-t", "4"]);
    let mut conns: Vec<Client> = (0..4).map(|_| s.client()).collect();
    // A fixed xorshift sequence: the same sizes every run.
    let mut x: u32 = 0x9e37_79b9;
    for i in 0..120 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = x as usize % (8 * MB - 100);
        let c = &mut conns[i % 4];
        assert_eq!(set(c, &format!("k{}", x % 500), n), "STORED\r\n");
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss(&s);
    assert!(
        after < 2 * limit,
        "RSS {after} bytes for a budget of {limit}"
    );
}

#[test]
fn an_item_appended_to_under_memory_pressure_is_never_the_one_evicted() {
    // memcached 1.6.18 stores every append here; the README: never the item being written.
    let s = Proc::start(&["-m", "16", "-t", "4"]);
    let mut c = s.client();
    for i in 0..20_000 {
        assert_eq!(set(&mut c, &format!("z{i}"), 2000), "STORED\r\n");
    }
    assert_eq!(set(&mut c, "grow", 10), "STORED\r\n");
    for i in 0..300 {
        let mut req = b"append grow 0 0 3000\r\n".to_vec();
        req.resize(req.len() + 3000, b'a');
        req.extend_from_slice(b"\r\n");
        c.send(&req);
        assert_eq!(
            reply_line(&mut c),
            "STORED\r\n",
            "append {i}, to a value of {} bytes",
            10 + 3000 * i
        );
    }
}

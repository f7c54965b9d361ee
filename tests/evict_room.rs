//! With eviction on, a set whose item fits `-I` always finds room: the real binary, with
//! mixed sizes that keep every shard's memory moving to the others.

mod common;

use std::io::Read;

use common::{Client, Proc};

fn reply_line(c: &mut Client) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        c.stream.read_exact(&mut b).expect("reply");
        line.push(b[0]);
    }
    line
}

/// Sends `sets` sets of mixed sizes to a server started with `args`: small items, items just
/// under and over a quarter segment (`quarter`, where an item stops sharing a segment), and
/// items up to `-I` (`item_max`). Each must answer STORED.
fn every_set_is_stored(args: &[&str], quarter: usize, item_max: usize, sets: u32) {
    let s = Proc::start(args);
    let mut c = s.client();
    // A fixed xorshift sequence: the same traffic every run.
    let mut x: u32 = 0x2545_f491;
    for i in 0..sets {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let key = format!("k{}", x % 4000);
        // memcached's item overhead (what -I limits) and this store's plain header.
        let max_value = item_max - (56 + key.len() + 3);
        let near_quarter = quarter - 12 - key.len();
        let d = (x >> 20) as usize % 24;
        let n = match (x >> 8) % 8 {
            0 => 10,
            1 => 700,
            2 => 5000,
            3 | 4 => near_quarter - d,
            5 => near_quarter + d,
            6 => max_value / 3,
            _ => max_value - d,
        };
        let mut req = format!("set {key} 0 0 {n}\r\n").into_bytes();
        req.resize(req.len() + n, b'a' + (i % 26) as u8);
        req.extend_from_slice(b"\r\n");
        c.send(&req);
        let line = reply_line(&mut c);
        assert_eq!(
            String::from_utf8_lossy(&line),
            "STORED\r\n",
            "{args:?}: set {i} of {n} bytes"
        );
    }
    let evictions: u64 = c.stat("evictions").parse().unwrap();
    assert!(evictions > 0, "{args:?}: the budget was never full");
    let limit: usize = c.stat("limit_maxbytes").parse().unwrap();
    let bytes: usize = c.stat("bytes").parse().unwrap();
    assert!(
        bytes <= limit,
        "{args:?}: {bytes} bytes over the limit {limit}"
    );
}

#[test]
fn sets_around_a_quarter_segment_are_stored_with_two_threads() {
    // 32 shards of 512 KiB: 32 KiB segments, so items near 8 KiB sit on the line.
    every_set_is_stored(&["-m", "16", "-t", "2"], 8 << 10, 1 << 20, 2000);
}

#[test]
fn sets_around_a_quarter_segment_are_stored_with_four_threads() {
    // 64 shards of 256 KiB: 16 KiB segments, the line at 4 KiB.
    every_set_is_stored(&["-m", "16"], 4 << 10, 1 << 20, 2000);
}

#[test]
fn sets_up_to_half_the_budget_are_stored_at_the_smallest_budget() {
    // 64 shards of 16 KiB: 4 KiB segments, the line at 1 KiB; -I is half of -m.
    every_set_is_stored(&["-m", "1", "-I", "512k"], 1 << 10, 512 << 10, 1500);
}

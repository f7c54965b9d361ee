//! Deletes made during a partition reach the other side once it heals, however long ago the
//! deleting node let go of its delete markers, while evictions stay local; a delete that finds
//! nothing on the node it reaches still reaches the peer that holds the key: real processes
//! on 127.0.1.1 to 127.0.1.62, links through fault proxies or direct.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::node::{args, get, load, sees, Node};
use common::pair::ProxiedPair;
use common::{eventually, free_port};
use repcached::protocol::binary::{op, request as packet, status, HEADER_LEN, RESPONSE};

/// Sends `lines` and waits until the node has run them.
fn batch(c: &mut common::Client, lines: &str) {
    c.send(lines.as_bytes());
    c.expect(b"mn\r\n", b"MN\r\n");
}

#[test]
fn a_delete_whose_marker_was_evicted_during_a_partition_reaches_the_peer() {
    let p = ProxiedPair::start_in([127, 0, 1, 1], "8", &["--repl-backlog-size", "64k"]);
    let (mut ca, mut cb) = (p.a.client(), p.b.client());
    let n = 50;
    let lines: String = (0..n)
        .map(|i| format!("set gone{i} 0 0 1 noreply\r\nx\r\nset kept{i} 0 0 1 noreply\r\ny\r\n"))
        .collect();
    batch(&mut ca, &lines);
    assert!(sees(&p.b, &format!("kept{}", n - 1), Some("y")));
    let arrived = eventually(Duration::from_secs(5), || {
        (0..n).all(|i| {
            get(&mut cb, &format!("gone{i}")).is_some()
                && get(&mut cb, &format!("kept{i}")).is_some()
        })
    });
    assert!(arrived, "both nodes hold every key before the partition");

    p.partition();
    let deletes: String = (0..n)
        .map(|i| format!("delete gone{i} noreply\r\n"))
        .collect();
    batch(&mut ca, &deletes);
    // Heavy writes on the deleting node: short-lived ones, so that once they expire the
    // copy sent at the heal is small and the peer evicts nothing of its own. They evict the
    // delete markers (and the `kept` keys) and push the backlog far past its 64 KB.
    let value = "v".repeat(1000);
    let mut last_write = Instant::now();
    let mut round = 0;
    while ca.stat("tombstones") != "0" {
        assert!(round < 60, "the delete markers were never evicted");
        // Each read once, so it is kept as the markers are (out of probation): the
        // markers go only when those fill the store too.
        let lines: String = (0..1000)
            .map(|i| {
                format!(
                    "set fill{round}_{i} 0 3 {} noreply\r\n{value}\r\nmg fill{round}_{i}\r\n",
                    value.len()
                )
            })
            .collect();
        ca.call_until(format!("{lines}mn\r\n").as_bytes(), b"MN\r\n");
        last_write = Instant::now();
        round += 1;
    }
    let evicted = (0..n)
        .filter(|i| get(&mut ca, &format!("kept{i}")).is_none())
        .count();
    assert!(
        evicted > n / 2,
        "the writes evicted the kept keys too ({evicted} of {n})"
    );
    // The short-lived writes expire before the heal.
    let quiet = last_write + Duration::from_secs(5);
    std::thread::sleep(quiet.saturating_duration_since(Instant::now()));

    p.heal();
    let mut held = Vec::new();
    let gone = eventually(Duration::from_secs(10), || {
        held = (0..n)
            .map(|i| format!("gone{i}"))
            .filter(|k| get(&mut cb, k).is_some())
            .collect();
        held.is_empty()
    });
    assert!(
        gone,
        "keys deleted during the partition are still readable through the peer: {held:?}"
    );
    assert!((0..n).all(|i| get(&mut ca, &format!("gone{i}")).is_none()));
    // Evictions are not deletes: the peer keeps what the deleting node only evicted.
    let lost: Vec<_> = (0..n)
        .map(|i| format!("kept{i}"))
        .filter(|k| get(&mut cb, k).as_deref() != Some("y"))
        .collect();
    assert!(lost.is_empty(), "evicted keys went from the peer: {lost:?}");
}

/// The status of the binary response to `req`.
fn binary_status(c: &mut common::Client, req: &[u8]) -> u16 {
    c.send(req);
    let h = c.read_n(HEADER_LEN);
    assert_eq!(h[0], RESPONSE, "magic");
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    c.read_n(body);
    u16::from_be_bytes([h[6], h[7]])
}

#[test]
fn a_delete_of_a_key_the_node_evicted_reaches_the_peer_that_still_holds_it() {
    // The first node has an eighth of the second's memory: it evicts what the second keeps.
    let port = free_port();
    let (ra, rb) = (
        SocketAddr::from(([127, 0, 1, 61], free_port())),
        SocketAddr::from(([127, 0, 1, 62], free_port())),
    );
    let node = |ip: [u8; 4], mb: &str, listen: SocketAddr, peer: SocketAddr| {
        let (listen, peer) = (listen.to_string(), peer.to_string());
        Node::start(
            ip,
            port,
            &args(&["-m", mb, "--repl-listen", &listen, "--peer", &peer]),
        )
    };
    let a = node([127, 0, 1, 61], "8", ra, rb);
    let b = node([127, 0, 1, 62], "64", rb, ra);
    let (mut ca, mut cb) = (a.client(), b.client());
    let master = eventually(Duration::from_secs(10), || {
        ca.stat("replication_role") == "master" && cb.stat("replication_role") == "master"
    });
    assert!(master, "both nodes caught up");

    // One key per way of deleting, and one only evicted.
    let keys = [
        "gone_text",
        "gone_zero",
        "gone_noreply",
        "gone_md",
        "gone_mdq",
        "gone_bin",
    ];
    let all = keys.iter().chain(&["kept"]);
    let lines: String = all
        .clone()
        .map(|k| format!("set {k} 0 0 3 noreply\r\nold\r\n"))
        .collect();
    batch(&mut ca, &lines);
    for k in all.clone() {
        assert!(sees(&b, k, Some("old")), "{k} reached the second node");
    }
    // 24 MB of writes through the first node: it evicts the keys (never read there); the
    // second holds them all.
    let n = 12_000;
    let value = load(&a, n);
    assert!(sees(&b, &format!("key{}", n - 1), Some(&value)));
    for k in all.clone() {
        assert_eq!(get(&mut ca, k), None, "{k} was evicted from the first node");
        assert_eq!(
            get(&mut cb, k).as_deref(),
            Some("old"),
            "{k} is kept on the second"
        );
    }

    // Deleted through the first node, which holds none of them: memcached's answers.
    ca.expect(b"delete gone_text\r\n", b"NOT_FOUND\r\n");
    ca.expect(b"delete gone_zero 0\r\n", b"NOT_FOUND\r\n");
    batch(&mut ca, "delete gone_noreply noreply\r\n");
    ca.expect(b"md gone_md\r\n", b"NF\r\n");
    ca.expect(b"md gone_mdq q\r\n", b"NF\r\n");
    let del = packet(op::DELETE, &[], b"gone_bin", &[], 0, 1);
    // The first byte of a connection picks its protocol: binary on a connection of its own.
    assert_eq!(binary_status(&mut a.client(), &del), status::KEY_ENOENT);

    let mut held = Vec::new();
    let gone = eventually(Duration::from_secs(5), || {
        held = keys
            .iter()
            .filter(|k| get(&mut cb, k).is_some())
            .copied()
            .collect();
        held.is_empty()
    });
    assert!(
        gone,
        "keys deleted through the first node are still readable through the second: {held:?}"
    );
    // An eviction is not a delete: the second node keeps what the first only evicted.
    assert_eq!(get(&mut cb, "kept").as_deref(), Some("old"));
    // And the deletes stay: a later write through the second node is seen by both.
    cb.expect(b"set gone_text 0 0 3\r\nnew\r\n", b"STORED\r\n");
    assert!(sees(&a, "gone_text", Some("new")));
}

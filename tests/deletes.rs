//! Deletes made during a partition reach the other side once it heals, however long ago the
//! deleting node let go of its delete markers, while evictions stay local: real processes on
//! 127.0.1.1 to 127.0.1.60, links through fault proxies.

mod common;

use std::time::{Duration, Instant};

use common::eventually;
use common::node::{get, sees};
use common::pair::ProxiedPair;

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

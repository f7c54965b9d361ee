//! Acknowledged writes (`--repl-ack-peers`): a write is answered once its peers hold it, so
//! a read on the other node right after the reply finds it, and a node killed right after
//! answering has lost nothing its peer lacks. Without a caught-up peer, or with one that
//! stops answering, writes are still answered (at once, or after `--repl-ack-timeout-ms`).
//! Real processes on 127.0.5.x, the links through fault-injecting proxies.

mod common;

use std::time::{Duration, Instant};

use common::node::{call, get, streaming};
use common::pair::ProxiedPair;
use common::proxy::Mode;
use common::{cas_in, eventually, Client};

fn pair(first: u8, extra: &[&str]) -> ProxiedPair {
    let args: Vec<&str> = ["--repl-ack-peers", "1"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let p = ProxiedPair::start_in([127, 0, 5, first], "64", &args);
    assert!(
        streaming(&mut p.a.client()) && streaming(&mut p.b.client()),
        "both caught up"
    );
    p
}

#[test]
fn every_write_is_on_the_peer_when_it_is_answered() {
    let p = pair(1, &[]);
    for (from, to) in [(&p.a, &p.b), (&p.b, &p.a)] {
        let (mut w, mut r) = (from.client(), to.client());
        for i in 0..200 {
            let key = format!("k{i}-{}", from.addr.ip());
            // Text and meta writes, each read on the other node right after the reply.
            call(&mut w, &format!("set {key} 0 0 2\r\nv1\r\n"), "STORED\r\n");
            assert_eq!(get(&mut r, &key).as_deref(), Some("v1"), "set {key}");
            call(
                &mut w,
                &format!("append {key} 0 0 1\r\nx\r\n"),
                "STORED\r\n",
            );
            assert_eq!(get(&mut r, &key).as_deref(), Some("v1x"), "append {key}");
            call(&mut w, &format!("ms {key} 1 T0\r\n7\r\n"), "HD\r\n");
            call(&mut w, &format!("incr {key} 5\r\n"), "12\r\n");
            assert_eq!(get(&mut r, &key).as_deref(), Some("12"), "incr {key}");
            call(&mut w, &format!("md {key}\r\n"), "HD\r\n");
            assert_eq!(get(&mut r, &key), None, "md {key}");
        }
        // A CAS taken on the other node right after the reply completes there.
        call(&mut w, "set casme 0 0 1\r\na\r\n", "STORED\r\n");
        let cas = cas_in(&r.call_until(b"gets casme\r\n", b"END\r\n"));
        call(
            &mut r,
            &format!("cas casme 0 0 1 {cas}\r\nb\r\n"),
            "STORED\r\n",
        );
        let waits: u64 = w.stat("replication_ack_waits").parse().unwrap();
        assert!(waits >= 800, "every write waited: {waits}");
        assert_eq!(w.stat("replication_ack_timeouts"), "0");
    }
    assert_eq!(
        p.a.client().stat_group("settings", "replication_ack_peers"),
        "1"
    );
}

#[test]
fn a_node_killed_right_after_answering_lost_nothing_its_peer_lacks() {
    let mut p = pair(5, &[]);
    let mut w = p.a.client();
    // Pipelined writes: their replies come once the peer holds them all.
    let mut lines = String::new();
    for i in 0..500 {
        lines.push_str(&format!("set burst{i} 0 0 4\r\nv{i:03}\r\n"));
    }
    w.send(lines.as_bytes());
    let replies = String::from_utf8(w.read_n(500 * b"STORED\r\n".len())).unwrap();
    assert_eq!(replies, "STORED\r\n".repeat(500));
    p.a.kill();
    let mut r = p.b.client();
    let missing: Vec<usize> = (0..500)
        .filter(|i| get(&mut r, &format!("burst{i}")) != Some(format!("v{i:03}")))
        .collect();
    assert!(missing.is_empty(), "lost with the node: {missing:?}");
}

/// Kills `p`'s second node (SIGKILL); a client of the first, once it has seen the link drop.
fn kill_peer(p: &mut ProxiedPair) -> Client {
    p.b.kill();
    let mut w = p.a.client();
    assert!(
        eventually(Duration::from_secs(5), || w
            .stat("replication_peers_connected")
            == "0"),
        "the link drops"
    );
    w
}

#[test]
fn without_a_caught_up_peer_writes_are_answered_at_once() {
    let mut p = pair(9, &["--repl-ack-timeout-ms", "300"]);
    let mut w = kill_peer(&mut p);
    // A peer whose link just dropped is waited for (up to the timeout) for as long as
    // the timeout, in case the link comes straight back; after that, no write waits.
    std::thread::sleep(Duration::from_millis(400));
    let waits = w.stat("replication_ack_waits");
    let t = Instant::now();
    for i in 0..20 {
        call(
            &mut w,
            &format!("set alone{i} 0 0 1\r\nx\r\n"),
            "STORED\r\n",
        );
    }
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "no write waited: {:?}",
        t.elapsed()
    );
    assert_eq!(w.stat("replication_ack_timeouts"), "0");
    assert_eq!(
        w.stat("replication_ack_waits"),
        waits,
        "none counted as waiting"
    );
}

#[test]
fn a_write_made_just_after_its_peer_died_waits_only_until_the_peer_stops_counting() {
    let mut p = pair(17, &["--repl-ack-timeout-ms", "2000"]);
    let mut w = kill_peer(&mut p);
    let dropped = Instant::now();
    // The dead peer still counts for the timeout after its link dropped (in case the link
    // comes straight back); a write made late in that grace is answered when it ends, not
    // a whole timeout later.
    std::thread::sleep(Duration::from_millis(1500));
    call(&mut w, "set late 0 0 1\r\nx\r\n", "STORED\r\n");
    let answered = dropped.elapsed();
    assert!(
        answered < Duration::from_millis(3000),
        "answered {answered:?} after the drop"
    );
    assert_eq!(w.stat("replication_ack_timeouts"), "0");
}

#[test]
fn a_peer_that_stops_answering_holds_a_write_back_only_until_the_timeout() {
    let p = pair(13, &["--repl-ack-timeout-ms", "300"]);
    let mut w = p.a.client();
    call(&mut w, "set before 0 0 1\r\nx\r\n", "STORED\r\n");
    // The link stays open and loses every byte: the peer is still counted up until the
    // link times out (1 s here), so a write meanwhile waits out its timeout.
    p.set_mode(Mode::Blackhole);
    let t = Instant::now();
    call(&mut w, "set during 0 0 1\r\nx\r\n", "STORED\r\n");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "waited for the peer: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "but not for long: {took:?}");
    assert_eq!(w.stat("replication_ack_timeouts"), "1");
    // Once the silent link has dropped (and the timeout passed since), writes no longer
    // wait.
    assert!(
        eventually(Duration::from_secs(5), || w
            .stat("replication_peers_connected")
            == "0"),
        "the silent link drops"
    );
    std::thread::sleep(Duration::from_millis(400));
    let t = Instant::now();
    call(&mut w, "set after 0 0 1\r\nx\r\n", "STORED\r\n");
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    // Healed: the peer catches up, and writes wait for it again.
    p.set_mode(Mode::Pass);
    assert!(streaming(&mut w), "caught up again");
    let mut r = p.b.client();
    assert!(
        eventually(Duration::from_secs(5), || get(&mut r, "during").is_some()),
        "the write made during the outage arrives"
    );
    call(&mut w, "set healed 0 0 1\r\nx\r\n", "STORED\r\n");
    assert_eq!(get(&mut r, "healed").as_deref(), Some("x"));
}

#[test]
fn acknowledged_writes_need_a_peer_to_wait_for() {
    let (code, _, err) = common::run_bin(&["-u", "root", "--repl-ack-peers", "1"]);
    assert!(matches!(code, Some(c) if c != 0), "{code:?} {err}");
    assert!(
        err.contains("--repl-ack-peers") && err.contains("--peer"),
        "{err}"
    );
    let (code, _, err) = common::run_bin(&[
        "-u",
        "root",
        "--peer",
        "127.0.5.99:1",
        "--repl-ack-timeout-ms",
        "0",
    ]);
    assert!(matches!(code, Some(c) if c != 0), "{code:?} {err}");
    assert!(err.contains("--repl-ack-timeout-ms 0"), "{err}");
}

#[test]
fn acknowledged_writes_can_be_set_in_the_config_file() {
    let dir = common::TempDir::new("ack-toml");
    let file = dir.0.join("repcached.toml");
    std::fs::write(
        &file,
        "repl-ack-peers = 2\nrepl-ack-timeout-ms = 50\npeer = [\"127.0.5.31:1\"]\n",
    )
    .unwrap();
    let node = common::node::Node::start(
        [127, 0, 5, 30],
        common::free_port(),
        &common::node::args(&[
            "--config",
            file.to_str().unwrap(),
            "--repl-listen",
            "127.0.5.30:0",
        ]),
    );
    let mut c = node.client();
    assert_eq!(c.stat_group("settings", "replication_ack_peers"), "2");
    // The one peer never answers: no caught-up peer, so no write waits.
    let t = Instant::now();
    call(&mut c, "set k 0 0 1\r\nx\r\n", "STORED\r\n");
    assert!(t.elapsed() < Duration::from_millis(45), "{:?}", t.elapsed());
    assert_eq!(c.stat("replication_ack_timeouts"), "0");
}

//! Acknowledged writes (`--repl-ack-peers`) at the edges: a peer busy sending a full copy,
//! a peer that refuses a change for want of memory, binary quiet writes, a peer not given
//! the flag, a peer whose `-I` is smaller than a write. Real processes on 127.0.6.x.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::node::{args, call, get, load, streaming, Node};
use common::{free_port, Client};
use repcached::protocol::binary::{op, request as packet, status, HEADER_LEN, RESPONSE};

/// A replication address on 127.0.6.`last`, at a free port.
fn repl_addr(last: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 6, last], free_port()))
}

/// Node flags: listen for peers on `me`, dial `peer`, and `extra`.
fn flags(me: SocketAddr, peer: SocketAddr, extra: &[&str]) -> Vec<String> {
    let (me, peer) = (me.to_string(), peer.to_string());
    let mut a = args(&["--repl-listen", &me, "--peer", &peer, "--repl-timeout", "5"]);
    a.extend(args(extra));
    a
}

/// A node restarts empty; its peer holds a lot and sends it a full copy. The restarted
/// node's own copy to the peer is small, so the peer counts as caught up (`streaming`) at
/// once, and the peer applies the restarted node's writes as they come: a write there
/// should be answered after a round trip, not held for the whole copy.
#[test]
fn a_write_is_not_held_while_its_peer_sends_this_node_a_full_copy() {
    let (ra, rb) = (repl_addr(1), repl_addr(2));
    let port = free_port();
    let extra = [
        "-m",
        "512",
        "--repl-ack-peers",
        "1",
        "--repl-ack-timeout-ms",
        "5000",
    ];
    // The peer alone first, loaded.
    let b = Node::start([127, 0, 6, 2], port, &flags(rb, ra, &extra));
    let t = Instant::now();
    load(&b, 150_000);
    eprintln!("loaded the peer in {:?}", t.elapsed());
    let started = Instant::now();
    let a = Node::start([127, 0, 6, 1], port, &flags(ra, rb, &extra));
    let mut w = a.client();
    assert!(streaming(&mut w), "this node's copy to the peer is done");
    let mut slowest = Duration::ZERO;
    let mut during = 0;
    let mut i = 0;
    while w.stat("replication_role") == "catching_up" {
        let took = call(
            &mut w,
            &format!("set during{i} 0 0 1\r\nx\r\n"),
            "STORED\r\n",
        );
        i += 1;
        during += 1;
        slowest = slowest.max(took);
        eprintln!("write {i} during the copy took {took:?}");
    }
    eprintln!(
        "copy from the peer done {:?} after start; {during} writes during it, slowest {slowest:?}; timeouts {}",
        started.elapsed(),
        w.stat("replication_ack_timeouts")
    );
    // Held for the whole copy, the first write would be the only one during it.
    assert!(
        during >= 5,
        "{during} writes during the copy: they waited for it to end"
    );
    let mut r = b.client();
    assert_eq!(get(&mut r, "during0").as_deref(), Some("x"));
    assert!(
        slowest < Duration::from_millis(1000),
        "a write during the peer's copy waited {slowest:?}, though the peer applied it at once"
    );
}

/// A peer that refuses a change for want of memory (`-M`; here the smaller of the two)
/// must not acknowledge holding it: the write is then answered only after the timeout, and
/// counted in `replication_ack_timeouts`, not as if the peer held it.
#[test]
fn a_peer_that_refused_a_change_does_not_acknowledge_it() {
    let (ra, rb) = (repl_addr(5), repl_addr(6));
    let port = free_port();
    let common = [
        "-M",
        "--repl-ack-peers",
        "1",
        "--repl-ack-timeout-ms",
        "1000",
    ];
    let mut fa: Vec<&str> = vec!["-m", "256"];
    fa.extend(common);
    let mut fb: Vec<&str> = vec!["-m", "16"];
    fb.extend(common);
    let a = Node::start([127, 0, 6, 5], port, &flags(ra, rb, &fa));
    let b = Node::start([127, 0, 6, 6], port, &flags(rb, ra, &fb));
    let (mut w, mut r) = (a.client(), b.client());
    assert!(streaming(&mut w) && streaming(&mut r), "both caught up");
    // Fill the peer: this node still takes writes.
    let value = "v".repeat(100_000);
    let mut full = false;
    for i in 0..1000 {
        call(
            &mut w,
            &format!("set fill{i} 0 0 {}\r\n{value}\r\n", value.len()),
            "STORED\r\n",
        );
        if get(&mut r, &format!("fill{i}")).is_none() {
            eprintln!("the peer refused fill{i}");
            full = true;
            break;
        }
    }
    assert!(full, "the peer filled up");
    let before: u64 = w.stat("replication_ack_timeouts").parse().unwrap();
    // As big as the write it refused: a small one may still fit a segment with room.
    let took = call(
        &mut w,
        &format!("set last 0 0 {}\r\n{value}\r\n", value.len()),
        "STORED\r\n",
    );
    let after: u64 = w.stat("replication_ack_timeouts").parse().unwrap();
    let held = get(&mut r, "last");
    eprintln!(
        "'last' answered after {took:?}; timeouts {before} -> {after}; on the peer: {held:?}"
    );
    assert_eq!(held, None, "the peer is full");
    assert!(
        took >= Duration::from_millis(900) && after == before + 1,
        "answered after {took:?} as held by the peer, which refused it (a crash of this node now loses it)"
    );
}

fn read_resp(c: &mut Client) -> (u8, u16, u32) {
    let h = c.read_n(HEADER_LEN);
    assert_eq!(h[0], RESPONSE, "magic");
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    c.read_n(body);
    (
        h[1],
        u16::from_be_bytes([h[6], h[7]]),
        u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
    )
}

fn set_extras() -> Vec<u8> {
    vec![0; 8]
}

fn arith_extras(delta: u64) -> Vec<u8> {
    let mut e = delta.to_be_bytes().to_vec();
    e.extend_from_slice(&0u64.to_be_bytes());
    e.extend_from_slice(&0u32.to_be_bytes());
    e
}

/// Binary quiet writes answer nothing; the NOOP after them is the reply that must wait.
#[test]
fn binary_quiet_writes_are_on_the_peer_when_the_noop_after_them_is_answered() {
    let (ra, rb) = (repl_addr(9), repl_addr(10));
    let port = free_port();
    let extra = ["--repl-ack-peers", "1", "--repl-ack-timeout-ms", "2000"];
    let a = Node::start([127, 0, 6, 9], port, &flags(ra, rb, &extra));
    let b = Node::start([127, 0, 6, 10], port, &flags(rb, ra, &extra));
    let (mut t, mut r) = (a.client(), b.client());
    assert!(streaming(&mut t) && streaming(&mut r), "both caught up");
    // A connection speaks the protocol of its first byte: a new one for binary.
    let mut w = a.client();
    for i in 0..100 {
        let (k1, k2) = (format!("q{i}"), format!("d{i}"));
        let mut batch = Vec::new();
        batch.extend(packet(op::SETQ, &set_extras(), k1.as_bytes(), b"1", 0, 1));
        batch.extend(packet(op::SETQ, &set_extras(), k2.as_bytes(), b"1", 0, 2));
        batch.extend(packet(op::NOOP, &[], &[], &[], 0, 3));
        w.send(&batch);
        assert_eq!(read_resp(&mut w), (op::NOOP, status::OK, 3));
        assert_eq!(get(&mut r, &k1).as_deref(), Some("1"), "SETQ {k1}");
        let mut batch = Vec::new();
        batch.extend(packet(
            op::INCREMENTQ,
            &arith_extras(4),
            k1.as_bytes(),
            &[],
            0,
            4,
        ));
        batch.extend(packet(op::APPENDQ, &[], k1.as_bytes(), b"z", 0, 5));
        batch.extend(packet(op::DELETEQ, &[], k2.as_bytes(), &[], 0, 6));
        batch.extend(packet(op::NOOP, &[], &[], &[], 0, 7));
        w.send(&batch);
        assert_eq!(read_resp(&mut w), (op::NOOP, status::OK, 7));
        assert_eq!(
            get(&mut r, &k1).as_deref(),
            Some("5z"),
            "INCRQ+APPENDQ {k1}"
        );
        assert_eq!(get(&mut r, &k2), None, "DELETEQ {k2}");
    }
    assert_eq!(t.stat("replication_ack_timeouts"), "0");
}

/// Only this node asks for acknowledged writes; its peer was given no flag. The peer
/// acknowledges at once all the same (this node asked it to when the link began), so a
/// write waits a round trip, not the few milliseconds a peer gathers acks for otherwise.
#[test]
fn acks_are_prompt_when_only_the_writing_node_asks_for_them() {
    let (ra, rb) = (repl_addr(13), repl_addr(14));
    let port = free_port();
    let a = Node::start(
        [127, 0, 6, 13],
        port,
        &flags(ra, rb, &["--repl-ack-peers", "1"]),
    );
    let b = Node::start([127, 0, 6, 14], port, &flags(rb, ra, &[]));
    let (mut w, mut r) = (a.client(), b.client());
    assert!(streaming(&mut w) && streaming(&mut r), "the pair links up");
    let mut took: Vec<Duration> = (0..40)
        .map(|i| call(&mut w, &format!("set k{i} 0 0 1\r\nx\r\n"), "STORED\r\n"))
        .collect();
    took.sort();
    // Gathered acks hold every write at least 5 ms; prompt ones a round trip.
    let median = took[took.len() / 2];
    assert!(median < Duration::from_millis(4), "writes took {took:?}");
    assert_eq!(w.stat("replication_ack_timeouts"), "0");
    assert_eq!(get(&mut r, "k39").as_deref(), Some("x"));
}

/// A peer with a smaller `-I` refuses a change too large for it, for good. It told this
/// node its `-I` when the link began, so a write that large is answered once the peer
/// holds everything else (a round trip), and counted: neither held for the whole timeout
/// nor answered as if the peer held it. So is a touch or gat of it (the item goes whole).
/// Writes after it wait for the peer as before, and so do small writes sharing replies
/// with it in a pipeline.
#[test]
fn a_write_too_large_for_the_peer_is_answered_once_the_peer_holds_the_rest() {
    let (ra, rb) = (repl_addr(17), repl_addr(18));
    let port = free_port();
    let ack = ["--repl-ack-peers", "1", "--repl-ack-timeout-ms", "5000"];
    let mut fa: Vec<&str> = vec!["-I", "2m"];
    fa.extend(ack);
    let a = Node::start([127, 0, 6, 17], port, &flags(ra, rb, &fa));
    let b = Node::start([127, 0, 6, 18], port, &flags(rb, ra, &ack));
    let (mut w, mut r) = (a.client(), b.client());
    assert!(streaming(&mut w) && streaming(&mut r), "the pair links up");
    call(&mut w, "set before 0 0 1\r\nx\r\n", "STORED\r\n");
    // Over the peer's 1 MB -I, under this node's 2 MB.
    let value = "v".repeat(1_500_000);
    let took = call(
        &mut w,
        &format!("set big 0 0 {}\r\n{value}\r\n", value.len()),
        "STORED\r\n",
    );
    eprintln!("the write too large for the peer was answered after {took:?}");
    assert_eq!(get(&mut r, "big"), None, "the peer refused it");
    // Not sent at all: the writing node says why.
    let status = w.call_until(b"stats replication\r\n", b"END\r\n");
    let status = String::from_utf8_lossy(&status);
    assert!(
        status
            .lines()
            .any(|l| l.contains(":last_error ") && l.contains("same -I")),
        "{status}"
    );
    assert_eq!(w.stat("replication_ack_too_large"), "1");
    assert_eq!(w.stat("replication_ack_timeouts"), "0");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    // A touch, or a gat, sends the item whole again: too large for the peer as well.
    let took = call(&mut w, "touch big 100\r\n", "TOUCHED\r\n");
    assert!(
        took < Duration::from_secs(2),
        "touch answered after {took:?}"
    );
    assert_eq!(w.stat("replication_ack_too_large"), "2");
    let started = Instant::now();
    let reply = w.call_until(b"gat 200 big\r\n", b"END\r\n");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        reply.len(),
        "VALUE big 0 1500000\r\n".len() + value.len() + 7
    );
    assert_eq!(w.stat("replication_ack_too_large"), "3");
    // What comes after waits for the peer: held there when answered.
    for i in 0..20 {
        let took = call(
            &mut w,
            &format!("set after{i} 0 0 1\r\ny\r\n"),
            "STORED\r\n",
        );
        assert!(
            took < Duration::from_secs(1),
            "after{i} answered after {took:?}"
        );
        assert_eq!(get(&mut r, &format!("after{i}")).as_deref(), Some("y"));
    }
    assert_eq!(w.stat("replication_ack_too_large"), "3");
    // Pipelined among small writes.
    let mut lines = format!("set big2 0 0 {}\r\n{value}\r\n", value.len());
    for i in 0..2000 {
        lines.push_str(&format!("set p{i} 0 0 1\r\nz\r\n"));
    }
    let started = Instant::now();
    w.send(lines.as_bytes());
    let replies = w.read_n(2001 * 8);
    let took = started.elapsed();
    assert_eq!(
        replies,
        "STORED\r\n".repeat(2001).as_bytes(),
        "every write stored"
    );
    assert!(took < Duration::from_secs(2), "the pipeline took {took:?}");
    assert_eq!(get(&mut r, "big2"), None, "the peer refused it");
    // The small writes sharing replies with it still waited for the peer, which holds them.
    assert_eq!(get(&mut r, "p1999").as_deref(), Some("z"));
    assert!(w.stat("replication_ack_too_large").parse::<u64>().unwrap() >= 4);
    assert_eq!(w.stat("replication_ack_timeouts"), "0");
    // With the peer frozen, a small write sharing replies with a large one waits for it.
    b.freeze();
    w.send(
        format!(
            "set big3 0 0 {}\r\n{value}\r\nset q 0 0 1\r\nq\r\n",
            value.len()
        )
        .as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(300));
    w.assert_quiet();
    b.thaw();
    assert_eq!(w.read_n(16), b"STORED\r\nSTORED\r\n");
    assert_eq!(get(&mut r, "q").as_deref(), Some("q"));
    assert_eq!(w.stat("replication_ack_timeouts"), "0");
}

/// With two peers asked for (`--repl-ack-peers 2`) and one of them unable to take the
/// item, a write waits for the peer that can, and is answered once that one holds it.
#[test]
fn a_write_too_large_for_one_peer_waits_for_the_peer_that_takes_it() {
    let (ra, rb, rc) = (repl_addr(19), repl_addr(20), repl_addr(21));
    let port = free_port();
    let node = |last: u8, me: SocketAddr, peers: [SocketAddr; 2], extra: &[&str]| {
        let mut a = flags(me, peers[0], extra);
        a.extend(args(&["--peer", &peers[1].to_string()]));
        Node::start([127, 0, 6, last], port, &a)
    };
    let ack = [
        "--repl-ack-peers",
        "2",
        "--repl-ack-timeout-ms",
        "5000",
        "-I",
        "2m",
    ];
    let a = node(19, ra, [rb, rc], &ack);
    let b = node(20, rb, [ra, rc], &[]);
    let c = node(21, rc, [ra, rb], &["-I", "2m"]);
    let mut w = a.client();
    let linked = common::eventually(Duration::from_secs(20), || {
        let text = String::from_utf8(w.call_until(b"stats replication\r\n", b"END\r\n")).unwrap();
        text.lines()
            .filter(|l| l.starts_with("STAT peer:") && l.ends_with(":state streaming"))
            .count()
            == 2
    });
    assert!(linked, "A streams to both peers");
    let value = "v".repeat(1_500_000);
    call(
        &mut w,
        &format!("set big 0 0 {}\r\n{value}\r\n", value.len()),
        "STORED\r\n",
    );
    // Answered once C held it: C has it at once; B, with -I 1m, refused it.
    assert_eq!(
        get(&mut c.client(), "big").map(|v| v.len()),
        Some(value.len())
    );
    assert_eq!(get(&mut b.client(), "big"), None);
    assert_eq!(w.stat("replication_ack_too_large"), "1");
    assert_eq!(w.stat("replication_ack_timeouts"), "0");
}

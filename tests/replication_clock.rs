//! Replication between nodes whose clocks disagree: one node runs under
//! libfaketime (Debian's `faketime`), minutes ahead or seconds behind.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{eventually, free_port, wait_ready, Client, BIN};

/// A node in a process group of its own, the whole group killed on drop: `faketime` runs
/// the server as its child, which killing `faketime` alone would leave running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the group is the one spawned below.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Starts a node at `ip`, under `faketime -f OFFSET` when given one.
fn node(ip: &str, port: u16, rport: u16, peer: &str, offset: Option<&str>) -> Killed {
    let mut cmd = match offset {
        Some(o) => {
            let mut c = Command::new("faketime");
            c.args(["-f", o, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    let child = cmd
        .process_group(0)
        .args(["-u", "root", "-l", ip, "-p", &port.to_string()])
        .args(["-X", &rport.to_string(), "-x", peer])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn repcached (under faketime: install Debian's faketime)");
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    assert!(
        wait_ready(addr, Duration::from_secs(10)),
        "{ip} did not start"
    );
    Killed(child)
}

fn hit(c: &mut Client, key: &str) -> bool {
    let out = c.call_until(format!("get {key}\r\n").as_bytes(), b"END\r\n");
    out.starts_with(b"VALUE")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A linked pair on `ips`, the second node under `faketime -f offset`, and a client of each.
fn pair(ips: [&str; 2], offset: &str) -> ([Killed; 2], Client, Client) {
    let (port, rport) = (free_port(), free_port());
    let a = node(ips[0], port, rport, ips[1], None);
    let b = node(ips[1], port, rport, ips[0], Some(offset));
    let addr = |ip: &str| -> SocketAddr { format!("{ip}:{port}").parse().unwrap() };
    let (mut ca, cb) = (Client::connect(addr(ips[0])), Client::connect(addr(ips[1])));
    let linked = Instant::now() + Duration::from_secs(10);
    while ca.stat("replication_peers_connected") != "1" {
        assert!(Instant::now() < linked, "the nodes did not pair");
        std::thread::sleep(Duration::from_millis(20));
    }
    ([a, b], ca, cb)
}

#[test]
fn expiry_and_ordering_hold_when_clocks_are_minutes_apart() {
    let (_nodes, mut ca, mut cb) = pair(["127.0.0.61", "127.0.0.62"], "+300s");
    let skew = cb.stat("time").parse::<i64>().unwrap() - ca.stat("time").parse::<i64>().unwrap();
    assert!(
        (290..=310).contains(&skew),
        "the second node's clock is {skew} s off"
    );
    // Relative expiry set on either node, and absolute expiry by each node's own clock.
    ca.expect(b"set rel_a 0 3 1\r\nx\r\n", b"STORED\r\n");
    cb.expect(b"set rel_b 0 3 1\r\nx\r\n", b"STORED\r\n");
    let abs_a = unix_now() + 3;
    let abs_b = unix_now() + 300 + 3;
    ca.expect(
        format!("set abs_a 0 {abs_a} 1\r\nx\r\n").as_bytes(),
        b"STORED\r\n",
    );
    cb.expect(
        format!("set abs_b 0 {abs_b} 1\r\nx\r\n").as_bytes(),
        b"STORED\r\n",
    );
    let keys = ["rel_a", "rel_b", "abs_a", "abs_b"];
    let start = Instant::now();
    // Seen on both first, then gone on both at about the same moment.
    let mut gone: Vec<[Option<Duration>; 2]> = vec![[None, None]; keys.len()];
    let mut seen = vec![[false, false]; keys.len()];
    while start.elapsed() < Duration::from_secs(8) {
        for (i, key) in keys.iter().enumerate() {
            for (side, c) in [&mut ca, &mut cb].into_iter().enumerate() {
                let present = hit(c, key);
                seen[i][side] |= present;
                if seen[i][side] && !present && gone[i][side].is_none() {
                    gone[i][side] = Some(start.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, key) in keys.iter().enumerate() {
        assert!(seen[i][0] && seen[i][1], "{key} reached both nodes");
        let (Some(a), Some(b)) = (gone[i][0], gone[i][1]) else {
            panic!("{key} did not expire on both: {:?}", gone[i]);
        };
        let apart = a.abs_diff(b);
        assert!(
            apart <= Duration::from_millis(1200),
            "{key}: {a:?} vs {b:?}"
        );
        assert!(a <= Duration::from_secs(5), "{key} expired late: {a:?}");
    }
    // The node ahead wrote first; a later write on the other still wins everywhere.
    cb.expect(b"set k 0 0 5\r\nfirst\r\n", b"STORED\r\n");
    assert!(
        eventually(Duration::from_secs(5), || hit(&mut ca, "k")),
        "k did not reach the other node"
    );
    ca.expect(b"set k 0 0 6\r\nsecond\r\n", b"STORED\r\n");
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let out = cb.call_until(b"get k\r\n", b"END\r\n");
        if out.windows(6).any(|w| w == b"second") {
            break;
        }
        assert!(
            Instant::now() < until,
            "the later write lost on the node ahead"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = ca.call_until(b"get k\r\n", b"END\r\n");
    assert!(out.windows(6).any(|w| w == b"second"));
}

/// A delayed `flush_all` sent to a node whose clock is behind its peer's: what the peer
/// writes until the flush takes effect goes too. The flush was stamped with the deadline
/// by the late node's clock, below the peer's writes of the delay, which all stayed.
#[test]
fn a_delayed_flush_from_a_node_behind_removes_what_its_peer_writes_until_then() {
    let (_nodes, mut ca, mut cb) = pair(["127.0.8.1", "127.0.8.2"], "-10s");
    // The late node has taken in the other's stamps.
    ca.expect(b"set warm 0 0 1\r\nx\r\n", b"STORED\r\n");
    assert!(
        eventually(Duration::from_secs(5), || hit(&mut cb, "warm")),
        "warm did not reach the late node"
    );
    cb.expect(b"flush_all 2\r\n", b"OK\r\n");
    let start = Instant::now();
    let mut during = Vec::new();
    while start.elapsed() < Duration::from_millis(1500) {
        let key = format!("during{}", during.len());
        ca.expect(
            format!("set {key} 0 0 1\r\nx\r\n").as_bytes(),
            b"STORED\r\n",
        );
        during.push(key);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(3000).saturating_sub(start.elapsed()));
    ca.expect(b"set after 0 0 1\r\nx\r\n", b"STORED\r\n");
    std::thread::sleep(Duration::from_millis(300));
    for (name, c) in [("the peer", &mut ca), ("the late node", &mut cb)] {
        let kept: Vec<&String> = during.iter().filter(|k| hit(c, k)).collect();
        assert!(kept.is_empty(), "{name} kept writes of the delay: {kept:?}");
        assert!(hit(c, "after"), "{name} lost a write made after the flush");
    }
}

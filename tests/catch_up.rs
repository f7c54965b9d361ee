//! A restarted node catching up in a mesh of three: while its copies arrive, a read that
//! misses asks a peer first, so it must not answer "not found" for a key the cluster holds.
//! Real processes on 127.0.0.210 to 127.0.0.229, links through fault proxies, and on
//! 127.0.9.1 to 127.0.9.6.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::node::{args, call, get, load, sees, Node};
use common::pair::ProxiedPair;
use common::proxy::{Mode, Proxy};
use common::{eventually, free_port};

/// Three nodes, A, B and C, on 127.0.0.`first` to `first + 2`, each naming the other two;
/// A and B name each other through proxies (on `first + 3` and `first + 4`), so that link
/// can be cut while both reach C; so do A and C (on `first + 5` and `first + 6`), so that
/// link can be held back while B and C link.
struct Mesh {
    nodes: Vec<Node>,
    ab: Proxy,
    ba: Proxy,
    ac: Proxy,
    ca: Proxy,
}

impl Mesh {
    fn start(first: u8) -> Mesh {
        let ip = |i: u8| [127, 0, 0, first + i];
        let port = free_port();
        let listen: Vec<SocketAddr> = (0..3)
            .map(|i| SocketAddr::from((ip(i), free_port())))
            .collect();
        let ab = Proxy::start(SocketAddr::from((ip(3), 0)), listen[1]);
        let ba = Proxy::start(SocketAddr::from((ip(4), 0)), listen[0]);
        let ac = Proxy::start(SocketAddr::from((ip(5), 0)), listen[2]);
        let ca = Proxy::start(SocketAddr::from((ip(6), 0)), listen[0]);
        let peers = [
            [ab.addr(), ac.addr()],
            [ba.addr(), listen[2]],
            [ca.addr(), listen[1]],
        ];
        let nodes = (0..3)
            .map(|i| {
                let mut a = args(&["-m", "128", "--repl-listen", &listen[i].to_string()]);
                for p in peers[i] {
                    a.extend(args(&["--peer", &p.to_string()]));
                }
                Node::start(ip(i as u8), port, &a)
            })
            .collect();
        Mesh {
            nodes,
            ab,
            ba,
            ac,
            ca,
        }
    }

    /// A mesh whose A holds `key0..key{n}` (returns their value) and whose B holds
    /// nothing: A and B lose each other, B and C go down, and B comes back first, able to
    /// reach only C, which stays down.
    fn with_b_emptied(first: u8, n: usize) -> (Mesh, String) {
        let mut mesh = Mesh::start(first);
        assert!((0..3).all(|i| mesh.connected(i, 2)), "the mesh links up");
        let value = load(&mesh.nodes[0], n);
        for i in 1..3 {
            assert!(sees(&mesh.nodes[i], &format!("key{}", n - 1), Some(&value)));
        }
        for p in [&mesh.ab, &mesh.ba] {
            p.set_mode(Mode::Refuse);
            p.cut();
        }
        mesh.nodes[2].kill();
        mesh.nodes[1].restart();
        (mesh, value)
    }

    fn connected(&self, i: usize, n: usize) -> bool {
        let mut c = self.nodes[i].client();
        let want = n.to_string();
        eventually(Duration::from_secs(10), || {
            c.stat("replication_peers_connected") == want
        })
    }
}

#[test]
fn a_restarted_node_reads_through_a_peer_that_holds_the_key_not_one_still_empty() {
    let n = 20_000;
    // Then C comes back, linked to A (which holds everything) and to B (nothing yet).
    let (mut mesh, value) = Mesh::with_b_emptied(210, n);
    // Whichever peer C asks first is a matter of chance: a few restarts of C.
    for round in 0..4 {
        mesh.nodes[2].restart();
        let mut c = mesh.nodes[2].client();
        // At once, before A's copy (40 MB) can have arrived.
        let keys: Vec<String> = (round..n).step_by(199).map(|i| format!("key{i}")).collect();
        let reply = c.call_until(format!("get {}\r\n", keys.join(" ")).as_bytes(), b"END\r\n");
        let hits = String::from_utf8_lossy(&reply).matches("VALUE ").count();
        assert_eq!(
            hits,
            keys.len(),
            "round {round}: a restarted node missed keys the cluster holds (it asked an empty peer)"
        );
        assert!(sees(&mesh.nodes[2], &format!("key{}", n - 1), Some(&value)));
    }
}

/// The peer that holds the keys may link after one that holds nothing: a restarted node
/// that asked the empty peer waits a moment for a link still in its handshake before it
/// answers a miss.
#[test]
fn a_restarted_node_waits_for_a_peer_slower_to_link_than_an_empty_one() {
    let n = 2_000;
    let (mut mesh, _) = Mesh::with_b_emptied(220, n);
    // C comes back linked to B at once, and to A only a little later: its dial to A
    // connects, but the handshake goes unanswered until the link is let through (and the
    // dial made again).
    for p in [&mesh.ac, &mesh.ca] {
        p.set_mode(Mode::Blackhole);
        p.cut();
    }
    mesh.nodes[2].restart();
    let mut c = mesh.nodes[2].client();
    let keys: Vec<String> = (0..n).step_by(97).map(|i| format!("key{i}")).collect();
    let reply = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(40));
            for p in [&mesh.ac, &mesh.ca] {
                p.set_mode(Mode::Pass);
            }
        });
        c.call_until(format!("get {}\r\n", keys.join(" ")).as_bytes(), b"END\r\n")
    });
    let hits = String::from_utf8_lossy(&reply).matches("VALUE ").count();
    assert_eq!(
        hits,
        keys.len(),
        "a restarted node answered misses for keys a peer linking a moment later holds"
    );
}

/// A configured peer that is down (nothing listens there), or one named twice, is not
/// waited for: a restarted node that asked the peer that is up answers a miss at once.
#[test]
fn a_restarted_node_does_not_wait_for_a_configured_peer_that_is_down() {
    let port = free_port();
    let ip = |last: u8| [127, 0, 0, last];
    let (ra, rb, down) = (
        SocketAddr::from((ip(227), free_port())),
        SocketAddr::from((ip(228), free_port())),
        SocketAddr::from((ip(229), free_port())),
    );
    let flags = |me: SocketAddr, peers: &[SocketAddr]| {
        let mut a = args(&["-m", "64", "--repl-listen", &me.to_string()]);
        for p in peers {
            a.extend(args(&["--peer", &p.to_string()]));
        }
        a
    };
    for b_peers in [[ra, down], [ra, ra]] {
        // A misses a peer too, so for its first seconds it is not caught up and neither
        // is a copy it sends: B goes on asking it about misses.
        let a = Node::start(ip(227), port, &flags(ra, &[rb, down]));
        let mut b = Node::start(ip(228), port, &flags(rb, &b_peers));
        let n = 200;
        let value = load(&a, n);
        assert!(sees(&b, &format!("key{}", n - 1), Some(&value)));
        b.restart();
        assert!(sees(&b, "key5", Some(&value)));
        let mut c = b.client();
        for key in ["nokey", "key7", "nokey2"] {
            let t = std::time::Instant::now();
            let hit = get(&mut c, key).is_some();
            let took = t.elapsed();
            assert_eq!(hit, key.starts_with("key"), "{key} with peers {b_peers:?}");
            assert!(
                took < Duration::from_millis(200),
                "{key} took {took:?} with peers {b_peers:?}"
            );
        }
        drop(b);
        drop(a);
    }
}

/// A peer bounds the answers it has queued for a node's fetches in bytes, and counts each
/// out as it goes; the answers that went between the batches of a copy (or of a busy
/// stream) were never counted out, so after a few megabytes of them the peer refused every
/// later fetch for the rest of the link, and a node catching up under reads waited and
/// answered misses for keys the cluster held. Large items make a few answers enough.
/// Real processes on 127.0.9.1 and 127.0.9.2.
#[test]
fn a_restarted_node_reads_through_a_peer_for_as_long_as_its_copy_streams() {
    let port = free_port();
    let ip = |last: u8| [127, 0, 9, last];
    let (ra, rb) = (
        SocketAddr::from((ip(1), free_port())),
        SocketAddr::from((ip(2), free_port())),
    );
    let flags = |me: SocketAddr, peer: SocketAddr| {
        args(&[
            "-m",
            "512",
            "--repl-listen",
            &me.to_string(),
            "--peer",
            &peer.to_string(),
        ])
    };
    let a = Node::start(ip(1), port, &flags(ra, rb));
    let mut b = Node::start(ip(2), port, &flags(rb, ra));
    // 900 KB each: five answers fill the peer's bound on queued answers.
    let n = 300;
    let value = "v".repeat(900_000);
    let mut c = a.client();
    for i in 0..n {
        c.send(format!("set key{i} 0 0 {} noreply\r\n{value}\r\n", value.len()).as_bytes());
    }
    c.expect(b"mn\r\n", b"MN\r\n");
    assert!(sees(&b, &format!("key{}", n - 1), Some(&value)));
    b.restart();
    let mut c = b.client();
    let (mut reads, mut misses, mut seed) = (0, Vec::new(), 7u64);
    while c.stat("replication_role") == "catching_up" {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = format!("key{}", (seed >> 33) % n as u64);
        reads += 1;
        if get(&mut c, &key).is_none_or(|v| v != value) {
            misses.push(key);
        }
    }
    assert!(
        misses.is_empty(),
        "{} of {reads} reads missed: {misses:?}",
        misses.len()
    );
}

/// Over a slow link a fetch's answer travels behind the copy already under way, longer
/// than a read waited for it while no answer came (250 ms): reads on the restarted node
/// answered misses, and `add`, `incr` and `append` ran on a store still missing their keys,
/// so an `add` replaced the cluster's value on every node (a PHP session lock taken
/// twice). Now a read waits while the link delivers anything, and little of the copy waits
/// in the sender's kernel ahead of an answer. Both links through proxies at 1 MB/s, where
/// either change alone is not enough.
/// Real processes on 127.0.9.3 and 127.0.9.4, proxies on 127.0.9.5 and 127.0.9.6.
#[test]
fn a_node_catching_up_over_a_slow_link_acts_on_the_clusters_values() {
    let mut p = ProxiedPair::start_in([127, 0, 9, 3], "128", &[]);
    // 6 MB of items: six seconds of copy at 1 MB/s.
    let n = 3000;
    let value = load(&p.a, n);
    let mut c = p.a.client();
    for i in 0..100 {
        call(
            &mut c,
            &format!("set ctr{i} 0 0 4\r\n1000\r\n"),
            "STORED\r\n",
        );
    }
    assert!(sees(&p.b, "ctr99", Some("1000")));
    assert!(sees(&p.b, &format!("key{}", n - 1), Some(&value)));
    for proxy in [&p.ab, &p.ba] {
        proxy.set_rate(Some(1 << 20));
    }
    p.b.restart();
    let mut c = p.b.client();
    let mut during = 0;
    for i in 0..100 {
        if c.stat("replication_role") != "catching_up" {
            break;
        }
        during += 1;
        // Keys spread over the copy: an add, a get, then an append, each of its own key.
        let key = |k: usize| format!("key{}", (i * 3 + k) * 19 % n);
        call(
            &mut c,
            &format!("add {} 0 0 5\r\nADDED\r\n", key(0)),
            "NOT_STORED\r\n",
        );
        assert_eq!(
            get(&mut c, &key(1)).as_deref(),
            Some(value.as_str()),
            "{}",
            key(1)
        );
        call(
            &mut c,
            &format!("append {} 0 0 1\r\nZ\r\n", key(2)),
            "STORED\r\n",
        );
        call(&mut c, &format!("incr ctr{i} 1\r\n"), "1001\r\n");
    }
    assert!(
        during >= 5,
        "only {during} rounds ran while the node caught up"
    );
}

//! Meshes of three and four real processes whose links pass through fault-injecting proxies: a node
//! forwards a change only to a peer that does not get it from the node that wrote it, and
//! what a lost link carried reaches the other side through the third node.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mesh::ProxiedMesh;
use common::node::{get, peer_stat_sum, random_writes, repl_stats, sees, Node};
use common::proxy::Mode;
use common::{eventually, Client};

/// Stores `{prefix}0..{prefix}{n}` on `node`, each holding its own name, pipelined.
fn write_keys(node: &Node, prefix: &str, n: usize) {
    let mut c = node.client();
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "set {prefix}{i} 0 0 {} noreply\r\n{prefix}{i}\r\n",
                prefix.len() + i.to_string().len()
            )
        })
        .collect();
    c.send(lines.as_bytes());
    c.expect(b"mn\r\n", b"MN\r\n");
}

/// The keys of `{prefix}0..{prefix}{n}` that `node` does not hold (within 10 s), asked
/// 200 to a get line.
fn missing(node: &Node, prefix: &str, n: usize) -> Vec<usize> {
    let mut c = node.client();
    let mut missing = Vec::new();
    eventually(Duration::from_secs(10), || {
        missing.clear();
        for start in (0..n).step_by(200) {
            let end = (start + 200).min(n);
            let keys: String = (start..end).map(|i| format!(" {prefix}{i}")).collect();
            let reply = c.call_until(format!("get{keys}\r\n").as_bytes(), b"END\r\n");
            let text = String::from_utf8_lossy(&reply);
            let held: std::collections::HashSet<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("VALUE "))
                .filter_map(|l| l.split(' ').next())
                .collect();
            missing
                .extend((start..end).filter(|i| !held.contains(format!("{prefix}{i}").as_str())));
        }
        missing.is_empty()
    });
    missing
}

fn forwarded(clients: &mut [Client]) -> Vec<u64> {
    clients
        .iter_mut()
        .map(|c| peer_stat_sum(c, "relayed"))
        .collect()
}

/// Waits until a batch of writes on each node reaches the others and none of it is
/// forwarded (each node tells its peers whom it hears once a link has caught up).
fn until_nothing_is_forwarded(m: &ProxiedMesh) -> bool {
    let mut clients: Vec<Client> = m.nodes.iter().map(Node::client).collect();
    let mut round = 0;
    eventually(Duration::from_secs(15), || {
        round += 1;
        let before = forwarded(&mut clients);
        let prefix = format!("warm{round}_");
        for node in &m.nodes {
            write_keys(node, &prefix, 50);
        }
        let arrived = m.nodes.iter().all(|n| missing(n, &prefix, 50).is_empty());
        arrived && forwarded(&mut clients) == before
    })
}

#[test]
fn a_mesh_whose_links_are_up_forwards_nothing() {
    let m = ProxiedMesh::start([127, 0, 11], 3, &[]);
    assert!(
        until_nothing_is_forwarded(&m),
        "changes are still forwarded"
    );
    let mut clients: Vec<Client> = m.nodes.iter().map(Node::client).collect();
    let before = forwarded(&mut clients);
    let received: Vec<u64> = clients
        .iter_mut()
        .map(|c| peer_stat_sum(c, "received"))
        .collect();
    for (i, node) in m.nodes.iter().enumerate() {
        write_keys(node, &format!("from{i}_"), 500);
    }
    for node in &m.nodes {
        for i in 0..3 {
            let lost = missing(node, &format!("from{i}_"), 500);
            assert!(lost.is_empty(), "written on node {i}, missing: {lost:?}");
        }
    }
    assert_eq!(forwarded(&mut clients), before, "nothing forwarded");
    // Each node received each other node's 500 changes once: from its writer.
    for (c, was) in clients.iter_mut().zip(received) {
        assert_eq!(peer_stat_sum(c, "received") - was, 1000);
    }
}

#[test]
fn writes_in_flight_when_a_link_goes_silent_reach_the_other_side_through_the_third_node() {
    let m = ProxiedMesh::start([127, 0, 12], 3, &[]);
    let (w, a, y) = (0, 1, 2);
    assert!(
        until_nothing_is_forwarded(&m),
        "changes are still forwarded"
    );
    // Node w writes without a pause; its link to y goes silent in the middle, so changes
    // are on their way to y when it does, and a did not forward them (y heard w).
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let mut c = m.nodes[w].client();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let lines: String = (n..n + 20)
                    .map(|i| {
                        format!(
                            "set g{i} 0 0 {} noreply\r\ng{i}\r\n",
                            1 + i.to_string().len()
                        )
                    })
                    .collect();
                c.call_until(format!("{lines}mn\r\n").as_bytes(), b"MN\r\n");
                n += 20;
                written.store(n, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    m.set_mode(w, y, Mode::Blackhole);
    std::thread::sleep(Duration::from_millis(2500));
    // No new link between them: what y holds of w's writes came through a.
    m.set_mode(w, y, Mode::Refuse);
    m.cut(w, y);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let n = written.load(Ordering::Relaxed) as usize;
    let lost = missing(&m.nodes[y], "g", n);
    if !lost.is_empty() {
        for node in &m.nodes {
            eprintln!("{}\n{}", node.addr, repl_stats(&mut node.client()));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {n} writes never reached y: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    let mut ca = m.nodes[a].client();
    assert!(
        peer_stat_sum(&mut ca, "gaps_filled") >= 1,
        "a filled y's gap"
    );
    assert!(
        peer_stat_sum(&mut ca, "relayed") > 0,
        "a forwarded w's writes to y"
    );
}

/// Client threads writing on nodes of the mesh until [`Writers::stop`].
struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    /// Stops the writers, each once its last batch is answered.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// Writers on `nodes` of the mesh, each sending [`random_writes`] of `keys` keys until
/// stopped: twenty a batch, a batch every 5 ms.
fn writers(m: &ProxiedMesh, nodes: &[usize], (seed, keys): (u64, u64)) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = nodes
        .iter()
        .map(|&w| {
            let stop = stop.clone();
            let mut c = m.nodes[w].client();
            std::thread::spawn(move || {
                let mut x = seed.wrapping_mul(w as u64 + 3) | 1;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    c.send(random_writes(&mut x, &mut n, w, keys).as_bytes());
                    c.expect(b"mn\r\n", b"MN\r\n");
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    Writers { stop, threads }
}

/// Asserts that every node of the mesh answers `k0..k{keys}` alike within `limit`.
fn assert_identical(m: &ProxiedMesh, keys: u64, limit: Duration, what: &str) {
    let mut clients: Vec<Client> = m.nodes.iter().map(Node::client).collect();
    let mut differ = Vec::new();
    let agree = eventually(limit, || {
        differ = (0..keys)
            .map(|k| format!("k{k}"))
            .filter(|k| {
                let first = get(&mut clients[0], k);
                clients[1..].iter_mut().any(|c| get(c, k) != first)
            })
            .collect();
        differ.is_empty()
    });
    assert!(agree, "keys differ {what}: {differ:?}");
}

/// Sets and deletes of 200 keys on every node while links are cut, silenced and refused
/// at random for 3 s; then one link stays cut: all three nodes hold the same for every key,
/// and again once it is back.
#[test]
fn random_faults_in_a_mesh_end_in_identical_data_even_with_a_link_left_cut() {
    random_faults([127, 0, 13], 3);
}

/// As above with four nodes: a node lost by one peer may be heard by two others, each
/// asked for the gap.
#[test]
fn random_faults_in_a_mesh_of_four_end_in_identical_data() {
    random_faults([127, 0, 16], 4);
}

/// Random cuts, blackholes and refusals on the links of an `n`-mesh while every node
/// writes; the last fault's link stays cut, then heals: identical data both times.
fn random_faults(base: [u8; 3], n: usize) {
    let m = ProxiedMesh::start(base, n, &["--repl-backlog-size", "64k"]);
    let seed = common::time_seed();
    eprintln!("seed {seed}");
    let keys = 200;
    let all: Vec<usize> = (0..n).collect();
    let writers = writers(&m, &all, (seed, keys));
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .collect();
    let count = pairs.len() as u64;
    let mut x = seed;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let r = next();
        let (i, j) = pairs[(r % count) as usize];
        match (r >> 8) % 3 {
            0 => m.cut(i, j),
            1 => m.set_mode(i, j, Mode::Blackhole),
            _ => m.set_mode(i, j, Mode::Refuse),
        }
        std::thread::sleep(Duration::from_millis(50 + (r >> 16) % 200));
        m.set_mode(i, j, Mode::Pass);
        std::thread::sleep(Duration::from_millis(50 + (r >> 24) % 200));
    }
    // The last fault comes while every node still writes, and that link stays cut.
    assert!(m.connected(Duration::from_secs(10)), "linked (seed {seed})");
    let (i, j) = pairs[(next() % count) as usize];
    std::thread::sleep(Duration::from_millis(100));
    m.set_mode(i, j, Mode::Refuse);
    m.cut(i, j);
    writers.stop();
    let same = |what: &str| {
        let what = format!("{what} (seed {seed})");
        assert_identical(&m, keys, Duration::from_secs(10), &what);
    };
    same(&format!("with the link {i}-{j} cut"));
    m.set_mode(i, j, Mode::Pass);
    assert!(
        m.connected(Duration::from_secs(10)),
        "linked again (seed {seed})"
    );
    same("once healed");
}

/// A write whose stamp a client chose (`ms ... E`, `md ... E`) may be stamped below what its
/// writer said it had sent, so a Gap would not ask for it: it is forwarded by every node, and
/// reaches the far side of a link that went silent with it in flight.
#[test]
fn writes_with_a_client_chosen_cas_in_flight_when_a_link_goes_silent_reach_the_other_side() {
    let m = ProxiedMesh::start([127, 0, 14], 3, &[]);
    let (w, x, y) = (0, 1, 2);
    assert!(
        until_nothing_is_forwarded(&m),
        "changes are still forwarded"
    );
    let mut cw = m.nodes[w].client();
    cw.expect(b"ms gone 1 E1000\r\na\r\n", b"HD\r\n");
    assert!(sees(&m.nodes[y], "gone", Some("a")));
    m.set_mode(w, y, Mode::Blackhole);
    cw.expect(b"set plain 0 0 2\r\nhi\r\n", b"STORED\r\n");
    cw.expect(b"ms chosen 2 E1000\r\nhi\r\n", b"HD\r\n");
    cw.expect(b"md gone E1500\r\n", b"HD\r\n");
    assert!(sees(&m.nodes[x], "chosen", Some("hi")));
    assert!(sees(&m.nodes[x], "gone", None));
    // y drops w after a second of silence; the link stays down.
    std::thread::sleep(Duration::from_millis(2500));
    m.set_mode(w, y, Mode::Refuse);
    m.cut(w, y);
    for (key, want) in [
        ("plain", Some("hi")),
        ("chosen", Some("hi")),
        ("gone", None),
    ] {
        assert!(sees(&m.nodes[y], key, want), "{key} on y");
    }
    let mut cy = m.nodes[y].client();
    let cas = cy.cas_of("chosen");
    assert_eq!(cas, 1000, "the client's CAS on every node");
}

/// A writer killed (SIGKILL) while its link to one peer is cut: what it sent only to the
/// third node reaches the cut-off peer through that node (a Gap about a writer now gone),
/// and the restarted writer, still reachable only through the third node for one of its
/// peers, ends with the others in identical data, before the link heals and after.
#[test]
fn a_writer_killed_while_its_link_to_one_peer_is_cut_leaves_the_others_identical() {
    let mut m = ProxiedMesh::start([127, 0, 15], 3, &[]);
    assert!(
        until_nothing_is_forwarded(&m),
        "every node hears the others"
    );
    let seed = common::time_seed();
    eprintln!("seed {seed}");
    let keys = 200;
    let writers = writers(&m, &[1, 2], (seed, keys));
    let (mut x, mut n) = (seed | 1, 0u64);
    let mut c0 = m.nodes[0].client();
    for _ in 0..20 {
        c0.send(random_writes(&mut x, &mut n, 0, keys).as_bytes());
        c0.expect(b"mn\r\n", b"MN\r\n");
    }
    // Writes in flight on both of node 0's links when one of them is cut, then node 0 dies
    // before it could send them again.
    c0.send(random_writes(&mut x, &mut n, 0, keys).as_bytes());
    m.set_mode(0, 1, Mode::Refuse);
    m.cut(0, 1);
    for _ in 0..5 {
        c0.send(random_writes(&mut x, &mut n, 0, keys).as_bytes());
    }
    c0.expect(b"mn\r\n", b"MN\r\n");
    m.nodes[0].kill();
    std::thread::sleep(Duration::from_millis(300));
    m.nodes[0].restart();
    let mut c0 = m.nodes[0].client();
    for _ in 0..20 {
        c0.send(random_writes(&mut x, &mut n, 0, keys).as_bytes());
        c0.expect(b"mn\r\n", b"MN\r\n");
        std::thread::sleep(Duration::from_millis(5));
    }
    writers.stop();
    let same = |what: &str| {
        let what = format!("{what} (seed {seed})");
        assert_identical(&m, keys, Duration::from_secs(15), &what);
    };
    same("with the link 0-1 cut");
    let mut c2 = m.nodes[2].client();
    assert!(
        peer_stat_sum(&mut c2, "gaps_filled") >= 1,
        "node 2 filled node 1's gap of node 0: {}",
        repl_stats(&mut c2)
    );
    assert!(peer_stat_sum(&mut c2, "relayed") > 0, "node 2 forwarded");
    m.set_mode(0, 1, Mode::Pass);
    assert!(
        m.connected(Duration::from_secs(10)),
        "linked again (seed {seed})"
    );
    same("once healed");
}

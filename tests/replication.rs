//! Replication between real processes on loopback addresses: the seed's pair (`-x`/`-X`),
//! kills and restarts, a mesh, and refusals.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::node::{
    args, get, load, pair_at, peer_stat_sum, random_writes, repl_stats, sees, Node,
};
use common::pair::ProxiedPair;
use common::proxy::{Mode, Proxy};
use common::{eventually, free_port, Client, TempDir};

/// The seed's pair: both nodes on the same client and replication ports, on their own
/// addresses, each naming the other with -x.
fn seed_pair(extra: &[&str]) -> (Node, Node) {
    let with = [&["-m", "128"][..], extra].concat();
    pair_at([2, 3], (free_port(), free_port()), [&with, &with])
}

#[test]
fn the_seeds_pair_replicates_every_kind_of_change_both_ways() {
    let (a, b) = seed_pair(&[]);
    let (mut ca, mut cb) = (a.client(), b.client());
    ca.expect(b"set user:1 5 0 5\r\nalice\r\n", b"STORED\r\n");
    assert!(
        sees(&b, "user:1", Some("alice")),
        "a set on one node reaches the other"
    );
    cb.expect(b"ms other 3 T0\r\nbob\r\n", b"HD\r\n");
    assert!(sees(&a, "other", Some("bob")), "and back");
    ca.expect(b"append user:1 0 0 2\r\n!!\r\n", b"STORED\r\n");
    assert!(sees(&b, "user:1", Some("alice!!")));
    cb.expect(b"set n 0 0 1\r\n5\r\n", b"STORED\r\n");
    assert!(sees(&a, "n", Some("5")));
    ca.expect(b"incr n 10\r\n", b"15\r\n");
    assert!(sees(&b, "n", Some("15")));
    cb.expect(b"delete user:1\r\n", b"DELETED\r\n");
    assert!(sees(&a, "user:1", None), "deletes replicate");
    // A CAS read on one node completes on the other: versions are the same everywhere.
    let cas = ca.cas_of("other");
    assert!(cas > 0);
    cb.expect(
        format!("cas other 0 0 3 {cas}\r\nnew\r\n").as_bytes(),
        b"STORED\r\n",
    );
    assert!(sees(&a, "other", Some("new")));
    // A touch is a change too: the other node takes the new expiry (and version).
    cb.expect(b"touch other 1\r\n", b"TOUCHED\r\n");
    std::thread::sleep(Duration::from_millis(2200));
    assert!(
        sees(&a, "other", None),
        "the touched expiry reached the other node"
    );
    ca.expect(b"set f 0 0 1\r\nx\r\n", b"STORED\r\n");
    assert!(sees(&b, "f", Some("x")));
    cb.expect(b"flush_all\r\n", b"OK\r\n");
    assert!(sees(&a, "f", None), "flush_all replicates");
    ca.expect(b"set after 0 0 1\r\ny\r\n", b"STORED\r\n");
    assert!(
        sees(&b, "after", Some("y")),
        "writes after the flush survive"
    );
    assert_eq!(cb.stat("replication_peers_connected"), "1");
}

#[test]
fn a_killed_node_comes_back_complete_and_nothing_deleted_returns() {
    let (a, mut b) = seed_pair(&[]);
    let mut ca = a.client();
    let batch = |c: &mut Client, lines: String| {
        c.send(lines.as_bytes());
        c.expect(b"mn\r\n", b"MN\r\n");
    };
    let sets = |range: std::ops::Range<u32>, p: char| -> String {
        range
            .map(|i| format!("set k{i} 0 0 2 noreply\r\n{p}{}\r\n", i % 10))
            .collect()
    };
    batch(&mut ca, sets(0..200, 'v'));
    assert!(sees(&b, "k199", Some("v9")));
    b.kill();
    // Written while the other node is down.
    batch(&mut ca, sets(200..400, 'w'));
    batch(
        &mut ca,
        (0..50)
            .map(|i| format!("delete k{i} noreply\r\n"))
            .collect(),
    );
    b.restart();
    assert!(
        sees(&b, "k399", Some("w9")),
        "the restarted node gets what it missed"
    );
    let mut cb = b.client();
    for i in 50..400 {
        let want = if i < 200 {
            format!("v{}", i % 10)
        } else {
            format!("w{}", i % 10)
        };
        assert_eq!(get(&mut cb, &format!("k{i}")), Some(want), "k{i}");
    }
    for i in 0..50 {
        assert_eq!(
            get(&mut cb, &format!("k{i}")),
            None,
            "deleted k{i} stays deleted"
        );
    }
    // And the same from the other side: the restarted node's writes reach the first.
    cb.expect(b"set fromb 0 0 1\r\nz\r\n", b"STORED\r\n");
    assert!(sees(&a, "fromb", Some("z")));
}

#[test]
fn a_three_node_mesh_pairs_by_itself() {
    let port = free_port();
    let rports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let ips = [[127, 0, 0, 4], [127, 0, 0, 5], [127, 0, 0, 6]];
    let listen = |i: usize| format!("127.0.0.{}:{}", 4 + i, rports[i]);
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let mut a = args(&["--repl-listen", &listen(i)]);
            for j in (0..3).filter(|&j| j != i) {
                a.extend(args(&["--peer", &listen(j)]));
            }
            Node::start(ips[i], port, &a)
        })
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        n.client().expect(
            format!("set from{i} 0 0 1\r\n{i}\r\n").as_bytes(),
            b"STORED\r\n",
        );
    }
    for n in &nodes {
        for i in 0..3 {
            let v = i.to_string();
            assert!(
                sees(n, &format!("from{i}"), Some(&v)),
                "write anywhere, read everywhere"
            );
        }
    }
    nodes[2].kill();
    nodes[0]
        .client()
        .expect(b"set late 0 0 1\r\nL\r\n", b"STORED\r\n");
    nodes[2].restart();
    assert!(
        sees(&nodes[2], "late", Some("L")),
        "a member that comes back is complete"
    );
    assert!(sees(&nodes[2], "from1", Some("1")));
}

#[test]
fn a_wrong_secret_is_refused_and_said_once() {
    let dir = TempDir::new("secret");
    let (s1, s2) = (dir.0.join("s1"), dir.0.join("s2"));
    std::fs::write(&s1, "right\n").unwrap();
    std::fs::write(&s2, "wrong\n").unwrap();
    let (port, rport) = (free_port(), free_port());
    let r = rport.to_string();
    let log = dir.0.join("a.log");
    let a = Node::start_logging(
        [127, 0, 0, 7],
        port,
        &args(&[
            "-X",
            &r,
            "-x",
            "127.0.0.8",
            "--repl-secret-file",
            s1.to_str().unwrap(),
        ]),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let b = Node::start(
        [127, 0, 0, 8],
        port,
        &args(&[
            "-X",
            &r,
            "-x",
            "127.0.0.7",
            "--repl-secret-file",
            s2.to_str().unwrap(),
        ]),
    );
    a.client().expect(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        get(&mut b.client(), "k"),
        None,
        "nothing crosses without the secret"
    );
    assert_eq!(a.client().stat("replication_peers_connected"), "0");
    // Both directions were refused, again and again (each retry), yet each reason is
    // logged once, not once per retry.
    let text = std::fs::read_to_string(&log).unwrap();
    let said = text.matches("wrong replication secret").count();
    assert!((1..=2).contains(&said), "{said} times:\n{text}");
}

/// A pair with node ids 1 and 2 on 127.0.0.`ips[0]` and `ips[1]` (node 1 with `first` too),
/// then a second process with id 2 on `ips[2]`, started with `twin(replication port)`: it
/// is told why it is refused within `limit`, and node 1 keeps its one link, never replaced,
/// never copied again.
fn a_twin_is_refused(
    ips: [u8; 3],
    first: &[&str],
    twin: impl Fn(&str) -> Vec<String>,
    limit: Duration,
) {
    let dir = TempDir::new("dup-id");
    let (port, rport) = (free_port(), free_port());
    let first = [&["--node-id", "1"][..], first].concat();
    let (a, b) = pair_at(
        [ips[0], ips[1]],
        (port, rport),
        [&first, &["--node-id", "2"]],
    );
    a.client().expect(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
    assert!(sees(&b, "k", Some("x")));
    let log = dir.0.join("twin.log");
    let started = Instant::now();
    let _twin = Node::start_logging(
        [127, 0, 0, ips[2]],
        port,
        &twin(&rport.to_string()),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    // The refusing node reads on until the twin closes, so the Refuse is not lost to a
    // reset. Generous for the whole suite's load.
    let said = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("give every node its own --node-id")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(said, "the twin is told why:\n{text}");
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(1));
    let mut ca = a.client();
    assert_eq!(ca.stat("replication_peers_connected"), "1");
    assert_eq!(peer_stat_sum(&mut ca, "full_syncs"), 1);
    a.client().expect(b"set k2 0 0 1\r\ny\r\n", b"STORED\r\n");
    assert!(sees(&b, "k2", Some("y")));
}

#[test]
fn a_second_process_with_the_same_node_id_is_refused_and_the_first_keeps_its_link() {
    // The twin dials node 1. Node 1's live link to the first node 2 is heard within a
    // heartbeat (a third of the 3 s timeout): the twin is refused then, before its own
    // wait for a word runs out.
    a_twin_is_refused(
        [71, 72, 73],
        &[],
        |r| args(&["-X", r, "-x", "127.0.0.71", "--node-id", "2"]),
        Duration::from_secs(6),
    );
}

#[test]
fn a_second_process_that_a_node_dials_is_refused_too_and_told_why() {
    // Node 1 also lists the twin's address, and the twin lists nobody: the link refused is
    // the one node 1 dialled, which the twin's side took for linked. Node 1 dials again
    // after a backoff of up to 2 s, so its first dial there may come late.
    a_twin_is_refused(
        [80, 81, 82],
        &["-x", "127.0.0.82"],
        |r| {
            args(&[
                "--repl-listen",
                &format!("127.0.0.82:{r}"),
                "--node-id",
                "2",
            ])
        },
        Duration::from_secs(8),
    );
}

#[test]
fn a_node_back_under_its_id_before_its_old_link_timed_out_is_let_in_not_refused() {
    // A host that dies without closing its sockets leaves its peer's link open until the
    // timeout; the node started again in its place (here on a new address, as a container
    // may be) with the same --node-id dials in before then. Refusing it as a second process
    // would log a false "give every node its own --node-id": it is let in once the old
    // link is found silent.
    let dir = TempDir::new("back-early");
    let (port, rport) = (free_port(), free_port());
    let r = rport.to_string();
    let timeout = ["--repl-timeout", "2"];
    let (a, b) = pair_at(
        [77, 78],
        (port, rport),
        [
            &[&["--node-id", "1"][..], &timeout[..]].concat(),
            &[&["--node-id", "2"][..], &timeout[..]].concat(),
        ],
    );
    a.client().expect(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
    assert!(sees(&b, "k", Some("x")));
    b.freeze();
    let log = dir.0.join("back.log");
    let started = Instant::now();
    let back = Node::start_logging(
        [127, 0, 0, 79],
        port,
        &args(
            &[
                &["-X", &r, "-x", "127.0.0.77", "--node-id", "2"][..],
                &timeout[..],
            ]
            .concat(),
        ),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    a.client().expect(b"set k2 0 0 1\r\ny\r\n", b"STORED\r\n");
    let linked = eventually(Duration::from_secs(10), || {
        get(&mut back.client(), "k2").as_deref() == Some("y")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(linked, "the node back is linked and copied to:\n{text}");
    // Within the old link's timeout and a little (generous for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !text.contains("--node-id"),
        "told it is a second process:\n{text}"
    );
    let mut ca = a.client();
    assert_eq!(ca.stat("replication_peers_connected"), "1");
    b.thaw();
}

#[test]
fn a_peer_restarted_under_a_new_id_replaces_the_old_entry() {
    let (a, mut b) = seed_pair(&[]);
    let mut ca = a.client();
    let old = b.client().stat("replication_node_id");
    let linked = eventually(Duration::from_secs(5), || {
        let text = repl_stats(&mut ca);
        text.contains(&format!("peer:{old}:state streaming"))
    });
    assert!(linked);
    b.restart();
    let new = b.client().stat("replication_node_id");
    assert_ne!(old, new, "a node id is chosen at random each start");
    let mut text = String::new();
    let replaced = eventually(Duration::from_secs(5), || {
        text = repl_stats(&mut ca);
        text.contains(&format!("peer:{new}:state streaming"))
            && !text.contains(&format!("peer:{old}:"))
    });
    assert!(
        replaced,
        "the old id is forgotten (and what was kept for it freed): {text}"
    );
}

#[test]
fn a_cluster_restarted_without_one_member_stops_catching_up() {
    // Two nodes configured with a third that never comes back (nothing listens there).
    let (port, rport, gone) = (free_port(), free_port(), free_port());
    let node = |ip: u8, peer: u8| {
        Node::start(
            [127, 0, 0, ip],
            port,
            &args(&[
                "--repl-listen",
                &format!("127.0.0.{ip}:{rport}"),
                "--peer",
                &format!("127.0.0.{peer}:{rport}"),
                "--peer",
                &format!("127.0.0.76:{gone}"),
            ]),
        )
    };
    let started = Instant::now();
    let (a, _b) = (node(74, 75), node(75, 74));
    let mut ca = a.client();
    // Each holds the other's copy at once, but one member has not been heard from: a miss
    // still asks the linked peer for a while.
    assert_eq!(ca.stat("replication_role"), "catching_up");
    let done = eventually(Duration::from_secs(10), || {
        ca.stat("replication_role") == "master"
    });
    assert!(done, "caught up with every member that is there");
    assert!(started.elapsed() >= Duration::from_secs(4));
}

#[test]
fn another_cluster_is_refused() {
    let (a, b) = pair_at(
        [9, 10],
        (free_port(), free_port()),
        [&["--cluster", "blue"], &["--cluster", "green"]],
    );
    a.client().expect(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(get(&mut b.client(), "k"), None);
    assert_eq!(b.client().stat("replication_peers_connected"), "0");
}

#[test]
fn a_busy_replication_port_fails_the_start_with_a_clear_message() {
    let held = std::net::TcpListener::bind("127.0.0.11:0").unwrap();
    let rport = held.local_addr().unwrap().port().to_string();
    let (code, _, err) = common::run_bin(&[
        "-u",
        "root",
        "-l",
        "127.0.0.11",
        "-p",
        &free_port().to_string(),
        "-X",
        &rport,
        "-x",
        "127.0.0.12",
    ]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("cannot listen for replication peers on 127.0.0.11"),
        "{err}"
    );
    assert!(err.contains("-X"), "{err}");
}

/// Runs a pipeline of noreply commands and waits until the node has taken all of them.
fn batch(c: &mut Client, lines: &str) {
    c.send(lines.as_bytes());
    c.expect(b"mn\r\n", b"MN\r\n");
}

#[test]
fn a_partition_heals_to_identical_data_and_no_deleted_key_returns() {
    let p = ProxiedPair::start(21);
    let (mut ca, mut cb) = (p.a.client(), p.b.client());
    let before = [
        "c1",
        "c2",
        "del_on_a",
        "del_on_b",
        "x_deleted_later",
        "y_written_later",
    ];
    for (i, k) in before.iter().enumerate() {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        c.expect(
            format!("set {k} 0 0 3\r\nold\r\n").as_bytes(),
            b"STORED\r\n",
        );
    }
    for k in before {
        assert!(sees(&p.a, k, Some("old")) && sees(&p.b, k, Some("old")));
    }

    p.set_mode(Mode::Blackhole);
    // Sent down the links before either side knows they are dead: lost on the way.
    ca.expect(b"set in_flight 0 0 1\r\nf\r\n", b"STORED\r\n");
    assert!(
        p.connected(0, Duration::from_secs(4)),
        "a link that hears nothing is dropped"
    );
    // Each side writes without the other. Of two writes to one key, the later wins; a
    // delete is a write too.
    let later = || std::thread::sleep(Duration::from_millis(50));
    batch(
        &mut ca,
        "set c1 0 0 4 noreply\r\na-c1\r\n\
         delete del_on_a noreply\r\n\
         set only_a 0 0 1 noreply\r\na\r\n\
         delete y_written_later noreply\r\n",
    );
    batch(
        &mut cb,
        "set c2 0 0 4 noreply\r\nb-c2\r\n\
         delete del_on_b noreply\r\n\
         set only_b 0 0 1 noreply\r\nb\r\n\
         set x_deleted_later 0 0 5 noreply\r\nb-new\r\n",
    );
    later();
    batch(
        &mut cb,
        "set c1 0 0 7 noreply\r\nb-later\r\n\
         set y_written_later 0 0 7 noreply\r\nb-later\r\n",
    );
    batch(
        &mut ca,
        "set c2 0 0 7 noreply\r\na-later\r\n\
         delete x_deleted_later noreply\r\n",
    );
    // Nothing crossed.
    assert_eq!(get(&mut cb, "only_a"), None);
    assert_eq!(get(&mut ca, "only_b"), None);
    assert_eq!(get(&mut ca, "c1").as_deref(), Some("a-c1"));

    let healed = Instant::now();
    p.set_mode(Mode::Pass);
    assert!(p.linked(Duration::from_secs(5)), "the pair links again");
    let want: [(&str, Option<&str>); 9] = [
        ("in_flight", Some("f")),
        ("c1", Some("b-later")),
        ("c2", Some("a-later")),
        ("del_on_a", None),
        ("del_on_b", None),
        ("only_a", Some("a")),
        ("only_b", Some("b")),
        ("x_deleted_later", None),
        ("y_written_later", Some("b-later")),
    ];
    let (mut ga, mut gb) = (p.a.client(), p.b.client());
    let mut last = Vec::new();
    let agreed = eventually(Duration::from_secs(5), || {
        last = want
            .iter()
            .map(|(k, _)| (*k, get(&mut ga, k), get(&mut gb, k)))
            .collect();
        last.iter()
            .zip(&want)
            .all(|((_, a, b), (_, w))| a.as_deref() == *w && b.as_deref() == *w)
    });
    assert!(agreed, "after healing, (key, a, b): {last:?}");
    eprintln!("converged {:?} after healing", healed.elapsed());
}

#[test]
fn a_blip_reconnects_by_itself() {
    let p = ProxiedPair::start(25);
    let mut ca = p.a.client();
    batch(&mut ca, "set first 0 0 1 noreply\r\nx\r\n");
    assert!(sees(&p.b, "first", Some("x")));
    // When both nodes dial at once, the link that loses may have copied all before the
    // winner replaces it: full copies are counted from here.
    let full_before = peer_stat_sum(&mut ca, "full_syncs");
    let mut written = 0;
    for round in 0..5 {
        let lines: String = (written..written + 100)
            .map(|i| format!("set k{i} 0 0 4 noreply\r\nv{i:03}\r\n"))
            .collect();
        // Sent in pieces around the cut, so some changes are in flight when it comes.
        let (first, second) = lines.split_at(lines.len() / 2);
        ca.send(first.as_bytes());
        p.cut();
        batch(&mut ca, second);
        written += 100;
        if round < 4 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(
        p.linked(Duration::from_secs(5)),
        "linked again after the blips"
    );
    p.assert_all_arrived(written);
    // Each blip resumed from where the other node had got to: no copy from scratch.
    let mut ca = p.a.client();
    assert!(peer_stat_sum(&mut ca, "partial_syncs") >= 1);
    assert_eq!(
        peer_stat_sum(&mut ca, "full_syncs"),
        full_before,
        "only the first link copies all"
    );
    assert_eq!(peer_stat_sum(&mut ca, "shard_resyncs"), 0);
}

#[test]
fn a_peer_away_longer_than_the_backlog_gets_what_it_missed_from_a_snapshot() {
    let p = ProxiedPair::start_with(45, &["--repl-backlog-size", "256k"]);
    let mut ca = p.a.client();
    batch(&mut ca, "set first 0 0 1 noreply\r\nx\r\n");
    assert!(sees(&p.b, "first", Some("x")));
    // Counted from here (both nodes dialling at once may copy all twice): what matters is
    // that the peer's return below is no full copy.
    let full_before = peer_stat_sum(&mut ca, "full_syncs");
    p.set_mode(Mode::Refuse);
    p.cut();
    assert!(p.connected(0, Duration::from_secs(3)));
    // About 2 MB while the peer is away: far more than the backlog holds.
    let written = 2000;
    let value = "v".repeat(1000);
    for chunk in (0..written).collect::<Vec<_>>().chunks(100) {
        let lines: String = chunk
            .iter()
            .map(|i| format!("set k{i} 0 0 {} noreply\r\n{value}\r\n", value.len()))
            .collect();
        batch(&mut ca, &lines);
    }
    p.set_mode(Mode::Pass);
    assert!(p.linked(Duration::from_secs(5)));
    let mut cb = p.b.client();
    let all = eventually(Duration::from_secs(10), || {
        (0..written).all(|i| get(&mut cb, &format!("k{i}")).as_deref() == Some(value.as_str()))
    });
    assert!(all, "everything written while the peer was away arrived");
    let stats = repl_stats(&mut ca);
    assert!(peer_stat_sum(&mut ca, "partial_syncs") >= 1, "{stats}");
    assert!(
        peer_stat_sum(&mut ca, "shard_resyncs") >= 1,
        "shards whose backlog moved on were copied again: {stats}"
    );
    assert_eq!(peer_stat_sum(&mut ca, "full_syncs"), full_before, "{stats}");
}

#[test]
fn stats_replication_shows_each_link_its_state_and_lag() {
    let p = ProxiedPair::start(55);
    let mut ca = p.a.client();
    batch(&mut ca, "set k 0 0 1 noreply\r\nx\r\n");
    assert!(sees(&p.b, "k", Some("x")));
    // Once the write is confirmed, nothing is outstanding.
    let settled = eventually(Duration::from_secs(3), || {
        peer_stat_sum(&mut ca, "lag_writes") == 0 && peer_stat_sum(&mut ca, "lag_bytes") == 0
    });
    let mut text = repl_stats(&mut ca);
    assert!(settled, "lag settles to 0: {text}");
    let b_id = p.b.client().stat("replication_node_id");
    let proxy = p.ab.addr();
    let wanted = [
        "STAT role master".to_string(),
        format!("STAT dial:{proxy}:state streaming"),
        format!("STAT dial:{proxy}:node {b_id}"),
        format!("STAT peer:{b_id}:state streaming"),
        format!("STAT peer:{b_id}:lag_ms 0"),
        format!("STAT peer:{b_id}:full_syncs 1"),
    ];
    // The dialler learns which node its address leads to once it has got through itself.
    let shown = eventually(Duration::from_secs(5), || {
        text = repl_stats(&mut ca);
        wanted.iter().all(|w| text.contains(w))
    });
    assert!(shown, "{wanted:?} in {text}");
    assert_eq!(ca.stat("replication_role"), "master");
    // A dialler that cannot get through says so.
    p.set_mode(Mode::Refuse);
    p.cut();
    assert!(p.connected(0, Duration::from_secs(3)));
    let down = eventually(Duration::from_secs(3), || {
        let t = repl_stats(&mut ca);
        t.contains(&format!("STAT peer:{b_id}:state down"))
            && t.contains(&format!("STAT dial:{proxy}:state connecting"))
    });
    assert!(down, "{}", repl_stats(&mut ca));
    // While away, what the peer has not confirmed is counted.
    batch(&mut ca, "set k2 0 0 1 noreply\r\ny\r\n");
    assert_eq!(peer_stat_sum(&mut ca, "lag_writes"), 1);
}

#[test]
fn random_cuts_and_silences_end_in_identical_data_resuming_from_the_backlog() {
    // 64 KB of backlog: breaks resume from it (what was in flight at a break is resent).
    random_faults(101, "64k");
}

#[test]
fn random_cuts_and_silences_end_in_identical_data_copying_shards_again() {
    // 8 KB: the backlog has moved on by most reconnects, so shards are copied again.
    random_faults(105, "8k");
}

/// A pair through fault proxies on 127.0.0.`first`.. with `backlog`: both nodes take sets
/// and deletes of 300 keys while the link is cut, silenced and refused at random for 3 s;
/// once healed, both hold the same for every key.
fn random_faults(first: u8, backlog: &str) {
    let p = ProxiedPair::start_with(first, &["--repl-backlog-size", backlog]);
    let seed = common::time_seed();
    eprintln!("seed {seed}");
    let keys = 300;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = [p.a.addr, p.b.addr]
        .into_iter()
        .enumerate()
        .map(|(w, addr)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut x = seed.wrapping_mul(w as u64 + 7) | 1;
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let lines = random_writes(&mut x, &mut n, w, keys);
                    batch(&mut c, &lines);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    let mut x = seed;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 3 {
            0 => p.cut(),
            1 => p.set_mode(Mode::Blackhole),
            _ => p.set_mode(Mode::Refuse),
        }
        std::thread::sleep(Duration::from_millis(50 + x % 200));
        p.set_mode(Mode::Pass);
        std::thread::sleep(Duration::from_millis(50 + (x >> 8) % 300));
    }
    // The last break comes while both still write, so changes are in flight when it
    // comes (later writes cannot paper over them): they must arrive after it too.
    assert!(p.linked(Duration::from_secs(10)), "linked (seed {seed})");
    std::thread::sleep(Duration::from_millis(100));
    p.set_mode(Mode::Refuse);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    p.set_mode(Mode::Pass);
    assert!(
        p.linked(Duration::from_secs(10)),
        "linked again (seed {seed})"
    );
    let (mut ca, mut cb) = (p.a.client(), p.b.client());
    let mut differ = Vec::new();
    let same = eventually(Duration::from_secs(10), || {
        differ = (0..keys)
            .map(|k| format!("k{k}"))
            .filter(|k| get(&mut ca, k) != get(&mut cb, k))
            .collect();
        differ.is_empty()
    });
    assert!(same, "keys differ after healing (seed {seed}): {differ:?}");
    let kinds = ["full_syncs", "partial_syncs", "shard_resyncs"];
    eprintln!(
        "{:?}",
        kinds.map(|k| (k, peer_stat_sum(&mut ca, k) + peer_stat_sum(&mut cb, k)))
    );
}

#[test]
fn a_silent_link_is_detected_within_the_timeout() {
    let p = ProxiedPair::start(29);
    p.set_mode(Mode::Blackhole);
    let silent = Instant::now();
    assert!(
        p.connected(0, Duration::from_secs(3)),
        "both nodes drop a silent link within 3 s (timeout 1 s)"
    );
    eprintln!("dropped after {:?}", silent.elapsed());
    // Still down while the silence lasts: a new link cannot form through a blackhole.
    p.a.client()
        .expect(b"set during 0 0 1\r\nd\r\n", b"STORED\r\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(p.b.client().stat("replication_peers_connected"), "0");
    assert_eq!(get(&mut p.b.client(), "during"), None);
    p.set_mode(Mode::Pass);
    assert!(p.linked(Duration::from_secs(5)), "the link comes back");
    assert!(sees(&p.b, "during", Some("d")), "what was missed arrives");
    p.b.client()
        .expect(b"set after 0 0 1\r\ne\r\n", b"STORED\r\n");
    assert!(sees(&p.a, "after", Some("e")), "and writes flow again");
}

/// A binary-protocol request: the 24-byte header, then extras, key and value.
fn binary_request(opcode: u8, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = extras.len() + key.len() + value.len();
    let mut out = vec![0x80, opcode];
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.push(0); // data type
    out.extend_from_slice(&[0, 0]); // vbucket
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // opaque
    out.extend_from_slice(&[0; 8]); // cas
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// Sends a binary request and returns the response's status.
fn binary_call(c: &mut Client, req: &[u8]) -> u16 {
    c.send(req);
    let h = c.read_n(24);
    assert_eq!(h[0], 0x81, "response magic");
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    c.read_n(body);
    u16::from_be_bytes([h[6], h[7]])
}

#[test]
fn binary_protocol_writes_replicate() {
    let p = ProxiedPair::start(33);
    let mut ca = p.a.client();
    let mut extras = 7u32.to_be_bytes().to_vec(); // flags
    extras.extend_from_slice(&0u32.to_be_bytes()); // exptime
    assert_eq!(
        binary_call(&mut ca, &binary_request(0x01, &extras, b"bin", b"binary!")),
        0,
        "set"
    );
    assert!(
        sees(&p.b, "bin", Some("binary!")),
        "a binary set replicates"
    );
    let out = p.b.client().call_until(b"get bin\r\n", b"END\r\n");
    assert!(
        out.starts_with(b"VALUE bin 7 7\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        binary_call(&mut ca, &binary_request(0x04, &[], b"bin", &[])),
        0,
        "delete"
    );
    assert!(sees(&p.b, "bin", None), "a binary delete replicates");
}

#[test]
fn a_flush_during_a_partition_reaches_the_other_side() {
    let p = ProxiedPair::start(37);
    let (mut ca, mut cb) = (p.a.client(), p.b.client());
    ca.expect(b"set old 0 0 1\r\no\r\n", b"STORED\r\n");
    assert!(sees(&p.b, "old", Some("o")));
    p.set_mode(Mode::Blackhole);
    assert!(p.connected(0, Duration::from_secs(4)));
    cb.expect(b"set b_before 0 0 1\r\nx\r\n", b"STORED\r\n");
    std::thread::sleep(Duration::from_millis(50));
    ca.expect(b"flush_all\r\n", b"OK\r\n");
    std::thread::sleep(Duration::from_millis(50));
    cb.expect(b"set b_after 0 0 1\r\ny\r\n", b"STORED\r\n");
    p.set_mode(Mode::Pass);
    assert!(p.linked(Duration::from_secs(5)));
    for n in [&p.a, &p.b] {
        assert!(
            sees(n, "b_after", Some("y")),
            "a write after the flush stays"
        );
        assert!(sees(n, "old", None), "the flush reached both");
        assert!(
            sees(n, "b_before", None),
            "older writes elsewhere are flushed too"
        );
    }
}

/// The proxy itself, against an echo server: each mode does what the tests above rely on.
#[test]
fn the_fault_proxy_passes_loses_refuses_and_cuts() {
    use std::io::{Read, Write};
    let echo = std::net::TcpListener::bind("127.0.0.41:0").unwrap();
    let target = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let (mut r, mut w) = (s.try_clone().unwrap(), s);
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    let p = Proxy::start("127.0.0.42:0".parse().unwrap(), target);
    let connect = || {
        let s = std::net::TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    };
    let echoes = |s: &mut std::net::TcpStream, msg: &[u8]| {
        if s.write_all(msg).is_err() {
            return false;
        }
        let mut got = vec![0; msg.len()];
        s.read_exact(&mut got).is_ok() && got == msg
    };
    // Closed: the next read sees the end (or a reset), not a timeout.
    let closed = |s: &mut std::net::TcpStream| {
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    };
    let mut s = connect();
    assert!(echoes(&mut s, b"hello"), "pass forwards both ways");

    p.set_mode(Mode::Blackhole);
    assert!(!echoes(&mut s, b"lost"), "a blackhole loses bytes");
    let mut fresh = connect();
    assert!(!echoes(&mut fresh, b"lost too"), "new connections too");
    p.set_mode(Mode::Pass);
    assert!(
        closed(&mut s),
        "a connection that lost bytes is closed on healing"
    );
    let mut s = connect();
    assert!(
        echoes(&mut s, b"again"),
        "new connections pass after healing"
    );

    p.cut();
    assert!(closed(&mut s), "a cut closes what is open");
    let mut s = connect();
    assert!(
        echoes(&mut s, b"after cut"),
        "and new connections still pass"
    );

    p.set_mode(Mode::Refuse);
    assert!(closed(&mut s), "refuse closes what is open");
    let mut refused = connect();
    assert!(closed(&mut refused), "and every new connection");
    p.set_mode(Mode::Pass);
    let mut s = connect();
    assert!(echoes(&mut s, b"back"));
    assert!(
        eventually(Duration::from_secs(2), || p.connections() == 1),
        "closed connections are forgotten"
    );
}

/// Runs tests/clients/php_session.php: a session through PHP's Memcached session handler
/// (locking on, its default) on `server`; returns what it printed.
fn php_session(server: SocketAddr, id: &str, op: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/php_session.php");
    let out = Command::new("php")
        .arg(script)
        .arg(server.to_string())
        .arg(id)
        .args(op)
        .output()
        .expect("php-cli with php-memcached must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn php_sees(server: SocketAddr, id: &str, want: &str) -> bool {
    let want = format!("session: {want}");
    eventually(Duration::from_secs(10), || {
        php_session(server, id, &["read"]).contains(&want)
    })
}

#[test]
fn a_php_session_written_through_one_node_survives_either_node_dying() {
    let (mut a, mut b) = seed_pair(&[]);
    let id = "sess4242deadbeef";
    assert!(php_session(a.addr, id, &["write", "alice"]).contains("session: alice"));
    assert!(php_sees(b.addr, id, "alice"), "read through the other node");
    a.kill();
    assert!(
        php_sees(b.addr, id, "alice"),
        "the first node died: still there"
    );
    assert!(php_session(b.addr, id, &["write", "bob"]).contains("session: bob"));
    a.restart();
    assert!(php_sees(a.addr, id, "bob"), "the restarted node caught up");
    b.kill();
    assert!(
        php_sees(a.addr, id, "bob"),
        "the other node died: still there"
    );
}

/// Runs the pymemcache failover client against `nodes`; its output.
fn pymemcache_failover(nodes: &[&Node], mode: &str, n: usize) -> String {
    let list: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let args = [list.join(","), mode.to_string(), n.to_string()];
    common::run_python_client(
        "pymemcache_failover.py",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

#[test]
fn pymemcache_fails_over_to_the_node_that_holds_the_copy() {
    let (a, mut b) = seed_pair(&[]);
    let n = 200;
    let text = pymemcache_failover(&[&a, &b], "write", n);
    assert!(text.contains(&format!("written: {n}")), "{text}");
    // Every key reached both nodes, whichever the client chose.
    for node in [&a, &b] {
        assert!(sees(node, "key0", Some("value0")));
        assert!(sees(
            node,
            &format!("key{}", n - 1),
            Some(&format!("value{}", n - 1))
        ));
    }
    b.kill();
    let text = pymemcache_failover(&[&a, &b], "read", n);
    let misses: usize = text
        .trim()
        .strip_prefix("misses: ")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    // Only the one call that found the node down, before the client dropped it.
    assert!(misses <= 1, "{text}");
}

#[test]
fn the_backlog_of_a_peer_away_too_long_is_dropped_and_it_gets_a_full_copy_back() {
    let (a, mut b) = seed_pair(&["--repl-backlog-ttl", "1"]);
    let mut ca = a.client();
    ca.expect(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
    assert!(sees(&b, "k", Some("x")));
    let id = b.client().stat("replication_node_id");
    b.kill();
    // Kept for a second (lag counted against it), then dropped: nothing kept for it.
    ca.expect(b"set k2 0 0 1\r\ny\r\n", b"STORED\r\n");
    let lag = format!("peer:{id}:lag_writes");
    assert!(repl_stats(&mut ca).contains(&lag));
    let dropped = eventually(Duration::from_secs(5), || {
        !repl_stats(&mut ca).contains(&lag)
    });
    assert!(dropped, "{}", repl_stats(&mut ca));
    ca.expect(b"set k3 0 0 1\r\nz\r\n", b"STORED\r\n");
    b.restart();
    for (key, value) in [("k", "x"), ("k2", "y"), ("k3", "z")] {
        assert!(
            sees(&b, key, Some(value)),
            "{key} arrived with the full copy"
        );
    }
}

/// A node on 127.0.0.`first + 2` whose only peer's address (a proxy on `first`) swallows
/// everything: connections open, nothing comes back, so it never links or catches up.
fn behind_a_blackhole(first: u8, extra: &[&str]) -> (Node, Proxy) {
    let hole = Proxy::start(
        SocketAddr::from(([127, 0, 0, first], 0)),
        SocketAddr::from(([127, 0, 0, first + 1], free_port())),
    );
    hole.set_mode(Mode::Blackhole);
    let peer = hole.addr().to_string();
    let flags = [&["--peer", peer.as_str()][..], extra].concat();
    let node = Node::start([127, 0, 0, first + 2], free_port(), &args(&flags));
    (node, hole)
}

#[test]
fn a_peer_that_never_answers_costs_misses_one_wait_not_one_each() {
    let (node, _hole) = behind_a_blackhole(91, &["--repl-timeout", "10"]);
    let mut c = node.client();
    let started = Instant::now();
    for i in 0..40 {
        assert_eq!(get(&mut c, &format!("absent{i}")), None);
    }
    // A wait per miss (a quarter second each) would take 10 s.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "40 misses took {took:?}");
    assert_eq!(c.stat("replication_role"), "catching_up");
}

#[test]
fn a_read_waiting_on_a_peer_does_not_hold_up_other_clients_of_its_worker() {
    // One worker; a miss waits for a link first.
    let (node, _hole) = behind_a_blackhole(94, &["-t", "1"]);
    let (mut waiting, mut other) = (node.client(), node.client());
    other.expect(b"set here 0 0 1\r\nx\r\n", b"STORED\r\n");
    waiting.send(b"get absent\r\n");
    std::thread::sleep(Duration::from_millis(30));
    // Served while the first client still waits (its answer is a quarter second away).
    other.expect(b"get here\r\n", b"VALUE here 0 1\r\nx\r\nEND\r\n");
    waiting.assert_quiet();
    assert_eq!(waiting.read_n(5), b"END\r\n");
}

#[test]
fn a_restarted_node_answers_reads_at_once_while_it_catches_up() {
    let (a, mut b) = seed_pair(&[]);
    let (n, value) = load_40mb(&a);
    assert!(sees(&b, &format!("key{}", n - 1), Some(&value)));
    b.restart();
    // At once, before the full copy (40 MB) can have arrived: no miss for any key, asked
    // together (one multiget: the node asks its peer about all of them at once)...
    let mut cb = b.client();
    let keys: Vec<String> = (48..n).step_by(97).map(|i| format!("key{i}")).collect();
    let reply = cb.call_until(format!("get {}\r\n", keys.join(" ")).as_bytes(), b"END\r\n");
    let hits = String::from_utf8_lossy(&reply).matches("VALUE ").count();
    assert_eq!(
        hits,
        keys.len(),
        "a multiget on a restarted node missed keys"
    );
    // ...or one by one.
    let mut missed = 0;
    for i in (0..n).step_by(97) {
        if get(&mut cb, &format!("key{i}")).as_deref() != Some(value.as_str()) {
            missed += 1;
        }
    }
    assert_eq!(
        missed, 0,
        "a restarted node answered misses for keys the cluster holds"
    );
}

/// Many clients at once, each with a large multiget, on a node that has just restarted:
/// every key the cluster holds is found (the questions to the peer must not overflow a
/// queue, nor the answers wait behind the copy so long that reads give up).
#[test]
fn many_concurrent_multigets_on_a_restarted_node_miss_nothing() {
    let (a, mut b) = seed_pair(&[]);
    let (n, value) = load_40mb(&a);
    assert!(sees(&b, &format!("key{}", n - 1), Some(&value)));
    b.restart();
    let (clients, per) = (8, 1000);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(clients));
    let readers: Vec<_> = (0..clients)
        .map(|t| {
            let mut c = b.client();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let keys: Vec<String> = (0..per)
                    .map(|i| format!("key{}", t + i * clients))
                    .collect();
                barrier.wait();
                let reply =
                    c.call_until(format!("get {}\r\n", keys.join(" ")).as_bytes(), b"END\r\n");
                String::from_utf8_lossy(&reply).matches("VALUE ").count()
            })
        })
        .collect();
    let hits: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert_eq!(
        hits,
        clients * per,
        "concurrent multigets on a restarted node missed keys"
    );
}

#[test]
fn changes_flowing_one_way_keep_the_link_up() {
    let (a, b) = seed_pair(&["--repl-timeout", "1"]);
    let (mut ca, mut cb) = (a.client(), b.client());
    ca.expect(b"set first 0 0 1\r\nx\r\n", b"STORED\r\n");
    assert!(sees(&b, "first", Some("x")));
    std::thread::sleep(Duration::from_millis(300));
    // Copies so far (two links may have formed at the start, one resuming the other's).
    let copies = |ca: &mut Client, cb: &mut Client| {
        ["full_syncs", "partial_syncs"].map(|s| (peer_stat_sum(ca, s), peer_stat_sum(cb, s)))
    };
    let base = copies(&mut ca, &mut cb);
    let until = Instant::now() + Duration::from_secs(4);
    let mut i = 0;
    while Instant::now() < until {
        ca.expect(format!("set k{i} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sees(&b, &format!("k{}", i - 1), Some("x")));
    // No link dropped: no copy again, whole or from the backlog.
    assert_eq!(copies(&mut ca, &mut cb), base);
}

#[test]
fn a_delayed_flush_reaches_a_node_that_was_down_when_it_was_given() {
    let (a, mut b) = seed_pair(&[]);
    let mut ca = a.client();
    ca.expect(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n");
    assert!(sees(&b, "k", Some("x")));
    b.kill();
    ca.expect(b"flush_all 2\r\n", b"OK\r\n");
    b.restart();
    assert!(sees(&b, "k", Some("x")), "not flushed yet");
    assert!(sees(&a, "k", None), "flushed when its time came");
    assert!(sees(&b, "k", None), "on the restarted node too");
}

/// Stores 20,000 keys of 2,000 bytes on `node` (pipelined); returns (count, value).
fn load_40mb(node: &Node) -> (usize, String) {
    (20_000, load(node, 20_000))
}

#[test]
fn writes_on_a_restarted_node_act_on_the_clusters_state_while_it_catches_up() {
    let (a, mut b) = seed_pair(&[]);
    let (n, value) = load_40mb(&a);
    assert!(sees(&b, &format!("key{}", n - 1), Some(&value)));
    b.restart();
    let mut cb = b.client();
    // At once, before the copy can have arrived: deletes find the keys, adds do not.
    let deletes: Vec<usize> = (0..n).step_by(97).collect();
    let lines: String = deletes
        .iter()
        .map(|i| format!("delete key{i}\r\n"))
        .collect();
    cb.send(lines.as_bytes());
    let want = "DELETED\r\n".repeat(deletes.len());
    assert_eq!(String::from_utf8(cb.read_n(want.len())).unwrap(), want);
    let lines: String = (1..n)
        .step_by(97)
        .map(|i| format!("add key{i} 0 0 1\r\nx\r\n"))
        .collect();
    cb.send(lines.as_bytes());
    let want = "NOT_STORED\r\n".repeat((1..n).step_by(97).count());
    assert_eq!(String::from_utf8(cb.read_n(want.len())).unwrap(), want);
    // After the copy: the deleted keys stay deleted on both nodes.
    assert!(sees(&b, &format!("key{}", n - 1), Some(&value)));
    for node in [&a, &b] {
        for i in &deletes {
            assert!(sees(node, &format!("key{i}"), None), "key{i} came back");
        }
    }
}

/// A connection to a node's replication port, which opens a moment after its client port
/// (the one `Node::start` waits for).
fn connect_peer_port(ip: [u8; 4], port: u16) -> std::net::TcpStream {
    let addr = std::net::SocketAddr::from((ip, port));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("{addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[test]
fn a_connection_that_has_not_proved_itself_cannot_make_a_node_buffer_much() {
    let (port, rport) = (free_port(), free_port());
    let r = rport.to_string();
    let _a = Node::start(
        [127, 0, 0, 41],
        port,
        &args(&["-X", &r, "-x", "127.0.0.42", "--repl-timeout", "1"]),
    );
    let mut s = connect_peer_port([127, 0, 0, 41], rport);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // A Changes frame announcing 1 GiB, before any handshake.
    let mut frame = (1u32 << 30).to_le_bytes().to_vec();
    frame.push(6);
    frame.extend_from_slice(&[0u8; 4096]);
    let _ = std::io::Write::write_all(&mut s, &frame);
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => continue, // its Hello
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "dropped at once"
    );
}

#[test]
fn a_node_of_an_incompatible_protocol_version_is_refused_with_the_reason() {
    let (port, rport) = (free_port(), free_port());
    let _a = Node::start(
        [127, 0, 0, 43],
        port,
        &args(&["-X", &rport.to_string(), "-x", "127.0.0.44"]),
    );
    let mut s = connect_peer_port([127, 0, 0, 43], rport);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // A Hello of protocol version 1: version, node id, run, nonce, empty cluster name.
    let mut body = vec![1u8];
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&9u16.to_le_bytes());
    body.extend_from_slice(&7u64.to_le_bytes());
    body.extend_from_slice(&[0u8; 16]);
    body.extend_from_slice(&0u16.to_le_bytes());
    let mut hello = (body.len() as u32).to_le_bytes().to_vec();
    hello.extend_from_slice(&body);
    std::io::Write::write_all(&mut s, &hello).unwrap();
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("protocol v1") && text.contains("upgrade"),
        "refused, saying why: {text:?}"
    );
}

#[test]
fn bad_replication_flags_say_what_to_change() {
    let port = free_port().to_string();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--repl-backlog-size", "0"],
            "--repl-backlog-size 0: give a size above 0",
        ),
        (
            &["--repl-listen", &format!("127.0.0.1:{port}")],
            "--repl-listen: the replication port must differ",
        ),
        (
            &["--node-id", "0", "-x", "127.0.0.43"],
            "--node-id 0 is reserved",
        ),
        (
            &["-x", "127.0.0.43:notaport"],
            "-x 127.0.0.43:notaport: give a peer as HOST or HOST:PORT",
        ),
        (
            &["-x", "127.0.0.43", "--repl-batch-us", "10"],
            "--repl-batch-us 10: give microseconds between 50 and 100000",
        ),
    ];
    for (flags, want) in cases {
        let mut all = vec!["-u", "root", "-l", "127.0.0.1", "-p", &port];
        all.extend_from_slice(flags);
        let (code, _, err) = common::run_bin(&all);
        assert_ne!(code, Some(0), "{flags:?}");
        assert!(err.contains(want), "{flags:?}: {err}");
    }
}

fn rss_mb(child: &Child) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[test]
fn a_full_resync_of_100_mb_while_clients_write_both_nodes() {
    let (port, rport) = (free_port(), free_port());
    let r = rport.to_string();
    let a = Node::start(
        [127, 0, 0, 51],
        port,
        &args(&["-m", "400", "-X", &r, "-x", "127.0.0.52"]),
    );
    // 100 MB of items on the first node, its peer not started yet.
    let mut ca = a.client();
    let value = "d".repeat(2000);
    let n = 50_000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let lines: String = chunk
            .iter()
            .map(|i| format!("set item{i} 0 0 {} noreply\r\n{value}\r\n", value.len()))
            .collect();
        ca.send(lines.as_bytes());
    }
    ca.expect(b"mn\r\n", b"MN\r\n");
    let a_before = rss_mb(&a.child);
    let started = Instant::now();
    let b = Node::start(
        [127, 0, 0, 52],
        port,
        &args(&["-m", "400", "-X", &r, "-x", "127.0.0.51"]),
    );
    // Clients on both nodes throughout: every request answered while the copy runs.
    let mut cb = b.client();
    let mut i = 0;
    let mut a_peak: f64 = 0.0;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the copy did not finish"
        );
        ca.expect(format!("set a{i} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
        cb.expect(format!("set b{i} 0 0 1\r\ny\r\n").as_bytes(), b"STORED\r\n");
        assert_eq!(
            get(&mut ca, &format!("item{}", i % n)).as_deref(),
            Some(value.as_str())
        );
        a_peak = a_peak.max(rss_mb(&a.child));
        i += 1;
        // Every item there (the copy comes in store order, not key order).
        if cb.stat("curr_items").parse::<usize>().unwrap_or(0) >= n {
            break;
        }
    }
    let took = started.elapsed();
    for k in (0..n).step_by(101) {
        assert_eq!(
            get(&mut cb, &format!("item{k}")).as_deref(),
            Some(value.as_str())
        );
    }
    assert!(sees(&a, &format!("b{}", i - 1), Some("y")));
    assert!(sees(&b, &format!("a{}", i - 1), Some("x")));
    let data_mb = (n * value.len()) as f64 / 1e6;
    let b_rss = rss_mb(&b.child);
    eprintln!(
        "full resync: {data_mb:.0} MB in {took:?} ({:.0} MB/s, debug build); sender RSS {a_before:.0} -> peak {a_peak:.0} MB; receiver RSS {b_rss:.0} MB",
        data_mb / took.as_secs_f64()
    );
    // No copy of the data set on the sending side; the receiver holds about the data.
    assert!(
        a_peak - a_before < 0.1 * data_mb + 16.0,
        "sender grew {a_before} -> {a_peak}"
    );
    assert!(b_rss < 2.0 * data_mb + 32.0, "receiver {b_rss} MB");
}

#[test]
fn lag_ms_keeps_counting_once_a_link_with_unconfirmed_changes_drops() {
    let p = ProxiedPair::start(69);
    let mut ca = p.a.client();
    batch(&mut ca, "set k 0 0 1 noreply\r\nx\r\n");
    assert!(sees(&p.b, "k", Some("x")));
    assert!(eventually(Duration::from_secs(3), || peer_stat_sum(
        &mut ca,
        "lag_writes"
    ) == 0));
    // Sent, never confirmed: the partition swallows it.
    p.set_mode(Mode::Blackhole);
    batch(&mut ca, "set k2 0 0 1 noreply\r\ny\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let before = peer_stat_sum(&mut ca, "lag_ms");
    assert!(before >= 200, "lag_ms {before} while the link is up");
    assert!(
        p.connected(0, Duration::from_secs(5)),
        "the silent link drops"
    );
    assert_eq!(peer_stat_sum(&mut ca, "lag_writes"), 1);
    let after = peer_stat_sum(&mut ca, "lag_ms");
    assert!(
        after > before,
        "the change is no more confirmed than before: lag_ms went from {before} to {after}"
    );
}

/// Over a slow link the sender falls behind the feed: changes still waiting to be sent
/// count in `lag_ms` (they are in no Mark yet), so it reads how far behind the peer is,
/// not only how long the last batch sent has waited.
#[test]
fn lag_ms_counts_changes_still_waiting_to_go_over_a_slow_link() {
    let mut p = ProxiedPair::start_in([127, 0, 10, 1], "64", &[]);
    // Either node's dial may carry the link.
    for proxy in [&p.ab, &p.ba] {
        proxy.set_rate(Some(1 << 20));
    }
    let mut ca = p.a.client();
    // 6 MB of changes at once: about six seconds of the link.
    let value = "v".repeat(100_000);
    let mut lines = String::new();
    for i in 0..60 {
        lines += &format!("set big{i} 0 0 {} noreply\r\n{value}\r\n", value.len());
    }
    let written = Instant::now();
    batch(&mut ca, &lines);
    std::thread::sleep(Duration::from_secs(3));
    let lag = peer_stat_sum(&mut ca, "lag_ms");
    let waited = written.elapsed().as_millis();
    assert!(peer_stat_sum(&mut ca, "lag_writes") > 0, "all sent already");
    // What was sent and not yet confirmed is at most what the proxy and the sockets hold
    // (a fraction of a second of the link); the rest waits in the backlog.
    assert!(
        lag >= 2000,
        "lag_ms {lag} with changes made {waited} ms ago not yet confirmed"
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            peer_stat_sum(&mut ca, "lag_writes") == 0 && peer_stat_sum(&mut ca, "lag_ms") == 0
        }),
        "the peer catches up"
    );
    assert!(sees(&p.b, "big59", Some(&value)));
    // A restarted peer gets the whole store again, over the same slow link: behind from
    // the copy's start, though no change is new.
    let restarted = Instant::now();
    p.b.restart();
    std::thread::sleep(Duration::from_millis(2500));
    let lag = peer_stat_sum(&mut ca, "lag_ms");
    let waited = restarted.elapsed().as_millis();
    assert!(peer_stat_sum(&mut ca, "lag_writes") > 0, "copied already");
    assert!(
        lag >= 1500,
        "lag_ms {lag} with a copy started at most {waited} ms ago still going"
    );
}

/// A link down with nothing to send reads 0; the first change after the drop then waits
/// from when it was made, not from the drop.
#[test]
fn lag_ms_of_a_down_link_dates_from_the_first_change_after_the_drop() {
    let p = ProxiedPair::start_in([127, 0, 10, 11], "64", &[]);
    let mut ca = p.a.client();
    p.partition();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(peer_stat_sum(&mut ca, "lag_ms"), 0, "nothing waits");
    let written = Instant::now();
    batch(&mut ca, "set k 0 0 1 noreply\r\nx\r\n");
    std::thread::sleep(Duration::from_millis(500));
    let lag = peer_stat_sum(&mut ca, "lag_ms");
    let waited = written.elapsed().as_millis() as u64 + 1;
    assert!(
        (400..=waited).contains(&lag),
        "lag_ms {lag} for a change made {waited} ms ago, the link down for over 4 s"
    );
    p.heal();
    assert!(
        eventually(Duration::from_secs(10), || {
            peer_stat_sum(&mut ca, "lag_writes") == 0 && peer_stat_sum(&mut ca, "lag_ms") == 0
        }),
        "the peer catches up"
    );
    assert!(sees(&p.b, "k", Some("x")));
}

#[test]
fn a_long_get_line_streamed_in_parts_on_a_restarted_node_misses_nothing() {
    let m: &[&str] = &["-m", "128"];
    let (a, mut b) = pair_at([130, 131], (free_port(), free_port()), [m, m]);
    let (n, value) = load_40mb(&a);
    assert!(sees(&b, &format!("key{}", n - 1), Some(&value)));
    b.restart();
    // At once, before the copy can have arrived: a get line far longer than one read, so
    // its keys are served while the rest of the line is still arriving.
    let mut cb = b.client();
    let keys: Vec<String> = (0..n).step_by(5).map(|i| format!("key{i}")).collect();
    let line = format!("get {}\r\n", keys.join(" "));
    assert!(line.len() > 16 * 1024);
    let reply = cb.call_until(line.as_bytes(), b"END\r\n");
    let hits = String::from_utf8_lossy(&reply).matches("VALUE ").count();
    assert_eq!(
        hits,
        keys.len(),
        "a long get line on a restarted node missed keys"
    );
}

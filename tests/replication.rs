//! Replication between real processes on loopback addresses: the seed's pair (`-x`/`-X`),
//! kills and restarts, a mesh, and refusals.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, wait_ready, Client, TempDir, BIN};

/// A node: `repcached -u root -l <ip> -p <port> <args>`, killed (SIGKILL) on drop.
struct Node {
    child: Child,
    addr: SocketAddr,
    args: Vec<String>,
}

impl Node {
    fn start(ip: [u8; 4], port: u16, args: &[String]) -> Node {
        Node::start_logging(ip, port, args, Stdio::null())
    }

    /// As [`Node::start`], with the log (stderr) going to `log`.
    fn start_logging(ip: [u8; 4], port: u16, args: &[String], log: Stdio) -> Node {
        let addr = SocketAddr::from((ip, port));
        let child = Command::new(BIN)
            .args([
                "-u",
                "root",
                "-l",
                &addr.ip().to_string(),
                "-p",
                &port.to_string(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn repcached");
        assert!(
            wait_ready(addr, Duration::from_secs(10)),
            "node {addr} did not start"
        );
        Node {
            child,
            addr,
            args: args.to_vec(),
        }
    }

    fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again with the same flags.
    fn restart(&mut self) {
        self.kill();
        let ip = match self.addr.ip() {
            std::net::IpAddr::V4(v4) => v4.octets(),
            _ => unreachable!("loopback v4 in these tests"),
        };
        *self = Node::start(ip, self.addr.port(), &self.args);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The seed's pair: both nodes on the same client and replication ports, on their own
/// addresses, each naming the other with -x.
fn seed_pair(extra: &[&str]) -> (Node, Node) {
    let (port, rport) = (free_port(), free_port());
    let r = rport.to_string();
    let mut a_args = args(&["-m", "128", "-X", &r, "-x", "127.0.0.3"]);
    let mut b_args = args(&["-m", "128", "-X", &r, "-x", "127.0.0.2"]);
    a_args.extend(args(extra));
    b_args.extend(args(extra));
    // Started together: neither waits for the other.
    let a = Node::start([127, 0, 0, 2], port, &a_args);
    let b = Node::start([127, 0, 0, 3], port, &b_args);
    (a, b)
}

/// Polls `f` until it returns true or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn get(c: &mut Client, key: &str) -> Option<String> {
    let out = c.call_until(format!("get {key}\r\n").as_bytes(), b"END\r\n");
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    let first = lines.next()?;
    first
        .starts_with("VALUE")
        .then(|| lines.next().unwrap_or("").to_string())
}

fn sees(node: &Node, key: &str, want: Option<&str>) -> bool {
    let mut c = node.client();
    eventually(Duration::from_secs(10), || {
        get(&mut c, key).as_deref() == want
    })
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
    let out = String::from_utf8(ca.call_until(b"gets other\r\n", b"END\r\n")).unwrap();
    let cas: u64 = out
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
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

#[test]
fn another_cluster_is_refused() {
    let (port, rport) = (free_port(), free_port());
    let r = rport.to_string();
    let a = Node::start(
        [127, 0, 0, 9],
        port,
        &args(&["-X", &r, "-x", "127.0.0.10", "--cluster", "blue"]),
    );
    let b = Node::start(
        [127, 0, 0, 10],
        port,
        &args(&["-X", &r, "-x", "127.0.0.9", "--cluster", "green"]),
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

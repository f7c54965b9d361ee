//! Replicating nodes as real processes on loopback addresses, for the tests that kill and
//! restart them (replication, scaling out).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{eventually, wait_ready, Client, BIN};

/// A node: `repcached -u root -l <ip> -p <port> <args>`, killed (SIGKILL) on drop.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    args: Vec<String>,
}

impl Node {
    pub fn start(ip: [u8; 4], port: u16, args: &[String]) -> Node {
        Node::start_logging(ip, port, args, Stdio::null())
    }

    /// As [`Node::start`], with the log (stderr) going to `log`.
    pub fn start_logging(ip: [u8; 4], port: u16, args: &[String], log: Stdio) -> Node {
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

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP, returning once every thread of the process has stopped. The signal alone
    /// is not enough: a stop takes effect when one of the process's threads next runs, and
    /// on a loaded machine another of its threads can go on for milliseconds meanwhile
    /// (answering a peer, say).
    pub fn freeze(&self) {
        let pid = self.child.id();
        // SAFETY: signals a child process this node started and still owns.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let stopped = eventually(Duration::from_secs(10), || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|tasks| {
                    tasks.flatten().all(|t| {
                        std::fs::read_to_string(t.path().join("stat"))
                            .is_ok_and(|stat| thread_state(&stat) == Some('T'))
                    })
                })
                .unwrap_or(false)
        });
        assert!(stopped, "node {} did not stop", self.addr);
    }

    /// SIGCONT, after [`Node::freeze`].
    pub fn thaw(&self) {
        // SAFETY: as in `freeze`.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// Starts again with the same flags.
    pub fn restart(&mut self) {
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

/// The state letter of a `/proc/<pid>/task/<tid>/stat` line: the field after the command
/// name, which is in parentheses and may itself hold spaces or parentheses.
fn thread_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Two nodes in the seed's form on 127.0.0.`ips[0]` and `ips[1]`: the same client and
/// replication `ports`, each naming the other with -x, each with its own extra flags.
/// Started together: neither waits for the other.
pub fn pair_at(ips: [u8; 2], (port, rport): (u16, u16), extra: [&[&str]; 2]) -> (Node, Node) {
    let r = rport.to_string();
    let node = |me: usize| {
        let other = format!("127.0.0.{}", ips[1 - me]);
        let mut a = args(&["-X", &r, "-x", &other]);
        a.extend(args(extra[me]));
        Node::start([127, 0, 0, ips[me]], port, &a)
    };
    (node(0), node(1))
}

/// Waits (at most 20 s) until `c`'s node streams its changes to a peer (`state streaming`
/// in `stats replication`): a peer caught up, as acknowledged writes count them.
pub fn streaming(c: &mut Client) -> bool {
    eventually(Duration::from_secs(20), || {
        let text = String::from_utf8(c.call_until(b"stats replication\r\n", b"END\r\n")).unwrap();
        text.lines()
            .any(|l| l.starts_with("STAT peer:") && l.ends_with(":state streaming"))
    })
}

/// Sends `req`, asserts its one-line reply is `want` (without [`Client::expect`]'s pause
/// for anything extra, so replies can be timed) and returns how long it took.
pub fn call(c: &mut Client, req: &str, want: &str) -> Duration {
    let t = Instant::now();
    let got = String::from_utf8(c.call_until(req.as_bytes(), b"\r\n")).unwrap();
    assert_eq!(got, want, "{req:?}");
    t.elapsed()
}

/// The value a text `get` of `key` finds, if any.
pub fn get(c: &mut Client, key: &str) -> Option<String> {
    let out = c.call_until(format!("get {key}\r\n").as_bytes(), b"END\r\n");
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    let first = lines.next()?;
    first
        .starts_with("VALUE")
        .then(|| lines.next().unwrap_or("").to_string())
}

/// Whether `node` comes to answer `want` for `key` within 10 s.
pub fn sees(node: &Node, key: &str, want: Option<&str>) -> bool {
    let mut c = node.client();
    eventually(Duration::from_secs(10), || {
        get(&mut c, key).as_deref() == want
    })
}

/// Stores `key0..key{n}` with values of 2,000 bytes on `node` (pipelined, so fast);
/// returns the value.
pub fn load(node: &Node, n: usize) -> String {
    let mut c = node.client();
    let value = "v".repeat(2000);
    let mut lines = String::new();
    for i in 0..n {
        lines.push_str(&format!(
            "set key{i} 0 0 {} noreply\r\n{value}\r\n",
            value.len()
        ));
    }
    c.send(lines.as_bytes());
    c.expect(b"mn\r\n", b"MN\r\n");
    value
}

/// `stats replication`, whole.
pub fn repl_stats(c: &mut Client) -> String {
    String::from_utf8(c.call_until(b"stats replication\r\n", b"END\r\n")).unwrap()
}

/// Sum of `peer:*:<name>` over `stats replication`.
pub fn peer_stat_sum(c: &mut Client, name: &str) -> u64 {
    let out = repl_stats(c);
    out.lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            let (stat, key, value) = (p.next()?, p.next()?, p.next()?);
            (stat == "STAT" && key.starts_with("peer:") && key.ends_with(&format!(":{name}")))
                .then(|| value.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// Twenty pipelined noreply writes of keys `k0..k{keys}` by writer `w`, from the xorshift
/// state `x`: a delete one time in five, else a set of a value naming the writer and its
/// count `n`.
pub fn random_writes(x: &mut u64, n: &mut u64, w: usize, keys: u64) -> String {
    (0..20)
        .map(|_| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *n += 1;
            let key = *x % keys;
            if x.is_multiple_of(5) {
                format!("delete k{key} noreply\r\n")
            } else {
                let v = format!("{w}-{n}");
                format!("set k{key} 0 0 {} noreply\r\n{v}\r\n", v.len())
            }
        })
        .collect()
}

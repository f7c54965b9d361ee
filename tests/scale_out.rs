//! Scaling out past one pair, with real processes: two replicated pairs, one endpoint per
//! pair that fails over inside the pair (nginx's stream module, the second node as backup),
//! and keys spread over the endpoints by consistent hashing, in twemproxy (nutcracker) and
//! in pymemcache's HashClient. The configs are examples/scale-out/'s, moved to free ports.
//! nginx (with libnginx-mod-stream), nutcracker and pymemcache must be installed: a missing
//! one fails the test.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::{pair_at, Node};
use common::{eventually, free_port, wait_ready, TempDir};

const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/scale-out");

/// A port free right now on `ip`.
fn free_port_at(ip: [u8; 4]) -> u16 {
    TcpListener::bind(SocketAddr::from((ip, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd`, failing the test with `missing` when it cannot be run at all.
fn spawn(cmd: &mut Command, missing: &str) -> Daemon {
    match cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn() {
        Ok(child) => Daemon(child),
        Err(e) => panic!("{missing}: {e}"),
    }
}

/// A replicated pair on 127.0.0.`ips[0]` and 127.0.0.`ips[1]`, the seed's way.
fn pair(ips: [u8; 2]) -> [Node; 2] {
    let m: &[&str] = &["-m", "64"];
    let (a, b) = pair_at(ips, (free_port(), free_port()), [m, m]);
    [a, b]
}

/// A text-protocol connection that reports errors instead of failing the test: a request
/// whose connection was cut, or that the proxy answers with SERVER_ERROR, is an `Err`; the
/// next request connects again.
struct Mc {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Mc {
    fn new(addr: SocketAddr) -> Mc {
        Mc { addr, conn: None }
    }

    fn line(conn: &mut BufReader<TcpStream>) -> Result<String, String> {
        let mut line = String::new();
        match conn.read_line(&mut line) {
            Ok(0) => Err("connection closed".into()),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The connection, made now if there is none.
    fn conn(&mut self) -> Result<&mut BufReader<TcpStream>, String> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.set_nodelay(true).unwrap();
            self.conn = Some(BufReader::new(s));
        }
        Ok(self.conn.as_mut().unwrap())
    }

    fn exchange(&mut self, req: &[u8], single: bool) -> Result<Vec<(String, String)>, String> {
        let conn = self.conn()?;
        let result = (|| {
            conn.get_mut().write_all(req).map_err(|e| e.to_string())?;
            let mut found = Vec::new();
            loop {
                let line = Mc::line(conn)?;
                if line == "END" || (single && line == "STORED") {
                    return Ok(found);
                }
                let Some(head) = line.strip_prefix("VALUE ") else {
                    return Err(line);
                };
                let mut words = head.split(' ');
                let key = words.next().unwrap_or_default().to_string();
                let len: usize = words
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| line.clone())?;
                let mut data = vec![0; len + 2];
                conn.read_exact(&mut data).map_err(|e| e.to_string())?;
                data.truncate(len);
                found.push((key, String::from_utf8_lossy(&data).into_owned()));
            }
        })();
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        let found = self.exchange(format!("get {key}\r\n").as_bytes(), false)?;
        Ok(found.into_iter().next().map(|(_, v)| v))
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let req = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
        self.exchange(req.as_bytes(), true).map(drop)
    }

    /// The keys of `keys` this server holds with their right values (one multiget per 100).
    fn holds(&mut self, keys: &[String]) -> BTreeSet<String> {
        let mut held = BTreeSet::new();
        for chunk in keys.chunks(100) {
            let req = format!("get {}\r\n", chunk.join(" "));
            let found = self.exchange(req.as_bytes(), false).expect("multiget");
            held.extend(
                found
                    .into_iter()
                    .filter(|(k, v)| *v == value_of(k))
                    .map(|(k, _)| k),
            );
        }
        held
    }

    fn stat(&mut self, name: &str) -> String {
        let conn = self.conn().expect("connect");
        conn.get_mut().write_all(b"stats\r\n").unwrap();
        let mut value = None;
        loop {
            let line = Mc::line(conn).expect("stats");
            if line == "END" {
                return value.unwrap_or_else(|| panic!("no stat {name}"));
            }
            let mut words = line.splitn(3, ' ');
            if words.nth(1) == Some(name) {
                value = words.next().map(str::to_string);
            }
        }
    }
}

fn value_of(key: &str) -> String {
    format!("{key}-value")
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// What a client saw: requests retried once after an error (a connection cut at a kill),
/// requests that failed again, and reads that missed or found another value.
#[derive(Default, Debug)]
struct Tally {
    ops: usize,
    retried: usize,
    failed: usize,
    misses: usize,
    /// The first few errors.
    errors: Vec<String>,
}

impl Tally {
    fn note(&mut self, error: String) {
        if self.errors.len() < 10 {
            self.errors.push(error);
        }
    }

    /// Runs `f`, and once more after a pause if it fails. (Retried at once, a request cut at
    /// a kill can reach the dying node once more: a connection its listening socket took
    /// before the kernel closed it, reset then.)
    fn once_more<T>(&mut self, mut f: impl FnMut() -> Result<T, String>) -> Option<T> {
        self.ops += 1;
        match f() {
            Ok(v) => return Some(v),
            Err(e) => self.note(e),
        }
        self.retried += 1;
        std::thread::sleep(Duration::from_millis(50));
        match f() {
            Ok(v) => Some(v),
            Err(e) => {
                self.note(e);
                self.failed += 1;
                None
            }
        }
    }

    fn write(&mut self, mc: &mut Mc, keys: &[String]) {
        for k in keys {
            self.once_more(|| mc.set(k, &value_of(k)));
        }
    }

    fn read(&mut self, mc: &mut Mc, keys: &[String]) {
        for k in keys {
            if let Some(got) = self.once_more(|| mc.get(k)) {
                self.misses += usize::from(got.as_deref() != Some(value_of(k).as_str()));
            }
        }
    }

    /// Asserts nothing was lost and at most one request per pair endpoint (one connection
    /// each) needed its retry.
    fn assert_clean(&self, what: &str) {
        println!("{what}: {self:?}");
        assert_eq!(self.failed, 0, "{what}: requests failed twice: {self:?}");
        assert_eq!(self.misses, 0, "{what}: keys lost: {self:?}");
        assert!(
            self.retried <= 2,
            "{what}: more than one cut per pair: {self:?}"
        );
    }
}

/// Reads `keys` through `addr` in a loop on its own thread until stopped: the requests in
/// flight when a node is killed.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Tally>,
}

impl Reader {
    fn start(addr: SocketAddr, keys: Vec<String>) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut mc = Mc::new(addr);
            let mut tally = Tally::default();
            for k in keys.iter().cycle() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                tally.read(&mut mc, std::slice::from_ref(k));
            }
            tally
        });
        Reader { stop, thread }
    }

    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// pymemcache's HashClient over the pair endpoints: tests/clients/pymemcache_pairs.py, kept
/// running so its connections live through the kills.
struct HashClient {
    _proc: Daemon,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl HashClient {
    fn start(endpoints: &[SocketAddr]) -> HashClient {
        let list: Vec<String> = endpoints.iter().map(|a| a.to_string()).collect();
        let mut child = common::python_client("pymemcache_pairs.py")
            .arg(list.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with pymemcache must be installed");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        HashClient {
            _proc: Daemon(child),
            stdin,
            stdout,
        }
    }

    /// Runs `write|read PREFIX N` and returns what it saw.
    fn run(&mut self, cmd: &str, prefix: &str, n: usize) -> Tally {
        writeln!(self.stdin, "{cmd} {prefix} {n}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let field = |name: &str| -> usize {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("pymemcache_pairs.py answered {line:?}"))
        };
        Tally {
            ops: field("ops"),
            retried: field("retried"),
            failed: field("failed"),
            misses: field("misses"),
            errors: Vec::new(),
        }
    }
}

/// `text` with each `from` (which must occur) replaced by its `to`.
fn rewrite(mut text: String, moves: &[(String, String)]) -> String {
    for (from, to) in moves {
        assert!(text.contains(from.as_str()), "the example names {from}");
        text = text.replace(from.as_str(), to);
    }
    text
}

fn example(name: &str) -> String {
    std::fs::read_to_string(Path::new(EXAMPLES).join(name)).unwrap()
}

/// nginx in the foreground as one process (no workers, so a kill ends it), with the
/// example's stream block.
fn nginx(dir: &Path, stream: &str) -> Daemon {
    assert!(
        Path::new(STREAM_MODULE).exists(),
        "nginx's stream module must be installed (Debian: libnginx-mod-stream)"
    );
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "load_module {STREAM_MODULE};\ndaemon off;\nmaster_process off;\n\
             pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log notice;\n\
             events {{ worker_connections 256; }}\n{stream}"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stderr(Stdio::null());
    spawn(
        &mut cmd,
        "nginx must be installed (Debian: nginx libnginx-mod-stream)",
    )
}

fn nutcracker(dir: &Path, yml: &str, stats: SocketAddr) -> Daemon {
    let conf = dir.join("nutcracker.yml");
    std::fs::write(&conf, yml).unwrap();
    let mut cmd = Command::new("nutcracker");
    cmd.arg("-c")
        .arg(&conf)
        .arg("-o")
        .arg(dir.join("nutcracker.log"))
        .args([
            "-a",
            &stats.ip().to_string(),
            "-s",
            &stats.port().to_string(),
        ])
        .stderr(Stdio::null());
    spawn(
        &mut cmd,
        "nutcracker must be installed (Debian: nutcracker, twemproxy)",
    )
}

fn ip(last: u8) -> [u8; 4] {
    [127, 0, 0, last]
}

/// Waits until each pair's two nodes hold the same keys of `all` and the pairs between them
/// hold all of it, each a part; returns each pair's keys.
/// Kills node `which` of each pair (SIGKILL) while a reader goes through twemproxy at
/// `proxy`; the reader must lose nothing.
fn kill_while_reading(
    nodes: &mut [[Node; 2]; 2],
    which: usize,
    proxy: SocketAddr,
    keys: &[String],
    what: &str,
) {
    let reader = Reader::start(proxy, keys.to_vec());
    std::thread::sleep(Duration::from_millis(200));
    for pair in nodes.iter_mut() {
        pair[which].kill();
    }
    std::thread::sleep(Duration::from_millis(300));
    reader
        .finish()
        .assert_clean(&format!("twemproxy reads across {what}"));
}

fn settled(pairs: &mut [[Mc; 2]; 2], all: &[String]) -> [BTreeSet<String>; 2] {
    let mut last = None;
    let ok = eventually(Duration::from_secs(10), || {
        let held: Vec<BTreeSet<String>> =
            pairs.iter_mut().flatten().map(|m| m.holds(all)).collect();
        let both = held[0] == held[1] && held[2] == held[3];
        let whole = held[0].len() + held[2].len() == all.len()
            && held[0].union(&held[2]).count() == all.len();
        last = Some(held);
        both && whole
    });
    let held = last.unwrap();
    let sizes: Vec<usize> = held.iter().map(BTreeSet::len).collect();
    assert!(ok, "pairs did not settle on {} keys: {sizes:?}", all.len());
    assert!(
        held[0].len() > all.len() / 10 && held[2].len() > all.len() / 10,
        "keys are spread over both pairs: {sizes:?}"
    );
    [held[0].clone(), held[2].clone()]
}

/// Waits until a restarted node has caught up (answers misses itself again).
fn caught_up(mc: &mut Mc) {
    assert!(
        eventually(Duration::from_secs(10), || mc.stat("replication_role")
            == "master"),
        "{} did not catch up",
        mc.addr
    );
}

#[test]
fn two_pairs_behind_per_pair_failover_lose_no_key_when_a_node_of_each_dies() {
    let started = Instant::now();
    let dir = TempDir::new("scale-out");
    let mut nodes = [pair([150, 151]), pair([152, 153])];
    let endpoints = [154, 155].map(|n| SocketAddr::from((ip(n), free_port_at(ip(n)))));
    let proxy = SocketAddr::from((ip(158), free_port_at(ip(158))));
    let stats = SocketAddr::from((ip(158), free_port_at(ip(158))));

    // The examples' addresses, moved to the ports picked here.
    let example_addr = |n: u8| format!("127.0.0.{n}:11211");
    let mut moves: Vec<(String, String)> = nodes
        .iter()
        .flatten()
        .map(|node| match node.addr.ip() {
            std::net::IpAddr::V4(v4) => (example_addr(v4.octets()[3]), node.addr.to_string()),
            other => unreachable!("{other}"),
        })
        .collect();
    moves.extend([
        (example_addr(154), endpoints[0].to_string()),
        (example_addr(155), endpoints[1].to_string()),
    ]);
    let stream = rewrite(example("nginx-stream.conf"), &moves);
    let yml = rewrite(
        example("nutcracker.yml"),
        &[
            (example_addr(154), endpoints[0].to_string()),
            (example_addr(155), endpoints[1].to_string()),
            (example_addr(158), proxy.to_string()),
        ],
    );
    let _nginx = nginx(&dir.0, &stream);
    let _nutcracker = nutcracker(&dir.0, &yml, stats);
    for addr in endpoints.iter().chain([&proxy]) {
        assert!(
            wait_ready(*addr, Duration::from_secs(10)),
            "{addr} did not start (logs in {})",
            dir.0.display()
        );
    }
    let mut direct = nodes
        .each_ref()
        .map(|p| p.each_ref().map(|n| Mc::new(n.addr)));

    // Keys written through twemproxy and through HashClient spread over both pairs.
    let mut via_proxy = Mc::new(proxy);
    let mut hash_client = HashClient::start(&endpoints);
    let (nc_keys, py_keys) = (keys("nc:", 1000), keys("py:", 1000));
    let mut tally = Tally::default();
    tally.write(&mut via_proxy, &nc_keys);
    tally.assert_clean("twemproxy writes");
    hash_client
        .run("write", "py:", 1000)
        .assert_clean("HashClient writes");
    let all: Vec<String> = nc_keys.iter().chain(&py_keys).cloned().collect();
    let held = settled(&mut direct, &all);
    println!("pair keys: {} and {}", held[0].len(), held[1].len());

    // Kill the node each pair's endpoint sends to, while a reader is mid-flight.
    kill_while_reading(&mut nodes, 0, proxy, &nc_keys, "the first kill");
    let mut tally = Tally::default();
    tally.read(&mut via_proxy, &nc_keys);
    tally.assert_clean("twemproxy reads after the first kill");
    hash_client
        .run("read", "py:", 1000)
        .assert_clean("HashClient reads after the first kill");

    // Writes go on, to the surviving nodes.
    let (nc_more, py_more) = (keys("nc2:", 300), keys("py2:", 300));
    let mut tally = Tally::default();
    tally.write(&mut via_proxy, &nc_more);
    tally.assert_clean("twemproxy writes with a node of each pair down");
    hash_client
        .run("write", "py2:", 300)
        .assert_clean("HashClient writes with a node of each pair down");

    // The killed nodes restart with the same flags and catch up: each holds every key its
    // pair holds, checked on the node itself once it answers misses alone.
    let all: Vec<String> = all
        .into_iter()
        .chain(nc_more.clone())
        .chain(py_more.clone())
        .collect();
    for p in 0..2 {
        nodes[p][0].restart();
        direct[p][0] = Mc::new(nodes[p][0].addr);
    }
    // New connections through the endpoints (a new client's) go to the restarted nodes at
    // once, while they catch up: a miss there asks the pair's other node, so no key is
    // missing. (The first client's connections stay with the nodes they were cut over to.)
    HashClient::start(&endpoints)
        .run("read", "py:", 1000)
        .assert_clean("a new HashClient's reads while the restarted nodes catch up");
    let served: u64 = direct
        .iter_mut()
        .map(|d| d[0].stat("cmd_get").parse::<u64>().unwrap())
        .sum();
    assert!(served > 0, "no read reached the restarted nodes");
    for d in direct.iter_mut() {
        caught_up(&mut d[0]);
    }
    let held = settled(&mut direct, &all);
    println!(
        "after the restart, pair keys: {} and {}",
        held[0].len(),
        held[1].len()
    );

    // Now the other node of each pair dies: nothing is lost either.
    kill_while_reading(&mut nodes, 1, proxy, &nc_keys, "the second kill");
    let mut tally = Tally::default();
    tally.read(&mut via_proxy, &nc_keys);
    tally.read(&mut via_proxy, &nc_more);
    tally.assert_clean("twemproxy reads after the second kill");
    let mut tally = hash_client.run("read", "py:", 1000);
    let more = hash_client.run("read", "py2:", 300);
    tally.ops += more.ops;
    tally.retried += more.retried;
    tally.failed += more.failed;
    tally.misses += more.misses;
    tally.assert_clean("HashClient reads after the second kill");
    println!("took {:?}", started.elapsed());
}

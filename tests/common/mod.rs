//! Test harness: servers in-process or as real processes, and a plain blocking client.
//! Everything listens on and talks to loopback only.

#![allow(dead_code)]

pub mod mesh;
pub mod node;
pub mod pair;
pub mod proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use repcached::config::Config;
use repcached::server::{Server, Shared};
use repcached::store::Clock;

pub const BIN: &str = env!("CARGO_BIN_EXE_repcached");

/// A server running on its own runtime thread; stopped on drop.
pub struct InProc {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub clock: Arc<Clock>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProc {
    pub fn start(config: Config) -> InProc {
        let clock = Arc::new(Clock::new());
        let server = Server::bind_with_clock(config, clock.clone()).expect("bind test server");
        let addr = server.local_addrs()[0];
        let shared = server.shared();
        let threads = shared.config.threads;
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(server.run()).expect("server run");
        });
        InProc {
            addr,
            shared,
            clock,
            thread: Some(thread),
        }
    }

    pub fn default() -> InProc {
        Self::start(Config::for_tests())
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        self.shared.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls connect until it succeeds or `limit` passes.
/// A process's resident memory, in KB.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

pub fn wait_ready(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Polls `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The real binary as a child process; killed on drop.
pub struct Proc {
    pub child: Child,
    pub port: u16,
}

impl Proc {
    /// Starts `repcached -u root -l 127.0.0.1 -p <free port> <args>` and waits until ready.
    pub fn start(args: &[&str]) -> Proc {
        Proc::start_with(args, |_| {})
    }

    /// As [`Proc::start`], the command first given to `prepare` (an environment, limits).
    pub fn start_with(args: &[&str], prepare: impl FnOnce(&mut Command)) -> Proc {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["-u", "root", "-l", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        prepare(&mut cmd);
        let child = cmd.spawn().expect("spawn repcached");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_ready(addr, Duration::from_secs(10)),
            "server did not start"
        );
        Proc { child, port }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with a timeout; returns (exit code, stdout, stderr).
pub fn run_bin(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run repcached");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `tests/clients/<script>` with the test Python (`REPCACHED_TEST_PYTHON`, else
/// python3, with pymemcache) and `args`; asserts it succeeded and returns its stdout and
/// stderr together.
#[allow(dead_code)] // not every test binary runs a Python client
pub fn run_python_client(script: &str, args: &[&str]) -> String {
    let out = python_client(script)
        .args(args)
        .output()
        .expect("python3 with pymemcache must be installed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    text
}

/// The command that runs `tests/clients/<script>` with the test Python
/// (`REPCACHED_TEST_PYTHON`, else python3); arguments and I/O are the caller's.
pub fn python_client(script: &str) -> Command {
    let python = std::env::var("REPCACHED_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(python);
    cmd.arg(format!(
        "{}/tests/clients/{script}",
        env!("CARGO_MANIFEST_DIR")
    ));
    cmd
}

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "repcached-test-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A blocking client that reads replies by expected length or by idle time.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads exactly `n` bytes (or fails the test after the timeout).
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.stream.read_exact(&mut buf).expect("read reply");
        buf
    }

    /// Sends `req` and asserts the reply is exactly `want`, with nothing after it.
    pub fn expect(&mut self, req: &[u8], want: &[u8]) {
        self.send(req);
        let mut got = vec![0; want.len()];
        if let Err(e) = self.stream.read_exact(&mut got) {
            panic!(
                "request {:?}: no full reply ({e}); wanted {:?}",
                String::from_utf8_lossy(req),
                String::from_utf8_lossy(want)
            );
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "request {:?}",
            String::from_utf8_lossy(req)
        );
        self.assert_quiet();
    }

    /// Asserts no more bytes arrive within a short wait.
    pub fn assert_quiet(&mut self) {
        self.stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut b = [0u8; 256];
        match self.stream.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!(
                "unexpected extra reply: {:?}",
                String::from_utf8_lossy(&b[..n])
            ),
            Err(_) => {}
        }
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }

    /// Sends `req` and reads until the reply ends with `end` (e.g. "END\r\n").
    pub fn call_until(&mut self, req: &[u8], end: &[u8]) -> Vec<u8> {
        self.send(req);
        let mut out = Vec::new();
        let mut b = [0u8; 65536];
        while !out.ends_with(end) {
            let n = self.stream.read(&mut b).expect("read");
            assert!(n > 0, "closed before {:?}", String::from_utf8_lossy(end));
            out.extend_from_slice(&b[..n]);
        }
        out
    }

    /// True if the server closed the connection (read returns 0 or reset) within 2 s.
    pub fn is_closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut b = [0u8; 1024];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        }
    }

    /// The CAS value `gets` answers for `key` (0 on a miss).
    pub fn cas_of(&mut self, key: &str) -> u64 {
        let out = self.call_until(format!("gets {key}\r\n").as_bytes(), b"END\r\n");
        cas_in(&out)
    }

    /// Reads one `STAT name value` from `stats`.
    pub fn stat(&mut self, name: &str) -> String {
        self.stat_group("", name)
    }

    pub fn stat_group(&mut self, group: &str, name: &str) -> String {
        let req = if group.is_empty() {
            "stats\r\n".to_string()
        } else {
            format!("stats {group}\r\n")
        };
        let out = self.call_until(req.as_bytes(), b"END\r\n");
        let text = String::from_utf8(out).unwrap();
        text.lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ' ');
                (p.next() == Some("STAT") && p.next() == Some(name))
                    .then(|| p.next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| panic!("no stat {name}"))
    }
}

/// The CAS value in a `gets`/`gats` reply's first VALUE line (0 if none).
pub fn cas_in(reply: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(reply);
    let first = text.lines().next().unwrap_or_default();
    if !first.starts_with("VALUE ") {
        return 0;
    }
    first
        .rsplit(' ')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A seed for a randomized test, from the clock (odd: a xorshift state must not be 0).
/// Print it, so a failure can be rerun.
pub fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1
}

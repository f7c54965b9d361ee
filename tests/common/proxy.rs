//! A TCP proxy for fault injection: it listens on a loopback address, forwards each
//! connection it accepts to a target, and can be switched at run time to lose every byte,
//! to refuse, to cut what it carries, or to carry it at a slow link's rate.
//!
//! Two threads per connection, one per direction, each in a blocking read; the controls act
//! at once by shutting sockets down, which wakes those reads. Only the accept loop polls.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways.
    Pass,
    /// Keep connections (and accept new ones) but lose every byte, both ways: a partition
    /// where the sockets stay open. A connection that lost bytes can never carry a whole
    /// stream again, so going back to `Pass` closes it (as TCP gives up on it in the end).
    Blackhole,
    /// Close new connections at once, and existing ones when switched to: a dead peer.
    Refuse,
}

/// One proxied connection: the accepted socket and the one to the target.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    /// Bytes were lost on it.
    tainted: AtomicBool,
    /// Direction threads still running; the last one out forgets the connection.
    pumps: AtomicU8,
}

impl Conn {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

struct State {
    mode: Mode,
    conns: HashMap<u64, Arc<Conn>>,
    next: u64,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Bytes per second each direction of a connection carries at most; 0: no limit.
    rate: AtomicU64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(std::thread::spawn(f));
    }
}

/// A running proxy; stopped (every connection closed, every thread joined) on drop.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `listen` (port 0: any free port) and forwards to `target`, in `Pass`.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> Proxy {
        assert!(listen.ip().is_loopback() && target.ip().is_loopback());
        let listener = TcpListener::bind(listen).expect("bind proxy");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Pass,
                conns: HashMap::new(),
                next: 0,
            }),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            rate: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(&s, listener, target));
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn mode(&self) -> Mode {
        self.shared.state().mode
    }

    pub fn set_mode(&self, mode: Mode) {
        let mut st = self.shared.state();
        st.mode = mode;
        for c in st.conns.values() {
            let close = match mode {
                Mode::Refuse => true,
                Mode::Pass => c.tainted.load(Ordering::SeqCst),
                Mode::Blackhole => false,
            };
            if close {
                c.close();
            }
        }
    }

    /// Carries at most `bytes_per_sec` each way on every connection (None: as fast as it
    /// can), as a slow link would.
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        self.shared
            .rate
            .store(bytes_per_sec.unwrap_or(0), Ordering::SeqCst);
    }

    /// Closes every connection open now (a blip); new ones are taken as the mode says.
    pub fn cut(&self) {
        for c in self.shared.state().conns.values() {
            c.close();
        }
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.state().conns.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // No connection is added after the accept loop ended.
        self.cut();
        let threads = std::mem::take(&mut *self.shared.threads.lock().unwrap());
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener, target: SocketAddr) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if shared.state().mode == Mode::Refuse {
            continue; // dropped: closed at once
        }
        let _ = client.set_nonblocking(false);
        // A target that is down: the connection closes at once, as the target's would.
        let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let clones = (
            client.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
            upstream.try_clone(),
        );
        let (Ok(c_rd), Ok(c_wr), Ok(u_rd), Ok(u_wr)) = clones else {
            continue;
        };
        let conn = Arc::new(Conn {
            client,
            upstream,
            tainted: AtomicBool::new(false),
            pumps: AtomicU8::new(2),
        });
        let id = {
            let mut st = shared.state();
            // Switched to Refuse since the check above: close it as Refuse would have.
            if st.mode == Mode::Refuse {
                continue;
            }
            st.next += 1;
            let id = st.next;
            st.conns.insert(id, conn.clone());
            id
        };
        for (rd, wr) in [(c_rd, u_wr), (u_rd, c_wr)] {
            let (s, c) = (shared.clone(), conn.clone());
            shared.spawn(move || pump(&s, id, &c, rd, wr));
        }
    }
}

/// What a pump does with what it read.
enum Act {
    Forward,
    Lose,
    Close,
}

/// Carries one direction of a connection until it ends.
fn pump(shared: &Shared, id: u64, conn: &Conn, mut rd: TcpStream, mut wr: TcpStream) {
    let _ = wr.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // Under a rate, small reads: what waits then waits in the sockets, as on a slow link.
        let rate = shared.rate.load(Ordering::SeqCst);
        let room = if rate == 0 { buf.len() } else { 8 << 10 };
        let n = match rd.read(&mut buf[..room]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                conn.close();
                break;
            }
        };
        // The mode is read and the taint set under the lock `set_mode` holds, so a
        // connection that lost bytes never forwards any again.
        let act = {
            let st = shared.state();
            match st.mode {
                Mode::Pass if !conn.tainted.load(Ordering::SeqCst) => Act::Forward,
                Mode::Pass | Mode::Refuse => Act::Close,
                Mode::Blackhole => {
                    conn.tainted.store(true, Ordering::SeqCst);
                    Act::Lose
                }
            }
        };
        match (act, n) {
            (Act::Close, _) => {
                conn.close();
                break;
            }
            // The end of this direction: passed on as a half close, or lost (the other
            // side finds out by its own timeout).
            (Act::Forward, 0) => {
                let _ = wr.shutdown(Shutdown::Write);
                break;
            }
            (Act::Lose, 0) => break,
            (Act::Forward, n) => {
                if wr.write_all(&buf[..n]).is_err() {
                    conn.close();
                    break;
                }
                if let Some(ns) = (n as u64 * 1_000_000_000).checked_div(rate) {
                    std::thread::sleep(Duration::from_nanos(ns));
                }
            }
            (Act::Lose, _) => {}
        }
    }
    if conn.pumps.fetch_sub(1, Ordering::SeqCst) == 1 {
        shared.state().conns.remove(&id);
    }
}

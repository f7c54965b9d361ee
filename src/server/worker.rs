//! Worker threads: one single-threaded runtime per `-t` thread, up to one per core, each
//! owning the connections handed to it.
//!
//! This is memcached's model (a dispatcher hands each accepted connection to one worker) and
//! it is what keeps CPU per request low: a connection's reads, parsing, store calls and
//! writes all happen on one thread, with no work stealing and no cross-thread wake-ups.
//!
//! A worker with nothing to do sleeps in `epoll_wait`, as memcached's do. (Calling
//! `sched_yield` first, to let clients on the same core send more before it slept, helped
//! against a heavy client but not a light one: the scheduler then preempts the yielder more
//! often, and context switches per request went up, to 0.14-0.22 from 0.05-0.12.)
//!
//! More workers than the cores this process may use (`-t 4`, memcached's default, on a
//! two-core machine) would only take turns on those cores, and every turn is a context
//! switch: measured at -t 4 on two cores, 8.5 us of CPU per request against 6.9 at -t 2,
//! and fewer requests a second. So `-t` beyond the cores runs one worker per core; `stats`
//! still shows `threads` as asked, as memcached's "worker threads requested".

use std::net::TcpStream as StdTcpStream;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::{connection, Shared};
use crate::protocol::limits::LINE_MAX_LENGTH;

/// A connection accepted by a listener, on its way to a worker.
pub enum Accepted {
    Tcp {
        stream: StdTcpStream,
        peer: String,
        listen: String,
    },
    Unix {
        stream: StdUnixStream,
        path: String,
    },
}

/// How many workers run for `-t threads`: as many, up to one per core (see the module doc);
/// all of them where the cores cannot be told.
pub fn count(threads: usize) -> usize {
    let asked = threads.max(1);
    cores().map_or(asked, |cores| asked.min(cores))
}

/// The cores this process may run on (its CPU affinity and cgroup quota count).
fn cores() -> Option<usize> {
    static CORES: OnceLock<Option<usize>> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().ok().map(|n| n.get()))
}

pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Accepted>>,
    next: AtomicUsize,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn start(shared: &Arc<Shared>) -> std::io::Result<Workers> {
        let n = count(shared.config.threads);
        let mut senders = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for index in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // Replication paces its sender by how much the workers sleep.
            let idle = shared.replication.get().map(|r| r.worker_idle());
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("repcached-worker-{index}"))
                .spawn(move || {
                    if let Some(idle) = idle {
                        idle.register_current();
                    }
                    runtime.block_on(serve_connections(index, rx, shared))
                })?;
            senders.push(tx);
            handles.push(handle);
        }
        Ok(Workers {
            senders,
            next: AtomicUsize::new(0),
            handles,
        })
    }

    /// Hands a connection to the next worker, round robin.
    pub fn dispatch(&self, conn: Accepted) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        // A worker only goes away at shutdown; a connection arriving then is simply dropped.
        let _ = self.senders[i].send(conn);
    }

    /// Stops handing out connections and waits (up to `limit`) for the workers to finish
    /// the connections they hold.
    pub async fn join(self, limit: Duration) {
        drop(self.senders);
        let deadline = Instant::now() + limit;
        for h in self.handles {
            while !h.is_finished() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn serve_connections(
    index: usize,
    mut rx: mpsc::UnboundedReceiver<Accepted>,
    shared: Arc<Shared>,
) {
    let local = TaskTracker::new();
    // Each worker's share is memcached's, the limit over `-t` (as its t/conn-limits.t
    // expects), even where fewer workers run: together they stay under the limit.
    // A spare buffer fits a request with the largest value, and the workers' spares
    // together take at most a quarter of `-m` more.
    let store = &shared.config.store;
    let spare_max = (store.item_size_max + LINE_MAX_LENGTH)
        .min(store.limit_bytes / 4 / shared.config.threads.max(1));
    super::buffers::init(
        super::buffers::worker_limit(shared.config.read_buf_mem_limit_mb, shared.config.threads),
        spare_max,
    );
    let trimmer = tokio::spawn(async {
        let mut tick = tokio::time::interval(super::buffers::SPARE_IDLE);
        loop {
            tick.tick().await;
            super::buffers::trim();
        }
    });
    while let Some(conn) = rx.recv().await {
        let shared = shared.clone();
        match conn {
            Accepted::Tcp {
                stream,
                peer,
                listen,
            } => {
                if stream.set_nonblocking(true).is_ok() {
                    local.spawn(connection::serve(stream, shared, index, peer, listen));
                }
            }
            Accepted::Unix { stream, path } => {
                if stream.set_nonblocking(true).is_ok() {
                    local.spawn(connection::serve(stream, shared, index, path.clone(), path));
                }
            }
        }
    }
    trimmer.abort();
    local.close();
    local.wait().await;
}

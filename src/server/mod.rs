//! The network server: listeners, one task per connection, background tasks, shutdown.
//!
//! Binding is synchronous and separate from running, so `main` can report a busy port before
//! it daemonizes, and tests can learn the ephemeral port before traffic starts. `run` then
//! serves until the shutdown signal, waits for connections to finish the replies they owe,
//! and returns.

pub mod auth;
pub mod buffers;
pub mod command;
pub mod connection;
pub mod detail;
pub mod dump;
pub mod io;
pub mod listener;
pub mod output;
pub mod process;
pub mod settings;
pub mod stats;
pub mod udp;
pub mod verbose;
pub mod watcher;
pub mod worker;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::protocol::limits::SlabClasses;
use crate::protocol::text::reply::stat;
use crate::protocol::Limits;
use crate::store::{Clock, Store};
use auth::Credentials;
use listener::Bound;
use stats::PerWorker;

/// The version clients see: the memcached protocol level we match, and our own.
pub const VERSION: &str = concat!("1.6.18-repcached-", env!("CARGO_PKG_VERSION"));

/// Slots visited per shard per reclaim tick: bounded so a tick never holds a lock long.
const RECLAIM_BUDGET: usize = 4096;
/// Seconds between checks for free heap pages to return to the system.
const TRIM_EVERY_TICKS: u64 = 5;

/// Errors that stop the server from starting, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error(
        "cannot resolve listen address {addr}: {reason}; give an IP address or hostname with -l"
    )]
    Resolve { addr: String, reason: String },
    #[error("cannot read the password file {path}: {reason}; check {what}")]
    Credentials {
        path: String,
        reason: String,
        what: &'static str,
    },
    #[error("{0}")]
    Replication(#[from] crate::replication::node::StartError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A connection as `stats conns` shows it.
pub struct ConnEntry {
    pub kind: ConnKind,
    pub addr: String,
    pub listen_addr: String,
    pub activity: Arc<Activity>,
    /// The socket's descriptor: it names the entry in `stats conns` as in memcached's (and
    /// a client in `watch` lines as `cfd`), and a client's is shut for reading when the
    /// server stops (see [`Shared::shutdown`]).
    socket: RawFd,
}

/// What a connection's owner reports for `stats conns`: when it last got a request and,
/// for a client, memcached's name for what it is doing.
#[derive(Debug, Default)]
pub struct Activity {
    pub last_cmd: AtomicU32,
    state: AtomicU8,
}

/// A client connection's state, named as memcached names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    /// Connected, nothing sent yet.
    NewCmd,
    /// Waiting for a request.
    Read,
    /// Executing requests.
    ParseCmd,
    /// Waiting for the rest of a request's data block.
    Nread,
    /// Streaming log lines (`watch`).
    Watch,
}

impl Activity {
    pub fn set_state(&self, s: ConnState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            0 => "conn_new_cmd",
            1 => "conn_read",
            2 => "conn_parse_cmd",
            4 => "conn_watch",
            _ => "conn_nread",
        }
    }
}

/// What a `stats conns` entry is; memcached lists its listening and UDP sockets too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    Client,
    Listening,
    /// One UDP receiver (memcached has one per worker thread on each UDP socket).
    Udp,
}

/// State shared by every connection task.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub clock: Arc<Clock>,
    pub limits: Limits,
    /// memcached's slab classes for `-f` and `-n` (`me`'s `cls=`, `slabs reassign`).
    pub slab_classes: SlabClasses,
    /// SASL PLAIN users (`-S`).
    pub credentials: Credentials,
    /// ascii authentication users (`-Y`); None when ascii auth is off.
    pub ascii_credentials: Option<Credentials>,
    /// Request counters, one cache-line-padded slot per worker thread.
    pub counts: PerWorker,
    /// Per-prefix counters (`stats detail`).
    pub detail: detail::PrefixStats,
    /// Connections streaming log lines (`watch`).
    pub watchers: Arc<watcher::Watchers>,
    /// The replication component, when peers are configured; set once the server runs
    /// (after a daemonizing fork, which threads would not survive).
    pub replication: std::sync::OnceLock<crate::replication::Replication>,
    curr_conns: AtomicU64,
    /// The most client connections open at once: memcached's connection structures,
    /// allocated as connections come and kept for the next ones.
    peak_conns: AtomicU64,
    total_conns: AtomicU64,
    rejected_conns: AtomicU64,
    /// Listeners and UDP receivers, which memcached counts as connections too.
    endpoints: AtomicU64,
    verbosity: AtomicU32,
    /// memcached's LRU crawler, as `lru_crawler enable|disable` left it (nothing crawls
    /// here: expiry is reclaimed in the background regardless).
    crawler: AtomicBool,
    /// A `lru_crawler metadump` is streaming (one at a time, see [`Shared::begin_dump`]).
    dumping: AtomicBool,
    /// memcached's knobs its commands set at run time, for `stats settings`.
    pub tuning: settings::Tuning,
    /// `stats sizes_enable`: the stamp from which items are counted; [`SIZES_OFF`] while
    /// disabled.
    sizes_since: AtomicU64,
    tcp_port: AtomicU32,
    next_conn_id: AtomicU64,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    shutdown: watch::Sender<bool>,
}

/// Tells the watchers of evictions (`watch evictions`) of each item the store evicts.
fn watch_evictions(shared: &Shared) {
    let watchers = shared.watchers.clone();
    let clock = shared.clock.clone();
    let slabs = shared.slab_classes.clone();
    let cas = shared.config.cas_enabled;
    shared.store.on_eviction(Box::new(move |it| {
        if !watchers.wants(crate::protocol::command::WatchKinds::EVICTIONS) {
            return;
        }
        let now = clock.now();
        let class = dump::Sizing { slabs: &slabs, cas }.size_and_class(it).1;
        let ttl = if it.exptime == 0 {
            -1
        } else {
            i64::from(it.exptime) - i64::from(now)
        };
        watchers.log(crate::protocol::command::WatchKinds::EVICTIONS, |out| {
            watcher::eviction(
                out,
                it.key(),
                it.has(crate::store::bits::FETCHED),
                ttl,
                now.saturating_sub(it.atime),
                class,
                it.value().len(),
            )
        });
    }));
}

/// [`Shared::sizes_since`] while `stats sizes` is disabled.
const SIZES_OFF: u64 = u64::MAX;

impl Shared {
    /// memcached's sizes and classes of items, as `-C`, `-f` and `-n` make them.
    pub fn sizing(&self) -> dump::Sizing<'_> {
        dump::Sizing {
            slabs: &self.slab_classes,
            cas: self.config.cas_enabled,
        }
    }

    /// Whether memcached's LRU crawler would be running.
    pub fn crawler_enabled(&self) -> bool {
        self.crawler.load(Ordering::Relaxed)
    }

    /// Takes the one metadump slot, as memcached's crawler runs one dump at a time (others
    /// are told BUSY): thirty dumps at once, each walking batches until its socket filled,
    /// held every worker for half a second. None while another dump streams.
    pub fn begin_dump(&self) -> Option<dump::Dumping<'_>> {
        dump::Dumping::take(&self.dumping)
    }

    /// Starts or stops the (notional) crawler; false if it was already in that state.
    pub fn set_crawler(&self, on: bool) -> bool {
        self.crawler.swap(on, Ordering::Relaxed) != on
    }

    /// `stats sizes`: the stamp items are counted from, None while disabled.
    pub fn sizes_since(&self) -> Option<u64> {
        let s = self.sizes_since.load(Ordering::Relaxed);
        (s != SIZES_OFF).then_some(s)
    }

    /// `stats sizes_enable` (counting what is stored from now on, as memcached counts the
    /// items whose CAS is at least the one current when enabled; enabling again changes
    /// nothing) or `_disable`.
    pub fn set_sizes(&self, on: bool) {
        if !on {
            self.sizes_since.store(SIZES_OFF, Ordering::Relaxed);
        } else if self.sizes_since().is_none() {
            let since = self.store.stamp_mark();
            let _ = self.sizes_since.compare_exchange(
                SIZES_OFF,
                since,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Counted as memcached does: its listeners and UDP receivers are connections too,
    /// less one (the listener of a plain `-p`), so that one client reads 1.
    pub fn curr_connections(&self) -> u64 {
        self.curr_conns.load(Ordering::Relaxed)
            + self.endpoints.load(Ordering::Relaxed).saturating_sub(1)
    }
    /// Since the start (the listeners included) or `stats reset`.
    pub fn total_connections(&self) -> u64 {
        self.total_conns.load(Ordering::Relaxed)
    }
    /// memcached's `connection_structures`: the endpoints and the most clients at once.
    pub fn connection_structures(&self) -> u64 {
        self.peak_conns.load(Ordering::Relaxed) + self.endpoints.load(Ordering::Relaxed)
    }
    /// A client connection admitted: `curr` are open now.
    pub fn count_admitted(&self, curr: u64) {
        self.total_conns.fetch_add(1, Ordering::Relaxed);
        self.peak_conns.fetch_max(curr, Ordering::Relaxed);
    }
    pub fn rejected_connections(&self) -> u64 {
        self.rejected_conns.load(Ordering::Relaxed)
    }
    pub fn reset_connection_counts(&self) {
        self.total_conns.store(0, Ordering::Relaxed);
        self.rejected_conns.store(0, Ordering::Relaxed);
    }
    pub fn verbosity(&self) -> u32 {
        self.verbosity.load(Ordering::Relaxed)
    }
    pub fn set_verbosity(&self, v: u32) {
        self.verbosity.store(v, Ordering::Relaxed);
    }
    pub fn tcp_port(&self) -> u32 {
        self.tcp_port.load(Ordering::Relaxed)
    }

    /// Asks the server to stop. Tasks that wait for it (accept loops, the reclaimer) see the
    /// signal; client connections have their sockets shut for reading, so a connection
    /// waiting for a request reads end-of-stream and closes the way any closed connection
    /// does. That keeps the per-read path free of a second wait: polling a shared signal
    /// on every read cost a few percent of the server's CPU.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        for c in conns.values().filter(|c| c.kind == ConnKind::Client) {
            shut_read(c.socket);
        }
    }

    /// Whether the server is stopping.
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Lists a client connection in `stats conns`. Its socket `fd` must stay open until
    /// [`Shared::unregister`]: shutdown reaches it by that number.
    fn register(&self, addr: String, listen_addr: String, fd: RawFd) -> (u64, Arc<Activity>) {
        self.insert(ConnKind::Client, addr, listen_addr, fd)
    }

    /// Lists a listening socket or UDP receiver at `addr` in `stats conns` for as long as
    /// the server runs; returns its last-request time for the owner to update.
    fn register_endpoint(&self, kind: ConnKind, addr: String, socket: RawFd) -> Arc<Activity> {
        self.endpoints.fetch_add(1, Ordering::Relaxed);
        self.total_conns.fetch_add(1, Ordering::Relaxed);
        self.insert(kind, addr, String::new(), socket).1
    }

    fn insert(
        &self,
        kind: ConnKind,
        addr: String,
        listen_addr: String,
        socket: RawFd,
    ) -> (u64, Arc<Activity>) {
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            last_cmd: AtomicU32::new(self.clock.now()),
            ..Default::default()
        });
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.insert(
            id,
            ConnEntry {
                kind,
                addr,
                listen_addr,
                activity: activity.clone(),
                socket,
            },
        );
        // Registered after a shutdown began: this one is stopped too (the check is under
        // the same lock as the shutdown's walk, so no connection slips between them).
        if kind == ConnKind::Client && *self.shutdown.borrow() {
            shut_read(socket);
        }
        (id, activity)
    }

    /// Takes a connection out of `stats conns`; returns its address.
    fn unregister(&self, id: u64) -> Option<String> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.remove(&id).map(|c| c.addr)
    }

    pub fn write_conns(&self, out: &mut Vec<u8>) {
        let now = self.clock.now();
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        // Each by its socket's descriptor, as memcached lists them.
        let mut list: Vec<_> = conns.values().collect();
        list.sort_unstable_by_key(|c| c.socket);
        for c in list {
            let id = c.socket;
            if c.kind == ConnKind::Udp {
                stat(out, &format!("{id}:UDP"), "UDP");
            }
            let _ = write!(out, "STAT {id}:addr {}\r\n", c.addr);
            let state = match c.kind {
                ConnKind::Client => {
                    let _ = write!(out, "STAT {id}:listen_addr {}\r\n", c.listen_addr);
                    c.activity.state_name()
                }
                ConnKind::Listening => "conn_listening",
                ConnKind::Udp => "conn_read",
            };
            stat(out, &format!("{id}:state"), state);
            let secs = now.saturating_sub(c.activity.last_cmd.load(Ordering::Relaxed));
            stat(out, &format!("{id}:secs_since_last_cmd"), secs);
        }
    }
}

/// A bound, not yet running server.
pub struct Server {
    shared: Arc<Shared>,
    bound: Bound,
    /// The replication listener, bound with the others, started by [`Server::run`].
    replication: Option<crate::replication::node::Bound>,
    udp: Vec<std::net::UdpSocket>,
}

impl Server {
    /// Opens the listeners named in `config`. Fails with a message naming the address and
    /// what to change if one cannot be bound.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        Self::bind_with_clock(config, Arc::new(Clock::new()))
    }

    /// As [`Server::bind`], with a clock the caller controls (tests advance it).
    pub fn bind_with_clock(config: Config, clock: Arc<Clock>) -> Result<Server, ServerError> {
        let load = |path: &std::path::Path, what: &'static str| {
            Credentials::load(path).map_err(|e| ServerError::Credentials {
                path: path.display().to_string(),
                reason: e.to_string(),
                what,
            })
        };
        let credentials = match &config.sasl_file {
            Some(p) if config.sasl => load(p, "-o sasl_file or MEMCACHED_SASL_PWDB")?,
            _ => Credentials::default(),
        };
        let ascii_credentials = match &config.auth_file {
            Some(p) => Some(load(p, "-Y")?),
            None => None,
        };
        let bound = listener::bind(&config.listen)?;
        let udp = udp::bind(&config.listen)?;
        let mut store_cfg = config.store.clone();
        let replication = if config.replication.enabled() {
            // Peers listen at the first -l address unless told otherwise.
            let host = config.listen.addrs.iter().flat_map(|a| a.split(',')).next();
            let host = host.filter(|h| !h.is_empty()).unwrap_or("0.0.0.0");
            // Without the brackets of `-l [::1]` or the port of `-l 127.0.0.1:11311`.
            let host = listener::split_listen(host).0;
            let r = crate::replication::Replication::bind(&config.replication, host)?;
            store_cfg.node = r.node();
            Some(r)
        } else {
            None
        };
        let store = Store::new(store_cfg, clock.clone());
        let (tx, _) = watch::channel(false);
        let workers = worker::count(config.threads);
        // Validation keeps -D to one ASCII character.
        let delimiter = u8::try_from(config.prefix_delimiter).unwrap_or(b':');
        let detail_on = config.detail_on;
        let port = bound
            .tcp
            .first()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port());
        let watchers = Arc::new(watcher::Watchers::new(config.watcher_buf_bytes));
        let shared = Arc::new(Shared {
            limits: Limits {
                item_size_max: config.store.item_size_max,
                ..Limits::default()
            },
            slab_classes: SlabClasses::new(config.growth_factor, config.chunk_size),
            credentials,
            ascii_credentials,
            verbosity: AtomicU32::new(config.verbose as u32),
            crawler: AtomicBool::new(config.modern_switch("lru_crawler", "no_lru_crawler")),
            dumping: AtomicBool::new(false),
            tuning: settings::Tuning::new(&config),
            // `-o track_sizes`: counting from the start.
            sizes_since: AtomicU64::new(if config.extended_switch("track_sizes", "", false) {
                0
            } else {
                SIZES_OFF
            }),
            config,
            store,
            clock,
            counts: PerWorker::new(workers),
            detail: detail::PrefixStats::new(delimiter, detail_on),
            watchers,
            replication: std::sync::OnceLock::new(),
            curr_conns: AtomicU64::new(0),
            peak_conns: AtomicU64::new(0),
            total_conns: AtomicU64::new(0),
            rejected_conns: AtomicU64::new(0),
            endpoints: AtomicU64::new(0),
            tcp_port: AtomicU32::new(port as u32),
            next_conn_id: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            shutdown: tx,
        });
        watch_evictions(&shared);
        Ok(Server {
            shared,
            bound,
            replication,
            udp,
        })
    }

    /// The UDP addresses bound (`-U`; none when it is 0).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// The TCP addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound
            .tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until shutdown is signalled (SIGTERM/SIGINT in `main`, `shutdown` with `-A`,
    /// or [`Shared::shutdown`]), then lets open connections finish and returns.
    pub async fn run(self) -> Result<(), ServerError> {
        let shared = self.shared;
        if let Some(r) = self.replication {
            let _ = shared.replication.set(r.start(shared.store.clone())?);
        }
        let workers = Arc::new(worker::Workers::start(&shared)?);
        listener::spawn_accept_loops(self.bound, shared.clone(), workers.clone())?;
        let udp = udp::spawn(self.udp, &shared)?;
        spawn_reclaimer(shared.clone());
        let mut stop = shared.shutdown_signal();
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        // Connections see the same signal, finish the batch they hold, and close. The accept
        // loops have stopped too, so this is the last handle on the workers.
        tokio::task::yield_now().await;
        if let Some(workers) = wait_unique(workers).await {
            workers.join(Duration::from_secs(10)).await;
        }
        udp::join(udp).await;
        if let Some(path) = &shared.config.listen.unix_socket {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

/// Waits briefly for the accept loops to drop their handles.
async fn wait_unique<T>(mut a: Arc<T>) -> Option<T> {
    for _ in 0..200 {
        match Arc::try_unwrap(a) {
            Ok(t) => return Some(t),
            Err(back) => a = back,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Hands free heap pages back to the system when the process holds much more than the
/// store uses. Items of many sizes come and go, and the allocator keeps the holes they
/// leave: without this, resident memory was measured at 3x `-m` after item sizes changed.
/// A trim after heavy churn can pause allocations for ~20 ms on a GB heap, so it runs only
/// when the slack is large.
fn release_free_memory(used_bytes: usize) {
    // Fixed slack (the index, buffers, code) scaled down for small budgets, so a 16 MB
    // cache is trimmed too and not left at 3x its size.
    let slack = (used_bytes / 2).clamp(4 << 20, 32 << 20);
    let Some(rss) = resident_bytes() else { return };
    if rss <= used_bytes + used_bytes / 4 + slack {
        return;
    }
    let start = std::time::Instant::now();
    // SAFETY: malloc_trim only inspects and releases the allocator's own free memory.
    unsafe {
        libc::malloc_trim(0);
    }
    tracing::debug!("returned free heap pages in {:?}", start.elapsed());
}

/// This process's resident memory, from /proc/self/statm.
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as usize)
}

/// Drops expired items in the background so they do not hold memory until touched.
fn spawn_reclaimer(shared: Arc<Shared>) {
    let mut stop = shared.shutdown_signal();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = shared.clock.now();
                    let store = shared.store.clone();
                    ticks += 1;
                    let trim = ticks.is_multiple_of(TRIM_EVERY_TICKS);
                    // The walk takes shard locks; keep it off the reactor thread's hot loop.
                    let _ = tokio::task::spawn_blocking(move || {
                        store.reclaim(RECLAIM_BUDGET, now);
                        if trim {
                            release_free_memory(store.used_bytes());
                        }
                    })
                    .await;
                }
                _ = stop.changed() => return,
            }
        }
    });
}

/// Shuts a socket for reading: a pending or later read returns end-of-stream.
fn shut_read(fd: RawFd) {
    // SAFETY: `fd` is a socket its connection keeps open while it is registered, and the
    // registry's lock is held; shutdown(2) only changes the socket's state.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RD);
    }
}

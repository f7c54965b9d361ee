//! This node's side of the cluster: the listener peers connect to, a dialer per configured
//! peer, and the registry of links that keeps one link per peer and what each peer has
//! been sent.
//!
//! Every node dials every peer it is given and accepts every peer that dials it, so nodes
//! pair whatever the start order. Two nodes that dial each other at once end up with two
//! links; both keep the one dialled by the node with the lower id and close the other, so
//! they agree without a word. A dialer whose link ends waits (backoff with jitter, at most
//! a few seconds) and dials again, resolving the host name anew each time.
//!
//! Resuming: a sender knows only what it wrote to its socket, not what the peer applied
//! (what was in flight when a link broke is lost), so the receiver keeps the positions of
//! the sender's feed it has applied (sent in Mark frames) and hands them back first thing
//! on the next link (Resume). The sender keeps its feed reader for the peer while the peer
//! is away (parked), and if the positions belong to that very reader (same process, same
//! `chain`) rewinds it there: a partial resync, where shards whose backlog has moved on are
//! copied again from a snapshot. Anything else (a restarted node on either side, a copy
//! that never completed) gets a full copy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::handshake::{self, Local};
use super::idle::WorkerIdle;
use super::link::{self, LinkError};
use super::relay::Reach;
use super::warmup::{Fetcher, Gone, Heard, Pending, WarmUp};
use super::wire::Frame;
use crate::config::{PeerAddr, ReplicationConfig};
use crate::store::{FeedCursor, FeedReader, NodeId, Store};

/// Where a link to a peer stands (`stats replication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Dialling (a configured address whose node is not linked).
    Connecting,
    /// Connected, proving identities and agreeing where to resume.
    #[default]
    Handshake,
    FullSync,
    PartialSync,
    Streaming,
    Down,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Handshake => "handshake",
            State::FullSync => "full_sync",
            State::PartialSync => "partial_sync",
            State::Streaming => "streaming",
            State::Down => "down",
        }
    }
}

/// What this node knows of one peer, by node id.
#[derive(Default)]
struct Peer {
    /// The peer's process, as of its last handshake: a new one needs a full copy.
    run: u64,
    /// This node's feed reader for the peer, kept while the peer is away (the backlog
    /// bounds what it holds back), to resume from.
    parked: Option<Parked>,
    /// How much of the peer's feed this node has applied, once a copy from it completed.
    applied: Option<Position>,
    link: Option<Link>,
    /// Where the peer listens, as it says.
    listen: Option<String>,
    state: State,
    /// The peer reached `streaming` and has not needed a full copy since (acknowledged
    /// writes wait for such a peer, across a reconnect).
    caught_up: bool,
    since: Option<Instant>,
    full_syncs: u64,
    partial_syncs: u64,
    shard_resyncs: u64,
    received: u64,
    /// Changes forwarded to it that this node did not write, and Gaps filled for it.
    relayed: u64,
    gaps_filled: u64,
    lag: Lag,
    last_error: Option<(String, Instant)>,
    /// The peer's largest item (its `-I`, as it said in [`Frame::Limits`]; None from a peer
    /// of protocol v4 or before): it refuses a larger change.
    item_size_max: Option<u64>,
}

/// A feed reader with the number that names it to the peer (its positions are only
/// meaningful to this reader: the feed is continuous from where it started).
pub struct Parked {
    pub reader: FeedReader,
    pub chain: u64,
}

/// Positions of a peer's feed applied here.
#[derive(Debug, Clone)]
pub struct Position {
    run: u64,
    chain: u64,
    cursor: FeedCursor,
}

/// What the peer has acknowledged of what this node sent (see [`Inner::mark_sent`]).
#[derive(Default)]
struct Lag {
    /// Marks sent and not yet acknowledged.
    marks: std::collections::VecDeque<SentMark>,
    acked_total: u64,
    acked_bytes: u64,
    sent_bytes: u64,
    /// With acknowledged writes only: the feed position the peer has acknowledged on this
    /// link.
    acked: Option<FeedCursor>,
    /// Since when changes have waited unsent: the link's feed reader fell behind the feed
    /// (a slow link, a backlog sent again) or the link went down. Unsent changes are no
    /// Mark's yet, so without this `lag_ms` would read 0 while a peer is minutes behind.
    unsent_since: Option<Instant>,
    /// While the link is down: when the first change after its drop was made (set by the
    /// parked reader's wake-up, which a writer calls once, for the first change it leaves).
    first_unsent: Option<Arc<OnceLock<Instant>>>,
}

impl Lag {
    /// How long the oldest change the peer has not confirmed has waited (as far as this node
    /// can tell): the age of the oldest Mark not acknowledged, or, while changes wait unsent,
    /// the time since they began to. `total`: the feed's total now.
    fn waited(&self, total: u64) -> Duration {
        let sent = self.marks.front().map(|m| m.at.elapsed());
        let first = self.first_unsent.as_ref().and_then(|c| c.get().copied());
        let unsent = self
            .unsent_since
            .or(first)
            .filter(|_| total > self.acked_total)
            .map(|t| t.elapsed());
        sent.max(unsent).unwrap_or_default()
    }

    /// Changes wait unsent from `t`, or from earlier if they already did.
    fn unsent_from(&mut self, t: Instant) {
        self.unsent_since = Some(self.unsent_since.map_or(t, |w| w.min(t)));
    }
}

/// A Mark sent to a peer and not yet acknowledged.
struct SentMark {
    n: u64,
    at: Instant,
    /// Where this node's feed reader stood: its total, and with acknowledged writes the
    /// whole position.
    total: u64,
    cursor: Option<FeedCursor>,
    /// Bytes the link had carried.
    bytes: u64,
}

/// Marks remembered per peer for lag. Acks can be held up for seconds on a live link (the
/// peer is busy sending this node a copy), so more may go out meanwhile: each newer one
/// then replaces the last kept (see [`Inner::mark_sent`]).
const MAX_MARKS: usize = 4096;

/// Kinds of catching up a peer, counted in `stats replication`.
pub enum SyncKind {
    /// Everything, from a snapshot.
    Full,
    /// What the peer missed, from the backlog.
    Partial,
    /// One shard again from a snapshot: the backlog had dropped changes the peer needed.
    Shard,
}

/// How a link starts sending.
pub struct Start {
    pub reader: FeedReader,
    pub chain: u64,
    /// A full copy first; else the reader was rewound to where the peer is.
    pub full: bool,
}

struct Link {
    id: u64,
    /// The node that dialled it: the one dialled by the lower id wins.
    dialer: NodeId,
    cancel: CancellationToken,
    /// Cancelled once the link has ended and parked its reader.
    ended: CancellationToken,
    /// For reads that miss while this node catches up.
    fetcher: Fetcher,
}

/// The answer to [`Inner::register`].
pub enum Registration {
    Linked(Registered),
    /// The peer's other link wins: close this one.
    Lost,
    /// The old link was told to end: wait for this, then register again.
    Wait(CancellationToken),
    /// A link from another run of the peer's node id is up: a restarted node whose old
    /// link has not yet timed out, or a second process given the same id. Wait for the old
    /// link to end (`ended`), then register again; if it hears from its peer meanwhile
    /// (`old`: heartbeats come every third of the timeout), it is a second process: refuse
    /// this link at once, saying why (`why`), before the waiting peer's own timeout.
    Conflict {
        ended: CancellationToken,
        old: Arc<Pending>,
        why: String,
    },
}

/// What a link gets when it is registered as the peer's one link.
pub struct Registered {
    pub id: u64,
    pub cancel: CancellationToken,
    pub ended: CancellationToken,
    /// Frames to send besides the changes (fetches and their answers).
    pub control: tokio::sync::mpsc::Receiver<Frame>,
    pub control_tx: link::ControlTx,
    pub pending: Arc<Pending>,
}

/// Shared by the listener, the dialers and the links.
pub struct Inner {
    pub store: Store,
    pub local: Local,
    pub timeout: Duration,
    /// How long a busy link gathers changes into one batch (`--repl-batch-us`): four
    /// times it while the workers are saturated, a twentieth of it while they have time to
    /// spare ([`super::idle`]).
    pub batch: Duration,
    /// The worker threads' sleep, which paces a busy link.
    pub idle: Arc<WorkerIdle>,
    /// How long a reader is kept for a peer that is away (`--repl-backlog-ttl`).
    backlog_ttl: Duration,
    pub warmup: WarmUp,
    /// This node's replication listener, as told to peers.
    listen: String,
    /// Configured peer addresses: a node that has a complete copy from as many peers
    /// holds what the cluster holds, even if none of them was caught up itself.
    configured: Vec<String>,
    peers: Mutex<HashMap<NodeId, Peer>>,
    /// Peers whose full copy has arrived since this node started.
    copied_from: Mutex<std::collections::HashSet<NodeId>>,
    /// Where each configured address's dialler is (`stats replication`).
    dials: Mutex<HashMap<String, State>>,
    /// Configured addresses whose dialler finished its first try (linked or not).
    tried: Mutex<std::collections::HashSet<String>>,
    /// Which node a configured address turned out to be, once dialled.
    names: Mutex<HashMap<String, NodeId>>,
    next_link: std::sync::atomic::AtomicU64,
    next_chain: std::sync::atomic::AtomicU64,
    /// `--repl-ack-peers`: caught-up peers that must hold a write before it is answered.
    pub ack_peers: usize,
    ack_timeout: Duration,
    /// Woken when a peer acknowledges, or its link changes state: acknowledged writes
    /// look again.
    acks: tokio::sync::Notify,
    /// Whom this node hears straight from, and what each peer was told of it (see
    /// [`super::relay`]).
    reach: Mutex<Reach>,
    /// Raised when [`Inner::reach`] changed: every link tells its peer.
    reach_changed: tokio::sync::watch::Sender<u64>,
}

/// Where acknowledged writes stand against the peers (see [`Replication::wait_acked`]).
enum AckState {
    /// No caught-up peer: nothing to wait for.
    NoPeer,
    /// Enough peers hold the changes.
    Held,
    /// Too few peers take an item that large, and enough hold everything else.
    TooLarge,
    /// Not yet; look again at `recheck` (a dropped peer's grace ends) if nothing wakes
    /// the waiter before.
    Waiting { recheck: Option<Instant> },
}

/// How an acknowledged write's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckWait {
    /// No caught-up peer to wait for: answered at once.
    NoPeer,
    /// Enough peers hold it.
    Held,
    /// Too few of the peers it would wait for can hold an item it wrote (larger than their
    /// `-I`); answered once enough peers hold everything else.
    TooLarge,
    /// The peers it waited for went away (their grace after a dropped link ended).
    Gone,
    /// `--repl-ack-timeout-ms` ran out first.
    TimedOut,
}

/// A running replication component.
#[derive(Clone)]
pub struct Replication {
    inner: Arc<Inner>,
    listen: SocketAddr,
    configured: Vec<PeerAddr>,
}

/// Why replication could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for replication peers on {addr}: {source}; choose another port with -X or --repl-listen, or stop what uses it")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the replication thread: {0}")]
    Thread(std::io::Error),
}

/// A bound replication listener and this node's identity, before the store exists (the
/// store stamps versions with the node id chosen here).
pub struct Bound {
    listener: std::net::TcpListener,
    listen: SocketAddr,
    local: Local,
    cfg: ReplicationConfig,
}

impl Bound {
    pub fn node(&self) -> NodeId {
        self.local.node
    }

    /// Starts the listener and the dialers on a thread of their own, away from the client
    /// workers.
    pub fn start(self, store: Store) -> Result<Replication, StartError> {
        let Bound {
            listener,
            listen,
            local,
            cfg,
        } = self;
        let node = local.node;
        let inner = Arc::new(Inner::new(store, local, listen, &cfg));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Thread)?;
        // Said before the first dial can fail, so the log reads in order.
        tracing::info!(
            "replication: node {} listening for peers on {listen}",
            node.0
        );
        let (i, peers) = (inner.clone(), cfg.peers.clone());
        std::thread::Builder::new()
            .name("repcached-repl".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("replication: cannot use the listener: {e}");
                            return;
                        }
                    };
                    for p in peers {
                        tokio::spawn(dial_loop(i.clone(), p));
                    }
                    tokio::spawn(housekeeping(i.clone()));
                    accept_loop(i, listener).await;
                })
            })
            .map_err(StartError::Thread)?;
        Ok(Replication {
            inner,
            listen,
            configured: cfg.peers,
        })
    }
}

impl Replication {
    /// Where the worker threads register, so busy links can see how much they sleep.
    pub fn worker_idle(&self) -> Arc<WorkerIdle> {
        self.inner.idle.clone()
    }

    /// Binds the replication listener, so a busy port fails the start, not later: at
    /// `--repl-listen`, else at `-X`'s port on `default_host` (the first `-l` address).
    pub fn bind(cfg: &ReplicationConfig, default_host: &str) -> Result<Bound, StartError> {
        let addr = match &cfg.listen {
            Some(a) => a.clone(),
            None => PeerAddr {
                host: default_host.to_string(),
                port: cfg.listen_port,
            }
            .to_string(),
        };
        let listen_err = |source| StartError::Listen {
            addr: addr.clone(),
            source,
        };
        let listener = std::net::TcpListener::bind(&addr).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let listen = listener.local_addr().map_err(listen_err)?;
        let run = handshake::new_run_id();
        let node = NodeId(cfg.node_id.unwrap_or((run % 65535) as u16 + 1));
        Ok(Bound {
            listener,
            listen,
            local: Local {
                cluster: cfg.cluster.clone(),
                node,
                run,
                secret: cfg.secret.clone(),
            },
            cfg: cfg.clone(),
        })
    }

    pub fn node(&self) -> NodeId {
        self.inner.local.node
    }

    /// False until a full copy from a peer has arrived since this node started.
    pub fn caught_up(&self) -> bool {
        self.inner.warmup.caught_up()
    }

    /// Whether a request should ask a peer first (see [`super::warmup`]): while this node
    /// catches up, unless a recent wait came to nothing.
    pub fn warming(&self) -> bool {
        let w = &self.inner.warmup;
        !w.caught_up() && w.may_wait()
    }

    /// Asks a linked peer about `keys`, which this node lacks while it catches up, and
    /// takes what it holds (see [`super::warmup`]); the keys that peer holds nothing of are
    /// asked of the next linked peer, and so on (a peer may be catching up itself, or cut
    /// off from where a key was written). The caller's request then runs again.
    pub async fn warm_up(&self, keys: &[Vec<u8>]) {
        let w = &self.inner.warmup;
        // In parts, each well within what a link has in flight.
        for part in keys.chunks(super::warmup::IN_FLIGHT / 2) {
            // A part that waited in vain makes the rest answer locally, as later
            // requests do (see `WarmUp::may_wait`).
            if !w.may_wait() {
                return;
            }
            let mut left = part.to_vec();
            let mut asked: Vec<NodeId> = Vec::new();
            // A link may be replaced under a fetch (two nodes dialling each other at
            // once): then once more through whichever link is up.
            let mut retried = false;
            while !left.is_empty() {
                let find = || {
                    let peers = self.inner.peers();
                    peers
                        .iter()
                        .filter(|(id, _)| !asked.contains(id))
                        .find_map(|(_, p)| p.link.as_ref().map(|l| l.fetcher.clone()))
                };
                // Just after start, while the peers are being dialled, waits a moment for
                // a first link; and for another while the peers asked so far held nothing
                // and a dial is in its handshake (the peer that holds the keys may just be
                // the slower to link; its dial may fail once and be made again after a
                // backoff: up to `FETCH_WAIT_MAX`, which a loaded machine may need), or has
                // not finished its first try (then only until it has). That second wait
                // coming to nothing is no reason to stop asking the peers that did answer:
                // it sets no backoff.
                let handshake = self.inner.dial_in_handshake();
                let via = if asked.is_empty() {
                    w.link(find, true, super::warmup::FETCH_WAIT, || true).await
                } else if handshake || self.inner.dial_untried() {
                    let wait = if handshake {
                        super::warmup::FETCH_WAIT_MAX
                    } else {
                        super::warmup::FETCH_WAIT
                    };
                    w.link(find, false, wait, || handshake || self.inner.dial_untried())
                        .await
                } else {
                    find()
                };
                let Some(via) = via else {
                    break;
                };
                match w.fetch_many(&self.inner.store, &via, &left).await {
                    Ok(heard) => {
                        asked.push(via.peer);
                        let mut heard = heard.into_iter();
                        left.retain(|_| heard.next() == Some(Heard::Nothing));
                        if !w.may_wait() {
                            return;
                        }
                    }
                    Err(Gone) if !retried => retried = true,
                    Err(Gone) => break,
                }
            }
        }
    }

    /// Whether writes are answered only once peers hold them (`--repl-ack-peers`).
    pub fn acknowledged_writes(&self) -> bool {
        self.inner.ack_peers > 0
    }

    /// Waits until enough peers hold every change made so far (as many as
    /// `--repl-ack-peers` asks, or every caught-up peer if fewer are), at most
    /// `--repl-ack-timeout-ms`. The caller's replies go out after. `largest`: the largest
    /// item the caller wrote (as [`crate::store::item_total_size`] counts it); a peer whose
    /// `-I` is smaller refuses it, so its ack counts only for the caller's other writes.
    pub async fn wait_acked(&self, largest: usize) -> AckWait {
        let inner = &self.inner;
        let head = inner.store.feed_head();
        let deadline = tokio::time::Instant::now() + inner.ack_timeout;
        let mut first = true;
        loop {
            // Listening before looking, so an ack between the two is not missed.
            let woken = inner.acks.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let until = match inner.ack_state(&head, largest as u64) {
                AckState::NoPeer if first => return AckWait::NoPeer,
                AckState::NoPeer => return AckWait::Gone,
                AckState::Held => return AckWait::Held,
                AckState::TooLarge => return AckWait::TooLarge,
                AckState::Waiting { recheck } => {
                    recheck.map_or(deadline, |t| deadline.min(t.into()))
                }
            };
            first = false;
            if tokio::time::timeout_at(until, woken).await.is_err() && until == deadline {
                return AckWait::TimedOut;
            }
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn configured(&self) -> &[PeerAddr] {
        &self.configured
    }

    /// Peers with a link up now.
    pub fn connected(&self) -> usize {
        let peers = self.inner.peers();
        peers.values().filter(|p| p.link.is_some()).count()
    }

    /// One line of facts per known peer, for `stats replication`.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let peers = self.inner.peers();
        let total = self.inner.store.feed_total();
        let mut out: Vec<PeerStats> = peers
            .iter()
            .map(|(id, p)| PeerStats {
                node: *id,
                listen: p.listen.clone(),
                state: p.state,
                lag_writes: match (&p.link, &p.parked) {
                    (None, None) => None,
                    _ => Some(total.saturating_sub(p.lag.acked_total)),
                },
                lag_bytes: p.lag.sent_bytes.saturating_sub(p.lag.acked_bytes),
                lag_ms: p.lag.waited(total).as_millis() as u64,
                full_syncs: p.full_syncs,
                partial_syncs: p.partial_syncs,
                shard_resyncs: p.shard_resyncs,
                received: p.received,
                relayed: p.relayed,
                gaps_filled: p.gaps_filled,
                last_error: p
                    .last_error
                    .as_ref()
                    .map(|(e, at)| (e.clone(), at.elapsed().as_secs())),
            })
            .collect();
        out.sort_by_key(|p| p.node);
        out
    }

    /// Each configured address and where its dialler is (connecting, handshake, or the
    /// state of the node it reached).
    pub fn dial_stats(&self) -> Vec<(String, State, Option<NodeId>)> {
        let dials = locked(&self.inner.dials).clone();
        let names = locked(&self.inner.names).clone();
        let peers = self.inner.peers();
        self.configured
            .iter()
            .map(|a| {
                let name = a.to_string();
                let node = names.get(&name).copied();
                // Linked (by either node's dial): the link's state.
                let linked = node.and_then(|n| peers.get(&n).filter(|p| p.link.is_some()));
                let state = match linked {
                    Some(p) => p.state,
                    None => dials.get(&name).copied().unwrap_or(State::Connecting),
                };
                (name, state, node)
            })
            .collect()
    }

    /// `stats`' replication role: every node takes writes; `catching_up` until it holds a
    /// full copy of the cluster's data.
    pub fn role(&self) -> &'static str {
        if self.caught_up() {
            "master"
        } else {
            "catching_up"
        }
    }
}

/// What `stats replication` shows of a peer.
#[derive(Debug, Clone)]
pub struct PeerStats {
    pub node: NodeId,
    /// Where it listens for peers.
    pub listen: Option<String>,
    pub state: State,
    /// Changes this node took that the peer has not confirmed (None: nothing kept for it).
    pub lag_writes: Option<u64>,
    /// Bytes sent to it not yet confirmed.
    pub lag_bytes: u64,
    /// How long the oldest change not confirmed has waited (see `Lag::waited`).
    pub lag_ms: u64,
    pub full_syncs: u64,
    pub partial_syncs: u64,
    pub shard_resyncs: u64,
    pub received: u64,
    /// Changes forwarded to it that another node wrote, and Gaps filled for it (see
    /// [`super::relay`]).
    pub relayed: u64,
    pub gaps_filled: u64,
    /// The last error and how many seconds ago.
    pub last_error: Option<(String, u64)>,
}

/// Connections accepted on the replication port at once, handshakes included: well
/// beyond the peers a node reads for (32) and their redials, and few enough that a flood of
/// connections that never speak holds little (each holds a read buffer for up to
/// `--repl-timeout`; 8,000 of them took a node to its file limit and a gigabyte).
const ACCEPTED_MAX: usize = 128;

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ACCEPTED_MAX));
    let mut turned_away = false;
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(stream);
                    if !std::mem::replace(&mut turned_away, true) {
                        tracing::warn!(
                            "replication: {ACCEPTED_MAX} connections to the replication port at once: more are closed (a flood? give peers --repl-secret-file and firewall the port)"
                        );
                    }
                    continue;
                };
                if slots.available_permits() > ACCEPTED_MAX / 2 {
                    turned_away = false;
                }
                let i = inner.clone();
                tokio::spawn(async move {
                    if let Err(e) = link::run(i.clone(), stream, None).await {
                        // By address only: a peer dials from a new port each time.
                        i.note_link_end(&from.ip().to_string(), &e);
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!("replication: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Locks `m`, also after a panic elsewhere left it poisoned (the maps stay usable).
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every second: whether this node has caught up (until it has), and which peers have
/// been away too long to keep their backlog.
async fn housekeeping(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !inner.warmup.caught_up() {
            inner.check_caught_up();
        }
        inner.drop_stale_backlogs();
    }
}

/// Backoff between dials: doubling from 50 ms, at most 2 s, with jitter.
fn backoff(attempt: u32, seed: u64) -> Duration {
    let base = 50u64 << attempt.min(5);
    let capped = base.min(2000);
    let jitter = seed % (capped / 2 + 1);
    Duration::from_millis(capped / 2 + jitter)
}

async fn dial_loop(inner: Arc<Inner>, peer: PeerAddr) {
    let name = peer.to_string();
    let mut attempt = 0u32;
    loop {
        let started = Instant::now();
        inner.dial_state(&name, State::Connecting);
        // Bounded: in a real partition a connect may go unanswered for minutes.
        let connect = TcpStream::connect((peer.host.as_str(), peer.port));
        let connected = match tokio::time::timeout(inner.timeout, connect).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {:?}", inner.timeout),
            )),
        };
        match connected {
            Ok(stream) => {
                inner.dial_state(&name, State::Handshake);
                if let Err(e) = link::run(inner.clone(), stream, Some(&name)).await {
                    inner.note_link_end(&name, &e);
                }
            }
            Err(e) => inner.note_link_end(&name, &LinkError::Io(e)),
        }
        // Dialling again after the pause.
        inner.dial_state(&name, State::Connecting);
        locked(&inner.tried).insert(name.clone());
        // A link that lasted resets the backoff; one refused or failing at once grows it.
        if started.elapsed() > Duration::from_secs(5) {
            attempt = 0;
        } else {
            attempt += 1;
        }
        let seed = inner.local.run ^ u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        tokio::time::sleep(backoff(attempt, seed ^ started.elapsed().as_nanos() as u64)).await;
        // While the peer is linked through its own dial, there is nothing to dial.
        while inner.linked_via(&peer) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Inner {
    fn new(store: Store, local: Local, listen: SocketAddr, cfg: &ReplicationConfig) -> Inner {
        Inner {
            store,
            local,
            timeout: cfg.timeout,
            batch: cfg.batch,
            idle: Arc::default(),
            backlog_ttl: cfg.backlog_ttl,
            warmup: WarmUp::default(),
            listen: listen.to_string(),
            configured: cfg.peers.iter().map(|p| p.to_string()).collect(),
            peers: Mutex::new(HashMap::new()),
            copied_from: Mutex::new(Default::default()),
            dials: Mutex::new(HashMap::new()),
            tried: Mutex::default(),
            names: Mutex::new(HashMap::new()),
            next_link: std::sync::atomic::AtomicU64::new(1),
            next_chain: std::sync::atomic::AtomicU64::new(1),
            ack_peers: cfg.ack_peers,
            ack_timeout: cfg.ack_timeout,
            acks: tokio::sync::Notify::new(),
            reach: Mutex::default(),
            reach_changed: tokio::sync::watch::channel(0).0,
        }
    }

    fn reach(&self) -> std::sync::MutexGuard<'_, Reach> {
        locked(&self.reach)
    }

    fn reach_moved(&self) {
        self.reach_changed.send_modify(|n| *n += 1);
    }

    /// For a link's sender: raised when its peer is to be told again.
    pub fn watch_reach(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reach_changed.subscribe()
    }

    /// `peer` has sent every change it wrote stamped below `stamp` ([`Frame::Covered`]).
    pub fn covered(&self, peer: NodeId, stamp: u64) {
        if self.reach().covered(peer, stamp) {
            tracing::debug!("replication: node {} heard straight from it", peer.0);
            self.reach_moved();
        }
    }

    /// What to tell `peer` of whom this node hears ([`super::relay::Reach::tell`]).
    pub fn tell(&self, peer: NodeId) -> Vec<Frame> {
        self.reach().tell(peer)
    }

    /// `peer` refused a change: it is not heard until its next link (its changes reach this
    /// node through the others meanwhile).
    pub fn unheard(&self, peer: NodeId) {
        if self.reach().unheard(peer) {
            self.reach_moved();
        }
    }

    /// `peer` answered the oldest Gap asked of it; false if none was asked.
    pub fn filled(&self, peer: NodeId) -> bool {
        self.reach().filled(peer)
    }

    /// Counts changes this node forwarded to `peer` that it did not write, and Gaps it
    /// filled for it.
    pub fn count_relayed(&self, peer: NodeId, changes: usize, gaps: usize) {
        if let Some(p) = self.peers().get_mut(&peer) {
            p.relayed += changes as u64;
            p.gaps_filled += gaps as u64;
        }
    }

    /// Wakes the acknowledged writes waiting, if there can be any.
    fn acks_changed(&self) {
        if self.ack_peers > 0 {
            self.acks.notify_waiters();
        }
    }

    /// Whether enough peers hold everything before `head`: as many as `--repl-ack-peers`
    /// asks, or every caught-up peer if fewer are. A peer receiving a full copy does not
    /// count: a write would wait out the copy. A peer that refuses an item of `largest`
    /// bytes (the largest the waiting connection wrote) cannot hold all of it: if too few
    /// others can, the wait ends once enough peers hold everything else (its other
    /// writes, which the refusing peers hold too) and every peer that takes the item
    /// holds it.
    fn ack_state(&self, head: &FeedCursor, largest: u64) -> AckState {
        let peers = self.peers();
        // Peers holding everything up to `head` (a refusing one too: an ack of a Mark says
        // it holds every change before it but the ones it refused), those of them that
        // take an item of `largest` bytes, and those that do not.
        let (mut up, mut holding, mut capable, mut refusing) = (0, 0, 0, 0);
        let mut recheck = None::<Instant>;
        for p in peers.values() {
            // A caught-up peer counts while linked, and for the timeout after its link
            // dropped: a replaced or redialled link comes back with a partial resync.
            let grace_ends = p.since.map(|t| t + self.ack_timeout);
            let linked = p.link.is_some() || grace_ends.is_some_and(|t| Instant::now() < t);
            if !(p.caught_up && linked) {
                continue;
            }
            if let Some(t) = grace_ends.filter(|_| p.link.is_none()) {
                // Nothing wakes a waiter when the grace ends: it looks again then.
                recheck = Some(recheck.map_or(t, |r| r.min(t)));
            }
            up += 1;
            let refuses = p.item_size_max.is_some_and(|max| largest > max);
            refusing += usize::from(refuses);
            if p.lag.acked.as_ref().is_some_and(|a| a.covers(head)) {
                holding += 1;
                capable += usize::from(!refuses);
            }
        }
        let need = self.ack_peers.min(up);
        if up == 0 {
            AckState::NoPeer
        } else if capable >= need {
            AckState::Held
        } else if up - refusing < need && holding >= need && capable >= up - refusing {
            // The other writes are held as asked; the large item cannot be, beyond the
            // peers that take it, which hold it.
            AckState::TooLarge
        } else {
            AckState::Waiting { recheck }
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Peer>> {
        locked(&self.peers)
    }

    /// Makes a link the peer's one link, unless the peer's other link wins; an older link
    /// from the same pair is ended first (its reader must be parked before a new link can
    /// resume from it).
    pub fn register(&self, peer: NodeId, run: u64, dialer: NodeId) -> Registration {
        let mut peers = self.peers();
        let p = peers.entry(peer).or_default();
        if let Some(old) = &p.link {
            if p.run != run {
                // Two live processes with one id would replace each other's link forever,
                // so the old link is not cut for the new one; a restarted node's old link
                // goes silent and ends within the timeout, and the new one is let in then.
                // (A second process waiting here takes the link if the first's drops.)
                let why = format!(
                    "node id {} is already linked to node {} from another process{} that is still linked; give every node its own --node-id",
                    peer.0,
                    self.local.node.0,
                    p.listen
                        .as_ref()
                        .map(|a| format!(" listening at {a}"))
                        .unwrap_or_default()
                );
                return Registration::Conflict {
                    ended: old.ended.clone(),
                    old: old.fetcher.pending.clone(),
                    why,
                };
            }
            let winner = self.local.node.min(peer);
            if old.dialer != dialer && old.dialer == winner {
                return Registration::Lost;
            }
            // The new one wins (or replaces a link from the same side that is gone).
            old.cancel.cancel();
            return Registration::Wait(old.ended.clone());
        }
        let id = self
            .next_link
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if p.run != run {
            // A restarted peer: what it had applied of this node is gone with it.
            p.run = run;
            p.caught_up = false;
            p.parked = None;
            p.applied = None;
            self.reach().restarted(peer);
        }
        // Marks are numbered per link, and so are the bytes it carries. The peer says its
        // -I again on this link (before any ack), unless it is of protocol v4 or before.
        p.item_size_max = None;
        p.lag.marks.clear();
        p.lag.acked = None;
        // Changes made while the link was down wait from then (the new link's sender
        // sets the reader's wake-up anew).
        if let Some(t) = p.lag.first_unsent.take().and_then(|c| c.get().copied()) {
            p.lag.unsent_from(t);
        }
        (p.lag.sent_bytes, p.lag.acked_bytes) = (0, 0);
        let (cancel, ended) = (CancellationToken::new(), CancellationToken::new());
        let (control_tx, control) = tokio::sync::mpsc::channel(link::CONTROL_QUEUE);
        let pending = Arc::new(Pending::default());
        p.link = Some(Link {
            id,
            dialer,
            cancel: cancel.clone(),
            ended: ended.clone(),
            fetcher: Fetcher {
                peer,
                control: control_tx.clone(),
                pending: pending.clone(),
            },
        });
        p.state = State::Handshake;
        Registration::Linked(Registered {
            id,
            cancel,
            ended,
            control,
            control_tx,
            pending,
        })
    }

    /// What this node asks of `peer` first on a new link: the positions of its feed
    /// applied here (or a full copy).
    pub fn resume_frame(&self, peer: NodeId) -> Frame {
        let peers = self.peers();
        let p = peers.get(&peer);
        let listen = self.listen.clone();
        match p.and_then(|p| p.applied.as_ref().filter(|a| a.run == p.run)) {
            Some(a) => Frame::Resume {
                run: a.run,
                chain: a.chain,
                events: a.cursor.events(),
                shards: a.cursor.shards().to_vec(),
                listen,
            },
            None => Frame::Resume {
                run: p.map_or(0, |p| p.run),
                chain: 0,
                events: 0,
                shards: Vec::new(),
                listen,
            },
        }
    }

    /// How to start sending to `peer`, which says it applied this node's feed up to `at`
    /// of reader `chain` in process `run`: the parked reader rewound there if it can be,
    /// else a new reader and a full copy. None: no reader slot is free.
    pub fn start_sending(
        &self,
        peer: NodeId,
        run: u64,
        chain: u64,
        at: FeedCursor,
    ) -> Option<Start> {
        let parked = self.peers().get_mut(&peer).and_then(|p| p.parked.take());
        if let Some(mut parked) = parked {
            if run == self.local.run && chain == parked.chain && parked.reader.rewind(&at) {
                tracing::info!(
                    "replication: node {} resumes from the backlog (partial resync)",
                    peer.0
                );
                self.count(peer, SyncKind::Partial);
                return Some(Start {
                    reader: parked.reader,
                    chain,
                    full: false,
                });
            }
        }
        // The old reader (if any) is dropped above, freeing its slot.
        let reader = match self.store.subscribe() {
            Some(r) => r,
            None => {
                // Every slot taken: give up the reader of the peer away longest.
                self.drop_oldest_parked();
                self.store.subscribe()?
            }
        };
        reader.set_peer(peer);
        tracing::info!("replication: node {} gets a full copy", peer.0);
        Some(Start {
            reader,
            chain: self
                .next_chain
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            full: true,
        })
    }

    /// Drops the readers kept for peers away longer than `--repl-backlog-ttl`: a node that
    /// is gone for good must not cost every write the recording of its change (nor the
    /// backlog's memory, once no reader is left) forever. Such a peer gets a full copy
    /// when it returns.
    fn drop_stale_backlogs(&self) {
        let dropped: Vec<(NodeId, Parked)> = {
            let mut peers = self.peers();
            peers
                .iter_mut()
                .filter(|(_, p)| {
                    p.link.is_none() && p.since.is_some_and(|t| t.elapsed() > self.backlog_ttl)
                })
                .filter_map(|(id, p)| p.parked.take().map(|r| (*id, r)))
                .collect()
        };
        // Dropped outside the lock: a last reader's drop clears every shard's ring.
        for (id, _) in dropped {
            tracing::info!(
                "replication: node {} away for over {:?}: its backlog is dropped (a full copy when it returns)",
                id.0,
                self.backlog_ttl
            );
        }
    }

    fn drop_oldest_parked(&self) {
        let dropped = {
            let mut peers = self.peers();
            let oldest = peers
                .iter()
                .filter(|(_, p)| p.parked.is_some())
                .min_by_key(|(_, p)| p.since)
                .map(|(id, _)| *id);
            oldest.and_then(|id| peers.get_mut(&id).and_then(|p| p.parked.take()))
        };
        // Dropped outside the lock: a last reader's drop clears every shard's ring.
        drop(dropped);
    }

    /// Ends link `id`'s registration, keeping its reader for the peer's return.
    pub fn unregister(&self, peer: NodeId, id: u64, reader: Option<Parked>) {
        let mut peers = self.peers();
        let Some(p) = peers.get_mut(&peer) else {
            return;
        };
        if p.link.as_ref().is_none_or(|l| l.id != id) {
            return;
        }
        if let Some(l) = p.link.take() {
            l.ended.cancel();
        }
        if reader.is_some() {
            // Else the link ended before it took the parked one: that stays.
            p.parked = reader;
        }
        p.state = State::Down;
        p.since = Some(Instant::now());
        // The marks not acknowledged stay (`lag_ms` goes on counting) until the next link,
        // and so do changes left unsent; those made from now on wait from when the first
        // is made.
        if let Some(parked) = &p.parked {
            if parked.reader.cursor().total() < self.store.feed_total() {
                p.lag.unsent_from(Instant::now());
            }
            let first = Arc::new(OnceLock::new());
            let set = first.clone();
            parked.reader.set_waker(Arc::new(move || {
                let _ = set.set(Instant::now());
            }));
            p.lag.first_unsent = Some(first);
        }
        tracing::info!("replication: link with node {} down", peer.0);
        drop(peers);
        self.acks_changed();
        if self.reach().lost(peer) {
            self.reach_moved();
        }
    }

    /// A full copy from `peer` is starting: the positions of its feed held here are void
    /// until the copy completes.
    pub fn copy_starts(&self, peer: NodeId) {
        if let Some(p) = self.peers().get_mut(&peer) {
            p.applied = None;
        }
    }

    /// A full copy from `peer` arrived. This node is caught up if the peer was.
    pub fn copy_done(&self, peer: NodeId, complete: bool) {
        self.copied().insert(peer);
        if complete {
            self.warmup.set_caught_up();
        } else {
            self.check_caught_up();
        }
    }

    /// Without a copy from a caught-up peer (the whole cluster restarted), this node holds
    /// what the cluster holds once it has copies from as many peers as it was given, or,
    /// after the first few seconds, from every peer linked now (the others may never come
    /// back; until then every miss would wait on a peer).
    pub fn check_caught_up(&self) {
        let copied = self.copied().clone();
        let linked: Vec<NodeId> = {
            let peers = self.peers();
            peers
                .iter()
                .filter(|(_, p)| p.link.is_some())
                .map(|(id, _)| *id)
                .collect()
        };
        let all_configured = copied.len() >= self.configured.len().max(1);
        let all_linked = !linked.is_empty()
            && linked.iter().all(|id| copied.contains(id))
            && self.warmup.age() > super::warmup::FIRST_LINK_WAIT;
        if all_configured || all_linked {
            self.warmup.set_caught_up();
        }
    }

    fn copied(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<NodeId>> {
        locked(&self.copied_from)
    }

    /// Takes the peer's Mark: these positions of its feed (of reader `chain`) are applied
    /// here. The first Mark of a chain lists every shard.
    pub fn applied(
        &self,
        peer: NodeId,
        chain: u64,
        events: u64,
        shards: &[(u32, u64)],
    ) -> Result<(), &'static str> {
        let mut peers = self.peers();
        let Some(p) = peers.get_mut(&peer) else {
            return Ok(());
        };
        let at = match &mut p.applied {
            Some(a) if a.chain == chain => &mut a.cursor,
            _ => {
                if shards
                    .iter()
                    .enumerate()
                    .any(|(i, (s, _))| *s as usize != i)
                {
                    return Err("a resume point that does not list every shard");
                }
                let cursor = FeedCursor::new(shards.iter().map(|(_, seq)| *seq).collect(), events);
                p.applied = Some(Position {
                    run: p.run,
                    chain,
                    cursor,
                });
                return Ok(());
            }
        };
        for &(shard, seq) in shards {
            if shard as usize >= at.shards().len() {
                return Err("a mark for a shard the peer does not have");
            }
            at.set_shard(shard as usize, seq);
        }
        at.set_events(events);
        Ok(())
    }

    /// Notes Mark `n` sent to `peer`, when this node's reader stood at `at` and the link
    /// had carried `bytes`. The position itself is kept only for acknowledged writes.
    pub fn mark_sent(&self, peer: NodeId, n: u64, at: &FeedCursor, bytes: u64) {
        if let Some(p) = self.peers().get_mut(&peer) {
            p.lag.sent_bytes = bytes;
            if p.lag.marks.len() >= MAX_MARKS {
                // Full: this mark stands in for the newest kept, so an ack of it still
                // brings the totals up to date (the oldest keeps its time for `lag_ms`).
                p.lag.marks.pop_back();
            }
            p.lag.marks.push_back(SentMark {
                n,
                at: Instant::now(),
                total: at.total(),
                cursor: (self.ack_peers > 0).then(|| at.clone()),
                bytes,
            });
        }
    }

    /// The link's sender found its feed reader behind the feed after a read that began at
    /// `since` (Some: changes waiting since an earlier moment, the link's drop say, still
    /// date from it), or caught up (None).
    pub fn set_unsent(&self, peer: NodeId, since: Option<Instant>) {
        if let Some(p) = self.peers().get_mut(&peer) {
            match since {
                Some(t) => p.lag.unsent_from(t),
                None => p.lag.unsent_since = None,
            }
        }
    }

    /// The peer's largest item, as it said ([`Frame::Limits`]).
    pub fn peer_limits(&self, peer: NodeId, item_size_max: u64) {
        if let Some(p) = self.peers().get_mut(&peer) {
            p.item_size_max = Some(item_size_max);
        }
        self.acks_changed();
    }

    /// The peer has applied everything up to Mark `n`.
    pub fn acked(&self, peer: NodeId, n: u64) {
        if let Some(p) = self.peers().get_mut(&peer) {
            while let Some(m) = p.lag.marks.pop_front_if(|m| m.n <= n) {
                p.lag.acked_total = m.total;
                p.lag.acked_bytes = m.bytes;
                if m.cursor.is_some() {
                    p.lag.acked = m.cursor;
                }
            }
        }
        self.acks_changed();
    }

    /// Whether a configured peer's dial has connected and is still in its handshake: a
    /// link about to come up. (A dial stays in `Handshake` for the life of the link it
    /// makes, so an address whose node is linked does not count.)
    fn dial_in_handshake(&self) -> bool {
        let connecting: Vec<String> = locked(&self.dials)
            .iter()
            .filter(|(_, s)| **s == State::Handshake)
            .map(|(name, _)| name.clone())
            .collect();
        connecting.iter().any(|name| !self.linked_name(name))
    }

    /// Whether a configured peer's dialler has not finished its first try: just after
    /// start, on a busy machine, it may not even have connected yet.
    fn dial_untried(&self) -> bool {
        let untried: Vec<String> = {
            let tried = locked(&self.tried);
            let untried = self.configured.iter().filter(|n| !tried.contains(*n));
            untried.cloned().collect()
        };
        untried.iter().any(|name| !self.linked_name(name))
    }

    /// Notes where the dialler of configured address `name` is.
    fn dial_state(&self, name: &str, state: State) {
        let mut dials = locked(&self.dials);
        dials.insert(name.to_string(), state);
    }

    /// Notes which node the configured address `name` reached.
    pub fn learn(&self, name: &str, node: NodeId) {
        let mut names = locked(&self.names);
        names.insert(name.to_string(), node);
    }

    /// Notes where `peer` listens, as it says (with the address its connection came from
    /// where it listens on every address). Another node known there, now away, was this
    /// one before a restart under a new id: it is forgotten, and what was kept for it freed.
    pub fn peer_listens(&self, peer: NodeId, listen: &str, from: Option<SocketAddr>) {
        let named = match (listen.parse::<SocketAddr>(), from) {
            (Ok(l), Some(f)) if l.ip().is_unspecified() => {
                SocketAddr::new(f.ip(), l.port()).to_string()
            }
            _ => listen.to_string(),
        };
        let forgotten: Vec<(NodeId, Peer)> = {
            let mut peers = self.peers();
            if let Some(p) = peers.get_mut(&peer) {
                p.listen = Some(named.clone());
            }
            let gone: Vec<NodeId> = peers
                .iter()
                .filter(|(id, p)| {
                    **id != peer && p.link.is_none() && p.listen.as_deref() == Some(&named)
                })
                .map(|(id, _)| *id)
                .collect();
            gone.into_iter()
                .filter_map(|id| peers.remove(&id).map(|p| (id, p)))
                .collect()
        };
        if self.configured.contains(&named) {
            // The peer dialled first: its configured address is known without a dial.
            self.learn(&named, peer);
        }
        {
            let mut copied = self.copied();
            let mut reach = self.reach();
            for (id, _) in &forgotten {
                copied.remove(id);
                reach.forget(*id);
            }
        }
        // Dropped outside the lock: a last reader's drop clears every shard's ring.
        for (id, _) in forgotten {
            tracing::info!(
                "replication: node {} at {named} was node {} before it restarted: that one is forgotten",
                peer.0,
                id.0
            );
        }
    }

    /// True while the node that `addr` reached last time is linked (through its own dial,
    /// which won): the dialer waits instead of dialling again.
    fn linked_via(&self, addr: &PeerAddr) -> bool {
        self.linked_name(&addr.to_string())
    }

    /// Whether the node configured address `name` reached is linked now.
    fn linked_name(&self, name: &str) -> bool {
        let node = {
            let names = locked(&self.names);
            names.get(name).copied()
        };
        node.is_some_and(|n| self.peers().get(&n).is_some_and(|p| p.link.is_some()))
    }

    pub fn set_state(&self, peer: NodeId, state: State) {
        let mut peers = self.peers();
        if let Some(p) = peers.get_mut(&peer) {
            if p.state != state {
                tracing::info!("replication: node {} {}", peer.0, state.name());
                p.state = state;
            }
            match state {
                State::Streaming => p.caught_up = true,
                State::FullSync => p.caught_up = false,
                _ => {}
            }
        }
        drop(peers);
        self.acks_changed();
    }

    /// Adds one to a peer's count of syncs of `kind`.
    pub fn count(&self, peer: NodeId, kind: SyncKind) {
        if let Some(p) = self.peers().get_mut(&peer) {
            *match kind {
                SyncKind::Full => &mut p.full_syncs,
                SyncKind::Partial => &mut p.partial_syncs,
                SyncKind::Shard => &mut p.shard_resyncs,
            } += 1;
        }
    }

    pub fn count_received(&self, peer: NodeId, n: usize) {
        if let Some(p) = self.peers().get_mut(&peer) {
            p.received += n as u64;
        }
    }

    pub fn note_error(&self, peer: NodeId, what: &str) {
        if let Some(p) = self.peers().get_mut(&peer) {
            if p.last_error.as_ref().is_none_or(|(e, _)| e != what) {
                tracing::warn!("replication: node {}: {what}", peer.0);
            }
            p.last_error = Some((what.to_string(), Instant::now()));
        }
    }

    /// Logs why a link with `name` ended, once per reason: again only when the reason
    /// changes, and then at most once a second per address (connections that each give
    /// another reason, a made-up cluster name say, must not fill the log). Text a peer
    /// sent is cut short.
    fn note_link_end(&self, name: &str, e: &LinkError) {
        static LAST: Mutex<Option<HashMap<String, (String, Instant)>>> = Mutex::new(None);
        // Either side may notice a refusal first: the same reason, whichever did.
        let text = match e {
            LinkError::Refused(why) | LinkError::RefusedBy(why) => why.clone(),
            other => other.to_string(),
        };
        let now = Instant::now();
        let mut last = locked(&LAST);
        let map = last.get_or_insert_with(HashMap::new);
        if let Some((logged, at)) = map.get(name) {
            if *logged == text || now.duration_since(*at) < Duration::from_secs(1) {
                return;
            }
        }
        if map.len() >= 4096 {
            // Addresses without end (connections from everywhere): start again.
            map.clear();
        }
        map.insert(name.to_string(), (text, now));
        let mut shown = e.to_string();
        if let Some((cut, _)) = shown.char_indices().nth(300) {
            shown.truncate(cut);
            shown.push_str("...");
        }
        match e {
            LinkError::Refused(_) | LinkError::RefusedBy(_) => {
                tracing::error!("replication: peer {name}: {shown}")
            }
            _ => tracing::info!("replication: peer {name}: {shown}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Clock, StoreConfig};

    fn inner() -> Inner {
        let store = Store::new(StoreConfig::default(), Arc::new(Clock::new()));
        let local = Local {
            cluster: "test".into(),
            node: NodeId(1),
            run: 7,
            secret: None,
        };
        let cfg = ReplicationConfig {
            peers: vec![PeerAddr {
                host: "127.0.0.1".into(),
                port: 2,
            }],
            ..Default::default()
        };
        Inner::new(store, local, SocketAddr::from(([127, 0, 0, 1], 1)), &cfg)
    }

    #[test]
    fn lag_is_right_after_more_marks_than_are_remembered_go_unacknowledged() {
        let i = inner();
        let peer = NodeId(2);
        assert!(matches!(i.register(peer, 9, peer), Registration::Linked(_)));
        // The peer acknowledges nothing for a while (busy sending this node a large copy),
        // then everything at once; then the link goes quiet.
        let last = MAX_MARKS as u64 + 100;
        for n in 1..=last {
            i.mark_sent(peer, n, &FeedCursor::new(vec![1000 + n], 0), 10 * n);
        }
        i.acked(peer, last);
        let peers = i.peers();
        let lag = &peers[&peer].lag;
        assert_eq!(
            lag.acked_total,
            1000 + last,
            "everything sent was acknowledged"
        );
        assert_eq!(lag.sent_bytes - lag.acked_bytes, 0, "no bytes outstanding");
        assert!(lag.marks.is_empty());
    }
}

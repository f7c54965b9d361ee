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
//! Every new link starts with a full copy. A sender knows only what it wrote to its socket,
//! not what the peer applied: when a link breaks, what was in flight (in socket buffers, on
//! the wire) is lost, yet the feed reader has moved past it, so resuming from that reader
//! (a partial resync) would leave the peer without those changes for good. The parked
//! reader path below stays for when peers acknowledge what they applied; until then no
//! reader is kept once its link ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::handshake::{self, Local};
use super::link::{self, LinkError};
use super::warmup::{Fetcher, Pending, WarmUp};
use crate::config::{PeerAddr, ReplicationConfig};
use crate::store::{FeedReader, NodeId, Store};

/// Where a link to a peer stands (`stats replication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    FullSync,
    Streaming,
    Down,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::FullSync => "full_sync",
            State::Streaming => "streaming",
            State::Down => "down",
        }
    }
}

/// What this node knows of one peer, by node id.
struct Peer {
    /// The peer's process, as of its last handshake: a new one needs a full copy.
    run: u64,
    /// Changes for it, kept while it is away (bounded by the backlog). Never parked for
    /// now: see the module's notes.
    reader: Option<FeedReader>,
    link: Option<Link>,
    state: State,
    full_syncs: u64,
    received: u64,
    last_error: Option<(String, Instant)>,
}

struct Link {
    id: u64,
    /// The node that dialled it: the one dialled by the lower id wins.
    dialer: NodeId,
    cancel: CancellationToken,
    /// For reads that miss while this node catches up.
    fetcher: Fetcher,
}

/// What a link gets when it is registered as the peer's one link.
pub struct Registered {
    pub id: u64,
    pub cancel: CancellationToken,
    /// Frames to send besides the changes (fetches and their answers).
    pub control: tokio::sync::mpsc::UnboundedReceiver<super::wire::Frame>,
    pub control_tx: tokio::sync::mpsc::UnboundedSender<super::wire::Frame>,
    pub pending: Arc<Pending>,
    /// None: no reader slot left.
    pub reader: Option<FeedReader>,
    /// Send a full copy first.
    pub full: bool,
}

/// Shared by the listener, the dialers and the links.
pub struct Inner {
    pub store: Store,
    pub local: Local,
    pub timeout: Duration,
    pub warmup: WarmUp,
    peers: Mutex<HashMap<NodeId, Peer>>,
    /// Which node a configured address turned out to be, once dialled.
    names: Mutex<HashMap<String, NodeId>>,
    next_link: std::sync::atomic::AtomicU64,
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
        let inner = Arc::new(Inner {
            store,
            local,
            timeout: cfg.timeout,
            warmup: WarmUp::default(),
            peers: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            next_link: std::sync::atomic::AtomicU64::new(1),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Thread)?;
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
                    accept_loop(i, listener).await;
                })
            })
            .map_err(StartError::Thread)?;
        tracing::info!(
            "replication: node {} listening for peers on {listen}",
            node.0
        );
        Ok(Replication {
            inner,
            listen,
            configured: cfg.peers,
        })
    }
}

impl Replication {
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

    /// For a read that missed `key`: while this node catches up, asks a linked peer and
    /// takes what it holds (see [`super::warmup`]); true if the key is here now.
    pub fn warm_up(&self, key: &[u8]) -> bool {
        let w = &self.inner.warmup;
        if w.caught_up() {
            return false;
        }
        let find = || {
            let peers = self.inner.peers();
            peers
                .values()
                .find_map(|p| p.link.as_ref().map(|l| l.fetcher.clone()))
        };
        // A link may be replaced under a fetch (two nodes dialling each other at once):
        // then once more through whichever link is up.
        for _ in 0..2 {
            let Some(via) = w.link(find) else {
                return false;
            };
            if let Ok(found) = w.fetch(&self.inner.store, &via, key) {
                return found;
            }
        }
        false
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
        let mut out: Vec<PeerStats> = peers
            .iter()
            .map(|(id, p)| PeerStats {
                node: *id,
                state: p.state,
                full_syncs: p.full_syncs,
                received: p.received,
                last_error: p
                    .last_error
                    .as_ref()
                    .map(|(e, at)| (e.clone(), at.elapsed().as_secs())),
            })
            .collect();
        out.sort_by_key(|p| p.node);
        out
    }
}

/// What `stats replication` shows of a peer.
#[derive(Debug, Clone)]
pub struct PeerStats {
    pub node: NodeId,
    pub state: State,
    pub full_syncs: u64,
    pub received: u64,
    /// The last error and how many seconds ago.
    pub last_error: Option<(String, u64)>,
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let i = inner.clone();
                tokio::spawn(async move {
                    if let Err(e) = link::run(i.clone(), stream, None).await {
                        // By address only: a peer dials from a new port each time.
                        i.note_link_end(&from.ip().to_string(), &e);
                    }
                });
            }
            Err(e) => {
                tracing::warn!("replication: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
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
            Ok(stream) => match link::run(inner.clone(), stream, Some(&name)).await {
                Ok(()) => {}
                Err(e) => inner.note_link_end(&name, &e),
            },
            Err(e) => inner.note_link_end(&name, &LinkError::Io(e)),
        }
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
    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a link the peer's one link, or says None if the peer's other link wins.
    pub fn register(&self, peer: NodeId, run: u64, dialer: NodeId) -> Option<Registered> {
        let mut peers = self.peers();
        let p = peers.entry(peer).or_insert_with(|| Peer {
            run: 0,
            reader: None,
            link: None,
            state: State::Connecting,
            full_syncs: 0,
            received: 0,
            last_error: None,
        });
        if let Some(old) = &p.link {
            let winner = self.local.node.min(peer);
            if old.dialer != dialer && old.dialer == winner {
                return None;
            }
            // The new one wins (or replaces a link from the same side that is gone).
            old.cancel.cancel();
        }
        let id = self
            .next_link
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let same_run = p.run == run && p.reader.is_some();
        let reader = if same_run {
            p.reader.take()
        } else {
            p.reader = None;
            self.store.subscribe()
        };
        p.run = run;
        let (control_tx, control) = tokio::sync::mpsc::unbounded_channel();
        let pending = Arc::new(Pending::default());
        p.link = Some(Link {
            id,
            dialer,
            cancel: cancel.clone(),
            fetcher: Fetcher {
                peer,
                control: control_tx.clone(),
                pending: pending.clone(),
            },
        });
        tracing::info!(
            "replication: linked with node {} ({})",
            peer.0,
            if same_run {
                "partial resync"
            } else {
                "full resync"
            }
        );
        Some(Registered {
            id,
            cancel,
            control,
            control_tx,
            pending,
            reader,
            full: !same_run,
        })
    }

    /// Ends link `id`'s registration. Its reader is dropped, not kept for the peer's return:
    /// it has moved past whatever the broken link lost in flight (see the module's notes).
    pub fn unregister(&self, peer: NodeId, id: u64, reader: Option<FeedReader>) {
        drop(reader);
        let mut peers = self.peers();
        if let Some(p) = peers.get_mut(&peer) {
            if p.link.as_ref().is_some_and(|l| l.id == id) {
                p.link = None;
                p.state = State::Down;
                tracing::info!("replication: link with node {} down", peer.0);
            }
        }
    }

    /// Notes which node the configured address `name` reached.
    pub fn learn(&self, name: &str, node: NodeId) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.insert(name.to_string(), node);
    }

    /// True while the node that `addr` reached last time is linked (through its own dial,
    /// which won): the dialer waits instead of dialling again.
    fn linked_via(&self, addr: &PeerAddr) -> bool {
        let node = {
            let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            names.get(&addr.to_string()).copied()
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
        }
    }

    pub fn count_full_sync(&self, peer: NodeId) {
        if let Some(p) = self.peers().get_mut(&peer) {
            p.full_syncs += 1;
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

    /// Logs why a link to `name` ended, once per distinct reason, not once per retry.
    fn note_link_end(&self, name: &str, e: &LinkError) {
        use std::collections::hash_map::Entry;
        static LAST: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);
        // Either side may notice a refusal first: the same reason, whichever did.
        let text = match e {
            LinkError::Refused(why) | LinkError::RefusedBy(why) => why.clone(),
            other => other.to_string(),
        };
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        let map = last.get_or_insert_with(HashMap::new);
        let repeated = match map.entry(name.to_string()) {
            Entry::Occupied(mut o) => {
                let same = *o.get() == text;
                o.insert(text.clone());
                same
            }
            Entry::Vacant(v) => {
                v.insert(text.clone());
                false
            }
        };
        if !repeated {
            match e {
                LinkError::Refused(_) | LinkError::RefusedBy(_) => {
                    tracing::error!("replication: peer {name}: {e}")
                }
                _ => tracing::info!("replication: peer {name}: {e}"),
            }
        }
    }
}

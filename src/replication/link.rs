//! One connection between two nodes: the handshake, then each side streams its changes to
//! the other and applies what it receives.
//!
//! After the handshake each side says how much of the other's feed it has applied
//! (Resume), and each sends accordingly (see [`super::node`]): either the rest of the
//! backlog from there (a partial resync), or a full copy: this node's flushes summed up as
//! one, then a snapshot from the store's scan, while the feed reader created before it
//! collects every change made meanwhile. Then the feed, batch after batch, as the socket
//! takes them (so a slow peer holds back only its own reader, whose ring is bounded), each
//! batch followed by a Mark of the positions it reached, which the peer keeps (to resume
//! from) and acknowledges (for lag). Changes that came from this peer are not sent back. A
//! quiet link carries heartbeats, and a link that hears nothing for the timeout is dropped.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::expiry::local_exptime;
use super::handshake::{self, Local};
use super::idle::IdleShare;
use super::node::{Inner, Parked, Registered, Registration, State, SyncKind};
use super::pause::Pause;
use super::relay::{self, in_gaps, relays};
use super::warmup::Pending;
use super::wire::{self, Frame, PROTOCOL_VERSION};
use crate::store::merge::stamp_limit;
use crate::store::{
    Applied, Cursor, FeedCursor, FeedReader, Kind, NodeId, Record, RemoteChange, Store, StoreError,
    Version,
};

/// How the sender learns of new changes: woken by writers when idle, polling when busy.
struct Wake {
    notify: Arc<Notify>,
    /// Set while the sender polls: writers then skip the wake-up.
    polling: Arc<AtomicBool>,
}

/// A batch this large means the sender is behind: it reads again at once.
const POLL_BATCH: usize = 256;

/// Socket send and receive buffers of a link.
const SOCKET_BUFFER: usize = 256 << 10;

/// Bytes not yet sent that a link's socket takes more of (TCP_NOTSENT_LOWAT): without it a
/// send buffer's worth of a copy, stalled behind a slow link, stands ahead of every answer.
#[cfg(any(target_os = "linux", target_os = "android"))]
const UNSENT_LOWAT: u32 = 64 << 10;

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame from peer: {0}")]
    Wire(#[from] wire::WireError),
    #[error("peer closed the connection")]
    Closed,
    #[error("no word from peer for {0:?}: link dropped")]
    Silent(Duration),
    /// This node refuses the peer; the reason is sent to it too.
    #[error("{0}")]
    Refused(String),
    /// The peer refused this node.
    #[error("peer refused this node: {0}")]
    RefusedBy(String),
    #[error("peer broke the protocol: {0}")]
    Protocol(&'static str),
    #[error("too many peers reading this node's changes")]
    Full,
    #[error("the previous link with this peer did not end in time")]
    Stuck,
}

/// Reads frames off a socket half.
struct Frames {
    rd: OwnedReadHalf,
    buf: BytesMut,
    timeout: Duration,
    /// The longest frame accepted now (small until the peer has proved itself).
    max: usize,
    /// The link's fetches in flight, told of every read's bytes (once registered).
    pending: Option<Arc<Pending>>,
}

/// Room made in a link's read buffer before each read: about a batch, so a batch takes a
/// read or two.
const READ_CHUNK: usize = 256 << 10;

/// The longest frame before the handshake is complete: a Hello or a Refuse at most.
const HANDSHAKE_FRAME: usize = 4 << 10;

impl Frames {
    async fn next(&mut self) -> Result<Frame, LinkError> {
        loop {
            if let Some(f) = wire::decode_limited(&mut self.buf, self.max)? {
                return Ok(f);
            }
            self.buf.reserve(READ_CHUNK);
            let read = tokio::time::timeout(self.timeout, self.rd.read_buf(&mut self.buf));
            match read.await {
                Err(_) => return Err(LinkError::Silent(self.timeout)),
                Ok(Ok(0)) => return Err(LinkError::Closed),
                Ok(Ok(_)) => {
                    if let Some(p) = &self.pending {
                        p.heard();
                    }
                }
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }
}

/// How often a link waiting on another run's link looks whether that one lives.
const CONFLICT_LOOK: Duration = Duration::from_millis(50);
/// What a waiting link reads ahead of its turn, to see its peer close.
const CONFLICT_READ_AHEAD: usize = 64 << 10;

/// Waits for the link of another run of this link's peer id to end (true), or returns false
/// once that link hears from its peer (a second live process) or the timeout passes. The
/// new connection is read meanwhile, up to a little, so a peer that gave up and closed it
/// is not registered (what it sent is kept for the frames after).
async fn old_link_ends(
    inner: &Inner,
    frames: &mut Frames,
    ended: &tokio_util::sync::CancellationToken,
    old: &Pending,
) -> Result<bool, LinkError> {
    let heard = old.heard_at();
    let deadline = tokio::time::Instant::now() + inner.timeout;
    loop {
        let reading = frames.buf.len() < CONFLICT_READ_AHEAD;
        tokio::select! {
            _ = ended.cancelled() => return Ok(true),
            _ = tokio::time::sleep(CONFLICT_LOOK) => {}
            r = frames.rd.read_buf(&mut frames.buf), if reading => {
                if r? == 0 {
                    return Err(LinkError::Closed);
                }
            }
        }
        if old.heard_at() > heard || tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

async fn send(wr: &mut OwnedWriteHalf, frame: &Frame) -> Result<(), LinkError> {
    let mut out = BytesMut::new();
    wire::encode(frame, &mut out);
    wr.write_all(&out).await?;
    Ok(())
}

/// Runs one connection to its end. `dialed`: the configured address this node dialled, or
/// None for a connection a peer opened.
pub async fn run(
    inner: Arc<Inner>,
    stream: TcpStream,
    dialed: Option<&str>,
) -> Result<(), LinkError> {
    let _ = stream.set_nodelay(true);
    // Small socket buffers: a fetch's answer queues behind what is in flight (a snapshot),
    // so that must stay short; a few hundred KB still fill a fast link.
    let sock = socket2::SockRef::from(&stream);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    // And of what is not yet on the wire, only a little waits in the kernel: the rest of a
    // copy waits here, where an answer can go ahead of it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = sock.set_tcp_notsent_lowat(UNSENT_LOWAT);
    let addr = stream.peer_addr().ok();
    let (rd, mut wr) = stream.into_split();
    let mut frames = Frames {
        rd,
        buf: BytesMut::with_capacity(64 << 10),
        timeout: inner.timeout,
        max: HANDSHAKE_FRAME,
        pending: None,
    };
    // The whole handshake within the timeout: a peer trickling bytes holds nothing long.
    let shake = handshake_with(&inner, &mut frames, &mut wr, dialed.is_some());
    let (peer, peer_run, peer_version) = match tokio::time::timeout(inner.timeout, shake).await {
        Ok(r) => r?,
        Err(_) => return Err(LinkError::Silent(inner.timeout)),
    };
    frames.max = wire::MAX_FRAME;
    let local: &Local = &inner.local;
    let dialer = match dialed {
        Some(name) => {
            inner.learn(name, peer);
            local.node
        }
        None => peer,
    };
    let Registered {
        id,
        cancel,
        ended: _,
        mut control,
        control_tx,
        pending,
    } = loop {
        match inner.register(peer, peer_run, dialer) {
            Registration::Linked(r) => break r,
            // The other connection between the two nodes is the one kept.
            Registration::Lost => return Ok(()),
            Registration::Conflict { ended, old, why } => {
                if !old_link_ends(&inner, &mut frames, &ended, &old).await? {
                    return Err(refuse(&mut frames, &mut wr, why).await);
                }
            }
            Registration::Wait(ended) => {
                let end = tokio::time::timeout(inner.timeout, ended.cancelled());
                if end.await.is_err() {
                    return Err(LinkError::Stuck);
                }
            }
        }
    };
    frames.pending = Some(pending.clone());
    // The reader lives here, not in the futures below, so it is parked however they end.
    let mut sending = None;
    let result = tokio::select! {
        r = serve(&inner, &mut frames, &mut wr, (peer, addr, peer_version), &mut control, &control_tx, &pending, &mut sending) => r,
        _ = cancel.cancelled() => Ok(()),
    };
    inner.unregister(peer, id, sending);
    pending.fail_all();
    result
}

/// Acknowledgements this node owes the peer: the latest Mark applied, sent with the next
/// frames out.
#[derive(Default)]
struct Acks {
    latest: AtomicU64,
    /// When the oldest ack not yet sent came in.
    since: std::sync::Mutex<Option<Instant>>,
    notify: Notify,
    /// Acks leave at once, alone if need be: the peer waits for them before it answers
    /// writes (it said so with [`Frame::AckPrompt`]), or this node does for the peer's
    /// (`--repl-ack-peers`; a peer of an older version, configured alike, does too).
    prompt: AtomicBool,
}

impl Acks {
    /// Mark `n` of the peer's has been applied.
    fn owe(&self, n: u64) {
        self.latest.store(n, Ordering::Relaxed);
        self.since().get_or_insert_with(Instant::now);
        self.notify.notify_one();
    }

    /// The ack to send now: with other frames at once, alone only once it has waited
    /// [`ACK_DELAY`].
    fn take(&self, with_other_frames: bool) -> Option<u64> {
        let mut since = self.since();
        let due = since.is_some_and(|t| {
            with_other_frames || self.prompt.load(Ordering::Relaxed) || t.elapsed() >= ACK_DELAY
        });
        if !due {
            return None;
        }
        *since = None;
        Some(self.latest.load(Ordering::Relaxed))
    }

    /// When an ack waiting alone is due.
    fn due(&self) -> Option<Instant> {
        let delay = if self.prompt.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            ACK_DELAY
        };
        self.since().map(|t| t + delay)
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long an ack may wait for other frames to ride with: a link carrying changes one way
/// would otherwise cost the receiver a write (and the sender a read) per batch.
const ACK_DELAY: Duration = Duration::from_millis(5);
/// How long a Mark may wait when the reader moved only past changes the peer made itself
/// (nothing sent): they matter only to where a later link resumes.
const MARK_DELAY: Duration = Duration::from_millis(100);

/// Agrees with the peer where each side resumes, then sends and receives until the link
/// ends.
#[allow(clippy::too_many_arguments)]
async fn serve(
    inner: &Inner,
    frames: &mut Frames,
    wr: &mut OwnedWriteHalf,
    (peer, addr, peer_version): (NodeId, Option<std::net::SocketAddr>, u16),
    control: &mut Control,
    control_tx: &ControlTx,
    pending: &Pending,
    sending: &mut Option<Parked>,
) -> Result<(), LinkError> {
    send(wr, &inner.resume_frame(peer)).await?;
    if inner.ack_peers > 0 && peer_version >= 4 {
        // Acks are prompt on the peer's side too, whatever its own flags.
        send(wr, &Frame::AckPrompt).await?;
    }
    if peer_version >= 5 {
        let item_size_max = inner.store.config().item_size_max as u64;
        send(wr, &Frame::Limits { item_size_max }).await?;
    }
    let (run, chain, at) = match frames.next().await? {
        Frame::Resume {
            run,
            chain,
            events,
            shards,
            listen,
        } => {
            inner.peer_listens(peer, &listen, addr);
            (run, chain, FeedCursor::new(shards, events))
        }
        Frame::Refuse { reason } => return Err(LinkError::RefusedBy(reason)),
        _ => return Err(LinkError::Protocol("expected a resume")),
    };
    let mut prompted = inner.ack_peers > 0;
    let form = PeerForm {
        // A v2 peer refuses live records that carry item bits.
        item_bits: peer_version >= 3,
        reach: peer_version >= 7,
        item_max: if peer_version >= 5 {
            Some(limits(inner, frames, peer, &mut prompted).await?)
        } else {
            None
        },
    };
    if peer_version >= 6 {
        // Such a peer sends nothing longer (see wire::PROTOCOL_VERSION).
        frames.max = wire::frame_limit(inner.store.config().item_size_max);
    }
    let start = inner
        .start_sending(peer, run, chain, at)
        .ok_or(LinkError::Full)?;
    let full = start.full;
    if full {
        // The whole store is new to the peer: it is behind from now until caught up.
        inner.set_unsent(peer, Some(Instant::now()));
    }
    inner.set_state(
        peer,
        if full {
            State::FullSync
        } else {
            State::PartialSync
        },
    );
    let parked = sending.insert(Parked {
        reader: start.reader,
        chain: start.chain,
    });
    let notify = Arc::new(Notify::new());
    let polling = Arc::new(AtomicBool::new(false));
    let (n, p) = (notify.clone(), polling.clone());
    parked.reader.set_waker(Arc::new(move || {
        // While the sender polls, a writer need not wake it (a syscall on the client's path).
        fence(Ordering::SeqCst);
        if !p.load(Ordering::SeqCst) {
            n.notify_one();
        }
    }));
    let wake = Wake { notify, polling };
    let acks = Acks {
        prompt: AtomicBool::new(prompted),
        ..Acks::default()
    };
    let mut marks = Marks {
        chain: parked.chain,
        n: 0,
        sent: None,
        bytes: 0,
    };
    let answers = Answers::default();
    let heard = Heard::default();
    tokio::select! {
        r = send_changes(inner, wr, &mut parked.reader, &mut marks, (control, &answers), &wake, &acks, (peer, &heard), full, form) => r,
        r = receive(inner, frames, peer, (control_tx, &answers), pending, &acks, (form, &heard, &wake.notify)) => r,
    }
}

/// The peer's Limits, which a v5 or later peer sends right after its Resume (an AckPrompt
/// may come between): nothing goes to it before this node knows which items it takes.
async fn limits(
    inner: &Inner,
    frames: &mut Frames,
    peer: NodeId,
    prompted: &mut bool,
) -> Result<usize, LinkError> {
    loop {
        match frames.next().await? {
            Frame::AckPrompt => *prompted = true,
            Frame::Limits { item_size_max } => {
                inner.peer_limits(peer, item_size_max);
                return Ok(usize::try_from(item_size_max).unwrap_or(usize::MAX));
            }
            Frame::Refuse { reason } => return Err(LinkError::RefusedBy(reason)),
            _ => return Err(LinkError::Protocol("expected limits")),
        }
    }
}

/// What the peer said of whom it hears, for this link's sender (see [`super::relay`]).
#[derive(Default)]
struct Heard {
    /// The nodes whose own changes reach the peer straight from them.
    hears: std::sync::Mutex<Vec<NodeId>>,
    /// Gaps the peer asked to be filled and not yet served: (writer, first stamp) for each
    /// writer, and how many Gaps they answer (one Filled each).
    gaps: std::sync::Mutex<(Vec<(NodeId, u64)>, usize)>,
}

impl Heard {
    fn hears(&self) -> std::sync::MutexGuard<'_, Vec<NodeId>> {
        self.hears.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gaps(&self) -> std::sync::MutexGuard<'_, (Vec<(NodeId, u64)>, usize)> {
        self.gaps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writers a peer may ask Gaps of on one link before they are served (Gaps of one writer
/// waiting together are served by one walk, from the lowest stamp asked).
const MAX_GAPS: usize = relay::MAX_HEARS;

/// How often a link says how far it has covered this node's own changes, at most (each
/// reads every shard's clock).
const COVER_EVERY: Duration = Duration::from_millis(50);

/// What the peer reads and holds: records go in its version's form, and none that it
/// would refuse as larger than its `-I` (it could not hold it, and would have to take
/// the bytes in to learn that).
#[derive(Clone, Copy)]
struct PeerForm {
    item_bits: bool,
    /// The peer speaks v7: Covered, Hears, Gap and Filled ([`super::relay`]).
    reach: bool,
    /// The peer's `-I`; None from a peer before v5, which does not say.
    item_max: Option<usize>,
}

impl PeerForm {
    fn takes(&self, rec: &Record) -> bool {
        self.item_max.is_none_or(|max| rec.item_size() <= max)
    }

    /// Drops from `records` what the peer would not take, and says so once per change of
    /// error.
    fn keep_taken(&self, inner: &Inner, peer: NodeId, records: &mut Vec<Record>) {
        let before = records.len();
        records.retain(|r| self.takes(r));
        if records.len() < before {
            inner.note_error(
                peer,
                "an item larger than the peer's item size limit was not sent to it: give every node the same -I",
            );
        }
    }
}

/// Hellos both ways, then proofs: the node that dialled proves first, and the node that
/// accepted proves only once it has checked that proof, so a node never hands its proof
/// to a connection that has not proved itself (which a third party could relay).
/// Returns the peer's node id, run and protocol version.
async fn handshake_with(
    inner: &Inner,
    frames: &mut Frames,
    wr: &mut OwnedWriteHalf,
    dialed: bool,
) -> Result<(NodeId, u64, u16), LinkError> {
    let local: &Local = &inner.local;
    let nonce = handshake::new_nonce();
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        cluster: local.cluster.clone(),
        node: local.node,
        run: local.run,
        nonce,
    };
    send(wr, &hello).await?;
    let (peer, peer_run, peer_version, peer_nonce) = match frames.next().await? {
        Frame::Hello {
            version,
            cluster,
            node,
            run,
            nonce,
        } => {
            if let Err(why) = handshake::check_hello(local, version, &cluster, node) {
                return Err(refuse(frames, wr, why).await);
            }
            (node, run, version, nonce)
        }
        Frame::Refuse { reason } => return Err(LinkError::RefusedBy(reason)),
        _ => return Err(LinkError::Protocol("expected a hello")),
    };
    let mac = handshake::proof(local, &peer_nonce, &nonce);
    if dialed {
        send(wr, &Frame::Proof { mac }).await?;
    }
    match frames.next().await? {
        Frame::Proof { mac } => {
            if let Err(why) = handshake::verify(local, peer, &peer_nonce, &nonce, &mac) {
                return Err(refuse(frames, wr, why).await);
            }
        }
        Frame::Refuse { reason } => return Err(LinkError::RefusedBy(reason)),
        _ => return Err(LinkError::Protocol("expected a proof")),
    }
    if !dialed {
        send(wr, &Frame::Proof { mac }).await?;
    }
    Ok((peer, peer_run, peer_version))
}

/// Tells the peer why it is refused, closes, and gives the error to log.
/// Then reads what the peer still sends until it closes, for [`REFUSE_LINGER`] at most:
/// closing with bytes unread resets the connection, and a reset can discard the Refuse
/// before the peer reads it (a twin or a wrong secret then went unexplained for a few
/// dials).
async fn refuse(frames: &mut Frames, wr: &mut OwnedWriteHalf, why: String) -> LinkError {
    let _ = send(
        wr,
        &Frame::Refuse {
            reason: why.clone(),
        },
    )
    .await;
    let _ = wr.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while let Ok(1..) = frames.rd.read(&mut sink).await {} };
    let _ = tokio::time::timeout(REFUSE_LINGER, drain).await;
    LinkError::Refused(why)
}

/// How long a refusing node waits for the peer to read its Refuse and close.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// The positions this node has told the peer, for the next Mark.
struct Marks {
    chain: u64,
    n: u64,
    /// As of the last Mark; None before the first (which lists every shard).
    sent: Option<FeedCursor>,
    /// Bytes of frames written on the link so far.
    bytes: u64,
}

impl Marks {
    /// Appends a Mark of what moved since the last one to `out`; false if nothing did.
    fn append(&mut self, at: &FeedCursor, out: &mut BytesMut) -> bool {
        let shards: Vec<(u32, u64)> = at
            .shards()
            .iter()
            .enumerate()
            .filter(|(i, seq)| self.sent.as_ref().is_none_or(|s| s.shard(*i) != **seq))
            .map(|(i, seq)| (i as u32, *seq))
            .collect();
        let events_moved = self.sent.as_ref().is_none_or(|s| s.events() != at.events());
        if shards.is_empty() && !events_moved {
            return false;
        }
        self.n += 1;
        let mark = Frame::Mark {
            chain: self.chain,
            n: self.n,
            events: at.events(),
            shards,
        };
        wire::encode(&mark, out);
        self.sent = Some(at.clone());
        true
    }
}

/// Streams this node's changes: a snapshot first if `full`, then the feed.
#[allow(clippy::too_many_arguments)]
async fn send_changes(
    inner: &Inner,
    wr: &mut OwnedWriteHalf,
    reader: &mut FeedReader,
    marks: &mut Marks,
    (control, answers): (&mut Control, &Answers),
    wake: &Wake,
    acks: &Acks,
    (peer, heard): (NodeId, &Heard),
    full: bool,
    form: PeerForm,
) -> Result<(), LinkError> {
    let store = &inner.store;
    let heartbeat = inner.timeout / 3;
    let mut reach = inner.watch_reach();
    // The peer is told whom this node hears once the loop starts, and again on each change.
    let mut tell = true;
    let mut last_cover: Option<Instant> = None;
    let mut out = BytesMut::new();
    if full {
        let complete = inner.warmup.caught_up();
        send(wr, &Frame::SnapshotStart { complete }).await?;
        // The snapshot leaves out what was flushed; the peer may still hold it.
        send_flushed(inner, wr, &mut out).await?;
        let queued = (&mut *control, answers);
        snapshot(inner, wr, &mut out, (None, &[]), queued, acks, (peer, form)).await?;
        send(wr, &Frame::SnapshotEnd).await?;
        inner.count(peer, SyncKind::Full);
    }
    // Still catching up until the reader reaches what the feed held by now.
    let mut behind = Some(store.feed_total());
    // The peer must hear from this node every `heartbeat`, whatever else happens: changes
    // flowing only the other way (a copy this node receives) must not read as silence.
    let mut last_write = Instant::now();
    let mut last_mark = Instant::now();
    let mut pause = Pause::default();
    let mut idle = IdleShare::default();
    // Whether the reader was last found behind the feed, as told to `lag_ms` (None: not
    // yet told on this link).
    let mut told_behind = None;
    loop {
        if send_queued(wr, control, answers).await? {
            last_write = Instant::now();
        }
        if std::mem::take(&mut tell) || reach.has_changed().unwrap_or(false) {
            reach.borrow_and_update();
            if form.reach {
                for f in inner.tell(peer) {
                    send(wr, &f).await?;
                }
                last_write = Instant::now();
            }
        }
        let gaps = std::mem::take(&mut *heard.gaps());
        if gaps.1 > 0 {
            fill(
                inner,
                wr,
                &mut out,
                gaps,
                (&mut *control, answers),
                acks,
                (peer, form),
            )
            .await?;
            last_write = Instant::now();
        }
        // Read before the feed: every change of this node's stamped below it is in what
        // the reader has read once it is level with the feed.
        let floor = (form.reach && last_cover.is_none_or(|t| t.elapsed() >= COVER_EVERY))
            .then(|| store.stamp_floor());
        let read_at = Instant::now();
        let batch = reader.read(wire::BATCH_BYTES);
        for lost in &batch.lost {
            // The ring dropped changes this peer never got: copy that part again.
            tracing::info!(
                "replication: changes {}..{} for peer node {} were dropped from the backlog; resyncing",
                lost.from,
                lost.resume,
                peer.0
            );
            match lost.shard {
                Some(i) => {
                    let queued = (&mut *control, answers);
                    snapshot(
                        inner,
                        wr,
                        &mut out,
                        (Some(i), &[]),
                        queued,
                        acks,
                        (peer, form),
                    )
                    .await?
                }
                // Lost flushes: what they did, summed up as one.
                None => send_flushed(inner, wr, &mut out).await?,
            }
            inner.count(peer, SyncKind::Shard);
        }
        let got = !batch.records.is_empty() || !batch.lost.is_empty();
        let me = inner.local.node;
        let mut mine: Vec<_> = {
            let hears = heard.hears();
            batch
                .records
                .into_iter()
                // A peer that says it hears this node gets its writes all the same.
                .filter(|r| {
                    relays(
                        r.origin().filter(|&o| o != me),
                        r.version().node,
                        peer,
                        &hears,
                    )
                })
                .collect()
        };
        form.keep_taken(inner, peer, &mut mine);
        // Another node's writes that came through a peer (not moved here by eviction).
        let forwarded = mine
            .iter()
            .filter(|r| r.origin().is_some() && r.version().node != me)
            .count();
        if forwarded > 0 {
            inner.count_relayed(peer, forwarded, 0);
        }
        out.clear();
        wire::encode_batches(store.clock().now(), &mine, &mut out, form.item_bits);
        if let Some(stamp) = floor {
            if reader.cursor().total() >= store.feed_total() {
                wire::encode(&Frame::Covered { stamp }, &mut out);
                last_cover = Some(Instant::now());
            }
        }
        // Writes waiting for acks wait on marks too: then every move is marked at once.
        let mark_now = !mine.is_empty()
            || marks.sent.is_none()
            || last_mark.elapsed() >= MARK_DELAY
            || inner.ack_peers > 0;
        let marked = mark_now && marks.append(reader.cursor(), &mut out);
        if marked {
            last_mark = Instant::now();
        }
        if let Some(n) = acks.take(!out.is_empty()) {
            wire::encode(&Frame::Ack { n }, &mut out);
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            marks.bytes += out.len() as u64;
            last_write = Instant::now();
            if marked {
                inner.mark_sent(peer, marks.n, reader.cursor(), marks.bytes);
            }
        }
        let read = reader.cursor().total();
        let lags = read < store.feed_total();
        if told_behind != Some(lags) {
            told_behind = Some(lags);
            inner.set_unsent(peer, lags.then_some(read_at));
        }
        if behind.is_some_and(|t| read >= t) {
            behind = None;
            inner.set_state(peer, State::Streaming);
        }
        if last_write.elapsed() >= heartbeat {
            send(wr, &Frame::Heartbeat).await?;
            last_write = Instant::now();
        }
        if got {
            // Busy: the next changes are fetched by polling after a short pause, so they
            // travel in batches and writers skip the wake-up (a system call on the client's
            // path). A read stops at a batch's size, so there may be more waiting at once.
            // With acknowledged writes each waits on this link: no pause, a writer wakes it.
            if !mine.is_empty() && mine.len() < POLL_BATCH && inner.ack_peers == 0 {
                wake.polling.store(true, Ordering::SeqCst);
                // A change waits at most this long (plus the trip) to leave; shorter costs
                // more CPU per write (a round of system calls on both nodes per batch), so
                // only while the workers have time to spare. Never longer than a heartbeat
                // period: the peer must hear something within `--repl-timeout` (a saturated
                // node pauses four batch times, up to 0.4 s with `--repl-batch-us 100000`);
                // nor than a batch while the peer waits on this side's acks for its own
                // acknowledged writes (its `--repl-ack-peers`: this pause holds them).
                let mut wait = idle.pause(&inner.idle, inner.batch).min(heartbeat);
                if acks.prompt.load(Ordering::Relaxed) {
                    wait = wait.min(inner.batch);
                }
                pause.sleep(wait).await;
            }
            continue;
        }
        pause.stop();
        if wake.polling.swap(false, Ordering::SeqCst) {
            // Back to wake-ups: one more look for a write that skipped its wake-up.
            fence(Ordering::SeqCst);
            continue;
        }
        // Idle: until a change, a control frame, or something due (a heartbeat, an ack
        // alone, a Mark of changes not sent).
        let mut due = last_write + heartbeat;
        if let Some(t) = acks.due() {
            due = due.min(t);
        }
        if marks.sent.as_ref() != Some(reader.cursor()) {
            due = due.min(last_mark + MARK_DELAY);
        }
        tokio::select! {
            _ = wake.notify.notified() => {}
            _ = acks.notify.notified() => {}
            Ok(()) = reach.changed() => tell = true,
            f = control.recv() => {
                if let Some(f) = f {
                    send(wr, &f).await?;
                    answers.sent(&f);
                    last_write = Instant::now();
                }
            }
            _ = tokio::time::sleep_until(due.into()) => {}
        }
    }
}

/// Sends the flushes this node took: those due summed up as one (everything stamped below
/// [`crate::store::Store::flushed_below`] is gone), and each delayed one still to come.
async fn send_flushed(
    inner: &Inner,
    wr: &mut OwnedWriteHalf,
    out: &mut BytesMut,
) -> Result<(), LinkError> {
    let store = &inner.store;
    let now = store.clock().now();
    let below = store.flushed_below(now);
    let node = inner.local.node;
    let mut flushes = Vec::new();
    if below != 0 {
        let v = Version { stamp: below, node };
        flushes.push(Record::flush(v, below, 0, None));
    }
    // Delayed ones still to come: the snapshot carries the items they will remove.
    for (at, before) in store.pending_flushes(now) {
        let v = Version {
            stamp: before,
            node,
        };
        flushes.push(Record::flush(v, before, at, None));
    }
    if flushes.is_empty() {
        return Ok(());
    }
    out.clear();
    wire::encode_batches(now, &flushes, out, false);
    wr.write_all(out).await?;
    Ok(())
}

/// Sends every key's state held now: of all shards, or of shard `only`. Each shard's part
/// ends with the deletes whose markers it let go (see [`crate::store::deleted`]): a peer
/// that missed them, as one away longer than the backlog did, drops the keys too. They
/// travel as ordinary delete records, which every protocol version reads. The acks this
/// node owes ride with the batches: a copy can take a while, and the peer may be waiting
/// on them to answer its clients' writes (`--repl-ack-peers`).
#[allow(clippy::too_many_arguments)]
async fn snapshot(
    inner: &Inner,
    wr: &mut OwnedWriteHalf,
    out: &mut BytesMut,
    (only, gaps): (Option<usize>, &[(NodeId, u64)]),
    (control, answers): (&mut Control, &Answers),
    acks: &Acks,
    (peer, form): (NodeId, PeerForm),
) -> Result<(), LinkError> {
    let store = &inner.store;
    // Items eviction moves while the walk runs reach the peer through the feed.
    let _walking = store.begin_walk();
    let mut quiet = Instant::now();
    let (mut cursor, shard) = match only {
        Some(i) => (Some(Cursor::of_shard(i)), Some(i)),
        None => (Some(Cursor::default()), None),
    };
    while let Some(c) = cursor {
        if shard.is_some_and(|i| c.shard() != i) {
            break;
        }
        // A peer catching up waits on these answers: they go between batches.
        send_queued(wr, control, answers).await?;
        let now = store.clock().now();
        let (mut records, next) = store.scan_where(c, wire::BATCH_BYTES, now, |v| {
            gaps.is_empty() || in_gaps(gaps, v)
        });
        cursor = next;
        form.keep_taken(inner, peer, &mut records);
        if records.is_empty() {
            // A walk for a Gap may find little: the node's other links run meanwhile, and
            // this one's peer keeps hearing from it.
            tokio::task::yield_now().await;
            if quiet.elapsed() >= inner.timeout / 3 {
                send(wr, &Frame::Heartbeat).await?;
                quiet = Instant::now();
            }
            continue;
        }
        quiet = Instant::now();
        out.clear();
        // A shard's part ends with its deletes, all at once: they may need several frames.
        wire::encode_batches(now, &records, out, form.item_bits);
        if let Some(n) = acks.take(true) {
            wire::encode(&Frame::Ack { n }, out);
        }
        wr.write_all(out).await?;
    }
    Ok(())
}

/// Fills the peer's Gaps (see [`super::relay`]): this node's flushes, then what its store
/// holds of the changes asked for (those it may not have forwarded while the peer heard
/// their writer), then a Filled for each. From a walk of the store, not the backlog: the
/// backlog may have dropped them, and the store holds each key's newest state, which is
/// all a peer needs.
async fn fill(
    inner: &Inner,
    wr: &mut OwnedWriteHalf,
    out: &mut BytesMut,
    (gaps, owed): (Vec<(NodeId, u64)>, usize),
    queued: (&mut Control, &Answers),
    acks: &Acks,
    (peer, form): (NodeId, PeerForm),
) -> Result<(), LinkError> {
    send_flushed(inner, wr, out).await?;
    snapshot(inner, wr, out, (None, &gaps), queued, acks, (peer, form)).await?;
    out.clear();
    for _ in 0..owed {
        wire::encode(&Frame::Filled, out);
    }
    wr.write_all(out).await?;
    inner.count_relayed(peer, 0, owed);
    Ok(())
}

/// Sends the control frames queued now (fetches, and answers to the peer's); true if any.
/// Each answer is counted out of [`Answers`] as it goes, here as in the idle sender: those
/// sent between the batches of a copy or a busy stream were not, so the count only grew,
/// and after [`ANSWER_BYTES`] of answers every later Fetch went unanswered for the rest of
/// the link (a node catching up then answered misses for keys the cluster holds).
async fn send_queued(
    wr: &mut OwnedWriteHalf,
    control: &mut Control,
    answers: &Answers,
) -> Result<bool, LinkError> {
    let mut any = false;
    while let Ok(f) = control.try_recv() {
        send(wr, &f).await?;
        answers.sent(&f);
        any = true;
    }
    Ok(any)
}

/// Fetches and their answers, sent between batches of changes.
type Control = tokio::sync::mpsc::Receiver<Frame>;
pub type ControlTx = tokio::sync::mpsc::Sender<Frame>;

/// Control frames queued at most per link: a peer asking faster than the link carries the
/// answers gets no answer for the excess (its reads wait, then take a miss).
pub const CONTROL_QUEUE: usize = 4096;

/// Bytes of items queued at most per link as answers to a peer's Fetches, beyond one
/// item: the frame count alone let a peer that asks for a 1 MB item thousands of times
/// and reads slowly hold gigabytes (the excess gets no answer, as above).
const ANSWER_BYTES: usize = 4 << 20;

/// The item bytes of this link's queued Fetch answers.
#[derive(Default)]
struct Answers {
    bytes: AtomicUsize,
}

impl Answers {
    fn full(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) >= ANSWER_BYTES
    }

    /// Counts an answer in; returns its bytes.
    fn queue(&self, record: &Option<Record>) -> usize {
        let bytes = record.as_ref().map_or(0, Record::len);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        bytes
    }

    fn unqueue(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// A control frame went: an answer's bytes are no longer queued.
    fn sent(&self, frame: &Frame) {
        if let Frame::Fetched {
            record: Some(r), ..
        } = frame
        {
            self.unqueue(r.len());
        }
    }
}

/// Changes whose keys are looked up together before they are applied.
const PREFETCH: usize = 16;

/// Starts loading the index entries and items of `records`' keys, so the cache misses of
/// applying them overlap instead of queueing one after another (each change must find the
/// version it may replace); a third of a receiving node's replication CPU went to them.
fn prefetch(store: &Store, records: &[Record]) {
    if records.len() < 2 {
        return;
    }
    let mut keys: [&[u8]; PREFETCH] = [&[]; PREFETCH];
    for (k, rec) in keys.iter_mut().zip(records) {
        *k = rec.key();
    }
    store.prefetch(&keys[..records.len()]);
}

/// Applies what the peer sends until the link ends, and answers its fetches.
async fn receive(
    inner: &Inner,
    frames: &mut Frames,
    peer: NodeId,
    (control, answers): (&ControlTx, &Answers),
    pending: &Pending,
    acks: &Acks,
    (form, heard, wake): (PeerForm, &Heard, &Notify),
) -> Result<(), LinkError> {
    let store = &inner.store;
    // Whether the copy arriving holds the cluster's data (see [`Frame::SnapshotStart`]).
    let mut complete = false;
    // False once a change could not be applied for want of room: the peer's Marks would
    // then claim more than this node holds, so none is kept until a full copy.
    let mut whole = true;
    loop {
        match frames.next().await? {
            Frame::Changes { now, records } => {
                let my_now = store.clock().now();
                for (i, rec) in records.iter().enumerate() {
                    if i % PREFETCH == 0 {
                        prefetch(store, &records[i..records.len().min(i + PREFETCH)]);
                    }
                    let version = rec.version();
                    match rec.kind() {
                        Kind::Flush => {
                            let at = local_exptime(rec.flush_at(), now, my_now);
                            store.apply_flush(version, rec.flush_before(), at, peer, my_now);
                        }
                        _ => {
                            let exptime = local_exptime(rec.exptime(), now, my_now);
                            // Marked by its writer (a stamp a client chose: see
                            // `Store::local_origin`): recorded as this node's, so it goes to
                            // every peer, whom they hear or not.
                            let from = if rec.origin() == Some(peer) && version.node == peer {
                                inner.local.node
                            } else {
                                peer
                            };
                            let Some(change) = RemoteChange::of_record(rec, exptime, from) else {
                                continue;
                            };
                            match store.apply(&change, my_now) {
                                Ok(Applied::FromTheFuture) => inner.note_error(
                                    peer,
                                    "a change stamped over an hour ahead of this node's clock was refused: check both clocks",
                                ),
                                Ok(_) => {}
                                Err(StoreError::TooLarge) => inner.note_error(
                                    peer,
                                    "a change larger than this node's item size limit was refused: give every node the same -I",
                                ),
                                Err(StoreError::OutOfMemory) => {
                                    inner.note_error(
                                        peer,
                                        "a change was refused for want of memory (-M): the next link with this peer copies everything again",
                                    );
                                    if whole {
                                        whole = false;
                                        inner.copy_starts(peer);
                                        inner.unheard(peer);
                                    }
                                }
                            }
                        }
                    }
                }
                inner.count_received(peer, records.len());
            }
            Frame::SnapshotStart { complete: c } => {
                complete = c;
                whole = true;
                inner.copy_starts(peer);
            }
            Frame::SnapshotEnd => inner.copy_done(peer, complete),
            Frame::Mark {
                chain,
                n,
                events,
                shards,
            } => {
                // An ack says this node holds what came before the Mark, and a peer
                // answering acknowledged writes relies on it: none once a change was
                // refused (its writes then wait out their timeout, and count it).
                if whole {
                    inner
                        .applied(peer, chain, events, &shards)
                        .map_err(LinkError::Protocol)?;
                    acks.owe(n);
                }
            }
            Frame::Ack { n } => inner.acked(peer, n),
            Frame::AckPrompt => acks.prompt.store(true, Ordering::Relaxed),
            Frame::Limits { item_size_max } => inner.peer_limits(peer, item_size_max),
            Frame::Heartbeat => {}
            Frame::Fetch { id, key } => {
                // Never waits: a full queue waits on this link's own sender (see
                // CONTROL_QUEUE); and nothing is copied for an answer that could not go.
                if control.capacity() == 0 || answers.full() {
                    continue;
                }
                let now = store.clock().now();
                // An item the peer could not hold answers as a miss (it could not have been
                // written there either).
                let record = store
                    .state_of(&key, now)
                    .filter(|r| form.takes(r))
                    .map(|r| r.for_peer(form.item_bits));
                let bytes = answers.queue(&record);
                if control
                    .try_send(Frame::Fetched { id, now, record })
                    .is_err()
                {
                    answers.unqueue(bytes);
                }
            }
            Frame::Fetched { id, now, record } => pending.answer(id, now, record),
            // What holds of the peer's own changes holds only while every change has been
            // applied (as for Marks above); a stamp this node would refuse on a change is
            // refused here too (a Gap asked from beyond it would be filled with nothing).
            Frame::Covered { stamp } => {
                if whole && stamp <= stamp_limit(store.clock().unix_ms()) {
                    inner.covered(peer, stamp);
                }
            }
            Frame::Hears { nodes } => {
                tracing::debug!(
                    "replication: node {} hears {nodes:?} straight from them",
                    peer.0
                );
                *heard.hears() = relay::heard_by_peer(nodes);
            }
            Frame::Gap { node, from } => {
                let (gaps, owed) = &mut *heard.gaps();
                let full = gaps.len() >= MAX_GAPS;
                match gaps.iter_mut().find(|(n, _)| *n == node) {
                    Some((_, f)) => *f = (*f).min(from),
                    None if full => {
                        return Err(LinkError::Protocol("gaps asked of too many nodes"));
                    }
                    None => gaps.push((node, from)),
                }
                *owed += 1;
                wake.notify_one();
            }
            Frame::Filled => {
                if !inner.filled(peer) {
                    return Err(LinkError::Protocol("a gap filled that was not asked"));
                }
            }
            Frame::Refuse { reason } => return Err(LinkError::RefusedBy(reason)),
            Frame::Hello { .. } | Frame::Proof { .. } | Frame::Resume { .. } => {
                return Err(LinkError::Protocol("a handshake frame after the handshake"))
            }
        }
    }
}

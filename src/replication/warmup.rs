//! Reads that miss while a node catches up ask a peer first, as mcrouter's WarmUp route
//! does: a restarted node serves clients at once, and must not answer "not found" for a key
//! the cluster holds just because its copy has not arrived yet (a PHP session would vanish).
//!
//! Until this node has caught up, a request that reads a key it lacks (or writes one in a
//! way that depends on what it holds) sends a Fetch over a live link first and waits for
//! the answer (see below for how long): the state the peer holds (live or deleted) is applied
//! here by the usual merge, and the request runs again (the connection waits, not its
//! worker: see `After::Fetch` in the server's command module). A multiget asks about all
//! its missing keys in one round trip. Once caught up, a request costs one relaxed load. A
//! wait that comes to nothing (a slow or unreachable peer) makes misses answer locally for
//! [`SLOW_PEER_BACKOFF`].
//!
//! Many reads at once (a burst of multigets just after a restart) must neither overflow
//! the link's queues nor give up while the answers flow: this node keeps at most
//! [`IN_FLIGHT`] questions out per link (so the peer, which never waits to queue an
//! answer, always has room for them), and a read waits as long as bytes keep arriving on
//! the link, [`FETCH_WAIT`] after the last ones, up to [`FETCH_WAIT_MAX`] in all. Bytes,
//! not only answers: an answer travels behind what the link already carries (on a slow
//! link, a few hundred KB of the copy take longer than [`FETCH_WAIT`]), and a read that
//! gave up there answered a miss, or ran an `add` or `incr` on a store still missing the
//! key, whose result then replaced the cluster's value everywhere. The price: while a copy
//! streams, a question the peer dropped (its queue full) is waited on for all of
//! [`FETCH_WAIT_MAX`], and so is an answer behind more than that much of the copy (a link
//! under about 300 KB/s: one batch of the copy goes whole before the answers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{oneshot, Semaphore};

use super::expiry::local_exptime;
use super::link::CONTROL_QUEUE;
use super::wire::Frame;
use crate::store::{NodeId, Record, RemoteChange, Store};

/// The longest a read waits for a peer's answer while nothing arrives on the link (the
/// answer queues behind what is in flight to this node, a fraction of a millisecond on a
/// fast link; bytes arriving meanwhile extend the wait).
pub const FETCH_WAIT: Duration = Duration::from_millis(250);
/// The longest a read waits in all, however steadily answers arrive: a client's own
/// timeout is commonly a second or more.
pub const FETCH_WAIT_MAX: Duration = Duration::from_millis(900);
/// Questions this node has out at most per link: half the queue each side has per link,
/// the other half is for the answers to the peer's own questions.
pub const IN_FLIGHT: usize = CONTROL_QUEUE / 2;
/// After a wait that came to nothing (no answer, no link), misses are answered locally
/// this long: a slow or unreachable peer costs a worker one wait, not one per miss.
pub const SLOW_PEER_BACKOFF: Duration = Duration::from_secs(1);

/// The link a fetch went out on closed before the answer came.
#[derive(Debug)]
pub struct Gone;

/// A peer's answer: its `now` and the key's state there.
pub type Answer = Option<(u32, Record)>;

/// Fetches in flight on one link, by id.
pub struct Pending {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Room for questions (see [`IN_FLIGHT`]); closed when the link ends.
    room: Semaphore,
    born: Instant,
    /// When bytes last arrived on the link, in milliseconds after `born`.
    heard_ms: AtomicU64,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            waiting: Mutex::default(),
            room: Semaphore::new(IN_FLIGHT),
            born: Instant::now(),
            heard_ms: AtomicU64::new(0),
        }
    }
}

impl Pending {
    /// Bytes arrived on the link: answers queued behind them are on their way.
    pub fn heard(&self) {
        let heard = self.born.elapsed().as_millis() as u64;
        self.heard_ms.fetch_max(heard, Ordering::Relaxed);
    }

    /// When bytes last arrived on the link (to the millisecond; when it began if none have).
    pub fn heard_at(&self) -> Instant {
        self.born + Duration::from_millis(self.heard_ms.load(Ordering::Relaxed))
    }

    /// Hands an answer to the read waiting for it (gone if it gave up). The read of the
    /// link that brought it has already called [`Pending::heard`].
    pub fn answer(&self, id: u64, now: u32, record: Option<Record>) {
        let waiter = self.lock().remove(&id);
        if let Some(tx) = waiter {
            let _ = tx.send(record.map(|r| (now, r)));
        }
    }

    /// The link is gone: every read waiting on it stops waiting (and may try another).
    pub fn fail_all(&self) {
        self.room.close();
        self.lock().clear();
    }

    /// Until when a read that began at `began` waits: [`FETCH_WAIT`] after it began or
    /// after the last bytes arrived on this link, whichever is later, and within
    /// [`FETCH_WAIT_MAX`] of its start.
    fn patience(&self, began: Instant) -> Instant {
        (self.heard_at().max(began) + FETCH_WAIT).min(began + FETCH_WAIT_MAX)
    }

    /// Awaits `fut` while this link keeps delivering (see [`Pending::patience`]); None if
    /// it fell silent first.
    async fn patiently<F: std::future::Future>(&self, began: Instant, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            let until = self.patience(began);
            match tokio::time::timeout_at(until.into(), &mut fut).await {
                Ok(out) => return Some(out),
                Err(_) if self.patience(began) > Instant::now() => continue,
                Err(_) => return None,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Answer>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a link offers for fetches: a way to send it frames, and its fetches in flight.
#[derive(Clone)]
pub struct Fetcher {
    pub peer: NodeId,
    pub control: super::link::ControlTx,
    pub pending: Arc<Pending>,
}

/// How long after start a miss waits for a first link to come up.
pub const FIRST_LINK_WAIT: Duration = Duration::from_secs(5);

/// This node's catch-up state.
pub struct WarmUp {
    /// Set once a complete snapshot has arrived from a peer.
    caught_up: AtomicBool,
    next_id: AtomicU64,
    started: Instant,
    /// Milliseconds after `started` before which no wait is tried (see
    /// [`SLOW_PEER_BACKOFF`]).
    quiet_until_ms: AtomicU64,
}

impl Default for WarmUp {
    fn default() -> Self {
        WarmUp {
            caught_up: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            started: Instant::now(),
            quiet_until_ms: AtomicU64::new(0),
        }
    }
}

impl WarmUp {
    pub fn set_caught_up(&self) {
        if !self.caught_up.swap(true, Ordering::Relaxed) {
            tracing::info!("replication: caught up (a full copy from a peer has arrived)");
        }
    }

    /// How long ago this node started.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    /// Whether to ask a peer now: not while backing off from a wait that failed.
    pub fn may_wait(&self) -> bool {
        self.started.elapsed().as_millis() as u64 >= self.quiet_until_ms.load(Ordering::Relaxed)
    }

    /// A wait came to nothing: answer misses locally for a while.
    pub fn waited_in_vain(&self) {
        let until = (self.started.elapsed() + SLOW_PEER_BACKOFF).as_millis() as u64;
        if self.quiet_until_ms.swap(until, Ordering::Relaxed)
            < self.started.elapsed().as_millis() as u64
        {
            tracing::info!(
                "replication: a peer did not answer a read in time ({FETCH_WAIT:?} with nothing arriving on the link, or {FETCH_WAIT_MAX:?} in all); misses are answered locally for {SLOW_PEER_BACKOFF:?}"
            );
        }
    }

    /// A link to fetch through (`find` skips the peers already asked): one up now, or, just
    /// after start (when the peers are being dialled), the next to come up within `wait`
    /// while `hopeful` says one may. `first`: no peer was asked yet, so a wait in vain
    /// makes misses answer locally for a while.
    pub async fn link(
        &self,
        find: impl Fn() -> Option<Fetcher>,
        first: bool,
        wait: Duration,
        hopeful: impl Fn() -> bool,
    ) -> Option<Fetcher> {
        if let Some(f) = find() {
            return Some(f);
        }
        if self.started.elapsed() > FIRST_LINK_WAIT {
            return None;
        }
        let until = Instant::now() + wait;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Some(f) = find() {
                return Some(f);
            }
            if !hopeful() {
                break;
            }
        }
        if first {
            self.waited_in_vain();
        }
        None
    }

    /// Asks the peer behind `via` about `keys` (every question first, then the answers
    /// together: one round trip), applies what it holds by the usual merge, and says what
    /// came of each key; Err if the link went away before answering. At most
    /// [`IN_FLIGHT`] keys at a time: more wait for others' answers first.
    pub async fn fetch_many(
        &self,
        store: &Store,
        via: &Fetcher,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Heard>, Gone> {
        let began = Instant::now();
        let want = keys.len().min(IN_FLIGHT) as u32;
        let _room = match via
            .pending
            .patiently(began, via.pending.room.acquire_many(want))
            .await
        {
            Some(Ok(room)) => room,
            Some(Err(_)) => return Err(Gone),
            None => {
                self.waited_in_vain();
                return Ok(vec![Heard::Settled; keys.len()]);
            }
        };
        let mut asked = Vec::with_capacity(keys.len());
        for key in keys {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            via.pending.lock().insert(id, tx);
            let frame = Frame::Fetch {
                id,
                key: Bytes::copy_from_slice(key),
            };
            match via.control.try_send(frame) {
                Ok(()) => asked.push(Some((id, rx))),
                // Too many reads waiting on this link already: this key takes its miss.
                Err(TrySendError::Full(_)) => {
                    via.pending.lock().remove(&id);
                    asked.push(None);
                }
                // The link's end fails what it had pending.
                Err(TrySendError::Closed(_)) => return Err(Gone),
            }
        }
        let mut found = Vec::with_capacity(keys.len());
        for question in asked {
            let Some((id, rx)) = question else {
                found.push(Heard::Settled);
                continue;
            };
            // Once the link fell silent, answers already here are still taken.
            let answer = via.pending.patiently(began, rx).await;
            via.pending.lock().remove(&id);
            found.push(match answer {
                Some(Ok(Some((sender_now, rec)))) => {
                    take(store, via, sender_now, &rec);
                    Heard::Settled
                }
                // The peer holds nothing of it: it may be catching up itself.
                Some(Ok(None)) => Heard::Nothing,
                Some(Err(_)) => return Err(Gone),
                None => {
                    self.waited_in_vain();
                    Heard::Settled
                }
            });
        }
        Ok(found)
    }
}

/// What came of a key asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// The peer's state of the key (live or deleted) is merged here, or no answer can be
    /// had (the link's queue was full, or the peer was too slow): asking on is no use.
    Settled,
    /// The peer holds nothing of the key: another peer may (this one may be catching up
    /// itself, or have been cut off from where the key was written).
    Nothing,
}

/// Applies a peer's answer by the usual merge.
fn take(store: &Store, via: &Fetcher, sender_now: u32, rec: &Record) {
    let my_now = store.clock().now();
    let exptime = local_exptime(rec.exptime(), sender_now, my_now);
    if let Some(change) = RemoteChange::of_record(rec, exptime, via.peer) {
        let _ = store.apply(&change, my_now);
    }
}

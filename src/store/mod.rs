//! The item store: shards of segment-packed items under a hard memory budget.
//!
//! The store speaks in its own words (stored, not stored, exists, not found, a value) and
//! never sees wire bytes. Each operation hashes the key once, locks one shard for the map
//! work only, and returns; nothing waits while a lock is held.
//!
//! Memory is one global budget (`-m`) that shards draw whole segments from: regular segments
//! pack small items, and an item above a quarter segment gets a segment of its own size.
//!
//! What guarantees a set's room, with eviction on: the write first makes room in its own
//! shard (a new segment, or its oldest ones compacted or freed). That fails only when the
//! shard holds nothing it could reuse; then exactly what a new segment for the item costs is
//! charged to the budget by freeing the oldest segments of the shards, one lock at a time (no
//! two shard locks are ever held together), and the set runs again under its shard's lock,
//! checks included, spending that charge, so no other writer can take the room in between.
//! Any segment can be freed, and an item within `-I` is at most half the budget (the config
//! checks `-I` against `-m`), so a set that fits `-I` is always stored; concurrent writers
//! can still miss only if the items they store at the same moment need more than the whole
//! budget together. The fast path pays nothing for this: the cross-shard work runs only after
//! the shard's own attempt failed. With `-M` nothing live is evicted (segments whose items
//! are all gone, flushed or expired, are still freed in any shard), and a write that finds
//! no room answers out of memory.
//!
//! How replication uses it. Every change, local or remote, is ordered by one rule,
//! last-writer-wins on a [`Version`] (stamp, node id; see [`merge`]), and every change makes
//! a new version: writes, deletes, arithmetic, and touches too.
//! - Sending: [`Store::subscribe`] gives a reader of the mutation feed ([`feed`]): each
//!   change as the state it left (a [`Record`], encoded once and shared by all readers),
//!   with per-shard sequence numbers. A change applied from a peer carries that peer as its
//!   origin, so it is not sent back there. A reader that fell behind learns exactly which
//!   records of which shard it lost ([`Lost`]) and resynchronises that shard with
//!   [`Store::scan`] from [`Cursor::of_shard`] (the scan leaves out what is flushed or
//!   expired, includes delete markers, and comes in batches bounded in bytes).
//! - Receiving: [`Store::apply`] takes another node's state of a key only if it is newer
//!   than all this node knows of the key: the state held (live or a delete marker), the
//!   stamps of states it dropped ([`forgotten`]: evicted, expired, markers let go) and the
//!   flushes it took ([`flush`], an event ordered by stamp: [`Store::apply_flush`]). So a
//!   store may forget a key, but never takes back a state older than one it dropped: no
//!   deleted or overwritten value comes back, whatever the order of arrival.
//! - Delete markers (tombstones, kept `tombstone_secs` when replicating) count against `-m`
//!   and are evicted like unread items after one extra pass; either way what they recorded
//!   stays in [`forgotten`] (the stamp) and in [`deleted`] (the key and version, which a
//!   snapshot of the shard carries to a peer that missed the delete; a share of `-m` is set
//!   aside for them). A delete of a key not held (or held only as a marker) leaves no
//!   marker, locally or applied, only those two, and still goes to the peers: a peer may
//!   hold what this node evicted ([`Store::delete`]). Clocks: stamps more than [`merge::MAX_AHEAD_MS`] ahead of this
//!   node's clock are refused, from peers and from `E` alike, so no client or peer can drag
//!   the clock ahead; expiry arrives as this store's relative time (replication sends the
//!   remaining lifetime).

mod apply;
pub mod clock;
pub mod deleted;
pub mod feed;
pub mod flush;
pub mod forgotten;
pub mod ghost;
pub mod index;
pub mod item;
pub mod merge;
pub mod record;
pub mod segment;
pub mod shard;
pub mod stats;
mod subscribe;
pub mod version;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use apply::{Applied, RemoteChange, RemoteState};
pub use clock::Clock;
pub use feed::FeedCursor;
pub use item::{bits, item_total_size, Item, Meta};
pub use record::{Kind, Record};
pub use shard::Miss;
pub use stats::ShardStats;
pub use subscribe::{Batch, FeedReader, Lost};
pub use version::{Hlc, NodeId, Version};

use feed::Feed;
use segment::{Geometry, SegBuf};
use shard::{hash_key, Budget, EvictionWatch, NoRoom, Shard, Walk, WalkPos};

/// memcached's default `-m`, in megabytes.
pub const DEFAULT_LIMIT_MB: usize = 64;
/// memcached's default `-I`.
pub const DEFAULT_ITEM_SIZE_MAX: usize = 1024 * 1024;
/// What the mutation feed keeps for a lagging reader, by default.
pub const DEFAULT_FEED_BYTES: usize = 64 << 20;
/// The feed's share for store-wide events (flushes).
const FEED_EVENTS_BYTES: usize = 64 << 10;
/// How long a delete marker is kept when tombstones are on; replication sets it.
pub const DEFAULT_TOMBSTONE_SECS: u32 = 0;
/// With tombstones on, this fraction of `-m` is set aside from the segments for the keys of
/// delete markers let go ([`deleted`]): a 64th is about 1.5 % of the cache, and at 64 shards
/// and `-m 64` holds some 400 deletes of 30-byte keys per shard.
const DELETED_KEYS_SHARE: usize = 64;
/// The most a shard keeps of them: its whole share goes into one snapshot batch.
const DELETED_KEYS_MAX_PER_SHARD: usize = 1 << 20;
/// With tombstones on, this fraction of `-m` is set aside for the groups of dropped
/// versions ([`forgotten`]), cut per shard by [`forgotten::group_shape`]: the more of them,
/// the more key states a node can drop while a peer is away before it refuses that peer's
/// writes of other keys.
const FORGOTTEN_SHARE: usize = 64;

/// The store's section of the configuration.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Budget for keys, values and per-item overhead (`-m`).
    pub limit_bytes: usize,
    /// Largest item accepted (`-I`).
    pub item_size_max: usize,
    /// Evict when full; false answers out-of-memory instead (`-M`).
    pub evict: bool,
    /// Seconds a delete leaves a versioned tombstone; 0 deletes outright.
    pub tombstone_secs: u32,
    /// This node's id, stamped into every version it writes.
    pub node: NodeId,
    /// Number of shards; rounded up to a power of two.
    pub shards: usize,
    /// Bytes of changes the mutation feed keeps for a reader that falls behind, over all
    /// shards (only while someone reads).
    pub feed_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            limit_bytes: DEFAULT_LIMIT_MB * 1024 * 1024,
            item_size_max: DEFAULT_ITEM_SIZE_MAX,
            evict: true,
            tombstone_secs: DEFAULT_TOMBSTONE_SECS,
            node: NodeId(0),
            shards: 64,
            feed_bytes: DEFAULT_FEED_BYTES,
        }
    }
}

/// Storage modes: memcached's six storage commands, with `cas` as a compare on set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

#[derive(Debug, Clone)]
pub struct SetRequest<'a> {
    pub mode: SetMode,
    pub key: &'a [u8],
    pub flags: u32,
    /// Relative expiry (see [`Clock::rel_exptime`]).
    pub exptime: u32,
    pub value: &'a [u8],
    /// Store only if the item's CAS equals this (`cas`, ms `C`).
    pub compare_cas: Option<u64>,
    /// ms `I`: a CAS older than the item's still stores, but marks the item stale.
    pub invalidate: bool,
    /// ms `E`: the CAS to give the new version instead of a fresh stamp.
    pub new_cas: Option<u64>,
    /// ms `N` with append/prepend: create the item on a miss, with this expiry.
    pub vivify: Option<u32>,
    pub key_binary: bool,
}

impl<'a> SetRequest<'a> {
    pub fn new(mode: SetMode, key: &'a [u8], value: &'a [u8]) -> Self {
        SetRequest {
            mode,
            key,
            flags: 0,
            exptime: 0,
            value,
            compare_cas: None,
            invalidate: false,
            new_cas: None,
            vivify: None,
            key_binary: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// `size`: the value's length; `total`: the item's, as [`item_total_size`] counts it.
    Stored {
        cas: u64,
        size: usize,
        total: usize,
    },
    NotStored,
    Exists,
    NotFound,
}

/// Real failures, as opposed to outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("object too large for cache")]
    TooLarge,
    #[error("out of memory storing object")]
    OutOfMemory,
}

/// How a read treats the item (mg's flags; get is the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Skip bumping access time, fetched bit and read bit (mg `u`).
    pub no_update: bool,
    /// New relative expiry (gat, mg `T`).
    pub touch: Option<u32>,
    /// Create an empty item on a miss with this expiry (mg `N`); `touch` then leaves it.
    pub vivify: Option<u32>,
    /// Win the recache token if the item expires before this (mg `R`).
    pub recache: Option<u32>,
    /// `recache` compares the expiry the item had before `touch` (mg `R` before `T`).
    pub recache_first: bool,
    /// Hand out the win token (a stale item's, `recache`'s, or one `vivify` creates): only
    /// a meta get does. A plain get, gat or touch of an invalidated item leaves it for the
    /// next one, as in memcached.
    pub tokens: bool,
}

/// What a read saw, before its own update.
pub struct Hit<'a> {
    pub item: Item<'a>,
    /// The item's expiry before this read's touch (for one it created: 0, never).
    pub prev_exptime: u32,
    pub prev_atime: u32,
    pub prev_fetched: bool,
    /// This client won the right to recache (mg `W`).
    pub won: bool,
    /// Another client already won it (mg `Z`).
    pub token_sent: bool,
    pub stale: bool,
    /// The item was created by `vivify`.
    pub created: bool,
    /// The item's segment buffer, for [`Hit::share_value`].
    buf: &'a SegBuf,
}

impl Hit<'_> {
    /// The value as a reference-counted buffer that outlives the shard's lock, for a large
    /// item (one with a segment of its own); None means copy `item.value()` instead.
    pub fn share_value(&self) -> Option<bytes::Bytes> {
        self.buf.share(self.item.value())
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DeleteRequest<'a> {
    pub key: &'a [u8],
    pub compare_cas: Option<u64>,
    /// md `I`: mark stale and bump CAS instead of removing.
    pub invalidate: bool,
    /// md `T` with `I`: new expiry.
    pub exptime: Option<u32>,
    pub new_cas: Option<u64>,
    /// md `x`: empty the value but keep the item.
    pub strip_value: bool,
}

impl DeleteRequest<'_> {
    /// An unconditional removal: no CAS to compare (which a key not held cannot match),
    /// no invalidation or stripped value (which need an item to change).
    fn is_plain(&self) -> bool {
        self.compare_cas.is_none() && !self.invalidate && !self.strip_value
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    Exists,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ArithRequest<'a> {
    pub key: &'a [u8],
    pub incr: bool,
    pub delta: u64,
    pub compare_cas: Option<u64>,
    /// ma `N`/`J`: create on a miss with (expiry, initial value).
    pub vivify: Option<(u32, u64)>,
    /// ma `T`: new expiry on success.
    pub exptime: Option<u32>,
    pub new_cas: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOutcome {
    Value {
        value: u64,
        cas: u64,
        exptime: u32,
        /// The expiry before (0 for an item created).
        prev_exptime: u32,
        created: bool,
    },
    NotFound,
    /// No room for the changed or created item (`-M`, the store full).
    NoMemory {
        creating: bool,
    },
    Exists,
    NonNumeric,
}

/// A snapshot cursor: the shard, then the segment order and offset within it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    shard: usize,
    pos: WalkPos,
}

impl Cursor {
    /// The start of shard `i`'s part of a walk: to resync one shard whose feed records
    /// were lost, walk from here while [`Cursor::shard`] stays `i`.
    pub fn of_shard(i: usize) -> Cursor {
        Cursor {
            shard: i,
            pos: WalkPos::default(),
        }
    }

    pub fn shard(&self) -> usize {
        self.shard
    }
}

#[repr(align(128))]
struct Padded(Mutex<Shard>);

struct Inner {
    cfg: StoreConfig,
    geo: Geometry,
    shards: Box<[Padded]>,
    mask: u64,
    /// Bytes of `-m` taken: segments, large buffers replies still hold, and holds.
    used: Arc<AtomicUsize>,
    limit: AtomicUsize,
    /// Bytes of `-m` the segments leave to the shards' deleted keys.
    set_aside: usize,
    evict_hand: AtomicUsize,
    clock: Arc<Clock>,
    feed: Feed,
    /// Each shard's ring's next sequence number ([`feed::Ring::head`]), readable unlocked.
    heads: Box<[Arc<AtomicU64>]>,
    /// Snapshot walks in progress ([`Store::begin_walk`]); every shard holds a clone.
    walks: Arc<AtomicUsize>,
    /// Told of each eviction once set ([`Store::on_eviction`]); every shard holds a clone.
    evictions: EvictionWatch,
}

/// Budget set aside for a value on its way in (see [`Store::hold`]).
pub struct Hold {
    store: Store,
    bytes: usize,
}

impl Hold {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.store.budget().release(self.bytes);
    }
}

/// A snapshot walk in progress (see [`Store::begin_walk`]).
pub struct WalkGuard(Store);

impl Drop for WalkGuard {
    /// Tells the feed's readers to look at every ring: the items moved during the walk were
    /// pushed without a notice of their own (the write that caused the move may publish
    /// nothing, as a change from a reader's only peer does).
    fn drop(&mut self) {
        let inner = &self.0.inner;
        inner.walks.fetch_sub(1, Ordering::Relaxed);
        inner.feed.notify(u64::MAX);
    }
}

/// A cheap-clone handle over the shards.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// How many times a set makes room in other shards before it answers out of memory. One
/// does, unless another writer changes the item meanwhile or all of the budget is held by
/// other writers' room at once.
const ROOM_ROUNDS: usize = 4;

/// What a new segment for an item would cost: its shard had no room for it.
struct NeedRoom(usize);

/// A shard addresses at most 4 GiB (4-byte locations); bigger budgets get more shards.
const MAX_SHARD_BUDGET: usize = 2 << 30;

impl Store {
    /// Has `tell` called with every item evicted for room from now on (once: a second
    /// listener is ignored), under its shard's lock, so it must be quick. Until then an
    /// eviction pays one load.
    pub fn on_eviction(&self, tell: Box<dyn Fn(&Item<'_>) + Send + Sync>) {
        let _ = self.inner.evictions.set(tell);
    }

    pub fn new(cfg: StoreConfig, clock: Arc<Clock>) -> Store {
        let n = cfg
            .shards
            .max(cfg.limit_bytes.div_ceil(MAX_SHARD_BUDGET))
            .max(1)
            .next_power_of_two();
        let geo = Geometry::for_shard_budget(cfg.limit_bytes / n);
        let walks = Arc::new(AtomicUsize::new(0));
        let evictions = EvictionWatch::default();
        // Deleted keys are kept only for peers (replication turns tombstones on).
        let deleted_cap = if cfg.tombstone_secs > 0 {
            (cfg.limit_bytes / DELETED_KEYS_SHARE / n).min(DELETED_KEYS_MAX_PER_SHARD)
        } else {
            0
        };
        let forgotten_groups = if cfg.tombstone_secs > 0 {
            forgotten::group_shape(cfg.limit_bytes / FORGOTTEN_SHARE / n)
        } else {
            (0, 0)
        };
        let (groups, buckets) = forgotten_groups;
        let shards = (0..n)
            .map(|i| {
                let mut shard = Shard::new(geo);
                shard.forgotten.set_groups(forgotten_groups);
                shard.hlc = Hlc::lane(i, n).for_node(cfg.node);
                shard.id = i;
                shard.ring.set_cap(cfg.feed_bytes / n);
                shard.walks = walks.clone();
                shard.evictions = evictions.clone();
                shard.deleted.set_cap(deleted_cap);
                shard
            })
            .collect::<Vec<_>>();
        let heads = shards.iter().map(|s| s.ring.head()).collect();
        let shards = shards.into_iter().map(|s| Padded(Mutex::new(s))).collect();
        Store {
            inner: Arc::new(Inner {
                limit: AtomicUsize::new(cfg.limit_bytes),
                set_aside: (deleted_cap + groups * buckets * forgotten::BUCKET_BYTES) * n,
                cfg,
                geo,
                shards,
                mask: (n - 1) as u64,
                used: Arc::default(),
                evict_hand: AtomicUsize::new(0),
                clock,
                feed: Feed::new(FEED_EVENTS_BYTES),
                heads,
                walks,
                evictions,
            }),
        }
    }

    pub fn clock(&self) -> &Arc<Clock> {
        &self.inner.clock
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    fn shard_of(&self, hash: u64) -> usize {
        // Low bits: the index places by the high bits, so the two stay independent.
        (hash & self.inner.mask) as usize
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard lock leaves consistent-enough state for a cache.
        self.inner.shards[i]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this store is configured to replicate (peers then keep delete markers and
    /// need a new version for every change), linked to a peer now or not.
    #[inline]
    pub(super) fn replicating(&self) -> bool {
        self.inner.cfg.tombstone_secs > 0
    }

    /// What segments may take: `-m` less what is set aside for deleted keys and dropped
    /// versions.
    fn budget(&self) -> Budget<'_> {
        // What is set aside was cut from the starting -m; `cache_memlimit` may lower the
        // limit below it, and must not leave the items nothing.
        let limit = self.limit_bytes();
        let limit = limit.saturating_sub(self.inner.set_aside.min(limit / 32));
        Budget::new(&self.inner.used, limit, self.inner.cfg.evict)
    }

    /// Bytes of segments allocated now: what `-m` limits.
    pub fn used_bytes(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    pub fn limit_bytes(&self) -> usize {
        self.inner.limit.load(Ordering::Relaxed)
    }

    /// True if an item of this size may be stored at all (`-I`).
    pub fn fits(&self, key_len: usize, value_len: usize, flags: u32) -> bool {
        item_total_size(key_len, value_len, flags) <= self.inner.cfg.item_size_max
    }

    /// The stamp of a new local version of `key`: a fresh tick, above every stamp the shard
    /// holds, or the client's own (`ms E`, `md E`, `ma E`) where that is safe.
    ///
    /// A client's stamp is taken only if it orders after every state this node knows of the
    /// key (the one held, live or deleted, one forgotten, a flush) and is not far ahead of
    /// wall time; otherwise the write gets a fresh stamp, as if `E` had not been given. So
    /// `E` can never move a key's version backwards, overflow the clock or drag it ahead.
    fn new_stamp(
        &self,
        shard: &mut Shard,
        hash: u64,
        key: &[u8],
        explicit: Option<u64>,
        now: u32,
    ) -> u64 {
        let wall = self.inner.clock.unix_ms();
        if let Some(e) = explicit {
            let mine = Version {
                stamp: e,
                node: self.inner.cfg.node,
            };
            let held = shard.find(hash, key).map(|loc| shard.item(loc).version());
            let safe = e != 0
                && e <= merge::stamp_limit(wall)
                && held.is_none_or(|v| merge::replaces(mine, v))
                && !shard.forgotten.covers(hash, mine)
                && !shard.flushes.covers(e, now);
            if safe {
                // Below a fresh tick, it may be below what this node told its peers it
                // had sent (see `local_origin`); at or above one, it cannot be.
                shard.took_client_stamp = e < shard.hlc.floor(wall);
                shard.hlc.observe(e);
                return e;
            }
        }
        shard.took_client_stamp = false;
        shard.settle_flushes(now);
        shard.hlc.tick(wall)
    }

    /// A delete marker's fields: kept for `tombstone_secs`, and through one eviction pass
    /// more than an unread item.
    fn tombstone(&self, version: Version, now: u32) -> Meta {
        let until = now.saturating_add(self.inner.cfg.tombstone_secs.max(1));
        let mut m = Meta::new(0, until, now);
        m.set(bits::TOMBSTONE | bits::REFERENCED);
        m.cas = version.stamp;
        m.node = version.node;
        m
    }

    /// Charges `need` bytes to the budget, freeing the oldest segments shard by shard (one
    /// lock at a time, never two) until they fit, except the segment holding `keep` (the
    /// key being written: its write runs again and may need the item, as an append does);
    /// false if every shard is empty and they still do not. The charge is the caller's to
    /// spend or give back.
    fn reserve(&self, need: usize, now: u32, keep: Option<&[u8]>) -> bool {
        let hash = keep.map_or(0, hash_key);
        let home = keep.map(|_| self.shard_of(hash));
        let b = self.budget();
        let n = self.inner.shards.len();
        let mut idle = 0;
        while !b.try_charge(need) {
            // Each shard is visited once in n steps of the shared hand; twice that many
            // visits without a segment to free means all are empty (other writers move the
            // hand too).
            if idle >= 2 * n {
                return false;
            }
            let i = self.inner.evict_hand.fetch_add(1, Ordering::Relaxed) % n;
            let mut shard = self.lock(i);
            let keep = match keep {
                Some(key) if Some(i) == home => shard.find(hash, key),
                _ => None,
            };
            if shard.release_oldest(now, &b, keep) {
                idle = 0;
            } else {
                idle += 1;
            }
        }
        true
    }

    /// Sets `bytes` of the budget aside for a value still arriving, making room as a set
    /// does (evicting, unless `-M`); None if there is none. memcached takes an item's memory
    /// before it reads the value, so values clients are still sending count against `-m`,
    /// however many connections send them at once. Given back when the [`Hold`] drops.
    pub fn hold(&self, bytes: usize, now: u32) -> Option<Hold> {
        self.reserve(bytes, now, None).then(|| Hold {
            store: self.clone(),
            bytes,
        })
    }

    /// Warms the cache for a coming [`Store::read`] of each of `keys` (at most 64 are
    /// used): many keys' memory loads then run side by side. Only worth it for several.
    pub fn prefetch(&self, keys: &[&[u8]]) {
        let keys = &keys[..keys.len().min(64)];
        let mut hashes = [0u64; 64];
        for (h, key) in hashes.iter_mut().zip(keys) {
            *h = hash_key(key);
        }
        for step in 0..2 {
            for &hash in &hashes[..keys.len()] {
                self.lock(self.shard_of(hash)).prefetch(hash, step);
            }
        }
    }

    /// Reads `key`, applying `opts`, and hands what it saw to `f` while the shard is locked
    /// (so a reply can be written without copying the value twice).
    pub fn read<R>(
        &self,
        key: &[u8],
        now: u32,
        opts: ReadOptions,
        f: impl FnOnce(Result<Hit<'_>, Miss>) -> R,
    ) -> R {
        let hash = hash_key(key);
        let si = self.shard_of(hash);
        let mut shard = self.lock(si);
        let b = self.budget();
        let (loc, created) = match shard.lookup(hash, key, now, &b) {
            Ok(loc) => (loc, false),
            Err(miss) => match opts.vivify {
                Some(exptime) if self.fits(key.len(), 0, 0) => {
                    let mut meta = Meta::new(0, exptime, now);
                    meta.cas = self.new_stamp(&mut shard, hash, key, None, now);
                    meta.node = self.inner.cfg.node;
                    match shard.put(hash, key, &[], &meta, now, &b) {
                        Ok(loc) => (loc, true),
                        Err(NoRoom) => return f(Err(miss)),
                    }
                }
                _ => return f(Err(miss)),
            },
        };
        let before = shard.item(loc).meta();
        let mut meta = before;
        // An item just created already has its expiry (the caller chose between the touch's
        // and vivify's).
        if let Some(t) = opts.touch.filter(|_| !created) {
            meta.exptime = t;
            // With changes going to peers, a new expiry is a change like any other: a new
            // version, so peers take it (and the CAS changes). Alone, the CAS stays, as in
            // memcached, so a `gets`, a touch, then a `cas` succeeds. (Keeping the version
            // and letting copies of one version take the later expiry was tried: it needs
            // the forgotten table to know versions, not stamps, and no relaying of those
            // copies, or a copy that expired on a peer is refused for good and a slow link
            // in a mesh makes one circulate.)
            let published = self.replicating() || self.inner.feed.is_on();
            if !created && published {
                meta.cas = self.new_stamp(&mut shard, hash, key, None, now);
                meta.node = self.inner.cfg.node;
            }
        }
        let it = shard.item(loc);
        let mut won = created && opts.tokens;
        let token_sent = meta.has(bits::TOKEN_SENT);
        let stale = meta.has(bits::STALE);
        if opts.tokens && !token_sent {
            let exptime = if opts.recache_first {
                before.exptime
            } else {
                meta.exptime
            };
            let expiring = opts
                .recache
                .is_some_and(|r| !created && exptime != 0 && exptime < r);
            if stale || expiring {
                won = true;
            }
        }
        if won {
            meta.set(bits::TOKEN_SENT);
        }
        if !opts.no_update {
            meta.atime = now;
            meta.set(bits::FETCHED | bits::REFERENCED);
        }
        let observed = self.inner.feed.is_on() && (created || opts.touch.is_some());
        if meta == before && !observed {
            // Nothing to write (a hot key read again within the second): the item as
            // decoded above is the answer. A return of its own on purpose: folding the two
            // `Hit`s into one call measured ~8 % more CPU per key on multigets.
            return f(Ok(Hit {
                item: it,
                prev_exptime: if created { 0 } else { before.exptime },
                prev_atime: before.atime,
                prev_fetched: before.has(bits::FETCHED),
                won,
                token_sent,
                stale,
                created,
                buf: shard.buf(loc),
            }));
        }
        let in_place = meta == before
            || if meta.exptime != before.exptime || meta.cas != before.cas {
                shard.update(loc, &meta)
            } else {
                shard.mark_read(loc, meta.bits, meta.atime)
            };
        let loc = if in_place {
            loc
        } else {
            // A new expiry or a rare bit needs room the item does not have: write it anew.
            let value = shard.item(loc).value().to_vec();
            match shard.rewrite(hash, key, &value, &meta, now, &b) {
                Ok(loc) => loc,
                // A full store without eviction (-M). A read answers the item as it is (a
                // token it won goes unrecorded; looked up again, as making room may have moved
                // it); a new expiry, which cannot be kept, misses.
                Err(NoRoom) if meta.exptime == before.exptime && meta.cas == before.cas => {
                    match shard.find(hash, key) {
                        Some(loc) => loc,
                        None => return f(Err(Miss::Absent)),
                    }
                }
                Err(NoRoom) => return f(Err(Miss::Absent)),
            }
        };
        if observed {
            let rec = Record::of_item(&shard.item(loc), None);
            shard.ring.push(rec);
        }
        let it = shard.item(loc);
        let r = f(Ok(Hit {
            item: it,
            prev_exptime: if created { 0 } else { before.exptime },
            prev_atime: before.atime,
            prev_fetched: before.has(bits::FETCHED),
            won,
            token_sent,
            stale,
            created,
            buf: shard.buf(loc),
        }));
        let bit = feed::Feed::bit(shard.id);
        drop(shard);
        if observed {
            // Woken after unlocking: a waker may do anything, the store included.
            self.inner.feed.notify(bit);
        }
        r
    }

    /// Stores an item per `req.mode` and the CAS rules of memcached's `do_store_item`.
    ///
    /// With eviction on, an item that fits `-I` is always given room: when its shard cannot
    /// make room itself, what a new segment for it costs is charged by freeing segments in
    /// the shards (`Store::reserve`), and the whole operation runs again, its checks
    /// included, spending that charge (the shard was unlocked in between).
    pub fn set(&self, req: &SetRequest<'_>, now: u32) -> Result<SetOutcome, StoreError> {
        if !self.fits(req.key.len(), req.value.len(), req.flags) {
            return Err(StoreError::TooLarge);
        }
        self.with_room(now, req.key, |b| self.try_set(req, now, b))
    }

    /// Runs `attempt` (a write of `key` under its shard's lock) until it finds room. When
    /// its shard could make none, what it lacks is charged by freeing segments across shards
    /// (`Store::reserve`, which spares the key's item) and it runs again, its checks
    /// included, spending that charge.
    fn with_room<T>(
        &self,
        now: u32,
        key: &[u8],
        mut attempt: impl FnMut(&Budget<'_>) -> Result<T, NeedRoom>,
    ) -> Result<T, StoreError> {
        let b = self.budget();
        let mut need = match attempt(&b) {
            Ok(done) => return Ok(done),
            Err(NeedRoom(need)) => need,
        };
        // Without eviction the shards still give back segments whose items are all gone
        // (flushed, expired), as memcached reuses a flushed item's memory with `-M`;
        // nothing live is evicted (see [`Shard::release_oldest`]).
        // Another writer may change the item meanwhile (an append makes it longer, so it
        // costs more than was charged): a few rounds, not one.
        for _ in 0..ROOM_ROUNDS {
            if self.reserve(need, now, Some(key)) {
                b.prepaid.set(need);
            } else if !b.evict {
                // Every segment left holds a live item: the store is full.
                return Err(StoreError::OutOfMemory);
            }
            let done = attempt(&b);
            b.refund();
            match done {
                Ok(done) => return Ok(done),
                Err(NeedRoom(more)) => need = more,
            }
        }
        Err(StoreError::OutOfMemory)
    }

    /// [`Store::set`] under one lock of the key's shard; what a new segment would cost if
    /// the shard has no room for the item.
    fn try_set(
        &self,
        req: &SetRequest<'_>,
        now: u32,
        b: &Budget<'_>,
    ) -> Result<SetOutcome, NeedRoom> {
        let hash = hash_key(req.key);
        let si = self.shard_of(hash);
        let mut shard = self.lock(si);
        let existing = shard.lookup_to_replace(hash, req.key, now, b).ok();
        // Append and prepend build the joined value here: making room may move the old one.
        let mut joined = Vec::new();
        let mut meta = match existing {
            Some(loc) => {
                let old = shard.item(loc);
                let cas_match = req.compare_cas.map(|c| c == old.cas);
                // A zero CAS is never an older version: memcached answers EX to `I C0`.
                let stale_ok =
                    req.invalidate && req.compare_cas.is_some_and(|c| c != 0 && c < old.cas);
                match req.mode {
                    SetMode::Add => {
                        // memcached bumps the item an add collided with.
                        // Only a hot bit changes, which always has room.
                        let (bits, atime) = (old.bits | bits::REFERENCED, old.atime);
                        shard.mark_read(loc, bits, atime);
                        return Ok(SetOutcome::NotStored);
                    }
                    SetMode::Set | SetMode::Replace => {
                        if cas_match == Some(false) && !stale_ok {
                            return Ok(SetOutcome::Exists);
                        }
                        let mut meta = Meta::new(req.flags, req.exptime, now);
                        if cas_match == Some(false) {
                            meta.exptime = old.exptime;
                            meta.set(bits::STALE);
                            meta.bits |= old.bits & bits::TOKEN_SENT;
                        }
                        meta
                    }
                    SetMode::Append | SetMode::Prepend => {
                        if cas_match == Some(false) {
                            return Ok(SetOutcome::Exists);
                        }
                        let total = old.value().len() + req.value.len();
                        if !self.fits(req.key.len(), total, old.flags) {
                            return Ok(SetOutcome::NotStored);
                        }
                        joined.reserve_exact(total);
                        if req.mode == SetMode::Append {
                            joined.extend_from_slice(old.value());
                            joined.extend_from_slice(req.value);
                        } else {
                            joined.extend_from_slice(req.value);
                            joined.extend_from_slice(old.value());
                        }
                        Meta::new(old.flags, old.exptime, now)
                    }
                }
            }
            None => {
                if req.compare_cas.is_some() && matches!(req.mode, SetMode::Set | SetMode::Replace)
                {
                    return Ok(SetOutcome::NotFound);
                }
                match req.mode {
                    SetMode::Set | SetMode::Add => Meta::new(req.flags, req.exptime, now),
                    SetMode::Append | SetMode::Prepend => match req.vivify {
                        Some(exptime) => Meta::new(req.flags, exptime, now),
                        None => return Ok(SetOutcome::NotStored),
                    },
                    SetMode::Replace => return Ok(SetOutcome::NotStored),
                }
            }
        };
        let value = if matches!(req.mode, SetMode::Append | SetMode::Prepend) && existing.is_some()
        {
            &joined[..]
        } else {
            req.value
        };
        if req.key_binary {
            meta.set(bits::KEY_BINARY);
        }
        meta.cas = self.new_stamp(&mut shard, hash, req.key, req.new_cas, now);
        meta.node = self.inner.cfg.node;
        let (cas, size) = (meta.cas, value.len());
        let total = item_total_size(req.key.len(), size, meta.flags);
        // The common cache refresh: same length, written over the old bytes.
        if let Some(loc) = existing {
            if shard.overwrite(loc, value, &meta) {
                self.publish_loc(shard, loc);
                return Ok(SetOutcome::Stored { cas, size, total });
            }
        }
        match shard.put(hash, req.key, &[value], &meta, now, b) {
            Ok(loc) => {
                self.publish_loc(shard, loc);
                Ok(SetOutcome::Stored { cas, size, total })
            }
            Err(NoRoom) => Err(NeedRoom(shard.room_for(req.key.len(), size, &meta))),
        }
    }

    /// Removes (or, with tombstones on, marks deleted) an item, or invalidates it (md `I`).
    ///
    /// The answer is always this node's own (memcached's: not found when it holds nothing),
    /// but with tombstones on (replicating) a plain delete that finds nothing is still a
    /// delete of the cluster's key: see `Store::delete_absent`.
    pub fn delete(&self, req: &DeleteRequest<'_>, now: u32) -> DeleteOutcome {
        let hash = hash_key(req.key);
        let si = self.shard_of(hash);
        let mut shard = self.lock(si);
        let b = self.budget();
        let Ok(loc) = shard.lookup(hash, req.key, now, &b) else {
            if self.replicating() && req.is_plain() {
                self.delete_absent(shard, hash, req, now, &b);
            }
            return DeleteOutcome::NotFound;
        };
        let old = shard.item(loc);
        if req.compare_cas.is_some_and(|c| c != old.cas) {
            return DeleteOutcome::Exists;
        }
        let mut meta = old.meta();
        let stamp = self.new_stamp(&mut shard, hash, req.key, req.new_cas, now);
        let node = self.inner.cfg.node;
        if req.invalidate || req.strip_value {
            if req.invalidate {
                if let Some(t) = req.exptime {
                    meta.exptime = t;
                }
                meta.set(bits::STALE);
                meta.clear(bits::TOKEN_SENT);
            }
            meta.cas = stamp;
            meta.node = node;
            let put = if !req.strip_value && shard.update(loc, &meta) {
                Ok(loc)
            } else {
                // A new layout, or no value: written anew (the item is still unchanged).
                let v = if req.strip_value {
                    Vec::new()
                } else {
                    shard.item(loc).value().to_vec()
                };
                shard.rewrite(hash, req.key, &v, &meta, now, &b)
            };
            match put {
                Ok(new) => self.publish_loc(shard, new),
                Err(NoRoom) => {
                    // No room for the changed copy: the key goes, as a delete would.
                    let v = Version { stamp, node };
                    shard.forget_delete(hash, req.key, v, &b);
                    self.publish_delete(shard, req.key, v);
                }
            }
            return DeleteOutcome::Deleted;
        }
        if self.replicating() {
            let tomb = self.tombstone(Version { stamp, node }, now);
            if shard.put(hash, req.key, &[], &tomb, now, &b).is_err() {
                // No room for the marker: forget the key instead.
                shard.forget_delete(hash, req.key, Version { stamp, node }, &b);
            }
        } else {
            shard.forgotten.raise(hash, Version { stamp, node });
            shard.remove(hash, loc, &b);
        }
        self.publish_delete(shard, req.key, Version { stamp, node });
        DeleteOutcome::Deleted
    }

    /// A plain delete of a key this node does not hold (never did, evicted it, or holds only
    /// a delete marker), when replicating: a delete all the same, at a new version, sent to
    /// the peers. Evictions are local, so a peer may still hold the key this node evicted,
    /// and a client sent here (a load balancer picks whichever node is up) must not leave
    /// it readable there: the peer drops any older state, as for any delete.
    ///
    /// Remembered here without a marker: the stamp in [`forgotten`] (so a write of the key
    /// made before the delete, still on its way from a peer, is refused) and the key in
    /// [`deleted`] (so a peer that misses the delete record gets it with the shard's next
    /// snapshot), a held marker of an older delete giving way to them. Applications often
    /// delete keys that are not cached, and a marker for each would take room in the
    /// segments for an hour, evicting items (or, with `-M`, refusing writes), on every node
    /// alike; these two are bounded and set aside already. Their cost: a burst of such
    /// deletes pushes older deletes out of [`deleted`], and fills [`forgotten`] as
    /// evictions do. Peers do the same with a delete of a key they do not
    /// hold ([`Store::apply`]). Not when unreplicated: a miss then stays the lookup alone.
    fn delete_absent(
        &self,
        mut shard: MutexGuard<'_, Shard>,
        hash: u64,
        req: &DeleteRequest<'_>,
        now: u32,
        b: &Budget<'_>,
    ) {
        let stamp = self.new_stamp(&mut shard, hash, req.key, req.new_cas, now);
        let version = Version {
            stamp,
            node: self.inner.cfg.node,
        };
        shard.forget_delete(hash, req.key, version, b);
        self.publish_delete(shard, req.key, version);
    }

    /// incr/decr on a decimal value; memcached keeps the length when the number shrinks
    /// (padding with spaces) and reallocates when it grows.
    pub fn arith(&self, req: &ArithRequest<'_>, now: u32) -> ArithOutcome {
        let hash = hash_key(req.key);
        let si = self.shard_of(hash);
        let mut shard = self.lock(si);
        let b = self.budget();
        let mut buf = itoa::Buffer::new();
        let loc = match shard.lookup(hash, req.key, now, &b) {
            Ok(loc) => loc,
            Err(_) => {
                let Some((exptime, initial)) = req.vivify else {
                    return ArithOutcome::NotFound;
                };
                let digits = buf.format(initial).as_bytes();
                let mut meta = Meta::new(0, exptime, now);
                meta.cas = self.new_stamp(&mut shard, hash, req.key, req.new_cas, now);
                meta.node = self.inner.cfg.node;
                let Ok(loc) = shard.put(hash, req.key, &[digits], &meta, now, &b) else {
                    return ArithOutcome::NoMemory { creating: true };
                };
                self.publish_loc(shard, loc);
                return ArithOutcome::Value {
                    value: initial,
                    cas: meta.cas,
                    exptime,
                    prev_exptime: 0,
                    created: true,
                };
            }
        };
        let old = shard.item(loc);
        // As memcached: an empty value is refused before the CAS is compared.
        if old.value().is_empty() {
            return ArithOutcome::NonNumeric;
        }
        if req.compare_cas.is_some_and(|c| c != old.cas) {
            return ArithOutcome::Exists;
        }
        let Some(current) = parse_counter(old.value()) else {
            return ArithOutcome::NonNumeric;
        };
        let value = if req.incr {
            current.wrapping_add(req.delta)
        } else {
            current.saturating_sub(req.delta)
        };
        let digits = buf.format(value).as_bytes();
        let old_len = old.value().len();
        let mut meta = old.meta();
        let prev_exptime = meta.exptime;
        meta.cas = self.new_stamp(&mut shard, hash, req.key, req.new_cas, now);
        meta.node = self.inner.cfg.node;
        if let Some(t) = req.exptime {
            meta.exptime = t;
        }
        let loc = if digits.len() <= old_len && shard.update(loc, &meta) {
            let v = shard.value_mut(loc);
            v[..digits.len()].copy_from_slice(digits);
            v[digits.len()..].fill(b' ');
            loc
        } else {
            let mut v = digits.to_vec();
            v.resize(old_len.max(digits.len()), b' ');
            meta.atime = now;
            if digits.len() > old_len {
                // A longer number is a new item in memcached: not fetched, not stale, no
                // token sent (`mg ... h` and `me` show it).
                meta.bits &= !(bits::FETCHED | bits::STALE | bits::TOKEN_SENT);
            }
            match shard.rewrite(hash, req.key, &v, &meta, now, &b) {
                Ok(loc) => loc,
                Err(NoRoom) => return ArithOutcome::NoMemory { creating: false },
            }
        };
        let (cas, exptime) = (meta.cas, meta.exptime);
        self.publish_loc(shard, loc);
        ArithOutcome::Value {
            value,
            cas,
            exptime,
            prev_exptime,
            created: false,
        }
    }

    /// Sets a new expiry on a live item.
    pub fn touch(&self, key: &[u8], exptime: u32, now: u32) -> bool {
        self.touch_sized(key, exptime, now).is_some()
    }

    /// [`Store::touch`], saying the item's size as [`item_total_size`] counts it (the new
    /// version goes to peers whole, and one with a smaller `-I` refuses it).
    pub fn touch_sized(&self, key: &[u8], exptime: u32, now: u32) -> Option<usize> {
        let opts = ReadOptions {
            touch: Some(exptime),
            ..Default::default()
        };
        self.read(key, now, opts, |r| r.ok().map(|h| h.item.total_size()))
    }

    /// A stamp above every one issued or taken in so far, which every later local write's
    /// stamp exceeds (each shard's clock moves past it): what is written from now on.
    pub fn stamp_mark(&self) -> u64 {
        let n = self.inner.shards.len();
        let last = (0..n).map(|i| self.lock(i).hlc.last()).max().unwrap_or(0);
        let mark = Hlc::stamp_of_ms(self.inner.clock.unix_ms()).max(last + 1);
        for i in 0..n {
            self.lock(i).hlc.observe(mark);
        }
        mark
    }

    /// Invalidates every item written before now, or before relative second `at` once it
    /// has come (see [`flush`]). Returns the flush's stamp: what was written below it goes.
    pub fn flush_all(&self, at: Option<u32>, now: u32) -> u64 {
        let clock = &self.inner.clock;
        // Above every stamp any shard has issued or taken in (some may be ahead of the
        // wall clock: a peer's, or a client's `E`), so all of it goes.
        let n = self.inner.shards.len();
        let last = (0..n).map(|i| self.lock(i).hlc.last()).max().unwrap_or(0);
        let (before, at) = match at {
            Some(t) if t > now => {
                // The moment it takes effect, to the millisecond: what is written until then
                // goes, as in memcached, and so does a peer's write made before this command
                // (the unix second of `t` rounded down could fall below it). The delay also
                // counts from the latest stamp taken in: peers whose clocks are ahead of this
                // node's stamp their writes of the delay above this node's deadline.
                let deadline_ms = clock.unix_ms_at(t);
                let delay = Hlc::stamp_of_ms(deadline_ms.saturating_sub(clock.unix_ms()));
                let before = Hlc::stamp_of_ms(deadline_ms).max(last.saturating_add(delay));
                (before.max(last + 1), t)
            }
            _ => (Hlc::stamp_of_ms(clock.unix_ms()).max(last + 1), 0),
        };
        let version = Version {
            stamp: before,
            node: self.inner.cfg.node,
        };
        self.flush_shards(before, at, now);
        self.publish_event(Record::flush(version, before, at, None));
        before
    }

    /// Everything stamped below this has been flushed, on every shard, as of relative
    /// second `now`: what a peer that lost flush records must still be told. Delayed
    /// flushes due by `now` are folded in first (the background reclaim may not have
    /// reached every shard yet), so with [`Store::pending_flushes`] at the same `now` no
    /// flush falls between the two.
    pub fn flushed_below(&self, now: u32) -> u64 {
        (0..self.inner.shards.len())
            .map(|i| {
                let mut shard = self.lock(i);
                shard.settle_flushes(now);
                shard.flushes.below()
            })
            .min()
            .unwrap_or(0)
    }

    /// The delayed flushes still to come, (relative second, stamp): with
    /// [`Store::flushed_below`], all a peer must be told of this node's flushes.
    pub fn pending_flushes(&self, now: u32) -> Vec<(u32, u64)> {
        let mut shard = self.lock(0);
        shard.flushes.settle(now);
        shard.flushes.pending().to_vec()
    }

    /// Takes a flush into every shard; false if every shard knew it already.
    fn flush_shards(&self, before: u64, at: u32, now: u32) -> bool {
        let mut changed = false;
        for i in 0..self.inner.shards.len() {
            let mut shard = self.lock(i);
            if at <= now {
                // Later local writes must order after it.
                shard.hlc.observe(before);
            }
            shard.note_flush();
            changed |= shard.flushes.add(before, at, now);
        }
        changed
    }

    /// Drops expired items in every shard, visiting at most `budget` items per shard.
    pub fn reclaim(&self, budget: usize, now: u32) -> usize {
        let b = self.budget();
        (0..self.inner.shards.len())
            .map(|i| self.lock(i).reclaim(budget, now, &b))
            .sum()
    }

    /// Declares a snapshot walk ([`Store::scan`]) whose reader also reads the mutation feed:
    /// until the guard drops, items that eviction moves to another segment are published
    /// to the feed, as a walk may miss them.
    pub fn begin_walk(&self) -> WalkGuard {
        self.inner.walks.fetch_add(1, Ordering::Relaxed);
        WalkGuard(self.clone())
    }

    /// The next batch of a snapshot walk for a full resync: the state of each key held,
    /// live or deleted (a marker), as feed records, about `max_bytes` of them (at least
    /// one); `None` cursor when done. Expired and flushed items are left out. Items
    /// present for the whole walk are seen at least once (an item that compaction moves
    /// may be seen twice), or, when eviction moves one to another segment, published to
    /// the feed if the walk holds a [`Store::begin_walk`] guard; others may or may not be.
    ///
    /// Each shard's part ends with the deletes whose markers it let go ([`deleted`]), as
    /// delete records, in the batch that finishes the shard: a peer that missed them drops
    /// what it holds from before. Taken after the items, so a marker evicted while the walk
    /// ran is in one or the other. A key the shard holds (and so sends) is left out: what
    /// it holds is newer than any delete it let go.
    pub fn scan(
        &self,
        cursor: Cursor,
        max_bytes: usize,
        now: u32,
    ) -> (Vec<Record>, Option<Cursor>) {
        self.scan_where(cursor, max_bytes, now, |_| true)
    }

    /// As [`Store::scan`], for the states whose version `keep` takes, looked at before a
    /// record is built. Items left out (by `keep`, or expired or flushed) count too, eight
    /// times less: a walk that finds few returns every few MB of items, so its caller can
    /// let others run (the batch may then be empty).
    pub fn scan_where(
        &self,
        cursor: Cursor,
        max_bytes: usize,
        now: u32,
        keep: impl Fn(Version) -> bool,
    ) -> (Vec<Record>, Option<Cursor>) {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut passed = 0;
        let sent = |shard: &Shard, it: &Item<'_>| !it.is_expired(now) && !shard.is_flushed(it, now);
        let more = self.walk(cursor, |shard, it| {
            let Some(it) = it else {
                shard.deleted.for_each(|key, version| {
                    let hash = hash_key(key);
                    let held = shard
                        .find(hash, key)
                        .is_some_and(|loc| sent(shard, &shard.item(loc)));
                    if held || shard.flushes.covers(version.stamp, now) || !keep(version) {
                        return;
                    }
                    let rec = Record::deleted(key, version, None);
                    bytes += rec.len();
                    out.push(rec);
                });
                return Walk::Took;
            };
            if bytes >= max_bytes && !out.is_empty() || passed >= max_bytes.saturating_mul(8) {
                return Walk::Stop;
            }
            if !sent(shard, it) || !keep(it.version()) {
                passed += it.total_size();
                return Walk::Skip;
            }
            let rec = Record::of_item(it, None);
            bytes += rec.len();
            out.push(rec);
            Walk::Took
        });
        (out, more)
    }

    /// As [`Store::scan`], for items a client could read now (not expired, flushed or
    /// deleted), handed to `f` under their shard's lock (`lru_crawler metadump`). It reads
    /// no feed, so an item that eviction moves to another segment during the dump may be
    /// missed (memcached's crawler, walking LRU lists that change under it, makes no
    /// promise either).
    pub fn visit_live(
        &self,
        cursor: Cursor,
        max: usize,
        now: u32,
        mut f: impl FnMut(&Item<'_>),
    ) -> Option<Cursor> {
        let mut taken = 0;
        self.walk(cursor, |shard, it| {
            let Some(it) = it else {
                return Walk::Skip;
            };
            if taken >= max.max(1) {
                return Walk::Stop;
            }
            let live = !it.is_tombstone() && !it.is_expired(now) && !shard.is_flushed(it, now);
            if !live {
                return Walk::Skip;
            }
            f(it);
            taken += 1;
            Walk::Took
        })
    }

    /// Walks shards from `cursor`, handing `f` each item until it says stop, and `None`
    /// under the same lock once a shard's items are done (what `f` answers then is not
    /// heeded); the cursor to go on from, or None when every shard has been walked.
    fn walk(
        &self,
        cursor: Cursor,
        mut f: impl FnMut(&Shard, Option<&Item<'_>>) -> Walk,
    ) -> Option<Cursor> {
        let mut cur = cursor;
        while cur.shard < self.inner.shards.len() {
            let shard = self.lock(cur.shard);
            match shard.visit(cur.pos, |s, it| f(s, Some(it))) {
                Some(pos) => {
                    cur.pos = pos;
                    return Some(cur);
                }
                None => {
                    f(&shard, None);
                    cur.shard += 1;
                    cur.pos = WalkPos::default();
                }
            }
        }
        None
    }

    /// Sum of the shards' counters, with the dead bytes their segments hold.
    pub fn stats(&self) -> ShardStats {
        let mut total = ShardStats::default();
        for i in 0..self.inner.shards.len() {
            let shard = self.lock(i);
            total += shard.stats;
            total.dead_bytes += shard.dead_bytes() as u64;
            let (slots, bytes) = shard.index_size();
            total.hash_slots += slots as u64;
            total.hash_bytes += bytes as u64;
        }
        total
    }

    pub fn reset_stats(&self) {
        for i in 0..self.inner.shards.len() {
            self.lock(i).stats.reset_counters();
        }
    }

    /// Changes the memory budget at run time (`cache_memlimit`).
    pub fn set_limit(&self, bytes: usize) {
        self.inner.limit.store(bytes, Ordering::Relaxed);
    }

    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// Size of a regular segment (`stats slabs` describes these).
    pub fn segment_size(&self) -> usize {
        self.inner.geo.seg_size
    }

    /// Seconds since the items next in line for eviction were last read (`stats items`
    /// age; memcached reports its LRU tail's). 0 when the store is empty.
    pub fn eviction_front_age(&self, now: u32) -> u32 {
        (0..self.inner.shards.len())
            .filter_map(|i| self.lock(i).eviction_front_time())
            .min()
            .map_or(0, |t| now.saturating_sub(t))
    }

    /// Segments open across shards.
    pub fn segment_count(&self) -> usize {
        (0..self.inner.shards.len())
            .map(|i| self.lock(i).segment_count())
            .sum()
    }

    /// A read-only look at an item's metadata without updating it (`me`).
    pub fn peek<R>(&self, key: &[u8], now: u32, f: impl FnOnce(Option<&Item<'_>>) -> R) -> R {
        let hash = hash_key(key);
        let mut shard = self.lock(self.shard_of(hash));
        match shard.lookup(hash, key, now, &self.budget()) {
            Ok(loc) => f(Some(&shard.item(loc))),
            Err(_) => f(None),
        }
    }
}

/// C's `isspace` in the "C" locale (Rust's ASCII whitespace leaves out the vertical tab).
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// A stored value read as a counter by incr/decr, as memcached's `safe_strtoull` reads an
/// item's data: leading whitespace, an optional sign, digits, then the end, a whitespace
/// byte or a NUL, after which anything may follow (so `"9 5"`, which a decr's padding and
/// an append make, counts as 9). A minus sign negates, as C's `strtoull` does; the result
/// is refused only when it reads as negative signed (`-0` is 0, `-5` is not a number).
pub fn parse_counter(v: &[u8]) -> Option<u64> {
    let start = v.iter().position(|&b| !is_c_space(b))?;
    let (neg, rest) = match v[start] {
        b'-' => (true, &v[start + 1..]),
        b'+' => (false, &v[start + 1..]),
        _ => (false, &v[start..]),
    };
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    if end == 0 || rest.get(end).is_some_and(|&b| !is_c_space(b) && b != 0) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &rest[..end] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    match neg {
        true => Some(n.wrapping_neg()).filter(|&n| n as i64 >= 0),
        false => Some(n),
    }
}

#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod resync_tests;
#[cfg(test)]
mod tests;

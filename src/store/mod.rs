//! The item store: sharded hash tables under a hard memory budget.
//!
//! The store speaks in its own words (stored, not stored, exists, not found, a value) and
//! never sees wire bytes. Each operation hashes the key once, locks one shard for the map
//! work only, and returns; nothing waits while a lock is held. Memory is one global budget
//! (`-m`): a write first evicts from its own shard, and only if that shard has nothing left
//! does it walk the others, one lock at a time, so no two shard locks are ever held together.
//!
//! Replication hooks: every item carries a [`Version`]; deletes may leave tombstones; the
//! store can be walked with [`Store::scan`] while serving; and [`Store::subscribe`] reports
//! every change as the resulting item state.

pub mod clock;
pub mod item;
pub mod observe;
pub mod shard;
pub mod stats;
pub mod version;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use clock::Clock;
pub use item::{bits, Item};
pub use observe::{ItemState, Mutation, Subscription};
pub use shard::Miss;
pub use stats::ShardStats;
pub use version::{Hlc, NodeId, Version};

use observe::Observers;
use shard::{hash_key, Shard};

/// memcached's default `-m`, in megabytes.
pub const DEFAULT_LIMIT_MB: usize = 64;
/// memcached's default `-I`.
pub const DEFAULT_ITEM_SIZE_MAX: usize = 1024 * 1024;
/// How long a delete marker is kept when tombstones are on; replication sets it.
pub const DEFAULT_TOMBSTONE_SECS: u32 = 0;

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
    Stored { cas: u64, size: usize },
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
    /// Skip bumping access time, fetched bit and CLOCK bit (mg `u`).
    pub no_update: bool,
    /// New relative expiry (gat, mg `T`).
    pub touch: Option<u32>,
    /// Create an empty item on a miss with this expiry (mg `N`).
    pub vivify: Option<u32>,
    /// Win the recache token if the item expires before this (mg `R`).
    pub recache: Option<u32>,
}

/// What a read saw, before its own update.
pub struct Hit<'a> {
    pub item: &'a Item,
    pub prev_atime: u32,
    pub prev_fetched: bool,
    /// This client won the right to recache (mg `W`).
    pub won: bool,
    /// Another client already won it (mg `Z`).
    pub token_sent: bool,
    pub stale: bool,
    /// The item was created by `vivify`.
    pub created: bool,
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
        created: bool,
    },
    NotFound,
    NotStored,
    Exists,
    NonNumeric,
}

/// A snapshot cursor: the next (shard, slot) to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    shard: usize,
    slot: usize,
}

#[repr(align(128))]
struct Padded(Mutex<Shard>);

struct Inner {
    cfg: StoreConfig,
    shards: Box<[Padded]>,
    mask: u64,
    used: AtomicUsize,
    limit: AtomicUsize,
    evict_hand: AtomicUsize,
    clock: Arc<Clock>,
    observers: Observers,
}

/// A cheap-clone handle over the shards.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// memcached's item total: header, key, value, and 4 bytes for client flags when they are
/// not zero (memcached stores them only then); used for the `-I` check so limits match.
pub fn item_total_size(key_len: usize, value_len: usize, flags: u32) -> usize {
    // memcached: 48-byte header + 8-byte CAS + key + NUL + [flags] + value + CRLF.
    56 + key_len + 1 + value_len + 2 + if flags != 0 { 4 } else { 0 }
}

impl Store {
    pub fn new(cfg: StoreConfig, clock: Arc<Clock>) -> Store {
        let n = cfg.shards.max(1).next_power_of_two();
        let shards = (0..n)
            .map(|_| Padded(Mutex::new(Shard::default())))
            .collect();
        Store {
            inner: Arc::new(Inner {
                limit: AtomicUsize::new(cfg.limit_bytes),
                cfg,
                shards,
                mask: (n - 1) as u64,
                used: AtomicUsize::new(0),
                evict_hand: AtomicUsize::new(0),
                clock,
                observers: Observers::default(),
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
        ((hash >> 40) & self.inner.mask) as usize
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard lock leaves consistent-enough state for a cache.
        self.inner.shards[i]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes charged now.
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

    fn new_stamp(&self, shard: &mut Shard, explicit: Option<u64>) -> u64 {
        match explicit {
            Some(cas) => {
                shard.hlc.observe(cas);
                cas
            }
            None => shard.hlc.tick(self.inner.clock.unix_ms()),
        }
    }

    fn over_budget(&self, need: usize, freed: usize) -> bool {
        self.inner.used.load(Ordering::Relaxed) + need > self.limit_bytes() + freed
    }

    /// Frees memory in shards other than `skip` until `need` more bytes fit or none are left.
    fn evict_elsewhere(&self, need: usize, skip: usize, now: u32) -> bool {
        let n = self.inner.shards.len();
        let mut idle = 0;
        while self.over_budget(need, 0) {
            let i = self.inner.evict_hand.fetch_add(1, Ordering::Relaxed) % n;
            if i == skip {
                continue;
            }
            if self.lock(i).evict_one(now, None, &self.inner.used) {
                idle = 0;
            } else {
                idle += 1;
                if idle >= n {
                    return false;
                }
            }
        }
        true
    }

    fn publish(&self, it: &Item) {
        self.inner
            .observers
            .publish(Mutation::of_item(it, &self.inner.clock));
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
        let used = &self.inner.used;
        let (idx, created) = match shard.lookup(hash, key, now, used) {
            Ok(idx) => (idx, false),
            Err(miss) => match opts.vivify {
                Some(exptime)
                    if self.fits(key.len(), 0, 0)
                        && !self.over_budget(item::charge_for(key.len()), 0) =>
                {
                    let mut it = Item::new(key, &[], 0, exptime, now);
                    it.cas = self.new_stamp(&mut shard, None);
                    it.node = self.inner.cfg.node;
                    let idx = shard.insert(hash, it, used);
                    (idx, true)
                }
                _ => return f(Err(miss)),
            },
        };
        let observed = self.inner.observers.is_observed();
        let it = shard.item_mut(idx);
        let prev_atime = it.atime;
        let prev_fetched = it.has(bits::FETCHED);
        if let Some(t) = opts.touch {
            it.exptime = t;
        }
        let mut won = created;
        if let Some(r) = opts.recache {
            if !it.has(bits::TOKEN_SENT) && !created && it.exptime != 0 && it.exptime < r {
                won = true;
            }
        }
        let token_sent = it.has(bits::TOKEN_SENT);
        let stale = it.has(bits::STALE);
        if stale && !token_sent {
            won = true;
        }
        if won {
            it.set(bits::TOKEN_SENT);
        }
        if !opts.no_update {
            it.atime = now;
            it.set(bits::FETCHED | bits::REFERENCED);
        }
        let it = &*it;
        if observed && (created || opts.touch.is_some()) {
            self.publish(it);
        }
        f(Ok(Hit {
            item: it,
            prev_atime,
            prev_fetched,
            won,
            token_sent,
            stale,
            created,
        }))
    }

    /// Stores an item per `req.mode` and the CAS rules of memcached's `do_store_item`.
    pub fn set(&self, req: &SetRequest<'_>, now: u32) -> Result<SetOutcome, StoreError> {
        if !self.fits(req.key.len(), req.value.len(), req.flags) {
            return Err(StoreError::TooLarge);
        }
        let hash = hash_key(req.key);
        let si = self.shard_of(hash);
        for attempt in 0..2 {
            let mut shard = self.lock(si);
            let used = &self.inner.used;
            let existing = shard.lookup(hash, req.key, now, used).ok();
            // Build the new item, or decide the outcome without storing.
            let mut item = match existing {
                Some(idx) => {
                    let old = shard.item(idx);
                    let cas_match = req.compare_cas.map(|c| c == old.cas);
                    let stale_ok = req.invalidate && req.compare_cas.is_some_and(|c| c < old.cas);
                    match req.mode {
                        SetMode::Add => {
                            shard.item_mut(idx).set(bits::REFERENCED);
                            return Ok(SetOutcome::NotStored);
                        }
                        SetMode::Set | SetMode::Replace => {
                            if cas_match == Some(false) && !stale_ok {
                                return Ok(SetOutcome::Exists);
                            }
                            if cas_match != Some(false) && old.value().len() == req.value.len() {
                                return Ok(self.overwrite(shard, idx, req, now));
                            }
                            let mut it =
                                Item::new(req.key, &[req.value], req.flags, req.exptime, now);
                            if cas_match == Some(false) {
                                it.exptime = old.exptime;
                                it.set(bits::STALE);
                                it.bits |= old.bits & bits::TOKEN_SENT;
                            }
                            it
                        }
                        SetMode::Append | SetMode::Prepend => {
                            if cas_match == Some(false) {
                                return Ok(SetOutcome::Exists);
                            }
                            if !self.fits(
                                req.key.len(),
                                old.value().len() + req.value.len(),
                                old.flags,
                            ) {
                                return Ok(SetOutcome::NotStored);
                            }
                            let parts: [&[u8]; 2] = if req.mode == SetMode::Append {
                                [old.value(), req.value]
                            } else {
                                [req.value, old.value()]
                            };
                            Item::new(req.key, &parts, old.flags, old.exptime, now)
                        }
                    }
                }
                None => {
                    if req.compare_cas.is_some()
                        && matches!(req.mode, SetMode::Set | SetMode::Replace)
                    {
                        return Ok(SetOutcome::NotFound);
                    }
                    match req.mode {
                        SetMode::Set | SetMode::Add => {
                            Item::new(req.key, &[req.value], req.flags, req.exptime, now)
                        }
                        SetMode::Append | SetMode::Prepend => match req.vivify {
                            Some(exptime) => {
                                Item::new(req.key, &[req.value], req.flags, exptime, now)
                            }
                            None => return Ok(SetOutcome::NotStored),
                        },
                        SetMode::Replace => return Ok(SetOutcome::NotStored),
                    }
                }
            };
            if req.key_binary {
                item.set(bits::KEY_BINARY);
            }
            let need = item.charge();
            let freed = existing.map_or(0, |i| shard.item(i).charge());
            while self.over_budget(need, freed) && self.inner.cfg.evict {
                if !shard.evict_one(now, existing, used) {
                    break;
                }
            }
            if self.over_budget(need, freed) {
                if !self.inner.cfg.evict || attempt == 1 {
                    return Err(StoreError::OutOfMemory);
                }
                drop(shard);
                if !self.evict_elsewhere(need, si, now) && self.over_budget(need, freed) {
                    return Err(StoreError::OutOfMemory);
                }
                continue;
            }
            item.cas = self.new_stamp(&mut shard, req.new_cas);
            item.node = self.inner.cfg.node;
            item.set(bits::REFERENCED);
            let size = item.value().len();
            let cas = item.cas;
            // A tombstone under this key is replaced in place (the lookup reports it absent).
            let slot = existing.or_else(|| shard.find(hash, req.key));
            let idx = shard.insert_at(hash, slot, item, used);
            if self.inner.observers.is_observed() {
                let it = shard.item(idx).clone();
                drop(shard);
                self.publish(&it);
            }
            return Ok(SetOutcome::Stored { cas, size });
        }
        Err(StoreError::OutOfMemory)
    }

    /// A set over an item whose value has the same length: the common cache refresh. The
    /// bytes are written in place, with no allocation and no change in memory charged.
    fn overwrite(
        &self,
        mut shard: MutexGuard<'_, Shard>,
        idx: u32,
        req: &SetRequest<'_>,
        now: u32,
    ) -> SetOutcome {
        let cas = self.new_stamp(&mut shard, req.new_cas);
        let mut b = bits::REFERENCED;
        if req.key_binary {
            b |= bits::KEY_BINARY;
        }
        let header = shard::Header {
            cas,
            exptime: req.exptime,
            atime: now,
            flags: req.flags,
            node: self.inner.cfg.node,
            bits: b,
        };
        shard.overwrite(idx, req.value, header);
        self.publish_slot(shard, idx);
        SetOutcome::Stored {
            cas,
            size: req.value.len(),
        }
    }

    /// Removes (or, with tombstones on, marks deleted) an item, or invalidates it (md `I`).
    pub fn delete(&self, req: &DeleteRequest<'_>, now: u32) -> DeleteOutcome {
        let hash = hash_key(req.key);
        let mut shard = self.lock(self.shard_of(hash));
        let used = &self.inner.used;
        let Ok(idx) = shard.lookup(hash, req.key, now, used) else {
            return DeleteOutcome::NotFound;
        };
        if req.compare_cas.is_some_and(|c| c != shard.item(idx).cas) {
            return DeleteOutcome::Exists;
        }
        let stamp = self.new_stamp(&mut shard, req.new_cas);
        let node = self.inner.cfg.node;
        let changed = if req.invalidate || req.strip_value {
            let old = shard.item(idx);
            let mut it = if req.strip_value {
                Item::new(req.key, &[], old.flags, old.exptime, old.atime)
            } else {
                old.clone()
            };
            it.bits = old.bits;
            if req.invalidate {
                if let Some(t) = req.exptime {
                    it.exptime = t;
                }
                it.set(bits::STALE);
                it.clear(bits::TOKEN_SENT);
            }
            it.cas = stamp;
            it.node = node;
            shard.replace_in_place(idx, it, used);
            shard.item(idx).clone()
        } else if self.inner.cfg.tombstone_secs > 0 {
            let mut tomb = Item::new(req.key, &[], 0, now + self.inner.cfg.tombstone_secs, now);
            tomb.set(bits::TOMBSTONE);
            tomb.cas = stamp;
            tomb.node = node;
            shard.insert(hash, tomb, used);
            shard.item(idx).clone()
        } else {
            let mut old = shard.remove(hash, idx, used);
            old.set(bits::TOMBSTONE);
            old.cas = stamp;
            old.node = node;
            old
        };
        drop(shard);
        if self.inner.observers.is_observed() {
            self.publish(&changed);
        }
        DeleteOutcome::Deleted
    }

    /// incr/decr on a decimal value; memcached keeps the length when the number shrinks
    /// (padding with spaces) and reallocates when it grows.
    pub fn arith(&self, req: &ArithRequest<'_>, now: u32) -> ArithOutcome {
        let hash = hash_key(req.key);
        let si = self.shard_of(hash);
        let mut shard = self.lock(si);
        let used = &self.inner.used;
        let idx = match shard.lookup(hash, req.key, now, used) {
            Ok(idx) => idx,
            Err(_) => {
                let Some((exptime, initial)) = req.vivify else {
                    return ArithOutcome::NotFound;
                };
                let mut buf = itoa::Buffer::new();
                let digits = buf.format(initial).as_bytes();
                let need = item::charge_for(req.key.len() + digits.len());
                if self.over_budget(need, 0)
                    && !(self.inner.cfg.evict && shard.evict_one(now, None, used))
                {
                    return ArithOutcome::NotStored;
                }
                let mut it = Item::new(req.key, &[digits], 0, exptime, now);
                it.cas = self.new_stamp(&mut shard, req.new_cas);
                it.node = self.inner.cfg.node;
                let (cas, exptime) = (it.cas, it.exptime);
                let idx = shard.insert(hash, it, used);
                self.publish_slot(shard, idx);
                return ArithOutcome::Value {
                    value: initial,
                    cas,
                    exptime,
                    created: true,
                };
            }
        };
        let old = shard.item(idx);
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
        let mut buf = itoa::Buffer::new();
        let digits = buf.format(value).as_bytes();
        let stamp = self.new_stamp(&mut shard, req.new_cas);
        let node = self.inner.cfg.node;
        let old_len = shard.item(idx).value().len();
        if digits.len() <= old_len {
            let it = shard.item_mut(idx);
            let v = it.value_mut();
            v[..digits.len()].copy_from_slice(digits);
            v[digits.len()..].fill(b' ');
            it.cas = stamp;
            it.node = node;
            if let Some(t) = req.exptime {
                it.exptime = t;
            }
        } else {
            let old = shard.item(idx);
            let mut it = Item::new(
                req.key,
                &[digits],
                old.flags,
                req.exptime.unwrap_or(old.exptime),
                now,
            );
            it.bits = old.bits;
            it.cas = stamp;
            it.node = node;
            shard.replace_in_place(idx, it, used);
        }
        let exptime = shard.item(idx).exptime;
        self.publish_slot(shard, idx);
        ArithOutcome::Value {
            value,
            cas: stamp,
            exptime,
            created: false,
        }
    }

    fn publish_slot(&self, shard: MutexGuard<'_, Shard>, idx: u32) {
        if self.inner.observers.is_observed() {
            let it = shard.item(idx).clone();
            drop(shard);
            self.publish(&it);
        }
    }

    /// Sets a new expiry on a live item.
    pub fn touch(&self, key: &[u8], exptime: u32, now: u32) -> bool {
        self.read(
            key,
            now,
            ReadOptions {
                touch: Some(exptime),
                ..Default::default()
            },
            |r| r.is_ok(),
        )
    }

    /// Invalidates every item now, or at relative second `at`.
    pub fn flush_all(&self, at: Option<u32>, now: u32) {
        let clock = &self.inner.clock;
        for i in 0..self.inner.shards.len() {
            let mut shard = self.lock(i);
            match at {
                Some(t) if t > now => {
                    shard.flush_at = t;
                    let at_ms = clock.unix_of(t) * 1000;
                    shard.flush_before = Hlc::stamp_of_ms(at_ms);
                }
                _ => {
                    shard.flush_at = 0;
                    shard.flush_before = shard.hlc.tick(clock.unix_ms());
                }
            }
        }
    }

    /// Drops expired items in every shard, visiting at most `budget` slots per shard.
    pub fn reclaim(&self, budget: usize, now: u32) -> usize {
        (0..self.inner.shards.len())
            .map(|i| self.lock(i).reclaim(budget, now, &self.inner.used))
            .sum()
    }

    /// The next batch of a snapshot walk, as item states; `None` cursor when done. Items
    /// present for the whole walk are seen exactly once; others may or may not be.
    pub fn scan(&self, cursor: Cursor, max: usize) -> (Vec<Mutation>, Option<Cursor>) {
        let mut out = Vec::new();
        let clock = &self.inner.clock;
        let more = self.walk(cursor, max, |_, it| {
            out.push(Mutation::of_item(it, clock));
            true
        });
        (out, more)
    }

    /// As [`Store::scan`], for items a client could read now (not expired, flushed or
    /// deleted), handed to `f` under their shard's lock (`lru_crawler metadump`).
    pub fn visit_live(
        &self,
        cursor: Cursor,
        max: usize,
        now: u32,
        mut f: impl FnMut(&Item),
    ) -> Option<Cursor> {
        self.walk(cursor, max, |shard, it| {
            let live = !it.is_tombstone() && !it.is_expired(now) && !shard.is_flushed(it, now);
            if live {
                f(it);
            }
            live
        })
    }

    /// Walks shards from `cursor` until `f` has taken `max` items; the cursor to go on
    /// from, or None when every shard has been walked.
    fn walk(
        &self,
        cursor: Cursor,
        max: usize,
        mut f: impl FnMut(&Shard, &Item) -> bool,
    ) -> Option<Cursor> {
        let mut cur = cursor;
        let mut taken = 0;
        while cur.shard < self.inner.shards.len() && taken < max {
            let next = self.lock(cur.shard).visit(cur.slot, max - taken, |s, it| {
                let took = f(s, it);
                taken += took as usize;
                took
            });
            match next {
                Some(slot) => cur.slot = slot,
                None => {
                    cur.shard += 1;
                    cur.slot = 0;
                }
            }
        }
        (cur.shard < self.inner.shards.len()).then_some(cur)
    }

    /// Reports every later change; see [`observe`].
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        self.inner.observers.subscribe(capacity)
    }

    /// Sum of the shards' counters.
    pub fn stats(&self) -> ShardStats {
        let mut total = ShardStats::default();
        for i in 0..self.inner.shards.len() {
            total += self.lock(i).stats;
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

    /// Slots allocated across shards (`stats slabs` describes these).
    pub fn slot_count(&self) -> usize {
        (0..self.inner.shards.len())
            .map(|i| self.lock(i).slot_count())
            .sum()
    }

    /// A read-only look at an item's metadata without updating it (`me`).
    pub fn peek<R>(&self, key: &[u8], now: u32, f: impl FnOnce(Option<&Item>) -> R) -> R {
        let hash = hash_key(key);
        let mut shard = self.lock(self.shard_of(hash));
        match shard.lookup(hash, key, now, &self.inner.used) {
            Ok(idx) => f(Some(shard.item(idx))),
            Err(_) => f(None),
        }
    }
}

/// memcached's `safe_strtoull` on a stored value: optional leading spaces, digits, then the
/// end or whitespace. Empty or non-digit values are not numbers.
pub fn parse_counter(v: &[u8]) -> Option<u64> {
    let start = v.iter().position(|b| !b.is_ascii_whitespace())?;
    let digits = &v[start..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 || !digits[end..].iter().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &digits[..end] {
        n = n.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    Some(n)
}

#[cfg(test)]
mod tests;

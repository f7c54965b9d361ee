//! Applying another node's changes: the state a key reached there, merged by
//! last-writer-wins ([`super::merge`]) into this store.
//!
//! A remote change is taken only if it is newer than everything this node knows of the key:
//! the state it holds (live or a delete marker), the states it forgot ([`super::forgotten`])
//! and the flushes it heard of ([`super::flush`]). A change taken is published to the feed
//! with the node it came from, so it is never sent back there; one not taken changes
//! nothing and is published nowhere, which is what ends the echo in a mesh. Applying the
//! same change twice, late, or out of order therefore leaves the same state. (One
//! exception, which ends too: a state older than one this node dropped is answered with a
//! delete just below the dropped state; see `tell_forgotten`.)

use std::sync::MutexGuard;

use super::item::Meta;
use super::merge::{replaces, stamp_limit};
use super::record::{Kind, Record};
use super::shard::{hash_key, Budget, NoRoom, Shard};
use super::version::{NodeId, Version};
use super::{NeedRoom, Store, StoreError};

/// The state a key reached on another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteState<'a> {
    Live {
        value: &'a [u8],
        flags: u32,
        /// In this store's relative seconds (0: never; 1: already expired): replication
        /// sends the remaining lifetime, so clocks need not agree.
        exptime: u32,
        /// Item bits that are the item's state ([`super::record::CARRIED_BITS`]).
        bits: u8,
    },
    Deleted,
}

/// One change from another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteChange<'a> {
    pub key: &'a [u8],
    pub state: RemoteState<'a>,
    pub version: Version,
    /// The peer it arrived from (not always the node that made it, in a mesh).
    pub origin: NodeId,
}

impl<'a> RemoteChange<'a> {
    /// The change a feed record (live or deleted) carries from `origin`, its expiry already
    /// in this store's relative seconds; None for a flush, which is applied on its own.
    pub fn of_record(rec: &'a Record, exptime: u32, origin: NodeId) -> Option<Self> {
        let state = match rec.kind() {
            Kind::Live => RemoteState::Live {
                value: rec.value(),
                flags: rec.flags(),
                exptime,
                bits: rec.item_bits(),
            },
            Kind::Deleted => RemoteState::Deleted,
            Kind::Flush => return None,
        };
        Some(RemoteChange {
            key: rec.key(),
            state,
            version: rec.version(),
            origin,
        })
    }
}

/// What applying a remote change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The key took the new state.
    Changed,
    /// Already here, or older than the state held: nothing changed.
    Stale,
    /// Older than a state this node dropped (evicted, expired, a delete marker let go):
    /// taking it could bring back what was overwritten or deleted, so it is refused.
    Forgotten,
    /// Written before a flush this node has taken: gone already.
    Flushed,
    /// Newer than what was held, but expired by now: the older state went, nothing new
    /// was stored.
    Expired,
    /// Stamped further ahead of this node's clock than [`super::merge::MAX_AHEAD_MS`].
    FromTheFuture,
    /// A key no client could send (empty, or over 250 bytes): refused.
    BadKey,
}

impl Store {
    /// Applies another node's change to a key (see the module doc).
    pub fn apply(&self, change: &RemoteChange<'_>, now: u32) -> Result<Applied, StoreError> {
        if change.key.is_empty() || change.key.len() > super::record::KEY_MAX {
            return Ok(Applied::BadKey);
        }
        if let RemoteState::Live { value, flags, .. } = change.state {
            if !self.fits(change.key.len(), value.len(), flags) {
                return Err(StoreError::TooLarge);
            }
        }
        self.with_room(now, change.key, |b| self.try_apply(change, now, b))
    }

    fn try_apply(
        &self,
        c: &RemoteChange<'_>,
        now: u32,
        b: &Budget<'_>,
    ) -> Result<Applied, NeedRoom> {
        if c.version.stamp > stamp_limit(self.inner.clock.unix_ms()) {
            return Ok(Applied::FromTheFuture);
        }
        let hash = hash_key(c.key);
        let mut shard = self.lock(self.shard_of(hash));
        let mut held = None;
        if let Some(loc) = shard.find(hash, c.key) {
            let it = shard.item(loc);
            let (dead, bits, version) = (
                it.is_expired(now) || shard.is_flushed(&it, now),
                it.bits,
                it.version(),
            );
            if dead {
                // Dropped as a read would, and remembered.
                shard.count_expired(bits);
                shard.forget(hash, loc, b);
            } else {
                held = Some((loc, version));
            }
        }
        match held {
            Some((_, v)) if !replaces(c.version, v) => return Ok(Applied::Stale),
            None if shard.forgotten.covers(hash, c.version) => {
                if let RemoteState::Live { .. } = c.state {
                    self.tell_forgotten(shard, hash, c);
                }
                return Ok(Applied::Forgotten);
            }
            _ => {}
        }
        if shard.flushes.covers(c.version.stamp, now) {
            return Ok(Applied::Flushed);
        }
        shard.hlc.observe(c.version.stamp);
        let meta = match c.state {
            RemoteState::Live {
                value,
                flags,
                exptime,
                ..
            } if exptime != 0 && exptime <= now => {
                if let Some((loc, _)) = held {
                    shard.remove(hash, loc, b);
                }
                shard.forgotten.raise(hash, c.version);
                if held.is_some() && self.inner.feed.wants(Some(c.origin)) {
                    // Passed on as it came, so nodes further along drop what it replaced.
                    let rec = Record::live(c.key, value, flags, exptime, c.version, Some(c.origin));
                    self.publish(shard, rec);
                }
                return Ok(Applied::Expired);
            }
            RemoteState::Live {
                flags,
                exptime,
                bits,
                ..
            } => {
                let mut m = Meta::new(flags, exptime, now);
                m.bits = bits & super::record::CARRIED_BITS;
                m.cas = c.version.stamp;
                m.node = c.version.node;
                m
            }
            RemoteState::Deleted if !self.replicating() => {
                if let Some((loc, _)) = held {
                    shard.remove(hash, loc, b);
                }
                shard.forgotten.raise(hash, c.version);
                self.publish_deleted(shard, c);
                return Ok(Applied::Changed);
            }
            RemoteState::Deleted if held.is_none_or(|(loc, _)| shard.item(loc).is_tombstone()) => {
                // Nothing live to replace (or only an older marker): remembered without a
                // marker, as a local delete of a key not held is (see `Store::delete_absent`:
                // a node deleting keys that are not cached must not fill its peers with
                // markers). The stamp refuses older writes; the key goes to peers that
                // missed the delete with the shard's next snapshot.
                shard.forget_delete(hash, c.key, c.version, b);
                self.publish_deleted(shard, c);
                return Ok(Applied::Changed);
            }
            RemoteState::Deleted => self.tombstone(c.version, now),
        };
        let value = match c.state {
            RemoteState::Live { value, .. } => value,
            RemoteState::Deleted => &[],
        };
        if let Some((loc, _)) = held {
            if !meta.has(super::bits::TOMBSTONE) && shard.overwrite(loc, value, &meta) {
                self.publish_from(shard, loc, Some(c.origin));
                return Ok(Applied::Changed);
            }
        }
        match shard.put(hash, c.key, &[value], &meta, now, b) {
            Ok(loc) => {
                self.publish_from(shard, loc, Some(c.origin));
                Ok(Applied::Changed)
            }
            Err(NoRoom) if meta.has(super::bits::TOMBSTONE) => {
                // No room for the marker: forgetting the key is as safe.
                shard.forget_delete(hash, c.key, c.version, b);
                self.publish_deleted(shard, c);
                Ok(Applied::Changed)
            }
            Err(NoRoom) => Err(NeedRoom(shard.room_for(c.key.len(), value.len(), &meta))),
        }
    }

    /// The state `key` holds here, live or deleted, as a record (for a peer catching up);
    /// None if nothing, or only something expired or flushed.
    pub fn state_of(&self, key: &[u8], now: u32) -> Option<Record> {
        let hash = hash_key(key);
        let shard = self.lock(self.shard_of(hash));
        let loc = shard.find(hash, key)?;
        let it = shard.item(loc);
        if it.is_expired(now) || shard.is_flushed(&it, now) {
            return None;
        }
        Some(Record::of_item(&it, None))
    }

    /// A peer sent a state of a key older than one this node dropped (it expired here,
    /// or was evicted, or was a delete whose marker went): the peer missed the newer state,
    /// and without word of it would keep the older one for good, as this node refuses it.
    /// So a delete of the key goes to every peer, the sender included, versioned just
    /// below the dropped state ([`super::forgotten::Forgotten::answer`]). A node that holds
    /// the dropped state, or gets it later, keeps it (an eviction stays local); only when
    /// the older state shares the dropped one's stamp is the delete at the dropped state's
    /// own version, as nothing lies between. Only for a
    /// version kept for this key (by a fingerprint of 32 bits, in the per-key table or a
    /// group), not a floor's, which stands for other keys too. The delete also joins the
    /// list of deleted keys that ends every copy of the shard: a record in the feed alone
    /// was lost when the link dropped before it went and the peer got a whole copy next
    /// (the copy's reader starts after it). This node's own version already refuses what
    /// it deletes, so nothing else is kept.
    fn tell_forgotten(&self, mut shard: MutexGuard<'_, Shard>, hash: u64, c: &RemoteChange<'_>) {
        if let Some(version) = shard.forgotten.answer(hash, c.version) {
            shard.deleted.push(c.key, version);
            self.publish(shard, Record::deleted(c.key, version, None));
        }
    }

    fn publish_deleted(&self, shard: MutexGuard<'_, Shard>, c: &RemoteChange<'_>) {
        if self.inner.feed.wants(Some(c.origin)) {
            self.publish(shard, Record::deleted(c.key, c.version, Some(c.origin)));
        }
    }

    /// Applies another node's flush (a [`Record::flush`]): everything stamped below
    /// `before` goes once relative second `at` has come (0: now). False if this node had
    /// it already, or if it is stamped too far ahead to be taken now.
    pub fn apply_flush(
        &self,
        version: Version,
        before: u64,
        at: u32,
        origin: NodeId,
        now: u32,
    ) -> bool {
        // Its stamp is that of its time (or later): bounded like any stamp, at that time.
        let wait_ms = u64::from(at.saturating_sub(now)) * 1000;
        if before > stamp_limit(self.inner.clock.unix_ms().saturating_add(wait_ms)) {
            return false;
        }
        let changed = self.flush_shards(before, at, now);
        if changed {
            self.publish_event(Record::flush(version, before, at, Some(origin)));
        }
        changed
    }
}

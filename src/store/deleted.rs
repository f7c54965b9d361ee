//! Deletes a shard still knows of after letting their markers go: the key and version of
//! each delete marker it evicted, expired, or never wrote (for want of room, or because the
//! delete found no item to replace: see `Store::delete_absent`), the newest kept, in a ring
//! of bytes of bounded size.
//!
//! Why it exists: a peer that missed a delete (a partition that outlasted both the marker
//! and the backlog) is sent the shard again as a snapshot, and a snapshot of what the shard
//! holds says nothing of a key it no longer holds. Were the snapshot the whole story, the
//! peer would keep the deleted key for good. [`super::forgotten`] cannot fill the gap: it
//! keeps versions of fingerprints, not keys, blurs them into groups and floors once eviction
//! floods it, and does not tell a delete from an eviction, and an eviction must stay local
//! (a peer holding a key this node evicted keeps it). So the markers themselves are kept,
//! apart from the segments, once eviction or expiry takes them from there.
//!
//! A snapshot of the shard ([`super::Store::scan`]) ends with these deletes as ordinary
//! delete records; the peer merges them by last-writer-wins like any change, so a key it
//! holds from before the delete goes, and one written after it stays. They are the records
//! every protocol version already reads, so a peer of the previous version gets them too.
//!
//! The other design considered, shipping the forgotten table's per-key entries flagged as
//! deletes, would have needed a new frame, matched keys by fingerprint on the receiving side,
//! and lost the entries to eviction's own under memory pressure, exactly when they matter.
//!
//! Bounded: each entry takes 11 bytes plus its key, and a shard keeps the newest `cap`
//! bytes of them; the store sets their total (a 64th of `-m`) aside from what its segments
//! may take when replicating, so markers, kept here or in segments, stay within `-m`. An
//! entry pushed out leaves its stamp in [`super::forgotten`] (every dropped state does), so
//! no older write of the key comes back here; only a peer away while more deletes than this
//! went by may keep the oldest keys.

use std::collections::VecDeque;

use super::version::{NodeId, Version};

/// stamp u64, node u16, key length u8; then the key.
const HEADER: usize = 11;
/// The least the ring allocates at first.
const FIRST_ALLOC: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct DeletedKeys {
    ring: VecDeque<u8>,
    /// The most bytes the ring holds (and allocates); 0: keeps nothing (no replication).
    cap: usize,
}

impl DeletedKeys {
    /// Keeps at most `cap` bytes of entries from now on.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
        while self.ring.len() > cap {
            self.pop_oldest();
        }
        self.ring.shrink_to(cap);
    }

    /// Bytes of entries held.
    pub fn held_bytes(&self) -> usize {
        self.ring.len()
    }

    /// Notes that `key` was deleted at `version` and its marker is gone; the oldest entries
    /// make room.
    pub fn push(&mut self, key: &[u8], version: Version) {
        let need = HEADER + key.len();
        if key.is_empty() || key.len() > usize::from(u8::MAX) || need > self.cap {
            return;
        }
        while self.ring.len() + need > self.cap {
            self.pop_oldest();
        }
        let len = self.ring.len();
        if len + need > self.ring.capacity() {
            // Grown by doubling, never past the cap.
            let want = (self.ring.capacity() * 2)
                .max(len + need)
                .max(FIRST_ALLOC)
                .min(self.cap);
            self.ring.reserve_exact(want - len);
        }
        self.ring.extend(version.stamp.to_le_bytes());
        self.ring.extend(version.node.0.to_le_bytes());
        self.ring.push_back(key.len() as u8);
        self.ring.extend(key);
    }

    fn pop_oldest(&mut self) {
        let klen = self.ring.get(HEADER - 1).copied().unwrap_or(0);
        let n = (HEADER + usize::from(klen)).min(self.ring.len());
        self.ring.drain(..n);
    }

    /// Hands `f` each entry, oldest first (a key deleted more than once comes more than once).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], Version)) {
        let mut key = [0u8; 255];
        let mut at = 0;
        while at + HEADER <= self.ring.len() {
            let mut head = [0u8; HEADER];
            for (h, b) in head.iter_mut().zip(self.ring.range(at..at + HEADER)) {
                *h = *b;
            }
            let klen = usize::from(head[HEADER - 1]);
            let end = at + HEADER + klen;
            if end > self.ring.len() {
                break;
            }
            for (k, b) in key.iter_mut().zip(self.ring.range(at + HEADER..end)) {
                *k = *b;
            }
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&head[..8]);
            let version = Version {
                stamp: u64::from_le_bytes(stamp),
                node: NodeId(u16::from_le_bytes([head[8], head[9]])),
            };
            f(&key[..klen], version);
            at = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(stamp: u64) -> Version {
        Version {
            stamp,
            node: NodeId(7),
        }
    }

    fn entries(d: &DeletedKeys) -> Vec<(Vec<u8>, Version)> {
        let mut out = Vec::new();
        d.for_each(|k, v| out.push((k.to_vec(), v)));
        out
    }

    #[test]
    fn keeps_nothing_without_a_cap() {
        let mut d = DeletedKeys::default();
        d.push(b"k", v(1));
        assert!(entries(&d).is_empty());
    }

    #[test]
    fn the_newest_entries_stay_within_the_cap() {
        let mut d = DeletedKeys::default();
        d.set_cap(3 * (HEADER + 2));
        for i in 0..5u64 {
            d.push(format!("k{i}").as_bytes(), v(i));
        }
        let got = entries(&d);
        assert_eq!(
            got,
            (2..5u64)
                .map(|i| (format!("k{i}").into_bytes(), v(i)))
                .collect::<Vec<_>>()
        );
        assert!(d.ring.capacity() <= 3 * (HEADER + 2) + 16);
        // A key longer than the whole cap is not kept, and pushes nothing out.
        d.push(&[b'x'; 40], v(9));
        assert_eq!(entries(&d).len(), 3);
    }

    proptest::proptest! {
        /// Whatever is pushed, the ring holds a suffix of it, whole entries, within its cap.
        #[test]
        fn holds_a_suffix_of_what_was_pushed(
            cap in 0usize..600,
            keys in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..251), 0..40),
        ) {
            let mut d = DeletedKeys::default();
            d.set_cap(cap);
            for (i, k) in keys.iter().enumerate() {
                d.push(k, v(i as u64));
            }
            proptest::prop_assert!(d.held_bytes() <= cap);
            let got = entries(&d);
            let fits: Vec<_> = keys
                .iter()
                .enumerate()
                .filter(|(_, k)| HEADER + k.len() <= cap)
                .map(|(i, k)| (k.clone(), v(i as u64)))
                .collect();
            proptest::prop_assert!(fits.ends_with(&got), "not a suffix");
            // The newest entry that fits is always kept.
            proptest::prop_assert_eq!(got.last(), fits.last());
        }
    }
}

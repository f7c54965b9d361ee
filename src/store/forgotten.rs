//! What a shard forgot: the newest stamp of any key state it dropped, per slice of the key
//! space.
//!
//! A cache may forget a key (evict it, expire it, drop its delete marker) but must never
//! bring back an older state of it: were a peer to send a write this node had already seen
//! deleted or overwritten, storing it would resurrect the key. So whenever a shard drops a
//! key's newest state, the mark of that key's slice rises to the state's stamp, and a
//! remote write for a key the shard does not hold is refused unless it is newer than the
//! mark. Slices keep one dropped key from refusing writes to all the others: with 64 per
//! shard, 64 shards give 4096 marks in 32 KB.

const SLICES: usize = 64;

/// Boxed: the marks are read on drops and remote writes only, so they stay out of the cache
/// lines of the shard's hot fields.
#[derive(Debug, Clone)]
pub struct Forgotten {
    marks: Box<[u64; SLICES]>,
}

impl Default for Forgotten {
    fn default() -> Self {
        Forgotten {
            marks: Box::new([0; SLICES]),
        }
    }
}

/// The slice of a key hash: bits the shard (low) and index (high) choices leave alone.
fn slice(hash: u64) -> usize {
    (hash >> 32) as usize % SLICES
}

impl Forgotten {
    /// Notes that a state stamped `stamp` of a key hashing to `hash` was dropped.
    #[inline]
    pub fn raise(&mut self, hash: u64, stamp: u64) {
        let m = &mut self.marks[slice(hash)];
        *m = (*m).max(stamp);
    }

    /// True if a state stamped `stamp` may be older than one dropped: it must be refused
    /// for a key the shard does not hold.
    pub fn covers(&self, hash: u64, stamp: u64) -> bool {
        stamp <= self.marks[slice(hash)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_rise_per_slice_and_never_fall() {
        let mut f = Forgotten::default();
        let (a, b) = (1u64 << 32, 2u64 << 32);
        assert!(!f.covers(a, 1));
        f.raise(a, 10);
        f.raise(a, 5);
        assert!(f.covers(a, 10) && !f.covers(a, 11));
        assert!(!f.covers(b, 1), "another slice is unaffected");
    }
}

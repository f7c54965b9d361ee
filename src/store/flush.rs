//! flush_all as an ordered event: everything stamped below a flush's stamp is gone once the
//! flush's time has come, and nothing stamped above it is touched.
//!
//! Defined by stamps, not by arrival, a flush removes the same items on every node whatever
//! the order in which the flush and the writes around it arrive: a write made before it on
//! any node is older and goes (and is refused if it arrives later), a write made after it
//! is newer and stays. Delayed flushes (`flush_all 60`) take effect at their time on each
//! node, so their effect too depends only on which flushes a node has heard of, never on
//! when: unlike memcached, a later `flush_all` does not cancel one still pending, since
//! the nodes that already passed its time could not undo it.

/// At most this many delayed flushes wait at once; beyond it, the furthest is dropped.
/// Which one that is depends on when each arrived, so nodes agree only below this many.
const MAX_PENDING: usize = 1024;

/// The flushes a shard has heard of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flushes {
    /// Items stamped below this are gone: the latest flush whose time has come.
    below: u64,
    /// Delayed flushes still to come: (relative second, stamp).
    pending: Vec<(u32, u64)>,
}

impl Flushes {
    /// True if an item stamped `stamp` is flushed at relative second `now`.
    #[inline]
    pub fn covers(&self, stamp: u64, now: u32) -> bool {
        stamp < self.below
            || (!self.pending.is_empty()
                && self
                    .pending
                    .iter()
                    .any(|&(at, before)| now >= at && stamp < before))
    }

    /// Everything stamped below this is gone for good.
    pub fn below(&self) -> u64 {
        self.below
    }

    /// The delayed flushes still to come: (relative second, stamp).
    pub fn pending(&self) -> &[(u32, u64)] {
        &self.pending
    }

    /// Takes in a flush of everything stamped below `before`, from relative second `at` on
    /// (0 or past: now). False if it changes nothing: an older or repeated flush.
    pub fn add(&mut self, before: u64, at: u32, now: u32) -> bool {
        self.settle(now);
        if before <= self.below {
            return false;
        }
        if at <= now {
            self.below = before;
            self.pending.retain(|&(_, b)| b > before);
            return true;
        }
        if self.pending.contains(&(at, before)) {
            return false;
        }
        self.pending.push((at, before));
        if self.pending.len() > MAX_PENDING {
            let furthest = (0..self.pending.len()).max_by_key(|&i| self.pending[i]);
            if let Some(i) = furthest {
                self.pending.swap_remove(i);
            }
        }
        true
    }

    /// Folds the delayed flushes whose time has come into [`Flushes::below`].
    pub fn settle(&mut self, now: u32) {
        if self.pending.iter().any(|&(at, _)| at <= now) {
            let due = self.pending.iter().filter(|&&(at, _)| at <= now);
            self.below = due.map(|&(_, b)| b).fold(self.below, u64::max);
            let below = self.below;
            self.pending.retain(|&(at, b)| at > now && b > below);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_immediate_flush_covers_older_stamps_only() {
        let mut f = Flushes::default();
        assert!(!f.covers(0, 10));
        assert!(f.add(100, 0, 10));
        assert!(f.covers(99, 10) && !f.covers(100, 10));
        assert!(!f.add(50, 0, 11), "an older flush changes nothing");
        assert!(!f.add(100, 0, 11), "nor does the same one again");
    }

    #[test]
    fn a_delayed_flush_waits_for_its_time_and_survives_later_ones() {
        let mut f = Flushes::default();
        assert!(f.add(500, 20, 10));
        assert!(!f.covers(1, 19));
        assert!(f.covers(499, 20) && !f.covers(500, 20));
        assert!(f.add(100, 0, 12));
        assert!(f.covers(99, 12) && !f.covers(300, 12));
        assert!(f.covers(300, 20), "the delayed one still comes");
        f.settle(20);
        assert_eq!(f.below(), 500);
        assert!(f.pending.is_empty());
    }

    proptest! {
        /// Which flushes a shard heard of decides what is flushed, not their order.
        #[test]
        fn order_does_not_matter(
            flushes in proptest::collection::vec((1u64..50, 0u32..20), 1..8),
            seed in any::<u64>(),
        ) {
            let mut a = Flushes::default();
            let mut b = Flushes::default();
            for &(before, at) in &flushes {
                a.add(before, at, 5);
            }
            let mut order: Vec<usize> = (0..flushes.len()).collect();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for &i in &order {
                b.add(flushes[i].0, flushes[i].1, 5);
            }
            for now in 5..25 {
                for stamp in 0..55 {
                    prop_assert_eq!(a.covers(stamp, now), b.covers(stamp, now));
                }
            }
        }
    }
}

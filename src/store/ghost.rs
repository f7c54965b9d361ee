//! Ghosts: the keys a shard recently evicted from its probation segments, without their
//! values, so a key that comes back soon skips probation (S3-FIFO's ghost queue).
//!
//! A key evicted unread from probation was either a one-hit wonder or came back too late;
//! when it is stored again while still remembered here, it proved to be the second kind and
//! goes straight to the main segments. The table is direct-mapped: each key's hash picks
//! one slot holding a 16-bit fingerprint, and a newer ghost overwrites an older one. That
//! forgets at random rather than oldest first, costs 2 bytes per slot (one to two slots
//! per item held, the table's size being a power of two: 0.2-0.4 % of memory for 1 KB
//! values) and one memory access per
//! lookup, and a false match (about one lookup in 32,768) only lets a new item skip
//! probation.

/// Slots per item the shard holds. S3-FIFO remembers as many ghosts as its main queue holds
/// items; with random forgetting, a slot per item keeps a ghost for about as long (a
/// ghost outlives half as many evictions after it as there are slots). Two slots per item
/// kept ghosts longer and let more keys skip probation into main: 0.7 % fewer hits on
/// Zipf 0.9 and the same on Zipf 1.1.
const SLOTS_PER_ITEM: usize = 1;
const MIN_SLOTS: usize = 64;
const MAX_SLOTS: usize = 1 << 22;

#[derive(Debug)]
pub struct Ghosts {
    slots: Vec<u16>,
}

impl Default for Ghosts {
    fn default() -> Ghosts {
        Ghosts {
            slots: vec![0; MIN_SLOTS],
        }
    }
}

impl Ghosts {
    /// Resizes the table for a shard holding `items`, when it is off by more than a factor
    /// of four (the ghosts are forgotten then: a resize is rare, as the item count settles
    /// once memory is full).
    pub fn fit(&mut self, items: usize) {
        let want = (items * SLOTS_PER_ITEM)
            .clamp(MIN_SLOTS, MAX_SLOTS)
            .next_power_of_two();
        let have = self.slots.len();
        if want > have * 4 || want * 4 < have {
            self.slots = vec![0; want];
        }
    }

    /// The slot and fingerprint of `hash`, from bits apart from each other and from the
    /// lowest ones, which pick the shard (so all of a shard's keys share them).
    fn place(&self, hash: u64) -> (usize, u16) {
        let slot = (hash >> 12) as usize & (self.slots.len() - 1);
        let print = ((hash >> 48) as u16) | 1;
        (slot, print)
    }

    /// Remembers an evicted key.
    pub fn insert(&mut self, hash: u64) {
        let (slot, print) = self.place(hash);
        self.slots[slot] = print;
    }

    /// Whether `hash` was evicted recently; forgets it if so.
    pub fn take(&mut self, hash: u64) -> bool {
        let (slot, print) = self.place(hash);
        let found = self.slots[slot] == print;
        if found {
            self.slots[slot] = 0;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::shard::hash_key;

    #[test]
    fn a_ghost_is_found_once_and_others_are_not() {
        let mut g = Ghosts::default();
        g.fit(1000);
        assert_eq!(g.slots.len(), 1024);
        let a = hash_key(b"a");
        g.insert(a);
        assert!(!g.take(hash_key(b"b")));
        assert!(g.take(a));
        assert!(!g.take(a), "taken once");
        g.fit(1500);
        assert_eq!(g.slots.len(), 1024, "kept while near the item count");
    }
}

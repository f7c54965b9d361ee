//! A shard's hash index: open addressing over 4-byte item locations, one control byte each.
//!
//! Control bytes hold 7 bits of the hash (or empty/deleted marks) and are matched eight at a
//! time as one `u64`, so a lookup reads one or two cache lines of control bytes and compares
//! keys only on a tag match. It fills to 90 % and grows by a fifth (not a power-of-two table
//! doubling), so its memory per item stays between 5.6 and 6.7 bytes instead of swinging
//! between 5.7 and 11.4. The price is more frequent rehashing, paid by inserts of new keys.

use super::shard::prefetch_line;

const EMPTY: u8 = 0xff;
const DELETED: u8 = 0x80;
const GROUP: usize = 8;
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Where an entry lives in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket(usize);

#[derive(Default)]
pub struct Index {
    ctrl: Vec<u8>,
    locs: Vec<u32>,
    full: usize,
    deleted: usize,
}

fn tag(hash: u64) -> u8 {
    (hash >> 32) as u8 & 0x7f
}

/// Bit 7 of each byte of the result is set where `group` holds `byte` (a rare false match
/// next to a true one is possible; callers compare keys anyway).
fn match_byte(group: u64, byte: u8) -> u64 {
    let x = group ^ (LO * byte as u64);
    x.wrapping_sub(LO) & !x & HI
}

fn match_empty(group: u64) -> u64 {
    group & (group << 1) & HI
}

fn match_free(group: u64) -> u64 {
    group & HI
}

/// Slots of the set bits of a match, lowest first.
fn slots(mut m: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (m != 0).then(|| {
            let i = m.trailing_zeros() as usize / 8;
            m &= m - 1;
            i
        })
    })
}

impl Index {
    pub fn len(&self) -> usize {
        self.full
    }

    pub fn is_empty(&self) -> bool {
        self.full == 0
    }

    fn groups(&self) -> usize {
        self.ctrl.len() / GROUP
    }

    fn group(&self, g: usize) -> u64 {
        let at = g * GROUP;
        let mut b = [0u8; GROUP];
        b.copy_from_slice(&self.ctrl[at..at + GROUP]);
        u64::from_le_bytes(b)
    }

    /// The group a hash starts probing at: the high bits scaled to the group count.
    fn home(&self, hash: u64) -> usize {
        ((hash as u128 * self.groups() as u128) >> 64) as usize
    }

    /// Probes for an entry whose tag matches `hash` and whose location satisfies `eq`.
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<Bucket> {
        let n = self.groups();
        if n == 0 {
            return None;
        }
        let t = tag(hash);
        let mut g = self.home(hash);
        // Control bytes and locations are two arrays, so a lookup that goes to memory misses
        // twice: start loading the home group's locations now, and the second miss overlaps
        // the first instead of following it.
        prefetch_line(self.locs.as_ptr().wrapping_add(g * GROUP) as *const u8);
        for _ in 0..n {
            let group = self.group(g);
            for i in slots(match_byte(group, t)) {
                let b = g * GROUP + i;
                if eq(self.locs[b]) {
                    return Some(Bucket(b));
                }
            }
            if match_empty(group) != 0 {
                return None;
            }
            g = if g + 1 == n { 0 } else { g + 1 };
        }
        None
    }

    /// The locations whose tag matches `hash` in its home group, for prefetching.
    pub fn candidates(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        let (g, m) = if self.groups() == 0 {
            (0, 0)
        } else {
            let g = self.home(hash);
            (g, match_byte(self.group(g), tag(hash)))
        };
        slots(m).map(move |i| self.locs[g * GROUP + i])
    }

    /// Memory a lookup of `hash` reads first: its home group's control bytes and locations.
    pub fn home_lines(&self, hash: u64) -> Option<(*const u8, *const u8)> {
        if self.groups() == 0 {
            return None;
        }
        let at = self.home(hash) * GROUP;
        Some((
            self.ctrl.as_ptr().wrapping_add(at),
            self.locs.as_ptr().wrapping_add(at) as *const u8,
        ))
    }

    pub fn get(&self, b: Bucket) -> u32 {
        self.locs[b.0]
    }

    pub fn set(&mut self, b: Bucket, loc: u32) {
        self.locs[b.0] = loc;
    }

    /// Adds an entry for a key known to be absent. `rehash` gives the hash of a stored
    /// location and `warm` starts loading what `rehash` will read, for when the table grows.
    pub fn insert(&mut self, hash: u64, loc: u32, rehash: impl Fn(u32) -> u64, warm: impl Fn(u32)) {
        if (self.full + self.deleted + 1) * 10 > self.ctrl.len() * 9 {
            self.resize(&rehash, &warm);
        }
        let b = self.free_slot(hash);
        if self.ctrl[b] == DELETED {
            self.deleted -= 1;
        }
        self.ctrl[b] = tag(hash);
        self.locs[b] = loc;
        self.full += 1;
    }

    fn free_slot(&self, hash: u64) -> usize {
        let n = self.groups();
        let mut g = self.home(hash);
        loop {
            if let Some(i) = slots(match_free(self.group(g))).next() {
                return g * GROUP + i;
            }
            g = if g + 1 == n { 0 } else { g + 1 };
        }
    }

    pub fn remove(&mut self, b: Bucket) {
        let g = b.0 / GROUP;
        // A group with an empty slot never made a probe go past it, so a slot there can
        // be emptied; elsewhere it must stay a marker that probes step over.
        self.ctrl[b.0] = if match_empty(self.group(g)) != 0 {
            EMPTY
        } else {
            self.deleted += 1;
            DELETED
        };
        self.full -= 1;
    }

    /// Grows by a fifth when more than half full, else just drops the deleted markers.
    fn resize(&mut self, rehash: &impl Fn(u32) -> u64, warm: &impl Fn(u32)) {
        let slots_now = self.ctrl.len();
        let want = if self.full * 2 >= slots_now {
            slots_now + slots_now / 5
        } else {
            slots_now
        };
        let groups = want.div_ceil(GROUP).max(2);
        let old_ctrl = std::mem::replace(&mut self.ctrl, vec![EMPTY; groups * GROUP]);
        let old_locs = std::mem::replace(&mut self.locs, vec![0; groups * GROUP]);
        self.full = 0;
        self.deleted = 0;
        let live: Vec<u32> = old_ctrl
            .into_iter()
            .zip(old_locs)
            .filter(|&(c, _)| c & 0x80 == 0)
            .map(|(_, loc)| loc)
            .collect();
        // Each rehash reads a key from item memory: load a few ahead so the misses overlap.
        const AHEAD: usize = 16;
        for &loc in live.iter().take(AHEAD) {
            warm(loc);
        }
        for (i, &loc) in live.iter().enumerate() {
            if let Some(&next) = live.get(i + AHEAD) {
                warm(next);
            }
            let hash = rehash(loc);
            let b = self.free_slot(hash);
            self.ctrl[b] = tag(hash);
            self.locs[b] = loc;
            self.full += 1;
        }
    }

    /// Bytes the table holds now.
    pub fn footprint(&self) -> usize {
        self.ctrl.len() * 5
    }

    /// Slots the table has now, taken or not.
    pub fn slots(&self) -> usize {
        self.ctrl.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Locations stand for themselves; their "hash" is a mix of the location.
    fn h(loc: u32) -> u64 {
        (loc as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn insert_find_remove_through_growth() {
        let mut ix = Index::default();
        for loc in 0..10_000u32 {
            ix.insert(h(loc), loc, h, |_| ());
        }
        assert_eq!(ix.len(), 10_000);
        for loc in 0..10_000u32 {
            let b = ix.find(h(loc), |l| l == loc).expect("present");
            assert_eq!(ix.get(b), loc);
        }
        for loc in (0..10_000u32).step_by(2) {
            let b = ix.find(h(loc), |l| l == loc).unwrap();
            ix.remove(b);
        }
        for loc in 0..10_000u32 {
            assert_eq!(ix.find(h(loc), |l| l == loc).is_some(), loc % 2 == 1);
        }
        // Churn: deleted markers are purged by same-size rehashes, so the table stays small.
        let size = ix.footprint();
        for round in 0..20u32 {
            for loc in 0..5_000u32 {
                let l = 100_000 + round * 5_000 + loc;
                ix.insert(h(l), l, h, |_| ());
            }
            for loc in 0..5_000u32 {
                let l = 100_000 + round * 5_000 + loc;
                let b = ix.find(h(l), |x| x == l).unwrap();
                ix.remove(b);
            }
        }
        assert!(ix.footprint() <= size * 2, "{} vs {size}", ix.footprint());
        for loc in (1..10_000u32).step_by(2) {
            assert!(ix.find(h(loc), |l| l == loc).is_some());
        }
    }

    #[test]
    fn growth_is_gradual_and_load_stays_high() {
        let mut ix = Index::default();
        for loc in 0..100_000u32 {
            ix.insert(h(loc), loc, h, |_| ());
            if loc > 1000 {
                let per_item = ix.footprint() as f64 / ix.len() as f64;
                assert!(per_item < 6.8, "{per_item} bytes an item at {loc}");
            }
        }
    }

    #[test]
    fn match_helpers() {
        let g = u64::from_le_bytes([EMPTY, 5, DELETED, 5, 7, EMPTY, 0, 1]);
        assert_eq!(slots(match_byte(g, 5)).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(slots(match_empty(g)).collect::<Vec<_>>(), vec![0, 5]);
        assert_eq!(slots(match_free(g)).collect::<Vec<_>>(), vec![0, 2, 5]);
    }
}

//! Segments: fixed-size buffers that items are appended to, back to back.
//!
//! Packing items into a few large buffers instead of one allocation each removes the
//! allocator's header and rounding per item and lets the index address an item with 4
//! bytes. An item bigger than a quarter segment gets a segment of its own size. Space held
//! by deleted or replaced items comes back when the segment is compacted (see
//! [`super::shard`]); a segment whose items are all gone is freed at once.
//!
//! A large segment's buffer is reference-counted ([`SegBuf`]): a reply that is still being
//! written to a slow client keeps the value alive by holding a reference, as memcached holds
//! a reference to the item, instead of copying it once per reader. Like memcached's item,
//! the buffer counts against `-m` until the last reference goes ([`Large`]), not only while
//! its segment is in the store: values replaced under slow readers take room from the
//! cache, not memory beyond `-m`. Only large segments are shared: small values are cheaper
//! to copy than to count, and a reply's copies are bounded by the connection's output cap.
//! A value a reply holds never changes under it: the shard writes nothing into a held
//! buffer (an item replaced, deleted or touched is written anew, a read's access time is
//! not recorded), and any write that still reaches one goes to a fresh copy.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::item::{self, Base, Fields, Item};

/// A segment's memory: owned for regular segments, shared for large ones.
pub enum SegBuf {
    Owned(Box<[u8]>),
    Shared(Arc<Large>),
}

/// A large segment's buffer, which owns its charge to the budget (`used`): given back when
/// the buffer goes, after its segment has left the store and the last reply holding it is
/// written.
pub struct Large {
    mem: Box<[u8]>,
    used: Arc<AtomicUsize>,
    /// Holds the charge (a copy takes it over: see `clone`).
    charged: AtomicBool,
}

impl Large {
    /// `mem`, whose length the caller has charged to `used`.
    fn new(mem: Box<[u8]>, used: Arc<AtomicUsize>) -> Large {
        Large {
            mem,
            used,
            charged: AtomicBool::new(true),
        }
    }
}

impl Clone for Large {
    /// A copy for a write into a buffer replies still hold: the copy, now the segment's,
    /// takes over the charge, so the segment stays counted once. The shard avoids it: an
    /// item replaced, deleted or given new fields under a reply is written anew and its
    /// old segment dropped unwritten (`Shard::kill`, `overwrite`, `update`), a read's
    /// access time is not recorded (`mark_read`), so the reply keeps the counted buffer.
    fn clone(&self) -> Large {
        if !self.charged.swap(false, Ordering::Relaxed) {
            self.used.fetch_add(self.mem.len(), Ordering::Relaxed);
        }
        Large {
            mem: self.mem.clone(),
            used: self.used.clone(),
            charged: AtomicBool::new(true),
        }
    }
}

impl Drop for Large {
    fn drop(&mut self) {
        if *self.charged.get_mut() {
            self.used.fetch_sub(self.mem.len(), Ordering::Relaxed);
        }
    }
}

impl SegBuf {
    /// A reply holds (part of) this buffer now.
    pub fn is_held(&self) -> bool {
        matches!(self, SegBuf::Shared(arc) if Arc::strong_count(arc) > 1)
    }

    /// A reference to `part` (a slice of this buffer) that outlives the shard's lock, or
    /// None for a regular segment (the caller copies instead).
    pub fn share(&self, part: &[u8]) -> Option<Bytes> {
        let SegBuf::Shared(arc) = self else {
            return None;
        };
        let start = (part.as_ptr() as usize).checked_sub(arc.mem.as_ptr() as usize)?;
        if start + part.len() > arc.mem.len() {
            return None;
        }
        Some(Bytes::from_owner(Held(arc.clone())).slice(start..start + part.len()))
    }
}

/// The owner a shared [`Bytes`] keeps alive.
struct Held(Arc<Large>);

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.0.mem
    }
}

impl Deref for SegBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            SegBuf::Owned(b) => b,
            SegBuf::Shared(a) => &a.mem,
        }
    }
}

impl DerefMut for SegBuf {
    /// Copies a shared buffer that a reply still holds before writing into it.
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            SegBuf::Owned(b) => b,
            SegBuf::Shared(a) => &mut Arc::make_mut(a).mem,
        }
    }
}

/// How far ahead of the items written a segment is made resident.
const POPULATE_STEP: usize = 64 << 10;

/// Faults in the pages under `mem` at once (Linux 5.14's MADV_POPULATE_WRITE); elsewhere, or
/// where the kernel refuses, the pages fault in as they are written, as before.
pub fn populate(mem: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static REFUSED: AtomicBool = AtomicBool::new(false);
        const PAGE: usize = 4096;
        if mem.is_empty() || REFUSED.load(Ordering::Relaxed) {
            return;
        }
        // Whole pages covering `mem`: the first may hold the allocator's header, which is
        // this process's memory too, and writes nothing.
        let start = mem.as_mut_ptr() as usize & !(PAGE - 1);
        let end = mem.as_mut_ptr() as usize + mem.len();
        // SAFETY: the range covers pages of a live allocation this code owns (`mem`), and
        // MADV_POPULATE_WRITE only faults them in as writable, without changing contents.
        let rc = unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc != 0 {
            REFUSED.store(true, Ordering::Relaxed);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = mem;
}

/// Regular segments a shard's budget is cut into (see [`Geometry::for_shard_budget`]).
pub const SEGMENTS_PER_SHARD: usize = 32;
/// A small shard's segments stay at least this big while it still gets
/// [`FEWEST_SEGMENTS`] of them. Smaller segments waste more at their ends (an item that
/// does not fit the room left starts the next one: half an item lost per segment, 7 % of an
/// 8 KiB segment of 1 KB items) and give items over a quarter of one a segment each; at
/// `-m 16 -t 4`, 8 KiB segments had 2-3 % fewer hits than 16 KiB ones.
pub const ROOMY_SEGMENT: usize = 16 << 10;
pub const FEWEST_SEGMENTS: usize = 16;

/// Sizes every shard of a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Capacity of a regular segment; a power of two.
    pub seg_size: usize,
    /// Bits of a location that hold the offset in the segment.
    pub off_bits: u32,
    /// Items encoded larger than this get a segment of their own.
    pub large_min: usize,
}

impl Geometry {
    /// A shard with budget `per_shard` holds 32 to 63 regular segments (sizes are powers of
    /// two): its two active segments (probation's and main's), half full on average, then
    /// leave a thirty-second of the budget empty at most (with four segments, an eighth of
    /// a small `-m` held nothing; with sixteen, a sixteenth: 3 % fewer items), and eviction
    /// takes a thirty-second of a shard at a time. A shard of 256 to 512 KiB takes 16 KiB
    /// segments instead ([`ROOMY_SEGMENT`]), a smaller one sixteen segments, and one under
    /// 64 KiB fewer: segments stay between 4 KiB and 1 MiB (over 64 MiB, more than 63).
    pub fn for_shard_budget(per_shard: usize) -> Geometry {
        let roomy = (per_shard / FEWEST_SEGMENTS).min(ROOMY_SEGMENT);
        let seg_size = (per_shard / SEGMENTS_PER_SHARD)
            .max(roomy)
            .clamp(4096, 1 << 20);
        let seg_size = if seg_size.is_power_of_two() {
            seg_size
        } else {
            seg_size.next_power_of_two() / 2
        };
        Geometry {
            seg_size,
            off_bits: seg_size.trailing_zeros(),
            large_min: seg_size / 4,
        }
    }

    /// How many segments a shard can address.
    pub fn max_segments(&self) -> usize {
        1 << (32 - self.off_bits)
    }

    pub fn loc(&self, seg: u32, off: usize) -> u32 {
        (seg << self.off_bits) | off as u32
    }

    pub fn split(&self, loc: u32) -> (usize, usize) {
        (
            (loc >> self.off_bits) as usize,
            (loc & ((1 << self.off_bits) - 1)) as usize,
        )
    }
}

pub struct Segment {
    pub buf: SegBuf,
    /// End of the written part.
    pub len: usize,
    /// Bytes from the start already made resident ([`Segment::populate_to`]).
    populated: usize,
    pub live_items: usize,
    pub live_bytes: usize,
    /// Order of creation within its shard; a snapshot walk visits segments in this order.
    pub seq: u64,
    /// Order of (re)opening: eviction takes the lowest first.
    pub age: u64,
    /// Compactions so far: a walk inside this segment restarts it when this changes.
    pub gen: u32,
    /// When it was (re)opened, in relative seconds.
    pub opened: u32,
    pub base: Base,
    /// Holds one big item.
    pub large: bool,
    /// In the main queue: holds items that were read while on probation, or came back
    /// soon after their eviction (see [`super::shard`]).
    pub main: bool,
}

impl Segment {
    /// A regular segment of `cap` bytes; its charge to the budget is the shard's to give
    /// back.
    pub fn new(cap: usize, seq: u64, base: Base, now: u32) -> Segment {
        // Zeroed memory comes from fresh pages for big buffers, so the unwritten tail of a
        // segment costs address space, not resident memory.
        let mem = vec![0u8; cap].into_boxed_slice();
        Segment::with(SegBuf::Owned(mem), seq, base, now)
    }

    /// A segment for one large item, of `cap` bytes already charged to `used`: its buffer
    /// gives them back when it goes (see [`Large`]).
    pub fn large(cap: usize, seq: u64, base: Base, now: u32, used: Arc<AtomicUsize>) -> Segment {
        let mut mem = vec![0u8; cap].into_boxed_slice();
        // Its item is written whole at once: the pages are faulted in by one call, not one
        // fault each (a third of a 1 MB set's CPU).
        populate(&mut mem);
        let buf = SegBuf::Shared(Arc::new(Large::new(mem, used)));
        Segment::with(buf, seq, base, now)
    }

    fn with(buf: SegBuf, seq: u64, base: Base, now: u32) -> Segment {
        let large = matches!(buf, SegBuf::Shared(_));
        Segment {
            buf,
            len: 0,
            populated: 0,
            live_items: 0,
            live_bytes: 0,
            seq,
            age: seq,
            gen: 0,
            opened: now,
            base,
            large,
            main: false,
        }
    }

    /// Makes the buffer resident up to past `end` in steps of `POPULATE_STEP`, before
    /// items are written there: one system call instead of a page fault per 4 KB (the
    /// faults were a third of the CPU of a node taking a full copy). Only what is about to
    /// be written, so a segment's unwritten tail still costs no memory.
    #[inline]
    pub fn populate_to(&mut self, end: usize) {
        if end <= self.populated {
            return;
        }
        let SegBuf::Owned(buf) = &mut self.buf else {
            return;
        };
        let to = end.next_multiple_of(POPULATE_STEP).min(buf.len());
        populate(&mut buf[self.populated..to]);
        self.populated = to;
    }

    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    pub fn item(&self, off: usize) -> Item<'_> {
        item::decode(&self.buf[off..], self.base).0
    }

    pub fn key(&self, off: usize) -> &[u8] {
        let f = item::fields(&self.buf[off..]);
        &self.buf[off + f.key_at..off + f.key_at + f.klen]
    }

    /// The live item at or after `off`: its offset, decoded form and layout.
    pub fn next_live(&self, mut off: usize) -> Option<(usize, Item<'_>, Fields)> {
        while off < self.len {
            let (it, f) = item::decode(&self.buf[off..], self.base);
            if !item::is_dead(&self.buf[off..]) {
                return Some((off, it, f));
            }
            off += f.total();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_value_stays_counted_and_survives_writes_into_its_segment() {
        let used = Arc::new(AtomicUsize::new(64));
        let count = || used.load(Ordering::Relaxed);
        let mut seg = Segment::large(64, 1, Base::default(), 0, used.clone());
        seg.buf[..5].copy_from_slice(b"hello");
        let held = seg.buf.share(&seg.buf[..5]).expect("large segments share");
        // The segment goes: the reply's buffer stays counted until the reply is written.
        let copy = seg.buf.share(&seg.buf[..5]).expect("shares again");
        drop(seg);
        assert_eq!(count(), 64);
        drop(held);
        assert_eq!(count(), 64);
        drop(copy);
        assert_eq!(count(), 0);
        // A write while a reply holds the buffer goes to a copy, which takes the charge.
        used.fetch_add(64, Ordering::Relaxed);
        let mut seg = Segment::large(64, 1, Base::default(), 0, used.clone());
        seg.buf[..5].copy_from_slice(b"hello");
        let held = seg.buf.share(&seg.buf[..5]).expect("large segments share");
        seg.buf[..5].copy_from_slice(b"HELLO");
        assert_eq!(&held[..], b"hello");
        assert_eq!(&seg.buf[..5], b"HELLO");
        assert_eq!(count(), 64);
        drop(held);
        assert_eq!(count(), 64);
        drop(seg);
        assert_eq!(count(), 0);
        let small = Segment::new(64, 2, Base::default(), 0);
        assert!(small.buf.share(&small.buf[..5]).is_none());
    }

    #[test]
    fn geometry_scales_with_the_budget() {
        let g = Geometry::for_shard_budget(32 << 20);
        assert_eq!(
            (g.seg_size, g.off_bits, g.large_min),
            (1 << 20, 20, 1 << 18)
        );
        assert_eq!(g.max_segments(), 4096);
        let g = Geometry::for_shard_budget(1 << 20);
        assert_eq!(g.seg_size, 32 << 10);
        let g = Geometry::for_shard_budget(5000);
        assert_eq!(g.seg_size, 4096);
        // A small shard: segments of 16 KiB while there are sixteen of them, rather than
        // thirty-two smaller ones.
        let g = Geometry::for_shard_budget(256 << 10);
        assert_eq!(g.seg_size, 16 << 10);
        let g = Geometry::for_shard_budget(128 << 10);
        assert_eq!(g.seg_size, 8 << 10);
        let g = Geometry::for_shard_budget(64 << 10);
        assert_eq!(g.seg_size, 4 << 10);
        // Not a power of two: the segments get smaller, never fewer than thirty-two.
        let g = Geometry::for_shard_budget(3 << 20);
        assert_eq!(g.seg_size, 64 << 10);
        assert_eq!(g.split(g.loc(7, 1234)), (7, 1234));
    }
}

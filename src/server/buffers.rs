//! Per-worker buffer pool: connections take read and output buffers while they have work
//! and give them back when idle, so an idle connection holds none (memcached does the same
//! with its per-thread read buffer cache).
//!
//! Workers are single-threaded runtimes, so the pool is a thread-local with no locking.
//! Buffers are [`UNIT`] bytes; a connection may grow its own past that (a large value, a
//! long reply), and the growth is charged too. With `-o read_buf_mem_limit=N` the bytes
//! held by a worker's connections are capped at N megabytes split evenly over the workers
//! (at least one unit each), as memcached splits it; a connection that cannot get what it
//! needs is refused (see `connection`). Buffers in the free list are not charged: they are
//! a cache, bounded by `FREE_MAX`, and one grown buffer while large values keep coming.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Size of a pooled buffer (memcached's read buffer size).
pub const UNIT: usize = 16 * 1024;
/// Free buffers kept per kind and worker; more are returned to the allocator.
const FREE_MAX: usize = 64;
/// How long a worker keeps its spare grown read buffer unused (see [`trim`]).
pub const SPARE_IDLE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Pool {
    /// Zero-initialized read buffers of length `UNIT`.
    read: Vec<Vec<u8>>,
    /// Empty output buffers of capacity `UNIT`.
    write: Vec<Vec<u8>>,
    /// One grown read buffer kept for the next large value: reading each one into fresh
    /// memory faulted every page in again (a third of a 1 MB set's CPU, half of an 8 MB
    /// one's). At most `spare_max`; its bytes are stale, not zero.
    spare: Vec<u8>,
    spare_max: usize,
    /// The spare was taken or given since the last [`trim`].
    spare_used: bool,
    /// Bytes held by connections.
    held: usize,
    /// Cap on `held`; 0 is none.
    limit: usize,
    /// Read and output buffers connections hold, and the part of `held` that is output.
    reads_out: usize,
    writes_out: usize,
    write_held: usize,
    /// What [`trim`] last added to [`TOTALS`] for this worker.
    published: Totals,
}

/// All workers' buffers, for `stats` (memcached's `read_buf_*` and `response_obj_*`):
/// each worker adds what changed since its last [`trim`], so the figures lag by at most
/// [`SPARE_IDLE`] and the request path pays nothing for them.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Totals {
    /// Buffers allocated, held by connections or kept free for the next, and their bytes.
    pub count: usize,
    pub bytes: usize,
    /// Bytes of those kept free.
    pub bytes_free: usize,
    /// Output buffers (and reply units under `-o read_buf_mem_limit`) connections hold.
    pub responses: usize,
    pub response_bytes: usize,
}

/// [`Totals`]' figures for all workers together, in [`Totals::figures`]' order.
static TOTALS: [AtomicUsize; 5] = [const { AtomicUsize::new(0) }; 5];

impl Totals {
    fn figures(self) -> [usize; 5] {
        [
            self.count,
            self.bytes,
            self.bytes_free,
            self.responses,
            self.response_bytes,
        ]
    }
}

/// All workers' buffers as of their last [`trim`], this worker's as of now (a `stats`
/// request sees its own buffers, as in memcached).
pub fn totals() -> Totals {
    POOL.with(|p| p.borrow_mut().publish());
    let [count, bytes, bytes_free, responses, response_bytes] =
        TOTALS.each_ref().map(|t| t.load(Ordering::Relaxed));
    Totals {
        count,
        bytes,
        bytes_free,
        responses,
        response_bytes,
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

impl Pool {
    fn charge(&mut self, n: usize) -> bool {
        if self.limit != 0 && self.held + n > self.limit {
            return false;
        }
        self.held += n;
        true
    }

    fn now(&self) -> Totals {
        let free = (self.read.len() + self.write.len()) * UNIT + self.spare.len();
        Totals {
            count: self.reads_out
                + self.writes_out
                + self.read.len()
                + self.write.len()
                + usize::from(!self.spare.is_empty()),
            bytes: self.held + free,
            bytes_free: free,
            responses: self.writes_out,
            response_bytes: self.write_held,
        }
    }

    /// Adds this worker's change since the last call to [`TOTALS`].
    fn publish(&mut self) {
        let now = self.now();
        let figures = now.figures().into_iter().zip(self.published.figures());
        for (total, (now, was)) in TOTALS.iter().zip(figures) {
            // Wrapping: a figure that fell is added as its two's complement.
            total.fetch_add(now.wrapping_sub(was), Ordering::Relaxed);
        }
        self.published = now;
    }
}

/// Sets this worker thread's cap (bytes; 0 for none) and the largest buffer it keeps as
/// a spare (a whole request with the largest value, `-I`).
pub fn init(limit: usize, spare_max: usize) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.limit = limit;
        p.spare_max = spare_max;
    });
}

/// Frees the spare grown buffer when no large value used it since the last call: run
/// every [`SPARE_IDLE`], so a worker holds one only while large values keep coming.
pub fn trim() {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if !p.spare_used {
            p.spare = Vec::new();
        }
        p.spare_used = false;
        p.publish();
    })
}

/// Whether this worker's connections are capped (`-o read_buf_mem_limit`).
pub fn limited() -> bool {
    POOL.with(|p| p.borrow().limit != 0)
}

/// A worker's share of `-o read_buf_mem_limit` (megabytes), at least one unit; 0 is none.
pub fn worker_limit(megabytes: usize, workers: usize) -> usize {
    if megabytes == 0 {
        return 0;
    }
    (megabytes * 1024 * 1024 / workers.max(1)).max(UNIT)
}

/// A read buffer of `UNIT` initialized bytes, or None when the cap is reached.
pub fn take_read() -> Option<Vec<u8>> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if !p.charge(UNIT) {
            return None;
        }
        let b = p.read.pop().unwrap_or_else(|| vec![0; UNIT]);
        p.reads_out += 1;
        Some(b)
    })
}

/// An empty output buffer with `UNIT` capacity, or None when the cap is reached.
pub fn take_write() -> Option<Vec<u8>> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if !p.charge(UNIT) {
            return None;
        }
        let b = p.write.pop().unwrap_or_else(|| Vec::with_capacity(UNIT));
        p.writes_out += 1;
        p.write_held += UNIT;
        Some(b)
    })
}

/// Charges `n` more bytes held by a connection (a read buffer that grew); false over the
/// cap.
pub fn grow(n: usize) -> bool {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.charge(n)
    })
}

/// As [`grow`], for output (a buffer that grew, room for replies).
pub fn grow_write(n: usize) -> bool {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let ok = p.charge(n);
        if ok {
            p.write_held += n;
        }
        ok
    })
}

/// A grown read buffer of `min` to twice `min` bytes kept from an earlier large value,
/// charged whole, or None (none kept, not that size, or over the cap): a small request
/// never sits on (and is charged for) a buffer far larger than itself.
pub fn take_spare(min: usize) -> Option<Vec<u8>> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let len = p.spare.len();
        if len < min || len > 2 * min || !p.charge(len) {
            return None;
        }
        p.spare_used = true;
        p.reads_out += 1;
        Some(std::mem::take(&mut p.spare))
    })
}

/// Uncharges `n` bytes of output (a buffer that shrank, replies gone); `dropped`: a whole
/// output buffer that went without being given back.
pub fn shrink_write(n: usize, dropped: bool) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.held = p.held.saturating_sub(n);
        p.write_held = p.write_held.saturating_sub(n);
        p.writes_out = p.writes_out.saturating_sub(usize::from(dropped));
    })
}

/// Gives a read buffer back; `charged` is what was charged for it.
pub fn give_read(buf: Vec<u8>, charged: usize) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.held = p.held.saturating_sub(charged);
        p.reads_out = p.reads_out.saturating_sub(1);
        if buf.len() == UNIT && p.read.len() < FREE_MAX {
            p.read.push(buf);
        } else if buf.len() > p.spare.len() && buf.len() <= p.spare_max {
            p.spare = buf;
            p.spare_used = true;
        }
    })
}

/// Gives an output buffer back; `charged` is what was charged for it.
pub fn give_write(mut buf: Vec<u8>, charged: usize) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.held = p.held.saturating_sub(charged);
        p.write_held = p.write_held.saturating_sub(charged);
        p.writes_out = p.writes_out.saturating_sub(1);
        if buf.capacity() == UNIT && p.write.len() < FREE_MAX {
            buf.clear();
            p.write.push(buf);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_refuses_and_giving_back_frees() {
        init(2 * UNIT, 0);
        let a = take_read().expect("first");
        let b = take_write().expect("second");
        assert!(take_read().is_none());
        assert!(!grow(1));
        give_read(a, UNIT);
        assert!(grow_write(UNIT));
        shrink_write(UNIT, false);
        give_write(b, UNIT);
        assert!(take_write().is_some() && take_write().is_some());
        assert!(take_write().is_none());
        shrink_write(2 * UNIT, true);
        let a = take_read().expect("reused");
        assert_eq!(a.len(), UNIT);
        give_read(a, UNIT);
        assert_eq!(worker_limit(1, 2), 512 * 1024);
        assert_eq!(worker_limit(1, 1000), UNIT);
        assert_eq!(worker_limit(0, 4), 0);
    }
}

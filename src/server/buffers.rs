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
        Some(b)
    })
}

/// Charges `n` more bytes held by a connection (a buffer that grew); false over the cap.
pub fn grow(n: usize) -> bool {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.charge(n)
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
        Some(std::mem::take(&mut p.spare))
    })
}

/// Uncharges `n` bytes (a buffer that shrank or was dropped).
pub fn shrink(n: usize) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.held = p.held.saturating_sub(n);
    })
}

/// Gives a read buffer back; `charged` is what was charged for it.
pub fn give_read(buf: Vec<u8>, charged: usize) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.held = p.held.saturating_sub(charged);
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
        assert!(grow(UNIT));
        shrink(UNIT);
        give_write(b, UNIT);
        assert!(take_write().is_some() && take_write().is_some());
        assert!(take_write().is_none());
        shrink(2 * UNIT);
        let a = take_read().expect("reused");
        assert_eq!(a.len(), UNIT);
        give_read(a, UNIT);
        assert_eq!(worker_limit(1, 2), 512 * 1024);
        assert_eq!(worker_limit(1, 1000), UNIT);
        assert_eq!(worker_limit(0, 4), 0);
    }
}

//! The server clock, injected into the store so that TTL tests advance time instead of sleeping.
//!
//! Like memcached, item times are "relative seconds": seconds since the process started, plus
//! a small base so that 1 always lies in the past (an item given a negative or already-passed
//! exptime is stored with exptime 1 and is dead at once). Exptimes above 30 days are absolute
//! unix times and are converted here, the only place that knows when the process started.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// protocol.txt "Expiration times": a larger exptime is an absolute unix time.
pub const MAX_RELATIVE_EXPTIME: i64 = 60 * 60 * 24 * 30;

/// Relative time of process start; 1 is reserved for "already expired".
const BASE_SECS: u32 = 2;

/// Wall and relative time, with an offset that tests may advance.
#[derive(Debug)]
pub struct Clock {
    started: Instant,
    started_unix_ms: u64,
    offset_ms: AtomicU64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            started: Instant::now(),
            started_unix_ms,
            offset_ms: AtomicU64::new(0),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Relative seconds now (memcached's `current_time`).
    pub fn now(&self) -> u32 {
        BASE_SECS + (self.elapsed_ms() / 1000) as u32
    }

    /// Milliseconds since the unix epoch, for version stamps.
    pub fn unix_ms(&self) -> u64 {
        self.started_unix_ms + self.elapsed_ms()
    }

    /// Milliseconds since the unix epoch at which relative second `rel` begins here: the
    /// moment a delayed flush due at `rel` takes effect.
    pub fn unix_ms_at(&self, rel: u32) -> u64 {
        self.started_unix_ms + u64::from(rel.saturating_sub(BASE_SECS)) * 1000
    }

    /// Seconds since the unix epoch (`stats time`).
    pub fn unix_secs(&self) -> u64 {
        self.unix_ms() / 1000
    }

    /// Unix time of process start, as memcached computes it (`now - current_time`).
    pub fn process_started_unix(&self) -> u64 {
        (self.started_unix_ms / 1000).saturating_sub(BASE_SECS as u64)
    }

    /// Moves time forward; for tests of expiry.
    pub fn advance(&self, secs: u64) {
        self.offset_ms.fetch_add(secs * 1000, Ordering::Relaxed);
    }

    /// Converts a client exptime to relative time: 0 never expires, negative is already expired,
    /// up to 30 days is an offset, beyond that an absolute unix time.
    pub fn rel_exptime(&self, exptime: i64, now: u32) -> u32 {
        if exptime == 0 {
            return 0;
        }
        if exptime < 0 {
            return 1;
        }
        if exptime > MAX_RELATIVE_EXPTIME {
            let started = self.process_started_unix() as i64;
            if exptime <= started {
                return 1;
            }
            return (exptime - started).min(u32::MAX as i64) as u32;
        }
        now.saturating_add(exptime as u32)
    }

    /// Converts relative time back to unix seconds (0 stays 0: never).
    pub fn unix_of(&self, rel: u32) -> u64 {
        if rel == 0 {
            0
        } else {
            self.process_started_unix() + rel as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptime_rules() {
        let c = Clock::new();
        let now = c.now();
        assert_eq!(c.rel_exptime(0, now), 0);
        assert_eq!(c.rel_exptime(-1, now), 1);
        assert_eq!(c.rel_exptime(10, now), now + 10);
        let abs = c.process_started_unix() as i64 + 100 + MAX_RELATIVE_EXPTIME;
        assert_eq!(c.rel_exptime(abs, now), (100 + MAX_RELATIVE_EXPTIME) as u32);
        // An absolute time in the past is already expired.
        assert_eq!(c.rel_exptime(MAX_RELATIVE_EXPTIME + 1, now), 1);
    }

    #[test]
    fn a_relative_second_begins_at_its_unix_millisecond() {
        let c = Clock::new();
        let now = c.now();
        let ms = c.unix_ms();
        assert!(c.unix_ms_at(now) <= ms && ms < c.unix_ms_at(now + 1));
        c.advance(3);
        assert_eq!(c.unix_ms_at(now + 3), c.unix_ms_at(now) + 3000);
        assert!(c.unix_ms_at(c.now()) <= c.unix_ms());
    }

    #[test]
    fn advance_moves_now() {
        let c = Clock::new();
        let a = c.now();
        c.advance(5);
        assert!(c.now() >= a + 5);
    }
}

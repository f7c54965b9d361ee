//! Request counters and the `stats` command's output.
//!
//! Each connection counts into a plain struct and adds it to the shared atomics once per
//! batch of requests, so the hot path touches no shared cache line per request. Names and
//! order follow memcached 1.6's `stats`; store-side numbers come from the store.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::text::reply::stat;
use crate::store::ShardStats;

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// A connection's counts since its last flush.
        #[derive(Debug, Default, Clone, Copy)]
        pub struct Counts { $(pub $name: u64,)* }

        /// Counts shared by the connections of one worker.
        #[derive(Debug, Default)]
        pub struct SharedCounts { $(pub $name: AtomicU64,)* }

        impl SharedCounts {
            /// Adds a connection's counts and zeroes them.
            pub fn absorb(&self, c: &mut Counts) {
                $( if c.$name != 0 { self.$name.fetch_add(c.$name, Ordering::Relaxed); } )*
                *c = Counts::default();
            }

            pub fn snapshot(&self) -> Counts {
                Counts { $($name: self.$name.load(Ordering::Relaxed),)* }
            }

            pub fn reset(&self) {
                $( self.$name.store(0, Ordering::Relaxed); )*
            }
        }

        impl std::ops::AddAssign for Counts {
            fn add_assign(&mut self, o: Counts) {
                $( self.$name += o.$name; )*
            }
        }

        /// Names of the counters, for the uniqueness test.
        pub const COUNTER_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

counters!(
    cmd_get,
    cmd_set,
    cmd_flush,
    cmd_touch,
    cmd_meta,
    get_hits,
    get_misses,
    delete_misses,
    delete_hits,
    incr_misses,
    incr_hits,
    decr_misses,
    decr_hits,
    cas_misses,
    cas_hits,
    cas_badval,
    touch_hits,
    touch_misses,
    store_too_large,
    store_no_memory,
    auth_cmds,
    auth_errors,
    idle_kicks,
    bytes_read,
    bytes_written,
    conn_yields,
    response_obj_oom,
    read_buf_oom,
    repl_ack_waits,
    repl_ack_timeouts,
    repl_ack_too_large,
);

#[repr(align(128))]
#[derive(Default)]
struct Padded(SharedCounts);

/// One counter block per worker thread, so threads never share a counter cache line;
/// `stats` adds them up.
pub struct PerWorker(Box<[Padded]>);

impl PerWorker {
    pub fn new(workers: usize) -> PerWorker {
        PerWorker((0..workers.max(1)).map(|_| Padded::default()).collect())
    }

    pub fn slot(&self, worker: usize) -> &SharedCounts {
        &self.0[worker % self.0.len()].0
    }

    pub fn sum(&self) -> Counts {
        let mut total = Counts::default();
        for p in self.0.iter() {
            total += p.0.snapshot();
        }
        total
    }

    pub fn reset(&self) {
        for p in self.0.iter() {
            p.0.reset();
        }
    }
}

/// Gauges and process facts the general block needs besides counters.
pub struct General<'a> {
    pub pid: u32,
    pub uptime: u64,
    pub time: u64,
    pub version: &'a str,
    pub rusage_user: f64,
    pub rusage_system: f64,
    pub max_connections: usize,
    pub curr_connections: u64,
    pub total_connections: u64,
    pub rejected_connections: u64,
    pub connection_structures: u64,
    pub limit_maxbytes: usize,
    pub threads: usize,
    /// `-o idle_timeout` is on (memcached then shows `idle_kicks`).
    pub idle_timeout: bool,
    pub counts: Counts,
    pub store: ShardStats,
    pub segments: usize,
    pub watch: super::watcher::WatchStats,
    pub buffers: super::buffers::Totals,
    /// Files kept for other uses than clients (`reserved_fds`).
    pub reserved_fds: u64,
    /// memcached's background work that is on, each showing its own lines as in memcached
    /// (the store has none of these to do: their counts stay 0).
    pub slab_reassign: bool,
    pub lru_crawler: bool,
    pub lru_maintainer: bool,
    /// `-o maxconns_fast` (memcached shows `rejected_connections` only then).
    pub maxconns_fast: bool,
}

/// Writes the general `stats` block (without END).
pub fn write_general(out: &mut Vec<u8>, g: &General<'_>) {
    let c = &g.counts;
    stat(out, "pid", g.pid);
    stat(out, "uptime", g.uptime);
    stat(out, "time", g.time);
    stat(out, "version", g.version);
    stat(out, "pointer_size", usize::BITS);
    let _ = write!(out, "STAT rusage_user {:.6}\r\n", g.rusage_user);
    let _ = write!(out, "STAT rusage_system {:.6}\r\n", g.rusage_system);
    stat(out, "max_connections", g.max_connections);
    stat(out, "curr_connections", g.curr_connections);
    stat(out, "total_connections", g.total_connections);
    if g.maxconns_fast {
        stat(out, "rejected_connections", g.rejected_connections);
    }
    stat(out, "connection_structures", g.connection_structures);
    stat(out, "response_obj_oom", c.response_obj_oom);
    let b = &g.buffers;
    stat(out, "response_obj_count", b.responses);
    stat(out, "response_obj_bytes", b.response_bytes);
    stat(out, "read_buf_count", b.count);
    stat(out, "read_buf_bytes", b.bytes);
    stat(out, "read_buf_bytes_free", b.bytes_free);
    stat(out, "read_buf_oom", c.read_buf_oom);
    stat(out, "reserved_fds", g.reserved_fds);
    for (name, v) in [
        ("cmd_get", c.cmd_get),
        ("cmd_set", c.cmd_set),
        ("cmd_flush", c.cmd_flush),
        ("cmd_touch", c.cmd_touch),
        ("cmd_meta", c.cmd_meta),
        ("get_hits", c.get_hits),
        ("get_misses", c.get_misses),
        ("get_expired", g.store.get_expired),
        ("get_flushed", g.store.get_flushed),
        ("delete_misses", c.delete_misses),
        ("delete_hits", c.delete_hits),
        ("incr_misses", c.incr_misses),
        ("incr_hits", c.incr_hits),
        ("decr_misses", c.decr_misses),
        ("decr_hits", c.decr_hits),
        ("cas_misses", c.cas_misses),
        ("cas_hits", c.cas_hits),
        ("cas_badval", c.cas_badval),
        ("touch_hits", c.touch_hits),
        ("touch_misses", c.touch_misses),
        ("store_too_large", c.store_too_large),
        ("store_no_memory", c.store_no_memory),
        ("auth_cmds", c.auth_cmds),
        ("auth_errors", c.auth_errors),
    ] {
        stat(out, name, v);
    }
    // As in memcached, only when `-o idle_timeout` is on.
    if g.idle_timeout {
        stat(out, "idle_kicks", c.idle_kicks);
    }
    stat(out, "bytes_read", c.bytes_read);
    stat(out, "bytes_written", c.bytes_written);
    stat(out, "limit_maxbytes", g.limit_maxbytes);
    stat(out, "accepting_conns", 1);
    // Listening is never paused here (past -c a client is refused at accept instead).
    stat(out, "listen_disabled_num", 0);
    stat(out, "time_in_listen_disabled_us", 0);
    stat(out, "threads", g.threads);
    stat(out, "conn_yields", c.conn_yields);
    let s = &g.store;
    // All shards' indexes together, as one table of that many slots would be (each grows
    // by itself, under its shard's lock, so none is ever seen expanding).
    stat(out, "hash_power_level", s.hash_slots.max(1).ilog2());
    stat(out, "hash_bytes", s.hash_bytes);
    stat(out, "hash_is_expanding", 0);
    if g.slab_reassign {
        zeros(
            out,
            &[
                "slab_reassign_rescues",
                "slab_reassign_chunk_rescues",
                "slab_reassign_evictions_nomem",
                "slab_reassign_inline_reclaim",
                "slab_reassign_busy_items",
                "slab_reassign_busy_deletes",
                "slab_reassign_running",
                "slabs_moved",
            ],
        );
    }
    if g.lru_crawler {
        stat(out, "lru_crawler_running", 0);
        stat(out, "lru_crawler_starts", 0);
    }
    if g.lru_maintainer {
        stat(out, "lru_maintainer_juggles", 0);
    }
    stat(out, "malloc_fails", 0);
    // Lines are made straight into the watchers' buffers: none is dropped before that.
    stat(out, "log_worker_dropped", 0);
    stat(out, "log_worker_written", g.watch.written);
    stat(out, "log_watcher_skipped", g.watch.skipped);
    stat(out, "log_watcher_sent", g.watch.sent);
    stat(out, "log_watchers", g.watch.watchers);
    stat(out, "unexpected_napi_ids", 0);
    stat(out, "round_robin_fallback", 0);
    stat(out, "bytes", s.bytes);
    stat(out, "curr_items", s.curr_items);
    stat(out, "total_items", s.total_items);
    stat(out, "slab_global_page_pool", 0);
    stat(out, "expired_unfetched", s.expired_unfetched);
    stat(out, "evicted_unfetched", s.evicted_unfetched);
    if g.lru_maintainer {
        stat(out, "evicted_active", 0);
    }
    stat(out, "evictions", s.evictions);
    stat(out, "reclaimed", s.reclaimed);
    // Expired items go when their segment is reclaimed or compacted (`reclaimed`), not by
    // a crawler's walk.
    stat(out, "crawler_reclaimed", 0);
    stat(out, "crawler_items_checked", 0);
    // No item is held by a reference at an LRU tail: there is no LRU tail to walk.
    stat(out, "lrutail_reflocked", 0);
    if g.lru_maintainer {
        // No LRU segments to move items between; evictions are always the writer's own.
        zeros(
            out,
            &[
                "moves_to_cold",
                "moves_to_warm",
                "moves_within_lru",
                "direct_reclaims",
                "lru_bumps_dropped",
            ],
        );
    }
    stat(out, "tombstones", s.tombstones);
    stat(out, "tombstone_bytes", s.tombstone_bytes);
    stat(out, "store_segments", g.segments);
    stat(out, "store_dead_bytes", s.dead_bytes);
}

/// Figures of machinery memcached has and this server does not: always 0.
fn zeros(out: &mut Vec<u8>, names: &[&str]) {
    for name in names {
        stat(out, name, 0);
    }
}

/// CPU time of this process, (user, system) seconds.
pub fn rusage() -> (f64, f64) {
    // SAFETY: getrusage fills the struct we pass and reads nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn counter_names_are_unique_and_memcached_words() {
        let set: HashSet<_> = COUNTER_NAMES.iter().collect();
        assert_eq!(set.len(), COUNTER_NAMES.len());
        for n in COUNTER_NAMES {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
        }
    }

    #[test]
    fn general_block_names_are_unique() {
        let mut out = Vec::new();
        let g = General {
            pid: 1,
            uptime: 2,
            time: 3,
            version: "1.6.0",
            rusage_user: 0.5,
            rusage_system: 0.25,
            max_connections: 10,
            idle_timeout: true,
            curr_connections: 1,
            total_connections: 2,
            rejected_connections: 0,
            connection_structures: 1,
            limit_maxbytes: 64,
            threads: 4,
            counts: Counts::default(),
            store: ShardStats::default(),
            segments: 0,
            watch: Default::default(),
            buffers: Default::default(),
            reserved_fds: 64,
            slab_reassign: true,
            lru_crawler: true,
            lru_maintainer: true,
            maxconns_fast: true,
        };
        write_general(&mut out, &g);
        let text = String::from_utf8(out).unwrap();
        let names: Vec<_> = text.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
        let set: HashSet<_> = names.iter().collect();
        assert_eq!(set.len(), names.len());
        assert!(text.contains("STAT rusage_user 0.500000\r\n"));
    }
}

//! `stats settings`: the configuration in memcached's names, so tooling that reads it works.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::Shared;
use crate::config::Config;
use crate::protocol::command::Tunable;
use crate::protocol::text::reply::stat;

/// memcached's knobs that its commands change at run time (`lru_crawler sleep|tocrawl`,
/// `slabs automove [ratio]`): kept only so `stats settings` shows them as set.
pub struct Tuning {
    crawler_sleep: AtomicU32,
    crawler_tocrawl: AtomicU32,
    slab_automove: AtomicU32,
    /// The ratio's bits (an f64).
    automove_ratio: AtomicU64,
}

impl Tuning {
    /// What `-o` gave, else memcached's defaults (no automove here: level 0).
    pub fn new(c: &Config) -> Tuning {
        let ext = |name| extended(c, name);
        let whole32 = |name, default| whole(ext(name), 1, default) as u32;
        Tuning {
            crawler_sleep: AtomicU32::new(whole32("lru_crawler_sleep", 100)),
            crawler_tocrawl: AtomicU32::new(whole32("lru_crawler_tocrawl", 0)),
            slab_automove: AtomicU32::new(whole32("slab_automove", 0)),
            automove_ratio: AtomicU64::new(fraction(ext("slab_automove_ratio"), 0.8).to_bits()),
        }
    }

    pub fn set(&self, t: Tunable) {
        match t {
            Tunable::CrawlerSleep(us) => self.crawler_sleep.store(us, Ordering::Relaxed),
            Tunable::CrawlerToCrawl(n) => self.crawler_tocrawl.store(n, Ordering::Relaxed),
            Tunable::SlabAutomove(level) => self.slab_automove.store(level, Ordering::Relaxed),
            Tunable::SlabAutomoveRatio(r) => {
                self.automove_ratio.store(r.to_bits(), Ordering::Relaxed);
            }
        }
    }
}

/// The value of `-o name=value`, if given.
fn extended(c: &Config, name: &str) -> Option<String> {
    c.extended
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.clone())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub fn write(sh: &Shared, out: &mut Vec<u8>) {
    let c = &sh.config;
    let ext = |name| extended(c, name);
    let t = &sh.tuning;
    let load = |a: &AtomicU32| a.load(Ordering::Relaxed);
    // Tuning of memcached machinery this server does not have (slab rebalancing, the
    // segmented LRU, the workers' log buffers): what `-o` gave, else memcached's defaults, so tools
    // that read them find them. Whole numbers times `unit` (log buffers are given in
    // kilobytes, shown in bytes); fractions with `places` decimals.
    let given_whole = |out: &mut Vec<u8>, name, unit, default| {
        stat(out, name, whole(ext(name), unit, default));
    };
    let given_fraction = |out: &mut Vec<u8>, name, places, default| {
        stat(
            out,
            name,
            format!("{:.places$}", fraction(ext(name), default)),
        );
    };
    stat(out, "maxbytes", sh.store.limit_bytes());
    stat(out, "maxconns", c.max_connections);
    stat(out, "tcpport", sh.tcp_port());
    stat(out, "udpport", c.listen.udp_port.as_flag());
    stat(
        out,
        "inter",
        if c.listen.addrs.is_empty() {
            "NULL".to_string()
        } else {
            c.listen.addrs.join(",")
        },
    );
    stat(out, "verbosity", sh.verbosity());
    stat(out, "oldest", 0);
    stat(out, "evictions", if c.store.evict { "on" } else { "off" });
    stat(
        out,
        "domain_socket",
        c.listen
            .unix_socket
            .as_ref()
            .map_or("NULL".to_string(), |p| p.display().to_string()),
    );
    stat(out, "umask", format!("{:o}", c.listen.unix_mask));
    stat(out, "shutdown_command", yes_no(c.enable_shutdown));
    stat(out, "growth_factor", format!("{:.2}", c.growth_factor));
    stat(out, "chunk_size", c.chunk_size);
    stat(out, "num_threads", c.threads);
    stat(out, "num_threads_per_udp", c.threads);
    stat(out, "stat_key_prefix", c.prefix_delimiter);
    stat(out, "detail_enabled", yes_no(sh.detail.is_enabled()));
    stat(out, "reqs_per_event", c.reqs_per_event);
    stat(out, "cas_enabled", yes_no(c.cas_enabled));
    stat(out, "tcp_backlog", c.listen.backlog);
    stat(out, "binding_protocol", c.binding_protocol);
    stat(out, "auth_enabled_sasl", yes_no(c.sasl));
    stat(out, "auth_enabled_ascii", yes_no(c.auth_file.is_some()));
    stat(out, "item_size_max", c.store.item_size_max);
    stat(out, "maxconns_fast", "yes");
    stat(
        out,
        "hashpower_init",
        ext("hashpower").unwrap_or_else(|| "0".into()),
    );
    stat(
        out,
        "slab_reassign",
        yes_no(c.extended_switch("slab_reassign", "no_slab_reassign", true)),
    );
    stat(out, "slab_automove", load(&t.slab_automove));
    let ratio = f64::from_bits(t.automove_ratio.load(Ordering::Relaxed));
    stat(out, "slab_automove_ratio", format!("{ratio:.2}"));
    given_whole(out, "slab_automove_window", 1, 30);
    given_whole(out, "slab_chunk_max", 1, 524_288);
    stat(out, "lru_crawler", yes_no(sh.crawler_enabled()));
    stat(out, "lru_crawler_sleep", load(&t.crawler_sleep));
    stat(out, "lru_crawler_tocrawl", load(&t.crawler_tocrawl));
    stat(out, "tail_repair_time", 0);
    stat(out, "flush_enabled", yes_no(c.flush_enabled));
    stat(out, "dump_enabled", "yes");
    stat(out, "hash_algorithm", "foldhash");
    stat(out, "lru_maintainer_thread", "no");
    stat(out, "lru_segmented", "no");
    given_whole(out, "hot_lru_pct", 1, 20);
    given_whole(out, "warm_lru_pct", 1, 40);
    given_fraction(out, "hot_max_factor", 2, 0.2);
    given_fraction(out, "warm_max_factor", 2, 2.0);
    stat(out, "temp_lru", "no");
    stat(out, "temporary_ttl", 0);
    stat(out, "idle_timeout", c.idle_timeout_secs);
    stat(out, "watcher_logbuf_size", c.watcher_buf_bytes);
    given_whole(out, "worker_logbuf_size", 1024, 65_536);
    stat(
        out,
        "read_buf_mem_limit",
        c.read_buf_mem_limit_mb * 1024 * 1024,
    );
    stat(out, "track_sizes", yes_no(sh.sizes_since().is_some()));
    stat(out, "inline_ascii_response", "no");
    given_fraction(out, "slab_automove_freeratio", 3, 0.01);
    stat(out, "num_napi_ids", "(null)");
    stat(out, "shards", sh.store.shard_count());
    stat(out, "eviction_policy", "segment_s3fifo");
    stat(
        out,
        "replication_peer",
        peers_text(c).as_deref().unwrap_or("NULL"),
    );
    stat(out, "replication_port", c.replication.listen_port);
    stat(out, "replication_ack_peers", c.replication.ack_peers);
    stat(out, "memory_file", "(null)");
}

/// An `-o` number shown as memcached keeps it: a whole number times `unit`, or `default`.
fn whole(given: Option<String>, unit: u64, default: u64) -> u64 {
    given
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(default, |n| n.saturating_mul(unit))
}

/// An `-o` fraction, or `default`.
fn fraction(given: Option<String>, default: f64) -> f64 {
    given
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .unwrap_or(default)
}

/// The configured peers, comma-separated; None without any.
fn peers_text(c: &crate::config::Config) -> Option<String> {
    let p = &c.replication.peers;
    (!p.is_empty()).then(|| {
        p.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    })
}

//! `stats settings`: the configuration in memcached's names, so tooling that reads it works.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::Shared;
use crate::config::Config;
use crate::protocol::command::Tunable;
use crate::protocol::text::reply::stat;

/// memcached's knobs that its commands change at run time (`lru_crawler sleep|tocrawl`,
/// `slabs automove [ratio]`, `lru tune|mode|temp_ttl`): kept only so `stats settings`
/// shows them as set.
pub struct Tuning {
    crawler_sleep: AtomicU32,
    crawler_tocrawl: AtomicU32,
    slab_automove: AtomicU32,
    /// The ratio's bits (an f64), as the factors' below.
    automove_ratio: AtomicU64,
    hot_lru_pct: AtomicU32,
    warm_lru_pct: AtomicU32,
    hot_max_factor: AtomicU64,
    warm_max_factor: AtomicU64,
    /// memcached's `lru mode` and `temp_ttl` need its LRU maintainer (`-o
    /// no_lru_maintainer`, `no_modern` stop it); segmented by default with it.
    pub lru_maintainer: bool,
    lru_segmented: AtomicBool,
    pub temp_lru: AtomicBool,
    temporary_ttl: AtomicU32,
}

impl Tuning {
    /// What `-o` gave, else memcached's defaults (`no_modern`'s where given).
    pub fn new(c: &Config) -> Tuning {
        let ext = |name| extended(c, name);
        let whole32 = |name, default| whole(ext(name), 1, default) as u32;
        let factor = |name, default: f64| AtomicU64::new(fraction(ext(name), default).to_bits());
        let lru_maintainer = c.modern_switch("lru_maintainer", "no_lru_maintainer");
        let temp_ttl = ext("temporary_ttl").and_then(|v| v.trim().parse::<u32>().ok());
        Tuning {
            crawler_sleep: AtomicU32::new(whole32("lru_crawler_sleep", 100)),
            crawler_tocrawl: AtomicU32::new(whole32("lru_crawler_tocrawl", 0)),
            slab_automove: AtomicU32::new(whole32("slab_automove", u64::from(c.modern()))),
            automove_ratio: factor("slab_automove_ratio", 0.8),
            hot_lru_pct: AtomicU32::new(whole32("hot_lru_pct", 20)),
            warm_lru_pct: AtomicU32::new(whole32("warm_lru_pct", 40)),
            hot_max_factor: factor("hot_max_factor", 0.2),
            warm_max_factor: factor("warm_max_factor", 2.0),
            lru_maintainer,
            lru_segmented: AtomicBool::new(lru_maintainer),
            temp_lru: AtomicBool::new(temp_ttl.is_some()),
            temporary_ttl: AtomicU32::new(temp_ttl.unwrap_or(61)),
        }
    }

    /// Takes a setting; false where memcached refuses it (`lru mode` and `temp_ttl`
    /// without its LRU maintainer).
    pub fn set(&self, t: Tunable) -> bool {
        let put = |a: &AtomicU64, f: f64| a.store(f.to_bits(), Ordering::Relaxed);
        match t {
            Tunable::CrawlerSleep(us) => self.crawler_sleep.store(us, Ordering::Relaxed),
            Tunable::CrawlerToCrawl(n) => self.crawler_tocrawl.store(n, Ordering::Relaxed),
            Tunable::SlabAutomove(level) => self.slab_automove.store(level, Ordering::Relaxed),
            Tunable::SlabAutomoveRatio(r) => put(&self.automove_ratio, r),
            Tunable::LruTune {
                hot_pct,
                warm_pct,
                hot_factor,
                warm_factor,
            } => {
                self.hot_lru_pct.store(hot_pct, Ordering::Relaxed);
                self.warm_lru_pct.store(warm_pct, Ordering::Relaxed);
                put(&self.hot_max_factor, hot_factor);
                put(&self.warm_max_factor, warm_factor);
            }
            Tunable::LruSegmented(_) | Tunable::TempTtl(_) if !self.lru_maintainer => return false,
            Tunable::LruSegmented(on) => self.lru_segmented.store(on, Ordering::Relaxed),
            Tunable::TempTtl(ttl) => {
                // Negative turns temp_lru off and leaves the ttl as it was.
                self.temp_lru.store(ttl >= 0, Ordering::Relaxed);
                if let Ok(ttl) = u32::try_from(ttl) {
                    self.temporary_ttl.store(ttl, Ordering::Relaxed);
                }
            }
        }
        true
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
    stat(
        out,
        "maxconns_fast",
        yes_no(c.modern_switch("maxconns_fast", "no_maxconns_fast")),
    );
    stat(
        out,
        "hashpower_init",
        ext("hashpower").unwrap_or_else(|| "0".into()),
    );
    stat(
        out,
        "slab_reassign",
        yes_no(c.modern_switch("slab_reassign", "no_slab_reassign")),
    );
    let factor = |a: &AtomicU64| format!("{:.2}", f64::from_bits(a.load(Ordering::Relaxed)));
    stat(out, "slab_automove", load(&t.slab_automove));
    stat(out, "slab_automove_ratio", factor(&t.automove_ratio));
    given_whole(out, "slab_automove_window", 1, 30);
    // `no_modern` makes chunks as large as a page (1 MB), unless -I is larger.
    let chunk_max = if c.modern() || c.store.item_size_max > 1 << 20 {
        524_288
    } else {
        1 << 20
    };
    given_whole(out, "slab_chunk_max", 1, chunk_max);
    stat(out, "lru_crawler", yes_no(sh.crawler_enabled()));
    stat(out, "lru_crawler_sleep", load(&t.crawler_sleep));
    stat(out, "lru_crawler_tocrawl", load(&t.crawler_tocrawl));
    stat(out, "tail_repair_time", 0);
    stat(out, "flush_enabled", yes_no(c.flush_enabled));
    stat(out, "dump_enabled", yes_no(c.dump_enabled));
    stat(out, "hash_algorithm", "foldhash");
    stat(out, "lru_maintainer_thread", yes_no(t.lru_maintainer));
    stat(
        out,
        "lru_segmented",
        yes_no(t.lru_segmented.load(Ordering::Relaxed)),
    );
    stat(out, "hot_lru_pct", load(&t.hot_lru_pct));
    stat(out, "warm_lru_pct", load(&t.warm_lru_pct));
    stat(out, "hot_max_factor", factor(&t.hot_max_factor));
    stat(out, "warm_max_factor", factor(&t.warm_max_factor));
    stat(out, "temp_lru", yes_no(t.temp_lru.load(Ordering::Relaxed)));
    stat(out, "temporary_ttl", load(&t.temporary_ttl));
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

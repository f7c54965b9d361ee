//! `stats settings`: the configuration in memcached's names, so tooling that reads it works.

use super::Shared;
use crate::protocol::text::reply::stat;

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub fn write(sh: &Shared, out: &mut Vec<u8>) {
    let c = &sh.config;
    let ext = |name: &str| {
        c.extended
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
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
    stat(out, "slab_automove", 0);
    // Tuning of memcached machinery this server does not have (slab rebalancing, the
    // segmented LRU, the log watchers): what `-o` gave, else memcached's defaults, so tools
    // that read them find them.
    stat(
        out,
        "slab_automove_ratio",
        fixed(ext("slab_automove_ratio"), 2, 0.8),
    );
    stat(
        out,
        "slab_automove_window",
        whole(ext("slab_automove_window"), 1, 30),
    );
    stat(
        out,
        "slab_chunk_max",
        whole(ext("slab_chunk_max"), 1, 524_288),
    );
    stat(out, "lru_crawler", yes_no(sh.crawler_enabled()));
    stat(
        out,
        "lru_crawler_sleep",
        whole(ext("lru_crawler_sleep"), 1, 100),
    );
    stat(
        out,
        "lru_crawler_tocrawl",
        whole(ext("lru_crawler_tocrawl"), 1, 0),
    );
    stat(out, "tail_repair_time", 0);
    stat(out, "flush_enabled", yes_no(c.flush_enabled));
    stat(out, "dump_enabled", "yes");
    stat(out, "hash_algorithm", "foldhash");
    stat(out, "lru_maintainer_thread", "no");
    stat(out, "lru_segmented", "no");
    stat(out, "hot_lru_pct", whole(ext("hot_lru_pct"), 1, 20));
    stat(out, "warm_lru_pct", whole(ext("warm_lru_pct"), 1, 40));
    stat(out, "hot_max_factor", fixed(ext("hot_max_factor"), 2, 0.2));
    stat(
        out,
        "warm_max_factor",
        fixed(ext("warm_max_factor"), 2, 2.0),
    );
    stat(out, "temp_lru", "no");
    stat(out, "temporary_ttl", 0);
    stat(out, "idle_timeout", c.idle_timeout_secs);
    // Given in kilobytes, shown in bytes.
    stat(
        out,
        "watcher_logbuf_size",
        whole(ext("watcher_logbuf_size"), 1024, 262_144),
    );
    stat(
        out,
        "worker_logbuf_size",
        whole(ext("worker_logbuf_size"), 1024, 65_536),
    );
    stat(
        out,
        "read_buf_mem_limit",
        c.read_buf_mem_limit_mb * 1024 * 1024,
    );
    stat(out, "track_sizes", yes_no(sh.sizes_since().is_some()));
    stat(out, "inline_ascii_response", "no");
    stat(
        out,
        "slab_automove_freeratio",
        fixed(ext("slab_automove_freeratio"), 3, 0.01),
    );
    stat(out, "num_napi_ids", "(null)");
    stat(out, "shards", sh.store.shard_count());
    stat(out, "eviction_policy", "segment_s3fifo");
    stat(
        out,
        "replication_peer",
        peers_text(c).as_deref().unwrap_or("NULL"),
    );
    stat(out, "replication_port", c.replication.listen_port);
    stat(out, "memory_file", "(null)");
}

/// An `-o` number shown as memcached keeps it: a whole number times `unit`, or `default`.
fn whole(given: Option<String>, unit: u64, default: u64) -> u64 {
    given
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(default, |n| n.saturating_mul(unit))
}

/// An `-o` fraction with `places` decimals, or `default`.
fn fixed(given: Option<String>, places: usize, default: f64) -> String {
    let v = given
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .unwrap_or(default);
    format!("{v:.places$}")
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

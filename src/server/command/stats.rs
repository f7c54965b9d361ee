//! stats and its groups (binary `stat` too: the binary reply re-packs these lines).

use super::super::stats::{self, General};
use super::Session;
use crate::protocol::text::reply::{stat, END, OK};

/// Appends memcached's text reply to `stats [group [arg]]`.
pub fn write(s: &mut Session<'_>, group: &[u8], arg: &[u8], out: &mut Vec<u8>) {
    let sh = s.shared;
    // A connection's own counts so far belong in its own stats reply.
    sh.counts.slot(s.worker).absorb(&mut s.counts);
    match group {
        b"" => {
            let (user, system) = stats::rusage();
            let g = General {
                pid: std::process::id(),
                uptime: (s.now as u64).saturating_sub(2),
                time: sh.clock.unix_secs(),
                version: super::super::VERSION,
                rusage_user: user,
                rusage_system: system,
                max_connections: sh.config.max_connections,
                curr_connections: sh.curr_connections(),
                total_connections: sh.total_connections(),
                rejected_connections: sh.rejected_connections(),
                connection_structures: sh.connection_structures(),
                limit_maxbytes: sh.store.limit_bytes(),
                threads: sh.config.threads,
                idle_timeout: sh.config.idle_timeout_secs > 0,
                counts: sh.counts.sum(),
                store: sh.store.stats(),
                segments: sh.store.segment_count(),
                watch: sh.watchers.stats(),
                buffers: crate::server::buffers::totals(),
                reserved_fds: crate::server::process::FILES_BESIDES_CLIENTS,
                slab_reassign: sh.config.modern_switch("slab_reassign", "no_slab_reassign"),
                lru_crawler: sh.crawler_enabled(),
                lru_maintainer: sh.tuning.lru_maintainer,
                maxconns_fast: sh.config.modern_switch("maxconns_fast", "no_maxconns_fast"),
            };
            stats::write_general(out, &g);
            if let Some(r) = sh.replication.get() {
                stat(out, "replication_node_id", r.node().0);
                stat(out, "replication_peers", r.configured().len());
                stat(out, "replication_peers_connected", r.connected());
                stat(out, "replication_role", r.role());
                if r.acknowledged_writes() {
                    let c = &g.counts;
                    stat(out, "replication_ack_waits", c.repl_ack_waits);
                    stat(out, "replication_ack_timeouts", c.repl_ack_timeouts);
                    stat(out, "replication_ack_too_large", c.repl_ack_too_large);
                }
            }
        }
        // Without replication there is no such group, as in memcached (ERROR).
        b"replication" if sh.replication.get().is_some() => {
            if let Some(r) = sh.replication.get() {
                stat(out, "node_id", r.node().0);
                stat(out, "listen", r.listen_addr());
                stat(out, "role", r.role());
                for (addr, state, node) in r.dial_stats() {
                    stat(out, &format!("dial:{addr}:state"), state.name());
                    if let Some(n) = node {
                        stat(out, &format!("dial:{addr}:node"), n.0);
                    }
                }
                for p in r.peer_stats() {
                    let n = p.node.0;
                    let mut peer = |name: &str, value: &dyn std::fmt::Display| {
                        stat(out, &format!("peer:{n}:{name}"), value)
                    };
                    if let Some(a) = &p.listen {
                        peer("listen", a);
                    }
                    peer("state", &p.state.name());
                    if let Some(w) = p.lag_writes {
                        peer("lag_writes", &w);
                        peer("lag_bytes", &p.lag_bytes);
                        peer("lag_ms", &p.lag_ms);
                    }
                    peer("full_syncs", &p.full_syncs);
                    peer("partial_syncs", &p.partial_syncs);
                    peer("shard_resyncs", &p.shard_resyncs);
                    peer("received", &p.received);
                    peer("relayed", &p.relayed);
                    peer("gaps_filled", &p.gaps_filled);
                    if let Some((e, ago)) = &p.last_error {
                        peer("last_error", e);
                        peer("last_error_secs_ago", ago);
                    }
                }
            }
        }
        b"settings" => super::super::settings::write(sh, out),
        b"items" => {
            let st = sh.store.stats();
            if st.curr_items > 0 {
                // memcached's names in its order, its LRU maintainer's only while that is
                // on. The store has no hot, warm or temporary LRU: every item counts as
                // cold (where memcached's eviction takes from), and so does every hit.
                let counts = sh.counts.sum();
                let t = &sh.tuning;
                let segmented = t.lru_maintainer;
                let mut item = |name: &str, v: &dyn std::fmt::Display| {
                    stat(out, &format!("items:1:{name}"), v)
                };
                item("number", &st.curr_items);
                if segmented {
                    item("number_hot", &0);
                    item("number_warm", &0);
                    item("number_cold", &st.curr_items);
                    if t.temp_lru.load(std::sync::atomic::Ordering::Relaxed) {
                        item("number_temp", &0);
                    }
                    item("age_hot", &0);
                    item("age_warm", &0);
                }
                item("age", &sh.store.eviction_front_age(s.now));
                item("mem_requested", &st.bytes);
                item("evicted", &st.evictions);
                item("evicted_nonzero", &0);
                item("evicted_time", &0);
                item("outofmemory", &counts.store_no_memory);
                item("tailrepairs", &0);
                item("reclaimed", &st.reclaimed);
                item("expired_unfetched", &st.expired_unfetched);
                item("evicted_unfetched", &st.evicted_unfetched);
                if segmented {
                    item("evicted_active", &0);
                }
                item("crawler_reclaimed", &0);
                item("crawler_items_checked", &0);
                item("lrutail_reflocked", &0);
                if segmented {
                    item("moves_to_cold", &0);
                    item("moves_to_warm", &0);
                    item("moves_within_lru", &0);
                    item("direct_reclaims", &0);
                    item("hits_to_hot", &0);
                    item("hits_to_warm", &0);
                    item("hits_to_cold", &counts.get_hits);
                    item("hits_to_temp", &0);
                }
            }
        }
        b"slabs" => {
            // One "class": the segment store. Pages are segments; sizes describe it, not
            // memcached's slabs.
            let st = sh.store.stats();
            let segments = sh.store.segment_count();
            if segments > 0 {
                // memcached's names in its order; what its slab pages would say of chunks
                // per page, free chunks and total chunks has no counterpart here and is
                // left out. The class's counters are everything's: there is one class.
                let c = sh.counts.sum();
                stat(out, "1:chunk_size", sh.store.segment_size());
                stat(out, "1:total_pages", segments);
                stat(out, "1:used_chunks", st.curr_items);
                stat(out, "1:free_chunks_end", 0);
                for (name, v) in [
                    ("get_hits", c.get_hits),
                    ("cmd_set", c.cmd_set),
                    ("delete_hits", c.delete_hits),
                    ("incr_hits", c.incr_hits),
                    ("decr_hits", c.decr_hits),
                    ("cas_hits", c.cas_hits),
                    ("cas_badval", c.cas_badval),
                    ("touch_hits", c.touch_hits),
                ] {
                    stat(out, &format!("1:{name}"), v);
                }
            }
            stat(out, "active_slabs", (segments > 0) as u8);
            stat(out, "total_malloced", sh.store.used_bytes());
        }
        b"conns" => sh.write_conns(out),
        b"reset" => {
            sh.counts.reset();
            sh.store.reset_stats();
            sh.detail.clear();
            sh.reset_connection_counts();
            out.extend_from_slice(b"RESET\r\n");
            return;
        }
        b"detail" => {
            match arg {
                b"on" | b"off" => {
                    sh.detail.set_enabled(arg == b"on");
                    out.extend_from_slice(OK);
                }
                b"dump" => sh.detail.dump(out),
                _ => out.extend_from_slice(b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"),
            }
            return;
        }
        b"sizes" => match sh.sizes_since() {
            Some(since) => {
                super::super::dump::write_sizes(&sh.store, sh.sizing(), since, s.now, out);
                return;
            }
            None => stat(out, "sizes_status", "disabled"),
        },
        // One line and no END, as memcached answers them (any argument is ignored).
        b"sizes_enable" if !sh.config.cas_enabled => {
            // memcached's histogram needs CAS values to tell old items from new.
            stat(out, "sizes_status", "error");
            stat(out, "sizes_error", "cas_support_disabled");
            return;
        }
        b"sizes_enable" | b"sizes_disable" => {
            let on = group == b"sizes_enable";
            sh.set_sizes(on);
            stat(out, "sizes_status", if on { "enabled" } else { "disabled" });
            return;
        }
        b"extstore" => {}
        _ => {
            out.extend_from_slice(b"ERROR\r\n");
            return;
        }
    }
    out.extend_from_slice(END);
}

//! From a parsed request to the store and back to reply bytes.
//!
//! This is the one place that knows both sides: it turns client exptimes into store time,
//! calls the store, counts hits and misses the way memcached does, and renders the outcome
//! in the encoding the request came in (text or meta), honouring noreply and `q` here only.

use super::detail::Op;
use super::stats::{self, Counts, General};
use super::Shared;
use crate::protocol::meta::reply::{echo_flags, flag_num, EN, MN};
use crate::protocol::meta::{MetaCmd, MetaRequest};
use crate::protocol::text::reply::{self, stat};
use crate::protocol::text::retrieval::keys;
use crate::protocol::{GetKind, Request};
use crate::store::{
    bits, ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, Miss, ReadOptions, SetMode,
    SetOutcome, SetRequest, StoreError,
};

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Flush and close (quit).
    Close,
    /// Skip this many more bytes of input (a refused data block).
    Swallow(usize),
    /// Flush, then stop the server.
    Shutdown {
        graceful: bool,
    },
    /// Flush, then stream `lru_crawler metadump` lines (`all`: every live item; else none)
    /// and END, then go on reading.
    Dump {
        all: bool,
    },
}

/// One connection's view while it executes a batch.
pub struct Session<'s> {
    pub shared: &'s Shared,
    pub counts: Counts,
    /// Relative seconds, read once per batch.
    pub now: u32,
    /// The worker thread this connection lives on (its counter slot).
    pub worker: usize,
    /// The socket's descriptor, which names the connection in `-vv` logs as in memcached's.
    pub fd: i32,
    /// Passed SASL (`-S`) or ascii (`-Y`) authentication.
    pub authenticated: bool,
}

impl Session<'_> {
    fn exptime(&self, e: i32) -> u32 {
        self.shared.clock.rel_exptime(e as i64, self.now)
    }

    fn cas_out(&self, cas: u64) -> u64 {
        if self.shared.config.cas_enabled {
            cas
        } else {
            0
        }
    }
}

pub fn execute(req: Request<'_>, s: &mut Session<'_>, out: &mut Vec<u8>) -> After {
    match req {
        Request::Get {
            kind,
            exptime,
            keys,
        } => get(s, kind, exptime, keys, out),
        Request::Store {
            mode,
            key,
            flags,
            exptime,
            data,
            cas,
            noreply,
        } => {
            let mut r = SetRequest::new(mode, key, data);
            r.flags = flags;
            r.exptime = s.exptime(exptime);
            r.compare_cas = cas;
            s.shared.detail.record(key, Op::Set);
            let res = store(s, &r, cas.is_some());
            if !noreply {
                out.extend_from_slice(match res {
                    Ok(SetOutcome::Stored { .. }) => reply::STORED,
                    Ok(SetOutcome::NotStored) => reply::NOT_STORED,
                    Ok(SetOutcome::Exists) => reply::EXISTS,
                    Ok(SetOutcome::NotFound) => reply::NOT_FOUND,
                    Err(StoreError::TooLarge) => reply::TOO_LARGE,
                    Err(StoreError::OutOfMemory) => reply::OUT_OF_MEMORY,
                });
            }
            After::Continue
        }
        Request::TooLarge {
            mode,
            key,
            swallow,
            noreply,
            meta,
        } => {
            s.counts.store_too_large += 1;
            if meta.is_none() {
                s.shared.detail.record(key, Op::Set);
            }
            let key = meta.as_ref().map_or(key, |m| m.key.as_ref());
            // memcached drops the old value so a failed set never leaves stale data behind.
            if mode == SetMode::Set || meta.is_some() {
                s.shared.store.delete(
                    &DeleteRequest {
                        key,
                        ..Default::default()
                    },
                    s.now,
                );
            }
            if !noreply {
                out.extend_from_slice(reply::TOO_LARGE);
            }
            After::Swallow(swallow)
        }
        Request::Delete { key, noreply } => {
            s.shared.detail.record(key, Op::Delete);
            let r = s.shared.store.delete(
                &DeleteRequest {
                    key,
                    ..Default::default()
                },
                s.now,
            );
            if r == DeleteOutcome::Deleted {
                s.counts.delete_hits += 1;
            } else {
                s.counts.delete_misses += 1;
            }
            if !noreply {
                out.extend_from_slice(if r == DeleteOutcome::Deleted {
                    reply::DELETED
                } else {
                    reply::NOT_FOUND
                });
            }
            After::Continue
        }
        Request::Arith {
            key,
            incr,
            delta,
            noreply,
        } => {
            let r = s.shared.store.arith(
                &ArithRequest {
                    key,
                    incr,
                    delta,
                    ..Default::default()
                },
                s.now,
            );
            count_arith(&mut s.counts, incr, &r);
            if !noreply {
                match r {
                    ArithOutcome::Value { value, .. } => reply::number(out, value),
                    ArithOutcome::NonNumeric => out.extend_from_slice(reply::NON_NUMERIC),
                    _ => out.extend_from_slice(reply::NOT_FOUND),
                }
            }
            After::Continue
        }
        Request::Touch {
            key,
            exptime,
            noreply,
        } => {
            s.counts.cmd_touch += 1;
            let hit = s.shared.store.touch(key, s.exptime(exptime), s.now);
            if hit {
                s.counts.touch_hits += 1;
            } else {
                s.counts.touch_misses += 1;
            }
            if !noreply {
                out.extend_from_slice(if hit {
                    reply::TOUCHED
                } else {
                    reply::NOT_FOUND
                });
            }
            After::Continue
        }
        Request::FlushAll { delay, noreply } => {
            s.counts.cmd_flush += 1;
            let r: &[u8] = if !s.shared.config.flush_enabled {
                b"CLIENT_ERROR flush_all not allowed\r\n"
            } else if let Some(delay) = delay {
                let at = (delay > 0).then(|| s.exptime(delay));
                s.shared.store.flush_all(at, s.now);
                reply::OK
            } else {
                b"CLIENT_ERROR invalid exptime argument\r\n"
            };
            if !noreply {
                out.extend_from_slice(r);
            }
            After::Continue
        }
        Request::Verbosity { level, noreply } => {
            s.shared.set_verbosity(level.min(2));
            if !noreply {
                out.extend_from_slice(reply::OK);
            }
            After::Continue
        }
        Request::CacheMemlimit { megabytes, noreply } => {
            let r: &[u8] = if megabytes < 8 {
                b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"
            } else {
                s.shared.store.set_limit(megabytes as usize * 1024 * 1024);
                reply::OK
            };
            if !noreply {
                out.extend_from_slice(r);
            }
            After::Continue
        }
        Request::Stats { group, arg } => {
            write_stats(s, group, arg, out);
            After::Continue
        }
        Request::Version => {
            out.extend_from_slice(b"VERSION ");
            out.extend_from_slice(super::VERSION.as_bytes());
            out.extend_from_slice(b"\r\n");
            After::Continue
        }
        Request::Quit => After::Close,
        Request::Shutdown { graceful } => {
            if !s.shared.config.enable_shutdown {
                out.extend_from_slice(b"ERROR: shutdown not enabled\r\n");
                return After::Continue;
            }
            match graceful {
                Some(graceful) => After::Shutdown { graceful },
                None => {
                    out.extend_from_slice(b"CLIENT_ERROR invalid shutdown mode\r\n");
                    After::Continue
                }
            }
        }
        Request::Metadump { all } => After::Dump { all },
        Request::Cachedump { class, limit } => {
            let sh = s.shared;
            super::dump::write_cachedump(&sh.store, &sh.clock, class, limit, s.now, out);
            After::Continue
        }
        Request::Fixed { reply } => {
            out.extend_from_slice(reply);
            After::Continue
        }
        Request::Meta(m) => {
            s.counts.cmd_meta += 1;
            meta(s, m, out);
            After::Continue
        }
    }
}

pub(super) fn count_arith(c: &mut Counts, incr: bool, r: &ArithOutcome) {
    let hit = matches!(
        r,
        ArithOutcome::Value { created: false, .. } | ArithOutcome::NonNumeric
    );
    match (incr, hit) {
        (true, true) => c.incr_hits += 1,
        (true, false) => c.incr_misses += 1,
        (false, true) => c.decr_hits += 1,
        (false, false) => c.decr_misses += 1,
    }
}

fn count_miss(c: &mut Counts, miss: Miss) {
    match miss {
        Miss::Expired => c.get_expired += 1,
        Miss::Flushed => c.get_flushed += 1,
        Miss::Absent => {}
    }
}

/// Counts a read the way memcached does: with a TTL update it is a touch, else a get.
pub(super) fn count_read(c: &mut Counts, touch: bool, hit: Result<(), Miss>) {
    if let Err(m) = hit {
        count_miss(c, m);
    }
    match (touch, hit.is_ok()) {
        (true, true) => c.touch_hits += 1,
        (true, false) => c.touch_misses += 1,
        (false, true) => c.get_hits += 1,
        (false, false) => c.get_misses += 1,
    }
    if touch {
        c.cmd_touch += 1;
    } else {
        c.cmd_get += 1;
    }
}

fn get(s: &mut Session<'_>, kind: GetKind, exptime: i32, list: &[u8], out: &mut Vec<u8>) -> After {
    let opts = ReadOptions {
        touch: kind.touch.then(|| s.exptime(exptime)),
        ..Default::default()
    };
    let cas_enabled = s.shared.config.cas_enabled;
    for key in keys(list) {
        let hit = s.shared.store.read(key, s.now, opts, |r| match r {
            Ok(h) => {
                let it = h.item;
                let cas = kind.cas.then_some(if cas_enabled { it.cas } else { 0 });
                reply::value(out, it.key(), it.flags, it.value(), cas);
                Ok(())
            }
            Err(m) => Err(m),
        });
        count_read(&mut s.counts, kind.touch, hit);
        s.shared.detail.record(key, Op::Get { hit: hit.is_ok() });
    }
    out.extend_from_slice(reply::END);
    After::Continue
}

/// Runs a store request and counts it.
pub(super) fn store(
    s: &mut Session<'_>,
    r: &SetRequest<'_>,
    is_cas: bool,
) -> Result<SetOutcome, StoreError> {
    s.counts.cmd_set += 1;
    let res = s.shared.store.set(r, s.now);
    match res {
        Ok(SetOutcome::Stored { .. }) if is_cas => s.counts.cas_hits += 1,
        Ok(SetOutcome::Exists) if is_cas => s.counts.cas_badval += 1,
        Ok(SetOutcome::NotFound) if is_cas => s.counts.cas_misses += 1,
        Err(StoreError::TooLarge) => s.counts.store_too_large += 1,
        Err(StoreError::OutOfMemory) => s.counts.store_no_memory += 1,
        _ => {}
    }
    res
}

fn end_line(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

fn meta(s: &mut Session<'_>, m: MetaRequest<'_>, out: &mut Vec<u8>) {
    let f = &m.flags;
    let key = m.key.as_ref();
    match m.cmd {
        MetaCmd::Noop => out.extend_from_slice(MN),
        MetaCmd::Debug => {
            let now = s.now;
            s.shared.store.peek(key, now, |it| match it {
                None => out.extend_from_slice(EN),
                Some(it) => {
                    use std::io::Write;
                    out.extend_from_slice(b"ME ");
                    if it.has(bits::KEY_BINARY) {
                        use base64::Engine;
                        out.extend_from_slice(
                            base64::engine::general_purpose::STANDARD
                                .encode(it.key())
                                .as_bytes(),
                        );
                    } else {
                        out.extend_from_slice(it.key());
                    }
                    let exp: i64 = if it.exptime == 0 {
                        -1
                    } else {
                        it.exptime as i64 - now as i64
                    };
                    let _ = write!(
                        out,
                        " exp={} la={} cas={} fetch={} cls=1 size={}\r\n",
                        exp,
                        now.saturating_sub(it.atime),
                        it.cas,
                        if it.has(bits::FETCHED) { "yes" } else { "no" },
                        crate::store::item_total_size(it.key().len(), it.value().len(), it.flags)
                    );
                }
            });
        }
        MetaCmd::Get => meta_get(s, &m, out),
        MetaCmd::Set => {
            let Some(mode) = m.set_mode() else { return };
            let mut r = SetRequest::new(mode, key, m.data);
            r.flags = f.client_flags;
            r.exptime = f.ttl.map_or(0, |t| s.exptime(t));
            r.compare_cas = f.compare_cas;
            r.invalidate = f.invalidate;
            r.new_cas = f.new_cas;
            r.vivify = f.vivify.map(|t| s.exptime(t));
            r.key_binary = f.base64;
            let is_cas = f.compare_cas.is_some();
            let res = store(s, &r, is_cas);
            let (code, cas, size): (&[u8], u64, usize) = match res {
                Ok(SetOutcome::Stored { cas, size }) => (b"HD", cas, size),
                Ok(SetOutcome::NotStored) => (b"NS", 0, 0),
                Ok(SetOutcome::Exists) => (b"EX", 0, 0),
                Ok(SetOutcome::NotFound) => (b"NF", 0, 0),
                Err(StoreError::TooLarge) => {
                    out.extend_from_slice(reply::TOO_LARGE);
                    return;
                }
                Err(StoreError::OutOfMemory) => {
                    out.extend_from_slice(reply::OUT_OF_MEMORY);
                    return;
                }
            };
            if f.quiet && code == b"HD" {
                return;
            }
            out.extend_from_slice(code);
            let cas = s.cas_out(cas);
            echo_flags(out, f.raw, key, f.base64, |c, out| match c {
                b'c' => flag_num(out, b'c', cas),
                b's' if code == b"HD" => flag_num(out, b's', size),
                _ => {}
            });
            end_line(out);
        }
        MetaCmd::Delete => {
            let r = s.shared.store.delete(
                &DeleteRequest {
                    key,
                    compare_cas: f.compare_cas,
                    invalidate: f.invalidate,
                    exptime: f.ttl.map(|t| s.exptime(t)),
                    new_cas: f.new_cas,
                    strip_value: f.strip_value,
                },
                s.now,
            );
            let code: &[u8] = match r {
                DeleteOutcome::Deleted => {
                    s.counts.delete_hits += 1;
                    if f.quiet {
                        return;
                    }
                    b"HD"
                }
                DeleteOutcome::NotFound => {
                    s.counts.delete_misses += 1;
                    b"NF"
                }
                DeleteOutcome::Exists => {
                    s.counts.delete_misses += 1;
                    b"EX"
                }
            };
            out.extend_from_slice(code);
            echo_flags(out, f.raw, key, f.base64, |_, _| {});
            end_line(out);
        }
        MetaCmd::Arith => {
            let incr = m.arith_incr().unwrap_or(true);
            let r = s.shared.store.arith(
                &ArithRequest {
                    key,
                    incr,
                    delta: f.delta,
                    compare_cas: f.compare_cas,
                    vivify: f.vivify.map(|t| (s.exptime(t), f.initial)),
                    exptime: f.ttl.map(|t| s.exptime(t)),
                    new_cas: f.new_cas,
                },
                s.now,
            );
            count_arith(&mut s.counts, incr, &r);
            match r {
                ArithOutcome::Value {
                    value,
                    cas,
                    exptime,
                    ..
                } => {
                    if f.quiet {
                        return;
                    }
                    let mut digits = itoa::Buffer::new();
                    let digits = digits.format(value).as_bytes();
                    if f.value {
                        out.extend_from_slice(b"VA ");
                        out.extend_from_slice(itoa::Buffer::new().format(digits.len()).as_bytes());
                    } else {
                        out.extend_from_slice(b"HD");
                    }
                    let cas = s.cas_out(cas);
                    let now = s.now;
                    echo_flags(out, f.raw, key, f.base64, |c, out| match c {
                        b'c' => flag_num(out, b'c', cas),
                        b't' => ttl_flag(out, exptime, now),
                        _ => {}
                    });
                    end_line(out);
                    if f.value {
                        out.extend_from_slice(digits);
                        end_line(out);
                    }
                }
                ArithOutcome::NonNumeric => out.extend_from_slice(reply::NON_NUMERIC),
                other => {
                    let code: &[u8] = match other {
                        ArithOutcome::NotStored => b"NS",
                        ArithOutcome::Exists => b"EX",
                        _ => b"NF",
                    };
                    out.extend_from_slice(code);
                    echo_flags(out, f.raw, key, f.base64, |_, _| {});
                    end_line(out);
                }
            }
        }
    }
}

fn ttl_flag(out: &mut Vec<u8>, exptime: u32, now: u32) {
    if exptime == 0 {
        out.extend_from_slice(b" t-1");
    } else {
        flag_num(out, b't', exptime.saturating_sub(now));
    }
}

fn meta_get(s: &mut Session<'_>, m: &MetaRequest<'_>, out: &mut Vec<u8>) {
    let f = &m.flags;
    let key = m.key.as_ref();
    let opts = ReadOptions {
        no_update: f.no_update,
        touch: f.ttl.map(|t| s.exptime(t)),
        vivify: f.vivify.map(|t| s.exptime(t)),
        recache: f.recache.map(|t| s.exptime(t)),
    };
    let now = s.now;
    let cas_enabled = s.shared.config.cas_enabled;
    let hit = s.shared.store.read(key, now, opts, |r| {
        let h = match r {
            Ok(h) => h,
            Err(miss) => return Err(miss),
        };
        let it = h.item;
        if f.value {
            out.extend_from_slice(b"VA ");
            out.extend_from_slice(itoa::Buffer::new().format(it.value().len()).as_bytes());
        } else {
            out.extend_from_slice(b"HD");
        }
        let binary = it.has(bits::KEY_BINARY);
        let cas = if cas_enabled { it.cas } else { 0 };
        echo_flags(out, f.raw, it.key(), binary, |c, out| match c {
            b's' => flag_num(out, b's', it.value().len()),
            b't' => ttl_flag(out, it.exptime, now),
            b'c' => flag_num(out, b'c', cas),
            b'f' => flag_num(out, b'f', it.flags),
            b'l' => flag_num(out, b'l', now.saturating_sub(h.prev_atime)),
            b'h' => flag_num(out, b'h', h.prev_fetched as u8),
            _ => {}
        });
        if h.token_sent {
            out.extend_from_slice(b" Z");
        }
        if h.stale {
            out.extend_from_slice(b" X");
        }
        if h.won {
            out.extend_from_slice(b" W");
        }
        end_line(out);
        if f.value {
            out.extend_from_slice(it.value());
            end_line(out);
        }
        Ok(())
    });
    count_read(&mut s.counts, f.ttl.is_some(), hit);
    if hit.is_err() && !f.quiet {
        if f.raw.is_empty() {
            out.extend_from_slice(EN);
        } else {
            out.extend_from_slice(b"EN");
            echo_flags(out, f.raw, key, f.base64, |_, _| {});
            end_line(out);
        }
    }
}

pub(super) fn write_stats(s: &mut Session<'_>, group: &[u8], arg: &[u8], out: &mut Vec<u8>) {
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
                version: super::VERSION,
                rusage_user: user,
                rusage_system: system,
                max_connections: sh.config.max_connections,
                curr_connections: sh.curr_connections(),
                total_connections: sh.total_connections(),
                rejected_connections: sh.rejected_connections(),
                limit_maxbytes: sh.store.limit_bytes(),
                threads: sh.config.threads,
                idle_timeout: sh.config.idle_timeout_secs > 0,
                counts: sh.counts.sum(),
                store: sh.store.stats(),
                segments: sh.store.segment_count(),
            };
            stats::write_general(out, &g);
        }
        b"settings" => super::settings::write(sh, out),
        b"items" => {
            let st = sh.store.stats();
            if st.curr_items > 0 {
                stat(out, "items:1:number", st.curr_items);
                stat(out, "items:1:age", sh.store.eviction_front_age(s.now));
                stat(out, "items:1:evicted", st.evictions);
                stat(out, "items:1:evicted_nonzero", 0);
                stat(out, "items:1:outofmemory", sh.counts.sum().store_no_memory);
                stat(out, "items:1:reclaimed", st.reclaimed);
                stat(out, "items:1:expired_unfetched", st.expired_unfetched);
                stat(out, "items:1:evicted_unfetched", st.evicted_unfetched);
            }
        }
        b"slabs" => {
            // One "class": the segment store. Pages are segments; sizes describe it, not
            // memcached's slabs.
            let st = sh.store.stats();
            let segments = sh.store.segment_count();
            if segments > 0 {
                stat(out, "1:chunk_size", sh.store.segment_size());
                stat(out, "1:total_pages", segments);
                stat(out, "1:used_chunks", st.curr_items);
                stat(out, "1:mem_requested", st.bytes);
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
                    out.extend_from_slice(reply::OK);
                }
                b"dump" => sh.detail.dump(out),
                _ => out.extend_from_slice(b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"),
            }
            return;
        }
        // memcached tracks item sizes only with `-o track_sizes`, which is not built here.
        b"sizes" => stat(out, "sizes_status", "disabled"),
        b"extstore" => {}
        _ => {
            out.extend_from_slice(b"ERROR\r\n");
            return;
        }
    }
    out.extend_from_slice(reply::END);
}

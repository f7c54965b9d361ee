//! Binary protocol requests against the store: the same store calls and counters as text
//! and meta (see `dispatch`), rendered as binary packets. Quiet opcodes stay silent on
//! success (and on a get miss); errors are always answered, in order.

use super::detail::Op;
use super::dispatch::{count_arith, count_read, store, write_stats, After, Session};
use super::output::{self, Output};
use crate::protocol::binary::{op, reply, status, BinRequest};
use crate::store::{
    ArithOutcome, ArithRequest, DeleteOutcome, DeleteRequest, ReadOptions, SetMode, SetOutcome,
    SetRequest, StoreError,
};

/// incr/decr expiration meaning "do not create on a miss".
const NO_CREATE: u32 = 0xffff_ffff;

pub fn execute(req: BinRequest<'_>, s: &mut Session<'_>, out: &mut Output) -> After {
    let h = &req.header;
    let sasl = s.shared.config.sasl;
    if sasl
        && !s.authenticated
        && !matches!(
            h.opcode,
            op::SASL_LIST_MECHS | op::SASL_AUTH | op::SASL_STEP | op::VERSION
        )
    {
        reply::error(out, h, status::AUTH_ERROR);
        return After::Close;
    }
    match req.opcode {
        op::GET | op::GETK | op::GAT | op::GATK | op::TOUCH => get(s, &req, out),
        op::SET | op::ADD | op::REPLACE | op::APPEND | op::PREPEND => set(s, &req, out),
        op::DELETE => {
            s.shared.detail.record(req.key, Op::Delete);
            let compare_cas = (h.cas != 0).then_some(h.cas);
            let r = s.shared.store.delete(
                &DeleteRequest {
                    key: req.key,
                    compare_cas,
                    ..Default::default()
                },
                s.now,
            );
            match r {
                DeleteOutcome::Deleted => {
                    s.counts.delete_hits += 1;
                    if !req.quiet {
                        reply::ok(out, h, 0);
                    }
                }
                DeleteOutcome::Exists => reply::error(out, h, status::KEY_EEXISTS),
                DeleteOutcome::NotFound => {
                    s.counts.delete_misses += 1;
                    reply::error(out, h, status::KEY_ENOENT);
                }
            }
        }
        op::INCREMENT | op::DECREMENT => arith(s, &req, out),
        op::QUIT => {
            if !req.quiet {
                reply::ok(out, h, 0);
            }
            return After::Close;
        }
        op::FLUSH => {
            if !s.shared.config.flush_enabled {
                reply::error(out, h, status::AUTH_ERROR);
            } else {
                s.counts.cmd_flush += 1;
                let delay = req.extra_u32(0);
                let at = (delay > 0).then(|| s.shared.clock.rel_exptime(delay as i64, s.now));
                s.shared.store.flush_all(at, s.now);
                if !req.quiet {
                    reply::ok(out, h, 0);
                }
            }
        }
        op::NOOP | op::VERBOSITY => reply::ok(out, h, 0),
        op::VERSION => reply::response(out, h, status::OK, 0, &[], &[], super::VERSION.as_bytes()),
        op::STAT => stat(s, &req, out),
        op::SASL_LIST_MECHS | op::SASL_AUTH | op::SASL_STEP if !sasl => {
            reply::error(out, h, status::UNKNOWN_COMMAND);
        }
        op::SASL_LIST_MECHS => reply::response(out, h, status::OK, 0, &[], &[], b"PLAIN"),
        op::SASL_AUTH | op::SASL_STEP => {
            s.counts.auth_cmds += 1;
            let ok = req.opcode == op::SASL_AUTH
                && req.key == b"PLAIN"
                && s.shared.credentials.check_plain(req.value);
            if ok {
                s.authenticated = true;
                reply::response(out, h, status::OK, 0, &[], &[], b"Authenticated");
            } else {
                s.counts.auth_errors += 1;
                reply::error(out, h, status::AUTH_ERROR);
            }
        }
        _ => reply::error(out, h, status::UNKNOWN_COMMAND),
    }
    After::Continue
}

fn get(s: &mut Session<'_>, req: &BinRequest<'_>, out: &mut Output) {
    let h = &req.header;
    let touch = matches!(req.opcode, op::GAT | op::GATK | op::TOUCH);
    let with_key = matches!(req.opcode, op::GETK | op::GATK);
    let with_value = req.opcode != op::TOUCH;
    let opts = ReadOptions {
        touch: touch.then(|| s.shared.clock.rel_exptime(req.extra_u32(0) as i64, s.now)),
        ..Default::default()
    };
    let cas_enabled = s.shared.config.cas_enabled;
    let hit = s.shared.store.read(req.key, s.now, opts, |r| {
        let hit = r?;
        let it = hit.item;
        let cas = if cas_enabled { it.cas } else { 0 };
        let key: &[u8] = if with_key { it.key() } else { &[] };
        let value: &[u8] = if with_value { it.value() } else { &[] };
        // [stream] A large value is queued by reference, not copied.
        let shared = if with_value { hit.share_value() } else { None };
        let extras = it.flags.to_be_bytes();
        output::binary_value(out, h, cas, &extras, key, value, shared);
        Ok(())
    });
    count_read(&mut s.counts, touch, hit);
    s.shared
        .detail
        .record(req.key, Op::Get { hit: hit.is_ok() });
    if hit.is_err() && !req.quiet {
        if with_key {
            // memcached answers a getk miss with the key and no text.
            reply::response(out, h, status::KEY_ENOENT, 0, &[], req.key, &[]);
        } else {
            reply::error(out, h, status::KEY_ENOENT);
        }
    }
}

fn set(s: &mut Session<'_>, req: &BinRequest<'_>, out: &mut Vec<u8>) {
    let h = &req.header;
    let mode = match req.opcode {
        op::ADD => SetMode::Add,
        op::REPLACE => SetMode::Replace,
        op::APPEND => SetMode::Append,
        op::PREPEND => SetMode::Prepend,
        _ => SetMode::Set,
    };
    let is_cas = h.cas != 0;
    // memcached turns any set/add/replace carrying a CAS into a cas command.
    let mode = if is_cas && mode == SetMode::Add {
        SetMode::Set
    } else {
        mode
    };
    let mut r = SetRequest::new(mode, req.key, req.value);
    if !matches!(mode, SetMode::Append | SetMode::Prepend) {
        r.flags = req.extra_u32(0);
        r.exptime = s.shared.clock.rel_exptime(req.extra_u32(4) as i64, s.now);
    }
    r.compare_cas = is_cas.then_some(h.cas);
    s.shared.detail.record(req.key, Op::Set);
    let st = match store(s, &r, is_cas) {
        Ok(SetOutcome::Stored { cas, .. }) => {
            if !req.quiet {
                let cas = if s.shared.config.cas_enabled { cas } else { 0 };
                reply::ok(out, h, cas);
            }
            return;
        }
        Ok(SetOutcome::Exists) => status::KEY_EEXISTS,
        Ok(SetOutcome::NotFound) => status::KEY_ENOENT,
        Ok(SetOutcome::NotStored) => match req.opcode {
            op::ADD => status::KEY_EEXISTS,
            op::REPLACE => status::KEY_ENOENT,
            _ => status::NOT_STORED,
        },
        Err(StoreError::TooLarge) => status::E2BIG,
        Err(StoreError::OutOfMemory) => status::ENOMEM,
    };
    reply::error(out, h, st);
}

fn arith(s: &mut Session<'_>, req: &BinRequest<'_>, out: &mut Vec<u8>) {
    let h = &req.header;
    let incr = req.opcode == op::INCREMENT;
    let expiration = req.extra_u32(16);
    let r = s.shared.store.arith(
        &ArithRequest {
            key: req.key,
            incr,
            delta: req.extra_u64(0),
            compare_cas: (h.cas != 0).then_some(h.cas),
            vivify: (expiration != NO_CREATE).then(|| {
                (
                    s.shared.clock.rel_exptime(expiration as i64, s.now),
                    req.extra_u64(8),
                )
            }),
            ..Default::default()
        },
        s.now,
    );
    count_arith(&mut s.counts, incr, &r);
    match r {
        ArithOutcome::Value { value, cas, .. } => {
            if !req.quiet {
                let cas = if s.shared.config.cas_enabled { cas } else { 0 };
                reply::response(out, h, status::OK, cas, &[], &[], &value.to_be_bytes());
            }
        }
        ArithOutcome::NonNumeric => reply::error(out, h, status::DELTA_BADVAL),
        ArithOutcome::Exists => reply::error(out, h, status::KEY_EEXISTS),
        ArithOutcome::NotStored => reply::error(out, h, status::NOT_STORED),
        ArithOutcome::NotFound => reply::error(out, h, status::KEY_ENOENT),
    }
}

/// `stat [group]`: the text stats, one packet per line, then an empty packet.
fn stat(s: &mut Session<'_>, req: &BinRequest<'_>, out: &mut Vec<u8>) {
    let h = &req.header;
    let mut words = req.key.splitn(2, |&b| b == b' ');
    let group = words.next().unwrap_or(&[]);
    let arg = words.next().unwrap_or(&[]);
    let mut text = Vec::new();
    write_stats(s, group, arg, &mut text);
    if text == b"ERROR\r\n" || text.starts_with(b"CLIENT_ERROR") {
        reply::error(out, h, status::KEY_ENOENT);
        return;
    }
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(rest) = line.strip_prefix(b"STAT ") else {
            continue;
        };
        let (name, value) = match rest.iter().position(|&b| b == b' ') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        reply::response(out, h, status::OK, 0, &[], name, value);
    }
    reply::ok(out, h, 0);
}

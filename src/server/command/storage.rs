//! Writes: set, add, replace, append, prepend, cas, ms, and the binary storage opcodes; and
//! a write refused for its size before its value arrived.

use super::super::detail::Op;
use super::super::watcher;
use super::retrieval::ttl_at;
use super::Session;
use crate::protocol::command::{Encoding, Refusal, SetMode, Store, Stored, TooLarge, WatchKinds};
use crate::store::{self, DeleteRequest, SetOutcome, SetRequest, StoreError};

pub fn store(s: &mut Session<'_>, c: &Store<'_>, encoding: Encoding) -> Stored {
    let watched = s.shared.watchers.kinds();
    if watched & WatchKinds::FETCHERS != 0 {
        s.watch_fetch(c.key);
    }
    let stored = run(s, c, encoding);
    if watched & WatchKinds::MUTATIONS != 0 {
        watch_store(s, c, &stored);
    }
    stored
}

fn run(s: &mut Session<'_>, c: &Store<'_>, encoding: Encoding) -> Stored {
    let mut r = SetRequest::new(mode(c.mode), c.key, c.data);
    r.flags = c.flags;
    r.exptime = s.exptime(c.exptime);
    r.compare_cas = c.compare_cas.map(|cas| cas.0);
    r.invalidate = c.invalidate;
    if !s.shared.config.cas_enabled && r.compare_cas.is_some() {
        without_cas(&mut r, encoding);
    } else if encoding == Encoding::Binary
        && r.mode == store::SetMode::Add
        && r.compare_cas.is_some()
    {
        // memcached turns a binary add carrying a CAS into a cas command (under `-C` it
        // stays the add it was: an existing key is not overwritten).
        r.mode = store::SetMode::Set;
    }
    r.new_cas = c.new_cas.map(|cas| cas.0);
    r.vivify = c.vivify.map(|t| s.exptime(t));
    r.key_binary = c.key_binary;
    s.detail(encoding, c.key, Op::Set);
    // memcached's CAS counters count cas commands, not an append or prepend carrying one.
    let is_cas = c.compare_cas.is_some()
        && !matches!(r.mode, store::SetMode::Append | store::SetMode::Prepend);
    s.counts.cmd_set += 1;
    match s.shared.store.set(&r, s.now) {
        Ok(SetOutcome::Stored { cas, size, total }) => {
            if is_cas {
                s.counts.cas_hits += 1;
            }
            s.wrote_largest = s.wrote_largest.max(total);
            Stored::Stored {
                cas: s.cas_out(cas),
                size,
            }
        }
        Ok(SetOutcome::Exists) => {
            if is_cas {
                s.counts.cas_badval += 1;
            }
            Stored::Exists
        }
        Ok(SetOutcome::NotFound) => {
            if is_cas {
                s.counts.cas_misses += 1;
            }
            Stored::NotFound
        }
        Ok(SetOutcome::NotStored) => Stored::NotStored,
        Err(StoreError::TooLarge) => {
            s.counts.store_too_large += 1;
            Stored::TooLarge
        }
        Err(StoreError::OutOfMemory) => {
            s.counts.store_no_memory += 1;
            Stored::OutOfMemory
        }
    }
}

/// A CAS given under `-C`, as memcached takes it when neither item has one: set and
/// replace (a text `cas`, `ms` with `C`) compare and fail, an invalidation (`I`) too; add,
/// append and prepend go on as if none were given, and so does every binary write.
fn without_cas(r: &mut SetRequest<'_>, encoding: Encoding) {
    match (encoding, r.mode) {
        (Encoding::Binary, _)
        | (_, store::SetMode::Add | store::SetMode::Append | store::SetMode::Prepend) => {
            r.compare_cas = None;
        }
        _ => {
            r.compare_cas = Some(super::NO_CAS_MATCHES);
            r.invalidate = false;
        }
    }
}

/// For `watch mutations`: a storage command's outcome, with the TTL, class and value
/// bytes of the item as it now is when stored, else of what was asked.
fn watch_store(s: &Session<'_>, c: &Store<'_>, stored: &Stored) {
    let status = match stored {
        Stored::Stored { .. } => "stored",
        Stored::NotStored => "not_stored",
        Stored::Exists => "exists",
        Stored::NotFound => "not_found",
        Stored::TooLarge => "too_large",
        Stored::OutOfMemory | Stored::OutOfMemoryReading => "no_memory",
    };
    let cmd = match (c.compare_cas, c.mode) {
        (Some(_), _) => "cas",
        (None, SetMode::Set) => "set",
        (None, SetMode::Add) => "add",
        (None, SetMode::Replace) => "replace",
        (None, SetMode::Append) => "append",
        (None, SetMode::Prepend) => "prepend",
    };
    let (sizing, now) = (s.shared.sizing(), s.now);
    let asked = || {
        let ttl = ttl_at(s.exptime(c.exptime), now).unwrap_or(0);
        let class = sizing.class_for(c.key.len(), c.data.len(), c.flags);
        (ttl, class, c.data.len())
    };
    let (ttl, class, size) = match stored {
        Stored::Stored { .. } => s
            .shared
            .store
            .peek(c.key, now, |it| {
                it.map(|it| {
                    let ttl = ttl_at(it.exptime, now).unwrap_or(0);
                    (ttl, sizing.size_and_class(it).1, it.value().len())
                })
            })
            .unwrap_or_else(asked),
        _ => asked(),
    };
    s.shared.watchers.log(WatchKinds::MUTATIONS, |out| {
        watcher::item_store(out, c.key, status, cmd, ttl, class, s.fd, size)
    });
}

/// A write refused from its header: over `-I`, or no room for its value.
pub fn too_large(s: &mut Session<'_>, t: &TooLarge<'_>, encoding: Encoding) -> Stored {
    let (stored, status) = match t.why {
        Refusal::TooLarge => {
            s.counts.store_too_large += 1;
            (Stored::TooLarge, "too_large")
        }
        Refusal::NoMemory => {
            s.counts.store_no_memory += 1;
            (Stored::OutOfMemory, "no_memory")
        }
        // memcached fails such a write in the middle of its value: nothing is counted or
        // logged, and the old value stays.
        Refusal::NoMemoryReading => return Stored::OutOfMemoryReading,
    };
    if s.shared.watchers.wants(WatchKinds::MUTATIONS) {
        // Which command it was is not kept: a `set` (the one that drops the old value),
        // else memcached's word for an unknown one.
        let cmd = if t.drop_old { "set" } else { "na" };
        s.shared.watchers.log(WatchKinds::MUTATIONS, |out| {
            watcher::item_store(out, t.key, status, cmd, 0, 0, s.fd, 0)
        });
    }
    if t.drop_old {
        // memcached looks for the old value to drop after logging the refusal.
        s.watch_fetch(t.key);
    }
    s.detail(encoding, t.key, Op::Set);
    if t.drop_old {
        let delete = DeleteRequest {
            key: t.key,
            ..Default::default()
        };
        s.shared.store.delete(&delete, s.now);
    }
    stored
}

fn mode(m: SetMode) -> store::SetMode {
    match m {
        SetMode::Set => store::SetMode::Set,
        SetMode::Add => store::SetMode::Add,
        SetMode::Replace => store::SetMode::Replace,
        SetMode::Append => store::SetMode::Append,
        SetMode::Prepend => store::SetMode::Prepend,
    }
}

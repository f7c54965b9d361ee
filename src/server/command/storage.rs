//! Writes: set, add, replace, append, prepend, cas, ms, and the binary storage opcodes; and
//! a write refused for its size before its value arrived.

use super::super::detail::Op;
use super::Session;
use crate::protocol::command::{Encoding, SetMode, Store, Stored, TooLarge};
use crate::store::{self, DeleteRequest, SetOutcome, SetRequest, StoreError};

pub fn store(s: &mut Session<'_>, c: &Store<'_>, encoding: Encoding) -> Stored {
    let mut r = SetRequest::new(mode(c.mode), c.key, c.data);
    r.flags = c.flags;
    r.exptime = s.exptime(c.exptime);
    r.compare_cas = c.compare_cas.map(|cas| cas.0);
    r.invalidate = c.invalidate;
    r.new_cas = c.new_cas.map(|cas| cas.0);
    r.vivify = c.vivify.map(|t| s.exptime(t));
    r.key_binary = c.key_binary;
    s.detail(encoding, c.key, Op::Set);
    let is_cas = c.compare_cas.is_some();
    s.counts.cmd_set += 1;
    match s.shared.store.set(&r, s.now) {
        Ok(SetOutcome::Stored { cas, size }) => {
            if is_cas {
                s.counts.cas_hits += 1;
            }
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

/// A write over `-I`, refused from its header.
pub fn too_large(s: &mut Session<'_>, t: &TooLarge<'_>, encoding: Encoding) -> Stored {
    s.counts.store_too_large += 1;
    s.detail(encoding, t.key, Op::Set);
    if t.drop_old {
        let delete = DeleteRequest {
            key: t.key,
            ..Default::default()
        };
        s.shared.store.delete(&delete, s.now);
    }
    Stored::TooLarge
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

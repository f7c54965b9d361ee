//! delete, md, binary delete.

use super::super::detail::Op;
use super::Session;
use crate::protocol::command::{Delete, Deleted, Encoding};
use crate::store::{DeleteOutcome, DeleteRequest};

pub fn delete(s: &mut Session<'_>, d: &Delete<'_>, encoding: Encoding) -> Deleted {
    s.detail(encoding, d.key, Op::Delete);
    s.watch_fetch(d.key);
    let r = DeleteRequest {
        key: d.key,
        compare_cas: s.compared_cas(d.compare_cas),
        invalidate: d.invalidate,
        exptime: d.exptime.map(|t| s.exptime(t)),
        new_cas: d.new_cas.map(|cas| cas.0),
        strip_value: d.strip_value,
    };
    match s.shared.store.delete(&r, s.now) {
        DeleteOutcome::Deleted => {
            // md I marks the item stale and keeps it: memcached counts no hit.
            if !d.invalidate {
                s.counts.delete_hits += 1;
            }
            Deleted::Deleted
        }
        DeleteOutcome::NotFound => {
            s.counts.delete_misses += 1;
            Deleted::NotFound
        }
        DeleteOutcome::Exists => {
            // memcached counts a CAS mismatch as a miss in md, and not at all in binary.
            if encoding != Encoding::Binary {
                s.counts.delete_misses += 1;
            }
            Deleted::Exists
        }
    }
}

//! incr, decr, ma, binary increment/decrement.

use super::super::stats::Counts;
use super::retrieval::Changes;
use super::Session;
use crate::protocol::command::{Arith, Counted};
use crate::store::{ArithOutcome, ArithRequest};

pub fn arith(s: &mut Session<'_>, a: &Arith<'_>) -> Counted {
    let r = ArithRequest {
        key: a.key,
        incr: a.incr,
        delta: a.delta,
        compare_cas: s.compared_cas(a.compare_cas),
        vivify: a.created().map(|(t, initial)| (s.exptime(t), initial)),
        exptime: a.exptime.map(|t| s.exptime(t)),
        new_cas: a.new_cas.map(|cas| cas.0),
    };
    // What ma's `T` and `N` each set, for `t` (an item created takes only the later one).
    let set_by = Changes {
        touch: r.exptime,
        vivify: a.vivify.map(|(t, _)| s.exptime(t)),
    };
    s.watch_fetch(a.key);
    let outcome = s.shared.store.arith(&r, s.now);
    count(&mut s.counts, a.incr, &outcome);
    match outcome {
        ArithOutcome::Value {
            value,
            cas,
            prev_exptime,
            created,
            ..
        } => Counted::Value {
            value,
            cas: s.cas_out(cas),
            ttls: set_by.trail(prev_exptime, created, s.now),
            created,
        },
        ArithOutcome::NotFound => Counted::NotFound,
        ArithOutcome::NoMemory { creating } => Counted::OutOfMemory { creating },
        ArithOutcome::Exists => Counted::Exists,
        ArithOutcome::NonNumeric => Counted::NonNumeric,
    }
}

/// memcached counts a hit when the item was there and numeric (an increment that then
/// found no memory too), a miss when it was not there, and nothing else: not a miss that
/// created it (ma N, binary with an initial value), a non-numeric value or a CAS mismatch.
fn count(c: &mut Counts, incr: bool, r: &ArithOutcome) {
    let hit = match r {
        ArithOutcome::Value { created: false, .. } | ArithOutcome::NoMemory { creating: false } => {
            true
        }
        ArithOutcome::NotFound => false,
        _ => return,
    };
    match (incr, hit) {
        (true, true) => c.incr_hits += 1,
        (true, false) => c.incr_misses += 1,
        (false, true) => c.decr_hits += 1,
        (false, false) => c.decr_misses += 1,
    }
}

//! flush_all, binary flush.

use super::Session;
use crate::protocol::command::{Encoding, Exptime, Flushed};

pub fn flush_all(s: &mut Session<'_>, delay: Option<Exptime>, encoding: Encoding) -> Flushed {
    let allowed = s.shared.config.flush_enabled;
    // memcached counts a flush_all refused by -F in text, not in binary.
    if allowed || encoding != Encoding::Binary {
        s.counts.cmd_flush += 1;
    }
    if !allowed {
        return Flushed::NotAllowed;
    }
    let Some(delay) = delay else {
        return Flushed::BadDelay;
    };
    let at = (delay.0 > 0).then(|| s.exptime(delay));
    s.shared.store.flush_all(at, s.now);
    Flushed::Done
}

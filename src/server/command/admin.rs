//! verbosity, cache_memlimit, shutdown and `stats cachedump`: commands about the server, not
//! its items. (version, quit, noop and the fixed answers need no more than a reply.)

use super::{After, Session};
use crate::protocol::command::{MemLimit, Shutdown};

pub fn verbosity(s: &mut Session<'_>, level: u32) {
    s.shared.set_verbosity(level.min(2));
}

/// memcached refuses a limit under 8 MB.
pub fn cache_memlimit(s: &mut Session<'_>, megabytes: u32) -> MemLimit {
    if megabytes < 8 {
        return MemLimit::TooSmall;
    }
    s.shared.store.set_limit(megabytes as usize * 1024 * 1024);
    MemLimit::Set
}

/// `shutdown` needs `-A`; the mode is checked only then, as memcached does.
pub fn shutdown(s: &mut Session<'_>, graceful: Option<bool>) -> (Shutdown, After) {
    if !s.shared.config.enable_shutdown {
        return (Shutdown::NotEnabled, After::Continue);
    }
    match graceful {
        Some(graceful) => (Shutdown::Accepted, After::Shutdown { graceful }),
        None => (Shutdown::BadMode, After::Continue),
    }
}

/// `stats cachedump`: a text-only listing.
pub fn cachedump(s: &mut Session<'_>, class: u32, limit: u32, out: &mut Vec<u8>) {
    let sh = s.shared;
    super::super::dump::write_cachedump(&sh.store, &sh.clock, class, limit, s.now, out);
}

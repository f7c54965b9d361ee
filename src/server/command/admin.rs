//! verbosity, cache_memlimit, shutdown, `stats cachedump`, the LRU crawler's switch and
//! `slabs reassign`: commands about the server, not its items. (version, quit, noop and the
//! fixed answers need no more than a reply.)

use super::{After, Session};
use crate::protocol::command::{MemLimit, Shutdown, WatchKinds};

pub fn verbosity(s: &mut Session<'_>, level: u32) {
    s.shared.set_verbosity(level.min(2));
}

/// memcached refuses a limit under 8 MB, and one over a billion megabytes as bytes given
/// by mistake.
pub fn cache_memlimit(s: &mut Session<'_>, megabytes: u32) -> MemLimit {
    if megabytes < 8 {
        return MemLimit::TooSmall;
    }
    if megabytes > 1_000_000_000 {
        return MemLimit::NotMegabytes;
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

/// `watch`: makes the connection a watcher (`alone`: no reply of an earlier request is
/// waiting to go out); the error is the refusal's reply, in memcached's words.
pub fn watch(
    s: &mut Session<'_>,
    kinds: Option<WatchKinds>,
    alone: bool,
) -> Result<(), &'static [u8]> {
    if !s.shared.config.watch_enabled {
        return Err(b"CLIENT_ERROR watch commands not allowed\r\n");
    }
    if !alone {
        return Err(b"ERROR cannot pipeline other commands before watch\r\n");
    }
    let Some(kinds) = kinds else {
        return Err(b"ERROR\r\n");
    };
    match s.conn {
        Some(conn) => s.shared.watchers.add(conn, kinds),
        // UDP: memcached takes the watch and goes silent (see `udp`).
        None => Ok(()),
    }
}

pub const CRAWLER_DISABLED: &[u8] = b"CLIENT_ERROR lru crawler disabled\r\n";
pub const METADUMP_PIPELINED: &[u8] = b"ERROR cannot pipeline other commands before metadump\r\n";

/// `lru_crawler enable|disable`: memcached's crawler runs from the start (unless `-o
/// no_lru_crawler`), and enabling a running one fails to start its thread.
pub fn crawler(s: &mut Session<'_>, enable: bool) -> &'static [u8] {
    if s.shared.set_crawler(enable) || !enable {
        b"OK\r\n"
    } else {
        b"ERROR failed to start lru crawler thread\r\n"
    }
}

/// `lru_crawler crawl` (and a metadump of nothing): refused while the crawler is disabled.
pub fn crawl(s: &mut Session<'_>, reply: &'static [u8]) -> &'static [u8] {
    if s.shared.crawler_enabled() {
        reply
    } else {
        CRAWLER_DISABLED
    }
}

/// `slabs reassign <src> <dst>`, checked as memcached checks it against its slab classes
/// (0 is its pool of free pages, -1 asks it to pick a source). No class here ever has a
/// page to spare: memcached's answer for a class without one, and for a source it cannot
/// pick (a bad class). `-o no_slab_reassign` refuses them all.
pub fn slabs_reassign(s: &mut Session<'_>, classes: Option<(i32, i32)>) -> &'static [u8] {
    if !s
        .shared
        .config
        .modern_switch("slab_reassign", "no_slab_reassign")
    {
        return b"CLIENT_ERROR slab reassignment disabled\r\n";
    }
    let Some((src, dst)) = classes else {
        return b"CLIENT_ERROR bad command line format\r\n";
    };
    if src == dst {
        return b"SAME src and dst class are identical\r\n";
    }
    let largest = s.shared.slab_classes.count() as i32;
    if !(0..=largest).contains(&src) || !(0..=largest).contains(&dst) {
        return b"BADCLASS invalid src or dst class id\r\n";
    }
    b"NOSPARE source class has no spare pages\r\n"
}

/// memcached's refusals under `--disable-dumping` (its `-X`).
pub const METADUMP_REFUSED: &[u8] = b"ERROR metadump not allowed\r\n";
pub const CACHEDUMP_REFUSED: &[u8] = b"CLIENT_ERROR stats cachedump not allowed\r\n";

/// `stats cachedump`: a text-only listing.
pub fn cachedump(s: &mut Session<'_>, class: u32, limit: u32, out: &mut Vec<u8>) {
    let sh = s.shared;
    super::super::dump::write_cachedump(&sh.store, &sh.clock, class, limit, s.now, out);
}

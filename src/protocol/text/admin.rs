//! The commands about the server rather than its items: verbosity, cache_memlimit, stats,
//! version, quit, shutdown and the admin verbs answered for compatibility. Executed in
//! `server::command::{admin, stats}`.

use super::{invalid, text, Tokens};
use crate::protocol::command::Command;
use crate::protocol::number::{parse_u32, parse_u64};
use crate::protocol::{ErrorKind, Parsed, ProtocolError};

/// `verbosity <level> [noreply]`
pub fn parse_verbosity<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let noreply = t.noreply();
    match parse_u32(t.get(1)) {
        Some(level) => text(Command::Verbosity { level }, noreply, used),
        None => invalid(ErrorKind::BadFormat, used, noreply),
    }
}

/// `cache_memlimit <megabytes> [noreply]`
pub fn parse_memlimit<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let noreply = t.noreply();
    match parse_u32(t.get(1)) {
        Some(megabytes) => text(Command::CacheMemlimit { megabytes }, noreply, used),
        None => invalid(ErrorKind::UnknownCommand, used, noreply),
    }
}

/// memcached's item classes are 1..=63 (0 and 64+ are refused). This server keeps every
/// item in class 1, so `metadump` with `all`, `hash` or a list naming 1 dumps everything,
/// and a valid list without 1 dumps nothing. None: a bad class id.
pub fn dump_classes(arg: &[u8]) -> Option<bool> {
    if arg == b"all" || arg == b"hash" {
        return Some(true);
    }
    let mut has_one = false;
    // Empty pieces ("1,") are skipped, as memcached's strtok does.
    for id in arg.split(|&b| b == b',').filter(|id| !id.is_empty()) {
        let n = std::str::from_utf8(id).ok()?.parse::<u32>().ok()?;
        if !(1..64).contains(&n) {
            return None;
        }
        has_one |= n == 1;
    }
    Some(has_one)
}

/// `slabs automove <0|1|2> [noreply]` or `slabs automove ratio <float> [noreply]`: nothing
/// moves here, but the argument is checked as memcached checks it. The level is read as
/// `safe_strtoul` reads it (64 bits, kept to the low 32).
fn parse_automove<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let noreply = t.noreply();
    let reply: &'static [u8] = if t.get(2) == b"ratio" {
        let ratio = std::str::from_utf8(t.get(3))
            .ok()
            .and_then(|s| s.parse::<f64>().ok());
        match ratio {
            Some(_) if t.ntokens >= 5 => b"OK\r\n",
            _ => b"ERROR\r\n",
        }
    } else {
        match parse_u64(t.get(2)).map(|n| n as u32) {
            Some(0..=2) => b"OK\r\n",
            Some(_) => b"ERROR\r\n",
            None => b"CLIENT_ERROR bad command line format\r\n",
        }
    };
    text(Command::Fixed { reply }, noreply, used)
}

/// Everything else: stats, version, quit, shutdown, admin verbs, or an unknown command.
pub fn parse_other<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let done = |cmd| text(cmd, false, used);
    let fixed = |reply: &'static [u8]| done(Command::Fixed { reply });
    match t.get(0) {
        b"stats" if t.get(1) == b"cachedump" => {
            if t.ntokens < 5 {
                return fixed(b"CLIENT_ERROR bad command line\r\n");
            }
            match (parse_u32(t.get(2)), parse_u32(t.get(3))) {
                (Some(class), Some(limit)) if class < 64 => {
                    done(Command::Cachedump { class, limit })
                }
                (Some(_), Some(_)) => fixed(b"CLIENT_ERROR Illegal slab id\r\n"),
                _ => fixed(b"CLIENT_ERROR bad command line format\r\n"),
            }
        }
        b"stats" => done(Command::Stats {
            group: t.get(1),
            arg: t.get(2),
        }),
        b"version" => done(Command::Version),
        b"quit" => done(Command::Quit),
        b"shutdown" => done(Command::Shutdown {
            graceful: match (t.ntokens, t.get(1)) {
                (2, _) => Some(false),
                (3, b"graceful") => Some(true),
                _ => None,
            },
        }),
        // No slab classes here: pages are not moved between classes.
        b"slabs" => match (t.ntokens, t.get(1)) {
            (5, b"reassign") => fixed(b"CLIENT_ERROR slab reassignment disabled\r\n"),
            (n, b"automove") if n >= 4 => parse_automove(t, used),
            _ => fixed(b"ERROR\r\n"),
        },
        // Expiry is reclaimed by a background task that is always on.
        b"lru_crawler" => match (t.ntokens, t.get(1)) {
            (4, b"metadump") => match dump_classes(t.get(2)) {
                Some(all) => done(Command::Metadump { all }),
                None => fixed(b"BADCLASS invalid class id\r\n"),
            },
            (3, b"enable") | (3, b"disable") | (4, b"sleep") | (4, b"tocrawl") | (4, b"crawl") => {
                fixed(b"OK\r\n")
            }
            _ => fixed(b"ERROR\r\n"),
        },
        b"lru" if t.ntokens >= 3 => fixed(b"OK\r\n"),
        b"watch" => fixed(b"CLIENT_ERROR watch commands not allowed\r\n"),
        _ => {
            let last = t.get(t.len().saturating_sub(1));
            if last.starts_with(b"HTTP/") {
                Parsed::Invalid(ProtocolError::new(ErrorKind::Http, used))
            } else {
                Parsed::Invalid(ProtocolError::new(ErrorKind::UnknownCommand, used))
            }
        }
    }
}

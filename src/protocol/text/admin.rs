//! The commands about the server rather than its items: verbosity, cache_memlimit, stats,
//! version, quit, shutdown and the admin verbs answered for compatibility. Executed in
//! `server::command::{admin, stats}`.

use super::{invalid, text, Tokens};
use crate::protocol::command::{Command, Tunable, WatchKinds};
use crate::protocol::number::{parse_i32, parse_u32_wrapping, parse_u64};
use crate::protocol::{ErrorKind, Parsed, ProtocolError};

/// `verbosity <level> [noreply]`
pub fn parse_verbosity<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let noreply = t.noreply();
    match parse_u32_wrapping(t.get(1)) {
        Some(level) => text(Command::Verbosity { level }, noreply, used),
        None => invalid(ErrorKind::BadFormat, used, noreply),
    }
}

/// `cache_memlimit <megabytes> [noreply]`
pub fn parse_memlimit<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let noreply = t.noreply();
    match parse_u32_wrapping(t.get(1)) {
        Some(megabytes) => text(Command::CacheMemlimit { megabytes }, noreply, used),
        None => invalid(ErrorKind::UnknownCommand, used, noreply),
    }
}

/// The classes an `lru_crawler crawl` or `metadump` names, as memcached reads the list: ids
/// 1..=63 (0 and 64+ are refused). `stats items` and `stats slabs` describe the store as
/// one class, so a dump takes every item as class 1 (tools that dump the classes `stats
/// items` lists see them all): `metadump` with `all`, `hash` or a list naming 1 dumps
/// everything, and a valid list without 1 dumps nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrawlClasses {
    All,
    /// `hash`: everything to metadump; crawl fails on it.
    Hash,
    /// A list of valid ids (1..=63): bit n for class n.
    Ids {
        mask: u64,
    },
    /// Only commas: nothing to crawl.
    NoIds,
    /// An id that is not a number in 1..=63.
    Bad,
}

pub fn crawl_classes(arg: &[u8]) -> CrawlClasses {
    match arg {
        b"all" => return CrawlClasses::All,
        b"hash" => return CrawlClasses::Hash,
        _ => {}
    }
    let mut mask = 0u64;
    // Empty pieces ("1,") are skipped, as memcached's strtok does.
    for id in arg.split(|&b| b == b',').filter(|id| !id.is_empty()) {
        match parse_u32_wrapping(id) {
            Some(n) if (1..64).contains(&n) => mask |= 1 << n,
            _ => return CrawlClasses::Bad,
        }
    }
    if mask != 0 {
        CrawlClasses::Ids { mask }
    } else {
        CrawlClasses::NoIds
    }
}

const BADCLASS: &[u8] = b"BADCLASS invalid class id\r\n";
const NOTSTARTED: &[u8] = b"NOTSTARTED no items to crawl\r\n";
const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";

/// `lru_crawler <sub> [arg]`: the crawler's state is the server's; the arguments are checked
/// here as memcached checks them.
fn parse_crawler<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let done = |cmd| text(cmd, false, used);
    let crawl = |reply| done(Command::Crawl { reply });
    let fixed = |reply| done(Command::Fixed { reply });
    match (t.ntokens, t.get(1)) {
        (3, b"enable") => done(Command::Crawler { enable: true }),
        (3, b"disable") => done(Command::Crawler { enable: false }),
        (4, b"metadump") => match crawl_classes(t.get(2)) {
            CrawlClasses::All | CrawlClasses::Hash => done(Command::Metadump { all: true }),
            CrawlClasses::Ids { mask } => done(Command::Metadump {
                all: mask & (1 << 1) != 0,
            }),
            CrawlClasses::NoIds => crawl(NOTSTARTED),
            CrawlClasses::Bad => crawl(BADCLASS),
        },
        (4, b"crawl") => crawl(match crawl_classes(t.get(2)) {
            CrawlClasses::All | CrawlClasses::Ids { .. } => b"OK\r\n",
            CrawlClasses::Hash => b"ERROR an unknown error happened\r\n",
            CrawlClasses::NoIds => NOTSTARTED,
            CrawlClasses::Bad => BADCLASS,
        }),
        // Microseconds between items, at most a second; read as `safe_strtoul` reads it.
        (4, b"sleep") => match parse_u64(t.get(2)).map(|n| n as u32) {
            Some(us @ 0..=1_000_000) => done(Command::Tune(Tunable::CrawlerSleep(us))),
            Some(_) => fixed(b"CLIENT_ERROR sleep must be one second or less\r\n"),
            None => fixed(BAD_FORMAT),
        },
        (4, b"tocrawl") => match parse_u64(t.get(2)) {
            Some(n) => done(Command::Tune(Tunable::CrawlerToCrawl(n as u32))),
            None => fixed(BAD_FORMAT),
        },
        _ => fixed(b"ERROR\r\n"),
    }
}

/// `slabs automove <0|1|2> [noreply]` or `slabs automove ratio <float> [noreply]`: nothing
/// moves here, but the argument is checked as memcached checks it. The level is read as
/// `safe_strtoul` reads it (64 bits, kept to the low 32).
fn parse_automove<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let noreply = t.noreply();
    let fixed = |reply: &'static [u8]| text(Command::Fixed { reply }, noreply, used);
    let tune = |setting| text(Command::Tune(setting), noreply, used);
    if t.get(2) == b"ratio" {
        let ratio = std::str::from_utf8(t.get(3))
            .ok()
            .and_then(|s| s.parse::<f64>().ok());
        match ratio {
            Some(r) if t.ntokens >= 5 => tune(Tunable::SlabAutomoveRatio(r)),
            _ => fixed(b"ERROR\r\n"),
        }
    } else {
        match parse_u64(t.get(2)).map(|n| n as u32) {
            Some(level @ 0..=2) => tune(Tunable::SlabAutomove(level)),
            Some(_) => fixed(b"ERROR\r\n"),
            None => fixed(BAD_FORMAT),
        }
    }
}

/// `lru tune <hot %> <warm %> <hot factor> <warm factor>`, `lru mode flat|segmented`, `lru
/// temp_ttl <seconds>`: checked and answered as memcached 1.6.18 answers them. There is no
/// segmented LRU here to tune: what is accepted shows in `stats settings`, nothing more.
fn parse_lru<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let real = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim_start().parse::<f64>().ok())
    };
    let tune = |setting| text(Command::Tune(setting), t.noreply(), used);
    let reply: &'static [u8] = match t.get(1) {
        b"tune" if t.ntokens >= 7 => match (
            parse_u32_wrapping(t.get(2)),
            parse_u32_wrapping(t.get(3)),
            real(t.get(4)),
            real(t.get(5)),
        ) {
            (Some(hot), Some(warm), Some(hot_factor), Some(factor)) => {
                // memcached adds the two as 32-bit numbers.
                if hot.wrapping_add(warm) > 80 {
                    b"ERROR hot and warm pcts must not exceed 80\r\n"
                } else if factor <= 0.0 || hot_factor <= 0.0 {
                    b"ERROR hot/warm age factors must be greater than 0\r\n"
                } else {
                    return tune(Tunable::LruTune {
                        hot_pct: hot,
                        warm_pct: warm,
                        hot_factor,
                        warm_factor: factor,
                    });
                }
            }
            _ => b"ERROR\r\n",
        },
        b"mode" if t.ntokens >= 4 => match t.get(2) {
            b"flat" => return tune(Tunable::LruSegmented(false)),
            b"segmented" => return tune(Tunable::LruSegmented(true)),
            _ => b"ERROR\r\n",
        },
        b"temp_ttl" if t.ntokens >= 4 => match parse_i32(t.get(2)) {
            Some(ttl) => return tune(Tunable::TempTtl(ttl)),
            None => b"ERROR\r\n",
        },
        _ => b"ERROR\r\n",
    };
    text(Command::Fixed { reply }, t.noreply(), used)
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
            match (parse_u32_wrapping(t.get(2)), parse_u32_wrapping(t.get(3))) {
                (Some(class), Some(limit)) if class < 64 => {
                    done(Command::Cachedump { class, limit })
                }
                (Some(_), Some(_)) => fixed(b"CLIENT_ERROR Illegal slab id\r\n"),
                _ => fixed(BAD_FORMAT),
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
        // No slab classes here: pages are not moved between classes, but requests are
        // checked against memcached's.
        b"slabs" => match (t.ntokens, t.get(1)) {
            (5, b"reassign") => done(Command::SlabsReassign {
                classes: parse_i32(t.get(2)).zip(parse_i32(t.get(3))),
            }),
            (n, b"automove") if n >= 4 => parse_automove(t, used),
            _ => fixed(b"ERROR\r\n"),
        },
        // Expiry is reclaimed by a background task that is always on; the crawler's
        // commands answer as memcached's would.
        b"lru_crawler" => parse_crawler(t, used),
        b"lru" if t.ntokens >= 3 => parse_lru(t, used),
        // A last `noreply` silences the command whole, as in memcached 1.6.18: nothing is
        // answered (not even an error) and the connection goes on without watching.
        b"watch" if t.get(t.len() - 1) == b"noreply" => fixed(b""),
        b"watch" => done(Command::Watch {
            kinds: WatchKinds::parse((1..t.len()).map(|i| t.get(i))),
        }),
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

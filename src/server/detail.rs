//! `stats detail`: per-prefix counts of gets, hits, sets and deletes, as memcached keeps
//! them. The prefix is the key up to the first `-D` delimiter (default `:`); keys without
//! one are not counted.
//!
//! Off by default and switched at run time (`stats detail on|off`); when off, a request
//! pays one relaxed load. When on, every counted request takes one global lock, as in
//! memcached: it is a debugging aid, not for full-speed production traffic.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What a request did to a key, for its prefix's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get { hit: bool },
    Set,
    Delete,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    gets: u64,
    hits: u64,
    sets: u64,
    deletes: u64,
}

pub struct PrefixStats {
    enabled: AtomicBool,
    delimiter: u8,
    table: Mutex<BTreeMap<Box<[u8]>, Counts>>,
}

impl PrefixStats {
    /// Collecting from the start if `on` (memcached's `-D`).
    pub fn new(delimiter: u8, on: bool) -> PrefixStats {
        PrefixStats {
            enabled: AtomicBool::new(on),
            delimiter,
            table: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Counts `op` on `key` if detail is on and the key has a prefix.
    pub fn record(&self, key: &[u8], op: Op) {
        if !self.is_enabled() {
            return;
        }
        let Some(end) = memchr::memchr(self.delimiter, key) else {
            return;
        };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let prefix = &key[..end];
        let c = match table.get_mut(prefix) {
            Some(c) => c,
            None => table.entry(prefix.into()).or_default(),
        };
        match op {
            Op::Get { hit } => {
                c.gets += 1;
                c.hits += hit as u64;
            }
            Op::Set => c.sets += 1,
            Op::Delete => c.deletes += 1,
        }
    }

    /// `PREFIX p get n hit n set n del n` lines and END, memcached's `stats detail dump`.
    pub fn dump(&self, out: &mut Vec<u8>) {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        for (prefix, c) in table.iter() {
            out.extend_from_slice(b"PREFIX ");
            out.extend_from_slice(prefix);
            // Writing to a Vec cannot fail.
            let _ = write!(
                out,
                " get {} hit {} set {} del {}\r\n",
                c.gets, c.hits, c.sets, c.deletes
            );
        }
        out.extend_from_slice(b"END\r\n");
    }

    /// Forgets every prefix (`stats reset`).
    pub fn clear(&self) {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_prefix_only_when_on() {
        let p = PrefixStats::new(b':', false);
        p.record(b"user:1", Op::Set);
        p.set_enabled(true);
        p.record(b"user:1", Op::Get { hit: true });
        p.record(b"user:2", Op::Get { hit: false });
        p.record(b"user:2", Op::Set);
        p.record(b"sess:9:x", Op::Delete);
        p.record(b"nodelimiter", Op::Set);
        let mut out = Vec::new();
        p.dump(&mut out);
        assert_eq!(
            out,
            b"PREFIX sess get 0 hit 0 set 0 del 1\r\nPREFIX user get 2 hit 1 set 1 del 0\r\nEND\r\n"
        );
        p.clear();
        out.clear();
        p.dump(&mut out);
        assert_eq!(out, b"END\r\n");
    }
}

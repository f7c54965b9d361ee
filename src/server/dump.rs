//! Listing the cache: `lru_crawler metadump` (one line per live item, so tools such as
//! `memcached-tool dump` work unchanged) and the older, capped `stats cachedump`, both in
//! memcached's formats.
//!
//! The metadump walk uses the store's snapshot cursor in batches: the server keeps serving, each
//! shard is locked only for one batch, and the connection writes each batch out before
//! taking the next, so a dump of any size needs only one batch of memory.

use std::sync::atomic::{AtomicBool, Ordering};

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::protocol::limits::SlabClasses;
use crate::store::{bits, item_total_size, Clock, Cursor, Item, Store};

/// Items per batch: about 100 KB of lines.
pub const BATCH: usize = 1000;

/// memcached's key encoding: letters, digits and `-._~` as they are, the rest as %XX.
const KEY_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// memcached's view of an item: its size (8 bytes less without CAS, `-C`) and the slab
/// class that size falls in, for `me`, the dumps and `stats sizes`.
#[derive(Debug, Clone, Copy)]
pub struct Sizing<'a> {
    pub slabs: &'a SlabClasses,
    pub cas: bool,
}

impl Sizing<'_> {
    /// memcached's size: its total for key and value, plus 4 bytes when the client flags
    /// are not zero (memcached stores them only then) and 8 for the CAS.
    pub fn size(&self, it: &Item) -> usize {
        it.total_size() - self.no_cas()
    }

    /// Bytes memcached's items lack without CAS (`-C`).
    fn no_cas(&self) -> usize {
        if self.cas {
            0
        } else {
            8
        }
    }

    /// The slab class memcached would keep an item of these sizes in.
    pub fn class_for(&self, klen: usize, vlen: usize, flags: u32) -> u32 {
        self.slabs
            .class_of(item_total_size(klen, vlen, flags) - self.no_cas())
    }

    /// The item's size and the slab class memcached would keep it in, as `me` and the
    /// metadump lines show them.
    pub fn size_and_class(&self, it: &Item) -> (usize, u32) {
        let size = self.size(it);
        (size, self.slabs.class_of(size))
    }
}

/// memcached's answer to a metadump while another runs.
pub const BUSY: &[u8] = b"BUSY currently processing crawler request\r\n";

/// The metadump slot, held while a dump streams and given back when it ends, however it
/// ends (a client gone mid-dump too).
pub struct Dumping<'a>(&'a AtomicBool);

impl<'a> Dumping<'a> {
    pub fn take(slot: &'a AtomicBool) -> Option<Dumping<'a>> {
        (!slot.swap(true, Ordering::Acquire)).then_some(Dumping(slot))
    }
}

impl Drop for Dumping<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Appends the next batch of lines to `out`; the cursor to go on from, None when done.
pub fn write_batch(
    store: &Store,
    clock: &Clock,
    sizing: Sizing<'_>,
    cursor: Cursor,
    now: u32,
    out: &mut Vec<u8>,
) -> Option<Cursor> {
    store.visit_live(cursor, BATCH, now, |it| write_line(out, it, clock, sizing))
}

/// `stats sizes` while enabled: how many live items stored since stamp `since` have each
/// size, memcached's size rounded up to 32 bytes (`STAT <size> <count>`, smallest first),
/// then END. Without CAS (`cas`: false) memcached's items are 8 bytes smaller.
pub fn write_sizes(store: &Store, sizing: Sizing<'_>, since: u64, now: u32, out: &mut Vec<u8>) {
    use std::io::Write;
    let mut counts = std::collections::BTreeMap::<usize, u64>::new();
    let mut cursor = Some(Cursor::default());
    while let Some(c) = cursor {
        cursor = store.visit_live(c, BATCH, now, |it| {
            if it.cas >= since {
                let size = sizing.size(it);
                *counts.entry(size.div_ceil(32) * 32).or_default() += 1;
            }
        });
    }
    for (size, n) in counts {
        let _ = write!(out, "STAT {size} {n}\r\n");
    }
    out.extend_from_slice(b"END\r\n");
}

/// memcached caps a cachedump reply at 2 MB.
const CACHEDUMP_MAX_BYTES: usize = 2 * 1024 * 1024;

/// `stats cachedump <class> <limit>`: `ITEM key [bytes b; exptime s]` lines for up to
/// `limit` items (0: all that fit in 2 MB), then END. Every item is in class 1 here (as
/// `stats items` shows); items stored with base64 (binary) keys are left out, as memcached
/// does.
pub fn write_cachedump(
    store: &Store,
    clock: &Clock,
    class: u32,
    limit: u32,
    now: u32,
    out: &mut Vec<u8>,
) {
    use std::io::Write;
    let start = out.len();
    let want = if limit == 0 {
        usize::MAX
    } else {
        limit as usize
    };
    let mut shown = 0;
    let mut cursor = (class == 1).then(Cursor::default);
    while let Some(c) = cursor {
        let mut full = false;
        cursor = store.visit_live(c, BATCH, now, |it| {
            if shown >= want || full || it.has(bits::KEY_BINARY) {
                return;
            }
            let mark = out.len();
            let exp = match it.exptime {
                0 => 0,
                t => clock.unix_of(t),
            };
            out.extend_from_slice(b"ITEM ");
            out.extend_from_slice(it.key());
            let _ = write!(out, " [{} b; {} s]\r\n", it.value().len(), exp);
            if out.len() - start + 5 > CACHEDUMP_MAX_BYTES {
                out.truncate(mark);
                full = true;
            } else {
                shown += 1;
            }
        });
        if shown >= want || full {
            break;
        }
    }
    out.extend_from_slice(b"END\r\n");
}

/// `key=K exp=E la=L cas=C fetch=yes|no cls=N size=S` ended by a bare newline, as
/// memcached writes it; `exp` is -1 for items that never expire, else a unix time; `cls`
/// the class memcached would keep the item in (as `me` shows it).
fn write_line(out: &mut Vec<u8>, it: &Item, clock: &Clock, sizing: Sizing<'_>) {
    let (size, class) = sizing.size_and_class(it);
    let cas = if sizing.cas { it.cas } else { 0 };
    use std::io::Write;
    let exp = match it.exptime {
        0 => -1,
        t => clock.unix_of(t) as i64,
    };
    // Writing to a Vec cannot fail.
    let _ = writeln!(
        out,
        "key={} exp={} la={} cas={} fetch={} cls={class} size={size}",
        percent_encode(it.key(), KEY_ESCAPES),
        exp,
        clock.unix_of(it.atime),
        cas,
        if it.has(bits::FETCHED) { "yes" } else { "no" },
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{SetMode, SetRequest, StoreConfig};

    #[test]
    fn lines_match_memcacheds_format_and_the_walk_sees_every_item() {
        let clock = Arc::new(Clock::new());
        let store = Store::new(StoreConfig::default(), clock.clone());
        let now = clock.now();
        let mut r = SetRequest::new(SetMode::Set, b"a:b/c", b"xyz");
        r.exptime = now + 100;
        r.flags = 5;
        store.set(&r, now).unwrap();
        for i in 0..2500u32 {
            let k = format!("k{i}");
            store
                .set(&SetRequest::new(SetMode::Set, k.as_bytes(), b"v"), now)
                .unwrap();
        }
        let slabs = SlabClasses::default();
        let sizing = Sizing {
            slabs: &slabs,
            cas: true,
        };
        let mut out = Vec::new();
        let mut cursor = Some(Cursor::default());
        let mut batches = 0;
        while let Some(c) = cursor {
            cursor = write_batch(&store, &clock, sizing, c, now, &mut out);
            batches += 1;
        }
        assert!(batches >= 3, "2501 items take three batches of {BATCH}");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2501);
        let line = text
            .lines()
            .find(|l| l.starts_with("key=a%3Ab%2Fc "))
            .unwrap();
        let want = format!(
            "key=a%3Ab%2Fc exp={} la={} cas=",
            clock.unix_of(now + 100),
            clock.unix_of(now)
        );
        assert!(line.starts_with(&want), "{line}");
        assert!(line.ends_with(" fetch=no cls=1 size=71"), "{line}");
        assert!(text.contains("key=k2499 exp=-1 "));
    }
}

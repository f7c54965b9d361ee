//! touch (text). A read that also touches (gat, mg `T`, binary touch) is in `retrieval`.

use super::Session;
use crate::protocol::command::Exptime;

/// Sets a new expiry; true if the item was there.
pub fn touch(s: &mut Session<'_>, key: &[u8], exptime: Exptime) -> bool {
    s.counts.cmd_touch += 1;
    s.watch_fetch(key);
    let size = s.shared.store.touch_sized(key, s.exptime(exptime), s.now);
    s.wrote_largest = s.wrote_largest.max(size.unwrap_or(0));
    let hit = size.is_some();
    if hit {
        s.counts.touch_hits += 1;
    } else {
        s.counts.touch_misses += 1;
    }
    hit
}

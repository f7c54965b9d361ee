//! touch (text). A read that also touches (gat, mg `T`, binary touch) is in `retrieval`.

use super::Session;
use crate::protocol::command::Exptime;

/// Sets a new expiry; true if the item was there.
pub fn touch(s: &mut Session<'_>, key: &[u8], exptime: Exptime) -> bool {
    s.counts.cmd_touch += 1;
    s.watch_fetch(key);
    let hit = s.shared.store.touch(key, s.exptime(exptime), s.now);
    if hit {
        s.counts.touch_hits += 1;
    } else {
        s.counts.touch_misses += 1;
    }
    hit
}

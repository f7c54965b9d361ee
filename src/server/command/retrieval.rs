//! Reads: get, gets, gat, gats, mg, binary get/getk/gat/gatk/touch, and `me`.
//!
//! Each hit is rendered while the shard lock holds the item, from a borrowed view of it
//! ([`Hit`]), so a value is copied once, from the store into the output buffer, or not at
//! all when it is large (the output then keeps a reference to it, see [`Output`]). A
//! multiget stops between keys once the output is full; the connection writes it and comes
//! back for the rest ([`After::Partial`]), so a reply never sits whole in memory.

use super::super::detail::Op;
use super::super::output::Output;
use super::super::stats::Counts;
use super::super::watcher::Found;
use super::{After, Session};
use crate::protocol::command::{Encoding, Get, Hit, Keys, Reply, TtlTrail, WatchKinds};
use crate::protocol::{Cas, ErrorKind, ProtocolError};
use crate::store::{self, bits, Item, Miss, ReadOptions};

pub fn get<R: Reply>(s: &mut Session<'_>, get: &Get<'_>, reply: &R, out: &mut Output) -> After {
    let served = get_keys(s, get, reply, out);
    if let Keys::Spaced(list) = get.keys {
        if served < list.len() {
            return After::Partial {
                rest: list.len() - served,
            };
        }
    }
    reply.end(out);
    After::Continue
}

/// [`crate::protocol::Command::GetBadKey`]: the keys before the bad one are read as the get
/// would read them, one at a time, each hit's reply dropped at once (memcached drops them
/// when it meets the bad key), then the line is refused.
pub fn get_bad_key<R: Reply>(s: &mut Session<'_>, get: &Get<'_>, reply: &R, out: &mut Output) {
    let start = out.len();
    for key in get.keys.iter() {
        let one = Get {
            keys: Keys::One(key),
            ..*get
        };
        get_keys(s, &one, reply, out);
        out.truncate_to(start);
    }
    ProtocolError::new(ErrorKind::BadFormat, 0).write_reply(out);
}

/// Serves the keys of `get` in order, stopping after a key once the output is full;
/// returns how many bytes of a spaced key list were served (all of them when it ran to
/// the end). The caller ends the reply.
pub fn get_keys<R: Reply>(
    s: &mut Session<'_>,
    get: &Get<'_>,
    reply: &R,
    out: &mut Output,
) -> usize {
    let opts = ReadOptions {
        no_update: get.no_update,
        touch: get.touch.map(|t| s.exptime(t)),
        vivify: get.created_expiry().map(|t| s.exptime(t)),
        recache: get.recache.map(|t| s.exptime(t)),
        recache_first: get.recache_first,
        tokens: R::ENCODING == Encoding::Meta && !get.refused,
    };
    // What mg's `T` and `N` each set, for `t` (an item created takes only the later one).
    let set_by = Changes {
        touch: opts.touch,
        vivify: get.vivify.map(|t| s.exptime(t)),
    };
    let touch = get.touch.is_some();
    for key in get.keys.iter() {
        let found = read_one(s, key, opts, set_by, reply, out);
        // mg's T makes a touch of a hit only: memcached counts an mg miss as a get's.
        let touch = touch && (found.is_ok() || R::ENCODING != Encoding::Meta);
        if !(get.refused && found.is_ok()) {
            count_read(&mut s.counts, touch, found);
        }
        s.detail(R::ENCODING, key, Op::Get { hit: found.is_ok() });
        if found.is_err() {
            reply.miss(out, key);
        }
        if out.full() {
            if let Keys::Spaced(list) = get.keys {
                return key.as_ptr() as usize - list.as_ptr() as usize + key.len();
            }
        }
    }
    match get.keys {
        Keys::Spaced(list) => list.len(),
        Keys::One(_) => 0,
    }
}

/// Reads one key and renders a hit; a miss is the caller's to answer.
fn read_one<R: Reply>(
    s: &mut Session<'_>,
    key: &[u8],
    opts: ReadOptions,
    set_by: Changes,
    reply: &R,
    out: &mut Output,
) -> Result<(), Miss> {
    let now = s.now;
    let watched = s.shared.watchers.wants(WatchKinds::FETCHERS);
    s.shared.store.read(key, now, opts, |r| match r {
        Ok(h) => {
            if opts.touch.is_some() || h.created {
                // A new version of the item, sent to peers whole.
                s.wrote_largest = s.wrote_largest.max(h.item.total_size());
            }
            if watched && h.created {
                // Made by this request (mg `N`): the fetch before it found nothing.
                s.watch_get(key, Found::NotFound, 0, 0);
            } else if watched {
                let class = s.shared.sizing().size_and_class(&h.item).1;
                s.watch_get(key, Found::Found, class, h.item.value().len());
            }
            let cas = s.cas_out(h.item.cas);
            let shared = h.share_value();
            let mut hit = view(&h, cas, now);
            hit.ttls = set_by.trail(h.prev_exptime, h.created, now);
            hit.shared = shared.as_ref();
            reply.hit(out, &hit);
            Ok(())
        }
        Err(miss) => {
            if watched {
                // memcached 1.6.18 shows a flushed item as not found (it checks the
                // flush before its log line).
                let found = match miss {
                    Miss::Absent | Miss::Flushed => Found::NotFound,
                    Miss::Expired => Found::Expired,
                };
                s.watch_get(key, found, 0, 0);
            }
            Err(miss)
        }
    })
}

/// `me`: the item as it is, without updating it.
pub fn debug<R: Reply>(s: &mut Session<'_>, key: &[u8], reply: &R, out: &mut Vec<u8>) {
    let now = s.now;
    s.watch_fetch(key);
    s.shared.store.peek(key, now, |it| match it {
        None => reply.debug(out, None),
        Some(it) => {
            let mut hit = item_view(it, s.cas_out(it.cas), now);
            hit.idle = now.saturating_sub(it.atime);
            hit.fetched = it.has(bits::FETCHED);
            (hit.size, hit.class) = s.shared.sizing().size_and_class(it);
            reply.debug(out, Some(&hit));
        }
    });
}

/// The expiries a request's `T` and `N` set (store times; 0 never expires).
#[derive(Debug, Clone, Copy)]
pub(super) struct Changes {
    pub touch: Option<u32>,
    pub vivify: Option<u32>,
}

impl Changes {
    /// The TTLs `t` can show, for an item whose expiry was `before` (one the request
    /// `created` had none).
    pub fn trail(self, before: u32, created: bool, now: u32) -> TtlTrail {
        let ttl = |exptime| ttl_at(exptime, now);
        TtlTrail {
            before: if created { None } else { ttl(before) },
            touch: self.touch.and_then(ttl),
            vivify: self.vivify.filter(|_| created).map(ttl),
        }
    }
}

/// Seconds left to live at `now` of an item expiring at `exptime`; None never expires.
pub(super) fn ttl_at(exptime: u32, now: u32) -> Option<u32> {
    (exptime != 0).then(|| exptime.saturating_sub(now))
}

/// What a read saw, in the protocol's words.
#[inline]
fn view<'a>(h: &store::Hit<'a>, cas: Cas, now: u32) -> Hit<'a> {
    let mut hit = item_view(&h.item, cas, now);
    hit.idle = now.saturating_sub(h.prev_atime);
    hit.fetched = h.prev_fetched;
    hit.won = h.won;
    hit.token_sent = h.token_sent;
    hit.stale = h.stale;
    hit
}

#[inline]
fn item_view<'a>(it: &Item<'a>, cas: Cas, now: u32) -> Hit<'a> {
    Hit {
        key: it.key(),
        value: it.value(),
        shared: None,
        flags: it.flags,
        cas,
        ttl: ttl_at(it.exptime, now),
        ttls: TtlTrail::still(ttl_at(it.exptime, now)),
        idle: 0,
        fetched: false,
        key_binary: it.has(bits::KEY_BINARY),
        won: false,
        token_sent: false,
        stale: false,
        // Only `me` shows these (see `debug`).
        size: 0,
        class: 0,
    }
}

/// Counts a read the way memcached does: with a TTL update it is a touch, else a get.
/// (An expired or flushed item found is counted by the store, for every command.)
pub(super) fn count_read(c: &mut Counts, touch: bool, hit: Result<(), Miss>) {
    match (touch, hit.is_ok()) {
        (true, true) => c.touch_hits += 1,
        (true, false) => c.touch_misses += 1,
        (false, true) => c.get_hits += 1,
        (false, false) => c.get_misses += 1,
    }
    if touch {
        c.cmd_touch += 1;
    } else {
        c.cmd_get += 1;
    }
}

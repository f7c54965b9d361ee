//! Executing commands: each family in one place, whatever encoding it came in.
//!
//! The encodings parse into one set of logical commands ([`crate::protocol::command`]); here
//! each family calls the store, counts stats as memcached does, and hands the outcome to the
//! encoding's [`Reply`], which renders it (text, meta or binary bytes). One file per family:
//! [`retrieval`] (get/gets/gat/gats, mg, binary get/getk/gat/touch; me), [`storage`]
//! (set … cas, ms, binary set … prepend), [`arith`], [`delete`], [`touch`], [`flush`],
//! [`stats`], [`admin`] (version, verbosity, quit, shutdown, dumps, …) and [`auth`] (SASL and
//! ascii authentication). This module maps between the protocol's vocabulary and the store's
//! (expiry times, CAS values, storage modes) and is where the connection enters:
//! [`text()`] for a text or meta line, [`binary()`] for a binary packet.
//!
//! Everything here finishes before it returns: a command runs to its outcome under one shard
//! lock and is answered at once. A command that must first wait on a peer (while this node
//! catches up, a read of a key it lacks) is stopped before it does or counts anything:
//! `fetch_first` names the keys and the dispatcher returns [`After::Fetch`]; the
//! connection sends the replies before it, awaits the peer's answers (its worker serves
//! other connections meanwhile), and runs the request again from the same bytes, keeping
//! replies in order. A command that does not wait pays one relaxed load. With
//! acknowledged writes (`--repl-ack-peers`) a command that may change the store notes it
//! ([`Session::wrote`]), and the connection holds the replies until peers hold the change
//! (its worker serves other connections meanwhile).

pub mod admin;
pub mod arith;
pub mod auth;
pub mod delete;
pub mod flush;
pub mod retrieval;
pub mod stats;
pub mod storage;
pub mod touch;

use super::detail::Op;
use super::output::Output;
use super::stats::Counts;
use super::watcher::{self, Found};
use super::Shared;
use crate::protocol::binary;
use crate::protocol::command::{Command, Encoding, Exptime, Reply, WatchKinds};
use crate::protocol::SetMode;
use crate::protocol::{Limits, Request};

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Flush and close: a request the connection cannot go on after.
    Close,
    /// Flush and close: the client asked to (`quit`).
    Quit,
    /// Skip this many more bytes of input (a refused data block).
    Swallow(usize),
    /// Flush, then stop the server.
    Shutdown {
        graceful: bool,
    },
    /// A multiget stopped because the output is full: write it out, then serve the last
    /// `rest` bytes of its key list (see `connection`).
    Partial {
        rest: usize,
    },
    /// Flush, then stream `lru_crawler metadump` lines (`all`: every live item; else none)
    /// and END, then go on reading.
    Dump {
        all: bool,
    },
    /// Nothing done yet: while this node catches up, ask a peer about
    /// [`Session::fetch`]'s keys, then run the request again (see `fetch_first`).
    Fetch,
    /// Flush, then stream this connection's log lines until it closes (`watch`; the
    /// connection is already a watcher).
    Watch,
}

/// One connection's view while it executes a batch.
pub struct Session<'s> {
    pub shared: &'s Shared,
    pub counts: Counts,
    /// Relative seconds, read once per batch.
    pub now: u32,
    /// The worker thread this connection lives on (its counter slot).
    pub worker: usize,
    /// The socket's descriptor, which names the connection in `-vv` logs as in memcached's.
    pub fd: i32,
    /// The connection's id in the server's registry; None for UDP, which cannot `watch`.
    pub conn: Option<u64>,
    /// Passed SASL (`-S`) or ascii (`-Y`) authentication.
    pub authenticated: bool,
    /// Keys to ask a peer about before the request runs ([`After::Fetch`]).
    pub fetch: Vec<Vec<u8>>,
    /// The request about to run has had its keys fetched (or must not wait for any:
    /// UDP), so it runs as it is.
    pub fetched: bool,
    /// A command since the last replies went out may have changed the store: with
    /// acknowledged writes, those replies wait for peers first (see `connection`).
    pub wrote: bool,
    /// A text request of this batch left its reply (an error's too, or, quiet or noreply,
    /// its place) waiting: memcached then refuses `watch` and `lru_crawler metadump`. It
    /// writes everything out at a text get, gets, gat, gats or `mn`, and when its input is
    /// used up (see `connection`), so after those nothing waits.
    pub stacked: bool,
    /// The largest item stored since the last replies went out (as
    /// [`crate::store::item_total_size`] counts it): a peer with a smaller `-I` refuses it.
    pub wrote_largest: usize,
    /// No room could be set aside in `-m` for the value of the request at the front of
    /// the input: its parse refuses it as out of memory (see `connection`).
    pub no_room: bool,
    /// Where the answer to the last request of a connection not yet through ascii
    /// authentication (`-Y`) starts in the output, until it is written: memcached keeps
    /// one reply for those until it writes, so each answer replaces the one before.
    pub auth_reply: Option<usize>,
}

impl Session<'_> {
    /// The parser's limits for the next request.
    pub fn limits(&self) -> Limits {
        let mut limits = self.shared.limits;
        if self.no_room {
            limits.room = 0;
        }
        limits
    }

    /// A client's expiry in the store's relative seconds.
    fn exptime(&self, e: Exptime) -> u32 {
        self.shared.clock.rel_exptime(e.0, self.now)
    }

    /// Counts `op` on `key` in the per-prefix stats (`stats detail`), which memcached keeps
    /// for text and binary commands but not meta ones.
    fn detail(&self, encoding: Encoding, key: &[u8], op: Op) {
        if encoding != Encoding::Meta {
            self.shared.detail.record(key, op);
        }
    }

    /// For `watch fetchers`: logs the look a command takes at `key` before it acts (a
    /// write, delete, incr or touch, as memcached's fetch before them). One load when
    /// nobody watches.
    fn watch_fetch(&self, key: &[u8]) {
        if !self.shared.watchers.wants(WatchKinds::FETCHERS) {
            return;
        }
        let sizing = self.shared.sizing();
        let (found, class, size) = self.shared.store.peek(key, self.now, |it| match it {
            Some(it) => (Found::Found, sizing.size_and_class(it).1, it.value().len()),
            None => (Found::NotFound, 0, 0),
        });
        self.watch_get(key, found, class, size);
    }

    /// Logs a fetch of `key` that found `found` (class and value bytes of what it found).
    fn watch_get(&self, key: &[u8], found: Found, class: u32, size: usize) {
        self.shared.watchers.log(WatchKinds::FETCHERS, |out| {
            watcher::item_get(out, key, found, class, self.fd, size)
        });
    }

    /// The CAS a delete or an arithmetic command compares. Under `-C` memcached's items
    /// read as CAS 0: a request giving 0 compares nothing, any other never matches.
    fn compared_cas(&self, asked: Option<crate::protocol::Cas>) -> Option<u64> {
        match asked {
            Some(cas) if !self.shared.config.cas_enabled => (cas.0 != 0).then_some(NO_CAS_MATCHES),
            asked => asked.map(|cas| cas.0),
        }
    }

    /// The CAS value a client sees: the item's stamp, or 0 under `-C`.
    fn cas_out(&self, stamp: u64) -> crate::protocol::Cas {
        crate::protocol::Cas(if self.shared.config.cas_enabled {
            stamp
        } else {
            0
        })
    }
}

/// A CAS no item has (stamps stay far below it): what a request compares under `-C` where
/// memcached would compare against an item's CAS of 0 and fail.
const NO_CAS_MATCHES: u64 = u64::MAX;

/// While this node catches up, the keys `cmd` needs from a peer first: a read's keys it
/// lacks, and a write's key whose effect depends on what it holds (add, replace, cas,
/// append, prepend, delete, incr/decr, touch), so the write acts on the cluster's state
/// (a delete of a key whose copy has not arrived yet must not let it come back). True:
/// they are in [`Session::fetch`] and the request waits ([`After::Fetch`]) before anything
/// is done or counted. Asked only when [`may_fetch`].
fn fetch_first(cmd: &Command<'_>, s: &mut Session<'_>) -> bool {
    let key = match cmd {
        Command::Get(get) | Command::GetBadKey(get) => return fetch_missing(get.keys.iter(), s),
        Command::Store(st) if st.mode != SetMode::Set || st.compare_cas.is_some() => st.key,
        Command::Delete(d) => d.key,
        Command::Arith(a) => a.key,
        Command::Touch { key, .. } => key,
        _ => return false,
    };
    fetch_missing(std::iter::once(key), s)
}

/// Puts those of `keys` this node lacks in [`Session::fetch`]; true if there are any. Also
/// for the complete keys of a get line still arriving (see the connection's long lines).
pub fn fetch_missing<'k>(keys: impl Iterator<Item = &'k [u8]>, s: &mut Session<'_>) -> bool {
    let (store, now) = (&s.shared.store, s.now);
    s.fetch = keys
        .filter(|k| store.peek(k, now, |it| it.is_none()))
        .map(<[u8]>::to_vec)
        .collect();
    !s.fetch.is_empty()
}

/// Whether requests may wait for a peer now (`fetch_first`); checked first, as it is
/// cheap: one relaxed load once caught up.
pub fn may_fetch(s: &Session<'_>) -> bool {
    !s.fetched && s.shared.replication.get().is_some_and(|r| r.warming())
}

/// A text or meta request.
pub fn text(req: Request<'_>, s: &mut Session<'_>, out: &mut Output) -> After {
    if may_fetch(s) {
        let wait = match &req {
            Request::Text(cmd, _) => fetch_first(cmd, s),
            Request::Meta(m) => fetch_first(&m.command(), s),
        };
        if wait {
            return After::Fetch;
        }
    }
    let (after, flushes) = match req {
        Request::Text(cmd, reply) => {
            let flushes = matches!(cmd, Command::Get(_));
            (execute(cmd, &reply, s, out), flushes)
        }
        Request::Meta(m) => {
            // memcached's cmd_meta counts `me` alone, whatever protocol.txt's "meta
            // commands" suggests (mg and the rest count as gets, sets and so on).
            if m.cmd == crate::protocol::meta::MetaCmd::Debug {
                s.counts.cmd_meta += 1;
            }
            let flushes = m.cmd == crate::protocol::meta::MetaCmd::Noop;
            (execute(m.command(), &m.reply(), s, out), flushes)
        }
    };
    s.stacked = !flushes;
    after
}

/// A binary request: first the SASL gate (`-S`), then the command.
pub fn binary(req: binary::Request<'_>, s: &mut Session<'_>, out: &mut Output) -> After {
    if let Some(after) = auth::binary_gate(&req, s, out) {
        return after;
    }
    match req.command {
        Some(cmd) if may_fetch(s) && fetch_first(&cmd, s) => After::Fetch,
        Some(cmd) => execute(cmd, &req.reply, s, out),
        None => {
            req.reply.unknown_command(out);
            After::Continue
        }
    }
}

/// Runs one command and renders its outcome with `reply`.
pub fn execute<R: Reply>(
    cmd: Command<'_>,
    reply: &R,
    s: &mut Session<'_>,
    out: &mut Output,
) -> After {
    s.wrote |= match &cmd {
        Command::Store(_)
        | Command::TooLarge(_)
        | Command::Delete(_)
        | Command::Arith(_)
        | Command::Touch { .. }
        | Command::Flush { .. } => true,
        Command::Get(get) | Command::GetBadKey(get) => get.touch.is_some() || get.vivify.is_some(),
        _ => false,
    };
    match cmd {
        Command::Get(get) => return retrieval::get(s, &get, reply, out),
        Command::GetBadKey(get) => retrieval::get_bad_key(s, &get, reply, out),
        Command::Debug { key } => retrieval::debug(s, key, reply, out),
        Command::Store(store) => reply.stored(out, storage::store(s, &store, R::ENCODING)),
        Command::TooLarge(refused) => {
            reply.stored(out, storage::too_large(s, &refused, R::ENCODING));
            return After::Swallow(refused.swallow);
        }
        Command::Delete(delete) => reply.deleted(out, delete::delete(s, &delete, R::ENCODING)),
        Command::Arith(arith) => reply.counted(out, arith::arith(s, &arith)),
        Command::Touch { key, exptime } => reply.touched(out, touch::touch(s, key, exptime)),
        Command::Flush { delay } => reply.flushed(out, flush::flush_all(s, delay, R::ENCODING)),
        Command::Stats {
            group: b"detail",
            arg: b"dump",
        } => reply.detail_dump(out, |text| s.shared.detail.dump(text)),
        Command::Stats { group, arg } => reply.stats(out, |text| stats::write(s, group, arg, text)),
        Command::Version => reply.version(out, super::VERSION),
        Command::Noop => reply.noop(out),
        Command::Quit => {
            reply.quit(out);
            return After::Quit;
        }
        Command::Verbosity { level } => {
            admin::verbosity(s, level);
            reply.ok(out);
        }
        Command::CacheMemlimit { megabytes } => {
            reply.mem_limit(out, admin::cache_memlimit(s, megabytes));
        }
        Command::Shutdown { graceful } => {
            let (outcome, after) = admin::shutdown(s, graceful);
            reply.shutdown(out, outcome);
            return after;
        }
        Command::Cachedump { .. } if !s.shared.config.dump_enabled => {
            reply.fixed(out, admin::CACHEDUMP_REFUSED)
        }
        Command::Cachedump { class, limit } => admin::cachedump(s, class, limit, out),
        // memcached checks a disabled crawler first.
        Command::Metadump { .. } if !s.shared.crawler_enabled() => {
            reply.fixed(out, admin::CRAWLER_DISABLED)
        }
        Command::Metadump { .. } if !s.shared.config.dump_enabled => {
            reply.fixed(out, admin::METADUMP_REFUSED)
        }
        // As `watch`: memcached streams a dump only with no reply of an earlier request
        // waiting to go out.
        Command::Metadump { .. } if s.stacked => reply.fixed(out, admin::METADUMP_PIPELINED),
        Command::Metadump { all } => return After::Dump { all },
        Command::Crawl { reply: line } => reply.fixed(out, admin::crawl(s, line)),
        Command::Crawler { enable } => reply.fixed(out, admin::crawler(s, enable)),
        Command::SlabsReassign { classes } => reply.fixed(out, admin::slabs_reassign(s, classes)),
        Command::Tune(setting) => {
            let line: &[u8] = if s.shared.tuning.set(setting) {
                b"OK\r\n"
            } else {
                b"ERROR\r\n"
            };
            reply.fixed(out, line);
        }
        Command::Watch { kinds } => match admin::watch(s, kinds, !s.stacked) {
            Ok(()) => {
                reply.ok(out);
                return After::Watch;
            }
            Err(line) => reply.fixed(out, line),
        },
        Command::Fixed { reply: line } => reply.fixed(out, line),
        Command::SaslMechs => reply.sasl_mechs(out, auth::sasl_mechs(s)),
        // memcached's limit on a mechanism's name, checked before anything is counted.
        Command::SaslAuth { mech, .. } if mech.len() > auth::SASL_MECH_MAX => {
            reply.sasl_invalid(out)
        }
        Command::SaslAuth { step, mech, data } => {
            reply.authenticated(out, auth::sasl(s, step, mech, data));
        }
    }
    After::Continue
}

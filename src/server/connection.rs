//! One client connection: read, parse every complete request, reply, repeat.
//!
//! The task owns its buffers while it has work. Each read is followed by parsing all complete
//! requests in the buffer and one write of all their replies, so a pipelined batch costs one
//! read and one write system call. Buffers come from the worker's pool (see [`super::buffers`])
//! when input arrives and go back once it is served, so an idle connection holds none.
//!
//! What a connection holds is bounded, whatever the client sends or fails to read: once the
//! pending output passes `output::HIGH_WATER` it is written (waiting for the client to
//! read) before anything more is produced, between requests and also between the keys of one
//! multiget, which then resumes where it stopped; large values are queued by reference (see
//! [`super::output`]). A get line longer than a request line may be is answered key by key
//! as it arrives: its complete keys are served and only the unfinished last key is kept.
//! So a client that never reads stalls only itself, and holds about one cap of output. A
//! value larger than a read buffer is buffered only with its room set aside in `-m` first
//! (see `Store::hold`), else refused at its header as memcached refuses an item it cannot
//! allocate: what clients are still sending is bounded by `-m`, not by their number.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::command::{self, After, Session};
use super::io::{Oom, ReadBuf, Socket};
use super::output::Output;
use super::watcher::{self, CloseReason};
use super::{buffers, dump, verbose};
use super::{Activity, ConnState, Shared};
use crate::config::BindingProtocol;
use crate::protocol::binary::{self, BinParsed};
use crate::protocol::command::{Command, Get, Keys, Reply, WatchKinds};
use crate::protocol::limits::LINE_MAX_LENGTH;
use crate::protocol::text::auth::AuthParsed;
use crate::protocol::text::reply::TextReply;
use crate::protocol::{text, Next, Parsed, Request};
use crate::replication::node::AckWait;
use crate::store::{Cursor, Hold};

/// Free room a read asks for; the buffer grows when less is left.
const READ_MIN: usize = 4 * 1024;
/// memcached's replies when `-o read_buf_mem_limit` leaves no buffer for a request.
const OOM_READING: &[u8] = b"SERVER_ERROR out of memory reading request\r\n";
const OOM_WRITING_GET: &[u8] = b"SERVER_ERROR out of memory writing get response\r\n";

/// Why the read loop stopped.
enum Stop {
    Close(CloseReason),
    /// This connection asked the server to stop.
    Shutdown,
}

/// Serves one accepted, non-blocking socket until it closes.
pub async fn serve<S>(
    stream: S,
    shared: Arc<Shared>,
    worker: usize,
    addr: String,
    listen_addr: String,
) where
    S: AsRawFd,
    for<'a> &'a S: Read + Write,
{
    let fd = stream.as_raw_fd();
    if shared.watchers.wants(WatchKinds::CONNEVENTS) {
        shared.watchers.log(WatchKinds::CONNEVENTS, |out| {
            watcher::conn_event(out, &addr, fd, None)
        });
    }
    let (id, activity) = shared.register(addr, listen_addr, fd);
    if shared.verbosity() > 1 {
        verbose::opened(fd);
    }
    // Whatever ends the task, a watcher it became is gone with it.
    let unwatch = Unwatch(&shared.watchers, id);
    let (result, sock) = match Socket::new(stream) {
        Ok(sock) => (
            run(&sock, fd, id, &shared, worker, &activity).await,
            Some(sock),
        ),
        Err(e) => (Err(e), None),
    };
    drop(unwatch);
    // Out of the registry before the socket closes, so a shutdown never reaches a
    // descriptor number that has been reused.
    let addr = shared.unregister(id);
    // Logged while the descriptor is still ours, so its next owner's `conn_new` comes
    // after this.
    if shared.watchers.wants(WatchKinds::CONNEVENTS) {
        let reason = match &result {
            Ok(Stop::Close(r)) => *r,
            Ok(Stop::Shutdown) => CloseReason::Shutdown,
            Err(_) => CloseReason::Error,
        };
        let addr = addr.unwrap_or_default();
        shared.watchers.log(WatchKinds::CONNEVENTS, |out| {
            watcher::conn_event(out, &addr, fd, Some(reason))
        });
    }
    drop(sock);
    if shared.verbosity() > 1 {
        verbose::closed(fd);
    }
    shared.curr_conns.fetch_sub(1, Ordering::AcqRel);
    if let Ok(Stop::Shutdown) = result {
        shared.shutdown();
    }
}

/// Removes a connection's watcher, if it became one, when dropped.
struct Unwatch<'a>(&'a watcher::Watchers, u64);

impl Drop for Unwatch<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

/// Why a connection whose input ended closed: the server stopping shuts every
/// connection's input (see [`Shared::shutdown`]), else the client closed it.
fn closed(shared: &Shared) -> CloseReason {
    if shared.stopping() {
        CloseReason::Shutdown
    } else {
        CloseReason::Normal
    }
}

/// A get whose output filled up before its last key: the rest of its key list is
/// `data[at..end]` of the same batch.
struct PendingGet {
    /// The get's options (its keys are `data[at..end]`) and how it is answered.
    get: Get<'static>,
    reply: TextReply,
    at: usize,
    end: usize,
    /// The line is complete: END follows the last key. A streamed long line's keys are only
    /// a part of it.
    complete: bool,
}

async fn run<S>(
    sock: &Socket<S>,
    fd: i32,
    conn: u64,
    shared: &Shared,
    worker: usize,
    activity: &Activity,
) -> std::io::Result<Stop>
where
    S: AsRawFd,
    for<'a> &'a S: Read + Write,
{
    let mut rbuf = ReadBuf::default();
    let mut out = Output::new();
    let mut swallow = 0usize;
    // After a bad key in a streamed get line: the rest of that line is dropped.
    let mut skip_line = false;
    let idle = shared.config.idle_timeout_secs;
    let reqs_per_event = shared.config.reqs_per_event.max(1);
    let mut session = Session {
        shared,
        counts: Default::default(),
        now: shared.clock.now(),
        worker,
        fd,
        conn: Some(conn),
        authenticated: false,
        fetch: Vec::new(),
        fetched: false,
        wrote: false,
        wrote_largest: 0,
        stacked: false,
        no_room: false,
        auth_reply: None,
    };
    let mut proto = Proto::Unknown;
    // Room in `-m` set aside for the value of the request still arriving at the front of
    // the input (see `Store::hold`): what values on their way in take is bounded by `-m`,
    // not by how many clients send them.
    let mut held: Option<Hold> = None;
    loop {
        session.now = shared.clock.now();
        if held
            .as_ref()
            .is_some_and(|h| rbuf.data().len() >= h.bytes())
        {
            // The request is all in and runs now: its write makes its own room.
            held = None;
        }
        // The length of the request left waiting for more input, if its header told.
        let mut waiting = None;
        let mut consumed = 0;
        let mut after = After::Continue;
        // A streamed get line's unfinished tail, kept for the next read: the verb to put back
        // in front of it, and where it starts.
        let mut keep: Option<(&'static [u8], usize)> = None;
        // Under `-o read_buf_mem_limit` there may be no output buffer to be had: then a
        // request that answers is refused as memcached refuses it (see `refuse`).
        let no_out = !rbuf.is_empty() && !out.ensure();
        // Parse and execute every complete request in the buffer.
        let data = rbuf.data();
        if proto == Proto::Unknown && !data.is_empty() {
            proto = Proto::detect(data[0], shared.config.binding_protocol);
            if shared.verbosity() > 1 {
                verbose::protocol(fd, proto == Proto::Binary);
            }
        }
        prefetch_reads(shared, proto, data);
        let mut pending: Option<PendingGet> = None;
        let mut served = 0usize;
        while consumed < data.len() || pending.is_some() {
            if out.full() && out.must_flush() {
                send(sock, &mut out, &mut session).await?;
            }
            if let Some(g) = &mut pending {
                // [stream] The rest of a get that filled the output.
                let list = &data[g.at..g.end];
                g.at += resume_get(&mut session, &g.get, list, &g.reply, &mut out, g.complete);
                if g.at == g.end {
                    pending = None;
                }
                continue;
            }
            if skip_line {
                match memchr::memchr(b'\n', &data[consumed..]) {
                    Some(nl) => {
                        consumed += nl + 1;
                        skip_line = false;
                    }
                    None => consumed = data.len(),
                }
                continue;
            }
            if swallow > 0 {
                let n = swallow.min(data.len() - consumed);
                consumed += n;
                swallow -= n;
                continue;
            }
            if served >= reqs_per_event {
                // As memcached's `-R`: a connection with more requests read than one turn
                // allows lets the others on its worker run first (under a buffer cap, its
                // replies go out first, as memcached's do, freeing their room).
                served = 0;
                session.counts.conn_yields += 1;
                if out.limited() {
                    send(sock, &mut out, &mut session).await?;
                    out.settle();
                }
                tokio::task::yield_now().await;
            }
            let buf = &data[consumed..];
            let at = consumed;
            // Under a buffer cap, room for one reply before anything runs, as memcached
            // takes a response object first: without it the connection closes unanswered.
            let reserved = out.limited() && !no_out;
            if reserved && !out.respond(|| 1) {
                session.counts.response_obj_oom += 1;
                out.truncate_to(0);
                after = After::Close;
                break;
            }
            let step = step(proto, buf, &mut session, &mut out);
            session.no_room = false;
            waiting = step.whole;
            consumed += step.used;
            if step.used > 0 {
                served += 1;
                // A request that was fetched for has run: the next one may fetch.
                session.fetched = false;
            } else if reserved {
                out.unrespond(1);
            }
            if step.swallow > 0 {
                swallow = step.swallow;
            }
            let no_room = if no_out {
                !out.is_empty()
            } else {
                // A get's other keys take a reply each.
                step.used > 0 && !out.respond(|| step.responses(buf) - 1)
            };
            if no_room {
                // As memcached: a get is answered with the error (the replies pending
                // before it are dropped), anything else closes.
                session.counts.response_obj_oom += 1;
                out.truncate_to(0);
                if step.get.is_none() {
                    after = After::Close;
                    break;
                }
                sock.write_all(OOM_WRITING_GET).await?;
                session.counts.bytes_written += OOM_WRITING_GET.len() as u64;
                continue;
            }
            if out.limited() && step.used > 0 && Step::flushes(proto, &buf[..step.used]) {
                // memcached writes out at `mn` and a binary no-op, freeing its replies.
                send(sock, &mut out, &mut session).await?;
                out.settle();
            }
            match step.after {
                None if proto == Proto::Text && buf.len() > LINE_MAX_LENGTH => {
                    // [stream] A long get line still arriving: serve its complete keys.
                    match long_get(buf) {
                        LongGet::Keys {
                            with_cas,
                            list,
                            tail,
                        } => {
                            // Its complete keys wait for a peer first, as a whole line's
                            // would; then this part of the line is streamed again.
                            let keys = Keys::Spaced(&buf[list.0..list.1]);
                            if command::may_fetch(&session)
                                && command::fetch_missing(keys.iter(), &mut session)
                            {
                                after = After::Fetch;
                                break;
                            }
                            // What was fetched is served now: the rest of the line, once
                            // it arrives, may fetch in turn.
                            session.fetched = false;
                            pending = Some(PendingGet {
                                get: Get::plain(),
                                reply: TextReply {
                                    noreply: false,
                                    with_cas,
                                },
                                at: at + list.0,
                                end: at + list.1,
                                complete: false,
                            });
                            keep = Some((tail.0, at + tail.1));
                        }
                        LongGet::BadKey { with_cas, before } => {
                            let get = Get {
                                keys: Keys::Spaced(&buf[before.0..before.1]),
                                ..Get::plain()
                            };
                            let reply = TextReply {
                                noreply: false,
                                with_cas,
                            };
                            command::retrieval::get_bad_key(&mut session, &get, &reply, &mut out);
                            session.stacked = true;
                            skip_line = true;
                        }
                        LongGet::No => break,
                    }
                    consumed = data.len();
                }
                None => break,
                Some(After::Partial { .. }) => {
                    if let Some((get, reply, keys)) = step.unserved_keys(buf) {
                        pending = Some(PendingGet {
                            get,
                            reply,
                            at: at + keys.start,
                            end: at + keys.end,
                            complete: true,
                        });
                    }
                }
                Some(After::Continue) | Some(After::Swallow(_)) => {}
                Some(other) => {
                    after = other;
                    break;
                }
            }
        }
        if consumed > 0 {
            activity.last_cmd.store(session.now, Ordering::Relaxed);
        }
        if let Some((verb, tail)) = keep {
            // The tail becomes `get <partial key>` again, in place.
            let head = tail - verb.len();
            rbuf.data_mut()[head..tail].copy_from_slice(verb);
            consumed = head;
        }
        rbuf.consume(consumed);
        // memcached writes out what waits (quiet and noreply places too) once it has used
        // up its input, before it reads more: nothing is stacked for the next batch.
        session.stacked = false;
        session.auth_reply = None;
        if !out.is_empty() {
            // Counts go with the replies (see `send`).
            send(sock, &mut out, &mut session).await?;
        } else {
            shared.counts.slot(worker).absorb(&mut session.counts);
        }
        out.release();
        match after {
            After::Close => return Ok(Stop::Close(CloseReason::Error)),
            After::Quit => return Ok(Stop::Close(CloseReason::Normal)),
            After::Shutdown { .. } => return Ok(Stop::Shutdown),
            After::Watch => {
                activity.set_state(ConnState::Watch);
                watcher::serve(sock, &shared.watchers, conn, shared.shutdown_signal()).await?;
                return Ok(Stop::Close(closed(shared)));
            }
            After::Fetch => {
                // Replies before it are out; the request waits here, not its worker.
                if let Some(r) = shared.replication.get() {
                    r.warm_up(&std::mem::take(&mut session.fetch)).await;
                }
                session.fetched = true;
                continue;
            }
            After::Dump { all } => {
                if !out.ensure() {
                    session.counts.response_obj_oom += 1;
                    shared.counts.slot(worker).absorb(&mut session.counts);
                    return Ok(Stop::Close(CloseReason::Error));
                }
                let dumping = shared.begin_dump();
                if dumping.is_none() {
                    out.extend_from_slice(dump::BUSY);
                } else {
                    let mut cursor = all.then(Cursor::default);
                    while let Some(c) = cursor {
                        let (store, clock, sizing) =
                            (&shared.store, &shared.clock, shared.sizing());
                        cursor = dump::write_batch(store, clock, sizing, c, session.now, &mut out);
                        if cursor.is_some() {
                            send(sock, &mut out, &mut session).await?;
                        }
                    }
                    out.extend_from_slice(b"END\r\n");
                }
                send(sock, &mut out, &mut session).await?;
                // Held until the last of the dump is out.
                drop(dumping);
                out.release();
                shared.counts.slot(worker).absorb(&mut session.counts);
                // Requests pipelined after the dump are still in the buffer.
                continue;
            }
            _ => {}
        }
        match waiting.filter(|&whole| whole > buffers::UNIT) {
            Some(whole) if held.as_ref().map(Hold::bytes) != Some(whole) => {
                // The old hold, if any, goes back before the new one is taken.
                drop(held.take());
                held = shared.store.hold(whole, session.now);
                if held.is_none() {
                    // As memcached when it cannot allocate the item: the request is
                    // refused and its value swallowed, not buffered.
                    session.no_room = true;
                    continue;
                }
                rbuf.expect(whole);
            }
            Some(_) => {}
            None => held = None,
        }
        // An idle connection holds no buffer: the next one is taken when data arrives.
        let in_value = proto != Proto::Unknown && waiting_for_data(proto, rbuf.data(), swallow);
        if proto != Proto::Unknown {
            activity.set_state(if in_value {
                ConnState::Nread
            } else {
                ConnState::Read
            });
        }
        rbuf.release();
        // Shutdown needs no wait of its own here: it shuts the socket for reading, and
        // this read ends (see `Shared::shutdown`). `-o idle_timeout` kicks a connection
        // silent between requests or within a command line, not one in the middle of a
        // value, as memcached's check skips connections reading one.
        // A held request's buffer has room for exactly the rest of it.
        let min = held
            .as_ref()
            .map_or(READ_MIN, |h| READ_MIN.min(h.bytes() - rbuf.data().len()));
        let read = if idle > 0 && !in_value {
            let limit = Duration::from_secs(idle);
            tokio::time::timeout(limit, sock.read_into(&mut rbuf, min))
                .await
                .ok()
        } else {
            Some(sock.read_into(&mut rbuf, min).await)
        };
        let r = match read {
            Some(r) => r?,
            // `-o idle_timeout`: closed for silence, counted as memcached counts it.
            None => {
                shared
                    .counts
                    .slot(worker)
                    .idle_kicks
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(Stop::Close(CloseReason::IdleTimeout));
            }
        };
        let n = match r {
            Ok(n) => n,
            Err(oom) => {
                // As memcached: no buffer for a new request closes the connection; a
                // request too large for what is left is answered first.
                session.counts.read_buf_oom += 1;
                shared.counts.slot(worker).absorb(&mut session.counts);
                if oom == Oom::Grow {
                    sock.write_all(OOM_READING).await?;
                }
                return Ok(Stop::Close(CloseReason::Error));
            }
        };
        if n == 0 {
            return Ok(Stop::Close(closed(shared)));
        }
        rbuf.filled(n);
        session.counts.bytes_read += n as u64;
        activity.set_state(ConnState::ParseCmd);
    }
}

/// [stream] Serves more keys (`list`) of a text get (`get`, its options) that stopped for a
/// full output, and its END once they are the last keys of a `complete` line; returns the
/// bytes of `list` served. With `-vv` their replies are logged as the first keys' were.
pub(super) fn resume_get(
    session: &mut Session<'_>,
    get: &Get<'_>,
    list: &[u8],
    reply: &TextReply,
    out: &mut Output,
    complete: bool,
) -> usize {
    let mark = out.mark();
    let get = Get {
        keys: Keys::Spaced(list),
        ..*get
    };
    let served = command::retrieval::get_keys(session, &get, reply, out);
    if served == list.len() && complete {
        reply.end(out);
    }
    if session.shared.verbosity() > 1 {
        verbose::more_replies(session.fd, &out.since(mark));
    }
    served
}

/// Is the connection waiting for the rest of a request whose header it has (memcached's
/// `conn_nread`), rather than for a new request? `pending` is the unparsed input.
fn waiting_for_data(proto: Proto, pending: &[u8], swallow: usize) -> bool {
    swallow > 0
        || match proto {
            Proto::Binary => pending.len() >= binary::HEADER_LEN,
            _ => memchr::memchr(b'\n', pending).is_some(),
        }
}

/// Writes out the pending replies, counting the bytes. With acknowledged writes, replies
/// to a command that changed the store first wait until peers hold the change.
async fn send<S>(
    sock: &Socket<S>,
    out: &mut Output,
    session: &mut Session<'_>,
) -> std::io::Result<()>
where
    S: AsRawFd,
    for<'a> &'a S: Read + Write,
{
    let replication = session.shared.replication.get();
    if let Some(r) = replication.filter(|r| r.acknowledged_writes() && session.wrote) {
        session.wrote = false;
        let largest = std::mem::take(&mut session.wrote_largest);
        let waited = r.wait_acked(largest).await;
        let c = &mut session.counts;
        c.repl_ack_waits += u64::from(waited != AckWait::NoPeer);
        c.repl_ack_timeouts += u64::from(waited == AckWait::TimedOut);
        c.repl_ack_too_large += u64::from(waited == AckWait::TooLarge);
    }
    session.counts.bytes_written += out.pending() as u64;
    // Counted before the replies go, as memcached counts: a client that reads a reply,
    // then asks `stats` on another connection, finds its request in them.
    let shared = session.shared;
    shared
        .counts
        .slot(session.worker)
        .absorb(&mut session.counts);
    sock.write_out(out).await?;
    out.drop_growth();
    Ok(())
}

/// What the front of an incomplete long line is.
enum LongGet {
    /// A get or gets: the range of its complete keys, and its verb with where the
    /// unfinished last key starts.
    Keys {
        with_cas: bool,
        list: (usize, usize),
        tail: (&'static [u8], usize),
    },
    /// A get with a key that cannot be valid: the range of the keys before it (read
    /// before the line is refused, as memcached reads them).
    BadKey {
        with_cas: bool,
        before: (usize, usize),
    },
    /// Something else.
    No,
}

fn long_get(buf: &[u8]) -> LongGet {
    let lead = buf.iter().position(|&b| b != b' ').unwrap_or(buf.len());
    let rest = &buf[lead..];
    let (verb, cas): (&'static [u8], bool) = if rest.starts_with(b"get ") {
        (b"get ", false)
    } else if rest.starts_with(b"gets ") {
        (b"gets ", true)
    } else {
        return LongGet::No;
    };
    let start = lead + verb.len();
    // The line may end right after what arrived: when that is spaces (and perhaps the CR
    // of its CR LF), the last complete key is kept too, so what is left reads
    // `get <key> \r\n` when the line ends, never a bare `get \r\n` (an ERROR).
    let body = buf.strip_suffix(b"\r").unwrap_or(buf);
    let end = body.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    let Some(space) = memchr::memrchr(b' ', &buf[..end.max(start)]) else {
        return LongGet::No;
    };
    // An unfinished last key is kept whatever its length: as in memcached, a key too long is
    // refused once its line ends (and the parser's bound on a get line still holds).
    let tail = space + 1;
    let first = start.min(space);
    if let Some(at) = text::retrieval::first_bad_key(&buf[first..space]) {
        return LongGet::BadKey {
            with_cas: cas,
            before: (first, first + at),
        };
    }
    LongGet::Keys {
        with_cas: cas,
        list: (first, space),
        tail: (verb, tail),
    }
}

/// Starts loading the items of every read request waiting in `data` when there are
/// several (a multi-key get, or pipelined gets, getkq or mg), so the lookups' cache misses
/// overlap instead of queueing one after another.
fn prefetch_reads(shared: &Shared, proto: Proto, data: &[u8]) {
    if !may_hold_several_reads(proto, data) {
        return;
    }
    let mut keys: [&[u8]; 64] = [&[]; 64];
    let n = match proto {
        Proto::Binary if data.len() >= 2 * binary::HEADER_LEN => {
            binary::pipelined_get_keys(data, &mut keys)
        }
        Proto::Text => text::retrieval::pipelined_get_keys(data, &mut keys),
        _ => 0,
    };
    if n > 1 {
        shared.store.prefetch(&keys[..n]);
    }
}

/// A cheap look at the batch before listing its keys: the common case, one request with at
/// most one key, or one that is not a read, is done with at once.
#[inline]
fn may_hold_several_reads(proto: Proto, data: &[u8]) -> bool {
    match proto {
        Proto::Text => {
            // The walk stops at the first line that is not get, gets or mg.
            if !matches!(data.first(), Some(b'g' | b'm')) {
                return false;
            }
            match memchr::memchr(b'\n', data) {
                Some(nl) => {
                    nl + 1 < data.len() || memchr::memchr_iter(b' ', &data[..nl]).nth(1).is_some()
                }
                None => false,
            }
        }
        Proto::Binary => binary::Header::parse(data)
            .is_some_and(|h| binary::HEADER_LEN + (h.body_len as usize) < data.len()),
        _ => false,
    }
}

/// Parses and executes the request at the front of `buf` in protocol `proto`, appending
/// its reply to `out`. UDP datagrams run through here too, so both transports share one
/// parse, execute and render path.
pub(super) fn step(proto: Proto, buf: &[u8], session: &mut Session<'_>, out: &mut Output) -> Step {
    match proto {
        Proto::Binary => binary_step(buf, session, out),
        Proto::Text if session.shared.ascii_credentials.is_some() && !session.authenticated => {
            auth_step(buf, session, out)
        }
        Proto::Text => text_step(buf, session, out),
        Proto::Unknown | Proto::Refused => Step::close(0),
    }
}

/// Which protocol a connection speaks, decided by its first byte as memcached does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proto {
    Unknown,
    Text,
    Binary,
    /// Under `-B binary`, a first byte that is no binary request (memcached closes on its
    /// bad magic).
    Refused,
}

impl Proto {
    /// As memcached: only `-B auto` looks at the first byte; `-B ascii` (and `-Y`) read
    /// everything as text, 0x80 included.
    pub(super) fn detect(first: u8, binding: BindingProtocol) -> Proto {
        let binary = first == crate::protocol::binary::REQUEST;
        match (binding, binary) {
            (BindingProtocol::Ascii, _) => Proto::Text,
            (BindingProtocol::Binary, false) => Proto::Refused,
            (_, true) => Proto::Binary,
            (_, false) => Proto::Text,
        }
    }
}

/// One parse-and-execute step: bytes used, bytes to skip next, and what to do after
/// (`None`: wait for more input).
pub(super) struct Step {
    pub used: usize,
    pub swallow: usize,
    pub after: Option<After>,
    /// Waiting: the length the request will have, once its header told.
    whole: Option<usize>,
    /// [stream] A text get's options and reply (to resume it after `After::Partial`).
    get: Option<(Get<'static>, TextReply)>,
}

impl Step {
    /// After [`After::Partial`]: the get's options, its reply, and where in `buf` (the
    /// bytes this step parsed from) the keys it has not served yet lie. The key list ends
    /// where the line does, before its CR LF.
    pub(super) fn unserved_keys(
        &self,
        buf: &[u8],
    ) -> Option<(Get<'static>, TextReply, std::ops::Range<usize>)> {
        let Some(After::Partial { rest }) = self.after else {
            return None;
        };
        let (get, reply) = self.get?;
        let line = &buf[..self.used];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let end = line.strip_suffix(b"\r").unwrap_or(line).len();
        Some((get, reply, end.checked_sub(rest)?..end))
    }

    /// How many replies memcached would count for this request (see
    /// [`crate::server::output::RESPONSES_PER_UNIT`]): one per key of a text get, one for
    /// anything else.
    fn responses(&self, buf: &[u8]) -> usize {
        let Some((get, _)) = &self.get else {
            return 1;
        };
        let line = &buf[..self.used.min(buf.len())];
        let words = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .count();
        // The verb, and the expiry of gat/gats.
        let head = 1 + usize::from(get.touch.is_some());
        words.saturating_sub(head).max(1)
    }

    /// Whether this request makes memcached write out what it has (`mn`, a binary no-op):
    /// under a buffer cap its pending replies are freed there too.
    fn flushes(proto: Proto, request: &[u8]) -> bool {
        match proto {
            Proto::Binary => request.get(1) == Some(&crate::protocol::binary::op::NOOP),
            _ => matches!(request, b"mn\r\n" | b"mn\n"),
        }
    }

    fn close(used: usize) -> Step {
        Step {
            used,
            swallow: 0,
            after: Some(After::Close),
            whole: None,
            get: None,
        }
    }

    fn wait(whole: Option<usize>) -> Step {
        Step {
            used: 0,
            swallow: 0,
            after: None,
            whole,
            get: None,
        }
    }

    /// A request that waits for a fetch ([`After::Fetch`]) has used nothing: it runs again
    /// from the same bytes once the answers are in.
    fn unless_fetching(mut self) -> Step {
        if self.after == Some(After::Fetch) {
            self.used = 0;
        }
        self
    }

    fn done(used: usize, after: After) -> Step {
        let swallow = if let After::Swallow(n) = after { n } else { 0 };
        Step {
            used,
            swallow,
            after: Some(after),
            whole: None,
            get: None,
        }
    }
}

fn text_step(buf: &[u8], session: &mut Session<'_>, out: &mut Output) -> Step {
    logged(buf, session, out, text_exchange, verbose::exchange)
}

/// Runs one request through `exchange`, and with `-vv` hands what it read and wrote to
/// `log`. Generic, so each protocol's path is compiled (and inlined) on its own.
#[inline]
fn logged<'s>(
    buf: &[u8],
    session: &mut Session<'s>,
    out: &mut Output,
    exchange: impl FnOnce(&[u8], &mut Session<'s>, &mut Output) -> Step,
    log: impl FnOnce(i32, &[u8], &[u8]),
) -> Step {
    let start = out.mark();
    // Read before executing, so `verbosity 0` itself is still logged.
    let verbose = session.shared.verbosity() > 1;
    let step = exchange(buf, session, out).unless_fetching();
    if verbose && step.used > 0 {
        // Large values are queued by reference, not in the copied bytes: put them back,
        // or the log would read past them into the next reply.
        log(session.fd, &buf[..step.used], &out.since(start));
    }
    step
}

fn text_exchange(buf: &[u8], session: &mut Session<'_>, out: &mut Output) -> Step {
    match text::parse(buf, &session.limits()) {
        Parsed::Done(req, used) => {
            // [stream] A get that stops early is resumed with its options and reply.
            let get = match &req {
                Request::Text(Command::Get(get), reply) => Some((
                    Get {
                        keys: Keys::Spaced(&[]),
                        ..*get
                    },
                    *reply,
                )),
                _ => None,
            };
            let mut step = Step::done(used, command::text(req, session, out));
            step.get = get;
            step
        }
        Parsed::Incomplete { whole } => Step::wait(whole),
        Parsed::Invalid(e) => {
            e.write_reply(out);
            session.stacked = true;
            if e.kind == crate::protocol::ErrorKind::BadDataChunk {
                // memcached counts the set before it checks the data's end.
                session.counts.cmd_set += 1;
            }
            if e.kind.next() == Next::Close {
                return Step::close(e.consumed);
            }
            Step {
                used: e.consumed,
                swallow: e.swallow,
                after: Some(After::Continue),
                whole: None,
                get: None,
            }
        }
    }
}

fn binary_step(buf: &[u8], session: &mut Session<'_>, out: &mut Output) -> Step {
    logged(buf, session, out, binary_exchange, verbose::binary_exchange)
}

fn binary_exchange(buf: &[u8], session: &mut Session<'_>, out: &mut Output) -> Step {
    match binary::parse(buf, &session.limits()) {
        BinParsed::Done(req, used) => Step::done(used, command::binary(req, session, out)),
        BinParsed::Incomplete { whole } => Step::wait(whole),
        BinParsed::BadMagic => Step::close(0),
        BinParsed::Error {
            header,
            status,
            consumed,
            swallow,
            close,
        } => {
            binary::reply::error(out, &header, status);
            Step {
                used: consumed,
                swallow,
                after: Some(if close { After::Close } else { After::Continue }),
                whole: None,
                get: None,
            }
        }
    }
}

/// `-Y`: the first text request must carry credentials.
fn auth_step(buf: &[u8], session: &mut Session<'_>, out: &mut Output) -> Step {
    let parsed = text::auth::parse(buf);
    if matches!(
        parsed,
        AuthParsed::Reply { .. } | AuthParsed::Credentials { .. }
    ) {
        // Replaces the answer before it, still unsent (see `Session::auth_reply`).
        if let Some(at) = session.auth_reply {
            out.truncate_to(at);
        }
        session.auth_reply = Some(out.len());
    }
    match parsed {
        AuthParsed::Incomplete => Step::wait(None),
        AuthParsed::Close => Step::close(buf.len()),
        AuthParsed::Reply { reply, used } => {
            out.extend_from_slice(reply);
            Step::done(used, After::Continue)
        }
        AuthParsed::Credentials { user, pass, used } => {
            let ok = command::auth::ascii(session, user, pass);
            text::auth::answer(out, ok);
            Step::done(used, After::Continue)
        }
    }
}

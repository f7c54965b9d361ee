//! One client connection: read, parse every complete request, reply, repeat.
//!
//! The task owns its buffers. Each read is followed by parsing all complete requests in the
//! buffer and one write of all their replies, so a pipelined batch costs one read and one
//! write system call. Output is bounded: once the pending replies pass a high-water mark they
//! are written (waiting for the client to read) before more requests are parsed, so a client
//! that sends but never reads stalls only itself.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::dispatch::{self, After, Session};
use super::io::{ReadBuf, Socket};
use super::stats::Counts;
use super::{dump, verbose};
use super::{Activity, ConnState, Shared};
use crate::protocol::binary::{self, BinParsed};
use crate::protocol::text::auth::AuthParsed;
use crate::protocol::{text, Next, Parsed};
use crate::store::Cursor;

/// Initial read buffer; grows for large values, shrinks back when idle.
const READ_BUF: usize = 16 * 1024;
/// Pending output that triggers a write before parsing more.
const OUT_HIGH_WATER: usize = 256 * 1024;
/// Buffers above this are released when empty, so one large value does not pin memory.
const SHRINK_ABOVE: usize = 1024 * 1024;

/// Why the read loop stopped.
enum Stop {
    Close,
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
    let (id, activity) = shared.register(addr, listen_addr);
    let fd = stream.as_raw_fd();
    if shared.verbosity() > 1 {
        verbose::opened(fd);
    }
    let result = match Socket::new(stream) {
        Ok(sock) => run(&sock, fd, &shared, worker, &activity).await,
        Err(e) => Err(e),
    };
    if shared.verbosity() > 1 {
        verbose::closed(fd);
    }
    shared.unregister(id);
    shared.curr_conns.fetch_sub(1, Ordering::AcqRel);
    if let Ok(Stop::Shutdown) = result {
        shared.shutdown();
    }
}

async fn run<S>(
    sock: &Socket<S>,
    fd: i32,
    shared: &Shared,
    worker: usize,
    activity: &Activity,
) -> std::io::Result<Stop>
where
    S: AsRawFd,
    for<'a> &'a S: Read + Write,
{
    let mut rbuf = ReadBuf::with_capacity(READ_BUF);
    let mut out: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut swallow = 0usize;
    let mut stop = shared.shutdown_signal();
    // One wait for shutdown per connection, not one per request: re-arming it each time
    // would register and unregister a waiter on every read.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    let idle = shared.config.idle_timeout_secs;
    let mut session = Session {
        shared,
        counts: Default::default(),
        now: shared.clock.now(),
        worker,
        fd,
        authenticated: false,
    };
    let mut proto = Proto::Unknown;
    loop {
        // Parse and execute every complete request in the buffer.
        session.now = shared.clock.now();
        let mut consumed = 0;
        let mut after = After::Continue;
        let data = rbuf.data();
        if proto == Proto::Unknown && !data.is_empty() {
            proto = Proto::detect(data[0], &shared.config.binding_protocol);
            if shared.verbosity() > 1 {
                verbose::protocol(fd, proto == Proto::Binary);
            }
        }
        prefetch_reads(shared, proto, data);
        while consumed < data.len() {
            if swallow > 0 {
                let n = swallow.min(data.len() - consumed);
                consumed += n;
                swallow -= n;
                continue;
            }
            let step = step(proto, &data[consumed..], &mut session, &mut out);
            consumed += step.used;
            if step.swallow > 0 {
                swallow = step.swallow;
            }
            match step.after {
                None => break,
                Some(After::Continue) | Some(After::Swallow(_)) => {}
                Some(other) => {
                    after = other;
                    break;
                }
            }
            if out.len() >= OUT_HIGH_WATER {
                send(sock, &mut out, &mut session.counts).await?;
            }
        }
        if consumed > 0 {
            activity.last_cmd.store(session.now, Ordering::Relaxed);
        }
        rbuf.consume(consumed);
        if !out.is_empty() {
            send(sock, &mut out, &mut session.counts).await?;
            if out.capacity() > SHRINK_ABOVE {
                out = Vec::with_capacity(READ_BUF);
            }
        }
        shared.counts.slot(worker).absorb(&mut session.counts);
        match after {
            After::Close => return Ok(Stop::Close),
            After::Shutdown { .. } => return Ok(Stop::Shutdown),
            After::Dump { all } => {
                let mut cursor = all.then(Cursor::default);
                while let Some(c) = cursor {
                    cursor =
                        dump::write_batch(&shared.store, &shared.clock, c, session.now, &mut out);
                    if cursor.is_some() {
                        send(sock, &mut out, &mut session.counts).await?;
                    }
                }
                out.extend_from_slice(b"END\r\n");
                send(sock, &mut out, &mut session.counts).await?;
                shared.counts.slot(worker).absorb(&mut session.counts);
                // Requests pipelined after the dump are still in the buffer.
                continue;
            }
            _ => {}
        }
        if rbuf.capacity() > SHRINK_ABOVE {
            rbuf.shrink_to(READ_BUF);
        }
        if proto != Proto::Unknown {
            let waiting = waiting_for_data(proto, rbuf.data(), swallow);
            activity.set_state(if waiting {
                ConnState::Nread
            } else {
                ConnState::Read
            });
        }
        let spare = rbuf.spare(READ_BUF / 4);
        let n = tokio::select! {
            biased;
            _ = &mut stopped => return Ok(Stop::Close),
            r = async {
                if idle > 0 {
                    tokio::time::timeout(Duration::from_secs(idle), sock.read(spare)).await.ok()
                } else {
                    Some(sock.read(spare).await)
                }
            } => match r {
                Some(r) => r?,
                // `-o idle_timeout`: closed for silence, counted as memcached counts it.
                None => {
                    shared.counts.slot(worker).idle_kicks.fetch_add(1, Ordering::Relaxed);
                    return Ok(Stop::Close);
                }
            },
        };
        if n == 0 {
            return Ok(Stop::Close);
        }
        rbuf.filled(n);
        session.counts.bytes_read += n as u64;
        activity.set_state(ConnState::ParseCmd);
    }
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

/// Writes out the pending replies and empties the buffer, counting the bytes.
async fn send<S>(sock: &Socket<S>, out: &mut Vec<u8>, counts: &mut Counts) -> std::io::Result<()>
where
    S: AsRawFd,
    for<'a> &'a S: Read + Write,
{
    counts.bytes_written += out.len() as u64;
    sock.write_all(out).await?;
    out.clear();
    Ok(())
}

/// Starts loading the items of every read request waiting in `data` when there are
/// several (a multi-key get, or pipelined gets, getkq or mg), so the lookups' cache misses
/// overlap instead of queueing one after another.
fn prefetch_reads(shared: &Shared, proto: Proto, data: &[u8]) {
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

/// Parses and executes the request at the front of `buf` in protocol `proto`, appending
/// its reply to `out`. UDP datagrams run through here too, so both transports share one
/// parse, execute and render path.
pub(super) fn step(proto: Proto, buf: &[u8], session: &mut Session<'_>, out: &mut Vec<u8>) -> Step {
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
    /// The first byte asked for a protocol `-B` turned off.
    Refused,
}

impl Proto {
    pub(super) fn detect(first: u8, binding: &str) -> Proto {
        let binary = first == crate::protocol::binary::REQUEST;
        match (binding, binary) {
            ("ascii", true) | ("binary", false) => Proto::Refused,
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
}

impl Step {
    fn close(used: usize) -> Step {
        Step {
            used,
            swallow: 0,
            after: Some(After::Close),
        }
    }

    fn wait() -> Step {
        Step {
            used: 0,
            swallow: 0,
            after: None,
        }
    }

    fn done(used: usize, after: After) -> Step {
        let swallow = if let After::Swallow(n) = after { n } else { 0 };
        Step {
            used,
            swallow,
            after: Some(after),
        }
    }
}

fn text_step(buf: &[u8], session: &mut Session<'_>, out: &mut Vec<u8>) -> Step {
    logged(buf, session, out, text_exchange, verbose::exchange)
}

/// Runs one request through `exchange`, and with `-vv` hands what it read and wrote to
/// `log`. Generic, so each protocol's path is compiled (and inlined) on its own.
#[inline]
fn logged<'s>(
    buf: &[u8],
    session: &mut Session<'s>,
    out: &mut Vec<u8>,
    exchange: impl FnOnce(&[u8], &mut Session<'s>, &mut Vec<u8>) -> Step,
    log: impl FnOnce(i32, &[u8], &[u8]),
) -> Step {
    let start = out.len();
    // Read before executing, so `verbosity 0` itself is still logged.
    let verbose = session.shared.verbosity() > 1;
    let step = exchange(buf, session, out);
    if verbose && step.used > 0 {
        log(session.fd, &buf[..step.used], &out[start..]);
    }
    step
}

fn text_exchange(buf: &[u8], session: &mut Session<'_>, out: &mut Vec<u8>) -> Step {
    match text::parse(buf, &session.shared.limits) {
        Parsed::Done(req, used) => Step::done(used, dispatch::execute(req, session, out)),
        Parsed::Incomplete => Step::wait(),
        Parsed::Invalid(e) => {
            e.write_reply(out);
            if e.kind.next() == Next::Close {
                return Step::close(e.consumed);
            }
            Step {
                used: e.consumed,
                swallow: e.swallow,
                after: Some(After::Continue),
            }
        }
    }
}

fn binary_step(buf: &[u8], session: &mut Session<'_>, out: &mut Vec<u8>) -> Step {
    logged(buf, session, out, binary_exchange, verbose::binary_exchange)
}

fn binary_exchange(buf: &[u8], session: &mut Session<'_>, out: &mut Vec<u8>) -> Step {
    match binary::parse(buf, &session.shared.limits) {
        BinParsed::Done(req, used) => Step::done(used, super::binary::execute(req, session, out)),
        BinParsed::Incomplete => Step::wait(),
        BinParsed::BadMagic => Step::close(0),
        BinParsed::Error {
            header,
            status,
            consumed,
            swallow,
            close,
        } => {
            if status == binary::status::E2BIG {
                session.counts.store_too_large += 1;
                // memcached counts the set in `stats detail` before refusing it; the key is
                // in the buffer already (the refusal comes once header, extras and key are).
                let at = binary::HEADER_LEN + header.extras_len as usize;
                if let Some(key) = buf.get(at..at + header.key_len as usize) {
                    session.shared.detail.record(key, super::detail::Op::Set);
                }
            }
            binary::reply::error(out, &header, status);
            Step {
                used: consumed,
                swallow,
                after: Some(if close { After::Close } else { After::Continue }),
            }
        }
    }
}

/// `-Y`: the first text request must carry credentials.
fn auth_step(buf: &[u8], session: &mut Session<'_>, out: &mut Vec<u8>) -> Step {
    match text::auth::parse(buf) {
        AuthParsed::Incomplete => Step::wait(),
        AuthParsed::Close => Step::close(buf.len()),
        AuthParsed::Reply { reply, used } => {
            out.extend_from_slice(reply);
            Step::done(used, After::Continue)
        }
        AuthParsed::Credentials { user, pass, used } => {
            let ok = session
                .shared
                .ascii_credentials
                .as_ref()
                .is_some_and(|c| c.check(user, pass));
            session.counts.auth_cmds += 1;
            if ok {
                session.authenticated = true;
                out.extend_from_slice(b"STORED\r\n");
            } else {
                session.counts.auth_errors += 1;
                out.extend_from_slice(b"CLIENT_ERROR authentication failure\r\n");
            }
            Step::done(used, After::Continue)
        }
    }
}

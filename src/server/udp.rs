//! UDP (`-U`), served as memcached 1.6 serves it.
//!
//! Every datagram starts with an 8-byte frame header: request id, sequence number, total
//! datagrams in the message, reserved (16-bit big-endian each). A request must fit in one
//! datagram: one that says it is part of a longer message is dropped, as is a datagram with
//! no payload. The payload is read as a connection's input would be, through the same
//! parse, execute and render step (`connection::step`), text, meta or binary chosen by
//! each request's first byte. Each request's reply is one message, split into datagrams of
//! at most 1400 bytes with the request's id, the sequence number and the total filled in;
//! a request cut off at the end of the datagram is dropped, nothing waits for more.
//!
//! Each UDP socket is read by `-t` threads, as memcached has each worker read it. A thread
//! blocks in `recv_from` with a short timeout so it notices shutdown.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::command::{After, Session};
use super::connection::{self, Proto};
use super::output::Output;
use super::{listener, Activity, ConnKind, ServerError, Shared};
use crate::config::ListenConfig;

/// The frame header every datagram starts with.
pub const FRAME_HEADER_LEN: usize = 8;
/// memcached's UDP_MAX_PAYLOAD_SIZE: the largest reply datagram, frame header included.
pub const MAX_DATAGRAM: usize = 1400;
/// Reply bytes per datagram.
const DATA_PER_DATAGRAM: usize = MAX_DATAGRAM - FRAME_HEADER_LEN;
/// memcached's UDP read buffer: a longer request datagram is cut to this.
const READ_BUF: usize = 65536;
/// How often an idle receiver looks for the shutdown signal.
const POLL: Duration = Duration::from_millis(200);

/// A datagram's frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub request_id: u16,
    pub sequence: u16,
    pub total: u16,
}

impl Frame {
    /// The header of a datagram that has a payload; None for 8 bytes or fewer (memcached
    /// ignores those).
    pub fn parse(datagram: &[u8]) -> Option<Frame> {
        if datagram.len() <= FRAME_HEADER_LEN {
            return None;
        }
        let word = |i: usize| u16::from_be_bytes([datagram[i], datagram[i + 1]]);
        Some(Frame {
            request_id: word(0),
            sequence: word(2),
            total: word(4),
        })
    }

    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let [a, b] = self.request_id.to_be_bytes();
        let [c, d] = self.sequence.to_be_bytes();
        let [e, f] = self.total.to_be_bytes();
        [a, b, c, d, e, f, 0, 0]
    }
}

/// Splits one reply into framed datagrams and hands each to `send`. The total is capped
/// at 65535 datagrams (memcached caps it the same way); a longer reply is cut there.
pub fn split(request_id: u16, reply: &[u8], mut send: impl FnMut(&[u8])) {
    let total = reply
        .len()
        .div_ceil(DATA_PER_DATAGRAM)
        .min(u16::MAX as usize);
    let mut datagram = Vec::with_capacity(MAX_DATAGRAM);
    for (sequence, chunk) in reply.chunks(DATA_PER_DATAGRAM).take(total).enumerate() {
        datagram.clear();
        let frame = Frame {
            request_id,
            sequence: sequence as u16,
            total: total as u16,
        };
        datagram.extend_from_slice(&frame.encode());
        datagram.extend_from_slice(chunk);
        send(&datagram);
    }
}

/// Binds a UDP socket on each listen address when `-U` is not 0 (never with `-s`, as in
/// memcached).
pub fn bind(cfg: &ListenConfig) -> Result<Vec<UdpSocket>, ServerError> {
    let Some(port) = cfg.udp_port.bind_port() else {
        return Ok(Vec::new());
    };
    if cfg.unix_socket.is_some() {
        return Ok(Vec::new());
    }
    let wildcard = cfg.addrs.is_empty();
    let mut sockets = Vec::new();
    for addr in listener::addresses(cfg, port)? {
        match bind_one(addr) {
            Ok(s) => sockets.push(s),
            // No IPv6 on this machine: the IPv4 wildcard still serves.
            Err(_) if wildcard && addr.is_ipv6() => {}
            Err(e) => return Err(listener::bind_error(&format!("udp {addr}"), port, "-U", &e)),
        }
    }
    Ok(sockets)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket)
}

/// Starts a receiver thread per worker on each socket (`-t`, up to one per core).
pub fn spawn(
    sockets: Vec<UdpSocket>,
    shared: &Arc<Shared>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::new();
    for socket in sockets {
        let name = socket
            .local_addr()
            .map(|a| format!("udp:{a}"))
            .unwrap_or_default();
        for worker in 0..super::worker::count(shared.config.threads) {
            let socket = socket.try_clone()?;
            let shared = shared.clone();
            let activity =
                shared.register_endpoint(ConnKind::Udp, name.clone(), socket.as_raw_fd());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("repcached-udp-{worker}"))
                    .spawn(move || receive(socket, shared, worker, activity))?,
            );
        }
    }
    Ok(handles)
}

/// Waits for the receivers, which stop within one poll of the shutdown signal.
pub async fn join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        while !h.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = h.join();
    }
}

fn receive(socket: UdpSocket, shared: Arc<Shared>, worker: usize, activity: Arc<Activity>) {
    let stop = shared.shutdown_signal();
    let mut buf = vec![0u8; READ_BUF];
    let mut out = Output::default();
    while !*stop.borrow() {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) {
                    tracing::debug!("udp receive failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        let mut session = Session {
            shared: &shared,
            counts: Default::default(),
            now: shared.clock.now(),
            worker,
            fd: socket.as_raw_fd(),
            conn: None,
            authenticated: false,
            fetch: Vec::new(),
            // A datagram is answered at once: a miss is not first asked of a peer.
            fetched: true,
            wrote: false,
            wrote_largest: 0,
            stacked: false,
            no_room: false,
            auth_reply: None,
        };
        session.counts.bytes_read += n as u64;
        activity.last_cmd.store(session.now, Ordering::Relaxed);
        let mut send = |datagram: &[u8]| {
            if let Err(e) = socket.send_to(datagram, peer) {
                tracing::debug!("udp send to {peer} failed: {e}");
            }
        };
        let shutdown = serve_datagram(&buf[..n], &mut session, &mut out, &mut send);
        shared.counts.slot(worker).absorb(&mut session.counts);
        if shutdown {
            shared.shutdown();
        }
    }
}

/// Runs the requests of one datagram, sending each reply as it is made, up to a `quit`,
/// `watch` or `lru_crawler metadump`. Returns whether one of them asked the server to stop.
fn serve_datagram(
    datagram: &[u8],
    session: &mut Session<'_>,
    out: &mut Output,
    send: &mut impl FnMut(&[u8]),
) -> bool {
    // The output is gathered into one buffer before it is split into datagrams.
    let mut message = Vec::new();
    let Some(frame) = Frame::parse(datagram) else {
        return false;
    };
    if frame.total != 1 {
        return false;
    }
    let mut reply = |out: &mut Output, session: &mut Session<'_>| {
        message.clear();
        out.drain_into(&mut message);
        split(frame.request_id, &message, |d| {
            session.counts.bytes_written += d.len() as u64;
            send(d);
        });
    };
    // Whether an answer went out for this datagram (see `quit` below).
    let mut answered = false;
    let mut rest = &datagram[FRAME_HEADER_LEN..];
    while !rest.is_empty() {
        let proto = Proto::detect(rest[0], session.shared.config.binding_protocol);
        out.ensure();
        let step = connection::step(proto, rest, session, out);
        let after = step.after;
        if matches!(after, Some(After::Watch | After::Dump { .. })) {
            // memcached hands its socket to the log stream or the dump, which cannot reach
            // a client it is not connected to: nothing comes back, nor for the rest.
            out.truncate_to(0);
            return false;
        }
        if let Some((get, text, keys)) = step.unserved_keys(rest) {
            // A multiget that filled the output: each full stretch goes out as a message of
            // its own (memcached sends one per key), then the rest of its keys are served.
            let (mut at, end) = (keys.start, keys.end);
            while at < end {
                if out.must_flush() {
                    reply(out, session);
                }
                at += connection::resume_get(session, &get, &rest[at..end], &text, out, true);
            }
        }
        if !out.is_empty() {
            reply(out, session);
            answered = true;
        }
        match after {
            // Cut off at the end of the datagram: nothing more will come for it.
            None => return false,
            // memcached's empty answer to `quit` goes out as a bare frame header (its
            // total 0) when it is the datagram's first. (After other answers it mostly goes
            // out with them, as nothing, though a get written out before it may leave it on
            // its own: memcached's threads race there.)
            Some(After::Quit) if !answered => break,
            Some(After::Close | After::Quit) => return false,
            Some(After::Shutdown { .. }) => return true,
            // A fetch is never asked for (see `fetched`); a watch or dump ended it above.
            Some(After::Fetch | After::Watch | After::Dump { .. }) => return false,
            Some(After::Continue | After::Swallow(_) | After::Partial { .. }) => {}
        }
        let used = step.used.saturating_add(step.swallow);
        if used == 0 || used >= rest.len() {
            return false;
        }
        rest = &rest[used..];
        if rest.is_empty() {
            return false;
        }
    }
    // `quit` as the datagram's first answer.
    let header = Frame {
        request_id: frame.request_id,
        sequence: 0,
        total: 0,
    };
    session.counts.bytes_written += FRAME_HEADER_LEN as u64;
    send(&header.encode());
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_short_datagrams() {
        let f = Frame {
            request_id: 0x1234,
            sequence: 2,
            total: 3,
        };
        let mut d = f.encode().to_vec();
        assert_eq!(d, [0x12, 0x34, 0, 2, 0, 3, 0, 0]);
        assert_eq!(Frame::parse(&d), None, "no payload");
        d.push(b'x');
        assert_eq!(Frame::parse(&d), Some(f));
    }

    #[test]
    fn split_fills_datagrams_to_the_limit() {
        let reply = vec![b'v'; 2 * DATA_PER_DATAGRAM + 1];
        let mut got = Vec::new();
        split(7, &reply, |d| got.push(d.to_vec()));
        assert_eq!(got.len(), 3);
        for (i, d) in got.iter().enumerate() {
            let f = Frame::parse(d).unwrap();
            assert_eq!((f.request_id, f.sequence, f.total), (7, i as u16, 3));
        }
        assert_eq!(got[0].len(), MAX_DATAGRAM);
        assert_eq!(got[2].len(), FRAME_HEADER_LEN + 1);
        let joined: Vec<u8> = got
            .iter()
            .flat_map(|d| d[FRAME_HEADER_LEN..].to_vec())
            .collect();
        assert_eq!(joined, reply);
        got.clear();
        split(7, b"", |d| got.push(d.to_vec()));
        assert!(got.is_empty(), "no reply, no datagram");
    }
}

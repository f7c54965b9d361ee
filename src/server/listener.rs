//! Listening sockets and accept loops.
//!
//! Sockets are bound with socket2 (for the `-b` backlog and address reuse) before the
//! runtime starts, then handed to tokio. `-c` is enforced at accept: past it the client gets
//! memcached's `ERROR Too many open connections` and is closed.

use std::net::{SocketAddr, TcpListener as StdTcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixListener};

use super::worker::{Accepted, Workers};
use super::{ConnKind, ServerError, Shared};
use crate::config::ListenConfig;

/// Listeners bound but not yet serving.
pub struct Bound {
    pub tcp: Vec<StdTcpListener>,
    pub unix: Option<StdUnixListener>,
}

/// Why `addr` could not be bound, and what to change; `flag` names the port's flag.
pub fn bind_error(addr: &str, port: u16, flag: &str, e: &std::io::Error) -> ServerError {
    let reason = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!(
                "port {port} is already in use; stop the other server or pick another port with {flag}"
            )
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("permission denied for port {port}; ports below 1024 need root, pick another with {flag}")
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "no such address on this machine; check the address given to -l".to_string()
        }
        _ => format!("{e}"),
    };
    ServerError::Bind {
        addr: addr.to_string(),
        reason,
    }
}

fn bind_tcp(addr: SocketAddr, backlog: i32) -> std::io::Result<StdTcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds every listener the config names.
pub fn bind(cfg: &ListenConfig) -> Result<Bound, ServerError> {
    let mut bound = Bound {
        tcp: Vec::new(),
        unix: None,
    };
    if let Some(path) = &cfg.unix_socket {
        // memcached: a unix socket replaces TCP. A stale socket file from a previous run
        // would make bind fail, so remove it if nothing answers on it.
        if std::os::unix::net::UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
        let l = StdUnixListener::bind(path).map_err(|e| ServerError::Bind {
            addr: path.display().to_string(),
            reason: format!("{e}; pick another path with -s"),
        })?;
        // `-a` is the access mode of the socket file, as in memcached (default 0700).
        let _ =
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.unix_mask & 0o777));
        l.set_nonblocking(true)?;
        bound.unix = Some(l);
        return Ok(bound);
    }
    let Some(port) = cfg.port.bind_port() else {
        return Ok(bound);
    };
    let wildcard = cfg.addrs.is_empty();
    for addr in addresses(cfg, port)? {
        match bind_tcp(addr, cfg.backlog) {
            Ok(l) => bound.tcp.push(l),
            // No IPv6 on this machine: the IPv4 wildcard still serves.
            Err(_) if wildcard && addr.is_ipv6() => {}
            Err(e) => return Err(bind_error(&addr.to_string(), port, "-p", &e)),
        }
    }
    Ok(bound)
}

/// A `-l` entry as memcached reads it: a host, with its own port after a colon when it
/// has one (`127.0.0.1:11311`, `[::1]:11311`, `localhost:11311`); a bare IPv6 address
/// (more than one colon, no brackets) has none. The host comes without brackets.
pub fn split_listen(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (rest, None),
        };
    }
    match entry.split_once(':') {
        Some((host, port)) if !port.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

/// The addresses to listen on at `port` (TCP or UDP): each `-l` host (at its own port if
/// it names one), or, without `-l`, the IPv4 and IPv6 wildcards (IPv4 only for port 0, so
/// both get the same port).
pub fn addresses(cfg: &ListenConfig, port: u16) -> Result<Vec<SocketAddr>, ServerError> {
    let hosts: Vec<String> = if cfg.addrs.is_empty() {
        if port == 0 {
            vec!["0.0.0.0".into()]
        } else {
            vec!["0.0.0.0".into(), "::".into()]
        }
    } else {
        cfg.addrs.clone()
    };
    let mut out = Vec::new();
    for entry in hosts {
        let (host, own) = split_listen(&entry);
        let port = own.unwrap_or(port);
        let spec = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let addrs = spec.to_socket_addrs().map_err(|e| ServerError::Resolve {
            addr: entry.clone(),
            reason: e.to_string(),
        })?;
        out.extend(addrs);
    }
    Ok(out)
}

/// The environment variable naming the file that gets the ports actually bound, as with
/// memcached (test suites start the server with `-p -1` and read the ports from it).
pub const PORT_FILE_ENV: &str = "MEMCACHED_PORT_FILENAME";

/// The port file's text: one `TCP INET: PORT` (or `INET6`, or `UDP`) line per socket bound,
/// TCP first. Empty when nothing was bound.
pub fn port_file_text(tcp: &[SocketAddr], udp: &[SocketAddr]) -> String {
    let mut out = String::new();
    for (kind, addrs) in [("TCP", tcp), ("UDP", udp)] {
        for a in addrs {
            let family = if a.is_ipv4() { "INET" } else { "INET6" };
            out.push_str(&format!("{kind} {family}: {}\n", a.port()));
        }
    }
    out
}

/// Writes the port file: to `PATH.lck` first, then renamed to `PATH`, so a reader that
/// waits for `PATH` never sees it half written. It stays after the server exits.
pub fn write_port_file(
    path: &std::path::Path,
    tcp: &[SocketAddr],
    udp: &[SocketAddr],
) -> std::io::Result<()> {
    crate::server::process::write_whole(path, port_file_text(tcp, udp).as_bytes())
}

/// A listener the accept loop can drive: TCP or unix.
trait Listen: Send + 'static {
    type Stream: tokio::io::AsyncWrite + Unpin + Send;
    /// Accepts one connection and names its peer for `stats conns`.
    fn accept_one(
        &self,
    ) -> impl std::future::Future<Output = std::io::Result<(Self::Stream, String)>> + Send;
    /// Prepares an admitted connection for a worker.
    fn hand_off(stream: Self::Stream, peer: String, listen: &str) -> Option<Accepted>;
}

impl Listen for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> std::io::Result<(Self::Stream, String)> {
        let (s, peer) = self.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((s, format!("tcp:{peer}")))
    }
    fn hand_off(stream: Self::Stream, peer: String, listen: &str) -> Option<Accepted> {
        Some(Accepted::Tcp {
            stream: stream.into_std().ok()?,
            peer,
            listen: listen.to_string(),
        })
    }
}

impl Listen for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> std::io::Result<(Self::Stream, String)> {
        let (s, _) = self.accept().await?;
        Ok((s, String::new()))
    }
    fn hand_off(stream: Self::Stream, _peer: String, listen: &str) -> Option<Accepted> {
        Some(Accepted::Unix {
            stream: stream.into_std().ok()?,
            path: listen.to_string(),
        })
    }
}

/// Accepts until shutdown, admitting each connection against `-c` and handing it to a worker.
async fn accept_loop<L: Listen>(l: L, listen: String, shared: Arc<Shared>, workers: Arc<Workers>) {
    let mut stop = shared.shutdown_signal();
    loop {
        let (stream, peer) = tokio::select! {
            r = l.accept_one() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("accept failed: {e}");
                    // Out of file descriptors and the like: back off briefly.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        if let Some(stream) = admit(&shared, stream).await {
            if let Some(conn) = L::hand_off(stream, peer, &listen) {
                workers.dispatch(conn);
            }
        }
    }
}

/// Starts one accept task per listener.
pub fn spawn_accept_loops(
    bound: Bound,
    shared: Arc<Shared>,
    workers: Arc<Workers>,
) -> Result<(), ServerError> {
    for l in bound.tcp {
        let l = TcpListener::from_std(l)?;
        let listen = l
            .local_addr()
            .map(|a| format!("tcp:{a}"))
            .unwrap_or_default();
        shared.register_endpoint(ConnKind::Listening, listen.clone(), l.as_raw_fd());
        tokio::spawn(accept_loop(l, listen, shared.clone(), workers.clone()));
    }
    if let Some(l) = bound.unix {
        let l = UnixListener::from_std(l)?;
        let listen = shared
            .config
            .listen
            .unix_socket
            .as_ref()
            .map(|p| format!("unix:{}", p.display()))
            .unwrap_or_default();
        shared.register_endpoint(ConnKind::Listening, listen.clone(), l.as_raw_fd());
        tokio::spawn(accept_loop(l, listen, shared.clone(), workers));
    }
    Ok(())
}

/// Applies `-c`: counts the connection in, or turns it away with memcached's message.
async fn admit<S: tokio::io::AsyncWrite + Unpin>(shared: &Shared, mut stream: S) -> Option<S> {
    let curr = shared.curr_conns.fetch_add(1, Ordering::AcqRel) + 1;
    if curr as usize > shared.config.max_connections {
        shared.curr_conns.fetch_sub(1, Ordering::AcqRel);
        shared.rejected_conns.fetch_add(1, Ordering::Relaxed);
        let _ = stream
            .write_all(b"ERROR Too many open connections\r\n")
            .await;
        let _ = stream.shutdown().await;
        return None;
    }
    shared.count_admitted(curr);
    Some(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_entries_may_name_their_own_port() {
        assert_eq!(split_listen("127.0.0.1:11311"), ("127.0.0.1", Some(11311)));
        assert_eq!(split_listen("localhost:11311"), ("localhost", Some(11311)));
        assert_eq!(split_listen("[::1]:11311"), ("::1", Some(11311)));
        assert_eq!(split_listen("[::1]"), ("::1", None));
        assert_eq!(split_listen("::1"), ("::1", None));
        assert_eq!(split_listen("fe80::1:2"), ("fe80::1:2", None));
        assert_eq!(split_listen("127.0.0.1"), ("127.0.0.1", None));
    }

    #[test]
    fn port_file_lines() {
        let tcp: Vec<SocketAddr> = vec![
            "127.0.0.1:4000".parse().unwrap(),
            "[::1]:4001".parse().unwrap(),
        ];
        let udp: Vec<SocketAddr> = vec!["127.0.0.1:5000".parse().unwrap()];
        assert_eq!(
            port_file_text(&tcp, &udp),
            "TCP INET: 4000\nTCP INET6: 4001\nUDP INET: 5000\n"
        );
        assert_eq!(port_file_text(&[], &[]), "");
    }
}

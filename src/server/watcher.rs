//! memcached's `watch`: a connection that asks becomes a stream of log lines, one per fetch,
//! store, eviction or connection event of the kinds it named, in memcached's words
//! (`ts=<secs>.<usecs> gid=<n> type=item_get key=... status=...`), keys URI-encoded.
//!
//! Nothing is formatted while nobody watches: a request pays one relaxed load
//! ([`Watchers::wants`]). A line is formatted once, by the thread that saw the event, and
//! copied into the buffer of each watcher that wants it; the watcher's own task writes the
//! buffer to its socket. A buffer holds at most `-o watcher_logbuf_size`: lines that do
//! not fit (a watcher reading slower than events come) are skipped and counted, and the
//! watcher is told how many (`skipped=N`) before the next line that fits, as memcached
//! tells its slow watchers. So a watcher holds a bounded amount of memory, and a slow one
//! slows nobody.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use super::io::Socket;
use crate::protocol::command::WatchKinds;

/// memcached's limit on watchers at once.
pub const MAX_WATCHERS: usize = 20;

/// Why a `watch` was refused, in memcached's words.
pub const TOO_MANY: &[u8] = b"WATCHER_TOO_MANY log watcher limit reached\r\n";
pub const FAILED: &[u8] = b"WATCHER_FAILED failed to add log watcher\r\n";

/// The server's watchers and the counters `stats` shows for them.
pub struct Watchers {
    /// The kinds some watcher wants: the one load a request pays.
    wanted: AtomicU8,
    list: Mutex<Vec<Arc<Watcher>>>,
    /// How many there are: a closing connection that never watched looks only here.
    count: AtomicUsize,
    /// memcached's global id of a log line, in the order they were made.
    gid: AtomicU64,
    /// `-o watcher_logbuf_size`, in bytes.
    buf_bytes: usize,
    written: AtomicU64,
    skipped: AtomicU64,
    sent: AtomicU64,
}

/// `stats`' `log_*` lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct WatchStats {
    /// Lines made (memcached's `log_worker_written`).
    pub written: u64,
    /// Lines a watcher's full buffer did not take.
    pub skipped: u64,
    /// Lines put in a watcher's buffer.
    pub sent: u64,
    pub watchers: u64,
}

struct Watcher {
    /// The connection that watches (its id in the server's registry).
    conn: u64,
    kinds: u8,
    pending: Mutex<Pending>,
    ready: Notify,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Lines not taken since the last one that was.
    skipped: u64,
}

impl Watchers {
    pub fn new(buf_bytes: usize) -> Watchers {
        Watchers {
            wanted: AtomicU8::new(0),
            list: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            gid: AtomicU64::new(0),
            buf_bytes: buf_bytes.max(1),
            written: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    /// Whether some watcher wants lines of `kind` (a [`WatchKinds`] bit).
    #[inline]
    pub fn wants(&self, kind: u8) -> bool {
        self.kinds() & kind != 0
    }

    /// The kinds some watcher wants ([`WatchKinds`] bits), for a command that may log
    /// several to look once.
    #[inline]
    pub fn kinds(&self) -> u8 {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Makes connection `conn` a watcher of `kinds`; the error is the refusal's reply.
    pub fn add(&self, conn: u64, kinds: WatchKinds) -> Result<(), &'static [u8]> {
        let mut list = self.lock();
        if list.len() >= MAX_WATCHERS {
            return Err(TOO_MANY);
        }
        if list.iter().any(|w| w.conn == conn) {
            return Err(FAILED);
        }
        list.push(Arc::new(Watcher {
            conn,
            kinds: kinds.0,
            pending: Mutex::new(Pending::default()),
            ready: Notify::new(),
        }));
        self.rewant(&list);
        Ok(())
    }

    /// Connection `conn` is gone: it watches no more.
    pub fn remove(&self, conn: u64) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut list = self.lock();
        list.retain(|w| w.conn != conn);
        self.rewant(&list);
    }

    fn rewant(&self, list: &[Arc<Watcher>]) {
        let kinds = list.iter().fold(0, |k, w| k | w.kinds);
        self.wanted.store(kinds, Ordering::Relaxed);
        self.count.store(list.len(), Ordering::Relaxed);
    }

    fn find(&self, conn: u64) -> Option<Arc<Watcher>> {
        self.lock().iter().find(|w| w.conn == conn).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Watcher>>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs one line of `kind` to the watchers that want it: `fields` writes its words
    /// after the time and the id (without the newline).
    pub fn log(&self, kind: u8, fields: impl FnOnce(&mut Vec<u8>)) {
        let list = self.lock();
        if !list.iter().any(|w| w.kinds & kind != 0) {
            return;
        }
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let gid = self.gid.fetch_add(1, Ordering::Relaxed) + 1;
        let mut line = Vec::with_capacity(160);
        let _ = write!(
            line,
            "ts={}.{} gid={gid} ",
            since.as_secs(),
            since.subsec_micros()
        );
        fields(&mut line);
        line.push(b'\n');
        self.written.fetch_add(1, Ordering::Relaxed);
        for w in list.iter().filter(|w| w.kinds & kind != 0) {
            if w.offer(&line, self.buf_bytes) {
                self.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                self.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> WatchStats {
        WatchStats {
            written: self.written.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            watchers: self.count.load(Ordering::Relaxed) as u64,
        }
    }
}

impl Watcher {
    /// Puts `line` in the buffer if it fits in `cap` bytes (after a note of the lines
    /// skipped before it); false if it was skipped.
    fn offer(&self, line: &[u8], cap: usize) -> bool {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Room for the note of skipped lines too (`skipped=` and up to 20 digits).
        let note = if p.skipped > 0 { 29 } else { 0 };
        if p.bytes.len() + note + line.len() > cap {
            p.skipped += 1;
            return false;
        }
        if p.skipped > 0 {
            let skipped = p.skipped;
            let _ = writeln!(p.bytes, "skipped={skipped}");
        }
        p.bytes.extend_from_slice(line);
        p.skipped = 0;
        drop(p);
        self.ready.notify_one();
        true
    }

    /// Swaps the waiting lines into `into` (emptied first).
    fn take(&self, into: &mut Vec<u8>) {
        into.clear();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut p.bytes, into);
    }
}

/// A watcher's pause after a write that took less than half its buffer, so that lines
/// gather into fewer, larger writes (a socket fills up by its count of writes as much as
/// by their bytes), and the worker's other connections get their turn.
const GATHER: Duration = Duration::from_millis(1);

/// Streams connection `conn`'s lines to its socket until the client closes it (what it
/// sends is read and dropped) or the server stops (`stop`; a watcher that does not read
/// holds nothing up). The caller removes the watcher after.
pub async fn serve<S>(
    sock: &Socket<S>,
    watchers: &Watchers,
    conn: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> io::Result<()>
where
    S: AsRawFd,
    for<'a> &'a S: Read + Write,
{
    let Some(w) = watchers.find(conn) else {
        return Ok(());
    };
    let mut out = Vec::new();
    while !*stop.borrow() {
        w.take(&mut out);
        if !out.is_empty() {
            tokio::select! {
                r = sock.write_all(&out) => r?,
                _ = stop.changed() => return Ok(()),
            }
            if out.len() < watchers.buf_bytes / 2 {
                tokio::time::sleep(GATHER).await;
            } else {
                tokio::task::yield_now().await;
            }
            continue;
        }
        tokio::select! {
            _ = w.ready.notified() => {}
            n = sock.discard() => {
                if n? == 0 {
                    return Ok(());
                }
            }
            _ = stop.changed() => return Ok(()),
        }
    }
    Ok(())
}

/// Appends `key` URI-encoded, as memcached shows keys in log lines: letters, digits and
/// `-._~` as they are, every other byte as `%XX`.
pub fn push_key(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// What a fetch found, in memcached's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    NotFound,
    Found,
    Expired,
}

impl Found {
    fn word(self) -> &'static str {
        match self {
            Found::NotFound => "not_found",
            Found::Found => "found",
            Found::Expired => "expired",
        }
    }
}

/// `type=item_get`: a fetch of `key` by connection `cfd`; `class` and `size` (the value's
/// bytes) of what it found, 0 when nothing.
pub fn item_get(out: &mut Vec<u8>, key: &[u8], found: Found, class: u32, cfd: i32, size: usize) {
    out.extend_from_slice(b"type=item_get key=");
    push_key(out, key);
    let _ = write!(
        out,
        " status={} clsid={class} cfd={cfd} size={size}",
        found.word()
    );
}

/// `type=item_store`: a storage command's outcome (`status`, `cmd` in memcached's words),
/// the item's seconds to live (0: none), class and value bytes.
#[allow(clippy::too_many_arguments)]
pub fn item_store(
    out: &mut Vec<u8>,
    key: &[u8],
    status: &str,
    cmd: &str,
    ttl: u32,
    class: u32,
    cfd: i32,
    size: usize,
) {
    out.extend_from_slice(b"type=item_store key=");
    push_key(out, key);
    let _ = write!(
        out,
        " status={status} cmd={cmd} ttl={ttl} clsid={class} cfd={cfd} size={size}"
    );
}

/// `type=eviction`: an item evicted for room; `ttl` -1 when it had no expiry, `idle` the
/// seconds since it was last read or written.
pub fn eviction(
    out: &mut Vec<u8>,
    key: &[u8],
    fetched: bool,
    ttl: i64,
    idle: u32,
    class: u32,
    size: usize,
) {
    out.extend_from_slice(b"type=eviction key=");
    push_key(out, key);
    let fetch = if fetched { "yes" } else { "no" };
    let _ = write!(
        out,
        " fetch={fetch} ttl={ttl} la={idle} clsid={class} size={size}"
    );
}

/// Why a connection closed, in memcached's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A protocol error, a failed write, no memory for its buffers.
    Error,
    /// The client closed it, or asked to (`quit`).
    Normal,
    IdleTimeout,
    Shutdown,
}

/// `type=conn_new` or, with a reason, `type=conn_close`: `peer` is the client's address as
/// `stats conns` shows it (`tcp:ip:port`, or `unix:path`).
pub fn conn_event(out: &mut Vec<u8>, peer: &str, cfd: i32, closed: Option<CloseReason>) {
    let tcp = peer
        .strip_prefix("tcp:")
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
    let (rip, rport, transport) = match tcp {
        Some(a) => (a.ip().to_string(), a.port(), "tcp"),
        // memcached names no address for a UNIX socket's client.
        None => ("unix".to_string(), 0, "local"),
    };
    let kind = if closed.is_some() {
        "conn_close"
    } else {
        "conn_new"
    };
    let _ = write!(
        out,
        "type={kind} rip={rip} rport={rport} transport={transport}"
    );
    if let Some(r) = closed {
        let reason = match r {
            CloseReason::Error => "error",
            CloseReason::Normal => "normal",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
        };
        let _ = write!(out, " reason={reason}");
    }
    let _ = write!(out, " cfd={cfd}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_uri_encoded_as_memcached_does() {
        let mut out = Vec::new();
        push_key(&mut out, b"a-Z.9_~#,\x01 %");
        assert_eq!(out, b"a-Z.9_~%23%2C%01%20%25");
    }

    #[test]
    fn a_full_buffer_skips_lines_and_says_how_many_before_the_next() {
        let w = Watchers::new(64);
        w.add(1, WatchKinds(WatchKinds::FETCHERS)).unwrap();
        assert!(w.wants(WatchKinds::FETCHERS));
        assert!(!w.wants(WatchKinds::MUTATIONS));
        for _ in 0..3 {
            w.log(WatchKinds::FETCHERS, |o| o.extend_from_slice(b"x"));
        }
        // Mutations are not wanted: nothing is made.
        w.log(WatchKinds::MUTATIONS, |o| o.extend_from_slice(b"m"));
        let s = w.stats();
        assert_eq!((s.written, s.watchers), (3, 1));
        assert_eq!(s.sent + s.skipped, 3);
        assert!(s.skipped >= 1, "{s:?}");
        let watcher = w.find(1).unwrap();
        let mut got = Vec::new();
        watcher.take(&mut got);
        let text = String::from_utf8(got.clone()).unwrap();
        assert_eq!(text.lines().count() as u64, s.sent);
        assert!(text
            .lines()
            .all(|l| l.starts_with("ts=") && l.ends_with(" x")));
        w.log(WatchKinds::FETCHERS, |o| o.extend_from_slice(b"y"));
        watcher.take(&mut got);
        let text = String::from_utf8(got).unwrap();
        assert!(
            text.starts_with(&format!("skipped={}\nts=", s.skipped)),
            "{text}"
        );
        w.remove(1);
        assert!(!w.wants(WatchKinds::FETCHERS));
        assert_eq!(w.stats().watchers, 0);
    }

    #[test]
    fn at_most_twenty_watchers() {
        let w = Watchers::new(1024);
        for conn in 0..MAX_WATCHERS as u64 {
            w.add(conn, WatchKinds(WatchKinds::CONNEVENTS)).unwrap();
        }
        assert_eq!(w.add(99, WatchKinds(0)), Err(TOO_MANY));
        w.remove(3);
        assert_eq!(w.add(99, WatchKinds(0)), Ok(()));
    }

    #[test]
    fn connection_events_name_the_transport() {
        let mut out = Vec::new();
        conn_event(&mut out, "tcp:127.0.0.1:4242", 7, None);
        assert_eq!(
            out,
            b"type=conn_new rip=127.0.0.1 rport=4242 transport=tcp cfd=7"
        );
        out.clear();
        conn_event(&mut out, "unix:/tmp/s", 8, Some(CloseReason::Error));
        assert_eq!(
            out,
            b"type=conn_close rip=unix rport=0 transport=local reason=error cfd=8"
        );
    }
}

//! A light closed-loop load generator for memcached-compatible servers.
//!
//! Each of N connections sends one request, waits for its whole reply, and sends the next,
//! so throughput reflects server latency and the numbers are steady run to run (unlike
//! open-loop tools on a small machine). Keys are drawn uniformly from a fixed key space; a
//! warm-up fills every key first so gets hit.
//!
//! The client shares the machine with the server it measures, so it is built to cost as
//! little as it can: each client thread is a plain epoll loop over its non-blocking
//! connections (no runtime, no wakers, no allocation per request), requests are templates
//! with only the key rewritten in place, and a reply is framed by counting bytes (every
//! value has the same known size) rather than by parsing it. One request costs the client
//! one `write`, one `read` and a share of an `epoll_wait`. It reports its own CPU per
//! operation so a run can show how much of the machine the client took.
//!
//! Its threads run as SCHED_BATCH (`--yield-to-server true`, the default). A server's reply
//! wakes the client thread waiting for it; a normal thread woken on the core the server runs
//! on preempts the server there and then, in the middle of its batch of ready connections,
//! and each such preemption is two context switches. A batch thread waits for its turn
//! instead, so the server finishes its batch and the client finds several replies when it
//! runs: on the 2-core development machine this cut the client's CPU per request from
//! 6.5-7.5 us to 4.2-5.2 us, context switches to a third, and raised both servers'
//! throughput by about a third, so more of the machine goes to the server being measured.
//! Nothing changes on the server side; a client on another machine never preempts it.
//!
//! Which client thread talks to which server worker is fixed, not left to chance: the
//! connections are opened one after another, in order, before the threads start (so a
//! server that hands accepted connections to its workers in turn, as memcached and repcached
//! both do, puts consecutive connections on consecutive workers), and each thread takes a
//! contiguous run of them, so a thread with at least as many connections as there are
//! workers (a multiple of them) talks to every worker evenly, as a server's connections
//! from many clients do. When each thread opened its own connections
//! at once, the accept order changed from run to run, and with it the pairing: in a run
//! where one thread's connections had all landed on one worker, the two ping-ponged on one
//! core, and both servers used a third less CPU per request (2.6-2.8 us instead of 3.8-4.5
//! at `-t 2` on the 2-core machine), so one run's figures said little about the next.
//!
//! With `--rate` each thread paces its connections to a share of that many requests per
//! second instead (request i of a thread is due at its start plus i times the interval; a
//! connection whose reply is in waits for the next due slot), so a run can hold a server at
//! a chosen load rather than at saturation.
//!
//! With `--lag-port` a probe thread measures replication lag besides: again and again it
//! sets a fresh key on `--port`, notes when the reply arrives, then gets the key from the
//! other node in a tight loop until it is there; the lag is the time between the two
//! replies. Between probes it waits a random time (uniform, averaging `--lag-every-us`): a
//! fixed pause would start each probe at the same moment of the sender's batching cycle,
//! right after the batch that carried the previous probe, and so measure one moment only.
//! `--conns 0` runs the probe alone.
//!
//! Output is one line of `name=value` pairs for scripts (bench/compare reads it).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Closed-loop memcached load generator")]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 11211)]
    port: u16,
    /// Concurrent connections
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Client threads, each an epoll loop over its share of the connections
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Number of distinct keys
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Workload: mixed (gets with --get-ratio, else sets), multiget, set
    #[arg(long, default_value = "mixed")]
    workload: String,
    #[arg(long, default_value_t = 0.9)]
    get_ratio: f64,
    /// Keys per multiget
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Seconds to run (after warm-up)
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Fill every key before measuring
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    warmup: bool,
    /// Only fill the key space, then exit
    #[arg(long)]
    fill_only: bool,
    /// Requests per second over all threads (0: as fast as replies come back)
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Also probe replication lag: set a key on --port, poll for it on this port
    #[arg(long)]
    lag_port: Option<u16>,
    /// Mean microseconds between one lag probe's end and the next one's start
    #[arg(long, default_value_t = 2000)]
    lag_every_us: u64,
    /// Microseconds the lag probe waits between two reads of the other node (0: none, a
    /// tight loop, which on a machine with few cores takes a core from the nodes it measures)
    #[arg(long, default_value_t = 0)]
    lag_poll_us: u64,
    /// Run the client threads as SCHED_BATCH: a reply that wakes one never preempts the
    /// server thread that sent it (see the module doc)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    yield_to_server: bool,
}

/// What each connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Mixed,
    Multiget,
    Set,
}

/// The key space as one flat table of fixed-width keys, built once.
struct Keys {
    table: Vec<u8>,
    width: usize,
    count: usize,
}

impl Keys {
    fn new(count: usize, size: usize) -> Keys {
        // `key:` and zero-padded digits; never shorter than 8 bytes, as before.
        let width = size.max(8);
        let digits = width.saturating_sub(4);
        let mut table = Vec::with_capacity(count * width);
        for i in 0..count {
            let k = format!("key:{i:0digits$}");
            table.extend_from_slice(&k.as_bytes()[..width]);
        }
        Keys {
            table,
            width,
            count,
        }
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.table[i * self.width..(i + 1) * self.width]
    }
}

/// Small xorshift: deterministic per connection, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Request templates and reply sizes, shared by every connection of a run.
struct Shape {
    workload: Workload,
    /// `get` followed by `batch` keys: ` <key>` each, then CRLF.
    get: Vec<u8>,
    batch: usize,
    /// `set <key> 0 0 <n>\r\n<value>\r\n`; the key starts at byte 4.
    set: Vec<u8>,
    /// Bytes of one hit in a get reply: `VALUE <key> 0 <n>\r\n<value>\r\n`.
    hit_len: usize,
    /// Mixed workload: a get when `rng % 65536 < get_below`.
    get_below: u64,
}

const END: &[u8] = b"END\r\n";
const STORED: &[u8] = b"STORED\r\n";

impl Shape {
    fn new(args: &Args, keys: &Keys) -> Shape {
        let workload = match args.workload.as_str() {
            "multiget" => Workload::Multiget,
            "set" => Workload::Set,
            _ => Workload::Mixed,
        };
        let batch = if workload == Workload::Multiget {
            args.batch.max(1)
        } else {
            1
        };
        let mut get = b"get".to_vec();
        for _ in 0..batch {
            get.push(b' ');
            get.extend_from_slice(keys.get(0));
        }
        get.extend_from_slice(b"\r\n");
        let header = format!(" 0 0 {}\r\n", args.value_size);
        let mut set = b"set ".to_vec();
        set.extend_from_slice(keys.get(0));
        set.extend_from_slice(header.as_bytes());
        set.resize(set.len() + args.value_size, b'v');
        set.extend_from_slice(b"\r\n");
        let value_line = format!(" 0 {}\r\n", args.value_size);
        let hit_len = "VALUE ".len() + keys.width + value_line.len() + args.value_size + 2;
        Shape {
            workload,
            get,
            batch,
            set,
            hit_len,
            get_below: (args.get_ratio.clamp(0.0, 1.0) * 65536.0) as u64,
        }
    }

    /// The largest reply any request can get.
    fn max_reply(&self) -> usize {
        (self.hit_len * self.batch + END.len()).max(4096)
    }
}

/// Where a reply stands after the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
enum Framed {
    /// The whole reply is in.
    Done,
    More,
    /// Not what was asked for (an error line, or a value of another size).
    Unexpected,
}

/// Frames a get reply by counting: each item starts with `V` and is `hit_len` bytes, the
/// reply ends with `END\r\n`. Only one byte per item is looked at.
fn frame_get(buf: &[u8], hit_len: usize) -> Framed {
    let mut at = 0;
    loop {
        match buf.get(at) {
            None => return Framed::More,
            Some(b'V') => at += hit_len,
            Some(b'E') if buf.len() < at + END.len() => return Framed::More,
            Some(b'E') if &buf[at..at + END.len()] == END && buf.len() == at + END.len() => {
                return Framed::Done
            }
            Some(_) => return Framed::Unexpected,
        }
    }
}

fn frame_set(buf: &[u8]) -> Framed {
    if buf.len() < STORED.len() {
        if STORED.starts_with(buf) {
            Framed::More
        } else {
            Framed::Unexpected
        }
    } else if buf == STORED {
        Framed::Done
    } else {
        Framed::Unexpected
    }
}

/// One closed-loop connection.
struct Conn {
    stream: TcpStream,
    rng: Rng,
    /// The request being sent: this connection's copy of a template, key rewritten.
    get: Vec<u8>,
    set: Vec<u8>,
    is_get: bool,
    sent: usize,
    /// Reply bytes received so far.
    reply: Vec<u8>,
    got: usize,
    started: Instant,
}

impl Conn {
    fn request(&self) -> &[u8] {
        if self.is_get {
            &self.get
        } else {
            &self.set
        }
    }

    /// Picks the next request and rewrites its keys in place.
    fn prepare(&mut self, shape: &Shape, keys: &Keys) {
        self.is_get = match shape.workload {
            Workload::Mixed => (self.rng.next() & 0xffff) < shape.get_below,
            Workload::Multiget => true,
            Workload::Set => false,
        };
        let w = keys.width;
        if self.is_get {
            for j in 0..shape.batch {
                let k = keys.get(self.rng.next() as usize % keys.count);
                let at = 4 + j * (w + 1);
                self.get[at..at + w].copy_from_slice(k);
            }
        } else {
            let k = keys.get(self.rng.next() as usize % keys.count);
            self.set[4..4 + w].copy_from_slice(k);
        }
        self.sent = 0;
        self.got = 0;
    }

    /// Writes what is left of the request; true when all of it is out.
    fn send(&mut self) -> io::Result<bool> {
        let req = if self.is_get { &self.get } else { &self.set };
        while self.sent < req.len() {
            match (&self.stream).write(&req[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Per-microsecond latency counts up to this bound; slower replies share the last bucket.
const LAT_BUCKETS: usize = 1 << 16;

/// What one client thread measured.
struct Tally {
    ops: u64,
    keys: u64,
    lat: Vec<u64>,
}

/// A thin epoll wrapper: the connection's index is the event's data.
struct Epoll(i32);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: plain system call; the descriptor is owned by the returned value.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn ctl(&self, op: i32, fd: i32, events: u32, token: usize) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events,
            u64: token as u64,
        };
        // SAFETY: `ev` is a valid event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `events.len()` entries into `events`.
        let n = unsafe {
            libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, timeout_ms)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this value owns, once.
        unsafe { libc::close(self.0) };
    }
}

/// Spreads a thread's requests over time: request i is due at the start plus i intervals.
struct Pace {
    interval: Duration,
    /// The first slot's delay after the start (threads start a fraction apart).
    lead: Duration,
    next: Instant,
    /// Connections whose reply is in, waiting for a due slot.
    idle: Vec<usize>,
}

impl Pace {
    /// The longest `epoll_wait` when nothing is due (the loop also checks `stop`).
    const MAX_WAIT_MS: i32 = 10;

    /// None when `per_sec` is 0: unpaced, each connection sends as soon as its reply is in.
    fn new(per_sec: f64, offset: f64, conns: usize) -> Option<Pace> {
        if per_sec <= 0.0 {
            return None;
        }
        let interval = Duration::from_secs_f64(1.0 / per_sec);
        Some(Pace {
            interval,
            lead: interval.mul_f64(offset),
            next: Instant::now(),
            idle: (0..conns).collect(),
        })
    }

    /// Starts the schedule: every connection waits for its slot.
    fn start(&mut self, now: Instant) {
        self.next = now + self.lead;
    }

    /// An idle connection to start now, if a slot is due.
    fn take(&mut self, now: Instant) -> Option<usize> {
        if self.next > now {
            return None;
        }
        let token = self.idle.pop()?;
        self.next += self.interval;
        Some(token)
    }

    /// How long `epoll_wait` may sleep: until the next due slot, if a connection waits for it.
    fn wait_ms(&self, now: Instant) -> i32 {
        if self.idle.is_empty() {
            return Self::MAX_WAIT_MS;
        }
        let us = self.next.saturating_duration_since(now).as_micros();
        us.div_ceil(1000).min(Self::MAX_WAIT_MS as u128) as i32
    }
}

/// Starts connection `token`'s next request: picks it, sends what the socket takes, and
/// asks for writability if some is left.
fn begin(
    c: &mut Conn,
    token: usize,
    shape: &Shape,
    keys: &Keys,
    epoll: &Epoll,
    now: Instant,
) -> io::Result<()> {
    c.prepare(shape, keys);
    c.started = now;
    if !c.send()? {
        let events = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
        epoll.ctl(libc::EPOLL_CTL_MOD, c.stream.as_raw_fd(), events, token)?;
    }
    Ok(())
}

/// Makes the calling thread SCHED_BATCH.
fn batch_policy() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is valid for the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `n` connections one after another, so that the server accepts them in this order.
fn open_all(args: &Args, n: usize) -> io::Result<Vec<TcpStream>> {
    (0..n).map(|_| open(args)).collect()
}

/// One connection to the server, or an error that names its address.
fn open(args: &Args) -> io::Result<TcpStream> {
    TcpStream::connect((args.host.as_str(), args.port))
        .map_err(|e| io::Error::new(e.kind(), format!("{}:{}: {e}", args.host, args.port)))
}

/// Registers a thread's connections, each with its number over all threads, with a new
/// epoll instance.
fn register_all(shape: &Shape, mine: Vec<(usize, TcpStream)>) -> io::Result<(Epoll, Vec<Conn>)> {
    let epoll = Epoll::new()?;
    let mut conns = Vec::with_capacity(mine.len());
    for (token, (c, stream)) in mine.into_iter().enumerate() {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        epoll.ctl(
            libc::EPOLL_CTL_ADD,
            stream.as_raw_fd(),
            libc::EPOLLIN as u32,
            token,
        )?;
        conns.push(Conn {
            stream,
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ ((c as u64 + 1) * 0x1234_5678)),
            get: shape.get.clone(),
            set: shape.set.clone(),
            is_get: false,
            sent: 0,
            reply: vec![0; shape.max_reply()],
            got: 0,
            started: Instant::now(),
        });
    }
    Ok((epoll, conns))
}

/// Drives `conns` connections until `stop`: send, wait for the whole reply, send the next
/// (at once, or when `pace` has a slot due). Latency is counted from the send.
fn drive(
    args: &Args,
    shape: &Shape,
    keys: &Keys,
    mine: Vec<(usize, TcpStream)>,
    mut pace: Option<Pace>,
    ready: &std::sync::Barrier,
    stop: &AtomicBool,
) -> io::Result<Tally> {
    if args.yield_to_server {
        // Not fatal (a sandbox may refuse it), and a thread that returned here would leave
        // the others waiting at the barrier.
        if let Err(e) = batch_policy() {
            eprintln!("loadgen: SCHED_BATCH refused ({e}); client threads stay normal");
        }
    }
    // Every thread reaches the start barrier, so one that cannot set up ends the run with
    // its error instead of leaving the others waiting there.
    let setup = register_all(shape, mine);
    ready.wait();
    let (epoll, mut conns) = setup?;
    let mut tally = Tally {
        ops: 0,
        keys: 0,
        lat: vec![0; LAT_BUCKETS],
    };
    let now = Instant::now();
    match pace.as_mut() {
        Some(p) => p.start(now),
        None => {
            for (token, c) in conns.iter_mut().enumerate() {
                begin(c, token, shape, keys, &epoll, now)?;
            }
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; conns.len().max(1)];
    while !stop.load(Ordering::Relaxed) {
        let timeout = pace
            .as_ref()
            .map_or(Pace::MAX_WAIT_MS, |p| p.wait_ms(Instant::now()));
        let n = epoll.wait(&mut events, timeout)?;
        for ev in &events[..n] {
            let token = ev.u64 as usize;
            let c = &mut conns[token];
            let fd = c.stream.as_raw_fd();
            if ev.events & libc::EPOLLOUT as u32 != 0 && c.sent < c.request().len() {
                if c.send()? {
                    epoll.ctl(libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32, token)?;
                }
                continue;
            }
            if ev.events & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                continue;
            }
            let n = match (&c.stream).read(&mut c.reply[c.got..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            c.got += n;
            let framed = if c.is_get {
                frame_get(&c.reply[..c.got], shape.hit_len)
            } else {
                frame_set(&c.reply[..c.got])
            };
            match framed {
                Framed::More if c.got < c.reply.len() => continue,
                Framed::More | Framed::Unexpected => {
                    let shown = String::from_utf8_lossy(&c.reply[..c.got.min(200)]).into_owned();
                    return Err(io::Error::other(format!("unexpected reply: {shown:?}")));
                }
                Framed::Done => {}
            }
            let now = Instant::now();
            let us = now.duration_since(c.started).as_micros() as usize;
            tally.lat[us.min(LAT_BUCKETS - 1)] += 1;
            tally.ops += 1;
            tally.keys += if c.is_get { shape.batch as u64 } else { 1 };
            match pace.as_mut() {
                Some(p) => p.idle.push(token),
                None => begin(c, token, shape, keys, &epoll, now)?,
            }
        }
        if let Some(p) = pace.as_mut() {
            let now = Instant::now();
            while let Some(token) = p.take(now) {
                begin(&mut conns[token], token, shape, keys, &epoll, now)?;
            }
        }
    }
    Ok(tally)
}

/// Sets every key, 100 per pipelined batch, over `threads` blocking connections.
fn fill(args: &Args, keys: &Keys) -> io::Result<()> {
    let threads = args.threads.max(1);
    let per = keys.count.div_ceil(threads);
    let value = vec![b'v'; args.value_size];
    let header = format!(" 0 0 {}\r\n", args.value_size);
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (value, header) = (&value, &header);
                sc.spawn(move || -> io::Result<()> {
                    let mut s = open(args)?;
                    let mut batch = Vec::new();
                    let mut reply = vec![0u8; 100 * STORED.len()];
                    let (from, to) = (t * per, ((t + 1) * per).min(keys.count));
                    for first in (from..to).step_by(100) {
                        let last = (first + 100).min(to);
                        batch.clear();
                        for i in first..last {
                            batch.extend_from_slice(b"set ");
                            batch.extend_from_slice(keys.get(i));
                            batch.extend_from_slice(header.as_bytes());
                            batch.extend_from_slice(value);
                            batch.extend_from_slice(b"\r\n");
                        }
                        s.write_all(&batch)?;
                        let want = (last - first) * STORED.len();
                        s.read_exact(&mut reply[..want])?;
                        if reply[..want].chunks(STORED.len()).any(|r| r != STORED) {
                            let shown =
                                String::from_utf8_lossy(&reply[..want.min(200)]).into_owned();
                            return Err(io::Error::other(format!(
                                "fill: unexpected reply {shown:?}"
                            )));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("fill thread"))
    })
}

/// What the lag probe measured: the lag of each sample, samples given up on, the round
/// trip of each read of the other node (a lag is never shorter than the read that sees it,
/// so these show how much of a lag tail is the reader's own wait for a CPU), and how late
/// the probe woke from each pause between samples: the machine's own wake-up latency under
/// the same load. A lag takes two wake-ups at least (the sender's, then the receiver's),
/// so its tail cannot be shorter than the machine's.
struct Lag {
    us: Vec<u64>,
    lost: u64,
    reads_us: Vec<u64>,
    late_us: Vec<u64>,
}

/// The probe gives up on a key the other node has not shown after this long.
const LAG_GIVE_UP: Duration = Duration::from_secs(2);

/// Sends one request on a blocking connection and reads its whole reply into `buf`: one
/// line, or for a hit, up to the `END` line.
fn ask(s: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> io::Result<()> {
    s.write_all(req)?;
    buf.clear();
    let mut chunk = [0u8; 512];
    while !(buf.ends_with(b"\r\n") && (!buf.starts_with(b"VALUE") || buf.ends_with(END))) {
        match s.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(())
}

fn unexpected(what: &str, buf: &[u8]) -> io::Error {
    let shown = String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned();
    io::Error::other(format!("lag probe: unexpected reply to {what}: {shown:?}"))
}

/// Until `stop`: sets a fresh key on `--port`, then gets it from `lag_port` in a tight loop
/// until it is there (a sample: the time from the set's reply to the reply that holds the
/// key), then waits between none and twice `--lag-every-us`.
fn probe_lag(
    args: &Args,
    lag_port: u16,
    ready: &std::sync::Barrier,
    stop: &AtomicBool,
) -> io::Result<Lag> {
    let connect = |port: u16| -> io::Result<TcpStream> {
        let s = TcpStream::connect((args.host.as_str(), port))?;
        s.set_nodelay(true)?;
        Ok(s)
    };
    let pair = connect(args.port).and_then(|w| Ok((w, connect(lag_port)?)));
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id()));
    let mut lag = Lag {
        us: Vec::new(),
        lost: 0,
        reads_us: Vec::new(),
        late_us: Vec::new(),
    };
    let mut buf = Vec::new();
    // No timer slack (50 us by default): how late the pauses end is then the machine's.
    // SAFETY: prctl with an integer argument, on this thread only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    ready.wait();
    let (mut writer, mut reader) = pair?;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("lag:{}:{n}", std::process::id());
        n += 1;
        let set = format!("set {key} 0 0 5\r\nprobe\r\n");
        ask(&mut writer, set.as_bytes(), &mut buf)?;
        if buf != STORED {
            return Err(unexpected("set", &buf));
        }
        let written = Instant::now();
        let get = format!("get {key}\r\n");
        loop {
            let asked = Instant::now();
            ask(&mut reader, get.as_bytes(), &mut buf)?;
            lag.reads_us.push(asked.elapsed().as_micros() as u64);
            if buf.starts_with(b"VALUE") {
                lag.us.push(written.elapsed().as_micros() as u64);
                break;
            }
            if buf != END {
                return Err(unexpected("get", &buf));
            }
            if written.elapsed() > LAG_GIVE_UP {
                lag.lost += 1;
                break;
            }
            if args.lag_poll_us > 0 {
                std::thread::sleep(Duration::from_micros(args.lag_poll_us));
            }
        }
        let pause = Duration::from_micros(args.lag_every_us * 2 * (rng.next() & 0xffff) / 0x10000);
        let slept = Instant::now();
        std::thread::sleep(pause);
        lag.late_us
            .push(slept.elapsed().saturating_sub(pause).as_micros() as u64);
    }
    Ok(lag)
}

/// User plus system CPU seconds this process has used.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let ru = unsafe {
        let mut ru = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A thread's result, or the end of the run with its error.
fn or_exit<T>(r: io::Result<T>) -> T {
    r.unwrap_or_else(|e| {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    })
}

/// The value at fraction `p` of the sorted `samples`, or 0 if there are none.
fn percentile(samples: &[u64], p: f64) -> u64 {
    match samples.len() {
        0 => 0,
        n => samples[((n - 1) as f64 * p) as usize],
    }
}

fn main() {
    let args = Args::parse();
    let keys = Keys::new(args.keys.max(1), args.key_size);
    if args.conns == 0 && args.lag_port.is_none() {
        eprintln!("loadgen: --conns 0 runs only the lag probe; give --lag-port PORT too");
        std::process::exit(2);
    }
    if args.warmup || args.fill_only {
        or_exit(fill(&args, &keys));
    }
    if args.fill_only {
        println!("filled={}", keys.count);
        return;
    }
    let shape = Shape::new(&args, &keys);
    // No connections: the lag probe alone.
    let threads = args.threads.clamp(1, args.conns.max(1)) * usize::from(args.conns > 0);
    let stop = AtomicBool::new(false);
    // Connections are set up before the clock starts; the barrier's last party is main.
    let ready = std::sync::Barrier::new(threads + 1 + usize::from(args.lag_port.is_some()));
    // Opened in order, then dealt out in contiguous runs: see the module doc.
    let mut streams = or_exit(open_all(&args, args.conns)).into_iter();
    let (tallies, lag, secs, cpu) = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let ids = args.conns * t / threads..args.conns * (t + 1) / threads;
                let mine: Vec<_> = ids.zip(streams.by_ref()).collect();
                let per_sec = args.rate / threads as f64;
                let pace = Pace::new(per_sec, t as f64 / threads as f64, mine.len());
                let (args, shape, keys, ready, stop) = (&args, &shape, &keys, &ready, &stop);
                sc.spawn(move || drive(args, shape, keys, mine, pace, ready, stop))
            })
            .collect();
        let probe = args.lag_port.map(|port| {
            let (args, ready, stop) = (&args, &ready, &stop);
            sc.spawn(move || probe_lag(args, port, ready, stop))
        });
        ready.wait();
        let (start, cpu0) = (Instant::now(), cpu_secs());
        std::thread::sleep(Duration::from_secs_f64(args.duration));
        stop.store(true, Ordering::Relaxed);
        let tallies: Vec<Tally> = handles
            .into_iter()
            .map(|h| or_exit(h.join().expect("client thread")))
            .collect();
        let lag = probe.map(|h| or_exit(h.join().expect("probe thread")));
        (
            tallies,
            lag,
            start.elapsed().as_secs_f64(),
            cpu_secs() - cpu0,
        )
    });
    let ops: u64 = tallies.iter().map(|t| t.ops).sum();
    let nkeys: u64 = tallies.iter().map(|t| t.keys).sum();
    let mut lat = vec![0u64; LAT_BUCKETS];
    for t in &tallies {
        for (sum, n) in lat.iter_mut().zip(&t.lat) {
            *sum += n;
        }
    }
    let pct = |p: f64| -> usize {
        let rank = ((ops.saturating_sub(1)) as f64 * p) as u64;
        let mut seen = 0;
        for (us, n) in lat.iter().enumerate() {
            seen += n;
            if seen > rank {
                return us;
            }
        }
        0
    };
    print!(
        "ops={} keys={} secs={:.3} ops_per_sec={:.0} p50_us={} p99_us={} client_cpu_us_per_op={:.2}",
        ops,
        nkeys,
        secs,
        ops as f64 / secs,
        pct(0.50),
        pct(0.99),
        cpu / ops.max(1) as f64 * 1e6,
    );
    if let Some(mut lag) = lag {
        lag.us.sort_unstable();
        lag.reads_us.sort_unstable();
        lag.late_us.sort_unstable();
        print!(
            " lag_samples={} lag_lost={} lag_p50_us={} lag_p99_us={} lag_max_us={} \
             lag_read_p50_us={} lag_read_p99_us={} lag_wake_p50_us={} lag_wake_p99_us={}",
            lag.us.len(),
            lag.lost,
            percentile(&lag.us, 0.50),
            percentile(&lag.us, 0.99),
            percentile(&lag.us, 1.0),
            percentile(&lag.reads_us, 0.50),
            percentile(&lag.reads_us, 0.99),
            percentile(&lag.late_us, 0.50),
            percentile(&lag.late_us, 0.99),
        );
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_replies_are_framed_by_counting() {
        let hit = b"VALUE key:0000000001 0 3\r\nabc\r\n";
        let mut reply = hit.to_vec();
        assert_eq!(frame_get(&reply, hit.len()), Framed::More);
        reply.extend_from_slice(b"EN");
        assert_eq!(frame_get(&reply, hit.len()), Framed::More);
        reply.extend_from_slice(b"D\r\n");
        assert_eq!(frame_get(&reply, hit.len()), Framed::Done);
        assert_eq!(frame_get(b"END\r\n", hit.len()), Framed::Done);
        assert_eq!(
            frame_get(b"SERVER_ERROR x\r\n", hit.len()),
            Framed::Unexpected
        );
        assert_eq!(frame_get(b"END\r\nX", hit.len()), Framed::Unexpected);
    }

    #[test]
    fn set_replies() {
        assert_eq!(frame_set(b"STO"), Framed::More);
        assert_eq!(frame_set(STORED), Framed::Done);
        assert_eq!(
            frame_set(b"SERVER_ERROR out of memory\r\n"),
            Framed::Unexpected
        );
    }

    #[test]
    fn pace_releases_one_idle_connection_per_due_slot() {
        assert!(Pace::new(0.0, 0.0, 4).is_none());
        let mut pace = Pace::new(1000.0, 0.5, 2).expect("paced");
        let start = Instant::now();
        pace.start(start);
        assert_eq!(
            pace.take(start),
            None,
            "the first slot is half an interval in"
        );
        assert_eq!(pace.wait_ms(start), 1);
        let later = start + Duration::from_millis(3);
        assert!(pace.take(later).is_some());
        assert!(pace.take(later).is_some());
        assert_eq!(pace.take(later), None, "no connection idle");
        assert_eq!(pace.wait_ms(later), Pace::MAX_WAIT_MS);
        pace.idle.push(1);
        assert_eq!(pace.take(later), Some(1), "behind schedule: at once");
    }

    #[test]
    fn percentiles_of_sorted_samples() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.5), 50);
        assert_eq!(percentile(&samples, 0.99), 99);
        assert_eq!(percentile(&samples, 1.0), 100);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn keys_keep_their_width() {
        let keys = Keys::new(3, 16);
        assert_eq!(keys.get(2), b"key:000000000002");
        let short = Keys::new(3, 4);
        assert_eq!(short.get(1), b"key:0001");
    }
}

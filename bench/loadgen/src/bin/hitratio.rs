//! Hit-ratio replay: the same deterministic look-aside sequence (a web app's pattern: get,
//! and on a miss set) replayed to memcached and to repcached, one after the other, each
//! fresh and at the same `-m`; prints hit ratios, items held, evictions and RSS. With
//! `--runs N` the servers take turns N times each and the hit ratios shown are medians (the
//! items, bytes and RSS rows are the last run's).
//!
//! Workloads (values 100 B to 2 KB, a key's size fixed by its hash):
//! - `zipf0.9`, `zipf1.1`: keys drawn by Zipf's law over `--keys` keys;
//! - `scan`: a hot set (Zipf 0.9 over 40k keys), then the hot set interleaved with a one-off
//!   scan of 1M other keys (two scan keys per hot request), then the hot set again; hit
//!   ratios of the hot requests during and after the scan;
//! - `ttl`: Zipf 0.9, with 30 % of the keys set with a 2 s lifetime, replayed at
//!   `--ttl-rate` requests per second to both servers.
//!
//! Requests go over `--conns` connections, each taking the keys that hash to it, pipelined
//! in windows of distinct keys (gets, then the sets of the misses), so every key's own
//! requests keep their order. The connections move through the sequence in step, a few
//! dozen requests each at a time, so the order differs from a strictly sequential replay
//! only within a step (a hundred requests or so). Everything runs on `--host`
//! (loopback).

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Hit ratios of memcached and repcached replaying the same look-aside sequence")]
struct Args {
    /// The memcached binary
    #[arg(long, default_value = "memcached")]
    memcached: String,
    /// The repcached binary
    #[arg(long, default_value = "target/release/repcached")]
    repcached: String,
    /// Memory limit of both servers, MB (-m)
    #[arg(long, default_value_t = 64)]
    memory: u64,
    /// Worker threads of both servers (-t)
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Workloads, comma-separated: zipf0.9, zipf1.1, scan, ttl
    #[arg(long, default_value = "zipf0.9,zipf1.1,scan,ttl")]
    workloads: String,
    /// Distinct keys of the Zipf workloads
    #[arg(long, default_value_t = 2_000_000)]
    keys: u64,
    /// Requests of the Zipf workloads
    #[arg(long, default_value_t = 3_000_000)]
    requests: u64,
    /// Client connections (threads), moving through the sequence in step
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    conns: u64,
    /// Address both servers listen on
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port both servers listen on (one at a time)
    #[arg(long, default_value_t = 22122)]
    port: u16,
    /// Runs of each server per workload, alternating: the table shows median hit ratios
    /// (one replay's figure moves a little with the interleaving across connections)
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Requests per second of the ttl workload, all connections together: lifetimes are in
    /// seconds, so both servers must replay it at the same pace
    #[arg(long, default_value_t = 40_000, value_parser = clap::value_parser!(u64).range(1..))]
    ttl_rate: u64,
}

/// splitmix64: the key scrambler and the random source, deterministic everywhere.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws ranks 0..n by Zipf's law with exponent `s` (inverse of the cumulative weights).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for rank in 1..=n {
            sum += 1.0 / (rank as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    fn draw(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u) as u64
    }
}

/// One request of the sequence: a key id, the lifetime a miss sets it with, and which
/// tally it counts in (None: not measured).
#[derive(Clone, Copy)]
struct Req {
    key: u64,
    ttl: u32,
    tally: Option<usize>,
}

/// Builds a workload's request sequence, the same every time, handing each to the callback.
type Sequence = Arc<dyn Fn(&mut dyn FnMut(Req)) + Send + Sync>;

/// (hits, gets) per tally.
type Tallies = Vec<(u64, u64)>;

/// A workload: its tallies' names and the request sequence, rebuilt the same on demand.
struct Workload {
    name: String,
    /// Requests per second, all connections together; None: as fast as the server answers.
    rate: Option<u64>,
    tallies: Vec<&'static str>,
    make: Sequence,
}

/// Key ids of the scan workload's scan, far from the hot set's.
const SCAN_BASE: u64 = 1 << 40;

fn workload(name: &str, args: &Args) -> Option<Workload> {
    let (keys, requests) = (args.keys, args.requests);
    let zipf_run = |s: f64, short_ttl: bool| -> Sequence {
        let zipf = Arc::new(Zipf::new(keys, s));
        Arc::new(move |emit: &mut dyn FnMut(Req)| {
            let mut rng = Rng(7);
            for i in 0..requests {
                let key = zipf.draw(&mut rng);
                let ttl = if short_ttl && mix(key ^ 0x77) % 10 < 3 {
                    2
                } else {
                    0
                };
                // The first tenth warms the cache and is not measured.
                let tally = (i >= requests / 10).then_some(0);
                emit(Req { key, ttl, tally });
            }
        })
    };
    let make = match name {
        "zipf0.9" => zipf_run(0.9, false),
        "zipf1.1" => zipf_run(1.1, false),
        "ttl" => zipf_run(0.9, true),
        "scan" => {
            let hot = Arc::new(Zipf::new(40_000, 0.9));
            Arc::new(move |emit: &mut dyn FnMut(Req)| {
                let mut rng = Rng(11);
                let mut hot_req = |tally| Req {
                    key: hot.draw(&mut rng),
                    ttl: 0,
                    tally,
                };
                for _ in 0..500_000 {
                    emit(hot_req(None));
                }
                for i in 0..500_000u64 {
                    emit(hot_req(Some(0)));
                    for j in 0..2 {
                        emit(Req {
                            key: SCAN_BASE + i * 2 + j,
                            ttl: 0,
                            tally: None,
                        });
                    }
                }
                for _ in 0..500_000 {
                    emit(hot_req(Some(1)));
                }
            })
        }
        _ => return None,
    };
    let tallies = if name == "scan" {
        vec![
            "hot hit ratio during the scan",
            "hot hit ratio after the scan",
        ]
    } else {
        vec!["hit ratio"]
    };
    Some(Workload {
        name: name.to_owned(),
        rate: (name == "ttl").then_some(args.ttl_rate),
        tallies,
        make,
    })
}

/// A key's name and value size (100 B to 2 KB), both fixed by its id.
fn key_name(key: u64) -> String {
    format!("hr:{:016x}", mix(key))
}

fn value_len(key: u64) -> usize {
    100 + (mix(key ^ 0x5eed) % 1949) as usize
}

/// Requests in flight on a connection: gets of up to this many distinct keys go out
/// together, then the sets of those that missed. No key has two requests in flight, so each
/// key still sees get, then set on a miss, in order.
const WINDOW: usize = 32;

/// The connections move through the sequence in step: each replays its keys among the next
/// `WINDOW` x connections requests of the sequence, then waits for the others. Left to run
/// freely, a connection owning a very hot key (its windows cut short by repeats) fell far
/// behind the others, and the last fifth of the run replayed only its own quarter of the
/// keys, a smaller key set than the workload's, which every server hits more often.
fn step_len(conns: u64) -> usize {
    WINDOW * conns as usize
}

/// What one connection's replay shares with the others: the step barrier, and whether a
/// connection failed (the others then stop sending, but still meet every step, so none
/// waits forever).
struct Lockstep {
    barrier: Barrier,
    failed: AtomicBool,
}

/// Replays the keys of `wl` that belong to connection `conn`, step by step with the other
/// connections; returns (hits, gets) per tally and how many sets the server refused.
fn replay(
    wl: &Workload,
    conn: u64,
    conns: u64,
    addr: &str,
    step: &Lockstep,
) -> io::Result<(Tallies, u64)> {
    // Each request of this connection with its position in the whole sequence.
    let mut mine: Vec<(usize, Req)> = Vec::new();
    let mut total = 0;
    (wl.make)(&mut |req: Req| {
        if mix(req.key ^ 0xc0) % conns == conn {
            mine.push((total, req));
        }
        total += 1;
    });
    let mut link = None;
    let mut counts = vec![(0u64, 0u64); wl.tallies.len()];
    let mut refused = 0u64;
    let mut outcome = Ok(());
    let mut next = 0;
    // Every connection has its list: the paced workload's clock starts for all at once.
    step.barrier.wait();
    let started = Instant::now();
    for end in (1..=total.div_ceil(step_len(conns))).map(|i| i * step_len(conns)) {
        let upto = mine[next..].partition_point(|&(at, _)| at < end) + next;
        if outcome.is_ok() && !step.failed.load(Ordering::Relaxed) {
            if let Some(per_sec) = wl.rate {
                // Paced workloads: the step's first request is due at its place in time.
                let at = end - step_len(conns);
                let due = started + Duration::from_secs_f64(at as f64 / per_sec as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let reqs: Vec<Req> = mine[next..upto].iter().map(|&(_, r)| r).collect();
            outcome = (|| {
                if link.is_none() {
                    link = Some(Link::connect(addr)?);
                }
                let link = link.as_mut().expect("connected above");
                link.replay(&reqs, &mut counts, &mut refused)
            })();
            if outcome.is_err() {
                step.failed.store(true, Ordering::Relaxed);
            }
        }
        next = upto;
        step.barrier.wait();
    }
    outcome.map(|()| (counts, refused))
}

/// One client connection of the replay, with its buffers.
struct Link {
    out: io::BufWriter<TcpStream>,
    input: BufReader<TcpStream>,
    value: Vec<u8>,
    line: String,
    data: Vec<u8>,
}

impl Link {
    fn connect(addr: &str) -> io::Result<Link> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Link {
            out: io::BufWriter::with_capacity(1 << 16, stream.try_clone()?),
            input: BufReader::with_capacity(1 << 16, stream),
            value: vec![b'v'; 2048],
            line: String::new(),
            data: Vec::new(),
        })
    }

    /// Replays `reqs` in windows of distinct keys (gets, then the sets of the misses).
    fn replay(&mut self, reqs: &[Req], counts: &mut Tallies, refused: &mut u64) -> io::Result<()> {
        let mut next = 0;
        let mut window: Vec<Req> = Vec::with_capacity(WINDOW);
        let mut missed: Vec<Req> = Vec::with_capacity(WINDOW);
        while next < reqs.len() {
            window.clear();
            while next < reqs.len()
                && window.len() < WINDOW
                && !window.iter().any(|r| r.key == reqs[next].key)
            {
                window.push(reqs[next]);
                next += 1;
            }
            for req in &window {
                write!(self.out, "get {}\r\n", key_name(req.key))?;
            }
            self.out.flush()?;
            missed.clear();
            for req in &window {
                let hit = self.read_get()?;
                if let Some(t) = req.tally {
                    counts[t].1 += 1;
                    counts[t].0 += u64::from(hit);
                }
                if !hit {
                    missed.push(*req);
                }
            }
            for req in &missed {
                let len = value_len(req.key);
                write!(
                    self.out,
                    "set {} 0 {} {len}\r\n",
                    key_name(req.key),
                    req.ttl
                )?;
                self.out.write_all(&self.value[..len])?;
                self.out.write_all(b"\r\n")?;
            }
            self.out.flush()?;
            for _ in &missed {
                if self.read_line()? != "STORED\r\n" {
                    *refused += 1;
                }
            }
        }
        Ok(())
    }

    fn read_line(&mut self) -> io::Result<&str> {
        self.line.clear();
        if self.input.read_line(&mut self.line)? == 0 {
            return Err(io::Error::other("server closed the connection"));
        }
        Ok(&self.line)
    }

    /// Reads one get's reply; whether it was a hit.
    fn read_get(&mut self) -> io::Result<bool> {
        let mut hit = false;
        loop {
            let line = self.read_line()?;
            if line == "END\r\n" {
                return Ok(hit);
            }
            let len: usize = line
                .split_whitespace()
                .nth(3)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| io::Error::other(format!("unexpected reply: {line:?}")))?;
            self.data.resize(len + 2, 0);
            io::Read::read_exact(&mut self.input, &mut self.data)?;
            hit = true;
        }
    }
}

/// A server process, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(binary: &str, args: &Args) -> io::Result<Server> {
    let mut cmd = Command::new(binary);
    cmd.args(["-l", &args.host, "-p", &args.port.to_string()])
        .args([
            "-m",
            &args.memory.to_string(),
            "-t",
            &args.threads.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "root"]);
    }
    let server = Server(cmd.spawn()?);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((args.host.as_str(), args.port)).is_err() {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("{binary} did not start")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

fn stats(addr: &str) -> io::Result<Vec<(String, String)>> {
    let mut s = TcpStream::connect(addr)?;
    s.write_all(b"stats\r\n")?;
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "END\r\n" {
            return Ok(out);
        }
        let mut f = line.split_whitespace().skip(1);
        if let (Some(k), Some(v)) = (f.next(), f.next()) {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What one server did on one workload.
struct Outcome {
    ratios: Vec<f64>,
    items: String,
    bytes: String,
    dead_bytes: String,
    evictions: String,
    refused: u64,
    rss_mb: f64,
    secs: f64,
}

fn run(binary: &str, wl: &Workload, args: &Args) -> io::Result<Outcome> {
    let server = start(binary, args)?;
    let addr = format!("{}:{}", args.host, args.port);
    let started = Instant::now();
    let step = &Lockstep {
        barrier: Barrier::new(args.conns as usize),
        failed: AtomicBool::new(false),
    };
    let results: Vec<io::Result<(Tallies, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.conns)
            .map(|c| {
                let addr = addr.clone();
                s.spawn(move || replay(wl, c, args.conns, &addr, step))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("replay thread panicked")))
            })
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let mut totals = vec![(0u64, 0u64); wl.tallies.len()];
    let mut refused = 0;
    for r in results {
        let (counts, r) = r?;
        refused += r;
        for (t, (h, g)) in totals.iter_mut().zip(counts) {
            t.0 += h;
            t.1 += g;
        }
    }
    let st = stats(&addr)?;
    let stat = |k: &str| {
        st.iter()
            .find(|(n, _)| n == k)
            .map_or("-".to_owned(), |(_, v)| v.clone())
    };
    Ok(Outcome {
        ratios: totals
            .iter()
            .map(|&(h, g)| h as f64 / g.max(1) as f64)
            .collect(),
        items: stat("curr_items"),
        bytes: stat("bytes"),
        dead_bytes: stat("store_dead_bytes"),
        evictions: stat("evictions"),
        refused,
        rss_mb: rss_mb(server.0.id()),
        secs,
    })
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() {
    let args = Args::parse();
    println!(
        "-m {}, -t {}, {} connections, {} run(s) each; each server fresh per run; hit ratios are medians; ratio = repcached's misses / memcached's",
        args.memory, args.threads, args.conns, args.runs.max(1)
    );
    println!(
        "{:<10} {:<32} {:>12} {:>12} {:>8}",
        "workload", "metric", "memcached", "repcached", "ratio"
    );
    for name in args.workloads.split(',') {
        let Some(wl) = workload(name.trim(), &args) else {
            eprintln!("hitratio: no workload {name:?}; choose from zipf0.9, zipf1.1, scan, ttl");
            std::process::exit(2);
        };
        let outcome = |binary: &str| {
            run(binary, &wl, &args).unwrap_or_else(|e| {
                eprintln!("hitratio: {binary} on {}: {e}", wl.name);
                std::process::exit(1);
            })
        };
        let mut pairs = Vec::new();
        for _ in 0..args.runs.max(1) {
            pairs.push((outcome(&args.memcached), outcome(&args.repcached)));
        }
        for (i, tally) in wl.tallies.iter().enumerate() {
            let hm = median(pairs.iter().map(|(m, _)| m.ratios[i]));
            let hr = median(pairs.iter().map(|(_, r)| r.ratios[i]));
            let misses = (1.0 - hr) / (1.0 - hm).max(1e-9);
            println!(
                "{:<10} {:<32} {:>12.4} {:>12.4} {:>8.3}",
                wl.name, tally, hm, hr, misses
            );
            if pairs.len() > 1 {
                let each: Vec<String> = pairs
                    .iter()
                    .map(|(m, r)| format!("{:.4}/{:.4}", m.ratios[i], r.ratios[i]))
                    .collect();
                println!("{:<10} {:<32} {}", wl.name, "  each run", each.join(" "));
            }
        }
        let (m, r) = pairs.pop().expect("at least one run");
        let rows = [
            ("items held", m.items.clone(), r.items.clone()),
            ("bytes of items", m.bytes.clone(), r.bytes.clone()),
            (
                "bytes of gone items held",
                m.dead_bytes.clone(),
                r.dead_bytes.clone(),
            ),
            ("evictions", m.evictions.clone(), r.evictions.clone()),
            ("sets refused", m.refused.to_string(), r.refused.to_string()),
            (
                "RSS MB",
                format!("{:.1}", m.rss_mb),
                format!("{:.1}", r.rss_mb),
            ),
            (
                "replay seconds",
                format!("{:.1}", m.secs),
                format!("{:.1}", r.secs),
            ),
        ];
        for (metric, a, b) in rows {
            println!("{:<10} {:<32} {:>12} {:>12}", wl.name, metric, a, b);
        }
    }
}

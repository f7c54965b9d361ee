//! A small closed-loop load generator for memcached-compatible servers.
//!
//! Each of N connections sends one request, waits for its whole reply, and sends the next,
//! so throughput reflects server latency and the numbers are steady run to run (unlike
//! open-loop tools on a small machine). Keys are drawn uniformly from a fixed key space; a
//! warm-up fills every key first so gets hit.
//!
//! Output is one line of `name=value` pairs for scripts (bench/compare reads it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
    /// Client threads (each an event loop over its share of the connections)
    #[arg(long, default_value_t = 1)]
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
}

fn key(i: usize, size: usize) -> Vec<u8> {
    let mut k = format!("key:{i:0width$}", width = size.saturating_sub(4)).into_bytes();
    k.truncate(size.max(8));
    k
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

/// Reads until the buffer ends with `end`; returns false if the connection closed.
fn read_reply(s: &mut TcpStream, buf: &mut Vec<u8>, end: &[u8]) -> bool {
    buf.clear();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.ends_with(end) {
                    return true;
                }
            }
        }
    }
}

fn fill(args: &Args) {
    let per = args.keys.div_ceil(args.threads.max(1));
    let value = vec![b'v'; args.value_size];
    std::thread::scope(|sc| {
        for t in 0..args.threads.max(1) {
            let value = &value;
            sc.spawn(move || {
                let mut s = TcpStream::connect((args.host.as_str(), args.port)).expect("connect");
                let mut batch = Vec::new();
                let mut pending = 0;
                let mut buf = Vec::new();
                let (from, to) = (t * per, ((t + 1) * per).min(args.keys));
                for i in from..to {
                    batch.extend_from_slice(b"set ");
                    batch.extend_from_slice(&key(i, args.key_size));
                    batch.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
                    batch.extend_from_slice(value);
                    batch.extend_from_slice(b"\r\n");
                    pending += 1;
                    if pending == 100 || i + 1 == to {
                        s.write_all(&batch).expect("fill write");
                        let want = b"STORED\r\n".repeat(pending);
                        read_reply(&mut s, &mut buf, b"\r\n");
                        while buf.len() < want.len() {
                            let mut more = Vec::new();
                            if !read_reply(&mut s, &mut more, b"\r\n") {
                                break;
                            }
                            buf.extend_from_slice(&more);
                        }
                        batch.clear();
                        pending = 0;
                    }
                }
            });
        }
    });
}

/// One closed-loop connection: send, wait for the whole reply, repeat until told to stop.
async fn drive(
    c: usize,
    args: &Args,
    stop: &AtomicBool,
    ops: &AtomicU64,
    keys_done: &AtomicU64,
) -> Vec<u32> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((args.host.as_str(), args.port))
        .await
        .expect("connect");
    s.set_nodelay(true).ok();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((c as u64 + 1) * 0x1234_5678));
    let value = vec![b'v'; args.value_size];
    let mut req = Vec::new();
    let mut buf = Vec::with_capacity(65536);
    let mut lat = Vec::with_capacity(1 << 16);
    while !stop.load(Ordering::Relaxed) {
        req.clear();
        let (end, nkeys): (&[u8], u64) = match args.workload.as_str() {
            "multiget" => {
                req.extend_from_slice(b"get");
                for _ in 0..args.batch {
                    req.push(b' ');
                    req.extend_from_slice(&key(rng.next() as usize % args.keys, args.key_size));
                }
                req.extend_from_slice(b"\r\n");
                (b"END\r\n", args.batch as u64)
            }
            w => {
                let is_get =
                    w == "mixed" && (rng.next() % 10_000) as f64 / 10_000.0 < args.get_ratio;
                let k = key(rng.next() as usize % args.keys, args.key_size);
                if is_get {
                    req.extend_from_slice(b"get ");
                    req.extend_from_slice(&k);
                    req.extend_from_slice(b"\r\n");
                    (b"END\r\n", 1)
                } else {
                    req.extend_from_slice(b"set ");
                    req.extend_from_slice(&k);
                    req.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
                    req.extend_from_slice(&value);
                    req.extend_from_slice(b"\r\n");
                    (b"STORED\r\n", 1)
                }
            }
        };
        let t0 = Instant::now();
        if s.write_all(&req).await.is_err() {
            break;
        }
        buf.clear();
        loop {
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return lat,
                Ok(_) if buf.ends_with(end) => break,
                Ok(_) => {}
            }
        }
        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        ops.fetch_add(1, Ordering::Relaxed);
        keys_done.fetch_add(nkeys, Ordering::Relaxed);
    }
    lat
}

fn main() {
    let args = Args::parse();
    if args.warmup || args.fill_only {
        fill(&args);
    }
    if args.fill_only {
        println!("filled={}", args.keys);
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let keys_done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads = args.threads.max(1);
    let mut handles = Vec::new();
    for t in 0..threads {
        let args = args.clone();
        let (stop, ops, keys_done) = (stop.clone(), ops.clone(), keys_done.clone());
        // A few event-loop threads drive all connections, so the client costs the machine
        // little and the servers see the batching a real client fleet gives them.
        handles.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for c in (0..args.conns).filter(|c| c % threads == t) {
                    let args = args.clone();
                    let (stop, ops, keys_done) = (stop.clone(), ops.clone(), keys_done.clone());
                    tasks.push(tokio::spawn(async move {
                        drive(c, &args, &stop, &ops, &keys_done).await
                    }));
                }
                let mut lat = Vec::new();
                for task in tasks {
                    lat.extend(task.await.unwrap_or_default());
                }
                lat
            })
        }));
    }
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    stop.store(true, Ordering::Relaxed);
    let elapsed_at_stop = start.elapsed().as_secs_f64();
    let total_ops = ops.load(Ordering::Relaxed);
    let total_keys = keys_done.load(Ordering::Relaxed);
    let mut lat: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| -> u32 {
        if lat.is_empty() {
            0
        } else {
            lat[((lat.len() - 1) as f64 * p) as usize]
        }
    };
    println!(
        "ops={} keys={} secs={:.3} ops_per_sec={:.0} p50_us={} p99_us={}",
        total_ops,
        total_keys,
        elapsed_at_stop,
        total_ops as f64 / elapsed_at_stop,
        pct(0.50),
        pct(0.99)
    );
}

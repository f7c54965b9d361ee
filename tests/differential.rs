//! Byte-for-byte comparison with the real memcached: the same request streams go to
//! Debian's memcached and to repcached, and the replies must match once CAS values (which
//! legitimately differ) are masked. The test command installs memcached; this test fails,
//! rather than skips, if it is missing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cas_in, free_port, wait_ready, Proc};
use regex::bytes::Regex;

struct Memcached(Child, u16);

impl Memcached {
    fn start() -> Memcached {
        Memcached::start_with(&[])
    }

    /// memcached with `args` after the usual ones.
    fn start_with(args: &[&str]) -> Memcached {
        let port = free_port();
        let child = Command::new("memcached")
            .args([
                "-u",
                "root",
                "-l",
                "127.0.0.1",
                "-U",
                "0",
                "-p",
                &port.to_string(),
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached must be installed (the README's test command installs it)");
        assert!(wait_ready(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10)
        ));
        Memcached(child, port)
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A request whose reply no corpus case can produce (a miss on a key no case uses), so the
/// reader knows where the case's replies end; `mn` would not do, cases send it too.
const SENTINEL: &[u8] = b"mg __end_of_case__ k\r\n";
const SENTINEL_REPLY: &[u8] = b"EN k__end_of_case__\r\n";

/// Sends `req` then the sentinel, and reads until its reply, the connection closes, or 1.5 s.
fn exchange(port: u16, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = s.write_all(req);
    // Input without a final newline is a case meant to close the connection; a sentinel
    // could complete its line if both arrive in one read.
    if req.ends_with(b"\n") {
        let _ = s.write_all(SENTINEL);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_millis(1500);
    while !out.ends_with(SENTINEL_REPLY) && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => {
                out.extend_from_slice(b"<closed>");
                break;
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                out.extend_from_slice(b"<closed>");
                break;
            }
            Err(_) => {}
        }
    }
    out
}

fn normalize(b: &[u8]) -> Vec<u8> {
    let rules = [
        (r"(VALUE \S+ \d+ \d+) \d+", "$1 CAS"),
        (r" c\d+", " cCAS"),
        (r"cas=\d+", "cas=CAS"),
    ];
    let mut v = b.to_vec();
    for (re, with) in rules {
        v = Regex::new(re)
            .unwrap()
            .replace_all(&v, with.as_bytes())
            .into_owned();
    }
    v
}

fn corpus() -> Vec<Vec<u8>> {
    let k251 = "k".repeat(251);
    let big = "v".repeat(1_048_400);
    let mut cases: Vec<Vec<u8>> = [
        "set a 0 0 1\r\nx\r\nget a b\r\n",
        "get\r\n",
        "gets\r\n",
        "set a 0 0\r\n",
        "set a 0 0 1 2 3\r\n",
        "set a b c d\r\nx\r\n",
        "set a 0 0 -1\r\n",
        "set a 0 0 3\r\nabcd\r\nget a\r\n",
        "set a 0 0 3 noreply\r\nabcd\r\n",
        &format!("set {k251} 0 0 1\r\nx\r\n"),
        &format!("get {k251}\r\n"),
        "set a 0 0 1\r\n1\r\nincr a 5\r\ndecr a 100\r\nincr a abc\r\nincr a -1\r\nincr nokey 1\r\n",
        "set a 0 0 20\r\n18446744073709551615\r\nincr a 1\r\nget a\r\n",
        "set a 0 0 2\r\n10\r\ndecr a 1\r\nget a\r\nincr a 1\r\nget a\r\nincr a 100\r\nget a\r\n",
        "delete a\r\ndelete a 0\r\ndelete a 1\r\ndelete a noreply\r\ndelete a 0 noreply\r\ndelete a 1 noreply\r\ndelete a b c d\r\n",
        "touch a 10\r\nset a 0 0 1\r\nx\r\ntouch a 10\r\ntouch a abc\r\n",
        "flush_all\r\nflush_all 0\r\nflush_all abc\r\nflush_all noreply\r\nflush_all 1 2 3\r\nflush_all -1\r\n",
        "verbosity\r\nverbosity 1\r\nverbosity abc\r\nverbosity 1 noreply\r\n",
        // Numbers as C's strtol reads them: whitespace other than spaces before and after.
        "set w 0 0 1\t\r\nx\r\nset w 0 0 1\rz\r\ny\r\nset w \x0b1 0 1\r\nz\r\ngets w\r\n",
        "set n 0 0 1\r\n5\r\nincr n \t1\r\ndecr n 1\x0c\r\ntouch n \t10\r\nincr n 1\tx\r\nincr n x\t1\r\n",
        "ms m 1 T\t5\r\nx\r\nmg m t v\r\nflush_all \t0\r\nverbosity 1\t\r\n",
        "foo\r\n",
        "\r\n",
        "a\r\n",
        "GET / HTTP/1.1\r\n",
        "set a 0 0 1\r\nx\r\nappend a 0 0 1\r\ny\r\nprepend a 0 0 1\r\nz\r\nget a\r\nappend nokey 0 0 1\r\nx\r\n",
        "add a 0 0 1\r\nx\r\nadd a 0 0 1\r\ny\r\nreplace a 0 0 1\r\nz\r\nreplace nokey 0 0 1\r\nz\r\nget a\r\n",
        "cas a 0 0 1 1\r\nx\r\ncas nokey 0 0 1 1\r\nx\r\ncas a 0 0 1\r\nx\r\ncas a 0 0 1 abc\r\nx\r\n",
        "gat 10 a\r\ngats 10 a nokey\r\ngat abc a\r\ngat 10\r\ngats\r\n",
        "mg\r\nmg a\r\nmg nokey\r\nmg nokey v\r\nmg nokey q\r\nmg nokey k O123 q\r\nmg nokey k O123\r\n",
        "set a 3 0 2\r\nhi\r\nmg a v f s k Oabc\r\nmg a\r\nmg a h l\r\nmg a v v\r\nmg a !\r\nmg a Tx\r\nmg a N\r\n",
        "ms a 2\r\nhi\r\nms a 2 T0 F5 k\r\nhi\r\nmg a f v\r\nms a\r\nms a x\r\nhi\r\nms a 2 MX\r\nhi\r\nms a 2 MEE\r\nhi\r\nms a 2 ME\r\nhi\r\nms a 2 q\r\nhi\r\n",
        "ms a 2 MA\r\nXY\r\nmg a v\r\nms nokey 2 MA\r\nXY\r\nms nokey 2 MR\r\nXY\r\n",
        "md a\r\nmd a\r\nmd a q\r\nmd nokey q\r\nmd a k Oxx\r\nmd a zz\r\n",
        "set a 0 0 1\r\n5\r\nma a\r\nma a v\r\nma a MD D2 v\r\nma nokey\r\nma nokey N0 J10 v\r\nma nokey v\r\nma a MX\r\nma a Dabc\r\nma a q\r\n",
        "set b 0 0 3\r\nabc\r\nma b\r\nme nokey\r\nme\r\n",
        &format!("mg a O{}\r\n", "x".repeat(40)),
        "mg a v t T30\r\nmg a t\r\nms a 2 I\r\nhi\r\n",
        "set c 0 0 1\r\nx\r\nmg c v N30\r\nmg newk v N30 t\r\nmg newk v N30\r\nmd c I\r\nmg c v c\r\nmg c v\r\n",
        "stats foo\r\nstats reset\r\nstats detail\r\nstats replication\r\n",
        "shutdown\r\nshutdown x y\r\n",
        "set a 0 0 1\r\nxx\r\nget a\r\n",
        "set a 0 0 1\nx\nget a\n",
        "set a 4294967295 0 1\r\nx\r\nget a\r\nset a 4294967296 0 1\r\nx\r\nget a\r\n",
        "get a a a a a a a a a a a a a a a a a a a a a a a a a a a a a\r\n",
        "incr\r\nincr a\r\ntouch a\r\ndelete\r\n",
        "set a 0 -1 1\r\nx\r\nget a\r\n",
        "mg  a  v\r\nms a 2   T0\r\nhi\r\n",
        "cache_memlimit 100\r\ncache_memlimit 1\r\ncache_memlimit abc\r\nslabs automove 1\r\n",
        // Admin numbers read as memcached's safe_strtoul: 64 bits kept to their low 32; a
        // limit over a billion megabytes refused as bytes given by mistake.
        concat!(
            "cache_memlimit 2147483648\r\ncache_memlimit 1000000001\r\n",
            "cache_memlimit 4294967304\r\ncache_memlimit 4294967296\r\ncache_memlimit 64\r\n",
            "verbosity 4294967296\r\nverbosity 18446744073709551616\r\nverbosity -1\r\n",
            "stats cachedump 4294967297 1\r\nstats cachedump 18446744073709551615 1\r\n",
        ),
        "lru_crawler crawl 4294967297\r\n",
        // lru's arguments checked as memcached checks them (the last restores its defaults).
        concat!(
            "lru x\r\nlru mode x\r\nlru mode flat\r\nlru mode segmented\r\nlru temp_ttl x\r\n",
            "lru temp_ttl -1\r\nlru tune 70 20 0.1 2\r\nlru tune 10 10 0 2\r\nlru tune 10 10 x 2\r\n",
            "lru tune 10 10\r\nlru tune a b c d\r\nlru x noreply\r\nlru tune 70 20 1 1 noreply\r\n",
            "lru tune 4294967295 2 1 1\r\nlru mode\r\nlru tune 20 40 0.2 2.0\r\n",
        ),
        "ms a 2 F4294967296\r\nhi\r\nmg a f v\r\nms a 2 Fx\r\nhi\r\n",
        "set a 0 0 1\r\n1\r\nma a q v\r\nmd a I T30\r\nmg a t v\r\n",
        "set a 0 0 3\r\n 12\r\nincr a 1\r\nget a\r\nset b 0 0 3\r\n12 \r\nincr b 1\r\nget b\r\n",
        "set a 0 0 0\r\n\r\nincr a 1\r\nincr a 18446744073709551616\r\nset c 0 0 2\r\n-1\r\nincr c 1\r\n",
        "touch a -1\r\nset a 0 0 1\r\n1\r\ntouch a -1\r\nget a\r\ngat -1 a\r\n",
        "set a 0 0 1 noreply\r\n1\r\nadd a 0 0 1 noreply\r\n2\r\nincr a 1 noreply\r\nget a\r\n",
        "set a 5 0 1\r\n1\r\nappend a 9 9 1\r\n2\r\nprepend a 9 0 1\r\n0\r\nget a\r\ncas a 0 0 1 0\r\n1\r\n",
        "ma a N0 J18446744073709551615 v\r\nma a v\r\nma a N0 Jx\r\nma a D18446744073709551616\r\n",
        "mn extra\r\nme a b\r\nmd\r\nma\r\nmg a v b\r\n",
        "stats detail on\r\nstats detail off\r\nlru_crawler crawl all\r\nlru tune 10 25 0.1 2.0\r\n",
        // memcached refuses anything pipelined before a metadump, so each goes alone.
        "lru_crawler metadump 0\r\n",
        // A dump streams only with no earlier reply waiting (memcached's t/lru-crawler;
        // after a text get, see `watch_and_metadump_follow_a_get`).
        "mg foo v\r\nlru_crawler metadump all\r\n",
        "mg foo v q\r\nlru_crawler metadump all\r\n",
        "set foo 0 0 1 noreply\r\n1\r\nmn\r\nlru_crawler metadump 0\r\n",
        "lru_crawler metadump 1,x\r\n",
        "stats cachedump\r\nstats cachedump 1\r\nstats cachedump x 1\r\nstats cachedump 64 0\r\nstats cachedump 2 0\r\n",
        concat!(
            "stats reset\r\nstats detail on\r\nset user:1 0 0 1\r\nx\r\nset plain 0 0 1\r\nx\r\n",
            "get user:1 user:2 plain\r\ngat 0 user:1\r\ndelete user:1\r\nstats detail dump\r\n",
            "stats detail off\r\nget user:1\r\nstats detail dump\r\nstats detail bogus\r\n",
            "stats reset\r\nstats detail dump\r\n",
        ),
        "set \u{e9} 0 0 1\r\n1\r\nget \u{e9}\r\n",
        "ms a 2 b\r\nhi\r\nms YWJj 2 b k c\r\nhi\r\nmg YWJj b k v\r\nmg abc v\r\nme YWJj b\r\nmg !!! b\r\nmd YWJj b k\r\n",
        "set a 0 0 5\r\nab\r\n\r\n",
        &format!("set big 0 0 {}\r\n{big}\r\nget big\r\n", big.len()),
        &format!("set a 0 0 1\r\nx\r\nset a 0 0 2000000\r\n{}\r\nget a\r\n", "x".repeat(2_000_000)),
        &format!("set a 0 0 2000000 noreply\r\n{}\r\n", "x".repeat(20)),
        // Only a refused set drops the old value: a refused cas keeps it.
        &format!(
            "set a 0 0 1\r\nx\r\ngets a\r\ncas a 0 0 1048577 1\r\n{}\r\nget a\r\n",
            "x".repeat(1_048_577)
        ),
        &format!("get {}\r\n", "k ".repeat(2000)),
        &format!("ms big 1048576\r\n{}\r\n", "x".repeat(1_048_576)),
        // Non-zero client flags take 4 bytes of the item in memcached: at the -I edge they
        // decide between stored and too large.
        &format!(
            "set a 0 0 1048516\r\n{v}\r\nset b 1 0 1048516\r\n{v}\r\nset c 1 0 1048512\r\n{w}\r\nget c\r\n",
            v = "x".repeat(1_048_516),
            w = "y".repeat(1_048_512)
        ),
        &format!("set a 0 0 1\r\nx\r\n{}", "get a\r\n".repeat(500)),
        // Lengths and exptimes as memcached's 32-bit ints read them (its issue 70).
        "set k 0 0 2147483647\r\nset k 0 0 2147483646\r\nset k 0 0 4294967295\r\n",
        "set k 0 0 -2\r\nset k 0 0 -2147483648\r\nset k 0 0 -2147483649\r\n",
        "set k 0 0 99999999999999999999\r\nset k 0 0 9223372036854775808\r\n",
        "set k 0 0 4294967296\r\n\r\nget k\r\nset k 0 0 4294967297\r\nx\r\nget k\r\n",
        "set k 0 -99999999999 1\r\nx\r\nget k\r\nset k 0 99999999999 1\r\nx\r\nget k\r\n",
        "touch k 4294967297\r\ngat 4294967297 k\r\nms k 2147483647\r\nms k 2147483646\r\n",
        "ms k 4294967297\r\nx\r\nmg k v T4294967297 N4294967297\r\nmg k t\r\n",
        // Keys with control bytes (memcaslap's start with 0x10).
        "set \x10a\x01 0 0 1\r\nx\r\nget \x10a\x01\r\nmg \x10a\x01 v k\r\ndelete \x10a\x01\r\n",
        "set a\rb 0 0 1\r\nx\r\nget a\rb\r\nset a\tb\x7f 0 0 1\r\ny\r\nget a\tb\x7f\r\n",
        // memcached 1.6.18 has no md/mg/ms/ma x flag.
        "set k 0 0 1\r\nx\r\nmd k x\r\nmg k x\r\nms k 1 x\r\n1\r\nma k x\r\nget k\r\n",
        "stats sizes\r\n",
        concat!(
            "slabs automove invalid\r\nslabs automove 3\r\nslabs automove 2\r\nslabs automove -1\r\n",
            "slabs automove 0 noreply\r\nslabs automove x noreply\r\nslabs automove 9 noreply\r\n",
            "slabs automove ratio\r\nslabs automove ratio x\r\nslabs automove ratio 0.5\r\n",
            "slabs automove\r\nslabs automove 1 2 3\r\nslabs automove 4294967297\r\nslabs automove 0\r\n",
        ),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    // Connection-closing inputs: the sentinel never gets an answer.
    cases.push(vec![b'x'; 3000]);
    cases.push(format!("     get {}", "k".repeat(3000)).into_bytes());
    cases
}

#[test]
fn replies_match_memcached() {
    compare(corpus());
}

/// Sends each case to memcached and to repcached (each after a `flush_all`) and fails
/// listing every case whose replies differ.
fn compare(cases: Vec<Vec<u8>>) {
    compare_with(&[], cases)
}

/// [`compare`], both servers started with `args` as well.
fn compare_with(args: &[&str], cases: Vec<Vec<u8>>) {
    let mc = Memcached::start_with(args);
    let ours = Proc::start(args);
    let mut failures = Vec::new();
    for case in cases {
        exchange(mc.1, b"flush_all\r\n");
        exchange(ours.port, b"flush_all\r\n");
        let a = normalize(&exchange(mc.1, &case));
        let b = normalize(&exchange(ours.port, &case));
        if a != b {
            failures.push(format!(
                "request {:?}\n  memcached: {:?}\n  repcached: {:?}",
                String::from_utf8_lossy(&case[..case.len().min(100)]),
                String::from_utf8_lossy(&a[..a.len().min(300)]),
                String::from_utf8_lossy(&b[..b.len().min(300)])
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A stale item's win token (mg `W`) goes only to a meta get: a plain get, gets, gat or
/// touch of an invalidated item leaves it for the next `mg`.
#[test]
fn plain_reads_leave_the_win_token() {
    let stale = "set k 0 0 2\r\n10\r\nmd k I T30\r\n";
    compare(
        [
            "get k\r\nmg k v\r\nmg k v\r\n",
            "gets k\r\nmg k v\r\n",
            "gat 50 k\r\nmg k v\r\n",
            "gats 50 k\r\nmg k v\r\n",
            "touch k 50\r\nmg k v\r\n",
        ]
        .iter()
        .map(|c| format!("{stale}{c}").into_bytes())
        .collect(),
    );
}

/// `C0` on a meta command: append, prepend and ma compare nothing (memcached treats a zero
/// CAS as none there); a set with `I` and `C0` is not a stale store but `EX`.
#[test]
fn meta_cas_zero_matches_memcached() {
    compare(
        [
            "set k 0 0 2\r\n10\r\nma k C0 v\r\nmg k v\r\n",
            "set k 0 0 2\r\n10\r\nms k 2 C0 MA\r\nhi\r\nmg k v\r\n",
            "set k 0 0 2\r\n10\r\nms k 2 C0 MP\r\nhi\r\nmg k v\r\n",
            "set k 0 0 2\r\n10\r\nmg k\r\nms k 2 I C0\r\nhi\r\nmg k v\r\n",
            // Already matching: set, replace and delete with C0 compare (and fail).
            "set k 0 0 2\r\n10\r\nms k 2 C0\r\nhi\r\nms k 2 C0 MR\r\nhi\r\nmd k C0\r\n",
        ]
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect(),
    );
}

/// memcached 1.6.18 reads `ms` and `ma` mode tokens in capitals (and `+`, `-`) only.
#[test]
fn meta_lowercase_modes_are_invalid() {
    let set = "set k 0 0 2\r\n10\r\n";
    let mut cases: Vec<Vec<u8>> = ["s", "e", "a", "p", "r"]
        .iter()
        .map(|m| format!("{set}ms k 2 M{m}\r\nhi\r\nmg k v\r\n").into_bytes())
        .collect();
    cases.extend(
        ["i", "d"]
            .iter()
            .map(|m| format!("{set}ma k M{m} v\r\nmg k v\r\n").into_bytes()),
    );
    compare(cases);
}

/// `ma` on an empty value is non-numeric before any CAS comparison, as in memcached.
#[test]
fn meta_arith_empty_value_before_cas() {
    compare(vec![
        b"set k 0 0 0\r\n\r\nma k C1\r\nmg k N30 c\r\n".to_vec(),
        b"mg k N30\r\nma k C1 v\r\n".to_vec(),
    ]);
}

/// `ma` with `q` that creates the item (`N`) still answers in memcached 1.6.18 (only the
/// outcomes of an existing item are quiet).
#[test]
fn meta_arith_quiet_vivify_answers() {
    compare(vec![
        b"ma k q N0\r\nma k q N0\r\nmn\r\n".to_vec(),
        b"ma k q N0 v k O1\r\nmn\r\n".to_vec(),
    ]);
}

/// `N` and `T` both give the TTL of an item a meta command creates: the later flag wins.
#[test]
fn meta_vivify_ttl_last_flag_wins() {
    compare(vec![
        b"mg k T20 N10\r\nmg k t\r\n".to_vec(),
        b"ma k N50 T30\r\nmg k t\r\n".to_vec(),
    ]);
}

/// mg's `t` shows the TTL as the flags before it left it, as memcached 1.6.18 works through
/// them in order: an item `N` creates starts with no expiry (`t` before `N` shows -1), `N`
/// gives it its TTL, `T` sets its own; on a hit `N` changes nothing.
#[test]
fn meta_get_ttl_flag_in_flag_order() {
    compare(
        [
            "mg k t N1000\r\nmg k t\r\nmg k t v\r\n",
            "mg k v t N1000\r\n",
            "mg k t N1000 q\r\nmg k t N1000 q\r\nmn\r\n",
            "mg k T100 t N1000\r\nmg k t\r\n",
            "mg k N1000 t T100\r\nmg k t\r\n",
            "mg k t T-1 N1000\r\nmg k t\r\n",
            "mg k t N0\r\nmg k t\r\n",
            "mg k t N-1\r\nmg k t\r\n",
            "set a 0 0 1\r\nx\r\nmg a t T30\r\nmg a T40 t\r\nmg a t\r\n",
            "set a 0 0 1\r\nx\r\nmg a T10 N20\r\nmg a t\r\nmg a N20 T30\r\nmg a t\r\n",
            "set a 0 100 1\r\nx\r\nmg a t N5\r\nmg a N5 t\r\nmg a t T0 v\r\nmg a t\r\n",
        ]
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect(),
    );
}

/// ma's `t` likewise: before `T` it shows the TTL the item had (memcached applies `T` as
/// it reaches it); an item `N` creates has none until `N`.
/// mg's `R` compares the TTL as the flags before it left it: before a `T`, the item's own.
#[test]
fn meta_get_recache_flag_in_flag_order() {
    compare(bytes_of(&[
        "ms a 1 T100\r\nx\r\nmg a R10 T7\r\nmg a t\r\n",
        "ms a 1 T100\r\nx\r\nmg a T7 R10\r\n",
        "ms a 1 T5\r\nx\r\nmg a R10 T100\r\nmg a R10\r\n",
        "ms a 1 T5\r\nx\r\nmg a T100 R10 t\r\n",
        "mg a N30 R10 T5\r\nmg a R10 T5 v\r\n",
    ]));
}

#[test]
fn meta_arith_ttl_flag_in_flag_order() {
    compare(
        [
            "set a 0 0 1\r\n1\r\nma a t T100\r\nmg a t\r\n",
            "set a 0 0 1\r\n1\r\nma a T100 t\r\nmg a t\r\n",
            "set a 0 0 1\r\n1\r\nma a t T100 N5\r\nmg a t\r\n",
            "set a 0 0 1\r\n1\r\nma a T100 N5 t\r\nmg a t\r\n",
            "set a 0 50 1\r\n1\r\nma a t T0 v\r\nmg a t\r\n",
            "ma k t N1000\r\nmg k t\r\n",
            "ma k t N1000 T50\r\nmg k t\r\n",
            "ma k T50 t N1000\r\nmg k t\r\n",
            "ma k N0 t T100\r\nmg k t\r\n",
            "ma k N1000 t T0 v\r\nmg k t\r\n",
        ]
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect(),
    );
}

/// `me` as memcached 1.6.18 writes it: `exp=` is the time since the expiry (negative for
/// one to come, -1 for none), `cls=` the slab class memcached's default classes (`-n 48
/// -f 1.25`: 96-byte chunks growing by 1.25, 8-byte aligned, up to 512 KB) give the item's
/// size, the last one for anything larger.
#[test]
fn meta_debug_matches_memcached() {
    let mut cases: Vec<Vec<u8>> = [
        "set a 0 0 1\r\nx\r\nme a\r\n",
        "set a 0 100 1\r\nx\r\nme a\r\n",
        "set a 0 0 1\r\nx\r\ntouch a 50\r\nme a\r\ntouch a 0\r\nme a\r\n",
        "ms a 1 T100\r\nx\r\nme a\r\n",
        "mg a N100\r\nme a\r\n",
        "set a 0 0 1\r\n1\r\nma a T30\r\nme a\r\n",
    ]
    .iter()
    .map(|c| c.as_bytes().to_vec())
    .collect();
    // memcached's size of `set k 0 0 <n>` is n + 60; the class edges around it, the large
    // class and past it.
    for total in [
        61, 96, 97, 120, 121, 152, 153, 600, 601, 2320, 2321, 394_840, 394_841, 524_288, 524_289,
        1_000_000,
    ] {
        let n = total - 60;
        cases.push(format!("set k 0 0 {n}\r\n{}\r\nme k\r\n", "x".repeat(n)).into_bytes());
    }
    // Client flags and a longer key count too.
    cases.push(format!("set k 1 0 33\r\n{}\r\nme k\r\n", "x".repeat(33)).into_bytes());
    let k = "k".repeat(200);
    cases.push(format!("set {k} 0 0 1\r\nx\r\nme {k}\r\n").into_bytes());
    compare(cases);
}

/// Sends `case` to both servers as it is (no `flush_all` first) and asserts the replies match.
fn assert_same_reply(mc: &Memcached, ours: &Proc, case: &str) {
    let replies: Vec<Vec<u8>> = [mc.1, ours.port]
        .iter()
        .map(|&port| exchange(port, case.as_bytes()))
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&replies[1]),
        String::from_utf8_lossy(&replies[0]),
        "after {case:?}"
    );
}

/// Under `-C` an item has no CAS, so memcached's size is 8 bytes smaller (and may fall in a
/// smaller class). No `flush_all` before each case: under `-C` memcached also flushes what
/// is set within the same second.
#[test]
fn meta_debug_without_cas() {
    let mc = Memcached::start_with(&["-C"]);
    let ours = Proc::start(&["-C"]);
    for (key, n) in [("a", 1), ("b", 44), ("c", 45)] {
        let case = format!("set {key} 0 0 {n}\r\n{}\r\nme {key}\r\n", "x".repeat(n));
        assert_same_reply(&mc, &ours, &case);
    }
}

/// `-B ascii` reads everything as text, a first byte of 0x80 (binary's magic) included:
/// an unknown command, not a closed connection.
#[test]
fn ascii_binding_reads_a_binary_magic_byte_as_text() {
    compare_with(
        &["-B", "ascii"],
        vec![
            b"\x80\r\nmn\r\n".to_vec(),
            [&[0x80u8, 0x0b][..], &[0; 22], b"\r\nmn\r\n"].concat(),
        ],
    );
}

/// Under `-C` memcached's items read as CAS 0, and a request's own item has none either:
/// `md`/`ma` with `C0` compare nothing and any other value fails; set and replace with a
/// CAS (text `cas`, `ms C`) fail, as does an invalidation; add, append and prepend go on;
/// `stats sizes_enable` is refused. Distinct keys and no `flush_all` (see above).
#[test]
fn cas_disabled_compares_as_memcached() {
    let mc = Memcached::start_with(&["-C"]);
    let ours = Proc::start(&["-C"]);
    for case in [
        "set a1 0 0 1\r\nx\r\nmd a1 C0\r\nget a1\r\nmd a1 C0\r\n",
        "set a2 0 0 1\r\nx\r\nmd a2 C7\r\nget a2\r\nmd a2 C7 q\r\nmd nokey2 C7\r\n",
        "set a3 0 0 1\r\nx\r\nms a3 1 C7 MA\r\ny\r\nms a3 1 C7 MP\r\nw\r\nget a3\r\n",
        "set a4 0 0 1\r\nx\r\nms a4 1 C7 I\r\ny\r\nmg a4 v\r\n",
        "set a5 0 0 1\r\n5\r\nma a5 C0 v\r\nma a5 C9 v\r\nma nokey5 C9 N0 J3 v\r\n",
        "cas a6 0 0 1 0\r\nx\r\nset a6 0 0 1\r\nx\r\ncas a6 0 0 1 0\r\ny\r\ncas a6 0 0 1 3\r\ny\r\n",
        "set a7 0 0 1\r\nx\r\nms a7 1 C5\r\nz\r\nms a7 1 MR C5\r\nz\r\nms a7 1 ME C5\r\nz\r\nms b7 1 ME C5\r\nz\r\nget a7 b7\r\n",
        "stats sizes_enable\r\n",
    ] {
        assert_same_reply(&mc, &ours, case);
    }
}

/// `-f` and `-n` shape memcached's classes, and so `me`'s `cls=`.
#[test]
fn meta_debug_class_follows_growth_factor_and_chunk_size() {
    let args = ["-f", "1.5", "-n", "30", "-I", "2m", "-m", "128"];
    let cases = [61, 80, 81, 120, 121, 1000, 300_000, 600_000, 1_500_000].map(|total| {
        let n = total - 60;
        format!("set k 0 0 {n}\r\n{}\r\nme k\r\n", "x".repeat(n)).into_bytes()
    });
    compare_with(&args, cases.to_vec());
}

/// Which error a meta line with two bad tokens gets, as memcached 1.6.18 reports it: a bad
/// `F` (`bad command line format`) only when no other token is bad (the last other one
/// wins, a key that does not decode included); a bad mode before a long opaque.
#[test]
fn meta_error_precedence() {
    let o = format!("O{}", "x".repeat(40));
    let mut cases: Vec<String> = [
        "Tx Fx", "Fx Tx", "Cx Fx", "Nx Fx", "Rx Fx", "MAB Fx", "Fx MAB", "Jx Fx", "Dx Fx", "MX Fx",
        "Fx MX",
    ]
    .iter()
    .map(|f| format!("ms k 2 {f}\r\nhi\r\nmg k v\r\n"))
    .collect();
    cases.extend([
        format!("ms k 2 MX {o}\r\nhi\r\n"),
        format!("ms k 2 {o} MX\r\nhi\r\n"),
        format!("ms k 2 Fx {o}\r\nhi\r\n"),
        "ms !!! 2 b Fx\r\nhi\r\n".into(),
        "ms !!! 2 Fx b\r\nhi\r\n".into(),
        "mg k Tx Fx\r\nmg k Fx Tx\r\nmg k Jx Fx\r\nmg !!! b Fx\r\n".into(),
        format!("ma k MX {o}\r\nma k {o} MX\r\n"),
        format!("md k Tx Fx\r\nmd k {o} Fx\r\n"),
    ]);
    compare(cases.into_iter().map(String::into_bytes).collect());
}

fn bytes_of(cases: &[&str]) -> Vec<Vec<u8>> {
    cases.iter().map(|c| c.as_bytes().to_vec()).collect()
}

/// `stats sizes_enable` and `stats sizes_disable` answer one line, without END (any
/// argument is ignored); once enabled, `stats sizes` counts the items stored since, by
/// memcached's size rounded up to 32 bytes (memcached counts items with a CAS from the
/// moment it was enabled, so what was there before is left out, and enabling again starts
/// over).
#[test]
fn stats_sizes_match_memcached() {
    let x = |n| "x".repeat(n);
    compare(vec![
        format!(
            "set pre 0 0 1\r\nx\r\nstats sizes_enable\r\nstats sizes\r\nset a 0 0 1\r\nx\r\n\
             set b 0 0 100\r\n{}\r\nset c 1 0 31\r\n{}\r\nset d 0 0 36\r\n{}\r\n\
             stats sizes\r\ndelete a\r\ndelete pre\r\nset b 0 0 1\r\nx\r\n\
             append c 0 0 50\r\n{}\r\nset n 0 0 1\r\n5\r\nincr n 100000\r\n\
             stats sizes\r\nstats sizes_disable\r\nstats sizes\r\n",
            x(100),
            x(31),
            x(36),
            x(50)
        )
        .into_bytes(),
        b"stats sizes_enable x\r\nstats sizes_disable x\r\nstats sizes\r\n".to_vec(),
        concat!(
            "stats sizes_enable\r\nset a 0 0 1\r\nx\r\nstats sizes_disable\r\n",
            "set b 0 0 1\r\nx\r\nstats sizes_enable\r\nstats sizes\r\n",
            "set c 0 0 1\r\nx\r\nstats sizes\r\nstats sizes_enable\r\nstats sizes\r\n",
            "stats sizes_disable\r\nstats sizes_disable\r\n",
        )
        .as_bytes()
        .to_vec(),
    ]);
}

/// `slabs reassign <src> <dst>` checked as memcached 1.6.18 checks it, against its classes
/// (0 is its page pool, -1 a source it picks): numbers as 32-bit ints, the same class
/// twice, a class out of range, then no spare pages (none are ever spare here; a fresh
/// memcached has none either, so a source it must pick is a bad class).
#[test]
fn slabs_reassign_matches_memcached() {
    let cases = [
        "1 2",
        "0 1",
        "1 0",
        "39 1",
        "1 39",
        "1 1",
        "-1 -1",
        "99 99",
        "40 1",
        "1 40",
        "-2 1",
        "1 -1",
        "-1 1",
        "-1 40",
        "4294967297 2",
        "2147483648 1",
        "+1 2",
        "1x 2",
        "2 1x",
        "x y",
        "1.5 2",
    ]
    .map(|a| format!("slabs reassign {a}\r\n"));
    compare(bytes_of(&cases.each_ref().map(String::as_str)));
    // With reassignment turned off, every request is refused alike.
    compare_with(
        &["-o", "no_slab_reassign"],
        bytes_of(&[
            "slabs reassign 1 2\r\n",
            "slabs reassign x y\r\n",
            "slabs reassign 1 1\r\n",
        ]),
    );
}

/// The LRU crawler runs from the start in memcached 1.6.18, so `lru_crawler enable`
/// fails until it is disabled; while disabled, crawl and metadump are refused. Arguments
/// are checked as memcached checks them. One request per case: memcached stops and starts
/// its crawler in the background, so pipelined requests could race it. One crawl that
/// starts, last: a second one soon after leaves a memcached 1.6.18 worker hung.
#[test]
fn lru_crawler_matches_memcached() {
    let steps = [
        "enable",
        "disable",
        "disable",
        "crawl all",
        "crawl x",
        "metadump all",
        "metadump x",
        "sleep 5",
        "tocrawl 5",
        "enable",
        "enable",
        "crawl 0",
        "crawl 64",
        "crawl 1,x",
        "crawl -1",
        "crawl ,",
        "crawl hash",
        "metadump ,",
        "sleep 1000000",
        "sleep 1000001",
        "sleep -1",
        "sleep 4294967297",
        "sleep x",
        "tocrawl -1",
        "tocrawl 4294967297",
        "tocrawl 99999999999999999999",
        "tocrawl x",
        "crawl 1,2",
    ]
    .map(|a| format!("lru_crawler {a}\r\n"));
    compare(bytes_of(&steps.each_ref().map(String::as_str)));
    // Started without it, the crawler can be enabled once.
    compare_with(
        &["-o", "no_lru_crawler"],
        bytes_of(&[
            "lru_crawler crawl all\r\n",
            "lru_crawler enable\r\n",
            "lru_crawler enable\r\n",
        ]),
    );
}

/// The `stats settings` lines of what those commands change: `track_sizes` (and `-o
/// track_sizes`), `lru_crawler` (and `-o no_lru_crawler`), `slab_reassign` (and `-o
/// no_slab_reassign`).
#[test]
fn admin_settings_match_memcached() {
    fn lines(port: u16) -> Vec<String> {
        let all = String::from_utf8_lossy(&exchange(port, b"stats settings\r\n")).into_owned();
        all.lines()
            .filter(|l| {
                ["track_sizes", "lru_crawler", "slab_reassign"]
                    .iter()
                    .any(|n| l.strip_prefix("STAT ").and_then(|r| r.split(' ').next()) == Some(n))
            })
            .map(String::from)
            .collect()
    }
    for args in [
        &[][..],
        &["-o", "track_sizes,no_lru_crawler,no_slab_reassign"],
    ] {
        let mc = Memcached::start_with(args);
        let ours = Proc::start(args);
        for step in [
            "mn\r\n",
            "stats sizes_enable\r\n",
            "lru_crawler disable\r\n",
            "lru_crawler enable\r\n",
            "stats sizes_disable\r\n",
        ] {
            exchange(mc.1, step.as_bytes());
            exchange(ours.port, step.as_bytes());
            // memcached notes a stopped crawler in its settings a moment later.
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(lines(ours.port), lines(mc.1), "{args:?} after {step:?}");
        }
    }
}

/// `stats settings` lists memcached's settings in its order, leaving out those of the
/// extstore and TLS builds (this server has neither), and shows memcached's values for the
/// tuning of machinery it does not have, defaults or given with `-o`.
#[test]
fn settings_list_memcached_keys_in_its_order() {
    fn settings(port: u16) -> Vec<(String, String)> {
        String::from_utf8_lossy(&exchange(port, b"stats settings\r\n"))
            .lines()
            .filter_map(|l| {
                let mut p = l.strip_prefix("STAT ")?.splitn(2, ' ');
                Some((p.next()?.to_string(), p.next()?.to_string()))
            })
            .collect()
    }
    let tuning = [
        "slab_automove_ratio",
        "slab_automove_window",
        "slab_chunk_max",
        "lru_crawler_sleep",
        "lru_crawler_tocrawl",
        "hot_lru_pct",
        "warm_lru_pct",
        "hot_max_factor",
        "warm_max_factor",
        "watcher_logbuf_size",
        "worker_logbuf_size",
        "slab_automove_freeratio",
        "num_napi_ids",
        "memory_file",
        "slab_automove",
        "slab_reassign",
        "maxconns_fast",
        "lru_crawler",
        "lru_maintainer_thread",
        "lru_segmented",
        "temp_lru",
        "temporary_ttl",
    ];
    let given = "slab_automove_ratio=0.7,slab_automove_window=10,lru_crawler_sleep=50,\
                 lru_crawler_tocrawl=7,hot_lru_pct=25,warm_lru_pct=30,hot_max_factor=0.5,\
                 warm_max_factor=3,watcher_logbuf_size=100,worker_logbuf_size=64,\
                 slab_automove_freeratio=0.02";
    for args in [
        &[][..],
        &["-o", given][..],
        &["-o", "no_modern"][..],
        &["-o", "no_modern,lru_crawler,maxconns_fast"][..],
        &["-o", "no_lru_maintainer"][..],
        &["-o", "temporary_ttl=30"][..],
    ] {
        let mc = Memcached::start_with(args);
        let ours = Proc::start(args);
        let theirs: Vec<_> = settings(mc.1)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("ext_") && !k.starts_with("ssl_"))
            .collect();
        let mine = settings(ours.port);
        let names =
            |s: &[(String, String)]| -> Vec<String> { s.iter().map(|(k, _)| k.clone()).collect() };
        let mine_known: Vec<_> = names(&mine)
            .into_iter()
            .filter(|k| theirs.iter().any(|(t, _)| t == k))
            .collect();
        assert_eq!(mine_known, names(&theirs), "{args:?}: names and order");
        let same_tuning = |mine: &[(String, String)], theirs: &[(String, String)], when| {
            for key in tuning {
                let value = |s: &[(String, String)]| s.iter().find(|(k, _)| k == key).cloned();
                assert_eq!(value(mine), value(theirs), "{args:?} {when}: {key}");
            }
        };
        same_tuning(&mine, &theirs, "at start");
        // Set at run time (with a refused value between, which changes nothing).
        for step in [
            "lru_crawler sleep 50\r\n",
            "lru_crawler sleep 2000000\r\n",
            "lru_crawler tocrawl 7\r\n",
            "slabs automove 2\r\n",
            "slabs automove 3\r\n",
            "slabs automove ratio 0.5\r\n",
            "lru tune 10 30 0.3 3\r\n",
            "lru tune 50 50 0.1 1\r\n",
            "lru mode flat\r\n",
            "lru temp_ttl 30\r\n",
            "lru temp_ttl -1\r\n",
        ] {
            assert_eq!(
                exchange(ours.port, step.as_bytes()),
                exchange(mc.1, step.as_bytes()),
                "{step:?}"
            );
        }
        let (mine, theirs) = (settings(ours.port), settings(mc.1));
        same_tuning(&mine, &theirs, "after the commands");
        let level = |s: &[(String, String)]| s.iter().find(|(k, _)| k == "slab_automove").cloned();
        assert_eq!(level(&mine), level(&theirs), "{args:?}: slab_automove");
    }
}

/// metadump lines show the class `me` shows (and, under `-C`, the smaller size and cas=0).
/// One item per dump, as the two servers list items in different orders. (Which items a
/// class list picks differs by design: see the README.)
#[test]
fn metadump_lines_match_memcached() {
    // Absolute times may fall in different seconds on the two servers.
    let times = Regex::new(r"(la|exp)=\d+").unwrap();
    // memcached's crawler now and then lists an item twice (one it moved between its LRU
    // queues during the walk): each line is taken once.
    let mask = |b: Vec<u8>| {
        let b = times.replace_all(&b, &b"$1=T"[..]).into_owned();
        let mut seen = Vec::new();
        for line in b.split_inclusive(|&c| c == b'\n') {
            if !seen.contains(&line) {
                seen.push(line);
            }
        }
        seen.concat()
    };
    // memcached answers nothing pipelined after a metadump: no sentinel, read up to END.
    let dump = |port: u16| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        s.write_all(b"lru_crawler metadump all\r\n").unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(b"END\r\n") {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        out
    };
    for args in [&[][..], &["-C"]] {
        let mc = Memcached::start_with(args);
        let ours = Proc::start(args);
        for (i, item) in [
            "0 0 1\r\nx".to_string(),
            format!("0 100 200\r\n{}", "x".repeat(200)),
            format!("5 0 36\r\n{}", "x".repeat(36)),
        ]
        .iter()
        .enumerate()
        {
            let replies: Vec<Vec<u8>> = [mc.1, ours.port]
                .iter()
                .map(|&port| {
                    // Under -C memcached flushes what is set in the same second as a
                    // flush_all too: a delete instead.
                    exchange(
                        port,
                        format!("delete k{}\r\n", i.saturating_sub(1)).as_bytes(),
                    );
                    exchange(port, format!("set k{i} {item}\r\n").as_bytes());
                    let cas_or_not = if args.is_empty() {
                        normalize(&dump(port))
                    } else {
                        dump(port)
                    };
                    mask(cas_or_not)
                })
                .collect();
            assert_eq!(
                String::from_utf8_lossy(&replies[1]),
                String::from_utf8_lossy(&replies[0]),
                "{args:?} {item:?}"
            );
        }
    }
}

/// `delete noreply` deletes the key named "noreply" and answers: only a third token can
/// say noreply.
#[test]
fn delete_of_a_key_named_noreply_answers() {
    compare(vec![
        b"set noreply 0 0 1\r\nx\r\ndelete noreply\r\nmn\r\n".to_vec(),
        b"delete noreply\r\nmn\r\n".to_vec(),
        b"set k 0 0 1\r\nx\r\ndelete k noreply\r\ndelete k 0 noreply\r\nmn\r\n".to_vec(),
    ]);
}

/// incr and decr read a stored number as memcached's `strtoull` does: leading whitespace,
/// a sign, and anything after a whitespace byte (a decr's padding then an append); `-0`
/// is 0 as a delta and as flags. A number grown longer is a new item (not fetched).
#[test]
fn counters_read_as_memcached_reads_them() {
    let mut cases: Vec<Vec<u8>> = [
        "1 5", "1\t23", "1 ab", "+5", "+0", "-0", "\x0b5", "5\x0b", "-5", "5a", " ",
    ]
    .iter()
    .map(|v| format!("set c 0 0 {}\r\n{v}\r\nincr c 1\r\nget c\r\n", v.len()).into_bytes())
    .collect();
    cases.extend([
        b"set c 0 0 2\r\n10\r\ndecr c 1\r\nappend c 0 0 1\r\n5\r\nincr c 1\r\nget c\r\n".to_vec(),
        b"set c 0 0 1\r\n5\r\nincr c -0\r\nma c D-0 v\r\nincr c -1\r\n".to_vec(),
        b"set c -0 0 1\r\n5\r\nms d 1 F-0\r\nx\r\nmg c f\r\nmg d f\r\n".to_vec(),
        b"set c 0 0 2\r\n10\r\nget c\r\nincr c 100\r\nmg c h\r\n".to_vec(),
        b"set c 0 0 2\r\n10\r\nget c\r\nincr c 1\r\nmg c h\r\n".to_vec(),
        b"set c 0 0 2\r\n10\r\nget c\r\nma c D1000 v\r\nmg c h\r\n".to_vec(),
    ]);
    compare(cases);
}

/// touch, gat, gats and `mg T` keep the CAS (a single node, as memcached): `gets`, a
/// touch, then a compare with the CAS from before stores.
#[test]
fn touches_keep_the_cas() {
    let mc = Memcached::start();
    let ours = Proc::start(&[]);
    for case in [
        "touch t 100\r\ncas t 0 0 1 CAS\r\ny\r\n",
        "gat 0 t\r\ncas t 0 0 1 CAS\r\ny\r\n",
        "gats 100 t\r\nms t 1 CCAS\r\ny\r\n",
        "mg t T10\r\nmd t CCAS\r\n",
        "touch t 0\r\nmg t T0 v\r\ncas t 0 0 1 CAS\r\ny\r\n",
    ] {
        let replies: Vec<Vec<u8>> = [mc.1, ours.port]
            .iter()
            .map(|&port| {
                exchange(port, b"flush_all\r\n");
                let cas = cas_in(&exchange(port, b"set t 0 0 1\r\nx\r\ngets t\r\n")[8..]);
                normalize(&exchange(
                    port,
                    case.replace("CAS", &cas.to_string()).as_bytes(),
                ))
            })
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&replies[1]),
            String::from_utf8_lossy(&replies[0]),
            "after {case:?}"
        );
    }
}

/// The request counters of `stats` that `reply` shows.
fn request_counters(reply: &[u8]) -> String {
    // Not `reclaimed` and `expired_unfetched`: memcached also counts them when a new item
    // takes the memory of a dead one, which depends on its slabs' state.
    const NAMES: [&str; 19] = [
        "cmd_get",
        "cmd_touch",
        "cmd_meta",
        "get_hits",
        "get_misses",
        "get_expired",
        "get_flushed",
        "delete_hits",
        "delete_misses",
        "incr_hits",
        "incr_misses",
        "decr_hits",
        "decr_misses",
        "cas_hits",
        "cas_badval",
        "cas_misses",
        "touch_hits",
        "touch_misses",
        "cmd_set",
    ];
    String::from_utf8_lossy(reply)
        .lines()
        .filter(|l| {
            l.strip_prefix("STAT ")
                .and_then(|l| l.split(' ').next())
                .is_some_and(|name| NAMES.contains(&name))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// memcached's background threads reclaim expired and flushed items on their own, so
/// whether a command still finds one (`get_expired`) or they got to it first (`reclaimed`)
/// is a race there; without them it is not. (Ours reclaims once a second.)
const QUIET_LRU: &[&str] = &["-o", "no_lru_maintainer,no_lru_crawler"];

/// Request counters as memcached counts them: `cmd_meta` counts `me` alone; an mg miss
/// is a get miss even with `T`; `ma N` creating and `md I` count nothing; any command
/// that finds an item expired or flushed counts `get_expired` or `get_flushed` (not a
/// set, append or ms over one: memcached's allocation for the new item may take the dead
/// one's memory first, as it lies at its slab class's tail in so small a cache).
#[test]
fn request_counters_match_memcached() {
    let expired = "set e 0 -1 1\r\n1\r\nstats reset\r\n";
    let cases = [
        "stats reset\r\nmg a v\r\nmn\r\nms a 1\r\nx\r\nmd a\r\nma a\r\nme a\r\n".to_string(),
        "stats reset\r\nmg zz T10 v\r\ngat 10 zz\r\n".to_string(),
        "stats reset\r\nma ctr N0 J1\r\nma ctr2 MD N0\r\n".to_string(),
        "stats reset\r\nset f 0 0 1\r\nx\r\nmd f I\r\nmg f v\r\nmd f\r\nmd nope I\r\n".to_string(),
        "set f 0 0 1\r\n1\r\nflush_all\r\nstats reset\r\nincr f 1\r\n".to_string(),
        format!("{expired}touch e 1\r\n"),
        format!("{expired}gat 10 e\r\n"),
        format!("{expired}delete e\r\n"),
        format!("{expired}mg e T10 v\r\n"),
        format!("{expired}ma e\r\n"),
        format!("{expired}me e\r\n"),
        format!("{expired}get e\r\n"),
        // Counted as hits only when the value is a number and the CAS matches.
        "stats reset\r\nset c1 0 0 1\r\n5\r\nincr c1 1\r\ndecr c1 1\r\nma c1 C999\r\n".to_string(),
        "stats reset\r\nset c2 0 0 3\r\nabc\r\nincr c2 1\r\ndecr c2 1\r\nma c2 MD\r\n".to_string(),
        // A CAS carried by an append or prepend is not a cas command.
        "stats reset\r\nset c3 0 0 1\r\n1\r\nms c3 1 C999 MA\r\nx\r\nms c3 1 C999 MP\r\nx\r\n"
            .to_string(),
        "stats reset\r\ncas c4 0 0 1 999\r\nx\r\nset c4 0 0 1\r\n1\r\ncas c4 0 0 1 999\r\nx\r\n"
            .to_string(),
        // A data block without its end still counts as a set.
        "stats reset\r\nset c5 0 0 1\r\nxx\r\nms c5 1\r\nxx\r\n".to_string(),
    ];
    let mc = Memcached::start_with(QUIET_LRU);
    let ours = Proc::start(QUIET_LRU);
    let mut failures = Vec::new();
    for case in cases {
        let [a, b] = [mc.1, ours.port].map(|port| {
            exchange(port, b"flush_all\r\n");
            exchange(port, case.as_bytes());
            request_counters(&exchange(port, b"stats\r\n"))
        });
        if a != b {
            failures.push(format!("{case:?}\n  memcached: {a}\n  repcached: {b}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// memcached's `-X` is `--disable-dumping` here (the seed's repcached took `-X` for the
/// replication port): both dumps refused with memcached's words. (A metadump after
/// `lru_crawler disable` says the crawler is disabled, but memcached stops its crawler
/// thread asynchronously, so its answer then depends on timing: not compared.)
#[test]
fn dumps_refused_when_disabled_as_memcached_refuses_them() {
    let mc = Memcached::start_with(&["-X"]);
    let ours = Proc::start(&["--disable-dumping"]);
    let req = b"set a 0 0 1\r\n1\r\nstats cachedump 1 1\r\nlru_crawler metadump all\r\n";
    let [a, b] = [mc.1, ours.port].map(|port| exchange(port, req));
    assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
    assert!(b.starts_with(b"STORED\r\nCLIENT_ERROR stats cachedump not allowed\r\n"));
    let off = exchange(
        ours.port,
        b"lru_crawler disable\r\nlru_crawler metadump all\r\n",
    );
    assert!(off.starts_with(b"OK\r\nCLIENT_ERROR lru crawler disabled\r\n"));
    let [a, b] = [mc.1, ours.port].map(|port| {
        let out = exchange(port, b"stats settings\r\n");
        let text = String::from_utf8_lossy(&out).into_owned();
        text.lines()
            .find(|l| l.starts_with("STAT dump_enabled "))
            .map(str::to_string)
    });
    assert_eq!(a.as_deref(), Some("STAT dump_enabled no"));
    assert_eq!(a, b);
}

/// A storage command over an expired or flushed item counts it `reclaimed` (and
/// `expired_unfetched` if never read), as memcached's allocation counts the dead item whose
/// memory it takes: in a fresh cache, the one replaced (memcached's `t/issue_183`).
#[test]
fn a_write_over_a_dead_item_reclaims_it() {
    let cases = [
        "set e 0 -1 1\r\n1\r\nset e 0 0 1\r\n2\r\n",
        "set e 0 -1 1\r\n1\r\nappend e 0 0 1\r\n2\r\n",
        "set f 0 0 1\r\n1\r\nget f\r\nflush_all\r\nset f 0 0 1\r\n2\r\n",
        "set e 0 -1 1\r\n1\r\nget e\r\n",
    ];
    let counts = |reply: Vec<u8>| {
        String::from_utf8_lossy(&reply)
            .lines()
            .filter(|l| {
                l.starts_with("STAT reclaimed ") || l.starts_with("STAT expired_unfetched ")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut failures = Vec::new();
    for case in cases {
        let mc = Memcached::start_with(QUIET_LRU);
        let ours = Proc::start(QUIET_LRU);
        let [a, b] = [mc.1, ours.port].map(|port| {
            exchange(port, case.as_bytes());
            counts(exchange(port, b"stats\r\n"))
        });
        if a != b {
            failures.push(format!("{case:?}\n  memcached: {a}\n  repcached: {b}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Connection counts as memcached keeps them: its listener and UDP receivers are
/// connections too (`curr_connections` shows them less one), `total_connections` counts
/// them from the start and `stats reset` zeroes it, and `connection_structures` keeps the
/// most ever open at once.
#[test]
fn connection_counts_match_memcached() {
    let args = |udp: u16| ["-t".to_string(), "1".into(), "-U".into(), udp.to_string()];
    let mc = Memcached::start_with(&args(free_port()).each_ref().map(String::as_str));
    let ours = Proc::start(&args(free_port()).each_ref().map(String::as_str));
    let addrs = [mc.1, ours.port].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    // The readiness probes' connections gone first (memcached reuses their structure).
    std::thread::sleep(Duration::from_millis(200));
    let mut clients = addrs.map(common::Client::connect);
    let open =
        |clients: &mut [common::Client; 2]| clients.each_mut().map(|c| c.stat("curr_connections"));
    let counts = |clients: &mut [common::Client; 2], step: &str| {
        let [a, b] = clients.each_mut().map(|c| {
            [
                "curr_connections",
                "total_connections",
                "connection_structures",
            ]
            .map(|k| c.stat(k))
        });
        assert_eq!(a, b, "{step}: memcached, then repcached");
        b
    };
    let start = counts(&mut clients, "one client");
    let more: Vec<_> = (0..5)
        .flat_map(|_| addrs.map(common::Client::connect))
        .collect();
    common::eventually(Duration::from_secs(2), || {
        open(&mut clients).iter().all(|n| *n != start[0])
    });
    counts(&mut clients, "five more");
    drop(more);
    common::eventually(Duration::from_secs(2), || {
        open(&mut clients).iter().all(|n| *n == start[0])
    });
    counts(&mut clients, "closed");
    for c in &mut clients {
        c.expect(b"stats reset\r\n", b"RESET\r\n");
    }
    let after = counts(&mut clients, "reset");
    assert_eq!(after[1], "0");
}

mod binary {
    use super::*;
    use repcached::protocol::binary::{op, HEADER_LEN};

    fn packet(opcode: u8, extras: &[u8], key: &[u8], value: &[u8], cas: u64) -> Vec<u8> {
        repcached::protocol::binary::request(opcode, extras, key, value, cas, 0x01020304)
    }

    fn set_x(flags: u32, exp: u32) -> Vec<u8> {
        [flags.to_be_bytes(), exp.to_be_bytes()].concat()
    }

    fn arith_x(delta: u64, initial: u64, exp: u32) -> Vec<u8> {
        [
            delta.to_be_bytes().as_slice(),
            &initial.to_be_bytes(),
            &exp.to_be_bytes(),
        ]
        .concat()
    }

    /// Sends the packets then a NOOP, and reads responses up to the NOOP's; CAS fields are
    /// zeroed (they legitimately differ), the rest must match byte for byte.
    fn exchange(port: u16, req: &[u8]) -> Vec<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(req).unwrap();
        s.write_all(&packet(op::NOOP, &[], &[], &[], 0)).unwrap();
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; HEADER_LEN];
            if s.read_exact(&mut h).is_err() {
                out.push(b"<closed>".to_vec());
                return out;
            }
            let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
            let mut b = vec![0u8; body];
            s.read_exact(&mut b).unwrap();
            let is_noop = h[1] == op::NOOP;
            h[16..24].fill(0);
            out.push([h.as_slice(), &b].concat());
            if is_noop {
                return out;
            }
        }
    }

    #[test]
    fn binary_replies_match_memcached() {
        let mc = Memcached::start();
        let ours = Proc::start(&[]);
        let cases: Vec<Vec<u8>> = vec![
            packet(op::GET, &[], b"nokey", &[], 0),
            packet(op::GETK, &[], b"nokey", &[], 0),
            [
                packet(op::SET, &set_x(5, 0), b"a", b"hello", 0),
                packet(op::GET, &[], b"a", &[], 0),
            ]
            .concat(),
            [
                packet(op::SETQ, &set_x(0, 0), b"a", b"1", 0),
                packet(op::GETKQ, &[], b"a", &[], 0),
            ]
            .concat(),
            [
                packet(op::ADD, &set_x(0, 0), b"a", b"1", 0),
                packet(op::ADD, &set_x(0, 0), b"a", b"2", 0),
            ]
            .concat(),
            packet(op::REPLACE, &set_x(0, 0), b"nokey", b"1", 0),
            packet(op::SET, &set_x(0, 0), b"nokey", b"1", 99),
            [
                packet(op::SET, &set_x(0, 0), b"a", b"1", 0),
                packet(op::SET, &set_x(0, 0), b"a", b"2", 99),
            ]
            .concat(),
            [
                packet(op::SET, &set_x(0, 0), b"a", b"1", 0),
                packet(op::APPEND, &[], b"a", b"2", 0),
                packet(op::PREPENDQ, &[], b"a", b"0", 0),
                packet(op::GET, &[], b"a", &[], 0),
            ]
            .concat(),
            packet(op::APPEND, &[], b"nokey", b"2", 0),
            [
                packet(op::SET, &set_x(0, 0), b"a", b"1", 0),
                packet(op::DELETE, &[], b"a", &[], 0),
                packet(op::DELETE, &[], b"a", &[], 0),
                packet(op::DELETEQ, &[], b"a", &[], 0),
            ]
            .concat(),
            packet(op::INCREMENT, &arith_x(1, 5, 0xffff_ffff), b"n", &[], 0),
            [
                packet(op::INCREMENT, &arith_x(1, 5, 0), b"n", &[], 0),
                packet(op::INCREMENT, &arith_x(3, 0, 0), b"n", &[], 0),
                packet(op::DECREMENT, &arith_x(100, 0, 0), b"n", &[], 0),
                packet(op::INCREMENTQ, &arith_x(1, 0, 0), b"n", &[], 0),
            ]
            .concat(),
            [
                packet(op::SET, &set_x(0, 0), b"s", b"abc", 0),
                packet(op::INCREMENT, &arith_x(1, 0, 0), b"s", &[], 0),
            ]
            .concat(),
            [
                packet(op::SET, &set_x(3, 0), b"t", b"v", 0),
                packet(op::TOUCH, &100u32.to_be_bytes(), b"t", &[], 0),
                packet(op::GAT, &100u32.to_be_bytes(), b"t", &[], 0),
                packet(op::GATK, &100u32.to_be_bytes(), b"t", &[], 0),
                packet(op::GATQ, &100u32.to_be_bytes(), b"nokey", &[], 0),
                packet(op::GATKQ, &1u32.to_be_bytes(), b"t", &[], 0),
            ]
            .concat(),
            packet(op::TOUCH, &100u32.to_be_bytes(), b"nokey", &[], 0),
            [
                packet(op::FLUSH, &[], &[], &[], 0),
                packet(op::FLUSHQ, &10u32.to_be_bytes(), &[], &[], 0),
            ]
            .concat(),
            packet(op::SASL_LIST_MECHS, &[], &[], &[], 0),
            packet(0x55, &[], &[], &[], 0),
            packet(op::GET, &[0; 4], b"a", &[], 0),
            packet(op::GET, &[], &[b'k'; 251], &[], 0),
            packet(op::SET, &set_x(0, 0), b"big", &vec![b'x'; 2_000_000], 0),
            // Unknown opcodes (verbosity is one to memcached 1.6.18 in any other shape):
            // answered, the body skipped, the connection kept, however large the body.
            packet(0x55, &[], &[], &vec![b'x'; 2_000_000], 0),
            packet(op::VERBOSITY, &[], &[], &vec![b'x'; 3_000_000], 0),
            packet(op::VERBOSITY, &[], &[], b"xyz", 0),
            // Binary keys may hold any byte.
            [
                packet(op::SET, &set_x(0, 0), b"\x10\x00 \r\n", b"v", 0),
                packet(op::GETK, &[], b"\x10\x00 \r\n", &[], 0),
            ]
            .concat(),
            packet(op::QUIT, &[], &[], &[], 0),
            packet(op::QUITQ, &[], &[], &[], 0),
            // Verbosity is not a command to memcached 1.6.18, however it is sent.
            packet(op::VERBOSITY, &[], &[], &[], 0),
            // STAT groups memcached 1.6.18 does not serve over binary (conns among them).
            packet(op::STAT, &[], b"conns", &[], 0),
            packet(op::STAT, &[], b"extstore", &[], 0),
            packet(op::STAT, &[], b"replication", &[], 0),
            packet(op::STAT, &[], b"cachedump 1 1", &[], 0),
            packet(op::STAT, &[], b"items x", &[], 0),
            packet(op::STAT, &[], b"slabs x", &[], 0),
            packet(op::STAT, &[], b"sizes x", &[], 0),
            packet(op::STAT, &[], b"detail", &[], 0),
            packet(op::STAT, &[], b" ", &[], 0),
            [
                packet(op::STAT, &[], b"detail on", &[], 0),
                packet(op::STAT, &[], b"resetx", &[], 0),
                packet(op::STAT, &[], b"detail off", &[], 0),
            ]
            .concat(),
            // The prefix dump over binary: one packet keyed "detailed" holding the text.
            [
                packet(op::STAT, &[], b"reset", &[], 0),
                packet(op::STAT, &[], b"detail dump", &[], 0),
                packet(op::STAT, &[], b"detail on", &[], 0),
                packet(op::SET, &set_x(0, 0), b"user:1", b"x", 0),
                packet(op::GET, &[], b"user:1", &[], 0),
                packet(op::GET, &[], b"user:2", &[], 0),
                packet(op::STAT, &[], b"detail dump", &[], 0),
                packet(op::STAT, &[], b"detail off", &[], 0),
                packet(op::STAT, &[], b"reset", &[], 0),
            ]
            .concat(),
            // Sizes over binary: one packet for enable and disable, no terminator.
            [
                packet(op::STAT, &[], b"sizes_enable", &[], 0),
                packet(op::SET, &set_x(0, 0), b"a", b"hello", 0),
                packet(op::STAT, &[], b"sizes", &[], 0),
                packet(op::STAT, &[], b"sizes_disable", &[], 0),
                packet(op::STAT, &[], b"sizes", &[], 0),
            ]
            .concat(),
        ];
        let mut failures = Vec::new();
        for case in &cases {
            exchange(mc.1, &packet(op::FLUSH, &[], &[], &[], 0));
            exchange(ours.port, &packet(op::FLUSH, &[], &[], &[], 0));
            let a = exchange(mc.1, case);
            let b = exchange(ours.port, case);
            if a != b {
                failures.push(format!(
                    "request opcode {:#04x}\n  memcached: {:?}\n  repcached: {:?}",
                    case[1], a, b
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} differences:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// Under `-C` a binary write's CAS is ignored (memcached's item takes none, so the
    /// write is not a compare), while a delete or an increment with one compares against
    /// the item's CAS of 0 and fails. Distinct keys, no flush (under `-C` memcached also
    /// flushes what is set in the same second).
    #[test]
    fn binary_cas_disabled_matches_memcached() {
        let mc = Memcached::start_with(&["-C"]);
        let ours = Proc::start(&["-C"]);
        let cases: Vec<Vec<u8>> = vec![
            [
                packet(op::SET, &set_x(0, 0), b"c1", b"1", 0),
                packet(op::SET, &set_x(0, 0), b"c1", b"2", 12345),
                packet(op::GET, &[], b"c1", &[], 0),
            ]
            .concat(),
            [
                packet(op::SET, &set_x(0, 0), b"c2", b"1", 12345),
                packet(op::GET, &[], b"c2", &[], 0),
                packet(op::APPEND, &[], b"c2", b"2", 77),
                packet(op::REPLACE, &set_x(0, 0), b"c2", b"3", 77),
                packet(op::GET, &[], b"c2", &[], 0),
            ]
            .concat(),
            [
                packet(op::SET, &set_x(0, 0), b"c3", b"5", 0),
                packet(op::INCREMENT, &arith_x(1, 0, 0), b"c3", &[], 9),
                packet(op::INCREMENT, &arith_x(1, 0, 0), b"c3", &[], 0),
                packet(op::DELETE, &[], b"c3", &[], 9),
                packet(op::DELETE, &[], b"c3", &[], 0),
                packet(op::GET, &[], b"c3", &[], 0),
            ]
            .concat(),
            // An add carrying a CAS stays an add: it once overwrote the key.
            [
                packet(op::SET, &set_x(0, 0), b"c4", b"old", 0),
                packet(op::ADD, &set_x(0, 0), b"c4", b"new", 5),
                packet(op::ADDQ, &set_x(0, 0), b"c4", b"newer", 5),
                packet(op::ADD, &set_x(0, 0), b"c5", b"fresh", 5),
                packet(op::GET, &[], b"c4", &[], 0),
                packet(op::GET, &[], b"c5", &[], 0),
            ]
            .concat(),
        ];
        for case in &cases {
            let (a, b) = (exchange(mc.1, case), exchange(ours.port, case));
            assert_eq!(b, a, "request opcode {:#04x}", case[1]);
        }
    }

    /// The first response to `req`, header and body (CAS zeroed); `<none>` if none comes
    /// within a second.
    fn first_response(port: u16, req: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.write_all(req).unwrap();
        let mut h = [0u8; HEADER_LEN];
        if s.read_exact(&mut h).is_err() {
            return b"<none>".to_vec();
        }
        let mut b = vec![0u8; u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize];
        if s.read_exact(&mut b).is_err() {
            return b"<cut>".to_vec();
        }
        h[16..24].fill(0);
        [h.as_slice(), &b].concat()
    }

    /// A verbosity request in its documented shape (a 4-byte level) is "Unknown command"
    /// to memcached 1.6.18 too. Only the first response is compared: memcached answers once
    /// it has skipped the body a second time, into the NOOP that follows (which is not
    /// copied here: the NOOP is answered).
    #[test]
    fn binary_verbosity_is_unknown() {
        let mc = Memcached::start();
        let ours = Proc::start(&[]);
        for level in [0u32, 1] {
            let req = [
                packet(op::VERBOSITY, &level.to_be_bytes(), &[], &[], 0),
                packet(op::NOOP, &[], &[], &[], 0),
            ]
            .concat();
            assert_eq!(
                first_response(ours.port, &req),
                first_response(mc.1, &req),
                "verbosity {level}"
            );
        }
    }

    /// An increment that creates its counter (an initial value given) counts no miss; one
    /// that finds nothing without one does; a get of an expired item counts `get_expired`.
    #[test]
    fn binary_request_counters_match_memcached() {
        let mc = Memcached::start_with(QUIET_LRU);
        let ours = Proc::start(QUIET_LRU);
        let cases = [
            packet(op::INCREMENT, &arith_x(1, 5, 0), b"ctr", &[], 0),
            packet(op::INCREMENT, &arith_x(1, 5, 0xffff_ffff), b"ctr", &[], 0),
            packet(op::DECREMENT, &arith_x(1, 5, 0), b"ctr", &[], 0),
            [
                packet(op::SET, &set_x(0, 0xffff_fff0), b"e", b"1", 0),
                packet(op::GET, &[], b"e", &[], 0),
                packet(op::TOUCH, &10u32.to_be_bytes(), b"e", &[], 0),
            ]
            .concat(),
        ];
        for case in cases {
            let [a, b] = [mc.1, ours.port].map(|port| {
                super::exchange(port, b"flush_all\r\nstats reset\r\n");
                exchange(port, &case);
                request_counters(&super::exchange(port, b"stats\r\n"))
            });
            assert_eq!(b, a, "after {case:?}");
        }
    }
}

/// The names `stats` lists, in order, from one exchange's reply.
fn stat_names(reply: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(reply)
        .lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// `stats` names memcached's general figures, in its order, whichever of its background
/// jobs `-o` turns off (each job's figures come and go with it, as in memcached). Left out:
/// `libevent` (none here) and repcached's own figures about its store.
#[test]
fn general_stats_have_memcached_names_in_its_order() {
    const OURS_ONLY: &[&str] = &[
        "tombstones",
        "tombstone_bytes",
        "store_segments",
        "store_dead_bytes",
    ];
    for args in [
        &[][..],
        &["-o", "no_lru_crawler,no_lru_maintainer"][..],
        &["-o", "no_modern"][..],
        &["-o", "no_slab_reassign,no_maxconns_fast"][..],
    ] {
        let mc = Memcached::start_with(args);
        let ours = Proc::start(args);
        let theirs: Vec<String> = stat_names(&exchange(mc.1, b"stats\r\n"))
            .into_iter()
            .filter(|n| n != "libevent")
            .collect();
        let mine: Vec<String> = stat_names(&exchange(ours.port, b"stats\r\n"))
            .into_iter()
            .filter(|n| !OURS_ONLY.contains(&n.as_str()))
            .collect();
        assert!(theirs.len() > 60, "{args:?}: {theirs:?}");
        assert_eq!(mine, theirs, "{args:?}");
    }
}

/// `read_buf_*` and `response_obj_*` count the buffers connections hold: a fresh
/// connection's `stats` sees its own read and output buffer (memcached's figures exactly);
/// clients stalled halfway through a request each hold a read buffer.
#[test]
fn buffer_stats_count_what_connections_hold() {
    let mc = Memcached::start_with(&["-t", "2"]);
    let ours = Proc::start(&["-t", "2"]);
    let figures = |reply: &[u8]| -> Vec<(String, u64)> {
        String::from_utf8_lossy(reply)
            .lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .filter(|l| l.starts_with("read_buf_") || l.starts_with("response_obj_"))
            .filter(|l| !l.starts_with("read_buf_oom") && !l.starts_with("response_obj_oom"))
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect()
    };
    // Exact but for buffers kept free for the next connection, which depend on which
    // worker served the connections before.
    for (who, port) in [("memcached", mc.1), ("repcached", ours.port)] {
        let f: std::collections::HashMap<String, u64> =
            figures(&exchange(port, b"stats\r\n")).into_iter().collect();
        assert_eq!(f.len(), 5, "{who}: {f:?}");
        assert_eq!(f["response_obj_count"], 1, "{who}: {f:?}");
        assert_eq!(f["response_obj_bytes"], 16384, "{who}: {f:?}");
        assert!(f["read_buf_count"] >= 2, "{who}: {f:?}");
        assert_eq!(
            f["read_buf_bytes"],
            f["read_buf_count"] * 16384,
            "{who}: {f:?}"
        );
        assert_eq!(
            f["read_buf_bytes"] - f["read_buf_bytes_free"],
            32768,
            "{who}: {f:?}"
        );
    }
    let stalled: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", ours.port)).unwrap();
            s.write_all(b"set stalled 0 0 10\r\nabc").unwrap();
            s
        })
        .collect();
    // Other workers' figures arrive within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let now: std::collections::HashMap<String, u64> = figures(&exchange(ours.port, b"stats\r\n"))
        .into_iter()
        .collect();
    assert!(now["read_buf_count"] >= 6 + 2, "{now:?}");
    assert!(now["read_buf_bytes"] >= (6 + 2) * 16384, "{now:?}");
    assert!(now["response_obj_count"] >= 1, "{now:?}");
    drop(stalled);
}

/// memcached writes out a text get's reply (get, gets, gat, gats) and `mn`'s at once, and
/// everything waiting once its input is used up, so `watch` and `lru_crawler metadump` may
/// follow those, where after any other request (quiet, noreply and refused ones included)
/// in the same packet they are refused. (memcached drops what
/// follows a dump in the same packet, so each case ends with the dump or the watch and
/// only its replies are compared.)
#[test]
fn watch_and_metadump_follow_a_get() {
    let mc = Memcached::start();
    let ours = Proc::start(&[]);
    // A dump's last-access times may fall on either side of a second.
    let la = Regex::new(r"la=\d+").unwrap();
    for case in [
        "get a\r\nlru_crawler metadump all\r\n",
        "set a 0 0 1\r\n1\r\ngets a\r\nlru_crawler metadump all\r\n",
        "get a\r\nwatch\r\n",
        "gat 0 a b\r\nwatch\r\n",
        "mn\r\nwatch\r\n",
        "get a\r\nset b 0 0 1 noreply\r\n1\r\nwatch\r\n",
        "touch a 0 noreply\r\nwatch\r\n",
        "mg zz v q\r\nwatch\r\n",
        // Errors wait like replies.
        "bogus\r\nwatch\r\n",
        "\r\nwatch\r\n",
        "set a 0 0 1\r\nXY\r\nwatch\r\n",
        "gat abc a\r\nwatch\r\n",
        "bogus\r\nlru_crawler metadump all\r\n",
        // Input used up: what waited, quiet places too, went out.
        "set a 0 0 1 noreply\r\nX\r\n|watch\r\n",
        "mg zz q\r\n|watch\r\n",
        "delete zz noreply\r\n|watch\r\n",
        "set a 0 0 1 noreply\r\nX\r\nwat|ch\r\n",
        "incr a 1 noreply\r\n|lru_crawler metadump all\r\n",
    ] {
        let first = |port: u16| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            // `|`: the rest goes in a later write, once the first part has been read.
            let mut parts = case.split('|').peekable();
            while let Some(part) = parts.next() {
                s.write_all(part.as_bytes()).unwrap();
                if parts.peek().is_some() {
                    std::thread::sleep(Duration::from_millis(150));
                }
            }
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            normalize(&out)
        };
        let [a, b] =
            [mc.1, ours.port].map(|port| la.replace_all(&first(port), &b"la=LA"[..]).into_owned());
        assert_eq!(
            String::from_utf8_lossy(&b),
            String::from_utf8_lossy(&a),
            "{case:?}"
        );
        exchange(mc.1, b"flush_all\r\n");
        exchange(ours.port, b"flush_all\r\n");
    }
}

/// `stats items` names memcached's figures for a class, in its order, its LRU
/// maintainer's (and temporary LRU's) only while they are on; `stats slabs` a part of
/// its names (chunks per page, free and total chunks have no counterpart), in its order.
/// One small item puts memcached's in class 1, the one class here.
#[test]
fn item_and_slab_stats_have_memcached_names_in_its_order() {
    for args in [
        &[][..],
        &["-o", "no_lru_crawler,no_lru_maintainer"][..],
        &["-o", "no_modern"][..],
        &["-o", "temporary_ttl=60"][..],
    ] {
        let mc = Memcached::start_with(args);
        let ours = Proc::start(args);
        for port in [mc.1, ours.port] {
            exchange(port, b"set a 0 0 1\r\n1\r\nget a\r\n");
        }
        let names = |port: u16, group: &[u8]| stat_names(&exchange(port, group));
        let (theirs, mine) = (
            names(mc.1, b"stats items\r\n"),
            names(ours.port, b"stats items\r\n"),
        );
        assert!(theirs.len() > 10, "{args:?}: {theirs:?}");
        assert_eq!(mine, theirs, "{args:?}");
        let (theirs, mine) = (
            names(mc.1, b"stats slabs\r\n"),
            names(ours.port, b"stats slabs\r\n"),
        );
        let in_theirs: Vec<&String> = theirs.iter().filter(|n| mine.contains(n)).collect();
        assert_eq!(
            in_theirs,
            mine.iter().collect::<Vec<_>>(),
            "{args:?}: {theirs:?}"
        );
        assert!(mine.len() >= 12, "{args:?}: {mine:?}");
    }
}

/// A get or gat line with a key over 250 bytes after valid ones: memcached answers only
/// the error, but it has read the keys before the bad one (counted, and touched by gat),
/// not those after it. (It also drops the replies still waiting to go out of earlier
/// requests in the same read, an earlier error's or a set's STORED: not copied, a client
/// would wait for them forever, so each case here goes in a read of its own.)
#[test]
fn a_bad_key_in_a_multiget_after_good_ones() {
    let long = "k".repeat(251);
    let cases = [
        format!("gat 500 a nokey {long} b\r\n"),
        "mg a t v\r\nmg b t v\r\n".to_string(),
        format!("gats 600 b {long} a\r\n"),
        "mg a t v\r\nmg b t v\r\n".to_string(),
        format!("get a nokey {long}\r\n"),
        format!("gets b {long}\r\n"),
        format!("get {long} a\r\n"),
    ];
    let mc = Memcached::start_with(QUIET_LRU);
    let ours = Proc::start(QUIET_LRU);
    let [a, b] = [mc.1, ours.port].map(|port| {
        exchange(
            port,
            b"set a 0 100 1\r\nx\r\nset b 0 0 1\r\ny\r\nstats reset\r\n",
        );
        let mut seen: Vec<String> = cases
            .iter()
            .map(|case| {
                String::from_utf8_lossy(&normalize(&exchange(port, case.as_bytes()))).into_owned()
            })
            .collect();
        seen.push(request_counters(&exchange(port, b"stats\r\n")));
        seen
    });
    assert!(
        a[0].starts_with("CLIENT_ERROR bad command line format\r\n"),
        "{a:?}"
    );
    assert!(a[1].contains("t500"), "memcached touched a: {a:?}");
    assert_eq!(b, a);
}

/// The same in a get line over 2048 bytes whose end arrives later (read as it arrives):
/// the keys before the bad one are read and counted, and only the error is answered.
#[test]
fn a_bad_key_in_a_long_get_line_arriving_in_parts() {
    let mut line = format!("get a a nokey {} ", "k".repeat(251));
    while line.len() < 3000 {
        line.push_str("b ");
    }
    let mc = Memcached::start_with(QUIET_LRU);
    let ours = Proc::start(QUIET_LRU);
    let [a, b] = [mc.1, ours.port].map(|port| {
        exchange(
            port,
            b"set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\nstats reset\r\n",
        );
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(line.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(b"\r\n").unwrap();
        s.write_all(SENTINEL).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while !reply.ends_with(SENTINEL_REPLY) {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => reply.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let reply = String::from_utf8_lossy(&reply).into_owned();
        (reply, request_counters(&exchange(port, b"stats\r\n")))
    });
    assert_eq!(
        a.0,
        "CLIENT_ERROR bad command line format\r\nEN k__end_of_case__\r\n"
    );
    assert!(
        a.1.contains("get_hits 2"),
        "memcached read a twice: {}",
        a.1
    );
    assert_eq!(b, a);
}

/// An `O` longer than 32 bytes: md and ms refuse it before they act; mg and ma act first
/// and refuse it as memcached builds their reply flag by flag, so a non-numeric value's
/// error comes first, an item is counted, created (`N`) or touched (`T`) by the flags
/// before the opaque only, a hit is not counted, no win token goes out and, with a flag
/// that holds back the access bump, the item is not marked fetched.
#[test]
fn a_long_opaque_after_the_command_acted() {
    let o = format!("O{}", "x".repeat(33));
    let cases: Vec<String> = [
        "set a 0 0 1\r\n5\r\nma a {o}\r\nmg a v\r\n",
        "set a 0 0 1\r\n5\r\nma a {o} MD D2 q\r\nmg a v\r\n",
        "set a 0 0 1\r\n5\r\nma a {o} C1\r\nmg a v\r\n",
        "set a 0 0 1\r\nx\r\nma a {o}\r\nma a MX {o}\r\nma a Dx {o}\r\nmg a v\r\n",
        // Apart: memcached loses ma's T on an item a reply waiting to go out holds.
        "set a 0 0 1\r\n5\r\nma a {o} T100\r\nmg a t\r\n",
        "set a 0 0 1\r\n5\r\nma a T100 {o}\r\nmg a t\r\n",
        "ma a N0 J5 {o} v\r\nmg a v t\r\nma b {o} N50\r\nmg b t\r\n",
        "ma a T70 {o} N50\r\nmg a t\r\nma nokey {o} q\r\nmn\r\n",
        "mg a N30 {o}\r\nme a\r\nmg a v t\r\n",
        "mg a {o} N30\r\nmg a v t\r\nme a\r\n",
        "mg a T40 {o} N30 q\r\nmg a v t\r\n",
        "set a 0 0 1\r\n5\r\nmg a {o}\r\nme a\r\nmg a {o} T30 v\r\nme a\r\n",
        "set a 0 0 1\r\n5\r\nmg a T30 {o} h\r\nmg a t\r\n",
        "set a 0 0 1\r\n5\r\nmd a I\r\nmg a {o} v\r\nmg a v\r\n",
        "set a 0 0 1\r\n5\r\nmd a {o}\r\nms a 1 {o}\r\n6\r\nmg a v\r\n",
    ]
    .iter()
    .map(|c| c.replace("{o}", &o))
    .collect();
    compare(cases.iter().map(|c| c.as_bytes().to_vec()).collect());
    let mc = Memcached::start_with(QUIET_LRU);
    let ours = Proc::start(QUIET_LRU);
    for case in &cases {
        // Counted from after the set: one over a flushed item is counted as memcached's
        // allocation happens to go (see `request_counters_match_memcached`).
        let case = match case.strip_prefix("set a 0 0 1\r\n") {
            Some(rest) => format!("set a 0 0 1\r\n{}stats reset\r\n{}", &rest[..3], &rest[3..]),
            None => format!("stats reset\r\n{case}"),
        };
        let [a, b] = [mc.1, ours.port].map(|port| {
            exchange(port, b"flush_all\r\n");
            exchange(port, case.as_bytes());
            request_counters(&exchange(port, b"stats\r\n"))
        });
        assert_eq!(b, a, "counters after {case:?}");
    }
}

/// Base64 keys (`b`) as memcached decodes them: unused low bits need not be zero (`ab==`
/// is the key `aQ==` names), bytes outside the alphabet are skipped, the first padded
/// quartet ends the key; a partial quartet or three `=` fail.
#[test]
fn base64_keys_decode_as_memcached_decodes_them() {
    compare(bytes_of(&[
        "ms ab== 1 b\r\nx\r\nmg ab== b k v\r\nmg aQ== b k v\r\nme ab== b\r\nmg i v\r\n",
        "ms YWJj 1 b\r\nx\r\nmg Y!W-Jj b k v\r\nme Y!W-Jj b\r\nmd YWJj== b k\r\n",
        "ms YQ==YWJj 1 b\r\nx\r\nmg a v\r\nma YQ==YWJj b N0\r\nmg abc v\r\n",
        "mg Y=== b\r\nmg YWJ b\r\nme Y=== b\r\nme YWJ b\r\nma YWJjZ=== b\r\n",
    ]));
}

/// ascii authentication (`-Y`) with requests in the same read as the credentials: those
/// before them are refused and those after them served; memcached keeps one reply for
/// the requests of an unauthenticated connection until it writes, so each refusal (and a
/// failed login) is replaced by the next answer. The length is read into 32 bits; the
/// credentials may take up to its 16 KB read buffer.
#[test]
fn ascii_auth_with_pipelined_requests() {
    let dir = common::TempDir::new("authpipe");
    let pw = dir.0.join("auth.pw");
    std::fs::write(&pw, "user:pass\n").unwrap();
    let args = ["-Y", pw.to_str().unwrap()];
    let long = format!("user pass{}", " ".repeat(16_373));
    let cases = [
        "get a\r\nset user 0 0 9\r\nuser pass\r\nset a 0 0 1\r\nx\r\nget a\r\n".to_string(),
        "version\r\nmn\r\nset user 0 0 9\r\nuser pass\r\nmn\r\n".to_string(),
        "set user 0 0 9\r\nuser bad!\r\nget a\r\nset u 0 0 9\r\nuser pass\r\nmn\r\n".to_string(),
        "add user 0 0 9\r\nuser pass\r\nset u 0 0 14\r\nuser pass extra\r\n\nset u 0 0 9\r\nuser pass\r\n".to_string(),
        "set u 0 0 4294967305\r\nuser pass\r\nmn\r\n".to_string(),
        format!("set u 0 0 {}\r\n{long}\r\nmn\r\n", long.len()),
        format!("set u 0 0 {}\r\n{long} \r\nmn\r\n", long.len() + 1),
    ];
    let mc = Memcached::start_with(&args);
    let ours = Proc::start(&args);
    for case in cases {
        let [a, b] = [mc.1, ours.port].map(|port| exchange(port, case.as_bytes()));
        assert_eq!(
            String::from_utf8_lossy(&b),
            String::from_utf8_lossy(&a),
            "after {:?}",
            &case[..case.len().min(80)]
        );
    }
}

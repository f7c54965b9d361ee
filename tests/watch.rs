//! `watch`: connections turned into log streams, as memcached's (`doc/protocol.txt`,
//! "Watchers"): fetches, stores, evictions and connection events in its words, keys
//! URI-encoded, slow watchers skipping lines (and told how many), the limits and refusals.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{eventually, Client, Proc};

/// A watcher's connection: `watch <kinds>` answered OK, then lines.
struct Watcher {
    lines: BufReader<TcpStream>,
}

impl Watcher {
    fn start(server: &Proc, kinds: &str) -> Watcher {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(format!("watch {kinds}\r\n").as_bytes())
            .unwrap();
        let mut w = Watcher {
            lines: BufReader::new(stream),
        };
        assert_eq!(w.raw_line(), "OK\r\n");
        w
    }

    fn raw_line(&mut self) -> String {
        let mut line = String::new();
        self.lines.read_line(&mut line).expect("a log line in time");
        line
    }

    /// The next line without its `ts=... gid=... ` head (checked and returned apart).
    fn line(&mut self) -> (u64, String) {
        let line = self.raw_line();
        let line = line.strip_suffix('\n').expect("a whole line");
        let mut words = line.splitn(3, ' ');
        let ts = words.next().unwrap().strip_prefix("ts=").expect("ts=");
        let (secs, micros) = ts.split_once('.').expect("ts=secs.usecs");
        assert!(secs.parse::<u64>().unwrap() > 1_600_000_000, "{line}");
        assert!(micros.parse::<u32>().unwrap() < 1_000_000, "{line}");
        let gid = words.next().unwrap().strip_prefix("gid=").expect("gid=");
        (gid.parse().unwrap(), words.next().unwrap_or("").to_string())
    }

    /// The next `n` lines about the connection from `port` (the server's readiness
    /// probes open and close connections of their own).
    fn lines_about(&mut self, port: u16, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let (_, body) = self.line();
            if body.contains(&format!(" rport={port} ")) {
                out.push(body);
            }
        }
        out
    }

    /// The next `n` lines' bodies, their ids checked to increase.
    fn lines(&mut self, n: usize) -> Vec<String> {
        let mut last = 0;
        (0..n)
            .map(|_| {
                let (gid, body) = self.line();
                assert!(gid > last, "ids increase: {gid} after {last}");
                last = gid;
                body
            })
            .collect()
    }
}

/// The descriptor the server knows `c`'s connection by (`stats conns`, as `cfd=` shows).
fn server_fd(c: &mut Client) -> u64 {
    let port = c.stream.local_addr().unwrap().port();
    fd_of_port(c, port)
}

/// The descriptor of the connection from local `port`, asked over `c` (a connection just
/// made may not be accepted yet: asked again until it is listed).
fn fd_of_port(c: &mut Client, port: u16) -> u64 {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = c.call_until(b"stats conns\r\n", b"END\r\n");
        let stats = String::from_utf8(stats).unwrap();
        let found = stats
            .lines()
            .find(|l| l.ends_with(&format!(":addr tcp:127.0.0.1:{port}")))
            .map(|l| l["STAT ".len()..l.find(':').unwrap()].parse().unwrap());
        match found {
            Some(fd) => return fd,
            None if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
            None => panic!("port {port} not in stats conns: {stats}"),
        }
    }
}

#[test]
fn fetches_and_stores_are_logged_in_memcached_words() {
    let server = Proc::start(&[]);
    let mut c = server.client();
    let cfd = server_fd(&mut c);
    let mut w = Watcher::start(&server, "fetchers mutations");
    c.expect(b"set vfoo 5 100 4\r\nvbar\r\n", b"STORED\r\n");
    c.expect(b"get vfoo nokey\r\n", b"VALUE vfoo 5 4\r\nvbar\r\nEND\r\n");
    c.expect(b"add vfoo 0 0 1\r\nx\r\n", b"NOT_STORED\r\n");
    c.expect(b"append vfoo 0 0 2\r\nzz\r\n", b"STORED\r\n");
    c.expect(b"cas vfoo 0 0 1 1\r\nq\r\n", b"EXISTS\r\n");
    c.expect(b"set k,\x01 0 0 1\r\nx\r\n", b"STORED\r\n");
    c.expect(b"delete nokey\r\n", b"NOT_FOUND\r\n");
    let want = [
        "type=item_get key=vfoo status=not_found clsid=0 cfd=C size=0",
        "type=item_store key=vfoo status=stored cmd=set ttl=100 clsid=1 cfd=C size=4",
        "type=item_get key=vfoo status=found clsid=1 cfd=C size=4",
        "type=item_get key=nokey status=not_found clsid=0 cfd=C size=0",
        "type=item_get key=vfoo status=found clsid=1 cfd=C size=4",
        "type=item_store key=vfoo status=not_stored cmd=add ttl=0 clsid=1 cfd=C size=1",
        "type=item_get key=vfoo status=found clsid=1 cfd=C size=4",
        // An append keeps the item's lifetime; the size is the whole value's.
        "type=item_store key=vfoo status=stored cmd=append ttl=100 clsid=1 cfd=C size=6",
        "type=item_get key=vfoo status=found clsid=1 cfd=C size=6",
        "type=item_store key=vfoo status=exists cmd=cas ttl=0 clsid=1 cfd=C size=1",
        "type=item_get key=k%2C%01 status=not_found clsid=0 cfd=C size=0",
        "type=item_store key=k%2C%01 status=stored cmd=set ttl=0 clsid=1 cfd=C size=1",
        "type=item_get key=nokey status=not_found clsid=0 cfd=C size=0",
    ]
    .map(|l| l.replace("cfd=C", &format!("cfd={cfd}")));
    let got = w.lines(want.len());
    // A TTL is the seconds left, which may have ticked by a second or two.
    let got: Vec<String> = got
        .iter()
        .map(|l| {
            l.replace("ttl=99 ", "ttl=100 ")
                .replace("ttl=98 ", "ttl=100 ")
        })
        .collect();
    assert_eq!(got, want);

    // A flushed item reads as not found, as memcached shows it.
    c.expect(b"set fl 0 0 1\r\nx\r\n", b"STORED\r\n");
    c.expect(b"flush_all\r\n", b"OK\r\n");
    c.expect(b"get fl\r\n", b"END\r\n");
    let flushed = w.lines(3);
    assert_eq!(
        flushed[2],
        format!("type=item_get key=fl status=not_found clsid=0 cfd={cfd} size=0")
    );
    c.expect(b"set vfoo 0 100 6\r\nvbarzz\r\n", b"STORED\r\n");
    w.lines(2);

    // Meta and binary requests go through the same path.
    c.expect(b"mg vfoo v\r\n", b"VA 6\r\nvbarzz\r\n");
    let mut b = server.client();
    // Asked over the text connection: the binary one speaks binary from its first byte.
    let bfd = fd_of_port(&mut c, b.stream.local_addr().unwrap().port());
    let key = b"vfoo";
    let mut req = vec![0x80, 0x00, 0, key.len() as u8, 0, 0, 0, 0];
    req.extend_from_slice(&(key.len() as u32).to_be_bytes());
    req.extend_from_slice(&[0; 12]);
    req.extend_from_slice(key);
    b.send(&req);
    let mut head = [0u8; 24];
    b.stream.read_exact(&mut head).unwrap();
    assert_eq!(&head[6..8], &[0, 0], "binary get found it");
    // A read that creates the item (mg `N`) found nothing before it did.
    c.expect(b"mg viv N30\r\n", b"HD W\r\n");
    assert_eq!(
        w.lines(3),
        [
            format!("type=item_get key=vfoo status=found clsid=1 cfd={cfd} size=6"),
            format!("type=item_get key=vfoo status=found clsid=1 cfd={bfd} size=6"),
            format!("type=item_get key=viv status=not_found clsid=0 cfd={cfd} size=0"),
        ]
    );
}

#[test]
fn nothing_is_logged_while_nobody_watches() {
    let server = Proc::start(&[]);
    let mut c = server.client();
    for i in 0..100 {
        c.call_until(format!("set k{i} 0 0 1\r\nx\r\n").as_bytes(), b"STORED\r\n");
        let hit = c.call_until(format!("get k{i}\r\n").as_bytes(), b"END\r\n");
        assert_eq!(hit, format!("VALUE k{i} 0 1\r\nx\r\nEND\r\n").as_bytes());
    }
    assert_eq!(c.stat("log_worker_written"), "0");
    assert_eq!(c.stat("log_watchers"), "0");
    // Lines are made only of the kinds someone watches.
    let _w = Watcher::start(&server, "connevents");
    c.expect(b"get k1\r\n", b"VALUE k1 0 1\r\nx\r\nEND\r\n");
    assert_eq!(c.stat("log_worker_written"), "0");
    assert_eq!(c.stat("log_watchers"), "1");
}

#[test]
fn connections_are_logged_open_and_closed_with_a_reason() {
    let server = Proc::start(&[]);
    let mut w = Watcher::start(&server, "connevents");
    let mut c = server.client();
    let port = c.stream.local_addr().unwrap().port();
    let cfd = server_fd(&mut c);
    c.send(b"quit\r\n");
    assert!(c.is_closed());
    let tcp = format!("rip=127.0.0.1 rport={port} transport=tcp");
    assert_eq!(
        w.lines_about(port, 2),
        [
            format!("type=conn_new {tcp} cfd={cfd}"),
            format!("type=conn_close {tcp} reason=normal cfd={cfd}"),
        ]
    );
    // A protocol error that closes the connection.
    let mut bad = server.client();
    let port = bad.stream.local_addr().unwrap().port();
    bad.send(b"GET / HTTP/1.1\r\n");
    assert!(bad.is_closed());
    let lines = w.lines_about(port, 2);
    assert!(lines[0].starts_with(&format!("type=conn_new rip=127.0.0.1 rport={port} ")));
    assert!(
        lines[1].starts_with(&format!("type=conn_close rip=127.0.0.1 rport={port} "))
            && lines[1].contains(" reason=error "),
        "{lines:?}"
    );
    // The client going away.
    let gone = server.client();
    let port = gone.stream.local_addr().unwrap().port();
    drop(gone);
    let lines = w.lines_about(port, 2);
    assert!(lines[0].starts_with("type=conn_new "), "{lines:?}");
    assert!(lines[1].contains(&format!("rport={port} transport=tcp reason=normal")));
}

#[test]
fn idle_clients_are_logged_closed_for_it_and_watchers_are_not_closed() {
    let server = Proc::start(&["-o", "idle_timeout=1"]);
    let mut w = Watcher::start(&server, "connevents");
    let mut c = server.client();
    let port = c.stream.local_addr().unwrap().port();
    c.call_until(b"version\r\n", b"\r\n");
    assert!(c.is_closed() || c.is_closed(), "closed for idling");
    let lines = w.lines_about(port, 2);
    assert!(lines[1].contains(" reason=idle_timeout "), "{lines:?}");
    // The watcher itself, silent all along, is still served and listed as watching.
    let mut d = server.client();
    let port = d.stream.local_addr().unwrap().port();
    let conns = String::from_utf8(d.call_until(b"stats conns\r\n", b"END\r\n")).unwrap();
    assert!(conns.contains(":state conn_watch\r\n"), "{conns}");
    assert!(w.lines_about(port, 1)[0].starts_with("type=conn_new "));
}

#[test]
fn a_watcher_that_does_not_read_does_not_hold_up_shutdown() {
    let mut server = Proc::start(&["-o", "watcher_logbuf_size=1"]);
    let _w = Watcher::start(&server, "fetchers");
    let mut c = server.client();
    let pad = "x".repeat(200);
    for round in 0..20 {
        let batch: String = (0..1000)
            .map(|i| format!("get k{round}-{i}-{pad}\r\n"))
            .collect();
        c.send(batch.as_bytes());
        let mut got = 0;
        let mut buf = vec![0u8; 8192];
        while got < 1000 * 5 {
            got += c.stream.read(&mut buf).unwrap();
        }
    }
    assert!(c.stat("log_watcher_skipped").parse::<u64>().unwrap() > 0);
    let t = Instant::now();
    // SAFETY: a plain signal to our own child process.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let until = t + Duration::from_secs(8);
    while server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "still running 8 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn evictions_are_logged() {
    let server = Proc::start(&["-m", "8"]);
    let mut c = server.client();
    let mut w = Watcher::start(&server, "evictions");
    let value = vec![b'e'; 50_000];
    for i in 0..400 {
        let mut req = format!("set ev{i} 0 0 50000 noreply\r\n").into_bytes();
        req.extend_from_slice(&value);
        req.extend_from_slice(b"\r\n");
        c.send(&req);
    }
    // Every write is in (noreply writes are answered by nothing).
    assert!(c.stat("evictions").parse::<u64>().unwrap() > 0);
    let (_, line) = w.line();
    let rest = line
        .strip_prefix("type=eviction key=ev")
        .unwrap_or_else(|| panic!("{line}"));
    let words: Vec<&str> = rest.split(' ').collect();
    assert!(words[0].parse::<u32>().unwrap() < 400, "{line}");
    assert_eq!(words[1], "fetch=no", "{line}");
    assert_eq!(words[2], "ttl=-1", "{line}");
    assert!(words[3].starts_with("la="), "{line}");
    assert!(words[4].starts_with("clsid="), "{line}");
    assert_eq!(words[5], "size=50000", "{line}");
}

#[test]
fn a_slow_watcher_misses_lines_is_told_how_many_and_slows_nobody() {
    // A 1 KB buffer, and a watcher that does not read while 40,000 long lines are made.
    let server = Proc::start(&["-o", "watcher_logbuf_size=1"]);
    let mut w = Watcher::start(&server, "fetchers");
    let mut c = server.client();
    let pad = "x".repeat(200);
    for round in 0..40 {
        let mut batch = Vec::new();
        for i in 0..1000 {
            batch.extend_from_slice(format!("get k{round}-{i}-{pad}\r\n").as_bytes());
        }
        c.send(&batch);
        let mut got = 0;
        let mut buf = vec![0u8; 8192];
        while got < 1000 * 5 {
            got += c.stream.read(&mut buf).unwrap();
        }
    }
    // Another connection is answered at once meanwhile.
    let mut other = server.client();
    let t = Instant::now();
    other.expect(b"get nothing\r\n", b"END\r\n");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let skipped: u64 = c.stat("log_watcher_skipped").parse().unwrap();
    let sent: u64 = c.stat("log_watcher_sent").parse().unwrap();
    let written: u64 = c.stat("log_worker_written").parse().unwrap();
    assert!(skipped > 0, "skipped {skipped}");
    assert_eq!(written, skipped + sent);
    // Reading on, the watcher is told how many it missed, before the next line.
    let mut seen = 0;
    let note = loop {
        let line = w.raw_line();
        if let Some(n) = line.strip_prefix("skipped=") {
            break n.trim_end().parse::<u64>().unwrap();
        }
        seen += 1;
        if seen % 100 == 0 {
            other.expect(b"get nothing\r\n", b"END\r\n");
        }
        assert!(seen < 100_000, "no skipped= line");
    };
    assert!(note > 0 && note <= skipped, "{note} of {skipped}");
    let (_, line) = w.line();
    assert!(line.starts_with("type=item_get "), "{line}");
}

#[test]
fn watch_is_refused_as_memcached_refuses_it() {
    let server = Proc::start(&[]);
    let mut c = server.client();
    c.expect(b"watch fetchers bogus\r\n", b"ERROR\r\n");
    // A last `noreply` silences it whole: no answer, no watching, the connection goes on.
    for line in [
        "watch fetchers noreply",
        "watch noreply",
        "watch bogus noreply",
    ] {
        c.expect(format!("{line}\r\nget a\r\n").as_bytes(), b"END\r\n");
    }
    c.expect(b"watch noreply fetchers\r\n", b"ERROR\r\n");
    assert_eq!(c.stat("log_watchers"), "0");
    // Replies still waiting to go out: refused, and the connection goes on.
    c.expect(
        b"mg a v\r\nwatch\r\n",
        b"EN\r\nERROR cannot pipeline other commands before watch\r\n",
    );
    c.expect(b"get a\r\n", b"END\r\n");
    // memcached's limit of 20 watchers at once; a closed one makes room.
    let mut watchers: Vec<Watcher> = (0..20).map(|_| Watcher::start(&server, "")).collect();
    assert_eq!(c.stat("log_watchers"), "20");
    c.expect(
        b"watch\r\n",
        b"WATCHER_TOO_MANY log watcher limit reached\r\n",
    );
    watchers.truncate(19);
    assert!(eventually(Duration::from_secs(5), || c
        .stat("log_watchers")
        == "19"));
    let mut d = server.client();
    d.expect(b"watch mutations\r\n", b"OK\r\n");
    drop(watchers);
    drop(d);
    assert!(eventually(Duration::from_secs(5), || c
        .stat("log_watchers")
        == "0"));

    let no_watch = Proc::start(&["-W"]);
    no_watch.client().expect(
        b"watch mutations\r\n",
        b"CLIENT_ERROR watch commands not allowed\r\n",
    );
    no_watch
        .client()
        .expect(b"watch mutations noreply\r\nget a\r\n", b"END\r\n");
}

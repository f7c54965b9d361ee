//! UDP (`-U`): real datagrams on loopback against the server binary, framed as memcached
//! frames them (8-byte header: request id, sequence, total, reserved).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_ready, Proc, BIN};

/// A UDP port free right now on 127.0.0.1.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server with UDP on, and the port it listens on.
fn server() -> (Proc, u16) {
    let udp = free_udp_port();
    (Proc::start(&["-U", &udp.to_string()]), udp)
}

fn client(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(server).unwrap();
    s
}

fn frame(id: u16, seq: u16, total: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    for w in [id, seq, total, 0] {
        d.extend_from_slice(&w.to_be_bytes());
    }
    d.extend_from_slice(payload);
    d
}

/// Reads datagrams until `wait` passes with none; returns them as (header words, payload).
fn datagrams(s: &UdpSocket, wait: Duration) -> Vec<([u16; 4], Vec<u8>)> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    // Bounded: no test expects anywhere near this many.
    for _ in 0..1000 {
        let Ok(n) = s.recv(&mut buf) else { break };
        assert!(n >= 8, "a datagram shorter than its header");
        let w = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
        out.push(([w(0), w(2), w(4), w(6)], buf[8..n].to_vec()));
        // Once the first arrived the rest follow at once.
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    out
}

/// Sends one single-datagram request and returns the reply datagrams.
fn call(s: &UdpSocket, id: u16, payload: &[u8]) -> Vec<([u16; 4], Vec<u8>)> {
    s.send(&frame(id, 0, 1, payload)).unwrap();
    datagrams(s, Duration::from_secs(3))
}

/// Asserts `got` is one message of one datagram for request `id` carrying `want`.
fn assert_one(got: &[([u16; 4], Vec<u8>)], id: u16, want: &[u8]) {
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, [id, 0, 1, 0]);
    assert_eq!(
        String::from_utf8_lossy(&got[0].1),
        String::from_utf8_lossy(want)
    );
}

#[test]
fn text_and_meta_requests_get_framed_replies() {
    let (srv, port) = server();
    let s = client(SocketAddr::from(([127, 0, 0, 1], port)));
    assert_one(
        &call(&s, 161, b"set foo 0 0 6\r\nfooval\r\n"),
        161,
        b"STORED\r\n",
    );
    assert_one(
        &call(&s, 162, b"get foo\r\n"),
        162,
        b"VALUE foo 0 6\r\nfooval\r\nEND\r\n",
    );
    assert_one(
        &call(&s, 0xfffe, b"incr foo 1\r\n"),
        0xfffe,
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    assert_one(&call(&s, 7, b"mg foo s v\r\n"), 7, b"VA 6 s6\r\nfooval\r\n");
    assert_one(&call(&s, 8, b"bogus\r\n"), 8, b"ERROR\r\n");
    // noreply answers nothing; the item is there for TCP clients too.
    s.send(&frame(9, 0, 1, b"set n 0 0 1 noreply\r\n1\r\n"))
        .unwrap();
    assert!(datagrams(&s, Duration::from_millis(500)).is_empty());
    let mut c = srv.client();
    c.expect(b"get n\r\n", b"VALUE n 0 1\r\n1\r\nEND\r\n");
    // Requests in one datagram are answered one message each, in order.
    let got = call(&s, 10, b"get n\r\ndelete n\r\nget n\r\n");
    assert_eq!(got.len(), 3, "{got:?}");
    let replies: Vec<&[u8]> = got.iter().map(|(_, p)| p.as_slice()).collect();
    assert_eq!(
        replies,
        [
            &b"VALUE n 0 1\r\n1\r\nEND\r\n"[..],
            b"DELETED\r\n",
            b"END\r\n"
        ]
    );
    assert!(got.iter().all(|(h, _)| *h == [10, 0, 1, 0]));
}

#[test]
fn large_replies_span_datagrams_of_at_most_1400_bytes() {
    let (srv, port) = server();
    let value: Vec<u8> = (0..20_000u32).map(|i| b'C' + (i % 24) as u8).collect();
    let mut c = srv.client();
    let mut set = b"set big 0 0 20000\r\n".to_vec();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    c.expect(&set, b"STORED\r\n");
    let s = client(SocketAddr::from(([127, 0, 0, 1], port)));
    let got = call(&s, 53, b"get big\r\n");
    let mut want = b"VALUE big 0 20000\r\n".to_vec();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\nEND\r\n");
    let total = want.len().div_ceil(1392);
    assert_eq!(got.len(), total);
    let mut joined = Vec::new();
    for (i, (h, p)) in got.iter().enumerate() {
        // Loopback keeps the order datagrams were sent in.
        assert_eq!(*h, [53, i as u16, total as u16, 0]);
        assert!(p.len() + 8 <= 1400);
        if i + 1 < total {
            assert_eq!(p.len() + 8, 1400, "only the last datagram is short");
        }
        joined.extend_from_slice(p);
    }
    assert_eq!(joined, want);
}

#[test]
fn binary_requests_are_served_too() {
    let (_srv, port) = server();
    let s = client(SocketAddr::from(([127, 0, 0, 1], port)));
    let set =
        repcached::protocol::binary::request(0x01, &[0, 0, 0, 5, 0, 0, 0, 0], b"bk", b"hi", 0, 77);
    let got = call(&s, 45, &set);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, [45, 0, 1, 0]);
    let r = &got[0].1;
    assert_eq!(
        (r[0], r[1], &r[6..8], &r[12..16]),
        (0x81, 0x01, &[0u8, 0][..], &77u32.to_be_bytes()[..])
    );
    let get = repcached::protocol::binary::request(0x00, &[], b"bk", &[], 0, 78);
    let got = call(&s, 46, &get);
    assert_eq!(got.len(), 1);
    let r = &got[0].1;
    assert_eq!((r[1], &r[6..8]), (0x00, &[0u8, 0][..]), "status 0");
    assert_eq!(&r[24..], b"\x00\x00\x00\x05hi", "flags then value");
}

#[test]
fn requests_that_do_not_fit_one_datagram_are_dropped() {
    let (srv, port) = server();
    let s = client(SocketAddr::from(([127, 0, 0, 1], port)));
    // Part of a multi-datagram request: memcached drops it.
    s.send(&frame(1, 0, 2, b"set a 0 0 1\r\nx\r\n")).unwrap();
    assert!(datagrams(&s, Duration::from_millis(500)).is_empty());
    // A header alone.
    s.send(&frame(2, 0, 1, b"")).unwrap();
    assert!(datagrams(&s, Duration::from_millis(300)).is_empty());
    // A request cut off by the end of its datagram is not completed by the next one.
    s.send(&frame(3, 0, 1, b"set b 0 0 5\r\nab")).unwrap();
    assert!(datagrams(&s, Duration::from_millis(300)).is_empty());
    assert_one(&call(&s, 4, b"get b\r\n"), 4, b"END\r\n");
    // A too-large set is refused; its data cannot follow in a later datagram.
    assert_one(
        &call(&s, 5, b"set c 0 0 2000000\r\nxx\r\n"),
        5,
        b"SERVER_ERROR object too large for cache\r\n",
    );
    assert_one(
        &call(&s, 6, b"version\r\n"),
        6,
        format!("VERSION {}\r\n", repcached::server::VERSION).as_bytes(),
    );
    // Sequence number and reserved field of a request are not looked at, as in memcached.
    s.send(&[
        0, 9, 0, 5, 0, 1, 1, 1, b'g', b'e', b't', b' ', b'b', b'\r', b'\n',
    ])
    .unwrap();
    assert_one(&datagrams(&s, Duration::from_secs(3)), 9, b"END\r\n");
    let mut c = srv.client();
    c.expect(b"get a b c\r\n", b"END\r\n");
}

#[test]
fn stats_show_the_udp_port_and_receivers() {
    let (srv, port) = server();
    let s = client(SocketAddr::from(([127, 0, 0, 1], port)));
    assert_one(
        &call(&s, 1, b"version\r\n"),
        1,
        format!("VERSION {}\r\n", repcached::server::VERSION).as_bytes(),
    );
    let mut c = srv.client();
    assert_eq!(c.stat_group("settings", "udpport"), port.to_string());
    let conns = String::from_utf8(c.call_until(b"stats conns\r\n", b"END\r\n")).unwrap();
    assert!(
        conns.contains(&format!(":addr udp:127.0.0.1:{port}\r\n")),
        "{conns}"
    );
    assert!(conns.contains(":UDP UDP\r\n"), "{conns}");
    assert!(conns.contains(":state conn_listening\r\n"), "{conns}");
    // The datagram (header included) is counted, as memcached counts it.
    let read: u64 = c.stat("bytes_read").parse().unwrap();
    assert!(read >= 8 + 9, "{read}");
}

#[test]
fn udp_listens_only_where_dash_l_says() {
    let (_srv, port) = server();
    // Bound to 127.0.0.1 only: another loopback address gets nothing.
    let s = client(SocketAddr::from(([127, 0, 0, 2], port)));
    let _ = s.send(&frame(1, 0, 1, b"version\r\n"));
    assert!(datagrams(&s, Duration::from_millis(500)).is_empty());
}

#[test]
fn udp_is_off_by_default() {
    let srv = Proc::start(&[]);
    let mut c = srv.client();
    assert_eq!(c.stat_group("settings", "udpport"), "0");
    let s = client(srv.addr());
    let _ = s.send(&frame(1, 0, 1, b"version\r\n"));
    assert!(datagrams(&s, Duration::from_millis(500)).is_empty());
}

#[test]
fn a_udp_port_alone_is_the_tcp_port_too() {
    // As in memcached: -U without -p serves TCP on the same port number.
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["-u", "root", "-l", "127.0.0.1", "-U", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn repcached");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ready = wait_ready(addr, Duration::from_secs(10));
    let replies = ready.then(|| call(&client(addr), 3, b"version\r\n"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "no TCP listener on the -U port");
    assert_one(
        &replies.unwrap(),
        3,
        format!("VERSION {}\r\n", repcached::server::VERSION).as_bytes(),
    );
}

/// Requests sharing a datagram, against the real memcached: `quit` ends the datagram,
/// answered by a bare frame header (total 0) when it is its first answer; `watch` and `lru_crawler metadump` hand
/// its socket to a stream that never reaches the client, so nothing comes back for them
/// or the rest of their datagram. Each case has a socket of its own, so a late answer
/// cannot be read as the next case's.
///
/// memcached answers the rest of a metadump's datagram once its crawler finishes, which
/// may take seconds under load (it did in CI), so that case is checked on this server
/// alone: nothing comes back.
#[test]
fn datagrams_end_where_memcached_ends_them() {
    let mc_udp = free_udp_port();
    let mc_tcp = free_port();
    let mut mc = Command::new("memcached")
        .args(["-u", "root", "-l", "127.0.0.1"])
        .args(["-p", &mc_tcp.to_string(), "-U", &mc_udp.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("memcached must be installed (the README's test command installs it)");
    assert!(wait_ready(
        SocketAddr::from(([127, 0, 0, 1], mc_tcp)),
        Duration::from_secs(10)
    ));
    let (_ours, udp) = server();
    let cases: [&[u8]; 9] = [
        b"quit\r\nset k 0 0 1\r\nx\r\n",
        b"set y 0 0 1 noreply\r\nz\r\nquit\r\n",
        // Not after a text get or `mn`: memcached writes out there, and whether its
        // `quit` then sends a bare header depends on how its threads race.
        b"touch k 1\r\nquit\r\n",
        b"set k 0 0 1\r\nx\r\nquit\r\n",
        b"set k 0 0 1\r\nx\r\nmg k v\r\nquit\r\ntouch k 1\r\n",
        b"touch k 1\r\nmg k v\r\nquit\r\n",
        b"watch\r\ntouch k 1\r\n",
        b"touch k 1\r\nwatch\r\ntouch k 1\r\n",
        b"mg k v\r\nmg y v\r\n",
    ];
    let mut got = Vec::new();
    for port in [mc_udp, udp] {
        let replies: Vec<_> = cases
            .iter()
            .enumerate()
            .map(|(id, case)| {
                let s = client(SocketAddr::from(([127, 0, 0, 1], port)));
                s.send(&frame(id as u16, 0, 1, case)).unwrap();
                datagrams(&s, Duration::from_millis(500))
            })
            .collect();
        got.push(replies);
    }
    let _ = mc.kill();
    let _ = mc.wait();
    for (i, case) in cases.iter().enumerate() {
        assert_eq!(
            got[1][i],
            got[0][i],
            "after {:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(got[1][0], vec![([0, 0, 0, 0], Vec::new())]);
    assert_eq!(got[1][8].len(), 2, "{:?}", got[1][8]);
    let s = client(SocketAddr::from(([127, 0, 0, 1], udp)));
    s.send(&frame(
        9,
        0,
        1,
        b"lru_crawler metadump all\r\ntouch k 1\r\n",
    ))
    .unwrap();
    assert_eq!(datagrams(&s, Duration::from_secs(2)), vec![]);
    // The server goes on serving the client afterwards.
    assert_one(&call(&s, 10, b"mn\r\n"), 10, b"MN\r\n");
}

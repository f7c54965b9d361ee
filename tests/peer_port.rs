//! What one connection to the replication port can cost a node: a client speaking the
//! replication protocol itself (with the crate's own frame encoding), against a real
//! node on 127.0.8.10, 127.0.8.12, 127.0.8.13 or 127.0.8.14 (127.0.8.11 is a peer that
//! never answers).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::free_port;
use common::node::{args, Node};
use repcached::replication::wire::{self, Frame, PROTOCOL_VERSION};
use repcached::store::{NodeId, Record, Version};

/// A replication connection that has passed the handshake (no secret), as node `id`.
struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    fn link(to: SocketAddr, id: u16) -> Peer {
        let stream = TcpStream::connect(to).expect("connect to the replication port");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut p = Peer {
            stream,
            buf: BytesMut::new(),
        };
        p.send(&Frame::Hello {
            version: PROTOCOL_VERSION,
            cluster: "repcached".into(),
            node: NodeId(id),
            run: 1,
            nonce: [7; 16],
        });
        assert!(matches!(p.next(), Frame::Hello { .. }));
        p.send(&Frame::Proof { mac: [0; 32] });
        assert!(matches!(p.next(), Frame::Proof { .. }));
        p.send(&Frame::Resume {
            run: 0,
            chain: 0,
            events: 0,
            shards: Vec::new(),
            listen: String::new(),
        });
        p.send(&Frame::Limits {
            item_size_max: 1 << 20,
        });
        p
    }

    fn send(&mut self, frame: &Frame) {
        let mut out = BytesMut::new();
        wire::encode(frame, &mut out);
        self.stream.write_all(&out).unwrap();
    }

    fn next(&mut self) -> Frame {
        loop {
            if let Some(f) = wire::decode(&mut self.buf).expect("a frame") {
                return f;
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("a frame from the node");
            assert!(n > 0, "the node closed the link");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn rss_mb(node: &Node) -> u64 {
    common::rss_kb(node.child.id()) / 1024
}

/// A peer asking for a 1 MB item thousands of times, and reading none of the answers,
/// once made the node queue a copy of the item per ask: gigabytes from 80 KB of asks.
/// The answers queued on a link are now bounded in bytes; the excess gets none.
#[test]
fn a_peer_asking_for_a_large_item_over_and_over_holds_a_bounded_copy() {
    let (ip, rport) = ([127, 0, 8, 10], free_port());
    let node = lone_node(ip, rport, std::process::Stdio::null());
    let mut c = node.client();
    let value = vec![b'x'; 1000 * 1000];
    let mut req = b"set big 0 0 1000000\r\n".to_vec();
    req.extend_from_slice(&value);
    req.extend_from_slice(b"\r\n");
    c.expect(&req, b"STORED\r\n");
    let before = rss_mb(&node);
    let mut peer = Peer::link(SocketAddr::from((ip, rport)), 100);
    // A small receive buffer, never read: the answers stay queued on the node.
    let sock = socket2::SockRef::from(&peer.stream);
    let _ = sock.set_recv_buffer_size(4096);
    for id in 0..2000 {
        peer.send(&Frame::Fetch {
            id,
            key: bytes::Bytes::from_static(b"big"),
        });
    }
    std::thread::sleep(Duration::from_millis(1500));
    let grown = rss_mb(&node).saturating_sub(before);
    assert!(grown < 100, "the node grew by {grown} MB");
    // Clients are served meanwhile.
    c.expect(b"mg big s\r\n", b"HD s1000000\r\n");
}

/// Once linked, a peer could announce frames of up to a GB whatever the node's `-I`, and
/// the node buffered what came (four links, four GB; a 256 MB frame of flushes held the
/// replication thread for seconds). A peer of this version keeps its frames within a
/// batch and the node's `-I`, so a longer one ends the link at its header, before any
/// of its bytes are held; items the node could not hold are not sent to it.
#[test]
fn a_frame_longer_than_the_node_takes_ends_the_link_at_its_header() {
    let (ip, rport) = ([127, 0, 8, 13], free_port());
    let node = lone_node(ip, rport, std::process::Stdio::null());
    let before = rss_mb(&node);
    let mut peer = Peer::link(SocketAddr::from((ip, rport)), 100);
    assert!(matches!(peer.next(), Frame::Resume { .. }));
    // The header of a 64 MB Changes frame (the node's -I is 1 MB), and a first chunk.
    let mut head = ((64u32 << 20) + 9).to_le_bytes().to_vec();
    head.push(6);
    head.extend_from_slice(&[0u8; 8192]);
    let _ = peer.stream.write_all(&head);
    let started = Instant::now();
    let mut sink = Vec::new();
    let _ = peer.stream.read_to_end(&mut sink);
    // Not waited on until the link's timeout (3 s) for the rest.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the link was held {:?}",
        started.elapsed()
    );
    assert!(rss_mb(&node) < before + 32);
    // A frame within it is taken: a change of a key arrives.
    let mut peer = Peer::link(SocketAddr::from((ip, rport)), 100);
    assert!(matches!(peer.next(), Frame::Resume { .. }));
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let version = Version {
        stamp: ms << 16,
        node: NodeId(100),
    };
    let records = vec![Record::live(b"k", b"v", 0, 0, version, None)];
    peer.send(&Frame::Changes { now: 0, records });
    let mut c = node.client();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = c.call_until(b"mg k v\r\nmn\r\n", b"MN\r\n");
        if reply == b"VA 1\r\nv\r\nMN\r\n" {
            break;
        }
        assert_eq!(reply, b"EN\r\nMN\r\n");
        assert!(Instant::now() < deadline, "the change did not arrive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn open_fds(node: &Node) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", node.child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A replicating node at `ip` whose one configured peer never answers, its log to `log`.
fn lone_node(ip: [u8; 4], rport: u16, log: std::process::Stdio) -> Node {
    let listen = format!("{}:{rport}", std::net::Ipv4Addr::from(ip));
    let absent = format!("127.0.8.11:{}", free_port());
    Node::start_logging(
        ip,
        free_port(),
        &args(&["--repl-listen", &listen, "--peer", &absent]),
        log,
    )
}

/// Connections to the replication port that never speak are held for the handshake's
/// timeout; a flood of them once took a node to its file limit. At most 128 are held at
/// once, the rest closed at once, and a peer links again once the flood ends.
#[test]
fn a_flood_of_silent_connections_to_the_replication_port_is_bounded() {
    let (ip, rport) = ([127, 0, 8, 12], free_port());
    let node = lone_node(ip, rport, std::process::Stdio::null());
    let before = open_fds(&node);
    let flood: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(SocketAddr::from((ip, rport))).ok())
        .collect();
    assert!(flood.len() > 300, "{} connected", flood.len());
    std::thread::sleep(Duration::from_millis(300));
    let held = open_fds(&node).saturating_sub(before);
    // 128 held, and what the node opens besides (it held all 400 before).
    assert!(held <= 200, "the node holds {held} more files");
    node.client().expect(b"mn\r\n", b"MN\r\n");
    drop(flood);
    std::thread::sleep(Duration::from_millis(300));
    let mut peer = Peer::link(SocketAddr::from((ip, rport)), 100);
    assert!(matches!(peer.next(), Frame::Resume { .. }));
}

/// Each connection naming another cluster was refused with an error line of its own,
/// echoing the name: 2,000 connections wrote 2 MB of log. Now a reason changing logs again
/// at most once a second per address, cut short.
#[test]
fn connections_giving_ever_new_reasons_do_not_fill_the_log() {
    let dir = common::TempDir::new("peer-port-log");
    let path = dir.0.join("log");
    let log = std::fs::File::create(&path).unwrap();
    let (ip, rport) = ([127, 0, 8, 14], free_port());
    let node = lone_node(ip, rport, log.into());
    for i in 0..200 {
        let Ok(mut s) = TcpStream::connect(SocketAddr::from((ip, rport))) else {
            continue;
        };
        let mut out = BytesMut::new();
        wire::encode(
            &Frame::Hello {
                version: PROTOCOL_VERSION,
                cluster: format!("cluster-{i}-{}", "x".repeat(900)),
                node: NodeId(100),
                run: 1,
                nonce: [7; 16],
            },
            &mut out,
        );
        let _ = s.write_all(&out);
        let mut sink = Vec::new();
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.read_to_end(&mut sink);
    }
    node.client().expect(b"mn\r\n", b"MN\r\n");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines = text.lines().filter(|l| l.contains("cluster-")).count();
    assert!(
        lines <= 5,
        "{lines} lines: {}",
        &text[..text.len().min(2000)]
    );
    assert!(
        text.lines().all(|l| l.len() < 600),
        "a line is not cut short"
    );
}

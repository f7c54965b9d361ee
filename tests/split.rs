//! Properties over a real socket: a request stream split at any points gets the same replies
//! as the stream sent whole, and arbitrary bytes never take the server down.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Client, InProc};
use proptest::prelude::*;
use regex::bytes::Regex;

fn command() -> impl Strategy<Value = Vec<u8>> {
    let key = "[a-c]{1,2}";
    prop_oneof![
        (key, "[a-z0-9]{0,12}")
            .prop_map(|(k, v)| format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()).into_bytes()),
        (key, "[0-9]{1,3}")
            .prop_map(|(k, v)| format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()).into_bytes()),
        (key, key).prop_map(|(a, b)| format!("get {a} {b}\r\n").into_bytes()),
        key.prop_map(|k| format!("gets {k}\r\n").into_bytes()),
        key.prop_map(|k| format!("incr {k} 7\r\n").into_bytes()),
        key.prop_map(|k| format!("delete {k}\r\n").into_bytes()),
        key.prop_map(|k| format!("append {k} 0 0 2\r\nzz\r\n").into_bytes()),
        key.prop_map(|k| format!("mg {k} v c t\r\n").into_bytes()),
        key.prop_map(|k| format!("ms {k} 3 T0 c\r\nabc\r\n").into_bytes()),
        key.prop_map(|k| format!("ma {k} N0 J5 v\r\n").into_bytes()),
        key.prop_map(|k| format!("md {k} q\r\n").into_bytes()),
        Just(b"bogus\r\n".to_vec()),
        Just(b"set a 0 0 1\r\nxyz\r\n".to_vec()),
        Just(b"set a 0 0 2000000\r\n".to_vec()),
        "[ -~]{0,30}".prop_map(|s| format!("{s}\r\n").into_bytes()),
    ]
}

fn normalize(b: &[u8]) -> Vec<u8> {
    let v = Regex::new(r"(VALUE \S+ \d+ \d+) \d+")
        .unwrap()
        .replace_all(b, &b"$1 CAS"[..])
        .into_owned();
    Regex::new(r" c\d+")
        .unwrap()
        .replace_all(&v, &b" cCAS"[..])
        .into_owned()
}

/// `stream` cut at the given points.
fn split_at<'a>(stream: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len())).collect();
    points.sort_unstable();
    points.dedup();
    let mut parts = Vec::new();
    let mut last = 0;
    for p in points {
        parts.push(&stream[last..p]);
        last = p;
    }
    parts.push(&stream[last..]);
    parts
}

/// Writes each part with a pause between them, so the server sees them separately.
fn send_parts(c: &mut Client, parts: &[&[u8]]) {
    for p in parts {
        c.stream.write_all(p).unwrap();
        if parts.len() > 1 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

/// Sends `parts` with a pause between them, then `mn`, and reads to the `MN` sentinel.
fn replies(c: &mut Client, parts: &[&[u8]]) -> Vec<u8> {
    send_parts(c, parts);
    c.stream.write_all(b"mn\r\n").unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !out.ends_with(b"MN\r\n") {
        assert!(
            Instant::now() < deadline,
            "no sentinel; got {:?}",
            String::from_utf8_lossy(&out)
        );
        match c.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn split_streams_get_the_same_replies(
        cmds in proptest::collection::vec(command(), 1..25),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        // A refused 2 MB item would swallow the sentinel; give it its data.
        let mut stream = Vec::new();
        for c in &cmds {
            stream.extend_from_slice(c);
            if c.ends_with(b" 2000000\r\n") {
                stream.extend(std::iter::repeat_n(b'x', 2_000_000));
                stream.extend_from_slice(b"\r\n");
            }
        }
        let whole_server = InProc::default();
        let split_server = InProc::default();
        let whole = replies(&mut whole_server.client(), &[&stream]);
        let parts = split_at(&stream, &cuts);
        let split = replies(&mut split_server.client(), &parts);
        prop_assert_eq!(normalize(&whole), normalize(&split));
    }
}

#[test]
fn garbage_never_takes_the_server_down() {
    let s = InProc::default();
    let mut rng_state = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for _ in 0..50 {
        let mut c = s.client();
        let len = (next() % 5000) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = c.stream.write_all(&bytes);
        let _ = c.stream.write_all(b"\r\n");
    }
    let mut c = s.client();
    c.expect(
        b"set ok 0 0 2\r\nok\r\nget ok\r\n",
        b"STORED\r\nVALUE ok 0 2\r\nok\r\nEND\r\n",
    );
}

mod binary {
    use super::*;
    use repcached::protocol::binary::{op, HEADER_LEN};

    fn packet(opcode: u8, extras: &[u8], key: &[u8], value: &[u8], opaque: u32) -> Vec<u8> {
        repcached::protocol::binary::request(opcode, extras, key, value, 0, opaque)
    }

    fn command() -> impl Strategy<Value = Vec<u8>> {
        let key = proptest::sample::select(vec![&b"a"[..], b"b", b"cc"]);
        prop_oneof![
            (key.clone(), "[a-z0-9]{0,10}").prop_map(|(k, v)| packet(
                op::SET,
                &[0; 8],
                k,
                v.as_bytes(),
                1
            )),
            (key.clone(), "[a-z0-9]{0,10}").prop_map(|(k, v)| packet(
                op::SETQ,
                &[0; 8],
                k,
                v.as_bytes(),
                2
            )),
            key.clone().prop_map(|k| packet(op::GET, &[], k, &[], 3)),
            key.clone().prop_map(|k| packet(op::GETKQ, &[], k, &[], 4)),
            key.clone()
                .prop_map(|k| packet(op::DELETEQ, &[], k, &[], 5)),
            key.clone()
                .prop_map(|k| packet(op::APPEND, &[], k, b"zz", 6)),
            key.prop_map(|k| packet(
                op::INCREMENT,
                &[[0u8; 7].as_slice(), &[1], &[0; 8], &[0; 4]].concat(),
                k,
                &[],
                7
            )),
            Just(packet(op::NOOP, &[], &[], &[], 8)),
            Just(packet(op::VERSION, &[], &[], &[], 9)),
        ]
    }

    /// Reads responses up to the final NOOP (opaque 0xffff), with CAS fields zeroed.
    fn replies(c: &mut Client, parts: &[&[u8]]) -> Vec<u8> {
        send_parts(c, parts);
        c.stream
            .write_all(&packet(op::NOOP, &[], &[], &[], 0xffff))
            .unwrap();
        let mut out = Vec::new();
        loop {
            let mut h = c.read_n(HEADER_LEN);
            let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
            let done = h[1] == op::NOOP && h[12..16] == 0xffffu32.to_be_bytes();
            h[16..24].fill(0);
            out.extend_from_slice(&h);
            out.extend_from_slice(&c.read_n(body));
            if done {
                return out;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn split_binary_streams_get_the_same_replies(
            cmds in proptest::collection::vec(command(), 1..25),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let stream = cmds.concat();
            let whole_server = InProc::default();
            let split_server = InProc::default();
            let whole = replies(&mut whole_server.client(), &[&stream]);
            let parts = split_at(&stream, &cuts);
            let split = replies(&mut split_server.client(), &parts);
            prop_assert_eq!(whole, split);
        }
    }
}

#[test]
fn binary_garbage_never_takes_the_server_down() {
    let s = InProc::default();
    let mut state = 0x0bad_5eed_1234_5678u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..100 {
        let mut c = s.client();
        let len = 24 + (next() % 400) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        bytes[0] = 0x80;
        // Half the time, a plausible opcode.
        if next() % 2 == 0 {
            bytes[1] = (next() % 0x25) as u8;
        }
        let _ = c.stream.write_all(&bytes);
    }
    let mut c = s.client();
    c.expect(
        b"set ok 0 0 2\r\nok\r\nget ok\r\n",
        b"STORED\r\nVALUE ok 0 2\r\nok\r\nEND\r\n",
    );
}

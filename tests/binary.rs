//! Binary protocol over real sockets: every opcode, quiet pipelines, malformed headers, and
//! both authentication modes (SASL PLAIN with -S, ascii with -Y).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Client, InProc, Proc, TempDir};
use repcached::config::Config;
use repcached::protocol::binary::{op, status, HEADER_LEN, RESPONSE};

/// A decoded response packet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resp {
    opcode: u8,
    status: u16,
    opaque: u32,
    cas: u64,
    extras: Vec<u8>,
    key: Vec<u8>,
    value: Vec<u8>,
}

use repcached::protocol::binary::request as packet;

fn set_extras(flags: u32, exptime: u32) -> Vec<u8> {
    let mut e = flags.to_be_bytes().to_vec();
    e.extend_from_slice(&exptime.to_be_bytes());
    e
}

fn arith_extras(delta: u64, initial: u64, exptime: u32) -> Vec<u8> {
    let mut e = delta.to_be_bytes().to_vec();
    e.extend_from_slice(&initial.to_be_bytes());
    e.extend_from_slice(&exptime.to_be_bytes());
    e
}

fn read_resp(c: &mut Client) -> Resp {
    let h = c.read_n(HEADER_LEN);
    assert_eq!(h[0], RESPONSE, "magic");
    let key_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    let ext_len = h[4] as usize;
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let b = c.read_n(body);
    Resp {
        opcode: h[1],
        status: u16::from_be_bytes([h[6], h[7]]),
        opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
        cas: u64::from_be_bytes(h[16..24].try_into().unwrap()),
        extras: b[..ext_len].to_vec(),
        key: b[ext_len..ext_len + key_len].to_vec(),
        value: b[ext_len + key_len..].to_vec(),
    }
}

fn call(c: &mut Client, req: &[u8]) -> Resp {
    c.send(req);
    read_resp(c)
}

fn set(c: &mut Client, key: &[u8], value: &[u8], flags: u32) -> Resp {
    call(c, &packet(op::SET, &set_extras(flags, 0), key, value, 0, 1))
}

#[test]
fn get_set_family() {
    let s = InProc::default();
    let mut c = s.client();
    let r = call(&mut c, &packet(op::GET, &[], b"a", &[], 0, 7));
    assert_eq!(
        (r.status, r.opaque, r.value.as_slice()),
        (status::KEY_ENOENT, 7, &b"Not found"[..])
    );
    let r = call(&mut c, &packet(op::GETK, &[], b"a", &[], 0, 8));
    assert_eq!(
        (r.status, r.key.as_slice(), r.value.as_slice()),
        (status::KEY_ENOENT, &b"a"[..], &b""[..])
    );
    let r = set(&mut c, b"a", b"hello", 0xcafe);
    assert_eq!(r.status, status::OK);
    assert!(r.cas > 0);
    let cas = r.cas;
    let r = call(&mut c, &packet(op::GET, &[], b"a", &[], 0, 9));
    assert_eq!(
        (r.status, r.cas, r.value.as_slice()),
        (status::OK, cas, &b"hello"[..])
    );
    assert_eq!(r.extras, 0xcafeu32.to_be_bytes());
    assert!(r.key.is_empty());
    let r = call(&mut c, &packet(op::GETK, &[], b"a", &[], 0, 9));
    assert_eq!(
        (r.key.as_slice(), r.value.as_slice()),
        (&b"a"[..], &b"hello"[..])
    );
    // add on an existing key, replace on a missing one.
    let r = call(
        &mut c,
        &packet(op::ADD, &set_extras(0, 0), b"a", b"x", 0, 1),
    );
    assert_eq!(
        (r.status, r.value.as_slice()),
        (status::KEY_EEXISTS, &b"Data exists for key."[..])
    );
    let r = call(
        &mut c,
        &packet(op::REPLACE, &set_extras(0, 0), b"zz", b"x", 0, 1),
    );
    assert_eq!(r.status, status::KEY_ENOENT);
    // CAS on set.
    let r = call(
        &mut c,
        &packet(op::SET, &set_extras(0, 0), b"a", b"x", cas + 1, 1),
    );
    assert_eq!(r.status, status::KEY_EEXISTS);
    let r = call(
        &mut c,
        &packet(op::SET, &set_extras(0, 0), b"a", b"x", cas, 1),
    );
    assert_eq!(r.status, status::OK);
    let r = call(
        &mut c,
        &packet(op::SET, &set_extras(0, 0), b"nokey", b"x", 5, 1),
    );
    assert_eq!(r.status, status::KEY_ENOENT);
    // append / prepend.
    assert_eq!(
        call(&mut c, &packet(op::APPEND, &[], b"a", b"yz", 0, 1)).status,
        status::OK
    );
    assert_eq!(
        call(&mut c, &packet(op::PREPEND, &[], b"a", b"w", 0, 1)).status,
        status::OK
    );
    assert_eq!(
        call(&mut c, &packet(op::GET, &[], b"a", &[], 0, 1)).value,
        b"wxyz"
    );
    let r = call(&mut c, &packet(op::APPEND, &[], b"nokey", b"yz", 0, 1));
    assert_eq!(
        (r.status, r.value.as_slice()),
        (status::NOT_STORED, &b"Not stored."[..])
    );
}

#[test]
fn delete_incr_touch_gat() {
    let s = InProc::default();
    let mut c = s.client();
    set(&mut c, b"a", b"1", 0);
    let r = call(&mut c, &packet(op::DELETE, &[], b"a", &[], 0, 1));
    assert_eq!(r.status, status::OK);
    assert_eq!(
        call(&mut c, &packet(op::DELETE, &[], b"a", &[], 0, 1)).status,
        status::KEY_ENOENT
    );
    // incr: miss without create, miss with create, hit, decr floors, non-numeric.
    let r = call(
        &mut c,
        &packet(
            op::INCREMENT,
            &arith_extras(1, 10, 0xffff_ffff),
            b"n",
            &[],
            0,
            1,
        ),
    );
    assert_eq!(r.status, status::KEY_ENOENT);
    let r = call(
        &mut c,
        &packet(op::INCREMENT, &arith_extras(1, 10, 0), b"n", &[], 0, 1),
    );
    assert_eq!(
        (r.status, r.value.as_slice()),
        (status::OK, &10u64.to_be_bytes()[..])
    );
    let r = call(
        &mut c,
        &packet(op::INCREMENT, &arith_extras(5, 0, 0), b"n", &[], 0, 1),
    );
    assert_eq!(r.value, 15u64.to_be_bytes());
    let r = call(
        &mut c,
        &packet(op::DECREMENT, &arith_extras(100, 0, 0), b"n", &[], 0, 1),
    );
    assert_eq!(r.value, 0u64.to_be_bytes());
    set(&mut c, b"s", b"abc", 0);
    let r = call(
        &mut c,
        &packet(op::INCREMENT, &arith_extras(1, 0, 0), b"s", &[], 0, 1),
    );
    assert_eq!(r.status, status::DELTA_BADVAL);
    // touch and gat.
    set(&mut c, b"t", b"v", 3);
    let r = call(
        &mut c,
        &packet(op::TOUCH, &100u32.to_be_bytes(), b"t", &[], 0, 1),
    );
    assert_eq!(
        (r.status, r.extras.as_slice(), r.value.as_slice()),
        (status::OK, &3u32.to_be_bytes()[..], &b""[..])
    );
    let r = call(
        &mut c,
        &packet(op::GAT, &100u32.to_be_bytes(), b"t", &[], 0, 1),
    );
    assert_eq!(
        (r.key.as_slice(), r.value.as_slice()),
        (&b""[..], &b"v"[..])
    );
    let r = call(
        &mut c,
        &packet(op::GATK, &100u32.to_be_bytes(), b"t", &[], 0, 1),
    );
    assert_eq!(
        (r.key.as_slice(), r.value.as_slice()),
        (&b"t"[..], &b"v"[..])
    );
    let r = call(
        &mut c,
        &packet(op::TOUCH, &100u32.to_be_bytes(), b"nokey", &[], 0, 1),
    );
    assert_eq!(r.status, status::KEY_ENOENT);
    // A negative-looking (huge) TTL via touch of 1 then time passing expires it.
    call(
        &mut c,
        &packet(op::TOUCH, &1u32.to_be_bytes(), b"t", &[], 0, 1),
    );
    s.clock.advance(2);
    assert_eq!(
        call(&mut c, &packet(op::GET, &[], b"t", &[], 0, 1)).status,
        status::KEY_ENOENT
    );
}

#[test]
fn admin_opcodes() {
    let s = InProc::default();
    let mut c = s.client();
    let r = call(&mut c, &packet(op::VERSION, &[], &[], &[], 0, 3));
    assert_eq!(r.value, repcached::server::VERSION.as_bytes());
    assert_eq!(
        call(&mut c, &packet(op::NOOP, &[], &[], &[], 0, 4)).status,
        status::OK
    );
    // Not a command to memcached 1.6.18, whose answers this server gives.
    assert_eq!(
        call(
            &mut c,
            &packet(op::VERBOSITY, &1u32.to_be_bytes(), &[], &[], 0, 4)
        )
        .status,
        status::UNKNOWN_COMMAND
    );
    set(&mut c, b"a", b"1", 0);
    assert_eq!(
        call(&mut c, &packet(op::FLUSH, &[], &[], &[], 0, 5)).status,
        status::OK
    );
    assert_eq!(
        call(&mut c, &packet(op::GET, &[], b"a", &[], 0, 1)).status,
        status::KEY_ENOENT
    );
    set(&mut c, b"a", b"1", 0);
    assert_eq!(
        call(
            &mut c,
            &packet(op::FLUSH, &10u32.to_be_bytes(), &[], &[], 0, 5)
        )
        .status,
        status::OK
    );
    assert_eq!(
        call(&mut c, &packet(op::GET, &[], b"a", &[], 0, 1)).status,
        status::OK
    );
    s.clock.advance(11);
    assert_eq!(
        call(&mut c, &packet(op::GET, &[], b"a", &[], 0, 1)).status,
        status::KEY_ENOENT
    );
    // stat: one packet per stat, then an empty one.
    c.send(&packet(op::STAT, &[], &[], &[], 0, 6));
    let mut names = Vec::new();
    loop {
        let r = read_resp(&mut c);
        assert_eq!((r.opcode, r.opaque, r.status), (op::STAT, 6, status::OK));
        if r.key.is_empty() {
            break;
        }
        names.push(String::from_utf8(r.key).unwrap());
    }
    assert!(names.iter().any(|n| n == "cmd_get") && names.iter().any(|n| n == "curr_items"));
    c.send(&packet(op::STAT, &[], b"settings", &[], 0, 6));
    let first = read_resp(&mut c);
    assert_eq!(first.key, b"maxbytes");
    while !read_resp(&mut c).key.is_empty() {}
    let r = call(&mut c, &packet(op::STAT, &[], b"bogus", &[], 0, 6));
    assert_eq!(r.status, status::KEY_ENOENT);
    // SASL without -S is an unknown command; so is an unknown opcode.
    assert_eq!(
        call(&mut c, &packet(op::SASL_LIST_MECHS, &[], &[], &[], 0, 1)).status,
        status::UNKNOWN_COMMAND
    );
    let r = call(&mut c, &packet(0x55, &[], &[], &[], 0, 1));
    assert_eq!(
        (r.status, r.value.as_slice()),
        (status::UNKNOWN_COMMAND, &b"Unknown command"[..])
    );
    // quit answers, then closes.
    let r = call(&mut c, &packet(op::QUIT, &[], &[], &[], 0, 9));
    assert_eq!((r.opcode, r.status), (op::QUIT, status::OK));
    assert!(c.is_closed());
    let mut c = s.client();
    c.send(&packet(op::QUITQ, &[], &[], &[], 0, 9));
    assert!(c.is_closed());
}

#[test]
fn quiet_commands_answer_only_what_matters_in_order() {
    let s = InProc::default();
    let mut c = s.client();
    let mut batch = Vec::new();
    batch.extend(packet(op::SETQ, &set_extras(0, 0), b"a", b"1", 0, 1));
    batch.extend(packet(op::SETQ, &set_extras(0, 0), b"b", b"2", 0, 2));
    batch.extend(packet(op::ADDQ, &set_extras(0, 0), b"a", b"x", 0, 3)); // fails: answered
    batch.extend(packet(op::GETQ, &[], b"a", &[], 0, 4)); // hit: answered
    batch.extend(packet(op::GETQ, &[], b"nokey", &[], 0, 5)); // miss: silent
    batch.extend(packet(op::GETKQ, &[], b"b", &[], 0, 6)); // hit with key
    batch.extend(packet(op::DELETEQ, &[], b"b", &[], 0, 7)); // silent
    batch.extend(packet(
        op::INCREMENTQ,
        &arith_extras(1, 0, 0),
        b"a",
        &[],
        0,
        8,
    )); // silent
    batch.extend(packet(op::APPENDQ, &[], b"a", b"z", 0, 9)); // silent
    batch.extend(packet(op::GATQ, &0u32.to_be_bytes(), b"nokey", &[], 0, 10)); // silent
    batch.extend(packet(op::REPLACEQ, &set_extras(0, 0), b"a", b"7", 0, 13)); // silent
    batch.extend(packet(
        op::DECREMENTQ,
        &arith_extras(2, 0, 0),
        b"a",
        &[],
        0,
        14,
    )); // silent
    batch.extend(packet(op::PREPENDQ, &[], b"a", b"1", 0, 15)); // silent
    batch.extend(packet(op::GETQ, &[], b"a", &[], 0, 16)); // hit: "15"
    batch.extend(packet(op::GATKQ, &0u32.to_be_bytes(), b"a", &[], 0, 17)); // hit with key
    batch.extend(packet(op::FLUSHQ, &[], &[], &[], 0, 11)); // silent
    batch.extend(packet(op::NOOP, &[], &[], &[], 0, 12));
    c.send(&batch);
    let got: Vec<Resp> = (0..6).map(|_| read_resp(&mut c)).collect();
    let summary: Vec<(u8, u32, u16)> = got.iter().map(|r| (r.opcode, r.opaque, r.status)).collect();
    assert_eq!(
        summary,
        vec![
            (op::ADDQ, 3, status::KEY_EEXISTS),
            (op::GETQ, 4, status::OK),
            (op::GETKQ, 6, status::OK),
            (op::GETQ, 16, status::OK),
            (op::GATKQ, 17, status::OK),
            (op::NOOP, 12, status::OK),
        ]
    );
    // "1", incr: "2", append: "2z", replace: "7", decr 2: "5", prepend "1": "15".
    assert_eq!(got[3].value, b"15");
    assert_eq!(
        (got[4].key.as_slice(), got[4].value.as_slice()),
        (&b"a"[..], &b"15"[..])
    );
    c.assert_quiet();
    assert_eq!(
        call(&mut c, &packet(op::GET, &[], b"a", &[], 0, 1)).status,
        status::KEY_ENOENT
    );
}

#[test]
fn malformed_headers() {
    let s = InProc::start({
        let mut c = Config::for_tests();
        c.store.item_size_max = 64 * 1024;
        c
    });
    // Bad magic on a binary connection: closed without a reply.
    let mut c = s.client();
    call(&mut c, &packet(op::NOOP, &[], &[], &[], 0, 1));
    let mut bad = packet(op::NOOP, &[], &[], &[], 0, 1);
    bad[0] = 0x82;
    c.send(&bad);
    assert!(c.is_closed());
    // Key longer than the body: unknown command, then close.
    let mut c = s.client();
    let mut p = packet(op::GET, &[], b"abc", &[], 0, 1);
    p[11] = 1; // body length 1 < key length 3
    let r = call(&mut c, &p);
    assert_eq!(r.status, status::UNKNOWN_COMMAND);
    assert!(c.is_closed());
    // Extras on a get: invalid arguments, then close.
    let mut c = s.client();
    let r = call(&mut c, &packet(op::GET, &[0; 4], b"a", &[], 0, 1));
    assert_eq!(
        (r.status, r.value.as_slice()),
        (status::EINVAL, &b"Invalid arguments"[..])
    );
    assert!(c.is_closed());
    // A body announced over 1 GB: invalid arguments, then close (it was refused as too
    // large, and the server waited to swallow 4 GB).
    let mut c = s.client();
    let mut p = packet(op::SET, &set_extras(0, 0), b"k", b"v", 0, 1);
    p[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    let r = call(&mut c, &p);
    assert_eq!(r.status, status::EINVAL);
    assert!(c.is_closed());
    // A value over -I: refused, swallowed, and the connection goes on.
    let mut c = s.client();
    set(&mut c, b"big", b"old", 0);
    let r = call(
        &mut c,
        &packet(
            op::SET,
            &set_extras(0, 0),
            b"big",
            &vec![b'x'; 100_000],
            0,
            1,
        ),
    );
    assert_eq!(
        (r.status, r.value.as_slice()),
        (status::E2BIG, &b"Too large."[..])
    );
    assert_eq!(
        call(&mut c, &packet(op::NOOP, &[], &[], &[], 0, 2)).opaque,
        2
    );
    // A header that arrives a byte at a time still works.
    let p = packet(op::GETK, &[], b"big", &[], 0, 3);
    for b in &p {
        c.send(&[*b]);
    }
    assert_eq!(read_resp(&mut c).opaque, 3);
}

fn sasl_server(dir: &TempDir) -> Proc {
    let pw = dir.0.join("sasl.pw");
    std::fs::write(&pw, "alice:secret\n").unwrap();
    let opt = format!("sasl_file={}", pw.display());
    Proc::start(&["-S", "-o", &opt])
}

#[test]
fn sasl_plain() {
    let dir = TempDir::new("sasl");
    let p = sasl_server(&dir);
    // No auth: refused and closed.
    let mut c = p.client();
    let r = call(&mut c, &packet(op::GET, &[], b"a", &[], 0, 1));
    assert_eq!(
        (r.status, r.value.as_slice()),
        (status::AUTH_ERROR, &b"Auth failure."[..])
    );
    assert!(c.is_closed());
    // A value over -I is refused for want of authentication too, before its size: the
    // header alone gets the answer, and the connection is closed.
    let mut c = p.client();
    let body_len: u32 = 8 + 3 + 2 * 1024 * 1024;
    let mut head = vec![0x80, op::SET, 0, 3, 8, 0, 0, 0];
    head.extend_from_slice(&body_len.to_be_bytes());
    head.extend_from_slice(&[0; 12]);
    head.extend_from_slice(&[0; 8]);
    head.extend_from_slice(b"big");
    c.send(&head);
    let r = read_resp(&mut c);
    assert_eq!(
        (r.status, r.value.as_slice()),
        (status::AUTH_ERROR, &b"Auth failure."[..])
    );
    assert!(c.is_closed());
    let mut c = p.client();
    assert_eq!(
        call(&mut c, &packet(op::VERSION, &[], &[], &[], 0, 1)).status,
        status::OK
    );
    let r = call(&mut c, &packet(op::SASL_LIST_MECHS, &[], &[], &[], 0, 1));
    assert_eq!(r.value, b"PLAIN");
    let r = call(
        &mut c,
        &packet(op::SASL_AUTH, &[], b"PLAIN", b"\0alice\0wrong", 0, 1),
    );
    assert_eq!(r.status, status::AUTH_ERROR);
    // A mechanism name past memcached's 32 bytes is refused as invalid, uncounted
    // (memcached's t/binary-sasl), and the connection goes on.
    let r = call(
        &mut c,
        &packet(op::SASL_AUTH, &[], &[b'X'; 33], b"\0alice\0secret", 0, 1),
    );
    assert_eq!(
        (r.status, r.value.as_slice()),
        (status::EINVAL, &b"Invalid arguments"[..])
    );
    // PLAIN has no second step.
    let r = call(
        &mut c,
        &packet(op::SASL_STEP, &[], b"PLAIN", b"\0alice\0secret", 0, 1),
    );
    assert_eq!(r.status, status::AUTH_ERROR);
    let r = call(
        &mut c,
        &packet(op::SASL_AUTH, &[], b"PLAIN", b"\0alice\0secret", 0, 1),
    );
    assert_eq!(
        (r.status, r.value.as_slice()),
        (status::OK, &b"Authenticated"[..])
    );
    assert_eq!(set(&mut c, b"a", b"1", 0).status, status::OK);
    c.send(&packet(op::STAT, &[], &[], &[], 0, 6));
    let mut auth = (0, 0);
    loop {
        let r = read_resp(&mut c);
        match r.key.as_slice() {
            b"" => break,
            b"auth_cmds" => auth.0 = String::from_utf8(r.value).unwrap().parse::<u32>().unwrap(),
            b"auth_errors" => auth.1 = String::from_utf8(r.value).unwrap().parse::<u32>().unwrap(),
            _ => {}
        }
    }
    assert_eq!(auth, (3, 2));
    // As in memcached, every SASL request but one refused for its mechanism's length starts
    // over: a failed attempt, or a list of mechanisms, drops the authentication.
    let again = |c: &mut Client| {
        let ok = packet(op::SASL_AUTH, &[], b"PLAIN", b"\0alice\0secret", 0, 1);
        assert_eq!(call(c, &ok).status, status::OK);
    };
    let long_mech = packet(op::SASL_AUTH, &[], &[b'X'; 33], b"\0alice\0secret", 0, 1);
    assert_eq!(call(&mut c, &long_mech).status, status::EINVAL);
    assert_eq!(set(&mut c, b"a", b"2", 0).status, status::OK);
    for reset in [
        packet(op::SASL_AUTH, &[], b"PLAIN", b"\0alice\0wrong", 0, 1),
        packet(op::SASL_STEP, &[], b"PLAIN", b"\0alice\0secret", 0, 1),
        packet(op::SASL_AUTH, &[], b"CRAM-MD5", b"x", 0, 1),
        packet(op::SASL_LIST_MECHS, &[], &[], &[], 0, 1),
    ] {
        let mut c = p.client();
        again(&mut c);
        call(&mut c, &reset);
        let r = call(&mut c, &packet(op::GET, &[], b"a", &[], 0, 1));
        assert_eq!(r.status, status::AUTH_ERROR);
        assert!(c.is_closed());
    }
    // With -S the text protocol is off, as in memcached.
    let mut t = p.client();
    t.send(b"get a\r\n");
    assert!(t.is_closed());
}

#[test]
fn auth_flag_errors() {
    let (code, _, err) = common::run_bin(&["-u", "root", "-S"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("sasl_file"), "{err}");
    let (code, _, err) = common::run_bin(&[
        "-u",
        "root",
        "-S",
        "-o",
        "sasl_file=/nonexistent",
        "-B",
        "ascii",
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("-B binary"), "{err}");
    let (code, _, err) = common::run_bin(&[
        "-u",
        "root",
        "-Y",
        "/nonexistent/auth",
        "-p",
        "0",
        "-l",
        "127.0.0.1",
    ]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("/nonexistent/auth") && err.contains("-Y"),
        "{err}"
    );
}

#[test]
fn ascii_auth() {
    let dir = TempDir::new("asciiauth");
    let pw = dir.0.join("auth.pw");
    std::fs::write(&pw, "bob:hunter2\n").unwrap();
    let p = Proc::start(&["-Y", pw.to_str().unwrap()]);
    let mut c = p.client();
    c.expect(b"get a\r\n", b"CLIENT_ERROR unauthenticated\r\n");
    c.expect(
        b"set auth 0 0 9\r\nbob wrong\r\n",
        b"CLIENT_ERROR authentication failure\r\n",
    );
    c.expect(b"set auth 0 0 11\r\nbob hunter2\r\n", b"STORED\r\n");
    c.expect(
        b"set a 0 0 1\r\nx\r\nget a\r\n",
        b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
    );
    assert_eq!(c.stat("auth_cmds"), "2");
    assert_eq!(c.stat("auth_errors"), "1");
    // Another connection starts unauthenticated.
    let mut d = p.client();
    d.expect(b"get a\r\n", b"CLIENT_ERROR unauthenticated\r\n");
    // With -Y the binary protocol is off, as in memcached: its bytes are read as text.
    let mut b = p.client();
    b.expect(
        &[&packet(op::VERSION, &[], &[], &[], 0, 1)[..], b"\r\n"].concat(),
        b"CLIENT_ERROR unauthenticated\r\n",
    );
}

#[test]
fn protocol_is_chosen_per_connection() {
    let s = InProc::default();
    // A text connection that later sends a 0x80 byte gets a text error, not binary.
    let mut c = s.client();
    c.expect(b"mn\r\n", b"MN\r\n");
    c.send(&[0x80]);
    c.send(b"\r\n");
    let mut b = [0u8; 7];
    c.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    c.stream.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ERROR\r\n");
    let _ = c.stream.flush();
}

#[test]
fn sasl_password_file_from_the_environment() {
    let dir = TempDir::new("saslenv");
    let pw = dir.0.join("pwdb");
    std::fs::write(&pw, "carol:pw\n").unwrap();
    let server = Proc::start_with(&["-S"], |cmd| {
        cmd.env("MEMCACHED_SASL_PWDB", &pw);
    });
    let mut c = server.client();
    let r = call(
        &mut c,
        &packet(op::SASL_AUTH, &[], b"PLAIN", b"\0carol\0pw", 0, 1),
    );
    assert_eq!(r.status, status::OK);
    assert_eq!(set(&mut c, b"k", b"v", 0).status, status::OK);
}

#[test]
fn refused_set_drops_the_old_value() {
    // As in memcached: a set (quiet or not, with a CAS or without) refused for its size
    // removes the key's old value, so a failed write never leaves stale data behind; the
    // other storage opcodes leave it. Every refusal is answered, quiet ones included.
    let s = Proc::start(&["-I", "1k"]);
    let mut c = s.client();
    let big = vec![b'x'; 2000];
    let e2big = {
        let mut r = vec![RESPONSE, 0, 0, 0, 0, 0, 0, 0x03, 0, 0, 0, 10];
        r.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0]);
        r.extend_from_slice(b"Too large.");
        r
    };
    let cases: [(u8, u64, bool); 8] = [
        (op::SET, 0, true),
        (op::SETQ, 0, true),
        (op::SET, 1, true),
        (op::ADD, 0, false),
        (op::REPLACE, 0, false),
        (op::APPEND, 0, false),
        (op::PREPEND, 0, false),
        (op::REPLACEQ, 0, false),
    ];
    for (opcode, cas, dropped) in cases {
        set(&mut c, b"k", b"old", 0);
        let extras = if matches!(opcode, op::APPEND | op::PREPEND) {
            Vec::new()
        } else {
            set_extras(0, 0)
        };
        // The reply names the opcode as sent, quiet or not.
        let mut want = e2big.clone();
        want[1] = opcode;
        c.expect(&packet(opcode, &extras, b"k", &big, cas, 7), &want);
        let r = call(&mut c, &packet(op::GET, &[], b"k", &[], 0, 1));
        let want = if dropped {
            (status::KEY_ENOENT, &b"Not found"[..])
        } else {
            (status::OK, &b"old"[..])
        };
        assert_eq!((r.status, r.value.as_slice()), want, "opcode {opcode:#x}");
    }
}

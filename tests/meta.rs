//! Meta command conformance (protocol.txt "Meta Commands"): exact bytes over a real socket.

mod common;

use common::{Client, InProc};

fn table(c: &mut Client, cases: &[(&str, &str)]) {
    for (req, want) in cases {
        c.expect(req.as_bytes(), want.as_bytes());
    }
}

/// The CAS of `key`, read with mg.
fn cas_of(c: &mut Client, key: &str) -> u64 {
    let out =
        String::from_utf8(c.call_until(format!("mg {key} c\r\n").as_bytes(), b"\r\n")).unwrap();
    out.trim_end()
        .strip_prefix("HD c")
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn meta_noop_and_debug() {
    let s = InProc::default();
    let mut c = s.client();
    table(
        &mut c,
        &[
            ("mn\r\n", "MN\r\n"),
            ("me nokey\r\n", "EN\r\n"),
            ("me\r\n", "CLIENT_ERROR bad command line format\r\n"),
            ("mz a\r\n", "ERROR\r\n"),
            ("set b 0 0 3\r\nabc\r\n", "STORED\r\n"),
        ],
    );
    let out = String::from_utf8(c.call_until(b"me b\r\n", b"\r\n")).unwrap();
    assert!(out.starts_with("ME b exp=-1 la=0 cas="), "{out}");
    assert!(out.contains(" fetch=no "), "{out}");
}

#[test]
fn meta_get() {
    let s = InProc::default();
    let mut c = s.client();
    table(
        &mut c,
        &[
            ("mg\r\n", "ERROR\r\n"),
            ("mg nokey\r\n", "EN\r\n"),
            ("mg nokey v\r\n", "EN\r\n"),
            ("mg nokey q\r\nmn\r\n", "MN\r\n"),
            ("mg nokey k O123\r\n", "EN knokey O123\r\n"),
            ("set a 3 0 2\r\nhi\r\n", "STORED\r\n"),
            ("mg a\r\n", "HD\r\n"),
            ("mg a v f s k Oabc\r\n", "VA 2 f3 s2 ka Oabc\r\nhi\r\n"),
            ("mg a t\r\n", "HD t-1\r\n"),
            ("mg a q v\r\n", "VA 2\r\nhi\r\n"),
            ("mg a v v\r\n", "CLIENT_ERROR duplicate flag\r\n"),
            ("mg a !\r\n", "CLIENT_ERROR invalid flag\r\n"),
            (
                "mg a Tx\r\n",
                "CLIENT_ERROR bad token in command line format\r\n",
            ),
            ("mg a T30 t\r\n", "HD t30\r\n"),
            (
                &format!("mg a O{}\r\n", "x".repeat(40)),
                "CLIENT_ERROR opaque token too long\r\n",
            ),
            (
                "mg a v v v v v v v v v v v v v v v v v v v v\r\n",
                "CLIENT_ERROR options flags are too long\r\n",
            ),
        ],
    );
    let cas = cas_of(&mut c, "a");
    assert!(cas > 0);
}

#[test]
fn meta_get_hit_and_last_access() {
    let s = InProc::default();
    let mut c = s.client();
    table(
        &mut c,
        &[
            ("set a 0 0 1\r\nx\r\n", "STORED\r\n"),
            ("mg a h l\r\n", "HD h0 l0\r\n"),
            ("mg a h\r\n", "HD h1\r\n"),
        ],
    );
    s.clock.advance(3);
    table(
        &mut c,
        &[
            ("mg a l u\r\n", "HD l3\r\n"),
            ("mg a l\r\n", "HD l3\r\n"),
            ("mg a l\r\n", "HD l0\r\n"),
        ],
    );
}

#[test]
fn meta_get_vivify_and_recache() {
    let s = InProc::default();
    let mut c = s.client();
    table(
        &mut c,
        &[
            ("mg newk v N30 t\r\n", "VA 0 t30 W\r\n\r\n"),
            ("mg newk v N30\r\n", "VA 0 Z\r\n\r\n"),
            ("set c 0 100 1\r\nx\r\n", "STORED\r\n"),
            ("mg c R30 v\r\n", "VA 1\r\nx\r\n"),
            ("mg c R200 v\r\n", "VA 1 W\r\nx\r\n"),
            ("mg c R200 v\r\n", "VA 1 Z\r\nx\r\n"),
            // md I marks stale: the next reader wins the recache, later ones see Z.
            ("md c I\r\n", "HD\r\n"),
            ("mg c v\r\n", "VA 1 X W\r\nx\r\n"),
            ("mg c v\r\n", "VA 1 Z X\r\nx\r\n"),
        ],
    );
}

#[test]
fn meta_set() {
    let s = InProc::default();
    let mut c = s.client();
    table(
        &mut c,
        &[
            ("ms a 2\r\nhi\r\n", "HD\r\n"),
            ("ms a 2 T0 F5 k\r\nhi\r\n", "HD ka\r\n"),
            ("mg a f v\r\n", "VA 2 f5\r\nhi\r\n"),
            ("ms a\r\n", "CLIENT_ERROR bad command line format\r\n"),
            (
                "ms a x\r\nhi\r\n",
                "CLIENT_ERROR bad command line format\r\nERROR\r\n",
            ),
            (
                "ms a 2 MX\r\nhi\r\n",
                "CLIENT_ERROR invalid mode for ms M token\r\n",
            ),
            (
                "ms a 2 MEE\r\nhi\r\n",
                "CLIENT_ERROR incorrect length for M token\r\n",
            ),
            ("ms a 2 ME\r\nhi\r\n", "NS\r\n"),
            ("ms a 2 q\r\nhi\r\nmn\r\n", "MN\r\n"),
            ("ms a 2 MA\r\nXY\r\n", "HD\r\n"),
            ("ms a 2 MP\r\n<<\r\n", "HD\r\n"),
            ("mg a v\r\n", "VA 6\r\n<<hiXY\r\n"),
            ("ms nokey 2 MA\r\nXY\r\n", "NS\r\n"),
            ("ms nokey 2 MR\r\nXY\r\n", "NS\r\n"),
            ("ms nokey 2 MA N30\r\nXY\r\n", "HD\r\n"),
            ("mg nokey v\r\n", "VA 2\r\nXY\r\n"),
            ("ms a 2 s\r\nab\r\n", "HD s2\r\n"),
            (
                "ms a 3\r\nabcd\r\n",
                "CLIENT_ERROR bad data chunk\r\nERROR\r\n",
            ),
        ],
    );
}

#[test]
fn meta_set_cas_and_invalidate() {
    let s = InProc::default();
    let mut c = s.client();
    c.expect(b"ms a 1\r\nx\r\n", b"HD\r\n");
    let cas = cas_of(&mut c, "a");
    c.expect(
        format!("ms a 1 C{}\r\ny\r\n", cas + 1).as_bytes(),
        b"EX\r\n",
    );
    c.expect(b"ms nokey 1 C5\r\ny\r\n", b"NF\r\n");
    let out =
        String::from_utf8(c.call_until(format!("ms a 1 C{cas} c\r\ny\r\n").as_bytes(), b"\r\n"))
            .unwrap();
    let new_cas: u64 = out
        .trim_end()
        .strip_prefix("HD c")
        .unwrap()
        .parse()
        .unwrap();
    assert!(new_cas > cas);
    // With I, an older CAS still stores, but the item is marked stale.
    c.expect(format!("ms a 1 I C{cas}\r\nz\r\n").as_bytes(), b"HD\r\n");
    c.expect(b"mg a v\r\n", b"VA 1 X W\r\nz\r\n");
    // E sets the CAS explicitly.
    c.expect(b"ms e 1 E12345\r\nx\r\n", b"HD\r\n");
    c.expect(b"mg e c\r\n", b"HD c12345\r\n");
    // ... unless that would move the key's version back, or far ahead of the clock: then
    // the write gets a fresh CAS instead, as if E were not given.
    c.expect(b"ms e 1 E100\r\nx\r\n", b"HD\r\n");
    let back = cas_of(&mut c, "e");
    assert!(back > 12345, "{back}");
    c.expect(b"ms e 1 E18446744073709551615\r\nx\r\n", b"HD\r\n");
    let top = cas_of(&mut c, "e");
    assert!(top > back && top < u64::MAX / 2, "{top}");
    c.expect(
        format!("ms e 1 E{}\r\nx\r\n", top + 10).as_bytes(),
        b"HD\r\n",
    );
    assert_eq!(cas_of(&mut c, "e"), top + 10);
}

#[test]
fn meta_delete() {
    let s = InProc::default();
    let mut c = s.client();
    table(
        &mut c,
        &[
            ("md a\r\n", "NF\r\n"),
            ("set a 0 0 1\r\nx\r\n", "STORED\r\n"),
            ("md a q\r\nmn\r\n", "MN\r\n"),
            ("md a q\r\n", "NF\r\n"),
            ("set a 0 0 1\r\nx\r\n", "STORED\r\n"),
            ("md a k Oxx\r\n", "HD ka Oxx\r\n"),
            ("md a zz\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n"),
            ("md a C1\r\n", "NF\r\n"),
            ("set a 0 0 1\r\nx\r\n", "STORED\r\n"),
            ("md a C1\r\n", "EX\r\n"),
            // memcached 1.6.18 has no x flag.
            ("md a x\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n"),
            ("mg a v s\r\n", "VA 1 s1\r\nx\r\n"),
        ],
    );
}

#[test]
fn meta_arithmetic() {
    let s = InProc::default();
    let mut c = s.client();
    table(
        &mut c,
        &[
            ("set a 0 0 1\r\n5\r\n", "STORED\r\n"),
            ("ma a\r\n", "HD\r\n"),
            ("ma a v\r\n", "VA 1\r\n7\r\n"),
            ("ma a MD D2 v\r\n", "VA 1\r\n5\r\n"),
            ("ma a M- D9 v\r\n", "VA 1\r\n0\r\n"),
            ("ma nokey\r\n", "NF\r\n"),
            ("ma nokey N0 J10 v\r\n", "VA 2\r\n10\r\n"),
            ("ma nokey v t\r\n", "VA 2 t-1\r\n11\r\n"),
            (
                "ma a MX\r\n",
                "CLIENT_ERROR invalid mode for ma M token\r\n",
            ),
            (
                "ma a Dabc\r\n",
                "CLIENT_ERROR invalid or duplicate flag\r\n",
            ),
            ("ma a q\r\nmn\r\n", "MN\r\n"),
            ("set s 0 0 3\r\nabc\r\n", "STORED\r\n"),
            (
                "ma s\r\n",
                "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            ),
            ("ma a C1\r\n", "EX\r\n"),
            ("ma a T30 t v\r\n", "VA 1 t30\r\n2\r\n"),
        ],
    );
}

#[test]
fn meta_base64_keys() {
    let s = InProc::default();
    let mut c = s.client();
    table(
        &mut c,
        &[
            // "YWJj" is "abc".
            ("ms YWJj 2 b k\r\nhi\r\n", "HD kYWJj b\r\n"),
            ("mg YWJj b k v\r\n", "VA 2 kYWJj b\r\nhi\r\n"),
            ("mg abc v\r\n", "VA 2\r\nhi\r\n"),
            ("mg !!! b\r\n", "CLIENT_ERROR error decoding key\r\n"),
            ("md YWJj b k\r\n", "HD kYWJj b\r\n"),
            ("mg abc v\r\n", "EN\r\n"),
        ],
    );
}

#[test]
fn meta_too_large_swallows_data() {
    let s = InProc::default();
    let mut c = s.client();
    c.expect(b"ms a 1\r\nx\r\n", b"HD\r\n");
    let mut req = b"ms a 2000000 T0\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'x', 2_000_000));
    req.extend_from_slice(b"\r\nmn\r\n");
    c.expect(&req, b"SERVER_ERROR object too large for cache\r\nMN\r\n");
    // The old value is gone, as in memcached.
    c.expect(b"mg a v\r\n", b"EN\r\n");
}

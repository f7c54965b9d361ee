//! Real clients against the real binary: libmemcached's `memccapable` (ascii and binary
//! suites), a pymemcache round trip, and PHP's Memcached extension over the binary protocol
//! (plain and with SASL). The README's test command installs them all; a missing client
//! fails the test instead of skipping it.

mod common;

use std::process::Command;

use common::Proc;

fn memccapable(mode: &str, min_tests: usize) {
    let p = Proc::start(&[]);
    let out = Command::new("memccapable")
        .args(["-h", "127.0.0.1", "-p", &p.port.to_string(), mode])
        .output()
        .expect("memccapable must be installed (libmemcached-tools)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("All tests passed"), "{text}");
    assert!(!text.contains("[fail]"), "{text}");
    let passed = text.matches("[pass]").count();
    assert!(passed >= min_tests, "only {passed} tests ran:\n{text}");
}

#[test]
fn memccapable_ascii_passes() {
    memccapable("-a", 27);
}

#[test]
fn memccapable_binary_passes() {
    memccapable("-b", 27);
}

#[test]
fn pymemcache_round_trip() {
    let p = Proc::start(&[]);
    let text = common::run_python_client("pymemcache_roundtrip.py", &[&p.port.to_string()]);
    assert!(text.contains("pymemcache round trip: ok"), "{text}");
}

fn php(port: u16, sasl: Option<(&str, &str)>) -> (bool, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/php_memcached.php"
    );
    let mut cmd = Command::new("php");
    if sasl.is_some() {
        cmd.args(["-d", "memcached.use_sasl=1"]);
    }
    cmd.arg(script).arg(port.to_string());
    if let Some((user, pass)) = sasl {
        cmd.args([user, pass]);
    }
    let out = cmd
        .output()
        .expect("php-cli with php-memcached must be installed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (
        out.status.success() && text.contains("php memcached round trip: ok"),
        text,
    )
}

#[test]
fn php_memcached_binary_protocol() {
    let p = Proc::start(&[]);
    let (ok, text) = php(p.port, None);
    assert!(ok, "{text}");
}

#[test]
fn php_memcached_with_sasl() {
    let dir = common::TempDir::new("phpsasl");
    let pw = dir.0.join("sasl.pw");
    std::fs::write(&pw, "alice:secret\n").unwrap();
    let opt = format!("sasl_file={}", pw.display());
    let p = Proc::start(&["-S", "-o", &opt]);
    let (ok, text) = php(p.port, Some(("alice", "secret")));
    assert!(ok, "{text}");
    let (ok, text) = php(p.port, Some(("alice", "wrong")));
    assert!(!ok, "a wrong password must fail: {text}");
    assert!(text.contains("FAIL"), "{text}");
}

/// memcached's own admin script (shipped with Debian's memcached): `keys` and `dump` walk the
/// cache with `lru_crawler metadump all`, then read every item back.
#[test]
fn memcached_tool_dumps_the_cache() {
    let p = Proc::start(&[]);
    let mut c = p.client();
    c.expect(b"set user:1 7 0 5\r\nalice\r\n", b"STORED\r\n");
    c.expect(b"set user:2 0 0 3\r\nbob\r\n", b"STORED\r\n");
    let tool = "/usr/share/memcached/scripts/memcached-tool";
    let run = |mode: &str| {
        let out = Command::new("perl")
            .args([tool, &format!("127.0.0.1:{}", p.port), mode])
            .output()
            .expect("perl and Debian's memcached (for memcached-tool) must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let keys = run("keys");
    assert_eq!(keys.lines().count(), 2, "{keys}");
    assert!(keys.contains("key=user%3A1 exp=-1 "), "{keys}");
    let dump = run("dump");
    assert!(dump.contains("add user:1 7 0 5\r\nalice\r\n"), "{dump}");
    assert!(dump.contains("add user:2 0 0 3\r\nbob\r\n"), "{dump}");
}

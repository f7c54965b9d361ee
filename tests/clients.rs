//! Real clients against the real binary: libmemcached's `memccapable` (ascii suite) and a
//! pymemcache round trip. The README's test command installs both; a missing client fails
//! the test instead of skipping it.

mod common;

use std::process::Command;

use common::Proc;

#[test]
fn memccapable_ascii_passes() {
    let p = Proc::start(&[]);
    let out = Command::new("memccapable")
        .args(["-h", "127.0.0.1", "-p", &p.port.to_string(), "-a"])
        .output()
        .expect("memccapable must be installed (libmemcached-tools)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("All tests passed"), "{text}");
    assert!(!text.contains("[fail]"), "{text}");
    let passed = text.matches("[pass]").count();
    assert!(passed >= 27, "only {passed} ascii tests ran:\n{text}");
}

#[test]
fn pymemcache_round_trip() {
    let p = Proc::start(&[]);
    let python = std::env::var("REPCACHED_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/pymemcache_roundtrip.py"
    );
    let out = Command::new(&python)
        .arg(script)
        .arg(p.port.to_string())
        .output()
        .expect("python3 with pymemcache must be installed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("pymemcache round trip: ok"), "{text}");
}

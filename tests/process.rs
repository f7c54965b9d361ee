//! The real binary as a process: flags, errors, signals, daemon mode, pid file, unix socket,
//! config file and the seed's repcached command line.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, run_bin, wait_ready, Client, Proc, TempDir, BIN};

fn one_line_error(args: &[&str]) -> String {
    let (code, _, err) = run_bin(args);
    assert!(
        matches!(code, Some(c) if c != 0),
        "{args:?} should fail, got {code:?}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected, got {err:?}"
    );
    err
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn help_and_version() {
    let (code, out, _) = run_bin(&["-h"]);
    assert_eq!(code, Some(0));
    for flag in ["-p", "-m", "-c", "-t", "-x", "-X", "--config"] {
        assert!(out.contains(flag), "usage lacks {flag}");
    }
    let (code, out, _) = run_bin(&["-V"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("repcached 1.6"), "{out}");
}

#[test]
fn bad_flags_fail_with_one_line() {
    let e = one_line_error(&["--bogus"]);
    assert!(e.contains("-h"), "{e}");
    let e = one_line_error(&["-p", "abc"]);
    assert!(e.contains("abc"), "{e}");
    let e = one_line_error(&["-u", "root", "-t", "0"]);
    assert!(e.contains("-t"), "{e}");
    let e = one_line_error(&["-u", "root", "-o", "no_such_option"]);
    assert!(e.contains("no_such_option"), "{e}");
    let e = one_line_error(&["-u", "root", "-D", "\u{e9}"]);
    assert!(e.contains("-D"), "{e}");
    // As in memcached, UDP cannot be combined with authentication.
    let e = one_line_error(&[
        "-u",
        "root",
        "-U",
        "11211",
        "-S",
        "-o",
        "sasl_file=/dev/null",
    ]);
    assert!(e.contains("-U") && e.contains("-S"), "{e}");
    let e = one_line_error(&["-u", "root", "-U", "11211", "-Y", "/dev/null"]);
    assert!(e.contains("-U") && e.contains("-Y"), "{e}");
    let e = one_line_error(&["-u", "root", "-m", "1", "-I", "1m"]);
    assert!(e.contains("-I"), "{e}");
    // Values memcached refuses too.
    for (flag, value) in [
        ("-R", "0"),
        ("-f", "1.0"),
        ("-f", "0.5"),
        ("-n", "0"),
        ("-N", "0"),
    ] {
        let e = one_line_error(&["-u", "root", flag, value]);
        assert!(e.contains(flag), "{flag} {value}: {e}");
    }
    let e = one_line_error(&["-u", "root", "-t", "2", "--napi-ids", "3"]);
    assert!(e.contains("-N 3") && e.contains("-t 2"), "{e}");
}

#[test]
fn napi_ids_are_accepted() {
    // memcached 1.6's -N: a drop-in must start with it (it has no effect here).
    let p = Proc::start(&["-N", "1"]);
    let mut c = p.client();
    c.expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
}

#[test]
fn busy_port_is_reported() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let e = one_line_error(&["-u", "root", "-l", "127.0.0.1", "-p", &port]);
    assert!(e.contains("already in use") && e.contains("-p"), "{e}");
}

#[test]
fn root_needs_a_user() {
    let port = free_port().to_string();
    if is_root() {
        let e = one_line_error(&["-l", "127.0.0.1", "-p", &port]);
        assert!(e.contains("-u"), "{e}");
    } else {
        // Not root: no -u needed, the server starts.
        let mut child = Command::new(BIN)
            .args(["-l", "127.0.0.1", "-p", &port])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ok = wait_ready(
            SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap())),
            Duration::from_secs(10),
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(ok);
    }
}

#[test]
fn sigterm_exits_cleanly() {
    let mut p = Proc::start(&[]);
    let mut c = p.client();
    c.expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    // Idle connections on every worker, one of them with half a request waiting.
    let mut idle: Vec<_> = (0..6).map(|_| p.client()).collect();
    idle[0].send(b"set b 0 0 5\r\nab");
    let start = Instant::now();
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    let st = wait_exit(&mut p.child, Duration::from_secs(10)).expect("exit after SIGTERM");
    assert!(st.success(), "{st:?}");
    // Waiting connections are closed at once, not after the workers' grace period.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(c.is_closed());
    for mut i in idle {
        assert!(i.is_closed());
    }
}

/// As memcached: SIGHUP is ignored (a reload script or a closed session must not empty
/// the cache), SIGUSR1 stops the server gracefully, with success.
#[test]
fn sighup_is_ignored_and_sigusr1_stops() {
    let mut p = Proc::start(&[]);
    let mut c = p.client();
    c.expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    // SAFETY: sending signals to our own child.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(200));
    c.expect(b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n");
    unsafe { libc::kill(p.child.id() as i32, libc::SIGUSR1) };
    let st = wait_exit(&mut p.child, Duration::from_secs(10)).expect("exit after SIGUSR1");
    assert!(st.success(), "{st:?}");
}

/// Starts with `args`, stores an item, and finds `warning` on stderr.
fn serves_and_warns(args: &[&str], warning: &str) {
    let mut p = Proc::start(args);
    p.client().expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    let err = stop_and_read_stderr(&mut p);
    assert!(err.contains(warning), "{err}");
}

/// As memcached: a pid file that cannot be written is reported and the server runs.
#[test]
fn an_unwritable_pid_file_is_reported_and_the_server_runs() {
    serves_and_warns(
        &["-P", "/nonexistent-folder/repcached.pid"],
        "cannot write pid file /nonexistent-folder/repcached.pid",
    );
}

/// As memcached: a flag given twice takes its last value (wrappers append overrides),
/// and `-D` turns per-prefix stats on from the start.
#[test]
fn repeated_flags_take_the_last_value_and_dash_d_collects_prefix_stats() {
    let p = Proc::start(&["-m", "10", "-m", "20", "-D", "#"]);
    let mut c = p.client();
    assert_eq!(
        c.stat_group("settings", "maxbytes"),
        (20u64 << 20).to_string()
    );
    assert_eq!(c.stat_group("settings", "detail_enabled"), "yes");
    c.expect(b"set p#1 0 0 1\r\nx\r\n", b"STORED\r\n");
    c.expect(b"get p#1\r\n", b"VALUE p#1 0 1\r\nx\r\nEND\r\n");
    c.expect(
        b"stats detail dump\r\n",
        b"PREFIX p get 1 hit 1 set 1 del 0\r\nEND\r\n",
    );
}

/// As memcached: a `-l` entry may name its own port, which it listens at instead of -p's.
#[test]
fn a_listen_address_may_name_its_own_port() {
    let (own, other) = (free_port(), free_port());
    let listen = format!("127.0.8.20:{own}");
    let mut child = Command::new(BIN)
        .args(["-u", "root", "-l", &listen, "-p", &other.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    assert!(
        wait_ready(addr, Duration::from_secs(10)),
        "nothing at {listen}"
    );
    Client::connect(addr).expect(b"mn\r\n", b"MN\r\n");
    let _ = child.kill();
    let _ = child.wait();
}

/// An absurd `-m` (memcached takes any) is capped with a warning; the store's shards for
/// it once took more memory than the machine had, and the start aborted.
#[test]
fn an_absurd_memory_limit_is_capped_with_a_warning() {
    serves_and_warns(
        &["-m", "99999999999"],
        "-m 99999999999: more than this server addresses",
    );
}

#[test]
fn shutdown_command_needs_dash_a() {
    let mut p = Proc::start(&["-A"]);
    let mut c = p.client();
    c.expect(
        b"shutdown foo\r\n",
        b"CLIENT_ERROR invalid shutdown mode\r\n",
    );
    c.send(b"shutdown\r\n");
    let st = wait_exit(&mut p.child, Duration::from_secs(10)).expect("exit after shutdown");
    assert!(st.success());
}

/// The pid a daemon wrote to `pidfile`, waiting up to 5 s for the file.
fn daemon_pid(pidfile: &std::path::Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pidfile.exists() {
        assert!(Instant::now() < deadline, "no pid file");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The seed's repcached line, with a loopback peer and our own port and pid file.
#[test]
fn seed_command_line_daemonizes() {
    let dir = TempDir::new("seed");
    let pidfile = dir.0.join("memcachedrep.pid");
    let port = free_port();
    let st = Command::new(BIN)
        .args(["-m", "128", "-p", &port.to_string(), "-u", "root", "-P"])
        .arg(&pidfile)
        .args(["-d", "-x", "127.0.0.9", "-l", "127.0.0.1"])
        // The replication port on a free one, not 11212, which another program may hold.
        .args(["-X", &free_port().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "the foreground process returns at once");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_ready(addr, Duration::from_secs(10)));
    let mut c = Client::connect(addr);
    c.expect(b"set foo 0 0 3\r\nbar\r\n", b"STORED\r\n");
    c.expect(b"get foo\r\n", b"VALUE foo 0 3\r\nbar\r\nEND\r\n");
    assert_eq!(c.stat("limit_maxbytes"), (128 * 1024 * 1024).to_string());
    let pid = daemon_pid(&pidfile);
    assert_eq!(c.stat("pid"), pid.to_string());
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(c.is_closed());
    let deadline = Instant::now() + Duration::from_secs(10);
    while pidfile.exists() {
        assert!(Instant::now() < deadline, "pid file not removed on exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `-d -v` on a free port with a replication peer that is not there, stdout piped
/// and stderr as given; returns the daemon's pid once the foreground process and every
/// copy of its output pipes have gone, or None if that took over 10 s (a daemon holding a
/// pipe keeps a caller such as `$(repcached -d ...)` waiting forever).
fn daemon_with_stderr(dir: &TempDir, stderr: Stdio) -> Option<i32> {
    let pidfile = dir.0.join("pid");
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["-p", &port.to_string(), "-u", "root", "-v", "-P"])
        .arg(&pidfile)
        .args(["-d", "-x", "127.0.0.9", "-l", "127.0.0.1"])
        .args(["-X", &free_port().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(cmd.output().map(|o| o.status.success())));
    let done = rx.recv_timeout(Duration::from_secs(10));
    assert!(wait_ready(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10)
    ));
    let pid = daemon_pid(&pidfile);
    match done {
        Ok(started) => {
            assert!(started.unwrap(), "the foreground process succeeds");
            Some(pid)
        }
        Err(_) => {
            // SAFETY: signalling the daemon this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            None
        }
    }
}

/// A daemon keeps logging where its stderr points when that is a file (an init script's
/// `2>>log`): replication's state changes are in that log. Stdout, and stderr when it is a
/// pipe, are let go even with `-v`, so a caller reading them is not kept waiting.
#[test]
fn a_daemon_logs_to_the_file_its_stderr_names_and_holds_no_pipe() {
    let dir = TempDir::new("daemon-log");
    let log = dir.0.join("cache.log");
    let file = std::fs::File::create(&log).unwrap();
    let pid = daemon_with_stderr(&dir, file.into()).expect("stdout was let go");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        // Both lines, in whichever order the listener and the first dial log them.
        let both = text.contains("peer 127.0.0.9") && text.contains("listening for peers");
        if both || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(text.contains("listening for peers"), "{text}");
    assert!(
        text.contains("peer 127.0.0.9"),
        "the dial's failure: {text}"
    );

    let dir = TempDir::new("daemon-pipe");
    let pid = daemon_with_stderr(&dir, Stdio::piped()).expect("stderr's pipe was let go");
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

#[test]
fn unix_socket() {
    use std::io::{Read, Write};
    let dir = TempDir::new("unix");
    let path = dir.0.join("repcached.sock");
    let mut child = Command::new(BIN)
        .args(["-u", "root", "-a", "0700", "-s"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(&path) {
            break s;
        }
        assert!(Instant::now() < deadline, "unix socket never came up");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    s.write_all(b"set a 0 0 1\r\nx\r\nget a\r\n").unwrap();
    let want = b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n";
    let mut got = vec![0; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, want);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn config_file_and_flag_override() {
    let dir = TempDir::new("toml");
    let file = dir.0.join("repcached.toml");
    let port = free_port();
    std::fs::write(
        &file,
        format!(
            "port = {port}\nlisten = \"127.0.0.1\"\nmemory-limit = 8\nconn-limit = 77\nthreads = 2\nuser = \"root\"\nextended = [\"idle_timeout=30\"]\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .args(["-m", "16"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_ready(addr, Duration::from_secs(10)));
    let mut c = Client::connect(addr);
    assert_eq!(c.stat("limit_maxbytes"), (16 * 1024 * 1024).to_string());
    assert_eq!(c.stat("max_connections"), "77");
    assert_eq!(c.stat("threads"), "2");
    assert_eq!(c.stat_group("settings", "idle_timeout"), "30");
    let _ = child.kill();
    let _ = child.wait();
    std::fs::write(&file, "bogus-key = 1\n").unwrap();
    let e = one_line_error(&["--config", file.to_str().unwrap()]);
    assert!(e.contains("bogus-key"), "{e}");
}

#[test]
fn accepted_memcached_options_start_with_warnings() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["-u", "root", "-l", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-o",
            "modern,tail_repair_time=0",
            "-k",
            "-f",
            "1.5",
            "-n",
            "64",
            "-R",
            "10",
            "-b",
            "128",
            "-B",
            "ascii",
            "-C",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_ready(addr, Duration::from_secs(10)));
    let mut c = Client::connect(addr);
    c.expect(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    // -C: CAS disabled, gets reports 0.
    c.expect(b"gets a\r\n", b"VALUE a 0 1 0\r\nx\r\nEND\r\n");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tail_repair_time"), "{err}");
}

/// Gives the server a moment to log what it just did, stops it, and returns its stderr.
fn stop_and_read_stderr(p: &mut Proc) -> String {
    std::thread::sleep(Duration::from_millis(200));
    let _ = p.child.kill();
    let mut err = String::new();
    p.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[test]
fn double_verbose_logs_each_request_and_reply_line() {
    let mut p = common::Proc::start(&["-vv"]);
    let mut c = p.client();
    c.expect(b"set greeting 0 0 5\r\nhello\r\n", b"STORED\r\n");
    c.expect(
        b"get greeting nope\r\n",
        b"VALUE greeting 0 5\r\nhello\r\nEND\r\n",
    );
    c.expect(b"bogus\r\n", b"ERROR\r\n");
    // Meta replies are logged only when they are errors, and mn's MN, as memcached does.
    c.expect(b"mg greeting v\r\n", b"VA 5\r\nhello\r\n");
    c.expect(b"mg nope v\r\n", b"EN\r\n");
    c.expect(b"mg greeting !\r\n", b"CLIENT_ERROR invalid flag\r\n");
    c.expect(b"mn\r\n", b"MN\r\n");
    // Turned off at run time, nothing more is logged.
    c.expect(b"verbosity 0\r\n", b"OK\r\n");
    c.expect(
        b"get greeting\r\n",
        b"VALUE greeting 0 5\r\nhello\r\nEND\r\n",
    );
    drop(c);
    let err = stop_and_read_stderr(&mut p);
    let fd = err
        .lines()
        .find_map(|l| l.strip_suffix(" set greeting 0 0 5"))
        .unwrap_or_else(|| panic!("no request line in {err:?}"))
        .trim_start_matches('<')
        .to_string();
    assert!(
        err.contains(&format!("<{fd} new auto-negotiating client connection")),
        "{err}"
    );
    // The start-up probe's connection came and went while logging was on.
    assert!(err.contains(" connection closed.\n"), "{err}");
    let want = [
        format!("<{fd} set greeting 0 0 5"),
        format!(">{fd} STORED"),
        format!("<{fd} get greeting nope"),
        format!(">{fd} sending key greeting"),
        format!(">{fd} END"),
        format!("<{fd} bogus"),
        format!(">{fd} ERROR"),
        format!("<{fd} mg greeting v"),
        format!("<{fd} mg nope v"),
        format!("<{fd} mg greeting !"),
        format!(">{fd} CLIENT_ERROR invalid flag"),
        format!("<{fd} mn"),
        format!(">{fd} MN"),
        format!("<{fd} verbosity 0"),
        format!(">{fd} OK"),
    ];
    let exchange: Vec<&str> = err
        .lines()
        .filter(|l| l[1..].starts_with(&format!("{fd} ")) && !l.contains("connection"))
        .collect();
    assert_eq!(
        exchange,
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        "{err}"
    );
    assert!(!err.contains("hello"), "values are never logged");
}

#[test]
fn double_verbose_logs_every_key_after_a_large_value() {
    use repcached::protocol::binary::{op, request};
    let mut p = common::Proc::start(&["-vv"]);
    let mut c = p.client();
    let big = vec![b'v'; 600_000];
    let mut set = b"set big 0 0 600000\r\n".to_vec();
    set.extend_from_slice(&big);
    set.extend_from_slice(b"\r\nset small 0 0 2\r\nhi\r\n");
    c.expect(&set, b"STORED\r\nSTORED\r\n");
    c.send(b"get big small\r\n");
    let mut want = b"VALUE big 0 600000\r\n".to_vec();
    want.extend_from_slice(&big);
    want.extend_from_slice(b"\r\nVALUE small 0 2\r\nhi\r\nEND\r\n");
    assert!(c.read_n(want.len()) == want, "text reply differs");
    drop(c);
    // Binary: two GETK hits, the first large.
    let mut b = p.client();
    b.send(
        &[
            request(op::GETK, &[], b"big", &[], 0, 0),
            request(op::GETK, &[], b"small", &[], 0, 0),
        ]
        .concat(),
    );
    b.read_n(24 + 4 + 3 + big.len() + 24 + 4 + 5 + 2);
    drop(b);
    let err = stop_and_read_stderr(&mut p);
    let fd = err
        .lines()
        .find_map(|l| l.strip_suffix(" get big small"))
        .unwrap_or_else(|| panic!("no request line in {err:?}"))
        .trim_start_matches('<')
        .to_string();
    let exchange: Vec<&str> = err
        .lines()
        .filter(|l| l[1..].starts_with(&format!("{fd} ")))
        .skip_while(|l| !l.ends_with(" get big small"))
        .take(4)
        .collect();
    let want = [
        format!("<{fd} get big small"),
        format!(">{fd} sending key big"),
        format!(">{fd} sending key small"),
        format!(">{fd} END"),
    ];
    assert_eq!(
        exchange,
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        "{err}"
    );
    // One response header dump per GETK.
    assert_eq!(err.matches("Writing bin response:").count(), 2, "{err}");
}

#[test]
fn double_verbose_dumps_binary_headers_as_memcached() {
    use repcached::protocol::binary::{op, request};
    let mut p = common::Proc::start(&["-vv"]);
    let mut c = p.client();
    c.send(&request(op::GET, &[], b"nope", &[], 0, 0));
    let miss = c.read_n(24 + "Not found".len());
    assert_eq!(miss[7], 1, "KEY_ENOENT");
    c.send(&request(op::SET, &[0; 8], b"k", b"v", 0, 0));
    assert_eq!(c.read_n(24)[7], 0);
    drop(c);
    let err = stop_and_read_stderr(&mut p);
    let fd = err
        .lines()
        .find_map(|l| l.strip_suffix(": Client using the binary protocol"))
        .unwrap_or_else(|| panic!("no protocol line in {err:?}"))
        .to_string();
    let lines: Vec<&str> = err.lines().collect();
    let at = |want: &str| {
        lines
            .iter()
            .position(|l| *l == want)
            .unwrap_or_else(|| panic!("{want:?} not in {err}"))
    };
    // The request header, four bytes a line: magic, opcode, key length 4.
    let read = at(&format!("<{fd} Read binary protocol data:"));
    assert_eq!(lines[read + 1], format!("<{fd}    0x80 0x00 0x00 0x04"));
    let get = at(&format!("<{fd} GET nope"));
    let error = at(&format!(">{fd} Writing an error: Not found"));
    let response = at(&format!(">{fd} Writing bin response:"));
    assert!(read < get && get < error && error < response, "{err}");
    assert_eq!(lines[response + 1], format!(">{fd}   0x81 0x00 0x00 0x00"));
    assert_eq!(lines[response + 2], format!(">{fd}   0x00 0x00 0x00 0x01"));
    at(&format!("<{fd} SET k Value len is 1"));
}

/// Starts the binary with `args` and MEMCACHED_PORT_FILENAME set, waits for the port file
/// and returns the child and the file's lines.
fn start_with_port_file(dir: &TempDir, args: &[&str]) -> (std::process::Child, Vec<String>) {
    let file = dir.0.join("ports");
    let _ = std::fs::remove_file(&file);
    let mut child = Command::new(BIN)
        .args(["-u", "root", "-l", "127.0.0.1"])
        .args(args)
        .env("MEMCACHED_PORT_FILENAME", &file)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !file.exists() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no port file written for {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&file).unwrap();
    (child, text.lines().map(str::to_string).collect())
}

fn port_of(lines: &[String], kind: &str) -> Option<u16> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{kind}: ")))
        .map(|p| p.parse().unwrap())
}

#[test]
fn minus_one_takes_free_ports_named_in_the_port_file() {
    let dir = TempDir::new("portfile");
    let (mut child, lines) = start_with_port_file(&dir, &["-p", "-1", "-U", "-1"]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let tcp = port_of(&lines, "TCP INET").expect("a TCP line");
    let udp = port_of(&lines, "UDP INET").expect("a UDP line");
    assert!(tcp != 0 && udp != 0, "{lines:?}");
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], tcp)));
    c.expect(b"set k 0 0 2\r\nhi\r\n", b"STORED\r\n");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(
        b"\x00\x07\x00\x00\x00\x01\x00\x00get k\r\n",
        ("127.0.0.1", udp),
    )
    .unwrap();
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..2], b"\x00\x07");
    assert_eq!(&buf[8..n], b"VALUE k 0 2\r\nhi\r\nEND\r\n");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn port_file_leaves_out_what_is_off() {
    let dir = TempDir::new("portoff");
    // -p 0: TCP off, and UDP off by default; the file is still written, empty.
    let (mut child, lines) = start_with_port_file(&dir, &["-p", "0"]);
    assert!(lines.is_empty(), "{lines:?}");
    let _ = child.kill();
    let _ = child.wait();
    // -U -1 alone: TCP takes a free port of its own too, as in memcached.
    let (mut child, lines) = start_with_port_file(&dir, &["-U", "-1"]);
    let tcp = port_of(&lines, "TCP INET").expect("a TCP line");
    let udp = port_of(&lines, "UDP INET").expect("a UDP line");
    assert!(tcp != 0 && udp != 0, "{lines:?}");
    assert!(wait_ready(
        SocketAddr::from(([127, 0, 0, 1], tcp)),
        Duration::from_secs(5)
    ));
    let _ = child.kill();
    let _ = child.wait();
    // An explicit port is named as given.
    let port = free_port();
    let (mut child, lines) = start_with_port_file(&dir, &["-p", &port.to_string()]);
    assert_eq!(lines, vec![format!("TCP INET: {port}")]);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn out_of_range_ports_are_refused() {
    let e = one_line_error(&["-p", "-2"]);
    assert!(e.contains("-p") && e.contains("-1"), "{e}");
    let e = one_line_error(&["-U", "70000"]);
    assert!(e.contains("-U"), "{e}");
}

/// Worker threads of the process `pid` (a thread's name is cut to 15 bytes).
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|n| n.starts_with("repcached-work"))
        })
        .count()
}

/// `-t` beyond the cores the process may use runs one worker per core (more would only take
/// turns on them), its affinity counted; `stats` still shows `threads` as asked, and every
/// connection is served.
#[test]
fn workers_are_at_most_one_per_core() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (asked, one_core, want) in [(1, false, 1), (cores + 3, false, cores), (4, true, 1)] {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["-u", "root", "-l", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", &asked.to_string()])
            .stderr(Stdio::null());
        if one_core {
            use std::os::unix::process::CommandExt;
            // SAFETY: only sched_setaffinity, async-signal-safe, runs in the forked child.
            unsafe {
                cmd.pre_exec(|| {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(0, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(wait_ready(addr, Duration::from_secs(10)));
        let mut clients: Vec<Client> = (0..asked * 2).map(|_| Client::connect(addr)).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            c.expect(
                format!("set k{i} 0 0 1\r\n{}\r\n", i % 10).as_bytes(),
                b"STORED\r\n",
            );
            c.expect(
                format!("get k{i}\r\n").as_bytes(),
                format!("VALUE k{i} 0 1\r\n{}\r\nEND\r\n", i % 10).as_bytes(),
            );
        }
        // Counted once connections were served (workers may start after the listener).
        let running = worker_threads(child.id());
        let threads = clients[0].stat("threads");
        let settings = clients[0].stat_group("settings", "num_threads");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            running, want,
            "-t {asked} on {cores} cores, one core: {one_core}"
        );
        assert_eq!(threads, asked.to_string());
        assert_eq!(settings, asked.to_string());
    }
}

/// As memcached: the open-file limit is raised to fit `-c`. Under a limit of 256 the
/// clients beyond it were accepted by nobody and waited without a reply.
#[test]
fn the_open_file_limit_is_raised_to_fit_the_connection_limit() {
    use std::os::unix::process::CommandExt;
    let server = Proc::start_with(&["-c", "2000"], |cmd| {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                // The soft limit only: raising a hard limit takes a capability that a
                // container may not grant even to root.
                lim.rlim_cur = 256;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            });
        }
    });
    let addr = server.addr();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the open-file limit");
    let (soft, hard): (u64, u64) = match line.split_whitespace().collect::<Vec<_>>()[..] {
        [_, _, _, soft, hard, ..] => (soft.parse().unwrap(), hard.parse().unwrap_or(u64::MAX)),
        _ => panic!("{line}"),
    };
    assert!(hard < 2064 || soft >= 2064, "{line}");
    assert!(soft > 700, "{line}");
    let mut conns: Vec<Client> = (0..600).map(|_| Client::connect(addr)).collect();
    for c in &mut conns {
        assert_eq!(c.call_until(b"mn\r\n", b"MN\r\n"), b"MN\r\n");
    }
}

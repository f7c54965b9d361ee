//! The seed's web site end to end (`examples/seed-site`): nginx, four php-fpm nodes and a
//! replicated repcached pair, driven through nginx by cookie-keeping users
//! (`tests/clients/seed_site.py`) while the test kills and restarts cache nodes and stops PHP
//! nodes. Nothing may fail and no session or draft may be lost.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, Client, TempDir};

const WEB: &str = "127.0.0.160:8080";
const CACHE_A: &str = "127.0.0.161";
const CACHE_B: &str = "127.0.0.162";
const NODES: &str = "127.0.0.163 127.0.0.164 127.0.0.165 127.0.0.166";

/// The site, on this test's addresses, with the release build of the server as a site
/// would run it (`site up` builds it when needed; the README's test command builds it
/// first); taken down on drop.
struct Site {
    dir: TempDir,
}

impl Site {
    fn up() -> Site {
        let site = Site {
            dir: TempDir::new("seed-site"),
        };
        site.run(&["up"]);
        site
    }

    /// Runs `examples/seed-site/site ARGS` and asserts it succeeded.
    fn run(&self, args: &[&str]) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed-site/site");
        let out = Command::new(script)
            .args(args)
            .env("SITE_DIR", &self.dir.0)
            .env("SITE_WEB", WEB)
            .env("SITE_CACHE_A", CACHE_A)
            .env("SITE_CACHE_B", CACHE_B)
            .env("SITE_NODES", NODES)
            .stdin(Stdio::null())
            .output()
            .expect("run examples/seed-site/site");
        assert!(
            out.status.success(),
            "site {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Does `action` to the site, then tells the driver `phase`: the answers it gets from
    /// then on are filed under it (those while the action runs, under "before-PHASE").
    fn step(&self, action: &[&str], phase: &str) {
        self.phase(&format!("before-{phase}"));
        self.run(action);
        self.phase(phase);
    }

    /// The last lines of nginx's and the PHP nodes' error logs, to explain a failure.
    fn logs(&self) -> String {
        let mut out = String::new();
        for log in [
            "nginx/error.log",
            "node1/php-errors.log",
            "node2/php-errors.log",
            "node3/php-errors.log",
            "node4/php-errors.log",
            "cache-a.log",
            "cache-b.log",
        ] {
            let text = std::fs::read_to_string(self.dir.0.join(log)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            out += &format!("{log}:\n{}\n", tail.join("\n"));
        }
        out
    }

    /// Tells the driver what has been done to the site: answers are filed under it.
    fn phase(&self, name: &str) {
        let tmp = self.dir.0.join("phase.new");
        std::fs::write(&tmp, name).unwrap();
        std::fs::rename(tmp, self.dir.0.join("phase")).unwrap(); // never seen half written
        eprintln!("phase: {name}");
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        // Stops the driver too when the test failed before telling it to.
        let _ = std::fs::write(self.dir.0.join("stop"), "");
        self.run(&["down"]);
    }
}

/// A fresh connection to the cache node at `ip`.
fn cache(ip: &str) -> Client {
    Client::connect(format!("{ip}:11211").parse().unwrap())
}

/// Waits until the cache node at `ip` holds a full copy again (`replication_role` master).
fn caught_up(ip: &str) {
    assert!(
        eventually(Duration::from_secs(20), || cache(ip)
            .stat("replication_role")
            == "master"),
        "cache node {ip} did not catch up"
    );
}

/// Gets the cache node at `ip` has served since it started.
fn gets(ip: &str) -> u64 {
    cache(ip).stat("cmd_get").parse().unwrap()
}

fn pause(secs: f64) {
    std::thread::sleep(Duration::from_secs_f64(secs));
}

fn counts<'a>(
    summary: &'a serde_json::Value,
    phase: &str,
) -> &'a serde_json::Map<String, serde_json::Value> {
    summary["nodes"][phase]
        .as_object()
        .unwrap_or_else(|| panic!("no requests in phase {phase}: {summary}"))
}

#[test]
fn the_seed_site_loses_nothing_when_cache_and_php_nodes_die() {
    let site = Site::up();
    site.phase("steady");
    let control = site.dir.0.to_str().unwrap().to_owned();
    let python = std::env::var("REPCACHED_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut driver = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/seed_site.py"))
        .args([&format!("http://{WEB}"), &control, "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");

    // The driver's users start after its solo user: "steady" lasts 2 s from then.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !site.dir.0.join("ready").exists() {
        if let Some(status) = driver.try_wait().unwrap() {
            panic!("the driver ended before its users started: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the driver did not start its users"
        );
        pause(0.05);
    }
    pause(2.0);
    site.step(&["kill-cache", "a"], "a-killed");
    pause(2.0);
    site.step(&["start-cache", "a"], "a-back");
    caught_up(CACHE_A);
    pause(1.0);
    // PHP went back to the restarted node at once: it served the gets of its side.
    let served = gets(CACHE_A);
    assert!(served > 20, "the restarted cache node served {served} gets");
    site.step(&["kill-cache", "b"], "b-killed");
    pause(2.0);
    site.step(&["start-cache", "b"], "b-back");
    caught_up(CACHE_B);
    pause(1.0);
    site.step(&["stop-node", "1"], "node1-stopped");
    pause(2.0);
    site.step(&["stop-node", "2"], "primaries-stopped");
    pause(2.0);
    std::fs::write(site.dir.0.join("stop"), "").unwrap();

    let out = driver.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "driver: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(text.trim()).expect("driver's JSON");
    let (requests, failed, lost) = (
        summary["requests"].as_u64().unwrap(),
        summary["failed"].as_u64().unwrap(),
        summary["lost"].as_u64().unwrap(),
    );
    // Attachments answered in the moment before a kill that had not yet reached the other
    // node, counted apart by the driver: asynchronous replication's documented loss. The
    // site runs with acknowledged writes, so none is expected, but a write whose wait for
    // the peer timed out (a starved machine) could still be one: printed, not failed.
    let in_window = summary["lost_in_crash_window"].as_u64().unwrap();
    println!(
        "seed site: {requests} requests, {failed} failed, {lost} sessions lost, \
         {in_window} lost in the crash window"
    );
    println!("{}", summary["nodes"]);
    assert_eq!((failed, lost), (0, 0), "{summary}\n{}", site.logs());
    assert!(
        requests > 200,
        "too few requests to mean anything: {summary}"
    );

    // One user alone goes to node1 and node2 in turn.
    let solo: Vec<&str> = summary["solo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(solo.windows(2).all(|w| w[0] != w[1]), "{solo:?}");
    assert!(
        solo.iter().all(|n| *n == "node1" || *n == "node2"),
        "{solo:?}"
    );
    // Every user was served by both primaries, and only by them, while all was well (five
    // users: with an even number in step, round robin could give each user one node).
    for nodes in summary["users_nodes_at_start"].as_array().unwrap() {
        assert_eq!(nodes, &serde_json::json!(["node1", "node2"]), "{summary}");
    }
    // Through the cache kills every request was still served by a primary.
    for phase in ["a-killed", "a-back", "b-killed", "b-back"] {
        let c = counts(&summary, phase);
        assert!(
            c.keys().all(|n| n == "node1" || n == "node2"),
            "{phase}: {c:?}"
        );
    }
    // A stopped primary: its users moved to the other; both stopped: to the backups.
    let c = counts(&summary, "node1-stopped");
    assert!(c.keys().all(|n| n == "node2"), "{c:?}");
    let c = counts(&summary, "primaries-stopped");
    assert!(c.keys().all(|n| n == "node3" || n == "node4"), "{c:?}");
}

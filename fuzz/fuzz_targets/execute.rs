//! Fuzzes whole requests, parsed and executed against a real store (small, so eviction and
//! the memory limit are exercised): whatever a client sends, nothing may panic. Text and
//! binary are chosen by the first byte, as on a real connection. Between inputs the
//! background work runs too (expiry reclaim, a few steps of a snapshot walk), since their
//! cursors must survive whatever the requests did to the store. Run with
//! `cargo +nightly fuzz run execute` from the repository root.

#![no_main]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use repcached::config::Config;
use repcached::protocol::binary::{self, BinParsed};
use repcached::protocol::{text, Parsed};
use repcached::server::command::{self, After, Session};
use repcached::server::output::Output;
use repcached::server::{Server, Shared};

/// One server for the whole run; it is never started, only its state is used.
fn shared() -> &'static Arc<Shared> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut config = Config::for_tests();
        config.store.limit_bytes = 2 * 1024 * 1024;
        config.store.item_size_max = 64 * 1024;
        config.store.tombstone_secs = 5;
        config.enable_shutdown = true;
        Server::bind(config).expect("bind").shared()
    })
}

fuzz_target!(|data: &[u8]| {
    let shared = shared();
    let mut session = Session {
        shared,
        counts: Default::default(),
        now: shared.clock.now(),
        worker: 0,
        fd: -1,
        authenticated: true,
    };
    let binary = data.first() == Some(&binary::REQUEST);
    let mut out = Output::default();
    let mut sent = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // What a connection would write: copied bytes and values queued by reference.
        out.ensure();
        sent.clear();
        out.drain_into(&mut sent);
        let (used, after) = if binary {
            match binary::parse(rest, &shared.limits) {
                BinParsed::Done(req, n) => (n, command::binary(req, &mut session, &mut out)),
                BinParsed::Error { consumed, swallow, close, .. } => {
                    if close {
                        break;
                    }
                    (consumed + swallow, After::Continue)
                }
                BinParsed::Incomplete | BinParsed::BadMagic => break,
            }
        } else {
            match text::parse(rest, &shared.limits) {
                Parsed::Done(req, n) => (n, command::text(req, &mut session, &mut out)),
                Parsed::Invalid(e) => (e.consumed + e.swallow, After::Continue),
                Parsed::Incomplete => break,
            }
        };
        if used == 0 {
            break;
        }
        rest = &rest[used.min(rest.len())..];
        match after {
            After::Swallow(n) => rest = &rest[n.min(rest.len())..],
            After::Close => break,
            _ => {}
        }
    }
    // Every 16th input, the reclaimer (a little ahead in time, so items with short
    // expiries are due) and a few steps of a walk; every input would slow the run 50-fold.
    static RUNS: AtomicU32 = AtomicU32::new(0);
    if RUNS.fetch_add(1, Ordering::Relaxed) % 16 != 0 {
        return;
    }
    let ahead = data.len() as u32 % 8;
    shared.store.reclaim(16, session.now + ahead);
    let mut cursor = Some(repcached::store::Cursor::default());
    for _ in 0..3 {
        let Some(c) = cursor else { break };
        cursor = shared.store.scan(c, 8).1;
    }
});

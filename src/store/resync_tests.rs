//! What a snapshot tells a peer that missed changes, without a network: one store's scan
//! applied to another, as a link does after its backlog moved on. A delete reaches the peer
//! whether the deleting store still holds its marker or let it go (evicted, expired), and
//! what the sender only evicted stays on the peer.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn node(id: u16, limit_bytes: usize, clock: &Arc<Clock>) -> Store {
    let cfg = StoreConfig {
        node: NodeId(id),
        limit_bytes,
        shards: 1,
        tombstone_secs: 600,
        ..Default::default()
    };
    Store::new(cfg, clock.clone())
}

fn set(s: &Store, key: &[u8], value: &[u8]) {
    let now = s.clock().now();
    s.set(&SetRequest::new(SetMode::Set, key, value), now)
        .unwrap();
}

fn delete(s: &Store, key: &[u8]) -> DeleteOutcome {
    let req = DeleteRequest {
        key,
        ..Default::default()
    };
    s.delete(&req, s.clock().now())
}

/// Reads `key` as a client would (so the item counts as read), returning its version.
fn get(s: &Store, key: &[u8]) -> Option<Version> {
    s.read(key, s.clock().now(), ReadOptions::default(), |r| {
        r.ok().map(|h| h.item.version())
    })
}

/// The version a client would read, without touching anything.
fn held(s: &Store, key: &[u8]) -> Option<Version> {
    s.peek(key, s.clock().now(), |it| it.map(|it| it.version()))
}

/// The whole snapshot of `from`, as a link sends it.
fn snapshot(from: &Store) -> Vec<Record> {
    let now = from.clock().now();
    let mut out = Vec::new();
    let mut cursor = Some(Cursor::default());
    while let Some(c) = cursor {
        let (records, next) = from.scan(c, 4096, now);
        out.extend(records);
        cursor = next;
    }
    out
}

/// Applies `from`'s snapshot to `to`, as a link's receiver does.
fn copy(from: &Store, to: &Store, origin: u16) {
    let now = to.clock().now();
    for rec in snapshot(from) {
        let change = RemoteChange::of_record(&rec, rec.exptime(), NodeId(origin))
            .expect("a snapshot holds live and deleted records");
        to.apply(&change, now).unwrap();
    }
}

/// Writes read fillers on `s` until it holds no delete marker: markers outlast unread
/// items, so only items that were read push them out.
fn evict_markers(s: &Store) {
    let mut i = 0;
    while s.stats().tombstones > 0 {
        assert!(i < 100_000, "the markers never went");
        let key = format!("filler{i}");
        set(s, key.as_bytes(), &[b'f'; 300]);
        get(s, key.as_bytes());
        i += 1;
    }
}

#[test]
fn a_delete_whose_marker_was_evicted_still_reaches_a_peer_that_missed_it() {
    let clock = Arc::new(Clock::new());
    let (a, b) = (node(1, 256 << 10, &clock), node(2, 64 << 20, &clock));
    for i in 0..20 {
        set(&a, format!("gone{i}").as_bytes(), b"x");
        set(&a, format!("kept{i}").as_bytes(), b"y");
    }
    copy(&a, &b, 1);
    for i in 0..20 {
        assert_eq!(
            delete(&a, format!("gone{i}").as_bytes()),
            DeleteOutcome::Deleted
        );
    }
    evict_markers(&a);
    assert!(a.stats().evictions > 0);
    let evicted = (0..20)
        .filter(|i| held(&a, format!("kept{i}").as_bytes()).is_none())
        .count();
    assert!(evicted > 10, "the fillers evicted the kept keys too");
    copy(&a, &b, 1);
    for i in 0..20 {
        assert_eq!(held(&b, format!("gone{i}").as_bytes()), None, "gone{i}");
        assert!(
            held(&b, format!("kept{i}").as_bytes()).is_some(),
            "kept{i} is only evicted"
        );
    }
}

#[test]
fn a_delete_whose_marker_expired_still_reaches_a_peer_that_missed_it() {
    let clock = Arc::new(Clock::new());
    let (a, b) = (node(1, 1 << 20, &clock), node(2, 1 << 20, &clock));
    set(&a, b"k", b"v");
    copy(&a, &b, 1);
    assert_eq!(delete(&a, b"k"), DeleteOutcome::Deleted);
    // Past the marker's window (a partition longer than it), the reclaimer drops it.
    clock.advance(601);
    a.reclaim(1000, a.clock().now());
    assert_eq!(a.stats().tombstones, 0);
    let sent = snapshot(&a);
    assert_eq!(
        sent.iter().map(|r| (r.kind(), r.key())).collect::<Vec<_>>(),
        [(Kind::Deleted, &b"k"[..])]
    );
    copy(&a, &b, 1);
    assert_eq!(held(&b, b"k"), None);
}

#[test]
fn a_key_written_again_after_its_delete_is_sent_as_written() {
    let clock = Arc::new(Clock::new());
    let (a, b) = (node(1, 1 << 20, &clock), node(2, 1 << 20, &clock));
    set(&a, b"k", b"old");
    copy(&a, &b, 1);
    assert_eq!(delete(&a, b"k"), DeleteOutcome::Deleted);
    clock.advance(601);
    a.reclaim(1000, a.clock().now());
    set(&a, b"k", b"new");
    let sent = snapshot(&a);
    assert_eq!(
        sent.iter().map(|r| r.kind()).collect::<Vec<_>>(),
        [Kind::Live],
        "the delete it outlived is left out"
    );
    copy(&a, &b, 1);
    assert_eq!(held(&b, b"k"), held(&a, b"k"));
}

#[test]
fn deleted_keys_are_kept_within_memory_set_aside_from_the_segments() {
    let clock = Arc::new(Clock::new());
    let limit = 256 << 10;
    let a = node(1, limit, &clock);
    for i in 0..3000 {
        let key = format!("key-{i}");
        set(&a, key.as_bytes(), &[b'v'; 100]);
        get(&a, key.as_bytes());
        delete(&a, key.as_bytes());
        assert!(a.used_bytes() <= limit - limit / DELETED_KEYS_SHARE);
    }
    evict_markers(&a);
    assert!(a.used_bytes() <= limit - limit / DELETED_KEYS_SHARE);
    let kept: usize = (0..a.shard_count())
        .map(|i| a.lock(i).deleted.held_bytes())
        .sum();
    assert!(kept > 0 && kept <= limit / DELETED_KEYS_SHARE, "{kept}");
    // A standalone store keeps none, and sets nothing aside.
    let alone = Store::new(
        StoreConfig {
            limit_bytes: limit,
            shards: 1,
            ..Default::default()
        },
        clock.clone(),
    );
    set(&alone, b"k", b"v");
    delete(&alone, b"k");
    assert_eq!(alone.lock(0).deleted.held_bytes(), 0);
    assert_eq!(alone.inner.set_aside, 0);
}

#[derive(Debug, Clone)]
enum Op {
    Set(u8, u8),
    Delete(u8),
    /// Fillers, read or not: read ones push delete markers out too.
    Fill(u8, bool),
    /// Time passes: markers past their window go.
    Advance(u16),
    /// The peer gets a snapshot (the link before a partition).
    Copy,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, any::<u8>()).prop_map(|(k, v)| Op::Set(k, v)),
        3 => (0u8..12).prop_map(Op::Delete),
        3 => (1u8..255, any::<bool>()).prop_map(|(n, r)| Op::Fill(n, r)),
        1 => (1u16..700).prop_map(Op::Advance),
        1 => Just(Op::Copy),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the sender deleted, evicted or let expire, once the peer has its snapshot
    /// the peer holds no key whose last change on the sender was a delete, and still holds
    /// (at least as new) what it held of every key the sender did not delete since:
    /// evictions stay local.
    #[test]
    fn a_snapshot_brings_every_delete_and_no_eviction(ops in proptest::collection::vec(op(), 1..80)) {
        let clock = Arc::new(Clock::new());
        let (a, b) = (node(1, 128 << 10, &clock), node(2, 64 << 20, &clock));
        let mut feed = a.subscribe().unwrap();
        // The sender's last change of each key (by a client), and its last delete.
        let mut last: HashMap<Vec<u8>, (Kind, Version)> = HashMap::new();
        let mut deleted: HashMap<Vec<u8>, Version> = HashMap::new();
        let mut fills = 0;
        for op in &ops {
            match *op {
                Op::Set(k, v) => set(&a, &[b'k', k], &[v]),
                Op::Delete(k) => {
                    delete(&a, &[b'k', k]);
                }
                Op::Fill(n, read) => {
                    for _ in 0..n {
                        let key = format!("fill{fills}");
                        fills += 1;
                        set(&a, key.as_bytes(), &[b'f'; 300]);
                        if read {
                            get(&a, key.as_bytes());
                        }
                    }
                }
                Op::Advance(secs) => {
                    clock.advance(u64::from(secs));
                    a.reclaim(100_000, a.clock().now());
                    b.reclaim(100_000, b.clock().now());
                }
                Op::Copy => copy(&a, &b, 1),
            }
            let batch = feed.read(usize::MAX);
            prop_assert!(batch.lost.is_empty());
            for rec in batch.records.iter().filter(|r| r.origin().is_none()) {
                last.insert(rec.key().to_vec(), (rec.kind(), rec.version()));
                if rec.kind() == Kind::Deleted {
                    deleted.insert(rec.key().to_vec(), rec.version());
                }
            }
        }
        let before: Vec<Option<Version>> = (0..12u8).map(|k| held(&b, &[b'k', k])).collect();
        copy(&a, &b, 1);
        for k in 0..12u8 {
            let key = [b'k', k];
            let now_b = held(&b, &key);
            if let Some((Kind::Deleted, d)) = last.get(&key[..]) {
                prop_assert_eq!(now_b, None, "k{}: the peer shows what was deleted at {:?}", k, d);
            }
            if let Some(vb) = before[k as usize] {
                if deleted.get(&key[..]).is_none_or(|d| *d < vb) {
                    prop_assert!(now_b.is_some_and(|v| v >= vb), "k{}: the peer lost {:?}", k, vb);
                }
            }
        }
    }
}

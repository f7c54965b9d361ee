//! Store tests: the operations, the replication hooks, and a model test against a HashMap.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn store() -> Store {
    Store::new(StoreConfig::default(), Arc::new(Clock::new()))
}

fn set(s: &Store, key: &[u8], value: &[u8]) -> SetOutcome {
    s.set(&SetRequest::new(SetMode::Set, key, value), 2)
        .unwrap()
}

fn get(s: &Store, key: &[u8]) -> Option<Vec<u8>> {
    get_at(s, key, 2)
}

fn get_at(s: &Store, key: &[u8], now: u32) -> Option<Vec<u8>> {
    s.read(key, now, ReadOptions::default(), |r| {
        r.ok().map(|h| h.item.value().to_vec())
    })
}

fn cas_of(s: &Store, key: &[u8]) -> u64 {
    s.read(key, 2, ReadOptions::default(), |r| {
        r.map(|h| h.item.cas).unwrap_or(0)
    })
}

#[test]
fn storage_modes() {
    let s = store();
    assert!(matches!(set(&s, b"a", b"1"), SetOutcome::Stored { .. }));
    let add = SetRequest::new(SetMode::Add, b"a", b"2");
    assert_eq!(s.set(&add, 2).unwrap(), SetOutcome::NotStored);
    let rep = SetRequest::new(SetMode::Replace, b"zz", b"2");
    assert_eq!(s.set(&rep, 2).unwrap(), SetOutcome::NotStored);
    let app = SetRequest::new(SetMode::Append, b"a", b"9");
    assert!(matches!(
        s.set(&app, 2).unwrap(),
        SetOutcome::Stored { size: 2, .. }
    ));
    let pre = SetRequest::new(SetMode::Prepend, b"a", b"0");
    s.set(&pre, 2).unwrap();
    assert_eq!(get(&s, b"a").unwrap(), b"019");
}

#[test]
fn cas_is_unique_and_increasing_per_version() {
    let s = store();
    set(&s, b"a", b"1");
    let c1 = cas_of(&s, b"a");
    set(&s, b"a", b"2");
    let c2 = cas_of(&s, b"a");
    assert!(c2 > c1);
    let mut r = SetRequest::new(SetMode::Set, b"a", b"3");
    r.compare_cas = Some(c1);
    assert_eq!(s.set(&r, 2).unwrap(), SetOutcome::Exists);
    r.compare_cas = Some(c2);
    assert!(matches!(s.set(&r, 2).unwrap(), SetOutcome::Stored { .. }));
}

#[test]
fn versions_carry_the_node_id() {
    let cfg = StoreConfig {
        node: NodeId(7),
        ..Default::default()
    };
    let s = Store::new(cfg, Arc::new(Clock::new()));
    set(&s, b"a", b"1");
    let (batch, _) = s.scan(Cursor::default(), 1000, 2);
    assert_eq!(batch[0].kind(), Kind::Live);
    assert_eq!(batch[0].version().node, NodeId(7));
}

#[test]
fn arith_wraps_and_floors() {
    let s = store();
    set(&s, b"n", b"18446744073709551615");
    let r = s.arith(
        &ArithRequest {
            key: b"n",
            incr: true,
            delta: 2,
            ..Default::default()
        },
        2,
    );
    assert!(matches!(r, ArithOutcome::Value { value: 1, .. }));
    let r = s.arith(
        &ArithRequest {
            key: b"n",
            incr: false,
            delta: 5,
            ..Default::default()
        },
        2,
    );
    assert!(matches!(r, ArithOutcome::Value { value: 0, .. }));
    set(&s, b"x", b"abc");
    let r = s.arith(
        &ArithRequest {
            key: b"x",
            incr: true,
            delta: 1,
            ..Default::default()
        },
        2,
    );
    assert_eq!(r, ArithOutcome::NonNumeric);
}

#[test]
fn counters_read_as_memcached_reads_them() {
    for (v, want) in [
        (&b" 12 "[..], Some(12)),
        (b"1 5", Some(1)),
        (b"1\t23", Some(1)),
        (b"1 ab", Some(1)),
        (b"18446744073709551615 1", Some(u64::MAX)),
        (b"+5", Some(5)),
        (b"-0", Some(0)),
        (b"\x0b5", Some(5)),
        (b"5\x0b", Some(5)),
        (b"5\x00x", Some(5)),
        (b"", None),
        (b"  ", None),
        (b"1a", None),
        (b"-5", None),
        (b"+", None),
        (b"- 5", None),
        (b"18446744073709551616", None),
    ] {
        assert_eq!(parse_counter(v), want, "{:?}", String::from_utf8_lossy(v));
    }
}

#[test]
fn tombstones_keep_the_delete_version_until_their_window_ends() {
    let clock = Arc::new(Clock::new());
    let cfg = StoreConfig {
        tombstone_secs: 60,
        ..Default::default()
    };
    let s = Store::new(cfg, clock.clone());
    let now = clock.now();
    s.set(&SetRequest::new(SetMode::Set, b"a", b"1"), now)
        .unwrap();
    let before = s.read(b"a", now, ReadOptions::default(), |r| {
        r.unwrap().item.version()
    });
    let d = s.delete(
        &DeleteRequest {
            key: b"a",
            ..Default::default()
        },
        now,
    );
    assert_eq!(d, DeleteOutcome::Deleted);
    assert!(s.read(b"a", now, ReadOptions::default(), |r| r.is_err()));
    assert_eq!(s.stats().curr_items, 0);
    assert_eq!(s.stats().tombstones, 1);
    let (batch, _) = s.scan(Cursor::default(), 1000, now);
    assert_eq!(batch[0].kind(), Kind::Deleted);
    assert!(batch[0].version() > before);
    // Add works over a tombstone; a new version orders after the delete.
    s.set(&SetRequest::new(SetMode::Add, b"a", b"2"), now)
        .unwrap();
    assert_eq!(s.stats().tombstones, 0);
    s.delete(
        &DeleteRequest {
            key: b"a",
            ..Default::default()
        },
        now,
    );
    // After the window, the reclaimer drops it.
    assert_eq!(s.reclaim(1000, now + 61), 1);
    assert_eq!(s.stats().tombstones, 0);
    assert_eq!(s.stats().bytes, 0);
}

#[test]
fn subscribers_see_every_change_as_item_state() {
    let s = store();
    let mut sub = s.subscribe().unwrap();
    set(&s, b"a", b"1");
    s.arith(
        &ArithRequest {
            key: b"a",
            incr: true,
            delta: 1,
            ..Default::default()
        },
        2,
    );
    s.delete(
        &DeleteRequest {
            key: b"a",
            ..Default::default()
        },
        2,
    );
    let got = sub.read(1 << 20);
    assert!(got.lost.is_empty());
    let got = got.records;
    assert_eq!(got.len(), 3);
    assert_eq!((got[0].kind(), got[0].value()), (Kind::Live, &b"1"[..]));
    assert_eq!((got[1].kind(), got[1].value()), (Kind::Live, &b"2"[..]));
    assert_eq!((got[2].kind(), got[2].key()), (Kind::Deleted, &b"a"[..]));
    assert!(got[0].version() < got[1].version() && got[1].version() < got[2].version());
    assert!(got.iter().all(|r| r.origin().is_none()), "made here");
    assert!(sub.read(1 << 20).records.is_empty(), "read once");
    drop(sub);
    set(&s, b"c", b"1");
    assert!(!s.inner.feed.is_on());
}

/// A write whose stamp a client chose (`E`) goes out marked as this node's own, so that every
/// peer forwards it (it may be stamped below what this node said it had sent); other
/// writes carry no origin.
#[test]
fn a_client_chosen_stamp_goes_out_marked() {
    let cfg = StoreConfig {
        node: NodeId(7),
        ..StoreConfig::default()
    };
    let s = Store::new(cfg, Arc::new(Clock::new()));
    let mut sub = s.subscribe().unwrap();
    let mut req = SetRequest::new(SetMode::Set, b"e", b"1");
    req.new_cas = Some(1000);
    s.set(&req, 2).unwrap();
    set(&s, b"plain", b"1");
    // A client stamp that is not taken (not newer than the key's) marks nothing.
    let mut req = SetRequest::new(SetMode::Set, b"plain", b"2");
    req.new_cas = Some(5);
    s.set(&req, 2).unwrap();
    let del = DeleteRequest {
        key: b"e",
        new_cas: Some(2000),
        ..Default::default()
    };
    s.delete(&del, 2);
    // Above a fresh tick, a client's stamp is above anything this node said it had sent.
    let ahead = Hlc::stamp_of_ms(s.inner.clock.unix_ms() + 60_000);
    let mut req = SetRequest::new(SetMode::Set, b"ahead", b"1");
    req.new_cas = Some(ahead);
    s.set(&req, 2).unwrap();
    assert_eq!(cas_of(&s, b"ahead"), ahead);
    // (Read shard by shard: sorted.)
    let mut got: Vec<_> = sub
        .read(1 << 20)
        .records
        .iter()
        .map(|r| {
            (
                r.key().to_vec(),
                r.version().stamp == 1000 || r.version().stamp == 2000,
                r.origin(),
            )
        })
        .collect();
    got.sort();
    let me = Some(NodeId(7));
    assert_eq!(
        got,
        vec![
            (b"ahead".to_vec(), false, None),
            (b"e".to_vec(), true, me),
            (b"e".to_vec(), true, me),
            (b"plain".to_vec(), false, None),
            (b"plain".to_vec(), false, None),
        ]
    );
}

#[test]
fn a_reader_that_falls_behind_learns_exactly_what_it_lost() {
    let cfg = StoreConfig {
        shards: 1,
        feed_bytes: 4096,
        ..Default::default()
    };
    let s = Store::new(cfg, Arc::new(Clock::new()));
    let mut slow = s.subscribe().unwrap();
    let mut fast = s.subscribe().unwrap();
    let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w = woken.clone();
    fast.set_waker(Arc::new(move || {
        w.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    let mut seen = 0;
    for i in 0..200u32 {
        set(&s, format!("k{i}").as_bytes(), &[b'v'; 100]);
        let b = fast.read(1 << 20);
        assert!(b.lost.is_empty());
        seen += b.records.len();
    }
    assert_eq!(seen, 200, "a reader that keeps up loses nothing");
    assert_eq!(woken.load(std::sync::atomic::Ordering::Relaxed), 200);
    let b = slow.read(1 << 20);
    assert_eq!(b.lost.len(), 1);
    let lost = b.lost[0];
    assert_eq!((lost.shard, lost.from), (Some(0), 1));
    assert_eq!(b.records.first().map(Record::seq), Some(lost.resume));
    assert_eq!(b.records.last().map(Record::seq), Some(200));
    assert!(b.records.iter().map(Record::len).sum::<usize>() <= 4096);
    // The shard's lost changes come back from a scan of that shard.
    let (snap, _) = s.scan(Cursor::of_shard(0), 1 << 30, 2);
    assert_eq!(snap.len(), 200);
}

#[test]
fn a_reader_rewinds_to_what_a_peer_applied_and_no_further() {
    let cfg = StoreConfig {
        shards: 2,
        feed_bytes: 8192,
        ..Default::default()
    };
    let s = Store::new(cfg, Arc::new(Clock::new()));
    set(&s, b"before", b"x");
    let mut sub = s.subscribe().unwrap();
    let base = sub.cursor().clone();
    for i in 0..10u32 {
        set(&s, format!("k{i}").as_bytes(), b"v");
    }
    let first = sub.read(1 << 20);
    assert_eq!(first.records.len(), 10);
    let end = sub.cursor().clone();
    assert_eq!(end.total(), base.total() + 10);
    assert_eq!(s.feed_total(), end.total());
    // Back to the start: the same ten again, in the same order per shard.
    assert!(sub.rewind(&base));
    let again = sub.read(1 << 20);
    let keys = |b: &crate::store::Batch| {
        let mut k: Vec<_> = b.records.iter().map(|r| r.key().to_vec()).collect();
        k.sort();
        k
    };
    assert_eq!(keys(&again), keys(&first));
    assert!(again.lost.is_empty());
    // Not past where it is, not before where it began, not another shape.
    let mut ahead = end.clone();
    ahead.set_shard(0, end.shard(0) + 1);
    assert!(!sub.rewind(&ahead));
    let mut before = base.clone();
    before.set_events(base.events().wrapping_sub(1));
    assert!(!sub.rewind(&before));
    assert!(!sub.rewind(&FeedCursor::new(vec![1], 1)));
    assert_eq!(
        sub.cursor(),
        &end,
        "a refused rewind leaves the reader where it was"
    );
    // Once the backlog has moved past a position, rewinding there reports the loss.
    for i in 0..400u32 {
        set(&s, format!("m{i}").as_bytes(), &[b'v'; 100]);
    }
    let _ = sub.read(1 << 30);
    assert!(sub.rewind(&end));
    let b = sub.read(1 << 30);
    assert!(
        !b.lost.is_empty(),
        "changes the ring no longer holds are reported lost"
    );
}

#[test]
fn flushes_reach_the_feed_once() {
    let s = store();
    let mut sub = s.subscribe().unwrap();
    let stamp = s.flush_all(None, 2);
    let got = sub.read(1 << 20).records;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].kind(), got[0].flush_before(), got[0].flush_at()),
        (Kind::Flush, stamp, 0)
    );
    let v = got[0].version();
    assert!(!s.apply_flush(v, stamp, 0, NodeId(3), 2), "known already");
    assert!(
        sub.read(1 << 20).records.is_empty(),
        "nothing new to forward"
    );
}

#[test]
fn scan_walks_everything_while_serving() {
    let s = store();
    for i in 0..1000u32 {
        set(&s, format!("k{i}").as_bytes(), b"v");
    }
    let mut seen = std::collections::HashSet::new();
    let mut cur = Some(Cursor::default());
    let mut round = 0;
    while let Some(c) = cur {
        let (batch, next) = s.scan(c, 64 * 40, 2);
        // Writes in between do not disturb the walk.
        set(&s, format!("new{round}").as_bytes(), b"v");
        round += 1;
        for m in batch {
            seen.insert(m.key().to_vec());
        }
        cur = next;
    }
    for i in 0..1000u32 {
        assert!(seen.contains(format!("k{i}").as_bytes()));
    }
}

/// A walk that keeps few states returns every few batches' worth of items it passed over
/// (its caller lets other work run), and finds every state it keeps.
#[test]
fn a_filtered_scan_returns_often_and_misses_nothing() {
    let s = store();
    for i in 0..2000u32 {
        set(&s, format!("k{i}").as_bytes(), &[b'v'; 100]);
    }
    let cas: Vec<u64> = (0..2000u32)
        .map(|i| cas_of(&s, format!("k{i}").as_bytes()))
        .collect();
    // Stamps order within a shard only: the writes stamped from the tenth newest on.
    let mut sorted = cas.clone();
    sorted.sort_unstable();
    let want = sorted[sorted.len() - 10..].to_vec();
    let from = want[0];
    let (mut calls, mut kept) = (0, Vec::new());
    let mut cur = Some(Cursor::default());
    while let Some(c) = cur {
        let (batch, next) = s.scan_where(c, 1000, 2, |v| v.stamp >= from);
        calls += 1;
        kept.extend(batch.iter().map(|r| r.version().stamp));
        cur = next;
    }
    kept.sort_unstable();
    assert_eq!(kept, want, "each once");
    assert!(
        calls > 10,
        "returned along the way, not once at the end: {calls}"
    );
    // So does a walk over items that expired.
    let s = store();
    for i in 0..2000u32 {
        let key = format!("t{i}");
        let mut req = SetRequest::new(SetMode::Set, key.as_bytes(), &[b'v'; 100]);
        req.exptime = 3;
        s.set(&req, 2).unwrap();
    }
    let (mut calls, mut cur) = (0, Some(Cursor::default()));
    while let Some(c) = cur {
        let (batch, next) = s.scan_where(c, 1000, 10, |_| true);
        assert!(batch.is_empty());
        calls += 1;
        cur = next;
    }
    assert!(calls > 10, "expired items count too: {calls}");
}

#[test]
fn same_size_overwrite_is_a_fresh_version() {
    let s = store();
    let mut sub = s.subscribe().unwrap();
    set(&s, b"a", b"one");
    // Fetch it and mark it stale, so the overwrite has bits to clear.
    assert_eq!(get(&s, b"a").unwrap(), b"one");
    let inval = DeleteRequest {
        key: b"a",
        invalidate: true,
        ..Default::default()
    };
    s.delete(&inval, 2);
    let before = (cas_of(&s, b"a"), s.stats(), s.used_bytes());
    let mut r = SetRequest::new(SetMode::Set, b"a", b"two");
    r.flags = 7;
    r.exptime = 50;
    assert!(matches!(
        s.set(&r, 3).unwrap(),
        SetOutcome::Stored { size: 3, .. }
    ));
    s.read(
        b"a",
        3,
        ReadOptions {
            no_update: true,
            ..Default::default()
        },
        |h| {
            let h = h.unwrap();
            assert_eq!(h.item.value(), b"two");
            assert_eq!((h.item.flags, h.item.exptime, h.item.atime), (7, 50, 3));
            assert!(h.item.cas > before.0);
            assert!(
                !h.prev_fetched && !h.stale,
                "a new version starts unfetched and fresh"
            );
        },
    );
    let after = s.stats();
    assert_eq!(after.curr_items, before.1.curr_items);
    assert_eq!(after.total_items, before.1.total_items + 1);
    assert_eq!(s.used_bytes(), before.2, "same size, same charge");
    let last = sub.read(1 << 20).records.pop().unwrap();
    assert_eq!((last.kind(), last.value()), (Kind::Live, &b"two"[..]));
}

#[test]
fn prefetch_changes_nothing() {
    let s = store();
    for i in 0..200u32 {
        set(&s, format!("k{i}").as_bytes(), format!("v{i}").as_bytes());
    }
    let keys: Vec<Vec<u8>> = (0..400u32).map(|i| format!("k{i}").into_bytes()).collect();
    let before = s.stats();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    for chunk in refs.chunks(64) {
        s.prefetch(chunk);
    }
    assert_eq!(s.stats(), before);
    for (i, k) in keys.iter().enumerate() {
        let want = (i < 200).then(|| format!("v{i}").into_bytes());
        assert_eq!(get(&s, k), want);
    }
}

#[test]
fn memory_budget_is_hard() {
    let cfg = StoreConfig {
        limit_bytes: 256 * 1024,
        item_size_max: 64 * 1024,
        ..Default::default()
    };
    let s = Store::new(cfg, Arc::new(Clock::new()));
    for i in 0..5000u32 {
        set(&s, format!("key{i}").as_bytes(), &[b'x'; 300]);
        assert!(s.used_bytes() <= 256 * 1024);
    }
    assert!(s.stats().evictions > 0);
    assert!(s.stats().bytes as usize <= s.used_bytes());
    assert!(get(&s, b"key4999").is_some());
}

/// Room that expired items held is used before anything live is evicted: after most of a
/// full store expires, new writes fit without a single eviction, and every item that did
/// not expire is still there.
#[test]
fn expired_room_is_reused_before_live_items_are_evicted() {
    let cfg = StoreConfig {
        limit_bytes: 512 * 1024,
        item_size_max: 64 * 1024,
        shards: 1,
        ..Default::default()
    };
    let s = Store::new(cfg, Arc::new(Clock::new()));
    let value = [b'x'; 400];
    let mut kept = Vec::new();
    let mut i = 0u32;
    // Fill to just under the budget: three of every four items live 10 s.
    while s.used_bytes() + 2 * s.segment_size() < 512 * 1024 {
        let key = format!("key{i}");
        let mut req = SetRequest::new(SetMode::Set, key.as_bytes(), &value);
        if !i.is_multiple_of(4) {
            req.exptime = 10;
        } else {
            kept.push(key.clone());
        }
        s.set(&req, 2).unwrap();
        i += 1;
    }
    assert_eq!(s.stats().evictions, 0);
    // They expire; the background walk finds them.
    while s.reclaim(10_000, 20) > 0 {}
    assert!(s.stats().dead_bytes > 256 * 1024, "{:?}", s.stats());
    // As much again as half the budget, written after the expiry.
    for j in 0..(256 * 1024 / 450) {
        let key = format!("new{j}");
        s.set(&SetRequest::new(SetMode::Set, key.as_bytes(), &value), 20)
            .unwrap();
    }
    assert_eq!(s.stats().evictions, 0, "{:?}", s.stats());
    for key in &kept {
        assert!(
            get_at(&s, key.as_bytes(), 20).is_some(),
            "{key} was evicted"
        );
    }
}

#[test]
fn flush_invalidates_older_versions_only() {
    let s = store();
    set(&s, b"a", b"1");
    s.flush_all(None, 2);
    assert!(get(&s, b"a").is_none());
    set(&s, b"a", b"2");
    assert_eq!(get(&s, b"a").unwrap(), b"2");
}

#[derive(Debug, Clone)]
enum Op {
    Set(u8, u8),
    Add(u8, u8),
    Replace(u8, u8),
    Append(u8, u8),
    Delete(u8),
    Get(u8),
    Incr(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u8..8;
    prop_oneof![
        (k.clone(), any::<u8>()).prop_map(|(k, v)| Op::Set(k, v)),
        (k.clone(), any::<u8>()).prop_map(|(k, v)| Op::Add(k, v)),
        (k.clone(), any::<u8>()).prop_map(|(k, v)| Op::Replace(k, v)),
        (k.clone(), any::<u8>()).prop_map(|(k, v)| Op::Append(k, v)),
        k.clone().prop_map(Op::Delete),
        k.clone().prop_map(Op::Get),
        (k, any::<u8>()).prop_map(|(k, d)| Op::Incr(k, d)),
    ]
}

proptest! {
    #[test]
    fn store_matches_a_hashmap_model(ops in proptest::collection::vec(op(), 1..200), tombstones in any::<bool>()) {
        let cfg = StoreConfig { tombstone_secs: if tombstones { 60 } else { 0 }, ..Default::default() };
        let s = Store::new(cfg, Arc::new(Clock::new()));
        let mut model: HashMap<u8, Vec<u8>> = HashMap::new();
        for op in ops {
            match op {
                Op::Set(k, v) => {
                    s.set(&SetRequest::new(SetMode::Set, &[b'k', k], &[v]), 2).unwrap();
                    model.insert(k, vec![v]);
                }
                Op::Add(k, v) => {
                    let r = s.set(&SetRequest::new(SetMode::Add, &[b'k', k], &[v]), 2).unwrap();
                    let expect_stored = !model.contains_key(&k);
                    prop_assert_eq!(matches!(r, SetOutcome::Stored { .. }), expect_stored);
                    model.entry(k).or_insert(vec![v]);
                }
                Op::Replace(k, v) => {
                    let r = s.set(&SetRequest::new(SetMode::Replace, &[b'k', k], &[v]), 2).unwrap();
                    prop_assert_eq!(matches!(r, SetOutcome::Stored { .. }), model.contains_key(&k));
                    if let Some(e) = model.get_mut(&k) { *e = vec![v]; }
                }
                Op::Append(k, v) => {
                    let r = s.set(&SetRequest::new(SetMode::Append, &[b'k', k], &[v]), 2).unwrap();
                    prop_assert_eq!(matches!(r, SetOutcome::Stored { .. }), model.contains_key(&k));
                    if let Some(e) = model.get_mut(&k) { e.push(v); }
                }
                Op::Delete(k) => {
                    let r = s.delete(&DeleteRequest { key: &[b'k', k], ..Default::default() }, 2);
                    prop_assert_eq!(r == DeleteOutcome::Deleted, model.remove(&k).is_some());
                }
                Op::Get(k) => {
                    prop_assert_eq!(get(&s, &[b'k', k]), model.get(&k).cloned());
                }
                Op::Incr(k, d) => {
                    let r = s.arith(&ArithRequest { key: &[b'k', k], incr: true, delta: d as u64, ..Default::default() }, 2);
                    match model.get_mut(&k) {
                        None => prop_assert_eq!(r, ArithOutcome::NotFound),
                        Some(v) => match parse_counter(v) {
                            None => prop_assert_eq!(r, ArithOutcome::NonNumeric),
                            Some(n) => {
                                let new = n.wrapping_add(d as u64);
                                let ok = matches!(r, ArithOutcome::Value { value, .. } if value == new);
                                prop_assert!(ok, "incr gave {:?}, want {}", r, new);
                                let digits = new.to_string().into_bytes();
                                if digits.len() <= v.len() {
                                    let mut padded = digits.clone();
                                    padded.resize(v.len(), b' ');
                                    *v = padded;
                                } else {
                                    *v = digits;
                                }
                            }
                        },
                    }
                }
            }
        }
        prop_assert_eq!(s.stats().curr_items as usize, model.len());
    }
}

#[derive(Debug, Clone)]
enum Pressure {
    Set(u8, usize, u8, bool),
    Tick,
    Reclaim,
    SetNumber(u8, u16),
    Incr(u8, u32),
    Invalidate(u8),
    Append(u8, u8),
    Get(u8),
    Touch(u8),
    Delete(u8),
}

fn pressure_op() -> impl Strategy<Value = Pressure> {
    let k = 0u8..48;
    // Sizes from tiny to past a quarter segment (a segment of their own).
    let size = prop_oneof![Just(1usize), Just(60), Just(400), Just(1500), Just(6000)];
    prop_oneof![
        4 => (k.clone(), size, any::<u8>(), any::<bool>())
            .prop_map(|(k, n, v, expires)| Pressure::Set(k, n, v, expires)),
        1 => Just(Pressure::Tick),
        1 => Just(Pressure::Reclaim),
        1 => (k.clone(), any::<u16>()).prop_map(|(k, n)| Pressure::SetNumber(k, n)),
        1 => (k.clone(), any::<u32>()).prop_map(|(k, d)| Pressure::Incr(k, d)),
        1 => k.clone().prop_map(Pressure::Invalidate),
        1 => (k.clone(), any::<u8>()).prop_map(|(k, v)| Pressure::Append(k, v)),
        3 => k.clone().prop_map(Pressure::Get),
        1 => k.clone().prop_map(Pressure::Touch),
        1 => k.prop_map(Pressure::Delete),
    ]
}

proptest! {
    /// With a budget a few times smaller than the data, eviction and compaction run all the
    /// time; a read must still return the last value written or nothing, never an older
    /// value or a deleted one, and the budget must hold after every operation.
    #[test]
    fn under_memory_pressure_reads_are_last_written_or_nothing(
        ops in proptest::collection::vec(pressure_op(), 1..400),
        tombstones in any::<bool>(),
    ) {
        let limit = 64 * 1024;
        let cfg = StoreConfig {
            limit_bytes: limit,
            item_size_max: 32 * 1024,
            shards: 4,
            tombstone_secs: if tombstones { 60 } else { 0 },
            ..Default::default()
        };
        let s = Store::new(cfg, Arc::new(Clock::new()));
        let mut model: HashMap<u8, Vec<u8>> = HashMap::new();
        // Expiry only ever turns a value into nothing, which the model allows.
        let mut now = 2;
        for op in ops {
            match op {
                Pressure::Tick => now += 1,
                Pressure::Reclaim => {
                    s.reclaim(5, now);
                }
                Pressure::Set(k, n, v, expires) => {
                    let value = vec![v; n];
                    let key = [b'p', k];
                    let mut req = SetRequest::new(SetMode::Set, &key, &value);
                    if expires {
                        req.exptime = now + 3;
                    }
                    match s.set(&req, now) {
                        Ok(SetOutcome::Stored { .. }) => { model.insert(k, value); }
                        Ok(other) => prop_assert!(false, "set answered {:?}", other),
                        // The old value may be gone too; nothing newer may appear.
                        Err(e) => prop_assert_eq!(e, StoreError::OutOfMemory),
                    }
                }
                Pressure::SetNumber(k, n) => {
                    let value = n.to_string().into_bytes();
                    if let Ok(SetOutcome::Stored { .. }) = s.set(&SetRequest::new(SetMode::Set, &[b'p', k], &value), now) {
                        model.insert(k, value);
                    }
                }
                Pressure::Incr(k, d) => {
                    let r = s.arith(&ArithRequest { key: &[b'p', k], incr: true, delta: d as u64, ..Default::default() }, now);
                    match r {
                        ArithOutcome::Value { value, .. } => {
                            let old = model.get(&k);
                            prop_assert!(old.is_some(), "incr found a key never written");
                            let old_len = old.map_or(0, |v| v.len());
                            let mut digits = value.to_string().into_bytes();
                            if digits.len() < old_len {
                                digits.resize(old_len, b' ');
                            }
                            model.insert(k, digits);
                        }
                        ArithOutcome::NotFound | ArithOutcome::NoMemory { .. } => { model.remove(&k); }
                        ArithOutcome::NonNumeric | ArithOutcome::Exists => {}
                    }
                }
                Pressure::Invalidate(k) => {
                    // Marks stale with a new expiry: the value stays readable (or, with no
                    // room to rewrite it, the item is gone).
                    let inval = DeleteRequest { key: &[b'p', k], invalidate: true, exptime: Some(900), ..Default::default() };
                    s.delete(&inval, now);
                }
                Pressure::Append(k, v) => {
                    let r = s.set(&SetRequest::new(SetMode::Append, &[b'p', k], &[v]), now);
                    if let Ok(SetOutcome::Stored { .. }) = r {
                        let e = model.get_mut(&k);
                        prop_assert!(e.is_some(), "append stored on a key never written");
                        if let Some(e) = e { e.push(v); }
                    } else {
                        // Evicted (or never there): the model forgets it.
                        model.remove(&k);
                    }
                }
                Pressure::Get(k) => {
                    if let Some(got) = get_at(&s, &[b'p', k], now) {
                        prop_assert_eq!(Some(&got), model.get(&k), "key {}", k);
                    }
                }
                Pressure::Touch(k) => {
                    let hit = s.read(&[b'p', k], now, ReadOptions { touch: Some(1000), ..Default::default() },
                        |r| r.ok().map(|h| h.item.value().to_vec()));
                    if let Some(got) = hit {
                        prop_assert_eq!(Some(&got), model.get(&k), "key {}", k);
                    }
                }
                Pressure::Delete(k) => {
                    s.delete(&DeleteRequest { key: &[b'p', k], ..Default::default() }, now);
                    model.remove(&k);
                }
            }
            prop_assert!(s.used_bytes() <= limit, "used {} over {}", s.used_bytes(), limit);
            prop_assert!(s.stats().bytes as usize <= s.used_bytes());
        }
        // A walk with no writes in between sees each stored item exactly once.
        let mut seen = HashMap::new();
        let mut cur = Some(Cursor::default());
        while let Some(c) = cur {
            let (batch, next) = s.scan(c, 300, 2);
            for m in batch {
                if m.kind() == Kind::Live {
                    prop_assert!(seen.insert(m.key().to_vec(), m.value().to_vec()).is_none(), "seen twice");
                }
            }
            cur = next;
        }
        prop_assert_eq!(seen.len() as u64, s.stats().curr_items);
        for (key, value) in seen {
            prop_assert_eq!(Some(&value.to_vec()), model.get(&key[1]));
        }
    }
}

#[test]
fn eviction_front_age_follows_the_oldest_segment() {
    let s = store();
    assert_eq!(s.eviction_front_age(50), 0, "empty store");
    s.set(&SetRequest::new(SetMode::Set, b"a", b"1"), 2)
        .unwrap();
    s.set(&SetRequest::new(SetMode::Set, b"b", b"2"), 7)
        .unwrap();
    assert_eq!(s.eviction_front_age(10), 8);
}

/// Takes one from a count of running threads when dropped.
struct Finished<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn concurrent_writers_under_pressure_never_read_stale_values() {
    let limit = 1024 * 1024;
    let cfg = StoreConfig {
        limit_bytes: limit,
        item_size_max: 64 * 1024,
        shards: 8,
        tombstone_secs: 30,
        ..Default::default()
    };
    let s = Store::new(cfg, Arc::new(Clock::new()));
    assert_eq!(
        s.segment_size(),
        8 << 10,
        "the sizes below are chosen for this"
    );
    let writing = std::sync::atomic::AtomicUsize::new(4);
    std::thread::scope(|sc| {
        // The background reclaimer, walking while the writers compact and free segments.
        sc.spawn(|| {
            while writing.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                // A second ahead: items set to expire at 3 are due (reads at 2 may then
                // find nothing, which the check allows).
                s.reclaim(3, 3);
            }
        });
        for t in 0..4u8 {
            let s = s.clone();
            let writing = &writing;
            sc.spawn(move || {
                // Counts this writer out even if it panics, so the reclaimer stops and the
                // test fails instead of hanging.
                let _done = Finished(writing);
                // Each thread owns its keys, so it knows their last value.
                let mut last: HashMap<u16, Vec<u8>> = HashMap::new();
                let mut x: u32 = 0x9e37_79b9 ^ t as u32;
                for i in 0..60_000u32 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let k = (x % 200) as u16;
                    let key = [b't', t, (k >> 8) as u8, k as u8];
                    match x % 10 {
                        0..=3 => {
                            // 2030 and 2040 sit on either side of a quarter segment.
                            let n = [3usize, 90, 700, 2030, 2040, 20_000][(x as usize >> 8) % 6];
                            let value = vec![(i % 251) as u8; n];
                            let mut req = SetRequest::new(SetMode::Set, &key, &value);
                            if x.is_multiple_of(4) {
                                req.exptime = 3;
                            }
                            // With eviction on, no set is refused, with four writers too.
                            let r = s.set(&req, 2);
                            assert!(r.is_ok(), "thread {t}: set of {n} bytes answered {r:?}");
                            last.insert(k, value);
                        }
                        4 => {
                            s.delete(
                                &DeleteRequest {
                                    key: &key,
                                    ..Default::default()
                                },
                                2,
                            );
                            last.remove(&k);
                        }
                        5 => {
                            s.touch(&key, 500, 2);
                        }
                        _ => {
                            if let Some(v) = get(&s, &key) {
                                assert_eq!(Some(&v), last.get(&k), "thread {t} key {k}");
                            }
                        }
                    }
                    assert!(s.used_bytes() <= limit + 4 * 64 * 1024);
                }
            });
        }
    });
    assert!(s.used_bytes() <= limit);
    assert!(s.stats().evictions > 0);
    assert!(s.stats().bytes as usize <= s.used_bytes());
}

#[test]
fn lowering_the_limit_frees_memory_as_writes_go_on() {
    let cfg = StoreConfig {
        limit_bytes: 1 << 20,
        shards: 4,
        ..Default::default()
    };
    let s = Store::new(cfg, Arc::new(Clock::new()));
    for i in 0..20_000u32 {
        set(&s, format!("k{i}").as_bytes(), &[b'x'; 100]);
    }
    assert!(s.used_bytes() > 900 << 10);
    s.set_limit(256 << 10);
    for i in 0..5_000u32 {
        set(&s, format!("n{i}").as_bytes(), &[b'y'; 100]);
    }
    assert!(s.used_bytes() <= 256 << 10, "used {}", s.used_bytes());
    assert!(get(&s, b"n4999").is_some());
}

/// A value length for a [`Room`] set, chosen against the store's own sizes.
#[derive(Debug, Clone, Copy)]
enum Size {
    Tiny(u8),
    /// This many bytes below where the item stops fitting a quarter segment (negative: above).
    NearQuarter(i16),
    /// This many bytes below the largest value `-I` allows.
    NearMax(u16),
    /// A share, in 1/256ths, of the largest value `-I` allows.
    Share(u8),
}

#[derive(Debug, Clone)]
enum Room {
    Set(u8, Size),
    Get(u8),
    Delete(u8),
}

fn room_op() -> impl Strategy<Value = Room> {
    let k = 0u8..40;
    let size = prop_oneof![
        1 => any::<u8>().prop_map(Size::Tiny),
        3 => (-16i16..48).prop_map(Size::NearQuarter),
        2 => (0u16..64).prop_map(Size::NearMax),
        2 => any::<u8>().prop_map(Size::Share),
    ];
    prop_oneof![
        6 => (k.clone(), size).prop_map(|(k, n)| Room::Set(k, n)),
        2 => k.clone().prop_map(Room::Get),
        1 => k.prop_map(Room::Delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    /// With eviction on, a set whose item fits `-I` is stored, whatever the sizes before it,
    /// the budget (down to 1 MiB), `-I` (up to half the budget) and the shard count; the
    /// budget holds after every operation, and the item just stored reads back.
    #[test]
    fn with_eviction_every_set_that_fits_is_stored(
        mb in 1usize..=3,
        item_max_share in 1usize..=64,
        shard_bits in 0u32..=6,
        ops in proptest::collection::vec(room_op(), 1..120),
    ) {
        let limit = mb << 20;
        // From 1 KiB (memcached's least) up to half the budget (its most for this -m).
        let item_size_max = (limit / 2 * item_max_share / 64).max(1024);
        let cfg = StoreConfig {
            limit_bytes: limit,
            item_size_max,
            shards: 1 << shard_bits,
            ..Default::default()
        };
        let s = Store::new(cfg, Arc::new(Clock::new()));
        let quarter = s.segment_size() / 4;
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Room::Set(k, size) => {
                    let key = format!("key{k}");
                    let max_value = item_size_max - item_total_size(key.len(), 0, 0);
                    let n = match size {
                        Size::Tiny(n) => n as usize,
                        // Plain items take a 12-byte header here: around the line, an item is
                        // packed with others or gets a segment of its own.
                        Size::NearQuarter(d) => (quarter as isize - 12 - key.len() as isize - d as isize) as usize,
                        Size::NearMax(d) => max_value.saturating_sub(d as usize),
                        Size::Share(p) => max_value * p as usize / 256,
                    }
                    .min(max_value);
                    let value = vec![(i % 251) as u8; n];
                    let r = s.set(&SetRequest::new(SetMode::Set, key.as_bytes(), &value), 2);
                    prop_assert!(
                        matches!(r, Ok(SetOutcome::Stored { .. })),
                        "set of {} bytes (quarter segment {}, -I {}) answered {:?}", n, quarter, item_size_max, r
                    );
                    prop_assert!(get(&s, key.as_bytes()).as_deref() == Some(&value[..]), "stored value lost");
                }
                Room::Get(k) => {
                    get(&s, format!("key{k}").as_bytes());
                }
                Room::Delete(k) => {
                    s.delete(&DeleteRequest { key: format!("key{k}").as_bytes(), ..Default::default() }, 2);
                }
            }
            prop_assert!(s.used_bytes() <= limit, "used {} over {}", s.used_bytes(), limit);
        }
    }
}

#[test]
fn a_reader_gets_every_record_when_shards_share_a_mark() {
    let cfg = StoreConfig {
        shards: 256,
        ..Default::default()
    };
    let s = Store::new(cfg, Arc::new(Clock::new()));
    let mut sub = s.subscribe().unwrap();
    let mut seen = std::collections::HashSet::new();
    for round in 0..3u32 {
        for i in 0..500u32 {
            set(&s, format!("k{round}-{i}").as_bytes(), b"v");
        }
        loop {
            let b = sub.read(2000);
            assert!(b.lost.is_empty());
            if b.records.is_empty() {
                break;
            }
            for r in b.records {
                assert!(seen.insert(r.key().to_vec()), "read twice");
            }
        }
        assert_eq!(seen.len() as u32, 500 * (round + 1));
    }
}

/// A snapshot walk holds the guard; eviction then moves items read on probation to main
/// and pushes them to the shard's ring. Here the writes that cause it come from the peer
/// the only reader sends to (a node resyncing from this one while it also sends its own
/// changes): those are not published, so nobody marks the ring for the reader, which then
/// never reads the moved items.
#[test]
fn items_moved_during_a_walk_reach_the_reader_when_a_peer_writes() {
    let cfg = StoreConfig {
        limit_bytes: 16 * 4096,
        shards: 1,
        feed_bytes: 1 << 20,
        node: NodeId(1),
        ..Default::default()
    };
    let s = Store::new(cfg, Arc::new(Clock::new()));
    assert_eq!(s.segment_size(), 4096);
    let now = s.clock().now();
    let mut reader = s.subscribe().unwrap();
    reader.set_peer(NodeId(2));
    // Full and evicting in its steady state (probation at its share) first.
    for i in 0..1500u32 {
        let key = format!("fill{i}");
        set(&s, key.as_bytes(), &[b'f'; 100]);
        if i % 10 == 0 {
            get_at(&s, key.as_bytes(), now);
        }
    }
    let hot: Vec<String> = (0..30).map(|i| format!("hot{i}")).collect();
    for k in &hot {
        s.set(
            &SetRequest::new(SetMode::Set, k.as_bytes(), &[b'h'; 100]),
            now,
        )
        .unwrap();
        assert!(get_at(&s, k.as_bytes(), now).is_some());
    }
    let _ = reader.read(1 << 30);
    let walk = s.begin_walk();
    // Ahead of every local stamp (and of what eviction remembers of dropped keys).
    let base = Hlc::stamp_of_ms(s.clock().unix_ms() + 60_000);
    for i in 0..1500u64 {
        let key = format!("peer{i}");
        let change = RemoteChange {
            key: key.as_bytes(),
            state: RemoteState::Live {
                value: &[b'p'; 100],
                flags: 0,
                exptime: 0,
                bits: 0,
            },
            version: Version {
                stamp: base + i + 1,
                node: NodeId(2),
            },
            origin: NodeId(2),
        };
        assert_eq!(s.apply(&change, now).unwrap(), Applied::Changed);
    }
    drop(walk);
    assert!(s.stats().evictions > 0);
    let got = reader.read(1 << 30);
    let keys: std::collections::HashSet<Vec<u8>> =
        got.records.iter().map(|r| r.key().to_vec()).collect();
    let moved = hot
        .iter()
        .filter(|k| get_at(&s, k.as_bytes(), now).is_some())
        .count();
    assert!(moved > 0, "hot keys kept by eviction");
    assert!(
        hot.iter().any(|k| keys.contains(k.as_bytes())),
        "the reader got none of the moved items; ring holds {} records it was not told of",
        s.feed_total() - reader.cursor().total()
    );
    assert_eq!(
        reader.cursor().total(),
        s.feed_total(),
        "the reader is behind the feed for good (a link never leaves catching-up)"
    );
}

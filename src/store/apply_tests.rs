//! Tests of what replication leans on, without a network: remote applies, what the store
//! remembers of dropped states, flushes as ordered events, new versions for every change.

use std::sync::Arc;

use super::*;

fn node(cfg: StoreConfig, id: u16) -> Store {
    Store::new(
        StoreConfig {
            node: NodeId(id),
            ..cfg
        },
        Arc::new(Clock::new()),
    )
}

fn replicated(id: u16) -> Store {
    node(
        StoreConfig {
            tombstone_secs: 600,
            ..Default::default()
        },
        id,
    )
}

fn now(s: &Store) -> u32 {
    s.clock().now()
}

fn set(s: &Store, key: &[u8], value: &[u8]) -> u64 {
    match s.set(&SetRequest::new(SetMode::Set, key, value), now(s)) {
        Ok(SetOutcome::Stored { cas, .. }) => cas,
        other => panic!("{other:?}"),
    }
}

fn delete(s: &Store, key: &[u8]) -> DeleteOutcome {
    let req = DeleteRequest {
        key,
        ..Default::default()
    };
    s.delete(&req, now(s))
}

/// (value, version) a client would read, without updating anything.
fn read(s: &Store, key: &[u8]) -> Option<(Vec<u8>, Version)> {
    s.peek(key, now(s), |it| {
        it.map(|it| (it.value().to_vec(), it.version()))
    })
}

/// The expiry `key` holds, without updating anything.
fn expiry(s: &Store, key: &[u8]) -> Option<u32> {
    s.peek(key, now(s), |it| it.map(|it| it.exptime))
}

fn live<'a>(key: &'a [u8], value: &'a [u8], stamp: u64, from: u16) -> RemoteChange<'a> {
    RemoteChange {
        key,
        state: RemoteState::Live {
            value,
            flags: 0,
            exptime: 0,
            bits: 0,
        },
        version: Version {
            stamp,
            node: NodeId(from),
        },
        origin: NodeId(from),
    }
}

fn deleted(key: &[u8], stamp: u64, from: u16) -> RemoteChange<'_> {
    RemoteChange {
        key,
        state: RemoteState::Deleted,
        version: Version {
            stamp,
            node: NodeId(from),
        },
        origin: NodeId(from),
    }
}

/// A write from node 2 that expired before it arrived (exptime 1: already past).
fn expired_on_its_way(key: &[u8], stamp: u64) -> RemoteChange<'_> {
    let mut c = live(key, b"gone", stamp, 2);
    c.state = RemoteState::Live {
        value: b"gone",
        flags: 0,
        exptime: 1,
        bits: 0,
    };
    c
}

fn apply(s: &Store, c: &RemoteChange<'_>) -> Applied {
    s.apply(c, now(s)).unwrap()
}

/// A stamp of the current wall time, as another node would issue it.
fn stamp_now(s: &Store) -> u64 {
    Hlc::stamp_of_ms(s.clock().unix_ms())
}

#[test]
fn newer_remote_writes_win_older_and_repeated_ones_change_nothing() {
    let s = replicated(1);
    let cas = set(&s, b"k", b"mine");
    assert_eq!(apply(&s, &live(b"k", b"old", cas - 1, 2)), Applied::Stale);
    assert_eq!(read(&s, b"k").unwrap().0, b"mine");
    // The same stamp from a higher node id orders after it.
    assert_eq!(apply(&s, &live(b"k", b"tie", cas, 2)), Applied::Changed);
    let (v, ver) = read(&s, b"k").unwrap();
    assert_eq!((v.as_slice(), ver.node), (&b"tie"[..], NodeId(2)));
    assert_eq!(apply(&s, &live(b"k", b"tie", cas, 2)), Applied::Stale);
    // A local write after it orders after it.
    let next = set(&s, b"k", b"again");
    assert!(next > cas);
}

#[test]
fn a_remote_delete_of_a_key_not_held_is_remembered_without_a_marker() {
    let s = replicated(1);
    let mut sub = s.subscribe().unwrap();
    let t = stamp_now(&s);
    assert_eq!(apply(&s, &deleted(b"never", t, 2)), Applied::Changed);
    assert_eq!(s.stats().tombstones, 0, "no marker: nothing was replaced");
    assert_eq!(s.used_bytes(), 0, "nothing taken from the segments");
    // Passed on to the other peers, as any delete taken.
    let got = sub.read(usize::MAX).records;
    assert_eq!(
        got.iter()
            .map(|r| (r.kind(), r.key(), r.version(), r.origin()))
            .collect::<Vec<_>>(),
        [(
            Kind::Deleted,
            &b"never"[..],
            deleted(b"", t, 2).version,
            Some(NodeId(2))
        )]
    );
    // The same delete again (an echo in a mesh) changes nothing and goes nowhere.
    assert_ne!(apply(&s, &deleted(b"never", t, 2)), Applied::Changed);
    assert!(sub.read(usize::MAX).records.is_empty());
    // A write made before the delete arrives late: refused.
    assert_eq!(
        apply(&s, &live(b"never", b"x", t - 1, 3)),
        Applied::Forgotten
    );
    assert!(read(&s, b"never").is_none());
    // One made after it is taken.
    assert_eq!(apply(&s, &live(b"never", b"y", t + 1, 3)), Applied::Changed);
    assert_eq!(read(&s, b"never").unwrap().0, b"y");
    // A delete of a key held live leaves a marker, as ever; a later one replaces it with
    // what it remembers.
    assert_eq!(apply(&s, &deleted(b"never", t + 2, 2)), Applied::Changed);
    assert_eq!(s.stats().tombstones, 1);
    assert_eq!(apply(&s, &deleted(b"never", t + 3, 2)), Applied::Changed);
    assert_eq!(s.stats().tombstones, 0);
    assert_eq!(
        apply(&s, &live(b"never", b"z", t + 2, 3)),
        Applied::Forgotten
    );
}

#[test]
fn a_dropped_delete_marker_still_refuses_older_writes() {
    let s = replicated(1);
    set(&s, b"k", b"v");
    let n = now(&s);
    assert_eq!(delete(&s, b"k"), DeleteOutcome::Deleted);
    let del = s.peek(b"k", n, |it| it.map(|it| it.cas));
    assert!(del.is_none(), "a marker is not an item");
    // Past the marker's window the reclaimer drops it.
    s.clock().advance(601);
    assert_eq!(s.reclaim(1000, now(&s)), 1);
    assert_eq!(s.stats().tombstones, 0);
    let old = stamp_now(&s) - Hlc::stamp_of_ms(700_000);
    assert_eq!(
        apply(&s, &live(b"k", b"zombie", old, 2)),
        Applied::Forgotten
    );
    assert!(read(&s, b"k").is_none());
}

#[test]
fn without_markers_a_delete_is_remembered_by_its_stamp() {
    let s = node(StoreConfig::default(), 1);
    let cas = set(&s, b"k", b"v");
    assert_eq!(delete(&s, b"k"), DeleteOutcome::Deleted);
    assert_eq!(s.stats().tombstones, 0);
    assert_eq!(
        apply(&s, &live(b"k", b"zombie", cas, 2)),
        Applied::Forgotten
    );
    assert_eq!(
        apply(&s, &live(b"k", b"newer", stamp_now(&s) + (1 << 20), 2)),
        Applied::Changed
    );
}

#[test]
fn evicted_keys_never_take_back_an_older_version() {
    let s = node(
        StoreConfig {
            limit_bytes: 64 * 1024,
            shards: 1,
            tombstone_secs: 600,
            ..Default::default()
        },
        1,
    );
    let first = set(&s, b"victim", &[b'a'; 200]);
    for i in 0..2000u32 {
        set(&s, format!("filler{i}").as_bytes(), &[b'f'; 200]);
    }
    assert!(read(&s, b"victim").is_none(), "evicted");
    assert!(s.stats().evictions > 0);
    assert_eq!(
        apply(&s, &live(b"victim", b"older", first - 1, 2)),
        Applied::Forgotten
    );
    assert_eq!(
        apply(&s, &live(b"victim", b"same", first, 1)),
        Applied::Forgotten
    );
}

#[test]
fn expired_items_are_remembered_too() {
    let s = replicated(1);
    let mut req = SetRequest::new(SetMode::Set, b"k", b"short");
    req.exptime = now(&s) + 5;
    let Ok(SetOutcome::Stored { cas, .. }) = s.set(&req, now(&s)) else {
        panic!()
    };
    s.clock().advance(10);
    assert!(read(&s, b"k").is_none());
    let mut sub = s.subscribe().unwrap();
    // The value the short-lived one replaced, sent late by a peer that missed it.
    assert_eq!(
        apply(&s, &live(b"k", b"long", cas - 1, 2)),
        Applied::Forgotten
    );
    // That peer holds it, and would for good: it is told the key is gone as of just
    // before the expired write (its stamp under node id 0, which no node has), as is every peer.
    let got = sub.read(usize::MAX).records;
    let gone = Version {
        stamp: cas,
        node: NodeId(0),
    };
    assert_eq!(
        got.iter()
            .map(|r| (r.kind(), r.key(), r.version(), r.origin()))
            .collect::<Vec<_>>(),
        [(Kind::Deleted, &b"k"[..], gone, None)]
    );
    let peer = replicated(2);
    assert_eq!(
        apply(&peer, &live(b"k", b"long", cas - 1, 2)),
        Applied::Changed
    );
    let told = RemoteChange::of_record(&got[0], 0, NodeId(1)).unwrap();
    assert_eq!(apply(&peer, &told), Applied::Changed);
    assert!(read(&peer, b"k").is_none());
    // A peer that gets a whole copy of the shard next (the link dropped before the record
    // went) gets the delete with it.
    let (recs, _) = s.scan(Cursor::default(), usize::MAX, now(&s));
    assert!(
        recs.iter()
            .any(|r| r.kind() == Kind::Deleted && r.key() == b"k" && r.version() == gone),
        "the snapshot carries the delete told"
    );
    // A state as new as the one dropped is not answered (an eviction stays local).
    assert_eq!(apply(&s, &live(b"k", b"same", cas, 1)), Applied::Forgotten);
    assert!(sub.read(usize::MAX).records.is_empty());
    // Nor is a node holding that very state made to drop it, nor one that gets the
    // delete first and the state after: in either order, the state stays.
    let same = replicated(3);
    assert_eq!(
        apply(&same, &live(b"k", b"short", cas, 1)),
        Applied::Changed
    );
    assert_eq!(apply(&same, &told), Applied::Stale);
    assert_eq!(read(&same, b"k").unwrap().0, b"short");
    let later = replicated(4);
    assert_eq!(apply(&later, &told), Applied::Changed);
    assert_eq!(
        apply(&later, &live(b"k", b"short", cas, 1)),
        Applied::Changed
    );
    assert_eq!(read(&later, b"k").unwrap().0, b"short");
    // A state at the dropped one's stamp from a lower node id has nothing between the two:
    // it is answered at the dropped state's own version.
    let edge = live(b"k", b"edge", cas, 0);
    assert_eq!(apply(&s, &edge), Applied::Forgotten);
    assert_eq!(
        deletes_sent(&mut sub),
        [(
            b"k".to_vec(),
            Version {
                stamp: cas,
                node: NodeId(1)
            }
        )]
    );
    // Another node's write stamped alike (the same millisecond and shard there) is newer
    // by its node id: taken, as every node holding the expired state takes it.
    assert_eq!(apply(&s, &live(b"k", b"tie", cas, 2)), Applied::Changed);
    assert_eq!(read(&s, b"k").unwrap().0, b"tie");
}

#[test]
fn a_remote_write_that_expired_on_its_way_removes_what_it_replaces() {
    let s = replicated(1);
    let cas = set(&s, b"k", b"v");
    let c = expired_on_its_way(b"k", cas + 1);
    assert_eq!(apply(&s, &c), Applied::Expired);
    assert!(read(&s, b"k").is_none());
    assert_eq!(apply(&s, &live(b"k", b"v", cas, 1)), Applied::Forgotten);
}

#[test]
fn stamps_far_ahead_of_the_clock_are_refused() {
    let s = replicated(1);
    let ahead = stamp_now(&s) + Hlc::stamp_of_ms(merge::MAX_AHEAD_MS + 60_000);
    assert_eq!(
        apply(&s, &live(b"k", b"v", ahead, 2)),
        Applied::FromTheFuture
    );
    assert_eq!(
        apply(&s, &live(b"k", b"v", u64::MAX, 2)),
        Applied::FromTheFuture
    );
    assert!(read(&s, b"k").is_none());
    // Minutes ahead is a clock that is off, not broken: taken.
    let minutes = stamp_now(&s) + Hlc::stamp_of_ms(5 * 60_000);
    assert_eq!(apply(&s, &live(b"k", b"v", minutes, 2)), Applied::Changed);
    assert!(
        set(&s, b"k", b"local") > minutes,
        "local writes order after it"
    );
}

#[test]
fn flushes_are_ordered_by_stamp_wherever_applied() {
    let pause = || std::thread::sleep(std::time::Duration::from_millis(5));
    let a = replicated(1);
    let b = replicated(2);
    let old = set(&b, b"old", b"1");
    pause();
    let flush = a.flush_all(None, now(&a));
    assert!(flush > old);
    pause();
    let newer = set(&b, b"new", b"2");
    assert!(newer > flush);
    // The flush reaches b after b's own newer write.
    let v = Version {
        stamp: flush,
        node: NodeId(1),
    };
    assert!(b.apply_flush(v, flush, 0, NodeId(1), now(&b)));
    assert!(read(&b, b"old").is_none());
    assert_eq!(read(&b, b"new").unwrap().0, b"2");
    assert!(!b.apply_flush(v, flush, 0, NodeId(1), now(&b)), "once");
    // Writes made before the flush are refused wherever they arrive late.
    assert_eq!(apply(&a, &live(b"old", b"1", old, 2)), Applied::Flushed);
    // A write made after it is kept.
    set(&a, b"after", b"3");
    assert_eq!(read(&a, b"after").unwrap().0, b"3");
}

#[test]
fn a_later_flush_does_not_bring_flushed_items_back() {
    let s = replicated(1);
    set(&s, b"k", b"v");
    s.flush_all(None, now(&s));
    s.flush_all(Some(now(&s) + 100), now(&s));
    assert!(read(&s, b"k").is_none());
    let mut seen = 0;
    s.visit_live(Cursor::default(), 10, now(&s), |_| seen += 1);
    assert_eq!(seen, 0);
}

#[test]
fn a_delayed_flush_takes_what_was_written_before_its_time() {
    let s = replicated(1);
    set(&s, b"early", b"1");
    s.flush_all(Some(now(&s) + 2), now(&s));
    set(&s, b"meanwhile", b"2");
    assert!(read(&s, b"early").is_some());
    s.clock().advance(3);
    assert!(read(&s, b"early").is_none());
    assert!(read(&s, b"meanwhile").is_none());
    set(&s, b"after", b"3");
    assert!(read(&s, b"after").is_some());
}

/// A peer's write this node had not seen when `flush_all N` came (a partition), made a
/// moment before the command: the flush orders after it, so it goes wherever it arrives.
#[test]
fn a_delayed_flush_takes_a_peers_write_made_before_the_command() {
    let s = replicated(1);
    let written = stamp_now(&s);
    let f = s.flush_all(Some(now(&s) + 1), now(&s));
    assert!(
        f > written,
        "the flush's stamp is not below the wall time of its command"
    );
    // Its stamp is the moment it takes effect, not that second rounded down.
    let due = Hlc::stamp_of_ms(s.clock().unix_ms_at(now(&s) + 1));
    assert!(f >= due);
    assert_eq!(apply(&s, &live(b"k", b"old", written, 2)), Applied::Changed);
    s.clock().advance(2);
    assert!(read(&s, b"k").is_none());
    assert_ne!(apply(&s, &live(b"k", b"old", written, 2)), Applied::Changed);
}

#[test]
fn touch_and_gat_make_a_new_version() {
    let s = replicated(1);
    let cas = set(&s, b"k", b"v");
    assert!(s.touch(b"k", now(&s) + 100, now(&s)));
    let (_, touched) = read(&s, b"k").unwrap();
    assert!(touched.stamp > cas);
    // The untouched version, arriving from a peer, is older now.
    assert_eq!(apply(&s, &live(b"k", b"v", cas, 1)), Applied::Stale);
    let opts = ReadOptions {
        touch: Some(now(&s) + 200),
        ..Default::default()
    };
    let gat = s.read(b"k", now(&s), opts, |r| r.unwrap().item.cas);
    assert!(gat > touched.stamp, "gat answers the new CAS");
    assert_eq!(read(&s, b"k").unwrap().1.stamp, gat);
}

#[test]
fn a_client_stamp_never_moves_a_version_back_or_the_clock_ahead() {
    let s = replicated(1);
    let cas = set(&s, b"k", b"v");
    let with_e = |e: u64| {
        let mut req = SetRequest::new(SetMode::Set, b"k", b"e");
        req.new_cas = Some(e);
        match s.set(&req, now(&s)).unwrap() {
            SetOutcome::Stored { cas, .. } => cas,
            other => panic!("{other:?}"),
        }
    };
    // Below the version held: a fresh stamp instead.
    let low = with_e(5);
    assert!(low > cas);
    // Far ahead of the clock, or at the very top: a fresh stamp, no overflow.
    let top = with_e(u64::MAX);
    assert!(top > low && top < stamp_now(&s) + Hlc::stamp_of_ms(1000));
    // Ahead of the version held and near the clock: taken as given.
    let wanted = top + 1000;
    assert_eq!(with_e(wanted), wanted);
    assert!(set(&s, b"k", b"after") > wanted);
    // Not below a deleted key's marker either.
    assert_eq!(delete(&s, b"k"), DeleteOutcome::Deleted);
    let fresh = with_e(wanted + 1);
    assert!(fresh > wanted + 1, "the delete's stamp is above it");
}

#[test]
fn tombstones_count_against_the_memory_limit_and_can_go_when_it_is_spent() {
    let s = node(
        StoreConfig {
            limit_bytes: 64 * 1024,
            shards: 1,
            tombstone_secs: 600,
            ..Default::default()
        },
        1,
    );
    let t = stamp_now(&s);
    let mut last = 0;
    for i in 0..5000u64 {
        let key = format!("deleted-key-number-{i}");
        // Held, then deleted: a marker (a key not held would leave none).
        let (written, gone) = (t + 2 * i, t + 2 * i + 1);
        assert_eq!(
            apply(&s, &live(key.as_bytes(), b"v", written, 2)),
            Applied::Changed
        );
        assert_eq!(
            apply(&s, &deleted(key.as_bytes(), gone, 2)),
            Applied::Changed
        );
        last = i;
        assert!(s.used_bytes() <= 64 * 1024);
    }
    let st = s.stats();
    assert!(st.tombstones > 0 && st.tombstones < 5000, "{st:?}");
    // Whichever markers went, no older write of any of those keys is taken.
    for i in 0..=last {
        let key = format!("deleted-key-number-{i}");
        let r = apply(&s, &live(key.as_bytes(), b"zombie", t + 2 * i, 3));
        assert!(matches!(r, Applied::Stale | Applied::Forgotten), "{r:?}");
    }
}

#[test]
fn an_invalidation_that_finds_no_room_forgets_the_key_and_says_so() {
    let s = node(
        StoreConfig {
            limit_bytes: 16 << 10,
            shards: 1,
            evict: false,
            tombstone_secs: 600,
            ..Default::default()
        },
        1,
    );
    let mut sub = s.subscribe().unwrap();
    let v0 = set(&s, b"k", &[b'a'; 40]);
    set(&s, b"k", &[b'b'; 40]);
    let mut i = 0;
    while s
        .set(
            &SetRequest::new(SetMode::Set, format!("f{i}").as_bytes(), b"x"),
            now(&s),
        )
        .is_ok()
    {
        i += 1;
    }
    sub.read(usize::MAX);
    let inval = DeleteRequest {
        key: b"k",
        invalidate: true,
        ..Default::default()
    };
    assert_eq!(s.delete(&inval, now(&s)), DeleteOutcome::Deleted);
    let got = sub.read(usize::MAX).records;
    assert!(read(&s, b"k").is_none(), "no room to mark it stale: gone");
    assert_eq!(
        got.last().map(|r| (r.kind(), r.key())),
        Some((Kind::Deleted, &b"k"[..]))
    );
    assert_ne!(apply(&s, &live(b"k", b"zombie", v0, 2)), Applied::Changed);
}

#[test]
fn remote_delayed_flushes_are_bounded_too() {
    let s = replicated(1);
    let v = Version {
        stamp: 1,
        node: NodeId(2),
    };
    assert!(!s.apply_flush(v, u64::MAX, now(&s) + 1, NodeId(2), now(&s)));
    s.clock().advance(2);
    set(&s, b"k", b"v");
    assert!(read(&s, b"k").is_some(), "local writes stay visible");
}

#[test]
fn a_local_delayed_flush_covers_items_stamped_ahead_of_the_clock() {
    let s = replicated(1);
    let ahead = stamp_now(&s) + Hlc::stamp_of_ms(10 * 60_000);
    assert_eq!(apply(&s, &live(b"k", b"v", ahead, 2)), Applied::Changed);
    s.flush_all(Some(now(&s) + 2), now(&s));
    s.clock().advance(3);
    assert!(read(&s, b"k").is_none());
}

#[test]
fn a_remote_write_expired_on_its_way_is_passed_on() {
    let s = replicated(1);
    let cas = set(&s, b"k", b"v");
    let mut sub = s.subscribe().unwrap();
    let c = expired_on_its_way(b"k", cas + 1);
    assert_eq!(apply(&s, &c), Applied::Expired);
    let got = sub.read(usize::MAX).records;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].version(), got[0].origin()),
        (c.version, Some(NodeId(2)))
    );
}

#[test]
fn the_waker_runs_with_no_shard_locked() {
    let s = Arc::new(node(
        StoreConfig {
            shards: 1,
            ..Default::default()
        },
        1,
    ));
    set(&s, b"k", b"v");
    let sub = s.subscribe().unwrap();
    let (probe, free) = (
        s.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(true)),
    );
    let f = free.clone();
    sub.set_waker(Arc::new(move || {
        let unlocked = probe.inner.shards[0].0.try_lock().is_ok();
        f.fetch_and(unlocked, std::sync::atomic::Ordering::Relaxed);
    }));
    assert!(s.touch(b"k", now(&s) + 100, now(&s)));
    let opts = ReadOptions {
        vivify: Some(0),
        ..Default::default()
    };
    s.read(b"new", now(&s), opts, |_| ());
    assert!(free.load(std::sync::atomic::Ordering::Relaxed));
}

#[test]
fn a_client_stamp_below_a_due_flush_is_not_taken() {
    let s = replicated(1);
    let f = s.flush_all(Some(now(&s) + 1), now(&s));
    s.clock().advance(2);
    let mut req = SetRequest::new(SetMode::Set, b"k", b"v");
    req.new_cas = Some(f - 1);
    assert!(matches!(
        s.set(&req, now(&s)),
        Ok(SetOutcome::Stored { .. })
    ));
    assert!(
        read(&s, b"k").is_some(),
        "stored with a fresh stamp, so visible"
    );
}

#[test]
fn a_huge_marker_window_does_not_overflow() {
    let s = node(
        StoreConfig {
            tombstone_secs: u32::MAX,
            ..Default::default()
        },
        1,
    );
    set(&s, b"k", b"v");
    assert_eq!(delete(&s, b"k"), DeleteOutcome::Deleted);
    assert_eq!(s.stats().tombstones, 1);
}

/// Nodes that exchange every change, in any order, duplicated and late, end up holding the
/// same state, and none ever shows a value a delete or flush it knows of has removed.
mod convergence {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const NODES: usize = 3;
    const KEYS: u8 = 6;

    #[derive(Debug, Clone)]
    enum Op {
        Set(usize, u8, u8),
        Append(usize, u8, u8),
        Incr(usize, u8),
        Delete(usize, u8),
        Touch(usize, u8),
        Flush(usize),
        /// Writes this many fillers on a node: evicts, when memory is small.
        Fill(usize, u8),
        /// Time passes: delete markers past their window go.
        Advance(u8),
        /// Delivers a message in flight (index modulo their number), or only a copy of it.
        Deliver(usize, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let n = 0..NODES;
        let k = 0..KEYS;
        prop_oneof![
            3 => (n.clone(), k.clone(), any::<u8>()).prop_map(|(n, k, v)| Op::Set(n, k, v)),
            1 => (n.clone(), k.clone(), any::<u8>()).prop_map(|(n, k, v)| Op::Append(n, k, v)),
            1 => (n.clone(), k.clone()).prop_map(|(n, k)| Op::Incr(n, k)),
            2 => (n.clone(), k.clone()).prop_map(|(n, k)| Op::Delete(n, k)),
            1 => (n.clone(), k.clone()).prop_map(|(n, k)| Op::Touch(n, k)),
            1 => n.clone().prop_map(Op::Flush),
            1 => (n, 1u8..120).prop_map(|(n, c)| Op::Fill(n, c)),
            1 => (1u8..8).prop_map(Op::Advance),
            8 => (any::<usize>(), any::<bool>()).prop_map(|(i, dup)| Op::Deliver(i, dup)),
        ]
    }

    struct Msg {
        to: usize,
        from: usize,
        rec: Record,
    }

    struct Cluster {
        clock: Arc<Clock>,
        nodes: Vec<Store>,
        readers: Vec<FeedReader>,
        net: Vec<Msg>,
        /// Every change made by a client, on any node (or by a node itself: a delete telling
        /// a peer of a state it dropped), and the node it was made on.
        made: Vec<Record>,
        made_on: Vec<usize>,
        /// Per node: the newest delete and flush it has been told of, per key.
        told_deleted: Vec<HashMap<Vec<u8>, Version>>,
        told_flushed: Vec<u64>,
        forgot: bool,
    }

    fn id(i: usize) -> NodeId {
        NodeId(i as u16 + 1)
    }

    impl Cluster {
        fn new(small: bool, markers: bool) -> Cluster {
            let clock = Arc::new(Clock::new());
            let nodes: Vec<Store> = (0..NODES)
                .map(|i| {
                    let cfg = StoreConfig {
                        node: id(i),
                        tombstone_secs: if markers { 10 } else { 0 },
                        limit_bytes: if small { 32 << 10 } else { 64 << 20 },
                        shards: if small { 2 } else { 8 },
                        ..Default::default()
                    };
                    Store::new(cfg, clock.clone())
                })
                .collect();
            let readers = nodes.iter().map(|s| s.subscribe().unwrap()).collect();
            Cluster {
                clock,
                nodes,
                readers,
                net: Vec::new(),
                made: Vec::new(),
                made_on: Vec::new(),
                told_deleted: vec![HashMap::new(); NODES],
                told_flushed: vec![0; NODES],
                forgot: false,
            }
        }

        fn now(&self) -> u32 {
            self.clock.now()
        }

        /// Moves what each node's feed holds onto the network, to every other node but
        /// the one a change came from.
        fn collect(&mut self) {
            for (i, r) in self.readers.iter_mut().enumerate() {
                let batch = r.read(usize::MAX);
                assert!(batch.lost.is_empty(), "the feed keeps everything here");
                for rec in batch.records {
                    if rec.origin().is_none() {
                        self.made.push(rec.clone());
                        self.made_on.push(i);
                    }
                    for to in (0..NODES).filter(|&j| j != i && rec.origin() != Some(id(j))) {
                        self.net.push(Msg {
                            to,
                            from: i,
                            rec: rec.clone(),
                        });
                    }
                }
            }
        }

        fn tell_delete(&mut self, node: usize, key: &[u8], v: Version) {
            let e = self.told_deleted[node].entry(key.to_vec()).or_default();
            *e = (*e).max(v);
        }

        fn deliver(&mut self, m: &Msg) {
            let s = &self.nodes[m.to];
            let now = self.clock.now();
            let rec = &m.rec;
            match rec.kind() {
                Kind::Flush => {
                    s.apply_flush(
                        rec.version(),
                        rec.flush_before(),
                        rec.flush_at(),
                        id(m.from),
                        now,
                    );
                    let f = &mut self.told_flushed[m.to];
                    *f = (*f).max(rec.flush_before());
                }
                kind => {
                    let change = RemoteChange::of_record(rec, rec.exptime(), id(m.from))
                        .expect("a live or deleted record");
                    let r = s.apply(&change, now).unwrap();
                    assert_ne!(r, Applied::FromTheFuture);
                    assert_ne!(r, Applied::Expired);
                    if r == Applied::Forgotten {
                        self.forgot = true;
                    }
                    if kind == Kind::Deleted {
                        self.tell_delete(m.to, rec.key(), rec.version());
                    }
                }
            }
        }

        fn run(&mut self, op: &Op) {
            let now = self.now();
            let key = |k: u8| vec![b'k', k];
            match *op {
                Op::Set(n, k, v) => {
                    let (key, value) = (key(k), [v]);
                    let r = SetRequest::new(SetMode::Set, &key, &value);
                    self.nodes[n].set(&r, now).unwrap();
                }
                Op::Append(n, k, v) => {
                    let (key, value) = (key(k), [v]);
                    let r = SetRequest::new(SetMode::Append, &key, &value);
                    self.nodes[n].set(&r, now).unwrap();
                }
                Op::Incr(n, k) => {
                    let req = ArithRequest {
                        key: &key(k),
                        incr: true,
                        delta: 1,
                        vivify: Some((0, 7)),
                        ..Default::default()
                    };
                    self.nodes[n].arith(&req, now);
                }
                Op::Delete(n, k) => {
                    let key = key(k);
                    let req = DeleteRequest {
                        key: &key,
                        ..Default::default()
                    };
                    self.nodes[n].delete(&req, now);
                }
                Op::Touch(n, k) => {
                    self.nodes[n].touch(&key(k), now + 5000, now);
                }
                Op::Flush(n) => {
                    let f = self.nodes[n].flush_all(None, now);
                    self.told_flushed[n] = self.told_flushed[n].max(f);
                }
                Op::Fill(n, count) => {
                    for i in 0..count {
                        let key = format!("fill-{n}-{i}-{}", self.made.len());
                        let r = SetRequest::new(SetMode::Set, key.as_bytes(), &[b'f'; 300]);
                        self.nodes[n].set(&r, now).unwrap();
                    }
                }
                Op::Advance(secs) => {
                    self.clock.advance(secs as u64);
                    let now = self.now();
                    for s in &self.nodes {
                        if s.reclaim(10_000, now) > 0 {
                            self.forgot = true;
                        }
                    }
                }
                Op::Deliver(i, dup) => {
                    if !self.net.is_empty() {
                        let i = i % self.net.len();
                        let m = if dup {
                            let m = &self.net[i];
                            Msg {
                                to: m.to,
                                from: m.from,
                                rec: m.rec.clone(),
                            }
                        } else {
                            self.net.swap_remove(i)
                        };
                        self.deliver(&m);
                    }
                }
            }
            self.collect_and_check();
        }

        /// Ships what the feeds hold; a node's own deletes count as told to it.
        fn collect_and_check(&mut self) {
            let before = self.made.len();
            self.collect();
            let deletes: Vec<(usize, Vec<u8>, Version)> = self.made[before..]
                .iter()
                .zip(&self.made_on[before..])
                .filter(|(r, _)| r.kind() == Kind::Deleted)
                .map(|(r, &n)| (n, r.key().to_vec(), r.version()))
                .collect();
            for (n, key, v) in deletes {
                self.tell_delete(n, &key, v);
            }
            self.check_nothing_comes_back();
        }

        /// No node shows a version older than a delete or flush it has been told of.
        fn check_nothing_comes_back(&self) {
            for (n, s) in self.nodes.iter().enumerate() {
                for k in 0..KEYS {
                    let key = [b'k', k];
                    if let Some((_, v)) = read(s, &key) {
                        if let Some(d) = self.told_deleted[n].get(&key[..]) {
                            assert!(v > *d, "node {n} shows {key:?} at {v:?}, deleted at {d:?}");
                        }
                        assert!(
                            v.stamp >= self.told_flushed[n],
                            "node {n} shows a flushed {key:?}"
                        );
                    }
                }
            }
        }

        /// Delivers everything in flight, and what applying it makes the nodes forward.
        fn settle(&mut self) {
            let mut rounds = 0;
            while let Some(m) = self.net.pop() {
                self.deliver(&m);
                self.collect_and_check();
                rounds += 1;
                assert!(rounds < 20_000, "changes echo forever");
            }
        }

        /// What every node must hold of `key` once all changes are in: the newest change
        /// made to it anywhere, unless that is a delete or was flushed.
        fn winner(&self, key: &[u8]) -> Option<(Vec<u8>, Version)> {
            let flushed = self
                .made
                .iter()
                .filter(|r| r.kind() == Kind::Flush)
                .map(Record::flush_before)
                .max()
                .unwrap_or(0);
            let last = self
                .made
                .iter()
                .filter(|r| r.kind() != Kind::Flush && r.key() == key)
                .max_by_key(|r| r.version())?;
            (last.kind() == Kind::Live && last.version().stamp >= flushed)
                .then(|| (last.value().to_vec(), last.version()))
        }

        /// The expiry version `v` was made with (every touch is a new version).
        fn expiry_of(&self, v: Version) -> u32 {
            self.made
                .iter()
                .find(|r| r.kind() == Kind::Live && r.version() == v)
                .map(Record::exptime)
                .expect("the version was made")
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn nodes_that_exchanged_every_change_agree(
            ops in proptest::collection::vec(op(), 1..120),
            small in any::<bool>(),
            markers in any::<bool>(),
        ) {
            let mut c = Cluster::new(small, markers);
            for op in &ops {
                c.run(op);
            }
            c.settle();
            let evicted = c.nodes.iter().any(|s| s.stats().evictions > 0);
            for k in 0..KEYS {
                let key = [b'k', k];
                let want = c.winner(&key);
                for (n, s) in c.nodes.iter().enumerate() {
                    let got = read(s, &key);
                    if evicted || c.forgot {
                        // A node may have forgotten the key, but never holds another state.
                        prop_assert!(got.is_none() || got == want, "node {} key {}: {:?} vs {:?}", n, k, got, want);
                    } else {
                        prop_assert_eq!(&got, &want, "node {} key {}", n, k);
                    }
                    // Every copy of the winner expires when the change that made it said.
                    if let (Some(e), Some((_, v))) = (expiry(s, &key), &want) {
                        prop_assert_eq!(e, c.expiry_of(*v), "node {} key {}", n, k);
                    }
                }
            }
        }
    }
}

#[test]
fn changes_from_the_one_peer_everyone_reads_for_are_not_recorded() {
    let s = replicated(1);
    let mut for_2 = s.subscribe().unwrap();
    for_2.set_peer(NodeId(2));
    let t = stamp_now(&s);
    assert_eq!(apply(&s, &live(b"a", b"x", t, 2)), Applied::Changed);
    assert_eq!(apply(&s, &deleted(b"b", t, 2)), Applied::Changed);
    s.apply_flush(
        Version {
            stamp: 1,
            node: NodeId(2),
        },
        1,
        0,
        NodeId(2),
        now(&s),
    );
    assert!(
        for_2.read(1 << 20).records.is_empty(),
        "never sent back there: not kept"
    );
    assert_eq!(s.feed_total(), for_2.cursor().total());
    set(&s, b"mine", b"y");
    assert_eq!(for_2.read(1 << 20).records.len(), 1, "a client's change is");
    // A reader for another peer needs node 2's changes (it may not reach node 2 itself).
    let mut for_3 = s.subscribe().unwrap();
    for_3.set_peer(NodeId(3));
    assert_eq!(
        apply(&s, &live(b"c", b"z", stamp_now(&s), 2)),
        Applied::Changed
    );
    assert_eq!(for_3.read(1 << 20).records.len(), 1);
    drop(for_3);
    assert_eq!(
        apply(&s, &live(b"d", b"w", stamp_now(&s), 2)),
        Applied::Changed
    );
    let seen = for_2.read(1 << 20).records;
    assert_eq!(
        seen.len(),
        1,
        "kept while node 3's reader was there, not after"
    );
    assert_eq!(seen[0].key(), b"c");
}

/// A peer's delayed flush comes due on this node's clock a little before this node's wall
/// clock reaches the flush's stamp (the two relative-second boundaries differ): a write made
/// after it took effect here must still be stamped above it, not vanish as flushed.
#[test]
fn a_write_after_a_peers_delayed_flush_came_due_is_kept() {
    let s = replicated(2);
    let before = Hlc::stamp_of_ms(s.clock().unix_ms() + 1500);
    let v = Version {
        stamp: before,
        node: NodeId(1),
    };
    assert!(s.apply_flush(v, before, now(&s) + 1, NodeId(1), now(&s)));
    s.clock().advance(1);
    let stamp = set(&s, b"after", b"1");
    assert!(stamp > before, "stamped {stamp}, the flush {before}");
    assert_eq!(read(&s, b"after").map(|r| r.0), Some(b"1".to_vec()));
}

/// The delete records a reader of `s`'s feed gets next: (key, version).
fn deletes_sent(sub: &mut FeedReader) -> Vec<(Vec<u8>, Version)> {
    sub.read(usize::MAX)
        .records
        .iter()
        .filter(|r| r.kind() == Kind::Deleted)
        .map(|r| (r.key().to_vec(), r.version()))
        .collect()
}

#[test]
fn a_delete_of_a_key_not_held_is_sent_to_peers_and_remembered_without_a_marker() {
    let s = replicated(1);
    let mut sub = s.subscribe().unwrap();
    // A peer's write of the key, on its way here while the key is deleted here.
    let before = stamp_now(&s);
    assert_eq!(delete(&s, b"k"), DeleteOutcome::NotFound);
    let sent = deletes_sent(&mut sub);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (key, v) = &sent[0];
    assert_eq!((&key[..], v.node), (&b"k"[..], NodeId(1)));
    assert!(v.stamp >= before, "a new version");
    assert_eq!(s.stats().tombstones, 0, "no marker");
    assert_eq!(s.used_bytes(), 0, "nothing taken from the segments");
    assert_eq!(
        apply(&s, &live(b"k", b"zombie", before, 2)),
        Applied::Forgotten
    );
    assert!(read(&s, b"k").is_none());
    // A peer that missed it gets it with the shard's snapshot.
    let (recs, _) = s.scan(Cursor::default(), usize::MAX, now(&s));
    assert!(
        recs.iter()
            .any(|r| r.kind() == Kind::Deleted && r.key() == b"k" && r.version() == *v),
        "the snapshot carries the delete"
    );
    // A later write is taken.
    set(&s, b"k", b"new");
    assert_eq!(read(&s, b"k").unwrap().0, b"new");
}

#[test]
fn a_delete_of_a_key_held_only_as_a_marker_sends_a_newer_delete_and_frees_the_marker() {
    let s = replicated(1);
    set(&s, b"k", b"v");
    let mut sub = s.subscribe().unwrap();
    assert_eq!(delete(&s, b"k"), DeleteOutcome::Deleted);
    assert_eq!(s.stats().tombstones, 1);
    let first = deletes_sent(&mut sub);
    assert_eq!(delete(&s, b"k"), DeleteOutcome::NotFound);
    let again = deletes_sent(&mut sub);
    assert_eq!((first.len(), again.len()), (1, 1));
    assert!(again[0].1 > first[0].1);
    assert_eq!(s.stats().tombstones, 0);
    assert_eq!(
        apply(&s, &live(b"k", b"zombie", first[0].1.stamp, 2)),
        Applied::Forgotten
    );
}

/// A client's delete of `key` with its own stamp (meta's `E`).
fn delete_at(s: &Store, key: &[u8], stamp: u64) -> DeleteOutcome {
    let req = DeleteRequest {
        key,
        new_cas: Some(stamp),
        ..Default::default()
    };
    s.delete(&req, now(s))
}

#[test]
fn a_client_stamp_is_kept_by_a_delete_of_a_key_not_held() {
    let s = replicated(1);
    let mut sub = s.subscribe().unwrap();
    let wanted = stamp_now(&s) + 1000;
    assert_eq!(delete_at(&s, b"k", wanted), DeleteOutcome::NotFound);
    assert_eq!(deletes_sent(&mut sub)[0].1.stamp, wanted);
}

/// A peer's write at the very stamp of a delete made here (two nodes' clocks in step, or a
/// client's `E`), from a lower node id, loses; and as no version lies between the two, the
/// delete told back is the dropped delete's own version. It was once just below it, under
/// node id 0, which the peer's write beat: the peer kept the deleted key for good.
#[test]
fn a_write_stamped_as_a_delete_here_is_answered_with_that_delete() {
    let s = replicated(3);
    let mut sub = s.subscribe().unwrap();
    let stamp = stamp_now(&s) + 1000;
    assert_eq!(delete_at(&s, b"k", stamp), DeleteOutcome::NotFound);
    let mine = deletes_sent(&mut sub);
    let at = |node| Version {
        stamp,
        node: NodeId(node),
    };
    assert_eq!(mine, [(b"k".to_vec(), at(3))]);
    assert_eq!(apply(&s, &live(b"k", b"v", stamp, 2)), Applied::Forgotten);
    assert_eq!(deletes_sent(&mut sub), mine, "told at the delete's version");
    // The peer holding the write drops it.
    let peer = replicated(2);
    assert_eq!(apply(&peer, &live(b"k", b"v", stamp, 2)), Applied::Changed);
    assert_eq!(apply(&peer, &deleted(b"k", stamp, 3)), Applied::Changed);
    assert!(read(&peer, b"k").is_none());
}

/// What replication sets aside is cut from the starting `-m`; `cache_memlimit` lowering
/// the limit below it still leaves the items room.
#[test]
fn a_lowered_limit_leaves_items_room_beside_what_is_set_aside() {
    let s = node(
        StoreConfig {
            limit_bytes: 1 << 30,
            tombstone_secs: 600,
            ..Default::default()
        },
        1,
    );
    s.set_limit(8 << 20);
    for i in 0..100 {
        let key = format!("k{i}");
        set(&s, key.as_bytes(), &[b'v'; 1000]);
        assert!(read(&s, key.as_bytes()).is_some(), "{key}");
    }
}

/// A client's stamp 0 (`E0`) is not taken: the store keeps 0 for "nothing here".
#[test]
fn a_client_stamp_of_zero_gets_a_fresh_one() {
    let s = replicated(1);
    let mut sub = s.subscribe().unwrap();
    let req = DeleteRequest {
        key: b"k",
        new_cas: Some(0),
        ..Default::default()
    };
    assert_eq!(s.delete(&req, now(&s)), DeleteOutcome::NotFound);
    assert!(deletes_sent(&mut sub)[0].1.stamp > 0);
}

#[test]
fn conditional_deletes_and_invalidations_of_a_key_not_held_change_nothing() {
    let s = replicated(1);
    let mut sub = s.subscribe().unwrap();
    let t = stamp_now(&s);
    let cas = DeleteRequest {
        key: b"k",
        compare_cas: Some(t),
        ..Default::default()
    };
    let invalidate = DeleteRequest {
        key: b"k",
        invalidate: true,
        ..Default::default()
    };
    let strip = DeleteRequest {
        key: b"k",
        strip_value: true,
        ..Default::default()
    };
    for req in [cas, invalidate, strip] {
        assert_eq!(s.delete(&req, now(&s)), DeleteOutcome::NotFound);
    }
    assert!(sub.read(usize::MAX).records.is_empty(), "nothing sent");
    assert_eq!(apply(&s, &live(b"k", b"v", t, 2)), Applied::Changed);
}

#[test]
fn unreplicated_a_delete_of_a_key_not_held_sends_and_remembers_nothing() {
    let s = node(StoreConfig::default(), 1);
    let mut sub = s.subscribe().unwrap();
    let t = stamp_now(&s);
    assert_eq!(delete(&s, b"k"), DeleteOutcome::NotFound);
    assert!(sub.read(usize::MAX).records.is_empty(), "nothing sent");
    assert_eq!(apply(&s, &live(b"k", b"v", t, 2)), Applied::Changed);
}

#[test]
fn touches_that_each_shorten_a_life_by_a_second_reach_peers_too() {
    let (a, b) = (replicated(1), replicated(2));
    let mut feed = a.subscribe().unwrap();
    set(&a, b"k", b"v");
    let t = now(&a);
    assert!(a.touch(b"k", t + 100, t));
    // A client moving a deadline earlier a second at a time: each touch is within the
    // slack of the expiry held before it, so none is a new version.
    for e in (50..100).rev() {
        assert!(a.touch(b"k", t + e, t));
    }
    for rec in feed.read(usize::MAX).records {
        apply(
            &b,
            &RemoteChange::of_record(&rec, rec.exptime(), NodeId(1)).unwrap(),
        );
    }
    let (ea, eb) = (expiry(&a, b"k").unwrap(), expiry(&b, b"k").unwrap());
    assert!(
        ea.abs_diff(eb) <= 1,
        "node 1 expires the key at {ea}, its peer at {eb}"
    );
}

/// reader of its feed.
fn mesh(n: u16) -> (Arc<Clock>, Vec<Store>, Vec<FeedReader>) {
    let clock = Arc::new(Clock::new());
    let nodes: Vec<Store> = (1..=n)
        .map(|id| {
            let cfg = StoreConfig {
                node: NodeId(id),
                tombstone_secs: 600,
                ..Default::default()
            };
            Store::new(cfg, clock.clone())
        })
        .collect();
    let feeds = nodes.iter().map(|s| s.subscribe().unwrap()).collect();
    (clock, nodes, feeds)
}

/// Applies a record sent at the sender's second `sender_now` as a link does: its expiry
/// becomes the remaining lifetime on the receiver's clock.
fn receive(to: &Store, rec: &Record, sender_now: u32, from: NodeId) -> Applied {
    let my_now = now(to);
    let exptime = crate::replication::expiry::local_exptime(rec.exptime(), sender_now, my_now);
    let c = RemoteChange::of_record(rec, exptime, from).unwrap();
    to.apply(&c, my_now).unwrap()
}

#[test]
fn a_touch_that_reaches_a_peer_after_its_copy_expired_brings_the_key_back_there() {
    let (clock, nodes, mut feeds) = mesh(2);
    let (a, b) = (&nodes[0], &nodes[1]);
    let t = now(a);
    let r = SetRequest {
        exptime: t + 10,
        ..SetRequest::new(SetMode::Set, b"session", b"v")
    };
    a.set(&r, t).unwrap();
    for rec in feeds[0].read(usize::MAX).records {
        assert_eq!(receive(b, &rec, t, NodeId(1)), Applied::Changed);
    }
    // The link goes down; a client keeps the session alive on node 1.
    assert!(a.touch(b"session", t + 100, t));
    let touched = feeds[0].read(usize::MAX).records;
    clock.advance(20);
    // The link comes back: the backlog (or a snapshot) brings the touch.
    let later = now(a);
    for rec in &touched {
        receive(b, rec, later, NodeId(1));
    }
    assert!(read(a, b"session").is_some());
    assert_eq!(
        read(b, b"session"),
        read(a, b"session"),
        "node 2 forgot the version when its copy expired, and refuses the touch of it"
    );
}

#[test]
fn a_touch_does_not_echo_around_a_mesh_with_a_slow_link() {
    let (clock, nodes, mut feeds) = mesh(3);
    set(&nodes[0], b"k", b"v");
    let t = now(&nodes[0]);
    assert!(nodes[0].touch(b"k", t + 100, t));
    // Everything delivered at once: all agree.
    let id = |i: usize| NodeId(i as u16 + 1);
    let mut net: Vec<(usize, usize, u32, Record)> = Vec::new();
    let collect = |feeds: &mut Vec<FeedReader>, net: &mut Vec<_>, now: u32| {
        for (i, f) in feeds.iter_mut().enumerate() {
            for rec in f.read(usize::MAX).records {
                for to in (0..3).filter(|&j| j != i && rec.origin() != Some(id(j))) {
                    net.push((to, i, now, rec.clone()));
                }
            }
        }
    };
    collect(&mut feeds, &mut net, t);
    while let Some((to, from, sent, rec)) = net.pop() {
        receive(&nodes[to], &rec, sent, id(from));
        collect(&mut feeds, &mut net, now(&nodes[0]));
    }
    // Node 2 now reads its links two seconds late (busy, or behind on a backlog); a
    // client lengthens the life on node 1.
    assert!(nodes[0].touch(b"k", t + 200, t));
    collect(&mut feeds, &mut net, t);
    let mut rounds = 0;
    while !net.is_empty() {
        rounds += 1;
        assert!(
            rounds < 50,
            "the touch still goes round after {rounds} rounds: node 1 expires it at {:?}, \
             {} seconds after the touch said",
            expiry(&nodes[0], b"k"),
            expiry(&nodes[0], b"k").unwrap() - (t + 200),
        );
        for (to, from, sent, rec) in std::mem::take(&mut net) {
            if to == 1 {
                net.push((to, from, sent, rec));
            } else {
                receive(&nodes[to], &rec, sent, id(from));
            }
        }
        let late = std::mem::take(&mut net);
        collect(&mut feeds, &mut net, now(&nodes[0]));
        clock.advance(2);
        for (to, from, sent, rec) in late {
            receive(&nodes[to], &rec, sent, id(from));
        }
        collect(&mut feeds, &mut net, now(&nodes[0]));
    }
}

//! Convergence after partitions, in cases that once left nodes holding different data once
//! healed: real processes on 127.0.0.200 to 127.0.0.209 and 127.0.7.1 to 127.0.7.32, links
//! through fault proxies.

mod common;

use std::time::Duration;

use common::node::{get, pair_at, sees, Node};
use common::pair::ProxiedPair;
use common::{eventually, free_port, Client};

/// A key that lands in the same shard and the same bucket of the store's memory of dropped
/// states as `key` (the low bits pick the shard, bits 32 and up the bucket).
fn neighbour_of(key: &str) -> String {
    use repcached::store::shard::hash_key;
    let same = |h: u64| (h & 0x3ff, (h >> 32) % 256);
    let want = same(hash_key(key.as_bytes()));
    (0..)
        .map(|i| format!("n{i}"))
        .find(|k| same(hash_key(k.as_bytes())) == want)
        .unwrap()
}

/// The node's id (random, new at each start).
fn node_id(n: &Node) -> u16 {
    n.client()
        .stat("replication_node_id")
        .parse::<u16>()
        .unwrap()
}

/// Milliseconds of the wall clock: a client's `E` stamp is this shifted left by 16.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Deletes `n` keys that no test writes (`absent0`, ...), pipelined: each is a state the
/// node drops and remembers, as a cache invalidating what it does not hold.
fn delete_absent_keys(c: &mut Client, n: usize) {
    for chunk in (0..n).step_by(2000) {
        let batch: String = (chunk..(chunk + 2000).min(n))
            .map(|i| format!("delete absent{i} noreply\r\n"))
            .collect();
        c.send(batch.as_bytes());
    }
    c.expect(b"mn\r\n", b"MN\r\n");
}

/// The keys of `keys` that `c`'s node does not hold as `want` (a value, or none), once
/// they had 5 s to get there.
fn missing(c: &mut Client, keys: &[String], want: Option<&str>) -> Vec<String> {
    let mut left = Vec::new();
    eventually(Duration::from_secs(5), || {
        left = keys
            .iter()
            .filter(|k| get(c, k).as_deref() != want)
            .cloned()
            .collect();
        left.is_empty()
    });
    left
}

#[test]
fn a_write_made_during_a_partition_survives_an_unrelated_key_expiring_on_the_other_side() {
    let p = ProxiedPair::start(200);
    let (mut ca, mut cb) = (p.a.client(), p.b.client());
    let other = neighbour_of("session");
    p.partition();
    // Written on the first node during the partition, and acknowledged.
    ca.expect(b"set session 0 0 5\r\nalice\r\n", b"STORED\r\n");
    std::thread::sleep(Duration::from_millis(20));
    // A later, short-lived write of another key on the second node, which expires there
    // and is dropped by a read.
    cb.expect(
        format!("set {other} 0 1 1\r\nx\r\n").as_bytes(),
        b"STORED\r\n",
    );
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(get(&mut cb, &other), None);
    p.heal();
    assert!(
        sees(&p.b, "session", Some("alice")),
        "the write made during the partition reached the other node"
    );
    assert_eq!(get(&mut ca, "session").as_deref(), Some("alice"));
}

/// The first line of `mg <key> <flags>` (the value, if asked for, is read and dropped).
fn mg_line(c: &mut Client, key: &str, flags: &str) -> String {
    let mut out = c.call_until(format!("mg {key} {flags}\r\n").as_bytes(), b"\r\n");
    let end = out.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let line = String::from_utf8(out[..end - 2].to_vec()).unwrap();
    if line.starts_with("VA ") {
        let n: usize = line.split(' ').nth(1).unwrap().parse().unwrap();
        let have = out.len() - end;
        out.extend(c.read_n(n + 2 - have));
    }
    line
}

#[test]
fn an_invalidated_item_is_stale_on_every_node() {
    let (a, b) = pair_at([206, 207], (free_port(), free_port()), [&[], &[]]);
    let (mut ca, mut cb) = (a.client(), b.client());
    ca.expect(b"set page 0 0 4\r\nhtml\r\n", b"STORED\r\n");
    assert!(sees(&b, "page", Some("html")));
    // Marked stale on the first node: a new version (CAS) that reaches the other node.
    ca.expect(b"md page I T30\r\n", b"HD\r\n");
    let cas = mg_line(&mut ca, "page", "c");
    assert!(cas.contains(" X"), "stale here: {cas}");
    let cas = cas
        .split(' ')
        .find(|t| t.starts_with('c'))
        .unwrap()
        .to_string();
    let mut last = String::new();
    let same_version = eventually(Duration::from_secs(5), || {
        last = mg_line(&mut cb, "page", "c");
        last.contains(&cas)
    });
    assert!(
        same_version,
        "the invalidation reached the other node: {last}"
    );
    // The same version must be the same state: stale there too, so its readers recache
    // rather than take the value as fresh.
    assert!(
        last.split(' ').any(|t| t == "X"),
        "the other node answers the invalidated item as fresh: {last}"
    );
}

#[test]
fn a_key_stored_in_base64_is_returned_the_same_way_by_every_node() {
    let (a, b) = pair_at([208, 209], (free_port(), free_port()), [&[], &[]]);
    let (mut ca, mut cb) = (a.client(), b.client());
    // "bWI2NA==" is "mb64": stored as a binary key, so read back in base64.
    ca.expect(b"ms bWI2NA== 2 b\r\nxy\r\n", b"HD\r\n");
    let here = mg_line(&mut ca, "bWI2NA==", "b k v");
    assert_eq!(here, "VA 2 kbWI2NA== b");
    let mut last = String::new();
    let same = eventually(Duration::from_secs(5), || {
        last = mg_line(&mut cb, "bWI2NA==", "b k v");
        last == here
    });
    assert!(same, "the other node answers {last:?}, this one {here:?}");
}

/// A delayed flush that came due but that the background reclaim has not yet folded into
/// every shard must be in one or the other, or the peer keeps what it removed.
#[test]
fn a_delayed_flush_that_just_came_due_is_in_the_summary_a_peer_gets() {
    use repcached::store::{Clock, Store, StoreConfig};
    let clock = std::sync::Arc::new(Clock::new());
    let store = Store::new(StoreConfig::default(), clock.clone());
    let now = clock.now();
    let before = store.flush_all(Some(now + 2), now);
    // Due now, before the reclaim's next pass.
    clock.advance(3);
    let now = clock.now();
    // In the order the replication link asks.
    let below = store.flushed_below(now);
    let pending = store.pending_flushes(now);
    assert!(
        below >= before || pending.iter().any(|&(_, b)| b >= before),
        "the due flush is in neither: below {below}, pending {pending:?}, flush {before}"
    );
}

/// A newer write that expired during a partition still outranks the older value the other
/// side wrote: once healed, neither node holds the older one (it once stayed on the side
/// that wrote it, for good, when the link came back with a full copy).
#[test]
fn a_newer_write_that_expired_during_a_partition_removes_the_older_value_everywhere() {
    let mut p = ProxiedPair::start_in([127, 0, 7, 1], "64", &[]);
    p.partition();
    // Restarted during the partition: the link comes back with full copies both ways.
    p.b.restart();
    let (mut ca, mut cb) = (p.a.client(), p.b.client());
    cb.expect(b"set k 0 0 3\r\nold\r\n", b"STORED\r\n");
    cb.expect(b"set other 0 0 5\r\nstays\r\n", b"STORED\r\n");
    std::thread::sleep(Duration::from_millis(20));
    ca.expect(b"set k 0 1 3\r\nnew\r\n", b"STORED\r\n");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(get(&mut ca, "k"), None, "expired");
    assert_eq!(get(&mut cb, "k").as_deref(), Some("old"));
    p.heal();
    assert!(sees(&p.b, "k", None), "the older value went");
    assert_eq!(get(&mut ca, "k"), None);
    assert!(sees(&p.a, "other", Some("stays")), "nothing else did");
    assert_eq!(get(&mut cb, "other").as_deref(), Some("stays"));
}

/// `flush_all 1` on one side of a partition, a moment after a write on the other: the
/// flush orders after the write, so once healed the write is gone from both nodes.
#[test]
fn a_delayed_flush_removes_a_write_made_before_it_on_the_other_side_of_a_partition() {
    let p = ProxiedPair::start_in([127, 0, 7, 5], "64", &[]);
    let (mut ca, mut cb) = (p.a.client(), p.b.client());
    ca.expect(b"set k 0 0 4\r\nbase\r\n", b"STORED\r\n");
    assert!(sees(&p.b, "k", Some("base")));
    p.partition();
    cb.expect(b"set k 0 0 3\r\nold\r\n", b"STORED\r\n");
    std::thread::sleep(Duration::from_millis(20));
    ca.expect(b"flush_all 1\r\n", b"OK\r\n");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(get(&mut ca, "k"), None);
    p.heal();
    assert!(sees(&p.b, "k", None), "flushed on the other node too");
    assert_eq!(get(&mut ca, "k"), None, "and not brought back here");
    ca.expect(b"set after 0 0 1\r\na\r\n", b"STORED\r\n");
    assert!(sees(&p.b, "after", Some("a")), "later writes stay");
}

/// A delete on one side of a partition and a write of the key on the other, stamped alike
/// (as two nodes may stamp in the same millisecond; here by `E`): the node ids order them,
/// on both nodes. The deleting node held nothing of the key, so it kept only the delete's
/// version, and once compared stamps alone: it refused the write that won on the other
/// node, and the two held different data for good.
#[test]
fn a_delete_and_a_write_stamped_alike_converge_by_node_id() {
    let p = ProxiedPair::start_in([127, 0, 7, 9], "64", &[]);
    let (mut ca, mut cb) = (p.a.client(), p.b.client());
    let ids = (node_id(&p.a), node_id(&p.b));
    p.partition();
    let stamp = unix_ms() << 16;
    // Deleted on a, written on b; then the other way round.
    ca.expect(format!("md x E{stamp}\r\n").as_bytes(), b"NF\r\n");
    cb.expect(format!("ms x 2 E{stamp}\r\nvb\r\n").as_bytes(), b"HD\r\n");
    cb.expect(format!("md y E{stamp}\r\n").as_bytes(), b"NF\r\n");
    ca.expect(format!("ms y 2 E{stamp}\r\nva\r\n").as_bytes(), b"HD\r\n");
    p.heal();
    let (x, y) = if ids.1 > ids.0 {
        (Some("vb"), None)
    } else {
        (None, Some("va"))
    };
    for node in [&p.a, &p.b] {
        assert!(
            sees(node, "x", x),
            "x on both nodes: {x:?} (node ids {ids:?})"
        );
        assert!(
            sees(node, "y", y),
            "y on both nodes: {y:?} (node ids {ids:?})"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    for c in [&mut ca, &mut cb] {
        assert_eq!(
            (get(c, "x").as_deref(), get(c, "y").as_deref()),
            (x, y),
            "and it stays so"
        );
    }
}

/// Two clients write one key on the two nodes at the same moment, each reading back its
/// CAS: when the writes fall in one millisecond both nodes once stamped them alike, so the
/// two values had one CAS, and the client whose value lost could `cas` over the winner.
/// Now each node stamps in its own residue (its id modulo 64) within the shard's lane.
#[test]
fn two_values_written_at_once_on_two_nodes_have_different_cas_values() {
    let mut p = ProxiedPair::start_in([127, 0, 7, 13], "64", &[]);
    // Random node ids (new at each start) share a 64th of the stamps when equal modulo 64.
    while node_id(&p.a) % 64 == node_id(&p.b) % 64 {
        p.b.restart();
        assert!(p.linked(Duration::from_secs(5)));
    }
    let (mut ca, mut cb) = (p.a.client(), p.b.client());
    let mut same = Vec::new();
    for round in 0..300 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let write = |c: &mut Client, v: String, barrier: std::sync::Arc<std::sync::Barrier>| {
            barrier.wait();
            let reply = c.call_until(
                format!("set k 0 0 {}\r\n{v}\r\ngets k\r\n", v.len()).as_bytes(),
                b"END\r\n",
            );
            (
                common::cas_in(&reply[8..]),
                String::from_utf8_lossy(&reply).contains(&v),
            )
        };
        let (va, vb) = (format!("a{round}"), format!("b{round}"));
        let (ra, rb) = std::thread::scope(|scope| {
            let (b1, b2) = (barrier.clone(), barrier.clone());
            let ta = scope.spawn(|| write(&mut ca, va, b1));
            let tb = scope.spawn(|| write(&mut cb, vb, b2));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        // Each client read its own value (the other's had not arrived yet): one CAS for
        // two values is the defect.
        if ra.1 && rb.1 && ra.0 == rb.0 {
            same.push(round);
        }
    }
    assert!(
        same.is_empty(),
        "rounds whose two values shared a CAS: {same:?}"
    );
}

/// A partition during which one side drops thousands of key states (here deletes of keys
/// it never held, as an application invalidating what is not cached does; expiring
/// sessions do the same): the other side's writes made before them, of other keys, must
/// still arrive once healed. The store's memory of dropped states once kept 1024 versions
/// per shard and folded the rest into per-bucket floors that refused every key of their
/// bucket, so most of those writes were refused for good on this side; then into groups
/// whose newest version stood for all their keys, which refused a key written after its
/// own delete (both in the backlog that side replays).
#[test]
fn writes_made_during_a_partition_survive_thousands_of_states_dropped_on_the_other_side() {
    let p = ProxiedPair::start_in([127, 0, 7, 17], "64", &["-t", "1"]);
    let (mut ca, mut cb) = (p.a.client(), p.b.client());
    p.partition();
    let keys: Vec<String> = (0..100)
        .map(|i| format!("x{i}"))
        .chain((0..100).map(|i| format!("y{i}")))
        .collect();
    // The y keys deleted first (never held, as a cache invalidated ahead of a write).
    let (mut writes, mut replies) = (String::new(), String::new());
    for k in &keys {
        if k.starts_with('y') {
            writes.push_str(&format!("delete {k}\r\n"));
            replies.push_str("NOT_FOUND\r\n");
        }
        writes.push_str(&format!("set {k} 0 0 2\r\nvb\r\n"));
        replies.push_str("STORED\r\n");
    }
    cb.expect(writes.as_bytes(), replies.as_bytes());
    cb.expect(b"set gone 0 0 2\r\nvb\r\n", b"STORED\r\n");
    std::thread::sleep(Duration::from_millis(20));
    // Later, on the other side: a delete of that key (it never got the write), then 30,000
    // deletes of keys it never held: 1,875 per shard of 16.
    ca.expect(b"delete gone\r\n", b"NOT_FOUND\r\n");
    delete_absent_keys(&mut ca, 30_000);
    p.heal();
    let left = missing(&mut ca, &keys, Some("vb"));
    assert!(
        left.is_empty(),
        "never arrived: {} of 200: {left:?}",
        left.len()
    );
    // The delete, newer than the write, still wins on both nodes.
    assert!(sees(&p.b, "gone", None));
    assert_eq!(get(&mut ca, "gone"), None);
}

/// A node restarted during a partition deletes keys the other side holds, then deletes
/// many keys it never held, more than its list of deleted keys keeps (the shard copies
/// both sides exchange when the link returns end with that list, so they no longer carry
/// the first deletes). The other side's copy of the keys, older, reaches this node, which
/// refuses it, and it must also say why: it once did only for the last 1024 keys each shard
/// dropped, and the deleted keys stayed readable on the other node for good.
#[test]
fn deletes_made_on_a_restarted_node_win_after_many_more_deletes() {
    let mut p = ProxiedPair::start_in([127, 0, 7, 21], "16", &["-t", "1"]);
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let (mut writes, mut stored) = (String::new(), String::new());
    for k in &keys {
        writes.push_str(&format!("set {k} 0 0 3\r\nold\r\n"));
        stored.push_str("STORED\r\n");
    }
    p.a.client().expect(writes.as_bytes(), stored.as_bytes());
    assert!(sees(&p.b, "k99", Some("old")));
    p.partition();
    p.a.restart();
    let mut ca = p.a.client();
    let deletes: String = keys.iter().map(|k| format!("delete {k}\r\n")).collect();
    ca.expect(deletes.as_bytes(), "NOT_FOUND\r\n".repeat(100).as_bytes());
    std::thread::sleep(Duration::from_millis(20));
    // 20,000 more: 1,250 per shard, where a shard's list keeps some 780 keys of this size.
    delete_absent_keys(&mut ca, 20_000);
    p.heal();
    let left = missing(&mut p.b.client(), &keys, None);
    assert!(
        left.is_empty(),
        "deleted keys still on the other node: {left:?}"
    );
    assert!(keys.iter().all(|k| get(&mut ca, k).is_none()));
}

/// One side deletes keys it does not hold, the other writes them a moment later (stamps
/// 1 apart, forced with `E`), then the first side drops thousands of states, so its
/// memory of those deletes leaves the per-key table. It once kept them with stamps rounded
/// up to a 64th of a millisecond, which took the later writes for older ones: refused
/// there, kept on the other side, for good.
#[test]
fn a_write_a_moment_after_a_delete_wins_once_the_delete_is_blurred() {
    let p = ProxiedPair::start_in([127, 0, 7, 25], "64", &["-t", "1"]);
    let (mut ca, mut cb) = (p.a.client(), p.b.client());
    p.partition();
    let ms = unix_ms();
    let (mut deletes, mut writes) = (String::new(), String::new());
    for i in 0..100u64 {
        let s = (ms - 1000 + i) << 16;
        deletes.push_str(&format!("md k{i} E{}\r\n", s + 1));
        writes.push_str(&format!("ms k{i} 1 E{}\r\nv\r\n", s + 2));
    }
    ca.expect(deletes.as_bytes(), "NF\r\n".repeat(100).as_bytes());
    cb.expect(writes.as_bytes(), "HD\r\n".repeat(100).as_bytes());
    delete_absent_keys(&mut ca, 30_000);
    p.heal();
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let left = missing(&mut ca, &keys, Some("v"));
    assert!(left.is_empty(), "the later writes never arrived: {left:?}");
    assert!(missing(&mut cb, &keys, Some("v")).is_empty());
}

/// A delete on one node and a write of the key on the other at one stamp, the deleting
/// node's id the higher (so its delete wins); the writing node restarted before, so it gets
/// a whole copy, whose list of deleted keys no longer holds the key after thousands more
/// deletes. The deleting node refuses the write and answers it with a delete, which was
/// once just below the delete's stamp, under node id 0, and so below the write: the
/// writing node kept the deleted key for good. It is now at the delete's own version.
#[test]
fn a_write_stamped_as_a_delete_on_the_other_side_goes_once_that_delete_is_out_of_the_list() {
    let mut p = ProxiedPair::start_in([127, 0, 7, 29], "16", &["-t", "1"]);
    p.partition();
    let (deleter, writer) = (&mut p.a, &mut p.b);
    // A node takes a new random id at each start: restarted until its id is the lower.
    let deleter_id = node_id(deleter);
    for _ in 0..30 {
        writer.restart();
        if node_id(writer) < deleter_id {
            break;
        }
    }
    assert!(node_id(writer) < deleter_id, "no lower id in 30 restarts");
    let (mut cd, mut cw) = (deleter.client(), writer.client());
    let ms = unix_ms();
    let (mut deletes, mut writes) = (String::new(), String::new());
    for i in 0..50u64 {
        let stamp = (ms - 1000 + i) << 16;
        deletes.push_str(&format!("md k{i} E{stamp}\r\n"));
        writes.push_str(&format!("ms k{i} 1 E{stamp}\r\nv\r\n"));
    }
    cd.expect(deletes.as_bytes(), "NF\r\n".repeat(50).as_bytes());
    cw.expect(writes.as_bytes(), "HD\r\n".repeat(50).as_bytes());
    // 20,000 more: 1,250 per shard, where a shard's list keeps some 780 keys of this size.
    delete_absent_keys(&mut cd, 20_000);
    p.heal();
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    let left = missing(&mut cw, &keys, None);
    assert!(left.is_empty(), "deleted keys kept by the writer: {left:?}");
    assert!(missing(&mut cd, &keys, None).is_empty());
}

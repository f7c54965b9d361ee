//! Relaying in a mesh: which changes a node forwards to which peer.
//!
//! Every node records the changes it applies, its clients' and its peers', and streams them
//! to every peer. Forwarding everything would make each write cross (N-1) + (N-1)(N-2)
//! links in a full mesh of N nodes: a change written on W reaches Y straight from W, and
//! again from each other node. Forwarding is needed only while the link W–Y is down and both
//! still reach a third node. So:
//! - each node tells its peers which nodes' own writes it gets straight from them
//!   ([`Frame::Hears`]): those whose link is up and has caught up once;
//! - a node does not forward to a peer a change it got straight from the node that wrote it
//!   when the peer hears that node ([`relays`]);
//! - a writer tells each peer a stamp below which it has sent every change it wrote
//!   ([`Frame::Covered`]); when Y stops hearing W, it asks each peer it had told that it
//!   heard W for W's changes from that stamp on ([`Frame::Gap`]): what that peer did not
//!   forward meanwhile. The peer sends what its store holds of them, then [`Frame::Filled`].
//!   Until a Gap is filled, Y asks again on every new link with that peer.
//! - a write whose stamp a client chose (`E`) may be below what its writer covered, so no
//!   Gap would find it: its writer marks it as from itself, and a node that gets it so
//!   records it as its own, which every peer is sent.
//!
//! This module is the pure part: the rules and the bookkeeping, tested below by a model of
//! a mesh whose links drop what they carry.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::wire::Frame;
use crate::store::{NodeId, Version};

/// Whether a change that came from `origin` (None: a client of this node), written by
/// `writer`, goes to `peer`, which hears `hears`: never back where it came from, nor to a
/// peer that gets it from its writer.
#[inline]
pub fn relays(origin: Option<NodeId>, writer: NodeId, peer: NodeId, hears: &[NodeId]) -> bool {
    match origin {
        None => true,
        Some(o) => o != peer && !(o == writer && hears.contains(&writer)),
    }
}

/// Whether a change of version `v` answers one of `gaps` (writer, first stamp).
#[inline]
pub fn in_gaps(gaps: &[(NodeId, u64)], v: Version) -> bool {
    gaps.iter().any(|&(n, from)| v.node == n && v.stamp >= from)
}

/// What one peer has been told, kept across its links.
#[derive(Default, Debug)]
struct Told {
    /// Nodes the peer may have left unforwarded to this node since it was last asked for
    /// them (they were in a Hears it was sent): asked for once not heard.
    skipped: BTreeSet<NodeId>,
    /// This link's Gaps not yet answered, oldest first: back to `skipped` if the link ends
    /// first. A node heard again meanwhile is skipped again, and asked for again if lost
    /// again: each Gap answers only for what was skipped before it was asked.
    asked: VecDeque<NodeId>,
}

/// This node's side: whom it hears, how far each has covered, what each peer was told.
#[derive(Default, Debug)]
pub struct Reach {
    hears: BTreeSet<NodeId>,
    covered: HashMap<NodeId, u64>,
    told: HashMap<NodeId, Told>,
}

impl Reach {
    /// `peer` has sent every change it wrote stamped below `stamp`: this node hears it.
    /// True if it did not before (every peer is to be told).
    pub fn covered(&mut self, peer: NodeId, stamp: u64) -> bool {
        let c = self.covered.entry(peer).or_default();
        *c = (*c).max(stamp);
        self.hears.insert(peer)
    }

    /// `peer` no longer sends all it writes on its link (it refused a change): this node
    /// does not hear it. True if it did (peers are to be told).
    pub fn unheard(&mut self, peer: NodeId) -> bool {
        self.hears.remove(&peer)
    }

    /// The link with `peer` ended: this node no longer hears it, and Gaps asked of it on
    /// that link are asked again on the next. True if it was heard (peers are to be told).
    pub fn lost(&mut self, peer: NodeId) -> bool {
        if let Some(t) = self.told.get_mut(&peer) {
            t.skipped.extend(t.asked.drain(..));
        }
        self.unheard(peer)
    }

    /// `peer` restarted: what it covered before says nothing of its new run's stamps (its
    /// clock may be behind the old run's), so a Gap for it asks for everything.
    pub fn restarted(&mut self, peer: NodeId) {
        self.covered.remove(&peer);
    }

    /// The frames that bring `peer` up to date (on a new link, and after each change):
    /// whom this node hears, then a Gap for each node it may have skipped and is no longer
    /// heard.
    pub fn tell(&mut self, peer: NodeId) -> Vec<Frame> {
        let nodes: Vec<NodeId> = self.hears.iter().copied().filter(|&n| n != peer).collect();
        let t = self.told.entry(peer).or_default();
        // Those heard stay skipped; the others are asked for.
        t.skipped.extend(nodes.iter().copied());
        let lost: Vec<NodeId> = t
            .skipped
            .iter()
            .copied()
            .filter(|n| !self.hears.contains(n))
            .collect();
        let mut frames = vec![Frame::Hears { nodes }];
        for n in lost {
            t.skipped.remove(&n);
            t.asked.push_back(n);
            let from = self.covered.get(&n).copied().unwrap_or(0);
            frames.push(Frame::Gap { node: n, from });
        }
        frames
    }

    /// `peer` answered the oldest Gap asked on this link. False if none was asked (the
    /// peer is broken).
    pub fn filled(&mut self, peer: NodeId) -> bool {
        self.told
            .get_mut(&peer)
            .is_some_and(|t| t.asked.pop_front().is_some())
    }

    /// Forgets what a peer gone for good was told. (What others may have skipped of its
    /// changes is still asked for until filled.)
    pub fn forget(&mut self, peer: NodeId) {
        self.told.remove(&peer);
    }
}

/// The most nodes of a Hears a node keeps: bounds what a peer can make it hold.
pub const MAX_HEARS: usize = 256;

/// A peer's Hears as the sender keeps it: sorted, deduplicated, bounded.
pub fn heard_by_peer(nodes: Vec<NodeId>) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> = nodes.into_iter().take(MAX_HEARS).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_change_is_not_sent_back_nor_to_a_peer_that_hears_its_writer() {
        let (w, a, y) = (NodeId(1), NodeId(2), NodeId(3));
        assert!(relays(None, a, y, &[w]), "a node's own writes always go");
        assert!(!relays(Some(y), y, y, &[]), "never back where it came from");
        assert!(!relays(Some(w), w, y, &[w]), "y gets it from w");
        assert!(relays(Some(w), w, y, &[a]), "y does not hear w");
        // Forwarded to this node by another: forwarded again (w's link to that node may be
        // the only way).
        assert!(relays(Some(a), w, y, &[w, a]));
    }

    #[test]
    fn a_lost_writer_is_asked_for_once_per_link_until_filled() {
        let (w, a) = (NodeId(1), NodeId(2));
        let mut r = Reach::default();
        assert!(r.covered(w, 100));
        assert!(!r.covered(w, 90), "covered only grows and w was heard");
        assert_eq!(r.tell(a), vec![Frame::Hears { nodes: vec![w] }]);
        assert!(r.lost(w));
        let gap = Frame::Gap { node: w, from: 100 };
        assert_eq!(r.tell(a), vec![Frame::Hears { nodes: vec![] }, gap.clone()]);
        assert_eq!(
            r.tell(a),
            vec![Frame::Hears { nodes: vec![] }],
            "asked once"
        );
        // The link with a drops before the answer: asked again on the next.
        r.lost(a);
        assert_eq!(r.tell(a), vec![Frame::Hears { nodes: vec![] }, gap]);
        assert!(r.filled(a));
        assert!(!r.filled(a), "nothing more was asked");
        r.lost(a);
        assert_eq!(r.tell(a), vec![Frame::Hears { nodes: vec![] }], "filled");
    }

    #[test]
    fn a_restarted_writer_is_asked_for_whole_and_a_refused_one_is_not_heard() {
        let (w, a) = (NodeId(1), NodeId(2));
        let mut r = Reach::default();
        r.covered(w, 100);
        assert_eq!(r.tell(a), vec![Frame::Hears { nodes: vec![w] }]);
        // Its new run's clock may be behind the old run's stamps.
        r.restarted(w);
        assert!(r.lost(w));
        let gap = |from| Frame::Gap { node: w, from };
        assert_eq!(r.tell(a), vec![Frame::Hears { nodes: vec![] }, gap(0)]);
        assert!(r.covered(w, 50));
        assert_eq!(r.tell(a), vec![Frame::Hears { nodes: vec![w] }]);
        // This node refused one of w's changes: a gets to forward w's changes.
        assert!(r.unheard(w));
        assert_eq!(r.tell(a), vec![Frame::Hears { nodes: vec![] }, gap(50)]);
        assert!(r.filled(a) && r.filled(a), "both Gaps are answered in turn");
    }

    // A model of a mesh: each node holds, per key, the newest version it has seen and a
    // log of what it applied (its feed); each directed link carries frames in order and
    // loses them all when cut. The senders follow the rules above; `Covered` is exact here
    // (one thread): the next stamp a node will write.

    #[derive(Clone, Debug)]
    enum Msg {
        /// A change (key, version), then the sender's log position after it (None: part
        /// of a Gap's answer).
        Change(u8, Version, Option<usize>),
        /// The sender's log position after changes it did not send.
        Mark(usize),
        Frame(Frame),
    }

    #[derive(Default)]
    struct Dir {
        queue: VecDeque<Msg>,
        /// The sender's position in its own log.
        cursor: usize,
        /// The receiver's Hears, as the sender last heard it.
        hears: Vec<NodeId>,
        gaps: Vec<(NodeId, u64)>,
        /// Gaps to answer with Filled once their changes are sent.
        owed: usize,
        /// The receiver's state changed: tell it.
        stale: bool,
        covered_sent: u64,
    }

    struct Node {
        store: BTreeMap<u8, Version>,
        log: Vec<(u8, Version, Option<NodeId>)>,
        clock: u64,
        reach: Reach,
        /// Per sender: how far of its log this node has applied.
        applied: Vec<usize>,
    }

    struct Mesh {
        nodes: Vec<Node>,
        up: Vec<Vec<bool>>,
        dirs: Vec<Vec<Dir>>,
    }

    fn id(i: usize) -> NodeId {
        NodeId(i as u16 + 1)
    }

    impl Mesh {
        fn new(n: usize) -> Mesh {
            Mesh {
                nodes: (0..n)
                    .map(|_| Node {
                        store: BTreeMap::new(),
                        log: Vec::new(),
                        clock: 0,
                        reach: Reach::default(),
                        applied: vec![0; n],
                    })
                    .collect(),
                up: vec![vec![false; n]; n],
                dirs: (0..n)
                    .map(|_| (0..n).map(|_| Dir::default()).collect())
                    .collect(),
            }
        }

        fn n(&self) -> usize {
            self.nodes.len()
        }

        fn write(&mut self, i: usize, key: u8) {
            let node = &mut self.nodes[i];
            node.clock += 1;
            let v = Version {
                stamp: node.clock,
                node: id(i),
            };
            node.store.insert(key, v);
            node.log.push((key, v, None));
        }

        /// Everyone linked to `i` is to hear of its change of state.
        fn restale(&mut self, i: usize) {
            for j in 0..self.n() {
                if self.up[i][j] {
                    self.dirs[i][j].stale = true;
                }
            }
        }

        fn set_link(&mut self, i: usize, j: usize, up: bool) {
            if i == j || self.up[i][j] == up {
                return;
            }
            self.up[i][j] = up;
            self.up[j][i] = up;
            for (a, b) in [(i, j), (j, i)] {
                // A new link resumes where the receiver is; its view of Hears starts empty.
                self.dirs[a][b] = Dir {
                    cursor: self.nodes[b].applied[a],
                    stale: up,
                    ..Dir::default()
                };
                if !up && self.nodes[a].reach.lost(id(b)) {
                    self.restale(a);
                }
            }
        }

        /// One step of `i`'s sender to `j`; false if it had nothing to do.
        fn send(&mut self, i: usize, j: usize) -> bool {
            if !self.up[i][j] {
                return false;
            }
            let (node, dir) = (&mut self.nodes[i], &mut self.dirs[i][j]);
            if dir.stale {
                dir.stale = false;
                for f in node.reach.tell(id(j)) {
                    dir.queue.push_back(Msg::Frame(f));
                }
                return true;
            }
            if dir.owed > 0 {
                let gaps = std::mem::take(&mut dir.gaps);
                for (&k, &v) in &node.store {
                    if in_gaps(&gaps, v) {
                        dir.queue.push_back(Msg::Change(k, v, None));
                    }
                }
                for _ in 0..std::mem::take(&mut dir.owed) {
                    dir.queue.push_back(Msg::Frame(Frame::Filled));
                }
                return true;
            }
            if let Some(&(k, v, origin)) = node.log.get(dir.cursor) {
                dir.cursor += 1;
                dir.queue
                    .push_back(if relays(origin, v.node, id(j), &dir.hears) {
                        Msg::Change(k, v, Some(dir.cursor))
                    } else {
                        Msg::Mark(dir.cursor)
                    });
                return true;
            }
            let stamp = node.clock + 1;
            if dir.covered_sent != stamp {
                dir.covered_sent = stamp;
                dir.queue.push_back(Msg::Frame(Frame::Covered { stamp }));
                return true;
            }
            false
        }

        /// Delivers the next frame from `i` to `j`; false if none.
        fn deliver(&mut self, i: usize, j: usize) -> bool {
            let Some(msg) = self.dirs[i][j].queue.pop_front() else {
                return false;
            };
            let node = &mut self.nodes[j];
            match msg {
                Msg::Change(k, v, pos) => {
                    if node.store.get(&k).is_none_or(|&have| v > have) {
                        node.store.insert(k, v);
                        node.log.push((k, v, Some(id(i))));
                    }
                    node.clock = node.clock.max(v.stamp);
                    if let Some(p) = pos {
                        node.applied[i] = p;
                    }
                }
                Msg::Mark(p) => node.applied[i] = p,
                Msg::Frame(Frame::Covered { stamp }) => {
                    if node.reach.covered(id(i), stamp) {
                        self.restale(j);
                    }
                }
                Msg::Frame(Frame::Hears { nodes }) => {
                    self.dirs[j][i].hears = heard_by_peer(nodes);
                }
                Msg::Frame(Frame::Gap { node: n, from }) => {
                    let back = &mut self.dirs[j][i];
                    back.gaps.push((n, from));
                    back.owed += 1;
                }
                Msg::Frame(Frame::Filled) => assert!(node.reach.filled(id(i))),
                Msg::Frame(f) => unreachable!("{f:?}"),
            }
            true
        }

        /// Runs every sender and delivery until nothing moves.
        fn settle(&mut self) {
            for _ in 0..100_000 {
                let mut moved = false;
                for i in 0..self.n() {
                    for j in 0..self.n() {
                        moved |= self.send(i, j);
                        moved |= self.deliver(i, j);
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("the mesh never settles");
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write(usize, u8),
        Send(usize, usize),
        Deliver(usize, usize),
        Link(usize, usize, bool),
        /// A send, then its delivery.
        Pump(usize, usize),
        /// Every frame sent and delivered, so the next writes find Hears told.
        Settle,
    }

    fn op(n: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..n, 0..6u8).prop_map(|(i, k)| Op::Write(i, k)),
            3 => (0..n, 0..n).prop_map(|(i, j)| Op::Send(i, j)),
            3 => (0..n, 0..n).prop_map(|(i, j)| Op::Deliver(i, j)),
            6 => (0..n, 0..n).prop_map(|(i, j)| Op::Pump(i, j)),
            1 => (0..n, 0..n, any::<bool>()).prop_map(|(i, j, up)| Op::Link(i, j, up)),
            1 => Just(Op::Settle),
        ]
    }

    fn run(n: usize, ops: &[Op], cut: Option<(usize, usize)>) -> Mesh {
        let mut m = Mesh::new(n);
        for i in 0..n {
            for j in 0..n {
                m.set_link(i, j, true);
            }
        }
        for op in ops {
            match *op {
                Op::Write(i, k) => m.write(i, k),
                Op::Send(i, j) => {
                    m.send(i, j);
                }
                Op::Deliver(i, j) => {
                    m.deliver(i, j);
                }
                Op::Link(i, j, up) => m.set_link(i, j, up),
                Op::Pump(i, j) => {
                    m.send(i, j);
                    m.deliver(i, j);
                }
                Op::Settle => m.settle(),
            }
        }
        for i in 0..n {
            for j in 0..n {
                m.set_link(i, j, Some((i, j)) != cut && Some((j, i)) != cut);
            }
        }
        m.settle();
        m
    }

    fn assert_agree(m: &Mesh) -> Result<(), TestCaseError> {
        for (i, node) in m.nodes.iter().enumerate() {
            prop_assert_eq!(
                &node.store,
                &m.nodes[0].store,
                "node {} differs from node 0",
                i
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever the order of sends, deliveries, cuts and writes, once every link is up
        /// every node holds the newest version of every key.
        #[test]
        fn a_healed_mesh_agrees(n in 2usize..5, ops in proptest::collection::vec(op(4), 0..300)) {
            let ops: Vec<Op> = ops.into_iter().filter(|o| match *o {
                Op::Write(i, _) => i < n,
                Op::Settle => true,
                Op::Send(i, j) | Op::Deliver(i, j) | Op::Pump(i, j) | Op::Link(i, j, _) => i < n && j < n,
            }).collect();
            assert_agree(&run(n, &ops, None))?;
        }

        /// The same with one link left cut: what its two nodes write reaches each other
        /// through the rest of the mesh, including what was in flight when it was cut.
        #[test]
        fn a_mesh_with_one_link_cut_agrees(n in 3usize..5, ops in proptest::collection::vec(op(3), 0..160), a in 0usize..3, b in 1usize..3) {
            // The cut link is a's to (a + b) % n: never a link to itself.
            assert_agree(&run(n, &ops, Some((a, (a + b) % n))))?;
        }
    }

    #[test]
    fn a_write_in_flight_when_its_link_drops_comes_through_another_node() {
        let (w, a, y) = (0, 1, 2);
        let mut m = run(3, &[], None);
        m.write(w, 7);
        assert!(m.send(w, a) && m.deliver(w, a));
        assert!(m.send(a, y) && m.deliver(a, y));
        assert!(
            m.nodes[y].store.is_empty(),
            "a did not forward it: y hears w"
        );
        assert!(m.send(w, y), "on its way to y when the link drops");
        m.set_link(w, y, false);
        m.settle();
        assert_eq!(m.nodes[y].store, m.nodes[w].store, "a sent it when y asked");
    }

    /// Y loses W and asks X; before X's answer arrives Y hears W again (X skips W's next
    /// change for Y), then loses W again for good with that change in flight: Y asks again,
    /// and the late answer to the first Gap does not settle the second.
    #[test]
    fn a_writer_heard_again_and_lost_again_before_a_gap_is_filled_is_asked_for_again() {
        let (w, x, y) = (0, 1, 2);
        let mut m = run(3, &[], None);
        m.set_link(w, y, false);
        while m.send(y, x) || m.deliver(y, x) {}
        // X answers: nothing of W's to send yet, and its Filled is on its way.
        while m.send(x, y) {}
        assert!(!m.dirs[x][y].queue.is_empty());
        m.set_link(w, y, true);
        while m.send(w, y) || m.deliver(w, y) || m.send(y, w) || m.deliver(y, w) {}
        while m.send(y, x) || m.deliver(y, x) {}
        assert_eq!(m.dirs[x][y].hears, vec![id(w)], "y hears w again");
        m.write(w, 7);
        while m.send(w, x) || m.deliver(w, x) {}
        while m.send(x, y) {}
        assert!(m.send(w, y), "on its way to y when the link drops");
        m.set_link(w, y, false);
        m.settle();
        assert_eq!(m.nodes[y].store, m.nodes[w].store, "y got w's write from x");
    }

    #[test]
    fn a_mesh_whose_links_stay_up_forwards_nothing() {
        let mut m = Mesh::new(4);
        for i in 0..4 {
            for j in 0..4 {
                m.set_link(i, j, true);
            }
        }
        m.settle();
        for k in 0..20 {
            m.write(usize::from(k % 4), k);
        }
        // Count the changes each node sends that another node wrote.
        let mut forwarded = 0;
        for _ in 0..1000 {
            for i in 0..4 {
                for j in 0..4 {
                    m.send(i, j);
                    if let Some(Msg::Change(_, v, _)) = m.dirs[i][j].queue.back() {
                        if v.node != id(i) {
                            forwarded += 1;
                        }
                    }
                    m.deliver(i, j);
                }
            }
        }
        assert_eq!(forwarded, 0);
        assert_agree(&m).unwrap();
    }
}

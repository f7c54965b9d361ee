//! Item versions: a hybrid-logical-clock stamp plus the id of the node that wrote it.
//!
//! The stamp is `unix_ms << 16 | counter`, so it follows wall time but never repeats or goes
//! backwards on one node, and ties between nodes are broken by the node id. That total order
//! is what replication's last-writer-wins merge uses; the CAS value a client sees is the stamp.

/// Identifies a node in a replicated cluster; 0 is a standalone server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u16);

/// A total order over writes across nodes: first the stamp, then the node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    pub stamp: u64,
    pub node: NodeId,
}

const LOGICAL_BITS: u32 = 16;

/// A hybrid logical clock. Each store shard owns one, so issuing a stamp needs no atomics:
/// stamps are increasing per shard, which is per key, which is what CAS needs. A shard's clock
/// issues only stamps in its own lane (those equal to its index modulo the shard count), so
/// no two items written here share a stamp, as no two share a CAS in memcached.
#[derive(Debug, Clone)]
pub struct Hlc {
    last: u64,
    lane: u64,
    /// Lane count minus one; the count is a power of two.
    lane_mask: u64,
}

/// Replicating nodes split each shard's lane this many ways, by node id (see
/// [`Hlc::for_node`]).
const NODE_SLOTS: u64 = 64;

impl Default for Hlc {
    fn default() -> Hlc {
        Hlc::lane(0, 1)
    }
}

impl Hlc {
    /// The clock of lane `lane` of `lanes`, a power of two.
    pub fn lane(lane: usize, lanes: usize) -> Hlc {
        debug_assert!(lanes.is_power_of_two() && lane < lanes);
        Hlc {
            last: 0,
            lane: lane as u64,
            lane_mask: lanes as u64 - 1,
        }
    }

    /// This clock on a replicating node: its lane split 64 ways, one per node id modulo 64.
    /// Clocks that observe each other's stamps move to the same last stamp, and without
    /// this both nodes' next stamps would be the same too: two values of one key written on
    /// two nodes at once would carry one CAS, and a client could `cas` over the value that
    /// won with the CAS of its own, which lost. (Equal stamps are still ordered by node id;
    /// this keeps CAS values apart for nodes of the same shard count whose ids differ
    /// modulo 64.) Each lane then issues a 64th as many stamps a millisecond before running
    /// ahead of wall time, which a busy shard does harmlessly. Standalone (node 0): as is.
    pub fn for_node(mut self, node: NodeId) -> Hlc {
        if node.0 != 0 {
            let lanes = self.lane_mask + 1;
            self.lane += lanes * (u64::from(node.0) % NODE_SLOTS);
            self.lane_mask = lanes * NODE_SLOTS - 1;
        }
        self
    }

    /// The stamp a clock at `unix_ms` starts from.
    pub fn stamp_of_ms(unix_ms: u64) -> u64 {
        unix_ms << LOGICAL_BITS
    }

    /// The lowest stamp a tick at `unix_ms` or later can give: above every stamp issued or
    /// observed so far, and not below wall time.
    pub fn floor(&self, unix_ms: u64) -> u64 {
        Self::stamp_of_ms(unix_ms).max(self.last.saturating_add(1))
    }

    /// A new stamp above every stamp issued or observed so far.
    pub fn tick(&mut self, unix_ms: u64) -> u64 {
        let next = self.floor(unix_ms);
        // Up to the first stamp in this clock's lane.
        self.last = next + (self.lane.wrapping_sub(next) & self.lane_mask);
        self.last
    }

    /// Moves the clock past a stamp seen elsewhere (a replaced item, a remote write), so the
    /// next local version orders after it.
    pub fn observe(&mut self, stamp: u64) {
        if stamp > self.last {
            self.last = stamp;
        }
    }

    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_when_wall_time_stalls() {
        let mut h = Hlc::default();
        let a = h.tick(1000);
        let b = h.tick(1000);
        let c = h.tick(999);
        assert!(a < b && b < c);
        let d = h.tick(2000);
        assert_eq!(d, Hlc::stamp_of_ms(2000));
    }

    #[test]
    fn lanes_never_issue_the_same_stamp() {
        let mut lanes: Vec<Hlc> = (0..4).map(|i| Hlc::lane(i, 4)).collect();
        let mut seen = Vec::new();
        for ms in [1000, 1000, 1000, 999, 1001] {
            for h in &mut lanes {
                let a = h.tick(ms);
                let b = h.tick(ms);
                assert!(a < b);
                seen.extend([a, b]);
            }
        }
        lanes[2].observe(Hlc::stamp_of_ms(5000) + 1);
        let c = lanes[2].tick(10);
        assert!(c > Hlc::stamp_of_ms(5000) + 1 && c % 4 == 2);
        seen.push(c);
        let n = seen.len();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n);
    }

    /// Two nodes' clocks of one lane that see each other's stamps never issue the same
    /// stamp (ids apart modulo 64), and each stays in its shard's lane.
    #[test]
    fn nodes_never_issue_the_same_stamp() {
        for (x, y) in [(1, 2), (2, 3), (1, 65535), (40000, 40001)] {
            let mut a = Hlc::lane(3, 64).for_node(NodeId(x));
            let mut b = Hlc::lane(3, 64).for_node(NodeId(y));
            let mut seen = std::collections::HashSet::new();
            for ms in [1000, 1000, 1001, 5000, 4000] {
                for _ in 0..20 {
                    let (sa, sb) = (a.tick(ms), b.tick(ms));
                    assert!(
                        seen.insert(sa) && seen.insert(sb),
                        "nodes {x} and {y} at {ms}"
                    );
                    assert!(sa % 64 == 3 && sb % 64 == 3);
                    // Each sees the other's write, as replication makes them.
                    a.observe(sb);
                    b.observe(sa);
                }
            }
        }
        // A standalone server's clock is as before.
        let mut h = Hlc::lane(3, 64).for_node(NodeId(0));
        assert_eq!(h.tick(1000), Hlc::stamp_of_ms(1000) + 3);
        assert_eq!(h.tick(1000), Hlc::stamp_of_ms(1000) + 67);
    }

    #[test]
    fn observe_pushes_the_clock_forward() {
        let mut h = Hlc::default();
        h.observe(Hlc::stamp_of_ms(5000) + 7);
        assert_eq!(h.tick(10), Hlc::stamp_of_ms(5000) + 8);
    }

    #[test]
    fn versions_order_by_stamp_then_node() {
        let a = Version {
            stamp: 5,
            node: NodeId(9),
        };
        let b = Version {
            stamp: 6,
            node: NodeId(1),
        };
        let c = Version {
            stamp: 6,
            node: NodeId(2),
        };
        assert!(a < b && b < c);
    }
}

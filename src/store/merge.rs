//! Last-writer-wins: the one rule that orders every change to a key, local or remote.
//!
//! A key's state is what its latest change left: a value or a delete, each at a
//! [`Version`]. Two states of one key merge to the one with the higher version, whatever
//! kind it is, so a delete beats every older write and loses to every newer one. That merge
//! is commutative, associative and idempotent (the laws tested below), which is why nodes
//! that receive the same changes in any order, duplicated or late, end up holding the same
//! state. Versions never tie between distinct changes: a stamp is unique per node, and the
//! node id breaks ties between nodes.
//!
//! Stamps follow wall time ([`super::Hlc`]), so a stamp far ahead of it can only come from a
//! broken clock or a hostile client: it would hold the key (and, observed, the node's clock)
//! ahead for as long. Such stamps are refused, from peers and from `ms E` alike.

use super::version::{Hlc, Version};

/// How far ahead of this node's wall clock an accepted stamp may be. Nodes whose clocks
/// differ by minutes still replicate; a stamp an hour ahead is refused.
pub const MAX_AHEAD_MS: u64 = 60 * 60 * 1000;

/// The highest stamp accepted at wall time `unix_ms`.
pub fn stamp_limit(unix_ms: u64) -> u64 {
    let ms = unix_ms.saturating_add(MAX_AHEAD_MS);
    Hlc::stamp_of_ms(ms.min(u64::MAX >> 16))
}

/// True if a change at `incoming` replaces a state at `current`.
#[inline]
pub fn replaces(incoming: Version, current: Version) -> bool {
    incoming > current
}

/// Something with a version: a state of one key.
pub trait Versioned {
    fn version(&self) -> Version;
}

/// The merge of two states of one key: the later one, a delete included.
pub fn merge<S: Versioned + Clone>(a: &S, b: &S) -> S {
    if replaces(b.version(), a.version()) {
        b.clone()
    } else {
        a.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NodeId;
    use proptest::prelude::*;

    /// A key's state in the abstract: a value or a delete, at a version.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum State {
        Live(Version, u8),
        Deleted(Version),
    }

    impl Versioned for State {
        fn version(&self) -> Version {
            match self {
                State::Live(v, _) | State::Deleted(v) => *v,
            }
        }
    }

    /// Distinct changes have distinct versions, so the value follows from the version.
    fn state() -> impl Strategy<Value = State> {
        (0u64..8, 0u16..3, any::<bool>()).prop_map(|(stamp, node, live)| {
            let v = Version {
                stamp,
                node: NodeId(node),
            };
            if live {
                State::Live(v, (stamp as u8) ^ (node as u8) << 4)
            } else {
                State::Deleted(v)
            }
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in state(), b in state()) {
            prop_assume!(a.version() != b.version() || a == b);
            prop_assert_eq!(merge(&a, &b), merge(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in state(), b in state(), c in state()) {
            let all = [&a, &b, &c];
            for x in all {
                for y in all {
                    prop_assume!(x.version() != y.version() || x == y);
                }
            }
            prop_assert_eq!(merge(&merge(&a, &b), &c), merge(&a, &merge(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in state(), b in state()) {
            prop_assert_eq!(merge(&a, &a), a.clone());
            let m = merge(&a, &b);
            prop_assert_eq!(merge(&m, &b), m.clone());
        }
    }

    #[test]
    fn a_delete_beats_older_writes_only() {
        let v = |stamp, node| Version {
            stamp,
            node: NodeId(node),
        };
        let del = State::Deleted(v(5, 1));
        assert_eq!(merge(&State::Live(v(4, 9), 0), &del), del);
        let newer = State::Live(v(5, 2), 7);
        assert_eq!(merge(&del, &newer), newer);
    }

    #[test]
    fn the_limit_is_an_hour_ahead() {
        assert_eq!(stamp_limit(1000), Hlc::stamp_of_ms(1000 + MAX_AHEAD_MS));
        assert_eq!(stamp_limit(u64::MAX), (u64::MAX >> 16) << 16, "no overflow");
    }
}

//! Helpers shared by the unit tests of several modules.

use proptest::prelude::*;

use crate::store::{NodeId, Version};

/// The version stamped `stamp` by node `node`.
pub fn v(stamp: u64, node: u16) -> Version {
    Version {
        stamp,
        node: NodeId(node),
    }
}

/// Arbitrary bytes (up to `random_max` of them), or one of `valid`'s encodings with one byte
/// changed or its end cut, so that a decoder under test often gets past its first checks.
pub fn edited_or_random(
    valid: impl Strategy<Value = Vec<u8>>,
    random_max: usize,
) -> impl Strategy<Value = Vec<u8>> {
    let edited = (valid, any::<prop::sample::Index>(), any::<u8>(), 0u8..3).prop_map(
        |(mut b, at, byte, how)| {
            let at = at.index(b.len());
            match how {
                0 => b[at] = byte,
                1 => b.truncate(at),
                _ => {}
            }
            b
        },
    );
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..random_max),
        edited
    ]
}

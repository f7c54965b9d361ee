//! The stored item: a compact header plus one allocation holding key and value.
//!
//! No per-item `String`/`Vec` (24-byte headers, allocator rounding twice): the key and value
//! share one boxed slice, and the header packs times as u32 relative seconds. An `Item` is
//! 40 bytes inline in its shard's slot vector.

use super::version::{NodeId, Version};

/// Per-item bits.
pub mod bits {
    /// Fetched at least once since stored (mg `h`, `evicted_unfetched`).
    pub const FETCHED: u8 = 1 << 0;
    /// Accessed since the eviction hand last passed (CLOCK).
    pub const REFERENCED: u8 = 1 << 1;
    /// Marked stale by `md I` / `ms I` (mg answers `X`).
    pub const STALE: u8 = 1 << 2;
    /// A client already got the recache token (mg answers `Z`).
    pub const TOKEN_SENT: u8 = 1 << 3;
    /// A delete marker kept so replication can order the delete; invisible to clients.
    pub const TOMBSTONE: u8 = 1 << 4;
    /// The key arrived base64-encoded (`b` flag) and is returned that way.
    pub const KEY_BINARY: u8 = 1 << 5;
}

/// Bytes charged per item besides key and value: the slot, a share of the hash table and
/// the allocator's header. Keeps `-m` honest about resident memory, not just payload.
pub const ITEM_OVERHEAD: usize = std::mem::size_of::<Item>() + 8 + 16;

#[derive(Debug, Clone)]
pub struct Item {
    /// Version stamp; also the CAS value clients see.
    pub cas: u64,
    /// Relative expiry second; 0 never expires.
    pub exptime: u32,
    /// Relative second of last access.
    pub atime: u32,
    /// Client flags, opaque to the server.
    pub flags: u32,
    /// Node that wrote this version.
    pub node: NodeId,
    klen: u8,
    pub bits: u8,
    data: Box<[u8]>,
}

impl Item {
    /// Builds an item from key and value parts (concatenated, so append/prepend need no
    /// intermediate buffer).
    pub fn new(key: &[u8], value_parts: &[&[u8]], flags: u32, exptime: u32, now: u32) -> Item {
        debug_assert!(key.len() <= u8::MAX as usize);
        let vlen: usize = value_parts.iter().map(|p| p.len()).sum();
        let mut data = Vec::with_capacity(key.len() + vlen);
        data.extend_from_slice(key);
        for p in value_parts {
            data.extend_from_slice(p);
        }
        Item {
            cas: 0,
            exptime,
            atime: now,
            flags,
            node: NodeId(0),
            klen: key.len() as u8,
            bits: 0,
            data: data.into_boxed_slice(),
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.data[..self.klen as usize]
    }

    /// Where key and value live and their length, for prefetching.
    pub fn data_span(&self) -> (*const u8, usize) {
        (self.data.as_ptr(), self.data.len())
    }

    pub fn value(&self) -> &[u8] {
        &self.data[self.klen as usize..]
    }

    pub fn value_mut(&mut self) -> &mut [u8] {
        let k = self.klen as usize;
        &mut self.data[k..]
    }

    pub fn version(&self) -> Version {
        Version {
            stamp: self.cas,
            node: self.node,
        }
    }

    /// Bytes charged against the memory limit.
    pub fn charge(&self) -> usize {
        charge_for(self.data.len())
    }

    pub fn has(&self, bit: u8) -> bool {
        self.bits & bit != 0
    }

    pub fn set(&mut self, bit: u8) {
        self.bits |= bit;
    }

    pub fn clear(&mut self, bit: u8) {
        self.bits &= !bit;
    }

    pub fn is_tombstone(&self) -> bool {
        self.has(bits::TOMBSTONE)
    }

    /// Dead by TTL at relative second `now`.
    pub fn is_expired(&self, now: u32) -> bool {
        self.exptime != 0 && self.exptime <= now
    }
}

/// Charge for an item whose key and value total `payload` bytes, with allocator rounding.
pub fn charge_for(payload: usize) -> usize {
    ITEM_OVERHEAD + payload.div_ceil(16) * 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_is_compact() {
        assert_eq!(std::mem::size_of::<Item>(), 40);
        assert_eq!(std::mem::size_of::<Option<Item>>(), 40);
    }

    #[test]
    fn key_and_value_share_one_allocation() {
        let it = Item::new(b"key", &[b"va", b"lue"], 7, 0, 2);
        assert_eq!(it.key(), b"key");
        assert_eq!(it.value(), b"value");
        assert_eq!(it.flags, 7);
        assert!(!it.is_expired(100));
    }

    #[test]
    fn expiry() {
        let mut it = Item::new(b"k", &[b"v"], 0, 10, 2);
        assert!(!it.is_expired(9));
        assert!(it.is_expired(10));
        it.exptime = 0;
        assert!(!it.is_expired(u32::MAX));
    }
}

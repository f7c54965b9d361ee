//! Size limits that the parser enforces before a body arrives, so no client can make the
//! server buffer without bound.

use super::command::Refusal;

/// protocol.txt "Keys": at most 250 bytes.
pub const KEY_MAX_LENGTH: usize = 250;
/// A request line this long without a newline closes the connection (memcached's 2048),
/// except for get/gets, whose key lists may be long.
pub const LINE_MAX_LENGTH: usize = 2048;
/// Bound on a get/gets line, so even a multiget cannot buffer without end.
pub const GET_LINE_MAX_LENGTH: usize = 2 * 1024 * 1024;
/// Meta commands take at most this many tokens (memcached's MFLAG_MAX_OPT_LENGTH).
pub const META_MAX_TOKENS: usize = 20;
/// An `O` opaque token is at most this long, flag letter included.
pub const META_MAX_OPAQUE_LENGTH: usize = 32;

/// memcached's size of an item: header, key, value, and 4 bytes for client flags when they
/// are not zero (memcached stores them only then). `-I` is checked against this before a
/// value arrives, so limits match memcached's to the byte.
pub fn item_size(key_len: usize, value_len: usize, flags: u32) -> usize {
    // 48-byte header + 8-byte CAS + key + NUL + [flags] + value + CRLF.
    56 + key_len + 1 + value_len + 2 + if flags != 0 { 4 } else { 0 }
}

/// memcached's slab classes, as `-n` (the space after the 48-byte item header in the
/// smallest chunk) and `-f` (the factor each class grows by) make them: chunk sizes aligned
/// to 8 bytes, up to 63 classes, the last one of 512 KB (memcached's largest chunk). The
/// store keeps no classes; `me` and `slabs reassign` answer in memcached's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlabClasses {
    /// The chunk size of each class, class 1 first.
    sizes: Vec<u64>,
}

impl SlabClasses {
    /// memcached's largest chunk (half its 1 MB slab page); larger items are chained from
    /// chunks of this class.
    pub const CHUNK_MAX: u64 = 512 * 1024;
    const HEADER: u64 = 48;
    const MAX_CLASSES: usize = 63;

    pub fn new(growth_factor: f64, chunk_size: u32) -> Self {
        let mut sizes = Vec::new();
        let mut size = Self::HEADER + u64::from(chunk_size);
        // A class is added while the next could still be below the largest chunk (a NaN or
        // non-growing factor stops at the class limit).
        while sizes.len() < Self::MAX_CLASSES - 1
            && (size as f64) < Self::CHUNK_MAX as f64 / growth_factor
        {
            size = size.next_multiple_of(8);
            sizes.push(size);
            size = (size as f64 * growth_factor) as u64;
        }
        sizes.push(Self::CHUNK_MAX);
        SlabClasses { sizes }
    }

    /// The class of an item of memcached's `size`: the first whose chunks hold it, the
    /// largest for anything bigger.
    pub fn class_of(&self, size: usize) -> u32 {
        let size = size as u64;
        let i = self.sizes.iter().position(|&c| c >= size);
        i.unwrap_or(self.sizes.len() - 1) as u32 + 1
    }

    /// How many classes there are (the largest id).
    pub fn count(&self) -> u32 {
        self.sizes.len() as u32
    }
}

impl Default for SlabClasses {
    /// memcached's defaults, `-n 48 -f 1.25`.
    fn default() -> Self {
        SlabClasses::new(1.25, 48)
    }
}

/// Parser limits that depend on configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `-I`: the largest item, in memcached's accounting (header, key, value).
    pub item_size_max: usize,
    /// The largest item there is memory for now: a storage request within `-I` but over
    /// this is refused as out of memory. The server lowers it for a request whose value
    /// it found no room to take in.
    pub room: usize,
}

impl Limits {
    /// Whether an item of memcached's `size` is refused, and why.
    pub fn refuses(&self, size: usize) -> Option<Refusal> {
        if size > self.item_size_max {
            Some(Refusal::TooLarge)
        } else if size <= self.room {
            None
        } else if size as u64 > SlabClasses::CHUNK_MAX {
            Some(Refusal::NoMemoryReading)
        } else {
            Some(Refusal::NoMemory)
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            item_size_max: 1024 * 1024,
            room: usize::MAX,
        }
    }
}

/// A key is valid if it is not empty and at most 250 bytes. As in memcached, that is the
/// only check: tokenizing already keeps spaces and newlines out of text keys, and control
/// bytes are allowed (libmemcached's `memcaslap` starts every key with 0x10).
pub fn is_valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= KEY_MAX_LENGTH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_classes_as_memcached_makes_them() {
        let c = SlabClasses::default();
        assert_eq!(c.count(), 39);
        assert_eq!(&c.sizes[..6], &[96, 120, 152, 192, 240, 304]);
        assert_eq!(&c.sizes[36..], &[315_872, 394_840, 524_288]);
        assert_eq!(
            [61, 96, 97, 120, 121, 394_841, 524_288, 5_000_000].map(|s| c.class_of(s)),
            [1, 1, 2, 2, 3, 39, 39, 39]
        );
        let c = SlabClasses::new(1.5, 30);
        assert_eq!(&c.sizes[..4], &[80, 120, 184, 280]);
        assert_eq!(c.count(), 22);
        // memcached stops at 63 classes however slowly they grow.
        assert_eq!(SlabClasses::new(1.01, 48).count(), 63);
        assert_eq!(SlabClasses::new(1.0, 48).count(), 63);
        assert_eq!(SlabClasses::new(f64::NAN, 48).count(), 1);
        assert_eq!(SlabClasses::new(1.25, u32::MAX).count(), 1);
    }

    #[test]
    fn item_size_counts_flags_as_memcached() {
        assert_eq!(item_size(3, 5, 0), 67);
        assert_eq!(item_size(3, 5, 1), 71);
    }
}

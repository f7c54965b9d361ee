//! Size limits that the parser enforces before a body arrives, so no client can make the
//! server buffer without bound.

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

/// Parser limits that depend on configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `-I`: the largest item, in memcached's accounting (header, key, value).
    pub item_size_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            item_size_max: 1024 * 1024,
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
    fn item_size_counts_flags_as_memcached() {
        assert_eq!(item_size(3, 5, 0), 67);
        assert_eq!(item_size(3, 5, 1), 71);
    }
}

//! The stored item: a variable-length header, then the key, then the value, packed into a
//! segment (see [`super::segment`]).
//!
//! Memory per item is what a cache is judged on, so the header carries only what is not
//! zero: an item with no expiry, no client flags and a standalone node id costs 10 bytes
//! besides key and value (bits and layout 1, key length 1, value length 1 for short values,
//! CAS 5, last access 2). CAS and last access are stored relative to their segment's
//! [`Base`]; a CAS too far from it is stored whole. The rarely set bits (stale, token sent,
//! tombstone, binary key) live in an extra byte that only items with one of them carry.
//!
//! Layout: `head:u8 klen:u8 vlen:LEB128 [rare:u8] cas:5|8 atime:u16 [exptime:u32]
//! [flags:u32] [node:u16] key value`, little-endian.

use super::version::{NodeId, Version};

/// Per-item bits a client can observe (stored in the first header byte or the rare byte).
pub mod bits {
    /// Fetched at least once since stored (mg `h`, `evicted_unfetched`).
    pub const FETCHED: u8 = 1 << 0;
    /// Read since its segment was last compacted: survives one more eviction pass.
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

/// The first header byte: the two hot client bits (same values as in [`bits`]), the dead
/// mark, and which optional fields are present.
mod layout {
    pub const DEAD: u8 = 1 << 2;
    pub const EXPTIME: u8 = 1 << 3;
    pub const FLAGS: u8 = 1 << 4;
    pub const NODE: u8 = 1 << 5;
    pub const FULL_CAS: u8 = 1 << 6;
    pub const RARE: u8 = 1 << 7;
    /// The bits that decide field positions; equal layouts can be rewritten in place.
    pub const SHAPE: u8 = EXPTIME | FLAGS | NODE | FULL_CAS | RARE;
}

/// Client bits kept in the first header byte.
const HOT_BITS: u8 = bits::FETCHED | bits::REFERENCED;
/// Client bits kept in the optional byte, shifted down by [`RARE_SHIFT`].
const RARE_BITS: u8 = bits::STALE | bits::TOKEN_SENT | bits::TOMBSTONE | bits::KEY_BINARY;
const RARE_SHIFT: u32 = 2;

/// CAS deltas below this fit the 5-byte form.
const SHORT_CAS_LIMIT: u64 = 1 << 40;

/// What a segment's relative fields count from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Base {
    pub stamp: u64,
    pub time: u32,
}

/// An item's fields besides key and value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
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
    pub bits: u8,
}

impl Meta {
    /// A fresh item's fields: written at `now`, no version yet.
    pub fn new(flags: u32, exptime: u32, now: u32) -> Meta {
        Meta {
            flags,
            exptime,
            atime: now,
            ..Meta::default()
        }
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

    fn shape(&self, base: Base) -> u8 {
        let mut s = 0;
        if self.exptime != 0 {
            s |= layout::EXPTIME;
        }
        if self.flags != 0 {
            s |= layout::FLAGS;
        }
        if self.node != NodeId(0) {
            s |= layout::NODE;
        }
        if !short_cas(self.cas, base) {
            s |= layout::FULL_CAS;
        }
        if self.bits & RARE_BITS != 0 {
            s |= layout::RARE;
        }
        s
    }
}

fn short_cas(cas: u64, base: Base) -> bool {
    cas >= base.stamp && cas - base.stamp < SHORT_CAS_LIMIT
}

/// A stored item, decoded: its fields and borrowed key and value.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub cas: u64,
    pub exptime: u32,
    pub atime: u32,
    pub flags: u32,
    pub node: NodeId,
    pub bits: u8,
    key: &'a [u8],
    value: &'a [u8],
}

impl<'a> Item<'a> {
    pub fn key(&self) -> &'a [u8] {
        self.key
    }

    pub fn value(&self) -> &'a [u8] {
        self.value
    }

    /// Its size as `-I` limits it ([`item_total_size`]).
    pub fn total_size(&self) -> usize {
        item_total_size(self.key.len(), self.value.len(), self.flags)
    }

    pub fn meta(&self) -> Meta {
        Meta {
            cas: self.cas,
            exptime: self.exptime,
            atime: self.atime,
            flags: self.flags,
            node: self.node,
            bits: self.bits,
        }
    }

    pub fn version(&self) -> Version {
        Version {
            stamp: self.cas,
            node: self.node,
        }
    }

    pub fn has(&self, bit: u8) -> bool {
        self.bits & bit != 0
    }

    pub fn is_tombstone(&self) -> bool {
        self.has(bits::TOMBSTONE)
    }

    /// Dead by TTL at relative second `now`.
    pub fn is_expired(&self, now: u32) -> bool {
        self.exptime != 0 && self.exptime <= now
    }
}

fn varint_len(v: u32) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0x0fff_ffff => 4,
        _ => 5,
    }
}

fn header_len(shape: u8, vlen: u32) -> usize {
    let mut n = 2 + varint_len(vlen) + 2;
    if shape & layout::RARE != 0 {
        n += 1;
    }
    n += if shape & layout::FULL_CAS != 0 { 8 } else { 5 };
    if shape & layout::EXPTIME != 0 {
        n += 4;
    }
    if shape & layout::FLAGS != 0 {
        n += 4;
    }
    if shape & layout::NODE != 0 {
        n += 2;
    }
    n
}

/// Bytes an item takes in a segment with base `base`.
pub fn encoded_len(meta: &Meta, klen: usize, vlen: usize, base: Base) -> usize {
    header_len(meta.shape(base), vlen as u32) + klen + vlen
}

/// Writes the header for `meta` at the start of `out`; returns its length.
fn write_header(out: &mut [u8], meta: &Meta, klen: usize, vlen: u32, base: Base) -> usize {
    let shape = meta.shape(base);
    out[0] = (meta.bits & HOT_BITS) | shape;
    out[1] = klen as u8;
    let mut at = 2;
    let mut v = vlen;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[at] = byte;
            at += 1;
            break;
        }
        out[at] = byte | 0x80;
        at += 1;
    }
    if shape & layout::RARE != 0 {
        out[at] = (meta.bits & RARE_BITS) >> RARE_SHIFT;
        at += 1;
    }
    if shape & layout::FULL_CAS != 0 {
        out[at..at + 8].copy_from_slice(&meta.cas.to_le_bytes());
        at += 8;
    } else {
        out[at..at + 5].copy_from_slice(&(meta.cas - base.stamp).to_le_bytes()[..5]);
        at += 5;
    }
    out[at..at + 2].copy_from_slice(&atime_delta(meta.atime, base).to_le_bytes());
    at += 2;
    if shape & layout::EXPTIME != 0 {
        out[at..at + 4].copy_from_slice(&meta.exptime.to_le_bytes());
        at += 4;
    }
    if shape & layout::FLAGS != 0 {
        out[at..at + 4].copy_from_slice(&meta.flags.to_le_bytes());
        at += 4;
    }
    if shape & layout::NODE != 0 {
        out[at..at + 2].copy_from_slice(&meta.node.0.to_le_bytes());
        at += 2;
    }
    at
}

/// Writes just the header for an item whose key and value are already in place after it.
pub fn rewrite_at(out: &mut [u8], meta: &Meta, klen: usize, vlen: usize, base: Base) -> usize {
    write_header(out, meta, klen, vlen as u32, base)
}

/// Last access as seconds after the base, saturating: ages are exact for 18 hours.
fn atime_delta(atime: u32, base: Base) -> u16 {
    atime.saturating_sub(base.time).min(u16::MAX as u32) as u16
}

/// Writes a whole item into `out` (at least [`encoded_len`] bytes); returns its length.
pub fn encode(out: &mut [u8], meta: &Meta, key: &[u8], parts: &[&[u8]], base: Base) -> usize {
    let vlen: usize = parts.iter().map(|p| p.len()).sum();
    let mut at = write_header(out, meta, key.len(), vlen as u32, base);
    out[at..at + key.len()].copy_from_slice(key);
    at += key.len();
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    at
}

/// Where an encoded item's parts are, relative to its start.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub shape: u8,
    /// Where the rare-bits byte is, if the item has one.
    rare_at: Option<usize>,
    atime_at: usize,
    pub key_at: usize,
    pub klen: usize,
    pub vlen: usize,
}

impl Fields {
    pub fn header_len(&self) -> usize {
        self.key_at
    }

    pub fn total(&self) -> usize {
        self.key_at + self.klen + self.vlen
    }

    pub fn value_at(&self) -> usize {
        self.key_at + self.klen
    }
}

/// Reads the field positions of the item starting at `buf[0]`.
pub fn fields(buf: &[u8]) -> Fields {
    let shape = buf[0] & layout::SHAPE;
    let klen = buf[1] as usize;
    let mut at = 2;
    let mut vlen = 0u32;
    let mut shift = 0;
    loop {
        let byte = buf[at];
        at += 1;
        vlen |= ((byte & 0x7f) as u32) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let rare_at = (shape & layout::RARE != 0).then_some(at);
    at += rare_at.is_some() as usize;
    let atime_at = at + if shape & layout::FULL_CAS != 0 { 8 } else { 5 };
    Fields {
        shape,
        rare_at,
        atime_at,
        key_at: header_len(shape, vlen),
        klen,
        vlen: vlen as usize,
    }
}

/// Decodes the item starting at `buf[0]`.
pub fn decode(buf: &[u8], base: Base) -> (Item<'_>, Fields) {
    let f = fields(buf);
    let cas_at = f.atime_at
        - if f.shape & layout::FULL_CAS != 0 {
            8
        } else {
            5
        };
    let cas = if f.shape & layout::FULL_CAS != 0 {
        u64_at(buf, cas_at, 8)
    } else {
        base.stamp + u64_at(buf, cas_at, 5)
    };
    let atime = base.time + u64_at(buf, f.atime_at, 2) as u32;
    let mut at = f.atime_at + 2;
    let mut opt32 = |bit: u8| {
        if f.shape & bit != 0 {
            at += 4;
            u64_at(buf, at - 4, 4) as u32
        } else {
            0
        }
    };
    let exptime = opt32(layout::EXPTIME);
    let flags = opt32(layout::FLAGS);
    let node = if f.shape & layout::NODE != 0 {
        NodeId(u64_at(buf, at, 2) as u16)
    } else {
        NodeId(0)
    };
    let item = Item {
        cas,
        exptime,
        atime,
        flags,
        node,
        bits: client_bits(buf, &f),
        key: &buf[f.key_at..f.key_at + f.klen],
        value: &buf[f.value_at()..f.value_at() + f.vlen],
    };
    (item, f)
}

fn client_bits(buf: &[u8], f: &Fields) -> u8 {
    let rare = f.rare_at.map_or(0, |at| buf[at] << RARE_SHIFT);
    (buf[0] & HOT_BITS) | rare
}

fn u64_at(buf: &[u8], at: usize, n: usize) -> u64 {
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&buf[at..at + n]);
    u64::from_le_bytes(b)
}

/// Rewrites the header of the item at `buf[0]` with `meta`, if its layout stays the same
/// (the header length then does too). False if the item must be written anew.
pub fn rewrite_header(buf: &mut [u8], meta: &Meta, base: Base) -> bool {
    rewrite(buf, meta, None, base)
}

/// As [`rewrite_header`], also writing `value` over the old one if it has the same length.
pub fn overwrite(buf: &mut [u8], meta: &Meta, value: &[u8], base: Base) -> bool {
    rewrite(buf, meta, Some(value), base)
}

fn rewrite(buf: &mut [u8], meta: &Meta, value: Option<&[u8]>, base: Base) -> bool {
    let f = fields(buf);
    if meta.shape(base) != f.shape || value.is_some_and(|v| v.len() != f.vlen) {
        return false;
    }
    let dead = buf[0] & layout::DEAD;
    write_header(buf, meta, f.klen, f.vlen as u32, base);
    buf[0] |= dead;
    if let Some(v) = value {
        buf[f.value_at()..f.total()].copy_from_slice(v);
    }
    true
}

/// Updates the client bits and last access in place (a read); false if a rare bit is to
/// be set on an item without room for one.
pub fn set_bits_and_atime(buf: &mut [u8], bits: u8, atime: u32, base: Base) -> bool {
    let f = fields(buf);
    match f.rare_at {
        Some(at) => buf[at] = (bits & RARE_BITS) >> RARE_SHIFT,
        None if bits & RARE_BITS != 0 => return false,
        None => {}
    }
    buf[0] = (buf[0] & !HOT_BITS) | (bits & HOT_BITS);
    buf[f.atime_at..f.atime_at + 2].copy_from_slice(&atime_delta(atime, base).to_le_bytes());
    true
}

pub fn is_dead(buf: &[u8]) -> bool {
    buf[0] & layout::DEAD != 0
}

pub fn mark_dead(buf: &mut [u8]) {
    buf[0] |= layout::DEAD;
}

/// memcached's item total: header, key, value, and 4 bytes for client flags when they are
/// not zero (memcached stores them only then); used for the `-I` check so limits match.
pub fn item_total_size(key_len: usize, value_len: usize, flags: u32) -> usize {
    // memcached: 48-byte header + 8-byte CAS + key + NUL + [flags] + value + CRLF.
    56 + key_len + 1 + value_len + 2 + if flags != 0 { 4 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(meta: Meta, key: &[u8], value: &[u8], base: Base) -> usize {
        let len = encoded_len(&meta, key.len(), value.len(), base);
        let mut buf = vec![0u8; len + 3];
        assert_eq!(encode(&mut buf, &meta, key, &[value], base), len);
        let (it, f) = decode(&buf, base);
        assert_eq!(f.total(), len);
        assert_eq!((it.key(), it.value()), (key, value));
        assert_eq!(it.meta(), meta);
        len
    }

    #[test]
    fn a_plain_item_costs_ten_bytes_of_header() {
        let base = Base {
            stamp: 1 << 50,
            time: 100,
        };
        let meta = Meta {
            cas: (1 << 50) + 12345,
            atime: 130,
            ..Meta::default()
        };
        assert_eq!(roundtrip(meta, &[b'k'; 16], &[b'v'; 100], base), 10 + 116);
    }

    #[test]
    fn optional_fields_and_long_values_roundtrip() {
        let base = Base {
            stamp: 500,
            time: 7,
        };
        for vlen in [0usize, 127, 128, 16383, 16384, 300_000] {
            let meta = Meta {
                cas: 3, // below the base: stored whole
                exptime: 99,
                atime: 7 + 65535,
                flags: 0xdead_beef,
                node: NodeId(9),
                bits: bits::STALE | bits::KEY_BINARY,
            };
            let n = roundtrip(meta, b"key", &vec![b'x'; vlen], base);
            assert_eq!(
                n,
                3 + varint_len(vlen as u32) + 8 + 2 + 4 + 4 + 2 + 3 + vlen
            );
            let fetched = Meta {
                bits: bits::FETCHED,
                ..meta
            };
            assert_eq!(roundtrip(fetched, b"key", &vec![b'x'; vlen], base), n - 1);
        }
    }

    #[test]
    fn header_rewrites_in_place_only_when_the_layout_holds() {
        let base = Base::default();
        let meta = Meta {
            cas: 10,
            exptime: 5,
            ..Meta::default()
        };
        let mut buf = vec![0u8; encoded_len(&meta, 1, 1, base)];
        encode(&mut buf, &meta, b"k", &[b"v"], base);
        mark_dead(&mut buf);
        let later = Meta {
            cas: 11,
            exptime: 9,
            ..meta
        };
        assert!(rewrite_header(&mut buf, &later, base));
        assert!(is_dead(&buf), "the dead mark survives a rewrite");
        assert_eq!(decode(&buf, base).0.exptime, 9);
        let no_expiry = Meta {
            exptime: 0,
            ..later
        };
        assert!(!rewrite_header(&mut buf, &no_expiry, base));
        assert!(set_bits_and_atime(&mut buf, bits::FETCHED, 42, base));
        let (it, _) = decode(&buf, base);
        assert_eq!(
            (it.bits, it.atime, it.value()),
            (bits::FETCHED, 42, &b"v"[..])
        );
        assert!(is_dead(&buf));
        assert!(
            !set_bits_and_atime(&mut buf, bits::TOKEN_SENT, 42, base),
            "no room for a rare bit"
        );
    }

    #[test]
    fn item_total_size_counts_flags_as_memcached() {
        assert_eq!(item_total_size(3, 5, 0), 67);
        assert_eq!(item_total_size(3, 5, 1), 71);
    }
}

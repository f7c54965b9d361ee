//! Mutation records: one change to the store, encoded once into an immutable buffer.
//!
//! The feed hands the same record to every reader (a clone is a reference count), so the
//! encoding is built in one allocation on the write path and never copied again; the same
//! bytes can go to the wire as they are. Fields sit at fixed offsets, so reading one is a
//! load, and [`Record::decode`] checks untrusted bytes fully, so the accessors cannot panic
//! on anything it accepted.
//!
//! Layout, little-endian, a 32-byte header then the key then the value:
//!
//! ```text
//!  0  kind       u8   0 live, 1 deleted, 2 flush
//!  1  has origin u8   1 when the change came from a peer, else 0
//!  2  origin     u16  that peer (0 when none)
//!  4  node       u16  version.node
//!  6  key len    u16  1..=250 for live and deleted; 0 for a flush
//!  8  stamp      u64  version.stamp
//! 16  flags      u32  live: client flags     } flush: `before`, one u64 over both
//! 20  exptime    u32  live: relative second  } (0 for a delete)
//! 24  at         u32  flush: relative second it takes effect; live: the item's state
//!                     bits a peer keeps too (stale, key given in base64; protocol v3 on,
//!                     0 to an older peer); else 0
//! 28  value len  u32  0 unless live
//! 32  key, then value
//! ```
//!
//! Fields a kind does not use are zero, so every record has exactly one encoding.

use bytes::{BufMut, Bytes};

use super::item::{bits, item_total_size, Item};
use super::version::{NodeId, Version};

/// memcached's key limit; the store never holds a longer key.
pub const KEY_MAX: usize = 250;

const HEADER: usize = 32;
const KIND: usize = 0;
const HAS_ORIGIN: usize = 1;
const ORIGIN: usize = 2;
const NODE: usize = 4;
const KEY_LEN: usize = 6;
const STAMP: usize = 8;
const FLAGS: usize = 16;
const EXPTIME: usize = 20;
const BEFORE: usize = 16;
const AT: usize = 24;
const VALUE_LEN: usize = 28;

/// Item bits that belong to the item's state, not to this node's reads: an invalidated item
/// (`md I`) is stale on every node, and a key stored in base64 is returned in base64 by every
/// node. The win token (handed out by a read) stays each node's own.
pub const CARRIED_BITS: u8 = bits::STALE | bits::KEY_BINARY;

/// What a change left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The item as it now is.
    Live = 0,
    /// The key holds nothing as of the record's version.
    Deleted = 1,
    /// A flush_all: older items go, at once or at a given second.
    Flush = 2,
}

/// One change, encoded once into an immutable buffer that every reader shares (a clone is a
/// reference count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    seq: u64,
    bytes: Bytes,
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record shorter than its header ({0} bytes)")]
    Short(usize),
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("malformed record origin")]
    Origin,
    #[error("record lengths do not match its size")]
    Length,
    #[error("record key length {0} out of range")]
    KeyLength(usize),
    #[error("record sets a field its kind does not use")]
    Unused,
}

impl Record {
    /// The item `key` now holds. `exptime` is the store's relative second (0: never);
    /// `origin` is the peer the change came from (None: a local client), so replication never
    /// sends a change back where it came from.
    pub fn live(
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: u32,
        version: Version,
        origin: Option<NodeId>,
    ) -> Record {
        live_with_bits(key, value, flags, exptime, 0, version, origin)
    }

    /// The state an item holds: live (with its [`CARRIED_BITS`]), or a delete marker.
    pub fn of_item(it: &Item<'_>, origin: Option<NodeId>) -> Record {
        if it.is_tombstone() {
            Record::deleted(it.key(), it.version(), origin)
        } else {
            live_with_bits(
                it.key(),
                it.value(),
                it.flags,
                it.exptime,
                it.bits & CARRIED_BITS,
                it.version(),
                origin,
            )
        }
    }

    /// `key` is gone, as of `version`.
    pub fn deleted(key: &[u8], version: Version, origin: Option<NodeId>) -> Record {
        encode(Kind::Deleted, key, &[], version, origin, 0, 0)
    }

    /// A flush_all: items stamped below `before` are gone once relative second `at` has come
    /// (0: at once).
    pub fn flush(version: Version, before: u64, at: u32, origin: Option<NodeId>) -> Record {
        encode(Kind::Flush, &[], &[], version, origin, before, at)
    }

    /// Checks untrusted bytes (from a peer) completely, so no accessor can fail later.
    pub fn decode(bytes: Bytes) -> Result<Record, RecordError> {
        let b = &bytes[..];
        if b.len() < HEADER {
            return Err(RecordError::Short(b.len()));
        }
        let rec = Record { seq: 0, bytes };
        let kind = match rec.byte(KIND) {
            0 => Kind::Live,
            1 => Kind::Deleted,
            2 => Kind::Flush,
            k => return Err(RecordError::Kind(k)),
        };
        match rec.byte(HAS_ORIGIN) {
            1 => {}
            0 if rec.u16_at(ORIGIN) == 0 => {}
            _ => return Err(RecordError::Origin),
        }
        let (klen, vlen) = (rec.key_len(), rec.value_len());
        if HEADER.checked_add(klen).and_then(|n| n.checked_add(vlen)) != Some(rec.len()) {
            return Err(RecordError::Length);
        }
        let key_ok = match kind {
            Kind::Flush => klen == 0,
            _ => (1..=KEY_MAX).contains(&klen),
        };
        if !key_ok {
            return Err(RecordError::KeyLength(klen));
        }
        let unused = match kind {
            Kind::Live => rec.u32_at(AT) & !u32::from(CARRIED_BITS) != 0,
            Kind::Deleted => rec.u64_at(FLAGS) != 0 || rec.u32_at(AT) != 0 || vlen != 0,
            Kind::Flush => vlen != 0,
        };
        if unused {
            return Err(RecordError::Unused);
        }
        Ok(rec)
    }

    pub fn kind(&self) -> Kind {
        match self.byte(KIND) {
            0 => Kind::Live,
            1 => Kind::Deleted,
            _ => Kind::Flush,
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.bytes[HEADER..HEADER + self.key_len()]
    }

    pub fn value(&self) -> &[u8] {
        let at = HEADER + self.key_len();
        &self.bytes[at..at + self.value_len()]
    }

    /// The size of the item a live record makes, as `-I` counts it ([`item_total_size`]);
    /// 0 for other kinds, which every node takes.
    pub fn item_size(&self) -> usize {
        match self.kind() {
            Kind::Live => item_total_size(self.key_len(), self.value_len(), self.flags()),
            _ => 0,
        }
    }

    /// Client flags of a live item; 0 for other kinds.
    pub fn flags(&self) -> u32 {
        self.live_or_zero(FLAGS)
    }

    /// Relative expiry of a live item (0: never); 0 for other kinds.
    pub fn exptime(&self) -> u32 {
        self.live_or_zero(EXPTIME)
    }

    pub fn version(&self) -> Version {
        Version {
            stamp: self.u64_at(STAMP),
            node: NodeId(self.u16_at(NODE)),
        }
    }

    pub fn origin(&self) -> Option<NodeId> {
        (self.byte(HAS_ORIGIN) != 0).then(|| NodeId(self.u16_at(ORIGIN)))
    }

    /// A flush removes items stamped below this; 0 for other kinds.
    pub fn flush_before(&self) -> u64 {
        match self.kind() {
            Kind::Flush => self.u64_at(BEFORE),
            _ => 0,
        }
    }

    /// The relative second a flush takes effect (0: at once); 0 for other kinds.
    pub fn flush_at(&self) -> u32 {
        match self.kind() {
            Kind::Flush => self.u32_at(AT),
            _ => 0,
        }
    }

    /// A live item's [`CARRIED_BITS`]; 0 for other kinds.
    pub fn item_bits(&self) -> u8 {
        self.live_or_zero(AT) as u8
    }

    /// Appends the encoding to `out`; without the item bits (`item_bits` false) for a peer
    /// of protocol v2, which refuses them.
    pub fn put_into(&self, out: &mut impl BufMut, item_bits: bool) {
        if item_bits || self.item_bits() == 0 {
            out.put_slice(&self.bytes);
        } else {
            out.put_slice(&self.bytes[..AT]);
            out.put_u32_le(0);
            out.put_slice(&self.bytes[AT + 4..]);
        }
    }

    /// This record as a peer of protocol v2 can take it (see [`Record::put_into`]).
    pub fn for_peer(self, item_bits: bool) -> Record {
        if item_bits || self.item_bits() == 0 {
            return self;
        }
        let mut b = Vec::with_capacity(self.len());
        self.put_into(&mut b, false);
        Record {
            seq: self.seq,
            bytes: Bytes::from(b),
        }
    }

    /// The position in its ring's sequence (0 until pushed).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn with_seq(self, seq: u64) -> Record {
        Record { seq, ..self }
    }

    /// The encoding (without the sequence number, which belongs to the ring).
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Encoded size: what a ring's byte bound counts.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true (a record has a header); here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn live_or_zero(&self, at: usize) -> u32 {
        match self.kind() {
            Kind::Live => self.u32_at(at),
            _ => 0,
        }
    }

    fn key_len(&self) -> usize {
        usize::from(self.u16_at(KEY_LEN))
    }

    fn value_len(&self) -> usize {
        self.u32_at(VALUE_LEN) as usize
    }

    fn byte(&self, at: usize) -> u8 {
        self.bytes[at]
    }

    fn u16_at(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.field(at))
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.field(at))
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.field(at))
    }

    fn field<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut a = [0; N];
        a.copy_from_slice(&self.bytes[at..at + N]);
        a
    }
}

/// A live record whose `at` field holds the item's [`CARRIED_BITS`].
fn live_with_bits(
    key: &[u8],
    value: &[u8],
    flags: u32,
    exptime: u32,
    carried: u8,
    version: Version,
    origin: Option<NodeId>,
) -> Record {
    let wide = u64::from(flags) | u64::from(exptime) << 32;
    let at = u32::from(carried);
    encode(Kind::Live, key, value, version, origin, wide, at)
}

/// Builds the encoding in one exact allocation. The store has already bounded the key (by
/// `KEY_MAX`) and the value (by `-I`), so the asserts guard only against a bug.
fn encode(
    kind: Kind,
    key: &[u8],
    value: &[u8],
    version: Version,
    origin: Option<NodeId>,
    wide: u64,
    at: u32,
) -> Record {
    assert!(key.len() <= KEY_MAX && u32::try_from(value.len()).is_ok());
    let mut b = Vec::with_capacity(HEADER + key.len() + value.len());
    b.put_u8(kind as u8);
    b.put_u8(u8::from(origin.is_some()));
    b.put_u16_le(origin.map_or(0, |n| n.0));
    b.put_u16_le(version.node.0);
    b.put_u16_le(key.len() as u16);
    b.put_u64_le(version.stamp);
    b.put_u64_le(wide);
    b.put_u32_le(at);
    b.put_u32_le(value.len() as u32);
    b.put_slice(key);
    b.put_slice(value);
    Record {
        seq: 0,
        bytes: Bytes::from(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::v;
    use proptest::prelude::*;

    /// The same record, rebuilt from its accessors.
    fn rebuild(r: &Record) -> Record {
        match r.kind() {
            Kind::Live => Record::live(
                r.key(),
                r.value(),
                r.flags(),
                r.exptime(),
                r.version(),
                r.origin(),
            ),
            Kind::Deleted => Record::deleted(r.key(), r.version(), r.origin()),
            Kind::Flush => Record::flush(r.version(), r.flush_before(), r.flush_at(), r.origin()),
        }
    }

    fn decoded(r: &Record) -> Record {
        Record::decode(r.as_bytes().clone()).expect("a built record decodes")
    }

    #[test]
    fn live_records_carry_the_item_state_bits_except_to_a_v2_peer() {
        let r = Record::live(b"k", b"v", 1, 2, v(3, 4), None);
        let mut b = r.as_bytes().to_vec();
        b[AT] = bits::STALE | bits::KEY_BINARY;
        let r = Record::decode(Bytes::from(b.clone())).expect("carried bits decode");
        assert_eq!(r.item_bits(), bits::STALE | bits::KEY_BINARY);
        // A read's bits are this node's own: refused on the wire.
        b[AT] = bits::STALE | bits::FETCHED;
        assert_eq!(Record::decode(Bytes::from(b)), Err(RecordError::Unused));
        // To a v2 peer: the same record with the field zeroed, as it would accept.
        let old = r.clone().for_peer(false);
        assert_eq!(old.item_bits(), 0);
        assert_eq!(old, Record::live(b"k", b"v", 1, 2, v(3, 4), None));
        let mut out = Vec::new();
        r.put_into(&mut out, false);
        assert_eq!(&out[..], &old.as_bytes()[..]);
        assert_eq!(r.clone().for_peer(true), r);
    }

    #[test]
    fn live_round_trips() {
        let r = Record::live(
            b"k1",
            b"hello",
            0xdead_beef,
            77,
            v(1 << 40, 3),
            Some(NodeId(9)),
        );
        assert_eq!(r.len(), HEADER + 2 + 5);
        assert_eq!(r.as_bytes().len(), r.len());
        assert_eq!(r.kind(), Kind::Live);
        assert_eq!((r.key(), r.value()), (&b"k1"[..], &b"hello"[..]));
        assert_eq!((r.flags(), r.exptime()), (0xdead_beef, 77));
        assert_eq!(r.version(), v(1 << 40, 3));
        assert_eq!(r.origin(), Some(NodeId(9)));
        assert_eq!((r.flush_before(), r.flush_at(), r.seq()), (0, 0, 0));
        assert_eq!(decoded(&r), r);
        assert_eq!(rebuild(&r), r);
        assert_eq!(r.clone().with_seq(5).seq(), 5);
    }

    #[test]
    fn deleted_round_trips() {
        let r = Record::deleted(b"gone", v(42, 0), None);
        assert_eq!(r.kind(), Kind::Deleted);
        assert_eq!((r.key(), r.value()), (&b"gone"[..], &b""[..]));
        assert_eq!((r.flags(), r.exptime(), r.origin()), (0, 0, None));
        assert_eq!(r.version(), v(42, 0));
        assert_eq!(decoded(&r), r);
        assert_eq!(rebuild(&r), r);
    }

    #[test]
    fn flush_round_trips() {
        let r = Record::flush(v(99, 2), u64::MAX - 1, 30, Some(NodeId(0)));
        assert_eq!(r.kind(), Kind::Flush);
        assert!(r.key().is_empty() && r.value().is_empty());
        assert_eq!((r.flush_before(), r.flush_at()), (u64::MAX - 1, 30));
        assert_eq!((r.flags(), r.exptime()), (0, 0));
        assert_eq!(r.origin(), Some(NodeId(0)));
        assert_eq!(r.len(), HEADER);
        assert_eq!(decoded(&r), r);
        assert_eq!(rebuild(&r), r);
    }

    #[test]
    fn decode_rejects_malformed_input() {
        let good = Record::live(b"key", b"value", 1, 2, v(3, 4), None);
        let bytes = good.as_bytes().to_vec();
        let with = |at: usize, b: u8| {
            let mut x = bytes.clone();
            x[at] = b;
            Record::decode(Bytes::from(x))
        };
        let dec = |x: &[u8]| Record::decode(Bytes::copy_from_slice(x));
        assert_eq!(dec(&[]), Err(RecordError::Short(0)));
        assert_eq!(dec(&bytes[..HEADER - 1]), Err(RecordError::Short(31)));
        assert_eq!(dec(&bytes[..bytes.len() - 1]), Err(RecordError::Length));
        assert_eq!(
            dec(&[bytes.as_slice(), b"x"].concat()),
            Err(RecordError::Length)
        );
        assert_eq!(with(KIND, 3), Err(RecordError::Kind(3)));
        assert_eq!(with(HAS_ORIGIN, 2), Err(RecordError::Origin));
        assert_eq!(with(ORIGIN, 1), Err(RecordError::Origin));
        assert_eq!(with(AT, 1), Err(RecordError::Unused));
        assert_eq!(with(VALUE_LEN + 3, 0xff), Err(RecordError::Length));
        // A live record read as a delete still carries flags and a value.
        assert_eq!(with(KIND, 1), Err(RecordError::Unused));
        // Read as a flush, its key is not allowed.
        assert_eq!(with(KIND, 2), Err(RecordError::KeyLength(3)));

        // A live header claiming these lengths, and that many bytes after it.
        let sized = |klen: u16, vlen: u32| {
            let mut x = bytes[..HEADER].to_vec();
            x[KEY_LEN..KEY_LEN + 2].copy_from_slice(&klen.to_le_bytes());
            x[VALUE_LEN..VALUE_LEN + 4].copy_from_slice(&vlen.to_le_bytes());
            x.resize(HEADER + usize::from(klen) + vlen as usize, b'k');
            Record::decode(Bytes::from(x))
        };
        assert!(sized(250, 0).is_ok());
        assert_eq!(sized(251, 0), Err(RecordError::KeyLength(251)));
        assert_eq!(sized(0, 5), Err(RecordError::KeyLength(0)));
        assert!(dec(&[0xff; 64]).is_err());
    }

    /// Any record the constructors build.
    fn record() -> impl Strategy<Value = Record> {
        let key = proptest::collection::vec(any::<u8>(), 1..=KEY_MAX);
        let value = proptest::collection::vec(any::<u8>(), 0..64);
        let version = (any::<u64>(), any::<u16>()).prop_map(|(s, n)| v(s, n));
        let origin = proptest::option::of(any::<u16>().prop_map(NodeId));
        (0u8..3, key, value, any::<u64>(), version, origin).prop_map(
            |(kind, key, value, wide, version, origin)| match kind {
                0 => Record::live(
                    &key,
                    &value,
                    wide as u32,
                    (wide >> 32) as u32,
                    version,
                    origin,
                ),
                1 => Record::deleted(&key, version, origin),
                _ => Record::flush(version, wide, (wide >> 40) as u32, origin),
            },
        )
    }

    /// Arbitrary bytes, or a record with one byte changed or its end cut, so that decoding
    /// often gets past its first checks.
    fn candidate() -> impl Strategy<Value = Vec<u8>> {
        let valid = record().prop_map(|r| r.as_bytes().to_vec());
        crate::testing::edited_or_random(valid, 80)
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_accepts_only_canonical_records(b in candidate()) {
            if let Ok(r) = Record::decode(Bytes::from(b.clone())) {
                let _ = (r.kind(), r.key(), r.value(), r.flags(), r.exptime(), r.version());
                let _ = (r.origin(), r.flush_before(), r.flush_at());
                let again = rebuild(&r);
                prop_assert_eq!(again.as_bytes().as_ref(), &b[..]);
            }
        }
    }
}

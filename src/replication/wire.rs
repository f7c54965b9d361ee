//! Replication frames: pure encoding and decoding, no I/O.
//!
//! Layout, little-endian: `len: u32` (bytes after it), `type: u8`, then the body.
//!
//! ```text
//!  1 Hello          version u16, node u16, run u64, nonce [16], cluster str
//!  2 Proof          mac [32]
//!  3 Refuse         reason str
//!  4 SnapshotStart  complete u8 (0 or 1)
//!  5 SnapshotEnd    (empty)
//!  6 Changes        now u32, count u32, count × (len u32, record bytes)
//!  7 Heartbeat      (empty)
//!  8 Fetch          id u64, key len u16, key
//!  9 Fetched        id u64, now u32, has u8, [len u32, record bytes]
//! 10 Resume         run u64, chain u64, events u64, count u32, count × seq u64, listen str
//! 11 Mark           chain u64, n u64, events u64, count u32, count × (shard u32, seq u64)
//! 12 Ack            n u64
//! 13 AckPrompt      (empty; v4)
//! 14 Limits         item_size_max u64 (v5)
//! 15 Covered        stamp u64 (v7)
//! 16 Hears          count u32, count × node u16 (v7)
//! 17 Gap            node u16, from u64 (v7)
//! 18 Filled         (empty; v7)
//!  str = len u16 (at most MAX_STRING) + UTF-8
//! ```
//!
//! Hello and Refuse keep this layout in every protocol version, so any release can read
//! another's Hello and refuse it with a reason the operator can act on.
//!
//! Decoding is strict: a body must be exactly as long as its fields, and records must be
//! canonical, so every accepted frame has one encoding. After an error the stream is out of
//! step and the link must be dropped.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::store::record::RecordError;
use crate::store::{NodeId, Record};

/// The replication protocol version this build speaks.
/// v3: live records carry the item's state bits (stale, base64 key) in their `at` field.
/// v4: AckPrompt (sent only to v4 peers).
/// v5: Limits (sent only to v5 peers).
/// v6: a sender waits for the peer's Limits, sends no item over them, and keeps each
/// Changes frame within [`BATCH_BYTES`] plus one record, so a v6 receiver bounds frames by
/// its own `-I` ([`frame_limit`]) rather than by [`MAX_FRAME`].
/// v7: Covered, Hears, Gap and Filled (sent only to v7 peers): a node no longer relays a change to
/// a peer that gets it from the node that wrote it ([`super::relay`]).
pub const PROTOCOL_VERSION: u16 = 7;
/// The oldest version this build accepts from a peer. A node meeting an older peer than
/// itself but not older than this speaks the peer's version (to a v2 peer, records go
/// without item bits, which it would refuse; v1 had no resume).
pub const MIN_PROTOCOL_VERSION: u16 = 2;
/// Largest frame accepted. A batch of changes is a few hundred KB, but one record may be as
/// large as the largest item (`-I`, at most 1 GB) and travels in a frame of its own; a peer
/// announcing more is broken. The bytes arrive (and are buffered) as they are sent, so the
/// limit reserves nothing up front.
pub const MAX_FRAME: usize = (1 << 30) + (1 << 20);
/// Bytes of records a Changes frame holds before the next record starts another frame (a
/// frame may pass it by its last record).
pub const BATCH_BYTES: usize = 256 << 10;
/// Longest cluster name or refusal reason, in bytes.
pub const MAX_STRING: usize = 1024;

const HELLO: u8 = 1;
const PROOF: u8 = 2;
const REFUSE: u8 = 3;
const SNAPSHOT_START: u8 = 4;
const SNAPSHOT_END: u8 = 5;
const CHANGES: u8 = 6;
const HEARTBEAT: u8 = 7;
const FETCH: u8 = 8;
const FETCHED: u8 = 9;
const RESUME: u8 = 10;
const MARK: u8 = 11;
const ACK: u8 = 12;
const ACK_PROMPT: u8 = 13;
const LIMITS: u8 = 14;
const COVERED: u8 = 15;
const HEARS: u8 = 16;
const GAP: u8 = 17;
const FILLED: u8 = 18;

/// The smallest record (a header) plus its length prefix: bounds a claimed record count.
const MIN_RECORD: usize = 4 + 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame each side sends.
    Hello {
        version: u16,
        cluster: String,
        node: NodeId,
        run: u64,
        nonce: [u8; 16],
    },
    /// HMAC proof that the sender knows the secret (all zeros when no secret is configured).
    Proof { mac: [u8; 32] },
    /// Why the sender refuses the link; it closes the connection after this.
    Refuse { reason: String },
    /// The sender starts a full copy of its data (a snapshot follows as Changes frames);
    /// `complete`: the sender itself was caught up, so the copy holds the cluster's data.
    SnapshotStart { complete: bool },
    /// The snapshot is complete.
    SnapshotEnd,
    /// Changes, as store records; `now` is the sender's relative second when it sent them,
    /// so the receiver can turn each record's expiry into a remaining lifetime.
    Changes { now: u32, records: Vec<Record> },
    /// Keeps a quiet link alive; its absence for the timeout means the link is dead.
    Heartbeat,
    /// A node still catching up missed `key`: what does the sender hold of it?
    Fetch { id: u64, key: Bytes },
    /// The answer to Fetch `id`: the key's state (live or deleted), if any, with the
    /// sender's `now` for its expiry.
    Fetched {
        id: u64,
        now: u32,
        record: Option<Record>,
    },
    /// The first frame after the handshake: how much of the peer's feed this node has
    /// applied, so the peer can send only the rest (a partial resync). `chain` 0 (nothing
    /// usable) asks for a full copy.
    Resume {
        /// The peer's process these positions belong to.
        run: u64,
        /// Which of the peer's feed readers they come from (see [`Frame::Mark`]).
        chain: u64,
        events: u64,
        shards: Vec<u64>,
        /// Where the sender listens for peers: names it across restarts (its node id may
        /// change).
        listen: String,
    },
    /// Sent after changes: every change of the sender's feed before these positions has
    /// been sent (of `chain`, one continuous feed reader). The first Mark of a copy lists
    /// every shard; later ones only the shards that moved. `n` numbers marks for [`Frame::Ack`].
    Mark {
        chain: u64,
        n: u64,
        events: u64,
        shards: Vec<(u32, u64)>,
    },
    /// Everything up to Mark `n` has been applied (the sender measures lag with it).
    Ack { n: u64 },
    /// The sender answers writes only once peers hold them (`--repl-ack-peers`): acks go
    /// out at once, not gathered with other frames. Sent once per link, to v4 peers.
    AckPrompt,
    /// The sender's largest item (`-I`, as [`crate::store::item_total_size`] counts it):
    /// a change larger than that it refuses, so its acks do not say it holds a write that
    /// large. Sent once per link, after Resume, to v5 peers.
    Limits { item_size_max: u64 },
    /// Every change the sender wrote itself with a stamp below `stamp` has been sent on
    /// this link (v7): what the receiver asks other peers for if the link drops.
    Covered { stamp: u64 },
    /// The nodes whose own changes reach the sender straight from them (v7): the receiver
    /// need not relay what it got from one of them (see [`super::relay`]).
    Hears { nodes: Vec<NodeId> },
    /// The sender no longer hears `node`, and may lack the changes `node` wrote stamped from
    /// `from` on, which the receiver did not relay while it did (v7): send what you hold.
    Gap { node: NodeId, from: u64 },
    /// The answer to the oldest Gap not yet answered on this link: what the sender holds
    /// of it has been sent (v7).
    Filled,
}

/// Why bytes from a peer are not a frame. Any of these means the peer is broken or not a
/// repcached node, and the link should be dropped.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("unknown replication frame type {0}")]
    UnknownType(u8),
    #[error("replication frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized { len: usize, max: usize },
    #[error("malformed {frame} frame: {problem}")]
    Malformed {
        frame: &'static str,
        problem: &'static str,
    },
    #[error("bad record in a Changes frame: {0}")]
    Record(#[from] RecordError),
    #[error("string of {len} bytes in a {frame} frame exceeds the {max}-byte limit")]
    StringTooLong {
        frame: &'static str,
        len: usize,
        max: usize,
    },
    #[error("string in a {frame} frame is not UTF-8")]
    NotUtf8 { frame: &'static str },
}

/// Appends the encoding of `frame` to `out`. Records are written as their existing bytes
/// (not re-encoded). A string over [`MAX_STRING`] is cut at a character boundary; the
/// caller keeps a Changes batch under [`MAX_FRAME`], or the peer refuses it.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let ty = match frame {
        Frame::Changes { now, records } => return encode_changes(*now, records, out, true),
        Frame::Hello { .. } => HELLO,
        Frame::Proof { .. } => PROOF,
        Frame::Refuse { .. } => REFUSE,
        Frame::SnapshotStart { .. } => SNAPSHOT_START,
        Frame::SnapshotEnd => SNAPSHOT_END,
        Frame::Heartbeat => HEARTBEAT,
        Frame::Fetch { .. } => FETCH,
        Frame::Fetched { .. } => FETCHED,
        Frame::Resume { .. } => RESUME,
        Frame::Mark { .. } => MARK,
        Frame::Ack { .. } => ACK,
        Frame::AckPrompt => ACK_PROMPT,
        Frame::Limits { .. } => LIMITS,
        Frame::Covered { .. } => COVERED,
        Frame::Hears { .. } => HEARS,
        Frame::Gap { .. } => GAP,
        Frame::Filled => FILLED,
    };
    let start = out.len();
    out.put_u32_le(0); // the length, once known
    out.put_u8(ty);
    match frame {
        Frame::Hello {
            version,
            cluster,
            node,
            run,
            nonce,
        } => {
            out.put_u16_le(*version);
            out.put_u16_le(node.0);
            out.put_u64_le(*run);
            out.put_slice(nonce);
            put_str(out, cluster);
        }
        Frame::Proof { mac } => out.put_slice(mac),
        Frame::Refuse { reason } => put_str(out, reason),
        Frame::Fetch { id, key } => {
            out.put_u64_le(*id);
            out.put_u16_le(key.len() as u16);
            out.put_slice(key);
        }
        Frame::Fetched { id, now, record } => {
            out.put_u64_le(*id);
            out.put_u32_le(*now);
            match record {
                Some(r) => {
                    out.put_u8(1);
                    out.put_u32_le(r.len() as u32);
                    out.put_slice(r.as_bytes());
                }
                None => out.put_u8(0),
            }
        }
        Frame::SnapshotStart { complete } => out.put_u8(u8::from(*complete)),
        Frame::Resume {
            run,
            chain,
            events,
            shards,
            listen,
        } => {
            out.put_u64_le(*run);
            out.put_u64_le(*chain);
            out.put_u64_le(*events);
            out.put_u32_le(shards.len() as u32);
            for seq in shards {
                out.put_u64_le(*seq);
            }
            put_str(out, listen);
        }
        Frame::Mark {
            chain,
            n,
            events,
            shards,
        } => {
            out.put_u64_le(*chain);
            out.put_u64_le(*n);
            out.put_u64_le(*events);
            out.put_u32_le(shards.len() as u32);
            for (shard, seq) in shards {
                out.put_u32_le(*shard);
                out.put_u64_le(*seq);
            }
        }
        Frame::Ack { n } => out.put_u64_le(*n),
        Frame::Limits { item_size_max } => out.put_u64_le(*item_size_max),
        Frame::Covered { stamp } => out.put_u64_le(*stamp),
        Frame::Hears { nodes } => {
            out.put_u32_le(nodes.len() as u32);
            for n in nodes {
                out.put_u16_le(n.0);
            }
        }
        Frame::Gap { node, from } => {
            out.put_u16_le(node.0);
            out.put_u64_le(*from);
        }
        _ => {}
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Encodes a Changes frame straight from records a reader got (so a batch is not cloned
/// into a Frame first).
///
/// `item_bits`: the peer speaks protocol v3 or later and takes live records' item bits
/// (see [`crate::store::record::CARRIED_BITS`]); a v2 peer gets them zeroed.
pub fn encode_changes(now: u32, records: &[Record], out: &mut BytesMut, item_bits: bool) {
    let body: usize = records.iter().map(|r| 4 + r.len()).sum();
    let len = 1 + 8 + body;
    out.reserve(4 + len);
    out.put_u32_le(len as u32);
    out.put_u8(CHANGES);
    out.put_u32_le(now);
    out.put_u32_le(records.len() as u32);
    for r in records {
        out.put_u32_le(r.len() as u32);
        r.put_into(out, item_bits);
    }
}

/// Encodes `records` as as many Changes frames as [`BATCH_BYTES`] asks (each holds at least
/// one record).
pub fn encode_batches(now: u32, records: &[Record], out: &mut BytesMut, item_bits: bool) {
    let mut start = 0;
    let mut bytes = 0;
    for (i, r) in records.iter().enumerate() {
        if bytes >= BATCH_BYTES {
            encode_changes(now, &records[start..i], out, item_bits);
            (start, bytes) = (i, 0);
        }
        bytes += 4 + r.len();
    }
    if start < records.len() {
        encode_changes(now, &records[start..], out, item_bits);
    }
}

/// The longest frame a v6 peer sends a node whose largest item is `item_size_max`: a batch
/// and one record of that item (a record's header is under a KB, the rest is slack).
pub fn frame_limit(item_size_max: usize) -> usize {
    (BATCH_BYTES + item_size_max + (64 << 10)).min(MAX_FRAME)
}

/// Takes one complete frame off the front of `buf`; Ok(None) while it is incomplete (not an
/// error). Record bodies are split off `buf` without copying (Bytes), so they keep the read
/// buffer's allocation alive until dropped.
///
/// The length and the type are checked as soon as they arrive, so a hostile header fails at
/// once rather than after the peer has been waited on for a body.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    decode_limited(buf, MAX_FRAME)
}

/// As [`decode`], refusing frames longer than `max` (before a peer has proved itself, only
/// handshake frames, a few hundred bytes, are due: nothing more is buffered for it).
pub fn decode_limited(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, WireError> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([a, b, c, d]) as usize;
    if len > max {
        return Err(WireError::Oversized { len, max });
    }
    if len == 0 {
        return Err(malformed("replication", "no frame type"));
    }
    let Some(&ty) = buf.get(4) else {
        return Ok(None);
    };
    let name = frame_name(ty)?;
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(5);
    let mut body = Body {
        b: buf.split_to(len - 1).freeze(),
        frame: name,
    };
    let frame = match ty {
        HELLO => Frame::Hello {
            version: body.u16()?,
            node: NodeId(body.u16()?),
            run: body.u64()?,
            nonce: body.array()?,
            cluster: body.string()?,
        },
        PROOF => Frame::Proof { mac: body.array()? },
        REFUSE => Frame::Refuse {
            reason: body.string()?,
        },
        SNAPSHOT_START => Frame::SnapshotStart {
            complete: body.flag()?,
        },
        SNAPSHOT_END => Frame::SnapshotEnd,
        HEARTBEAT => Frame::Heartbeat,
        FETCH => {
            let id = body.u64()?;
            let n = body.u16()? as usize;
            if n == 0 || n > crate::store::record::KEY_MAX {
                return Err(malformed(name, "key length out of range"));
            }
            Frame::Fetch {
                id,
                key: body.take(n)?,
            }
        }
        FETCHED => {
            let id = body.u64()?;
            let now = body.u32()?;
            let record = match body.flag()? {
                false => None,
                true => {
                    let n = body.u32()? as usize;
                    Some(Record::decode(body.take(n)?)?)
                }
            };
            Frame::Fetched { id, now, record }
        }
        RESUME => {
            let (run, chain, events) = (body.u64()?, body.u64()?, body.u64()?);
            let shards = body.list(8, |b| b.u64())?;
            Frame::Resume {
                run,
                chain,
                events,
                shards,
                listen: body.string()?,
            }
        }
        MARK => {
            let (chain, n, events) = (body.u64()?, body.u64()?, body.u64()?);
            let shards = body.list(12, |b| Ok((b.u32()?, b.u64()?)))?;
            Frame::Mark {
                chain,
                n,
                events,
                shards,
            }
        }
        ACK => Frame::Ack { n: body.u64()? },
        ACK_PROMPT => Frame::AckPrompt,
        LIMITS => Frame::Limits {
            item_size_max: body.u64()?,
        },
        COVERED => Frame::Covered { stamp: body.u64()? },
        HEARS => Frame::Hears {
            nodes: body.list(2, |b| Ok(NodeId(b.u16()?)))?,
        },
        GAP => Frame::Gap {
            node: NodeId(body.u16()?),
            from: body.u64()?,
        },
        FILLED => Frame::Filled,
        _ => {
            // CHANGES: `frame_name` let only known types through.
            let now = body.u32()?;
            let count = body.u32()? as usize;
            if count > body.b.len() / MIN_RECORD {
                return Err(malformed(name, "more records than the frame can hold"));
            }
            let mut records = Vec::with_capacity(count);
            for _ in 0..count {
                let n = body.u32()? as usize;
                records.push(Record::decode(body.take(n)?)?);
            }
            Frame::Changes { now, records }
        }
    };
    if !body.b.is_empty() {
        return Err(malformed(name, "bytes after the body"));
    }
    Ok(Some(frame))
}

fn put_str(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(MAX_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16_le(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

fn frame_name(ty: u8) -> Result<&'static str, WireError> {
    Ok(match ty {
        HELLO => "Hello",
        PROOF => "Proof",
        REFUSE => "Refuse",
        SNAPSHOT_START => "SnapshotStart",
        SNAPSHOT_END => "SnapshotEnd",
        CHANGES => "Changes",
        HEARTBEAT => "Heartbeat",
        FETCH => "Fetch",
        FETCHED => "Fetched",
        RESUME => "Resume",
        MARK => "Mark",
        ACK => "Ack",
        ACK_PROMPT => "AckPrompt",
        LIMITS => "Limits",
        COVERED => "Covered",
        HEARS => "Hears",
        GAP => "Gap",
        FILLED => "Filled",
        _ => return Err(WireError::UnknownType(ty)),
    })
}

fn malformed(frame: &'static str, problem: &'static str) -> WireError {
    WireError::Malformed { frame, problem }
}

/// A frame's body being read; every read checks what is left first.
struct Body {
    b: Bytes,
    frame: &'static str,
}

impl Body {
    fn take(&mut self, n: usize) -> Result<Bytes, WireError> {
        if self.b.len() < n {
            return Err(malformed(self.frame, "body too short"));
        }
        Ok(self.b.split_to(n))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0; N];
        a.copy_from_slice(&self.take(N)?);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_le_bytes)
    }

    fn flag(&mut self) -> Result<bool, WireError> {
        match self.array::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(malformed(self.frame, "a flag that is neither 0 nor 1")),
        }
    }

    /// A u32 count, then that many items of `size` bytes each, read by `item`.
    fn list<T>(
        &mut self,
        size: usize,
        item: impl Fn(&mut Body) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let count = self.u32()? as usize;
        if count > self.b.len() / size {
            return Err(malformed(self.frame, "more items than the frame can hold"));
        }
        (0..count).map(|_| item(self)).collect()
    }

    fn string(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u16()?);
        if len > MAX_STRING {
            return Err(WireError::StringTooLong {
                frame: self.frame,
                len,
                max: MAX_STRING,
            });
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::NotUtf8 { frame: self.frame })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::v;
    use proptest::prelude::*;

    fn changes() -> Frame {
        Frame::Changes {
            now: 1234,
            records: vec![
                Record::live(b"k", b"value", 7, 99, v(5, 1), None),
                Record::deleted(b"gone", v(6, 2), Some(NodeId(3))),
                Record::flush(v(7, 1), 7 << 16, 40, None),
            ],
        }
    }

    fn every_kind() -> Vec<Frame> {
        vec![
            Frame::Hello {
                version: PROTOCOL_VERSION,
                cluster: "prod-eu ☃".into(),
                node: NodeId(65535),
                run: u64::MAX - 3,
                nonce: [0xa5; 16],
            },
            Frame::Proof { mac: [7; 32] },
            Frame::Refuse {
                reason: "wrong cluster".into(),
            },
            Frame::SnapshotStart { complete: true },
            Frame::SnapshotStart { complete: false },
            Frame::SnapshotEnd,
            changes(),
            Frame::Changes {
                now: 0,
                records: vec![],
            },
            Frame::Heartbeat,
            Frame::Fetch {
                id: 7,
                key: Bytes::from_static(b"user:1"),
            },
            Frame::Fetched {
                id: 7,
                now: 99,
                record: Some(Record::live(b"user:1", b"alice", 3, 120, v(5, 2), None)),
            },
            Frame::Fetched {
                id: 8,
                now: 99,
                record: None,
            },
            Frame::Resume {
                run: 42,
                chain: 3,
                events: 9,
                shards: vec![1, 2, u64::MAX],
                listen: "127.0.0.2:11212".into(),
            },
            Frame::Resume {
                run: 0,
                chain: 0,
                events: 0,
                shards: vec![],
                listen: String::new(),
            },
            Frame::Mark {
                chain: 3,
                n: 17,
                events: 4,
                shards: vec![(0, 5), (63, 1 << 40)],
            },
            Frame::Ack { n: u64::MAX },
            Frame::AckPrompt,
            Frame::Limits {
                item_size_max: 1 << 20,
            },
            Frame::Covered { stamp: 77 << 16 },
            Frame::Hears {
                nodes: vec![NodeId(1), NodeId(65535)],
            },
            Frame::Hears { nodes: vec![] },
            Frame::Gap {
                node: NodeId(9),
                from: u64::MAX,
            },
            Frame::Filled,
        ]
    }

    fn encoded(f: &Frame) -> BytesMut {
        let mut out = BytesMut::new();
        encode(f, &mut out);
        out
    }

    fn decode_all(bytes: &[u8]) -> Result<Option<Frame>, WireError> {
        decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn every_frame_kind_round_trips() {
        for f in every_kind() {
            let mut buf = encoded(&f);
            let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
            assert_eq!(len + 4, buf.len(), "{f:?}");
            assert_eq!(decode(&mut buf).unwrap(), Some(f.clone()));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn changes_encode_the_same_either_way() {
        let Frame::Changes { now, records } = changes() else {
            unreachable!()
        };
        let mut direct = BytesMut::new();
        encode_changes(now, &records, &mut direct, true);
        assert_eq!(direct, encoded(&changes()));
        // Each record goes out as the bytes the store encoded.
        for r in &records {
            assert!(direct.windows(r.len()).any(|w| w == &r.as_bytes()[..]));
        }
    }

    #[test]
    fn partial_frames_wait_and_leave_the_rest() {
        let mut stream = encoded(&changes());
        encode(&Frame::Heartbeat, &mut stream);
        let first = encoded(&changes()).len();
        let mut buf = BytesMut::new();
        for (i, &byte) in stream.iter().enumerate() {
            buf.put_u8(byte);
            let got = decode(&mut buf).unwrap();
            if i + 1 == first {
                assert_eq!(got, Some(changes()));
                assert!(buf.is_empty());
            } else if i + 1 == stream.len() {
                assert_eq!(got, Some(Frame::Heartbeat));
            } else {
                assert_eq!(got, None, "byte {i}");
            }
        }
        // Both at once: one frame per call, the second left intact.
        let mut both = stream.clone();
        assert_eq!(decode(&mut both).unwrap(), Some(changes()));
        assert_eq!(both, encoded(&Frame::Heartbeat));
        assert_eq!(decode(&mut both).unwrap(), Some(Frame::Heartbeat));
        assert_eq!(decode(&mut both).unwrap(), None);
    }

    #[test]
    fn oversized_length_fails_before_the_body() {
        let mut buf = BytesMut::from(&((MAX_FRAME + 1) as u32).to_le_bytes()[..]);
        let err = decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, WireError::Oversized { len, max: MAX_FRAME } if len == MAX_FRAME + 1)
        );
        assert!(err.to_string().contains(&MAX_FRAME.to_string()));
        // The limit itself waits for its body.
        let mut at_limit = BytesMut::from(&(MAX_FRAME as u32).to_le_bytes()[..]);
        at_limit.put_u8(CHANGES);
        assert!(decode(&mut at_limit).unwrap().is_none());
    }

    #[test]
    fn unknown_type_fails_at_once() {
        for ty in [0, FILLED + 1, 255] {
            let header = [100, 0, 0, 0, ty];
            assert!(matches!(decode_all(&header), Err(WireError::UnknownType(t)) if t == ty));
        }
        assert!(matches!(
            decode_all(&[0, 0, 0, 0]),
            Err(WireError::Malformed { .. })
        ));
    }

    /// Frame bytes with the length patched to fit the body.
    fn frame(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 1) as u32).to_le_bytes().to_vec();
        b.push(ty);
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn bad_bodies_are_errors() {
        let is_malformed = |r| matches!(r, Err(WireError::Malformed { .. }));
        // Every frame with its last byte cut off, or one byte added, as a whole frame.
        for f in every_kind() {
            let b = encoded(&f);
            if b.len() > 5 {
                assert!(is_malformed(decode_all(&frame(b[4], &b[5..b.len() - 1]))));
            }
            let mut extra = b[5..].to_vec();
            extra.push(0);
            assert!(is_malformed(decode_all(&frame(b[4], &extra))), "{f:?}");
        }
        // A record count the frame cannot hold is refused before reading records.
        let mut huge = 0u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(is_malformed(decode_all(&frame(CHANGES, &huge))));
        // A record that is not a record.
        let mut bad = 0u32.to_le_bytes().to_vec();
        bad.extend_from_slice(&1u32.to_le_bytes());
        bad.extend_from_slice(&36u32.to_le_bytes());
        bad.extend_from_slice(&[0xff; 36]);
        assert!(matches!(
            decode_all(&frame(CHANGES, &bad)),
            Err(WireError::Record(_))
        ));
        // Strings: too long, not UTF-8.
        let mut long = 1025u16.to_le_bytes().to_vec();
        long.extend_from_slice(&[b'a'; 1025]);
        assert!(matches!(
            decode_all(&frame(REFUSE, &long)),
            Err(WireError::StringTooLong { len: 1025, .. })
        ));
        assert!(matches!(
            decode_all(&frame(REFUSE, &[2, 0, 0xc3, 0x28])),
            Err(WireError::NotUtf8 { .. })
        ));
    }

    #[test]
    fn long_strings_are_cut_at_a_char_boundary() {
        let f = Frame::Refuse {
            reason: "é".repeat(MAX_STRING),
        };
        let Some(Frame::Refuse { reason }) = decode(&mut encoded(&f)).unwrap() else {
            panic!("not a Refuse")
        };
        assert_eq!(reason, "é".repeat(MAX_STRING / 2));
    }

    /// Arbitrary bytes, or a valid frame with one byte changed or its end cut.
    fn candidate() -> impl Strategy<Value = Vec<u8>> {
        let frames: Vec<Vec<u8>> = every_kind().iter().map(|f| encoded(f).to_vec()).collect();
        crate::testing::edited_or_random(prop::sample::select(frames), 200)
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_accepts_only_canonical_frames(b in candidate()) {
            let mut buf = BytesMut::from(&b[..]);
            if let Ok(Some(f)) = decode(&mut buf) {
                let used = b.len() - buf.len();
                prop_assert_eq!(&encoded(&f)[..], &b[..used]);
            }
        }
    }

    /// A batch larger than BATCH_BYTES goes as several frames, each within a batch and one
    /// record, the records in order.
    #[test]
    fn batches_split_into_frames_a_receiver_takes() {
        let records: Vec<Record> = (0..40)
            .map(|i| {
                let value = vec![b'x'; 20_000 + i * 7];
                Record::live(format!("k{i}").as_bytes(), &value, 0, 0, v(1, 1), None)
            })
            .collect();
        let mut out = BytesMut::new();
        encode_batches(7, &records, &mut out, true);
        let limit = frame_limit(32 << 10);
        let mut keys = Vec::new();
        let mut frames = 0;
        while let Some(f) = decode_limited(&mut out, limit).unwrap() {
            let Frame::Changes { now: 7, records } = f else {
                panic!("not a batch of changes");
            };
            frames += 1;
            keys.extend(records.iter().map(|r| r.key().to_vec()));
        }
        assert!(out.is_empty());
        assert!(frames >= 3, "{frames} frames");
        let want: Vec<Vec<u8>> = records.iter().map(|r| r.key().to_vec()).collect();
        assert_eq!(keys, want);
        // Nothing at all for no records; a limit never above the largest frame.
        encode_batches(7, &[], &mut out, true);
        assert!(out.is_empty());
        assert_eq!(frame_limit(2 << 30), MAX_FRAME);
    }
}

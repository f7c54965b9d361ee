//! memcached's binary protocol: 24-byte headers, then extras, key and value.
//!
//! The parser checks a header before its body arrives: a wrong magic byte closes the
//! connection, lengths that cannot be right are answered and close it, and a value above `-I`
//! is refused and swallowed, so no client makes us buffer more than one item. Quiet opcodes
//! are the loud ones with a flag, as in memcached's dispatcher. A packet becomes a logical
//! [`Command`] beside its [`BinaryReply`] (header, opaque, quiet), which renders the outcomes
//! in [`reply`].

pub mod reply;

use super::command::{Arith, Cas, Command, Delete, Exptime, Get, Keys, SetMode, Store, TooLarge};
use super::limits::{item_size, KEY_MAX_LENGTH};
use super::Limits;
pub use reply::BinaryReply;

/// incr/decr expiration meaning "do not create on a miss".
const NO_CREATE: u32 = 0xffff_ffff;

/// Request and response magic bytes.
pub const REQUEST: u8 = 0x80;
pub const RESPONSE: u8 = 0x81;
pub const HEADER_LEN: usize = 24;

/// Opcodes (memcached's protocol_binary.h).
pub mod op {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const VERBOSITY: u8 = 0x1b;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const SASL_LIST_MECHS: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
    pub const SASL_STEP: u8 = 0x22;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// Response status codes.
pub mod status {
    pub const OK: u16 = 0x00;
    pub const KEY_ENOENT: u16 = 0x01;
    pub const KEY_EEXISTS: u16 = 0x02;
    pub const E2BIG: u16 = 0x03;
    pub const EINVAL: u16 = 0x04;
    pub const NOT_STORED: u16 = 0x05;
    pub const DELTA_BADVAL: u16 = 0x06;
    pub const AUTH_ERROR: u16 = 0x20;
    pub const AUTH_CONTINUE: u16 = 0x21;
    pub const UNKNOWN_COMMAND: u16 = 0x81;
    pub const ENOMEM: u16 = 0x82;
}

/// memcached's text for each error status.
pub fn status_text(s: u16) -> &'static [u8] {
    match s {
        status::ENOMEM => b"Out of memory",
        status::UNKNOWN_COMMAND => b"Unknown command",
        status::KEY_ENOENT => b"Not found",
        status::EINVAL => b"Invalid arguments",
        status::KEY_EEXISTS => b"Data exists for key.",
        status::E2BIG => b"Too large.",
        status::DELTA_BADVAL => b"Non-numeric server-side value for incr or decr",
        status::NOT_STORED => b"Not stored.",
        status::AUTH_ERROR => b"Auth failure.",
        _ => b"",
    }
}

/// A request header, in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: u8,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub data_type: u8,
    pub vbucket: u16,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

impl Header {
    pub fn parse(b: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            magic: b[0],
            opcode: b[1],
            key_len: u16::from_be_bytes([b[2], b[3]]),
            extras_len: b[4],
            data_type: b[5],
            vbucket: u16::from_be_bytes([b[6], b[7]]),
            body_len: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            opaque: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
            cas: u64::from_be_bytes([b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23]]),
        })
    }

    /// The header bytes of a request (clients, tests).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.magic;
        b[1] = self.opcode;
        b[2..4].copy_from_slice(&self.key_len.to_be_bytes());
        b[4] = self.extras_len;
        b[5] = self.data_type;
        b[6..8].copy_from_slice(&self.vbucket.to_be_bytes());
        b[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        b[12..16].copy_from_slice(&self.opaque.to_be_bytes());
        b[16..24].copy_from_slice(&self.cas.to_be_bytes());
        b
    }
}

/// Builds a whole request packet (for clients and tests).
pub fn request(
    opcode: u8,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
    cas: u64,
    opaque: u32,
) -> Vec<u8> {
    let h = Header {
        magic: REQUEST,
        opcode,
        key_len: key.len() as u16,
        extras_len: extras.len() as u8,
        data_type: 0,
        vbucket: 0,
        body_len: (extras.len() + key.len() + value.len()) as u32,
        opaque,
        cas,
    };
    [h.encode().as_slice(), extras, key, value].concat()
}

/// The loud opcode behind a quiet one, and whether it was quiet.
pub fn unquiet(opcode: u8) -> (u8, bool) {
    use op::*;
    match opcode {
        GETQ => (GET, true),
        GETKQ => (GETK, true),
        SETQ => (SET, true),
        ADDQ => (ADD, true),
        REPLACEQ => (REPLACE, true),
        DELETEQ => (DELETE, true),
        INCREMENTQ => (INCREMENT, true),
        DECREMENTQ => (DECREMENT, true),
        QUITQ => (QUIT, true),
        FLUSHQ => (FLUSH, true),
        APPENDQ => (APPEND, true),
        PREPENDQ => (PREPEND, true),
        GATQ => (GAT, true),
        GATKQ => (GATK, true),
        other => (other, false),
    }
}

/// A whole binary request: the command (None for an opcode this server does not know) and
/// how to answer it.
#[derive(Debug)]
pub struct Request<'a> {
    pub command: Option<Command<'a>>,
    pub reply: BinaryReply,
}

fn extra_u32(extras: &[u8], at: usize) -> u32 {
    extras
        .get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn extra_u64(extras: &[u8], at: usize) -> u64 {
    extras.get(at..at + 8).map_or(0, |b| {
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    })
}

/// The logical command of a whole packet whose shape was checked.
fn command<'a>(
    h: &Header,
    opcode: u8,
    extras: &'a [u8],
    key: &'a [u8],
    value: &'a [u8],
) -> Option<Command<'a>> {
    use op::*;
    let compare_cas = (h.cas != 0).then_some(Cas(h.cas));
    let get = |touch| {
        Command::Get(Get {
            keys: Keys::One(key),
            touch,
            no_update: false,
            vivify: None,
            touch_last: false,
            recache: None,
            recache_first: false,
            refused: false,
        })
    };
    Some(match opcode {
        GET | GETK => get(None),
        GAT | GATK | TOUCH => get(Some(Exptime(extra_u32(extras, 0).into()))),
        SET | ADD | REPLACE | APPEND | PREPEND => {
            let mode = match opcode {
                // An add carrying a CAS is a cas command in memcached, unless CAS is off
                // (`-C`), when it stays an add: the executor decides.
                ADD => SetMode::Add,
                REPLACE => SetMode::Replace,
                APPEND => SetMode::Append,
                PREPEND => SetMode::Prepend,
                _ => SetMode::Set,
            };
            let mut store = Store::new(mode, key, value);
            if !matches!(mode, SetMode::Append | SetMode::Prepend) {
                store.flags = extra_u32(extras, 0);
                store.exptime = Exptime(extra_u32(extras, 4).into());
            }
            store.compare_cas = compare_cas;
            Command::Store(store)
        }
        DELETE => Command::Delete(Delete {
            key,
            compare_cas,
            ..Default::default()
        }),
        INCREMENT | DECREMENT => {
            let expiration = extra_u32(extras, 16);
            Command::Arith(Arith {
                key,
                incr: opcode == INCREMENT,
                delta: extra_u64(extras, 0),
                compare_cas,
                vivify: (expiration != NO_CREATE)
                    .then(|| (Exptime(expiration.into()), extra_u64(extras, 8))),
                ..Default::default()
            })
        }
        QUIT => Command::Quit,
        FLUSH => Command::Flush {
            delay: Some(Exptime(extra_u32(extras, 0).into())),
        },
        // Verbosity is not among memcached 1.6.18's binary commands: "Unknown command".
        NOOP => Command::Noop,
        VERSION => Command::Version,
        STAT => match stat_group(key) {
            Some((group, arg)) => Command::Stats { group, arg },
            // Answered "Not found", as a group the server does not know.
            None => Command::Fixed {
                reply: b"ERROR\r\n",
            },
        },
        SASL_LIST_MECHS => Command::SaslMechs,
        SASL_AUTH | SASL_STEP => Command::SaslAuth {
            step: opcode == SASL_STEP,
            mech: key,
            data: value,
        },
        _ => return None,
    })
}

/// The stats group and argument a binary STAT key names, read as memcached 1.6.18 reads
/// it: `reset…` and `settings…` by their start, `detail` with `on…`, `off…` or `dump…`,
/// and `items`, `slabs`, `sizes`, `sizes_enable`, `sizes_disable` (and this server's
/// `replication`) exactly. None: a group binary STAT does not serve (`conns` among them).
fn stat_group(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let empty: &[u8] = &[];
    if key.is_empty() {
        return Some((empty, empty));
    }
    for group in [&b"reset"[..], b"settings"] {
        if key.starts_with(group) {
            return Some((group, empty));
        }
    }
    if let Some(arg) = key.strip_prefix(b"detail ") {
        return [&b"on"[..], b"off", b"dump"]
            .into_iter()
            .find(|a| arg.starts_with(a))
            .map(|a| (&key[..6], a));
    }
    [
        &b"items"[..],
        b"slabs",
        b"sizes",
        b"sizes_enable",
        b"sizes_disable",
        b"replication",
    ]
    .contains(&key)
    .then_some((key, empty))
}

/// What a binary parse found.
#[derive(Debug)]
pub enum BinParsed<'a> {
    Done(Request<'a>, usize),
    /// Read more; `whole` is the request's length once its header is in.
    Incomplete {
        whole: Option<usize>,
    },
    /// Answer `status` (with memcached's text), skip `consumed` bytes and `swallow` more,
    /// then close the connection if `close`.
    Error {
        header: Header,
        status: u16,
        consumed: usize,
        swallow: usize,
        close: bool,
    },
    /// Not a binary request at all: close without a word.
    BadMagic,
}

/// Is `op` (a loud opcode) one this server answers? Others get "Unknown command", verbosity
/// among them, as in memcached 1.6.18.
fn known(op: u8) -> bool {
    op != op::VERBOSITY && matches!(op, op::GET..=op::GATQ | op::SASL_LIST_MECHS..=op::GATKQ)
}

/// Does the body length fit the opcode? (memcached's dispatcher rules.)
fn shape_ok(op: u8, key: usize, ext: usize, body: usize) -> bool {
    use op::*;
    match op {
        VERSION | NOOP | QUIT | SASL_LIST_MECHS => ext == 0 && key == 0 && body == 0,
        FLUSH => key == 0 && body == ext && (ext == 0 || ext == 4),
        SET | ADD | REPLACE => ext == 8 && key != 0 && body >= key + 8,
        GET | GETK => ext == 0 && body == key && key > 0,
        DELETE => key > 0 && ext == 0 && body == key,
        INCREMENT | DECREMENT => key > 0 && ext == 20 && body == key + ext,
        APPEND | PREPEND => key > 0 && ext == 0,
        STAT => ext == 0,
        SASL_AUTH | SASL_STEP => ext == 0 && key != 0,
        TOUCH | GAT | GATK => ext == 4 && key != 0,
        _ => true,
    }
}

/// Parses one binary request from the front of `buf` (which starts with the magic byte).
/// Keys of the complete get requests (get, getq, getk, getkq) at the start of `buf`, in
/// order, written to `out` (at most its length); returns how many. The walk stops at the
/// first incomplete or malformed request. Clients send a multi-get as a pipeline of these,
/// so the server can start loading every item before answering each one. Nothing is
/// validated beyond what is needed to find the key.
pub fn pipelined_get_keys<'a>(buf: &'a [u8], out: &mut [&'a [u8]]) -> usize {
    let mut n = 0;
    let mut rest = buf;
    while n < out.len() {
        let Some(h) = Header::parse(rest) else {
            break;
        };
        let total = HEADER_LEN + h.body_len as usize;
        let key_start = HEADER_LEN + h.extras_len as usize;
        let key_end = key_start + h.key_len as usize;
        if h.magic != REQUEST || total > rest.len() || key_end > total {
            break;
        }
        if matches!(h.opcode, op::GET | op::GETQ | op::GETK | op::GETKQ) {
            out[n] = &rest[key_start..key_end];
            n += 1;
        }
        rest = &rest[total..];
    }
    n
}

/// The longest body a request may announce: no value is larger, and a client announcing
/// 4 GB would have the server swallow that much. Refused, then closed, as memcached does
/// since 1.6.42 (1.6.18 closed without a reply).
const BODY_MAX: usize = 1 << 30;

pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> BinParsed<'a> {
    let Some(header) = Header::parse(buf) else {
        return BinParsed::Incomplete { whole: None };
    };
    if header.magic != REQUEST {
        return BinParsed::BadMagic;
    }
    let (key_len, ext_len, body_len) = (
        header.key_len as usize,
        header.extras_len as usize,
        header.body_len as usize,
    );
    let err = |status, consumed, swallow, close| BinParsed::Error {
        header,
        status,
        consumed,
        swallow,
        close,
    };
    if key_len > body_len || key_len + ext_len > body_len {
        return err(status::UNKNOWN_COMMAND, HEADER_LEN, 0, true);
    }
    if body_len > BODY_MAX {
        return err(status::EINVAL, HEADER_LEN, 0, true);
    }
    let (opcode, quiet) = unquiet(header.opcode);
    let value_len = body_len - key_len - ext_len;
    let head = HEADER_LEN + ext_len + key_len;
    if key_len > KEY_MAX_LENGTH {
        return err(status::EINVAL, HEADER_LEN, 0, true);
    }
    if !shape_ok(opcode, key_len, ext_len, body_len) {
        return err(status::EINVAL, HEADER_LEN, 0, true);
    }
    let is_store = matches!(
        opcode,
        op::SET | op::ADD | op::REPLACE | op::APPEND | op::PREPEND
    );
    // Client flags lead the extras of set/add/replace; until they have arrived they count
    // as 0, and the check runs again when more of the request is in.
    let flags = match buf.get(HEADER_LEN..HEADER_LEN + 4) {
        Some(f) if is_store && ext_len >= 4 => u32::from_be_bytes([f[0], f[1], f[2], f[3]]),
        _ => 0,
    };
    let reply = BinaryReply {
        header,
        opcode,
        quiet,
    };
    let total = HEADER_LEN + body_len;
    let refused = limits.refuses(item_size(key_len, value_len, flags));
    if let Some(why) = refused.filter(|_| value_len > 0) {
        if buf.len() < head {
            return BinParsed::Incomplete { whole: None };
        }
        // Storage commands: refuse and swallow the value. Other known commands never carry
        // big values; an unknown one is answered as memcached does, its body skipped.
        if !is_store {
            return if known(opcode) {
                err(status::EINVAL, head, value_len, true)
            } else {
                err(status::UNKNOWN_COMMAND, head, value_len, false)
            };
        }
        // memcached drops the old value of a refused set, quiet or not, CAS or not.
        let refused = TooLarge {
            key: &buf[HEADER_LEN + ext_len..head],
            why,
            drop_old: opcode == op::SET,
            swallow: value_len,
        };
        let command = Some(Command::TooLarge(refused));
        return BinParsed::Done(Request { command, reply }, head);
    }
    if buf.len() < total {
        // Only a value is worth room set aside for it: other bodies are small, or refused.
        let whole = is_store.then_some(total);
        return BinParsed::Incomplete { whole };
    }
    let extras = &buf[HEADER_LEN..HEADER_LEN + ext_len];
    let key = &buf[HEADER_LEN + ext_len..head];
    let value = &buf[head..total];
    let command = command(&header, opcode, extras, key, value);
    BinParsed::Done(Request { command, reply }, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pipelined_get_keys_walks_complete_gets_only() {
        let mut buf = request(op::GETKQ, &[], b"a", &[], 0);
        buf.extend(request(op::SET, &[0; 8], b"s", b"v", 0));
        buf.extend(request(op::GETQ, &[], b"bb", &[], 0));
        buf.extend(request(op::NOOP, &[], &[], &[], 0));
        buf.extend(request(op::GET, &[], b"ccc", &[], 0));
        let mut keys: [&[u8]; 8] = [&[]; 8];
        let n = pipelined_get_keys(&buf, &mut keys);
        assert_eq!(keys[..n], [&b"a"[..], b"bb", b"ccc"]);
        // An incomplete request ends the walk; so does a key that overruns its body.
        assert_eq!(pipelined_get_keys(&buf[..buf.len() - 1], &mut keys), 2);
        let mut bad = request(op::GET, &[], b"key", &[], 0);
        bad[11] = 1; // body length 1, key length 3
        assert_eq!(pipelined_get_keys(&bad, &mut keys), 0);
        // No more than fit.
        assert_eq!(pipelined_get_keys(&buf, &mut keys[..2]), 2);
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic_and_stay_in_bounds(mut input in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(b) = input.first_mut() {
                *b = REQUEST;
            }
            let mut keys: [&[u8]; 4] = [&[]; 4];
            prop_assert!(pipelined_get_keys(&input, &mut keys) <= 4);
            match parse(&input, &Limits { item_size_max: 1024, ..Limits::default() }) {
                BinParsed::Done(_, n) => prop_assert!(n <= input.len() && n >= HEADER_LEN),
                BinParsed::Error { consumed, .. } => prop_assert!(consumed <= input.len()),
                BinParsed::Incomplete { .. } | BinParsed::BadMagic => {}
            }
        }
    }

    fn request(opcode: u8, extras: &[u8], key: &[u8], value: &[u8], cas: u64) -> Vec<u8> {
        super::request(opcode, extras, key, value, cas, 0xdeadbeef)
    }

    #[test]
    fn header_round_trip() {
        let bytes = request(op::SETQ, &[0; 8], b"key", b"value", 7);
        let h = Header::parse(&bytes).unwrap();
        assert_eq!(h.encode().as_slice(), &bytes[..HEADER_LEN]);
        assert_eq!((h.key_len, h.extras_len, h.body_len, h.cas), (3, 8, 16, 7));
    }

    #[test]
    fn set_parses_and_every_prefix_needs_more() {
        let bytes = request(op::SETQ, &[0, 0, 0, 5, 0, 0, 0, 0], b"key", b"value", 0);
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    parse(&bytes[..cut], &Limits::default()),
                    BinParsed::Incomplete { .. }
                ),
                "cut {cut}"
            );
        }
        match parse(&bytes, &Limits::default()) {
            BinParsed::Done(r, n) => {
                assert_eq!(n, bytes.len());
                assert_eq!((r.reply.opcode, r.reply.quiet), (op::SET, true));
                match r.command {
                    Some(Command::Store(s)) => assert_eq!(
                        (s.mode, s.key, s.data, s.flags),
                        (SetMode::Set, &b"key"[..], &b"value"[..], 5)
                    ),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
    }

    fn command_of(bytes: &[u8]) -> Command<'_> {
        match parse(bytes, &Limits::default()) {
            BinParsed::Done(
                Request {
                    command: Some(c), ..
                },
                _,
            ) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn packets_become_logical_commands() {
        // An add carrying its CAS (the executor makes it a cas); append ignores flags and
        // expiry.
        let mut extras = [0u8; 8];
        extras[..4].copy_from_slice(&7u32.to_be_bytes());
        extras[4..].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        match command_of(&request(op::ADDQ, &extras, b"k", b"v", 9)) {
            Command::Store(s) => assert_eq!(
                (s.mode, s.flags, s.exptime, s.compare_cas),
                (SetMode::Add, 7, Exptime(0xffff_fff0), Some(Cas(9)))
            ),
            other => panic!("{other:?}"),
        }
        match command_of(&request(op::APPEND, &[], b"k", b"v", 0)) {
            Command::Store(s) => assert_eq!((s.mode, s.compare_cas), (SetMode::Append, None)),
            other => panic!("{other:?}"),
        }
        // incr: delta, initial, and an expiration of all ones means "do not create".
        let mut extras = [0u8; 20];
        extras[..8].copy_from_slice(&5u64.to_be_bytes());
        extras[8..16].copy_from_slice(&100u64.to_be_bytes());
        extras[16..].copy_from_slice(&NO_CREATE.to_be_bytes());
        match command_of(&request(op::DECREMENT, &extras, b"n", &[], 0)) {
            Command::Arith(a) => assert_eq!((a.incr, a.delta, a.vivify), (false, 5, None)),
            other => panic!("{other:?}"),
        }
        extras[16..].copy_from_slice(&60u32.to_be_bytes());
        match command_of(&request(op::INCREMENT, &extras, b"n", &[], 0)) {
            Command::Arith(a) => assert_eq!(a.vivify, Some((Exptime(60), 100))),
            other => panic!("{other:?}"),
        }
        match command_of(&request(op::STAT, &[], b"detail dump", &[], 0)) {
            Command::Stats { group, arg } => {
                assert_eq!((group, arg), (&b"detail"[..], &b"dump"[..]))
            }
            other => panic!("{other:?}"),
        }
        // STAT keys as memcached 1.6.18 reads them.
        assert_eq!(stat_group(b"settingsx"), Some((&b"settings"[..], &b""[..])));
        assert_eq!(
            stat_group(b"detail offx"),
            Some((&b"detail"[..], &b"off"[..]))
        );
        for bad in [
            &b"conns"[..],
            b"detail",
            b"detail x",
            b"items x",
            b" ",
            b"extstore",
        ] {
            assert_eq!(stat_group(bad), None, "{bad:?}");
        }
        assert!(matches!(
            command_of(&request(op::STAT, &[], b"conns", &[], 0)),
            Command::Fixed { .. }
        ));
        // Verbosity is an unknown command, in any shape.
        assert!(matches!(
            parse(
                &request(op::VERBOSITY, &[0; 4], &[], &[], 0),
                &Limits::default()
            ),
            BinParsed::Done(Request { command: None, .. }, 28)
        ));
        // An opcode this server does not know parses, with no command.
        assert!(matches!(
            parse(&request(0x30, &[], &[], &[], 0), &Limits::default()),
            BinParsed::Done(Request { command: None, .. }, HEADER_LEN)
        ));
    }

    #[test]
    fn malformed_headers() {
        let mut bad = request(op::GET, &[], b"k", &[], 0);
        bad[0] = 0x42;
        assert!(matches!(
            parse(&bad, &Limits::default()),
            BinParsed::BadMagic
        ));
        // Key longer than the body.
        let mut h = Header::parse(&request(op::GET, &[], b"k", &[], 0)).unwrap();
        h.key_len = 10;
        assert!(matches!(
            parse(&h.encode(), &Limits::default()),
            BinParsed::Error {
                status: status::UNKNOWN_COMMAND,
                close: true,
                ..
            }
        ));
        // A get with extras.
        let g = request(op::GET, &[0; 4], b"k", &[], 0);
        assert!(matches!(
            parse(&g, &Limits::default()),
            BinParsed::Error {
                status: status::EINVAL,
                close: true,
                ..
            }
        ));
        // A key over 250 bytes.
        let g = request(op::GET, &[], &[b'k'; 251], &[], 0);
        assert!(matches!(
            parse(&g, &Limits::default()),
            BinParsed::Error {
                status: status::EINVAL,
                ..
            }
        ));
    }

    #[test]
    fn too_large_values_are_swallowed() {
        let limits = Limits {
            item_size_max: 1024,
            ..Limits::default()
        };
        let bytes = request(op::SET, &[0; 8], b"k", &[b'x'; 2000], 0);
        match parse(&bytes[..HEADER_LEN + 9], &limits) {
            BinParsed::Done(
                Request {
                    command: Some(Command::TooLarge(t)),
                    ..
                },
                used,
            ) => {
                assert_eq!((t.key, t.drop_old, t.swallow), (&b"k"[..], true, 2000));
                assert_eq!(used, HEADER_LEN + 9);
            }
            other => panic!("{other:?}"),
        }
        // Only a set drops the old value.
        let bytes = request(op::ADDQ, &[0; 8], b"k", &[b'x'; 2000], 0);
        match parse(&bytes, &limits) {
            BinParsed::Done(
                Request {
                    command: Some(Command::TooLarge(t)),
                    ..
                },
                _,
            ) => assert!(!t.drop_old),
            other => panic!("{other:?}"),
        }
        // A get cannot carry a value at all: refused, and the connection closes.
        let bytes = request(op::GET, &[], b"k", &[b'x'; 2000], 0);
        assert!(matches!(
            parse(&bytes, &limits),
            BinParsed::Error {
                status: status::EINVAL,
                close: true,
                ..
            }
        ));
    }
}

//! Meta commands: mg, ms, md, ma, mn, me (protocol.txt "Meta Commands").
//!
//! `<cm> <key> [<datalen>] <flag>*`. One request type serves all six; the verb is a field and
//! the flags are parsed by [`flags`]. A [`MetaRequest`] owns the key (decoded when `b` was
//! given) and lends the logical [`Command`] and its [`MetaReply`]; replies are in [`reply`].
//! Errors in meta commands are always reported, even with `q`, and an ms whose header is
//! bad swallows its data block, as memcached does.

pub mod flags;
pub mod reply;

use std::borrow::Cow;

use super::command::{
    Arith, Cas, Command, Delete, Exptime, Get, Keys, Refusal, SetMode, Store, TooLarge,
};
use super::limits::{is_valid_key, item_size, Limits, META_MAX_TOKENS};
use super::number::parse_i32;
use super::text::storage::{body, Body};
use super::text::Tokens;
use super::{ErrorKind, Parsed, ProtocolError, Request};
pub use flags::MetaFlags;
pub use reply::MetaReply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaCmd {
    Get,
    Set,
    Delete,
    Arith,
    Noop,
    Debug,
}

#[derive(Debug, Clone)]
pub struct MetaRequest<'a> {
    pub cmd: MetaCmd,
    /// The key as stored (decoded if `b` was given).
    pub key: Cow<'a, [u8]>,
    pub flags: MetaFlags<'a>,
    /// The ms data block.
    pub data: &'a [u8],
    /// A refused ms: the bytes of its data block to skip, and why.
    pub too_large: Option<(usize, Refusal)>,
}

fn exptime(e: i32) -> Exptime {
    Exptime(e.into())
}

impl MetaRequest<'_> {
    /// The logical command, borrowing the (decoded) key from this request.
    pub fn command(&self) -> Command<'_> {
        let f = &self.flags;
        let key = self.key.as_ref();
        match self.cmd {
            MetaCmd::Noop => Command::Noop,
            MetaCmd::Debug => Command::Debug { key },
            MetaCmd::Get => Command::Get(Get {
                keys: Keys::One(key),
                touch: f.ttl.map(exptime),
                no_update: f.no_update,
                vivify: f.vivify.map(exptime),
                touch_last: f.touch_last,
                recache: f.recache.map(exptime),
                recache_first: f.recache_first,
                refused: f.opaque_too_long,
            }),
            MetaCmd::Set => match self.too_large {
                Some((swallow, why)) => Command::TooLarge(TooLarge {
                    key,
                    why,
                    drop_old: true,
                    swallow,
                }),
                None => {
                    // The parser refuses an unknown mode.
                    let mode = self.set_mode().unwrap_or(SetMode::Set);
                    // As in memcached, `C0` compares nothing for append and prepend (a
                    // set or replace with it compares, and fails).
                    let joins = matches!(mode, SetMode::Append | SetMode::Prepend);
                    Command::Store(Store {
                        mode,
                        key,
                        flags: f.client_flags,
                        exptime: f.ttl.map_or(Exptime(0), exptime),
                        data: self.data,
                        compare_cas: f.compare_cas.filter(|&c| c != 0 || !joins).map(Cas),
                        invalidate: f.invalidate,
                        new_cas: f.new_cas.map(Cas),
                        // The later of `N` and `T`, as for mg and ma.
                        vivify: f
                            .vivify
                            .map(|n| exptime(f.ttl.filter(|_| f.touch_last).unwrap_or(n))),
                        key_binary: f.base64,
                    })
                }
            },
            MetaCmd::Delete => Command::Delete(Delete {
                key,
                compare_cas: f.compare_cas.map(Cas),
                invalidate: f.invalidate,
                exptime: f.ttl.map(exptime),
                new_cas: f.new_cas.map(Cas),
                strip_value: f.strip_value,
            }),
            MetaCmd::Arith => Command::Arith(Arith {
                key,
                // The parser refuses an unknown mode.
                incr: self.arith_incr().unwrap_or(true),
                delta: f.delta,
                // As in memcached, `C0` compares nothing here.
                compare_cas: f.compare_cas.filter(|&c| c != 0).map(Cas),
                vivify: f.vivify.map(|t| (exptime(t), f.initial)),
                exptime: f.ttl.map(exptime),
                touch_last: f.touch_last,
                new_cas: f.new_cas.map(Cas),
            }),
        }
    }

    /// How to answer it: the flags to echo, `q`, `k`, `O`, `b`.
    pub fn reply(&self) -> MetaReply<'_> {
        MetaReply {
            flags: &self.flags,
            key: self.key.as_ref(),
        }
    }

    /// ms mode: `M` flag, set by default. Capitals only: memcached 1.6.18 refuses `Ms`.
    pub fn set_mode(&self) -> Option<SetMode> {
        Some(match self.flags.mode {
            None | Some(b'S') => SetMode::Set,
            Some(b'E') => SetMode::Add,
            Some(b'A') => SetMode::Append,
            Some(b'P') => SetMode::Prepend,
            Some(b'R') => SetMode::Replace,
            _ => return None,
        })
    }

    /// ma mode: increment unless `MD`/`M-` (capitals only, as in memcached 1.6.18).
    pub fn arith_incr(&self) -> Option<bool> {
        match self.flags.mode {
            None | Some(b'I') | Some(b'+') => Some(true),
            Some(b'D') | Some(b'-') => Some(false),
            _ => None,
        }
    }
}

/// The flag section of a meta line: the tokens from `start` on, as one slice.
fn flag_section<'a>(
    t: &Tokens<'a>,
    start: usize,
    line_start: *const u8,
    buf: &'a [u8],
) -> &'a [u8] {
    let first = t.get(start);
    if first.is_empty() {
        return &[];
    }
    let last = t.get(t.len() - 1);
    let from = first.as_ptr() as usize - line_start as usize;
    let to = last.as_ptr() as usize - line_start as usize + last.len();
    &buf[from..to]
}

pub fn parse<'a>(
    verb: u8,
    t: &Tokens<'a>,
    buf: &'a [u8],
    used: usize,
    limits: &Limits,
) -> Parsed<'a> {
    let err = |kind, consumed| Parsed::Invalid(ProtocolError::new(kind, consumed));
    let cmd = match verb {
        b'g' => MetaCmd::Get,
        b's' => MetaCmd::Set,
        b'd' => MetaCmd::Delete,
        b'a' => MetaCmd::Arith,
        b'n' => MetaCmd::Noop,
        b'e' => MetaCmd::Debug,
        _ => return err(ErrorKind::UnknownCommand, used),
    };
    let raw_key = t.get(1);
    if cmd == MetaCmd::Noop {
        let req = MetaRequest {
            cmd,
            key: Cow::Borrowed(raw_key),
            flags: MetaFlags::default(),
            data: &[],
            too_large: None,
        };
        return Parsed::Done(Request::Meta(req), used);
    }
    if t.ntokens < 3 {
        return err(
            if cmd == MetaCmd::Debug {
                ErrorKind::BadFormat
            } else {
                ErrorKind::UnknownCommand
            },
            used,
        );
    }
    if !is_valid_key(raw_key) {
        return err(ErrorKind::BadFormat, used);
    }
    let mut key = Cow::Borrowed(raw_key);
    let line_start = buf.as_ptr();
    if cmd == MetaCmd::Debug {
        let mut flags = MetaFlags::default();
        if t.get(2) == b"b" {
            flags.base64 = true;
            match flags::decode_key(raw_key) {
                Some(k) => key = Cow::Owned(k),
                None => return err(ErrorKind::BadFormat, used),
            }
        }
        return Parsed::Done(
            Request::Meta(MetaRequest {
                cmd,
                key,
                flags,
                data: &[],
                too_large: None,
            }),
            used,
        );
    }
    if cmd == MetaCmd::Set {
        return parse_set(t, buf, used, limits, key);
    }
    if t.ntokens > META_MAX_TOKENS {
        return err(
            if cmd == MetaCmd::Get {
                ErrorKind::MetaGetTooManyFlags
            } else {
                ErrorKind::MetaTooManyFlags
            },
            used,
        );
    }
    let raw = flag_section(t, 2, line_start, buf);
    let flags = match flags::parse(raw, &mut key) {
        Ok(f) => f,
        Err(kind) if cmd == MetaCmd::Get => return err(kind, used),
        Err(_) => return err(ErrorKind::MetaInvalidOrDuplicateFlag, used),
    };
    let req = MetaRequest {
        cmd,
        key,
        flags,
        data: &[],
        too_large: None,
    };
    // As in memcached, a bad mode is reported before a long opaque.
    if cmd == MetaCmd::Arith && req.arith_incr().is_none() {
        return err(ErrorKind::MetaArithMode, used);
    }
    // md refuses a long opaque before it acts; mg and ma act first (see `MetaReply`).
    if cmd == MetaCmd::Delete && req.flags.opaque_too_long {
        return err(ErrorKind::MetaOpaqueTooLong, used);
    }
    Parsed::Done(Request::Meta(req), used)
}

/// `ms <key> <datalen> <flag>*\r\n<data>\r\n`
fn parse_set<'a>(
    t: &Tokens<'a>,
    buf: &'a [u8],
    used: usize,
    limits: &Limits,
    mut key: Cow<'a, [u8]>,
) -> Parsed<'a> {
    let err = |kind, swallow| {
        let mut e = ProtocolError::new(kind, used);
        e.swallow = swallow;
        Parsed::Invalid(e)
    };
    if t.ntokens == 3 {
        return err(ErrorKind::BadFormat, 0);
    }
    if t.ntokens > META_MAX_TOKENS {
        return err(ErrorKind::MetaTooManyFlags, 0);
    }
    // As for set: memcached adds 2 for the CRLF in an int, so larger lengths are refused.
    let vlen = match parse_i32(t.get(2)) {
        Some(v) if (0..=i32::MAX - 2).contains(&v) => v as usize,
        _ => return err(ErrorKind::BadFormat, 0),
    };
    let swallow = vlen + 2;
    let raw = flag_section(t, 3, buf.as_ptr(), buf);
    let flags = match flags::parse(raw, &mut key) {
        Ok(f) => f,
        Err(kind) => return err(kind, swallow),
    };
    let req = MetaRequest {
        cmd: MetaCmd::Set,
        key,
        flags,
        data: &[],
        too_large: None,
    };
    if req.set_mode().is_none() {
        return err(ErrorKind::MetaSetMode, swallow);
    }
    if req.flags.opaque_too_long {
        return err(ErrorKind::MetaOpaqueTooLong, swallow);
    }
    if let Some(why) = limits.refuses(item_size(req.key.len(), vlen, req.flags.client_flags)) {
        let too_large = Some((swallow, why));
        return Parsed::Done(Request::Meta(MetaRequest { too_large, ..req }), used);
    }
    match body(buf, used, vlen) {
        Body::Incomplete(whole) => Parsed::Incomplete { whole: Some(whole) },
        Body::BadChunk(end) => Parsed::Invalid(ProtocolError::new(ErrorKind::BadDataChunk, end)),
        Body::Ready(data, end) => Parsed::Done(Request::Meta(MetaRequest { data, ..req }), end),
    }
}

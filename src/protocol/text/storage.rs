//! set, add, replace, append, prepend and cas: one grammar, the verb is a field.
//!
//! `<verb> <key> <flags> <exptime> <bytes> [<cas>] [noreply]\r\n<data>\r\n`. The header is
//! checked before the data arrives: a bad header is answered at once (and, as in memcached,
//! its data line is then read as a command); a too-large item is refused and its data
//! swallowed, so the server never buffers more than `-I` for one request.

use super::{text, Tokens};
use crate::protocol::command::{Cas, Command, Exptime, SetMode, Store, TooLarge};
use crate::protocol::limits::{is_valid_key, item_size, Limits};
use crate::protocol::number::{parse_i32, parse_u64};
use crate::protocol::{ErrorKind, Parsed, ProtocolError};

/// Where the data block of a storage request sits, once the header is valid.
pub enum Body<'a> {
    Ready(&'a [u8], usize),
    /// Not all here: the request ends at this offset.
    Incomplete(usize),
    BadChunk(usize),
}

/// Finds `len` bytes of data plus CRLF after `start`.
pub fn body(buf: &[u8], start: usize, len: usize) -> Body<'_> {
    let end = start + len;
    if buf.len() < end + 2 {
        return Body::Incomplete(end + 2);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Body::BadChunk(end + 2);
    }
    Body::Ready(&buf[start..end], end + 2)
}

pub fn parse<'a>(
    mode: SetMode,
    is_cas: bool,
    t: &Tokens<'a>,
    buf: &'a [u8],
    used: usize,
    limits: &Limits,
) -> Parsed<'a> {
    let noreply = t.noreply();
    let err = |kind| {
        let mut e = ProtocolError::new(kind, used);
        e.noreply = noreply;
        Parsed::Invalid(e)
    };
    let key = t.get(1);
    if !is_valid_key(key) {
        return err(ErrorKind::BadFormat);
    }
    // Client flags: memcached reads an unsigned long and keeps its low 32 bits.
    let (Some(flags), Some(exptime), Some(vlen)) = (
        parse_u64(t.get(2)).map(|f| f as u32),
        parse_i32(t.get(3)),
        parse_i32(t.get(4)),
    ) else {
        return err(ErrorKind::BadFormat);
    };
    let cas = if is_cas {
        match parse_u64(t.get(5)) {
            Some(c) => Some(c),
            None => return err(ErrorKind::BadFormat),
        }
    } else {
        None
    };
    // memcached adds 2 for the CRLF in an int: lengths that would overflow it are refused.
    if !(0..=i32::MAX - 2).contains(&vlen) {
        return err(ErrorKind::BadFormat);
    }
    let vlen = vlen as usize;
    if let Some(why) = limits.refuses(item_size(key.len(), vlen, flags)) {
        // memcached drops the old value of a refused `set` only, not of a `cas`.
        let refused = TooLarge {
            key,
            why,
            drop_old: mode == SetMode::Set && !is_cas,
            swallow: vlen + 2,
        };
        return text(Command::TooLarge(refused), noreply, used);
    }
    match body(buf, used, vlen) {
        Body::Incomplete(whole) => Parsed::Incomplete { whole: Some(whole) },
        Body::BadChunk(end) => {
            let mut e = ProtocolError::new(ErrorKind::BadDataChunk, end);
            e.noreply = noreply;
            Parsed::Invalid(e)
        }
        Body::Ready(data, end) => {
            let mut store = Store::new(mode, key, data);
            store.flags = flags;
            store.exptime = Exptime(exptime.into());
            store.compare_cas = cas.map(Cas);
            text(Command::Store(store), noreply, end)
        }
    }
}

//! get, gets, gat, gats: `get <key>*` and `gat <exptime> <key>*`.
//!
//! The key list is handed on as the raw rest of the line (no per-key allocation); every key
//! is checked here first, because memcached answers a bad key in a multiget with only the
//! error, whatever it found before it.

use super::Tokens;
use crate::protocol::limits::is_valid_key;
use crate::protocol::number::parse_i32;
use crate::protocol::{ErrorKind, GetKind, Parsed, ProtocolError, Request};

/// Iterates the keys of a validated key list.
pub fn keys(list: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    list.split(|&b| b == b' ').filter(|k| !k.is_empty())
}

/// The keys of one get line, split on spaces.
type KeyList<'a> = std::slice::Split<'a, u8, fn(&u8) -> bool>;

/// Keys of the complete `get`/`gets`/`mg` lines at the start of `buf`, in order, up to 64
/// lines; the walk stops at any other line (a storage command's data block cannot be
/// skipped without parsing it). Pipelined single-key reads can then be prefetched together.
/// A base64 `mg` key is passed on as sent; prefetching it merely misses.
pub fn pipelined_get_keys(buf: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    let mut rest = buf;
    let mut lines = 0;
    let mut pending: Option<KeyList<'_>> = None;
    std::iter::from_fn(move || loop {
        if let Some(key) = pending
            .as_mut()
            .and_then(|keys| keys.find(|k| !k.is_empty()))
        {
            return Some(key);
        }
        pending = None;
        if lines == 64 {
            return None;
        }
        let end = memchr::memchr(b'\n', rest)?;
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        rest = &rest[end + 1..];
        lines += 1;
        let (verb, args) = match memchr::memchr(b' ', line) {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => return None,
        };
        let is_space: fn(&u8) -> bool = |&b| b == b' ';
        match verb {
            b"get" | b"gets" => pending = Some(args.split(is_space)),
            b"mg" => {
                let key = args.split(is_space).find(|k| !k.is_empty())?;
                return Some(key);
            }
            _ => return None,
        }
    })
}

pub fn parse<'a>(t: &Tokens<'a>, line: &'a [u8], used: usize) -> Parsed<'a> {
    let verb = t.get(0);
    let kind = GetKind {
        cas: verb == b"gets" || verb == b"gats",
        touch: verb == b"gat" || verb == b"gats",
    };
    let mut exptime = 0;
    // The key list starts after the verb (and the exptime for gat).
    let mut rest = skip_token(line);
    if kind.touch {
        match parse_i32(t.get(1)) {
            Some(e) => exptime = e,
            None => return Parsed::Invalid(ProtocolError::new(ErrorKind::InvalidExptime, used)),
        }
        rest = skip_token(rest);
    }
    if keys(rest).any(|k| !is_valid_key(k)) {
        return Parsed::Invalid(ProtocolError::new(ErrorKind::BadFormat, used));
    }
    Parsed::Done(
        Request::Get {
            kind,
            exptime,
            keys: rest,
        },
        used,
    )
}

/// The line after its first token.
fn skip_token(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    let s = &s[start..];
    let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
    &s[end..]
}

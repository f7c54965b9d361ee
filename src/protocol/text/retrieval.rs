//! get, gets, gat, gats: `get <key>*` and `gat <exptime> <key>*`.
//!
//! The key list is handed on as the raw rest of the line (no per-key allocation); every key
//! is checked here first, because memcached answers a bad key in a multiget with only the
//! error, whatever it found before it (though it has read those keys: the line becomes
//! [`Command::GetBadKey`]).

use super::reply::TextReply;
use super::Tokens;
use crate::protocol::command::{Command, Exptime, Get, Keys};
use crate::protocol::limits::is_valid_key;
use crate::protocol::number::parse_i32;
use crate::protocol::{ErrorKind, Parsed, ProtocolError, Request};

/// Keys of the complete `get`/`gets`/`mg` lines at the start of `buf`, in order, written
/// to `out` (at most its length); returns how many. The walk stops at any other line (a
/// storage command's data block cannot be skipped without parsing it). Pipelined reads can
/// then be prefetched together. A base64 `mg` key is passed on as sent; its prefetch
/// merely misses.
pub fn pipelined_get_keys<'a>(buf: &'a [u8], out: &mut [&'a [u8]]) -> usize {
    let mut n = 0;
    let mut rest = buf;
    while n < out.len() {
        let Some(end) = memchr::memchr(b'\n', rest) else {
            break;
        };
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        rest = &rest[end + 1..];
        let Some(sp) = memchr::memchr(b' ', line) else {
            break;
        };
        let one_key = match &line[..sp] {
            b"get" | b"gets" => false,
            b"mg" => true,
            _ => break,
        };
        for key in line[sp + 1..]
            .split(|&b| b == b' ')
            .filter(|k| !k.is_empty())
        {
            if n == out.len() {
                break;
            }
            out[n] = key;
            n += 1;
            if one_key {
                break;
            }
        }
    }
    n
}

pub fn parse<'a>(t: &Tokens<'a>, line: &'a [u8], used: usize) -> Parsed<'a> {
    let verb = t.get(0);
    let with_cas = verb == b"gets" || verb == b"gats";
    let mut touch = None;
    // The key list starts after the verb (and the exptime for gat).
    let mut rest = skip_token(line);
    if verb == b"gat" || verb == b"gats" {
        match parse_i32(t.get(1)) {
            Some(e) => touch = Some(Exptime(e.into())),
            None => return Parsed::Invalid(ProtocolError::new(ErrorKind::InvalidExptime, used)),
        }
        rest = skip_token(rest);
    }
    let mut bad_key = false;
    if let Some(at) = first_bad_key(rest) {
        // Only the keys before the bad one are read (see `Command::GetBadKey`).
        rest = &rest[..at];
        if Keys::Spaced(rest).iter().next().is_none() {
            return Parsed::Invalid(ProtocolError::new(ErrorKind::BadFormat, used));
        }
        bad_key = true;
    }
    let get = Get {
        keys: Keys::Spaced(rest),
        touch,
        no_update: false,
        vivify: None,
        touch_last: false,
        recache: None,
        recache_first: false,
        refused: false,
    };
    let reply = TextReply {
        noreply: false,
        with_cas,
    };
    let cmd = if bad_key {
        Command::GetBadKey(get)
    } else {
        Command::Get(get)
    };
    Parsed::Done(Request::Text(cmd, reply), used)
}

/// Where the first key that cannot be valid starts in a spaced key list, if one is there:
/// memcached reads the keys before it, then refuses the line.
pub fn first_bad_key(list: &[u8]) -> Option<usize> {
    let bad = Keys::Spaced(list).iter().find(|k| !is_valid_key(k))?;
    // `bad` lies within `list`: where it starts is its offset there.
    Some(bad.as_ptr() as usize - list.as_ptr() as usize)
}

/// The line after its first token.
fn skip_token(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    let s = &s[start..];
    let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
    &s[end..]
}

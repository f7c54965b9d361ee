//! The text protocol: line framing, tokenizing and verb dispatch, as memcached 1.6 does it.
//! One file per command family parses its verbs into a [`Command`]; [`reply`] answers the
//! outcomes (`TextReply`).
//!
//! memcached splits a line on single spaces (runs of spaces collapse) into at most 24
//! tokens, and checks each verb's token count before looking at the tokens; a wrong count
//! is a bare `ERROR`. We keep those rules so replies match byte for byte.

pub mod admin;
pub mod arith;
pub mod auth;
pub mod delete;
pub mod flush;
pub mod reply;
pub mod retrieval;
pub mod storage;
pub mod touch;

use memchr::memchr;

use super::command::Command;
use super::limits::{Limits, GET_LINE_MAX_LENGTH, LINE_MAX_LENGTH};
use super::{ErrorKind, Parsed, ProtocolError, Request};
use reply::TextReply;

/// A header error, answered unless `noreply`.
fn invalid<'a>(kind: ErrorKind, used: usize, noreply: bool) -> Parsed<'a> {
    let mut e = ProtocolError::new(kind, used);
    e.noreply = noreply;
    Parsed::Invalid(e)
}

/// A parsed text command and the bytes it used.
pub(crate) fn text(cmd: Command<'_>, noreply: bool, used: usize) -> Parsed<'_> {
    let reply = TextReply {
        noreply,
        with_cas: false,
    };
    Parsed::Done(Request::Text(cmd, reply), used)
}

/// memcached's MAX_TOKENS: 23 tokens, then the unsplit rest of the line.
pub const MAX_TOKENS: usize = 24;

/// A tokenized request line.
pub struct Tokens<'a> {
    tokens: [&'a [u8]; MAX_TOKENS],
    len: usize,
    /// memcached's token count: real tokens plus its terminator.
    pub ntokens: usize,
}

impl<'a> Tokens<'a> {
    pub fn split(line: &'a [u8]) -> Tokens<'a> {
        let mut t = Tokens {
            tokens: [&[]; MAX_TOKENS],
            len: 0,
            ntokens: 1,
        };
        let mut pos = 0;
        while pos < line.len() {
            if line[pos] == b' ' {
                pos += 1;
                continue;
            }
            if t.len == MAX_TOKENS - 1 {
                // The rest of the line stays one token, as in memcached.
                t.tokens[t.len] = &line[pos..];
                t.ntokens = MAX_TOKENS;
                return t;
            }
            let end = memchr(b' ', &line[pos..]).map_or(line.len(), |i| pos + i);
            t.tokens[t.len] = &line[pos..end];
            t.len += 1;
            pos = end;
        }
        t.ntokens = t.len + 1;
        t
    }

    /// Token `i`, or empty past the end (memcached's terminal token has length 0).
    pub fn get(&self, i: usize) -> &'a [u8] {
        if i < self.len {
            self.tokens[i]
        } else {
            &[]
        }
    }

    /// Real tokens (not counting the terminator).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// memcached's `set_noreply_maybe`: the last token is `noreply`.
    pub fn noreply(&self) -> bool {
        self.len > 0 && self.tokens[self.len - 1] == b"noreply"
    }
}

/// Finds the end of the request line at the front of `buf`.
/// Returns (line without CR/LF, bytes through the LF).
pub fn split_line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    match memchr(b'\n', buf) {
        Some(nl) => {
            let mut end = nl;
            if end > 1 && buf[end - 1] == b'\r' {
                end -= 1;
            }
            Ok(Some((&buf[..end], nl + 1)))
        }
        None => {
            if buf.len() > LINE_MAX_LENGTH {
                let trimmed = buf.iter().position(|&b| b != b' ').unwrap_or(buf.len());
                let rest = &buf[trimmed..];
                let is_get = rest.starts_with(b"get ") || rest.starts_with(b"gets ");
                if trimmed > 100 || !is_get || buf.len() > GET_LINE_MAX_LENGTH {
                    return Err(ProtocolError::new(ErrorKind::LineTooLong, buf.len()));
                }
            }
            Ok(None)
        }
    }
}

/// Parses one text or meta request from the front of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    let (line, used) = match split_line(buf) {
        Ok(Some(x)) => x,
        Ok(None) => return Parsed::Incomplete { whole: None },
        Err(e) => return Parsed::Invalid(e),
    };
    let t = Tokens::split(line);
    let bad = |kind| Parsed::Invalid(ProtocolError::new(kind, used));
    let verb = t.get(0);
    if t.is_empty() || verb.len() < 2 {
        return bad(ErrorKind::UnknownCommand);
    }
    if verb.len() == 2 && verb[0] == b'm' {
        return super::meta::parse(verb[1], &t, buf, used, limits);
    }
    let want = |ok: bool, p: &dyn Fn() -> Parsed<'a>| {
        if ok {
            p()
        } else {
            bad(ErrorKind::UnknownCommand)
        }
    };
    let n = t.ntokens;
    use super::command::SetMode::*;
    match verb {
        b"get" | b"gets" | b"gat" | b"gats" | b"bget" => {
            want(n >= 3, &|| retrieval::parse(&t, line, used))
        }
        b"set" => want(n == 6 || n == 7, &|| {
            storage::parse(Set, false, &t, buf, used, limits)
        }),
        b"add" => want(n == 6 || n == 7, &|| {
            storage::parse(Add, false, &t, buf, used, limits)
        }),
        b"replace" => want(n == 6 || n == 7, &|| {
            storage::parse(Replace, false, &t, buf, used, limits)
        }),
        b"append" => want(n == 6 || n == 7, &|| {
            storage::parse(Append, false, &t, buf, used, limits)
        }),
        b"prepend" => want(n == 6 || n == 7, &|| {
            storage::parse(Prepend, false, &t, buf, used, limits)
        }),
        b"cas" => want(n == 7 || n == 8, &|| {
            storage::parse(Set, true, &t, buf, used, limits)
        }),
        b"incr" => want(n == 4 || n == 5, &|| arith::parse(true, &t, used)),
        b"decr" => want(n == 4 || n == 5, &|| arith::parse(false, &t, used)),
        b"delete" => want((3..=5).contains(&n), &|| delete::parse(&t, used)),
        b"touch" => want(n == 4 || n == 5, &|| touch::parse(&t, used)),
        b"flush_all" => want((2..=4).contains(&n), &|| flush::parse(&t, used)),
        b"verbosity" => want(n == 3 || n == 4, &|| admin::parse_verbosity(&t, used)),
        b"cache_memlimit" => want(n == 3 || n == 4, &|| admin::parse_memlimit(&t, used)),
        _ => admin::parse_other(&t, used),
    }
}

#[cfg(test)]
mod tests;

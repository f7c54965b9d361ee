//! Meta replies: a two-letter code, then the return flags in the order the client sent them.
//! `q` silences the common case (a hit for mg is never silenced; HD for ms, md and ma; EN
//! for mg); errors are always answered.

use base64::Engine;

use super::flags::{tokens, MetaFlags};
use crate::protocol::command::{Counted, Deleted, Encoding, Hit, Reply, ReplyBuf, Stored};
use crate::protocol::text::reply::{
    stored_line, ARITH_OUT_OF_MEMORY, CREATE_OUT_OF_MEMORY, NON_NUMERIC,
};
use crate::protocol::ErrorKind;

/// What shapes a meta command's reply besides its outcome.
#[derive(Debug, Clone, Copy)]
pub struct MetaReply<'a> {
    pub flags: &'a MetaFlags<'a>,
    /// The key as stored (decoded from base64 when `b` was given), for `k`.
    pub key: &'a [u8],
}

impl MetaReply<'_> {
    /// Appends `code`, the echoed flags with no values of their own, and CRLF.
    fn code_line(&self, out: &mut Vec<u8>, code: &[u8]) {
        out.extend_from_slice(code);
        echo_flags(out, self.flags.raw, self.key, self.flags.base64, |_, _| {});
        out.extend_from_slice(b"\r\n");
    }
}

impl Reply for MetaReply<'_> {
    const ENCODING: Encoding = Encoding::Meta;

    fn hit(&self, buf: &mut impl ReplyBuf, hit: &Hit<'_>) {
        let f = self.flags;
        let out = buf.bytes();
        if f.opaque_too_long {
            return opaque_too_long(out);
        }
        if f.value {
            out.extend_from_slice(b"VA ");
            out.extend_from_slice(itoa::Buffer::new().format(hit.value.len()).as_bytes());
        } else {
            out.extend_from_slice(b"HD");
        }
        let mut ttl = hit.ttls.before;
        echo_flags(out, f.raw, hit.key, hit.key_binary, |c, out| match c {
            b's' => flag_num(out, b's', hit.value.len()),
            b't' => ttl_flag(out, ttl),
            b'T' | b'N' => ttl = hit.ttls.after(c, ttl),
            b'c' => flag_num(out, b'c', hit.cas.0),
            b'f' => flag_num(out, b'f', hit.flags),
            b'l' => flag_num(out, b'l', hit.idle),
            b'h' => flag_num(out, b'h', hit.fetched as u8),
            _ => {}
        });
        if hit.token_sent {
            out.extend_from_slice(b" Z");
        }
        if hit.stale {
            out.extend_from_slice(b" X");
        }
        if hit.won {
            out.extend_from_slice(b" W");
        }
        out.extend_from_slice(b"\r\n");
        if f.value {
            buf.value(hit.value, hit.shared);
            buf.bytes().extend_from_slice(b"\r\n");
        }
    }

    fn miss(&self, out: &mut Vec<u8>, _key: &[u8]) {
        if self.flags.opaque_too_long {
            return opaque_too_long(out);
        }
        if self.flags.quiet {
            return;
        }
        if self.flags.raw.is_empty() {
            out.extend_from_slice(EN);
        } else {
            self.code_line(out, b"EN");
        }
    }

    fn debug(&self, out: &mut Vec<u8>, hit: Option<&Hit<'_>>) {
        use std::io::Write;
        let Some(it) = hit else {
            out.extend_from_slice(EN);
            return;
        };
        out.extend_from_slice(b"ME ");
        if it.key_binary {
            let enc = base64::engine::general_purpose::STANDARD.encode(it.key);
            out.extend_from_slice(enc.as_bytes());
        } else {
            out.extend_from_slice(it.key);
        }
        // memcached shows the time since the expiry: negative while it is to come.
        let exp = it.ttl.map_or(-1, |t| -i64::from(t));
        let fetched = if it.fetched { "yes" } else { "no" };
        let _ = write!(
            out,
            " exp={exp} la={} cas={} fetch={fetched} cls={} size={}\r\n",
            it.idle, it.cas.0, it.class, it.size
        );
    }

    fn stored(&self, out: &mut Vec<u8>, o: Stored) {
        let code: &[u8] = match o {
            Stored::Stored { .. } if self.flags.quiet => return,
            Stored::Stored { .. } => b"HD",
            Stored::NotStored => b"NS",
            Stored::Exists => b"EX",
            Stored::NotFound => b"NF",
            Stored::TooLarge | Stored::OutOfMemory | Stored::OutOfMemoryReading => {
                out.extend_from_slice(stored_line(o));
                return;
            }
        };
        out.extend_from_slice(code);
        echo_flags(
            out,
            self.flags.raw,
            self.key,
            self.flags.base64,
            |c, out| match (c, o) {
                (b'c', Stored::Stored { cas, .. }) => flag_num(out, b'c', cas.0),
                (b'c', _) => flag_num(out, b'c', 0),
                (b's', Stored::Stored { size, .. }) => flag_num(out, b's', size),
                _ => {}
            },
        );
        out.extend_from_slice(b"\r\n");
    }

    fn deleted(&self, out: &mut Vec<u8>, o: Deleted) {
        match o {
            Deleted::Deleted if self.flags.quiet => {}
            Deleted::Deleted => self.code_line(out, b"HD"),
            Deleted::NotFound => self.code_line(out, b"NF"),
            Deleted::Exists => self.code_line(out, b"EX"),
        }
    }

    fn counted(&self, out: &mut Vec<u8>, o: Counted) {
        let f = self.flags;
        match o {
            // The command has acted; only its own errors come before the opaque's.
            Counted::Value { .. } | Counted::Exists | Counted::NotFound if f.opaque_too_long => {
                opaque_too_long(out)
            }
            Counted::Value { created: false, .. } if f.quiet => {}
            Counted::Value {
                value, cas, ttls, ..
            } => {
                let mut digits = itoa::Buffer::new();
                let digits = digits.format(value).as_bytes();
                if f.value {
                    out.extend_from_slice(b"VA ");
                    out.extend_from_slice(itoa::Buffer::new().format(digits.len()).as_bytes());
                } else {
                    out.extend_from_slice(b"HD");
                }
                let mut ttl = ttls.before;
                echo_flags(out, f.raw, self.key, f.base64, |c, out| match c {
                    b'c' => flag_num(out, b'c', cas.0),
                    b't' => ttl_flag(out, ttl),
                    b'T' | b'N' => ttl = ttls.after(c, ttl),
                    _ => {}
                });
                out.extend_from_slice(b"\r\n");
                if f.value {
                    out.extend_from_slice(digits);
                    out.extend_from_slice(b"\r\n");
                }
            }
            Counted::NonNumeric => out.extend_from_slice(NON_NUMERIC),
            Counted::OutOfMemory { creating: false } => out.extend_from_slice(ARITH_OUT_OF_MEMORY),
            Counted::OutOfMemory { creating: true } => out.extend_from_slice(CREATE_OUT_OF_MEMORY),
            Counted::Exists => self.code_line(out, b"EX"),
            Counted::NotFound => self.code_line(out, b"NF"),
        }
    }

    fn noop(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MN);
    }
}

/// mg and ma with a long `O` (see [`MetaFlags::opaque_too_long`]): the error replaces
/// the reply, whatever the outcome, `q` or not.
fn opaque_too_long(out: &mut Vec<u8>) {
    out.extend_from_slice(ErrorKind::MetaOpaqueTooLong.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends ` t<secs>`, or ` t-1` for an item that never expires.
fn ttl_flag(out: &mut Vec<u8>, ttl: Option<u32>) {
    match ttl {
        None => out.extend_from_slice(b" t-1"),
        Some(secs) => flag_num(out, b't', secs),
    }
}

/// Appends ` <c><n>`.
pub fn flag_num(out: &mut Vec<u8>, c: u8, n: impl itoa::Integer) {
    let mut b = itoa::Buffer::new();
    out.push(b' ');
    out.push(c);
    out.extend_from_slice(b.format(n).as_bytes());
}

/// Appends the key as a `k` flag; a binary key goes back base64-encoded with a `b` flag.
pub fn key_flag(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    out.extend_from_slice(b" k");
    if binary {
        let enc = base64::engine::general_purpose::STANDARD.encode(key);
        out.extend_from_slice(enc.as_bytes());
        out.extend_from_slice(b" b");
    } else {
        out.extend_from_slice(key);
    }
}

/// Appends the echoed flags of `raw`: `O` and `k` always, the rest through `value_of`, which
/// writes a flag it knows and ignores the others.
pub fn echo_flags(
    out: &mut Vec<u8>,
    raw: &[u8],
    key: &[u8],
    binary: bool,
    mut value_of: impl FnMut(u8, &mut Vec<u8>),
) {
    for tok in tokens(raw) {
        match tok[0] {
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(tok);
            }
            b'k' => key_flag(out, key, binary),
            c => value_of(c, out),
        }
    }
}

pub const MN: &[u8] = b"MN\r\n";
pub const EN: &[u8] = b"EN\r\n";

//! Binary responses: the request's opcode and opaque echoed, big-endian lengths. Quiet
//! opcodes stay silent on success (and on a get miss); errors are always answered, so they
//! come out in order at the next loud command.

use super::{op, status, status_text, Header, HEADER_LEN, RESPONSE};
use crate::protocol::command::{Counted, Deleted, Encoding, Flushed, Hit, Reply, ReplyBuf, Stored};

/// What shapes a binary command's reply besides its outcome.
#[derive(Debug, Clone, Copy)]
pub struct BinaryReply {
    /// The request's header: its opcode (quiet or not) and opaque are echoed.
    pub header: Header,
    /// The loud form of the opcode.
    pub opcode: u8,
    pub quiet: bool,
}

impl BinaryReply {
    /// An opcode this server does not serve.
    pub fn unknown_command(&self, out: &mut Vec<u8>) {
        self.error(out, status::UNKNOWN_COMMAND);
    }

    /// A request before SASL authentication.
    pub fn auth_error(&self, out: &mut Vec<u8>) {
        self.error(out, status::AUTH_ERROR);
    }

    fn ok(&self, out: &mut Vec<u8>, cas: u64) {
        if !self.quiet {
            ok(out, &self.header, cas);
        }
    }

    fn error(&self, out: &mut Vec<u8>, status: u16) {
        error(out, &self.header, status);
    }

    fn body(&self, out: &mut Vec<u8>, value: &[u8]) {
        response(out, &self.header, status::OK, 0, &[], &[], value);
    }
}

impl Reply for BinaryReply {
    const ENCODING: Encoding = Encoding::Binary;

    fn hit(&self, out: &mut impl ReplyBuf, hit: &Hit<'_>) {
        let with_key = matches!(self.opcode, op::GETK | op::GATK);
        let key: &[u8] = if with_key { hit.key } else { &[] };
        let value: &[u8] = if self.opcode != op::TOUCH {
            hit.value
        } else {
            &[]
        };
        let flags = hit.flags.to_be_bytes();
        let head = Head {
            status: status::OK,
            cas: hit.cas.0,
            extras: &flags,
            key,
        };
        head.write(out.bytes(), &self.header, value.len());
        out.value(value, hit.shared);
    }

    fn miss(&self, out: &mut Vec<u8>, key: &[u8]) {
        if self.quiet {
            return;
        }
        if matches!(self.opcode, op::GETK | op::GATK) {
            // memcached answers a getk miss with the key and no text.
            response(out, &self.header, status::KEY_ENOENT, 0, &[], key, &[]);
        } else {
            self.error(out, status::KEY_ENOENT);
        }
    }

    fn stored(&self, out: &mut Vec<u8>, o: Stored) {
        let st = match o {
            Stored::Stored { cas, .. } => return self.ok(out, cas.0),
            Stored::Exists => status::KEY_EEXISTS,
            Stored::NotFound => status::KEY_ENOENT,
            Stored::NotStored => match self.opcode {
                op::ADD => status::KEY_EEXISTS,
                op::REPLACE => status::KEY_ENOENT,
                _ => status::NOT_STORED,
            },
            Stored::TooLarge => status::E2BIG,
            Stored::OutOfMemory => {
                let text = b"Out of memory allocating item";
                return error_text(out, &self.header, status::ENOMEM, text);
            }
            Stored::OutOfMemoryReading => {
                let text = b"Out of memory during read";
                return error_text(out, &self.header, status::ENOMEM, text);
            }
        };
        self.error(out, st);
    }

    fn deleted(&self, out: &mut Vec<u8>, o: Deleted) {
        match o {
            Deleted::Deleted => self.ok(out, 0),
            Deleted::Exists => self.error(out, status::KEY_EEXISTS),
            Deleted::NotFound => self.error(out, status::KEY_ENOENT),
        }
    }

    fn counted(&self, out: &mut Vec<u8>, o: Counted) {
        match o {
            Counted::Value { value, cas, .. } => {
                if !self.quiet {
                    let value = value.to_be_bytes();
                    response(out, &self.header, status::OK, cas.0, &[], &[], &value);
                }
            }
            Counted::NonNumeric => self.error(out, status::DELTA_BADVAL),
            Counted::Exists => self.error(out, status::KEY_EEXISTS),
            Counted::OutOfMemory { creating } => error_text(
                out,
                &self.header,
                status::ENOMEM,
                if creating {
                    b"Out of memory allocating new item"
                } else {
                    b"Out of memory incrementing value"
                },
            ),
            Counted::NotFound => self.error(out, status::KEY_ENOENT),
        }
    }

    fn flushed(&self, out: &mut Vec<u8>, o: Flushed) {
        match o {
            Flushed::Done => self.ok(out, 0),
            // memcached's answer to a binary flush under -F.
            Flushed::NotAllowed | Flushed::BadDelay => self.error(out, status::AUTH_ERROR),
        }
    }

    /// The text stats, one packet per `STAT` line, then an empty packet, unless the text
    /// ends on a `STAT` line (`sizes_enable`, `sizes_disable`), as memcached leaves the
    /// empty packet out there.
    fn stats(&self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        let mut text = Vec::new();
        write(&mut text);
        if text == b"ERROR\r\n" || text.starts_with(b"CLIENT_ERROR") {
            return self.error(out, status::KEY_ENOENT);
        }
        let last = text.strip_suffix(b"\r\n").unwrap_or(&text);
        let last = last.rsplit(|&b| b == b'\n').next().unwrap_or(last);
        let unended = last.starts_with(b"STAT ");
        for line in text.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(rest) = line.strip_prefix(b"STAT ") else {
                continue;
            };
            let (name, value) = match rest.iter().position(|&b| b == b' ') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            response(out, &self.header, status::OK, 0, &[], name, value);
        }
        if !unended {
            ok(out, &self.header, 0);
        }
    }

    /// The text dump in one packet keyed `detailed`, then the empty one, as memcached sends
    /// it.
    fn detail_dump(&self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        let mut text = Vec::new();
        write(&mut text);
        response(out, &self.header, status::OK, 0, &[], b"detailed", &text);
        ok(out, &self.header, 0);
    }

    /// A fixed text answer, re-packed as stats are (an error line is "Not found").
    fn fixed(&self, out: &mut Vec<u8>, reply: &'static [u8]) {
        self.stats(out, |text| text.extend_from_slice(reply));
    }

    fn version(&self, out: &mut Vec<u8>, version: &str) {
        self.body(out, version.as_bytes());
    }

    fn noop(&self, out: &mut Vec<u8>) {
        ok(out, &self.header, 0);
    }

    fn quit(&self, out: &mut Vec<u8>) {
        self.ok(out, 0);
    }

    fn sasl_mechs(&self, out: &mut Vec<u8>, mechs: &[u8]) {
        self.body(out, mechs);
    }

    fn authenticated(&self, out: &mut Vec<u8>, ok: bool) {
        if ok {
            self.body(out, b"Authenticated");
        } else {
            self.error(out, status::AUTH_ERROR);
        }
    }

    fn sasl_invalid(&self, out: &mut Vec<u8>) {
        self.error(out, status::EINVAL);
    }
}

/// Appends one response packet.
pub fn response(
    out: &mut Vec<u8>,
    req: &Header,
    status: u16,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) {
    let head = Head {
        status,
        cas,
        extras,
        key,
    };
    out.reserve(HEADER_LEN + extras.len() + key.len() + value.len());
    head.write(out, req, value.len());
    out.extend_from_slice(value);
}

/// A response up to its value: header, extras and key.
struct Head<'a> {
    status: u16,
    cas: u64,
    extras: &'a [u8],
    key: &'a [u8],
}

impl Head<'_> {
    /// Appends the packet's header, extras and key, for a value of `value_len` bytes that
    /// the caller appends next.
    fn write(&self, out: &mut Vec<u8>, req: &Header, value_len: usize) {
        let body = self.extras.len() + self.key.len() + value_len;
        out.push(RESPONSE);
        out.push(req.opcode);
        out.extend_from_slice(&(self.key.len() as u16).to_be_bytes());
        out.push(self.extras.len() as u8);
        out.push(0);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&(body as u32).to_be_bytes());
        out.extend_from_slice(&req.opaque.to_be_bytes());
        out.extend_from_slice(&self.cas.to_be_bytes());
        out.extend_from_slice(self.extras);
        out.extend_from_slice(self.key);
    }
}

/// Appends an error response carrying memcached's text for `status`.
pub fn error(out: &mut Vec<u8>, req: &Header, status: u16) {
    error_text(out, req, status, status_text(status));
}

/// Appends an error response with a text of its own (memcached's out-of-memory errors say
/// what could not be had).
pub fn error_text(out: &mut Vec<u8>, req: &Header, status: u16, text: &[u8]) {
    response(out, req, status, 0, &[], &[], text);
}

/// Appends a success response with no body.
pub fn ok(out: &mut Vec<u8>, req: &Header, cas: u64) {
    response(out, req, super::status::OK, cas, &[], &[], &[]);
}

//! Text protocol replies: how a text command's outcome is answered. Writers append to the
//! connection's output buffer; integers are formatted without allocation.

use crate::protocol::command::{
    Counted, Deleted, Encoding, Flushed, Hit, MemLimit, Reply, ReplyBuf, Shutdown, Stored,
};

/// What shapes a text command's reply besides its outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextReply {
    /// `noreply`: answer nothing (errors included, as memcached does).
    pub noreply: bool,
    /// gets/gats: hits carry their CAS.
    pub with_cas: bool,
}

impl TextReply {
    fn line(&self, out: &mut Vec<u8>, line: &[u8]) {
        if !self.noreply {
            out.extend_from_slice(line);
        }
    }
}

impl Reply for TextReply {
    const ENCODING: Encoding = Encoding::Text;

    fn hit(&self, out: &mut impl ReplyBuf, hit: &Hit<'_>) {
        let cas = self.with_cas.then_some(hit.cas.0);
        value_head(out.bytes(), hit.key, hit.flags, hit.value.len(), cas);
        out.value(hit.value, hit.shared);
        out.bytes().extend_from_slice(b"\r\n");
    }

    fn end(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(END);
    }

    fn stored(&self, out: &mut Vec<u8>, o: Stored) {
        self.line(out, stored_line(o));
    }

    fn deleted(&self, out: &mut Vec<u8>, o: Deleted) {
        self.line(
            out,
            match o {
                Deleted::Deleted => DELETED,
                Deleted::NotFound | Deleted::Exists => NOT_FOUND,
            },
        );
    }

    fn counted(&self, out: &mut Vec<u8>, o: Counted) {
        if self.noreply {
            return;
        }
        match o {
            Counted::Value { value, .. } => number(out, value),
            Counted::NonNumeric => out.extend_from_slice(NON_NUMERIC),
            Counted::OutOfMemory { .. } => out.extend_from_slice(ARITH_OUT_OF_MEMORY),
            _ => out.extend_from_slice(NOT_FOUND),
        }
    }

    fn touched(&self, out: &mut Vec<u8>, hit: bool) {
        self.line(out, if hit { TOUCHED } else { NOT_FOUND });
    }

    fn flushed(&self, out: &mut Vec<u8>, o: Flushed) {
        self.line(
            out,
            match o {
                Flushed::Done => OK,
                Flushed::NotAllowed => b"CLIENT_ERROR flush_all not allowed\r\n",
                Flushed::BadDelay => b"CLIENT_ERROR invalid exptime argument\r\n",
            },
        );
    }

    fn stats(&self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        // Stats are written in the text protocol's own form.
        write(out);
    }

    fn version(&self, out: &mut Vec<u8>, version: &str) {
        out.extend_from_slice(b"VERSION ");
        out.extend_from_slice(version.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    fn ok(&self, out: &mut Vec<u8>) {
        self.line(out, OK);
    }

    fn mem_limit(&self, out: &mut Vec<u8>, o: MemLimit) {
        self.line(
            out,
            match o {
                MemLimit::Set => OK,
                MemLimit::TooSmall => b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
                MemLimit::NotMegabytes => {
                    b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n"
                }
            },
        );
    }

    fn shutdown(&self, out: &mut Vec<u8>, o: Shutdown) {
        match o {
            Shutdown::NotEnabled => out.extend_from_slice(b"ERROR: shutdown not enabled\r\n"),
            Shutdown::BadMode => out.extend_from_slice(b"CLIENT_ERROR invalid shutdown mode\r\n"),
            Shutdown::Accepted => {}
        }
    }

    fn fixed(&self, out: &mut Vec<u8>, reply: &'static [u8]) {
        self.line(out, reply);
    }
}

/// The line for a storage outcome (text and meta share the server errors).
pub fn stored_line(o: Stored) -> &'static [u8] {
    match o {
        Stored::Stored { .. } => STORED,
        Stored::NotStored => NOT_STORED,
        Stored::Exists => EXISTS,
        Stored::NotFound => NOT_FOUND,
        Stored::TooLarge => TOO_LARGE,
        Stored::OutOfMemory => OUT_OF_MEMORY,
        Stored::OutOfMemoryReading => OUT_OF_MEMORY_READING,
    }
}

/// Appends `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n`.
pub fn value(out: &mut Vec<u8>, key: &[u8], flags: u32, data: &[u8], cas: Option<u64>) {
    out.reserve(key.len() + data.len() + 48);
    value_head(out, key, flags, data.len(), cas);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The `VALUE <key> <flags> <bytes> [<cas>]` line of a hit.
#[inline]
pub fn value_head(out: &mut Vec<u8>, key: &[u8], flags: u32, len: usize, cas: Option<u64>) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    out.extend_from_slice(b.format(flags).as_bytes());
    out.push(b' ');
    out.extend_from_slice(b.format(len).as_bytes());
    if let Some(c) = cas {
        out.push(b' ');
        out.extend_from_slice(b.format(c).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a number and CRLF (incr/decr's reply).
pub fn number(out: &mut Vec<u8>, n: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `STAT <name> <value>\r\n`.
pub fn stat(out: &mut Vec<u8>, name: &str, value: impl std::fmt::Display) {
    use std::io::Write;
    let _ = write!(out, "STAT {name} {value}\r\n");
}

pub const STORED: &[u8] = b"STORED\r\n";
pub const NOT_STORED: &[u8] = b"NOT_STORED\r\n";
pub const EXISTS: &[u8] = b"EXISTS\r\n";
pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";
pub const DELETED: &[u8] = b"DELETED\r\n";
pub const TOUCHED: &[u8] = b"TOUCHED\r\n";
pub const END: &[u8] = b"END\r\n";
pub const OK: &[u8] = b"OK\r\n";
pub const TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
pub const OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR out of memory storing object\r\n";
pub const OUT_OF_MEMORY_READING: &[u8] = b"SERVER_ERROR Out of memory during read\r\n";
/// incr, decr and ma when the changed number needs room there is none of.
pub const ARITH_OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR out of memory\r\n";
/// ma `N` when the item to create finds no room.
pub const CREATE_OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR Out of memory allocating new item\r\n";
pub const NON_NUMERIC: &[u8] = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";

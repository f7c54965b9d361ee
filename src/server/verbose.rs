//! `-vv` (or `verbosity 2`): one stderr line per text request and per reply line, in
//! memcached's shape (`<fd request`, `>fd reply`), for watching what clients send. Binary
//! requests and responses are shown as memcached shows them: their 24-byte headers in hex,
//! the key of a get or touch, and the text of an error.
//!
//! Values are never printed: a stored value is skipped with its command and a retrieved
//! one shows as `>fd sending key K`, as memcached does. The check costs one relaxed load
//! per request when off.

use std::io::Write;

use memchr::memchr;

/// Logs a new connection, as memcached's `-vv` does.
pub fn opened(fd: i32) {
    eprintln!("<{fd} new auto-negotiating client connection");
}

/// Logs which protocol a new connection speaks, once it has sent its first byte.
pub fn protocol(fd: i32, binary: bool) {
    let name = if binary { "binary" } else { "ascii" };
    eprintln!("{fd}: Client using the {name} protocol");
}

pub fn closed(fd: i32) {
    eprintln!("<{fd} connection closed.");
}

/// Logs the request at the start of `request` (its first line) and every line of `reply`.
pub fn exchange(fd: i32, request: &[u8], reply: &[u8]) {
    let mut text = Vec::with_capacity(64 + reply.len().min(4096));
    let first = first_line(request);
    let _ = writeln!(text, "<{fd} {}", String::from_utf8_lossy(first));
    // memcached logs a meta command's reply only when it is an error (and `mn`'s MN).
    let only_errors = matches!(
        first.split(|&b| b == b' ').next(),
        Some(b"mg" | b"ms" | b"md" | b"ma" | b"me")
    );
    reply_lines(&mut text, fd, reply, only_errors);
    // One write per request, so lines from different workers do not interleave.
    let _ = std::io::stderr().lock().write_all(&text);
}

/// Logs the reply lines of a multiget's keys served after it stopped for a full output
/// (the request line was logged with its first keys).
pub fn more_replies(fd: i32, reply: &[u8]) {
    let mut text = Vec::with_capacity(reply.len().min(4096));
    reply_lines(&mut text, fd, reply, false);
    let _ = std::io::stderr().lock().write_all(&text);
}

/// Every line of `reply`, a value as the key it was sent for; with `only_errors`, just the
/// error lines.
fn reply_lines(text: &mut Vec<u8>, fd: i32, reply: &[u8], only_errors: bool) {
    let mut rest = reply;
    while !rest.is_empty() {
        let line = first_line(rest);
        let mut skip = line_len(rest);
        if let Some(value_len) = value_header(line) {
            if !only_errors {
                let key = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
                let _ = writeln!(text, ">{fd} sending key {}", String::from_utf8_lossy(key));
            }
            skip = (skip + value_len + 2).min(rest.len());
        } else if only_errors && !is_error(line) {
            // A meta reply line: not logged.
        } else {
            let _ = writeln!(text, ">{fd} {}", String::from_utf8_lossy(line));
        }
        rest = &rest[skip..];
    }
}

/// Logs a binary request (its header and, for a get or touch, its key) and the responses
/// written for it.
pub fn binary_exchange(fd: i32, request: &[u8], reply: &[u8]) {
    use crate::protocol::binary::{op, Header, HEADER_LEN};
    let mut text = Vec::with_capacity(512);
    let Some(h) = Header::parse(request) else {
        return;
    };
    hex_header(
        &mut text,
        &format!("<{fd} Read binary protocol data:"),
        &format!("<{fd}   "),
        &request[..HEADER_LEN],
    );
    let verb = match h.opcode {
        op::GET | op::GETQ | op::GETK | op::GETKQ => Some("GET"),
        op::TOUCH | op::GAT | op::GATQ | op::GATK | op::GATKQ => Some("TOUCH"),
        op::SET | op::SETQ => Some("SET"),
        op::ADD | op::ADDQ => Some("ADD"),
        op::REPLACE | op::REPLACEQ => Some("REPLACE"),
        _ => None,
    };
    let at = HEADER_LEN + h.extras_len as usize;
    if let (Some(verb), Some(key)) = (verb, request.get(at..at + h.key_len as usize)) {
        let _ = write!(text, "<{fd} {verb} {}", String::from_utf8_lossy(key));
        if matches!(verb, "SET" | "ADD" | "REPLACE") {
            let vlen = (h.body_len as usize).saturating_sub(at - HEADER_LEN + key.len());
            let _ = write!(text, " Value len is {vlen}");
        }
        text.push(b'\n');
    }
    let mut rest = reply;
    while let Some(r) = Header::parse(rest) {
        let end = (HEADER_LEN + r.body_len as usize).min(rest.len());
        // `vbucket` carries the status in a response.
        if r.vbucket != 0 && r.key_len == 0 && r.extras_len == 0 {
            let msg = String::from_utf8_lossy(&rest[HEADER_LEN..end]);
            let _ = writeln!(text, ">{fd} Writing an error: {msg}");
        }
        hex_header(
            &mut text,
            &format!(">{fd} Writing bin response:"),
            &format!(">{fd}  "),
            &rest[..HEADER_LEN],
        );
        rest = &rest[end..];
    }
    let _ = std::io::stderr().lock().write_all(&text);
}

/// A title, then the header's bytes four to a line, each line under `lead`.
fn hex_header(text: &mut Vec<u8>, title: &str, lead: &str, header: &[u8]) {
    text.extend_from_slice(title.as_bytes());
    for (i, b) in header.iter().enumerate() {
        if i % 4 == 0 {
            let _ = write!(text, "\n{lead}");
        }
        let _ = write!(text, " 0x{b:02x}");
    }
    text.push(b'\n');
}

/// The line without its `\r\n` or `\n`.
fn first_line(b: &[u8]) -> &[u8] {
    let end = memchr(b'\n', b).unwrap_or(b.len());
    b[..end].strip_suffix(b"\r").unwrap_or(&b[..end])
}

/// Bytes up to and including the line's `\n`.
fn line_len(b: &[u8]) -> usize {
    memchr(b'\n', b).map_or(b.len(), |i| i + 1)
}

/// The data length announced by a `VALUE key flags bytes [cas]` or `VA bytes ...` line.
fn is_error(line: &[u8]) -> bool {
    line.starts_with(b"ERROR")
        || line.starts_with(b"CLIENT_ERROR")
        || line.starts_with(b"SERVER_ERROR")
}

fn value_header(line: &[u8]) -> Option<usize> {
    let mut parts = line.split(|&b| b == b' ');
    let n = match parts.next()? {
        b"VALUE" => parts.nth(2)?,
        b"VA" => parts.next()?,
        _ => return None,
    };
    std::str::from_utf8(n).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_headers_are_dumped_four_bytes_a_line() {
        let mut t = Vec::new();
        hex_header(
            &mut t,
            "<7 Read binary protocol data:",
            "<7   ",
            &[0x80, 0, 0, 1, 0xff],
        );
        assert_eq!(
            String::from_utf8(t).unwrap(),
            "<7 Read binary protocol data:\n<7    0x80 0x00 0x00 0x01\n<7    0xff\n"
        );
    }

    #[test]
    fn values_are_skipped_and_lines_split() {
        assert_eq!(value_header(b"VALUE k 0 5 12"), Some(5));
        assert_eq!(value_header(b"VA 3 t"), Some(3));
        assert_eq!(value_header(b"STORED"), None);
        assert_eq!(first_line(b"set a 0 0 1\r\nx\r\n"), b"set a 0 0 1");
        assert_eq!(first_line(b"get a\n"), b"get a");
    }
}

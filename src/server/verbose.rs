//! `-vv` (or `verbosity 2`): one stderr line per text request and per reply line, in
//! memcached's shape (`<fd request`, `>fd reply`), for watching what clients send.
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

pub fn closed(fd: i32) {
    eprintln!("<{fd} connection closed.");
}

/// Logs the request at the start of `request` (its first line) and every line of `reply`.
pub fn exchange(fd: i32, request: &[u8], reply: &[u8]) {
    let mut text = Vec::with_capacity(64 + reply.len().min(4096));
    let first = first_line(request);
    let _ = writeln!(text, "<{fd} {}", String::from_utf8_lossy(first));
    let mut rest = reply;
    while !rest.is_empty() {
        let line = first_line(rest);
        let mut skip = line_len(rest);
        if let Some(value_len) = value_header(line) {
            let key = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
            let _ = writeln!(text, ">{fd} sending key {}", String::from_utf8_lossy(key));
            skip = (skip + value_len + 2).min(rest.len());
        } else {
            let _ = writeln!(text, ">{fd} {}", String::from_utf8_lossy(line));
        }
        rest = &rest[skip..];
    }
    // One write per request, so lines from different workers do not interleave.
    let _ = std::io::stderr().lock().write_all(&text);
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
    fn values_are_skipped_and_lines_split() {
        assert_eq!(value_header(b"VALUE k 0 5 12"), Some(5));
        assert_eq!(value_header(b"VA 3 t"), Some(3));
        assert_eq!(value_header(b"STORED"), None);
        assert_eq!(first_line(b"set a 0 0 1\r\nx\r\n"), b"set a 0 0 1");
        assert_eq!(first_line(b"get a\n"), b"get a");
    }
}

//! Meta replies: a two-letter code, then the return flags in the order the client sent them.

use base64::Engine;

use super::flags::tokens;

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

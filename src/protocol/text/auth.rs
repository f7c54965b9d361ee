//! ascii authentication (`-Y`): before anything else, a client sends
//! `set <any key> <flags> <exptime> <n>\r\n<user> <password>\r\n`.

use memchr::memchr;

use super::Tokens;
use crate::protocol::number::parse_u32_wrapping;

/// The most bytes the credentials and their CRLF may take: memcached reads them into its
/// 16 KB read buffer, and closes a connection whose buffer fills before they are whole.
pub const CREDENTIALS_MAX: usize = 16 * 1024;

/// What an unauthenticated text connection sent.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthParsed<'a> {
    /// Credentials to check, and the bytes they used.
    Credentials {
        user: &'a [u8],
        pass: &'a [u8],
        used: usize,
    },
    Incomplete,
    /// Answer this line and drop `used` bytes.
    Reply {
        reply: &'static [u8],
        used: usize,
    },
    /// Junk with no newline: close.
    Close,
}

/// The answer to checked credentials.
pub fn answer(out: &mut Vec<u8>, ok: bool) {
    out.extend_from_slice(if ok {
        b"STORED\r\n"
    } else {
        b"CLIENT_ERROR authentication failure\r\n"
    });
}

pub fn parse(buf: &[u8]) -> AuthParsed<'_> {
    // As memcached: no line shorter than two bytes is looked at (a lone newline waits).
    if buf.len() < 2 {
        return AuthParsed::Incomplete;
    }
    let Some(nl) = memchr(b'\n', buf) else {
        return if buf.len() > 2048 {
            AuthParsed::Close
        } else {
            AuthParsed::Incomplete
        };
    };
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let t = Tokens::split(line);
    // The length as memcached's safe_strtoul reads it: a larger number keeps its low 32 bits.
    let size = match (t.get(0), parse_u32_wrapping(t.get(4))) {
        (b"set", Some(n)) if t.ntokens >= 6 => n as usize,
        _ => {
            return AuthParsed::Reply {
                reply: b"CLIENT_ERROR unauthenticated\r\n",
                used: nl + 1,
            }
        }
    };
    let start = nl + 1;
    if size + 2 > CREDENTIALS_MAX {
        // memcached waits for bytes its buffer cannot hold, then closes once it is full.
        return if buf.len() - start >= CREDENTIALS_MAX {
            AuthParsed::Close
        } else {
            AuthParsed::Incomplete
        };
    }
    let end = start + size;
    if buf.len() < end + 2 {
        return AuthParsed::Incomplete;
    }
    if &buf[end..end + 2] != b"\r\n" {
        return AuthParsed::Reply {
            reply: b"CLIENT_ERROR bad command line termination\r\n",
            used: end + 2,
        };
    }
    let body = Tokens::split(&buf[start..end]);
    if body.len() < 2 {
        return AuthParsed::Reply {
            reply: b"CLIENT_ERROR bad authentication token format\r\n",
            used: end + 2,
        };
    }
    AuthParsed::Credentials {
        user: body.get(0),
        pass: body.get(1),
        used: end + 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_lines() {
        let r = parse(b"set x 0 0 11\r\nalice pass1\r\nget a\r\n");
        assert_eq!(
            r,
            AuthParsed::Credentials {
                user: b"alice",
                pass: b"pass1",
                used: 27
            }
        );
        assert_eq!(parse(b"set x 0 0 11\r\nalice"), AuthParsed::Incomplete);
        assert!(matches!(
            parse(b"get a\r\n"),
            AuthParsed::Reply { used: 7, .. }
        ));
        assert!(matches!(
            parse(b"set x 0 0 5\r\nalice\r\n"),
            AuthParsed::Reply { .. }
        ));
        assert_eq!(parse(&[b'x'; 3000]), AuthParsed::Close);
        assert_eq!(parse(b"\n"), AuthParsed::Incomplete);
        // 2^32 + 11 is read as 11.
        assert!(matches!(
            parse(b"set x 0 0 4294967307\r\nalice pass1\r\n"),
            AuthParsed::Credentials { used: 35, .. }
        ));
        let mut long = b"set x 0 0 16383\r\n".to_vec();
        long.resize(long.len() + CREDENTIALS_MAX - 1, b' ');
        assert_eq!(parse(&long), AuthParsed::Incomplete);
        long.push(b' ');
        assert_eq!(parse(&long), AuthParsed::Close);
    }
}

//! The meta flag tokenizer shared by mg, ms, md and ma.
//!
//! Each flag is one character, optionally followed by a token (`T30`, `Oabc`). Flags are
//! parsed once into [`MetaFlags`]; the raw flag tokens are kept too, because return flags are
//! echoed in the order the client sent them. Error precedence follows memcached: a duplicate
//! or unknown flag stops at once; a bad token is remembered and the last one wins, except
//! that a bad `F` is reported only when no other token is bad (memcached reads `F` in a
//! later pass than the others).

use std::borrow::Cow;

use crate::protocol::number::{parse_i32, parse_u64};
use crate::protocol::ErrorKind;

#[derive(Debug, Clone, Default)]
pub struct MetaFlags<'a> {
    /// The flag tokens as sent, for echoing return flags in order.
    pub raw: &'a [u8],
    pub base64: bool,
    pub quiet: bool,
    pub value: bool,
    pub no_update: bool,
    pub invalidate: bool,
    /// Never set by the parser: memcached 1.6.18 has no `x` flag and refuses it, so we do
    /// too. The store still supports the newer behaviour (drop the value, keep the item).
    pub strip_value: bool,
    pub client_flags: u32,
    pub compare_cas: Option<u64>,
    pub new_cas: Option<u64>,
    /// `T`: the TTL a hit is given.
    pub ttl: Option<i32>,
    /// `N`: create the item on a miss, with this TTL.
    pub vivify: Option<i32>,
    /// `T` came after `N`: an item created ends with T's TTL (memcached applies the flags
    /// in order, so the later of the two wins there; a hit takes only `T`).
    pub touch_last: bool,
    pub recache: Option<i32>,
    /// `R` came before `T`: it looks at the expiry the item had (memcached applies the
    /// flags in order), not the one `T` gives it.
    pub recache_first: bool,
    pub mode: Option<u8>,
    pub initial: u64,
    pub delta: u64,
    /// An `O` token longer than memcached allows. ms and md refuse it before they act; mg
    /// and ma act first and refuse it as they build the reply, which memcached does flag
    /// by flag in order, so the T, N and R after it take no effect (they are still checked).
    pub opaque_too_long: bool,
}

/// Decodes a base64 key (`b`) as leniently as memcached 1.6.18 does, so that every key it
/// takes is taken here too: bytes outside the alphabet are skipped, the rest must come in
/// whole quartets, each `=` counts as a zero digit, and the first quartet holding one or
/// two ends the key, dropping as many bytes (unused low bits need not be zero: `ab==` is
/// `i`, as `aQ==` is). None where memcached fails: nothing decoded, a partial quartet, or
/// three or four `=` in the last one.
pub fn decode_key(encoded: &[u8]) -> Option<Vec<u8>> {
    fn digit(b: u8) -> Option<u8> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => 0,
            _ => return None,
        })
    }
    let digits = encoded.iter().filter(|&&b| digit(b).is_some()).count();
    if digits == 0 || digits % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(digits / 4 * 3);
    let (mut quartet, mut n, mut pad) = ([0u8; 4], 0, 0);
    for &b in encoded {
        let Some(d) = digit(b) else { continue };
        pad += usize::from(b == b'=');
        quartet[n] = d;
        n += 1;
        if n < 4 {
            continue;
        }
        n = 0;
        out.push(quartet[0] << 2 | quartet[1] >> 4);
        out.push(quartet[1] << 4 | quartet[2] >> 2);
        out.push(quartet[2] << 6 | quartet[3]);
        if pad > 0 {
            if pad > 2 {
                return None;
            }
            out.truncate(out.len() - pad);
            break;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Iterates the flag tokens of `raw`.
pub fn tokens(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

/// Parses flag tokens; decodes the key in place of `key` if `b` is present.
pub fn parse<'a>(raw: &'a [u8], key: &mut Cow<'a, [u8]>) -> Result<MetaFlags<'a>, ErrorKind> {
    let mut f = MetaFlags {
        raw,
        delta: 1,
        ..Default::default()
    };
    let mut seen = [false; 128];
    let mut error: Option<ErrorKind> = None;
    let mut bad_flags = false;
    for tok in tokens(raw) {
        let c = tok[0];
        if c >= 127 || seen[c as usize] {
            return Err(ErrorKind::MetaDuplicateFlag);
        }
        seen[c as usize] = true;
        let arg = &tok[1..];
        let mut fail = |kind| error = Some(kind);
        match c {
            b'b' => {
                f.base64 = true;
                match decode_key(key.as_ref()) {
                    Some(k) => *key = Cow::Owned(k),
                    None => fail(ErrorKind::MetaKeyDecode),
                }
            }
            // After a long opaque (see `opaque_too_long`) N still creates, but the item
            // keeps no expiry of its own: one from an earlier T, or none.
            b'N' => match parse_i32(arg) {
                Some(_) if f.opaque_too_long => {
                    f.vivify = Some(0);
                    f.touch_last = f.ttl.is_some();
                }
                Some(v) => f.vivify = Some(v),
                None => fail(ErrorKind::MetaBadToken),
            },
            b'T' => match parse_i32(arg) {
                Some(_) if f.opaque_too_long => {}
                Some(v) => {
                    f.ttl = Some(v);
                    f.touch_last = f.vivify.is_some();
                }
                None => fail(ErrorKind::MetaBadToken),
            },
            b'R' => match parse_i32(arg) {
                Some(_) if f.opaque_too_long => {}
                Some(v) => {
                    f.recache = Some(v);
                    f.recache_first = f.ttl.is_none();
                }
                None => fail(ErrorKind::MetaBadToken),
            },
            // Like the text commands, memcached keeps the low 32 bits of a larger number.
            b'F' => match parse_u64(arg) {
                Some(v) => f.client_flags = v as u32,
                None => bad_flags = true,
            },
            b'C' => match parse_u64(arg) {
                Some(v) => f.compare_cas = Some(v),
                None => fail(ErrorKind::MetaBadToken),
            },
            b'E' => match parse_u64(arg) {
                Some(v) => f.new_cas = Some(v),
                None => fail(ErrorKind::MetaBadToken),
            },
            b'M' => {
                if tok.len() != 2 {
                    fail(ErrorKind::MetaModeLength);
                } else {
                    f.mode = Some(tok[1]);
                }
            }
            b'J' => match parse_u64(arg) {
                Some(v) => f.initial = v,
                None => fail(ErrorKind::MetaInitial),
            },
            b'D' => match parse_u64(arg) {
                Some(v) => f.delta = v,
                None => fail(ErrorKind::MetaDelta),
            },
            b'O' => {
                if tok.len() > crate::protocol::limits::META_MAX_OPAQUE_LENGTH {
                    f.opaque_too_long = true;
                }
            }
            b'q' => f.quiet = true,
            b'v' => f.value = true,
            b'u' => f.no_update = true,
            b'I' => f.invalidate = true,
            b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' | b'h' | b'l' => {}
            _ => return Err(ErrorKind::MetaInvalidFlag),
        }
    }
    // memcached holds back the access bump of a read with any of these until its reply is
    // built, which a long opaque stops first.
    if f.opaque_too_long && b"NTRlh".iter().any(|&c| seen[c as usize]) {
        f.no_update = true;
    }
    match error {
        Some(e) => Err(e),
        None if bad_flags => Err(ErrorKind::BadFormat),
        None => Ok(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str) -> Result<MetaFlags<'_>, ErrorKind> {
        let mut key = Cow::Borrowed(&b"foo"[..]);
        parse(raw.as_bytes(), &mut key)
    }

    #[test]
    fn parses_flags_and_tokens() {
        let f = p("v t T30 Oabc C5 D7 J9 MD q").unwrap();
        assert!(f.value && f.quiet);
        assert_eq!(f.ttl, Some(30));
        assert_eq!(f.compare_cas, Some(5));
        assert_eq!(f.delta, 7);
        assert_eq!(f.initial, 9);
        assert_eq!(f.mode, Some(b'D'));
    }

    #[test]
    fn n_and_t_keep_their_own_ttls() {
        let f = p("T20 N10").unwrap();
        assert_eq!((f.ttl, f.vivify, f.touch_last), (Some(20), Some(10), false));
        let f = p("N10 t T20").unwrap();
        assert_eq!((f.ttl, f.vivify, f.touch_last), (Some(20), Some(10), true));
    }

    #[test]
    fn errors_like_memcached() {
        assert_eq!(p("v v").unwrap_err(), ErrorKind::MetaDuplicateFlag);
        assert_eq!(p("!").unwrap_err(), ErrorKind::MetaInvalidFlag);
        assert_eq!(p("Tabc").unwrap_err(), ErrorKind::MetaBadToken);
        assert_eq!(p("MAB").unwrap_err(), ErrorKind::MetaModeLength);
        assert_eq!(p("Dx").unwrap_err(), ErrorKind::MetaDelta);
        assert_eq!(p("Fx").unwrap_err(), ErrorKind::BadFormat);
        assert_eq!(p("Tx Fx").unwrap_err(), ErrorKind::MetaBadToken);
        assert_eq!(p("Fx MAB").unwrap_err(), ErrorKind::MetaModeLength);
        assert_eq!(p("Dx Tx").unwrap_err(), ErrorKind::MetaBadToken);
    }

    #[test]
    fn flags_after_a_long_opaque_take_no_effect() {
        let long = format!("O{}", "x".repeat(33));
        let raw = format!("T20 {long} N10 R5");
        let f = p(&raw).unwrap();
        assert!(f.opaque_too_long && f.no_update);
        assert_eq!((f.ttl, f.vivify, f.touch_last), (Some(20), Some(0), true));
        assert_eq!(f.recache, None);
        let raw = format!("N10 {long} T20 v");
        let f = p(&raw).unwrap();
        assert_eq!((f.ttl, f.vivify, f.touch_last), (None, Some(10), false));
        assert!(!p(&format!("{long} v")).unwrap().no_update);
        assert_eq!(
            p(&format!("{long} Tx")).unwrap_err(),
            ErrorKind::MetaBadToken
        );
    }

    #[test]
    fn base64_key() {
        let mut key = Cow::Borrowed(&b"Zm9v"[..]);
        let f = parse(b"b", &mut key).unwrap();
        assert!(f.base64);
        assert_eq!(key.as_ref(), b"foo");
        let mut bad = Cow::Borrowed(&b"!!!"[..]);
        assert_eq!(parse(b"b", &mut bad).unwrap_err(), ErrorKind::MetaKeyDecode);
    }

    #[test]
    fn base64_keys_decode_as_leniently_as_memcached() {
        let ok = |s: &str| decode_key(s.as_bytes());
        assert_eq!(ok("YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(ok("ab==").as_deref(), Some(&b"i"[..]));
        assert_eq!(ok("YWJ=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(ok("Y!W-Jj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(ok("YQ==YWJj").as_deref(), Some(&b"a"[..]));
        assert_eq!(ok("Y=Jj").map(|k| k.len()), Some(2));
        for bad in ["", "!!!", "YWJ", "YWJjZ", "Y===", "====", "YWJjZ==="] {
            assert_eq!(ok(bad), None, "{bad}");
        }
    }
}

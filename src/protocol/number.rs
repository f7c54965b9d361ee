//! Number tokens, read the way memcached's `safe_strto*` read them: an optional sign, then
//! decimal digits to the end of the token; overflow fails. Unsigned fields take a minus sign
//! as C's `strtoull` does (negating), and refuse the result only when it reads as negative
//! signed: `-0` is 0, `-1` is refused.

fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(n)
}

/// Unsigned 64-bit (`safe_strtoull`).
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    match s.split_first() {
        Some((b'-', rest)) => {
            let n = digits(rest)?.wrapping_neg();
            (n as i64 >= 0).then_some(n)
        }
        Some((b'+', rest)) => digits(rest),
        _ => digits(s),
    }
}

/// Unsigned 32-bit (`safe_strtoul`): client flags.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|n| u32::try_from(n).ok())
}

/// Signed 32-bit (`safe_strtol`): exptimes and lengths. memcached reads a 64-bit long and
/// stores it in a 32-bit int, so only numbers beyond 64 bits fail; larger 32-bit overflows
/// keep their low 32 bits (`set k 0 -99999999999 1` is stored, already expired).
pub fn parse_i32(s: &[u8]) -> Option<i32> {
    let (neg, rest) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = digits(rest)?;
    let n: i64 = if neg {
        // i64::MIN is the one magnitude with no positive counterpart.
        0i64.checked_sub_unsigned(n)?
    } else {
        i64::try_from(n).ok()?
    };
    Some(n as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_memcached() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"-0"), Some(0));
        assert_eq!(parse_u64(b"-18446744073709551615"), Some(1));
        assert_eq!(parse_u64(b"-"), None);
        assert_eq!(parse_u64(b"+7"), Some(7));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"1a"), None);
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_i32(b"-5"), Some(-5));
        assert_eq!(parse_i32(b"2147483648"), Some(i32::MIN));
        assert_eq!(parse_i32(b"4294967297"), Some(1));
        assert_eq!(parse_i32(b"-99999999999"), Some(-1_215_752_191));
        assert_eq!(parse_i32(b"-9223372036854775808"), Some(0));
        assert_eq!(parse_i32(b"9223372036854775808"), None);
        assert_eq!(parse_i32(b"-9223372036854775809"), None);
        assert_eq!(parse_i32(b"-"), None);
    }
}

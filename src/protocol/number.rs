//! Number tokens, read the way memcached's `safe_strto*` read them: C whitespace may come
//! first, then an optional sign and decimal digits, ended by the token's end or by C
//! whitespace (after which anything goes: `1\tx` reads as 1, as C's `strtol` stops there);
//! overflow fails. Unsigned fields take a minus sign as C's `strtoull` does (negating), and
//! refuse the result only when it reads as negative signed: `-0` is 0, `-1` is refused.

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The sign and digits `strtol` would read from `s`, if what follows them may end a number.
fn number_part(s: &[u8]) -> Option<&[u8]> {
    let start = s.iter().position(|&b| !is_c_space(b))?;
    let s = &s[start..];
    let signed = matches!(s.first(), Some(b'-' | b'+')) as usize;
    let end = s[signed..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(s.len(), |i| signed + i);
    (end == s.len() || is_c_space(s[end])).then_some(&s[..end])
}

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
    let s = number_part(s)?;
    match s.split_first() {
        Some((b'-', rest)) => {
            let n = digits(rest)?.wrapping_neg();
            (n as i64 >= 0).then_some(n)
        }
        Some((b'+', rest)) => digits(rest),
        _ => digits(s),
    }
}

/// Unsigned 32-bit (`safe_strtoflags`): client flags.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|n| u32::try_from(n).ok())
}

/// Unsigned, as memcached's `safe_strtoul` reads admin numbers (verbosity, cache_memlimit,
/// slab class ids) into 32 bits: a number of up to 64 bits keeps its low 32.
pub fn parse_u32_wrapping(s: &[u8]) -> Option<u32> {
    parse_u64(s).map(|n| n as u32)
}

/// Signed 32-bit (`safe_strtol`): exptimes and lengths. memcached reads a 64-bit long and
/// stores it in a 32-bit int, so only numbers beyond 64 bits fail; larger 32-bit overflows
/// keep their low 32 bits (`set k 0 -99999999999 1` is stored, already expired).
pub fn parse_i32(s: &[u8]) -> Option<i32> {
    let s = number_part(s)?;
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

    #[test]
    fn c_whitespace_around_a_number_is_read_as_strtol_reads_it() {
        assert_eq!(parse_u64(b"\t7"), Some(7));
        assert_eq!(parse_u64(b"7\t"), Some(7));
        assert_eq!(parse_u64(b"7\rzz"), Some(7));
        assert_eq!(parse_u32(b"\x0b\x0c+7\x0b"), Some(7));
        assert_eq!(parse_i32(b"\t-5\r"), Some(-5));
        assert_eq!(parse_u64(b"\t"), None);
        assert_eq!(parse_u64(b"\t-"), None);
        assert_eq!(parse_u64(b"7x\t"), None);
        assert_eq!(parse_u64(b"\t-1"), None);
        assert_eq!(parse_i32(b"- 5"), None);
    }
}

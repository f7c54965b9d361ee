//! Expiry across processes. Each store counts "relative seconds" from its own start, so an
//! exptime means nothing on another node; what travels is the sender's current second, and
//! the receiver keeps the remaining lifetime.

/// The exptime a received record gets in this store: its remaining lifetime at the sender
/// (`exptime - sender_now`), counted from `my_now`. 0 stays 0 (never); an already expired one
/// becomes 1 (this store's "already expired").
///
/// The same rule serves a delayed flush's `at`: 0 (at once) stays 0, and one already due at
/// the sender becomes 1, which is due here too.
pub fn local_exptime(exptime: u32, sender_now: u32, my_now: u32) -> u32 {
    if exptime == 0 {
        return 0;
    }
    match exptime.checked_sub(sender_now) {
        Some(left) if left > 0 => my_now.saturating_add(left),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_stays_never() {
        assert_eq!(local_exptime(0, 100, 5), 0);
        assert_eq!(local_exptime(0, 0, u32::MAX), 0);
    }

    #[test]
    fn already_expired_becomes_one() {
        assert_eq!(local_exptime(100, 100, 5000), 1);
        assert_eq!(local_exptime(99, 100, 5000), 1);
        assert_eq!(local_exptime(1, u32::MAX, 0), 1);
    }

    #[test]
    fn remaining_lifetime_survives_different_clocks() {
        // Sender up for long, receiver just started, and the other way round.
        assert_eq!(local_exptime(1_000_030, 1_000_000, 2), 32);
        assert_eq!(local_exptime(40, 10, 900_000), 900_030);
        assert_eq!(local_exptime(11, 10, 10), 11);
    }

    #[test]
    fn saturates_at_the_extremes() {
        assert_eq!(local_exptime(u32::MAX, 0, u32::MAX), u32::MAX);
        assert_eq!(local_exptime(u32::MAX, 2, u32::MAX - 1), u32::MAX);
        assert_eq!(local_exptime(u32::MAX, u32::MAX, u32::MAX), 1);
        // One second left stays one second, even against a huge sender clock.
        assert_eq!(local_exptime(u32::MAX, u32::MAX - 1, 2), 3);
    }
}

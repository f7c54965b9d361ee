//! Fuzzes the text, meta and binary parsers: no input may panic, and a parse never claims
//! more bytes than it was given. Input starting with 0x80 goes to the binary parser, as on a
//! real connection. Run with `cargo +nightly fuzz run text_meta` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use repcached::protocol::binary::{self, BinParsed};
use repcached::protocol::{text, Limits, Parsed};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { item_size_max: 64 * 1024 };
    if data.first() == Some(&binary::REQUEST) {
        let mut rest = data;
        while !rest.is_empty() {
            match binary::parse(rest, &limits) {
                BinParsed::Done(_, n) => {
                    assert!(n <= rest.len());
                    rest = &rest[n..];
                }
                BinParsed::Error { consumed, swallow, .. } => {
                    assert!(consumed <= rest.len());
                    rest = &rest[(consumed + swallow).min(rest.len())..];
                }
                BinParsed::Incomplete | BinParsed::BadMagic => break,
            }
        }
        return;
    }
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

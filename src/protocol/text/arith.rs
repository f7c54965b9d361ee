//! incr and decr: `incr|decr <key> <delta> [noreply]`. Executed in `server::command::arith`,
//! answered by `TextReply::counted`.

use super::{invalid, text, Tokens};
use crate::protocol::command::{Arith, Command};
use crate::protocol::limits::is_valid_key;
use crate::protocol::number::parse_u64;
use crate::protocol::{ErrorKind, Parsed};

pub fn parse<'a>(incr: bool, t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let noreply = t.noreply();
    let key = t.get(1);
    if !is_valid_key(key) {
        return invalid(ErrorKind::BadFormat, used, noreply);
    }
    let Some(delta) = parse_u64(t.get(2)) else {
        return invalid(ErrorKind::InvalidDelta, used, noreply);
    };
    let arith = Arith {
        key,
        incr,
        delta,
        ..Default::default()
    };
    text(Command::Arith(arith), noreply, used)
}

//! flush_all: `flush_all [delay] [noreply]`. Executed in `server::command::flush`, answered
//! by `TextReply::flushed`.

use super::{text, Tokens};
use crate::protocol::command::{Command, Exptime};
use crate::protocol::number::parse_i32;
use crate::protocol::Parsed;

pub fn parse<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let noreply = t.noreply();
    let delay = if t.ntokens != if noreply { 3 } else { 2 } {
        parse_i32(t.get(1))
    } else {
        Some(0)
    };
    let delay = delay.map(|d| Exptime(d.into()));
    text(Command::Flush { delay }, noreply, used)
}

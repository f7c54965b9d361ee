//! touch: `touch <key> <exptime> [noreply]`. Executed in `server::command::touch`, answered
//! by `TextReply::touched`.

use super::{invalid, text, Tokens};
use crate::protocol::command::{Command, Exptime};
use crate::protocol::limits::is_valid_key;
use crate::protocol::number::parse_i32;
use crate::protocol::{ErrorKind, Parsed};

pub fn parse<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let noreply = t.noreply();
    let key = t.get(1);
    if !is_valid_key(key) {
        return invalid(ErrorKind::BadFormat, used, noreply);
    }
    let Some(exptime) = parse_i32(t.get(2)) else {
        return invalid(ErrorKind::InvalidExptime, used, noreply);
    };
    let exptime = Exptime(exptime.into());
    text(Command::Touch { key, exptime }, noreply, used)
}

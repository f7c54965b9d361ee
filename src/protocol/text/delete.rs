//! delete: `delete <key> [0] [noreply]`. Executed in `server::command::delete`, answered by
//! `TextReply::deleted`.

use super::{invalid, text, Tokens};
use crate::protocol::command::{Command, Delete};
use crate::protocol::limits::is_valid_key;
use crate::protocol::{ErrorKind, Parsed};

/// `delete <key> [0] [noreply]`: memcached still accepts a zero hold time.
pub fn parse<'a>(t: &Tokens<'a>, used: usize) -> Parsed<'a> {
    let n = t.ntokens;
    // Only a third token can say noreply, as in memcached: `delete noreply` deletes the key
    // named so, and answers.
    let noreply = n > 3 && t.noreply();
    if n > 3 {
        let hold_is_zero = t.get(2) == b"0";
        let valid = (n == 4 && (hold_is_zero || noreply)) || (n == 5 && hold_is_zero && noreply);
        if !valid {
            return invalid(ErrorKind::DeleteUsage, used, noreply);
        }
    }
    let key = t.get(1);
    if !is_valid_key(key) {
        return invalid(ErrorKind::BadFormat, used, noreply);
    }
    let delete = Delete {
        key,
        ..Default::default()
    };
    text(Command::Delete(delete), noreply, used)
}

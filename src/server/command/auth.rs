//! Authentication: SASL PLAIN on the binary protocol (`-S`) and ascii authentication on the
//! text one (`-Y`). Both count `auth_cmds` and `auth_errors`.

use super::{After, Session};
use crate::protocol::binary::{self, op};
use crate::protocol::command::Command;

/// The SASL mechanisms offered.
pub const SASL_MECHS: &[u8] = b"PLAIN";
/// The longest mechanism name a SASL request may give (memcached's `MAX_SASL_MECH_LEN`).
pub const SASL_MECH_MAX: usize = 32;

/// With `-S`, everything but the SASL commands and version is refused (and the connection
/// closed) until the connection authenticates; without it the SASL commands are unknown.
/// None: go on and execute the request.
pub fn binary_gate(req: &binary::Request<'_>, s: &Session<'_>, out: &mut Vec<u8>) -> Option<After> {
    let sasl_op = matches!(
        req.command,
        Some(Command::SaslMechs | Command::SaslAuth { .. })
    );
    if !s.shared.config.sasl {
        if sasl_op {
            req.reply.unknown_command(out);
            return Some(After::Continue);
        }
        return None;
    }
    // As in memcached, authentication comes before anything else, a value's size included.
    let exempt = sasl_op || req.reply.header.opcode == op::VERSION;
    if s.authenticated || exempt {
        return None;
    }
    req.reply.auth_error(out);
    Some(After::Close)
}

/// SASL AUTH or STEP: only a one-step PLAIN is accepted. As in memcached, which starts a
/// new SASL exchange for it, the connection is authenticated afterwards only if it passed:
/// a failed attempt drops an earlier success.
pub fn sasl(s: &mut Session<'_>, step: bool, mech: &[u8], data: &[u8]) -> bool {
    s.counts.auth_cmds += 1;
    let ok = !step && mech == b"PLAIN" && s.shared.credentials.check_plain(data);
    s.authenticated = ok;
    if !ok {
        s.counts.auth_errors += 1;
    }
    ok
}

/// SASL LIST MECHS: memcached starts a new SASL exchange for it too, so it drops an
/// earlier authentication.
pub fn sasl_mechs(s: &mut Session<'_>) -> &'static [u8] {
    s.authenticated = false;
    SASL_MECHS
}

/// `-Y`: the credentials of a connection's first text request.
pub fn ascii(s: &mut Session<'_>, user: &[u8], pass: &[u8]) -> bool {
    let ok = s
        .shared
        .ascii_credentials
        .as_ref()
        .is_some_and(|c| c.check(user, pass));
    s.counts.auth_cmds += 1;
    if ok {
        s.authenticated = true;
    } else {
        s.counts.auth_errors += 1;
    }
    ok
}

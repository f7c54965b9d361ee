//! Credentials for SASL PLAIN (binary protocol, `-S`) and ascii authentication (`-Y`).
//!
//! Both read memcached's password file format: one `user:password` per line. SASL takes
//! its file from `-o sasl_file=FILE` or, as memcached's built-in password database does,
//! from the `MEMCACHED_SASL_PWDB` environment variable.

use std::path::Path;

/// Environment variable naming the SASL password file (memcached's name for it).
pub const SASL_PWDB_ENV: &str = "MEMCACHED_SASL_PWDB";

#[derive(Debug, Default, Clone)]
pub struct Credentials {
    users: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Credentials {
    /// Reads `user:password` lines; blank lines and `#` comments are skipped.
    pub fn load(path: &Path) -> std::io::Result<Credentials> {
        let text = std::fs::read(path)?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &[u8]) -> Credentials {
        let users = text
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.is_empty() && l[0] != b'#')
            .filter_map(|l| {
                let i = l.iter().position(|&b| b == b':')?;
                Some((l[..i].to_vec(), l[i + 1..].to_vec()))
            })
            .collect();
        Credentials { users }
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn check(&self, user: &[u8], pass: &[u8]) -> bool {
        self.users.iter().any(|(u, p)| u == user && p == pass)
    }

    /// Checks a SASL PLAIN message: `[authzid] NUL user NUL password`.
    pub fn check_plain(&self, msg: &[u8]) -> bool {
        let mut parts = msg.split(|&b| b == 0);
        let (Some(_authzid), Some(user), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        self.check(user, pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_and_plain() {
        let c = Credentials::parse(b"# users\nalice:secret\r\n\nbob:p:w\n");
        assert!(c.check(b"alice", b"secret"));
        assert!(c.check(b"bob", b"p:w"));
        assert!(!c.check(b"alice", b"wrong"));
        assert!(c.check_plain(b"\0alice\0secret"));
        assert!(c.check_plain(b"admin\0alice\0secret"));
        assert!(!c.check_plain(b"\0alice\0nope"));
        assert!(!c.check_plain(b"alice secret"));
    }
}

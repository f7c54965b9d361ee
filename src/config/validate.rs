//! Value parsing and the cross-field rules, each failing with a message that says what to fix.

use super::{Config, ConfigError};

/// Every `-o` option memcached 1.6 knows. The ones this server acts on are handled in
/// [`apply_extended`]; the rest are accepted with a warning so existing command lines work.
const MEMCACHED_EXTENDED: &[&str] = &[
    "maxconns_fast",
    "hashpower",
    "no_hashexpand",
    "slab_reassign",
    "slab_automove",
    "slab_automove_ratio",
    "slab_automove_window",
    "tail_repair_time",
    "hash_algorithm",
    "lru_crawler",
    "lru_crawler_sleep",
    "lru_crawler_tocrawl",
    "lru_maintainer",
    "hot_lru_pct",
    "warm_lru_pct",
    "hot_max_factor",
    "warm_max_factor",
    "temporary_ttl",
    "idle_timeout",
    "watcher_logbuf_size",
    "worker_logbuf_size",
    "slab_sizes",
    "slab_chunk_max",
    "track_sizes",
    "no_inline_ascii_resp",
    "modern",
    "no_modern",
    "no_chunked_items",
    "no_slab_reassign",
    "no_slab_automove",
    "no_maxconns_fast",
    "inline_ascii_resp",
    "no_lru_crawler",
    "no_lru_maintainer",
    "no_drop_privileges",
    "drop_privileges",
    "resp_obj_mem_limit",
    "read_buf_mem_limit",
    "ssl_chain_cert",
    "ssl_key",
    "ssl_verify_mode",
    "ssl_keyformat",
    "ssl_ciphers",
    "ssl_ca_cert",
    "ssl_wbuf_size",
    "ssl_session_cache",
    "ssl_kernel_tls",
    "ssl_min_version",
    "proxy_config",
    "proxy_uring",
    "relaxed_privileges",
    "sock_cookie_id",
    "ext_path",
    "ext_wbuf_size",
    "ext_threads",
    "ext_io_depth",
    "ext_page_size",
    "ext_item_size",
    "ext_item_age",
    "ext_low_ttl",
    "ext_recache_rate",
    "ext_compact_under",
    "ext_drop_under",
    "ext_max_sleep",
    "ext_max_frag",
    "ext_drop_unread",
    "slab_automove_freeratio",
    "sasl_file",
    "ext_max_pages",
];

/// Options that change behaviour here and take no warning.
const HONOURED: &[&str] = &[
    "idle_timeout",
    "read_buf_mem_limit",
    "maxconns_fast",
    "no_maxconns_fast",
    "modern",
    "no_modern",
    "lru_crawler",
    "no_lru_crawler",
    "lru_maintainer",
    "no_lru_maintainer",
    "hash_algorithm",
    "hashpower",
    "no_hashexpand",
    "sasl_file",
    "slab_reassign",
    "no_slab_reassign",
    "track_sizes",
];

/// Parses a size such as `1m`, `512k` or `2097152`.
pub fn parse_size(s: &str) -> Result<usize, ConfigError> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k') | Some('K') => (&t[..t.len() - 1], 1024),
        Some('m') | Some('M') => (&t[..t.len() - 1], 1024 * 1024),
        _ => (t, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "-I {s}: not a size; write bytes, or a number with k or m, like 1m"
            ))
        })
}

/// Applies one `-o name[=value]` option.
pub fn apply_extended(c: &mut Config, opt: &str) -> Result<(), ConfigError> {
    let (name, value) = match opt.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (opt, None),
    };
    if !MEMCACHED_EXTENDED.contains(&name) {
        return Err(ConfigError::Invalid(format!(
            "-o {name}: unknown extended option; see memcached's -o list (e.g. -o idle_timeout=60)"
        )));
    }
    if name == "sasl_file" {
        c.sasl_file = value.clone().map(Into::into);
    } else if name == "idle_timeout" {
        let v = value.as_deref().unwrap_or("");
        c.idle_timeout_secs = v.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "-o idle_timeout={v}: give a number of seconds, like idle_timeout=60"
            ))
        })?;
    } else if name == "read_buf_mem_limit" {
        let v = value.as_deref().unwrap_or("");
        c.read_buf_mem_limit_mb = v.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "-o read_buf_mem_limit={v}: give a number of megabytes, like read_buf_mem_limit=64"
            ))
        })?;
    } else if name == "watcher_logbuf_size" {
        let v = value.as_deref().unwrap_or("");
        c.watcher_buf_bytes = match v.parse::<usize>() {
            Ok(kb @ 1..=1_048_576) => kb * 1024,
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "-o watcher_logbuf_size={v}: give kilobytes from 1 to 1048576, like watcher_logbuf_size=256"
                )))
            }
        };
    } else if !HONOURED.contains(&name) {
        c.warnings.push(format!(
            "-o {name} is accepted for compatibility but has no effect here"
        ));
    }
    c.extended.push((name.to_string(), value));
    Ok(())
}

/// `-X PORT` or `-X LISTEN:CONNECT`.
pub fn parse_replication_port(s: &str) -> Result<(u16, u16), ConfigError> {
    let bad = || {
        ConfigError::Invalid(format!(
            "-X {s}: give a port, or LISTEN:CONNECT ports, like -X 11212"
        ))
    };
    match s.split_once(':') {
        Some((l, r)) => Ok((l.parse().map_err(|_| bad())?, r.parse().map_err(|_| bad())?)),
        None => {
            let p = s.parse().map_err(|_| bad())?;
            Ok((p, p))
        }
    }
}

/// `-x HOST`, `-x HOST:PORT` or `-x [V6]:PORT`; a bare host takes `default_port`.
pub fn parse_peer(s: &str, default_port: u16) -> Result<super::PeerAddr, ConfigError> {
    let bad = || {
        ConfigError::Invalid(format!(
            "-x {s}: give a peer as HOST or HOST:PORT, like -x 127.0.0.3 or --peer 127.0.0.3:11212"
        ))
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(bad)?;
        match tail.strip_prefix(':') {
            Some(p) => (h, p.parse().map_err(|_| bad())?),
            None if tail.is_empty() => (h, default_port),
            None => return Err(bad()),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p.parse().map_err(|_| bad())?),
            Some(_) => (s, default_port),
            None => (s, default_port),
        }
    };
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(super::PeerAddr {
        host: host.to_string(),
        port,
    })
}

/// The shared replication secret: the file's content, without a trailing newline.
pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let mut bytes = std::fs::read(path).map_err(|e| {
        ConfigError::Invalid(format!(
            "cannot read --repl-secret-file {}: {e}; give a readable file holding the secret shared by all nodes",
            path.display()
        ))
    })?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "--repl-secret-file {} is empty; put the secret shared by all nodes in it",
            path.display()
        )));
    }
    Ok(bytes)
}

/// `--repl-timeout SECS`: between 0.1 and 3600.
pub fn parse_timeout(secs: f64) -> Result<std::time::Duration, ConfigError> {
    if !(0.1..=3600.0).contains(&secs) {
        return Err(ConfigError::Invalid(format!(
            "--repl-timeout {secs}: give seconds between 0.1 and 3600, like --repl-timeout 3"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// `--repl-ack-timeout-ms N`: between 1 and 60,000 milliseconds.
pub fn parse_ack_timeout(ms: u64) -> Result<std::time::Duration, ConfigError> {
    if !(1..=60_000).contains(&ms) {
        return Err(ConfigError::Invalid(format!(
            "--repl-ack-timeout-ms {ms}: give milliseconds between 1 and 60000, like --repl-ack-timeout-ms 100"
        )));
    }
    Ok(std::time::Duration::from_millis(ms))
}

/// `--repl-batch-us N`: between 50 and 100,000 microseconds.
pub fn parse_batch(us: u64) -> Result<std::time::Duration, ConfigError> {
    if !(50..=100_000).contains(&us) {
        return Err(ConfigError::Invalid(format!(
            "--repl-batch-us {us}: give microseconds between 50 and 100000, like --repl-batch-us 1000"
        )));
    }
    Ok(std::time::Duration::from_micros(us))
}

/// Cross-field rules.
pub fn validate(c: &Config) -> Result<(), ConfigError> {
    let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
    if c.threads == 0 {
        return bad("-t 0: at least one worker thread is needed");
    }
    if c.threads > 256 {
        return bad("-t: at most 256 threads; memcached warns past 64, and more rarely helps");
    }
    if c.max_connections == 0 {
        return bad("-c 0: allow at least one connection");
    }
    if c.store.limit_bytes == 0 {
        return bad("-m 0: give the cache some memory, in megabytes (default 64)");
    }
    if c.store.item_size_max < 1024 {
        return bad("-I: the item size limit cannot be below 1024 bytes");
    }
    if c.store.item_size_max > 1024 * 1024 * 1024 {
        return bad("-I: the item size limit cannot be above 1g");
    }
    if c.store.item_size_max > c.store.limit_bytes / 2 {
        return bad("-I: the item size limit cannot be more than half of -m; raise -m or lower -I");
    }
    let given = |name: &str| c.extended.iter().any(|(n, _)| n == name);
    if given("temporary_ttl") && !c.modern_switch("lru_maintainer", "no_lru_maintainer") {
        return bad("-o temporary_ttl requires lru_maintainer to be enabled (memcached refuses it too): drop no_lru_maintainer or no_modern, or temporary_ttl");
    }
    if !c.prefix_delimiter.is_ascii() {
        return bad("-D: the key prefix delimiter must be one ASCII character, such as ':'");
    }
    // memcached refuses these too: a datagram cannot carry a login.
    if c.listen.udp_port.is_on() && c.sasl {
        return bad("-U: UDP cannot be used with SASL (-S); leave -U at 0");
    }
    if c.listen.udp_port.is_on() && c.auth_file.is_some() {
        return bad("-U: UDP cannot be used with ascii authentication (-Y); leave -U at 0");
    }
    if c.sasl && c.sasl_file.is_none() {
        return bad("-S needs a password file of user:password lines: give -o sasl_file=FILE or set MEMCACHED_SASL_PWDB");
    }
    if !c.listen.port.is_on()
        && c.listen.unix_socket.is_none()
        && !c.listen.addrs.is_empty()
        && c.listen.addrs.iter().all(|a| a.is_empty())
    {
        return bad("nothing to listen on: give -p PORT or -s SOCKET");
    }
    let r = &c.replication;
    if r.enabled() && r.listen.is_none() && c.listen.port == super::PortSpec::Fixed(r.listen_port) {
        return bad("-X: the replication port must differ from the client port -p");
    }
    let repl_port = r
        .listen
        .as_deref()
        .and_then(|l| l.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    if repl_port.is_some_and(|p| c.listen.port == super::PortSpec::Fixed(p)) {
        return bad("--repl-listen: the replication port must differ from the client port -p");
    }
    if r.node_id == Some(0) {
        return bad("--node-id 0 is reserved for a standalone server: give 1-65535");
    }
    if r.cluster.is_empty() || r.cluster.len() > 255 {
        return bad("--cluster: give a name of 1-255 characters");
    }
    if r.ack_peers > 0 && !r.enabled() {
        return bad("--repl-ack-peers waits for peers, and none is configured: give --peer HOST:PORT (or -x HOST), or leave --repl-ack-peers out");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1m").unwrap(), 1024 * 1024);
        assert_eq!(parse_size("512k").unwrap(), 512 * 1024);
        assert_eq!(parse_size("2000").unwrap(), 2000);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn replication_ports() {
        assert_eq!(parse_replication_port("11212").unwrap(), (11212, 11212));
        assert_eq!(parse_replication_port("1:2").unwrap(), (1, 2));
        assert!(parse_replication_port("x").is_err());
    }

    #[test]
    fn extended_options() {
        let mut c = Config::default();
        apply_extended(&mut c, "idle_timeout=5").unwrap();
        assert_eq!(c.idle_timeout_secs, 5);
        apply_extended(&mut c, "tail_repair_time=3").unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(apply_extended(&mut c, "bogus").is_err());
        // Switches: the last one given wins.
        assert!(c.extended_switch("lru_crawler", "no_lru_crawler", true));
        apply_extended(&mut c, "no_lru_crawler").unwrap();
        assert!(!c.extended_switch("lru_crawler", "no_lru_crawler", true));
        apply_extended(&mut c, "lru_crawler").unwrap();
        assert!(c.extended_switch("lru_crawler", "no_lru_crawler", true));
        assert_eq!(c.warnings.len(), 1);
        // Kilobytes, as memcached reads them.
        apply_extended(&mut c, "watcher_logbuf_size=8").unwrap();
        assert_eq!(c.watcher_buf_bytes, 8 * 1024);
        let e = apply_extended(&mut c, "watcher_logbuf_size=x").unwrap_err();
        assert!(
            e.to_string().contains("like watcher_logbuf_size=256"),
            "{e}"
        );
        assert!(apply_extended(&mut c, "watcher_logbuf_size=0").is_err());
    }
}

//! Configuration: built once from memcached-compatible flags (and an optional TOML file),
//! validated once, then read-only. Each component takes only its own section, so tests build
//! those sections directly.

pub mod cli;
pub mod validate;

use std::path::PathBuf;

pub use cli::Args;

use crate::store::{StoreConfig, DEFAULT_ITEM_SIZE_MAX, DEFAULT_LIMIT_MB};

/// The largest `-m` honoured, in megabytes: 64 TiB, 32,768 shards.
pub const MAX_LIMIT_MB: u64 = 64 << 20;

/// memcached's default TCP port.
pub const DEFAULT_PORT: u16 = 11211;
/// repcached's default replication port.
pub const DEFAULT_REPLICATION_PORT: u16 = 11212;
/// memcached's default `-c`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// memcached's default `-t`.
pub const DEFAULT_THREADS: usize = 4;
/// memcached's default `-b`.
pub const DEFAULT_BACKLOG: i32 = 1024;
/// memcached's default `-R`.
pub const DEFAULT_REQS_PER_EVENT: usize = 20;
/// memcached's default `-a` (octal 0700).
pub const DEFAULT_UNIX_MASK: u32 = 0o700;
/// memcached's `watcher_logbuf_size`, in kilobytes.
pub const DEFAULT_WATCHER_BUF_KB: usize = 256;

/// What could be wrong with the configuration; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read config file {path}: {source}; check the path given to --config")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML for repcached: {message}")]
    ParseFile { path: PathBuf, message: String },
}

/// A `-p` or `-U` port, as memcached reads it: 0 is off, -1 is any free port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpec {
    /// No listener of this kind.
    Off,
    /// Whatever free port the system hands out (`-1`).
    AnyFree,
    /// This port.
    Fixed(u16),
}

impl PortSpec {
    /// Reads a flag's number: 0 off, -1 any free port, 1 to 65535 that port.
    pub fn from_flag(n: i64, flag: &str) -> Result<PortSpec, ConfigError> {
        match n {
            0 => Ok(PortSpec::Off),
            -1 => Ok(PortSpec::AnyFree),
            1..=65535 => Ok(PortSpec::Fixed(n as u16)),
            _ => Err(ConfigError::Invalid(format!(
                "{flag} {n}: give a port from 1 to 65535, 0 for off, or -1 for any free port"
            ))),
        }
    }

    pub fn is_on(self) -> bool {
        self != PortSpec::Off
    }

    /// The port to bind: None when off, 0 (the system picks) for any free port.
    pub fn bind_port(self) -> Option<u16> {
        match self {
            PortSpec::Off => None,
            PortSpec::AnyFree => Some(0),
            PortSpec::Fixed(p) => Some(p),
        }
    }

    /// The number as given on the command line (memcached's `stats settings` shows this).
    pub fn as_flag(self) -> i32 {
        match self {
            PortSpec::Off => 0,
            PortSpec::AnyFree => -1,
            PortSpec::Fixed(p) => p as i32,
        }
    }
}

/// Where clients connect.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// TCP port (`-p`).
    pub port: PortSpec,
    /// UDP port (`-U`); off by default, as in memcached 1.6.
    pub udp_port: PortSpec,
    /// Interfaces; empty means all (IPv4 and IPv6).
    pub addrs: Vec<String>,
    pub unix_socket: Option<PathBuf>,
    pub unix_mask: u32,
    pub backlog: i32,
}

/// A peer to dial: the host is resolved again at every attempt (addresses change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Replication settings: repcached's `-x`/`-X`, and the general form.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// `-x HOST[:PORT]` / `--peer`, repeatable: the nodes to pair with.
    pub peers: Vec<PeerAddr>,
    /// `-X`: the port to listen on for peers.
    pub listen_port: u16,
    /// `-X LISTEN:CONNECT`: the peers' port, for a `-x` host given without one.
    pub connect_port: u16,
    /// `--repl-listen ADDR:PORT`; None: `listen_port` at the first `-l` address.
    pub listen: Option<String>,
    /// The shared secret (`--repl-secret-file`'s content, trailing newline removed).
    pub secret: Option<Vec<u8>>,
    pub cluster: String,
    /// `--node-id`; None: random at each start.
    pub node_id: Option<u16>,
    /// `--repl-timeout`: silence after which a link is dropped.
    pub timeout: std::time::Duration,
    /// `--repl-backlog-size`: changes kept for a peer that falls behind or is away.
    pub backlog_bytes: usize,
    /// `--repl-backlog-ttl`: how long changes are kept for a peer that is away.
    pub backlog_ttl: std::time::Duration,
    /// `--repl-batch-us`: how long a busy link gathers changes before it sends them.
    pub batch: std::time::Duration,
    /// `-q`: repcached's queue length, accepted; the backlog is sized in bytes instead.
    pub queue: Option<usize>,
    /// `--repl-ack-peers`: how many caught-up peers must hold a write before it is
    /// answered; 0: answered at once (asynchronous replication).
    pub ack_peers: usize,
    /// `--repl-ack-timeout-ms`: the longest an acknowledged write waits for them.
    pub ack_timeout: std::time::Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            peers: Vec::new(),
            listen_port: DEFAULT_REPLICATION_PORT,
            connect_port: DEFAULT_REPLICATION_PORT,
            listen: None,
            secret: None,
            cluster: DEFAULT_CLUSTER.to_string(),
            node_id: None,
            timeout: std::time::Duration::from_secs(3),
            backlog_bytes: crate::store::DEFAULT_FEED_BYTES,
            batch: std::time::Duration::from_millis(2),
            backlog_ttl: std::time::Duration::from_secs(900),
            queue: None,
            ack_peers: 0,
            ack_timeout: std::time::Duration::from_millis(100),
        }
    }
}

impl ReplicationConfig {
    /// Replication runs when a peer is named or a replication address is given.
    pub fn enabled(&self) -> bool {
        !self.peers.is_empty() || self.listen.is_some()
    }
}

/// The cluster name nodes use unless told otherwise.
pub const DEFAULT_CLUSTER: &str = "repcached";
/// How long delete markers are kept when replicating: a peer away for less gets the delete
/// itself; one away longer is still protected by what the store remembers of them.
pub const REPLICATED_TOMBSTONE_SECS: u32 = 3600;

/// `-B`: the protocols a connection may speak (memcached's names, as `stats settings`
/// shows them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingProtocol {
    /// Text or binary, chosen per connection by its first byte.
    Auto,
    Ascii,
    Binary,
}

impl BindingProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingProtocol::Auto => "auto-negotiate",
            BindingProtocol::Ascii => "ascii",
            BindingProtocol::Binary => "binary",
        }
    }
}

impl std::fmt::Display for BindingProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ListenConfig,
    pub store: StoreConfig,
    pub replication: ReplicationConfig,
    pub threads: usize,
    pub max_connections: usize,
    pub verbose: u8,
    pub daemonize: bool,
    pub pid_file: Option<PathBuf>,
    pub user: Option<String>,
    pub enable_shutdown: bool,
    pub flush_enabled: bool,
    /// `stats cachedump` and `lru_crawler metadump` served (`--disable-dumping`).
    pub dump_enabled: bool,
    pub cas_enabled: bool,
    /// Seconds a connection may sit idle; 0 is forever.
    pub idle_timeout_secs: u64,
    /// `-o read_buf_mem_limit=N`: megabytes all connections' buffers may hold together,
    /// split over the workers; 0 (memcached's default) is no limit.
    pub read_buf_mem_limit_mb: usize,
    pub reqs_per_event: usize,
    /// `watch` is allowed (`-W` refuses it).
    pub watch_enabled: bool,
    /// `-o watcher_logbuf_size=N` (kilobytes): the log lines a watcher may have waiting
    /// before new ones are skipped, in bytes.
    pub watcher_buf_bytes: usize,
    /// `-B`: which protocols a connection may speak.
    pub binding_protocol: BindingProtocol,
    pub growth_factor: f64,
    pub chunk_size: u32,
    pub prefix_delimiter: char,
    /// `-D` given: per-prefix stats are collected from the start, as memcached does.
    pub detail_on: bool,
    pub sasl: bool,
    /// SASL password file: `-o sasl_file=FILE`, else `MEMCACHED_SASL_PWDB`.
    pub sasl_file: Option<PathBuf>,
    pub auth_file: Option<PathBuf>,
    /// `-o` options as given, for `stats settings`.
    pub extended: Vec<(String, Option<String>)>,
    /// Notes for the operator about accepted-but-ignored settings, logged at start.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: ListenConfig {
                port: PortSpec::Fixed(DEFAULT_PORT),
                udp_port: PortSpec::Off,
                addrs: Vec::new(),
                unix_socket: None,
                unix_mask: DEFAULT_UNIX_MASK,
                backlog: DEFAULT_BACKLOG,
            },
            store: StoreConfig::default(),
            replication: ReplicationConfig::default(),
            threads: DEFAULT_THREADS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            verbose: 0,
            daemonize: false,
            pid_file: None,
            user: None,
            enable_shutdown: false,
            flush_enabled: true,
            dump_enabled: true,
            watch_enabled: true,
            watcher_buf_bytes: DEFAULT_WATCHER_BUF_KB * 1024,
            cas_enabled: true,
            idle_timeout_secs: 0,
            read_buf_mem_limit_mb: 0,
            reqs_per_event: DEFAULT_REQS_PER_EVENT,
            binding_protocol: BindingProtocol::Auto,
            growth_factor: 1.25,
            chunk_size: 48,
            prefix_delimiter: ':',
            detail_on: false,
            sasl: false,
            sasl_file: None,
            auth_file: None,
            extended: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl Config {
    /// [`Config::extended_switch`] for what memcached 1.6's `-o no_modern` turns off (and
    /// `modern` on again): the last of `on`, `off` and those wins; on by default.
    pub fn modern_switch(&self, on: &str, off: &str) -> bool {
        self.extended_switch_with(on, off, true, true)
    }

    /// Whether memcached 1.6's defaults hold (no `-o no_modern` after any `modern`).
    pub fn modern(&self) -> bool {
        self.modern_switch("modern", "no_modern")
    }

    /// Whether `-o` turns something on: the last of `on` and `off` given wins, as memcached
    /// reads its options in order; `default` without either.
    pub fn extended_switch(&self, on: &str, off: &str, default: bool) -> bool {
        self.extended_switch_with(on, off, default, false)
    }

    fn extended_switch_with(&self, on: &str, off: &str, default: bool, modern: bool) -> bool {
        self.extended
            .iter()
            .rev()
            .find_map(|(name, _)| match name.as_str() {
                n if n == on => Some(true),
                n if n == off => Some(false),
                "modern" if modern => Some(true),
                "no_modern" if modern => Some(false),
                _ => None,
            })
            .unwrap_or(default)
    }

    /// A config for tests: loopback, an ephemeral port, small memory.
    pub fn for_tests() -> Config {
        let mut c = Config::default();
        c.listen.addrs = vec!["127.0.0.1".into()];
        c.listen.port = PortSpec::AnyFree;
        c.threads = 2;
        c
    }

    /// Builds and validates the configuration from parsed flags, reading `--config` first.
    pub fn from_args(mut args: Args) -> Result<Config, ConfigError> {
        if let Some(path) = args.config.clone() {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let file: Args = toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
                path: path.clone(),
                message: e.message().to_string(),
            })?;
            args.fill_from(&file);
        }
        let mut c = Config::default();
        let invalid = |m: String| ConfigError::Invalid(m);
        if let Some(p) = args.port {
            c.listen.port = PortSpec::from_flag(p, "-p")?;
        }
        if let Some(p) = args.udp_port {
            let p = PortSpec::from_flag(p, "-U")?;
            c.listen.udp_port = p;
            // As in memcached: a UDP port given without a TCP port is the TCP port too
            // (with -U -1, each gets its own free port).
            if p.is_on() && args.port.is_none() {
                c.listen.port = p;
            }
        }
        if let Some(l) = &args.listen {
            c.listen.addrs = l
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        c.listen.unix_socket = args.unix_socket.clone();
        if let Some(m) = &args.unix_mask {
            c.listen.unix_mask =
                u32::from_str_radix(m.trim_start_matches("0o"), 8).map_err(|_| {
                    invalid(format!(
                        "-a {m}: the unix socket mask must be octal, like 0700"
                    ))
                })?;
        }
        if let Some(b) = args.listen_backlog {
            c.listen.backlog = b;
        }
        let mb = args.memory_limit.unwrap_or(DEFAULT_LIMIT_MB as u64);
        if mb > MAX_LIMIT_MB {
            // memcached takes any -m (it allocates as it goes); the store's shards, one per
            // 2 GiB, would take gigabytes themselves for an absurd one.
            c.warnings.push(format!(
                "-m {mb}: more than this server addresses; using {MAX_LIMIT_MB} (64 TiB)"
            ));
        }
        c.store.limit_bytes = (mb.min(MAX_LIMIT_MB) as usize).saturating_mul(1024 * 1024);
        c.store.item_size_max = match &args.max_item_size {
            Some(s) => validate::parse_size(s)?,
            None => DEFAULT_ITEM_SIZE_MAX,
        };
        c.store.evict = !args.disable_evictions;
        if let Some(n) = args.conn_limit {
            c.max_connections = n;
        }
        if let Some(t) = args.threads {
            c.threads = t;
        }
        c.store.shards = (c.threads * 16).next_power_of_two().max(16);
        c.verbose = args.verbose;
        c.daemonize = args.daemon;
        c.pid_file = args.pidfile.clone();
        c.user = args.user.clone();
        c.enable_shutdown = args.enable_shutdown;
        c.flush_enabled = !args.disable_flush_all;
        c.dump_enabled = !args.disable_dumping;
        c.watch_enabled = !args.disable_watch;
        c.cas_enabled = !args.disable_cas;
        if let Some(r) = args.max_reqs_per_event {
            if r == 0 {
                return Err(invalid(
                    "-R 0: give at least 1 request per event (default 20)".to_string(),
                ));
            }
            c.reqs_per_event = r;
        }
        if let Some(p) = &args.protocol {
            c.binding_protocol = match p.as_str() {
                "auto" => BindingProtocol::Auto,
                "ascii" => BindingProtocol::Ascii,
                "binary" => BindingProtocol::Binary,
                other => {
                    return Err(invalid(format!(
                        "-B {other}: unknown protocol; use auto, ascii or binary"
                    )))
                }
            };
        }
        if let Some(f) = args.slab_growth_factor {
            // memcached refuses these too.
            if f.is_nan() || f <= 1.0 {
                return Err(invalid(format!(
                    "-f {f}: the slab growth factor must be greater than 1 (default 1.25)"
                )));
            }
            c.growth_factor = f;
        }
        if let Some(n) = args.slab_min_size {
            if n == 0 {
                return Err(invalid(
                    "-n 0: the minimum item space must be at least 1 byte (default 48)".to_string(),
                ));
            }
            c.chunk_size = n;
        }
        if let Some(n) = args.napi_ids {
            // memcached's limits; it then steers connections by the NIC queue they came in
            // on, which repcached does not do.
            if n <= 0 || n > c.threads as i64 {
                return Err(invalid(format!(
                    "-N {n}: the number of NAPI ids must be from 1 to the number of threads (-t {})",
                    c.threads
                )));
            }
            c.warnings
                .push("-N (NAPI ids) is accepted but has no effect here".to_string());
        }
        if let Some(d) = args.prefix_delimiter {
            c.prefix_delimiter = d;
            c.detail_on = true;
        }
        c.sasl = args.enable_sasl;
        c.auth_file = args.auth_file.clone();
        for (flag, on) in [
            ("-k (lock memory)", args.lock_memory),
            ("-L (large pages)", args.enable_largepages),
            ("-r (core dumps)", args.enable_coredumps),
        ] {
            if on {
                c.warnings
                    .push(format!("{flag} is accepted but has no effect here"));
            }
        }
        if args.memory_file.is_some() {
            c.warnings.push(
                "-e (memory file) is accepted but the cache is not restartable from it".into(),
            );
        }
        for group in &args.extended {
            for opt in group.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                validate::apply_extended(&mut c, opt)?;
            }
        }
        if c.sasl && c.sasl_file.is_none() {
            c.sasl_file = std::env::var_os(crate::server::auth::SASL_PWDB_ENV).map(PathBuf::from);
        }
        // As memcached: SASL lives in the binary protocol and ascii tokens in the text one,
        // so each turns the other protocol off, and asking for both is an error.
        let protocol_given = args.protocol.is_some();
        for (on, only, other) in [
            (c.sasl, BindingProtocol::Binary, "-S"),
            (c.auth_file.is_some(), BindingProtocol::Ascii, "-Y"),
        ] {
            if !on {
                continue;
            }
            if protocol_given && c.binding_protocol != only {
                return Err(invalid(format!(
                    "{other} works with the {only} protocol only; leave out -B or give -B {only}"
                )));
            }
            c.binding_protocol = only;
        }
        if c.sasl && c.auth_file.is_some() {
            return Err(invalid("-S and -Y cannot be used together: SASL needs the binary protocol, -Y the ascii one".into()));
        }
        replication_from(&mut c.replication, &args)?;
        if c.replication.enabled() {
            c.store.tombstone_secs = REPLICATED_TOMBSTONE_SECS;
            c.store.feed_bytes = c.replication.backlog_bytes;
        }
        validate::validate(&c)?;
        Ok(c)
    }
}

/// The replication settings from the flags (or the config file's keys).
fn replication_from(r: &mut ReplicationConfig, args: &Args) -> Result<(), ConfigError> {
    if let Some(x) = &args.replication_port {
        let (l, c) = validate::parse_replication_port(x)?;
        r.listen_port = l;
        r.connect_port = c;
    }
    r.peers = args
        .peer
        .iter()
        .map(|p| validate::parse_peer(p, r.connect_port))
        .collect::<Result<_, _>>()?;
    r.listen = args.repl_listen.clone();
    if let Some(path) = &args.repl_secret_file {
        r.secret = Some(validate::read_secret(path)?);
    }
    if let Some(name) = &args.cluster {
        r.cluster = name.clone();
    }
    r.node_id = args.node_id;
    if let Some(t) = args.repl_timeout {
        r.timeout = validate::parse_timeout(t)?;
    }
    if let Some(b) = &args.repl_backlog_size {
        r.backlog_bytes = validate::parse_size(b)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "--repl-backlog-size {b}: give a size above 0, in bytes or with k or m, like 64m"
                ))
            })?;
    }
    if let Some(secs) = args.repl_backlog_ttl {
        r.backlog_ttl = std::time::Duration::from_secs(secs);
    }
    if let Some(us) = args.repl_batch_us {
        r.batch = validate::parse_batch(us)?;
    }
    r.queue = args.replication_queue;
    if let Some(n) = args.repl_ack_peers {
        r.ack_peers = n;
    }
    if let Some(ms) = args.repl_ack_timeout_ms {
        r.ack_timeout = validate::parse_ack_timeout(ms)?;
    }
    Ok(())
}

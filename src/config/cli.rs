//! Command-line flags: memcached 1.6's, plus repcached's `-x`, `-X`, `-q` and `--config`.
//!
//! Every field is optional so that a flag given on the command line can override the same
//! setting from `--config FILE`, and an absent one falls back to the file, then the default.
//! The same struct is what the TOML file deserializes into (with long names as keys).

use std::path::PathBuf;

use clap::{ArgAction, Parser};
use serde::Deserialize;

#[derive(Debug, Default, Clone, Parser, Deserialize)]
#[command(
    name = "repcached",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true,
    about = "memcached-compatible, replicated in-memory cache"
)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Args {
    /// TCP port to listen on (default 11211; 0 turns TCP off, -1 takes any free port)
    #[arg(short = 'p', long = "port", allow_negative_numbers = true)]
    pub port: Option<i64>,
    /// UDP port (default 0, off; -1 takes any free port)
    #[arg(short = 'U', long = "udp-port", allow_negative_numbers = true)]
    pub udp_port: Option<i64>,
    /// Unix socket path (turns TCP off)
    #[arg(short = 's', long = "unix-socket")]
    pub unix_socket: Option<PathBuf>,
    /// Access mask for the unix socket, in octal (default 0700)
    #[arg(short = 'a', long = "unix-mask")]
    pub unix_mask: Option<String>,
    /// Allow the shutdown command
    #[arg(short = 'A', long = "enable-shutdown", action = ArgAction::SetTrue)]
    #[serde(default)]
    pub enable_shutdown: bool,
    /// Interfaces to listen on, comma-separated (default all)
    #[arg(short = 'l', long = "listen")]
    pub listen: Option<String>,
    /// Run as a daemon
    #[arg(short = 'd', long = "daemon", action = ArgAction::SetTrue)]
    pub daemon: bool,
    /// Keep core dumps (accepted; the system setting decides)
    #[arg(short = 'r', long = "enable-coredumps", action = ArgAction::SetTrue)]
    pub enable_coredumps: bool,
    /// Drop root privileges to this user
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Memory budget for items, in megabytes (default 64)
    #[arg(short = 'm', long = "memory-limit")]
    pub memory_limit: Option<u64>,
    /// Maximum simultaneous connections (default 1024)
    #[arg(short = 'c', long = "conn-limit")]
    pub conn_limit: Option<usize>,
    /// Lock memory pages (accepted, see README)
    #[arg(short = 'k', long = "lock-memory", action = ArgAction::SetTrue)]
    pub lock_memory: bool,
    /// Verbose logging; -vv for more
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,
    /// Print this help and exit
    #[arg(short = 'h', long = "help", action = ArgAction::SetTrue)]
    #[serde(skip)]
    pub help: bool,
    /// Print the license and exit
    #[arg(short = 'i', long = "license", action = ArgAction::SetTrue)]
    #[serde(skip)]
    pub license: bool,
    /// Print the version and exit
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue)]
    #[serde(skip)]
    pub version: bool,
    /// Write the daemon's pid to this file
    #[arg(short = 'P', long = "pidfile")]
    pub pidfile: Option<PathBuf>,
    /// Slab growth factor: shapes memcached's slab classes, which `me` and `slabs reassign`
    /// answer with (the store keeps none)
    #[arg(short = 'f', long = "slab-growth-factor")]
    pub slab_growth_factor: Option<f64>,
    /// Minimum item space: shapes memcached's slab classes, which `me` and `slabs reassign`
    /// answer with (the store keeps none)
    #[arg(short = 'n', long = "slab-min-size")]
    pub slab_min_size: Option<u32>,
    /// Use large memory pages (accepted, see README)
    #[arg(short = 'L', long = "enable-largepages", action = ArgAction::SetTrue)]
    pub enable_largepages: bool,
    /// Delimiter between key prefix and id for `stats detail`
    #[arg(short = 'D')]
    pub prefix_delimiter: Option<char>,
    /// Worker threads (default 4)
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Requests handled per event before yielding (default 20)
    #[arg(short = 'R', long = "max-reqs-per-event")]
    pub max_reqs_per_event: Option<usize>,
    /// Disable CAS (gets then returns 0)
    #[arg(short = 'C', long = "disable-cas", action = ArgAction::SetTrue)]
    pub disable_cas: bool,
    /// TCP listen backlog (default 1024)
    #[arg(short = 'b', long = "listen-backlog")]
    pub listen_backlog: Option<i32>,
    /// Protocol: auto, ascii or binary (default auto)
    #[arg(short = 'B', long = "protocol")]
    pub protocol: Option<String>,
    /// Largest item, with optional k/m suffix (default 1m)
    #[arg(short = 'I', long = "max-item-size")]
    pub max_item_size: Option<String>,
    /// Turn on SASL authentication (binary protocol)
    #[arg(short = 'S', long = "enable-sasl", action = ArgAction::SetTrue)]
    pub enable_sasl: bool,
    /// Refuse flush_all
    #[arg(short = 'F', long = "disable-flush-all", action = ArgAction::SetTrue)]
    pub disable_flush_all: bool,
    /// Refuse `stats cachedump` and `lru_crawler metadump` (memcached's -X, a letter
    /// repcached's replication port takes)
    #[arg(long = "disable-dumping", action = ArgAction::SetTrue)]
    pub disable_dumping: bool,
    /// Refuse `watch` (log streams)
    #[arg(short = 'W', long = "disable-watch", action = ArgAction::SetTrue)]
    pub disable_watch: bool,
    /// ASCII authentication file of user:password lines
    #[arg(short = 'Y', long = "auth-file")]
    pub auth_file: Option<PathBuf>,
    /// Memory file for restartable cache (accepted, see README)
    #[arg(short = 'e', long = "memory-file")]
    pub memory_file: Option<PathBuf>,
    /// Return an error instead of evicting when memory is full
    #[arg(short = 'M', long = "disable-evictions", action = ArgAction::SetTrue)]
    pub disable_evictions: bool,
    /// NAPI ids for steering connections to workers (accepted; no effect here)
    #[arg(short = 'N', long = "napi-ids")]
    pub napi_ids: Option<i64>,
    /// Extended options, comma-separated (memcached's -o)
    #[arg(short = 'o', long = "extended")]
    pub extended: Vec<String>,
    /// Replication peer, HOST or HOST:PORT (a bare host uses -X's port); repeat for a mesh
    #[arg(short = 'x', long = "peer", action = ArgAction::Append)]
    pub peer: Vec<String>,
    /// Replication port, or LISTEN:CONNECT ports (repcached; default 11212)
    #[arg(short = 'X', long = "replication-port")]
    pub replication_port: Option<String>,
    /// Replication queue size (repcached; accepted, see --repl-backlog-size)
    #[arg(short = 'q', long = "replication-queue")]
    pub replication_queue: Option<usize>,
    /// Address and port peers connect to (default: -X's port at the first -l address)
    #[arg(long = "repl-listen")]
    pub repl_listen: Option<String>,
    /// File holding the secret peers must share
    #[arg(long = "repl-secret-file")]
    pub repl_secret_file: Option<PathBuf>,
    /// Cluster name; nodes of another cluster are refused (default "repcached")
    #[arg(long = "cluster")]
    pub cluster: Option<String>,
    /// This node's id in the cluster, 1-65535 (default: random at each start)
    #[arg(long = "node-id")]
    pub node_id: Option<u16>,
    /// Seconds of silence after which a peer link is dropped and redialled (default 3)
    #[arg(long = "repl-timeout")]
    pub repl_timeout: Option<f64>,
    /// Changes kept for a peer that falls behind or is away, to resume from (default 64m)
    #[arg(long = "repl-backlog-size")]
    pub repl_backlog_size: Option<String>,
    /// Seconds the backlog is kept for a peer that is away, to resume from (default 900)
    #[arg(long = "repl-backlog-ttl")]
    pub repl_backlog_ttl: Option<u64>,
    /// Microseconds a busy link gathers changes into one batch (default 2000) while the
    /// workers are busy, four times that while they stay saturated; a twentieth of it while
    /// they sleep 15 % of their time or more, by the square of how busy they are between;
    /// never longer than a third of --repl-timeout: lower is less replication lag for more
    /// CPU
    #[arg(long = "repl-batch-us")]
    pub repl_batch_us: Option<u64>,
    /// Acknowledged writes: a write is answered once this many peers hold it (at most as
    /// many as are caught up and linked; default 0, answered at once)
    #[arg(long = "repl-ack-peers")]
    pub repl_ack_peers: Option<usize>,
    /// Milliseconds an acknowledged write waits for its peers before it is answered anyway
    /// (default 100)
    #[arg(long = "repl-ack-timeout-ms")]
    pub repl_ack_timeout_ms: Option<u64>,
    /// Read settings from this TOML file; flags override it
    #[arg(long = "config")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

macro_rules! fill_from {
    ($self:ident, $file:ident; options: $($opt:ident),*; switches: $($sw:ident),*) => {
        $( if $self.$opt.is_none() { $self.$opt = $file.$opt.clone(); } )*
        $( $self.$sw = $self.$sw || $file.$sw; )*
    };
}

impl Args {
    /// Fills settings not given on the command line from a config file's.
    pub fn fill_from(&mut self, file: &Args) {
        fill_from!(self, file;
            options: port, udp_port, unix_socket, unix_mask, listen, user, memory_limit,
                conn_limit, pidfile, slab_growth_factor, slab_min_size, prefix_delimiter, threads,
                max_reqs_per_event, listen_backlog, protocol, max_item_size, auth_file,
                memory_file, replication_port, replication_queue, repl_listen, repl_secret_file,
                cluster, node_id, repl_timeout, repl_backlog_size, repl_batch_us, repl_backlog_ttl,
                repl_ack_peers, repl_ack_timeout_ms, napi_ids;
            switches: enable_shutdown, daemon, enable_coredumps, lock_memory, enable_largepages,
                disable_cas, enable_sasl, disable_flush_all, disable_evictions, disable_watch,
                disable_dumping);
        if self.verbose == 0 {
            self.verbose = file.verbose;
        }
        if self.peer.is_empty() {
            self.peer = file.peer.clone();
        }
        if self.extended.is_empty() {
            self.extended = file.extended.clone();
        }
    }
}

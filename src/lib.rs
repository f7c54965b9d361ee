//! repcached: a memcached-compatible, replicated in-memory cache.
//!
//! ```text
//!  main ── config (flags, TOML) ──► server::Server::bind ──► run
//!                                     │
//!   acceptor ─► worker threads (-t) ─► one task per connection
//!   UDP (-U) ─► -t receiver threads per socket, one datagram at a time
//!                                     │
//!   protocol::{text, meta, binary}: bytes ─► protocol::command::Command + the encoding's Reply
//!                          (pure, no I/O; its own vocabulary: Cas, Exptime, SetMode)
//!                                     │
//!   server::command::{storage, retrieval, arith, delete, touch, flush, stats, admin, auth}
//!       one executor per family ─► store (shards, memory, expiry, versions)
//!                                     │                  │
//!   outcome ─► Reply (TextReply, MetaReply, BinaryReply) ─► bytes    mutation feed
//!                                                                  │        ▲ apply
//!   replication thread: listener + a dialer per peer ─► link per peer (handshake, resume
//!       from the backlog or a snapshot, then the feed out; changes in ─► store.apply by
//!       last-writer-wins)
//! ```
//!
//! Where a command lives: `incr` is parsed in `protocol/text/arith.rs` (meta `ma` in
//! `protocol/meta`, binary in `protocol/binary`), executed in `server/command/arith.rs`, and
//! answered by each encoding's `reply.rs`.
//!
//! Tasks: the main thread's runtime accepts connections, handles signals and runs the
//! reclaimer (expired items, free heap pages). Each accepted connection is handed to one of
//! `-t` worker threads, each a single-threaded runtime that owns its connections, as in
//! memcached. UDP sockets are read by their own threads, which run each datagram's requests
//! through the same per-request step as connections. Shutdown is a watch channel every
//! task selects on (UDP receivers poll it). The store is shared by
//! handle and locks one shard per operation. Replication runs on a thread of its own, so
//! peers never take a client worker's time.

pub mod config;
pub mod protocol;
pub mod replication;
pub mod server;
pub mod store;
#[cfg(test)]
mod testing;

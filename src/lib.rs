//! repcached: a memcached-compatible, replicated in-memory cache.
//!
//! ```text
//!  main ── config (flags, TOML) ──► server::run
//!                                     │
//!        listeners ─► one task per connection ─► protocol (bytes ⇄ Request)
//!                                     │                 │
//!                                     └─► dispatch ─► store (shards, memory, expiry, versions)
//!                                                        │
//!                                             mutation observers ─► replication
//! ```
//!
//! Tasks: a tokio runtime with `-t` worker threads runs one task per client connection; a
//! clock-driven reclaimer drops expired items; shutdown is a watch channel every task
//! selects on. The store is shared by handle and locks one shard per operation.

pub mod config;
pub mod protocol;
pub mod server;
pub mod store;

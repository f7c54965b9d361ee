//! Replication between repcached nodes.
//!
//! Peers exchange length-prefixed frames ([`wire`]) over TCP. A link opens with a handshake
//! ([`handshake`]): each side sends a Hello (protocol version, cluster name, node id, run id,
//! a fresh nonce), checks the other's, then sends an HMAC proof that it knows the shared
//! secret, bound to both nonces so the secret never crosses the wire and a proof is good for
//! one link and one direction only. Then each side streams its changes as store records
//! ([`crate::store::Record`], sent as the bytes the store already encoded), after a full
//! snapshot when the peer is new or restarted.
//! In a mesh, a change reaches a peer through a third node only while the peer does not hear
//! its writer ([`relay`]).
//!
//! Replies do not wait for peers unless acknowledged writes are on (`--repl-ack-peers`):
//! then a connection holds a write's reply until enough caught-up peers have acknowledged
//! a Mark whose feed position covers the feed's head at that moment
//! ([`node::Replication::wait_acked`]); marks and acks then go at once, not gathered.
//!
//! Expiry is in each process's relative seconds, so a batch carries the sender's current
//! second and the receiver turns every exptime into the same remaining lifetime on its own
//! clock ([`expiry`]); no wall-clock agreement is needed.
//!
//! The handshake authenticates who opens a link; frames after it are neither encrypted nor
//! signed, so links belong on a trusted network or inside a tunnel.

pub mod expiry;
pub mod handshake;
pub mod idle;
pub mod link;
pub mod node;
pub mod pause;
pub mod relay;
pub mod warmup;
pub mod wire;

pub use node::Replication;

//! The handshake's pure parts: checking a peer's Hello, and proving knowledge of the shared
//! secret without sending it.
//!
//! Each side sends a Hello with a fresh nonce, then a proof: an HMAC of both nonces, its own
//! node id and the cluster name, keyed by the secret. A fresh nonce from the verifier makes
//! a recorded proof useless on a later link, and the order of the nonces plus the prover's
//! node id make a proof useless in the other direction, so a peer cannot pass by sending
//! back the proof it was given.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::wire::PROTOCOL_VERSION;
use crate::store::NodeId;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: a MAC made for anything else with the same secret is not a proof.
const LABEL: &[u8] = b"repcached replication v1 proof";

/// What this node says of itself in its Hello.
#[derive(Clone)]
pub struct Local {
    pub cluster: String,
    pub node: NodeId,
    pub run: u64,
    pub secret: Option<Vec<u8>>,
}

/// Leaves the secret out, so logging a `Local` cannot leak it.
impl fmt::Debug for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Local")
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .field("run", &self.run)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A fresh nonce for one link's Hello.
pub fn new_nonce() -> [u8; 16] {
    let mut n = [0; 16];
    fill_random(&mut n);
    n
}

/// Identifies one process lifetime, so a peer can tell a restart (full resync) from a
/// reconnect (partial).
pub fn new_run_id() -> u64 {
    let mut b = [0; 8];
    fill_random(&mut b);
    u64::from_le_bytes(b)
}

/// Fills `out` (at most 32 bytes) from the OS. Should that fail, it falls back to a hash of
/// the time, a process-wide counter and the process id: unique per call, which is what
/// nonces and run ids need against replay and mistaken identity, though no longer
/// unpredictable.
fn fill_random(out: &mut [u8]) {
    if getrandom::getrandom(out).is_ok() {
        return;
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let digest = Sha256::new()
        .chain_update(nanos.to_le_bytes())
        .chain_update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes())
        .chain_update(std::process::id().to_le_bytes())
        .finalize();
    for (o, d) in out.iter_mut().zip(digest) {
        *o = d;
    }
}

/// Checks a peer's Hello against ours; the error is a reason to send in a Refuse and to log,
/// saying what to change.
pub fn check_hello(local: &Local, version: u16, cluster: &str, node: NodeId) -> Result<(), String> {
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "peer speaks replication protocol v{version}, this node v{PROTOCOL_VERSION}: \
             run the same repcached release on both nodes"
        ));
    }
    if cluster != local.cluster {
        return Err(format!(
            "peer belongs to cluster {cluster:?}, this node to {:?}: \
             give both nodes the same --cluster",
            local.cluster
        ));
    }
    if node == local.node {
        return Err(format!(
            "peer has node id {}, the same as this node: give each node a distinct --node-id",
            node.0
        ));
    }
    Ok(())
}

/// The proof this node sends: HMAC-SHA256 keyed by the secret over a fixed label, the peer's
/// nonce, our nonce, our node id and the cluster name, binding it to this link and this
/// direction. All zeros when no secret is set.
pub fn proof(local: &Local, peer_nonce: &[u8; 16], my_nonce: &[u8; 16]) -> [u8; 32] {
    match &local.secret {
        Some(secret) => keyed(secret, peer_nonce, my_nonce, local.node, &local.cluster)
            .finalize()
            .into_bytes()
            .into(),
        None => [0; 32],
    }
}

/// Verifies the peer's proof (made by the peer with its node id, our nonce as its peer
/// nonce, and its nonce), in constant time. The errors say which side lacks the secret, or
/// that the secrets differ.
pub fn verify(
    local: &Local,
    peer_node: NodeId,
    peer_nonce: &[u8; 16],
    my_nonce: &[u8; 16],
    mac: &[u8; 32],
) -> Result<(), String> {
    let zero = mac == &[0; 32];
    match &local.secret {
        None if zero => Ok(()),
        None => Err("peer has a replication secret and this node has none: \
                     give both nodes the same --repl-secret-file"
            .into()),
        Some(_) if zero => Err("peer has no replication secret and this node has one: \
                                give both nodes the same --repl-secret-file"
            .into()),
        Some(secret) => keyed(secret, my_nonce, peer_nonce, peer_node, &local.cluster)
            .verify_slice(mac)
            .map_err(|_| "wrong replication secret: check --repl-secret-file on both nodes".into()),
    }
}

/// The MAC state over one direction's proof input.
fn keyed(
    secret: &[u8],
    verifier_nonce: &[u8; 16],
    prover_nonce: &[u8; 16],
    prover: NodeId,
    cluster: &str,
) -> HmacSha256 {
    // HMAC takes a key of any length; only other MACs can refuse one.
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(LABEL);
    m.update(verifier_nonce);
    m.update(prover_nonce);
    m.update(&prover.0.to_le_bytes());
    m.update(cluster.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(node: u16, secret: Option<&[u8]>) -> Local {
        Local {
            cluster: "main".into(),
            node: NodeId(node),
            run: new_run_id(),
            secret: secret.map(<[u8]>::to_vec),
        }
    }

    /// Both sides' proofs over one link, each verified by the other side.
    fn link(a: &Local, b: &Local) -> (Result<(), String>, Result<(), String>) {
        let (na, nb) = (new_nonce(), new_nonce());
        let pa = proof(a, &nb, &na);
        let pb = proof(b, &na, &nb);
        (
            verify(a, b.node, &nb, &na, &pb),
            verify(b, a.node, &na, &nb, &pa),
        )
    }

    #[test]
    fn same_secret_verifies_both_ways() {
        let (a, b) = (local(1, Some(b"s3cret")), local(2, Some(b"s3cret")));
        assert_eq!(link(&a, &b), (Ok(()), Ok(())));
        assert_ne!(proof(&a, &[0; 16], &[1; 16]), [0; 32]);
    }

    #[test]
    fn no_secret_on_either_side_passes() {
        let (a, b) = (local(1, None), local(2, None));
        assert_eq!(proof(&a, &[0; 16], &[1; 16]), [0; 32]);
        assert_eq!(link(&a, &b), (Ok(()), Ok(())));
    }

    #[test]
    fn wrong_secret_fails() {
        let (a, b) = (local(1, Some(b"one")), local(2, Some(b"two")));
        let (ra, rb) = link(&a, &b);
        for r in [ra, rb] {
            assert!(r.unwrap_err().contains("wrong replication secret"));
        }
    }

    #[test]
    fn secret_on_one_side_fails_on_both() {
        let (a, b) = (local(1, Some(b"s")), local(2, None));
        let (at_a, at_b) = link(&a, &b);
        assert!(at_a
            .unwrap_err()
            .starts_with("peer has no replication secret"));
        assert!(at_b
            .unwrap_err()
            .starts_with("peer has a replication secret"));
    }

    #[test]
    fn reflected_or_replayed_proofs_fail() {
        let (a, b) = (local(1, Some(b"s")), local(2, Some(b"s")));
        let (na, nb) = (new_nonce(), new_nonce());
        assert_ne!(na, nb);
        let pb = proof(&b, &na, &nb);
        // B's own proof sent back to it as A's.
        assert!(verify(&b, a.node, &na, &nb, &pb).is_err());
        // A's proof from this link, replayed on a link where B chose another nonce.
        let pa = proof(&a, &nb, &na);
        assert!(verify(&b, a.node, &na, &nb, &pa).is_ok());
        assert!(verify(&b, a.node, &na, &new_nonce(), &pa).is_err());
        // Or claimed by a node other than the one that made it.
        assert!(verify(&b, NodeId(3), &na, &nb, &pa).is_err());
    }

    #[test]
    fn check_hello_refuses_with_reasons() {
        let me = local(1, None);
        assert_eq!(
            check_hello(&me, PROTOCOL_VERSION, "main", NodeId(2)),
            Ok(())
        );
        let other = PROTOCOL_VERSION + 1;
        let v = check_hello(&me, other, "main", NodeId(2)).unwrap_err();
        assert!(
            v.contains(&format!("v{other}")) && v.contains(&format!("v{PROTOCOL_VERSION}")),
            "{v}"
        );
        let c = check_hello(&me, PROTOCOL_VERSION, "other", NodeId(2)).unwrap_err();
        assert!(c.contains("\"other\"") && c.contains("\"main\"") && c.contains("--cluster"));
        let n = check_hello(&me, PROTOCOL_VERSION, "main", NodeId(1)).unwrap_err();
        assert!(n.contains("--node-id"), "{n}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = format!("{:?}", local(1, Some(b"hunter2")));
        // Neither as text nor as the bytes' numbers ('h' 'u' are 104 117).
        assert!(!s.contains("hunter2") && !s.contains("104, 117"), "{s}");
    }

    #[test]
    fn nonces_and_run_ids_differ() {
        assert_ne!(new_nonce(), new_nonce());
        assert_ne!(new_run_id(), new_run_id());
    }
}

//! Two replicating nodes whose links pass through fault-injecting proxies.

use std::net::SocketAddr;
use std::time::Duration;

use super::node::{args, get, Node};
use super::proxy::{Mode, Proxy};
use super::{eventually, free_port};

/// Two nodes that reach each other only through fault-injecting proxies, one per
/// direction: `a` dials `b` through `ab`, `b` dials `a` through `ba`.
pub struct ProxiedPair {
    pub a: Node,
    pub b: Node,
    pub ab: Proxy,
    pub ba: Proxy,
}

impl ProxiedPair {
    /// Nodes on 127.0.0.`first` and `first + 1`, the proxies on `first + 2` (to `b`) and
    /// `first + 3` (to `a`); links dropped after a second of silence.
    pub fn start(first: u8) -> ProxiedPair {
        ProxiedPair::start_with(first, &[])
    }

    /// As [`ProxiedPair::start`], with more arguments for both nodes.
    pub fn start_with(first: u8, extra: &[&str]) -> ProxiedPair {
        ProxiedPair::start_in([127, 0, 0, first], "64", extra)
    }

    /// As [`ProxiedPair::start_with`], the first node on `first` (the others on the next
    /// three addresses), both with `-m mb`.
    pub fn start_in(first: [u8; 4], mb: &str, extra: &[&str]) -> ProxiedPair {
        let [a, b, c, d] = first;
        let ip = |i: u8| [a, b, c, d + i];
        let port = free_port();
        let (ra, rb) = (
            SocketAddr::from((ip(0), free_port())),
            SocketAddr::from((ip(1), free_port())),
        );
        let ab = Proxy::start(SocketAddr::from((ip(2), 0)), rb);
        let ba = Proxy::start(SocketAddr::from((ip(3), 0)), ra);
        let node = |listen: SocketAddr, peer: SocketAddr| {
            let (listen, peer) = (listen.to_string(), peer.to_string());
            args(
                &[
                    "-m",
                    mb,
                    "--repl-listen",
                    &listen,
                    "--peer",
                    &peer,
                    "--repl-timeout",
                    "1",
                ]
                .into_iter()
                .chain(extra.iter().copied())
                .collect::<Vec<_>>(),
            )
        };
        let a = Node::start(ip(0), port, &node(ra, ab.addr()));
        let b = Node::start(ip(1), port, &node(rb, ba.addr()));
        let pair = ProxiedPair { a, b, ab, ba };
        // Generous: under the whole suite's load a first dial may fail and back off.
        assert!(pair.linked(Duration::from_secs(10)), "the pair links up");
        pair
    }

    /// Both proxies at once: the link kept may be either node's dial.
    pub fn set_mode(&self, mode: Mode) {
        self.ab.set_mode(mode);
        self.ba.set_mode(mode);
    }

    pub fn cut(&self) {
        self.ab.cut();
        self.ba.cut();
    }

    /// Waits until both nodes count `n` peers connected.
    pub fn connected(&self, n: usize, limit: Duration) -> bool {
        let want = n.to_string();
        let (mut ca, mut cb) = (self.a.client(), self.b.client());
        eventually(limit, || {
            ca.stat("replication_peers_connected") == want
                && cb.stat("replication_peers_connected") == want
        })
    }

    pub fn linked(&self, limit: Duration) -> bool {
        self.connected(1, limit)
    }

    /// Asserts that `k0..k{n}` (each set on `a` to `v` and its number) reached `b`.
    pub fn assert_all_arrived(&self, n: usize) {
        let mut cb = self.b.client();
        let mut missing = Vec::new();
        let all = eventually(Duration::from_secs(5), || {
            missing = (0..n)
                .filter(|i| get(&mut cb, &format!("k{i}")) != Some(format!("v{i:03}")))
                .collect();
            missing.is_empty()
        });
        assert!(all, "never reached the other node: {missing:?}");
    }

    /// Cuts the link both ways and refuses new ones until [`ProxiedPair::heal`].
    pub fn partition(&self) {
        self.set_mode(Mode::Refuse);
        self.cut();
        assert!(self.connected(0, Duration::from_secs(5)), "the link drops");
    }

    pub fn heal(&self) {
        self.set_mode(Mode::Pass);
        assert!(self.linked(Duration::from_secs(5)), "the pair links again");
    }
}

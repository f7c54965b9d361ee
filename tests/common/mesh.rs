//! A full mesh of replicating nodes whose every link passes through fault-injecting proxies.

use std::net::SocketAddr;
use std::time::Duration;

use super::node::{args, Node};
use super::proxy::{Mode, Proxy};
use super::{eventually, free_port};

/// `n` nodes on `base.1`, `base.2`, ...; node `i` dials node `j` through `proxies[i][j]`,
/// on `base.(10 + n * i + j)`. Links dropped after a second of silence.
pub struct ProxiedMesh {
    pub nodes: Vec<Node>,
    pub proxies: Vec<Vec<Option<Proxy>>>,
}

impl ProxiedMesh {
    pub fn start(base: [u8; 3], n: usize, extra: &[&str]) -> ProxiedMesh {
        let ip = |last: usize| {
            let last = u8::try_from(last).expect("a loopback address");
            [base[0], base[1], base[2], last]
        };
        let listen: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from((ip(i + 1), free_port())))
            .collect();
        let proxies: Vec<Vec<Option<Proxy>>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        (i != j).then(|| {
                            Proxy::start(SocketAddr::from((ip(10 + n * i + j), 0)), listen[j])
                        })
                    })
                    .collect()
            })
            .collect();
        let port = free_port();
        let nodes = (0..n)
            .map(|i| {
                let me = listen[i].to_string();
                let mut a = args(&["-m", "64", "--repl-listen", &me, "--repl-timeout", "1"]);
                for p in proxies[i].iter().flatten() {
                    a.extend(args(&["--peer", &p.addr().to_string()]));
                }
                a.extend(args(extra));
                Node::start(ip(i + 1), port, &a)
            })
            .collect();
        let mesh = ProxiedMesh { nodes, proxies };
        assert!(mesh.connected(Duration::from_secs(10)), "the mesh links up");
        mesh
    }

    /// The two proxies between nodes `i` and `j` (the link kept may be either one's dial).
    pub fn link(&self, i: usize, j: usize) -> [&Proxy; 2] {
        let p = |a: usize, b: usize| self.proxies[a][b].as_ref().expect("a link");
        [p(i, j), p(j, i)]
    }

    pub fn set_mode(&self, i: usize, j: usize, mode: Mode) {
        for p in self.link(i, j) {
            p.set_mode(mode);
        }
    }

    pub fn cut(&self, i: usize, j: usize) {
        for p in self.link(i, j) {
            p.cut();
        }
    }

    /// Waits until each node counts every other connected.
    pub fn connected(&self, limit: Duration) -> bool {
        self.each_connected(self.nodes.len() - 1, limit)
    }

    /// Waits until each node counts `n` peers connected.
    pub fn each_connected(&self, n: usize, limit: Duration) -> bool {
        let want = n.to_string();
        let mut clients: Vec<_> = self.nodes.iter().map(Node::client).collect();
        eventually(limit, || {
            clients
                .iter_mut()
                .all(|c| c.stat("replication_peers_connected") == want)
        })
    }
}

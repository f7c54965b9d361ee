"""pymemcache's HashClient over a replicating pair, configured as the README advises.

Usage: python3 pymemcache_failover.py HOST:PORT,HOST:PORT write|read N
write: sets key0..key{N-1} (each lands on one node, which copies it to the other).
read:  reads them back and prints "misses: M", where a node is down: the first call that
       finds it down answers a miss (ignore_exc) and drops it, every later one goes to the
       node that is up, which holds the copy.
"""
import sys

from pymemcache.client.hash import HashClient

servers = [tuple(s.rsplit(":", 1)) for s in sys.argv[1].split(",")]
servers = [(h, int(p)) for h, p in servers]
mode, n = sys.argv[2], int(sys.argv[3])
client = HashClient(
    servers,
    connect_timeout=1,
    timeout=1,
    retry_attempts=0,
    dead_timeout=30,
    ignore_exc=True,
)
if mode == "write":
    for i in range(n):
        assert client.set(f"key{i}", f"value{i}", noreply=False), f"key{i} not stored"
    print("written:", n)
else:
    misses = sum(client.get(f"key{i}") != f"value{i}".encode() for i in range(n))
    print("misses:", misses)

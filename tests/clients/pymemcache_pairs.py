"""pymemcache's HashClient over one endpoint per replicated pair (scaling out).

Usage: python3 pymemcache_pairs.py HOST:PORT,HOST:PORT
Each endpoint is a TCP failover inside one pair (nginx stream: the first node, the second
as backup), so a node's death shows up here as a connection closed once, never as an
endpoint that is down: HashClient keeps every endpoint on its ring and no key moves to
another pair.

Reads commands from stdin, one a line, and answers each with one line:
  write PREFIX N   sets PREFIX0..PREFIX{N-1}, waiting for each reply
  read PREFIX N    reads them back
  quit
Answer: "ok ops=O retried=R misses=M failed=F": a request that raised (its connection was
cut) is retried once, after 50 ms, and counted in R; one that raised again is counted in F;
a read that found nothing or another value is counted in M.
"""
import sys
import time

from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheError

servers = [tuple(s.rsplit(":", 1)) for s in sys.argv[1].split(",")]
servers = [(h, int(p)) for h, p in servers]
client = HashClient(servers, connect_timeout=1, timeout=2, ignore_exc=False)


def once_more(call):
    """(result, retried, failed): call, and call again once, after a pause, if it raised."""
    try:
        return call(), 0, 0
    except (MemcacheError, OSError):
        time.sleep(0.05)
    try:
        return call(), 1, 0
    except (MemcacheError, OSError):
        return None, 1, 1


for line in sys.stdin:
    words = line.split()
    if not words or words[0] == "quit":
        break
    cmd, prefix, n = words[0], words[1], int(words[2])
    retried = misses = failed = 0
    for i in range(n):
        key, want = f"{prefix}{i}", f"{prefix}{i}-value"
        if cmd == "write":
            ok, r, f = once_more(lambda: client.set(key, want, noreply=False))
            failed += 1 if f or not ok else 0
        else:
            got, r, f = once_more(lambda: client.get(key))
            failed += f
            misses += not f and got != want.encode()
        retried += r
    print(f"ok ops={n} retried={retried} misses={misses} failed={failed}", flush=True)

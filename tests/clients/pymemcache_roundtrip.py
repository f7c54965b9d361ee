"""Round trip of every command pymemcache's Client offers, against a server on 127.0.0.1.

Usage: python3 pymemcache_roundtrip.py PORT
Exits non-zero (via assert) on the first mismatch.
"""
import sys

from pymemcache.client.base import Client

port = int(sys.argv[1])
c = Client(("127.0.0.1", port), connect_timeout=5, timeout=5)

assert c.version().startswith(b"1.6"), c.version()
assert c.flush_all() is True

# Storage.
assert c.set("a", b"1") is True
assert c.get("a") == b"1"
assert c.set("noreply", b"x", noreply=True) is True
assert c.get("noreply") == b"x"
assert c.add("a", b"2", noreply=False) is False
assert c.add("b", b"2", noreply=False) is True
assert c.replace("a", b"3", noreply=False) is True
assert c.replace("zz", b"3", noreply=False) is False
assert c.append("a", b"4", noreply=False) is True
assert c.prepend("a", b"0", noreply=False) is True
assert c.get("a") == b"034"
assert c.set_many({"m1": b"v1", "m2": b"v2"}, noreply=False) == []
assert c.set_multi({"m3": b"v3"}, noreply=False) == []

# Retrieval.
assert c.get_many(["m1", "m2", "m3", "nokey"]) == {"m1": b"v1", "m2": b"v2", "m3": b"v3"}
assert c.get_multi(["m1"]) == {"m1": b"v1"}
assert c.get("nokey") is None
assert c.get("nokey", default=b"d") == b"d"
value, cas = c.gets("a")
assert value == b"034" and int(cas) > 0
many = c.gets_many(["a", "b"])
assert many["a"][0] == b"034" and many["b"][0] == b"2"

# CAS.
assert c.cas("a", b"new", cas, noreply=False) is True
assert c.cas("a", b"newer", cas, noreply=False) is False
assert c.cas("nokey", b"x", b"1", noreply=False) is None
assert c.get("a") == b"new"

# Arithmetic.
assert c.set("n", b"10") is True
assert c.incr("n", 5, noreply=False) == 15
assert c.decr("n", 20, noreply=False) == 0
assert c.incr("nokey", 1, noreply=False) is None
assert c.decr("nokey", 1, noreply=False) is None

# Touch and expiry.
assert c.touch("a", 100, noreply=False) is True
assert c.touch("nokey", 100, noreply=False) is False

# Delete.
assert c.delete("b", noreply=False) is True
assert c.delete("b", noreply=False) is False
assert c.delete_many(["m1", "m2"], noreply=False) is True
assert c.delete_multi(["m3"], noreply=False) is True
assert c.get_many(["m1", "m2", "m3"]) == {}

# Binary-safe values and a large one.
blob = bytes(range(256)) * 4000
assert c.set("blob", blob) is True
assert c.get("blob") == blob

# Admin.
stats = c.stats()
assert stats[b"cmd_set"] >= 10, stats
assert b"curr_items" in stats
settings = c.stats("settings")
assert settings[b"maxconns"] > 0
assert c.cache_memlimit(100) is True
# raw_command returns what precedes the end marker.
assert c.raw_command("mn", "MN\r\n") == b""
assert c.raw_command("mg a s", "\r\n") == b"HD s3"
assert c.flush_all(noreply=False) is True
assert c.get("a") is None
c.quit()
c.close()
print("pymemcache round trip: ok")

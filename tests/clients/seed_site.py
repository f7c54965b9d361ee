"""Drives examples/seed-site through nginx as users with browsers would: each user keeps its
cookies, logs in once, then attaches files to a draft and views it, over and over, until
CONTROL_DIR/stop appears. CONTROL_DIR/phase names what the test is doing to the site; every
answer is filed under the phase it was asked in.

A request failed when it did not get a 200; a session was lost when an answer shows another
user (or none), or a draft other than what this user attached. The site's cache nodes answer
a write once the other node holds it (acknowledged writes); started without them, a change
a cache node answered in the moment before it was killed may not have reached the other
node (the README's guarantees say so). A draft missing only attachments answered
from CRASH_WINDOW before a kill the site noted (CONTROL_DIR/events.log) to ANSWER_LATE after
it is counted apart, as lost in the crash window, not as lost. Prints one JSON object.

usage: seed_site.py BASE_URL CONTROL_DIR USERS
"""

import http.cookiejar
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

BASE, CONTROL, USERS = sys.argv[1], sys.argv[2], int(sys.argv[3])
# A user's pause between clicks. Without acknowledged writes, a write reaches the other
# node about a millisecond later, and a user's next request comes later than that.
THINK = 0.05
# How long before a kill an answered change may still be on its way to the other node: the
# replication lag, generously (a loaded 2-core machine can keep a sender waiting for a core).
CRASH_WINDOW = 0.25
# The site notes a kill just before it sends SIGKILL, and a request whose write the dying
# node took may answer after that: its session save fails over to the other node first.
ANSWER_LATE = 1.0


def phase():
    try:
        with open(os.path.join(CONTROL, "phase")) as f:
            return f.read().strip()
    except OSError:
        return "start"


def kill_times():
    """When the site killed cache nodes (seconds since the epoch)."""
    try:
        with open(os.path.join(CONTROL, "events.log")) as f:
            lines = f.read().split("\n")
    except OSError:
        return []
    return [int(l.split()[0]) / 1000 for l in lines if " kill-cache " in l]


def stopped():
    # The test's folder gone means the test is over (it failed before saying stop).
    return not os.path.isdir(CONTROL) or os.path.exists(os.path.join(CONTROL, "stop"))


class User:
    def __init__(self, name):
        self.name = name
        # Loopback only, never through a proxy from the environment.
        self.http = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        )
        self.files = []
        self.answered = {}  # attached file -> when its answer arrived
        self.requests = self.failed = self.lost = self.crash_window = 0
        self.nodes = {}  # phase -> {node: count}
        self.problems = []

    def get(self, path):
        """One request: the JSON answer, or None when it failed."""
        at = phase()
        self.requests += 1
        try:
            with self.http.open(BASE + path, timeout=20) as r:
                body = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as e:
            self.failed += 1
            self.problems.append(f"{at} {path}: {e}")
            return None
        # A request the test changed the site under (the phase moved on while it ran) is
        # filed under both phases: nginx may have chosen its node after the change.
        end = phase()
        per_phase = self.nodes.setdefault(at if end == at else f"{at}..{end}", {})
        per_phase[body["node"]] = per_phase.get(body["node"], 0) + 1
        return body

    def in_crash_window(self, missing):
        """Whether every missing attachment was answered just before a kill."""
        kills = kill_times()
        return bool(missing) and all(
            any(-ANSWER_LATE <= k - self.answered.get(f, 0) <= CRASH_WINDOW for k in kills)
            for f in missing
        )

    def check(self, path, body, want_files):
        files = body.get("files", want_files)
        missing = [f for f in want_files if f not in files]
        if body["user"] == self.name and files == [f for f in want_files if f in files]:
            if self.in_crash_window(missing):
                self.crash_window += 1
                self.problems.append(f"{phase()} {path} at {body['node']}: lost in the crash window {missing}")
                self.files = files
                return
        if body["user"] != self.name or files != want_files:
            self.lost += 1
            self.problems.append(
                f"{phase()} {path} at {body['node']}: want {self.name} with {len(want_files)} files"
                f" (last {want_files[-1:]}), got {body['user']} with {len(files)} (last {files[-1:]})"
            )
            self.files = files or self.files

    def run(self):
        if self.get(f"/login?user={self.name}") is None:
            return
        time.sleep(THINK)
        n = 0
        while not stopped():
            n += 1
            path = f"/attach?file={self.name}-{n}.pdf"
            body = self.get(path)
            if body is not None:
                self.files.append(f"{self.name}-{n}.pdf")
                self.answered[self.files[-1]] = time.time()
                self.check(path, body, self.files)
            time.sleep(THINK)
            body = self.get("/view")
            if body is not None:
                self.check("/view", body, self.files)
            time.sleep(THINK)


def alternation():
    """One user alone: nginx sends its requests to node1 and node2 in turn."""
    user = User("solo")
    user.get("/login?user=solo")
    nodes = [user.get("/view")["node"] for _ in range(6)]
    return nodes


def main():
    solo = alternation()
    users = [User(f"user{i}") for i in range(USERS)]
    threads = [threading.Thread(target=u.run) for u in users]
    for t in threads:
        t.start()
    # Tells the test the users are under way: "steady" is timed from here.
    open(os.path.join(CONTROL, "ready"), "w").close()
    for t in threads:
        t.join()
    nodes = {}
    for u in users:
        for at, counts in u.nodes.items():
            for node, count in counts.items():
                nodes.setdefault(at, {}).setdefault(node, 0)
                nodes[at][node] += count
    summary = {
        "requests": sum(u.requests for u in users),
        "failed": sum(u.failed for u in users),
        "lost": sum(u.lost for u in users),
        "lost_in_crash_window": sum(u.crash_window for u in users),
        "solo": solo,
        "nodes": nodes,
        "users_nodes_at_start": [sorted(u.nodes.get("steady", {})) for u in users],
        "problems": [p for u in users for p in u.problems][:20],
    }
    print(json.dumps(summary))


main()

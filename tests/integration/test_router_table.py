#!/usr/bin/env python3
"""hermod-router and a routing table file that goes bad under it (issue 9; CONTRACT.md: "A
truncated or corrupt file never crashes the router master; workers keep the last good
mapping").

Before issue 9, `truncate -s 4096` of the live table killed master and workers with SIGBUS: the
workers on their next read of the mapping, the master when it reaped a worker (it read the table
to take back the dead worker's in-flight counts). Now the master never maps the table (the
workers publish what /metrics needs, and a live worker returns a dead one's counts), and a
worker whose mapping faults replaces it with zero pages, answers 503 H99, counts it in
hermod_table_faults_total, and maps the file again once it is valid.

The table is written with hm-tablectl here (the direct backend): an edge would itself fault on
a file truncated under it, which is not what these tests are about.
"""

import json
import os
import signal
import subprocess
import threading
import time

import hermod_test as hm
from hermod_test import T, check, eq

HOST = "app.test"


def peek(env):
    """What hm-tablepeek sees at the table path (None: no valid table)."""
    p = subprocess.run([hm.binary("hm-tablepeek"), env.table], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=T(10))
    return json.loads(p.stdout) if p.returncode == 0 else None


class Load:
    """Threads sending requests on keep-alive connections until stopped; statuses counted."""

    def __init__(self, router, threads=4, target="/hello"):
        self.router, self.target = router, target
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.statuses = {}
        self.errors = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                with hm.Conn(self.router.port, timeout=T(10)) as c:
                    while not self.stop_ev.is_set():
                        r = c.request("GET", self.target, HOST, timeout=T(10))
                        with self.lock:
                            self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                        if r.closed or (r.header("connection") or "").lower() == "close":
                            break
            except Exception as e:  # noqa: BLE001
                with self.lock:
                    self.errors.append(repr(e))
                time.sleep(0.01)

    def count(self, status):
        with self.lock:
            return self.statuses.get(status, 0)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(T(15))


def hold(router, d, n):
    """n requests in flight at a dyno that never answers (each counted in the table)."""
    held = []
    for i in range(n):
        c = hm.Conn(router.port)
        c.send(hm.request_bytes("GET", "/never/%d" % i, HOST))
        held.append(c)
    hm.wait_for(lambda: len(d.requests()) >= n, T(5), "%d requests in flight at the dyno" % n)
    return held


def setup(env, workers=2):
    d = env.dyno("web.1")
    env.routing("direct").app("app", [HOST], [(d.name, d.addr)])
    return env.router(metrics=True, workers=workers), d


@hm.timeout(90)
def test_table_truncated_under_load(env):
    router, d = setup(env)
    master_workers = router.wait_workers()
    load = Load(router)
    try:
        hm.wait_for(lambda: load.count(200) >= 50, T(10), "requests served before")
        with open(env.table, "rb") as f:
            saved = f.read()
        since = router.mark()
        os.truncate(env.table, 4096)
        hm.wait_for(lambda: (router.metric("hermod_table_faults_total") or 0) >= 2, T(10),
                    "both workers to find the table truncated")
        base503 = load.count(503)
        hm.wait_for(lambda: load.count(503) >= base503 + 20, T(10),
                    "requests answered 503 while the table is bad")
        ll = router.wait_log(since, status="503")
        eq(ll.get("code"), "H99", "code= while the table is bad (%s)" % ll.raw)
        check(router.alive(), "the master died")
        eq(sorted(router.workers()), sorted(master_workers), "workers (none may have died)")
        eq(router.metric("hermod_worker_restarts_total"), 0.0, "worker restarts")
        hm.wait_for(lambda: router.metric("hermod_table_present") == 0.0, T(5),
                    "hermod_table_present to fall to 0 while the table is bad")
        check("truncated in place" in router.stderr(), "the workers did not log the fault")
        # The same file written back in place: both workers map it again.
        with open(env.table, "r+b") as f:
            f.write(saved)
        base200 = load.count(200)
        hm.wait_for(lambda: load.count(200) >= base200 + 50, T(10),
                    "requests served again once the file is valid")
        hm.wait_for(lambda: router.metric("hermod_table_present") == 1.0, T(5),
                    "hermod_table_present to come back")
    finally:
        load.stop()
    eq(sorted(set(load.statuses)), [200, 503], "statuses seen by the load")
    eq(load.errors, [], "connection errors seen by the load")
    eq(sorted(router.workers()), sorted(master_workers), "workers at the end")


@hm.timeout(60)
def test_worker_killed_while_the_table_is_truncated(env):
    """The master reaps a worker that had requests in flight while the file is truncated: it
    must not touch the table (it used to, and died of SIGBUS)."""
    router, d = setup(env, workers=1)
    held = hold(router, d, 3)
    eq(peek(env)["inflight"], 3, "in-flight counts in the table")
    old = router.wait_workers()[0]
    os.truncate(env.table, 4096)
    os.kill(old, signal.SIGKILL)
    hm.wait_for(lambda: router.workers() and router.workers() != [old], T(5),
                "a new worker")
    check(router.alive(), "the master died reaping a worker")
    r = hm.http_get(router.port, "/hello", HOST)
    eq(r.status, 503, "status while the table is truncated")
    for c in held:
        c.close()


@hm.timeout(60)
def test_killed_workers_in_flight_counts_returned_by_a_live_worker(env):
    router, d = setup(env, workers=2)
    held = hold(router, d, 6)
    eq(peek(env)["inflight"], 6, "in-flight counts in the table")
    for w in router.wait_workers():
        os.kill(w, signal.SIGKILL)
    hm.wait_for(lambda: len(router.workers()) == 2, T(5), "two new workers")
    hm.wait_for(lambda: peek(env)["inflight"] == 0, T(5),
                "the dead workers' in-flight counts to be returned")
    eq(hm.http_get(router.port, "/hello", HOST).status, 200, "serving on")
    for c in held:
        c.close()


def test_corrupt_file_replacing_the_table_keeps_the_last_good_map(env):
    router, d = setup(env, workers=1)
    eq(hm.http_get(router.port, "/hello", HOST).status, 200, "before")
    junk = env.path("junk")
    with open(junk, "wb") as f:
        f.write(b"\0" * 4096 + b"not a table" * 1000)
    os.rename(junk, env.table)
    # Past two of the workers' periodic checks of the path.
    time.sleep(2.5)
    for i in range(10):
        eq(hm.http_get(router.port, "/hello", HOST).status, 200, "request %d after" % i)
    eq(router.metric("hermod_table_faults_total"), 0.0, "faults")


if __name__ == "__main__":
    hm.run(globals())

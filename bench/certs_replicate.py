#!/usr/bin/env python3
"""100,000 certificates through the real origin, edge and hermodctl (issue 11). Never run as a
test: it measures, for docs/tls.md. Needs a build with test hooks (the default).

One wildcard certificate (ECDSA P-256, `*.bench.example`) is put under N host names
`hN.bench.example` (every put is a full certcheck on the origin: PEM, chain, key, SANs), in
batch files of --batch puts each. Measured:
  * put: wall time of the `hermodctl apply` runs (the origin's checks on its thread pool of
    --threads threads, journal, publish), and the time until a live edge has all of them (its
    status digest equals the origin's);
  * join: a new edge that loads everything from a snapshot (chunks of the usual 1 MiB bounds)
    until it is live with the origin's digest, from a snapshot that says its certificate count
    (SNAPSHOT_REP version 4) and from one written as before (version 3, HM_TEST_SNAP_VERSION=3:
    the edge grows its store by loading again); --joins of each, alternating;
  * the store file's size on the edge, and the origin's and the edge's RSS.

  HERMOD_BUILD=build python3 bench/certs_replicate.py [--n 100000] [--batch 1000] [--threads 4]
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))

import hermod_test as ht  # noqa: E402
from pki import PKI  # noqa: E402
from syncd_util import Edge, Origin, wait_converged  # noqa: E402


def put(o, names, chain, key):
    changes = [{"op": "cert.put", "name": n, "cert": chain, "key": key} for n in names]
    r = o.ctl("--json", "--reply-timeout", "1h", "apply", "-",
              input=json.dumps({"changes": changes}).encode(), timeout=3600)
    if r.rc != 0:
        raise SystemExit("apply failed: %r" % r)


def snapshot_now(o, chain, key, tag):
    """One more put, so that the origin (--compact-after 1) writes a snapshot of everything."""
    put(o, ["snap-%s.bench.example" % tag], chain, key)
    seq = o.status()["seq"]
    ht.wait_for(lambda: o.status()["snapshot_seq"] == seq, 3600, "a snapshot at %d" % seq, 0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--joins", type=int, default=2)
    a = ap.parse_args()
    env = ht.Env("certs-bench")
    try:
        p = PKI(env.path("pki"))
        ca = p.ca("ca")
        leaf = p.leaf("wild", ca, "serverAuth", ["*.bench.example"])
        chain = open(leaf.crt).read() + open(ca.crt).read()
        key = open(leaf.key).read()
        pool = {"UV_THREADPOOL_SIZE": str(a.threads)}
        o = Origin(env, extra=["--compact-after", "64MiB"], proc_env=pool)
        e = Edge(env, o)
        t0 = time.monotonic()
        for start in range(0, a.n, a.batch):
            put(o, ["h%d.bench.example" % i for i in range(start, min(a.n, start + a.batch))],
                chain, key)
        t_put = time.monotonic() - t0
        wait_converged(o, [e], 3600, "the edge to hold every certificate")
        t_edge = time.monotonic() - t0
        st = e.status()
        store = st["cert_store"]
        out = {
            "certs": a.n, "batch": a.batch, "threads": a.threads,
            "put_s": round(t_put, 2), "puts_per_s": round(a.n / t_put),
            "edge_has_all_s": round(t_edge, 2),
            "store_file_bytes": os.stat(store).st_size,
            "store_bytes_per_cert": round(os.stat(store).st_size / a.n),
            "store_allocated_bytes": os.stat(store).st_blocks * 512,
            "origin_rss_kib": ht.proc_rss_kib(o.proc.pid),
            "edge_rss_kib": ht.proc_rss_kib(e.proc.pid),
            "joins": [],
        }
        o.extra = ["--compact-after", "1"]
        for k in range(a.joins):
            for version in (3, 4):
                o.proc_env = dict(pool, HM_TEST_SNAP_VERSION="3") if version == 3 else pool
                o.restart()
                snapshot_now(o, chain, key, "%d-%d" % (k, version))
                t1 = time.monotonic()
                e2 = Edge(env, o, name="join-%d-%d" % (k, version))
                wait_converged(o, [e2], 3600, "a new edge to load the snapshot")
                t_join = time.monotonic() - t1
                s2 = e2.status()
                out["joins"].append({"snapshot_version": version, "join_s": round(t_join, 2),
                                     "snapshot_restarts": s2["snapshot_restarts"],
                                     "edge_certs": s2["certs"],
                                     "edge_rss_kib": ht.proc_rss_kib(e2.proc.pid)})
                e2.proc.stop()
        print(json.dumps(out, indent=1))
    finally:
        problems = env.teardown()
        if problems:
            print("\n".join(problems), file=sys.stderr)
        env.remove()


if __name__ == "__main__":
    main()

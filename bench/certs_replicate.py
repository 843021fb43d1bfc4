#!/usr/bin/env python3
"""100,000 certificates through the real origin, edge and hermodctl (issue 11). Never run as a
test: it measures, for docs/tls.md.

One wildcard certificate (ECDSA P-256, `*.bench.example`) is put under N host names
`hN.bench.example` (every put is a full certcheck on the origin: PEM, chain, key, SANs), in
batch files of --batch puts each. Measured:
  * put: wall time of the `hermodctl apply` runs (the origin's checks, journal, publish), and
    the time until a live edge has all of them (its status digest equals the origin's);
  * join: a new edge that loads everything from a snapshot (chunks of the usual 1 MiB bounds)
    until it is live with the origin's digest;
  * the store file's size on the edge, and the origin's and the edge's RSS.

  HERMOD_BUILD=build python3 bench/certs_replicate.py [--n 100000] [--batch 10000]
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


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=1000)
    a = ap.parse_args()
    env = ht.Env("certs-bench")
    try:
        p = PKI(env.path("pki"))
        ca = p.ca("ca")
        leaf = p.leaf("wild", ca, "serverAuth", ["*.bench.example"])
        chain = open(leaf.crt).read() + open(ca.crt).read()
        key = open(leaf.key).read()
        o = Origin(env, extra=["--compact-after", "64MiB"])
        e = Edge(env, o)
        t0 = time.monotonic()
        for start in range(0, a.n, a.batch):
            changes = [{"op": "cert.put", "name": "h%d.bench.example" % i, "cert": chain,
                        "key": key} for i in range(start, min(a.n, start + a.batch))]
            r = o.ctl("--json", "--reply-timeout", "1h", "apply", "-",
                      input=json.dumps({"changes": changes}).encode(),
                      timeout=3600)
            if r.rc != 0:
                raise SystemExit("apply failed: %r" % r)
        t_put = time.monotonic() - t0
        wait_converged(o, [e], 3600, "the edge to hold every certificate")
        t_edge = time.monotonic() - t0
        st = e.status()
        store = st["cert_store"]
        t1 = time.monotonic()
        e2 = Edge(env, o, name="edge2")
        wait_converged(o, [e2], 3600, "a new edge to load the snapshot")
        t_join = time.monotonic() - t1
        print(json.dumps({
            "certs": a.n, "batch": a.batch,
            "put_s": round(t_put, 2), "puts_per_s": round(a.n / t_put),
            "edge_has_all_s": round(t_edge, 2),
            "new_edge_join_s": round(t_join, 2),
            "edge_certs": e2.status()["certs"],
            "store_file_bytes": os.stat(store).st_size,
            "store_bytes_per_cert": round(os.stat(store).st_size / a.n),
            "store_allocated_bytes": os.stat(store).st_blocks * 512,
            "origin_rss_kib": rss_kib(o.proc.pid), "edge_rss_kib": rss_kib(e.proc.pid),
            "snapshots_sent": o.status()["snapshots_sent"],
        }, indent=1))
    finally:
        problems = env.teardown()
        if problems:
            print("\n".join(problems), file=sys.stderr)


if __name__ == "__main__":
    main()

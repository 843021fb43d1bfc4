"""hermodctl apply with a million changes (issue 3, CONTRACT: "Batches of a million changes must
work"): the file is streamed in parts, never held whole by hermodctl (its peak memory is a
small fraction of the file), the origin applies it as one atomic batch with one seq, and an
edge converges to it. The same with origins on etcd (issue 13: "Batches of a million changes
still work and stay atomic, within etcd's request size and txn-op limits"): the record is
staged in chunk keys and committed by one small txn, and the other origin (and an edge that
follows it) gets all of it at the same seq.
"""

import json
import os
import resource
import subprocess
import time

import etcd_util as eu
import hermod_test as ht
from hermod_test import T, check, eq, wait_for
from syncd_util import Edge, Origin, origin_head, wait_converged

N = 1000000


def write_batch(path, n):
    with open(path, "w") as f:
        f.write('{"changes": [\n{"op": "app.put", "app": "huge"}')
        for i in range(n - 1):
            f.write(',\n{"op":"dyno.put","app":"huge","dyno":"web.%d","addr":"10.%d.%d.%d:%d"}' %
                    (i, i >> 16 & 255, i >> 8 & 255, i & 255, 1024 + i % 60000))
        f.write("\n]}\n")


def apply_million(env, o, edges):
    """hermodctl applies N changes through o; every edge ends with them. Returns the answer."""
    path = env.path("million.json")
    write_batch(path, N)
    size = os.path.getsize(path)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.monotonic()
    p = subprocess.run([ht.binary("hermodctl"), "--control", o.control, "--json",
                        "--reply-timeout", "%ds" % int(T(120)), "apply", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(240))
    dt = time.monotonic() - t0
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    eq(p.returncode, 0, "hermodctl apply of %d changes: %s" % (N, p.stderr.decode()[-500:]))
    ans = json.loads(p.stdout)
    eq(ans["changes"], N, "one batch, every change")
    t1 = time.monotonic()
    for e in edges:
        wait_for(lambda: e.status()["dynos"] == N - 1, T(120),
                 "the edge %s to apply a million changes" % e.name)
    print("# %d changes (%.0f MiB of JSON): durable after %.1fs, on the edges %.1fs later; "
          "hermodctl peak RSS %.0f MiB" % (N, size / 2**20, dt, time.monotonic() - t1,
                                           rss_kib / 1024.0), flush=True)
    if not ht.SANITIZED and rss_kib > before:
        check(rss_kib * 1024 < size / 2,
              "hermodctl must stream the file: peak RSS %.0f MiB for a %.0f MiB file" %
              (rss_kib / 1024.0, size / 2**20))
    os.unlink(path)
    return ans


@ht.timeout(300)
def test_million_change_apply(env):
    o = Origin(env)
    e = Edge(env, o)
    ans = apply_million(env, o, [e])
    eq(ans["seq"], 1, "the first batch")
    wait_converged(o, [e], T(120))


@ht.timeout(600)
def test_million_change_apply_on_etcd(env):
    c = eu.EtcdCluster(env, 1)
    a = eu.origin(env, c, "origin-a")
    b = eu.origin(env, c, "origin-b")
    eb = Edge(env, b, name="edge-b")
    ans = apply_million(env, a, [eb])
    st = a.status()
    check(st["etcd_staged"] >= 1, "the batch was staged in chunk keys: %r" % st)
    # One seq for the whole batch on both origins: the other origin's head is that seq, and
    # its edge got every change at it (never a part of the batch).
    wait_for(lambda: origin_head(b) == origin_head(a), T(120), "both origins at one head")
    eq(origin_head(b)[0], ans["seq"], "the other origin's head is the batch's seq")
    eq(b.status()["dynos"], N - 1, "every dyno on the other origin")
    wait_converged(b, [eb], T(120))


if __name__ == "__main__":
    ht.run(globals())

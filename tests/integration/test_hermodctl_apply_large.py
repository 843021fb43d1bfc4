"""hermodctl apply with a million changes (issue 3, CONTRACT: "Batches of a million changes must
work"): the file is streamed in parts, never held whole by hermodctl (its peak memory is a
small fraction of the file), the origin applies it as one atomic batch with one seq, and an
edge converges to it.
"""

import resource
import subprocess
import time

import hermod_test as ht
from hermod_test import T, check, eq
from syncd_util import Edge, Origin, wait_converged

N = 1000000


def write_batch(path, n):
    with open(path, "w") as f:
        f.write('{"changes": [\n{"op": "app.put", "app": "huge"}')
        for i in range(n - 1):
            f.write(',\n{"op":"dyno.put","app":"huge","dyno":"web.%d","addr":"10.%d.%d.%d:%d"}' %
                    (i, i >> 16 & 255, i >> 8 & 255, i & 255, 1024 + i % 60000))
        f.write("\n]}\n")


@ht.timeout(300)
def test_million_change_apply(env):
    o = Origin(env)
    e = Edge(env, o)
    path = env.path("million.json")
    write_batch(path, N)
    size = __import__("os").path.getsize(path)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.monotonic()
    p = subprocess.run([ht.binary("hermodctl"), "--control", o.control, "--json",
                        "--reply-timeout", "%ds" % int(T(120)), "apply", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(240))
    dt = time.monotonic() - t0
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    eq(p.returncode, 0, "hermodctl apply of %d changes: %s" % (N, p.stderr.decode()[-500:]))
    import json
    ans = json.loads(p.stdout)
    eq((ans["seq"], ans["changes"]), (1, N), "one batch, every change")
    t1 = time.monotonic()
    wait_converged(o, [e], T(120), "the edge to apply a million changes")
    print("# %d changes (%.0f MiB of JSON): durable after %.1fs, on the edge %.1fs later; "
          "hermodctl peak RSS %.0f MiB" % (N, size / 2**20, dt, time.monotonic() - t1,
                                           rss_kib / 1024.0), flush=True)
    eq(e.status()["dynos"], N - 1, "dynos on the edge")
    if not ht.SANITIZED and rss_kib > before:
        check(rss_kib * 1024 < size / 2,
              "hermodctl must stream the file: peak RSS %.0f MiB for a %.0f MiB file" %
              (rss_kib / 1024.0, size / 2**20))


if __name__ == "__main__":
    ht.run(globals())

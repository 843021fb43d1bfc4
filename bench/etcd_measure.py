#!/usr/bin/env python3
"""etcd on this machine, for docs/store-etcd.md and the README (issue 13). Never run as a test.

Measures, with the data on a real disk (--dir, default /var/tmp; tests use tmpfs, where fsync
is free):
  * the disk's own fsync latency: 4 KiB written and fdatasync()ed, appended to a growing file
    and overwritten in a preallocated one (etcd's WAL preallocates its segments);
  * etcd txn latency, p50/p99/max, with 1 and 3 members on loopback: compare-and-swap txns one
    after another through syncd/etcd.c (tests/tools/hm-etcd), each putting 64 bytes (a head
    pointer) or 256 KiB (a group of batches);
  * the largest txn (operations) and request (value bytes) etcd 3.4's defaults accept, found by
    bisection.
Each measurement is repeated (--runs, 3) so the spread between runs shows.

  HERMOD_BUILD=build python3 bench/etcd_measure.py [--dir DIR] [--runs N] [--txns N]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import etcd_bench as eb  # puts tests/integration on sys.path
import etcd_util as eu


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def fsync_latency(dir, n, prealloc):
    fd, path = tempfile.mkstemp(prefix="fsync-", dir=dir)
    block = os.urandom(4096)
    lat = []
    try:
        if prealloc:
            os.posix_fallocate(fd, 0, 4096 * n)
            os.fsync(fd)
        for i in range(n):
            t0 = time.perf_counter()
            os.pwrite(fd, block, 4096 * i)
            os.fdatasync(fd)
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    return lat


def ms(us):
    return "%.2f" % (us / 1000.0)


def bisect(lo, hi, ok):
    """The largest x in [lo, hi] with ok(x), given ok(lo) and not ok(hi + 1)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--txns", type=int, default=1000)
    a = ap.parse_args()
    if not eu.available():
        sys.exit("etcd is not installed")
    print("# etcd_measure: data on %s, %d runs, load %s" % (
        a.dir, a.runs, eb.load()))

    print("\n## the disk's fsync (4 KiB write + fdatasync), ms")
    print("| file | p50 | p99 | max |")
    print("| --- | --- | --- | --- |")
    for prealloc in (False, True):
        for _ in range(a.runs):
            lat = fsync_latency(a.dir, 500, prealloc)
            print("| %s | %.2f | %.2f | %.2f |" % (
                "preallocated" if prealloc else "appended", statistics.median(lat),
                pct(lat, 99), max(lat)))

    print("\n## etcd txn latency (CAS + put, one after another), ms")
    print("| members | value | txns | p50 | p99 | max |")
    print("| --- | --- | --- | --- | --- | --- |")
    limits = None
    for members in (1, 3):
        for _ in range(a.runs):
            with eb.run_dir("etcd-measure", a.dir) as (env, root):
                c = eu.EtcdCluster(env, members, data_root=root)
                t = eu.EtcdTool(env, c.endpoints, timeout_ms=30000)
                t.ok("bench", 50, "warmup")
                for value, n in (("@64", a.txns), ("@262144", max(a.txns // 5, 20))):
                    r = t.ok("bench", n, "bench", value, timeout=600)
                    print("| %d | %s | %d | %s | %s | %s |" % (
                        members, "64 B" if value == "@64" else "256 KiB", r["n"],
                        ms(r["p50_us"]), ms(r["p99_us"]), ms(r["max_us"])), flush=True)
                if limits is None:
                    ops = bisect(1, 1024, lambda k: t.call("ops", k)["err"] == 0)
                    size = bisect(1 << 20, 2 << 20,
                                  lambda k: t.call("put", "limit", "@%d" % k)["err"] == 0)
                    limits = (ops, size)
    print("\n## etcd 3.4 defaults, found by bisection")
    print("| limit | accepted |")
    print("| --- | --- |")
    print("| operations in one txn | %d |" % limits[0])
    print("| value bytes in one put (key of 5 bytes) | %d |" % limits[1])


if __name__ == "__main__":
    main()

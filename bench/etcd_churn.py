#!/usr/bin/env python3
"""etcd's database under steady churn from an origin on etcd (issue 13). Never run as a test.

Starts one etcd member (data on --dir, a real disk) and one `hermod-syncd origin --store etcd:...`
with a small --compact-after, then rewrites the same dynos with hermodctl for --minutes,
sampling every --every seconds: the origin's seq and etcd counters (snapshots installed in
etcd, history compactions), the log keys under /hermod/log/, and etcd's dbSize and
dbSizeInUse (/v3/maintenance/status). Bounded means: log keys and dbSizeInUse level off
while seq keeps growing. (dbSize, the file, only shrinks by defragmentation, which the origin
does not do yet; bbolt reuses its free pages, so it levels off too.)

  HERMOD_BUILD=build python3 bench/etcd_churn.py [--dir DIR] [--minutes M] [--every S]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))

import etcd_util as eu  # noqa: E402
import hermod_test as ht  # noqa: E402
import syncd_util as su  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--every", type=float, default=15)
    ap.add_argument("--batch", type=int, default=200, help="changes per hermodctl apply")
    a = ap.parse_args()
    if not eu.available():
        sys.exit("etcd is not installed")
    env = ht.Env("etcd-churn")
    root = tempfile.mkdtemp(prefix="hermod-etcd-churn-", dir=a.dir)
    try:
        c = eu.EtcdCluster(env, 1, data_root=root)
        t = eu.EtcdTool(env, c.endpoints, timeout_ms=30000)
        o = su.Origin(env, name="origin", data=os.path.join(root, "origin"),
                      extra=["--store", "etcd:" + c.endpoints[0], "--compact-after", "1MiB"])
        o.apply([ht.ch_app("churn")])
        print("# etcd_churn: data on %s, %g min, %d changes per batch, load %s" % (
            a.dir, a.minutes, a.batch, " ".join("%.2f" % x for x in os.getloadavg())))
        print("| s | seq | changes | log keys | etcd snapshots | compactions | dbSize MiB | "
              "dbSizeInUse MiB |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        t0 = time.monotonic()
        next_sample, k, changes = 0.0, 0, 0
        while True:
            now = time.monotonic() - t0
            if now >= next_sample:
                st = o.status()
                ms = c.status(0)
                logs = t.ok("range", "/hermod/log/", "/hermod/log0", 0)["count"]
                print("| %.0f | %d | %d | %d | %d | %d | %.1f | %.1f |" % (
                    now, st["seq"], changes, logs, st["etcd_snapshots"],
                    st["etcd_compactions"], int(ms["dbSize"]) / 2**20,
                    int(ms.get("dbSizeInUse", 0)) / 2**20), flush=True)
                next_sample += a.every
                if now >= a.minutes * 60:
                    break
            batch = [ht.ch_dyno("churn", "web.%d" % ((k + i) % 2000),
                                "10.0.%d.%d:%d" % ((k + i) % 250, (k // 250) % 250,
                                                   1000 + k % 50000))
                     for i in range(a.batch)]
            r = o.ctl("apply", "-", input=json.dumps({"changes": batch}).encode())
            if r.rc != 0:
                sys.exit("apply failed: %r" % r)
            k += a.batch
            changes += a.batch
    finally:
        for p in env.teardown():
            print("# problem: %s" % p)
        env.remove()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

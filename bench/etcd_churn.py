#!/usr/bin/env python3
"""etcd's database under steady churn from origins on etcd (issue 13). Never run as a test.

Starts one etcd member (data on --dir, a real disk) and --origins `hermod-syncd origin --store
etcd:...` with a small --compact-after, then rewrites the same dynos with hermodctl for --minutes
(spread over the origins), sampling every --every seconds: the origins' seq and the compactor's
counters (snapshots installed in etcd, history compactions, defragmentations), the log keys under
/hermod/log/, and etcd's dbSize and dbSizeInUse (/v3/maintenance/status). At the end of each
minute it prints that minute's min/max of dbSize and dbSizeInUse. Bounded means: log keys,
dbSizeInUse and dbSize level off while seq keeps growing (dbSize: the file, which bbolt
reuses; the compactor defragments it once in use is at most half of it and it is over
--defrag-min).

  HERMOD_BUILD=build python3 bench/etcd_churn.py [--dir DIR] [--minutes M] [--every S]
      [--origins N] [--compact-every DURATION] [--defrag-every DURATION] [--defrag-min SIZE]
"""

import argparse
import json
import sys
import time

import etcd_bench as eb  # puts tests/integration on sys.path
import etcd_util as eu
import hermod_test as ht


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--every", type=float, default=15)
    ap.add_argument("--batch", type=int, default=200, help="changes per hermodctl apply")
    ap.add_argument("--origins", type=int, default=2)
    ap.add_argument("--compact-every", default="60s")
    ap.add_argument("--defrag-every", default="2m")
    ap.add_argument("--defrag-min", default="16MiB")
    a = ap.parse_args()
    with eb.run_dir("etcd-churn", a.dir) as (env, root):
        c = eu.EtcdCluster(env, 1, data_root=root)
        t = eu.EtcdTool(env, c.endpoints, timeout_ms=30000)
        extra = ["--compact-after", "1MiB", "--etcd-compact-every", a.compact_every,
                 "--etcd-defrag-every", a.defrag_every, "--etcd-defrag-min", a.defrag_min]
        origins = [eb.origin(env, root, c, "origin-%d" % i, extra) for i in range(a.origins)]
        origins[0].apply([ht.ch_app("churn")])
        print("# etcd_churn: data on %s, %g min, %d origins, %d changes per batch, compaction "
              "every %s, defragmentation checked every %s from %s, load %s" % (
                  a.dir, a.minutes, a.origins, a.batch, a.compact_every, a.defrag_every,
                  a.defrag_min, eb.load()))
        print("| min | seq | changes | log keys | compactor | etcd snapshots | compactions | "
              "defrags | dbSize MiB min-max | dbSizeInUse MiB min-max |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        t0 = time.monotonic()
        next_sample, k, changes, minute, sizes, uses = 0.0, 0, 0, 0, [], []
        mib = 2.0 ** 20
        while True:
            now = time.monotonic() - t0
            if now >= next_sample:
                ms = c.status(0, timeout=10)
                if ms is not None:
                    sizes.append(int(ms["dbSize"]))
                    uses.append(int(ms.get("dbSizeInUse", 0)))
                next_sample += a.every
                if now >= (minute + 1) * 60 or now >= a.minutes * 60:
                    sts = [o.status() for o in origins]
                    holder = next((s for s in sts if s["etcd_compactor_self"]), sts[0])
                    logs = t.ok("range", "/hermod/log/", "/hermod/log0", 0)["count"]
                    print("| %d | %d | %d | %d | %s | %d | %d | %d | %.1f-%.1f | %.1f-%.1f |" % (
                        minute + 1, sts[0]["seq"], changes, logs, holder["etcd_compactor"],
                        sum(s["etcd_snapshots"] for s in sts),
                        sum(s["etcd_compactions"] for s in sts),
                        sum(s["etcd_defrags"] for s in sts), min(sizes) / mib,
                        max(sizes) / mib, min(uses) / mib, max(uses) / mib), flush=True)
                    minute += 1
                    sizes, uses = [], []
                if now >= a.minutes * 60:
                    break
            batch = [ht.ch_dyno("churn", "web.%d" % ((k + i) % 2000),
                                "10.0.%d.%d:%d" % ((k + i) % 250, (k // 250) % 250,
                                                   1000 + k % 50000))
                     for i in range(a.batch)]
            o = origins[(k // a.batch) % len(origins)]
            r = o.ctl("apply", "-", input=json.dumps({"changes": batch}).encode())
            if r.rc != 0:
                sys.exit("apply failed: %r" % r)
            k += a.batch
            changes += a.batch


if __name__ == "__main__":
    main()

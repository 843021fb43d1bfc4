"""Snapshots, compaction and catch-up sources (issue 3): the origin compacts its journal into a
snapshot in the background and drops the segments it covers; a new edge joins from the
snapshot (in several chunks for a large state) and catches up; an edge that fell behind
catches up from the journal when the in-memory ring no longer holds what it misses, or from a
snapshot when the journal no longer does; a restarted origin loads snapshot + journal.
"""

import glob
import os
import time

import hermod_test as ht
from hermod_test import T, check, eq, wait_for
from syncd_util import Edge, Origin, wait_converged


def batch(i, n=20):
    return [{"op": "dyno.put", "app": "svc", "dyno": "web.%d" % (i * n + k),
             "addr": "10.%d.%d.%d:80" % (i % 200, k, (i * 7 + k) % 250)} for k in range(n)]


def segments(o):
    return sorted(glob.glob(os.path.join(o.data, "journal-*.log")))


def test_compaction_journal_and_snapshot_catchups(env):
    o = Origin(env, extra=["--compact-after", "256KiB", "--ring", "8KiB", "--segment", "64KiB"])
    o.apply([{"op": "app.put", "app": "svc"}])
    slow = Edge(env, o, name="slow")
    for i in range(40):
        o.apply(batch(i))
    wait_converged(o, [slow])
    # 1. Behind by more than the ring: caught up from the journal, no snapshot.
    slow.proc.stop()
    for i in range(40, 60):
        o.apply(batch(i))
    reads = o.status()["journal_reads"]
    slow.start()
    wait_converged(o, [slow], what="catch-up from the journal")
    check(o.status()["journal_reads"] > reads, "the catch-up should have read the journal")
    eq(slow.status()["snapshots"], 0, "no full resync for a journal catch-up (the restarted "
       "edge resumed its table)")
    # 2. Compaction: a snapshot in the background, covered segments dropped.
    slow.proc.stop()
    before = len(segments(o))
    i = 60
    while o.status()["snapshot_seq"] == 0:
        o.apply(batch(i, 200))
        i += 1
        check(i < 300, "no compaction after %d batches" % i)
    wait_for(lambda: not o.status()["compacting"], T(20), "the compaction to finish")
    snaps = glob.glob(os.path.join(o.data, "snapshot-*.snap"))
    eq(len(snaps), 1, "snapshot files (older ones are deleted)")
    check(len(segments(o)) <= before + 2, "covered segments should be dropped: %s" %
          segments(o))
    snap_seq = o.status()["snapshot_seq"]
    # 3. Behind the snapshot: full resync, then catch-up.
    for k in range(10):
        o.apply(batch(i + k))
    slow.start()
    wait_converged(o, [slow], what="resync of an edge behind the snapshot")
    eq(slow.status()["snapshots"], 1, "an edge behind the snapshot resyncs from it")
    # 4. A new edge joins from the snapshot and catches up the rest.
    fresh = Edge(env, o, name="fresh")
    wait_converged(o, [slow, fresh])
    # 5. A restarted origin loads snapshot + journal and keeps its position.
    want = o.status()
    o.restart()
    got = o.status()
    eq((got["epoch"], got["seq"], got["digest"], got["snapshot_seq"]),
       (want["epoch"], want["seq"], want["digest"], snap_seq), "origin after restart")
    o.apply(batch(5000))
    wait_converged(o, [slow, fresh])
    eq(fresh.status()["snapshots"], 1, "the edges continued without a new full resync")


def test_large_state_in_chunks(env):
    o = Origin(env)
    ch = [{"op": "app.put", "app": "big"}]
    ch += [{"op": "dyno.put", "app": "big", "dyno": "web.%d" % k,
            "addr": "10.%d.%d.%d:8080" % (k >> 16 & 255, k >> 8 & 255, k & 255)}
           for k in range(60000)]
    ch += [{"op": "domain.put", "domain": "d%d.big.example.com" % k, "app": "big"}
           for k in range(5000)]
    o.apply(ch, timeout=T(60))
    # Make the origin's current snapshot hold the whole state: restart it with a tiny
    # compaction threshold so it compacts at once.
    o.extra = ["--compact-after", "1"]
    o.restart()
    o.apply([{"op": "app.put", "app": "tick"}])
    wait_for(lambda: o.status()["snapshot_seq"] >= 2 and not o.status()["compacting"], T(30),
             "a snapshot of the large state")
    t0 = time.monotonic()
    e = Edge(env, o)
    wait_converged(o, [e], T(30), "a new edge to load 65 000 objects")
    st = o.status()
    print("# joined a state of 60 000 dynos + 5 000 domains in %.2fs (%d chunks sent)" %
          (time.monotonic() - t0, st["snapshot_chunks"]), flush=True)
    check(st["snapshot_chunks"] >= 4, "the snapshot should come in several chunks")
    eq(e.status()["dynos"], 60000, "dynos")
    # Many edges joining at once must not stall publishing: changes keep being acknowledged
    # while six edges download the snapshot.
    joiners = [Edge(env, o, name="join%d" % i, wait=False) for i in range(6)]
    worst = 0.0
    for k in range(15):
        r = o.ctl("dyno", "put", "big", "extra.%d" % k, "10.99.0.%d:80" % (k + 1))
        eq(r.rc, 0, "hermodctl while edges join (%r)" % r)
        worst = max(worst, r.seconds)
    wait_converged(o, [e] + joiners, T(60), "six edges joining at once")
    print("# while six edges joined, the slowest of 15 changes took %.3fs" % worst, flush=True)
    check(worst < T(2), "publishing stalled while edges joined (%.2fs)" % worst)


if __name__ == "__main__":
    ht.run(globals())

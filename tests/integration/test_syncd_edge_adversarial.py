"""The edge against awkward origins and feeds (adversarial review of the edge role).

* An origin restarted right after a compaction, with no journal record after its snapshot,
  must still answer catch-ups at its head: edges resume (or join once) and go live, instead of
  being told SNAPSHOT, loading the snapshot, asking again and being told SNAPSHOT again, without
  end (each round replacing the node's table file under its routers).
* A batch part at head + 1 that the origin never published (its predecessors missing: a corrupt
  or forged message) must not make the edge ask for catch-ups in a tight loop for as long as the
  origin publishes nothing.
* A full file system under the table (issue 9): growing the table needs a new, larger file. The
  writer used to create it sparse, and its first write through the mapping killed the edge with
  SIGBUS; now the file's blocks are allocated up front (posix_fallocate), growing fails with
  ENOSPC, the last published version stays at the path, the error shows in status, and the edge
  catches up once there is room.
"""

import os
import time

import hermod_test as ht
from hermod_test import T, check, eq, wait_for
from syncd_util import EvilRelay, Edge, Origin, mp, port_of, wait_converged


def live(edge):
    try:
        return edge.status()["state"] == "live"
    except (OSError, ValueError):
        return False


def test_restart_after_compaction_serves_the_snapshot_head(env):
    o = Origin(env, extra=["--compact-after", "1"])
    o.apply([{"op": "app.put", "app": "a"}])
    o.apply([{"op": "app.put", "app": "b"},
             {"op": "domain.put", "domain": "b.example.com", "app": "b"}])
    e = Edge(env, o)
    wait_converged(o, [e])

    def compacted():
        st = o.status()
        return st["snapshot_seq"] == st["seq"] and not st["compacting"]
    wait_for(compacted, T(20), "a snapshot at the head")
    # The restart finds the snapshot and no journal record after it.
    before = e.status()
    o.restart()
    eq(o.status()["journal_bytes"], 0, "journal since the snapshot after the restart")
    late = Edge(env, o, name="late")
    # e notices the restart (its subscription comes back) and catches up once.
    wait_for(lambda: e.status()["catchups"] > before["catchups"], T(10),
             "the edge to catch up with the restarted origin")
    wait_converged(o, [e, late], T(10), "edges after the origin's restart")
    wait_for(lambda: live(e) and live(late), T(10), "both edges to be live")
    time.sleep(1)
    eq(e.status()["snapshots"], before["snapshots"], "full resyncs of an edge at the head")
    eq(late.status()["snapshots"], 1, "full resyncs of an edge joining after the restart")
    wait_for(lambda: live(e) and live(late), T(5), "both edges to be live still")
    o.apply([{"op": "app.put", "app": "c"}])
    wait_converged(o, [e, late])


def test_bogus_part_at_head_does_not_spin_catchups(env):
    o = Origin(env)
    relay = EvilRelay(env, port_of(o.publish))
    e = Edge(env, o, publish=relay.url)
    relay.wait_subscribers()
    o.apply([{"op": "app.put", "app": "a"}])
    wait_converged(o, [e])
    wait_for(lambda: live(e), T(5), "the edge to be live")
    st = o.status()
    before = st["catchups"]
    # Part 1 of 2 of the next batch, which the origin has not made: a gap that no catch-up can
    # fill until the origin publishes that seq.
    relay.inject(mp([1, 1, int(st["epoch"], 16), st["seq"] + 1, 0, 1, 2,
                     [[1, "bogus", False, False, 0]]]))
    time.sleep(2)
    asked = o.status()["catchups"] - before
    check(asked <= 10, "catch-ups for one bogus part while the origin is idle: %d" % asked)
    check(live(e), "the edge should be live again: %s" % e.status()["state"])
    o.apply([{"op": "app.put", "app": "b"}])
    wait_converged(o, [e])
    eq(e.status()["digest_mismatches"], 0, "digest mismatches")


def test_full_file_system_under_the_table(env):
    mnt = env.path("fs")
    if not ht.mount_tmpfs(env, mnt):
        return
    o = Origin(env)
    e = Edge(env, o, table=os.path.join(mnt, "table"))
    o.apply([{"op": "app.put", "app": "a"},
             {"op": "domain.put", "domain": "a.example.com", "app": "a"}])
    wait_converged(o, [e])
    before = e.status()
    eq(before["table_error"], None, "table_error while there is room")
    # Fill the file system, leaving less than a larger table needs.
    st = os.statvfs(mnt)
    filler = os.path.join(mnt, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (st.f_bavail * st.f_frsize - 16 * 1024))
    # 1,100 apps do not fit the 1,024 of a new table: the edge must grow it.
    o.apply([{"op": "app.put", "app": "g%d" % i} for i in range(1100)])
    wait_for(lambda: e.status()["table_error"] is not None, T(10),
             "the edge to report that it cannot write the table")
    st = e.status()
    check("space" in st["table_error"], "table_error: %r" % st["table_error"])
    check(st["table_errors"] >= 1, "table_errors: %r" % st["table_errors"])
    check(e.proc.alive(), "the edge died")
    eq(st["seq"], before["seq"], "seq the edge reports")
    eq(e.peek()["seq"], before["seq"], "seq of the table at the path (the last published one)")
    eq(e.peek()["apps"], 1, "apps in the table at the path")
    # Room again: the edge gets there on its own.
    os.unlink(filler)
    wait_converged(o, [e], T(30), "the edge once there is room again")
    eq(e.status()["table_error"], None, "table_error once written")
    eq(e.peek()["apps"], 1101, "apps in the table at the path")


if __name__ == "__main__":
    ht.run(globals())

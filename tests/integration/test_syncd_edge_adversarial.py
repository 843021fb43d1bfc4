"""The edge against awkward origins and feeds (adversarial review of the edge role).

* An origin restarted right after a compaction, with no journal record after its snapshot,
  must still answer catch-ups at its head: edges resume (or join once) and go live, instead of
  being told SNAPSHOT, loading the snapshot, asking again and being told SNAPSHOT again, without
  end (each round replacing the node's table file under its routers).
* A batch part at head + 1 that the origin never published (its predecessors missing: a corrupt
  or forged message) must not make the edge ask for catch-ups in a tight loop for as long as the
  origin publishes nothing.
"""

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


if __name__ == "__main__":
    ht.run(globals())

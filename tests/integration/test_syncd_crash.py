"""Crashes (issue 3, robustness): SIGKILL an edge and restart it (same digest as the origin within
a second); SIGKILL the origin while hermodctl clients publish and restart it (every acknowledged
change present, edges converge); a torn journal tail is cut at restart.
"""

import glob
import os
import threading
import time

import hermod_test as ht
from hermod_test import T, check, eq, wait_for
from syncd_util import Edge, Origin, rng_for, wait_converged


def bulk(n, app="big"):
    ch = [{"op": "app.put", "app": app}]
    ch += [{"op": "dyno.put", "app": app, "dyno": "web.%d" % i,
            "addr": "10.%d.%d.%d:80" % (i >> 16 & 255, i >> 8 & 255, i & 255)}
           for i in range(n)]
    return ch


def test_sigkill_edge_then_restart(env):
    o = Origin(env)
    e = Edge(env, o)
    o.apply(bulk(5000))
    wait_converged(o, [e])
    worst = 0.0
    rng = rng_for("sigkill_edge")
    for i in range(4):
        # Kill it while changes keep coming, sometimes mid-batch.
        stop = threading.Event()

        def writer():
            k = 0
            while not stop.is_set():
                o.apply([{"op": "dyno.put", "app": "big", "dyno": "w.%d" % (i * 1000 + k),
                          "addr": "10.9.%d.%d:80" % (i, k % 250)}])
                k += 1
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.1 + rng.random() * 0.3)
        e.kill()
        time.sleep(0.2)
        stop.set()
        t.join()
        pk = e.peek()
        check(pk is not None, "the table file must stay valid while its writer is dead")
        e.start(wait=False)
        t0 = time.monotonic()
        wait_converged(o, [e], T(5), "the restarted edge to converge")
        worst = max(worst, time.monotonic() - t0)
    print("# restarted edge converged within %.3fs (worst of 4, from exec)" % worst, flush=True)
    check(worst < T(1), "a restarted edge must have the origin's digest within a second "
          "(took %.2fs)" % worst)
    eq(e.status()["snapshots"], 0, "a restarted edge resumes its table: no full resync")


def test_sigkill_origin_while_publishing(env):
    o = Origin(env)
    edges = [Edge(env, o, name="edge1"), Edge(env, o, name="edge2")]
    o.ctl("app", "put", "crash")
    acked = {}           # dyno name -> seq
    lock = threading.Lock()
    stop = threading.Event()
    errors = []

    def client(c):
        k = 0
        while not stop.is_set():
            name = "c%d.%d" % (c, k)
            r = o.ctl("--timeout", "2s", "--reply-timeout", "%ds" % int(T(10)), "--json",
                      "dyno", "put", "crash", name, "10.1.%d.%d:80" % (c, k % 250),
                      timeout=T(30))
            if r.rc == 0:
                with lock:
                    acked[name] = r.json()["seq"]
            elif r.rc != 3:
                errors.append(r)
            k += 1
    ts = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for t in ts:
        t.start()
    wait_for(lambda: len(acked) >= 30, T(20), "some acknowledged changes")
    o.kill()
    killed_with = len(acked)
    time.sleep(0.3)
    o.start()
    wait_for(lambda: len(acked) >= killed_with + 30, T(20), "changes after the restart")
    stop.set()
    for t in ts:
        t.join()
    check(not errors, "hermodctl failed other than 'cannot reach': %r" % errors[:3])
    dump = ht.admin_request(o.admin, "dump")
    have = {d["name"] for d in dump["dynos"]}
    missing = sorted(set(acked) - have)
    check(not missing, "%d acknowledged changes lost after SIGKILL: %s" % (len(missing),
                                                                         missing[:10]))
    check(o.status()["seq"] >= max(acked.values()), "the origin's seq went back")
    print("# %d changes acknowledged, %d before the SIGKILL; none lost" %
          (len(acked), killed_with), flush=True)
    wait_converged(o, edges, T(10), "edges after the origin's restart")


def test_torn_journal_tail(env):
    o = Origin(env)
    e = Edge(env, o)
    seq = o.apply(bulk(200, "torn"))
    o.ctl("app", "put", "last")
    wait_converged(o, [e])
    want = o.status()
    o.kill()
    segs = sorted(glob.glob(os.path.join(o.data, "journal-*.log")))
    with open(segs[-1], "ab") as f:
        f.write(b"HMJR\x00\x10\x00\x00" + os.urandom(100))  # a record cut short
    o.start()
    got = o.status()
    eq((got["seq"], got["digest"]), (want["seq"], want["digest"]), "state after the torn tail")
    check("torn tail" in o.proc.stderr(), "the truncation must be logged")
    eq(o.apply([{"op": "app.rm", "app": "last"}]), want["seq"] + 1, "seq after the restart")
    wait_converged(o, [e])
    check(seq >= 1, "seq")


if __name__ == "__main__":
    ht.run(globals())

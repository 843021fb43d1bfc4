"""Feed loss (issue 3, robustness): with a test-only relay dropping 5 % of the origin's published
messages (batches and heartbeats alike), edges notice every gap (sequence numbers, heartbeats
ahead) and repair it from the sync socket; within 3 s of the loss stopping they hold the origin's
digest.
"""

import threading
import time

import hermod_test as ht
from hermod_test import T, check, eq
from syncd_util import Edge, Origin, Relay, random_changes, rng_for, wait_converged


def test_five_percent_loss(env):
    rng = rng_for("loss")
    o = Origin(env)
    relay = Relay(env, o, drop=5, seed=rng.randrange(1 << 30))
    edges = [Edge(env, o, name="edge1", publish=relay.url),
             Edge(env, o, name="edge2", publish=relay.url)]
    changes = random_changes(rng, 300)
    stop = threading.Event()
    sent = [0]

    def writer(part):
        # Many small batches: most of them one change, so a lost message is a lost batch.
        i = 0
        while i < len(part) and not stop.is_set():
            n = 1 if rng.random() < 0.8 else rng.randint(2, 10)
            o.apply(part[i:i + n])
            sent[0] += 1
            i += n
    # One writer: the changes must apply in order (each is valid after the ones before).
    t = threading.Thread(target=writer, args=(changes,))
    t.start()
    t.join(T(30))
    stop.set()
    t.join()
    relay.stop_loss()
    t0 = time.monotonic()
    dt = wait_converged(o, edges, T(6), "edges after the loss stopped")
    dt = time.monotonic() - t0
    st = [e.status() for e in edges]
    print("# %d batches under 5%% loss; edges converged %.2fs after the loss stopped; "
          "catch-ups %s" % (sent[0], dt, [s["catchups"] for s in st]), flush=True)
    check(dt <= T(3), "edges must converge within 3 s of the loss stopping (took %.2fs)" % dt)
    for s in st:
        check(s["catchups"] >= 2, "the edges should have repaired gaps: %s" % s)
        eq(s["snapshots"], 1, "no full resync for mere loss (only the first join)")


if __name__ == "__main__":
    ht.run(globals())

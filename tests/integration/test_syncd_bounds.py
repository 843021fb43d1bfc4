"""What one peer can cost the origin (issue 10, "Bounded cost per peer").

Found before: three subscribers that never read made the origin's RSS grow with every batch
(nng's PUB queued up to 8192 messages per subscriber); 8 peers looping catch-up and snapshot
requests pulled 3.4 GB in 10 s.

* Stalled subscribers: each costs at most --pub-queue messages (shared between subscribers) and
  one in flight, and is disconnected once it has taken nothing for --pub-stall; a live edge
  beside them keeps up. The origin's growth stays within the bound docs/sync.md states.
* Sync requests: one at a time per connection (a pipelined second is dropped), bytes per
  connection held to --sync-rate; yet 20 edges joining at once all converge.
"""

import socket
import struct
import threading
import time

import hermod_test as ht
from hermod_test import T, check, eq, wait_for
from syncd_util import (MSG_CATCHUP_REQ, MSG_SNAPSHOT_REQ, PROTO_REQ, PROTO_SUB, REQ_ID, Edge,
                        Origin, mp, port_of, sp_connect, sp_recv, sp_send, wait_converged)

MIB = 1 << 20


def stalled_subscriber(port):
    """An SP subscriber with a tiny receive buffer that never reads."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"\x00SP\x00\x00\x21\x00\x00")
    eq(len(s.recv(8)), 8, "the SP header from the origin")
    return s


def disconnected(s):
    """Reads what the origin had sent; True if the connection then ends."""
    s.settimeout(T(10))
    try:
        while True:
            if not s.recv(1 << 20):
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


def big_batch(i, n=28000):
    """About 0.9 MiB on the wire: the same n dynos with new addresses (the table does not
    grow, so what grows is what publishing holds)."""
    return [{"op": "dyno.put", "app": "big", "dyno": "web.%d" % k,
             "addr": "10.%d.%d.%d:80" % (i % 250, k >> 8 & 255, k & 255)} for k in range(n)]


@ht.timeout(180)
def test_stalled_subscribers_are_bounded_and_disconnected(env):
    queue, stall, ring = 16, 2, 4
    proc_env = None
    if ht.SANITIZED:
        # Freed memory held in ASan's quarantine would count as the origin's.
        proc_env = {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:print_summary=1:"
                    "quarantine_size_mb=0"}
    o = Origin(env, extra=["--ring", "%dMiB" % ring, "--pub-queue", str(queue),
                           "--pub-stall", "%ds" % stall], proc_env=proc_env)
    e = Edge(env, o)
    o.apply([{"op": "app.put", "app": "big"}] + big_batch(0), timeout=T(60))
    o.apply(big_batch(1), timeout=T(60))
    wait_converged(o, [e], T(30))
    subs = [stalled_subscriber(port_of(o.publish)) for _ in range(3)]
    rss0 = ht.proc_rss_kib(o.proc.pid)
    peak = rss0
    for i in range(2, 42):
        o.apply(big_batch(i), timeout=T(60))
        peak = max(peak, ht.proc_rss_kib(o.proc.pid))
    wait_converged(o, [e], T(30), "the live edge beside the stalled subscribers")
    # docs/sync.md: publishing holds at most --pub-queue messages plus one in flight per
    # subscriber, each at most 1 MiB; the ring holds --ring bytes of batches for catch-up.
    bound = (ring + (queue + len(subs) + 1)) * 1024 + 8 * 1024
    if ht.SANITIZED:
        bound *= 2  # ASan's allocator (redzones, size classes) costs more per block
    print("# RSS %d KiB before, peak %d KiB (+%d KiB; bound +%d KiB)" %
          (rss0, peak, peak - rss0, bound), flush=True)
    check(peak - rss0 <= bound, "the origin grew by %d KiB, more than %d KiB" %
          (peak - rss0, bound))
    wait_for(lambda: o.status()["subscribers_stalled"] >= 3, T(stall + 10),
             "the stalled subscribers to be disconnected")
    for s in subs:
        check(disconnected(s), "a stalled subscriber was not disconnected")
        s.close()
    eq(o.status()["subscribers_stalled"], 3, "only the stalled ones were dropped")
    check(e.status()["subscribed"], "the live edge is still subscribed")
    o.apply([{"op": "app.put", "app": "after"}])
    wait_converged(o, [e])


def catchup_req(epoch, after=0):
    return mp([MSG_CATCHUP_REQ, 1, epoch, after, 0])


def req_frame(i):
    return b"\x80" + (i & 0xffffff).to_bytes(3, "big")


class Looper:
    """A raw REQ peer asking for a catch-up from seq 0 again and again, as fast as it is
    answered, counting the bytes it gets."""

    def __init__(self, port, epoch):
        self.s = sp_connect(port, PROTO_REQ)
        self.epoch = epoch
        self.got = 0
        self.last = time.monotonic()  # when the last answer came
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        i = 0
        try:
            while not self.stop:
                sp_send(self.s, catchup_req(self.epoch), header=req_frame(i))
                rep = sp_recv(self.s, timeout=T(20))
                if rep is None:
                    return
                self.got += len(rep)
                self.last = time.monotonic()
                i += 1
        except OSError:
            pass


@ht.timeout(180)
def test_pipelined_sync_requests_get_one_answer(env):
    # 128 KiB/s, a burst of 512 KiB: after one ~0.9 MiB answer the connection is in debt, so
    # the next request waits ~3 s for its turn; the connection is busy all that time.
    o = Origin(env, extra=["--sync-rate", str(128 * 1024)])
    o.apply([{"op": "app.put", "app": "big"}] + big_batch(0), timeout=T(60))
    epoch = int(o.status()["epoch"], 16)
    s = sp_connect(port_of(o.sync), PROTO_REQ)
    sp_send(s, catchup_req(epoch), header=req_frame(99))
    eq(sp_recv(s, timeout=T(10))[:4], req_frame(99), "a first request is answered at once")
    # Five at once, in one write: the one taken first (nng's contexts take them in any order)
    # waits for the rate, the four others on the same connection are dropped (a REQ peer never
    # has two requests out).
    s.sendall(b"".join(struct.pack(">Q", 4 + len(catchup_req(epoch))) + req_frame(100 + i) +
                       catchup_req(epoch) for i in range(5)))
    got = sp_recv(s, timeout=T(20))[:4]
    check(got in [req_frame(100 + i) for i in range(5)], "one of them is answered: %r" % got)
    st = o.status()
    eq(st["sync_requests_dropped"], 4, "the four behind it were dropped: %r" % st)
    check(st["sync_requests_delayed"] >= 1, "the first waited for the rate: %r" % st)
    s.settimeout(1.0)
    try:
        extra = s.recv(1 << 20)
    except socket.timeout:
        extra = b""
    eq(extra, b"", "nothing more for the dropped requests")
    s.close()


def test_sync_requests_are_limited_per_connection(env):
    # A rate well under what a peer can take even under ASan on a loaded machine (~1.7 MiB/s
    # seen): at 2 MiB/s such a peer was never delayed, and the test proved nothing.
    rate = MIB // 2
    o = Origin(env, extra=["--sync-rate", str(rate)])
    o.apply([{"op": "app.put", "app": "big"}] + big_batch(0), timeout=T(60))
    for i in range(1, 4):
        o.apply(big_batch(i), timeout=T(60))
    epoch = int(o.status()["epoch"], 16)
    # Peers looping requests: each held to its rate (after a burst of 4 s of it).
    t0 = time.monotonic()
    loopers = [Looper(port_of(o.sync), epoch) for _ in range(4)]
    time.sleep(4)  # a while of looping, not a wait: the bound below holds for any duration
    wait_for(lambda: o.status()["sync_requests_delayed"] > 0, T(60),
             "requests over the rate to wait (sync_requests_delayed)")
    for lp in loopers:
        lp.stop = True
    for lp in loopers:
        lp.thread.join(T(30))
        lp.s.close()
    # A reply is paid for after it is made: at most the burst, the rate over the time, and one
    # reply (4 MiB at most) in debt.
    elapsed = max(lp.last for lp in loopers) - t0
    allowed = 4 * rate + rate * elapsed + 4 * MIB
    got = [lp.got for lp in loopers]
    print("# bytes per looping peer in %.1f s: %s (allowed %d)" % (elapsed, got, allowed),
          flush=True)
    check(all(g <= allowed for g in got), "a peer got more than its rate: %s" % got)
    check(all(g >= rate for g in got), "every peer was served: %s" % got)
    # An edge still joins at once.
    e = Edge(env, o)
    wait_converged(o, [e], T(20))


@ht.timeout(300)
def test_twenty_edges_join_together(env):
    o = Origin(env)
    state = [{"op": "app.put", "app": "a%d" % a} for a in range(50)]
    state += [{"op": "dyno.put", "app": "a%d" % (k % 50), "dyno": "web.%d" % k,
               "addr": "10.1.%d.%d:80" % (k >> 8 & 255, k & 255)} for k in range(20000)]
    o.apply(state, timeout=T(60))
    edges = [Edge(env, o, name="e%02d" % i, wait=False) for i in range(20)]
    t = wait_converged(o, edges, T(120), "20 edges joining together")
    print("# 20 edges converged %.1f s after they started" % t, flush=True)


if __name__ == "__main__":
    ht.run(globals())

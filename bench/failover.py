#!/usr/bin/env python3
"""Origin failover time on etcd (issue 13: "writes succeed again through another origin within
3 s"). Never run as a test: the figure depends on the machine, the tests assert outcomes only.

Starts a 3-member etcd cluster (data on --dir) and two `hermod-syncd origin --store etcd:...`
(origin-a, origin-b), and a hermodctl loop (`dyno put`, one process per change, --control
a,b: it uses origin-a while it answers). Each round SIGKILLs origin-a while the loop writes and
measures the time from the kill to the next acknowledged change (which came through origin-b,
or through origin-a's request cache: the loop's requests carry ids), then starts origin-a again
and waits until both origins agree before the next round. For scale, the gap between two acks
without a failure is printed too (a hermodctl process per change: its start-up is in both).
With --freeze, origin-a is SIGSTOPped instead (a hung origin whose connections stay open:
hermodctl leaves it after RESEND_AFTER_MS without an answer), and SIGCONTed after the round.

  HERMOD_BUILD=build python3 bench/failover.py [--rounds N] [--dir DIR] [--freeze]
"""

import argparse
import signal
import statistics
import threading
import time

import etcd_bench as eb  # puts tests/integration on sys.path
import etcd_util as eu
import hermod_test as ht


class Loop:
    """The hermodctl loop; acks: monotonic time of each acknowledgement."""

    def __init__(self, o, control):
        self.o, self.control = o, control
        self.acks, self.errors = [], []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        i = 0
        while not self.stopping:
            r = self.o.ctl("--control", self.control, "--timeout", "5s", "--reply-timeout",
                           "30s", "dyno", "put", "bench", "web.%d" % (i % 1000),
                           "127.0.0.1:%d" % (10000 + i % 50000), control=False)
            if r.rc == 0:
                self.acks.append(time.monotonic())
            else:
                self.errors.append(r)
            i += 1

    def stop(self):
        self.stopping = True
        self.thread.join(60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--dir", default="/var/tmp", help="where etcd keeps its data (a real disk)")
    ap.add_argument("--freeze", action="store_true", help="SIGSTOP instead of SIGKILL")
    a = ap.parse_args()
    with eb.run_dir("failover", a.dir) as (env, root):
        c = eu.EtcdCluster(env, 3, data_root=root)
        oa, ob = (eb.origin(env, root, c, n) for n in ("origin-a", "origin-b"))
        oa.apply([ht.ch_app("bench")])
        loop = Loop(oa, oa.dial_control + "," + ob.dial_control)
        print("# failover: 3 etcd members (data on %s), 2 origins, %s, %d rounds, load %s" % (
            a.dir, "SIGSTOP" if a.freeze else "SIGKILL", a.rounds, eb.load()), flush=True)
        times, gaps = [], []
        for rnd in range(a.rounds):
            n0 = len(loop.acks)
            while len(loop.acks) < n0 + 20:
                time.sleep(0.01)
            window = loop.acks[n0:]
            gaps += [y - x for x, y in zip(window, window[1:])]
            t_kill = time.monotonic()
            if a.freeze:
                oa.proc.send_signal(signal.SIGSTOP)
            else:
                oa.kill()
            while not [t for t in loop.acks if t > t_kill]:
                time.sleep(0.001)
            dt = min(t for t in loop.acks if t > t_kill) - t_kill
            times.append(dt)
            print("round %d: next ack %.0f ms after the kill" % (rnd + 1, dt * 1000),
                  flush=True)
            if a.freeze:
                oa.proc.send_signal(signal.SIGCONT)
            else:
                oa.start()
            ht.wait_for(lambda: eu.heads_equal([oa, ob]), 30, "origin-a to catch up")
        loop.stop()
        print("| measure | p50 | max | rounds |")
        print("| --- | --- | --- | --- |")
        print("| %s of the origin in use -> next ack | %.0f ms | %.0f ms | %d |" % (
            "SIGSTOP" if a.freeze else "SIGKILL", statistics.median(times) * 1000,
            max(times) * 1000, len(times)))
        print("| ack -> next ack, no failure (hermodctl start-up included) | %.0f ms | "
              "%.0f ms | %d acks |" % (statistics.median(gaps) * 1000, max(gaps) * 1000,
                                       len(gaps) + 1))
        if loop.errors:
            print("# %d writes failed, e.g. %r" % (len(loop.errors), loop.errors[0]))


if __name__ == "__main__":
    main()

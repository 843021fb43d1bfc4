"""Attacks on hermod-syncd's guarantees (issue 3, robustness), each a bug that was found and fixed.

* Durability across a crash and a restart: records a killed origin wrote but never fsynced are
  found by the restarted origin (the page cache), which answers and publishes them, so it must
  make them durable first. A power loss is simulated by copying the image of a loop-mounted
  ext4 file system (what reached the "disk"), and the origin is run on the copy.
* A peer that sends requests and never reads the answers must not stall the sync or control
  socket for everyone else (every reply context would wait on its connection forever).
* Multi-part requests that are never finished must cost at most what --max-request allows,
  in memory, not a 512 KiB part table per request.

Fault injection uses the test builds' hook HM_TEST_KILL_AT (journal.c) and, for the power loss,
a loop device (root). Where either is missing the test says so and is skipped.
"""

import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import hermod_test as ht
from hermod_test import T, check, eq, wait_for
from syncd_util import (PROTO_REQ, REQ_ID, Edge, Origin, has_test_hooks, mp, mp_ctl_req, port_of,
                        sp_connect, sp_recv, sp_send, wait_converged)


class LoopFs:
    """A small ext4 file system in an image file, loop-mounted (needs root and loop devices).
    crash_copy() mounts a copy of the image taken now: what a power loss would leave."""

    def __init__(self, env, name, size_mb=64):
        self.env = env
        self.image = env.path(name + ".img")
        self.mnt = env.path(name)
        self.mounts = []
        os.mkdir(self.mnt)
        with open(self.image, "wb") as f:
            f.truncate(size_mb << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", self.image], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=T(60))
        self._mount(self.image, self.mnt)
        env.defer(self.close)

    def _mount(self, image, mnt):
        subprocess.run(["mount", "-o", "loop", image, mnt], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=T(30))
        self.mounts.append(mnt)

    def crash_copy(self, name):
        image = self.env.path(name + ".img")
        mnt = self.env.path(name)
        os.mkdir(mnt)
        # Read through the outer file system's page cache: exactly what the loop device was
        # given; the inner file system's dirty pages never got there.
        shutil.copyfile(self.image, image)
        self._mount(image, mnt)
        return mnt

    def close(self):
        # Lazy: processes still using it are stopped after the cleanups run.
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", m], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=T(30))
        self.mounts = []

    @staticmethod
    def usable(env):
        if os.geteuid() != 0 or not os.path.exists("/dev/loop-control") or \
                shutil.which("mkfs.ext4") is None:
            return False
        try:
            LoopFs(env, "probe", 8).close()
            return True
        except (subprocess.CalledProcessError, OSError):
            return False


def skipped(why):
    print("# skipped: %s" % why, flush=True)


# ---------------------------------------------------------------------------------------------
# 1. What a restarted origin answers and publishes is on disk
# ---------------------------------------------------------------------------------------------


def test_recovered_journal_is_durable_before_it_is_answered(env):
    if not has_test_hooks():
        return skipped("this build has no test hooks (meson -Dtest_hooks=true)")
    if not LoopFs.usable(env):
        return skipped("no loop-mounted file system here (root and loop devices needed)")
    fs = LoopFs(env, "disk")
    data = os.path.join(fs.mnt, "data")
    o = Origin(env, data=data)
    eq(o.ctl("app", "put", "before").rc, 0, "a first change")
    o.stop()
    # The next group of records is written, and the origin dies before its fdatasync().
    o.proc_env = {"HM_TEST_KILL_AT": "journal-fsync:1"}
    o.start()
    o.proc.expected_exit = True
    res = {}

    def client():
        res["r"] = o.ctl("--json", "--reply-timeout", "%ds" % int(T(30)), "app", "put", "kept",
                         timeout=T(40))
    t = threading.Thread(target=client)
    t.start()
    wait_for(lambda: not o.proc.alive(), T(10), "the origin to die before its fsync")
    check(o.proc.returncode == -9, "the hook SIGKILLs the origin (rc %s)" % o.proc.returncode)
    # Restarted, it finds the record (in the page cache) and answers the client's resend.
    o.proc_env = None
    o.start()
    t.join(T(40))
    r = res.get("r")
    check(r is not None and r.rc == 0, "hermodctl must get its answer from the restarted origin "
          "(%r)" % r)
    seq = r.json()["seq"]
    eq(seq, 2, "seq of the change that was written before the crash")
    # Power loss now: the change was acknowledged, so it must be on disk.
    crashed = fs.crash_copy("after-power-loss")
    o2 = Origin(env, name="origin-after", data=os.path.join(crashed, "data"), wait=False)
    wait_for(lambda: ht.admin_ready(o2.admin) or not o2.proc.alive(), T(10),
             "the origin on the power-loss copy")
    if not o2.proc.alive():
        o2.proc.expected_exit = True
        ht.fail("after a power loss that followed the restart, the origin cannot start: "
                "%s" % o2.proc.tail(3))
    st = o2.status()
    check(st["seq"] >= seq, "an acknowledged change was lost in a power loss after the "
          "restart: the origin comes back at seq %d, the change was acknowledged as seq %d" %
          (st["seq"], seq))
    eq(st["seq"], o.status()["seq"], "the recovered copy holds the same seq")
    eq(st["digest"], o.status()["digest"], "and the same state")



# ---------------------------------------------------------------------------------------------
# 2. A peer that never reads its answers holds no reply context for long
# ---------------------------------------------------------------------------------------------


class Flood:
    """A REQ peer with a tiny receive buffer that sends whole frames (SP-framed requests), as
    fast as the origin takes them, on a thread, and never reads an answer."""

    def __init__(self, env, port, frames, pause=0):
        self.pause = pause
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=T(5))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.sock.sendall(b"\x00SP\x00" + struct.pack(">H", PROTO_REQ) + b"\x00\x00")
        check(len(self.sock.recv(8)) == 8, "SP handshake")
        self.sock.settimeout(None)
        self.sent = 0
        self.thread = threading.Thread(target=self._run, args=(frames,), daemon=True)
        self.thread.start()
        env.defer(self.close)

    def _run(self, frames):
        try:
            for f in frames:
                self.sock.sendall(f)  # whole frames only: blocks when the origin stops reading
                self.sent += 1
                time.sleep(self.pause)
        except OSError:
            pass  # disconnected by the origin

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(T(5))


def req_frame(i, body):
    return struct.pack(">Q", 4 + len(body)) + struct.pack(">I", 0x80000000 | i) + body


def still_open(s, seconds):
    """True if the peer keeps the connection open for that long (reading and dropping what it
    sends)."""
    s.settimeout(0.2)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if not s.recv(1 << 20):
                return False
        except socket.timeout:
            pass
        except OSError:
            return False
    return True


def test_sync_socket_survives_a_peer_that_never_reads(env):
    o = Origin(env)
    o.apply([{"op": "app.put", "app": "big"}])
    for i in range(4):
        o.apply([{"op": "dyno.put", "app": "big", "dyno": "web.%d" % (i * 5000 + k),
                  "addr": "10.%d.%d.%d:80" % (i, k >> 8, k & 255)} for k in range(5000)])
    epoch = int(o.status()["epoch"], 16)
    # 40 catch-ups from seq 0 (about 1 MiB each) on one connection, never read, one every
    # 50 ms: pipelined faster, the origin would answer one and drop the rest (issue 10).
    f = Flood(env, port_of(o.sync), [req_frame(i, mp([3, 1, epoch, 0, 0])) for i in range(40)],
              pause=0.05)
    wait_for(lambda: f.sent == 40 or not f.thread.is_alive(), T(10), "the requests to go out")
    e = Edge(env, o)
    wait_converged(o, [e], T(10), "an edge to catch up while another peer of the sync socket "
                   "does not read its answers")
    # Only now read (and drop) what the peer was sent: before the origin gives up on it,
    # reading would make it a reader.
    wait_for(lambda: "sync: closed a connection that does not read" in o.proc.stderr(), T(10),
             "the origin to give up on the peer that does not read")
    check(not still_open(f.sock, T(10)), "the peer that does not read must be disconnected")
    o.apply([{"op": "app.put", "app": "after"}])
    wait_converged(o, [e], T(10), "the edge after the slow peer is gone")


def test_control_socket_survives_a_peer_that_never_reads(env):
    o = Origin(env)
    garbage = mp([99, 1, 1, 2])  # answered with an ERROR each
    # Requests as fast as the origin takes them: its answers fill the connection's buffers,
    # and then every further answer has to wait behind them.
    floods = [Flood(env, port_of(o.control), (req_frame(i, garbage) for i in range(500000)))
              for _ in range(4)]
    last, since = -1, time.monotonic()
    while any(f.thread.is_alive() for f in floods) and time.monotonic() - since < 2:
        n = o.status()["bad_requests"]
        if n != last:
            last, since = n, time.monotonic()
        check(all(f.sent < 500000 for f in floods), "the origin took every request at once")
        time.sleep(0.1)
    sent = sum(f.sent for f in floods)
    r = o.ctl("--reply-timeout", "%ds" % int(T(8)), "app", "put", "x", timeout=T(20))
    eq(r.rc, 0, "hermodctl while other control peers do not read their answers (%d requests "
       "sent, %d answered): %r" % (sent, last, r))
    # Replies that waited behind unread ones were given up and their connections closed, when
    # any did: on loopback a flooding connection's own TCP stream sometimes stalls first (in
    # retransmission back-off), and then it holds a socket but no context. Reported, not
    # asserted; the hermodctl answer above is the property (it failed without the deadline).
    time.sleep(T(3))
    print("# connections closed for not reading: %d" %
          o.proc.stderr().count("does not read its replies"), flush=True)
    eq(o.ctl("app", "put", "y").rc, 0, "hermodctl afterwards")


# ---------------------------------------------------------------------------------------------
# 3. Unfinished multi-part requests cost what --max-request allows
# ---------------------------------------------------------------------------------------------


def test_unfinished_multi_part_requests_are_bounded(env):
    proc_env = None
    if ht.SANITIZED:
        # Freed memory held in ASan's quarantine would count as the origin's.
        proc_env = {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:print_summary=1:"
                    "quarantine_size_mb=0"}
    limit = 1 << 20
    o = Origin(env, extra=["--max-request", str(limit)], proc_env=proc_env)
    s = sp_connect(port_of(o.control), PROTO_REQ)
    before = ht.proc_rss_kib(o.proc.pid)
    staged = refused = 0
    # First parts of requests announcing 65536 parts each, never continued.
    for _ in range(8000):
        sp_send(s, mp_ctl_req(os.urandom(16), [], part=0, nparts=65536), header=REQ_ID)
        rep = sp_recv(s)
        status = rep[4 + 21]
        staged += status == 1
        refused += status == 2
    s.close()
    grew = (ht.proc_rss_kib(o.proc.pid) - before) << 10
    st = o.status()
    print("# %d staged, %d refused; staged_bytes %d; the origin grew by %d KiB" %
          (staged, refused, st["staged_bytes"], grew >> 10), flush=True)
    check(st["staged_bytes"] <= limit, "staged_bytes over --max-request")
    # ASan's allocator (redzones, per-size regions, shadow) costs a few times more per block.
    bound = (12 if ht.SANITIZED else 4) * limit
    check(grew <= bound, "8000 unfinished requests of %d bytes each under --max-request "
          "%d grew the origin by %d KiB (bound %d KiB, %d staged): staged requests must be "
          "bounded by it" % (len(mp_ctl_req(b"r" * 16, [], 0, 65536)), limit, grew >> 10,
                             bound >> 10, staged))
    eq(o.ctl("app", "put", "x").rc, 0, "a request afterwards")


if __name__ == "__main__":
    ht.run(globals())

#!/usr/bin/env python3
"""A whole hermod cluster in network namespaces, for the multi-node drills (standard library only).

Imported by test_cluster_*.py; also run as a program (inside a namespace) for the helper
processes a drill needs:

  python3 cluster_util.py dynos --host IP --dyno NAME=PORT ... --log FILE
      test dynos (dyno.py's server in "hello" mode) that append one line per request to FILE:
      "NAME ARRIVAL WALL", ARRIVAL being the kernel's receive timestamp of the request head
      (SO_TIMESTAMPNS, CLOCK_REALTIME: the same clock as every other process here), so a busy
      Python thread cannot make a request look later than it was.
  python3 cluster_util.py load --target NAME=IP:PORT ... --host HOST --conns K --rate R --out FILE
      a steady load: K keep-alive connections per target, each sending R requests per second,
      one line per request to FILE (see LoadLog).
  python3 cluster_util.py watch --table NAME=PATH ... --out FILE
      polls table files as a router reads them and logs when each first had each seq.
  python3 cluster_util.py ctl-timed -- hermodctl ARGS...
      runs hermodctl with its stdout on a pseudo-terminal and reports when it printed the
      origin's acknowledgement (see Cluster.ctl(timed=True)).

The pieces used by tests:

  Cluster       one origin namespace, N edge namespaces (edge syncd + router each), a dyno
                namespace, a load namespace, on one private bridge (netns.py). The syncd
                sockets use mutual TLS with a PKI made by the test (pki.py); edges dial the
                origin by its certificate's name, which their namespaces resolve. Processes go
                through the harness (env.start with `ip netns exec`), so their exit status and
                sanitizer reports are checked. .ctl() runs hermodctl in the origin's namespace,
                .status()/.dump() read admin sockets, .wait_converged() compares digests,
                .close() stops everything and removes the namespaces (also at exit).
  LoadLog       reads the load generator's records; failures(t0, t1, target) etc.
  DynoLog       reads the dynos' arrival records; WatchLog the table watcher's.
"""

import argparse
import atexit
import json
import os
import pty
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import dyno as dyno_mod  # noqa: E402

SO_TIMESTAMPNS = 35  # Linux; not exported by Python's socket module

# Fixed ports: every node has its own address, so nothing here collides with other tests.
CONTROL_PORT, PUBLISH_PORT, SYNC_PORT = 7400, 7401, 7402
ORIGIN_NAME = "origin.hermod.test"  # the name in the origin's certificate, dialed by edges
ROUTER_PORT, METRICS_PORT = 8080, 9180
DYNO_BASE_PORT = 5000
LOCAL_DYNO_PORT = 5900


# =============================================================================================
# Helper processes (run inside namespaces)
# =============================================================================================


class _TsReader(dyno_mod._Reader):
    """dyno.py's reader, keeping the kernel receive timestamp of the last bytes read."""

    def __init__(self, sock):
        super().__init__(sock)
        self.ts = None

    def fill(self):
        try:
            d, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16))
        except OSError:
            d, anc = b"", []
        if not d:
            raise dyno_mod._Closed()
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack("qq", data[:16])
                self.ts = sec + nsec / 1e9
        self.buf += d


class _Sink:
    """Collects request records and writes them to a file every 20 ms."""

    def __init__(self, path):
        self.f = open(path, "a")
        self.lock = threading.Lock()
        self.lines = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def add(self, line):
        with self.lock:
            self.lines.append(line)

    def _flush(self):
        with self.lock:
            lines, self.lines = self.lines, []
        if lines:
            self.f.write("".join(lines))
            self.f.flush()

    def _run(self):
        while not self.stop.wait(0.02):
            self._flush()

    def close(self):
        self.stop.set()
        self.thread.join()
        self._flush()
        self.f.close()


class TsDyno(dyno_mod.Dyno):
    """dyno.Dyno in hello mode that records each request's kernel arrival time in a _Sink."""

    def __init__(self, name, host, port, sink):
        super().__init__(name=name, host=host, port=port, mode="hello")
        self.sink = sink

    def _serve(self, s, cid, peer):
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        r = _TsReader(s)
        n = 0
        try:
            ctx = {"conn": cid, "peer": "%s:%d" % peer, "flags": set()}
            while True:
                req = dyno_mod._read_head(r)
                if req is None:
                    break
                n += 1
                arrival = r.ts if r.ts is not None else time.time()
                self.sink.add("%s %.6f %.6f\n" % (self.name, arrival, time.time()))
                if not self._dispatch(s, r, req, ctx, n):
                    break
        except (dyno_mod._Closed, OSError, ValueError):
            pass
        finally:
            with self.lock:
                self.open_conns.pop(cid, None)
            try:
                s.close()
            except OSError:
                pass


def main_dynos(argv):
    ap = argparse.ArgumentParser(prog="cluster_util.py dynos")
    ap.add_argument("--host", required=True)
    ap.add_argument("--dyno", action="append", required=True, help="NAME=PORT")
    ap.add_argument("--log", required=True)
    a = ap.parse_args(argv)
    sink = _Sink(a.log)
    dynos = []
    for spec in a.dyno:
        name, port = spec.split("=")
        dynos.append(TsDyno(name, a.host, int(port), sink).start())
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print("ready %d dynos on %s" % (len(dynos), a.host), flush=True)
    while not done.wait(1):
        pass
    for d in dynos:
        d.stop()
    sink.close()
    return 0


def _read_response(sock, buf, deadline):
    """Reads one response from sock (buf: bytes already read). Returns (status, headers dict,
    rest of buf, got_any_byte). Raises OSError/ValueError on failure."""
    got_any = bool(buf)
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        d = sock.recv(65536)
        if not d:
            raise ConnectionError("eof-before-head" if not got_any else "eof-mid-head")
        got_any = True
        buf += d
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError("bad-status-line")
    status = int(parts[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    cl = headers.get("content-length")
    if cl is not None:
        n = int(cl)
        while len(buf) < n:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            d = sock.recv(65536)
            if not d:
                raise ConnectionError("eof-mid-body")
            buf += d
        buf = buf[n:]
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        raise ValueError("unexpected-chunked")
    else:
        headers["connection"] = "close"
    return status, headers, buf


def main_load(argv):
    ap = argparse.ArgumentParser(prog="cluster_util.py load")
    ap.add_argument("--target", action="append", required=True, help="NAME=IP:PORT")
    ap.add_argument("--host", required=True, help="the Host header")
    ap.add_argument("--path", default="/")
    ap.add_argument("--conns", type=int, default=4, help="connections per target")
    ap.add_argument("--rate", type=float, default=25.0, help="requests/s per connection")
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    sink = _Sink(a.out)
    stop = threading.Event()
    req_bytes = ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: hermod-drill\r\n\r\n" %
                 (a.path, a.host)).encode()

    def worker(name, ip, port, conn_no):
        sock, buf, lport = None, b"", 0
        interval = 1.0 / a.rate
        next_t = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if next_t > now:
                if stop.wait(next_t - now):
                    break
            elif now - next_t > 1.0:
                next_t = now  # fell far behind (a stall): do not burst to catch up
            next_t += interval
            t_send = time.time()
            deadline = time.monotonic() + a.timeout
            if sock is None:
                try:
                    sock = socket.create_connection((ip, port), timeout=a.timeout)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    lport = sock.getsockname()[1]
                    buf = b""
                except OSError as e:
                    sink.add("%s %d 0 %.6f %.6f 0 - connect:%s\n" % (
                        name, conn_no, t_send, time.time(), type(e).__name__))
                    sock = None
                    stop.wait(0.05)
                    continue
            try:
                sock.settimeout(a.timeout)
                sock.sendall(req_bytes)
                status, headers, buf = _read_response(sock, buf, deadline)
            except (OSError, ValueError) as e:
                why = str(e) if isinstance(e, (ValueError, ConnectionError)) and \
                    str(e) and " " not in str(e) else type(e).__name__
                sink.add("%s %d %d %.6f %.6f 0 - %s\n" % (name, conn_no, lport, t_send,
                                                           time.time(), why))
                try:
                    sock.close()
                except OSError:
                    pass
                sock = None
                continue
            sink.add("%s %d %d %.6f %.6f %d %s -\n" % (
                name, conn_no, lport, t_send, time.time(), status,
                headers.get("x-dyno", "-") or "-"))
            if headers.get("connection", "").lower() == "close":
                sock.close()
                sock = None

    threads = []
    for spec in a.target:
        name, addr = spec.split("=")
        ip, port = addr.rsplit(":", 1)
        for i in range(a.conns):
            t = threading.Thread(target=worker, args=(name, ip, int(port), i), daemon=True)
            t.start()
            threads.append(t)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.wait(0.5):
        pass
    for t in threads:
        t.join(a.timeout + 1)
    sink.close()
    return 0


class _TableSeq:
    """Reads the published seq of a table file as a router does: the header's `pub` word, then
    the published copy's header (layout: docs/table.md, common/table-t.h). Re-opens the file when
    it is retired or replaced."""

    PUB_OFF, COPY_OFF = 256, 64  # file_hdr.pub, file_hdr.copy_off[2]
    RETIRED = 1 << 63

    def __init__(self, path):
        self.path = path
        self.mm = None
        self.ino = None

    def _open(self):
        import mmap
        try:
            with open(self.path, "rb") as f:
                self.mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                self.ino = os.fstat(f.fileno()).st_ino
        except (OSError, ValueError):
            self.mm = None

    def check_inode(self):
        try:
            if self.mm is not None and os.stat(self.path).st_ino != self.ino:
                self.mm.close()
                self.mm = None
        except OSError:
            pass

    def seq(self):
        if self.mm is None:
            self._open()
            if self.mm is None:
                return None
        mm = self.mm
        pub = struct.unpack_from("<Q", mm, self.PUB_OFF)[0]
        if pub & self.RETIRED:
            mm.close()
            self.mm = None
            return None
        off = struct.unpack_from("<Q", mm, self.COPY_OFF + 8 * (pub & 1))[0]
        seq = struct.unpack_from("<Q", mm, off + 8)[0]
        if struct.unpack_from("<Q", mm, self.PUB_OFF)[0] != pub:
            return None  # changed under us: read again next time
        return seq


def main_watch(argv):
    """Polls table files every 1 ms; writes "NAME TIME SEQ" when a table's seq changes."""
    ap = argparse.ArgumentParser(prog="cluster_util.py watch")
    ap.add_argument("--table", action="append", required=True, help="NAME=PATH")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    tables = [(spec.split("=", 1)[0], _TableSeq(spec.split("=", 1)[1])) for spec in a.table]
    last = {name: None for name, _ in tables}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sink = _Sink(a.out)
    print("ready", flush=True)
    n = 0
    while not stop.is_set():
        time.sleep(0.001)
        now = time.time()
        n += 1
        for name, t in tables:
            if n % 500 == 0:
                t.check_inode()
            seq = t.seq()
            if seq is not None and seq != last[name]:
                last[name] = seq
                sink.add("%s %.6f %d\n" % (name, now, seq))
    sink.close()
    return 0


def main_ctl_timed(argv):
    """Runs a command (hermodctl) with stdout on a pseudo-terminal, so that it is line-buffered
    and its first line arrives the moment it is printed; prints one JSON line: rc, out, err,
    t_start, t_ack (when the first line arrived), t_exit (unix seconds). Being its own small
    process (run at the hermod programs' priority), its timestamps do not wait for the test
    process's interpreter lock."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    master, slave = pty.openpty()
    t_start = time.time()
    p = subprocess.Popen(argv, stdout=slave, stderr=subprocess.PIPE)  # stdin: ours
    os.close(slave)
    out, t_ack = b"", None
    while True:
        try:
            d = os.read(master, 4096)
        except OSError:  # EIO: the other side is closed
            d = b""
        if not d:
            break
        if t_ack is None and b"\n" in out + d:
            t_ack = time.time()
        out += d
    err = p.stderr.read()
    rc = p.wait()
    t_exit = time.time()
    os.close(master)
    print(json.dumps({"rc": rc, "out": out.decode(errors="replace").replace("\r\n", "\n"),
                      "err": err.decode(errors="replace"), "t_start": t_start,
                      "t_ack": t_ack or t_exit, "t_exit": t_exit}), flush=True)
    return 0


# =============================================================================================
# Test side
# =============================================================================================

if __name__ != "__main__":
    import hermod_test as ht
    import netns
    from hermod_test import T, check, fail, wait_for
    from pki import PKI


class Rec:
    """One load-generator request: target (router name), conn (thread number), lport (client
    port, 0 if not connected), t_send, t_end (unix s), status (0: no response), dyno, err."""

    __slots__ = ("target", "conn", "lport", "t_send", "t_end", "status", "dyno", "err")

    def __init__(self, line):
        f = line.split(" ")
        self.target, self.conn, self.lport = f[0], int(f[1]), int(f[2])
        self.t_send, self.t_end = float(f[3]), float(f[4])
        self.status, self.dyno, self.err = int(f[5]), f[6], f[7]

    @property
    def ok(self):
        return self.status == 200

    def __repr__(self):
        return "<%s conn %d port %d sent %.3f +%.0fms: %s %s>" % (
            self.target, self.conn, self.lport, self.t_send, (self.t_end - self.t_send) * 1e3,
            self.status or "no response", self.err if self.err != "-" else self.dyno)


class _LineLog:
    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.partial = ""
        self.items = []

    def poll(self):
        try:
            with open(self.path) as f:
                f.seek(self.pos)
                d = f.read()
        except OSError:
            return self.items
        self.pos += len(d)
        d = self.partial + d
        lines = d.split("\n")
        self.partial = lines.pop()
        for ln in lines:
            if ln:
                self.items.append(self.parse(ln))
        return self.items


class LoadLog(_LineLog):
    parse = staticmethod(Rec)

    def window(self, t0=0.0, t1=1e12, target=None):
        """Requests sent in [t0, t1) (to target, if given)."""
        return [r for r in self.poll() if t0 <= r.t_send < t1 and
                (target is None or r.target == target)]

    def failures(self, t0=0.0, t1=1e12, target=None):
        return [r for r in self.window(t0, t1, target) if not r.ok]

    def summary(self, t0=0.0, t1=1e12, target=None):
        w = self.window(t0, t1, target)
        bad = [r for r in w if not r.ok]
        return "%d requests, %d failed" % (len(w), len(bad))


class DynoLog(_LineLog):
    @staticmethod
    def parse(line):
        name, arrival, wall = line.split(" ")
        return (name, float(arrival), float(wall))

    def arrivals(self, name):
        return [a for n, a, _ in self.poll() if n == name]


class WatchLog(_LineLog):
    """What `cluster_util.py watch` saw: when each node's table file first had each seq."""

    @staticmethod
    def parse(line):
        name, t, seq = line.split(" ")
        return (name, float(t), int(seq))

    def first_seen(self, name, seq):
        """When name's table was first seen at a seq >= seq (None if never)."""
        for n, t, s in self.poll():
            if n == name and s >= seq:
                return t
        return None


def describe_failures(recs, limit=8):
    out = ["%r" % r for r in recs[:limit]]
    if len(recs) > limit:
        out.append("... %d more" % (len(recs) - limit))
    return "; ".join(out)


class CtlResult:
    def __init__(self, rc, out, err, t_start, t_ack, t_exit):
        self.rc, self.out, self.err = rc, out, err
        self.t_start, self.t_ack, self.t_exit = t_start, t_ack, t_exit

    def json(self):
        return json.loads(self.out.strip().splitlines()[-1])

    @property
    def seq(self):
        return self.json()["seq"]

    def __repr__(self):
        return "<hermodctl rc=%d out=%r err=%r>" % (self.rc, self.out[-300:], self.err[-300:])


_live_clusters = []


def _cleanup_at_exit():
    for c in list(_live_clusters):
        c.close(graceful=False)


atexit.register(_cleanup_at_exit)


class Node:
    """A cluster node: a namespace plus, for edges, the syncd/router processes and their files."""

    def __init__(self, cluster, ns_node, name):
        self.cluster = cluster
        self.ns = ns_node
        self.name = name
        self.ip = ns_node.ip
        env = cluster.env
        self.table = env.path("%s.table" % name)
        self.admin = env.path("%s.sock" % name)
        self.syncd = None
        self.router = None

    def argv(self, args):
        return self.ns.argv([str(a) for a in args])


class Cluster:
    """origin + N edges (edge syncd + router) + dynos + load generator, each in a namespace."""

    def __init__(self, env, edges=3, router_workers=2, scale_dynos=20, hermod_nice=None):
        self.env = env
        self.hermod_nice = hermod_nice
        self.processes = []
        self.loads = []
        self.net = netns.Network()
        _live_clusters.append(self)
        env.defer(self.close)
        self.o = Node(self, self.net.add_node("origin"), "origin")
        self.edges = [Node(self, self.net.add_node("edge%d" % (i + 1)), "edge%d" % (i + 1))
                      for i in range(edges)]
        self.d = Node(self, self.net.add_node("dynos"), "dynos")
        self.l = Node(self, self.net.add_node("load"), "load")
        self.router_workers = router_workers
        self.data = env.path("origin-data")
        self.origin_admin = env.path("origin.sock")
        self.scale_dynos = scale_dynos
        # Mutual TLS, as in production (docs/security.md): the origin's certificate names it
        # origin.hermod.test, which each edge's namespace resolves to the origin's address;
        # control clients (hermodctl, on the origin's host) need the control CA's certificate.
        self.pki = PKI(env.path("pki"))
        cluster_ca, control_ca = self.pki.ca("cluster-ca"), self.pki.ca("control-ca")
        self.pki.cluster, self.pki.control = cluster_ca, control_ca
        self.origin_cert = self.pki.leaf("origin", cluster_ca, "serverAuth",
                                         [ORIGIN_NAME, "localhost"])
        self.ctl_cert = self.pki.leaf("control", control_ca, "clientAuth")
        for n in self.edges:
            n.cert = self.pki.leaf(n.name, cluster_ca, "clientAuth", [n.name])
            n.ns.set_hosts({ORIGIN_NAME: self.o.ip})
        self.control = "tls+tcp://localhost:%d" % CONTROL_PORT
        self.dyno_log = DynoLog(env.path("dynos.log"))

    # -- processes
    def start(self, name, node, args, env=None, hermod=False, role="client", **kw):
        """Starts args in node's namespace through the harness (env: the cluster's, or a test's
        own, whose teardown then stops it). hermod=True: a hermod program, run at niceness
        hermod_nice if that is set."""
        if hermod:
            args = self._niced(args)
        p = (env or self.env).start(name, node.argv(args), **kw)
        p.role = role
        if env is None or env is self.env:
            self.processes.append(p)
        return p

    def _niced(self, args):
        """args run at niceness hermod_nice (absolute), if set."""
        if self.hermod_nice is None:
            return list(args)
        adj = self.hermod_nice - os.getpriority(os.PRIO_PROCESS, 0)
        return ["nice", "-n", str(adj)] + [str(a) for a in args]

    def _dead(self, p):
        if not p.alive():
            fail("%s exited (%s) while starting:\n%s" % (p.name, ht._rc_str(p.returncode),
                                                          p.tail()))
        return None

    def nng_pub_leak_suppression(self):
        """nng 1.5.2 sometimes loses a message queued on its PUB socket when a subscriber's
        pipe goes away or the socket closes (nng #1713, "message leak on a cancelled send"):
        LeakSanitizer then reports, at the origin's exit, one message allocated by
        publish_batch() or send_heartbeat() (origin.c), which hand it to nng_sendmsg(). Seen
        about once in ten sanitizer runs of these drills; it is nng's, so only that allocation
        site is suppressed (tests/sanitizer/lsan.supp, which the harness applies everywhere)."""
        return {"LSAN_OPTIONS": "suppressions=%s:print_suppressions=0" % ht.LSAN_SUPPRESSIONS}

    def start_origin(self, wait=True):
        os.makedirs(self.data, exist_ok=True)
        self.o.syncd = self.start("origin", self.o, hermod=True, role="origin",
                                  extra_env=self.nng_pub_leak_suppression(), args=[
            ht.binary("hermod-syncd"), "origin",
            "--control", "tls+tcp://127.0.0.1:%d" % CONTROL_PORT,
            "--publish", "tls+tcp://0.0.0.0:%d" % PUBLISH_PORT,
            "--sync", "tls+tcp://0.0.0.0:%d" % SYNC_PORT, "--data", self.data,
            "--tls-cert", self.origin_cert.pem, "--tls-ca", self.pki.cluster.crt,
            "--control-ca", self.pki.control.crt,
            "--admin", self.origin_admin, "--node", "origin"])
        if wait:
            wait_for(lambda: ht.admin_ready(self.origin_admin) or self._dead(self.o.syncd),
                     T(10), "the origin's admin socket")
        return self.o.syncd

    def start_edge(self, node, wait=True):
        node.syncd = self.start("%s-syncd" % node.name, node, hermod=True, role="edge", args=[
            ht.binary("hermod-syncd"), "edge",
            "--publish", "tls+tcp://%s:%d" % (ORIGIN_NAME, PUBLISH_PORT),
            "--sync", "tls+tcp://%s:%d" % (ORIGIN_NAME, SYNC_PORT),
            "--tls-cert", node.cert.pem, "--tls-ca", self.pki.cluster.crt,
            "--table", node.table, "--admin", node.admin, "--node", node.name])
        if wait:
            wait_for(lambda: ht.admin_ready(node.admin) or self._dead(node.syncd), T(10),
                     "%s's admin socket" % node.name)
        return node.syncd

    def start_router(self, node):
        node.router = self.start("%s-router" % node.name, node, hermod=True, role="router", args=[
            ht.binary("hermod-router"), "--table", node.table,
            "--listen", "0.0.0.0:%d" % ROUTER_PORT, "--workers", self.router_workers,
            "--metrics", "0.0.0.0:%d" % METRICS_PORT])
        wait_for(lambda: len(node.router.children()) >= self.router_workers or
                 self._dead(node.router), T(10), "%s's router workers" % node.name)
        return node.router

    def start_dynos(self):
        names = [("web.%d" % i, DYNO_BASE_PORT + i) for i in range(1, self.scale_dynos + 1)]
        # Two processes, so the dynos are not all behind one interpreter lock.
        self.dyno_procs = []
        for k in range(2):
            part = names[k::2]
            args = [sys.executable, os.path.join(HERE, "cluster_util.py"), "dynos",
                    "--host", self.d.ip, "--log", self.dyno_log.path]
            for n, port in part:
                args += ["--dyno", "%s=%d" % (n, port)]
            self.dyno_procs.append(self.start("dynos-%d" % (k + 1), self.d, args, role="dyno"))
        for p in self.dyno_procs:
            wait_for(lambda: "ready" in p.stdout() or self._dead(p), T(10), "the dynos")

    def start_local_dyno(self, node):
        """A dyno inside node's own namespace on 127.0.0.1 (reachable by that node's router even
        while the node is cut off)."""
        p = self.start("%s-local-dyno" % node.name, node, role="dyno", args=[
            sys.executable, os.path.join(HERE, "dyno.py"), "--host", "127.0.0.1",
            "--port", LOCAL_DYNO_PORT, "--name", "local.1", "--mode", "hello"])
        wait_for(lambda: "listening" in p.stdout() or self._dead(p), T(10), "the local dyno")
        return p

    def start_load(self, name, node, targets, host, conns=4, rate=25.0, timeout=None, env=None):
        """A load generator in node's namespace; targets: {name: "ip:port"}. Returns a LoadLog
        (its .proc is the process)."""
        out = (env or self.env).path("%s.load" % name)
        args = [sys.executable, os.path.join(HERE, "cluster_util.py"), "load", "--host", host,
                "--conns", conns, "--rate", rate, "--timeout", timeout or T(3), "--out", out]
        for tname, addr in targets.items():
            args += ["--target", "%s=%s" % (tname, addr)]
        p = self.start(name, node, args, env=env)
        wait_for(lambda: "ready" in p.stdout() or self._dead(p), T(10), "load generator")
        log = LoadLog(out)
        log.proc = p
        self.loads.append(log)
        return log

    def edge(self, name):
        return next(n for n in self.edges if n.name == name)

    def router_targets(self):
        return {n.name: "%s:%d" % (n.ip, ROUTER_PORT) for n in self.edges}

    # -- control plane
    def ctl(self, *args, input=None, timeout=None, timed=False):
        """hermodctl ARGS in the origin's namespace (control on its loopback). timed: through
        `cluster_util.py ctl-timed`, which records when hermodctl printed its first line (the
        origin's acknowledgement) in .t_ack (else t_ack is when it exited)."""
        cmd = [ht.binary("hermodctl"), "--control", self.control, "--tls-cert",
               self.ctl_cert.pem, "--tls-ca", self.pki.cluster.crt] + list(args)
        if timed:
            cmd = [sys.executable, os.path.join(HERE, "cluster_util.py"), "ctl-timed", "--"] + cmd
            cmd = self._niced(cmd)
        argv = self.o.argv(cmd)
        penv = dict(os.environ)
        penv.pop("HERMOD_CONTROL", None)
        penv.pop("HERMOD_ADMIN", None)
        timeout = timeout or T(60)
        t_start = time.time()
        p = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, env=penv)
        t_exit = time.time()
        if timed:
            try:
                j = json.loads(p.stdout.decode().strip().splitlines()[-1])
            except (ValueError, IndexError):
                fail("ctl-timed failed (%d): %r %r" % (p.returncode, p.stdout[-500:],
                                                       p.stderr[-500:]))
            res = CtlResult(j["rc"], j["out"], j["err"], j["t_start"], j["t_ack"], j["t_exit"])
        else:
            res = CtlResult(p.returncode, p.stdout.decode(errors="replace"),
                            p.stderr.decode(errors="replace"), t_start, t_exit, t_exit)
        for text in (res.out, res.err):
            for pat in ht.SANITIZER_PATTERNS:
                if pat in text:
                    fail("sanitizer report from hermodctl:\n%s" % text[-3000:])
        return res

    def start_watch(self, env):
        """A `cluster_util.py watch` of every edge's table (in the test's env); returns a
        WatchLog (its .proc is the process). It runs at the test's priority, below the hermod
        programs, so that its polling does not delay them: the times it records are when a
        table was *seen* at a seq, at most a few ms after it was."""
        out = env.path("tables.watch")
        args = [sys.executable, os.path.join(HERE, "cluster_util.py"), "watch",
                "--out", out] + ["--table=%s=%s" % (n.name, n.table) for n in self.edges]
        p = env.start("watch", self.o.argv(args))
        wait_for(lambda: "ready" in p.stdout() or self._dead(p), T(10), "the table watcher")
        log = WatchLog(out)
        log.proc = p
        return log

    def apply(self, changes, **kw):
        r = self.ctl("--json", "apply", "-", input=json.dumps({"changes": changes}).encode(), **kw)
        if r.rc != 0:
            fail("hermodctl apply failed: %r" % r)
        return r.seq

    def status(self, node=None):
        return ht.admin_request(node.admin if node else self.origin_admin, "status")

    def dump(self, node=None):
        return ht.admin_request(node.admin if node else self.origin_admin, "dump",
                                timeout=T(20))

    def peek(self, node):
        """The node's table file as a router reads it (seq, digest, ...), or None."""
        p = subprocess.run([ht.binary("hm-tablepeek"), node.table], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=T(10))
        if p.returncode != 0:
            return None
        return json.loads(p.stdout)

    def origin_head(self):
        st = self.status()
        return st["seq"], st["digest"]

    def edge_matches(self, node, seq, digest, table=True):
        try:
            st = self.status(node)
        except (OSError, ValueError):
            return False
        if st.get("seq") != seq or st.get("digest") != digest:
            return False
        if not table:
            return True
        pk = self.peek(node)
        return pk is not None and pk.get("seq") == seq and pk.get("digest") == digest

    def wait_converged(self, nodes=None, timeout=None, what="the edges to converge",
                       table=True):
        """Waits until every node's status (and table file, as a router reads it) holds the
        origin's (seq, digest); returns the seconds it took."""
        nodes = self.edges if nodes is None else nodes
        t0 = time.monotonic()

        def done():
            seq, digest = self.origin_head()
            return all(self.edge_matches(n, seq, digest, table) for n in nodes)
        try:
            wait_for(done, timeout or T(10), what, interval=0.01)
        except ht.TestFailure:
            seq, digest = self.origin_head()
            details = []
            for n in nodes:
                try:
                    st = self.status(n)
                    details.append("%s: seq %s digest %s state %s stale %s" % (
                        n.name, st.get("seq"), st.get("digest"), st.get("state"),
                        st.get("stale")))
                except (OSError, ValueError) as ex:
                    details.append("%s: %s" % (n.name, ex))
            fail("%s: origin at seq %s digest %s; %s" % (what, seq, digest, "; ".join(details)))
        return time.monotonic() - t0

    def metrics(self, node):
        """The router's /metrics text (fetched from inside the node's namespace)."""
        code = ("import urllib.request,sys;"
                "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:%d/metrics',"
                "timeout=5).read().decode())" % METRICS_PORT)
        p = node.ns.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=T(10))
        check(p.returncode == 0, "GET /metrics on %s failed: %s" % (node.name, p.stderr[-300:]))
        return p.stdout.decode()

    def metric(self, node, name):
        total = 0.0
        for ln in self.metrics(node).splitlines():
            if ln.startswith(name + " ") or ln.startswith(name + "{"):
                total += float(ln.rsplit(" ", 1)[1])
        return total

    # -- set-up and tear-down
    def up(self, app="drill", host="drill.test", dynos=2):
        """Starts everything and publishes app (host -> dynos web.1..web.N) plus the node-local
        app "local" (local.test -> 127.0.0.1:LOCAL_DYNO_PORT on each node)."""
        self.app, self.host = app, host
        self.start_dynos()
        self.start_origin()
        for n in self.edges:
            self.start_edge(n)
        for n in self.edges:
            self.start_router(n)
        self.apply([{"op": "app.put", "app": app}, {"op": "domain.put", "domain": host,
                                                    "app": app}] +
                   [self.dyno_change(i) for i in range(1, dynos + 1)] +
                   [{"op": "app.put", "app": "local"},
                    {"op": "domain.put", "domain": "local.test", "app": "local"},
                    {"op": "dyno.put", "app": "local", "dyno": "local.1",
                     "addr": "127.0.0.1:%d" % LOCAL_DYNO_PORT}])
        self.wait_converged(timeout=T(15), what="the edges to get the first state")

    def dyno_change(self, i, op="put"):
        if op == "rm":
            return {"op": "dyno.rm", "app": self.app, "dyno": "web.%d" % i}
        return {"op": "dyno.put", "app": self.app, "dyno": "web.%d" % i,
                "addr": "%s:%d" % (self.d.ip, DYNO_BASE_PORT + i), "state": "up"}

    def close(self, graceful=True):
        """Stops every process (SIGTERM, exit status checked by the harness) in the order of a
        real shutdown, then removes the namespaces. graceful=False: SIGKILL (at exit, after an
        interruption)."""
        if self not in _live_clusters:
            return
        _live_clusters.remove(self)
        problems = []
        # The order of a real shutdown: clients, routers, edges, the origin, then the dynos.
        order = {"client": 0, "router": 1, "edge": 2, "origin": 3, "dyno": 4}
        procs = sorted(reversed(self.processes), key=lambda p: order[p.role])
        try:
            for p in procs:
                if not p.alive():
                    continue
                if graceful:
                    try:
                        p.stop(timeout=T(15))
                    except ht.TestFailure as e:
                        problems.append(str(e))
                else:
                    p.expected_exit = True
                    p.kill_group()
        finally:
            self.net.close()
        if problems:
            fail("; ".join(problems))


if __name__ == "__main__":
    cmds = {"dynos": main_dynos, "load": main_load, "watch": main_watch,
            "ctl-timed": main_ctl_timed}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit("usage: cluster_util.py dynos|load|watch|ctl-timed ...")
    sys.exit(cmds[sys.argv[1]](sys.argv[2:]))

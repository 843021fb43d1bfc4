"""Helpers for the syncd and hermodctl integration tests (Python 3, standard library only).

Built on hermod_test (processes, ports, timeouts, sanitizer checks). The pieces:

  Origin / Edge   a hermod-syncd origin or edge on free loopback ports (or ipc:// paths), with
                  its admin socket; .status(), .restart(), .kill(); Origin.ctl() runs hermodctl.
  wait_converged  waits until every edge (its status and its table file, read as a router
                  reads it) holds the origin's seq and digest.
  SP wire         sp_connect/sp_send/sp_recv speak nng's SP-over-TCP framing, so tests can be a
                  raw or misbehaving peer; mp() is a msgpack encoder for forging messages.
  Forwarder       a second TCP path to an origin socket, that can be killed and restarted.
  CuttingProxy    passes control requests and swallows the n-th answer, closing both ends.
  EvilRelay       subscribes to an origin's publish socket and republishes to edges, and can
                  inject any bytes (garbage, newer versions, forged heartbeats) into the feed.
  Relay           the hm-lossy-relay test tool (5 % loss until told to stop).
"""

import json
import os
import random
import socket
import struct
import subprocess
import threading
import time

import hermod_test as ht
from hermod_test import T, check, fail, wait_for

# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def _urls(env, transport, tag):
    if transport == "ipc":
        return tuple("ipc://%s" % env.path("%s-%s.ipc" % (tag, k))
                     for k in ("control", "publish", "sync"))
    if transport == "tls":
        return tuple("tls+tcp://127.0.0.1:%d" % ht.free_port() for _ in range(3))
    return tuple("tcp://127.0.0.1:%d" % ht.free_port() for _ in range(3))


def dial_url(url):
    """The URL peers dial for a listened URL: over TLS by the origin's certificate name."""
    return url.replace("tls+tcp://127.0.0.1:", "tls+tcp://localhost:")


def port_of(url):
    return int(url.rsplit(":", 1)[1])


class CtlResult:
    def __init__(self, rc, out, err, seconds):
        self.rc, self.out, self.err, self.seconds = rc, out, err, seconds

    def json(self):
        return json.loads(self.out.strip().splitlines()[-1])

    def __repr__(self):
        return "<hermodctl rc=%d out=%r err=%r>" % (self.rc, self.out[-300:], self.err[-300:])


class Origin:
    """A hermod-syncd origin. urls = (control, publish, sync), as listened on; dial_* are what
    edges and hermodctl dial. pki (tests/integration/pki.py) makes it listen with mutual TLS:
    its certificate is pki.origin, peers must chain to pki.cluster (control clients to
    control_ca if given); hermodctl then presents ctl_cert (default pki.ctl_cluster)."""

    def __init__(self, env, name="origin", data=None, transport="tcp", extra=(), urls=None,
                 wait=True, proc_env=None, pki=None, control_ca=None, ctl_cert=None,
                 cert=None):
        self.env = env
        self.proc_env = proc_env
        self.name = name
        self.pki = pki
        if pki is not None and transport == "tcp":
            transport = "tls"
        self.control, self.publish, self.sync = urls or _urls(env, transport, name)
        self.dial_control, self.dial_publish, self.dial_sync = (
            dial_url(u) for u in (self.control, self.publish, self.sync))
        self.data = data or env.path("%s-data" % name)
        self.admin = env.path("%s.sock" % name)
        self.extra = list(extra)
        self.tls_args = []
        self.ctl_cert = ctl_cert
        if pki is not None:
            self.tls_args = ["--tls-cert", (cert or pki.origin).pem, "--tls-ca",
                             pki.cluster.crt]
            if control_ca is not None:
                self.tls_args += ["--control-ca", control_ca.crt]
            self.ctl_cert = ctl_cert or pki.ctl_cluster
        self.proc = None
        # A port free_port() picked can be taken before the origin binds it (another test's
        # outgoing connection gets it as its local port): pick again, when the URLs are ours.
        self._may_repick = wait and urls is None and transport != "ipc"
        self.start(wait)
        for _ in range(4):
            if not self._may_repick or not self._lost_its_port():
                break
            self.proc.expected_exit = True
            self.control, self.publish, self.sync = _urls(env, transport, name)
            self.dial_control, self.dial_publish, self.dial_sync = (
                dial_url(u) for u in (self.control, self.publish, self.sync))
            self.start(wait)
        self._may_repick = False

    def _lost_its_port(self):
        return (self.proc is not None and not self.proc.alive() and
                "Address in use" in self.proc.stderr())

    def argv(self):
        return [ht.binary("hermod-syncd"), "origin", "--control", self.control,
                "--publish", self.publish, "--sync", self.sync, "--data", self.data,
                "--admin", self.admin] + self.tls_args + self.extra

    def start(self, wait=True):
        self.proc = self.env.start(self.name, self.argv(), extra_env=self.proc_env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=None):
        def ready():
            if not self.proc.alive():
                if self._may_repick and self._lost_its_port():
                    return True  # __init__ picks other ports
                fail("%s exited (%s) while starting:\n%s" %
                     (self.proc.name, self.proc.returncode, self.proc.tail()))
            return ht.admin_ready(self.admin)
        return wait_for(ready, timeout or T(10), "%s to be ready" % self.name)

    def status(self):
        return ht.admin_request(self.admin, "status")

    def kill(self):
        self.proc.kill()

    def stop(self):
        return self.proc.stop()

    def restart(self, wait=True):
        if self.proc.alive():
            self.proc.stop()
        return self.start(wait)

    def ctl(self, *args, input=None, timeout=None, env=None, control=True):
        """Runs hermodctl [--control URL] args...; returns a CtlResult."""
        argv = [ht.binary("hermodctl")]
        if control:
            argv += ["--control", self.dial_control]
            if self.ctl_cert is not None and self.dial_control.startswith("tls+"):
                argv += ["--tls-cert", self.ctl_cert.pem, "--tls-ca", self.pki.cluster.crt]
        argv += [str(a) for a in args]
        penv = dict(os.environ)
        for k in ("HERMOD_CONTROL", "HERMOD_ADMIN", "HERMOD_TLS_CERT", "HERMOD_TLS_CA"):
            penv.pop(k, None)
        if env:
            penv.update(env)
        t0 = time.monotonic()
        p = ht.run_bounded(argv, timeout or T(60), input=input, env=penv)
        res = CtlResult(p.returncode, p.stdout.decode(errors="replace"),
                        p.stderr.decode(errors="replace"), time.monotonic() - t0)
        for text in (res.out, res.err):
            for pat in ht.SANITIZER_PATTERNS:
                if pat in text:
                    fail("sanitizer report from hermodctl:\n%s" % text[-3000:])
        return res

    def apply(self, changes, timeout=None):
        """Applies a batch (list of change dicts); returns its seq."""
        r = self.ctl("--json", "apply", "-", input=json.dumps({"changes": changes}).encode(),
                     timeout=timeout)
        if r.rc != 0:
            fail("hermodctl apply failed: %r" % r)
        return r.json()["seq"]


class Edge:
    """A hermod-syncd edge following origin (publish may point at a relay instead). With an
    origin over TLS it presents cert (default: the origin's pki.edge1) and trusts ca (default
    the cluster CA)."""

    def __init__(self, env, origin, name="edge", table=None, publish=None, sync=None, extra=(),
                 wait=True, admin=None, proc_env=None, cert=None, ca=None):
        self.env = env
        self.proc_env = proc_env
        self.origin = origin
        self.name = name
        self.table = table or env.path("%s.table" % name)
        self.admin = admin or env.path("%s.sock" % name)
        self.publish = publish or getattr(origin, "dial_publish", origin.publish)
        self.sync = sync or getattr(origin, "dial_sync", origin.sync)
        self.extra = list(extra)
        self.tls_args = []
        pki = getattr(origin, "pki", None)
        if cert is not None or pki is not None:
            self.tls_args = ["--tls-cert", (cert or pki.edge1).pem,
                             "--tls-ca", (ca or pki.cluster).crt]
        self.proc = None
        self.start(wait)

    def argv(self):
        return [ht.binary("hermod-syncd"), "edge", "--publish", self.publish, "--sync",
                self.sync, "--table", self.table, "--admin", self.admin, "--node",
                self.name] + self.tls_args + self.extra

    def start(self, wait=True):
        self.proc = self.env.start(self.name, self.argv(), extra_env=self.proc_env)
        if wait:
            def ready():
                if not self.proc.alive():
                    fail("%s exited (%s) while starting:\n%s" %
                         (self.proc.name, self.proc.returncode, self.proc.tail()))
                return ht.admin_ready(self.admin)
            wait_for(ready, T(10), "%s admin socket" % self.name)
        return self

    def status(self):
        return ht.admin_request(self.admin, "status")

    def peek(self):
        """The table file as a router sees it (None if there is none)."""
        p = subprocess.run([ht.binary("hm-tablepeek"), self.table], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=T(10))
        if p.returncode != 0:
            return None
        return json.loads(p.stdout)

    def kill(self):
        self.proc.kill()

    def restart(self, wait=True):
        if self.proc.alive():
            self.proc.stop()
        return self.start(wait)


def has_test_hooks():
    """Whether hermod-syncd was built with meson's test_hooks option (HM_TEST_* hooks)."""
    p = subprocess.run([ht.binary("hermod-syncd"), "origin", "--help"], stdout=subprocess.PIPE,
                       timeout=T(10))
    return b"--test-no-watchdog" in p.stdout


def nng_leak_suppression(env):
    """Closing a listener that #1518 has broken leaves nng's objects for it unreachable (its
    stuck pipes keep it from being reaped): ~5 KB inside libnng per repaired listener (more for
    a TLS one: its connection buffers), not a leak in hermod. Only the scan tests, which break
    listeners on purpose, tolerate it."""
    with open(ht.LSAN_SUPPRESSIONS) as f:
        common = f.read()
    path = env.write("lsan.supp", common + "leak:libnng.so\n")
    return {"LSAN_OPTIONS": "suppressions=%s:print_suppressions=0" % path}


def origin_head(origin):
    st = origin.status()
    return st["seq"], st["digest"]


def edge_matches(edge, seq, digest):
    try:
        st = edge.status()
    except (OSError, ValueError):
        return False
    if st.get("seq") != seq or st.get("digest") != digest:
        return False
    pk = edge.peek()
    # The table file's digest is the routing data's; status's covers certificates too.
    return pk is not None and pk["seq"] == seq and pk["digest"] == st["table_digest"]


def cert_peek(path, *hosts):
    """The certificate store at path as a router sees it (tests/tools/hm-certpeek's JSON; hosts:
    names to look up in it too). A store it cannot read fails the test."""
    p = subprocess.run([ht.binary("hm-certpeek"), path] + list(hosts), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=T(10))
    if p.returncode != 0:
        fail("hm-certpeek %s: %s %s" % (path, p.stdout, p.stderr))
    return json.loads(p.stdout)


def wait_converged(origin, edges, timeout=None, what="edges to converge"):
    """Waits until each edge's status and table file hold the origin's (seq, digest); returns
    the seconds it took."""
    t0 = time.monotonic()

    def done():
        seq, digest = origin_head(origin)
        return all(edge_matches(e, seq, digest) for e in edges)
    try:
        wait_for(done, timeout or T(10), what, interval=0.01)
    except ht.TestFailure:
        seq, digest = origin_head(origin)
        details = []
        for e in edges:
            try:
                st = e.status()
                details.append("%s: seq %s digest %s state %s (table %r)" %
                               (e.name, st.get("seq"), st.get("digest"), st.get("state"),
                                e.peek()))
            except (OSError, ValueError) as ex:
                details.append("%s: %s" % (e.name, ex))
        fail("%s: origin at seq %s digest %s; %s" % (what, seq, digest, "; ".join(details)))
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
# Change generators
# ---------------------------------------------------------------------------------------------


def random_changes(rng, n, apps=20):
    """n random changes that are valid when applied in order (a model of the state is kept)."""
    state = {}  # app -> {"domains": set, "dynos": set}
    domains = {}
    out = []
    while len(out) < n:
        r = rng.random()
        if not state or r < 0.08:
            a = "app%d" % rng.randrange(apps)
            out.append({"op": "app.put", "app": a, "maintenance": rng.random() < 0.2,
                        "affinity": rng.random() < 0.3,
                        "balance": rng.choice(["random", "least-conn"])})
            state.setdefault(a, {"dynos": set()})
            continue
        a = rng.choice(sorted(state))
        if r < 0.11:
            out.append({"op": "app.rm", "app": a})
            del state[a]
            for d in [d for d, x in domains.items() if x == a]:
                del domains[d]
        elif r < 0.25:
            d = rng.choice(["%s.example.com" % a, "*.%s.test" % a, "w%d.shared.org" %
                            rng.randrange(30), "*.shared.org"])
            out.append({"op": "domain.put", "domain": d, "app": a})
            domains[d] = a
        elif r < 0.32 and domains:
            d = rng.choice(sorted(domains))
            out.append({"op": "domain.rm", "domain": d})
            del domains[d]
        elif r < 0.45 and state[a]["dynos"]:
            y = rng.choice(sorted(state[a]["dynos"]))
            out.append({"op": "dyno.rm", "app": a, "dyno": y})
            state[a]["dynos"].discard(y)
        else:
            y = "%s.%d" % (rng.choice(["web", "worker"]), rng.randrange(40))
            out.append({"op": "dyno.put", "app": a, "dyno": y,
                        "addr": "10.%d.%d.%d:%d" % (rng.randrange(256), rng.randrange(256),
                                                   rng.randrange(256), rng.randrange(1, 65536)),
                        "state": rng.choice(["up", "up", "starting", "crashed", "down"])})
            state[a]["dynos"].add(y)
    return out


# ---------------------------------------------------------------------------------------------
# nng's SP-over-TCP wire format, for raw and misbehaving peers
# ---------------------------------------------------------------------------------------------

PROTO_PUB, PROTO_SUB, PROTO_REQ, PROTO_REP = 0x20, 0x21, 0x30, 0x31


def sp_header(proto):
    return b"\x00SP\x00" + struct.pack(">H", proto) + b"\x00\x00"


def sp_connect(port, proto, host="127.0.0.1", timeout=None):
    """A TCP connection that has completed the SP handshake as protocol proto."""
    s = socket.create_connection((host, port), timeout=timeout or T(5))
    s.sendall(sp_header(proto))
    got = b""
    while len(got) < 8:
        d = s.recv(8 - len(got))
        if not d:
            raise ConnectionError("peer closed during the SP handshake")
        got += d
    check(got[:4] == b"\x00SP\x00", "bad SP header from the peer: %r" % got)
    return s


def sp_send(s, body, header=b""):
    s.sendall(struct.pack(">Q", len(header) + len(body)) + header + body)


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(min(n - len(buf), 1 << 20))
        if not d:
            return None
        buf += d
    return buf


def sp_recv(s, timeout=None):
    """One message body, or None if the peer closed (socket.timeout propagates)."""
    s.settimeout(timeout or T(5))
    head = _recv_exact(s, 8)
    if head is None:
        return None
    (n,) = struct.unpack(">Q", head)
    return _recv_exact(s, n)


REQ_ID = b"\x80\x00\x00\x01"  # a REQ request id (high bit set), echoed by REP


def closed_within(s, timeout):
    """True if the peer closes the connection within timeout seconds."""
    s.settimeout(timeout)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


# ---------------------------------------------------------------------------------------------
# msgpack (just what hermod's messages use)
# ---------------------------------------------------------------------------------------------


def mp(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if v < 0:
            if v >= -32:
                return struct.pack("b", v)
            return b"\xd3" + struct.pack(">q", v)
        if v < 128:
            return bytes([v])
        if v <= 0xff:
            return b"\xcc" + bytes([v])
        if v <= 0xffff:
            return b"\xcd" + struct.pack(">H", v)
        if v <= 0xffffffff:
            return b"\xce" + struct.pack(">I", v)
        return b"\xcf" + struct.pack(">Q", v)
    if isinstance(v, bytes):
        if len(v) <= 0xff:
            return b"\xc4" + bytes([len(v)]) + v
        return b"\xc6" + struct.pack(">I", len(v)) + v
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xa0 | len(b)]) + b
        if len(b) <= 0xff:
            return b"\xd9" + bytes([len(b)]) + b
        return b"\xdb" + struct.pack(">I", len(b)) + b
    if isinstance(v, (list, tuple)):
        head = bytes([0x90 | len(v)]) if len(v) < 16 else b"\xdd" + struct.pack(">I", len(v))
        return head + b"".join(mp(x) for x in v)
    raise TypeError(type(v))


MSG_BATCH, MSG_HEARTBEAT, MSG_CATCHUP_REQ = 1, 2, 3
MSG_SNAPSHOT_REQ, MSG_CTL_REQ, MSG_CTL_REP = 5, 7, 8


def mp_heartbeat(epoch, seq, digest, version=1, ts=0):
    return mp([MSG_HEARTBEAT, version, epoch, seq, ts or int(time.time() * 1000), digest])


def mp_ctl_req(req_id, changes, part=0, nparts=1):
    """changes: lists as on the wire, e.g. [1, "app", False, False, 0] for app.put."""
    return mp([MSG_CTL_REQ, 1, req_id, part, nparts, changes])


def mp_unpack_head(data):
    """(type, version) of a message, or None."""
    if not data or (data[0] & 0xf0) != 0x90:
        return None
    return data[1], data[2]


# ---------------------------------------------------------------------------------------------
# Relays between the origin's publish socket and edges
# ---------------------------------------------------------------------------------------------


def loopback_listener():
    """A TCP socket listening on 127.0.0.1 at a free port: (socket, port, tcp:// URL)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    port = s.getsockname()[1]
    return s, port, "tcp://127.0.0.1:%d" % port


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def accept_upstream(lsock, upstream):
    """Yields (client, upstream) for each connection accepted on lsock, upstream a new
    connection to 127.0.0.1:upstream (a client whose upstream refuses is closed), until lsock
    is closed."""
    while True:
        try:
            c, _ = lsock.accept()
        except OSError:
            return
        try:
            u = socket.create_connection(("127.0.0.1", upstream))
        except OSError:
            c.close()
            continue
        yield c, u


def cut_all(socks):
    """Shuts down, then closes: a socket another thread is reading from is really closed (its
    peer sees the end) only so."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    close_all(socks)


class StallingProxy:
    """A TCP proxy to 127.0.0.1:port. Its first `stall` connections pass the SP handshake (the
    8-byte headers, each way) and then nothing more, either way, while staying open: a
    connection nng takes for alive though nothing gets through it any more (what nng 1.5.2's
    TLS can leave after its peer died as a message arrived). replies_only: what the client
    sends still passes, the answers do not. Later connections pass everything. .connections
    counts them."""

    def __init__(self, port, stall=1, replies_only=False):
        self.upstream = port
        self.stall = stall
        self.replies_only = replies_only
        self.connections = 0
        self.lsock, self.port, self.url = loopback_listener()
        self.socks = []
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream))
            self.socks += [c, u]
            self.connections += 1
            limit = 8 if self.connections <= self.stall else None
            for a, b, lim in ((c, u, None if self.replies_only else limit), (u, c, limit)):
                threading.Thread(target=self._pump, args=(a, b, lim), daemon=True).start()

    @staticmethod
    def _pump(src, dst, limit):
        passed = 0
        while True:
            try:
                d = src.recv(65536)
            except OSError:
                return
            if not d:
                break
            if limit is not None:
                d = d[:max(0, limit - passed)]
            passed += len(d)
            try:
                if d:
                    dst.sendall(d)
            except OSError:
                return
        if limit is None:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.closing = True
        close_all([self.lsock] + self.socks)


class Forwarder:
    """A TCP forwarder from a loopback port of its own to 127.0.0.1:upstream, byte for byte:
    a second path to one origin socket, that a test can take away (kill: the listener and every
    connection closed, as when an origin dies) and give back (start, on the same port)."""

    def __init__(self, env, upstream):
        self.upstream = upstream
        self.lsock, self.port, self.url = loopback_listener()
        self.socks = []
        self.lock = threading.Lock()
        self.alive = True
        threading.Thread(target=self._accept, args=(self.lsock,), daemon=True).start()
        env.defer(self.kill)

    def _accept(self, lsock):
        for c, u in accept_upstream(lsock, self.upstream):
            with self.lock:
                if not self.alive:
                    close_all([c, u])
                    return
                self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        while True:
            try:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
            except OSError:
                break
        close_all([src, dst])

    def kill(self):
        with self.lock:
            self.alive = False
            socks, self.socks = self.socks, []
        cut_all([self.lsock] + socks)

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        with self.lock:
            self.lsock = s
            self.alive = True
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()


class CuttingProxy:
    """A TCP proxy to 127.0.0.1:upstream that passes everything until the origin's cut-th
    answer: that one it swallows, and it closes both connections and its listener (the origin
    committed, the client never hears so: as if the origin died right after its commit).
    .cut says whether it happened."""

    def __init__(self, env, upstream, cut=1):
        self.upstream = upstream
        self.cut_at = cut
        self.cut = False
        self.lsock, self.port, self.url = loopback_listener()
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()
        env.defer(lambda: close_all([self.lsock] + self.socks))

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream))
            self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, True), daemon=True).start()

    def _pump(self, src, dst, replies):
        # replies: the origin -> client direction of a connection that may be cut. The SP
        # header (8 bytes) passes at once, then each answer is a u64 length and a body.
        buf, header, answers = b"", not replies, 0
        while True:
            try:
                d = src.recv(65536)
                if not d:
                    break
                if not replies:
                    dst.sendall(d)
                    continue
                buf += d
                if not header and len(buf) >= 8:
                    dst.sendall(buf[:8])
                    buf, header = buf[8:], True
                while header and len(buf) >= 8:
                    n = struct.unpack(">Q", buf[:8])[0]
                    if len(buf) < 8 + n:
                        break
                    answers += 1
                    if answers == self.cut_at:
                        self.cut = True
                        cut_all([self.lsock, src, dst])
                        return
                    dst.sendall(buf[:8 + n])
                    buf = buf[8 + n:]
            except OSError:
                break
        close_all([src, dst])


class EvilRelay:
    """SUB from the origin's publish port, PUB to edges (one SP listener), forwarding every
    message; inject(bytes) sends anything to every subscribed edge."""

    def __init__(self, env, origin_publish_port):
        self.lsock, self.port, self.url = loopback_listener()
        self.subs = []
        self.lock = threading.Lock()
        self.stopping = False
        self.forwarded = 0
        self.upstream = sp_connect(origin_publish_port, PROTO_SUB)
        self.threads = [threading.Thread(target=self._accept, daemon=True),
                        threading.Thread(target=self._forward, daemon=True)]
        for t in self.threads:
            t.start()
        env.defer(self.close)

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                c.settimeout(T(5))
                c.sendall(sp_header(PROTO_PUB))
                got = _recv_exact(c, 8)
                if got is None:
                    c.close()
                    continue
                c.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.subs.append(c)

    def _send_all(self, frame):
        with self.lock:
            for c in list(self.subs):
                try:
                    c.sendall(frame)
                except OSError:
                    self.subs.remove(c)
                    c.close()

    def _forward(self):
        while not self.stopping:
            try:
                body = sp_recv(self.upstream, timeout=3600)
            except OSError:
                return
            if body is None:
                return
            self.forwarded += 1
            self._send_all(struct.pack(">Q", len(body)) + body)

    def inject(self, body):
        self._send_all(struct.pack(">Q", len(body)) + body)

    def inject_raw(self, data):
        """Bytes straight onto the stream (not even SP framing)."""
        self._send_all(data)

    def wait_subscribers(self, n=1):
        wait_for(lambda: len(self.subs) >= n, T(10), "%d subscriber(s) on the relay" % n)

    def close(self):
        self.stopping = True
        close_all([self.lsock, self.upstream] + list(self.subs))


class Relay:
    """tests/tools/hm-lossy-relay: drops a share of the origin's published messages."""

    def __init__(self, env, origin, drop=5, seed=1, name="relay"):
        self.url = "tcp://127.0.0.1:%d" % ht.free_port()
        self.proc = env.start(name, [ht.binary("hm-lossy-relay"), "--from", origin.publish,
                                     "--listen", self.url, "--drop", str(drop), "--seed",
                                     str(seed)])
        wait_for(lambda: "ready" in self.proc.stdout() or
                 (not self.proc.alive() and fail("relay exited:\n" + self.proc.tail())),
                 T(10), "the lossy relay")

    def stop_loss(self):
        self.proc.send_signal(10)  # SIGUSR1

    def start_loss(self):
        self.proc.send_signal(12)  # SIGUSR2


# ---------------------------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------------------------


def raw_connect_close(port, n, host="127.0.0.1", path=None):
    """n TCP (or Unix, with path) connections opened and closed at once, as a port scanner or
    a TCP health check does."""
    for _ in range(n):
        if path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = path
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (host, port)
        try:
            s.connect(target)
        except OSError:
            pass
        s.close()


def rng_for(name):
    seed = int(os.environ.get("HM_SEED") or random.randrange(1 << 30))
    print("# %s: HM_SEED=%d" % (name, seed), flush=True)
    return random.Random(seed)

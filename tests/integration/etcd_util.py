"""A real etcd cluster for tests (issue 13), and a driver for hermod's etcd client.

EtcdCluster(env, n) starts n members of Debian's etcd-server (3.4) on loopback, each on two free
ports (client, peer) with its data directory in the test's temp dir (tmpfs: fsync is free there,
so tests are quick; bench/etcd_measure.py puts them on a disk instead). kill(i) sends SIGKILL,
restart(i) starts the member again on its data directory and ports, wait_healthy() waits until
every running member answers and knows a leader. Everything is killed at the test's teardown.
With tls=TlsFiles(...) the members serve https and require client certificates. With
node=netns.Node the members run inside that node's namespace on its address (fixed ports there:
the namespace is the test's own), reached from the test through the bridge's host address.

EtcdTool(env, endpoints) runs tests/tools/hm-etcd (syncd/etcd.c on a libuv loop): call(verb,
args...) sends one command and waits for its result; watch(key, end, rev) starts a watch whose
events collect in events(wid). At teardown it is closed (stdin EOF) and must exit 0 without a
sanitizer report.

available() is False when etcd is not installed: scripts then exit 77 (meson's "skipped").
deploy/dev installs etcd-server, so CI runs them.
"""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import hermod_test as ht
import syncd_util as su
from hermod_test import T, fail, wait_for

ETCD = shutil.which("etcd")


def available():
    return ETCD is not None


def _post(url, path, body, timeout=1.0, ctx=None):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
        return json.loads(r.read())


class TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl in
    dir. Attributes: ca, server_cert, server_key, client (PEM: certificate then key), and
    other_ca (a CA that signed nothing here)."""

    def __init__(self, dir):
        os.makedirs(dir, exist_ok=True)
        self.dir = dir

        def run(*args):
            subprocess.run(["openssl"] + list(args), cwd=dir, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        for ca in ("ca", "other-ca"):
            run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "2",
                "-subj", "/CN=hermod test " + ca)
        with open(os.path.join(dir, "san.cnf"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        for name in ("server", "client"):
            run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name)
            run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", "san.cnf")
        self.ca = os.path.join(dir, "ca.pem")
        self.other_ca = os.path.join(dir, "other-ca.pem")
        self.server_cert = os.path.join(dir, "server.pem")
        self.server_key = os.path.join(dir, "server.key")
        self.client = os.path.join(dir, "client-bundle.pem")
        with open(self.client, "w") as out:
            for part in ("client.pem", "client.key"):
                with open(os.path.join(dir, part)) as f:
                    out.write(f.read())


class Member:
    def __init__(self, name, client_port, peer_port, data_dir, scheme, host="127.0.0.1"):
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = data_dir
        self.url = "%s://%s:%d" % (scheme, host, client_port)
        self.peer_url = "http://%s:%d" % (host, peer_port)
        self.popen = None
        self.log = None
        self.down = False  # killed by the test
        self.id = None  # etcd's member id, once seen

    def alive(self):
        return self.popen is not None and self.popen.poll() is None


class EtcdCluster:
    def __init__(self, env, n=1, name="etcd", data_root=None, tls=None, extra_args=(),
                 node=None):
        if not available():
            fail("etcd is not installed (deploy/dev installs etcd-server)")
        self.env = env
        self.tls = tls
        self.node = node
        self.extra_args = list(extra_args)
        self.token = "hermod-test-%d-%d" % (os.getpid(), int(time.monotonic() * 1000))
        root = data_root or env.path(name)
        os.makedirs(root, exist_ok=True)
        scheme = "https" if tls else "http"
        if node is None:
            ports = [(ht.free_port(), ht.free_port()) for i in range(n)]
        else:
            ports = [(2379 + 10 * i, 2380 + 10 * i) for i in range(n)]
        self.members = [Member("%s%d" % (name, i), ports[i][0], ports[i][1],
                               os.path.join(root, "m%d" % i), scheme,
                               host=node.ip if node is not None else "127.0.0.1")
                        for i in range(n)]
        self.initial = ",".join("%s=%s" % (m.name, m.peer_url) for m in self.members)
        env.defer(self.close)
        for i in range(n):
            self._spawn(i)
        self.wait_healthy()

    @property
    def endpoints(self):
        return [m.url for m in self.members]

    def _spawn(self, i):
        m = self.members[i]
        argv = [ETCD, "--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", self.initial, "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new", "--enable-v2=false"]
        if self.tls:
            argv += ["--cert-file", self.tls.server_cert, "--key-file", self.tls.server_key,
                     "--trusted-ca-file", self.tls.ca, "--client-cert-auth"]
        argv += self.extra_args
        if self.node is not None:
            argv = self.node.argv(argv)
        if m.log is None:
            m.log = open(self.env.path("%s.log" % m.name), "ab")
        m.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=m.log, stderr=m.log,
                                   start_new_session=True)
        m.down = False

    def status(self, i, timeout=1.0):
        """The member's /v3/maintenance/status answer, or None if it does not answer."""
        m = self.members[i]
        ctx = None
        if self.tls:
            import ssl
            ctx = ssl.create_default_context(cafile=self.tls.ca)
            ctx.load_cert_chain(self.tls.client)
        try:
            return _post(m.url, "/v3/maintenance/status", {}, timeout=timeout, ctx=ctx)
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def wait_healthy(self, timeout=None):
        """Waits until every running member answers and follows a leader that is alive (a
        killed leader stays in its followers' status until their election timeout)."""
        def ok():
            statuses = {}
            for i, m in enumerate(self.members):
                if m.popen is None or m.down:
                    continue
                if not m.alive():
                    fail("etcd member %s exited (status %s); log %s" %
                         (m.name, m.popen.returncode, self.env.path("%s.log" % m.name)))
                statuses[i] = self.status(i)
                if statuses[i] is None:
                    return False
                m.id = statuses[i]["header"]["member_id"]
            live = {self.members[i].id for i in statuses}
            return all(st.get("leader", "0") in live for st in statuses.values())
        wait_for(ok, timeout or T(30), "etcd members to answer with a live leader", interval=0.1)

    def leader_index(self):
        for i, m in enumerate(self.members):
            if m.alive():
                s = self.status(i)
                if s is not None and s.get("leader") == s["header"]["member_id"]:
                    return i
        return None

    def kill(self, i):
        m = self.members[i]
        m.down = True
        if m.alive():
            m.popen.send_signal(signal.SIGKILL)
        if m.popen is not None:
            m.popen.wait(T(10))

    def restart(self, i):
        """Starts member i again on its data directory (it rejoins and catches up by Raft)."""
        self.kill(i)
        self._spawn(i)
        self.wait_healthy()

    def close(self):
        for i, m in enumerate(self.members):
            if m.popen is not None:
                try:
                    os.killpg(m.popen.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                m.popen.wait(T(10))
            if m.log is not None:
                m.log.close()


class EtcdTool:
    """tests/tools/hm-etcd: the client under test, driven one command line at a time."""

    def __init__(self, env, endpoints, name="hm-etcd", timeout_ms=None, connect_timeout_ms=None,
                 ca=None, cert=None):
        argv = [ht.binary("hm-etcd"), "--endpoints", ",".join(endpoints)]
        if timeout_ms is not None:
            argv += ["--timeout", str(int(timeout_ms))]
        if connect_timeout_ms is not None:
            argv += ["--connect-timeout", str(int(connect_timeout_ms))]
        if ca:
            argv += ["--ca", ca]
        if cert:
            argv += ["--cert", cert]
        penv = dict(os.environ)
        penv.setdefault("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:print_summary=1")
        penv.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1:print_summary=1")
        if ht.SANITIZED:
            penv.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0" %
                            ht.LSAN_SUPPRESSIONS)
        self.env = env
        self.name = name
        self.stderr_path = env.path("%s.stderr" % name)
        self._err = open(self.stderr_path, "wb")
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._err, env=penv, start_new_session=True)
        self.lines = []
        self.cond = threading.Condition()
        self.next_id = 0
        self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        env.defer(self.close)
        self.wait_line(lambda d: d.get("id") == "ready", T(10), "hm-etcd to start")

    def _read(self):
        for raw in self.popen.stdout:
            try:
                d = json.loads(raw)
            except ValueError:
                d = {"unparsed": raw.decode(errors="replace")}
            with self.cond:
                self.lines.append(d)
                self.cond.notify_all()

    def wait_line(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for d in self.lines:
                    if pred(d):
                        return d
                left = deadline - time.monotonic()
                if left <= 0 or self.popen.poll() is not None:
                    fail("no answer from hm-etcd for %s (exit status %s); stderr: %s" % (
                        what, self.popen.poll(), ht._read(self.stderr_path, 4096)[-2000:]))
                self.cond.wait(min(left, 0.2))

    def send(self, verb, *args):
        """Sends a command; returns its id (wait with result(id))."""
        self.next_id += 1
        cid = "c%d" % self.next_id
        line = " ".join([cid, verb] + [str(a) for a in args]) + "\n"
        self.popen.stdin.write(line.encode())
        self.popen.stdin.flush()
        return cid

    def result(self, cid, timeout=None):
        return self.wait_line(lambda d: d.get("id") == cid and "ev" not in d, timeout or T(20),
                              "the result of %s" % cid)

    def call(self, verb, *args, timeout=None):
        return self.result(self.send(verb, *args), timeout)

    def ok(self, verb, *args, timeout=None):
        r = self.call(verb, *args, timeout=timeout)
        if r.get("err") != 0:
            fail("%s %s: %s (%s)" % (verb, " ".join(str(a) for a in args), r.get("errname"),
                                     r.get("msg")))
        return r

    def watch(self, key, end, rev):
        r = self.call("watch", key, end, rev)
        if r.get("err") != 0:
            fail("watch %s: %s" % (key, r.get("errname")))
        return r["id"]

    def batches(self, wid):
        with self.cond:
            return [d for d in self.lines if d.get("id") == wid and "ev" in d]

    def events(self, wid):
        return [e for d in self.batches(wid) for e in d["ev"]]

    def final(self, wid):
        with self.cond:
            for d in self.lines:
                if d.get("id") == wid and d.get("final"):
                    return d
        return None

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        rc = None
        try:
            rc = self.popen.wait(T(15))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._err.close()
        text = ht._read(self.stderr_path)
        for p in ht.SANITIZER_PATTERNS:
            i = text.find(p)
            if i >= 0:
                fail("sanitizer report in %s's log:\n%s" % (self.name, text[max(0, i - 200):
                                                                              i + 1500]))
        if rc != 0:
            fail("%s exited with status %s; stderr: %s" % (self.name, rc, text[-2000:]))


def origin(env, cluster, name, extra=(), endpoints=None, **kw):
    """`hermod-syncd origin --store etcd:ENDPOINTS --node name` plus extra (ENDPOINTS: the
    cluster's unless given, e.g. a proxy's); kw go to syncd_util.Origin (wait, proc_env, data)."""
    spec = "etcd:" + ",".join(endpoints or cluster.endpoints)
    return su.Origin(env, name=name, extra=["--store", spec, "--node", name] + list(extra), **kw)


def heads_equal(origins):
    """The common head (seq, digest) once every origin publishes the same one, else None."""
    hs = [su.origin_head(o) for o in origins]
    return hs[0] if all(h == hs[0] for h in hs) else None


def wait_same(origins, seq=None, what="origins to agree"):
    """Waits until the origins publish one head, at seq or later if given; returns it."""
    def ok():
        h = heads_equal(origins)
        return h if h is not None and (seq is None or h[0] >= seq) else None
    return wait_for(ok, T(20), what)

"""hermod integration-test harness (Python 3, standard library only).

Every integration test script imports this module. It starts the real programs on loopback
(127.0.0.0/8 only), captures their logs, checks them for sanitizer reports, and tears everything
down even when a test fails. The pieces:

  Binaries      binary("hermod-router") finds a program under $HERMOD_BUILD (set by meson).
  Timing        SLOW is 3 in a sanitizer build (1 otherwise); T(seconds) scales a timeout by it.
                wait_for(pred, timeout, what) polls until pred() is truthy.
  Processes     env.start(name, argv[, nofile=N]) -> Process (nofile: its RLIMIT_NOFILE, soft
                and hard): logs in files, stop() sends SIGTERM and asserts
                exit 0, kill() sends SIGKILL; at teardown a process that died on its own or whose
                log holds a sanitizer report fails the test.
  Routing state env.routing() -> a Routing backend: "cluster" (hermod-syncd origin + edge,
                published with hermodctl) when those programs exist, else "direct" (the test tool
                hm-tablectl writes the table). HERMOD_TEST_BACKEND=direct|cluster forces one.
                Both block until the change is visible in the node's table.
  Router        env.router(**flags) -> Router: a hermod-router on a free loopback port, reading
                env.table; its access log (logfmt on stdout) is parsed by router.logs() and
                router.wait_log(...).
  HTTP client   Conn(port): raw bytes in, parsed Response out (Content-Length, chunked,
                close-delimited; ordered headers with duplicates; whether the peer closed).
                request_bytes(...) builds a request; chunked(...) a chunked body; http_get(...)
                does one exchange; expect_error(router, raw, status, code) checks a
                router-generated error end to end (status, Connection: close, the close, and
                the log line's at/code/desc against HCODES).
  Dynos         env.dyno(name, ...) -> dyno.Dyno, an in-process misbehaving HTTP server (its
                behaviours are listed in dyno.py); env.blackhole() an address whose connects
                time out; free_port() one that refuses.
  Changes       ch_app/ch_domain/ch_dyno/..._rm build the contract's batch changes;
                env.routing().apply([...]) or .app(name, domains, dynos, **settings).
  Runner        run(globals()) runs every test_* function of a script with a fresh Env, prints
                "ok NAME" or "FAIL NAME: reason" (plus log tails) and exits 1 if any failed.
                A test taking a second parameter shares the script's fixture(env) value (one
                router and dyno for many cases; rebuilt if a shared process dies or logs a
                sanitizer report, which fails the test that saw it).
                Arguments select tests by substring; HM_KEEP=1 keeps temp dirs of failed tests.
"""

import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import dyno as dyno_mod  # noqa: E402  (tests/integration/dyno.py)

# ---------------------------------------------------------------------------------------------
# Binaries and build facts
# ---------------------------------------------------------------------------------------------

SRC_ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.abspath(os.environ.get("HERMOD_BUILD") or os.path.join(SRC_ROOT, "build"))

_BINARIES = {
    "hermod-syncd": "syncd/hermod-syncd",
    "hermodctl": "syncd/hermodctl",
    "hermod-router": "router/hermod-router",
}


LSAN_SUPPRESSIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "sanitizer", "lsan.supp")


def binary(name, required=True):
    """Path of a built program: hermod-syncd, hermodctl, hermod-router, or a test tool (built
    in tests/tools/, e.g. hm-tablectl). Fails the test if required and missing, else None."""
    rel = _BINARIES.get(name, os.path.join("tests", "tools", name))
    path = os.path.join(BUILD, rel)
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    if required:
        fail("%s is not built (looked for %s)" % (name, path))
    return None


def _sanitized_build():
    try:
        with open(os.path.join(BUILD, "meson-info", "intro-buildoptions.json")) as f:
            for opt in json.load(f):
                if opt.get("name") == "b_sanitize":
                    return opt.get("value") not in (None, "", "none")
    except (OSError, ValueError):
        pass
    return False


SANITIZED = _sanitized_build()
SLOW = float(os.environ.get("HM_TEST_SLOW") or (3 if SANITIZED else 1))


def T(seconds):
    """A timeout scaled for slow (sanitizer) builds."""
    return seconds * SLOW


# ---------------------------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------------------------


class TestFailure(AssertionError):
    pass


def fail(msg):
    raise TestFailure(msg)


def stacks(pid):
    """Every thread's backtrace of a running process (gdb attached in batch mode), or why not:
    what a test reports about a program that did not finish in time."""
    try:
        p = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "(no backtrace: %s)" % e
    lines = p.stdout.decode(errors="replace").splitlines()
    return "\n".join(ln for ln in lines if ln.startswith(("#", "Thread")))


def run_bounded(argv, timeout, input=None, env=None):
    """subprocess.run(argv) with stdout and stderr captured, that fails the test (TestFailure)
    if the program has not finished after timeout seconds, saying what it wrote to stderr and
    where each of its threads was (stacks()) before it was killed."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else None,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        where = stacks(p.pid)
        p.kill()
        out, err = p.communicate()
        fail("%s did not finish within %.0f s: %s\nstderr: %s\nits threads:\n%s" % (
            os.path.basename(argv[0]), timeout, " ".join(map(str, argv[1:])),
            err.decode(errors="replace")[-2000:], where))
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def check(cond, msg):
    if not cond:
        fail(msg)


def eq(got, want, what):
    if got != want:
        fail("%s: expected %r, got %r" % (what, want, got))


def wait_for(pred, timeout, what, interval=0.02):
    """Polls pred() until it returns something truthy (returned), or fails after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            fail("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------------

_port_lock = threading.Lock()
_ports_given = set()


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now (the kernel's choice, never handed out twice by
    this process). Nothing listens on it until the caller binds it, so it also serves as a
    refusing dyno address."""
    with _port_lock:
        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    fail("no free port")


def port_open(port, host="127.0.0.1", timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Blackhole:
    """A loopback address whose connects time out: a listener with a full accept queue (its SYNs
    are dropped). Used for dynos that cannot be reached (H19)."""

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(0)
        self.host, self.port = self.sock.getsockname()
        self.fillers = []
        for _ in range(8):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            c.connect_ex((self.host, self.port))
            self.fillers.append(c)
            _, w, _ = select.select([], [c], [], 0.1)
            if not w:
                break  # this one is stuck in SYN_SENT: the queue is full
        else:
            fail("could not fill the accept queue of a blackhole listener")

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def close(self):
        for c in self.fillers:
            c.close()
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                      "ERROR: UndefinedBehaviorSanitizer", "WARNING: AddressSanitizer")


def _read(path, limit=None):
    try:
        with open(path, "rb") as f:
            if limit is not None:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def proc_children(pid):
    """Pids whose parent is pid (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        rest = st[st.rfind(")") + 2:].split()
        if len(rest) > 1 and rest[0] != "Z" and int(rest[1]) == pid:
            out.append(int(d))
    return sorted(out)


def proc_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Process:
    """A program started by a test; stdout and stderr go to files in the test's temp dir."""

    def __init__(self, env, name, argv, extra_env=None, cwd=None, nofile=None):
        self.env = env
        self.name = name
        self.argv = [str(a) for a in argv]
        self.stdout_path = env.path("%s.stdout" % name)
        self.stderr_path = env.path("%s.stderr" % name)
        penv = dict(os.environ)
        # Sanitizer reports must reach stderr (the log we scan) and make the process fail.
        penv.setdefault("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:print_summary=1")
        penv.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1:print_summary=1")
        if SANITIZED:
            # Known leaks inside libraries (each documented in the file), for every process.
            penv.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0" %
                            LSAN_SUPPRESSIONS)
        if extra_env:
            penv.update(extra_env)
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        def limits():
            if nofile is not None:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        try:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                          stderr=self._err, env=penv, cwd=cwd or env.tmpdir,
                                          start_new_session=True, preexec_fn=limits)
        except OSError as e:
            fail("cannot start %s (%s): %s" % (name, self.argv[0], e))
        self.pid = self.popen.pid
        self.expected_exit = False  # set when the test stopped or killed it
        self.problems = []
        self._scanned = 0

    def __repr__(self):
        return "<%s pid %d>" % (self.name, self.pid)

    # -- state
    def alive(self):
        return self.popen.poll() is None

    @property
    def returncode(self):
        return self.popen.poll()

    def children(self):
        return proc_children(self.pid)

    def stdout(self):
        return _read(self.stdout_path)

    def stderr(self):
        return _read(self.stderr_path)

    def tail(self, n=25):
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            lines = _read(path, 64 * 1024).splitlines()[-n:]
            if lines:
                parts.append("  --- %s %s (last %d lines)\n" % (self.name, label, len(lines)) +
                             "\n".join("  | " + ln[:400] for ln in lines))
        return "\n".join(parts)

    def sanitizer_report(self):
        for path in (self.stderr_path, self.stdout_path):
            text = _read(path)
            for p in SANITIZER_PATTERNS:
                i = text.find(p)
                if i >= 0:
                    return text[max(0, i - 200):i + 1500]
        return None

    def new_sanitizer_report(self):
        """A sanitizer report that appeared in the logs since the last call (for processes
        that live across tests), or None."""
        if not hasattr(self, "_san_pos"):
            self._san_pos = {}
        for path in (self.stderr_path, self.stdout_path):
            text = _read(path)
            start = self._san_pos.get(path, 0)
            self._san_pos[path] = len(text)
            for p in SANITIZER_PATTERNS:
                i = text.find(p, start)
                if i >= 0:
                    return text[max(start, i - 200):i + 1500]
        return None

    # -- control
    def send_signal(self, sig):
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=None, expect_rc=0):
        """SIGTERM; waits (default T(10) s) and asserts the exit status (0)."""
        if not self.alive():
            rc = self.returncode
            self.expected_exit = True
            if expect_rc is not None and rc != expect_rc:
                fail("%s had already exited with status %s" % (self.name, _rc_str(rc)))
            return rc
        self.expected_exit = True
        self.send_signal(signal.SIGTERM)
        rc = self.wait(timeout if timeout is not None else T(10))
        if rc is None:
            self.kill_group()
            fail("%s did not exit within %.0fs of SIGTERM" %
                 (self.name, timeout if timeout is not None else T(10)))
        if expect_rc is not None and rc != expect_rc:
            fail("%s exited with status %s after SIGTERM (expected %d)" %
                 (self.name, _rc_str(rc), expect_rc))
        return rc

    def kill(self, sig=signal.SIGKILL):
        """Kills the process (expected death) and reaps it."""
        self.expected_exit = True
        self.send_signal(sig)
        self.wait(T(10))

    def kill_group(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.wait(T(10))

    def close_files(self):
        for f in (self._out, self._err):
            try:
                f.close()
            except OSError:
                pass


def _rc_str(rc):
    if rc is None:
        return "running"
    if rc < 0:
        try:
            return "killed by %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return str(rc)


# ---------------------------------------------------------------------------------------------
# logfmt (the router's access log)
# ---------------------------------------------------------------------------------------------

_LOGFMT_RE = re.compile(r'\s*([^\s=]+)(?:=("(?:[^"\\]|\\.)*"|\S*))?')


class LogLine:
    """One logfmt line: .pairs keeps order (keys may repeat), ["key"] gives the first value
    (unquoted), .get(key), .keys(), .raw."""

    def __init__(self, raw):
        self.raw = raw
        self.pairs = []
        self.quoted = {}
        pos = 0
        while pos < len(raw):
            m = _LOGFMT_RE.match(raw, pos)
            if not m or m.end() == pos:
                break
            pos = m.end()
            key, val = m.group(1), m.group(2)
            if val is None:
                val = ""
            q = val.startswith('"') and val.endswith('"') and len(val) >= 2
            if q:
                val = re.sub(r'\\(.)', r'\1', val[1:-1])
            self.pairs.append((key, val))
            self.quoted.setdefault(key, q)

    def get(self, key, default=None):
        for k, v in self.pairs:
            if k == key:
                return v
        return default

    def __getitem__(self, key):
        v = self.get(key)
        if v is None:
            raise KeyError(key)
        return v

    def __contains__(self, key):
        return any(k == key for k, _ in self.pairs)

    def keys(self):
        return [k for k, _ in self.pairs]

    def __repr__(self):
        return "LogLine(%r)" % self.raw


def parse_logfmt(line):
    return LogLine(line.rstrip("\n"))


def is_access_line(ll):
    return "at" in ll and ("status" in ll or "code" in ll)


# ---------------------------------------------------------------------------------------------
# HTTP client with exact bytes
# ---------------------------------------------------------------------------------------------


class Response:
    """A parsed response. headers: list of (name, value) in order, duplicates kept."""

    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.status_line = None
        self.headers = []
        self.body = b""
        self.chunked = False
        self.chunks = []        # sizes of the chunks received, when chunked
        self.trailers = []
        self.framing = None     # "length", "chunked", "close", "none"
        self.closed = False     # the peer closed the connection while/after we read this
        self.complete = True    # False: the body ended early (connection closed or timed out)
        self.raw_head = b""

    def header(self, name, default=None):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return default

    def headers_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def has(self, name):
        return self.header(name) is not None

    def joined(self, name):
        """All values of a list header, split on commas and stripped."""
        out = []
        for v in self.headers_all(name):
            out += [p.strip() for p in v.split(",") if p.strip()]
        return out

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            fail("response body is not JSON: %r" % self.body[:300])

    def __repr__(self):
        return "<Response %s %s %r, %d body bytes%s>" % (
            self.status, self.reason, self.headers[:20], len(self.body),
            ", closed" if self.closed else "")


class ConnectionClosed(TestFailure):
    pass


class Conn:
    """A raw client connection. send() arbitrary bytes, read_response() parses one response."""

    def __init__(self, port, host="127.0.0.1", source=None, timeout=None, connect=True):
        self.port, self.host = port, host
        self.timeout = timeout if timeout is not None else T(10)
        self.buf = b""
        self.eof = False
        self.sock = None
        if connect:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if source:
                self.sock.bind((source, 0))
            self.sock.settimeout(self.timeout)
            try:
                self.sock.connect((host, port))
            except OSError as e:
                self.sock.close()
                fail("connect to %s:%d failed: %s" % (host, port, e))

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def reset(self):
        """Closes with an RST (SO_LINGER 0)."""
        import struct
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise ConnectionClosed("send failed: %s" % e)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    # -- low-level reading
    def _fill(self, deadline):
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(256 * 1024)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _deadline(self, timeout):
        return time.monotonic() + (timeout if timeout is not None else self.timeout)

    def read_some(self, timeout=None):
        """Whatever arrives next (b"" at EOF)."""
        if self.buf:
            d, self.buf = self.buf, b""
            return d
        self._fill(self._deadline(timeout))
        d, self.buf = self.buf, b""
        return d

    def read_exact(self, n, timeout=None):
        deadline = self._deadline(timeout)
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionClosed("connection closed after %d of %d bytes" %
                                       (len(self.buf), n))
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def read_until_close(self, timeout=None):
        deadline = self._deadline(timeout)
        while self._fill(deadline):
            pass
        d, self.buf = self.buf, b""
        return d

    def _read_line(self, deadline, limit=1 << 21):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                return line
            if len(self.buf) > limit:
                fail("line longer than %d bytes" % limit)
            if not self._fill(deadline):
                raise ConnectionClosed("connection closed mid-line (%d bytes: %r)" %
                                       (len(self.buf), self.buf[:200]))

    def wait_closed(self, timeout=None):
        """True if the peer closes the connection within timeout (data before that is
        discarded), False if it is still open."""
        deadline = self._deadline(timeout if timeout is not None else T(3))
        try:
            while self._fill(deadline):
                self.buf = b""
        except socket.timeout:
            return False
        return True

    def is_open(self, wait=0.05):
        """False if the peer has closed (checked without consuming data)."""
        if self.eof:
            return False
        if self.buf:
            return True
        # poll, not select: a test may hold more than FD_SETSIZE sockets.
        p = select.poll()
        p.register(self.sock, select.POLLIN)
        if not p.poll(wait * 1000):
            return True
        try:
            d = self.sock.recv(65536, socket.MSG_PEEK)
        except ConnectionResetError:
            return False
        return bool(d)

    # -- responses
    def read_head(self, timeout=None):
        """Reads one response head (status line + headers)."""
        deadline = self._deadline(timeout)
        r = Response()
        raw = b""
        try:
            line = self._read_line(deadline)
        except ConnectionClosed:
            if not self.buf:
                raise ConnectionClosed("connection closed before any response byte")
            raise
        raw += line
        r.status_line = line.rstrip(b"\r\n").decode("latin-1")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", r.status_line)
        if not m:
            fail("malformed status line from router: %r" % r.status_line)
        r.version, r.status, r.reason = m.group(1), int(m.group(2)), m.group(3) or ""
        while True:
            line = self._read_line(deadline)
            raw += line
            if line in (b"\r\n", b"\n"):
                break
            s = line.rstrip(b"\r\n").decode("latin-1")
            if ":" not in s:
                fail("malformed header line from router: %r" % s)
            k, v = s.split(":", 1)
            r.headers.append((k, v.strip(" \t")))
        r.raw_head = raw
        return r

    def read_response(self, method="GET", timeout=None, interim=False):
        """Reads one response and its body. 1xx responses are skipped unless interim=True (then
        a 1xx is returned as is). method decides whether a body may follow (HEAD)."""
        deadline = self._deadline(timeout)
        while True:
            r = self.read_head(max(0.001, deadline - time.monotonic()))
            if 100 <= r.status < 200 and r.status != 101:
                if interim:
                    r.framing = "none"
                    return r
                continue
            break
        self._read_body(r, method, deadline)
        return r

    def _read_body(self, r, method, deadline):
        te = [t.strip().lower() for v in r.headers_all("transfer-encoding") for t in v.split(",")]
        cl = r.headers_all("content-length")
        try:
            if method == "HEAD" or r.status in (101, 204, 304) or 100 <= r.status < 200:
                r.framing = "none"
            elif te and te[-1] == "chunked":
                r.framing = "chunked"
                r.chunked = True
                body = []
                while True:
                    line = self._read_line(deadline).rstrip(b"\r\n")
                    size = int(line.split(b";")[0].strip(), 16)
                    r.chunks.append(size)
                    if size == 0:
                        break
                    body.append(self.read_exact(size, max(0.001, deadline - time.monotonic())))
                    crlf = self.read_exact(2, max(0.001, deadline - time.monotonic()))
                    if crlf != b"\r\n":
                        fail("chunk not followed by CRLF: %r" % crlf)
                    r.body = b"".join(body)
                r.body = b"".join(body)
                while True:
                    line = self._read_line(deadline)
                    if line in (b"\r\n", b"\n"):
                        break
                    k, _, v = line.rstrip(b"\r\n").decode("latin-1").partition(":")
                    r.trailers.append((k, v.strip()))
            elif cl:
                if len(set(v.strip() for v in cl)) != 1 or not cl[0].strip().isdigit():
                    fail("router sent a bad Content-Length: %r" % cl)
                r.framing = "length"
                n = int(cl[0])
                got = []
                have = 0
                while have < n:
                    take = min(len(self.buf), n - have)
                    if take:
                        got.append(self.buf[:take])
                        self.buf = self.buf[take:]
                        have += take
                        continue
                    if not self._fill(deadline):
                        r.complete = False
                        break
                r.body = b"".join(got)
            else:
                r.framing = "close"
                r.body = self.read_until_close(max(0.001, deadline - time.monotonic()))
        except ConnectionClosed:
            r.complete = False
        except socket.timeout:
            r.complete = False
            if r.framing == "close":
                r.body = self.buf
                self.buf = b""
        r.closed = self.eof
        return r

    def request(self, method="GET", target="/", host=None, headers=None, body=b"",
                version="HTTP/1.1", timeout=None, **kw):
        """Sends one request (see request_bytes) and reads the response."""
        self.send(request_bytes(method, target, host, headers, body, version, **kw))
        return self.read_response(method, timeout)


def request_bytes(method="GET", target="/", host=None, headers=None, body=b"",
                  version="HTTP/1.1", content_length=True):
    """Builds a request. host: the Host header (None: none). headers: list of (name, value) or
    raw strings. A Content-Length is added for a non-empty body unless one is given, or
    content_length=False."""
    if isinstance(body, str):
        body = body.encode("latin-1")
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None:
        lines.append("Host: %s" % host)
    names = set()
    for h in headers or []:
        if isinstance(h, tuple):
            lines.append("%s: %s" % h)
            names.add(h[0].lower())
        else:
            lines.append(h)
            names.add(h.split(":", 1)[0].lower())
    if body and content_length and "content-length" not in names and \
            "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def read_to_eof(sock, timeout):
    """The bytes a socket (plain or TLS) gives until its end (an answer with Connection: close),
    or the exception that ended the wait (a TLS stream that ends without close_notify, on a
    socket made with suppress_ragged_eofs=False, is an ssl.SSLEOFError)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                return data
            data += d
    except OSError as e:
        return e


def http_get(port, target="/", host=None, headers=None, method="GET", body=b"",
             version="HTTP/1.1", timeout=None, source=None):
    """One request on a new connection; returns the Response (closed tells whether the router
    closed the connection right after it)."""
    with Conn(port, source=source, timeout=timeout) as c:
        r = c.request(method, target, host, headers, body, version, timeout=timeout)
        if not r.closed:
            r.closed = not c.is_open(0)
        return r


def chunked(*parts, trailers=None, ext=None):
    """Encodes a chunked body from byte strings (ext: a chunk extension on every chunk)."""
    out = b""
    for p in parts:
        if isinstance(p, str):
            p = p.encode("latin-1")
        out += b"%x%s\r\n%s\r\n" % (len(p), (";" + ext).encode() if ext else b"", p)
    out += b"0\r\n"
    for k, v in trailers or []:
        out += ("%s: %s\r\n" % (k, v)).encode("latin-1")
    return out + b"\r\n"


# ---------------------------------------------------------------------------------------------
# Routing state: two backends behind one interface
# ---------------------------------------------------------------------------------------------


def ch_app(app, maintenance=False, affinity=False, balance="random"):
    return {"op": "app.put", "app": app, "maintenance": maintenance, "affinity": affinity,
            "balance": balance}


def ch_app_rm(app):
    return {"op": "app.rm", "app": app}


def ch_domain(domain, app):
    return {"op": "domain.put", "domain": domain, "app": app}


def ch_domain_rm(domain):
    return {"op": "domain.rm", "domain": domain}


def ch_dyno(app, dyno, addr, state="up"):
    return {"op": "dyno.put", "app": app, "dyno": dyno, "addr": addr, "state": state}


def ch_dyno_rm(app, dyno):
    return {"op": "dyno.rm", "app": app, "dyno": dyno}


class Routing:
    """Writes the node's routing table at .table. apply() blocks until the change is visible."""

    kind = None

    def __init__(self, env, table):
        self.env = env
        self.table = table

    def apply(self, changes):
        raise NotImplementedError

    # conveniences
    def app(self, app, domains=(), dynos=(), **settings):
        """Creates or updates an app with its domains and dynos [(name, addr[, state])]."""
        ch = [ch_app(app, **settings)]
        ch += [ch_domain(d, app) for d in domains]
        for d in dynos:
            ch.append(ch_dyno(app, d[0], d[1], d[2] if len(d) > 2 else "up"))
        self.apply(ch)

    def put_app(self, app, **settings):
        self.apply([ch_app(app, **settings)])

    def put_domain(self, domain, app):
        self.apply([ch_domain(domain, app)])

    def put_dyno(self, app, dyno, addr, state="up"):
        self.apply([ch_dyno(app, dyno, addr, state)])

    def rm_dyno(self, app, dyno):
        self.apply([ch_dyno_rm(app, dyno)])

    def rm_domain(self, domain):
        self.apply([ch_domain_rm(domain)])

    def rm_app(self, app):
        self.apply([ch_app_rm(app)])

    def close(self):
        pass


class DirectRouting(Routing):
    """hm-tablectl --table PATH apply - (the contract's batch JSON on stdin)."""

    kind = "direct"

    def __init__(self, env, table):
        super().__init__(env, table)
        self.tool = binary("hm-tablectl")

    def apply(self, changes):
        data = json.dumps({"changes": changes})
        p = subprocess.run([self.tool, "--table", self.table, "apply", "-"], input=data.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(20))
        if p.returncode != 0:
            fail("hm-tablectl apply failed (%d): %s" %
                 (p.returncode, (p.stderr or p.stdout).decode(errors="replace").strip()))


def admin_read_line(s, buf=b""):
    """Reads from an admin socket until the answer's line ends (or EOF); buf: bytes read so
    far. Returns all of it."""
    while b"\n" not in buf:
        d = s.recv(1 << 20)
        if not d:
            break
        buf += d
    return buf


def admin_stalled(path, line):
    """A reader that stalls: connects to the admin socket at path with a 4 KiB receive buffer,
    sends line and reads the first KiB of the answer. Returns (socket, those bytes); the rest
    is the caller's to read (admin_read_line) once the server has had to wait."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(path)
    s.sendall(line.encode() + b"\n")
    return s, s.recv(1024)


def mount_tmpfs(env, path, size="24m"):
    """Mounts a tmpfs of size on path (created), unmounted at teardown. Returns False, having
    said "# skipped" and why, where mounting is not allowed (not root)."""
    os.makedirs(path)
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if m.returncode != 0:
        print("# skipped: cannot mount a tmpfs here (root needed): %s" %
              m.stdout.decode(errors="replace").strip(), flush=True)
        return False
    env.defer(lambda: subprocess.run(["umount", "-l", path], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL))
    return True


def admin_request(path, line, timeout=None):
    """One request on a syncd admin socket; returns the decoded JSON reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout or T(5))
    try:
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        buf = admin_read_line(s)
    finally:
        s.close()
    return json.loads(buf.split(b"\n", 1)[0].decode())


def admin_ready(path):
    try:
        return admin_request(path, "status", timeout=1)
    except (OSError, ValueError):
        return None


class ClusterRouting(Routing):
    """A real control plane: hermod-syncd origin + one edge writing .table, fed by hermodctl."""

    kind = "cluster"

    def __init__(self, env, table):
        super().__init__(env, table)
        self.syncd = binary("hermod-syncd")
        self.ctl = binary("hermodctl")
        p_ctl, p_pub, p_sync = free_port(), free_port(), free_port()
        self.control = "tcp://127.0.0.1:%d" % p_ctl
        self.publish = "tcp://127.0.0.1:%d" % p_pub
        self.sync = "tcp://127.0.0.1:%d" % p_sync
        self.origin_admin = env.path("origin.sock")
        self.edge_admin = env.path("edge.sock")
        data = env.path("origin-data")
        os.makedirs(data, exist_ok=True)
        self.origin = env.start("origin", [self.syncd, "origin", "--control", self.control,
                                           "--publish", self.publish, "--sync", self.sync,
                                           "--data", data, "--admin", self.origin_admin])
        wait_for(lambda: admin_ready(self.origin_admin) or self._dead(self.origin),
                 T(10), "origin admin socket")
        self.edge = env.start("edge", [self.syncd, "edge", "--publish", self.publish,
                                       "--sync", self.sync, "--table", table,
                                       "--admin", self.edge_admin, "--node", "it-node"])
        wait_for(lambda: admin_ready(self.edge_admin) or self._dead(self.edge),
                 T(10), "edge admin socket")

    def _dead(self, p):
        if not p.alive():
            fail("%s exited (%s) while starting" % (p.name, _rc_str(p.returncode)))
        return None

    def ctl_run(self, args, input=None):
        p = subprocess.run([self.ctl, "--control", self.control] + args, input=input,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(20))
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def apply(self, changes):
        rc, out, err = self.ctl_run(["apply", "-"], json.dumps({"changes": changes}).encode())
        if rc != 0:
            fail("hermodctl apply failed (%d): %s" % (rc, (err or out).strip()))
        st = admin_request(self.origin_admin, "status")
        want = int(st.get("seq", 0))
        wait_for(lambda: int(admin_request(self.edge_admin, "status").get("seq", -1)) >= want,
                 T(5), "the edge to apply seq %d" % want)


def backend_kind():
    """The routing backend tests use: $HERMOD_TEST_BACKEND, else "cluster" when hermod-syncd
    and hermodctl are built, else "direct" when hm-tablectl is, else None."""
    kind = os.environ.get("HERMOD_TEST_BACKEND") or "auto"
    if kind == "auto":
        if binary("hermod-syncd", False) and binary("hermodctl", False):
            return "cluster"
        if binary("hm-tablectl", False):
            return "direct"
        return None
    return kind


def make_routing(env, table, kind=None):
    kind = kind or backend_kind()
    if kind is None:
        fail("no way to write a routing table: neither hermod-syncd+hermodctl nor "
             "hm-tablectl is built in %s" % BUILD)
    if kind == "cluster":
        return ClusterRouting(env, table)
    if kind == "direct":
        return DirectRouting(env, table)
    fail("unknown routing backend %r" % kind)


# ---------------------------------------------------------------------------------------------
# The router
# ---------------------------------------------------------------------------------------------

_router_help = None


def router_flags():
    """The set of --flags that hermod-router --help documents."""
    global _router_help
    if _router_help is None:
        # Only the flag list matters here (test_help checks --help itself), so a leak report
        # at exit must not abort before stdout is flushed.
        penv = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        p = subprocess.run([binary("hermod-router"), "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=T(10), env=penv)
        _router_help = set(re.findall(r"--([a-z][a-z0-9-]*)", p.stdout.decode(errors="replace")))
    return _router_help


class Router(Process):
    """A hermod-router listening on 127.0.0.1:.port. Extra keyword flags become --flag value
    (underscores turn into dashes); a flag the router does not document fails the test."""

    def __init__(self, env, name="router", table=None, workers=1, metrics=False, port=None,
                 wait=True, extra_args=(), nofile=None, extra_env=None, **flags):
        self.table = table or env.table
        self.nworkers = workers
        self.shared = False  # set for a router shared by several tests (see mark())
        self._log_pos = 0
        self._log_lines = []
        self._log_partial = b""
        known = router_flags()
        for attempt in range(5):
            self.port = port or free_port()
            self.metrics_port = free_port() if metrics else None
            argv = [binary("hermod-router"), "--table", self.table,
                    "--listen", "127.0.0.1:%d" % self.port, "--workers", str(workers)]
            if self.metrics_port:
                argv += ["--metrics", "127.0.0.1:%d" % self.metrics_port]
            for k, v in flags.items():
                flag = k.replace("_", "-")
                if flag not in known:
                    fail("hermod-router has no --%s flag (needed by this test)" % flag)
                argv += ["--" + flag, str(v)]
            argv += list(extra_args)
            super().__init__(env, name, argv, extra_env=extra_env, nofile=nofile)
            # A port free_port() picked can be taken before the router binds it (another
            # test's outgoing connection gets it as its local port): pick again, when the
            # ports are ours to pick. Any other start-up failure fails the test.
            if not wait or port is not None or not self._lost_its_port():
                break
        if wait:
            self.wait_ready()

    def _lost_its_port(self):
        wait_for(lambda: not self.alive() or port_open(self.port), T(10),
                 "%s to accept on port %d or exit" % (self.name, self.port))
        return (not self.alive() and self.returncode == 1 and
                "cannot listen on" in self.stderr() and
                "address already in use" in self.stderr().lower())

    def wait_ready(self, timeout=None):
        def ready():
            if not self.alive():
                fail("%s exited (%s) while starting\n%s" % (self.name, _rc_str(self.returncode),
                                                            self.tail(8)))
            return port_open(self.port)
        wait_for(ready, timeout or T(10), "%s to accept on port %d" % (self.name, self.port))
        # Ready also means supervising: the master forks its workers once it handles signals.
        wait_for(lambda: self.children() or not self.alive(), timeout or T(10),
                 "%s to start its workers" % self.name)
        if self.metrics_port:
            wait_for(lambda: port_open(self.metrics_port), timeout or T(10),
                     "%s metrics port" % self.name)

    def workers(self):
        return self.children()

    def wait_workers(self, n=None, timeout=None):
        n = self.nworkers if n is None else n
        return wait_for(lambda: len(self.workers()) == n and self.workers(), timeout or T(5),
                        "%s to have %d workers" % (self.name, n))

    # -- access log
    def _read_log(self):
        try:
            with open(self.stdout_path, "rb") as f:
                f.seek(self._log_pos)
                d = f.read()
        except OSError:
            return
        self._log_pos += len(d)
        d = self._log_partial + d
        lines = d.split(b"\n")
        self._log_partial = lines.pop()
        for ln in lines:
            ll = parse_logfmt(ln.decode("utf-8", "replace"))
            if is_access_line(ll):
                self._log_lines.append(ll)

    def logs(self):
        """Every access-log line so far."""
        self._read_log()
        return list(self._log_lines)

    def mark(self):
        """A position in the access log, for wait_log(since=...). A router shared by several
        tests first lets lines of earlier requests arrive (the router writes its log in
        batches, within 50 ms), so that they are not taken for the next request's."""
        if self.shared:
            time.sleep(0.15)
        self._read_log()
        return len(self._log_lines)

    def wait_log(self, since=0, timeout=None, what="an access-log line", **match):
        """Waits for the first access-log line after position `since` whose fields equal
        **match (e.g. path="/x", status="200"; a callable value is a predicate)."""
        def find():
            self._read_log()
            for ll in self._log_lines[since:]:
                if all((v(ll.get(k)) if callable(v) else ll.get(k) == v)
                       for k, v in match.items()):
                    return ll
            return None
        try:
            return wait_for(find, timeout or T(3), what if not match else
                            "%s with %s" % (what, " ".join("%s=%s" % kv for kv in
                                                          match.items())))
        except TestFailure as e:
            recent = self._log_lines[since:][-5:]
            fail("%s; recent lines: %s" % (e, [l.raw for l in recent] or "none"))

    def get(self, target="/", host=None, **kw):
        return http_get(self.port, target, host, **kw)

    def metrics(self):
        check(self.metrics_port, "router started without metrics=True")
        r = http_get(self.metrics_port, "/metrics", "127.0.0.1:%d" % self.metrics_port)
        eq(r.status, 200, "GET /metrics status")
        return r.body.decode("utf-8", "replace")

    def metric(self, name, labels=None):
        """The value of one sample of /metrics (labels: its exact label text, e.g.
        'code="H99"'), or None if there is no such sample."""
        for line in self.metrics().splitlines():
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
            if m and m.group(1) == name and (labels is None or m.group(2) == labels):
                return float(m.group(3))
        return None


# ---------------------------------------------------------------------------------------------
# The per-test environment
# ---------------------------------------------------------------------------------------------


class Env:
    """Everything one test starts: temp dir, processes, dynos, routing backend, routers.
    teardown() stops and checks all of it."""

    def __init__(self, name):
        self.name = name
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
            else None
        self.tmpdir = tempfile.mkdtemp(prefix="hermod-it-%s-" % name[:40], dir=base)
        self.table = self.path("hermod.table")
        self.processes = []
        self.dynos = []
        self.cleanups = []
        self._routing = None

    def path(self, name):
        return os.path.join(self.tmpdir, name)

    def write(self, name, data, mode=0o600):
        p = self.path(name)
        with open(p, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.chmod(p, mode)
        return p

    def start(self, name, argv, **kw):
        names = {p.name for p in self.processes}
        base, i = name, 2
        while name in names:
            name, i = "%s-%d" % (base, i), i + 1
        p = Process(self, name, argv, **kw)
        self.processes.append(p)
        return p

    def router(self, name="router", **kw):
        names = {p.name for p in self.processes}
        base, i = name, 2
        while name in names:
            name, i = "%s-%d" % (base, i), i + 1
        r = Router(self, name, **kw)
        self.processes.append(r)
        return r

    def routing(self, kind=None):
        """The routing backend (started on first use) writing self.table."""
        if self._routing is None:
            self._routing = make_routing(self, self.table, kind)
        return self._routing

    def dyno(self, name="web.1", **kw):
        d = dyno_mod.Dyno(name=name, **kw).start()
        self.dynos.append(d)
        return d

    def blackhole(self):
        b = Blackhole()
        self.cleanups.append(b.close)
        return b

    def defer(self, fn):
        self.cleanups.append(fn)

    def simple(self, app="app", host=None, dynos=1, router=True, **router_kw):
        """A common set-up: n echo dynos web.1..web.n, app with domain host (default
        APP.test), and a router. Returns (router, [dynos]) (router None if router=False)."""
        host = host or "%s.test" % app
        ds = [self.dyno("web.%d" % (i + 1)) for i in range(dynos)]
        self.routing().app(app, [host], [(d.name, d.addr) for d in ds])
        r = self.router(**router_kw) if router else None
        return r, ds

    def teardown(self):
        """Stops everything; returns a list of problems (empty when all is well)."""
        problems = []
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                problems.append("cleanup failed: %r" % e)
        for d in self.dynos:
            d.stop()
        # Routers first, then the edge, then the origin: the reverse of start order.
        for p in reversed(self.processes):
            if p.alive():
                try:
                    p.stop()
                except TestFailure as e:
                    problems.append(str(e))
            elif not p.expected_exit:
                problems.append("%s died unexpectedly (%s)" % (p.name, _rc_str(p.returncode)))
            # Workers left behind by a router must not outlive the test.
            p.kill_group()
            rep = p.sanitizer_report()
            if rep:
                problems.append("sanitizer report in %s's log:\n%s" % (p.name, rep))
            p.close_files()
        return problems

    def tails(self):
        return "\n".join(t for t in (p.tail() for p in self.processes) if t)

    def remove(self):
        shutil.rmtree(self.tmpdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------

DEFAULT_TEST_TIMEOUT = 40


def timeout(seconds):
    """Decorator: this test may take up to T(seconds) (default 40)."""
    def deco(fn):
        fn.hm_timeout = seconds
        return fn
    return deco


class _TestTimeout(TestFailure):
    pass


def _alarm(signum, frame):
    raise _TestTimeout("test timed out")


class _Shared:
    """The script's fixture(env) result, shared by the tests that take a second argument. It is
    built on first use and rebuilt after a test in which one of its processes died or logged a
    sanitizer report (that test fails with the reason)."""

    def __init__(self, fixture):
        self.fixture = fixture
        self.env = None
        self.value = None

    def get(self):
        if self.env is None:
            self.env = Env("fixture")
            self.value = self.fixture(self.env)
            for p in self.env.processes:
                p.new_sanitizer_report()
                if isinstance(p, Router):
                    p.shared = True
        return self.value

    def check(self):
        """Problems with the shared processes after a test; tears the fixture down if any."""
        if self.env is None:
            return []
        problems = []
        for p in self.env.processes:
            if not p.alive() and not p.expected_exit:
                problems.append("shared %s died (%s)" % (p.name, _rc_str(p.returncode)))
            rep = p.new_sanitizer_report()
            if rep:
                problems.append("sanitizer report in shared %s's log:\n%s" % (p.name, rep))
        if problems:
            problems += self.close()
        return problems

    def close(self):
        if self.env is None:
            return []
        env, self.env, self.value = self.env, None, None
        problems = env.teardown()
        if problems:
            print(env.tails(), flush=True)
        env.remove()
        return problems


def _run_one(fn, args, limit):
    signal.alarm(limit)
    try:
        fn(*args)
    except _TestTimeout:
        return "test timed out after %ds" % limit
    except TestFailure as e:
        return str(e)
    except AssertionError as e:
        return "assertion: %s\n%s" % (e, _short_tb())
    except Exception as e:  # noqa: BLE001
        return "%s: %s\n%s" % (type(e).__name__, e, _short_tb())
    finally:
        signal.alarm(0)
    return None


def run(namespace):
    """Runs the test_* functions of a script in definition order. Each gets a fresh Env; a test
    with a second parameter also gets the script's shared fixture(env) value."""
    import inspect
    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    sel = [a for a in sys.argv[1:] if not a.startswith("-")]
    if sel:
        tests = [(n, f) for n, f in tests if any(s in n for s in sel)]
    script = os.path.basename(sys.argv[0])
    print("# %s: %d tests, build %s%s, backend %s" % (
        script, len(tests), BUILD, " (sanitizers)" if SANITIZED else "",
        backend_kind() or "none"), flush=True)
    signal.signal(signal.SIGALRM, _alarm)
    shared = _Shared(namespace.get("fixture"))
    failed = []
    t_all = time.monotonic()
    for name, fn in tests:
        env = Env(name)
        t0 = time.monotonic()
        limit = int(T(getattr(fn, "hm_timeout", DEFAULT_TEST_TIMEOUT)))
        uses_shared = len(inspect.signature(fn).parameters) > 1
        args = [env]
        reason = None
        if uses_shared:
            reason = _run_one(lambda: args.append(shared.get()), [], limit)
            if reason:
                reason = "shared fixture failed: " + reason
        if reason is None:
            reason = _run_one(fn, args, limit)
        try:
            signal.alarm(int(T(60)))
            problems = env.teardown()
            if uses_shared:
                problems += shared.check()
        except Exception as e:  # noqa: BLE001
            problems = ["teardown failed: %r" % e]
        finally:
            signal.alarm(0)
        if problems:
            reason = (reason + "\n" if reason else "") + "\n".join(problems)
        dt = time.monotonic() - t0
        if reason:
            failed.append(name)
            print("FAIL %s (%.1fs): %s" % (name, dt, reason), flush=True)
            tails = env.tails()
            if uses_shared and shared.env is not None:
                tails = "\n".join(t for t in (tails, shared.env.tails()) if t)
            if tails:
                print(tails, flush=True)
            if os.environ.get("HM_KEEP"):
                print("  (kept %s)" % env.tmpdir)
            else:
                env.remove()
        else:
            print("ok   %s (%.1fs)" % (name, dt), flush=True)
            env.remove()
    signal.alarm(int(T(60)))
    problems = shared.close()
    signal.alarm(0)
    if problems:
        failed.append("(shared fixture teardown)")
        print("FAIL shared fixture teardown: %s" % "\n".join(problems), flush=True)
    print("# %s: %d passed, %d failed in %.1fs%s" % (
        script, len(tests) - len([f for f in failed if f.startswith("test_")]), len(failed),
        time.monotonic() - t_all,
        (": " + " ".join(failed)) if failed else ""), flush=True)
    sys.exit(1 if failed else 0)


def _short_tb():
    tb = traceback.extract_tb(sys.exc_info()[2])
    return "".join(traceback.format_list([f for f in tb if "hermod_test.py" not in f.filename]
                                         [-4:])).rstrip()


# ---------------------------------------------------------------------------------------------
# Small helpers used by many tests
# ---------------------------------------------------------------------------------------------

UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def echo_of(resp):
    """The request the echo dyno received, from its JSON body: dict with method, target,
    version, headers [[name, value], ...], body (latin-1 str), conn, dyno."""
    check(resp.status == 200, "expected 200 from the echo dyno, got %s %s (%r)" %
          (resp.status, resp.reason, resp.body[:300]))
    return resp.json()


def hdr(headers, name):
    """All values of name in an echo's header list."""
    n = name.lower()
    return [v for k, v in headers if k.lower() == n]


def b64(data):
    return base64.urlsafe_b64encode(data).decode()


# Heroku's error codes as logged: code -> (HTTP status, desc) (../shared/REFERENCE.md).
HCODES = {
    "H10": (503, "App crashed"),
    "H12": (503, "Request timeout"),
    "H13": (503, "Connection closed without response"),
    "H14": (503, "No web processes running"),
    "H15": (503, "Idle connection"),
    "H19": (503, "Backend connection timeout"),
    "H20": (503, "App boot timeout"),
    "H21": (503, "Backend connection refused"),
    "H25": (502, "HTTP restriction"),
    "H26": (400, "Request error"),
    "H27": (499, "Client request interrupted"),
    "H28": (499, "Client connection idle"),
    "H80": (503, "Maintenance mode"),
    "H99": (503, "Platform error"),
}


def expect_error(router, raw, status, code, since=None, at="error", desc=True, method="GET",
                 source=None):
    """Sends raw request bytes on a new connection and checks a router-generated error: the
    status, an explicit "Connection: close", the connection closed after it, and the access-log
    line with at=, code= and desc= (desc=True: Heroku's for the code; a string: that; None: not
    checked). code=None expects no code (e.g. 404). Returns (response, log line)."""
    if since is None:
        since = router.mark()
    with Conn(router.port, source=source) as c:
        c.send(raw)
        try:
            r = c.read_response(method, timeout=T(10))
        except ConnectionClosed as e:
            fail("expected %d %s, but: %s" % (status, code or "", e))
        check(r.status == status, "expected status %d (%s), got %s %s; body %r" %
              (status, code, r.status, r.reason, r.body[:200]))
        conn = (r.header("connection") or "").lower()
        check(conn == "close", "router error %d must carry 'Connection: close', got %r" %
              (status, r.header("connection")))
        check(r.closed or c.wait_closed(T(3)),
              "router did not close the connection after its %d error" % status)
    ll = router.wait_log(since, status=str(status))
    eq(ll.get("at"), at, "at= of the %d log line (%s)" % (status, ll.raw))
    if code is None:
        check(not ll.get("code"), "unexpected code= in %s" % ll.raw)
    else:
        eq(ll.get("code"), code, "code= of the log line (%s)" % ll.raw)
    if desc is True and code in HCODES:
        desc = HCODES[code][1]
    if desc and desc is not True:
        eq(ll.get("desc"), desc, "desc= of the log line (%s)" % ll.raw)
    return r, ll

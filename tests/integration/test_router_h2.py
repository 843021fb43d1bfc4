#!/usr/bin/env python3
"""hermod-router speaking HTTP/2 to clients (issue 12): prior knowledge on the plain listener
with --h2c, beside HTTP/1.x on the same port; real clients (curl --http2-prior-knowledge, nghttp,
h2load from Debian's nghttp2-client) and hand-made frames for the defences. Each stream is an
exchange like an HTTP/1 request: routed by :authority, the same codes and log lines, bodies
streamed both ways, trailers relayed; a reset stream or a closed connection cancels its exchange
and its dyno connection is closed, never pooled; SIGTERM drains with GOAWAY while streams in
flight finish; floods end in GOAWAY(ENHANCE_YOUR_CALM) and cost nobody else."""

import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import hermod_test as hm
from hermod_test import T, check, eq, wait_for

HOST = "app.test"

# Frame types and flags (RFC 9113, 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = \
    0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 0xb


def client(name):
    path = shutil.which(name)
    check(path is not None, "%s not installed (deploy/dev installs nghttp2-client and curl)" % name)
    return path


def h2_router(env, dynos=1, **kw):
    """Echo dynos web.1..web.n for app.test and a router with --h2c."""
    return env.simple(dynos=dynos, extra_args=["--h2c"], **kw)


def run(argv, timeout=30, stdin=None, ok=True):
    r = subprocess.run(argv, input=stdin, capture_output=True, timeout=T(timeout))
    if ok:
        check(r.returncode == 0, "%s exited %d: %s" % (argv[0], r.returncode, r.stderr[-2000:]))
    return r


def curl2(router, path, *args, host=HOST, stdin=None, ok=True, timeout=30):
    return run([client("curl"), "-sS", "--http2-prior-knowledge", "-H", "Host: " + host] +
               list(args) + ["http://127.0.0.1:%d%s" % (router.port, path)], timeout, stdin, ok)


def split_head(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        fields.setdefault(k.strip().lower(), []).append(v.strip())
    return lines[0], fields, body


# -- hand-made frames ---------------------------------------------------------------------------

def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def lit(index, value):
    """A field as a literal without indexing whose name is static-table entry index (< 15)."""
    v = value.encode()
    return bytes([index, len(v)]) + v


def req_block(path="/hello", host=HOST, method_post=False):
    # :method GET (2) or POST (3), :scheme http (6), :path, :authority (static entries 4, 1)
    return bytes([0x83 if method_post else 0x82, 0x86]) + lit(4, path) + lit(1, host)


def connect(router):
    s = socket.create_connection(("127.0.0.1", router.port), timeout=T(10))
    s.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return s


class Frames:
    """Reads frames from a socket (bytes kept between calls)."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""
        self.closed = False
        self.seen = []

    def _parse(self):
        while len(self.buf) >= 9:
            n = struct.unpack(">I", b"\0" + self.buf[:3])[0]
            if len(self.buf) < 9 + n:
                return
            t, fl = self.buf[3], self.buf[4]
            sid = struct.unpack(">I", self.buf[5:9])[0] & 0x7fffffff
            self.seen.append((t, fl, sid, self.buf[9:9 + n]))
            self.buf = self.buf[9 + n:]

    def until(self, pred, timeout, what):
        deadline = time.monotonic() + T(timeout)
        while not pred(self.seen):
            if self.closed:
                hm.fail("connection closed before %s; frames: %s" % (what, self.summary()))
            left = deadline - time.monotonic()
            if left <= 0:
                hm.fail("no %s within %ss; frames: %s" % (what, timeout, self.summary()))
            self.s.settimeout(min(left, 0.5))
            try:
                d = self.s.recv(1 << 16)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                d = b""
            if not d:
                self.closed = True
                continue
            self.buf += d
            self._parse()
        return self.seen

    def wait_closed(self, timeout):
        deadline = time.monotonic() + T(timeout)
        while not self.closed and time.monotonic() < deadline:
            self.s.settimeout(0.5)
            try:
                d = self.s.recv(1 << 16)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                d = b""
            if not d:
                self.closed = True
            else:
                self.buf += d
                self._parse()
        return self.closed

    def goaway(self):
        for t, _, _, p in self.seen:
            if t == GOAWAY:
                return struct.unpack(">II", p[:8])
        return None

    def summary(self):
        return [(t, fl, sid, len(p)) for t, fl, sid, p in self.seen][-20:]


def has_goaway(frames):
    return any(f[0] == GOAWAY for f in frames)


def sendall_quiet(s, data):
    """Sends what the router takes (it may close the connection half-way: that is the point)."""
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass


# -- serving ------------------------------------------------------------------------------------

def test_h2c_and_http1_share_the_listener(env):
    router, _ = h2_router(env)
    since = router.mark()
    r = curl2(router, "/echo", "-i")
    status, fields, body = split_head(r.stdout)
    check(status.startswith("HTTP/2 200"), "status line %r" % status)
    eq(fields.get("via"), ["1.1 hermod"], "Via")
    echo = json.loads(body)
    eq(echo["version"], "HTTP/1.1", "the dyno speaks HTTP/1.1")
    hdrs = {k.lower(): v for k, v in echo["headers"]}
    eq(hdrs.get("host"), HOST, "Host from :authority")
    eq(hdrs.get("x-forwarded-proto"), "http", "X-Forwarded-Proto")
    eq(hdrs.get("x-forwarded-for"), "127.0.0.1", "X-Forwarded-For")
    check(len(hdrs.get("x-request-id", "")) == 36, "X-Request-Id %r" % hdrs.get("x-request-id"))
    eq(hdrs.get("via"), "1.1 hermod", "Via toward the dyno")
    ll = router.wait_log(since, path="/echo")
    eq(ll.get("status"), "200", "logged status")
    eq(ll.get("protocol"), "http", "protocol=")
    eq(ll.get("host"), HOST, "host=")
    # HTTP/1.1 on the same port, and HTTP/1.0, as before.
    r = router.get("/hello", HOST)
    eq(r.status, 200, "HTTP/1.1 on an --h2c listener")
    r = router.get("/hello", HOST, headers=None)
    eq(r.status, 200, "again")
    with hm.Conn(router.port) as c:
        c.send(b"GET /hello HTTP/1.0\r\nHost: app.test\r\n\r\n")
        eq(c.read_response().status, 200, "HTTP/1.0 on an --h2c listener")
    # Without --h2c the preface is just a bad HTTP/1 request.
    plain = env.router("plain")
    r = run([client("curl"), "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
             "%{http_code}", "-H", "Host: " + HOST, "http://127.0.0.1:%d/" % plain.port],
            ok=False)
    check(r.returncode != 0 or r.stdout != b"200", "HTTP/2 without --h2c: %r" % r.stdout)


def test_h2c_first_bytes_decide(env):
    router, _ = h2_router(env, keepalive_timeout="1s")
    # An HTTP/1 request whose first read is a prefix of the preface ("P", then "PU"...) still
    # reaches HTTP/1, bytes and all.
    with hm.Conn(router.port) as c:
        c.send(b"P")
        time.sleep(0.1)
        c.send(b"UT /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nok")
        r = c.read_response()
        eq(r.status, 200, "a PUT sent one byte first")
        eq(json.loads(r.body)["body"], "ok", "its body")
    # The preface in pieces is HTTP/2 all the same.
    s = socket.create_connection(("127.0.0.1", router.port), timeout=T(5))
    s.sendall(PREFACE[:5])
    time.sleep(0.1)
    s.sendall(PREFACE[5:] + frame(SETTINGS, 0, 0) +
              frame(HEADERS, END_STREAM | END_HEADERS, 1, req_block("/hello")))
    fr = Frames(s)
    fr.until(lambda fs: any(t == DATA and sid == 1 and fl & END_STREAM for t, fl, sid, _ in fs),
             5, "the answer to a preface sent in two pieces")
    s.close()
    # A client that sends nothing is closed as an idle HTTP/1 connection is.
    with socket.create_connection(("127.0.0.1", router.port), timeout=T(5)) as s:
        check(Frames(s).wait_closed(5), "a silent connection closed after --keepalive-timeout")


def test_cookies_and_affinity(env):
    d = env.dyno("web.1")
    env.routing().app("app", [HOST], [(d.name, d.addr)], affinity=True)
    router = env.router(extra_args=["--h2c"])
    r = curl2(router, "/echo", "-i", "-H", "cookie: a=1", "-H", "cookie: b=2")
    status, fields, body = split_head(r.stdout)
    check(status.startswith("HTTP/2 200"), status)
    cookies = [c for c in fields.get("set-cookie", []) if c.startswith("hermod-session-affinity=")]
    eq(len(cookies), 1, "one affinity cookie in %r" % fields.get("set-cookie"))
    hdrs = [(k.lower(), v) for k, v in json.loads(body)["headers"]]
    eq([v for k, v in hdrs if k == "cookie"], ["a=1; b=2"], "cookie crumbs joined for the dyno")
    # The cookie pins: sent back, it is not issued again.
    value = cookies[0].split(";")[0]
    r = curl2(router, "/echo", "-i", "-H", "cookie: " + value)
    _, fields, _ = split_head(r.stdout)
    check(not any(c.startswith("hermod-session-affinity=") for c in fields.get("set-cookie", [])),
          "a valid cookie is not re-issued: %r" % fields.get("set-cookie"))


def test_concurrent_streams_reach_different_dynos(env):
    router, ds = h2_router(env, dynos=3)
    since = router.mark()
    # nghttp sends every URI on one connection, all at once: /delay holds each at its dyno.
    urls = ["http://127.0.0.1:%d/delay/0.3?i=%d" % (router.port, i) for i in range(12)]
    t0 = time.monotonic()
    r = run([client("nghttp"), "-v", "-H", ":authority: " + HOST] + urls, 60)
    out = r.stdout.decode()
    eq(out.count(":status: 200"), 12, "answers")
    eq(out.count("recv SETTINGS frame"), 2, "one connection (SETTINGS and its ACK)")
    dynos = {ln.split(":", 1)[1].strip() for ln in out.splitlines() if "x-dyno:" in ln}
    check(len(dynos) >= 2, "streams of one connection spread over dynos: %r" % dynos)
    lines = [router.wait_log(since, path="/delay/0.3?i=%d" % i) for i in range(12)]
    check(all(ll.get("status") == "200" for ll in lines), "log lines")
    # They ran at once (12 x 0.3 s one after the other would take 3.6 s at least).
    check(sum(1 for d in ds for _ in d.requests()) == 12, "each reached a dyno once")
    del t0


def test_large_uploads_and_downloads_stream(env):
    router, _ = h2_router(env)
    data = os.urandom(8 << 20)
    src = env.path("up.bin")
    with open(src, "wb") as f:
        f.write(data)
    r = curl2(router, "/sink", "--data-binary", "@" + src, timeout=120)
    got = json.loads(r.stdout)
    eq(got["len"], len(data), "upload length at the dyno")
    eq(got["sha256"], hashlib.sha256(data).hexdigest(), "upload bytes at the dyno")
    # Without a length (from a pipe): chunked toward the dyno.
    piped = os.urandom(3 << 20)
    got = json.loads(curl2(router, "/sink", "-T", "-", stdin=piped, timeout=120).stdout)
    eq(got["sha256"], hashlib.sha256(piped).hexdigest(), "chunked upload bytes at the dyno")
    # 40 MB down, chunked and with a length: far beyond every window.
    r = curl2(router, "/bytes/40000000", timeout=120)
    eq(len(r.stdout), 40000000, "downloaded bytes")
    r = curl2(router, "/bytes/5000000?chunked=1", timeout=120)
    eq(len(r.stdout), 5000000, "downloaded bytes (chunked from the dyno)")


def test_trailers_relayed(env):
    router, _ = h2_router(env)
    r = run([client("nghttp"), "-v", "-H", ":authority: " + HOST,
             "http://127.0.0.1:%d/chunked?trailer=X-Checksum:42&trailer=X-Count:3" %
             router.port], 30)
    out = r.stdout.decode()
    check("x-checksum: 42" in out and "x-count: 3" in out, "trailers:\n" + out[-2000:])
    # Request trailers reach the dyno in the chunked framing (a body without a length; with
    # one, HTTP/1.1 has no place for them: docs/h2.md).
    body_file = env.path("b.txt")
    with open(body_file, "wb") as f:
        f.write(b"hello")
    r = run([client("nghttp"), "-H", ":authority: " + HOST, "--no-content-length",
             "--trailer", "x-req: 7", "-d", body_file,
             "http://127.0.0.1:%d/echo" % router.port], 30)
    echo = json.loads(r.stdout)
    eq(echo["body"], "hello", "body")
    check(["x-req", "7"] in [[k.lower(), v] for k, v in echo["trailers"]],
          "request trailers at the dyno: %r" % echo["trailers"])


def test_error_codes_equal_http1(env):
    d = env.dyno("web.1")
    env.routing().app("app", [HOST], [(d.name, d.addr)])
    env.routing().app("empty", ["empty.test"], [])
    router = env.router(extra_args=["--h2c"], first_byte_timeout="1s")
    cases = [("/x", "nope.test", 404, None), ("/x", "empty.test", 503, "H14"),
             ("/never", HOST, 503, "H12"), ("/close", HOST, 503, "H13"),
             ("/bad-status", HOST, 502, "H25"), ("/status/418", HOST, 418, None)]
    for path, host, status, code in cases:
        since = router.mark()
        r = router.get(path, host)
        eq(r.status, status, "HTTP/1 %s %s" % (host, path))
        l1 = router.wait_log(since, path=path, host=host)
        since = router.mark()
        r = curl2(router, path, "-o", "/dev/null", "-w", "%{http_code}", host=host)
        eq(int(r.stdout), status, "HTTP/2 %s %s" % (host, path))
        l2 = router.wait_log(since, path=path, host=host)
        for k in ("status", "code", "at", "desc"):
            eq(l2.get(k), l1.get(k), "%s= for %s %s over HTTP/2 and HTTP/1" % (k, host, path))
    # A response cut by its dyno: HTTP/1 closes, HTTP/2 resets the stream; both log H18.
    since = router.mark()
    r = curl2(router, "/close-mid-body", ok=False)
    check(r.returncode != 0, "curl must fail on a reset stream")
    eq(router.wait_log(since, path="/close-mid-body").get("code"), "H18", "code= of a cut")
    # A malformed request costs its stream only (414, as on HTTP/1).
    r = run([client("nghttp"), "-H", ":authority: " + HOST, "-v",
             "http://127.0.0.1:%d/%s" % (router.port, "a" * 9000),
             "http://127.0.0.1:%d/hello" % router.port], 30)
    out = r.stdout.decode()
    check(":status: 414" in out and ":status: 200" in out, "both answers:\n" + out[-2000:])


def test_h2load_many_streams(env):
    router, _ = h2_router(env, dynos=2)
    since = router.mark()
    r = run([client("h2load"), "-n", "5000", "-c", "20", "-m", "10", "-H",
             ":authority: " + HOST, "http://127.0.0.1:%d/hello" % router.port], 120)
    out = r.stdout.decode()
    check("5000 succeeded, 0 failed, 0 errored" in out, "h2load:\n" + out)
    wait_for(lambda: len(router.logs()[since:]) >= 5000, T(10), "5000 log lines")
    lines = router.logs()[since:]
    eq(len(lines), 5000, "one log line per request")
    check(all(ll.get("status") == "200" for ll in lines), "statuses")


# -- cancellation -------------------------------------------------------------------------------

def test_reset_and_close_cancel_their_exchanges(env):
    router, (d,) = h2_router(env)
    since = router.mark()
    # A request held at its dyno, then the stream reset: H27, and the dyno's connection is
    # closed (its request was answered by nobody; it is never pooled).
    s = connect(router)
    fr = Frames(s)
    s.sendall(frame(HEADERS, END_STREAM | END_HEADERS, 1, req_block("/never")))
    wait_for(lambda: d.requests(), T(5), "the request at the dyno")
    s.sendall(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))
    ll = router.wait_log(since, path="/never")
    eq((ll.get("code"), ll.get("status")), ("H27", "499"), "a reset stream's line")
    wait_for(lambda: d.closes(), T(5), "the dyno connection closed")
    # The connection lives on: another stream on it is answered.
    s.sendall(frame(HEADERS, END_STREAM | END_HEADERS, 3, req_block("/hello")))
    fr.until(lambda fs: any(t == HEADERS and sid == 3 for t, _, sid, _ in fs), 5,
             "the answer on stream 3")
    # A half-sent upload, then the connection closed: H27; the dyno connection is closed
    # too, so the next request opens a new one instead of finding the rest of this one.
    since = router.mark()
    # content-length: static entry 28, beyond a 4-bit prefix (15 + 13)
    head = req_block("/sink", method_post=True) + bytes([0x0f, 0x0d, 0x06]) + b"100000"
    s.sendall(frame(HEADERS, END_HEADERS, 5, head) + frame(DATA, 0, 5, b"x" * 1000))
    wait_for(lambda: any(r.get("target") == "/sink" for r in d.requests()), T(5),
             "the upload at the dyno")
    conns = d.connections()
    s.close()
    ll = router.wait_log(since, path="/sink")
    eq((ll.get("code"), ll.get("status")), ("H27", "499"), "a closed connection's line")
    r = router.get("/echo", HOST)
    eq(r.status, 200, "next request")
    check(int(r.header("X-Dyno-Conn")) > conns, "a fresh dyno connection (%s, %d before)" %
          (r.header("X-Dyno-Conn"), conns))


# -- drain --------------------------------------------------------------------------------------

def test_sigterm_goaway_and_in_flight_streams_finish(env):
    router, _ = h2_router(env)
    s = connect(router)
    fr = Frames(s)
    s.sendall(frame(HEADERS, END_STREAM | END_HEADERS, 1, req_block("/delay/1")))
    time.sleep(0.2)
    out = env.path("dl.bin")
    dl = subprocess.Popen([client("curl"), "-sS", "--http2-prior-knowledge", "--limit-rate",
                           "2M", "-H", "Host: " + HOST, "-o", out,
                           "http://127.0.0.1:%d/bytes/6000000" % router.port])
    env.defer(lambda: dl.poll() is None and dl.kill())
    wait_for(lambda: os.path.exists(out) and os.path.getsize(out) > 0, T(10), "first bytes")
    router.send_signal(signal.SIGTERM)
    fr.until(has_goaway, 5, "GOAWAY")
    fr.until(lambda fs: any(t == DATA and sid == 1 and fl & END_STREAM for t, fl, sid, _ in fs),
             10, "stream 1's response, whole")
    eq(dl.wait(T(60)), 0, "curl's exit status")
    eq(os.path.getsize(out), 6000000, "downloaded bytes")
    check(fr.wait_closed(10), "the connection closed after its streams")
    eq(router.wait(T(15)), 0, "router's exit status after the drain")
    router.expected_exit = True


# -- timeouts -----------------------------------------------------------------------------------

def test_idle_connection_gets_goaway(env):
    router, _ = h2_router(env, keepalive_timeout="1s")
    s = connect(router)
    fr = Frames(s)
    # A stream waiting for its dyno longer than the idle timeout is not idleness.
    s.sendall(frame(HEADERS, END_STREAM | END_HEADERS, 1, req_block("/delay/1.5")))
    fr.until(lambda fs: any(t == DATA and sid == 1 and fl & END_STREAM for t, fl, sid, _ in fs),
             10, "the answer after 1.5 s")
    check(not has_goaway(fr.seen), "GOAWAY while a stream was in flight: %s" % fr.summary())
    # Then nothing: GOAWAY(NO_ERROR) naming stream 1 as the last processed, and the close.
    fr.until(has_goaway, 10, "GOAWAY of an idle connection")
    eq(fr.goaway(), (1, 0), "GOAWAY's last stream and code")
    check(fr.wait_closed(5), "an idle connection closed after its GOAWAY")


def test_client_not_reading_a_download(env):
    router, (d,) = h2_router(env, idle_timeout="1s")
    since = router.mark()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", router.port))
    # A window as large as the protocol allows, so that only the socket holds the router back.
    s.sendall(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 0x7fffffff)) +
              frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7fffffff - 65535)) +
              frame(HEADERS, END_STREAM | END_HEADERS, 1, req_block("/bytes/200000000")))
    ll = router.wait_log(since, path="/bytes/200000000", timeout=T(20))
    eq((ll.get("code"), ll.get("status")), ("H28", "499"), "a client that does not read")
    wait_for(lambda: d.closes(), T(5), "the dyno connection closed")
    s.close()
    still_serves(router)


# -- defences -----------------------------------------------------------------------------------

def still_serves(router):
    r = curl2(router, "/hello", "-o", "/dev/null", "-w", "%{http_code}")
    eq(r.stdout, b"200", "another client is served")


def test_rapid_reset_gets_goaway(env):
    router, (d,) = h2_router(env)
    s = connect(router)
    fr = Frames(s)
    burst = b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, req_block("/delay/1"))
                     + frame(RST_STREAM, 0, 2 * i + 1, struct.pack(">I", 8))
                     for i in range(2000))
    sendall_quiet(s, burst)
    fr.until(has_goaway, 10, "GOAWAY")
    eq(fr.goaway()[1], ENHANCE_YOUR_CALM, "GOAWAY code")
    check(fr.wait_closed(10), "closed after the GOAWAY")
    # At most the stream limit ever went to dynos at once, and far fewer than were opened.
    check(len(d.requests()) < 700, "requests that reached the dyno: %d" % len(d.requests()))
    still_serves(router)


def test_continuation_flood_gets_goaway(env):
    router, _ = h2_router(env)
    s = connect(router)
    fr = Frames(s)
    field = bytes([0x00, 0x03]) + b"x-a" + bytes([0x01]) + b"b"
    flood = frame(HEADERS, END_STREAM, 1, req_block("/hello")) + \
        b"".join(frame(CONTINUATION, 0, 1, field * 10) for _ in range(20000))
    sendall_quiet(s, flood)
    check(fr.wait_closed(20) or has_goaway(fr.seen), "no end to a CONTINUATION flood")
    check(has_goaway(fr.seen), "GOAWAY before the close: %s" % fr.summary())
    still_serves(router)


def test_ping_and_settings_floods_get_goaway(env):
    router, _ = h2_router(env)
    for ftype, flood in ((PING, frame(PING, 0, 0, b"12345678")),
                         (SETTINGS, frame(SETTINGS, 0, 0, struct.pack(">HI", 3, 100)))):
        s = connect(router)
        fr = Frames(s)
        sendall_quiet(s, flood * 3000)
        fr.until(has_goaway, 10, "GOAWAY after a flood of frame type %d" % ftype)
        eq(fr.goaway()[1], ENHANCE_YOUR_CALM, "GOAWAY code for frame type %d" % ftype)
        s.close()
    still_serves(router)


def test_h2_counters_in_metrics(env):
    """The engine's counters reach /metrics, summed over workers: a served stream, a client's
    GOAWAY, a stream over the concurrency limit refused, a rapid-reset flood's glitches and the
    GOAWAY(ENHANCE_YOUR_CALM) that ends it."""
    router, _ = h2_router(env, metrics=True)

    def m(name, labels=None):
        return router.metric(name, labels)

    def sent(code):
        return m("hermod_h2_goaways_total", 'direction="sent",code="%s"' % code)

    def received(code):
        return m("hermod_h2_goaways_total", 'direction="received",code="%s"' % code)

    for name in ("hermod_h2_connections_total", "hermod_h2_streams_total",
                 "hermod_h2_streams_refused_total", "hermod_h2_glitches_total",
                 "hermod_h2_resets_received_total", "hermod_h2_stream_errors_total",
                 "hermod_h2_timeouts_total"):
        eq(m(name), 0.0, name + " before any HTTP/2")
    eq(sent("ENHANCE_YOUR_CALM"), 0.0, "GOAWAYs sent before any HTTP/2")
    eq(received("unknown"), 0.0, "GOAWAYs received with an unknown code")

    # One request served over its own connection.
    still_serves(router)
    wait_for(lambda: m("hermod_h2_streams_total") == 1, T(10), "one stream counted")
    eq(m("hermod_h2_connections_total"), 1.0, "one connection")

    # A client says goodbye: GOAWAY(NO_ERROR) received; one with a code of no RFC's: unknown.
    for code in (0, 0x77):
        s = connect(router)
        s.sendall(frame(GOAWAY, 0, 0, struct.pack(">II", 0, code)))
        Frames(s).wait_closed(1)
        s.close()
    wait_for(lambda: received("NO_ERROR") == 1 and received("unknown") == 1, T(10),
             "the clients' GOAWAYs counted")
    eq(m("hermod_h2_connections_total"), 3.0, "three connections")

    # 128 streams held at the dyno fill the connection (SETTINGS_MAX_CONCURRENT_STREAMS); the
    # one after them is refused.
    s = connect(router)
    fr = Frames(s)
    s.sendall(b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, req_block("/never"))
                       for i in range(129)))
    fr.until(lambda fs: any(t == RST_STREAM and sid == 257 for t, _, sid, _ in fs), 10,
             "RST_STREAM on stream 257")
    rst = [p for t, _, sid, p in fr.seen if t == RST_STREAM and sid == 257][0]
    eq(struct.unpack(">I", rst[:4])[0], 0x7, "REFUSED_STREAM")
    eq(m("hermod_h2_streams_refused_total"), 1.0, "one stream refused")
    eq(m("hermod_h2_glitches_total"), 1.0, "the refused stream is a glitch")
    eq(m("hermod_h2_streams_total"), 129.0, "128 more streams delivered")
    # The client resets one of them: a reset received.
    s.sendall(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))
    wait_for(lambda: m("hermod_h2_resets_received_total") == 1, T(10), "the reset counted")
    s.close()

    # A rapid-reset flood exhausts the glitch budget (500): GOAWAY(ENHANCE_YOUR_CALM) sent.
    s = connect(router)
    fr = Frames(s)
    sendall_quiet(s, b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1,
                                    req_block("/delay/1"))
                              + frame(RST_STREAM, 0, 2 * i + 1, struct.pack(">I", 8))
                              for i in range(2000)))
    fr.until(has_goaway, 10, "GOAWAY")
    eq(fr.goaway()[1], ENHANCE_YOUR_CALM, "GOAWAY code")
    s.close()
    eq(sent("ENHANCE_YOUR_CALM"), 1.0, "one GOAWAY(ENHANCE_YOUR_CALM) sent")
    check(m("hermod_h2_glitches_total") > 501, "glitches past the budget: %s" %
          m("hermod_h2_glitches_total"))
    check(m("hermod_h2_resets_received_total") > 2, "the flood's resets counted: %s" %
          m("hermod_h2_resets_received_total"))
    eq(sent("NO_ERROR"), 0.0, "no graceful GOAWAY sent")


def test_bad_preface_is_closed(env):
    router, _ = h2_router(env)
    with socket.create_connection(("127.0.0.1", router.port), timeout=T(5)) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + frame(SETTINGS, 0, 0))
        fr = Frames(s)
        check(fr.wait_closed(5), "a broken preface is closed")
    still_serves(router)


if __name__ == "__main__":
    hm.run(globals())

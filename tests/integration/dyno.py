#!/usr/bin/env python3
"""A test dyno: an HTTP/1.1 server that behaves well or badly on purpose (standard library only).

Run it:   python3 dyno.py --port 5001 [--host 127.0.0.1] [--name web.1] [--mode MODE] [--log FILE]
Import it: d = dyno.Dyno(name="web.1").start(); d.addr -> "127.0.0.1:PORT"; d.events; d.stop()

The behaviour is chosen per request by the first path segment (below), or for every request by
--mode NAME (e.g. --mode hello for the local demo, --mode never for a dyno that never answers).
Unknown paths echo. Every generated response carries X-Dyno (the dyno's name), X-Dyno-Conn (the
number of the TCP connection it came on, counted from 1) and X-Dyno-Req (the request's number on
that connection). Query "close=1" makes the dyno send Connection: close and close after the
response; otherwise it keeps the connection open as HTTP/1.1 allows.

  /echo                 200, JSON of the request as received: method, target, version, headers
                        [[name, value], ...] in order, body and raw_body (latin-1; raw_body is the
                        body bytes as framed on the wire), trailers, conn, req, dyno, peer.
  /hello                200 "hello from NAME\\n".
  /status/CODE          that status; ?reason=TEXT (default: a standard one), ?noreason=1 (status
                        line "HTTP/1.1 CODE" with nothing after), ?body=TEXT, ?cl=N (send a
                        Content-Length of N but no body, for HEAD/204/304).
  /bytes/N              N body bytes (a fixed pattern) with Content-Length, or ?chunked=1.
  /chunked              chunked: ?chunks=3&size=5 (chunk i is size bytes of letter a+i),
                        ?trailer=Name:Value (repeatable).
  /slow                 ?chunks=5&size=10&delay=0.2: a chunk every delay s (chunked, or with
                        ?cl=1 a Content-Length for the whole body).
  /delay/S              sleeps S seconds, then echoes.
  /never                reads the request and never answers (holds the connection).
  /close                reads the request and closes without answering.
  /close-mid-body       head with Content-Length: 100, 10 body bytes, close.
  /stall-mid-body       head with Content-Length: 100, 10 body bytes, then silence.
  /no-framing           200 without Content-Length or chunking; the body ends at close.
  /headers              200 with extra response headers: ?h=Name:Value (repeatable).
  /raw                  sends ?b64=URLSAFE-BASE64 bytes verbatim as the response, then closes
                        unless ?keep=1.
  /bad-status           "HTTP/1.1 2x0 Broken" (malformed status line).
  /bad-header           a header line without a colon.
  /bad-cl               Content-Length: abc.
  /conflict-cl          two different Content-Length headers.
  /long-status          a status line of ?len=N bytes (without CRLF), default 9000.
  /huge-header          one header line of ?size=N bytes (default 600 KiB).
  /big-cookie           Set-Cookie with a value of ?size=N bytes (default 9000).
  /continue             "100 Continue", then 200 echo.
  /double-continue      two "100 Continue", then 200.
  /upgrade              101 Switching Protocols (Upgrade: as asked), then echoes bytes back.
  /sink                 reads the body, answers JSON {"len", "sha256", "conn"}.
  /slow-sink            reads the body at ?rate=BYTES per second, then answers as /sink.
  /pause-sink           reads nothing for ?secs=S seconds, then answers as /sink.
  /early/CODE           answers CODE ("early\n", Content-Length) before the request body is
                        read: at once, or after ?after=N body bytes; then ?then=close (default)
                        closes at once (unread bytes make it a reset), ?then=read reads the rest
                        of the body and serves the connection on, ?then=stall holds it without
                        reading. Connection: close is sent unless then=read.
  /ka-close-second      answers; the next request on the same connection is read and the
                        connection closed without an answer (a stale pooled connection).
  /idle-close           answers, then closes the connection after ?after=S s without a request.
"""

import argparse
import base64
import hashlib
import json
import select
import signal
import socket
import sys
import threading
import time
import urllib.parse

REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created",
           204: "No Content", 301: "Moved Permanently", 302: "Found", 304: "Not Modified",
           400: "Bad Request", 404: "Not Found", 418: "I'm a teapot", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable"}


class _Closed(Exception):
    pass


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        try:
            d = self.sock.recv(65536)
        except OSError:
            d = b""
        if not d:
            raise _Closed()
        self.buf += d

    def line(self):
        while b"\n" not in self.buf:
            if len(self.buf) > (4 << 20):
                raise _Closed()
            self.fill()
        i = self.buf.index(b"\n") + 1
        ln, self.buf = self.buf[:i], self.buf[i:]
        return ln

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def some(self, limit=65536):
        if not self.buf:
            self.fill()
        d, self.buf = self.buf[:limit], self.buf[limit:]
        return d


class Request:
    def __init__(self):
        self.method = self.target = self.version = None
        self.headers = []
        self.body = b""
        self.raw_body = b""
        self.trailers = []
        self.body_read = False

    def header(self, name):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None

    def tokens(self, name):
        n = name.lower()
        out = []
        for k, v in self.headers:
            if k.lower() == n:
                out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out


def _read_head(r):
    """Reads a request head; returns a Request or None at a clean EOF."""
    req = Request()
    while True:
        try:
            ln = r.line()
        except _Closed:
            if r.buf:
                raise
            return None
        if ln.strip():
            break
    parts = ln.decode("latin-1").strip().split(" ")
    if len(parts) != 3:
        raise _Closed()
    req.method, req.target, req.version = parts
    while True:
        ln = r.line()
        if ln in (b"\r\n", b"\n"):
            break
        s = ln.decode("latin-1").rstrip("\r\n")
        k, _, v = s.partition(":")
        req.headers.append((k, v.strip(" \t")))
    return req


def _read_body(r, req, consume=None):
    """Reads the request body (Content-Length or chunked). consume(bytes) streams it instead of
    keeping it."""
    if req.body_read:
        return
    req.body_read = True
    keep = consume is None
    parts, raw = [], []
    if "chunked" in req.tokens("transfer-encoding"):
        while True:
            ln = r.line()
            raw.append(ln)
            size = int(ln.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            d = r.exact(size)
            crlf = r.exact(2)
            raw += [d, crlf]
            if keep:
                parts.append(d)
            else:
                consume(d)
        while True:
            ln = r.line()
            raw.append(ln)
            if ln in (b"\r\n", b"\n"):
                break
            k, _, v = ln.decode("latin-1").rstrip("\r\n").partition(":")
            req.trailers.append((k, v.strip()))
    else:
        cl = req.header("content-length")
        n = int(cl) if cl and cl.strip().isdigit() else 0
        while n > 0:
            d = r.some(min(n, 65536))
            n -= len(d)
            if keep:
                parts.append(d)
            else:
                consume(d)
        raw = parts
    if keep:
        req.body = b"".join(parts)
        req.raw_body = b"".join(raw)


def _pattern(n):
    unit = b"0123456789abcdefghijklmnopqrstuvwxyz\n"
    return (unit * (n // len(unit) + 1))[:n]


class Dyno:
    """An HTTP server on host:port (0: any free port) in background threads."""

    def __init__(self, name="web.1", host="127.0.0.1", port=0, mode=None, log=None):
        self.name = name
        self.mode = mode
        self.log = log
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, port))
        self.host, self.port = self.lsock.getsockname()
        self.lock = threading.Lock()
        self.events = []
        self.nconns = 0
        self.open_conns = {}
        self.stopping = False
        self.stopped = threading.Event()  # sleeps end early when the dyno stops
        self.thread = None

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        self.lsock.listen(512)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        return self

    def sleep(self, secs):
        self.stopped.wait(secs)

    def stop(self):
        self.stopping = True
        self.stopped.set()
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        with self.lock:
            socks = list(self.open_conns.values())
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- observation
    def _event(self, **ev):
        ev["t"] = time.time()
        with self.lock:
            self.events.append(ev)
        if self.log:
            self.log.write(json.dumps(ev) + "\n")
            self.log.flush()

    def requests(self):
        with self.lock:
            return [e for e in self.events if e["ev"] == "request"]

    def closes(self):
        with self.lock:
            return [e for e in self.events if e["ev"] == "close"]

    def connections(self):
        with self.lock:
            return self.nconns

    def open_connections(self):
        with self.lock:
            return len(self.open_conns)

    # -- serving
    def _accept_loop(self):
        while not self.stopping:
            try:
                s, peer = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.nconns += 1
                cid = self.nconns
                self.open_conns[cid] = s
            self._event(ev="conn", conn=cid, peer="%s:%d" % peer)
            threading.Thread(target=self._serve, args=(s, cid, peer), daemon=True).start()

    def _serve(self, s, cid, peer):
        r = _Reader(s)
        n = 0
        why = "eof"
        try:
            ctx = {"conn": cid, "peer": "%s:%d" % peer, "flags": set()}
            while True:
                req = _read_head(r)
                if req is None:
                    break
                n += 1
                self._event(ev="request", conn=cid, req=n, method=req.method,
                            target=req.target, version=req.version, headers=req.headers)
                if "ka-close-second" in ctx["flags"]:
                    why = "closed a reused connection on purpose"
                    break
                if not self._dispatch(s, r, req, ctx, n):
                    why = "response done, closing"
                    break
        except (_Closed, OSError, ValueError) as e:
            why = "error: %r" % e
        finally:
            with self.lock:
                self.open_conns.pop(cid, None)
            self._event(ev="close", conn=cid, why=why)
            try:
                s.close()
            except OSError:
                pass

    def _std_headers(self, ctx, n):
        return [("X-Dyno", self.name), ("X-Dyno-Conn", str(ctx["conn"])), ("X-Dyno-Req", str(n))]

    def _wants_close(self, req, q):
        if q.get("close") == ["1"]:
            return True
        conn = req.tokens("connection")
        if "close" in conn:
            return True
        return req.version == "HTTP/1.0" and "keep-alive" not in conn

    def _send(self, s, status, headers, body=b"", reason=None, close=False):
        reason = REASONS.get(status, "Status") if reason is None else reason
        head = "HTTP/1.1 %d %s\r\n" % (status, reason) if reason != "" else \
            "HTTP/1.1 %d\r\n" % status
        hs = list(headers)
        if close:
            hs.append(("Connection", "close"))
        head += "".join("%s: %s\r\n" % kv for kv in hs) + "\r\n"
        s.sendall(head.encode("latin-1") + body)

    def _dispatch(self, s, r, req, ctx, n):
        """Answers one request; returns True to keep the connection for another."""
        u = urllib.parse.urlsplit(req.target)
        path = u.path  # origin form, or the path of an absolute-form target
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        segs = [p for p in path.split("/") if p]
        what = self.mode or (segs[0] if segs else "echo")
        args = segs[1:] if not self.mode else segs
        close = self._wants_close(req, q)
        std = self._std_headers(ctx, n)
        fn = getattr(self, "do_" + what.replace("-", "_"), None)
        if fn is None:
            fn = self.do_echo
        if what not in ("sink", "slow-sink", "pause-sink", "upgrade", "never", "close", "early"):
            _read_body(r, req)
        res = fn(s, r, req, ctx, n, q, args, std, close)
        return (not close) if res is None else res

    # Each do_X answers one request; returning None keeps the connection unless close was asked;
    # False closes it.

    def do_echo(self, s, r, req, ctx, n, q, args, std, close):
        body = json.dumps({
            "method": req.method, "target": req.target, "version": req.version,
            "headers": req.headers, "body": req.body.decode("latin-1"),
            "raw_body": req.raw_body.decode("latin-1"), "trailers": req.trailers,
            "conn": ctx["conn"], "req": n, "dyno": self.name, "peer": ctx["peer"],
        }).encode()
        self._send(s, 200, std + [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))], body, close=close)

    def do_hello(self, s, r, req, ctx, n, q, args, std, close):
        body = ("hello from %s\n" % self.name).encode()
        self._send(s, 200, std + [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))],
                   b"" if req.method == "HEAD" else body, close=close)

    def do_status(self, s, r, req, ctx, n, q, args, std, close):
        code = int(args[0]) if args else 200
        reason = q["reason"][0] if "reason" in q else None
        if q.get("noreason") == ["1"]:
            reason = ""
        hs = list(std)
        body = q["body"][0].encode("latin-1") if "body" in q else b""
        if "cl" in q:
            hs.append(("Content-Length", q["cl"][0]))
            body = b""
        elif code in (204, 304) or code < 200:
            body = b""
        else:
            hs.append(("Content-Length", str(len(body))))
            if req.method == "HEAD":
                body = b""
        self._send(s, code, hs, body, reason=reason, close=close)

    def do_bytes(self, s, r, req, ctx, n, q, args, std, close):
        size = int(args[0]) if args else 0
        if q.get("chunked") == ["1"]:
            self._send(s, 200, std + [("Transfer-Encoding", "chunked")], close=close)
            left = size
            while left > 0:
                k = min(left, 65536)
                s.sendall(b"%x\r\n" % k + _pattern(k) + b"\r\n")
                left -= k
            s.sendall(b"0\r\n\r\n")
            return None
        self._send(s, 200, std + [("Content-Length", str(size))], close=close)
        if req.method == "HEAD":
            return None
        sent = 0
        block = _pattern(65536 - 65536 % 37)  # a whole number of pattern units
        while sent < size:
            k = min(len(block), size - sent)
            s.sendall(block[:k])
            sent += k
        return None

    def do_chunked(self, s, r, req, ctx, n, q, args, std, close):
        chunks = int(q.get("chunks", ["3"])[0])
        size = int(q.get("size", ["5"])[0])
        trailers = q.get("trailer", [])
        hs = std + [("Transfer-Encoding", "chunked")]
        if trailers:
            hs.append(("Trailer", ", ".join(t.split(":")[0] for t in trailers)))
        self._send(s, 200, hs, close=close)
        for i in range(chunks):
            data = bytes([ord("a") + i % 26]) * size
            s.sendall(b"%x\r\n%s\r\n" % (len(data), data))
        s.sendall(b"0\r\n" + "".join("%s\r\n" % t for t in trailers).encode() + b"\r\n")

    def do_slow(self, s, r, req, ctx, n, q, args, std, close):
        chunks = int(q.get("chunks", ["5"])[0])
        size = int(q.get("size", ["10"])[0])
        delay = float(q.get("delay", ["0.2"])[0])
        use_cl = q.get("cl") == ["1"]
        hs = std + ([("Content-Length", str(chunks * size))] if use_cl else
                    [("Transfer-Encoding", "chunked")])
        self._send(s, 200, hs, close=close)
        for i in range(chunks):
            self.sleep(delay)
            data = bytes([ord("a") + i % 26]) * size
            s.sendall(data if use_cl else b"%x\r\n%s\r\n" % (len(data), data))
        if not use_cl:
            s.sendall(b"0\r\n\r\n")

    def do_delay(self, s, r, req, ctx, n, q, args, std, close):
        self.sleep(float(args[0]) if args else 1.0)
        return self.do_echo(s, r, req, ctx, n, q, args, std, close)

    def _hold(self, s):
        """Waits until the peer closes (or the dyno stops)."""
        s.settimeout(None)
        try:
            while not self.stopping:
                if not s.recv(65536):
                    break
        except OSError:
            pass

    def do_never(self, s, r, req, ctx, n, q, args, std, close):
        self._hold(s)
        return False

    def do_close(self, s, r, req, ctx, n, q, args, std, close):
        return False

    def do_close_mid_body(self, s, r, req, ctx, n, q, args, std, close):
        self._send(s, 200, std + [("Content-Length", "100")], b"x" * 10)
        return False

    def do_stall_mid_body(self, s, r, req, ctx, n, q, args, std, close):
        self._send(s, 200, std + [("Content-Length", "100")], b"x" * 10)
        self._hold(s)
        return False

    def do_no_framing(self, s, r, req, ctx, n, q, args, std, close):
        self._send(s, 200, std, b"close-delimited body " + _pattern(1000))
        return False

    def do_headers(self, s, r, req, ctx, n, q, args, std, close):
        hs = list(std)
        for h in q.get("h", []):
            k, _, v = h.partition(":")
            hs.append((k, v.strip()))
        body = b"with headers"
        hs.append(("Content-Length", str(len(body))))
        self._send(s, 200, hs, body, close=close)

    def do_raw(self, s, r, req, ctx, n, q, args, std, close):
        data = base64.urlsafe_b64decode(q.get("b64", [""])[0])
        s.sendall(data)
        if q.get("keep") == ["1"]:
            return None
        self._hold_briefly(s)
        return False

    def _hold_briefly(self, s, t=0.3):
        # Give the router time to read what was sent before our FIN/RST.
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        s.settimeout(t)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass

    def _raw_then_close(self, s, data):
        s.sendall(data)
        self._hold_briefly(s)
        return False

    def do_bad_status(self, s, r, req, ctx, n, q, args, std, close):
        return self._raw_then_close(s, b"HTTP/1.1 2x0 Broken\r\nContent-Length: 2\r\n\r\nok")

    def do_bad_header(self, s, r, req, ctx, n, q, args, std, close):
        return self._raw_then_close(
            s, b"HTTP/1.1 200 OK\r\nThis line has no colon\r\nContent-Length: 2\r\n\r\nok")

    def do_bad_cl(self, s, r, req, ctx, n, q, args, std, close):
        return self._raw_then_close(s, b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok")

    def do_conflict_cl(self, s, r, req, ctx, n, q, args, std, close):
        return self._raw_then_close(
            s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!")

    def do_long_status(self, s, r, req, ctx, n, q, args, std, close):
        length = int(q.get("len", ["9000"])[0])
        line = b"HTTP/1.1 200 "
        line += b"R" * (length - len(line))
        return self._raw_then_close(s, line + b"\r\nContent-Length: 2\r\nConnection: close"
                                    b"\r\n\r\nok")

    def do_huge_header(self, s, r, req, ctx, n, q, args, std, close):
        size = int(q.get("size", [str(600 * 1024)])[0])
        name = b"X-Huge: "
        line = name + b"h" * (size - len(name))
        return self._raw_then_close(s, b"HTTP/1.1 200 OK\r\n" + line +
                                    b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def do_big_cookie(self, s, r, req, ctx, n, q, args, std, close):
        size = int(q.get("size", ["9000"])[0])
        cookie = b"big=" + b"c" * (size - 4)
        return self._raw_then_close(s, b"HTTP/1.1 200 OK\r\nSet-Cookie: " + cookie +
                                    b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def do_continue(self, s, r, req, ctx, n, q, args, std, close):
        s.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        return self.do_echo(s, r, req, ctx, n, q, args, std, close)

    def do_double_continue(self, s, r, req, ctx, n, q, args, std, close):
        s.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n")
        return self.do_echo(s, r, req, ctx, n, q, args, std, close)

    def do_upgrade(self, s, r, req, ctx, n, q, args, std, close):
        proto = req.header("upgrade") or "websocket"
        self._send(s, 101, std + [("Upgrade", proto), ("Connection", "Upgrade")])
        s.settimeout(None)
        try:
            if r.buf:
                s.sendall(r.buf)
                r.buf = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                s.sendall(d)
        except OSError:
            pass
        return False

    def _sink(self, s, r, req, ctx, n, q, std, close, rate=None):
        h = hashlib.sha256()
        total = [0]
        t0 = time.monotonic()

        def consume(d):
            h.update(d)
            total[0] += len(d)
            if rate:
                ahead = total[0] / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        r_limit = r
        if rate:
            # Read in small pieces so that the sink really is slow.
            orig = r_limit.some
            r_limit.some = lambda limit=65536: orig(min(limit, 4096))
        _read_body(r_limit, req, consume)
        body = json.dumps({"len": total[0], "sha256": h.hexdigest(), "conn": ctx["conn"],
                           "dyno": self.name}).encode()
        self._send(s, 200, std + [("Content-Length", str(len(body)))], body, close=close)

    def do_sink(self, s, r, req, ctx, n, q, args, std, close):
        self._sink(s, r, req, ctx, n, q, std, close)

    def do_slow_sink(self, s, r, req, ctx, n, q, args, std, close):
        self._sink(s, r, req, ctx, n, q, std, close,
                   rate=float(q.get("rate", ["1000000"])[0]))

    def do_pause_sink(self, s, r, req, ctx, n, q, args, std, close):
        self.sleep(float(q.get("secs", ["2"])[0]))
        self._sink(s, r, req, ctx, n, q, std, close)

    def do_early(self, s, r, req, ctx, n, q, args, std, close):
        code = int(args[0]) if args else 413
        after = int(q.get("after", ["0"])[0])
        then = q.get("then", ["close"])[0]
        seen = [0]

        def answer():
            self._event(ev="early", conn=ctx["conn"], req=n, after=seen[0])
            self._send(s, code, std + [("Content-Length", "6")], b"early\n",
                       close=then != "read")

        class Answered(Exception):
            pass

        def consume(d):
            before = seen[0]
            seen[0] += len(d)
            if 0 < after and before < after <= seen[0]:
                answer()
                if then != "read":
                    raise Answered()
        try:
            if after == 0:
                answer()
                if then != "read":
                    raise Answered()
            _read_body(r, req, consume)
        except Answered:
            pass
        if then == "read":
            return None
        if then == "stall":
            s.settimeout(None)
            self.stopped.wait()
        return False

    def do_ka_close_second(self, s, r, req, ctx, n, q, args, std, close):
        ctx["flags"].add("ka-close-second")
        return self.do_echo(s, r, req, ctx, n, q, args, std, close)

    def do_idle_close(self, s, r, req, ctx, n, q, args, std, close):
        self.do_echo(s, r, req, ctx, n, q, args, std, close)
        if close:
            return False
        after = float(q.get("after", ["0.2"])[0])
        rd, _, _ = select.select([s], [], [], after)
        if not rd and not r.buf:
            return False
        return True


def main(argv=None):
    ap = argparse.ArgumentParser(description="hermod test dyno")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="web.1")
    ap.add_argument("--mode", default=None,
                    help="one behaviour for every request (e.g. hello, never, close)")
    ap.add_argument("--log", default=None, help="write one JSON event per line here ('-': stdout)")
    a = ap.parse_args(argv)
    log = None
    if a.log == "-":
        log = sys.stdout
    elif a.log:
        log = open(a.log, "a")
    d = Dyno(name=a.name, host=a.host, port=a.port, mode=a.mode, log=log).start()
    print("dyno %s listening on %s" % (a.name, d.addr), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(1):
        pass
    d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

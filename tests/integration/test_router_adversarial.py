#!/usr/bin/env python3
"""hermod-router under attack: request smuggling and desync, header rewriting bounds, and
requests a dyno may have acted on.

Every case here failed before the fix it names:
  * heads whose header lines have no space after the colon overflowed the rewritten head's
    buffer (one byte per line; a client request or a dyno response could do it);
  * llhttp (not built strict) takes CR followed by any byte for a line end in places, and any two
    bytes for the CRLF after chunk data: "0\\r\\n\\rX" ended a chunked body and let the bytes
    after it through as a second request;
  * Transfer-Encoding together with Content-Length, or in HTTP/1.0, kept the connection open,
    so bytes a front end framed by Content-Length reached the dyno as a request of their own
    (RFC 9112, 6.1: close after such a request);
  * an HTTP/1.0 client's "Expect: 100-continue" got an interim 100 it cannot understand;
  * a POST the dyno read before closing its pooled connection was sent again.
"""

import socket
import threading
import time

import hermod_test as hm
from hermod_test import T, check, eq, expect_error

HOST = "app.test"
RAWHOST = "raw.test"


class RawDyno:
    """A dyno that writes what it likes: answer(request line) gives the bytes to send for each
    request head (a list: the pieces go out 50 ms apart)."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.heads = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        buf = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    return
                buf += d
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    self.heads += 1
                    for i, piece in enumerate(self.answer(head.split(b"\r\n")[0])):
                        if i > 0:
                            time.sleep(0.05)
                        s.sendall(piece)
        except OSError:
            pass
        finally:
            s.close()

    def close(self):
        self.sock.close()


def fixture(env):
    """One router (one worker), an echo dyno for app.test and a raw dyno for raw.test that
    answers with a 200 carrying 9000 header lines written "name:value"."""
    d = env.dyno("web.1")
    many = b"HTTP/1.1 200\r\n" + b"".join(b"h%04d:v\r\n" % i for i in range(9000)) + \
        b"Content-Length:2\r\n\r\nok"
    raw = RawDyno(lambda line: [many])
    env.defer(raw.close)
    env.routing().apply([hm.ch_app("app"), hm.ch_domain(HOST, "app"),
                         hm.ch_dyno("app", "web.1", d.addr),
                         hm.ch_app("raw"), hm.ch_domain(RAWHOST, "raw"),
                         hm.ch_dyno("raw", "web.1", raw.addr)])
    return env.router(workers=1), d, raw


def targets_since(d, before):
    return [q["target"] for q in d.requests()[before:]]


def one_request_then_close(router, d, raw, method="POST"):
    """Sends raw (one request, then bytes that must never reach the dyno as a request of their
    own); expects one answer with Connection: close, and the connection closed."""
    before = len(d.requests())
    with hm.Conn(router.port) as c:
        c.send(raw)
        r = c.read_response(method)
        eq(r.status, 200, "status of the first request")
        eq((r.header("connection") or "").lower(), "close", "Connection of the answer")
        check(r.closed or c.wait_closed(T(2)),
              "the router kept the connection open after a request with suspect framing")
    time.sleep(0.2)
    got = targets_since(d, before)
    check("/smuggled" not in got, "the smuggled request reached the dyno: %r" % got)
    return r


# -- rewriting bounds ------------------------------------------------------------------------

def test_request_headers_without_space_rewritten_intact(env, fx):
    """998 lines "hNNN:vvvvvvvvvv" (a 16 KiB head): the rewritten head grows by a byte per line
    and overran its buffer (heap overflow, seen by ASan)."""
    router, d, _ = fx
    hs = ["h%03d:%s" % (i, "v" * 10) for i in range(998)]
    with hm.Conn(router.port) as c:
        c.send(hm.request_bytes("GET", "/echo/many", HOST, hs))
        e = hm.echo_of(c.read_response())
    got = [list(h) for h in e["headers"] if h[0].startswith("h")]
    eq(len(got), 998, "client headers at the dyno")
    eq(got[-1], ["h997", "v" * 10], "last client header at the dyno")
    eq(hm.hdr(e["headers"], "Via"), ["1.1 hermod"], "Via at the dyno")


def test_response_headers_without_space_rewritten_intact(env, fx):
    """A dyno's 200 with 9000 lines "hNNNN:v" and no reason phrase (heap overflow before)."""
    router, _, raw = fx
    with hm.Conn(router.port) as c:
        c.send(hm.request_bytes("GET", "/", RAWHOST))
        r = c.read_response()
    eq(r.status, 200, "status")
    eq(len([k for k, _ in r.headers if k.startswith("h")]), 9000, "dyno headers relayed")
    eq(r.body, b"ok", "body")


def test_head_response_body_sent_late_is_not_the_next_answer(env):
    """A dyno answers HEAD with Content-Length: 42 and sends the 42 bytes anyway, 50 ms later
    (the bytes happen to look like a response). The router used to pool the connection at once
    and send the next request on it, whose answer then was those bytes; from the pool that is
    another client's request, and every later one on the connection stays one answer behind."""
    evil = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"

    def answer(line):
        if line.startswith(b"HEAD"):
            return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(evil), evil]
        return [b"", b"", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nGOOD"]  # 100 ms

    raw = RawDyno(answer)
    env.defer(raw.close)
    env.routing().app("raw", [RAWHOST], [("web.1", raw.addr)])
    router = env.router()
    with hm.Conn(router.port) as c:
        c.send(b"HEAD / HTTP/1.1\r\nHost: raw.test\r\n\r\n"
               b"GET /next HTTP/1.1\r\nHost: raw.test\r\n\r\n")
        eq(c.read_response("HEAD").status, 200, "HEAD status")
        eq(c.read_response().body, b"GOOD", "answer to the request after the HEAD")
    for status in (204, 304):
        resp = b"HTTP/1.1 %d X\r\nContent-Length: 4\r\n\r\n" % status
        raw.answer = lambda line, resp=resp: [resp, b"EVIL"] if b" / " in line else \
            answer(line)
        with hm.Conn(router.port) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: raw.test\r\n\r\n")
            eq(c.read_response().status, status, "status")
            c.send(b"GET /next HTTP/1.1\r\nHost: raw.test\r\n\r\n")
            eq(c.read_response().body, b"GOOD", "answer to the request after the %d" % status)


# -- bare CR as a line end -------------------------------------------------------------------

def test_bare_cr_ending_a_head_is_400(env, fx):
    router, d, _ = fx
    before = len(d.requests())
    expect_error(router, b"GET /echo/a HTTP/1.1\r\nHost: app.test\r\n\rX"
                 b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n", 400, "H26")
    time.sleep(0.2)
    eq(targets_since(d, before), [], "requests that reached the dyno")


def test_bare_cr_ending_a_chunked_body_is_400(env, fx):
    """"0\\r\\n\\rX" was the end of the body to llhttp, and "GET /smuggled" the next request."""
    router, d, _ = fx
    before = len(d.requests())
    expect_error(router, b"POST /echo/a HTTP/1.1\r\nHost: app.test\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\rX"
                 b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n", 400, "H26")
    time.sleep(0.2)
    check("/smuggled" not in targets_since(d, before), "the smuggled request reached the dyno")


def test_chunk_data_without_crlf_is_400(env, fx):
    router, d, _ = fx
    for body in (b"3\r\nabcXX0\r\n\r\n", b"3\rXabc\r\n0\r\n\r\n", b"3\r\nabc\r\n0\r\nA: b\rX\r\n\r\n"):
        expect_error(router, b"POST /echo/a HTTP/1.1\r\nHost: app.test\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + body, 400, "H26")


def test_dyno_chunk_without_crlf_is_h25(env, fx):
    """A response body "3\\r\\nabcXX0\\r\\n\\r\\n" was relayed as complete, the client and the
    router then disagreeing on where it ended, and the connection kept."""
    router, _, _ = fx
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n"
    since = router.mark()
    with hm.Conn(router.port) as c:
        c.send(hm.request_bytes("GET", "/raw?keep=1&b64=" + hm.b64(resp), HOST))
        r = c.read_response()
        if r.status == 200:
            # The head and "abc" may have gone out before the bad bytes came: then the
            # connection must be cut.
            check(not r.complete or r.closed or c.wait_closed(T(2)),
                  "a malformed chunked response was relayed as complete and the connection kept")
        else:
            eq(r.status, 502, "status")
    router.wait_log(since, code="H25")


def test_dyno_status_line_bare_cr_is_h25(env, fx):
    router, _, _ = fx
    resp = b"HTTP/1.1 200 OK\rXContent-Length: 2\r\n\r\nok"
    expect_error(router, hm.request_bytes("GET", "/raw?keep=1&b64=" + hm.b64(resp), HOST), 502,
                 "H25")


# -- suspect framing closes the connection ----------------------------------------------------

def test_content_length_with_transfer_encoding_closes(env, fx):
    """CL.TE: a front end going by Content-Length sends "0\\r\\n\\r\\nGET /smuggled..." as one
    body; the router (chunked wins) used to answer and then serve /smuggled."""
    router, d, _ = fx
    body = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"
    one_request_then_close(router, d, b"POST /echo/a HTTP/1.1\r\nHost: app.test\r\n"
                           b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s"
                           % (len(body), body))


def test_transfer_encoding_in_http10_closes(env, fx):
    router, d, _ = fx
    one_request_then_close(router, d, b"POST /echo/a HTTP/1.0\r\nHost: app.test\r\n"
                           b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n")


def test_plain_chunked_keeps_the_connection(env, fx):
    """The control: chunked alone in HTTP/1.1 keeps the connection for the next request."""
    router, d, _ = fx
    with hm.Conn(router.port) as c:
        c.send(b"POST /echo/a HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\nGET /echo/second HTTP/1.1\r\nHost: app.test\r\n\r\n")
        eq(hm.echo_of(c.read_response())["body"], "abc", "first body")
        eq(hm.echo_of(c.read_response())["target"], "/echo/second", "second request")


# -- Expect from an HTTP/1.0 client ------------------------------------------------------------

def test_expect_from_http10_client_gets_no_100(env, fx):
    router, d, _ = fx
    with hm.Conn(router.port) as c:
        c.send(b"POST /echo/a HTTP/1.0\r\nHost: app.test\r\nExpect: 100-continue\r\n"
               b"Content-Length: 5\r\n\r\nhello")
        r = c.read_response("POST", interim=True)
        eq(r.status, 200, "first response to an HTTP/1.0 client (no 1xx)")
        eq(hm.echo_of(r)["body"], "hello", "body at the dyno")


# -- retries -----------------------------------------------------------------------------------

def test_post_not_sent_twice_after_dyno_closed_pooled_connection(env):
    """The dyno reads a POST on a pooled connection and closes without answering: it may have
    acted on it, so the router answers H13 instead of sending it again (RFC 9112, 9.3.1). A GET
    in the same situation is still retried."""
    router, ds = env.simple("app", HOST)
    d = ds[0]
    hm.echo_of(hm.http_get(router.port, "/ka-close-second", HOST))
    since = router.mark()
    r = hm.http_get(router.port, "/echo/pay", HOST, method="POST", body=b"amount=100")
    posts = [q for q in d.requests() if q["target"] == "/echo/pay"]
    eq(len(posts), 1, "times the dyno received the POST")
    eq(r.status, 503, "status")
    router.wait_log(since, code="H13", path="/echo/pay")
    hm.echo_of(hm.http_get(router.port, "/ka-close-second", HOST))
    r = hm.http_get(router.port, "/echo/again", HOST)
    eq(r.status, 200, "an idempotent request on a stale pooled connection is retried")
    eq(len([q for q in d.requests() if q["target"] == "/echo/again"]), 2,
       "times the dyno received the retried GET")


if __name__ == "__main__":
    hm.run(globals())

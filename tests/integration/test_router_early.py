#!/usr/bin/env python3
"""hermod-router: a dyno that answers before it has read the whole request body (issue 9,
"Early answers"; CONTRACT.md: such a response "is relayed to the client at once").

A dyno may answer an upload early (413 for a body that is too large, 401/403, a redirect) and
then close, keep reading, or stop reading. Whatever it does, the client must get that answer,
while it is still uploading, with the dyno's status in the log (not H13, H27 or H28); the
router closes the client connection after the answer (the rest of the upload is read and
dropped during the lingering close), and a dyno connection whose request was not completely
sent never goes back to the pool.

Before the fix, a dyno that answered and closed while the client was still sending made the
router fail its next write to the dyno and answer 503 H13 instead of relaying the dyno's 413
(the answer was already in the router's receive queue).
"""

import select
import socket
import time

import hermod_test as hm
from hermod_test import T, check, eq

HOST = "app.test"
BODY = 8 << 20          # far more than any socket buffer: the upload cannot be finished early
AFTER = 256 << 10       # the dyno answers after this much of the body
PIECE = 64 << 10


def fixture(env):
    """One router (one worker) and one dyno."""
    d = env.dyno("web.1")
    env.routing().app("app", [HOST], [(d.name, d.addr)])
    return env.router(), d


def upload_head(target, framing):
    if framing == "cl":
        return ("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n" %
                (target, HOST, BODY)).encode()
    return ("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n" %
            (target, HOST)).encode()


def piece(framing):
    data = b"u" * PIECE
    return data if framing == "cl" else b"%x\r\n%s\r\n" % (len(data), data)


def early_upload(router, target, framing, client):
    """Uploads to target and returns (response, closed, body bytes sent). client "streams":
    sends the body while watching for an answer and stops sending at its first byte (as curl
    does); "waits": sends a bit more than the dyno reads before answering, then only waits for
    the answer."""
    with hm.Conn(router.port) as c:
        c.send(upload_head(target, framing))
        c.sock.setblocking(False)
        sent, limit = 0, (BODY if client == "streams" else AFTER + 4 * PIECE)
        deadline = time.monotonic() + T(10)
        data = piece(framing)
        while True:
            want_write = sent < limit
            r, w, _ = select.select([c.sock], [c.sock] if want_write else [], [],
                                    max(0, deadline - time.monotonic()))
            if r:
                break
            if not r and not w:
                hm.fail("no answer within %.0fs; %d body bytes sent" % (T(10), sent))
            try:
                sent += c.sock.send(data)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                hm.fail("the router broke the upload before answering: %s" % e)
        c.sock.setblocking(True)
        resp = c.read_response("POST", timeout=T(5))
        closed = resp.closed or c.wait_closed(T(5))
        return resp, closed, sent


def check_early(router, d, framing, then, pooled, client):
    what = "%s upload, dyno %s, %s dyno connection, client %s" % (
        framing, then, "pooled" if pooled else "fresh", client)
    if pooled:
        warm = router.get("/hello", HOST)
        eq(warm.status, 200, "warm-up request")
        pooled_conn = warm.header("x-dyno-conn")
    since = router.mark()
    resp, closed, sent = early_upload(
        router, "/early/413?after=%d&then=%s" % (AFTER, then), framing, client)
    eq(resp.status, 413, "status relayed (%s)" % what)
    eq(resp.body, b"early\n", "body relayed (%s)" % what)
    eq((resp.header("connection") or "").lower(), "close", "Connection (%s)" % what)
    check(closed, "the router must close the connection after an early answer (%s)" % what)
    # (That the answer comes while the upload is unfinished is what the "waits" client shows:
    # it sends a little more than the dyno reads and then only waits. A streaming client may
    # fit the whole body into the kernel's socket buffers first, on a slow build.)
    early_conn = resp.header("x-dyno-conn")
    if pooled:
        eq(early_conn, pooled_conn, "the upload went on the pooled connection (%s)" % what)
    ll = router.wait_log(since, path=lambda p: (p or "").startswith("/early/"))
    eq(ll.get("status"), "413", "status= logged (%s): %s" % (what, ll.raw))
    check(not ll.get("code"), "no error code for an early answer (%s): %s" % (what, ll.raw))
    # The dyno connection with an unfinished request is never reused.
    nxt = router.get("/echo", HOST)
    eq(nxt.status, 200, "the next request (%s)" % what)
    check(nxt.header("x-dyno-conn") != early_conn,
          "a dyno connection whose request was not completely sent went back to the pool "
          "(%s)" % what)


def early_cases(router, d, then, clients=("streams", "waits")):
    for framing in ("cl", "chunked"):
        for pooled in (False, True):
            for client in clients:
                check_early(router, d, framing, then, pooled, client)


def test_dyno_answers_and_closes(env, fx):
    router, d = fx
    # A few rounds: the dyno's close races with the router's next write to it.
    for _ in range(3):
        early_cases(router, d, "close")


def test_dyno_answers_and_keeps_reading(env, fx):
    router, d = fx
    # Only a client that waits: one that streams may finish its upload before the answer
    # reaches it (this dyno reads on), and then the answer is an ordinary one.
    early_cases(router, d, "read", ("waits",))


def test_dyno_answers_and_stops_reading(env, fx):
    router, d = fx
    early_cases(router, d, "stall")


def test_answer_before_any_body_byte(env, fx):
    """A dyno that answers from the head alone (a 401, a redirect)."""
    router, d = fx
    for framing in ("cl", "chunked"):
        since = router.mark()
        resp, closed, _ = early_upload(router, "/early/401?then=close", framing, "streams")
        eq(resp.status, 401, "status relayed (%s)" % framing)
        check(closed, "connection closed after the early answer (%s)" % framing)
        ll = router.wait_log(since, path=lambda p: (p or "").startswith("/early/"))
        eq(ll.get("status"), "401", "status= logged: %s" % ll.raw)


def test_client_keeps_the_connection_when_the_upload_was_complete(env, fx):
    """An answer that comes after the whole request went out is an ordinary one: the client
    connection and the dyno connection stay open (no regression from the early-answer path)."""
    router, d = fx
    with hm.Conn(router.port) as c:
        r1 = c.request("POST", "/early/413?after=5&then=read", HOST, body=b"12345")
        eq(r1.status, 413, "status")
        eq((r1.header("connection") or "").lower(), "keep-alive", "Connection")
        r2 = c.request("GET", "/echo", HOST)
        eq(r2.status, 200, "second request on the same client connection")
        eq(r2.header("x-dyno-conn"), r1.header("x-dyno-conn"),
           "a dyno connection whose request was complete is reused")


if __name__ == "__main__":
    hm.run(globals())

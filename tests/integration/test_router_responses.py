#!/usr/bin/env python3
"""hermod-router responses, bodies, upgrades and keep-alive (issue 4 "Response validation",
"Bodies", "Upgrade", "Keep-alive"): dynos that answer well, oddly, or badly."""

import hashlib
import threading
import time

import hermod_test as hm
from hermod_test import T, check, eq, request_bytes

HOST = "app.test"


def setup(env, **kw):
    r, ds = env.simple("app", HOST, **kw)
    return r, ds[0]


def get(router, target, method="GET", version="HTTP/1.1", headers=None):
    return hm.http_get(router.port, target, HOST, headers=headers, method=method,
                       version=version)


def h25(router, target):
    """A dyno answer the router must refuse: 502, code H25, connection closed."""
    r, ll = hm.expect_error(router, request_bytes("GET", target, HOST), 502, "H25")
    check(ll.get("dyno") == "web.1", "dyno= should name the dyno that misbehaved: %s" % ll.raw)
    return r


# -- status lines -------------------------------------------------------------------------------

def test_custom_status_and_reason_pass_through(env):
    router, d = setup(env)
    for code, reason in [(299, "Custom Thing"), (418, "I'm a teapot"), (599, "Network Oops"),
                         (222, "x")]:
        r = get(router, "/status/%d?reason=%s" % (code, reason.replace(" ", "%20")))
        eq((r.status, r.reason), (code, reason), "status line passed through")


def test_status_without_reason_passes_through(env):
    router, d = setup(env)
    r = get(router, "/status/200?noreason=1&body=ok")
    eq(r.status, 200, "status of 'HTTP/1.1 200' without a reason phrase")
    eq(r.body, b"ok", "body")


def test_malformed_status_line_is_502_h25(env):
    router, d = setup(env)
    h25(router, "/bad-status")


def test_header_without_colon_is_502_h25(env):
    router, d = setup(env)
    h25(router, "/bad-header")


def test_bad_content_length_is_502_h25(env):
    router, d = setup(env)
    h25(router, "/bad-cl")


def test_conflicting_content_length_is_502_h25(env):
    router, d = setup(env)
    h25(router, "/conflict-cl")


def test_status_line_8192_accepted(env):
    router, d = setup(env)
    r = get(router, "/long-status?len=8192")
    eq(r.status, 200, "status for an 8192-byte status line")
    eq(len("HTTP/1.1 200 " + r.reason), 8192, "length of the relayed status line")


def test_status_line_8193_is_502_h25(env):
    router, d = setup(env)
    h25(router, "/long-status?len=8193")


def test_set_cookie_under_8k_accepted(env):
    router, d = setup(env)
    r = get(router, "/big-cookie?size=8000")
    eq(r.status, 200, "status with a Set-Cookie of 8000 bytes")
    eq(len(r.header("Set-Cookie", "")), 8000, "Set-Cookie length at the client")


def test_set_cookie_over_8k_is_502_h25(env):
    router, d = setup(env)
    h25(router, "/big-cookie?size=8300")


def test_header_line_over_512k_is_502_h25(env):
    router, d = setup(env)
    h25(router, "/huge-header?size=%d" % (512 * 1024 + 100))


def test_big_header_line_under_512k_accepted(env):
    router, d = setup(env)
    r = get(router, "/huge-header?size=%d" % (300 * 1024))
    eq(r.status, 200, "status with a 300 KiB header line")
    eq(len(r.header("X-Huge", "")), 300 * 1024 - len("X-Huge: "), "X-Huge length")


def test_second_100_continue_is_502(env):
    router, d = setup(env)
    with hm.Conn(router.port) as c:
        c.send(request_bytes("GET", "/double-continue", HOST))
        statuses = []
        while True:
            r = c.read_response(interim=True)
            statuses.append(r.status)
            if r.status >= 200:
                break
        eq(statuses[-1], 502, "final status after a dyno sent 100 Continue twice (%r)" %
           statuses)
    ll = router.wait_log(status="502")
    eq(ll.get("code"), "H25", "code= for a second 100 Continue")


def _bad_body(router, raw):
    """The dyno sends raw (a valid head, then a broken chunked body) in one write. Returns what
    the client got, after checking it got something: a 502 H25, or the relayed head with the
    body cut short and the connection closed; never a silent close."""
    mark = router.mark()
    with hm.Conn(router.port) as c:
        c.send(request_bytes("GET", "/raw?b64=" + hm.b64(raw), HOST))
        try:
            r = c.read_response(timeout=T(5))
        except hm.ConnectionClosed as e:
            ll = router.wait_log(mark)
            hm.fail("client got no response at all (%s) for a dyno response with a bad chunk; "
                    "the router logged: %s" % (e, ll.raw))
        if r.status != 502:
            check(not r.complete, "a broken chunked body was relayed as complete: %r" % r)
            check(r.closed or c.wait_closed(T(3)), "connection not closed after a broken body")
    ll = router.wait_log(mark)
    eq(ll.get("code"), "H25", "code= for a broken chunked body (%s)" % ll.raw)
    if r.status == 502:
        eq(ll.get("status"), "502", "status= logged for the 502 the client got (%s)" % ll.raw)
    return r, ll


def test_bad_first_chunk_from_dyno(env):
    router, d = setup(env)
    _bad_body(router, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"
                      b"0\r\n\r\n")


def test_bad_chunk_after_good_data(env):
    router, d = setup(env)
    r, ll = _bad_body(router, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"3\r\nabc\r\nzz\r\n0\r\n\r\n")
    if r.status == 200:
        eq(r.body, b"abc", "body relayed before the broken chunk")
    check(ll.get("bytes") in ("", "0", str(len(r.body))) or r.status == 502,
          "bytes=%s logged but the client got %d body bytes" % (ll.get("bytes"), len(r.body)))


# -- bodies -------------------------------------------------------------------------------------

def test_chunked_relayed_to_http11_client(env):
    router, d = setup(env)
    r = get(router, "/chunked?chunks=4&size=7&trailer=X-Check:sum")
    eq(r.status, 200, "status")
    eq(r.framing, "chunked", "framing toward an HTTP/1.1 client")
    eq(r.body, b"a" * 7 + b"b" * 7 + b"c" * 7 + b"d" * 7, "body")


def test_http10_client_gets_dechunked_close_delimited(env):
    router, d = setup(env)
    with hm.Conn(router.port) as c:
        c.send(request_bytes("GET", "/chunked?chunks=3&size=5", HOST, version="HTTP/1.0"))
        r = c.read_response()
        eq(r.status, 200, "status")
        eq(r.headers_all("Transfer-Encoding"), [], "Transfer-Encoding toward an HTTP/1.0 client")
        check(r.framing in ("close", "length"), "framing toward HTTP/1.0: %s" % r.framing)
        eq(r.body, b"aaaaabbbbbccccc", "de-chunked body")
        check(r.closed or c.wait_closed(T(3)), "connection not closed after the body")


def test_http10_keep_alive_when_asked(env):
    router, d = setup(env)
    with hm.Conn(router.port) as c:
        for i in range(3):
            r = c.request("GET", "/echo/%d" % i, HOST, ["Connection: keep-alive"],
                          version="HTTP/1.0")
            eq(hm.echo_of(r)["target"], "/echo/%d" % i, "request %d on an HTTP/1.0 keep-alive "
               "connection" % i)
            eq((r.header("Connection") or "").lower(), "keep-alive", "Connection header")


def test_close_delimited_dyno_body_relayed(env):
    router, d = setup(env)
    with hm.Conn(router.port) as c:
        c.send(request_bytes("GET", "/no-framing", HOST))
        r = c.read_response()
        eq(r.status, 200, "status")
        check(r.body.startswith(b"close-delimited body ") and len(r.body) == 1021,
              "body of a dyno response without framing: %d bytes" % len(r.body))
        check(r.closed or c.wait_closed(T(3)),
              "a response without framing must end with the connection closed")


def test_large_response_body(env):
    router, d = setup(env)
    n = 16 << 20
    r = get(router, "/bytes/%d" % n)
    eq(r.status, 200, "status")
    eq(len(r.body), n, "body length")
    eq(r.body[:40], b"0123456789abcdefghijklmnopqrstuvwxyz\n012", "body start")


def test_large_request_body_content_length(env):
    router, d = setup(env)
    body = bytes(range(256)) * (12 << 12)  # 12 MiB
    with hm.Conn(router.port) as c:
        r = c.request("POST", "/sink", HOST, body=body, timeout=T(30))
        j = r.json()
        eq(j["len"], len(body), "bytes the dyno received")
        eq(j["sha256"], hashlib.sha256(body).hexdigest(), "sha256 of what the dyno received")


def test_large_request_body_chunked(env):
    router, d = setup(env)
    parts = [bytes([i % 256]) * 65536 for i in range(64)]
    with hm.Conn(router.port) as c:
        r = c.request("POST", "/sink", HOST, ["Transfer-Encoding: chunked"],
                      body=hm.chunked(*parts), timeout=T(30))
        j = r.json()
        eq(j["len"], 64 * 65536, "bytes the dyno received")
        eq(j["sha256"], hashlib.sha256(b"".join(parts)).hexdigest(), "sha256")


def test_response_streamed_not_buffered(env):
    # The dyno sends 10 of the 100 bytes it announced and then holds the connection: the
    # client gets those 10 only if the router relays what it has (no timing involved).
    router, d = setup(env)
    with hm.Conn(router.port) as c:
        c.send(request_bytes("GET", "/stall-mid-body", HOST))
        head = c.read_head()
        eq(head.status, 200, "status")
        eq(head.header("content-length"), "100", "Content-Length")
        first = c.read_exact(10, T(5))
        eq(first, b"x" * 10, "the body bytes the dyno sent before it stalled")


def test_head_response_has_no_body(env):
    router, d = setup(env)
    with hm.Conn(router.port) as c:
        # A router waiting for a body here would answer only at its 55 s idle timeout.
        r = c.request("HEAD", "/bytes/5000", HOST, timeout=T(5))
        eq(r.status, 200, "status")
        eq(r.header("Content-Length"), "5000", "Content-Length of the HEAD response")
        r2 = c.request("GET", "/echo/after-head", HOST)
        eq(hm.echo_of(r2)["target"], "/echo/after-head", "next request after a HEAD")


def test_204_and_304_do_not_wait_for_a_body(env):
    router, d = setup(env)
    for code in (204, 304):
        with hm.Conn(router.port) as c:
            # The dyno announces a Content-Length but sends no body, as it may for 304; a
            # router waiting for one would answer only at its 55 s idle timeout.
            r = c.request("GET", "/status/%d?cl=50" % code, HOST, timeout=T(5))
            eq(r.status, code, "status")
            eq(r.body, b"", "body of a %d" % code)
            r2 = c.request("GET", "/echo/after", HOST)
            eq(hm.echo_of(r2)["target"], "/echo/after", "next request after a %d" % code)


def test_dyno_closes_mid_body(env):
    router, d = setup(env)
    with hm.Conn(router.port) as c:
        c.send(request_bytes("GET", "/close-mid-body", HOST))
        r = c.read_response(timeout=T(5))
        eq(r.status, 200, "status (the head was already relayed)")
        check(not r.complete and len(r.body) == 10,
              "client must see the truncation: complete=%s, %d bytes" % (r.complete, len(r.body)))
        check(r.closed or c.wait_closed(T(3)), "client connection not closed after truncation")


@hm.timeout(60)
def test_download_back_pressure_bounds_memory(env):
    router, d = setup(env)
    hm.http_get(router.port, "/echo", HOST)
    w = router.wait_workers()[0]
    base = hm.proc_rss_kib(w)
    n = 96 << 20
    with hm.Conn(router.port, timeout=T(60)) as c:
        c.send(request_bytes("GET", "/bytes/%d" % n, HOST))
        head = c.read_head()
        eq(head.status, 200, "status")
        time.sleep(2)  # the client reads nothing: the router must stop reading the dyno
        grown = hm.proc_rss_kib(w) - base
        got = 0
        while got < n:
            d_ = c.read_some(T(20))
            if not d_:
                break
            got += len(d_)
        eq(got, n, "body bytes received")
    if not hm.SANITIZED:
        check(grown < 24 * 1024, "worker RSS grew by %d KiB while a client was not reading a "
              "96 MiB response: no back-pressure" % grown)


@hm.timeout(60)
def test_upload_back_pressure_bounds_memory(env):
    router, d = setup(env)
    hm.http_get(router.port, "/echo", HOST)
    w = router.wait_workers()[0]
    base = hm.proc_rss_kib(w)
    n = 96 << 20
    block = b"u" * (1 << 20)
    result = {}

    def upload():
        try:
            with hm.Conn(router.port, timeout=T(60)) as c:
                c.send(request_bytes("POST", "/pause-sink?secs=2.5", HOST,
                                     ["Content-Length: %d" % n]))
                for _ in range(n // len(block)):
                    c.send(block)
                result["resp"] = c.read_response(timeout=T(30))
        except Exception as e:  # noqa: BLE001
            result["err"] = e
    t = threading.Thread(target=upload, daemon=True)
    t.start()
    time.sleep(2)
    grown = hm.proc_rss_kib(w) - base
    t.join(T(50))
    check("err" not in result, "upload failed: %r" % result.get("err"))
    check("resp" in result, "upload did not finish")
    j = result["resp"].json()
    eq(j["len"], n, "bytes the dyno received")
    eq(j["sha256"], hashlib.sha256(block * (n // len(block))).hexdigest(), "sha256")
    if not hm.SANITIZED:
        check(grown < 24 * 1024, "worker RSS grew by %d KiB while a dyno was not reading a "
              "96 MiB upload: no back-pressure" % grown)


# -- upgrade ------------------------------------------------------------------------------------

def _upgrade(router, proto="websocket"):
    c = hm.Conn(router.port)
    c.send(request_bytes("GET", "/upgrade", HOST, [("Connection", "Upgrade"),
                                                    ("Upgrade", proto)]))
    r = c.read_response()
    return c, r


def test_websocket_upgrade_tunnel(env):
    router, d = setup(env)
    c, r = _upgrade(router)
    with c:
        eq(r.status, 101, "status of an upgrade")
        eq((r.header("Upgrade") or "").lower(), "websocket", "Upgrade header relayed")
        eq((r.header("Connection") or "").lower(), "upgrade", "Connection header on a 101")
        for msg in (b"ping", b"\x00\x01binary\xff" * 100, b"x" * 200000):
            c.send(msg)
            got = b""
            while len(got) < len(msg):
                part = c.read_some(T(5))
                check(part, "tunnel closed after %d of %d echoed bytes" % (len(got), len(msg)))
                got += part
            eq(got, msg, "bytes echoed through the tunnel")


def test_any_protocol_upgrade(env):
    router, d = setup(env)
    c, r = _upgrade(router, "my-proto/2")
    with c:
        eq(r.status, 101, "status of an upgrade to my-proto/2")
        c.send(b"hello tunnel")
        eq(c.read_exact(12, T(5)), b"hello tunnel", "echo through the tunnel")


def test_upgrade_tunnel_idle_close(env):
    router, d = setup(env, idle_timeout="1s")
    c, r = _upgrade(router)
    with c:
        eq(r.status, 101, "status")
        c.send(b"abc")
        eq(c.read_exact(3, T(3)), b"abc", "echo")
        t0 = time.monotonic()
        closed = c.wait_closed(T(5))
        dt = time.monotonic() - t0
        check(closed, "tunnel still open after %.1fs of silence (--idle-timeout 1s)" % dt)
        check(dt >= 0.8, "tunnel closed after only %.2fs of silence" % dt)
    hm.wait_for(lambda: d.open_connections() == 0, T(3), "the dyno side of the tunnel to close")


def test_upgrade_tunnel_kept_while_active(env):
    router, d = setup(env, idle_timeout="1s")
    c, r = _upgrade(router)
    with c:
        eq(r.status, 101, "status")
        for i in range(6):  # 2.4 s of traffic, never 1 s idle
            c.send(b"%d" % i)
            eq(c.read_exact(1, T(3)), b"%d" % i, "echo %d" % i)
            time.sleep(0.4)


# -- keep-alive and the dyno connection pool ----------------------------------------------------

def test_client_keep_alive_and_dyno_connection_reused(env):
    router, d = setup(env)
    with hm.Conn(router.port) as c:
        conns = set()
        for i in range(10):
            r = c.request("GET", "/echo/%d" % i, HOST)
            e = hm.echo_of(r)
            eq(e["target"], "/echo/%d" % i, "request %d on one client connection" % i)
            conns.add(e["conn"])
            check(not r.closed, "router closed a keep-alive client connection")
    eq(len(conns), 1, "dyno connections used for 10 requests on one client connection "
       "(--workers 1)")


def test_pipelined_requests_answered_in_order(env):
    router, d = setup(env)
    with hm.Conn(router.port) as c:
        c.send(b"".join(request_bytes("GET", "/echo/p%d" % i, HOST) for i in range(5)))
        for i in range(5):
            eq(hm.echo_of(c.read_response())["target"], "/echo/p%d" % i, "pipelined response")


def test_pool_reused_across_client_connections(env):
    router, d = setup(env)
    conns = set()
    for i in range(5):
        e = hm.echo_of(hm.http_get(router.port, "/echo", HOST))
        conns.add(e["conn"])
    eq(len(conns), 1, "dyno connections used for 5 sequential client connections (pool)")
    eq(d.connections(), 1, "connections the dyno accepted")


def test_pool_is_bounded(env):
    router, d = setup(env, pool_size=1)
    conns = [hm.Conn(router.port) for _ in range(3)]
    for c in conns:
        c.send(request_bytes("GET", "/delay/0.5", HOST))
    for c in conns:
        eq(c.read_response(timeout=T(5)).status, 200, "status")
        c.close()
    eq(d.connections(), 3, "dyno connections for 3 concurrent requests")
    hm.wait_for(lambda: d.open_connections() == 1, T(3),
                "the router to keep only one idle dyno connection (--pool-size 1)")


def test_pooled_connection_closed_by_dyno_is_retried_once(env):
    router, d = setup(env)
    e1 = hm.echo_of(hm.http_get(router.port, "/ka-close-second", HOST))
    # The pooled connection will be read and closed by the dyno without an answer.
    r = hm.http_get(router.port, "/echo/retried", HOST)
    check(r.status == 200, "a stale pooled connection must be retried on a fresh one: got %s %s"
          % (r.status, r.reason))
    e2 = hm.echo_of(r)
    check(e2["conn"] != e1["conn"], "retried request came on the stale connection")
    on_stale = [q for q in d.requests() if q["conn"] == e1["conn"] and q["req"] == 2]
    check(on_stale and on_stale[0]["target"] == "/echo/retried",
          "the router did not try its pooled connection first (no pool?): dyno saw %r" %
          [(q["conn"], q["req"], q["target"]) for q in d.requests()])
    eq(d.connections(), 2, "connections the dyno accepted")


def test_pooled_connection_closed_while_idle(env):
    router, d = setup(env)
    hm.echo_of(hm.http_get(router.port, "/idle-close?after=0.2", HOST))
    time.sleep(0.6)
    r = hm.http_get(router.port, "/echo/after-idle-close", HOST)
    eq(r.status, 200, "request after the dyno closed the pooled connection")


def test_pool_idle_timeout(env):
    router, d = setup(env, pool_idle_timeout="1s")
    hm.echo_of(hm.http_get(router.port, "/echo", HOST))
    eq(d.open_connections(), 1, "dyno connections kept open after a request")
    hm.wait_for(lambda: d.open_connections() == 0, T(4),
                "the router to close its idle pooled connection (--pool-idle-timeout 1s)")


def test_idle_keepalive_client_closed(env):
    router, d = setup(env, keepalive_timeout="1s")
    with hm.Conn(router.port) as c:
        eq(c.request("GET", "/echo", HOST).status, 200, "status")
        t0 = time.monotonic()
        router.wait_log(path="/echo")
        mark = router.mark()
        check(c.wait_closed(T(5)), "idle keep-alive connection still open after 5s "
              "(--keepalive-timeout 1s)")
        dt = time.monotonic() - t0
        check(0.8 <= dt <= T(3), "idle keep-alive connection closed after %.2fs "
              "(--keepalive-timeout 1s)" % dt)
        eq(c.buf, b"", "bytes sent on an idle keep-alive connection before closing it")
    time.sleep(0.2)
    eq([ll.raw for ll in router.logs()[mark:]], [], "log lines for closing an idle connection")


def test_keepalive_client_active_within_timeout_kept(env):
    router, d = setup(env, keepalive_timeout="1s")
    with hm.Conn(router.port) as c:
        for i in range(4):
            eq(c.request("GET", "/echo/%d" % i, HOST).status, 200, "request %d" % i)
            time.sleep(0.6)


def test_request_body_and_keep_alive_in_sync(env):
    router, d = setup(env)
    with hm.Conn(router.port) as c:
        for i in range(5):
            body = b"b%d" % i * (1000 * (i + 1))
            r = c.request("POST", "/echo", HOST, body=body)
            eq(hm.echo_of(r)["body"].encode("latin-1"), body, "body of request %d" % i)


if __name__ == "__main__":
    hm.run(globals())

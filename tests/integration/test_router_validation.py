#!/usr/bin/env python3
"""hermod-router request validation (CONTRACT.md "Requests", issue 4 "Validation").

Each case sends exact bytes to a real router in front of an echo dyno. Accepted requests must
reach the dyno intact; rejected ones must get the contract's status with code H26, an explicit
Connection: close, a closed connection, and never reach the dyno.
"""

import select
import time

import hermod_test as hm
from hermod_test import T, check, eq, expect_error, request_bytes

HOST = "app.test"


def setup(env, **kw):
    r, ds = env.simple("app", HOST, **kw)
    return r, ds[0]


def fixture(env):
    """One router (two workers) and one echo dyno shared by the tests that take fx."""
    return setup(env, workers=2)


def accept(router, raw, method="GET"):
    """Sends raw bytes; expects the echo dyno's 200; returns the echoed request."""
    with hm.Conn(router.port) as c:
        c.send(raw)
        try:
            resp = c.read_response(method)
        except hm.ConnectionClosed as e:
            hm.fail("request was not answered: %s" % e)
        check(resp.status == 200, "expected the request to be accepted (200 from the dyno), "
              "got %s %s: %r" % (resp.status, resp.reason, resp.body[:200]))
        return hm.echo_of(resp)


def reject(router, dyno, raw, status=400):
    before = len(dyno.requests())
    r, ll = expect_error(router, raw, status, "H26")
    eq(len(dyno.requests()) - before, 0, "requests that reached the dyno")
    return r, ll


def req(target="/echo", headers=None, method="GET", version="HTTP/1.1", body=b"", host=HOST):
    return request_bytes(method, target, host, headers, body, version)


# -- request line -------------------------------------------------------------------------------

def test_request_line_8192_accepted(env, fx):
    router, d = fx
    target = "/echo/" + "a" * (8192 - len("GET /echo/ HTTP/1.1"))
    line = "GET %s HTTP/1.1" % target
    eq(len(line), 8192, "request line length")
    e = accept(router, req(target))
    eq(e["target"], target, "target the dyno received")


def test_request_line_8193_is_414(env, fx):
    router, d = fx
    target = "/echo/" + "a" * (8193 - len("GET /echo/ HTTP/1.1"))
    eq(len("GET %s HTTP/1.1" % target), 8193, "request line length")
    reject(router, d, req(target), 414)


def test_request_line_far_too_long_is_414(env, fx):
    router, d = fx
    reject(router, d, req("/" + "b" * 100000), 414)


# -- header limits -------------------------------------------------------------------------------

def test_header_name_1000_accepted(env, fx):
    router, d = fx
    name = "X" + "n" * 999
    e = accept(router, req(headers=[(name, "v")]))
    eq(hm.hdr(e["headers"], name), ["v"], "the 1000-byte header at the dyno")


def test_header_name_1001_is_400(env, fx):
    router, d = fx
    reject(router, d, req(headers=[("X" + "n" * 1000, "v")]))


def test_header_value_8192_accepted(env, fx):
    router, d = fx
    val = "v" * 8192
    e = accept(router, req(headers=[("X-Long", val)]))
    eq(hm.hdr(e["headers"], "X-Long"), [val], "the 8192-byte value at the dyno")


def test_header_value_8193_is_400(env, fx):
    router, d = fx
    reject(router, d, req(headers=[("X-Long", "v" * 8193)]))


def test_header_count_1000_accepted(env, fx):
    router, d = fx
    # Host + 999 others = 1000 header lines.
    hs = [("X-H%d" % i, str(i)) for i in range(999)]
    e = accept(router, req(headers=hs))
    got = [k for k, _ in e["headers"] if k.startswith("X-H")]
    eq(len(got), 999, "X-H* headers at the dyno")
    eq(got[:3] + got[-2:], ["X-H0", "X-H1", "X-H2", "X-H997", "X-H998"], "their order")


def test_header_count_1001_is_400(env, fx):
    router, d = fx
    reject(router, d, req(headers=[("X-H%d" % i, str(i)) for i in range(1000)]))


# -- Host ---------------------------------------------------------------------------------------

def test_host_missing_is_400(env, fx):
    router, d = fx
    reject(router, d, req(host=None, headers=[("X-A", "1")]))


def test_host_empty_is_400(env, fx):
    router, d = fx
    reject(router, d, req(host=None, headers=["Host: "]))


def test_host_twice_identical_is_400(env, fx):
    router, d = fx
    reject(router, d, req(headers=[("Host", HOST)]))


def test_host_twice_different_is_400(env, fx):
    router, d = fx
    reject(router, d, req(headers=[("Host", "other.test")]))


def test_host_must_be_host_and_port(env, fx):
    """Each of these routed to app.test and reached the dyno verbatim before issue 9
    (password-reset links and cache keys are built from Host)."""
    router, d = fx
    for host in ("app.test:@x", 'app.test:"><x', "app.test: x", "app.test:80:80",
                 "app.test:8o", "app.test:123456", "user@app.test", "app.test/x", "[::1"):
        reject(router, d, req(host=None, headers=["Host: " + host]))
    for host in ("app.test:8080", "APP.test.", "app.test:"):
        e = accept(router, req(host=host))
        eq(hm.hdr(e["headers"], "Host"), [host], "Host at the dyno")


def test_http10_without_host_is_400(env, fx):
    router, d = fx
    reject(router, d, req(host=None, version="HTTP/1.0"))


def test_http10_with_host_accepted(env, fx):
    router, d = fx
    with hm.Conn(router.port) as c:
        c.send(req(version="HTTP/1.0"))
        r = c.read_response()
        e = hm.echo_of(r)
        eq(e["version"], "HTTP/1.1", "version spoken to the dyno")
        check(r.closed or c.wait_closed(T(3)),
              "an HTTP/1.0 request without keep-alive must end with the connection closed")


def test_absolute_form_authority_routes_and_becomes_host(env):
    """RFC 9112, 3.2.2: the authority of an absolute-form target decides, and is the Host the
    dyno gets (before issue 9 the Host header routed, and went to the dyno unchanged)."""
    r, (a,) = env.simple("a", "a.test", router=False)
    b = env.dyno("web.1")
    env.routing().app("b", ["b.test"], [(b.name, b.addr)])
    router = env.router()
    e = accept(router, req(target="http://B.test:8080/echo?q=1", host="a.test"))
    eq(e["dyno"], "web.1", "dyno")
    eq(len(a.requests()), 0, "requests that reached a.test's dyno")
    eq(len(b.requests()), 1, "requests that reached b.test's dyno")
    eq(hm.hdr(e["headers"], "Host"), ["B.test:8080"], "Host at the dyno")
    eq(e["target"], "/echo?q=1", "target at the dyno (origin form)")
    ll = router.wait_log(path="/echo?q=1")
    eq(ll.get("host"), "b.test", "host= in the log")
    # the authority obeys the Host grammar; userinfo is refused (RFC 9110, 4.2.4)
    for t in ("http://user@b.test/echo", "http://b.test:@x/echo", "http:///echo",
              "http://b.test:80:80/echo"):
        reject(router, b, req(target=t, host="a.test"))
    # and the Host header is still required (RFC 9112, 3.2)
    reject(router, b, req(target="http://b.test/echo", host=None))


def test_fragment_dropped(env, fx):
    router, d = fx
    e = accept(router, req(target="/echo/x#frag"))
    eq(e["target"], "/echo/x", "target at the dyno (REFERENCE: a #fragment is dropped)")


# -- version and method -------------------------------------------------------------------------

def test_http2_version_is_505(env, fx):
    router, d = fx
    reject(router, d, req(version="HTTP/2.0"), 505)


def test_http12_version_is_505(env, fx):
    router, d = fx
    reject(router, d, req(version="HTTP/1.2"), 505)


def test_connect_is_400(env, fx):
    router, d = fx
    reject(router, d, b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n")


def test_garbage_request_line_is_400(env, fx):
    router, d = fx
    reject(router, d, b"HELLO\r\n\r\n")


def test_leading_empty_lines_tolerated(env, fx):
    router, d = fx
    e = accept(router, b"\r\n\r\n" + req())
    eq(e["method"], "GET", "method at the dyno")


# -- Content-Length and Transfer-Encoding -------------------------------------------------------

def test_content_length_list_is_400(env, fx):
    router, d = fx
    reject(router, d, req(method="POST", headers=["Content-Length: 5, 5"], body=b"hello"))


def test_content_length_conflict_is_400(env, fx):
    router, d = fx
    reject(router, d, req(method="POST", headers=["Content-Length: 5", "Content-Length: 6"],
                          body=b"hello!"))


def test_content_length_duplicates_merged(env, fx):
    router, d = fx
    e = accept(router, req(method="POST", headers=["Content-Length: 5", "Content-Length: 5"],
                           body=b"hello"))
    eq(hm.hdr(e["headers"], "Content-Length"), ["5"], "Content-Length at the dyno")
    eq(e["body"], "hello", "body at the dyno")


def test_content_length_not_numeric_is_400(env, fx):
    router, d = fx
    reject(router, d, req(method="POST", headers=["Content-Length: 5x"], body=b"hello"))


def test_content_length_negative_is_400(env, fx):
    router, d = fx
    reject(router, d, req(method="POST", headers=["Content-Length: -1"]))


def test_transfer_encoding_wins_over_content_length(env, fx):
    router, d = fx
    body = hm.chunked("hello ", "world")
    e = accept(router, req(method="POST", headers=["Content-Length: 3",
                                                    "Transfer-Encoding: chunked"], body=body))
    eq(hm.hdr(e["headers"], "Content-Length"), [], "Content-Length at the dyno (must be dropped)")
    eq(e["body"], "hello world", "body at the dyno")
    # and the connection ends with it (RFC 9112, 6.1: a server MUST close after responding to
    # such a request); a request pipelined behind it is never routed
    before = len(d.requests())
    with hm.Conn(router.port) as c:
        c.send(req(method="POST", headers=["Content-Length: 3", "Transfer-Encoding: chunked"],
                   body=body) + req(target="/echo/second"))
        r1 = c.read_response()
        eq(r1.status, 200, "first response")
        eq((r1.header("connection") or "").lower(), "close", "Connection of the answer")
        check(r1.closed or c.wait_closed(T(2)), "the connection must close after the answer")
    time.sleep(0.2)
    eq([q["target"] for q in d.requests()[before:]], ["/echo"],
       "requests that reached the dyno (only the first may)")


def test_transfer_encoding_other_than_chunked_is_400(env, fx):
    """Only "chunked", once (issue 9: "identity, chunked" used to be forwarded)."""
    router, d = fx
    body = hm.chunked("abc")
    for te in ("identity, chunked", "gzip, chunked", "chunked, chunked", "chunked,"):
        reject(router, d, req(method="POST", headers=["Transfer-Encoding: " + te], body=body))
    reject(router, d, req(method="POST", headers=["Transfer-Encoding: chunked",
                                                  "Transfer-Encoding: chunked"], body=body))
    e = accept(router, req(method="POST", headers=["Transfer-Encoding:  ChunKed "], body=body))
    eq(e["body"], "abc", "body at the dyno")


def test_unknown_transfer_encoding_is_400(env, fx):
    router, d = fx
    reject(router, d, req(method="POST", headers=["Transfer-Encoding: foo"], body=b"abc",
                          ))


def test_transfer_encoding_not_ending_in_chunked_is_400(env, fx):
    router, d = fx
    reject(router, d, req(method="POST", headers=["Transfer-Encoding: chunked, gzip"],
                          body=b"abc"))


def test_chunked_request_body_forwarded(env, fx):
    router, d = fx
    body = hm.chunked("abc", "defgh", ext="name=val", trailers=[("X-Trailer", "t1")])
    e = accept(router, req(method="POST", headers=["Transfer-Encoding: chunked"], body=body))
    eq(e["body"], "abcdefgh", "de-chunked body at the dyno")
    check("name=val" not in e["raw_body"],
          "chunk extensions must be dropped (REFERENCE), dyno got %r" % e["raw_body"])
    eq([v for k, v in e["trailers"] if k.lower() == "x-trailer"], ["t1"], "trailer at the dyno")


def test_request_trailers_filtered(env, fx):
    """Trailers reach the dyno, but never one that frames, routes or belongs to the connection
    (issue 9: Content-Length and Host trailers used to reach it)."""
    router, d = fx
    dropped = [("Content-Length", "5"), ("Host", "evil.test"), ("Trailer", "X-Keep"),
               ("Transfer-Encoding", "chunked"), ("Connection", "close"), ("Keep-Alive", "1"),
               ("TE", "trailers"), ("Proxy-Authorization", "Basic x"), ("Upgrade", "h2c"),
               ("Proxy-Connection", "x")]
    body = hm.chunked("abc", trailers=[("X-Keep", "1")] + dropped + [("Server-Timing", "db")])
    e = accept(router, req(method="POST", headers=["Transfer-Encoding: chunked"], body=body))
    eq(e["body"], "abc", "body at the dyno")
    eq(e["trailers"], [["X-Keep", "1"], ["Server-Timing", "db"]], "trailers at the dyno")


def test_request_target_visible_ascii_only(env, fx):
    router, d = fx
    for t in (b"/echo/a\tb", b"/echo/a\x7f", b"/echo/caf\xc3\xa9", b"/echo/\x80"):
        reject(router, d, b"GET " + t + b" HTTP/1.1\r\nHost: app.test\r\n\r\n")


def test_bad_chunk_size_is_400(env, fx):
    router, d = fx
    with hm.Conn(router.port) as c:
        c.send(req(method="POST", headers=["Transfer-Encoding: chunked"]) + b"zz\r\nabc\r\n")
        r = c.read_response()
        eq(r.status, 400, "status for a bad chunk size")


# -- forbidden bytes ----------------------------------------------------------------------------

def test_bare_lf_line_endings_are_400(env, fx):
    router, d = fx
    reject(router, d, b"GET /echo HTTP/1.1\nHost: app.test\n\n")


def test_bare_lf_in_one_header_is_400(env, fx):
    router, d = fx
    reject(router, d, b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-A: 1\nX-B: 2\r\n\r\n")


def test_obs_fold_is_400(env, fx):
    router, d = fx
    reject(router, d, b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-A: first\r\n  second\r\n\r\n")


def test_cr_in_header_value_is_400(env, fx):
    router, d = fx
    reject(router, d, b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-A: a\rb\r\n\r\n")


def test_nul_in_header_value_is_400(env, fx):
    router, d = fx
    reject(router, d, b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-A: a\x00b\r\n\r\n")


def test_space_before_colon_is_400(env, fx):
    router, d = fx
    reject(router, d, b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-A : a\r\n\r\n")


# -- Expect -------------------------------------------------------------------------------------

def _expect_continue(router, value):
    with hm.Conn(router.port) as c:
        c.send(req(method="POST", headers=[("Expect", value), ("Content-Length", "5")]))
        interim = c.read_response(interim=True, timeout=T(3))
        eq(interim.status, 100, "the router's interim response to Expect: %s" % value)
        c.send(b"hello")
        e = hm.echo_of(c.read_response())
        eq(hm.hdr(e["headers"], "Expect"), [], "Expect header at the dyno")
        eq(e["body"], "hello", "body at the dyno")


def test_expect_100_continue_answered_by_router(env, fx):
    router, d = fx
    _expect_continue(router, "100-continue")


def test_expect_100_continue_any_case(env, fx):
    router, d = fx
    _expect_continue(router, "100-Continue")


def test_expect_other_is_417(env, fx):
    router, d = fx
    reject(router, d, req(method="POST", headers=[("Expect", "something-else")], body=b"x"),
           417)


# -- Upgrade ------------------------------------------------------------------------------------

def test_connection_upgrade_without_upgrade_is_400(env, fx):
    router, d = fx
    reject(router, d, req(target="/upgrade", headers=[("Connection", "upgrade")]))


def test_connection_upgrade_with_empty_upgrade_is_400(env, fx):
    router, d = fx
    reject(router, d, req(target="/upgrade", headers=[("Connection", "upgrade"),
                                                      ("Upgrade", "")]))


# -- head timeout -------------------------------------------------------------------------------

def test_incomplete_head_times_out_408(env):
    router, d = setup(env, head_timeout="1s")
    with hm.Conn(router.port) as c:
        t0 = time.monotonic()
        c.send(b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-Partial: ")
        r = c.read_response(timeout=T(5))
        dt = time.monotonic() - t0
        eq(r.status, 408, "status of an incomplete head")
        check(0.8 <= dt <= T(3), "408 after %.2fs with --head-timeout 1s" % dt)
        check(r.closed or c.wait_closed(T(3)), "connection not closed after the 408")
    eq(len(d.requests()), 0, "requests that reached the dyno")
    router.wait_log(status="408")


def test_slowly_trickled_head_still_times_out(env):
    # The head timeout counts from the first byte: trickling a byte now and then must not
    # extend it (slowloris).
    router, d = setup(env, head_timeout="1s")
    with hm.Conn(router.port) as c:
        t0 = time.monotonic()
        c.send(b"GET /echo HTTP/1.1\r\nHost: app.test\r\n")
        answered = False
        for i in range(30):
            time.sleep(0.1)
            rd, _, _ = select.select([c.sock], [], [], 0)
            if rd:
                answered = True  # a response or the close
                break
            c.send(b"X-%d: v\r\n" % i)
        dt = time.monotonic() - t0
        check(answered, "no answer and no close %.1fs into a trickled head (--head-timeout 1s)"
              % dt)
        check(dt <= T(2.5), "the trickled head was cut only after %.1fs" % dt)

if __name__ == "__main__":
    hm.run(globals())

#!/usr/bin/env python3
"""hermod-router header normalization (CONTRACT.md "Headers added toward the dyno", issue 4
"Forwarded headers"): what the dyno receives and what the client gets back."""

import time

import hermod_test as hm
from hermod_test import check, eq, request_bytes

HOST = "app.test"


def setup(env, **kw):
    r, ds = env.simple("app", HOST, **kw)
    return r, ds[0]


def fixture(env):
    """One router (two workers) and one echo dyno shared by the tests that take fx."""
    return setup(env, workers=2)


def echo(router, target="/echo", headers=None, source=None, **kw):
    """One request through the router; returns (echoed request, response)."""
    resp = hm.http_get(router.port, target, HOST, headers, source=source, **kw)
    return hm.echo_of(resp), resp


def test_x_forwarded_for_created_with_peer(env, fx):
    router, d = fx
    e, _ = echo(router, source="127.0.0.9")
    eq(hm.hdr(e["headers"], "X-Forwarded-For"), ["127.0.0.9"], "X-Forwarded-For at the dyno")


def test_x_forwarded_for_appended(env, fx):
    router, d = fx
    mark = router.mark()
    e, _ = echo(router, "/echo/xff", headers=[("X-Forwarded-For", "203.0.113.7")],
                source="127.0.0.9")
    got = ", ".join(hm.hdr(e["headers"], "X-Forwarded-For"))
    eq(got, "203.0.113.7, 127.0.0.9", "X-Forwarded-For at the dyno")
    ll = router.wait_log(mark, path="/echo/xff")
    check("127.0.0.9" in ll.get("fwd", ""), "fwd= of the log line should name the peer: %s"
          % ll.raw)


def test_x_forwarded_proto_and_port_overwritten(env, fx):
    router, d = fx
    e, _ = echo(router, headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-Port", "443")])
    eq(hm.hdr(e["headers"], "X-Forwarded-Proto"), ["http"], "X-Forwarded-Proto at the dyno")
    eq(hm.hdr(e["headers"], "X-Forwarded-Port"), [str(router.port)],
       "X-Forwarded-Port at the dyno")


def test_x_forwarded_proto_and_port_added(env, fx):
    router, d = fx
    e, _ = echo(router)
    eq(hm.hdr(e["headers"], "X-Forwarded-Proto"), ["http"], "X-Forwarded-Proto at the dyno")
    eq(hm.hdr(e["headers"], "X-Forwarded-Port"), [str(router.port)],
       "X-Forwarded-Port at the dyno")


def test_x_request_start_is_unix_ms(env, fx):
    router, d = fx
    t0 = int(time.time() * 1000)
    e, _ = echo(router, headers=[("X-Request-Start", "12345")])
    t1 = int(time.time() * 1000)
    v = hm.hdr(e["headers"], "X-Request-Start")
    eq(len(v), 1, "X-Request-Start headers at the dyno (%r)" % v)
    check(v[0].isdigit(), "X-Request-Start is not an integer: %r" % v[0])
    check(t0 - 5 <= int(v[0]) <= t1 + 5,
          "X-Request-Start %s outside the request's time [%d, %d] (unix ms)" % (v[0], t0, t1))


def _request_id(router, rid, target="/echo"):
    e, _ = echo(router, target, headers=[("X-Request-Id", rid)] if rid is not None else None)
    v = hm.hdr(e["headers"], "X-Request-Id")
    eq(len(v), 1, "X-Request-Id headers at the dyno (%r)" % v)
    return v[0]


def test_request_id_kept_when_valid(env, fx):
    router, d = fx
    for rid in ["a" * 20, "A1+/=-" * 5, "Z" * 200, "0123456789abcdefABCDEF-+/="]:
        eq(_request_id(router, rid), rid, "X-Request-Id of %d valid chars" % len(rid))


def test_request_id_logged(env, fx):
    router, d = fx
    rid = "logged-request-id-0123456789"
    mark = router.mark()
    _request_id(router, rid, "/echo/rid-logged")
    ll = router.wait_log(mark, path="/echo/rid-logged")
    eq(ll.get("request_id"), rid, "request_id= in the log")


def test_request_id_replaced_when_invalid(env, fx):
    router, d = fx
    for rid in ["a" * 19, "Z" * 201, "has_underscore_0123456789", "has space 0123456789012",
                "bang!0123456789012345", ""]:
        got = _request_id(router, rid)
        check(got != rid, "invalid X-Request-Id %r (%d chars) was kept" % (rid, len(rid)))
        check(hm.UUID4_RE.match(got), "replacement for %r is not a UUIDv4: %r" % (rid, got))


def test_request_id_generated_uuid4_unique(env, fx):
    router, d = fx
    ids = set()
    mark = router.mark()
    for _ in range(20):
        got = _request_id(router, None, "/echo/uuid")
        check(hm.UUID4_RE.match(got), "generated X-Request-Id is not a UUIDv4: %r" % got)
        ids.add(got)
    eq(len(ids), 20, "distinct generated request ids out of 20")
    ll = router.wait_log(mark, path="/echo/uuid")
    check(hm.UUID4_RE.match(ll.get("request_id", "")),
          "generated request id not in the log: %s" % ll.raw)


def test_via_appended_toward_dyno(env, fx):
    router, d = fx
    e, _ = echo(router, headers=[("Via", "1.0 corporate-proxy")])
    got = [p.strip() for v in hm.hdr(e["headers"], "Via") for p in v.split(",")]
    eq(got, ["1.0 corporate-proxy", "1.1 hermod"], "Via at the dyno")


def test_via_added_toward_dyno(env, fx):
    router, d = fx
    e, _ = echo(router)
    got = [p.strip() for v in hm.hdr(e["headers"], "Via") for p in v.split(",")]
    eq(got, ["1.1 hermod"], "Via at the dyno")


def test_via_on_responses(env, fx):
    router, d = fx
    r = hm.http_get(router.port, "/echo", HOST)
    eq(r.joined("Via"), ["1.1 hermod"], "Via on a response whose dyno sent none")
    r = hm.http_get(router.port, "/headers?h=Via:1.1%20upstream-cache", HOST)
    eq(r.status, 200, "status")
    eq(r.joined("Via"), ["1.1 upstream-cache", "1.1 hermod"], "Via appended to the dyno's")
    # router-generated responses too
    r = hm.http_get(router.port, "/", "unknown.test")
    eq(r.status, 404, "status for an unknown host")
    eq(r.joined("Via"), ["1.1 hermod"], "Via on the router's own 404")


def test_connect_time_and_total_route_time(env, fx):
    router, d = fx
    e, _ = echo(router)
    for name in ("Connect-Time", "Total-Route-Time"):
        v = hm.hdr(e["headers"], name)
        eq(len(v), 1, "%s headers at the dyno (%r)" % (name, v))
        check(v[0].isdigit() and int(v[0]) < 5000, "%s must be milliseconds: %r" % (name, v[0]))


def test_client_connect_time_headers_replaced(env, fx):
    router, d = fx
    e, _ = echo(router, headers=[("Connect-Time", "99999"), ("Total-Route-Time", "99999")])
    for name in ("Connect-Time", "Total-Route-Time"):
        v = hm.hdr(e["headers"], name)
        check(v and "99999" not in v, "%s from the client reached the dyno: %r" % (name, v))


def test_hop_by_hop_removed_toward_dyno(env, fx):
    router, d = fx
    e, _ = echo(router, headers=[
        ("Connection", "keep-alive, X-Named-Hop"), ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"), ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Proxy-Connection", "keep-alive"), ("X-Named-Hop", "secret"),
        ("X-End-To-End", "kept")])
    for name in ("Keep-Alive", "TE", "Proxy-Authorization", "Proxy-Connection", "X-Named-Hop"):
        eq(hm.hdr(e["headers"], name), [], "%s at the dyno" % name)
    for v in hm.hdr(e["headers"], "Connection"):
        check("x-named-hop" not in v.lower(), "the client's Connection reached the dyno: %r" % v)
    eq(hm.hdr(e["headers"], "X-End-To-End"), ["kept"], "end-to-end header at the dyno")


def test_hop_by_hop_removed_toward_client(env, fx):
    router, d = fx
    q = "&".join("h=" + h for h in [
        "Connection:X-Dyno-Hop", "X-Dyno-Hop:secret", "Keep-Alive:timeout%3D5",
        "Proxy-Connection:keep-alive", "TE:trailers", "Proxy-Authorization:Basic%20eA%3D%3D",
        "X-End-To-End:kept"])
    r = hm.http_get(router.port, "/headers?" + q, HOST)
    eq(r.status, 200, "status")
    for name in ("X-Dyno-Hop", "Keep-Alive", "Proxy-Connection", "TE", "Proxy-Authorization"):
        eq(r.headers_all(name), [], "%s at the client" % name)
    conn = [v.lower() for v in r.headers_all("Connection")]
    eq(len(conn), 1, "Connection headers at the client (%r)" % conn)
    check("x-dyno-hop" not in conn[0], "the dyno's Connection reached the client: %r" % conn)
    eq(r.headers_all("X-End-To-End"), ["kept"], "end-to-end header at the client")


def test_end_to_end_headers_kept_in_order(env, fx):
    router, d = fx
    sent = [("X-First", "1"), ("Cookie", "a=1"), ("X-Dup", "one"), ("Accept", "*/*"),
            ("X-Dup", "two"), ("X-Last", "last value with  spaces")]
    e, _ = echo(router, headers=sent)
    names = {k.lower() for k, _ in sent}
    got = [(k, v) for k, v in e["headers"] if k.lower() in names]
    eq([(k.lower(), v) for k, v in got], [(k.lower(), v) for k, v in sent],
       "end-to-end headers at the dyno (order, duplicates)")
    eq(e["method"], "GET", "method")


def test_explicit_connection_on_every_response(env, fx):
    router, d = fx
    cases = [
        ("200 keep-alive", request_bytes("GET", "/echo", HOST), "keep-alive"),
        ("200 client close", request_bytes("GET", "/echo", HOST, ["Connection: close"]), "close"),
        ("200 HTTP/1.0", request_bytes("GET", "/echo", HOST, version="HTTP/1.0"), "close"),
        ("200 HTTP/1.0 keep-alive",
         request_bytes("GET", "/echo", HOST, ["Connection: keep-alive"], version="HTTP/1.0"),
         "keep-alive"),
        ("404", request_bytes("GET", "/", "nope.test"), "close"),
        ("400", request_bytes("GET", "/", None), "close"),
    ]
    for label, raw, want in cases:
        with hm.Conn(router.port) as c:
            c.send(raw)
            r = c.read_response()
            eq([v.lower() for v in r.headers_all("Connection")], [want],
               "Connection header on the %s response" % label)


def test_dyno_connection_close_not_leaked_to_client(env, fx):
    # The dyno closing its connection is the router's business; the client keeps its own.
    router, d = fx
    with hm.Conn(router.port) as c:
        r1 = c.request("GET", "/echo?close=1", HOST)
        eq(r1.status, 200, "status")
        eq([v.lower() for v in r1.headers_all("Connection")], ["keep-alive"],
           "Connection toward a keep-alive client when the dyno said close")
        r2 = c.request("GET", "/echo", HOST)
        eq(r2.status, 200, "second request on the same client connection")


if __name__ == "__main__":
    hm.run(globals())

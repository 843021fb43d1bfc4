#!/usr/bin/env python3
"""hermod-router's error table (CONTRACT.md "HTTP behaviour", one test per row at least): the
status, the Heroku code and desc in the access log, Connection: close, and the connection closed.
Long timeouts are shortened through the router's duration flags."""

import os
import threading
import time

import hermod_test as hm
from hermod_test import T, check, eq, expect_error, request_bytes

HOST = "app.test"


def get_raw(target="/", host=HOST, headers=None):
    return request_bytes("GET", target, host, headers)


def test_unknown_host_404_no_such_app(env):
    router, _ = env.simple("app", HOST)
    r, ll = expect_error(router, get_raw("/x", "nobody.test"), 404, None, at="info",
                         desc="No such app")
    eq(ll.get("host"), "nobody.test", "host= of the log line")


def test_h80_maintenance(env):
    d = env.dyno()
    env.routing().app("app", [HOST], [(d.name, d.addr)], maintenance=True)
    router = env.router()
    expect_error(router, get_raw("/m"), 503, "H80", at="info")
    eq(len(d.requests()), 0, "requests that reached a dyno of an app in maintenance")
    # turning maintenance off serves again
    env.routing().put_app("app", maintenance=False)
    eq(hm.http_get(router.port, "/echo", HOST).status, 200, "status after maintenance off")


def test_h14_no_dynos(env):
    env.routing().app("app", [HOST])
    router = env.router()
    expect_error(router, get_raw("/n"), 503, "H14")


def test_h10_all_dynos_crashed(env):
    env.routing().app("app", [HOST], [("web.1", "127.0.0.1:%d" % hm.free_port(), "crashed"),
                                      ("web.2", "127.0.0.1:%d" % hm.free_port(), "crashed")])
    router = env.router()
    expect_error(router, get_raw("/c"), 503, "H10")


def test_h20_only_starting_dynos_times_out(env):
    d = env.dyno()
    env.routing().app("app", [HOST], [(d.name, d.addr, "starting")])
    router = env.router(boot_wait="1s")
    t0 = time.monotonic()
    expect_error(router, get_raw("/b"), 503, "H20")
    dt = time.monotonic() - t0
    check(0.8 <= dt <= T(4), "H20 after %.2fs with --boot-wait 1s" % dt)
    eq(len(d.requests()), 0, "requests that reached a starting dyno")


def test_h20_wait_ends_when_a_dyno_comes_up(env):
    d = env.dyno()
    env.routing().app("app", [HOST], [(d.name, d.addr, "starting")])
    router = env.router(boot_wait="10s")
    res = {}

    def client():
        t0 = time.monotonic()
        try:
            res["resp"] = hm.http_get(router.port, "/echo/held", HOST, timeout=T(15))
        except Exception as e:  # noqa: BLE001
            res["err"] = e
        res["dt"] = time.monotonic() - t0
    t = threading.Thread(target=client, daemon=True)
    t.start()
    time.sleep(0.7)
    check(t.is_alive(), "the request was answered while the only dyno was starting: %r" % res)
    env.routing().put_dyno("app", d.name, d.addr, "up")
    t.join(T(12))
    check("resp" in res, "held request failed: %r" % res.get("err"))
    eq(hm.echo_of(res["resp"])["target"], "/echo/held", "held request served")
    check(res["dt"] < T(4), "held request took %.1fs after its dyno came up at 0.7s" % res["dt"])


def test_h21_all_dynos_refuse(env):
    env.routing().app("app", [HOST], [("web.%d" % i, "127.0.0.1:%d" % hm.free_port())
                                      for i in range(1, 4)])
    router = env.router()
    r, ll = expect_error(router, get_raw("/r"), 503, "H21")


def test_h19_connect_timeout(env):
    bh = env.blackhole()
    env.routing().app("app", [HOST], [("web.1", bh.addr)])
    router = env.router(connect_timeout="500ms")
    t0 = time.monotonic()
    expect_error(router, get_raw("/t"), 503, "H19")
    dt = time.monotonic() - t0
    check(0.4 <= dt <= T(3), "H19 after %.2fs with --connect-timeout 500ms" % dt)


def test_h12_no_response_head_in_time(env):
    router, (d,) = env.simple("app", HOST, first_byte_timeout="1s")
    t0 = time.monotonic()
    r, ll = expect_error(router, get_raw("/never"), 503, "H12")
    dt = time.monotonic() - t0
    check(0.8 <= dt <= T(3), "H12 after %.2fs with --first-byte-timeout 1s" % dt)
    eq(ll.get("dyno"), "web.1", "dyno= of the H12 line")


def test_slow_but_in_time_response_is_not_h12(env):
    router, (d,) = env.simple("app", HOST, first_byte_timeout="2s")
    r = hm.http_get(router.port, "/delay/1", HOST, timeout=T(5))
    eq(r.status, 200, "a response after 1s with --first-byte-timeout 2s")


def test_first_byte_timeout_counts_from_end_of_upload(env):
    # REFERENCE: 30 s to the first response byte, counted from when the whole request reached
    # the dyno. A 2 s upload (never idle for 1 s) must not be cut by a 1 s first-byte timeout.
    router, (d,) = env.simple("app", HOST, first_byte_timeout="1s", idle_timeout="1s")
    with hm.Conn(router.port) as c:
        c.send(request_bytes("POST", "/sink", HOST, ["Content-Length: 80"]))
        for _ in range(8):
            time.sleep(0.25)
            c.send(b"x" * 10)
        r = c.read_response(timeout=T(5))
        eq(r.status, 200, "status of a slow but steady upload")
        eq(r.json()["len"], 80, "bytes the dyno received")


def test_idle_timeout_is_rolling_for_responses(env):
    # A body streamed with 0.5 s gaps for 2.5 s in total is never idle for 1 s.
    router, (d,) = env.simple("app", HOST, idle_timeout="1s")
    r = hm.http_get(router.port, "/slow?chunks=5&size=10&delay=0.5", HOST, timeout=T(8))
    eq(r.status, 200, "status")
    check(r.complete and len(r.body) == 50, "slow steady body cut short: %d of 50 bytes" %
          len(r.body))


def test_h28_client_not_reading_response(env):
    router, (d,) = env.simple("app", HOST, idle_timeout="1s")
    mark = router.mark()
    with hm.Conn(router.port) as c:
        c.send(request_bytes("GET", "/bytes/%d" % (256 << 20), HOST))
        time.sleep(3)  # read nothing: the router's writes stall once the buffers are full
        ll = router.wait_log(mark, code="H28")
        eq(ll.get("status"), "499", "status= of the H28 line")
        got = 0
        while True:
            part = c.read_some(T(10))
            if not part:
                break
            got += len(part)
        check(got < 256 << 20, "the whole 256 MiB arrived although the client stalled for 3s "
              "(--idle-timeout 1s)")


def test_h13_closed_without_response(env):
    router, (d,) = env.simple("app", HOST)
    r, ll = expect_error(router, get_raw("/close"), 503, "H13")
    eq(ll.get("dyno"), "web.1", "dyno= of the H13 line")


def test_h15_dyno_idle_mid_response(env):
    router, (d,) = env.simple("app", HOST, idle_timeout="1s")
    mark = router.mark()
    with hm.Conn(router.port) as c:
        t0 = time.monotonic()
        c.send(get_raw("/stall-mid-body"))
        r = c.read_response(timeout=T(6))
        dt = time.monotonic() - t0
        eq(r.status, 200, "status (the head was already relayed)")
        check(not r.complete, "body must be cut short (got %d of 100 bytes)" % len(r.body))
        check(r.closed or c.wait_closed(T(3)), "client connection not closed after H15")
        check(0.8 <= dt <= T(4), "cut after %.2fs with --idle-timeout 1s" % dt)
    ll = router.wait_log(mark, code="H15")
    eq(ll.get("desc"), hm.HCODES["H15"][1], "desc= of the H15 line")


def test_h25_malformed_response(env):
    router, (d,) = env.simple("app", HOST)
    expect_error(router, get_raw("/bad-status"), 502, "H25")


def test_h26_400(env):
    router, (d,) = env.simple("app", HOST)
    expect_error(router, b"GET / HTTP/1.1\r\n\r\n", 400, "H26")


def test_h26_414(env):
    router, (d,) = env.simple("app", HOST)
    expect_error(router, get_raw("/" + "x" * 9000), 414, "H26")


def test_h26_417(env):
    router, (d,) = env.simple("app", HOST)
    expect_error(router, get_raw("/", headers=[("Expect", "teapot")]), 417, "H26")


def test_h26_505(env):
    router, (d,) = env.simple("app", HOST)
    expect_error(router, b"GET / HTTP/3.0\r\nHost: app.test\r\n\r\n", 505, "H26")


def test_h27_client_gone_while_waiting(env):
    router, (d,) = env.simple("app", HOST)
    mark = router.mark()
    c = hm.Conn(router.port)
    c.send(get_raw("/delay/1.5"))
    time.sleep(0.4)
    c.close()
    ll = router.wait_log(mark, timeout=T(5), code="H27")
    eq(ll.get("status"), "499", "status= of the H27 line")
    eq(ll.get("desc"), hm.HCODES["H27"][1], "desc= of the H27 line")
    eq(ll.pairs[0], ("sock", "client"), "first field of an H27 line (REFERENCE: sock=client)")


def test_h27_client_gone_mid_upload(env):
    router, (d,) = env.simple("app", HOST)
    mark = router.mark()
    c = hm.Conn(router.port)
    c.send(request_bytes("POST", "/sink", HOST, ["Content-Length: 100000"]) + b"x" * 1000)
    time.sleep(0.4)
    c.close()
    ll = router.wait_log(mark, timeout=T(5), code="H27")
    eq(ll.get("status"), "499", "status= of the H27 line")


def test_h28_client_idle_mid_upload(env):
    router, (d,) = env.simple("app", HOST, idle_timeout="1s")
    mark = router.mark()
    with hm.Conn(router.port) as c:
        t0 = time.monotonic()
        c.send(request_bytes("POST", "/sink", HOST, ["Content-Length: 100"]) + b"x" * 10)
        check(c.wait_closed(T(5)), "router kept an idle uploading client connection open")
        dt = time.monotonic() - t0
        check(0.8 <= dt <= T(4), "idle client cut after %.2fs with --idle-timeout 1s" % dt)
    ll = router.wait_log(mark, code="H28")
    eq(ll.get("status"), "499", "status= of the H28 line")
    eq(ll.get("desc"), hm.HCODES["H28"][1], "desc= of the H28 line")


def test_h99_no_table_then_table_appears(env):
    check(not os.path.exists(env.table), "table exists before the test")
    router = env.router()
    expect_error(router, get_raw("/"), 503, "H99")
    d = env.dyno()
    env.routing().app("app", [HOST], [(d.name, d.addr)])

    def served():
        r = hm.http_get(router.port, "/echo/after-table", HOST)
        return r.status == 200 and r
    r = hm.wait_for(served, T(3), "the router to pick up the new table")
    eq(hm.echo_of(r)["target"], "/echo/after-table", "request served from the new table")


def test_errors_carry_via_and_router_keeps_serving(env):
    router, (d,) = env.simple("app", HOST)
    for raw in (get_raw("/", "nobody.test"), b"GET / HTTP/1.1\r\n\r\n", get_raw("/close")):
        with hm.Conn(router.port) as c:
            c.send(raw)
            r = c.read_response()
            check(r.status >= 400, "expected an error, got %s" % r.status)
            eq(r.joined("Via"), ["1.1 hermod"], "Via on a %d" % r.status)
    eq(hm.http_get(router.port, "/echo", HOST).status, 200, "status after the errors")


if __name__ == "__main__":
    hm.run(globals())

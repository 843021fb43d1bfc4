#!/usr/bin/env python3
"""hermod-router dyno choice (issue 4 "Dyno choice", "Balancing", session affinity; CONTRACT.md
domain rules): which dyno gets each request, retries, skipping, and live table changes."""

import base64
import collections
import hashlib
import hmac
import os
import secrets
import threading
import time

import hermod_test as hm
from hermod_test import T, check, eq, request_bytes

HOST = "app.test"
COOKIE = "hermod-session-affinity"


def dyno_of(router, target="/echo", host=HOST, headers=None):
    r = hm.http_get(router.port, target, host, headers)
    check(r.status == 200, "expected 200, got %s %s (%r)" % (r.status, r.reason, r.body[:200]))
    return r.header("X-Dyno"), r


def spread(router, n, target="/echo"):
    return collections.Counter(dyno_of(router, target)[0] for _ in range(n))


# -- host rules ---------------------------------------------------------------------------------

def test_host_lookup_rules(env):
    ds = {n: env.dyno(n) for n in ("web.1", "web.2", "web.3", "web.4")}
    rt = env.routing()
    rt.apply([
        hm.ch_app("exact"), hm.ch_app("wild"), hm.ch_app("deep"), hm.ch_app("apex"),
        hm.ch_domain("www.example.test", "exact"),
        hm.ch_domain("*.example.test", "wild"),
        hm.ch_domain("*.deep.example.test", "deep"),
        hm.ch_domain("example.test", "apex"),
        hm.ch_dyno("exact", "web.1", ds["web.1"].addr),
        hm.ch_dyno("wild", "web.2", ds["web.2"].addr),
        hm.ch_dyno("deep", "web.3", ds["web.3"].addr),
        hm.ch_dyno("apex", "web.4", ds["web.4"].addr),
    ])
    router = env.router()
    cases = [
        ("www.example.test", "web.1", "exact name beats a wildcard"),
        ("WWW.Example.TEST", "web.1", "case-insensitive"),
        ("www.example.test:8080", "web.1", "port removed"),
        ("www.example.test.", "web.1", "trailing dot removed"),
        ("api.example.test", "web.2", "wildcard"),
        ("a.b.example.test", "web.2", "wildcard matches several labels"),
        ("x.deep.example.test", "web.3", "longer wildcard beats a shorter one"),
        ("example.test", "web.4", "apex is its own domain"),
    ]
    for host, want, why in cases:
        got, _ = dyno_of(router, host=host)
        eq(got, want, "dyno for Host %r (%s)" % (host, why))
    for host in ("deep.example.test.evil", "notexample.test", "example.test.x"):
        r = hm.http_get(router.port, "/", host)
        eq(r.status, 404, "status for Host %r" % host)


def test_wildcard_does_not_match_apex(env):
    d = env.dyno()
    env.routing().app("wild", ["*.only.test"], [(d.name, d.addr)])
    router = env.router()
    eq(hm.http_get(router.port, "/", "only.test").status, 404, "status for the bare apex")
    eq(hm.http_get(router.port, "/", "a.only.test").status, 200, "status for a subdomain")


def test_table_changes_take_effect(env):
    d1, d2 = env.dyno("web.1"), env.dyno("web.2")
    rt = env.routing()
    rt.app("app", [HOST], [(d1.name, d1.addr)])
    router = env.router()
    eq(set(spread(router, 5)), {"web.1"}, "dynos before the change")
    rt.put_dyno("app", "web.2", d2.addr)
    rt.rm_dyno("app", "web.1")
    eq(set(spread(router, 5)), {"web.2"}, "dynos right after web.1 was removed")
    rt.put_domain("other.test", "app")
    eq(dyno_of(router, host="other.test")[0], "web.2", "dyno for a new domain")
    rt.rm_domain(HOST)
    eq(hm.http_get(router.port, "/", HOST).status, 404, "status after the domain was removed")
    rt.rm_app("app")
    eq(hm.http_get(router.port, "/", "other.test").status, 404, "status after app rm")


def test_only_up_dynos_get_requests(env):
    up = env.dyno("web.1")
    others = {s: env.dyno("web.%d" % i) for i, s in ((2, "starting"), (3, "crashed"),
                                                     (4, "down"))}
    env.routing().app("app", [HOST], [(up.name, up.addr)] +
                      [(d.name, d.addr, s) for s, d in others.items()])
    router = env.router()
    eq(set(spread(router, 20)), {"web.1"}, "dynos that served 20 requests")
    for s, d in others.items():
        eq(d.connections(), 0, "connections to the %s dyno" % s)


@hm.timeout(90)
def test_table_growth_under_load(env):
    # Enough apps, domains and dynos to make the table file grow (replaced by a larger one)
    # while requests flow: none may fail, and the new state must be served.
    router, (d,) = env.simple("app", HOST, workers=2)
    stop = threading.Event()
    errors, ok = [], [0]

    def load():
        while not stop.is_set():
            try:
                r = hm.http_get(router.port, "/echo", HOST)
                if r.status != 200:
                    errors.append("status %s" % r.status)
                else:
                    ok[0] += 1
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
    t = threading.Thread(target=load, daemon=True)
    size0 = os.stat(env.table).st_size
    t.start()
    try:
        n = 2500
        changes = []
        for i in range(n):
            app = "grow-%d" % i
            changes += [hm.ch_app(app), hm.ch_domain("%s.test" % app, app),
                        hm.ch_dyno(app, "web.1", d.addr), hm.ch_dyno(app, "web.2", d.addr)]
        env.routing().apply(changes)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(T(10))
    check(os.stat(env.table).st_size > size0, "the table file did not grow (%d bytes)" % size0)
    eq(errors[:5], [], "failed requests while the table grew (%d ok)" % ok[0])
    check(ok[0] > 5, "load too small: %d requests" % ok[0])
    for i in (0, 1234, 2499):
        r = hm.http_get(router.port, "/echo", "grow-%d.test" % i)
        eq(r.status, 200, "status for grow-%d, added by the growth batch" % i)
    eq(dyno_of(router)[0], "web.1", "the original app after the growth")


# -- retries and skipping -----------------------------------------------------------------------

def test_refused_dynos_are_retried(env):
    good = env.dyno("web.5")
    dynos = [("web.%d" % i, "127.0.0.1:%d" % hm.free_port()) for i in range(1, 5)]
    env.routing().app("app", [HOST], dynos + [(good.name, good.addr)])
    router = env.router()
    mark = router.mark()
    for _ in range(20):
        eq(dyno_of(router)[0], "web.5", "dyno that served (the others refuse)")
    for ll in router.logs()[mark:]:
        eq(ll.get("status"), "200", "status in %s" % ll.raw)


def test_connect_timeout_is_retried_on_another_dyno(env):
    bh = env.blackhole()
    good = env.dyno("web.2")
    env.routing().app("app", [HOST], [("web.1", bh.addr), (good.name, good.addr)])
    router = env.router(connect_timeout="300ms")
    for _ in range(6):
        eq(dyno_of(router)[0], "web.2", "dyno that served (web.1 never accepts)")


def connects(router):
    """Dyno connections the router has started (each connect attempt counts one)."""
    return router.metric("hermod_pool_connections_total", 'result="new"')


def test_at_most_10_attempts(env):
    # 20 dynos that never accept, 150 ms connect timeout: H19 after 10 attempts, not 20.
    bhs = [env.blackhole() for _ in range(20)]
    env.routing().app("app", [HOST], [("web.%d" % (i + 1), b.addr) for i, b in enumerate(bhs)])
    router = env.router(connect_timeout="150ms", metrics=True)
    t0 = time.monotonic()
    hm.expect_error(router, request_bytes("GET", "/", HOST), 503, "H19")
    dt = time.monotonic() - t0
    eq(connects(router), 10.0, "connect attempts")
    # Each attempt waited out its timer (a lower bound: no machine is too fast for it).
    check(dt >= 10 * 0.15 * 0.9, "H19 after %.2fs: 10 attempts of 150 ms take longer" % dt)


def test_attempts_flag(env):
    bhs = [env.blackhole() for _ in range(6)]
    env.routing().app("app", [HOST], [("web.%d" % (i + 1), b.addr) for i, b in enumerate(bhs)])
    router = env.router(connect_timeout="200ms", attempts=2, metrics=True)
    t0 = time.monotonic()
    hm.expect_error(router, request_bytes("GET", "/", HOST), 503, "H19")
    dt = time.monotonic() - t0
    eq(connects(router), 2.0, "connect attempts with --attempts 2")
    check(dt >= 2 * 0.2 * 0.9, "H19 after %.2fs: 2 attempts of 200 ms take longer" % dt)


@hm.timeout(60)
def test_refusing_dyno_skipped_for_5s(env):
    # Port of web.1 refuses at first; web.2 serves. After web.1 refused, this worker skips it
    # for 5 s even once it listens; then it gets traffic again.
    port1 = hm.free_port()
    d2 = env.dyno("web.2")
    env.routing().app("app", [HOST], [("web.1", "127.0.0.1:%d" % port1), (d2.name, d2.addr)])
    router = env.router(workers=1)
    for _ in range(20):  # web.1 is tried (and refuses) with probability 1 - 2^-20
        eq(dyno_of(router)[0], "web.2", "dyno while web.1 refuses")
    t_refused = time.monotonic()
    d1 = env.dyno("web.1", port=port1)
    while time.monotonic() - t_refused < 3.5:
        eq(dyno_of(router)[0], "web.2", "dyno %.1fs after web.1 refused (skip is 5s)" %
           (time.monotonic() - t_refused))
        time.sleep(0.1)
    eq(d1.connections(), 0, "connections to web.1 during its skip time")
    time.sleep(max(0, 6.0 - (time.monotonic() - t_refused)))
    seen = spread(router, 30)
    check(seen.get("web.1", 0) > 0, "web.1 got no request 6s after it refused (skip should "
          "last 5s): %r" % dict(seen))


def test_skip_time_flag(env):
    port1 = hm.free_port()
    d2 = env.dyno("web.2")
    env.routing().app("app", [HOST], [("web.1", "127.0.0.1:%d" % port1), (d2.name, d2.addr)])
    router = env.router(workers=1, skip_time="1s")
    for _ in range(12):
        dyno_of(router)
    env.dyno("web.1", port=port1)
    time.sleep(1.5)
    seen = spread(router, 30)
    check(seen.get("web.1", 0) > 0, "web.1 got no request 1.5s after it refused "
          "(--skip-time 1s): %r" % dict(seen))


# -- balancing ----------------------------------------------------------------------------------

def test_random_balancing_spreads(env):
    router, ds = env.simple("app", HOST, dynos=3, workers=2)
    seen = spread(router, 90)
    for d in ds:
        check(seen.get(d.name, 0) >= 10, "random balancing: %r over 90 requests" % dict(seen))


def _least_conn_with_one_busy(env, n):
    """Two dynos, least-conn, two workers; one long request keeps one dyno busy while n quick
    requests (fresh connections, so either worker) are made. Returns (busy, idle, Counter)."""
    d1, d2 = env.dyno("web.1"), env.dyno("web.2")
    env.routing().app("app", [HOST], [(d1.name, d1.addr), (d2.name, d2.addr)],
                      balance="least-conn")
    router = env.router(workers=2)
    hold = "/delay/%d" % int(T(8))
    t = threading.Thread(target=lambda: hm.http_get(router.port, hold, HOST, timeout=T(20)),
                         daemon=True)
    t.start()
    busy = hm.wait_for(lambda: [d for d in (d1, d2) if any(
        q["target"] == hold for q in d.requests())], T(3), "the slow request to arrive")[0]
    idle = d2 if busy is d1 else d1
    hold_conn = [q["conn"] for q in busy.requests() if q["target"] == hold][0]
    seen = collections.Counter(dyno_of(router)[0] for _ in range(n))
    # The premise: the slow request was in flight on the busy dyno for the whole measurement.
    ended = [e for e in busy.closes() if e["conn"] == hold_conn]
    check(not ended, "the slow request's connection to %s closed during the measurement (%s); "
          "router log: %s" % (busy.name, ended[0]["why"] if ended else "", router.logs()[-3:]))
    check(not any(q["target"] == hold for q in idle.requests()),
          "the slow request was retried on %s" % idle.name)
    return busy, idle, seen


def test_least_conn_prefers_idle_dyno(env):
    # Random balancing sends ~100 of 200 to the idle dyno (P(>= 128) < 1e-4); power of two
    # choices sends at least ~150.
    busy, idle, seen = _least_conn_with_one_busy(env, 200)
    check(seen[idle.name] >= 128, "least-conn with %s busy sent only %d of 200 requests to the "
          "idle dyno: %r" % (busy.name, seen[idle.name], dict(seen)))


def test_least_conn_two_dynos_never_picks_the_busy_one(env):
    # With two up dynos the two choices must be the two dynos: a second draw that may repeat
    # the first sends a quarter of the requests to the busy dyno.
    busy, idle, seen = _least_conn_with_one_busy(env, 20)
    eq(dict(seen), {idle.name: 20}, "least-conn with %s busy: requests per dyno" % busy.name)


def test_least_conn_still_uses_all_dynos(env):
    d1, d2 = env.dyno("web.1"), env.dyno("web.2")
    env.routing().app("app", [HOST], [(d1.name, d1.addr), (d2.name, d2.addr)],
                      balance="least-conn")
    router = env.router()
    seen = spread(router, 40)
    check(seen.get("web.1", 0) >= 5 and seen.get("web.2", 0) >= 5,
          "least-conn with idle dynos should still spread: %r" % dict(seen))


# -- session affinity ---------------------------------------------------------------------------

def new_secret():
    """A secret file's content as an operator makes one (`openssl rand -hex 32`): text and a
    newline. (Random bytes flaked: the router strips trailing newlines, so 32 random bytes
    ending in 0x0a or 0x0d were 31 and refused, exit 2, in ~1 start of 128.)"""
    return secrets.token_hex(32).encode() + b"\n"


def _affinity_app(env, n=3, secret=None):
    ds = [env.dyno("web.%d" % (i + 1)) for i in range(n)]
    env.routing().app("app", [HOST], [(d.name, d.addr) for d in ds], affinity=True)
    if secret is None:
        secret = new_secret()
    path = env.write("affinity-%s.secret" % secret[:4].hex(), secret)
    return ds, path


def _cookie(resp):
    """The value of the affinity cookie set by resp, and the Set-Cookie line, or (None, None)."""
    for v in resp.headers_all("Set-Cookie"):
        name, _, rest = v.partition("=")
        if name.strip() == COOKIE:
            return rest.split(";")[0], v
    return None, None


def _with_cookie(router, value):
    return dyno_of(router, headers=[("Cookie", "other=1; %s=%s" % (COOKIE, value))])


def test_affinity_cookie_issued_and_honoured(env):
    ds, secret = _affinity_app(env)
    router = env.router(affinity_secret_file=secret, workers=2)
    first, r = dyno_of(router)
    value, line = _cookie(r)
    check(value, "no %s cookie on the first response: %r" % (COOKIE, r.headers))
    low = line.lower()
    check("path=/" in low and "httponly" in low and "max-age=86400" in low,
          "cookie attributes (REFERENCE: Max-Age=86400; Path=/; HttpOnly): %r" % line)
    seen = collections.Counter(_with_cookie(router, value)[0] for _ in range(15))
    eq(dict(seen), {first: 15}, "dynos for 15 requests carrying the cookie")


def test_affinity_off_issues_no_cookie(env):
    router, ds = env.simple("app", HOST, dynos=2)
    _, r = dyno_of(router)
    eq(_cookie(r), (None, None), "affinity cookie from an app without affinity")


def test_affinity_tampered_cookie_reissued(env):
    ds, secret = _affinity_app(env)
    router = env.router(affinity_secret_file=secret)
    _, r = dyno_of(router)
    value, _ = _cookie(r)
    check(value, "no affinity cookie issued")
    # flip one character in the middle and one at the end (the signature)
    for i in (len(value) // 2, len(value) - 2):
        c = value[i]
        bad = value[:i] + ("A" if c != "A" else "B") + value[i + 1:]
        got, r2 = _with_cookie(router, bad)
        new, _ = _cookie(r2)
        check(new and new != bad, "tampered cookie (char %d) was not replaced: Set-Cookie %r" %
              (i, r2.headers_all("Set-Cookie")))
    for junk in ("garbage", "", "x" * 500):
        got, r3 = _with_cookie(router, junk)
        check(_cookie(r3)[0], "no new cookie for junk cookie %r" % junk[:20])


def test_affinity_dyno_down_repinned(env):
    ds, secret = _affinity_app(env)
    router = env.router(affinity_secret_file=secret)
    first, r = dyno_of(router)
    value, _ = _cookie(r)
    check(value, "no affinity cookie issued")
    d = next(x for x in ds if x.name == first)
    env.routing().put_dyno("app", d.name, d.addr, "down")
    got, r2 = _with_cookie(router, value)
    check(got != first, "request went to %s, which is down" % first)
    new, _ = _cookie(r2)
    check(new and new != value, "cookie not re-issued after its dyno went down")
    seen = collections.Counter(_with_cookie(router, new)[0] for _ in range(10))
    eq(dict(seen), {got: 10}, "dynos for the re-issued cookie")


def test_affinity_dyno_removed_repinned(env):
    ds, secret = _affinity_app(env)
    router = env.router(affinity_secret_file=secret)
    first, r = dyno_of(router)
    value, _ = _cookie(r)
    env.routing().rm_dyno("app", first)
    got, r2 = _with_cookie(router, value)
    check(got != first, "request went to removed dyno %s" % first)
    check(_cookie(r2)[0], "cookie not re-issued after its dyno was removed")


def test_affinity_shared_between_routers_with_same_secret(env):
    secret = new_secret()
    ds, path = _affinity_app(env, secret=secret)
    r1 = env.router(affinity_secret_file=path)
    r2 = env.router(affinity_secret_file=env.write("copy.secret", secret))
    other = env.router(affinity_secret_file=env.write("other.secret", new_secret()))
    for _ in range(3):
        first, r = dyno_of(r1)
        value, _ = _cookie(r)
        check(value, "no affinity cookie from router 1")
        seen = collections.Counter(_with_cookie(r2, value)[0] for _ in range(8))
        eq(dict(seen), {first: 8}, "router 2 honouring router 1's cookie")
    # A router with another secret must not trust the cookie: it issues its own.
    reissued = 0
    for _ in range(5):
        _, r = _with_cookie(other, value)
        new, _ = _cookie(r)
        reissued += bool(new and new != value)
    eq(reissued, 5, "cookies re-issued by a router with a different secret (of 5)")


def _mac(secret, app, dyno, expiry, pad):
    # docs/router.md: mac = base64url(HMAC-SHA256(secret, "hermod-affinity-v1\0" app "\0" dyno
    # "\0" expiry)), secret = the file's content without trailing newlines.
    msg = b"hermod-affinity-v1\0" + app.encode() + b"\0" + dyno.encode() + b"\0" + \
        str(expiry).encode()
    m = base64.urlsafe_b64encode(hmac.new(secret.rstrip(b"\n"), msg, hashlib.sha256).digest())
    return (m if pad else m.rstrip(b"=")).decode()


def test_affinity_expired_cookie_reissued(env):
    secret = secrets.token_hex(32).encode()
    ds, path = _affinity_app(env, secret=secret)
    router = env.router(affinity_secret_file=path)
    first, r = dyno_of(router)
    value, _ = _cookie(r)
    check(value and value.count(".") >= 3, "cookie %r is not <expiry>.<dyno>.<mac> "
          "(docs/router.md)" % value)
    expiry, rest = value.split(".", 1)
    dyno, mac = rest.rsplit(".", 1)
    eq(dyno, first, "dyno named in the cookie")
    check(abs(int(expiry) - (time.time() + 86400)) < 60, "cookie expiry %s is not now + 1 day"
          % expiry)
    pad = "=" in mac
    eq(mac, _mac(secret, "app", dyno, expiry, pad), "cookie MAC recomputed from the secret")
    # A cookie made by the test for another dyno, valid for an hour, is honoured...
    other = next(d.name for d in ds if d.name != first)
    exp = int(time.time()) + 3600
    forged_ok = "%d.%s.%s" % (exp, other, _mac(secret, "app", other, exp, pad))
    seen = collections.Counter(_with_cookie(router, forged_ok)[0] for _ in range(6))
    eq(dict(seen), {other: 6}, "dynos for a valid cookie naming %s" % other)
    # ...the same cookie expired a minute ago is not.
    exp = int(time.time()) - 60
    expired = "%d.%s.%s" % (exp, other, _mac(secret, "app", other, exp, pad))
    got = collections.Counter()
    for _ in range(12):
        d, r2 = _with_cookie(router, expired)
        got[d] += 1
        new, _ = _cookie(r2)
        check(new and new != expired, "expired cookie not re-issued")
        check(int(new.split(".")[0]) > time.time() + 86000, "re-issued cookie expiry %r" % new)
    check(len(got) > 1, "an expired cookie still pinned every request to %r" % dict(got))


if __name__ == "__main__":
    hm.run(globals())

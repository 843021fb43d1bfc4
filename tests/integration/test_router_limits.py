#!/usr/bin/env python3
"""hermod-router: the limits that keep a node up (issue 9, "Limits that keep a node up").

  * --max-connections: at its share of the limit a worker stops accepting, so further clients
    wait in the kernel's backlog and are served when a connection closes; none is reset. The
    default comes from the file-descriptor limit. Before issue 9 there was no limit: once the
    descriptors ran out, libuv accepted each waiting client with a reserved descriptor and
    closed it at once (a reset for every new client).
  * Out of descriptors when connecting to a dyno: the dyno is not blamed (no H21, no skip-list
    entry); the request gets 503 H99 and hermod_fd_exhausted_total counts it.
  * Memory per connection is bounded: heads larger than the standard 16 KiB buffer grow only
    within the worker's --head-budget (beyond it: 400), so 2,000 connections trickling 200 KiB
    heads cannot take a worker's memory.
"""

import os
import resource
import socket

import hermod_test as hm
from hermod_test import T, check, eq, request_bytes

HOST = "app.test"
KIB = 1024
MIB = 1024 * 1024


def raise_own_nofile(n):
    """This test process needs n sockets of its own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    check(resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= n,
          "this test needs %d descriptors (ulimit -n)" % n)


def connect_many(port, n):
    """n connected sockets (a connect completes once the kernel queues it in the backlog,
    whether or not the router has accepted it)."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=T(10))
        out.append(s)
    return out


def worker_status(router, field):
    w = router.wait_workers()[0]
    with open("/proc/%d/status" % w) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * KIB
    hm.fail("no %s for worker %d" % (field, w))


def test_max_connections_clients_wait_in_the_backlog(env):
    d = env.dyno()
    env.routing().app("app", [HOST], [(d.name, d.addr)])
    router = env.router(metrics=True, max_connections=4)
    # The gauge is the live workers' limits, summed: a worker publishes its own once it runs.
    hm.wait_for(lambda: router.metric("hermod_max_client_connections") == 4.0, T(5),
                "the worker's limit (4) in hermod_max_client_connections")
    held = [hm.Conn(router.port) for _ in range(4)]
    for c in held:
        eq(c.request("GET", "/echo", HOST).status, 200, "a request within the limit")
    waiting = connect_many(router.port, 3)
    for s in waiting:
        s.sendall(request_bytes("GET", "/echo", HOST, headers=[("Connection", "close")]))
    hm.wait_for(lambda: (router.metric("hermod_accept_paused_total") or 0) >= 1, T(5),
                "the worker to stop accepting at its limit")
    eq(router.metric("hermod_client_connections"), 4.0, "client connections open")
    for s in waiting:
        s.settimeout(0.2)
        try:
            got = s.recv(1)
            hm.fail("a client beyond the limit was %s" % ("answered" if got else "closed"))
        except socket.timeout:
            pass
    # Each connection that closes lets one waiting client in; none of them is reset.
    for c in held:
        c.close()
    for i, s in enumerate(waiting):
        got = hm.read_to_eof(s, T(10))
        check(isinstance(got, bytes) and got.startswith(b"HTTP/1.1 200 "),
              "waiting client %d: expected its answer once there was room, got %r" %
              (i, got if isinstance(got, Exception) else got[:80]))
        s.close()


def test_fd_limit_sets_the_default_and_nobody_is_reset(env):
    d = env.dyno()
    env.routing().app("app", [HOST], [(d.name, d.addr)])
    # 128 descriptors: 64 kept back, the pool cut to 16, (128 - 64 - 16) / 2 = 24 clients.
    router = env.router(metrics=True, nofile=128)
    hm.wait_for(lambda: router.metric("hermod_max_client_connections") == 24.0, T(5),
                "the limit from RLIMIT_NOFILE (24) in hermod_max_client_connections")
    n = 150
    raise_own_nofile(n + 64)
    socks = connect_many(router.port, n)
    for s in socks:
        s.sendall(request_bytes("GET", "/echo", HOST, headers=[("Connection", "close")]))
    bad = []
    for i, s in enumerate(socks):
        got = hm.read_to_eof(s, T(20))
        if not (isinstance(got, bytes) and got.startswith(b"HTTP/1.1 200 ")):
            bad.append((i, got if isinstance(got, Exception) else got[:60]))
        s.close()
    eq(bad, [], "clients not served (reset, closed or left unanswered)")
    check(router.metric("hermod_accept_paused_total") >= 1, "accepting never paused")
    eq(router.metric("hermod_fd_exhausted_total"), 0.0, "descriptors ran out")


def test_out_of_descriptors_connecting_is_h99_not_the_dynos_fault(env):
    a, b = env.dyno("web.1"), env.dyno("web.2")
    env.routing().app("app", [HOST], [(a.name, a.addr), (b.name, b.addr)])
    # A limit above what 64 descriptors hold, no pool: clients can take every descriptor.
    router = env.router(metrics=True, nofile=64, max_connections=1000, pool_size=0)
    raise_own_nofile(200)
    first = hm.Conn(router.port)
    eq(first.request("GET", "/echo", HOST).status, 200, "a first request")
    idle = connect_many(router.port, 80)
    hm.wait_for(lambda: (router.metric("hermod_fd_exhausted_total") or 0) >= 1, T(10),
                "the worker to run out of descriptors accepting")
    since = router.mark()
    r = first.request("GET", "/echo/after", HOST)
    eq(r.status, 503, "status when no socket can be opened to the dyno")
    ll = router.wait_log(since, path="/echo/after")
    eq(ll.get("code"), "H99", "code= (the router's fault, not the dyno's H21): %s" % ll.raw)
    check((router.metric("hermod_fd_exhausted_total") or 0) >= 2,
          "the failed connect is not counted in hermod_fd_exhausted_total")
    first.close()
    for s in idle:
        s.close()
    hm.wait_for(lambda: router.metric("hermod_client_connections") == 0.0, T(10),
                "the idle connections to close")
    # No dyno was put in the skip list: both still get requests at once.
    seen = set()
    for i in range(40):
        resp = hm.http_get(router.port, "/echo/%d" % i, HOST)
        eq(resp.status, 200, "request %d after descriptors came back" % i)
        seen.add(resp.header("x-dyno"))
    eq(sorted(seen), ["web.1", "web.2"], "dynos that served the 40 requests")
    check(not [ln for ln in router.logs() if ln.get("code") == "H21"], "an H21 was logged")


def test_out_of_descriptors_an_idle_pooled_connection_makes_room(env):
    a, b = env.dyno("web.1"), env.dyno("web.2")
    env.routing().app("a", ["a.test"], [(a.name, a.addr)])
    env.routing().app("b", ["b.test"], [(b.name, b.addr)])
    router = env.router(metrics=True, nofile=64, max_connections=1000)
    raise_own_nofile(200)
    eq(hm.http_get(router.port, "/echo", "a.test").status, 200, "a request to a.test")
    first = hm.Conn(router.port)
    idle = connect_many(router.port, 80)
    hm.wait_for(lambda: (router.metric("hermod_fd_exhausted_total") or 0) >= 1, T(10),
                "the worker to run out of descriptors accepting")
    exhausted = router.metric("hermod_fd_exhausted_total")
    # b.test's dyno has no pooled connection: connecting needs a descriptor, and the idle
    # connection to a.test's dyno gives it back.
    r = first.request("GET", "/echo", "b.test")
    eq(r.status, 200, "a connect made possible by closing an idle pooled connection")
    eq(router.metric("hermod_fd_exhausted_total"), exhausted, "connect failures counted")
    first.close()
    for s in idle:
        s.close()


@hm.timeout(120)
def test_head_memory_bounded_by_the_budget(env):
    """2,000 connections each trickle 200 KiB of a head they never finish: the worker's peak
    memory stays within its standard buffers plus --head-budget (before issue 9 every one of
    them grew its buffer towards --max-head: about 400 MB)."""
    d = env.dyno()
    env.routing().app("app", [HOST], [(d.name, d.addr)])
    budget = 8 * MIB
    # AddressSanitizer's quarantine keeps freed memory resident on purpose: not the router's.
    asan = {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:print_summary=1:"
                            "quarantine_size_mb=0"} if hm.SANITIZED else None
    router = env.router(metrics=True, nofile=8192, max_connections=4000,
                        head_budget="%dMiB" % (budget // MIB), extra_env=asan)
    n, total, piece = 2000, 200 * KIB, 50 * KIB
    raise_own_nofile(n + 64)
    base = worker_status(router, "VmRSS")
    socks = connect_many(router.port, n)
    # Header lines within the contract's limits (values of 8000 bytes), never finished.
    head = b"GET / HTTP/1.1\r\nHost: app.test\r\n"
    while len(head) < total:
        head += b"X-Big-%d: %s\r\n" % (len(head), b"a" * 8000)
    head = head[:total]
    sent = [0] * n
    refused = 0
    for rnd in range(total // piece):
        for i, s in enumerate(socks):
            if s is None:
                continue
            data = head[rnd * piece:(rnd + 1) * piece]
            try:
                s.settimeout(T(10))
                s.sendall(data)
                sent[i] += len(data)
            except OSError:
                # Refused (400) and closed once its lingering close ended.
                socks[i] = None
                s.close()
                refused += 1
    hwm = worker_status(router, "VmHWM")
    refused_metric = router.metric("hermod_head_budget_refused_total")
    for s in socks:
        if s is not None:
            s.close()
    # What the budget allows: every connection's standard buffer and objects, the budget, and
    # room for the allocator and the access log.
    bound = base + n * (16 * KIB + 8 * KIB) + budget + 24 * MIB
    print("worker: %.1f MiB at rest, %.1f MiB peak with %d connections (bound %.1f MiB); "
          "%d heads refused (%d seen failing by the client)" %
          (base / MIB, hwm / MIB, n, bound / MIB, refused_metric, refused))
    check(hwm <= bound, "worker peak RSS %.1f MiB over the bound %.1f MiB" %
          (hwm / MIB, bound / MIB))
    check(refused_metric > 0, "no head was refused for the budget")


if __name__ == "__main__":
    hm.run(globals())

#!/usr/bin/env python3
"""hermod-router as a process (issue 4 "Processes", "Observability"): command line, access log,
metrics, signals, worker supervision."""

import collections
import os
import re
import signal
import subprocess
import threading
import time

import hermod_test as hm
from hermod_test import T, check, eq, request_bytes

HOST = "app.test"

# Heroku's order (issue 4): at, code, desc, method, path, host, request_id, fwd, dyno, connect,
# service, status, bytes, protocol.
ORDER = ["at", "code", "desc", "method", "path", "host", "request_id", "fwd", "dyno", "connect",
         "service", "status", "bytes", "protocol"]


# -- command line -------------------------------------------------------------------------------

def _run(args):
    return subprocess.run([hm.binary("hermod-router")] + args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=T(10))


def test_help(env):
    p = _run(["--help"])
    eq(p.returncode, 0, "exit status of --help")
    out = p.stdout.decode() + p.stderr.decode()
    for flag in ("--table", "--listen", "--workers", "--metrics", "--affinity-secret-file"):
        check(flag in out, "--help does not mention %s" % flag)


def test_unknown_flag_exits_2(env):
    p = _run(["--no-such-flag"])
    eq(p.returncode, 2, "exit status for an unknown flag")
    err = p.stderr.decode().strip()
    check(err and len(err.splitlines()) == 1, "expected a one-line reason, got %r" % err)


def test_bad_value_exits_2(env):
    for args in (["--workers", "lots"], ["--listen", "nowhere"], ["--workers", "-1"]):
        p = _run(args + ["--table", env.table])
        eq(p.returncode, 2, "exit status for %s" % " ".join(args))
        check(p.stderr.strip(), "no reason on stderr for %s" % " ".join(args))


def test_config_file(env):
    router_port = hm.free_port()
    d = env.dyno()
    env.routing().app("app", [HOST], [(d.name, d.addr)])
    cfg = env.write("router.json", '{"listen": "127.0.0.1:%d", "table": "%s", "workers": 1}' %
                    (router_port, env.table))
    p = env.start("router-cfg", [hm.binary("hermod-router"), "--config", cfg])
    hm.wait_for(lambda: hm.port_open(router_port) or not p.alive(), T(10),
                "the router configured by file to listen")
    check(p.alive(), "router with --config exited: %s" % p.stderr()[-300:])
    eq(hm.http_get(router_port, "/echo", HOST).status, 200, "status through it")


# -- access log ---------------------------------------------------------------------------------

def _check_order(ll):
    keys = [k for k in ll.keys() if k in ORDER]
    pos = [ORDER.index(k) for k in keys]
    eq(pos, sorted(pos), "field order of %s (Heroku's: %s)" % (ll.raw, " ".join(ORDER)))
    eq(len(keys), len(set(keys)), "duplicate fields in %s" % ll.raw)


def test_access_log_success_line(env):
    router, (d,) = env.simple("app", HOST)
    rid = "access-log-request-id-42"
    r = hm.http_get(router.port, "/echo/logged?q=1", HOST, [("X-Request-Id", rid)],
                    source="127.0.0.3")
    eq(r.status, 200, "status")
    ll = router.wait_log(path="/echo/logged?q=1")
    _check_order(ll)
    for k in ("at", "method", "path", "host", "request_id", "fwd", "dyno", "connect", "service",
              "status", "bytes", "protocol"):
        check(k in ll, "%s= missing from %s" % (k, ll.raw))
    eq(ll["at"], "info", "at=")
    eq(ll["method"], "GET", "method=")
    eq(ll["host"], HOST, "host=")
    eq(ll["request_id"], rid, "request_id=")
    eq(ll["fwd"], "127.0.0.3", "fwd=")
    check(ll.quoted.get("path") and ll.quoted.get("fwd"), "path= and fwd= must be quoted: %s"
          % ll.raw)
    eq(ll["dyno"], "web.1", "dyno=")
    check(re.fullmatch(r"\d+ms", ll["connect"]), "connect= must be Nms: %s" % ll.raw)
    check(re.fullmatch(r"\d+ms", ll["service"]), "service= must be Nms: %s" % ll.raw)
    eq(ll["status"], "200", "status=")
    check(ll["bytes"].isdigit() and int(ll["bytes"]) >= len(r.body),
          "bytes= %s for a %d-byte body" % (ll["bytes"], len(r.body)))
    eq(ll["protocol"], "http", "protocol=")
    check(not ll.get("code"), "code= on a successful request: %s" % ll.raw)


def test_access_log_error_line_keeps_empty_fields(env):
    env.routing().app("app", [HOST])
    router = env.router()
    r = hm.http_get(router.port, "/nodynos", HOST)
    eq(r.status, 503, "status")
    ll = router.wait_log(path="/nodynos")
    _check_order(ll)
    eq(ll.keys(), ORDER, "fields of an error line (all present, in order): %s" % ll.raw)
    eq((ll["at"], ll["code"], ll["desc"]), ("error", "H14", "No web processes running"),
       "at/code/desc")
    eq((ll["dyno"], ll["connect"], ll["service"]), ("", "", ""),
       "dyno/connect/service of an error with no dyno (present and empty)")
    eq(ll["status"], "503", "status=")


def test_access_log_one_line_per_request(env):
    router, (d,) = env.simple("app", HOST)
    with hm.Conn(router.port) as c:
        for i in range(25):
            eq(c.request("GET", "/echo/n%d" % i, HOST).status, 200, "status")
    hm.wait_for(lambda: len(router.logs()) >= 25, T(5), "25 log lines")
    time.sleep(0.3)
    paths = [ll.get("path") for ll in router.logs()]
    eq(paths, ["/echo/n%d" % i for i in range(25)], "logged paths, one per request")


def test_access_log_quotes_escape_path(env):
    router, (d,) = env.simple("app", HOST)
    eq(hm.http_get(router.port, '/echo/a"b%20c', HOST).status, 200, "status")
    ll = router.wait_log()
    eq(ll.get("path"), '/echo/a"b%20c', "path= (quotes escaped so the line stays parseable)")
    eq(ll.get("status"), "200", "status= after an escaped path")


# -- metrics ------------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)( \d+)?$')


def _metrics(router):
    text = router.metrics()
    samples = []
    types = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            m = re.match(r"# TYPE (\S+) (\S+)", line)
            if m:
                types[m.group(1)] = m.group(2)
            continue
        m = _SAMPLE.match(line)
        check(m, "not a Prometheus sample line: %r" % line)
        float(m.group(3))
        samples.append((m.group(1), m.group(2) or "", float(m.group(3))))
    return samples, types


def test_metrics_families(env):
    d = env.dyno()
    env.routing().app("app", [HOST], [(d.name, d.addr)])
    env.routing().app("empty", ["empty.test"])
    router = env.router(metrics=True, workers=2)
    for _ in range(5):
        hm.http_get(router.port, "/echo", HOST)
    hm.http_get(router.port, "/", "empty.test")   # H14
    hm.http_get(router.port, "/", "nobody.test")  # 404
    time.sleep(0.5)

    def find(samples, pred):
        return [s for s in samples if pred(s)]

    def wait_metrics(pred, what):
        last = [None]

        def ok():
            s, t = _metrics(router)
            last[0] = s
            return find(s, pred)
        try:
            return hm.wait_for(ok, T(3), what, interval=0.2)
        except hm.TestFailure:
            names = sorted({n for n, _, _ in last[0] or []})
            hm.fail("no metric for %s; metric names: %s" % (what, names))

    wait_metrics(lambda s: "request" in s[0] and '"2xx"' in s[1] and s[2] >= 5,
                 "requests by status class (2xx >= 5)")
    wait_metrics(lambda s: "request" in s[0] and '"4xx"' in s[1] and s[2] >= 1,
                 "requests by status class (4xx >= 1, the 404)")
    wait_metrics(lambda s: '"H14"' in s[1] and s[2] >= 1, "requests by H-code (H14 >= 1)")
    wait_metrics(lambda s: re.search(r"in_?flight", s[0]), "in-flight requests")
    wait_metrics(lambda s: "connect" in s[0] and s[0].endswith("_bucket") and "le=" in s[1],
                 "a dyno connect time histogram")
    wait_metrics(lambda s: "service" in s[0] and s[0].endswith("_bucket") and "le=" in s[1],
                 "a dyno service time histogram")
    wait_metrics(lambda s: "pool" in s[0] and "reuse" in s[0] + s[1], "pool reuse")
    wait_metrics(lambda s: "table" in s[0] and "version" in s[0] and s[2] >= 1, "table version")
    wait_metrics(lambda s: "table" in s[0] and "age" in s[0], "table age")
    wait_metrics(lambda s: "worker" in s[0] and "restart" in s[0], "worker restarts")
    samples, types = _metrics(router)
    check(any(t == "histogram" for t in types.values()), "no '# TYPE ... histogram' line")
    # Bounded cardinality: no per-request labels (paths, request ids, hosts of unknown apps).
    for n, labels, _ in samples:
        for bad in ("/echo", "nobody.test", "request_id"):
            check(bad not in labels, "per-request label %r in %s%s" % (bad, n, labels))


def _value(router, pred):
    return sum(v for n, labels, v in _metrics(router)[0] if pred(n, labels))


def test_metrics_follow_state(env):
    d = env.dyno()
    env.routing().app("app", [HOST], [(d.name, d.addr)])
    router = env.router(metrics=True, workers=2)

    def inflight():
        return _value(router, lambda n, l: re.search(r"in_?flight", n) and "bucket" not in n)

    eq(inflight(), 0, "in-flight requests while idle")
    t = threading.Thread(target=lambda: hm.http_get(router.port, "/delay/1.5", HOST,
                                                    timeout=T(10)), daemon=True)
    t.start()
    hm.wait_for(lambda: inflight() >= 1, T(2), "the in-flight metric to count a slow request",
                interval=0.1)
    t.join(T(10))
    hm.wait_for(lambda: inflight() == 0, T(2), "the in-flight metric to return to 0",
                interval=0.1)

    def version():
        return _value(router, lambda n, l: "table" in n and "version" in n)

    v0 = version()
    env.routing().put_domain("second.test", "app")
    hm.wait_for(lambda: version() > v0, T(3), "the table version metric to change after a "
                "change (was %s)" % v0, interval=0.1)

    def reused():
        return _value(router, lambda n, l: "pool" in n and "reuse" in n + l)
    r0 = reused()
    with hm.Conn(router.port) as c:
        for _ in range(5):
            eq(c.request("GET", "/echo", HOST).status, 200, "status")
    hm.wait_for(lambda: reused() >= r0 + 4, T(3), "the pool reuse metric to count 4 reuses",
                interval=0.1)


def test_metrics_count_worker_restarts(env):
    router, _ = env.simple("app", HOST, metrics=True, workers=2)
    w = router.wait_workers()
    before = sum(v for n, _, v in _metrics(router)[0] if "worker" in n and "restart" in n)
    w_pid = w[0]
    os.kill(w_pid, signal.SIGKILL)
    hm.wait_for(lambda: len(router.workers()) == 2 and w_pid not in router.workers(), T(3),
                "the killed worker to be replaced")

    def counted():
        s = sum(v for n, _, v in _metrics(router)[0] if "worker" in n and "restart" in n)
        return s >= before + 1
    hm.wait_for(counted, T(3), "the worker restart metric to increase", interval=0.2)


# -- signals and workers ------------------------------------------------------------------------

def test_workers_flag_starts_n_workers(env):
    router, _ = env.simple("app", HOST, workers=3)
    eq(len(router.wait_workers(3)), 3, "worker processes")


def test_sigterm_drains_in_flight_and_exits_0(env):
    router, (d,) = env.simple("app", HOST, workers=2)
    res = {}

    def slow():
        try:
            res["r"] = hm.http_get(router.port, "/delay/1.5", HOST, timeout=T(10))
        except Exception as e:  # noqa: BLE001
            res["err"] = e
    t = threading.Thread(target=slow, daemon=True)
    t.start()
    hm.wait_for(lambda: d.requests(), T(3), "the slow request to reach the dyno")
    t0 = time.monotonic()
    router.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # New connections are no longer served.
    refused = not hm.port_open(router.port, timeout=0.5)
    t.join(T(10))
    check("r" in res, "in-flight request failed during drain: %r" % res.get("err"))
    eq(res["r"].status, 200, "status of the in-flight request")
    rc = router.wait(T(10))
    router.expected_exit = True
    eq(rc, 0, "router exit status after SIGTERM")
    check(time.monotonic() - t0 >= 1.0, "router exited before its in-flight request finished")
    check(refused, "router still accepted new connections 0.3s after SIGTERM")


def test_sigterm_drain_deadline(env):
    router, (d,) = env.simple("app", HOST, drain_timeout="1s")
    c = hm.Conn(router.port)
    c.send(request_bytes("GET", "/delay/20", HOST))
    hm.wait_for(lambda: d.requests(), T(3), "the slow request to reach the dyno")
    t0 = time.monotonic()
    router.stop(timeout=T(8))
    dt = time.monotonic() - t0
    check(0.8 <= dt <= T(4), "router exited %.2fs after SIGTERM with --drain-timeout 1s" % dt)
    c.close()


def test_sigterm_with_idle_keepalive_client_exits_promptly(env):
    router, (d,) = env.simple("app", HOST)
    c = hm.Conn(router.port)
    eq(c.request("GET", "/echo", HOST).status, 200, "status")
    t0 = time.monotonic()
    router.stop(timeout=T(10))
    check(time.monotonic() - t0 < T(3), "an idle keep-alive client held up shutdown for %.1fs"
          % (time.monotonic() - t0))
    check(c.wait_closed(T(2)), "idle keep-alive connection not closed at shutdown")
    c.close()


def test_killed_worker_replaced(env):
    # How fast is a figure (test_cluster_drills.py prints it, ~30 ms), not a pass condition.
    router, _ = env.simple("app", HOST, workers=2)
    ws = router.wait_workers()
    os.kill(ws[0], signal.SIGKILL)
    t0 = time.monotonic()
    new = hm.wait_for(lambda: (lambda w: len(w) == 2 and ws[0] not in w and w)(router.workers()),
                      T(10), "a replacement worker")
    print("# worker replaced after %.0f ms" % ((time.monotonic() - t0) * 1e3))
    check(ws[1] in new, "the surviving worker was replaced too")
    for _ in range(10):
        eq(hm.http_get(router.port, "/echo", HOST).status, 200, "status after the replacement")
    check(router.alive(), "master died")


class _Load:
    """Clients in threads doing requests (new connection each, or keep-alive) until stopped."""

    def __init__(self, port, threads=4):
        self.port = port
        self.stop_ = threading.Event()
        self.ok = 0
        self.errors = collections.Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]

    def _run(self, i):
        keep = i % 2 == 1
        c = None
        while not self.stop_.is_set():
            try:
                if c is None:
                    c = hm.Conn(self.port, timeout=T(5))
                r = c.request("GET", "/echo", HOST)
                if r.status != 200:
                    raise hm.TestFailure("status %s" % r.status)
                with self.lock:
                    self.ok += 1
                if not keep or r.closed or (r.header("Connection") or "").lower() == "close":
                    c.close()
                    c = None
            except Exception as e:  # noqa: BLE001
                with self.lock:
                    self.errors[str(e)[:120]] += 1
                if c:
                    c.close()
                c = None
        if c:
            c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop_.set()
        for t in self.threads:
            t.join(T(10))


@hm.timeout(60)
def test_sigusr2_replaces_workers_without_refusing(env):
    router, _ = env.simple("app", HOST, workers=2)
    old = set(router.wait_workers())
    with _Load(router.port) as load:
        time.sleep(0.7)
        router.send_signal(signal.SIGUSR2)
        hm.wait_for(lambda: (lambda w: len(w) == 2 and not (set(w) & old))(router.workers()),
                    T(10), "every worker to be replaced after SIGUSR2", interval=0.05)
        time.sleep(0.7)
    check(load.ok > 50, "load too small to mean anything: %d requests" % load.ok)
    eq(dict(load.errors), {}, "failed requests during the SIGUSR2 worker replacement "
       "(%d succeeded)" % load.ok)
    check(router.alive(), "master died")


def test_sighup_keeps_serving(env):
    router, _ = env.simple("app", HOST)
    router.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    check(router.alive(), "router died on SIGHUP")
    eq(hm.http_get(router.port, "/echo", HOST).status, 200, "status after SIGHUP")
    r = hm.http_get(router.port, "/echo/after-hup", HOST)
    eq(r.status, 200, "status")
    router.wait_log(path="/echo/after-hup")


def test_signal_right_after_listening(env):
    # An operator (or logrotate) may signal the router as soon as its port accepts: SIGHUP
    # must not kill it then, nor SIGTERM make it exit with a status other than 0.
    env.routing().app("app", [HOST])
    for i, sig in enumerate([signal.SIGHUP, signal.SIGHUP, signal.SIGTERM]):
        r = env.router("router-%d" % i, wait=False)
        hm.wait_for(lambda: hm.port_open(r.port, timeout=0.05) or not r.alive(), T(10),
                    "the router to listen", interval=0.001)
        r.send_signal(sig)
        if sig == signal.SIGHUP:
            time.sleep(0.3)
            check(r.alive(), "router killed by a SIGHUP that came right after it started "
                  "listening (%s)" % hm._rc_str(r.returncode))
            r.stop()
        else:
            rc = r.wait(T(10))
            r.expected_exit = True
            eq(rc, 0, "exit status for a SIGTERM right after listening")


def test_survives_abusive_clients(env):
    router, (d,) = env.simple("app", HOST, workers=1)
    before = router.wait_workers()
    for i in range(30):
        c = hm.Conn(router.port)
        if i % 3 == 0:
            c.send(os.urandom(3000))
        elif i % 3 == 1:
            c.send(request_bytes("POST", "/sink", HOST, ["Content-Length: 1000000"]) + b"x" * 10)
        c.reset() if i % 2 else c.close()
    eq(hm.http_get(router.port, "/echo", HOST).status, 200, "status after 30 abusive clients")
    check(router.alive(), "router died")
    eq(router.workers(), before, "worker pids (none should have crashed and been replaced)")


if __name__ == "__main__":
    hm.run(globals())

#!/usr/bin/env python3
"""Node.js clients nobody here wrote against hermod-router (issue 11: HTTPS, wss; the HTTP/2
issue: h2 by ALPN): undici (HTTP/1.1 over TLS with keep-alive and a 1 MiB upload; HTTP/2 by ALPN
with 20 concurrent streams and an upload) and ws (a WebSocket over the TLS listener and over the
plain one: text and 200 KiB binary messages echoed, a ping answered through the tunnel, a clean
close), with ws's own server as the dyno. tests/interop/node_clients.mjs runs the clients and
checks what they see; this test owns the processes and checks the router's side: the access-log
lines, and that the HTTP/2 requests were HTTP/2 streams (hermod_h2_streams_total).

undici and ws are pinned in tests/interop/package.json (package-lock.json); ./deploy/dev test
installs them with npm ci."""

import os
import shutil
import subprocess

import hermod_test as hm
from hermod_test import T, check, eq, wait_for
from test_router_tls import HOST, Pki, put_cert, put_keys, tls_router

INTEROP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop")
SCRIPT = os.path.join(INTEROP, "node_clients.mjs")


def node():
    """The node binary, with undici and ws installed beside the script; fails (never skips)
    without them: ./deploy/dev test installs both."""
    exe = shutil.which("node")
    check(exe is not None, "node is not installed (./deploy/dev test installs nodejs)")
    for m in ("undici", "ws"):
        check(os.path.isdir(os.path.join(INTEROP, "node_modules", m)),
              "tests/interop/node_modules/%s missing: run `npm ci --prefix tests/interop` "
              "(./deploy/dev test does)" % m)
    return exe


class NodeBackend:
    """node_clients.mjs backend: a dyno made of Node's http server and ws's WebSocketServer."""

    def __init__(self, env):
        self.log = open(env.path("node-backend.log"), "w+b")
        self.p = subprocess.Popen([node(), SCRIPT, "backend"], stdout=subprocess.PIPE,
                                  stderr=self.log, cwd=INTEROP)
        line = self.p.stdout.readline().decode().strip()
        check(line.startswith("port "), "node backend did not start: %r" % line)
        self.addr = "127.0.0.1:%d" % int(line.split()[1])

    def stop(self):
        self.p.kill()
        self.p.wait()
        self.log.close()


def test_undici_and_ws(env):
    pk = Pki(env)
    store = env.path("tls.certs")
    put_cert(store, HOST, pk.exact)
    put_keys(store, os.urandom(80))
    b = NodeBackend(env)
    try:
        env.routing().app("app", [HOST], [("web.1", b.addr)])
        r = tls_router(env, store)
        wait_for(lambda: hm.http_get(r.port, "/echo/ready", HOST).status == 200, T(10),
                 "the app routed on the plain listener")
        streams0 = r.metric("hermod_h2_streams_total") or 0
        p = subprocess.run([node(), SCRIPT, "client", "--host", HOST, "--tls", str(r.tls_port),
                            "--plain", str(r.port), "--ca", pk.ca.crt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=INTEROP,
                           timeout=T(90))
        out = p.stdout.decode(errors="replace")
        eq(p.returncode, 0, "node clients:\n%s" % out)
        res = [ln for ln in out.splitlines() if ln.startswith("result ")]
        eq(len(res), 1, "one result line in:\n%s" % out)
        import json
        got = json.loads(res[0][len("result "):])
        eq(len(got["steps"]), 7, "every check ran: %r" % got["steps"])
        # The router's side: HTTP/2 requests arrived as HTTP/2 streams, every request was
        # logged as https with its status, the WebSocket upgrades as 101s.
        check((r.metric("hermod_h2_streams_total") or 0) - streams0 >= got["h2_requests"],
              "undici's %d HTTP/2 requests were HTTP/2 streams" % got["h2_requests"])
        r.wait_log(path="/echo/undici-h1", protocol="https", status="200")
        r.wait_log(path="/sink", protocol="https", status="200")
        for i in (0, 19):
            r.wait_log(path="/echo/h2-%d?q=%d" % (i, i), protocol="https", status="200")
        r.wait_log(path="/ws", protocol="https", status="101")
        r.wait_log(path="/ws", protocol="http", status="101")
    finally:
        b.stop()


if __name__ == "__main__":
    hm.run(globals())

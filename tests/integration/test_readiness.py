#!/usr/bin/env python3
"""systemd readiness (Type=notify): each program says READY=1 only once it really serves, and
STOPPING=1 when it begins to drain. The notify socket is a datagram socket the test binds."""

import os
import signal
import socket

import hermod_test as hm
from hermod_test import T, check, eq, wait_for


class NotifySocket:
    def __init__(self, env):
        self.path = env.path("notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        env.cleanups.append(self.sock.close)

    def expect(self, word, timeout):
        """Waits for a datagram containing the line `word`; returns all its lines."""
        self.sock.settimeout(timeout)
        while True:
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                hm.fail("no %s notification within %.1fs" % (word, timeout))
            lines = msg.split("\n")
            if word in lines:
                return lines


def test_router_ready_only_when_workers_accept(env):
    ns = NotifySocket(env)
    port = hm.free_port()
    r = env.start("router", [hm.binary("hermod-router"), "--table", env.table,
                             "--listen", "127.0.0.1:%d" % port, "--workers", "2"],
                  extra_env={"NOTIFY_SOCKET": ns.path})
    lines = ns.expect("READY=1", T(10))
    # By the time READY=1 is sent, both workers accept (the port answers, and a request gets a
    # real answer: 503 H99, since there is no table yet).
    check(hm.port_open(port), "READY=1 before the port accepts")
    eq(len(r.children()), 2, "workers when READY=1 arrived")
    check(any(l.startswith("STATUS=") for l in lines), "READY=1 without a STATUS line: %r" % lines)
    resp = hm.http_get(port, "/", "a.test")
    eq(resp.status, 503, "a request to a router without a table")
    r.send_signal(signal.SIGTERM)
    ns.expect("STOPPING=1", T(5))
    r.stop()


def test_router_reload_reports_reloading_then_ready(env):
    ns = NotifySocket(env)
    port = hm.free_port()
    r = env.start("router", [hm.binary("hermod-router"), "--table", env.table,
                             "--listen", "127.0.0.1:%d" % port, "--workers", "2"],
                  extra_env={"NOTIFY_SOCKET": ns.path})
    ns.expect("READY=1", T(10))
    before = set(r.children())
    r.send_signal(signal.SIGUSR2)
    ns.expect("RELOADING=1", T(5))
    ns.expect("READY=1", T(20))
    # READY=1 comes once every replacement accepts; the old workers may still be draining, and
    # must then exit on their own.
    new = set(r.children()) - before
    eq(len(new), 2, "new workers when the reload was reported done")
    wait_for(lambda: not (set(r.children()) & before), T(10), "the old workers to exit")
    r.stop()


def test_edge_ready_when_caught_up_or_serving_a_resumed_table(env):
    from syncd_util import Edge, Origin
    ns = NotifySocket(env)
    o = Origin(env, proc_env={"NOTIFY_SOCKET": ns.path})
    lines = ns.expect("READY=1", T(10))
    check(hm.admin_ready(o.admin), "the origin said READY=1 before its admin socket answers")
    check(any(l.startswith("STATUS=serving") for l in lines), "origin READY status: %r" % lines)
    seq = o.apply([{"op": "app.put", "app": "a"}, {"op": "domain.put", "domain": "a.test",
                                                    "app": "a"}])

    # An edge is ready once it is current with the origin.
    e = Edge(env, o, wait=False, proc_env={"NOTIFY_SOCKET": ns.path})
    ns.expect("READY=1", T(10))
    eq(e.status()["seq"], seq, "the edge's seq when it said READY=1")
    e.proc.stop()
    o.stop()

    # Restarted while the origin is down: its table is a complete version that routers can
    # serve, so it says READY=1 once it knows the origin is out of reach (stale), not never.
    e.start(wait=False)
    lines = ns.expect("READY=1", T(10))
    check(any("stale" in l for l in lines if l.startswith("STATUS=")),
          "READY without saying it is stale: %r" % lines)
    st = e.status()
    check(st["stale"] and st["seq"] == seq, "edge status when ready without the origin: %r" % st)
    e.proc.stop()


def test_edge_without_table_waits_for_the_origin(env):
    from syncd_util import Edge, Origin
    ns = NotifySocket(env)
    o = Origin(env)
    o.stop()
    e = Edge(env, o, proc_env={"NOTIFY_SOCKET": ns.path})
    ns.sock.settimeout(T(5))
    try:
        msg = ns.sock.recv(4096).decode()
        check("READY=1" not in msg.split("\n"),
              "an edge with no table and no origin said READY=1: %r" % msg)
    except socket.timeout:
        pass
    o.start()
    ns.expect("READY=1", T(15))
    e.proc.stop()
    o.stop()


if __name__ == "__main__":
    hm.run(globals())

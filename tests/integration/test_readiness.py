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


if __name__ == "__main__":
    hm.run(globals())

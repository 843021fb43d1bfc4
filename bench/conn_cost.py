#!/usr/bin/env python3
"""What one client connection costs a hermod-router worker, measured (docs/router.md, "Memory").

Run from the project root after building into build/:   python3 bench/conn_cost.py [N]
Starts a router (one worker) in front of a test dyno that never answers, then opens N client
connections three times over and reads the worker's resident memory (VmRSS) around each batch:

  idle   each connection made one request and waits, kept alive, for the next;
  busy   each connection has a request in flight: routed, sent to the dyno (a pooled or new dyno
         connection), waiting for the answer;
  head   each connection is half-way through a 12 KiB request head (its input buffer in use).

The figure is (RSS after - RSS before) / N: user-space memory only (libuv handles, the router's
objects, buffers, allocator overhead); the kernel's socket buffers come on top and are governed
by net.ipv4.tcp_rmem/wmem. Each state is measured on a fresh router. Env: BUILD (build).
"""

import os
import resource
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
os.environ.setdefault("HERMOD_BUILD", os.path.join(os.path.dirname(HERE),
                                                   os.environ.get("BUILD", "build")))

import hermod_test as hm  # noqa: E402

HOST = "app.test"


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def settle(pid):
    """RSS once it stops moving (the worker has handled what was sent)."""
    last = -1
    for _ in range(100):
        time.sleep(0.1)
        v = rss(pid)
        if v == last:
            return v
        last = v
    return last


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * n + 256), hard))
    results = {}
    for what in ("idle", "busy", "head"):
        # A fresh router for each state: memory a connection holds, not free lists from before.
        env = hm.Env("conn-cost")
        try:
            d = env.dyno("web.1")
            env.routing("direct").app("app", [HOST], [(d.name, d.addr)])
            router = env.router(nofile=4 * n + 256, max_connections=2 * n, pool_size=4 * n)
            worker = router.wait_workers()[0]
            # One request first, so that the loop and the allocator are warm.
            hm.http_get(router.port, "/hello", HOST)
            before = settle(worker)
            socks = []
            for i in range(n):
                s = socket.create_connection(("127.0.0.1", router.port))
                if what == "idle":
                    s.sendall(hm.request_bytes("GET", "/hello", HOST))
                elif what == "busy":
                    s.sendall(hm.request_bytes("GET", "/never", HOST))
                else:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Pad: " + b"p" * 12000)
                socks.append(s)
            if what == "idle":
                for s in socks:
                    s.settimeout(10)
                    got = b""
                    while b"hello from" not in got:
                        got += s.recv(65536)
            results[what] = (settle(worker) - before) / n
            for s in socks:
                s.close()
        finally:
            env.teardown()
            env.remove()
    print("worker RSS per client connection (N=%d):" % n)
    for what in ("idle", "busy", "head"):
        print("  %-5s %6.1f KiB" % (what, results[what] / 1024))


if __name__ == "__main__":
    main()

"""The admin socket of every syncd (issue 3, ../shared/CONTRACT.md): a Unix stream socket, mode
0600, parent directory created; one request per line, one JSON object per line back, several
requests per connection, usable with socat; errors as {"error": ...}; a stale socket file is
replaced, a live one is not taken over; dump streams a large state to a slow reader without
holding up the edge.
"""

import json
import os
import shutil
import socket
import stat
import subprocess
import time

import hermod_test as ht
from hermod_test import T, check, eq
from syncd_util import Edge, Origin, wait_converged


def converse(path, data, timeout=None):
    """Sends data, half-closes, returns every line received until the server closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout or T(5))
    s.connect(path)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    return [json.loads(x) for x in buf.decode().splitlines()]


def test_socket_file_and_protocol(env):
    o = Origin(env)
    admin = env.path("run/hermod/deep/edge.sock")
    e = Edge(env, o, admin=admin)
    mode = os.stat(admin).st_mode
    check(stat.S_ISSOCK(mode), "a socket")
    eq(stat.S_IMODE(mode), 0o600, "socket mode")
    o.ctl("app", "put", "a")
    wait_converged(o, [e])
    answers = converse(admin, b"status\n\n  lookup   nowhere.example  \r\nfrobnicate\ndump\nstatus")
    eq(len(answers), 5, "one answer per request line, blank lines ignored: %s" % answers)
    eq(answers[0]["role"], "edge", "status")
    eq(answers[1], {"error": "no app for this host"}, "lookup of an unknown host")
    check("unknown command" in answers[2]["error"], answers[2])
    eq([a["app"] for a in answers[3]["apps"]], ["a"], "dump")
    eq(answers[4]["seq"], answers[0]["seq"], "a last request without a newline is answered")
    check("error" in converse(admin, b"lookup\n")[0], "lookup without a host")
    # An overlong line is refused and the connection closed.
    ans = converse(admin, b"lookup " + b"x" * 10000 + b"\n")
    check(len(ans) == 1 and "longer" in ans[0]["error"], ans)
    if shutil.which("socat"):
        p = subprocess.run("echo status | socat - UNIX:%s" % admin, shell=True,
                           stdout=subprocess.PIPE, timeout=T(10))
        eq(json.loads(p.stdout)["role"], "edge", "echo status | socat - UNIX:...")
    # The origin's admin socket speaks the same.
    eq(converse(o.admin, b"status\n")[0]["role"], "origin", "origin status")


def test_stale_and_live_socket_files(env):
    o = Origin(env)
    path = env.path("stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays: what a SIGKILLed syncd leaves behind
    Edge(env, o, admin=path)
    eq(ht.admin_request(path, "status")["role"], "edge", "stale socket file replaced")
    p = subprocess.run([ht.binary("hermod-syncd"), "edge", "--publish", o.publish, "--sync",
                        o.sync, "--table", env.path("other.table"), "--admin", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(10))
    check(p.returncode not in (0, None), "a second syncd must not take over a live socket")
    check(b"another process" in p.stderr, p.stderr)
    eq(ht.admin_request(path, "status")["role"], "edge", "the first one still answers")
    open(env.path("plain"), "w").close()
    p = subprocess.run([ht.binary("hermod-syncd"), "edge", "--publish", o.publish, "--sync",
                        o.sync, "--table", env.path("third.table"), "--admin", env.path("plain")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(10))
    check(p.returncode not in (0, None) and b"not a socket" in p.stderr,
          "a regular file at the admin path is not removed: %r" % p.stderr)


def test_dump_streams_to_a_slow_reader(env):
    o = Origin(env)
    e = Edge(env, o)
    n = 50000
    ch = [{"op": "app.put", "app": "big"}]
    ch += [{"op": "dyno.put", "app": "big", "dyno": "web.%d" % i,
            "addr": "10.%d.%d.%d:80" % (i >> 16, i >> 8 & 255, i & 255)} for i in range(n)]
    o.apply(ch, timeout=T(60))
    wait_converged(o, [e])
    seq0 = e.status()["seq"]
    s, first = ht.admin_stalled(e.admin, "dump")
    check(first.startswith(b'{"role":"edge"'), first[:80])
    # While the reader stalls, the edge keeps applying changes and answering others (an edge
    # held up by the reader answers no status and never converges: no clock needed).
    for k in range(5):
        o.ctl("dyno", "put", "big", "new.%d" % k, "10.200.0.%d:80" % (k + 1))
    wait_converged(o, [e], what="the edge to apply changes while a dump reader stalls")
    s.settimeout(T(20))
    buf = ht.admin_read_line(s, first)
    s.close()
    d = json.loads(buf)
    eq(d["seq"], seq0, "the dump is one consistent state, at the seq it started at")
    eq(len(d["dynos"]), n, "every dyno in the dump")
    eq(len(set(x["name"] for x in d["dynos"])), n, "no dyno twice")



# ---------------------------------------------------------------------------------------------
# Bounds (issue 10): a client that sends status lines without reading grew the origin to 1 GB.
# ---------------------------------------------------------------------------------------------


def test_a_client_that_does_not_read_is_not_buffered_without_bound(env):
    o = Origin(env)
    rss0 = ht.proc_rss_kib(o.proc.pid)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(o.admin)
    s.setblocking(False)
    line = b"status\n" * 4096
    sent, deadline = 0, time.monotonic() + T(5)
    # Without a bound every line was answered into an ever-growing write queue, so the origin
    # took all of it; with one, it stops reading and this sender's buffer fills.
    while time.monotonic() < deadline and sent < (256 << 20):
        try:
            sent += s.send(line)
        except BlockingIOError:
            time.sleep(0.01)
    rss1 = ht.proc_rss_kib(o.proc.pid)
    print("# sent %d MiB of requests before the origin stopped reading; RSS %d -> %d KiB" %
          (sent >> 20, rss0, rss1), flush=True)
    check(sent < (64 << 20), "the origin kept reading requests it could not answer: %d bytes"
          % sent)
    check(rss1 - rss0 < 32 << 10, "the origin's memory grew by %d KiB" % (rss1 - rss0))
    # Others are still served, and the slow client gets its answers once it reads.
    eq(ht.admin_request(o.admin, "status")["role"], "origin", "another client meanwhile")
    s.setblocking(True)
    s.settimeout(T(5))
    got = s.recv(65536)
    check(got.startswith(b'{"role":"origin"'), "the slow client's answers: %r" % got[:80])
    s.close()


def test_idle_clients_are_closed_and_clients_are_capped(env):
    o = Origin(env, extra=["--admin-idle", "1s"])
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(o.admin)
    idle.settimeout(T(10))
    t0 = time.monotonic()
    eq(idle.recv(1), b"", "an idle client is closed")
    waited = time.monotonic() - t0
    check(0.5 < waited < T(5), "closed after the idle timeout (%.1f s)" % waited)
    idle.close()

    o.restart()
    held = []
    for _ in range(64):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(o.admin)
        held.append(c)
    eq(ht.admin_request(o.admin, "status").get("error"),
       "too many admin clients (64); try again", "the 65th client")
    held.pop().close()
    ht.wait_for(lambda: "role" in ht.admin_request(o.admin, "status"), T(5),
                "a client once one has left")
    for c in held:
        c.close()


if __name__ == "__main__":
    ht.run(globals())

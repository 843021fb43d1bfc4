"""hermod-syncd origin and edge: joining, propagation, restarts, staleness, options.

Issue 3: the origin keeps its epoch and seq across restarts (edges continue without a full
resync), a fresh data directory gets a new epoch (edges resync), an edge goes stale after 3 s
without heartbeats and keeps its table, SIGTERM exits 0, bad usage exits 2.
"""

import json
import subprocess
import time

import hermod_test as ht
from hermod_test import T, check, eq, fail, wait_for
from syncd_util import Edge, Origin, wait_converged

CONTRACT_STATUS = ("role", "node", "epoch", "seq", "origin_seq", "apps", "domains", "dynos",
                   "digest", "stale", "last_heartbeat_ms")


def sample(o):
    return o.apply([
        {"op": "app.put", "app": "web", "affinity": True},
        {"op": "domain.put", "domain": "www.Example.com.", "app": "web"},
        {"op": "domain.put", "domain": "*.example.com", "app": "web"},
        {"op": "app.put", "app": "api", "balance": "least-conn"},
        {"op": "domain.put", "domain": "api.example.com", "app": "api"},
        {"op": "dyno.put", "app": "web", "dyno": "web.1", "addr": "10.0.0.1:5000"},
        {"op": "dyno.put", "app": "web", "dyno": "web.2", "addr": "[::1]:5001",
         "state": "starting"},
        {"op": "dyno.put", "app": "api", "dyno": "web.1", "addr": "10.0.1.1:80"},
    ])


def test_join_and_propagate(env):
    o = Origin(env)
    e = Edge(env, o)
    wait_converged(o, [e])
    seq = sample(o)
    eq(seq, 1, "first seq")
    wait_converged(o, [e])
    st = e.status()
    for k in CONTRACT_STATUS:
        check(k in st, "edge status lacks %r: %s" % (k, st))
    eq((st["role"], st["node"], st["apps"], st["domains"], st["dynos"], st["stale"]),
       ("edge", "edge", 2, 3, 3, False), "edge status")
    ost = o.status()
    for k in CONTRACT_STATUS:
        check(k in ost, "origin status lacks %r: %s" % (k, ost))
    eq(ost["role"], "origin", "origin role")
    eq(ost["epoch"], st["epoch"], "epochs")
    check(len(st["digest"]) == 32 and st["digest"] != "0" * 32, "digest %r" % st["digest"])
    # Lookups follow the contract's rules on the edge's table.
    lk = ht.admin_request(e.admin, "lookup WWW.EXAMPLE.COM:8080")
    eq((lk["app"], lk["affinity"]), ("web", True), "exact domain")
    eq(sorted((d["name"], d["addr"], d["state"]) for d in lk["dynos"]),
       [("web.1", "10.0.0.1:5000", "up"), ("web.2", "[::1]:5001", "starting")], "dynos")
    eq(ht.admin_request(e.admin, "lookup x.y.example.com")["app"], "web", "wildcard")
    eq(ht.admin_request(e.admin, "lookup api.example.com")["app"], "api", "exact over wildcard")
    eq(ht.admin_request(e.admin, "lookup api.example.com")["balance"], "least-conn", "balance")
    check("error" in ht.admin_request(e.admin, "lookup example.org"), "unknown host")
    # A second change, then a removal cascade.
    o.apply([{"op": "app.rm", "app": "web"}])
    wait_converged(o, [e])
    eq((e.status()["apps"], e.status()["domains"], e.status()["dynos"]), (1, 1, 1), "after rm")


def test_origin_restart_keeps_epoch_and_seq(env):
    o = Origin(env)
    e = Edge(env, o)
    sample(o)
    seq = o.apply([{"op": "dyno.put", "app": "api", "dyno": "web.2", "addr": "10.0.1.2:80"}])
    wait_converged(o, [e])
    before = o.status()
    snaps = e.status()["snapshots"]
    eq(o.stop(), 0, "origin exit status after SIGTERM")
    o.start()
    after = o.status()
    eq((after["epoch"], after["seq"], after["digest"]),
       (before["epoch"], before["seq"], before["digest"]), "origin state after restart")
    seq2 = o.apply([{"op": "dyno.rm", "app": "api", "dyno": "web.1"}])
    eq(seq2, seq + 1, "seq continues")
    wait_converged(o, [e])
    eq(e.status()["snapshots"], snaps, "full resyncs by the edge (it should just catch up)")


def test_fresh_data_dir_new_epoch(env):
    o = Origin(env)
    e = Edge(env, o)
    sample(o)
    wait_converged(o, [e])
    old = o.status()["epoch"]
    snaps = e.status()["snapshots"]
    o.stop()
    o.data = env.path("other-data")
    o.start()
    check(o.status()["epoch"] != old, "a fresh data directory must get a new epoch")
    o.apply([{"op": "app.put", "app": "solo"}])
    wait_converged(o, [e], what="the edge to follow the new epoch")
    st = e.status()
    eq((st["apps"], st["epoch"]), (1, o.status()["epoch"]), "edge state after the new epoch")
    check(st["snapshots"] > snaps, "the edge must have done a full resync")
    # Issue 10: a new epoch is also what a process squatting the origin's address looks like,
    # so it is said loudly (an error, counted, in status), not as a notice.
    eq(st["epoch_changes"], 1, "epoch changes counted")
    eq(st["last_epoch_change"], {"from": old, "to": o.status()["epoch"]}, "status says which")
    check(any(" edge err: the origin's epoch changed from %s to %s" % (old, st["epoch"]) in line
              for line in e.proc.stderr().splitlines()),
          "an error-level log line: %s" % e.proc.stderr()[-800:])


def test_stale_and_back(env):
    o = Origin(env, extra=["--heartbeat", "200ms"])
    e = Edge(env, o, extra=["--stale-after", "1s"])
    sample(o)
    wait_converged(o, [e])
    wait_for(lambda: e.status()["last_heartbeat_ms"] is not None, T(5), "a heartbeat")
    digest = e.status()["digest"]
    o.stop()
    st = wait_for(lambda: (lambda s: s if s["stale"] else None)(e.status()), T(5),
                  "the edge to report stale")
    check(st["last_heartbeat_ms"] >= 1000, "last_heartbeat_ms %r" % st["last_heartbeat_ms"])
    eq(e.peek()["digest"], digest, "the table keeps serving its last state")
    o.start()
    wait_for(lambda: not e.status()["stale"], T(5), "the edge to be fresh again")
    o.apply([{"op": "app.put", "app": "later"}])
    wait_converged(o, [e])


def test_stale_after_three_seconds_by_default(env):
    o = Origin(env)
    e = Edge(env, o)
    wait_converged(o, [e])
    o.stop()
    t0 = time.monotonic()
    wait_for(lambda: e.status()["stale"], T(8), "stale")
    dt = time.monotonic() - t0
    check(dt >= 2.0, "stale too early (%.1fs after the last heartbeat could have come)" % dt)


def run_syncd(args, timeout=None):
    p = subprocess.run([ht.binary("hermod-syncd")] + args, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout or T(10))
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_usage_and_config(env):
    for args, what in ((["origin", "--bogus"], "unknown flag"),
                       (["origin", "--heartbeat", "fast"], "bad duration"),
                       (["origin", "--control", "http://x"], "bad URL"),
                       (["edge", "--sync", "tcp://127.0.0.1:1"], "edge without --publish"),
                       (["mirror"], "unknown role"),
                       ([], "no role")):
        rc, out, err = run_syncd(args)
        eq(rc, 2, "exit status for %s (%s)" % (what, err.strip()))
        check(len(err.strip().splitlines()) <= 3 and err.strip(), "one-line reason: %r" % err)
    rc, out, _ = run_syncd(["origin", "--help"])
    eq(rc, 0, "--help")
    check("--compact-after" in out and "--data" in out, "origin --help text")
    rc, out, _ = run_syncd(["edge", "--help"])
    check(rc == 0 and "--stale-after" in out, "edge --help")
    # A config file; flags win over it.
    ports = [ht.free_port() for _ in range(3)]
    cfg = env.write("origin.json", json.dumps({
        "control": "tcp://127.0.0.1:%d" % ports[0], "publish": "tcp://127.0.0.1:1",
        "sync": "tcp://127.0.0.1:%d" % ports[2], "data": env.path("cfg-data"),
        "admin": env.path("cfg.sock"), "heartbeat": "200ms"}))
    p = env.start("cfg-origin", [ht.binary("hermod-syncd"), "origin", "--config", cfg,
                                 "--publish", "tcp://127.0.0.1:%d" % ports[1]])
    wait_for(lambda: ht.admin_ready(env.path("cfg.sock")) or
             (not p.alive() and fail("origin with --config exited:\n" + p.tail())),
             T(10), "origin with a config file")
    check(ht.port_open(ports[1]), "the --publish flag should win over the config file")
    bad = env.write("bad.json", json.dumps({"colour": "blue"}))
    rc, _, err = run_syncd(["origin", "--config", bad])
    eq(rc, 2, "unknown config key (%s)" % err.strip())


def test_data_dir_is_locked(env):
    o = Origin(env)
    rc, _, err = run_syncd(["origin", "--data", o.data, "--admin", env.path("second.sock"),
                            "--control", "tcp://127.0.0.1:%d" % ht.free_port(),
                            "--publish", "tcp://127.0.0.1:%d" % ht.free_port(),
                            "--sync", "tcp://127.0.0.1:%d" % ht.free_port()])
    check(rc not in (0, None), "a second origin on the same data directory must fail")
    check("in use" in err, "reason: %r" % err)


def test_sigterm_finishes_pending_requests(env):
    o = Origin(env)
    e = Edge(env, o)
    # Requests in flight when SIGTERM arrives are either acknowledged (then durable) or left
    # unanswered; nothing acknowledged is lost.
    import threading
    results = []

    def client(i):
        r = o.ctl("app", "put", "app%d" % i, timeout=T(30))
        results.append((i, r.rc))
    ts = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    time.sleep(0.05)
    eq(o.stop(), 0, "origin exit status")
    # Clients left unanswered are still waiting: their REQ resends to the restarted origin.
    o.start()
    for t in ts:
        t.join()
    eq(sorted(rc for _, rc in results), [0] * 8, "every client is answered in the end")
    acked = {i for i, rc in results if rc == 0}
    dump = ht.admin_request(o.admin, "dump")
    have = {a["app"] for a in dump["apps"]}
    check({"app%d" % i for i in acked} <= have, "acknowledged apps missing after restart: %s" %
          ({"app%d" % i for i in acked} - have))
    wait_converged(o, [e])


def test_systemd_readiness(env):
    """Type=notify: the origin says READY=1 once it serves, the edge once its table is current;
    both say STOPPING=1 on SIGTERM."""
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = env.path("notify.sock")
    sock.bind(path)
    env.defer(sock.close)
    sock.settimeout(T(10))

    def expect(word):
        while True:
            lines = sock.recv(4096).decode().split("\n")
            if word in lines:
                return lines
    o = Origin(env, wait=False, proc_env={"NOTIFY_SOCKET": path})
    expect("READY=1")
    check(ht.admin_ready(o.admin) and ht.port_open(int(o.control.rsplit(":", 1)[1])),
          "READY=1 before the origin serves")
    o.ctl("app", "put", "r")
    e = Edge(env, o, wait=False, proc_env={"NOTIFY_SOCKET": path})
    lines = expect("READY=1")
    eq(e.status()["seq"], o.status()["seq"], "the edge is current when it says READY=1")
    check(any(l.startswith("STATUS=live") for l in lines), lines)
    e.proc.stop()
    expect("STOPPING=1")
    o.proc.stop()
    expect("STOPPING=1")


if __name__ == "__main__":
    ht.run(globals())

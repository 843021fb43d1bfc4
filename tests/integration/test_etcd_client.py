"""The origin's etcd client (syncd/etcd.c, issue 13) against a real etcd cluster (etcd_util).

Each test drives tests/tools/hm-etcd, which runs the client on a libuv loop: plain operations and
their error codes, compare-and-swap conflicts, etcd's limits (txn operations, request size), watch
order, resumption and compaction, failover when a member dies or an endpoint refuses, hangs or
blackholes, leases, maintenance calls, and TLS with client certificates. Without etcd installed
the script exits 77 (skipped); deploy/dev installs it, so CI runs it.
"""

import socket
import sys
import threading

import etcd_util as eu
import hermod_test as ht
from hermod_test import check, eq, fail, timeout, wait_for, T

MAX_REQUEST = 1572864  # etcd 3.4's --max-request-bytes default


def one(env, **kw):
    c = eu.EtcdCluster(env, 1)
    return c, eu.EtcdTool(env, c.endpoints, **kw)


def test_put_get_delete_binary_keys(env):
    _, t = one(env)
    key, value = "hex:00ff106b6579", "hex:000102feff"
    r = t.ok("put", key, value)
    rev = r["rev"]
    r = t.ok("get", key)
    eq(len(r["kvs"]), 1, "keys read back")
    eq(r["kvs"][0]["key"], key, "key bytes")
    eq(r["kvs"][0]["value"], value, "value bytes")
    eq(r["kvs"][0]["mod"], rev, "mod_revision is the put's revision")
    eq(r["kvs"][0]["version"], 1, "version")
    for i in range(5):
        t.ok("put", "p/%d" % i, "v%d" % i)
    r = t.ok("range", "p/", "p0", 2)
    eq([kv["key"] for kv in r["kvs"]], ["p/0", "p/1"], "limited range, in key order")
    check(r["more"] and r["count"] == 5, "a limited range says more and counts all: %r" % r)
    r = t.ok("del", "p/", "p0")
    eq(r["deleted"], 5, "deleted by range")
    eq(t.ok("get", "p/1")["kvs"], [], "deleted key")
    r = t.ok("get", key, rev)
    eq(r["kvs"][0]["value"], value, "read at a past revision")


def test_txn_compare_and_swap_conflict(env):
    _, t = one(env)
    mod = t.ok("put", "head", "seq-0")["rev"]
    # Two writers race for the same head: both compare its mod_revision with what they read.
    a = t.send("cas", "head", mod, "seq-1-by-a")
    b = t.send("cas", "head", mod, "seq-1-by-b")
    ra, rb = t.result(a), t.result(b)
    eq(ra["err"], 0, "txn a")
    eq(rb["err"], 0, "txn b")
    eq(sorted([ra["succeeded"], rb["succeeded"]]), [False, True], "exactly one CAS wins")
    win, lose = (ra, rb) if ra["succeeded"] else (rb, ra)
    wanted = "seq-1-by-a" if win is ra else "seq-1-by-b"
    # The loser's failure branch read the winner's value and revision.
    got = lose["responses"][0]["kvs"][0]
    eq(got["value"], wanted, "the loser sees the winner's value")
    eq(got["mod"], win["rev"], "at the winner's revision")
    # Against the current revision it succeeds; against the stale one it keeps failing.
    eq(t.ok("cas", "head", win["rev"], "seq-2")["succeeded"], True, "CAS on the current head")
    eq(t.ok("cas", "head", mod, "seq-x")["succeeded"], False, "CAS on a stale head")
    # A missing key has mod_revision 0: "create if absent".
    eq(t.ok("cas", "fresh", 0, "first")["succeeded"], True, "create-if-absent")
    eq(t.ok("cas", "fresh", 0, "second")["succeeded"], False, "second create-if-absent")


def test_limits_txn_ops_and_request_size(env):
    _, t = one(env)
    eq(len(t.ok("ops", 128)["responses"]), 128, "a txn of 128 puts (etcd's --max-txn-ops)")
    r = t.call("ops", 129)
    eq(r["errname"], "ETOOBIG", "a txn of 129 puts")
    check("too many operations" in r["msg"], "etcd's reason is passed on: %r" % r["msg"])
    # A value just under the request limit (a few hundred bytes are the request's own), and
    # one over it.
    big = MAX_REQUEST - 512
    t.ok("put", "big", "@%d" % big)
    eq(t.ok("get", "big")["kvs"][0]["value_len"], big, "the large value read back")
    r = t.call("put", "big2", "@%d" % MAX_REQUEST)
    eq(r["errname"], "ETOOBIG", "a value over --max-request-bytes")
    eq(t.ok("get", "big2")["kvs"], [], "nothing of a refused put")
    # Responses are not bound by the request limit: three large values in one range.
    for i in range(3):
        t.ok("put", "bulk/%d" % i, "@%d" % big)
    r = t.ok("range", "bulk/", "bulk0")
    eq([kv["value_len"] for kv in r["kvs"]], [big] * 3, "a response of 4.5 MiB")


def wait_events(t, wid, n, what):
    return wait_for(lambda: len(t.events(wid)) >= n and t.events(wid), T(20), what)


def test_watch_in_order_and_resume_from_revision(env):
    _, t = one(env)
    # From the next revision, not "from now": the watch is created on the server while the
    # puts below are already running.
    wid = t.watch("w/", "w0", t.ok("get", "w/")["rev"] + 1)
    ids = [t.send("put", "w/%03d" % i, "v%d" % i) for i in range(100)]
    revs = {}
    for i, cid in enumerate(ids):
        r = t.result(cid)
        eq(r["err"], 0, "put %d" % i)
        revs[r["rev"]] = "w/%03d" % i
    evs = wait_events(t, wid, 100, "100 watch events")
    eq(len(evs), 100, "events (no duplicates)")
    got = [e["kv"]["mod"] for e in evs]
    eq(got, sorted(revs), "events in revision order, one per put")
    eq([e["kv"]["key"] for e in evs], [revs[r] for r in sorted(revs)], "keys")
    # A second watch from the 50th revision gets exactly the rest, as a resumed origin would.
    from_rev = sorted(revs)[50]
    w2 = t.watch("w/", "w0", from_rev)
    evs2 = wait_events(t, w2, 50, "the 50 later events")
    eq([e["kv"]["mod"] for e in evs2], sorted(revs)[50:], "events from the revision on")
    # Deletes are events too.
    t.ok("del", "w/000")
    wait_for(lambda: any(e["type"] == "delete" for e in t.events(wid)), T(10), "a delete event")


def test_watch_compacted_revision(env):
    _, t = one(env)
    revs = [t.ok("put", "c/%d" % i, "v")["rev"] for i in range(10)]
    t.ok("compact", revs[5])
    wid = t.watch("c/", "c0", revs[2])
    d = wait_for(lambda: t.final(wid), T(20), "the watch to be refused")
    eq(d["errname"], "ECOMPACTED", "a watch from a compacted revision")
    eq(d["compact"], revs[5], "the oldest revision still held")
    eq(t.events(wid), [], "no event from a compacted watch")
    # From the compaction revision on, the history is there.
    w2 = t.watch("c/", "c0", revs[5])
    evs = wait_events(t, w2, 5, "events after the compaction revision")
    eq([e["kv"]["mod"] for e in evs], revs[5:], "events from the compaction revision")
    eq(t.call("compact", revs[5])["errname"], "ECOMPACTED", "compacting twice")
    eq(t.call("get", "c/0", revs[1])["errname"], "ECOMPACTED", "a read below the compaction")


def test_leases(env):
    _, t = one(env)
    r = t.ok("grant", 30)
    lease, ttl = r["lease"], r["ttl"]
    check(lease != 0 and ttl == 30, "a lease: %r" % r)
    t.ok("put", "claim", "me", lease)
    eq(t.ok("get", "claim")["kvs"][0]["lease"], lease, "the key is attached to the lease")
    check(t.ok("keepalive", lease)["ttl"] > 0, "keep-alive of a live lease")
    t.ok("revoke", lease)
    eq(t.ok("get", "claim")["kvs"], [], "revoking deletes the attached keys")
    eq(t.ok("keepalive", lease)["ttl"], 0, "keep-alive of a revoked lease says expired")
    eq(t.call("revoke", lease)["errname"], "ENOENT", "revoking it again")
    eq(t.call("put", "x", "y", lease)["errname"], "ENOENT", "a put on a revoked lease")


def test_status_and_defragment(env):
    _, t = one(env)
    for i in range(50):
        t.ok("put", "d/%d" % i, "@10000")
    t.ok("del", "d/", "d0")
    r = t.ok("status", 0)
    check(r["version"].startswith("3.4."), "etcd's version: %r" % r["version"])
    check(r["db_size"] > 0 and 0 < r["db_size_in_use"] <= r["db_size"], "db sizes: %r" % r)
    t.ok("defrag", 0)
    eq(t.call("status", 1)["errname"], "EINVAL", "a member that is not configured")


def test_nospace_alarm_listed_and_disarmed(env):
    """Over its quota etcd refuses puts (-ENOSPC) and raises NOSPACE: status says so, the
    alarm list names the member; deletes still work; disarmed after a compaction and a
    defragmentation, puts are accepted again."""
    c = eu.EtcdCluster(env, 1, extra_args=["--quota-backend-bytes", str(4 << 20)])
    t = eu.EtcdTool(env, c.endpoints)
    eq(t.ok("alarms")["alarms"], [], "no alarm at first")
    eq(t.ok("status", 0)["nospace"], False, "status: no NOSPACE")
    for i in range(200):
        r = t.call("put", "q/%d" % i, "@65536")
        if r["err"] != 0:
            break
    eq(r["errname"], "ENOSPC", "a put over the quota: %r" % r)
    eq(t.ok("status", 0)["nospace"], True, "status: NOSPACE")
    alarms = t.ok("alarms")["alarms"]
    eq([(a["member"], a["type"]) for a in alarms], [(t.ok("status", 0)["member"], 1)],
       "the member's NOSPACE alarm")
    rev = t.ok("del", "q/", "q0")["rev"]
    t.ok("compact", rev)
    t.ok("defrag", 0)
    eq([a["type"] for a in t.ok("disarm", alarms[0]["member"], 1)["alarms"]], [1],
       "what was disarmed")
    eq(t.ok("alarms")["alarms"], [], "no alarm left")
    eq(t.ok("status", 0)["nospace"], False, "status: no NOSPACE")
    t.ok("put", "q/after", "x")
    eq(t.call("disarm", alarms[0]["member"], 9)["errname"], "EINVAL", "an unknown alarm type")


@timeout(120)
def test_failover_when_a_member_dies(env):
    c = eu.EtcdCluster(env, 3)
    # The client talks to a follower first: killing the leader is another case (below), in
    # which a write in flight may time out with an unknown outcome while a new one is elected.
    lead = c.leader_index()
    check(lead is not None, "a leader")
    order = [i for i in range(3) if i != lead] + [lead]
    t = eu.EtcdTool(env, [c.endpoints[i] for i in order])
    wid = t.watch("f/", "f0", t.ok("get", "f/")["rev"] + 1)
    r = t.ok("put", "f/1", "a")
    eq(r["endpoint"], 0, "the first endpoint serves while it is up")
    wait_events(t, wid, 1, "the first event")
    c.kill(order[0])
    # The member the client talks to is gone: the put is refused there before it is sent and
    # goes to the next member; later requests start there.
    r = t.ok("put", "f/2", "b")
    check(r["endpoint"] != 0, "the put moved to another member: %r" % r)
    check(t.ok("current")["endpoint"] != 0, "the client's current endpoint moved")
    for i in range(3, 21):
        t.ok("put", "f/%d" % i, "v")
    evs = wait_events(t, wid, 20, "the watch to resume on another member")
    eq([e["kv"]["key"] for e in evs], ["f/%d" % i for i in range(1, 21)],
       "every event once, in order, across the member's death")
    check(t.batches(wid)[-1]["resumes"] >= 1, "the watch stream was resumed")
    # The member comes back and catches up; reads from it see everything.
    c.restart(order[0])
    r = t.ok("status", 0)
    check(r["db_size"] > 0, "status of the restarted member")
    eq(len(t.ok("range", "f/", "f0")["kvs"]), 20, "nothing lost")
    # Kill the leader now. Once the others have elected a new one, writes go through again
    # (the client skips the dead member) and the watch follows.
    lead = c.leader_index()
    check(lead is not None, "a leader")
    c.kill(lead)
    c.wait_healthy()
    t.ok("put", "f/after-leader", "v")
    wait_for(lambda: any(e["kv"]["key"] == "f/after-leader" for e in t.events(wid)), T(20),
             "the event after the leader died")


@timeout(120)
def test_member_without_a_leader(env):
    c = eu.EtcdCluster(env, 3)
    t = eu.EtcdTool(env, [c.endpoints[2]], timeout_ms=3000)
    wid = t.watch("q/", "q0", t.ok("get", "q/")["rev"] + 1)
    t.ok("put", "q/1", "before")
    c.kill(0)
    c.kill(1)
    # Member 2 has lost its quorum. Until it notices (if it was the leader, until CheckQuorum
    # makes it step down), a write may be proposed and time out: its outcome is unknown, and
    # it may be committed when the quorum returns. Once it knows, every request (they all ask
    # for a leader) is refused at once with "no leader": never proposed, never applied.
    attempts, unknown = [], []

    def refused():
        key = "q/2-%d" % len(attempts)
        r = t.call("put", key, "during")
        attempts.append(key)
        if r["errname"] == "EAGAIN":
            return r
        eq(r["errname"], "ETIMEDOUT", "a write before the member noticed")
        unknown.append(key)
        return None
    r = wait_for(refused, T(40), "member 2 to notice it has no leader", interval=0)
    check("no leader" in r["msg"], "etcd's reason: %r" % r["msg"])
    eq(t.call("get", "q/1")["errname"], "EAGAIN", "a linearizable read without a leader")
    # The watch asked for a leader too: the member ends its stream rather than leave it silent,
    # and the client keeps resuming it.
    wait_for(lambda: t.ok("resumes", wid)["resumes"] >= 1, T(30),
             "the leaderless member to end the watch stream", interval=0.2)
    # Quorum back: writes go through, and the watch, resumed meanwhile, delivers what follows.
    c.restart(0)
    t.ok("put", "q/3", "after")
    evs = wait_for(lambda: any(e["kv"]["key"] == "q/3" for e in t.events(wid)) and
                   t.events(wid), T(20), "the event after the outage")
    keys = [e["kv"]["key"] for e in evs]
    eq(keys[0], "q/1", "the event before")
    eq(keys[-1], "q/3", "the event after")
    eq(len(keys), len(set(keys)), "no event twice")
    check(set(keys[1:-1]) <= set(unknown),
          "only writes of unknown outcome may have been applied: %r (unknown: %r, refused: "
          "%r)" % (keys, unknown, attempts[len(unknown):]))
    eq(t.final(wid), None, "the watch never gave up")


def test_unreachable_endpoints_fail_over(env):
    c = eu.EtcdCluster(env, 1)
    refusing = "http://127.0.0.1:%d" % ht.free_port()
    hole = env.blackhole()
    t = eu.EtcdTool(env, [refusing, "http://" + hole.addr, c.endpoints[0]], timeout_ms=8000,
                    connect_timeout_ms=500)
    # A write may move while it has not been sent: refused, then a connect that times out.
    r = t.ok("put", "k", "v")
    eq(r["endpoint"], 2, "the put reached the third endpoint")
    eq(t.ok("current")["endpoint"], 2, "and the client stays there")
    # Every endpoint refusing: the last transport error, after the retries.
    t2 = eu.EtcdTool(env, [refusing], name="hm-etcd-2", timeout_ms=600)
    eq(t2.call("put", "k", "v")["errname"], "ECONNREFUSED", "nowhere to go")


class Silent:
    """A loopback HTTP 'server' that accepts connections and never answers: a hung member."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.running = False
        self.sock.close()
        for c in self.conns:
            c.close()


def test_timeouts(env):
    c = eu.EtcdCluster(env, 1)
    s = Silent()
    env.defer(s.close)
    hung = "http://127.0.0.1:%d" % s.port
    t = eu.EtcdTool(env, [hung], timeout_ms=1000)
    eq(t.call("get", "k")["errname"], "ETIMEDOUT", "a read from a member that never answers")
    eq(t.call("put", "k", "v")["errname"], "ETIMEDOUT", "a write to it")
    # With a good member after it: a read moves on (it keeps half its time for that); a write
    # that was sent is not sent again (its outcome is unknown), but the next one goes to the
    # good member.
    t2 = eu.EtcdTool(env, [hung, c.endpoints[0]], name="hm-etcd-2", timeout_ms=3000)
    r = t2.ok("get", "k")
    eq(r["endpoint"], 1, "the read was answered by the second member")
    t3 = eu.EtcdTool(env, [hung, c.endpoints[0]], name="hm-etcd-3", timeout_ms=1000)
    eq(t3.call("put", "k", "v1")["errname"], "ETIMEDOUT", "a sent write is not retried")
    r = t3.ok("put", "k", "v2")
    eq(r["endpoint"], 1, "the next write goes to the other member")
    eq(t3.ok("get", "k")["kvs"][0]["value"], "v2", "the value written")


@timeout(90)
def test_tls_with_client_certificates(env):
    tls = eu.TlsFiles(env.path("tls"))
    c = eu.EtcdCluster(env, 1, tls=tls)
    t = eu.EtcdTool(env, c.endpoints, ca=tls.ca, cert=tls.client)
    t.ok("put", "secret/affinity", "hex:" + "ab" * 32)
    eq(t.ok("get", "secret/affinity")["kvs"][0]["value"], "hex:" + "ab" * 32, "over TLS")
    # etcd verified by another CA: refused before anything is sent.
    t2 = eu.EtcdTool(env, c.endpoints, name="hm-etcd-2", ca=tls.other_ca, cert=tls.client,
                     timeout_ms=2000)
    eq(t2.call("get", "k")["errname"], "EETCDTLS", "a server certificate from another CA")
    # No client certificate: etcd refuses the handshake.
    t3 = eu.EtcdTool(env, c.endpoints, name="hm-etcd-3", ca=tls.ca, timeout_ms=2000)
    r = t3.call("get", "k")
    check(r["err"] != 0, "no client certificate, no answer: %r" % r)


if __name__ == "__main__":
    if not eu.available():
        print("# test_etcd_client.py: SKIP: etcd is not installed", flush=True)
        sys.exit(77)
    ht.run(globals())

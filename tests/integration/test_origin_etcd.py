"""Origins on etcd (issue 13, docs/store-etcd.md): `hermod-syncd origin --store etcd:...`
against a real etcd cluster on loopback (etcd_util).

Several origins share one etcd: a change committed through any of them is published by all of
them under the same (epoch, seq), and edges following either converge on the same digest; a
request retried on another origin is applied once; a batch larger than etcd's request limit is
staged and committed atomically; an origin restarted resumes from etcd; writes go on when one
etcd member of three is SIGKILLed; an origin cut off from etcd stops acknowledging and says why;
snapshots in etcd keep the log bounded; and the drill: the origin a hermodctl loop writes to is
SIGKILLed, writes go on through the other, and an edge following both loses nothing.
Without etcd installed the script exits 77 (skipped); deploy/dev installs it, so CI runs it.
"""

import json
import os
import signal
import sys
import threading
import uuid

import etcd_util as eu
import hermod_test as ht
import syncd_util as su
from etcd_util import heads_equal, origin, wait_same
from hermod_test import T, check, eq, wait_for


def app_changes(app, n, port=5000):
    return [ht.ch_app(app)] + [ht.ch_dyno(app, "web.%d" % i, "127.0.0.1:%d" % (port + i))
                               for i in range(n)]


def test_two_origins_one_numbering(env):
    c = eu.EtcdCluster(env, 1)
    a = origin(env, c, "origin-a")
    b = origin(env, c, "origin-b")
    ea = su.Edge(env, a, name="edge-a")
    eb = su.Edge(env, b, name="edge-b")
    sa, sb = a.status(), b.status()
    eq(sa["epoch"], sb["epoch"], "one epoch for the cluster")
    eq(sa["store"], "etcd", "store in status")
    seqs = []
    for i in range(6):
        o = (a, b)[i % 2]
        seqs.append(o.apply(app_changes("app%d" % i, 3)))
    eq(seqs, sorted(seqs), "seqs in commit order")
    eq(len(set(seqs)), 6, "every commit its own seq")
    seq, digest = wait_same([a, b], seqs[-1])
    su.wait_converged(a, [ea, eb])
    su.wait_converged(b, [ea, eb])
    for e in (ea, eb):
        st = e.status()
        eq((st["seq"], st["digest"]), (seq, digest), "%s holds the common head" % e.name)
        eq(st["epoch"], sa["epoch"], "%s epoch" % e.name)
    # What each origin published came from the other: both counted foreign batches.
    check(a.status()["store_foreign"] > 0 and b.status()["store_foreign"] > 0,
          "each origin learned the other's commits")
    dumps = [o.ctl("--admin", o.admin, "--json", "dump", control=False) for o in (a, b)]
    check(all(d.rc == 0 for d in dumps), "dumps: %r" % dumps)
    da, db = (json.loads(d.out) for d in dumps)
    da.pop("node"), db.pop("node")
    eq(da, db, "both origins hold the same table")
    eq(len(da["apps"]), 6, "the apps committed through both origins")


def test_ticket_keys_made_and_rotated_once(env):
    """Origins sharing etcd make the TLS session ticket keys once (with the cluster secret) and
    rotate them as one history: the edges following either origin end up with the same keys, a
    rotation keeps the previous key, and no origin rotates on a state it has not caught up with
    (that batch would lose its compare and be dropped)."""
    c = eu.EtcdCluster(env, 1)
    a = origin(env, c, "origin-a", extra=["--ticket-key-rotation", "2s"])
    b = origin(env, c, "origin-b", extra=["--ticket-key-rotation", "2s"])
    ea = su.Edge(env, a, name="edge-a")
    eb = su.Edge(env, b, name="edge-b")
    first = wait_for(lambda: (lambda k: k if k["ticket_keys"] >= 2 else None)(
        su.cert_peek(ea.status()["cert_store"])), T(15), "ticket keys on edge-a")

    def rotated():
        k = su.cert_peek(ea.status()["cert_store"])
        return k if k["ticket_keys"] == 3 and k["key_names"][0] != first["key_names"][0] \
            else None
    after = wait_for(rotated, T(20), "a ticket key rotation on edge-a")
    check(first["key_names"][0] in after["key_names"], "previous key kept: %s %s" %
          (first, after))

    def agree():
        h = heads_equal([a, b])
        if h is None:
            return None
        ka, kb = (su.cert_peek(e.status()["cert_store"]) for e in (ea, eb))
        sa, sb = ea.status(), eb.status()
        if (sa["seq"], sb["seq"]) != (h[0], h[0]) or ka["seq"] != h[0] or kb["seq"] != h[0]:
            return None
        return ka, kb
    ka, kb = wait_for(agree, T(20), "both edges at the common head")
    eq(ka["key_names"], kb["key_names"], "the edges of both origins hold the same keys")
    for o in (a, b):
        eq(o.status()["ticket_keys"], ka["ticket_keys"], "%s's keys" % o.name)
    eq(ea.status()["secrets"], 1, "the table holds only the affinity secret")


def test_concurrent_writers_one_history(env):
    """Two origins taking writes at once race for each seq: every request is committed exactly
    once, in one order both origins publish, and the edges of both agree."""
    c = eu.EtcdCluster(env, 1)
    a = origin(env, c, "origin-a")
    b = origin(env, c, "origin-b")
    ea = su.Edge(env, a, name="edge-a")
    eb = su.Edge(env, b, name="edge-b")
    seqs, errors = {}, []

    def writer(o, tag):
        for i in range(15):
            try:
                seqs["%s%d" % (tag, i)] = o.apply(app_changes("%s%d" % (tag, i), 2))
            except ht.TestFailure as e:
                errors.append(str(e))
    ts = [threading.Thread(target=writer, args=(o, t)) for o, t in ((a, "a"), (b, "b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errors, "every apply succeeded: %s" % errors[:2])
    eq(len(set(seqs.values())), 30, "30 commits, 30 distinct seqs")
    seq, digest = wait_same([a, b], max(seqs.values()))
    eq(seq, max(seqs.values()), "the head is the last commit")
    su.wait_converged(a, [ea, eb])
    dumps = [json.loads(o.ctl("--admin", o.admin, "--json", "dump", control=False).out)
             for o in (a, b)]
    eq(len(dumps[0]["apps"]), 30, "every app, once")
    eq(dumps[0]["apps"], dumps[1]["apps"], "same apps on both")
    conflicts = a.status()["store_conflicts"] + b.status()["store_conflicts"]
    print("# %d conflicts resolved by validating again" % conflicts)


def ctl_req(port, body):
    s = su.sp_connect(port, su.PROTO_REQ)
    try:
        su.sp_send(s, body, header=su.REQ_ID)
        return su.sp_recv(s, timeout=T(15))
    finally:
        s.close()


def test_retried_request_applied_once(env):
    """A request id committed through one origin and sent again to another is answered with the
    same (epoch, seq) and not applied again, whether the second origin has already learned it
    or validates it on top of an older head and loses the compare."""
    c = eu.EtcdCluster(env, 1)
    a = origin(env, c, "origin-a")
    b = origin(env, c, "origin-b")
    pa, pb = su.port_of(a.control), su.port_of(b.control)
    req = su.mp_ctl_req(uuid.uuid4().bytes, [[1, "once", False, False, 0]])
    ra = ctl_req(pa, req)
    seq, _ = wait_same([a, b])
    rb = ctl_req(pb, req)
    check(ra is not None and ra == rb,
          "the same answer from both origins: %r vs %r" % (ra, rb))
    eq(wait_same([a, b])[0], seq, "no seq for the retry")
    # Both at once: one of them commits, the other answers from the winner's commit.
    for i in range(5):
        req = su.mp_ctl_req(uuid.uuid4().bytes, [[1, "race%d" % i, False, False, 0]])
        out = [None, None]

        def send(k, port):
            out[k] = ctl_req(port, req)
        ts = [threading.Thread(target=send, args=(k, p)) for k, p in enumerate((pa, pb))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        check(out[0] is not None and out[0] == out[1], "race %d: one answer: %r" % (i, out))
        seq += 1
        eq(wait_same([a, b], seq)[0], seq, "race %d: one seq" % i)


def test_large_batch_staged_atomically(env):
    """A batch whose record is over etcd's request limit (1.5 MiB) is staged in chunk keys and
    committed by one small txn: the other origin and its edge get all of it at one seq."""
    c = eu.EtcdCluster(env, 1)
    a = origin(env, c, "origin-a")
    b = origin(env, c, "origin-b")
    eb = su.Edge(env, b, name="edge-b")
    n = 40000
    changes = [ht.ch_app("big")] + [
        ht.ch_dyno("big", "web.%d" % i, "10.%d.%d.%d:%d" % (i >> 16, (i >> 8) & 255, i & 255,
                                                            1000 + i % 5000))
        for i in range(n)]
    seq = a.apply(changes, timeout=T(120))
    st = a.status()
    check(st["etcd_staged"] >= 1, "the batch was staged: %r" % st)
    eq(wait_same([a, b], seq)[0], seq, "one seq for the whole batch")
    su.wait_converged(b, [eb], timeout=T(60))
    eq(b.status()["dynos"], n, "every dyno on the other origin")
    eq(eb.status()["dynos"], n, "every dyno on its edge")
    # A restarted origin reads the staged batch back from etcd.
    b.restart()
    eq(su.origin_head(b), su.origin_head(a), "restarted origin has the batch")
    # Two large batches at once through both origins: the one that loses the compare drops its
    # chunks, is validated again and staged anew; both end up committed, once each.
    out = {}

    def big(o, app):
        ch = [ht.ch_app(app)] + [ht.ch_dyno(app, "web.%d" % i, "10.9.%d.%d:%d" % (
            i >> 8 & 255, i & 255, 2000 + i)) for i in range(30000)]
        out[app] = o.apply(ch, timeout=T(120))
    ts = [threading.Thread(target=big, args=x) for x in ((a, "big-a"), (b, "big-b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    eq(sorted(out), ["big-a", "big-b"], "both large batches acknowledged")
    eq(len(set(out.values())), 2, "at two seqs")
    wait_same([a, b], max(out.values()))
    eq(b.status()["dynos"], n + 60000, "all of both, once")


def test_restart_resumes(env):
    """An origin stopped while others commit resumes at the common head from etcd, and its
    edge follows without a full resync."""
    c = eu.EtcdCluster(env, 1)
    a = origin(env, c, "origin-a")
    b = origin(env, c, "origin-b")
    ea = su.Edge(env, a, name="edge-a")
    a.apply(app_changes("before", 2))
    su.wait_converged(a, [ea])
    a.stop()
    for i in range(3):
        b.apply(app_changes("while%d" % i, 2))
    a.start()
    seq, digest = wait_same([a, b])
    eq(a.status()["epoch"], b.status()["epoch"], "same epoch after the restart")
    su.wait_converged(a, [ea])
    a.apply(app_changes("after", 1))
    wait_same([a, b], seq + 1)
    a.kill()  # SIGKILL: nothing to flush, etcd holds it all
    a.start()
    eq(wait_same([a, b])[0], seq + 1, "resumed after SIGKILL")


def test_etcd_member_killed(env):
    """Three etcd members; SIGKILL one (the leader), writes go on through both origins; the
    member restarted catches up; nothing acknowledged is lost."""
    c = eu.EtcdCluster(env, 3)
    a = origin(env, c, "origin-a")
    b = origin(env, c, "origin-b")
    seqs = [a.apply(app_changes("x0", 1))]
    c.kill(c.leader_index())
    c.wait_healthy()
    for i in range(1, 7):
        o = (a, b)[i % 2]
        r = o.ctl("--timeout", "5s", "--reply-timeout", "%ds" % int(T(20)), "--json", "apply",
                  "-", input=json.dumps({"changes": app_changes("x%d" % i, 1)}).encode())
        check(r.rc == 0, "apply %d with a member down: %r" % (i, r))
        seqs.append(r.json()["seq"])
    eq(seqs, sorted(set(seqs)), "seqs increase, none twice")
    down = [i for i, m in enumerate(c.members) if m.down][0]
    c.restart(down)
    seq, _ = wait_same([a, b], seqs[-1])
    dump = json.loads(b.ctl("--admin", b.admin, "--json", "dump", control=False).out)
    eq(sorted(x["app"] for x in dump["apps"]), sorted("x%d" % i for i in range(7)),
       "every acknowledged change")


def test_cut_off_from_etcd_stops_acknowledging(env):
    """An origin that cannot reach etcd assigns no seq: its requests fail with the reason
    (status stale, store_error), and it commits again when etcd is back."""
    c = eu.EtcdCluster(env, 1)
    a = origin(env, c, "origin-a")
    seq = a.apply(app_changes("before", 1))
    c.kill(0)
    wait_for(lambda: a.status()["stale"], T(15), "the origin to say it is stale")
    st = a.status()
    check(st["store_error"] and "etcd" in st["store_error"], "says why: %r" % st)
    r = a.ctl("--timeout", "2s", "--reply-timeout", "%ds" % int(T(10)), "--json", "apply", "-",
              input=json.dumps({"changes": app_changes("during", 1)}).encode())
    check(r.rc != 0, "no acknowledgement without etcd: %r" % r)
    check("etcd" in r.err or "etcd" in r.out, "the answer says why: %r" % r)
    eq(a.status()["seq"], seq, "no seq assigned")
    c.restart(0)
    wait_for(lambda: not a.status()["stale"], T(15), "the origin to commit again")
    eq(a.apply(app_changes("after", 1)), seq + 1, "the next seq, nothing skipped")


def test_snapshots_bound_the_log(env):
    """Under churn, an origin's compactions become snapshots in etcd (P/snap) and the log keys
    the previous one covered are deleted, so the log stays bounded; an origin started afterwards
    loads the snapshot from etcd and reaches the same head; etcd's history is compacted too."""
    c = eu.EtcdCluster(env, 1)
    a = origin(env, c, "origin-a", extra=["--compact-after", "2000"])
    t = eu.EtcdTool(env, c.endpoints)
    a.apply(app_changes("churn", 5))
    n = 0

    def snapshots():
        nonlocal n
        n += 1
        a.apply([ht.ch_dyno("churn", "web.%d" % (n % 5), "127.0.0.1:%d" % (6000 + n))])
        return a.status()["etcd_snapshots"] >= 3
    wait_for(snapshots, T(60), "three snapshots installed in etcd", interval=0.05)
    head = a.status()["seq"]
    logs = t.ok("range", "/hermod/log/", "/hermod/log0", 0)["count"]
    check(0 < logs < head, "log keys bounded by the snapshots: %d keys for %d seqs" %
          (logs, head))
    eq(t.ok("range", "/hermod/snapfile/", "/hermod/snapfile0", 0)["count"] >= 1, True,
       "the snapshot's pieces")
    b = origin(env, c, "origin-b")
    eq(wait_same([a, b])[0], head, "a new origin rebuilt the state from the snapshot")
    eb = su.Edge(env, b, name="edge-b")
    su.wait_converged(b, [eb])
    b.apply(app_changes("after", 1))
    eq(wait_same([a, b])[0], head + 1, "and commits on top of it")


def test_behind_a_trimmed_log_restarts(env):
    """An origin frozen (SIGSTOP) while another one's snapshots trim the log past its head finds
    a gap when it wakes: it says so and exits 1 instead of serving a state it cannot complete;
    started again, it loads the snapshot and follows."""
    c = eu.EtcdCluster(env, 1)
    a = origin(env, c, "origin-a", extra=["--compact-after", "2000"])
    b = origin(env, c, "origin-b")
    a.apply(app_changes("trim", 5))
    wait_same([a, b])
    b.proc.send_signal(signal.SIGSTOP)
    base = a.status()["etcd_snapshots"]
    n = 0

    def trimmed():
        nonlocal n
        n += 1
        a.apply([ht.ch_dyno("trim", "web.%d" % (n % 5), "127.0.0.1:%d" % (7000 + n))])
        return a.status()["etcd_snapshots"] >= base + 3
    wait_for(trimmed, T(60), "snapshots to trim the log", interval=0.05)
    b.proc.expected_exit = True
    b.proc.send_signal(signal.SIGCONT)
    eq(b.proc.wait(T(15)), 1, "the origin behind the log exits 1")
    check("cannot follow" in b.proc.stderr(), "and says why: %s" % b.proc.tail())
    b.start()
    eq(wait_same([a, b])[0], a.status()["seq"], "restarted, it follows again")


def test_sigkill_origin_under_writes_edge_on_both(env):
    """The drill: a hermodctl loop given both origins writes while the origin it uses is
    SIGKILLed. Every acknowledged change is on the edge that follows both origins, writes go on
    through the other one, and the edge does no full resync."""
    c = eu.EtcdCluster(env, 1)
    a = origin(env, c, "origin-a")
    b = origin(env, c, "origin-b")
    e = su.Edge(env, a, name="edge-both", publish=a.dial_publish + "," + b.dial_publish,
                sync=a.dial_sync + "," + b.dial_sync)
    a.apply([ht.ch_app("drill")])
    su.wait_converged(a, [e])
    snapshots = e.status()["snapshots"]
    control = a.dial_control + "," + b.dial_control
    acked, errors = [], []

    def put(i):
        r = a.ctl("--control", control, "--timeout", "5s", "--reply-timeout", "10s", "--json",
                  "dyno", "put", "drill", "web.%d" % i, "127.0.0.1:%d" % (8000 + i),
                  control=False)
        (acked if r.rc == 0 else errors).append((i, r))
    for i in range(10):
        put(i)
    a.kill()
    for i in range(10, 25):
        put(i)
    check(not errors, "every write acknowledged, through the other origin: %r" % errors[:2])
    seq = max(r.json()["seq"] for _, r in acked)
    su.wait_converged(b, [e])
    st = e.status()
    eq(st["seq"], seq, "the edge at the last acknowledged seq")
    eq(st["dynos"], 25, "every acknowledged change on the edge")
    eq(st["snapshots"], snapshots, "no full resync")
    a.start()
    eq(wait_same([a, b])[0], seq, "the killed origin resumes at the common head")


def etcd_put(cluster, i, key, value):
    """A put straight to member i; True, or False when etcd refuses it for want of space."""
    import base64
    import urllib.error
    body = {"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}
    try:
        eu._post(cluster.members[i].url, "/v3/kv/put", body, timeout=T(5))
        return True
    except urllib.error.HTTPError as e:
        if b"database space exceeded" in e.read():
            return False
        raise


def etcd_delete_prefix(cluster, prefix):
    import base64
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    eu._post(cluster.members[0].url, "/v3/kv/deleterange",
             {"key": base64.b64encode(prefix).decode(),
              "range_end": base64.b64encode(end).decode()}, timeout=T(5))


def compactor_pair(env):
    """One etcd member and two origins with a 2 s compactor lease, once one holds it: returns
    (cluster, the origins' extra flags, origin-a, origin-b, the holder, the other)."""
    c = eu.EtcdCluster(env, 1)
    extra = ["--compact-after", "2000", "--etcd-lease-ttl", "2s"]
    a = origin(env, c, "origin-a", extra=extra)
    b = origin(env, c, "origin-b", extra=extra)
    holder = wait_for(lambda: next((o for o in (a, b) if o.status()["etcd_compactor_self"]),
                                   None), T(15), "one origin to become the compactor")
    return c, extra, a, b, holder, (b if holder is a else a)


def test_one_compactor_at_a_time(env):
    """Two origins: one holds P/compactor (by its lease) and uploads the snapshots, the other
    compacts only locally and says who the compactor is. The holder SIGKILLed, the other takes
    the role once the lease expires and the snapshots go on."""
    c, extra, a, b, holder, other = compactor_pair(env)
    wait_for(lambda: other.status()["etcd_compactor"] == holder.name, T(15),
             "the other origin to name the compactor")
    eq(other.status()["etcd_compactor_self"], False, "only one compactor")
    a.apply(app_changes("churn", 5))
    n = 0

    def churn(until):
        nonlocal n
        n += 1
        o = (a, b)[n % 2] if holder.proc.alive() else other
        o.apply([ht.ch_dyno("churn", "web.%d" % (n % 5), "127.0.0.1:%d" % (6000 + n))])
        return until()
    wait_for(lambda: churn(lambda: holder.status()["etcd_snapshots"] >= 3), T(60),
             "the compactor to install snapshots", interval=0.05)
    st = other.status()
    check(st["snapshot_seq"] > 0, "the other origin compacted locally too: %r" % st)
    eq(st["etcd_snapshots"], 0, "but uploaded nothing")
    eq(st["etcd_compactor_self"], False, "and never held the role")
    holder.kill()
    wait_for(lambda: other.status()["etcd_compactor_self"], T(20),
             "the other origin to take over once the lease expired")
    eq(other.status()["etcd_compactor"], other.name, "it names itself")
    wait_for(lambda: churn(lambda: other.status()["etcd_snapshots"] >= 2), T(60),
             "snapshots to go on through the new compactor", interval=0.05)
    d = origin(env, c, "origin-d", extra=extra)
    eq(wait_same([other, d])[0], other.status()["seq"],
       "an origin started now loads the new compactor's snapshot and follows")
    wait_for(lambda: d.status()["etcd_compactor"] == other.name, T(15),
             "the new origin to name the compactor")
    # P/compactor deleted under the holder (an operator): it notices, and one origin claims it.
    etcd_delete_prefix(c, b"/hermod/compactor")
    wait_for(lambda: "no longer the compactor" in other.proc.stderr(), T(15),
             "the holder to notice its key is gone")

    def one_holder():
        sts = [o.status() for o in (other, d)]
        holders = [o.name for o, s in zip((other, d), sts) if s["etcd_compactor_self"]]
        return len(holders) == 1 and all(s["etcd_compactor"] == holders[0] for s in sts)
    wait_for(one_holder, T(15), "exactly one compactor again, named by both")


def test_frozen_compactor_steps_down(env):
    """The compactor frozen (SIGSTOP) longer than its lease: the other origin takes the role;
    woken, the old holder learns its lease is gone, steps down, and uploads nothing more."""
    c, extra, a, b, holder, other = compactor_pair(env)
    holder.proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: other.status()["etcd_compactor_self"], T(20),
             "the other origin to take over from the frozen one")
    holder.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: "no longer the compactor" in holder.proc.stderr(), T(15),
             "the woken origin to step down")
    eq(holder.status()["etcd_compactor_self"], False, "it is not the compactor")
    wait_for(lambda: holder.status()["etcd_compactor"] == other.name, T(15),
             "it names the new one")
    other.apply(app_changes("churn", 5))
    base = holder.status()["etcd_snapshots"]
    n = 0

    def churn():
        nonlocal n
        n += 1
        (a, b)[n % 2].apply([ht.ch_dyno("churn", "web.%d" % (n % 5),
                                        "127.0.0.1:%d" % (6000 + n))])
        return other.status()["etcd_snapshots"] >= 2
    wait_for(churn, T(60), "snapshots through the new compactor", interval=0.05)
    eq(holder.status()["etcd_snapshots"], base, "none through the old one")


def test_defragments_one_member_at_a_time(env):
    """History left by churn, once compacted, leaves a member's file mostly free pages: the
    compactor defragments each member of three, one at a time and the leader last, and the
    files shrink. Counted in status."""
    c = eu.EtcdCluster(env, 3)
    big = b"x" * 65536
    # Puts until every member's file holds 3 MiB of history: how much a member's file has
    # grown after a given number of puts depends on when its backend last committed.
    before = [0, 0, 0]
    for i in range(1024):
        check(etcd_put(c, 0, b"/churn/key", big), "put %d" % i)
        if i >= 48 and i % 8 == 0:
            before = [int(c.status(k)["dbSize"]) for k in range(3)]
            if all(s >= 3 << 20 for s in before):
                break
    check(all(s >= 3 << 20 for s in before), "the files grew: %r" % before)
    a = origin(env, c, "origin-a", extra=["--etcd-compact-every", "1s", "--etcd-defrag-every",
                                          "1s", "--etcd-defrag-min", "1MiB"])
    n = 0

    def defragmented():
        # The churn goes on (a member counts compacted pages free at its next write).
        nonlocal n
        n += 1
        a.apply([ht.ch_app("app%d" % n)])
        return a.status()["etcd_defrags"] >= 3
    wait_for(defragmented, T(60), "three defragmentations", interval=0.2)
    after = [int(c.status(i)["dbSize"]) for i in range(3)]
    check(all(x * 2 < y for x, y in zip(after, before)),
          "every member's file shrank: %r -> %r" % (before, after))
    lines = [ln for ln in a.proc.stderr().splitlines() if "etcd: defragmented" in ln][:3]
    eq(len(lines), 3, "one line per member")
    leader = c.members[c.leader_index()].url
    check(leader in lines[2] and all(leader not in ln for ln in lines[:2]),
          "followers first, the leader last: %r (leader %s)" % (lines, leader))
    eq(a.status()["etcd_defrags"], 3, "and no member again while its file stays small")


def test_nospace_refused_then_recovered(env):
    """etcd over its quota raises NOSPACE and refuses writes: the origin says so in status
    (store_error with the reason), refuses requests with it (hermodctl exits 1), and does not
    disarm while live data still fills the quota. Once that data is deleted, the compactor
    compacts, defragments and disarms by itself, writes are acknowledged again, and nothing
    acknowledged before is lost."""
    # The origin is told a quota of 6 MiB (disarm under 5.4 MiB) for etcd's 8 MiB, so that the
    # junk left in place (over 6 MiB whenever etcd refuses, however fragmented its file was)
    # surely stays over what the origin disarms at.
    c = eu.EtcdCluster(env, 1, extra_args=["--quota-backend-bytes", str(8 << 20)])
    a = origin(env, c, "origin-a", extra=["--etcd-quota", "6MiB", "--etcd-compact-every", "1s",
                                          "--etcd-lease-ttl", "2s"])
    wait_for(lambda: a.status()["etcd_compactor_self"], T(15), "the origin to be the compactor")
    seqs = [a.apply(app_changes("before%d" % i, 2)) for i in range(3)]
    big = b"y" * 65536
    i = 0
    while etcd_put(c, 0, b"/other/%05d" % i, big):
        i += 1
        check(i < 1000, "etcd refuses writes beyond its quota")
    wait_for(lambda: a.status()["etcd_alarm"] == "NOSPACE", T(15), "the origin to see NOSPACE")
    st = a.status()
    check(st["stale"] and "NOSPACE" in (st["store_error"] or ""), "status says why: %r" % st)
    r = a.ctl("--timeout", "2s", "--reply-timeout", "%ds" % int(T(10)), "--json", "apply", "-",
              input=json.dumps({"changes": app_changes("during", 1)}).encode())
    eq(r.rc, 1, "refused: %r" % (r,))
    check("NOSPACE" in r.err + r.out, "with the reason: %r" % (r,))
    wait_for(lambda: "live data fills it" in a.proc.stderr(), T(30),
             "a recovery that finds the quota still full")
    eq(a.status()["etcd_alarm"], "NOSPACE", "not disarmed while live data fills the quota")
    eq(a.status()["seq"], seqs[-1], "no seq assigned meanwhile")
    etcd_delete_prefix(c, b"/other/")
    wait_for(lambda: a.status()["etcd_alarm"] is None and not a.status()["stale"], T(30),
             "the compactor to compact, defragment and disarm")
    st = a.status()
    check(st["etcd_disarms"] >= 1 and st["etcd_defrags"] >= 1, "counted: %r" % st)
    check(int(c.status(0)["dbSize"]) < 4 << 20, "the file shrank: %r" % c.status(0))
    eq(a.apply(app_changes("after", 1)), seqs[-1] + 1, "writes acknowledged again")
    d = json.loads(a.ctl("--admin", a.admin, "--json", "dump", control=False).out)
    names = sorted(x["app"] for x in d["apps"])
    eq(names, ["after", "before0", "before1", "before2"], "nothing acknowledged lost")
    b = origin(env, c, "origin-b")
    eq(wait_same([a, b])[0], seqs[-1] + 1, "a new origin reads the same history from etcd")


def stage_keys(cluster):
    """{stage id: {key suffix: mod_revision}} of every key under /hermod/stage/ (keys only)."""
    import base64
    prefix = b"/hermod/stage/"
    r = eu._post(cluster.members[0].url, "/v3/kv/range",
                 {"key": base64.b64encode(prefix).decode(),
                  "range_end": base64.b64encode(prefix[:-1] + b"0").decode(),
                  "keys_only": True}, timeout=T(5))
    out = {}
    for kv in r.get("kvs", []):
        sid, _, rest = base64.b64decode(kv["key"])[len(prefix):].decode().partition("/")
        out.setdefault(sid, {})[rest] = int(kv["mod_revision"])
    return out


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_garbage_stages_collected(env):
    """A stage left by an origin SIGKILLed mid-staging is deleted by the compactor once it is a
    period old, while another origin's stage, written between every two collections, and a
    committed staged batch whose log entry is retained stay whole; a stage collected while its
    origin was stopped is never committed: that origin's commit fails, it stages again, and the
    batch reaches the other origin whole."""
    c = eu.EtcdCluster(env, 1)
    extra = ["--etcd-compact-every", "1s", "--etcd-lease-ttl", "2s"]
    gc = env.path("gc-limit")  # how many collections the compactor may have started
    write_file(gc, "0")
    a = origin(env, c, "origin-a", extra=extra, proc_env={"HM_TEST_ETCD_GC_LIMIT": gc})
    wait_for(lambda: a.status()["etcd_compactor_self"], T(15), "origin-a to be the compactor")

    def big(app, n):
        return [ht.ch_app(app)] + [
            ht.ch_dyno(app, "web.%d" % i, "10.%d.%d.%d:%d" % (i >> 16, (i >> 8) & 255, i & 255,
                                                              1000 + i % 5000))
            for i in range(n)]
    a.apply(big("kept", 40000), timeout=T(120))
    kept = stage_keys(c)
    eq(len(kept), 1, "the committed batch's stage: %r" % kept)
    kept_id, kept_keys = next(iter(kept.items()))
    check("meta" in kept_keys, "marked committed: %r" % kept_keys)

    def staging(name, limit, app, n, reply_timeout):
        lim = env.path("%s-stage-limit" % name)
        write_file(lim, str(limit))
        o = origin(env, c, name, extra=extra,
                   proc_env={"HM_TEST_ETCD_STAGE_LIMIT": lim, "HM_TEST_ETCD_GC_LIMIT": gc})
        out = {}

        def run():
            try:
                out["r"] = o.ctl("--reply-timeout", reply_timeout, "--json", "apply", "-",
                                 input=json.dumps({"changes": big(app, n)}).encode(),
                                 timeout=T(600))
            except BaseException as e:  # the origin SIGKILLed under it
                out["r"] = e
        t = threading.Thread(target=run)
        t.start()

        def stage():
            ids = [i for i, k in stage_keys(c).items() if i != kept_id and
                   i not in others and len(k) >= limit]
            return ids[0] if len(ids) == 1 else None
        return o, lim, t, out, wait_for(stage, T(120), "%s to stage %d chunks" % (name, limit))
    others = set()
    b, _, tb, _, dead = staging("origin-b", 2, "dead", 100000, "2s")
    b.kill()
    tb.join()
    others.add(dead)
    k = 1
    cc, climit, tc, cout, live = staging("origin-c", k, "live", 300000, "600s")
    # One collection at a time; origin-c writes a chunk between every two: its stage is never
    # a period old, the killed origin's soon is.
    while dead in stage_keys(c):
        check(k < 9, "origin-b's stage collected before origin-c ran out of chunks: %r" %
              stage_keys(c))
        k += 1
        write_file(climit, str(k))
        wait_for(lambda: len(stage_keys(c).get(live, {})) >= k, T(30), "origin-c's chunk")
        n = a.status()["etcd_stage_scans"]
        write_file(gc, str(n + 1))
        wait_for(lambda: a.status()["etcd_stage_scans"] == n + 1, T(30), "a collection")
    st = stage_keys(c)
    eq(sorted(st[live]), ["%08d" % i for i in range(k)], "origin-c's live stage whole, staging")
    eq(st[kept_id], kept_keys, "the committed batch's stage untouched")
    check(a.status()["etcd_stages_collected"] >= 1, "counted: %r" % a.status())
    # origin-c stopped: its stage ages and is collected; let go, its commit cannot use it.
    write_file(gc, "1000000")
    wait_for(lambda: live not in stage_keys(c), T(60), "origin-c's stopped stage collected")
    write_file(gc, "0")
    os.unlink(climit)
    tc.join()
    r = cout["r"]
    eq(r.rc, 0, "origin-c's batch acknowledged: %r" % (r,))
    seq = r.json()["seq"]
    eq(wait_same([a, cc], seq)[0], seq, "the other origin learned it")
    eq(a.status()["dynos"], 40000 + 300000, "whole, with the committed batch before it")
    st = stage_keys(c)
    eq(st[kept_id], kept_keys, "the committed batch's stage still untouched")
    check(dead not in st, "origin-b's garbage gone")


if __name__ == "__main__":
    if not eu.available():
        print("# test_origin_etcd.py: SKIP: etcd is not installed", flush=True)
        sys.exit(77)
    ht.run(globals())

"""Group commit of origins on etcd (issue 13, docs/store-etcd.md "Group commit"): requests that
arrive while an origin's transaction is in flight are validated together when it settles, each
as its own batch with its own seq, and committed by one etcd transaction.

The tests make groups and conflicts without depending on timing: in test builds, while the file
HM_TEST_ETCD_HOLD names exists, an origin holds each group before sending it (status
etcd_group_inflight), so the requests sent meanwhile queue behind it (status store_queued), and
another origin can commit first; while HM_TEST_ETCD_LOSE_ANSWER's file exists, a successful
commit's answer is taken as lost (an unknown outcome). Requests go out on raw SP REQ connections, many at once, and
each answer (CTL_REP) is decoded for its status and seq. Without etcd the script exits 77.
"""

import json
import os
import socket
import struct
import sys
import uuid

import etcd_util as eu
import hermod_test as ht
import syncd_util as su
from etcd_util import wait_same
from hermod_test import T, check, eq, wait_for


def mp_unpack(data, i=0):
    """(value, next offset) of the msgpack value at data[i] (the types CTL_REP uses)."""
    b = data[i]
    if b <= 0x7f:
        return b, i + 1
    if b >= 0xe0:
        return b - 0x100, i + 1
    if 0x90 <= b <= 0x9f:
        out, i = [], i + 1
        for _ in range(b & 0x0f):
            v, i = mp_unpack(data, i)
            out.append(v)
        return out, i
    if 0xa0 <= b <= 0xbf:
        n = b & 0x1f
        return data[i + 1:i + 1 + n].decode(errors="replace"), i + 1 + n
    if b == 0xc0:
        return None, i + 1
    if b in (0xc2, 0xc3):
        return b == 0xc3, i + 1
    fixed = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q", 0xd0: ">b", 0xd1: ">h",
             0xd2: ">i", 0xd3: ">q"}
    if b in fixed:
        n = struct.calcsize(fixed[b])
        return struct.unpack(fixed[b], data[i + 1:i + 1 + n])[0], i + 1 + n
    lens = {0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4}
    if b in lens:
        k = lens[b]
        n = int.from_bytes(data[i + 1:i + 1 + k], "big")
        v = data[i + 1 + k:i + 1 + k + n]
        return (v if b <= 0xc6 else v.decode(errors="replace")), i + 1 + k + n
    raise ValueError("msgpack type 0x%02x" % b)


ACK, ERROR = 0, 2


class Rep:
    """A decoded CTL_REP: [8, version, req_id, status, epoch, seq, code, index, reason]."""

    def __init__(self, raw):
        check(raw is not None and raw[:4] == su.REQ_ID, "a reply echoing the REQ id: %r" %
              (raw[:8] if raw else raw))
        v, _ = mp_unpack(raw[4:])
        check(isinstance(v, list) and len(v) == 9 and v[0] == su.MSG_CTL_REP,
              "a CTL_REP: %r" % (v,))
        self.req_id, self.status, self.epoch, self.seq = v[2], v[3], v[4], v[5]
        self.code, self.index, self.reason = v[6], v[7], v[8]

    def __repr__(self):
        return "<rep status=%d seq=%d code=%d index=%d reason=%r>" % (
            self.status, self.seq, self.code, self.index, self.reason)


def w_app(app):
    return [1, app, False, False, 0]


def w_dyno(app, dyno, port):
    return [5, app, dyno, "127.0.0.1:%d" % port, 1]


class Pending:
    """One request sent on its own SP connection; reply() waits for its answer."""

    def __init__(self, origin, changes):
        self.id = uuid.uuid4().bytes
        self.sock = su.sp_connect(su.port_of(origin.dial_control), su.PROTO_REQ)
        su.sp_send(self.sock, su.mp_ctl_req(self.id, changes), header=su.REQ_ID)

    def reply(self):
        try:
            r = Rep(su.sp_recv(self.sock, timeout=T(30)))
        except socket.timeout:
            ht.fail("no answer to a request within %.0f s" % T(30))
        finally:
            self.sock.close()
        eq(r.req_id, self.id, "the answer names its request")
        return r


def origin(env, cluster, name, hold, lose=None):
    penv = {"HM_TEST_ETCD_HOLD": hold}
    if lose:
        penv["HM_TEST_ETCD_LOSE_ANSWER"] = lose
    return eu.origin(env, cluster, name, proc_env=penv)


def wait_queued(o, inflight, queued):
    """Waits until o holds a group of inflight batches and queued requests behind it."""
    def ok():
        st = o.status()
        return st if (st["etcd_group_inflight"], st["store_queued"]) == (inflight, queued) \
            else None
    return wait_for(ok, T(15), "%s to hold %d and queue %d" % (o.name, inflight, queued))


def wait_held(o, n):
    """Waits until o holds a group and queues the rest of n requests behind it."""
    def ok():
        st = o.status()
        k, q = st["etcd_group_inflight"], st["store_queued"]
        return st if k >= 1 and k + q == n else None
    return wait_for(ok, T(15), "%s to hold a group and queue the rest of %d" % (o.name, n))


def dump_apps(o):
    d = json.loads(o.ctl("--admin", o.admin, "--json", "dump", control=False).out)
    return {a["app"]: a for a in d["apps"]}


def test_group_conflict_and_a_bad_request(env):
    """A group held on origin B while origin A commits loses its compare: its request is
    validated again with everything queued behind it, as one group of several batches in one
    txn, each answered with its own seq in order; a bad request inside the group gets its reason
    and the others commit (the ones after it validated against the state without it)."""
    c = eu.EtcdCluster(env, 1)
    hold = env.path("hold")
    a = origin(env, c, "origin-a", env.path("hold-never"))
    b = origin(env, c, "origin-b", hold)
    e = su.Edge(env, a, name="edge-both", publish=a.dial_publish + "," + b.dial_publish,
                sync=a.dial_sync + "," + b.dial_sync)
    wait_same([a, b])
    open(hold, "w").close()
    reqs = [Pending(b, [w_app("g0"), w_dyno("g0", "web.1", 7001)])]
    wait_queued(b, 1, 0)
    for i, changes in enumerate([
            [w_app("g1")],
            [w_app("gbad"), w_dyno("nosuch", "web.1", 7002)],  # change 1 fails
            [w_dyno("gbad", "web.1", 7003)],  # gbad never came: fails too
            [w_dyno("g1", "web.1", 7004)],  # on top of g1, in the same group
            [w_app("g5")]]):
        reqs.append(Pending(b, changes))
        wait_queued(b, 1, i + 1)
    win = a.apply([ht.ch_app("winner")])  # takes the seq B's held group was numbered
    os.unlink(hold)
    reps = [r.reply() for r in reqs]
    for k in (0, 1, 4, 5):
        eq(reps[k].status, ACK, "request %d acknowledged: %r" % (k, reps[k]))
    eq([reps[k].seq for k in (0, 1, 4, 5)], [win + 1, win + 2, win + 3, win + 4],
       "each answer its own seq, after the winner's, in queue order")
    eq((reps[2].status, reps[2].index), (ERROR, 1), "the bad request: %r" % reps[2])
    check("nosuch" in reps[2].reason, "says why: %r" % reps[2])
    eq((reps[3].status, reps[3].index), (ERROR, 0), "no app gbad for it: %r" % reps[3])
    st = b.status()
    eq(st["store_conflicts"], 1, "the held group lost its compare once")
    check(st["etcd_group_max"] >= 4 and st["etcd_batches"] > st["etcd_commits"],
          "several batches in one txn: %r" % {k: st[k] for k in (
              "etcd_group_max", "etcd_batches", "etcd_commits", "etcd_group_hist")})
    wait_same([a, b], win + 4)
    su.wait_converged(b, [e])
    apps = dump_apps(a)
    for app in ("g0", "g1", "g5", "winner"):
        check(app in apps, "%s on the origins" % app)
    check("gbad" not in apps, "nothing of the bad request")
    eq(e.status()["dynos"], 2, "g0/web.1 and g1/web.1 on the edge following both")


def test_group_with_an_unknown_outcome(env):
    """A group's commit whose answer is lost after etcd applied it (test hook) is sent again;
    the retry fails its compare and finds the group's commit id at its first seq: every request
    of the group is answered ACK with its seq, once, and nothing is committed twice."""
    c = eu.EtcdCluster(env, 1)
    hold, lose = env.path("hold"), env.path("lose")
    a = origin(env, c, "origin-a", hold, lose)
    b = origin(env, c, "origin-b", env.path("hold-never"))
    start = wait_same([a, b])[0]
    open(hold, "w").close()
    reqs = [Pending(a, [w_app("u0")])]
    wait_queued(a, 1, 0)
    for i in range(1, 5):
        reqs.append(Pending(a, [w_app("u%d" % i), w_dyno("u%d" % i, "web.1", 7100 + i)]))
        wait_queued(a, 1, i)
    open(lose, "w").close()
    os.unlink(hold)
    reps = [r.reply() for r in reqs]
    os.unlink(lose)
    eq([(r.status, r.seq) for r in reps], [(ACK, start + 1 + i) for i in range(5)],
       "every request acknowledged with its seq")
    st = a.status()
    check(st["etcd_retries"] >= 2 and st["etcd_group_max"] >= 4,
          "both groups resent and resolved by their commit id: %r" % {
              k: st[k] for k in ("etcd_retries", "etcd_group_max", "etcd_commits")})
    eq(wait_same([a, b])[0], start + 5, "nothing committed twice")
    eq(b.status()["dynos"], 4, "the other origin has every change once")
    eq(a.apply([ht.ch_app("after")]), start + 6, "and the next seq follows")


def burst(origins, per, tag, rnd):
    """per requests to each origin at once; returns [(origin, app, Pending)]."""
    out = []
    for o in origins:
        for i in range(per):
            app = "%s%d-%s-%d" % (tag, rnd, o.name[-1], i)
            out.append((o, app, Pending(o, [w_app(app), w_dyno(app, "web.1", 9000 + i)])))
    return out


def test_concurrent_writers_groups_one_numbering(env):
    """Two origins each take 16 requests at once, round after round: groups form on both (and,
    when both hold a group validated on the same head, exactly one wins and the other validates
    again), every request is acknowledged with its own seq, the seqs are one numbering with no
    hole, and an edge following both origins holds every acknowledged change."""
    c = eu.EtcdCluster(env, 1)
    hold = env.path("hold")
    a = origin(env, c, "origin-a", hold)
    b = origin(env, c, "origin-b", hold)
    e = su.Edge(env, a, name="edge-both", publish=a.dial_publish + "," + b.dial_publish,
                sync=a.dial_sync + "," + b.dial_sync)
    start = wait_same([a, b])[0]
    acked = {}
    per, held_rounds, free_rounds = 16, 3, 3
    for rnd in range(held_rounds + free_rounds):
        held = rnd < held_rounds
        if held:
            wait_same([a, b])
            open(hold, "w").close()
        sent = burst([a, b], per, "c", rnd)
        if held:
            # Each origin holds its first group: usually the first request alone, but on a
            # slow machine several can arrive before the origin takes the first (a group of k
            # held, per - k queued behind it). Either way all per requests are held back.
            for o in (a, b):
                wait_held(o, per)
            os.unlink(hold)
        for o, app, p in sent:
            r = p.reply()
            eq(r.status, ACK, "%s via %s: %r" % (app, o.name, r))
            acked[app] = r.seq
    seqs = sorted(acked.values())
    eq(len(set(seqs)), len(seqs), "every acknowledged request its own seq")
    head = wait_same([a, b])[0]
    eq(seqs, list(range(start + 1, head + 1)), "one numbering, no seq skipped or shared")
    sa, sb = a.status(), b.status()
    conflicts = sa["store_conflicts"] + sb["store_conflicts"]
    check(conflicts >= held_rounds, "each held round made a conflict: %d" % conflicts)
    batches = sa["etcd_batches"] + sb["etcd_batches"]
    commits = sa["etcd_commits"] + sb["etcd_commits"]
    # A held round makes groups of k and per - k on each origin: one of them is >= per / 2.
    check(max(sa["etcd_group_max"], sb["etcd_group_max"]) >= per // 2 and batches > commits,
          "groups formed: %d batches in %d txns, hist %r %r" % (
              batches, commits, sa["etcd_group_hist"], sb["etcd_group_hist"]))
    print("# %d batches in %d txns, %d conflicts; hist %r %r" % (
        batches, commits, conflicts, sa["etcd_group_hist"], sb["etcd_group_hist"]))
    su.wait_converged(b, [e])
    st = e.status()
    eq(st["seq"], head, "the edge at the head")
    eq(st["dynos"], len(acked), "every acknowledged change on the edge following both")
    apps = dump_apps(b)
    check(all(app in apps for app in acked), "every acknowledged app on the origins")


def test_group_bounded_by_bytes_with_a_staged_batch(env):
    """Requests queued behind a held group are committed in txns bounded by etcd's request
    size: large ones split the queue into several txns, and one over the inline limit is staged
    within its group; all of them are committed, once each."""
    c = eu.EtcdCluster(env, 1)
    hold = env.path("hold")
    a = origin(env, c, "origin-a", hold)
    b = origin(env, c, "origin-b", env.path("hold-never"))
    wait_same([a, b])
    open(hold, "w").close()
    reqs = [Pending(a, [w_app("first")])]
    wait_queued(a, 1, 0)
    sizes = [2500] * 10 + [15000] + [10] * 4  # ~100 KiB records, one of ~560 KiB, small ones
    for i, n in enumerate(sizes):
        app = "big%d" % i
        reqs.append(Pending(a, [w_app(app)] + [
            w_dyno(app, "webworker.%05d" % k, 1000 + k % 5000) for k in range(n)]))
        wait_queued(a, 1, i + 1)
    before = a.status()
    os.unlink(hold)
    reps = [r.reply() for r in reqs]
    check(all(r.status == ACK for r in reps), "all acknowledged: %r" % [
        r for r in reps if r.status != ACK][:2])
    eq([r.seq for r in reps], list(range(reps[0].seq, reps[0].seq + len(reps))),
       "consecutive seqs in queue order")
    st = a.status()
    txns = st["etcd_commits"] - before["etcd_commits"]
    check(3 <= txns < len(reps), "the queue split by bytes into a few txns: %d for %d batches,"
          " hist %r" % (txns, len(reps), st["etcd_group_hist"]))
    eq(st["etcd_staged"] - before["etcd_staged"], 1, "the large record staged")
    wait_same([a, b], reps[-1].seq)
    eq(b.status()["dynos"], sum(sizes), "every dyno on the other origin")


if __name__ == "__main__":
    if not eu.available():
        print("# test_origin_etcd_group.py: SKIP: etcd is not installed", flush=True)
        sys.exit(77)
    ht.run(globals())

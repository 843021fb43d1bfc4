"""Several origins (issue 13; docs/sync.md, "Several origins"): an edge given URL lists follows
every origin, applies each (epoch, seq) once, loses nothing when one origin goes, catches up
from another when one cannot serve, resyncs only when none can, and refuses origins that
disagree; hermodctl given several control URLs moves to the next one when one cannot be reached
or dies mid-request, and a request retried so is applied once.

Origins sharing one etcd store are the real setting (e13a's store). Until then the pairs here
share state in other ways: two paths (TCP forwarders) to one origin, which a test can take away
as an origin dies; or two origins started from one data directory and fed the same changes,
which number and digest them alike.
"""

import json
import shutil
import subprocess

import hermod_test as ht
from hermod_test import T, check, eq, wait_for
from syncd_util import (CuttingProxy, Edge, Forwarder, Origin, nng_leak_suppression,
                        origin_head, port_of, wait_converged)


def paths(env, o):
    """Two origins' worth of (publish, sync) paths to one origin."""
    return [(Forwarder(env, port_of(o.publish)), Forwarder(env, port_of(o.sync)))
            for _ in range(2)]


def two_path_edge(env, o, pairs, name="edge", extra=()):
    return Edge(env, o, name=name, publish=",".join(p.url for p, _ in pairs),
                sync=",".join(s.url for _, s in pairs), extra=list(extra))


def tls_two_path_edge(env):
    """An origin with mutual TLS, two paths to it, and an edge that follows both and has app
    "web" (peers dial the origin by its certificate's name). Returns (origin, pairs, edge)."""
    from pki import cluster_pki
    o = Origin(env, pki=cluster_pki(env.path("pki")))
    pairs = paths(env, o)
    e = Edge(env, o, publish=",".join("tls+tcp://localhost:%d" % p.port for p, _ in pairs),
             sync=",".join("tls+tcp://localhost:%d" % s.port for _, s in pairs))
    o.apply([{"op": "app.put", "app": "web"}])
    wait_converged(o, [e])
    return o, pairs, e


def dyno_changes(app, first, n):
    return [{"op": "dyno.put", "app": app, "dyno": "web.%d" % i,
             "addr": "10.0.%d.%d:80" % (i >> 8, i & 255)} for i in range(first, first + n)]


def both_heard(e):
    st = e.status()
    return all(x["connected"] and x["last_heartbeat_ms"] is not None for x in st["origins"])


def test_edge_follows_two_origins_and_drops_the_copies(env):
    o = Origin(env)
    pairs = paths(env, o)
    e = two_path_edge(env, o, pairs)
    wait_for(lambda: both_heard(e), T(10), "the edge to hear both origins")
    o.apply([{"op": "app.put", "app": "web"}])
    for i in range(40):
        o.apply(dyno_changes("web", i, 1))
    wait_converged(o, [e])
    st = e.status()
    eq([x["url"] for x in st["origins"]], [p.url for p, _ in pairs], "origins in status")
    eq([x["sync"] for x in st["origins"]], [s.url for _, s in pairs], "their sync URLs")
    eq(st["batches_applied"], 41, "each batch applied once, though it came twice")
    eq(st["snapshots"], 1, "only the first join loads a snapshot")
    eq(st["origin_conflicts"], 0, "origins that agree are never refused")
    eq([x["refused"] for x in st["origins"]], [False, False], "no origin refused")
    wait_for(lambda: [x["seq"] for x in e.status()["origins"]] == [41, 41], T(5),
             "both origins' heartbeats at seq 41")


def test_losing_one_origin_costs_nothing(env):
    o = Origin(env)
    pairs = paths(env, o)
    e = two_path_edge(env, o, pairs)
    o.apply([{"op": "app.put", "app": "web"}])
    wait_converged(o, [e])
    wait_for(lambda: both_heard(e), T(10), "the edge to hear both origins")
    before = e.status()
    # The first origin (the one sync requests go to) dies: publish and sync paths alike.
    for f in pairs[0]:
        f.kill()
    wait_for(lambda: not e.status()["origins"][0]["connected"], T(10),
             "the edge to see the first origin gone")
    for i in range(20):
        o.apply(dyno_changes("web", i, 1))
    wait_converged(o, [e])
    st = e.status()
    eq(st["snapshots"], before["snapshots"], "no full resync when one origin goes")
    eq(st["batches_applied"] - before["batches_applied"], 20, "every batch, once")
    check(not st["stale"], "the other origin's heartbeats keep the edge current: %s" % st)
    # It comes back: followed again, still nothing reloaded.
    for f in pairs[0]:
        f.start()
    wait_for(lambda: both_heard(e) and e.status()["origins"][0]["last_heartbeat_ms"] < 1500,
             T(10), "the edge to hear the first origin again")
    o.apply(dyno_changes("web", 100, 1))
    wait_converged(o, [e])
    eq(e.status()["snapshots"], before["snapshots"], "no full resync when it returns")


def test_a_new_edge_joins_through_the_origin_that_is_up(env):
    o = Origin(env)
    pairs = paths(env, o)
    o.apply([{"op": "app.put", "app": "web"}])
    for f in pairs[0]:
        f.kill()  # the first origin in the list is down from the start
    e = two_path_edge(env, o, pairs)
    wait_converged(o, [e])
    st = e.status()
    eq(st["sync_errors"], 0, "the sync requests went to the origin whose feed is up")
    eq([x["connected"] for x in st["origins"]], [False, True], "which origins are connected")


def test_two_origins_over_mutual_tls(env):
    o, pairs, e = tls_two_path_edge(env)
    wait_for(lambda: both_heard(e), T(10), "the edge to hear both origins over TLS")
    pairs[1][0].kill()
    e.proc.send_signal(1)  # SIGHUP: every dialer gets the certificates again
    wait_for(lambda: e.status()["tls_reloads"] == 1, T(10), "the edge to reload its certificates")
    eq(e.status()["tls_reload_errors"], 0, "reloaded on all four dialers")
    o.apply(dyno_changes("web", 0, 1))
    wait_converged(o, [e])
    st = e.status()
    check(st["tls"] and st["tls_handshake_failures"] == 0, "TLS with both origins: %s" % st)
    eq(st["snapshots"], 1, "no resync")


def test_reloads_while_dialers_redial(env):
    """100 SIGHUPs, each waited for, while the edge's dialers to a dead origin path keep redialing:
    every reload replaces the dialers' TLS configurations, which are retired rather than freed
    (nng 1.5.2 may be taking one for a connection: hm__tls_config_retire); the edge stays up, keeps
    following the live path and, under the sanitizers, frees every configuration at exit."""
    o, pairs, e = tls_two_path_edge(env)
    pairs[1][0].kill()
    pairs[1][1].kill()
    for i in range(1, 101):
        e.proc.send_signal(1)
        wait_for(lambda: e.status()["tls_reloads"] == i, T(10), "reload %d" % i)
    eq(e.status()["tls_reload_errors"], 0, "every reload applied")
    o.apply(dyno_changes("web", 0, 1))
    wait_converged(o, [e])
    e.proc.stop()


def test_catch_up_from_the_next_origin_when_one_cannot_serve(env):
    o = Origin(env)
    pairs = paths(env, o)
    e = two_path_edge(env, o, pairs)
    o.apply([{"op": "app.put", "app": "web"}])
    wait_converged(o, [e])
    e.proc.stop()
    for i in range(10):
        o.apply(dyno_changes("web", i, 1))
    # The first origin's sync socket is gone (its feed works, so it is asked first); the
    # second's feed is gone (its sync socket works).
    pairs[0][1].kill()
    pairs[1][0].kill()
    e.start()
    wait_converged(o, [e], T(20))
    st = e.status()
    eq(st["snapshots"], 0, "the resumed table is caught up, not reloaded")
    check(st["catchups"] >= 1 and st["sync_errors"] >= 1,
          "a catch-up after a failed sync request: %s" % st)
    eq([x["syncing"] for x in st["origins"]], [False, True], "sync moved to the second origin")


def twin_origins(env, extra2=()):
    """Two origins started from one data directory (one epoch, one cluster secret): fed the
    same changes in the same order, they number and digest them alike, as origins on one store
    do. Returns them with the names of their data directories."""
    o1 = Origin(env, name="o1")
    o1.stop()
    shutil.copytree(o1.data, env.path("o2-data"))
    o1.start()
    o2 = Origin(env, name="o2", data=env.path("o2-data"), extra=list(extra2))
    return o1, o2


def apply_both(origins, changes):
    seqs = [o.apply(changes) for o in origins]
    eq(len(set(seqs)), 1, "the twins number a batch alike")
    return seqs[0]


def compacted(o):
    st = o.status()
    return st["snapshot_seq"] == st["seq"]


def test_snapshot_answer_asks_the_other_origin_first(env):
    # o2 compacts after every batch and keeps one batch in memory; o1 keeps its whole journal.
    # An edge behind both is told SNAPSHOT by o2 and must get the batches from o1 instead of
    # reloading everything.
    small = ["--compact-after", "1", "--ring", "1"]
    o1, o2 = twin_origins(env, extra2=small)
    feed1 = Forwarder(env, port_of(o1.publish))
    e = Edge(env, o2, publish=",".join([o2.dial_publish, feed1.url]),
             sync=",".join([o2.dial_sync, o1.dial_sync]))
    apply_both([o1, o2], [{"op": "app.put", "app": "web"}])
    wait_converged(o1, [e])
    e.proc.stop()
    # From here o1's feed is cut, so that o2 (whose feed is up) is always asked first.
    feed1.kill()
    for i in range(5):
        apply_both([o1, o2], dyno_changes("web", i, 1))
    wait_for(lambda: compacted(o2), T(10), "o2 to compact its journal")
    # o1 is also one batch ahead of o2 (o2 learns it later, as an origin reading the store's
    # watch late would).
    o1.apply(dyno_changes("web", 10, 1))
    e.start()
    wait_converged(o1, [e], T(20))
    st = e.status()
    eq(st["snapshots"], 0, "no full resync while another origin holds the batches")
    eq(st["origin_conflicts"], 0, "twins agree")
    check("full resync" not in e.proc.stderr(), "no full resync in the log")
    # Now the edge is ahead of o2, which says SNAPSHOT to it for that reason alone.
    e.proc.stop()
    e.start()
    wait_converged(o1, [e], T(20))
    eq(e.status()["snapshots"], 0, "an origin behind the edge is no reason to resync")
    o2.apply(dyno_changes("web", 10, 1))
    eq(origin_head(o1), origin_head(o2), "the twins agree again")
    # Once no origin holds the batches (o1 compacts too), the edge does resync.
    e.proc.stop()
    apply_both([o1, o2], dyno_changes("web", 50, 1))
    o1.stop()
    o1.extra = small
    o1.start()
    apply_both([o1, o2], dyno_changes("web", 51, 1))
    wait_for(lambda: compacted(o1) and compacted(o2), T(10), "both origins to compact")
    e.start()
    wait_converged(o1, [e], T(20))
    eq(e.status()["snapshots"], 1, "a full resync once no origin can serve the gap")


def test_origins_that_disagree_are_refused(env):
    # Twins fed different changes at the same seq: one epoch, two digests.
    o1, o2 = twin_origins(env)
    e = Edge(env, o1, publish=",".join([o1.dial_publish, o2.dial_publish]),
             sync=",".join([o1.dial_sync, o2.dial_sync]), extra=["--stale-after", "1s"])
    wait_converged(o1, [e])
    wait_for(lambda: both_heard(e), T(10), "the edge to hear both origins")
    o1.apply([{"op": "app.put", "app": "one"}])
    o2.apply([{"op": "app.put", "app": "two"}])

    def refused():
        st = e.status()
        return st["origin_conflicts"] >= 1 and sum(x["refused"] for x in st["origins"]) == 1
    wait_for(refused, T(10), "the edge to refuse one of the two")
    st = e.status()
    kept = [o1, o2][[x["refused"] for x in st["origins"]].index(False)]
    wait_converged(kept, [e])
    check("the origins disagree" in e.proc.stderr(), "said loudly in the log")
    # A few heartbeats later it still follows the same one, without resyncs.
    snaps = e.status()["snapshots"]
    for i in range(3):
        kept.apply(dyno_changes("one" if kept is o1 else "two", i, 1))
    wait_converged(kept, [e])
    eq(e.status()["snapshots"], snaps, "no resync back and forth")

    # Another epoch: a fresh origin beside the one the edge follows.
    o3 = Origin(env, name="o3")
    o3.apply([{"op": "app.put", "app": "three"}])
    e2 = Edge(env, o1, name="edge2", publish=",".join([o1.dial_publish, o3.dial_publish]),
              sync=",".join([o1.dial_sync, o3.dial_sync]), extra=["--stale-after", "1s"])
    wait_for(lambda: sum(x["refused"] for x in e2.status()["origins"]) == 1, T(10),
             "the edge to refuse the origin of another epoch")
    refused = [x["refused"] for x in e2.status()["origins"]]
    kept, other = (o1, o3) if refused == [False, True] else (o3, o1)
    wait_converged(kept, [e2])
    eq(e2.status()["epoch"], kept.status()["epoch"], "it keeps the epoch it follows")
    # The origin it followed goes: after --stale-after, the other is followed (a new epoch).
    kept.kill()
    wait_converged(other, [e2], T(15))
    eq(e2.status()["epoch_changes"], 1, "counted as an epoch change")


def test_url_lists_are_bounded_and_checked(env):
    o = Origin(env)
    edge = ht.binary("hermod-syncd")
    ctl = ht.binary("hermodctl")
    many = ",".join("tcp://127.0.0.1:%d" % (20000 + i) for i in range(17))
    for argv, want in [
            ([edge, "edge", "--publish", o.publish + "," + o.publish, "--sync", o.sync],
             "twice"),
            ([edge, "edge", "--publish", o.publish + ",", "--sync", o.sync], "empty"),
            ([edge, "edge", "--publish", many, "--sync", many], "more than 16"),
            ([edge, "edge", "--publish", o.publish + ",tcp://127.0.0.1:1", "--sync", o.sync],
             "same order"),
            ([edge, "edge", "--publish", o.publish + ",nope", "--sync", o.sync + ",x"],
             "not an nng URL"),
            ([ctl, "--control", o.control + "," + o.control, "app", "put", "a"], "twice"),
            ([ctl, "--control", ",", "app", "put", "a"], "empty"),
            ([ctl, "--control", many, "app", "put", "a"], "more than 16")]:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(10))
        err = p.stderr.decode(errors="replace")
        eq(p.returncode, 2, "%s: exit status (%s)" % (argv[1:], err))
        check(want in err and len(err.strip().splitlines()) == 1,
              "%s: a one-line reason with %r, got %r" % (argv[1:], want, err))
    eq(o.status()["seq"], 0, "nothing was sent")


def control_list(env, urls):
    """hermodctl's environment for a --control list: a hermodctl that leaves a URL while its
    connection attempt is in flight closes that dialer, and libnng 1.5.2 then leaves the
    attempt's objects unreachable (an indirect leak whose frames are all inside libnng, seen
    1 run in ~3 under ASan), so these runs take nng_leak_suppression's."""
    return dict(nng_leak_suppression(env), HERMOD_CONTROL=urls)


def test_hermodctl_moves_to_the_next_control_url(env):
    o = Origin(env)
    dead = "tcp://127.0.0.1:%d" % ht.free_port()
    r = o.ctl("--json", "app", "put", "web", control=False,
              env=control_list(env, dead + "," + o.dial_control))
    eq(r.rc, 0, "the second URL takes the request (%r)" % r)
    eq(r.json()["seq"], 1, "seq")
    hole = env.blackhole()
    r = o.ctl("--json", "--timeout", "5s", "app", "put", "web2", control=False,
              env=control_list(env, "tcp://%s,%s" % (hole.addr, o.dial_control)))
    # The whole --timeout on the first URL would end in exit 3: it got a share of it.
    eq(r.rc, 0, "a URL that never connects is left for the next within --timeout (%r)" % r)
    r = o.ctl("app", "put", "web3", control=False,
              env=control_list(env, dead + ",tcp://127.0.0.1:%d" % ht.free_port()),
              timeout=T(30))
    eq(r.rc, 3, "no URL reachable (%r)" % r)


def test_a_retried_request_is_applied_once(env):
    o = Origin(env)
    # The origin commits, its answer never arrives, the connection drops: hermodctl sends the
    # request again (same id) to the next URL, the origin itself, which answers from its cache.
    cut = CuttingProxy(env, port_of(o.control))
    r = o.ctl("--json", "app", "put", "web", control=False,
              env=control_list(env, cut.url + "," + o.dial_control))
    eq(r.rc, 0, "acknowledged through the second URL (%r)" % r)
    check(cut.cut, "the first answer was cut")
    st = o.status()
    eq((r.json()["seq"], st["seq"], st["batches"], st["resent"]), (1, 1, 1, 1),
       "applied once, the retry answered with the original seq (seq, origin seq, batches, "
       "resent)")
    check("sending the request again" in r.err, "hermodctl says it moved on: %r" % r.err)
    # A three-part batch whose last answer is cut: the last part, sent again elsewhere, is
    # answered ACK from the cache.
    n = 40000
    changes = dyno_changes("web", 0, n)
    cut3 = CuttingProxy(env, port_of(o.control), cut=3)
    r = o.ctl("--json", "apply", "-", input=json.dumps({"changes": changes}).encode(),
              control=False, env=control_list(env, cut3.url + "," + o.dial_control))
    eq(r.rc, 0, "multi-part apply (%r)" % r)
    check(cut3.cut, "the last answer was cut")
    st = o.status()
    eq((r.json()["seq"], st["seq"], st["batches"], st["resent"]), (2, 2, 2, 2),
       "the batch applied once")
    eq(st["dynos"], n, "all of it")


if __name__ == "__main__":
    ht.run(globals())

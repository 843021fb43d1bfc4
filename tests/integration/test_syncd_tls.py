"""Mutual TLS between the origin, edges and hermodctl (issue 10, contract "Trust between nodes").

Real certificates made by the test (tests/integration/pki.py): a cluster CA with an origin
(serverAuth, DNS localhost), two edges and a control client (clientAuth); a separate control-plane
CA; another CA with an impostor origin; an expired edge certificate. What was found before:
tls+tcp:// URLs were accepted but no certificate could be given (every handshake failed, hermodctl
hung); a plain REQ peer on the sync port got every app, domain and dyno; a process on the origin's
port was taken as the origin.

* Every socket over TLS carries the cluster; peers without an acceptable certificate (none,
  another CA's, an expired one, plain SP bytes) get nothing and change nothing.
* An impostor origin (another CA's certificate, or an edge's own certificate, which lacks
  serverAuth) cannot feed an edge: it keeps its table and goes stale.
* A refusal that lasts is logged at once, then at most once a minute (it was each second); the
  notice that the origin is named by address is said once, not at each new dial.
* With --control-ca, an edge's certificate cannot publish.
* Start-up rules: tls+tcp:// without certificates, plaintext on a non-loopback address, a bad or
  expired certificate file: exit 2 with the reason.
* SIGHUP re-reads the certificates while changes flow: no connection dropped, no change lost, new
  handshakes present the new certificate; files that do not load change nothing.
* Port scans and floods of half-finished handshakes on every TLS port: listeners keep working;
  the watchdog probes TLS listeners with a real handshake (no false re-creations when idle).
* Edges stopped in the middle of their first handshakes do break TLS listeners now and then
  (nng #1518 over TLS): the watchdog re-creates them, and edges and hermodctl work again.
* A connection nng keeps though nothing gets through it any more (nng 1.5.2's TLS can leave
  one when its peer dies as a message arrives): hermodctl sends the part again on a new
  connection after 5 s (applied once); an edge re-dials its sync socket after --timeout.
"""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import types

import hermod_test as ht
from hermod_test import T, check, eq, wait_for
from pki import cluster_pki
from syncd_util import (PROTO_REQ, PROTO_SUB, Edge, Origin, StallingProxy, has_test_hooks,
                        nng_leak_suppression, origin_head, port_of, sp_header, wait_converged)


def pki_for(env):
    return cluster_pki(env.path("pki"))


def tls_connect(port, cert=None, timeout=None):
    """A TLS client on 127.0.0.1:port presenting cert (a pki.Cert, or None). Returns the
    SSLSocket once the handshake is done; raises ssl.SSLError / OSError if it fails."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert.crt, cert.key)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout or T(5))
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except Exception:
        raw.close()
        raise


def publisher_cert(port, cert):
    """The certificate the publish listener on port presents, as DER. The connection completes
    the SP negotiation (as a subscriber) before it closes: closing in the middle of it is what
    nng bug #1518 turns into a dead listener (which the watchdog would then re-create)."""
    s = tls_connect(port, cert)
    try:
        s.sendall(sp_header(PROTO_SUB))
        s.settimeout(T(5))
        got = b""
        while len(got) < 8:
            d = s.recv(8 - len(got))
            check(d, "the publish listener closed during the SP negotiation")
            got += d
        return s.getpeercert(binary_form=True)
    finally:
        s.close()


def refused(port, cert):
    """True if a TLS client presenting cert gets no SP header from port."""
    try:
        s = tls_connect(port, cert)
    except (ssl.SSLError, OSError):
        return True
    try:
        s.sendall(sp_header(PROTO_REQ))
        s.settimeout(T(2))
        got = s.recv(8)
        return not got.startswith(b"\x00SP\x00")
    except (ssl.SSLError, OSError):
        return True
    finally:
        s.close()


def test_cluster_over_mutual_tls(env):
    p = pki_for(env)
    o = Origin(env, pki=p)
    e1 = Edge(env, o, name="edge1", cert=p.edge1)
    e2 = Edge(env, o, name="edge2", cert=p.edge2)
    seq = o.apply([{"op": "app.put", "app": "shop"},
                   {"op": "domain.put", "domain": "shop.example", "app": "shop"},
                   {"op": "dyno.put", "app": "shop", "dyno": "web.1", "addr": "10.0.0.1:5000"}])
    wait_converged(o, [e1, e2])
    st = e1.status()
    eq(st["seq"], seq, "edge seq")
    check(st["tls"] is True and o.status()["tls"] is True, "status says tls: %r" % st)
    eq(len(st["origins"]), 1, "one origin")
    check(st["origins"][0]["connected"] is True and
          st["origins"][0]["url"] == o.dial_publish, "origins: %r" % st["origins"])
    check(st["tls_not_after"] > time.time(), "tls_not_after: %r" % st["tls_not_after"])
    r = o.ctl("--admin", e1.admin, "lookup", "shop.example", control=False)
    eq(r.rc, 0, "lookup through the edge: %r" % r)


def test_peers_without_an_acceptable_certificate_get_nothing(env):
    p = pki_for(env)
    o = Origin(env, pki=p)
    o.apply([{"op": "app.put", "app": "secret-app"}])
    seq0 = o.status()["seq"]
    for url, proto in ((o.control, PROTO_REQ), (o.publish, PROTO_SUB), (o.sync, PROTO_REQ)):
        port = port_of(url)
        # Plain SP bytes on a TLS port: no SP header back, nothing decoded.
        s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
        s.sendall(sp_header(proto) + b"\x00" * 64)
        s.settimeout(T(3))
        try:
            got = s.recv(64)
        except (socket.timeout, OSError):
            got = b""
        s.close()
        check(b"SP" not in got and b"secret-app" not in got,
              "plain bytes on %s got %r" % (url, got))
        for cert, who in ((None, "no certificate"), (p.impostor, "another CA's"),
                          (p.expired, "an expired one"), (p.origin, "the origin's own "
                                                          "(serverAuth only)")):
            check(refused(port, cert), "%s with %s was let in" % (url, who))
        # The edge certificate is good on publish and sync (control trusts the cluster CA
        # too here, since no --control-ca is given).
        check(not refused(port, p.edge1), "%s refuses a valid edge certificate" % url)
    st = o.status()
    eq(st["seq"], seq0, "nothing was applied")
    eq(st["bad_requests"], 0, "nothing was even decoded")
    # nng hands a listener the outcome of at most one failed handshake per 100 ms (it cools
    # down after one), so the count is a lower bound.
    check(st["tls_refused"] >= 1, "refused handshakes are counted: %r" % st["tls_refused"])


def test_an_impostor_origin_cannot_feed_an_edge(env):
    p = pki_for(env)
    o = Origin(env, pki=p)
    e = Edge(env, o, name="edge", extra=["--stale-after", "1s"])
    o.apply([{"op": "app.put", "app": "bank"},
             {"op": "domain.put", "domain": "bank.example", "app": "bank"},
             {"op": "dyno.put", "app": "bank", "dyno": "web.1", "addr": "10.0.0.1:443"}])
    wait_converged(o, [e])
    seq, digest = origin_head(o)
    o.stop()
    for cert, why in ((p.impostor, "another CA's certificate"),
                      (p.edge2, "an edge's certificate (no serverAuth)")):
        # The impostor's own state routes bank.example elsewhere (made over plaintext on
        # other ports first), then it serves it on the real origin's ports.
        data = env.path("imp-" + cert.name)
        prep = Origin(env, name="impostor-prep", data=data)
        prep.apply([{"op": "app.put", "app": "bank"},
                    {"op": "domain.put", "domain": "bank.example", "app": "bank"},
                    {"op": "dyno.put", "app": "bank", "dyno": "web.1", "addr": "6.6.6.6:443"}])
        prep.stop()
        imp = Origin(env, name="impostor", pki=p, cert=cert,
                     urls=(o.control, o.publish, o.sync), data=data)
        wait_for(lambda: e.status()["tls_handshake_failures"] > 0, T(10),
                 "the edge to refuse the impostor (%s)" % why)
        wait_for(lambda: e.status()["stale"], T(10), "the edge to go stale")
        st = e.status()
        eq((st["seq"], st["digest"]), (seq, digest), "the edge kept its table (%s)" % why)
        pk = e.peek()
        eq((pk["seq"], pk["digest"]), (seq, digest), "the table file is unchanged")
        check("6.6.6.6" not in e.proc.stderr(), "nothing of the impostor's state")
        imp.stop()
    o.start()
    wait_converged(o, [e], T(15), "the edge with the real origin back")


def test_a_lasting_refusal_is_told_at_once_then_at_most_once_a_minute(env):
    p = pki_for(env)
    o = Origin(env, pki=p)
    # Trusting another CA, the edge refuses the origin at every attempt, for as long as it runs.
    e = Edge(env, o, ca=p.other)
    began = time.monotonic()
    warning = "TLS handshake(s) with the origin failed"
    wait_for(lambda: warning in e.proc.stderr(), T(10), "the edge to warn")
    told = int(re.search(r"\((\d+) in all\)", e.proc.stderr()).group(1))
    # More refusals than the warning told, then more again over a second and a half: the edge
    # looks each second, so it has seen them (it used to warn each second they went on).
    seen = {}

    def refused_on():
        n = e.status()["tls_handshake_failures"]
        if "at" not in seen:
            if n > told:
                seen["at"], seen["n"] = time.monotonic(), n
            return False
        return n > seen["n"] and time.monotonic() - seen["at"] > 1.5

    wait_for(refused_on, T(30), "more refusals, over more than a second")
    err = e.proc.stderr()
    warned = err.count(warning)
    check(warned <= 1 + (time.monotonic() - began) // 60,
          "the refusals are told once, not each second: %d warnings\n%s" % (warned, err[-3000:]))
    check(e.proc.alive(), "the edge keeps trying")


def test_an_origin_named_by_address_is_noted_once_even_when_dialed_again(env):
    p = pki_for(env)
    o = Origin(env, pki=p)
    # By address (127.0.0.1), with --stale-after 1s: two quiet seconds and it dials again.
    e = Edge(env, o, publish=o.publish, sync=o.sync, extra=["--stale-after", "1s"])
    o.apply([{"op": "app.put", "app": "bank"}])
    wait_converged(o, [e])
    # A frozen origin keeps its connections open and says nothing: the edge dials again.
    o.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: "dialing again" in e.proc.stderr(), T(15), "the edge to dial again")
    finally:
        o.proc.send_signal(signal.SIGCONT)
    o.apply([{"op": "app.put", "app": "shop"}])
    wait_converged(o, [e], T(15), "the edge after the origin thawed")
    err = e.proc.stderr()
    for url in (o.publish, o.sync):
        eq(err.count("%s names the origin by address" % url), 1,
           "the notice for %s is said once:\n%s" % (url, err[-3000:]))


def test_an_edge_certificate_cannot_publish(env):
    p = pki_for(env)
    o = Origin(env, pki=p, control_ca=p.control, ctl_cert=p.ctl)
    eq(o.ctl("app", "put", "ok").rc, 0, "a control-plane certificate publishes")
    seq0 = o.status()["seq"]
    for cert in (p.edge1, p.ctl_cluster):
        o.ctl_cert = cert
        r = o.ctl("--timeout", "3s", "app", "put", "evil")
        eq(r.rc, 3, "hermodctl with %s: %r" % (cert.name, r))
        check("TLS handshake with the origin" in r.err, "it says why: %r" % r.err)
    eq(o.status()["seq"], seq0, "nothing was applied")
    # Edges with the cluster CA still follow.
    e = Edge(env, o)
    wait_converged(o, [e])


def test_start_up_rules(env):
    p = pki_for(env)
    syncd = ht.binary("hermod-syncd")
    data = env.path("data")

    def run(*args, binary=syncd, extra_env=None):
        penv = dict(os.environ)
        for k in ("HERMOD_CONTROL", "HERMOD_TLS_CERT", "HERMOD_TLS_CA"):
            penv.pop(k, None)
        penv.update(extra_env or {})
        r = subprocess.run([binary] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=T(20), env=penv)
        return r.returncode, r.stderr.decode()

    port = ht.free_port()
    base = ["origin", "--data", data, "--admin", env.path("o.sock"),
            "--control", "ipc://" + env.path("c.ipc"), "--sync", "tcp://127.0.0.1:%d" % port]
    cases = [
        (base + ["--publish", "tls+tcp://127.0.0.1:%d" % port], "needs --tls-cert and --tls-ca"),
        (base + ["--publish", "tcp://0.0.0.0:%d" % port], "not loopback"),
        (base + ["--publish", "tcp://[::]:%d" % port], "not loopback"),
        (base + ["--publish", "tls+tcp://127.0.0.1:%d" % port, "--tls-cert", p.origin.pem],
         "go together"),
        (base + ["--publish", "tls+tcp://127.0.0.1:%d" % port, "--tls-cert", p.origin.crt,
                 "--tls-ca", p.cluster.crt], "private key"),
        (base + ["--publish", "tls+tcp://127.0.0.1:%d" % port, "--tls-cert", p.expired.pem,
                 "--tls-ca", p.cluster.crt], "expired on"),
        (base + ["--publish", "tls+tcp://127.0.0.1:%d" % port, "--tls-cert", p.origin.pem,
                 "--tls-ca", env.path("missing.crt")], "cannot read"),
        (["edge", "--publish", "tcp://10.9.9.9:7401", "--sync", "tcp://10.9.9.9:7402",
          "--table", env.path("t")], "not loopback"),
        (["edge", "--publish", "tls+tcp://localhost:7401", "--sync", "tls+tcp://localhost:7402",
          "--table", env.path("t")], "needs --tls-cert"),
    ]
    # A certificate whose key is another's.
    mixed = env.path("mixed.pem")
    with open(mixed, "w") as f:
        f.write(open(p.origin.crt).read() + open(p.edge1.key).read())
    cases.append((base + ["--publish", "tls+tcp://127.0.0.1:%d" % port, "--tls-cert", mixed,
                          "--tls-ca", p.cluster.crt], "not the first certificate's"))
    for argv, why in cases:
        rc, err = run(*argv)
        eq(rc, 2, "%s: %s" % (" ".join(argv[-4:]), err))
        check(why in err and "\n" not in err.strip(), "one-line reason %r in %r" % (why, err))
    # --insecure-plaintext allows the non-loopback plaintext listener.
    o = Origin(env, urls=("ipc://" + env.path("c2.ipc"), "tcp://0.0.0.0:%d" % ht.free_port(),
                          "tcp://127.0.0.1:%d" % ht.free_port()),
               extra=["--insecure-plaintext"])
    eq(o.status()["tls"], False, "status tls")
    # hermodctl: the same rules, and its environment variables.
    ctl = ht.binary("hermodctl")
    rc, err = run("--control", "tls+tcp://localhost:1", "app", "put", "a", binary=ctl)
    eq(rc, 2, "hermodctl without certificates: %s" % err)
    rc, err = run("--control", "tcp://10.9.9.9:7400", "app", "put", "a", binary=ctl)
    eq(rc, 2, "hermodctl plaintext to a remote address: %s" % err)
    to = Origin(env, name="tls-origin", pki=p)
    rc, err = run("--control", to.dial_control, "app", "put", "a", binary=ctl,
                  extra_env={"HERMOD_TLS_CERT": p.ctl_cluster.pem,
                             "HERMOD_TLS_CA": p.cluster.crt})
    eq(rc, 0, "hermodctl with HERMOD_TLS_CERT and HERMOD_TLS_CA: %s" % err)


def _publisher(o, stop, acked, failures):
    i = 0
    while not stop.is_set():
        r = o.ctl("--json", "app", "put", "rot-%d" % i)
        if r.rc == 0:
            acked.append("rot-%d" % i)
        else:
            failures.append(r)
        i += 1


def test_sighup_rotation_loses_no_change_and_drops_no_connection(env):
    p = pki_for(env)
    served = env.path("served")
    os.makedirs(served)
    # The files the programs are given, rewritten in place by the "rotation". (Each program is
    # started once: an edge stopped in the middle of its first handshakes, as a restart right
    # after the start did, can break the origin's TLS listener for good, nng #1518, and then
    # the watchdog rightly re-creates it.)
    origin_pem, edge_pem = os.path.join(served, "origin.pem"), os.path.join(served, "edge.pem")
    shutil.copy(p.origin.pem, origin_pem)
    shutil.copy(p.edge1.pem, edge_pem)
    o = Origin(env, pki=p, cert=types.SimpleNamespace(pem=origin_pem))
    e = Edge(env, o, cert=types.SimpleNamespace(pem=edge_pem))
    wait_converged(o, [e])
    before = e.status()
    stop, acked, failures = threading.Event(), [], []
    t = threading.Thread(target=_publisher, args=(o, stop, acked, failures))
    t.start()
    try:
        new_certs = []
        for round_ in range(3):
            time.sleep(0.3)
            no = p.leaf("origin-r%d" % round_, p.cluster, "serverAuth", ["localhost"])
            ne = p.leaf("edge1-r%d" % round_, p.cluster, "clientAuth", ["edge1"])
            for src, dst in ((no.pem, origin_pem), (ne.pem, edge_pem)):
                shutil.copy(src, dst + ".tmp")
                os.replace(dst + ".tmp", dst)
            o.proc.send_signal(signal.SIGHUP)
            e.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: o.status()["tls_reloads"] == round_ + 1 and
                     e.status()["tls_reloads"] == round_ + 1, T(10), "both to reload")
            new_certs.append(no)
            # The very next handshake presents the new certificate.
            eq(publisher_cert(port_of(o.publish), p.edge2), no.der(),
               "the certificate after reload %d" % (round_ + 1))
        # A file that does not load changes nothing.
        with open(origin_pem, "w") as f:
            f.write(open(p.origin.crt).read() + open(p.edge2.key).read())
        o.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: o.status()["tls_reload_errors"] == 1, T(10), "the bad file counted")
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    eq(failures, [], "every hermodctl run during the rotation succeeded")
    check(len(acked) > 5, "changes were published during the rotation (%d)" % len(acked))
    wait_converged(o, [e])
    after = e.status()
    eq(after["catchups"], before["catchups"], "no catch-up: the subscription never dropped")
    eq(after["sync_errors"], 0, "no sync request failed")
    check("lost the subscription" not in e.proc.stderr(), "the edge never lost its subscription")
    eq(o.status()["listener_restarts"], 0, "no listener was re-created")
    dump = o.ctl("--admin", e.admin, "--json", "dump", control=False).json()
    have = {a["app"] for a in dump["apps"]}
    eq([a for a in acked if a not in have], [], "acknowledged changes missing on the edge")
    # New handshakes present the last good certificate.
    eq(publisher_cert(port_of(o.publish), p.edge2), new_certs[-1].der(),
       "the origin's certificate now")


def test_scans_and_half_finished_handshakes_never_stop_a_listener(env):
    p = pki_for(env)
    o = Origin(env, pki=p, proc_env=nng_leak_suppression(env))
    # Idle TLS listeners are probed with a real handshake every ~0.5 s: a probe that failed
    # would re-create them every ~1.75 s.
    time.sleep(T(3))
    eq(o.status()["listener_restarts"], 0, "idle TLS listeners pass their probes")
    e = Edge(env, o, name="before")
    o.apply([{"op": "app.put", "app": "a"}])
    wait_converged(o, [e])
    held = []
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # the start of a ClientHello
    for url in (o.control, o.publish, o.sync):
        port = port_of(url)
        for _ in range(100):
            socket.create_connection(("127.0.0.1", port), timeout=T(5)).close()
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
            s.sendall(b"\x16\x03\x01\x00\x05garbage")
            s.close()
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
            s.sendall(hello)
            held.append(s)
    try:
        r = o.ctl("app", "put", "during-flood")
        eq(r.rc, 0, "hermodctl during the flood: %r" % r)
        late = Edge(env, o, name="late", cert=p.edge2)
        wait_converged(o, [e, late], T(15), "edges during the flood")
    finally:
        for s in held:
            s.close()
    o.apply([{"op": "app.put", "app": "after"}])
    wait_converged(o, [e, late])
    print("# listener_restarts after the scans: %d" % o.status()["listener_restarts"],
          flush=True)


def test_edges_stopped_mid_handshake_break_no_tls_listener_for_long(env):
    p = pki_for(env)
    o = Origin(env, pki=p, proc_env=nng_leak_suppression(env))
    steady = Edge(env, o, name="steady")
    o.apply([{"op": "app.put", "app": "a"}])
    wait_converged(o, [steady])
    # Edges stopped (SIGTERM) 0-38 ms after they start, in the middle of their first TLS
    # handshakes: now and then one of those leaves a TLS listener that still handshakes but
    # never adds a pipe again (nng #1518, over TLS; 2 listeners in 60 such edges here). Rounds
    # of 30 until the watchdog has had one to re-create.
    n = 0
    # Stopped with its first dial's TLS handshake in flight, an edge's nng 1.5.2 leaves that
    # connection's objects unreachable (mbedtls state inside libnng; LeakSanitizer said so in
    # 1 ASan run of ~5): the same leak nng_leak_suppression tolerates for broken listeners.
    brief_env = nng_leak_suppression(env)
    for _ in range(10):
        for i in range(30):
            brief = Edge(env, o, name="brief-%d" % n, wait=False, proc_env=brief_env)
            time.sleep(0.002 * (i % 20) * ht.SLOW)  # when to stop it, not a wait
            brief.proc.stop(expect_rc=None)  # before its handler: killed by it
            n += 1
        if o.status()["listener_restarts"] > 0:
            break
    restarts = o.status()["listener_restarts"]
    print("# %d edges stopped mid-start; TLS listeners re-created: %d" % (n, restarts),
          flush=True)
    # Whether the race breaks a listener depends on the machine's timing (a loaded machine
    # may never hit it), so it is reported, not required. What is required: a listener that
    # shows #1518's mark is re-created over TLS too, made deterministic by the test builds'
    # probe hook (two probes that find the handshake done and no pipe added).
    if restarts > 0:
        check("re-creating it" in o.proc.stderr(), "the watchdog said why")
    elif has_test_hooks():
        o2 = Origin(env, name="origin-marked", pki=p,
                    proc_env=dict(nng_leak_suppression(env), HM_TEST_PROBE_MISSES="2"))
        wait_for(lambda: o2.status()["listener_restarts"] >= 3, T(20),
                 "every TLS listener re-created after two unadded pipes")
        check("re-creating it" in o2.proc.stderr(), "the reason is logged")
        r = o2.ctl("app", "put", "after-marked")
        eq(r.rc, 0, "the re-created TLS control listener answers (%r)" % r)
        e2 = Edge(env, o2, name="marked-edge")
        wait_converged(o2, [e2], T(20), "an edge through the re-created TLS listeners")
    else:
        print("# no listener broke and this build has no test hooks: the re-creation over "
              "TLS is not exercised by this run", flush=True)
    # Working again: hermodctl, a new edge, and the steady one (its subscription may have been
    # on a re-created listener: it reconnects and catches up).
    r = o.ctl("app", "put", "after")
    eq(r.rc, 0, "hermodctl: %r" % r)
    late = Edge(env, o, name="late")
    wait_converged(o, [steady, late], T(20), "edges after the brief ones")


def test_connections_that_carry_nothing_are_replaced(env):
    # nng 1.5.2's TLS can leave a connection whose peer died as a message arrived looking alive
    # for good: nothing is sent or received on it any more, and nng never closes it (seen as
    # hermodctl runs that waited out --reply-timeout, connected to nothing, while an origin was
    # killed and restarted). A proxy makes such a connection on demand, over plaintext.
    o = Origin(env)
    o.apply([{"op": "app.put", "app": "a"}])
    # hermodctl: its request gets through, the answer does not. After 5 s it sends the part
    # again on a new connection; the origin answers it from its request cache (applied once).
    px = StallingProxy(port_of(o.control), replies_only=True)
    before = o.status()
    r = o.ctl("--control", px.url, "--reply-timeout", "%ds" % T(60), "--json", "app", "put",
              "through", control=False)
    eq(r.rc, 0, "hermodctl through a connection that went dead: %r" % r)
    eq(px.connections, 2, "one dead connection, one new")
    after = o.status()
    eq(after["batches"] - before["batches"], 1, "applied once")
    eq(after["resent"] - before["resent"], 1, "the second sending was recognised")
    check(r.json()["seq"] == after["seq"], "acknowledged at the batch's seq: %r" % r.out)
    px.close()
    # An edge whose sync connection goes dead after the handshake: a request unanswered for
    # --timeout makes it dial again, and it converges.
    px = StallingProxy(port_of(o.sync))
    e = Edge(env, o, sync=px.url, extra=["--timeout", "1s"])
    wait_converged(o, [e], T(20), "the edge past its dead sync connection")
    check(e.status()["sync_redials"] >= 1, "it dialed again: %r" % e.status())
    check(px.connections >= 2, "on a new connection (%d)" % px.connections)
    px.close()


if __name__ == "__main__":
    if shutil.which("openssl") is None:
        print("# needs the openssl command: skipped")
        raise SystemExit(77)
    ht.run(globals())

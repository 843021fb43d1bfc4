"""Certificates as replicated routing state (issue 11, docs/tls.md): `hermodctl cert put/rm`, the
origin's checks (every rejection reason; warnings that still accept), the canonical record
journaled and published, the node's certificate store written by the edge (entries, mode 0600,
owner, a squatted store refused), `certs`, `lookup`'s cert, `status`, `dump`, snapshots and
restarts, rotation of a certificate, and TLS session ticket keys made, rotated and distributed by
the origin. Keys never appear in any output: every output of the run is searched for them.

Certificates are made by the test with the openssl command-line tool (tests/integration/pki.py):
a CA, exact leaves, a wildcard, a default, expired, not yet valid, expiring soon, a wrong key,
RSA and ECDSA.
"""

import glob
import json
import os
import stat
import subprocess
import threading
import time

import hermod_test as ht
from hermod_test import T, check, eq
from pki import PKI
from syncd_util import Edge, Origin, cert_peek, wait_converged

OUTPUTS = []  # every stdout/stderr of hermodctl and every admin answer, for the key check


def ctl(o, *args, **kw):
    r = o.ctl(*args, **kw)
    OUTPUTS.append(r.out)
    OUTPUTS.append(r.err)
    return r


def admin(path, line):
    a = ht.admin_request(path, line)
    OUTPUTS.append(json.dumps(a))
    return a


def key_body(path):
    """The base64 lines of a PEM key file (what must never be printed)."""
    lines = [l.strip() for l in open(path) if l.strip() and not l.startswith("-----")]
    return [l for l in lines if len(l) >= 24]


def make_pki(env):
    p = PKI(env.path("pki"))
    p.ca1 = p.ca("ca1")
    now = time.time()
    p.exact = p.leaf("exact", p.ca1, "serverAuth", ["shop.example.com"])
    p.exact2 = p.leaf("exact2", p.ca1, "serverAuth", ["shop.example.com"])  # a rotation
    p.rsa = p.leaf("rsa", p.ca1, "serverAuth", ["rsa.example.com"], algo="rsa")
    p.wild = p.leaf("wild", p.ca1, "serverAuth", ["*.apps.example.com"])
    p.dflt = p.leaf("dflt", p.ca1, "serverAuth", ["fallback.example.net"])
    p.expired = p.leaf("expired", p.ca1, "serverAuth", ["old.example.com"],
                       not_before=now - 20 * 86400, not_after=now - 86400)
    p.future = p.leaf("future", p.ca1, "serverAuth", ["soon.example.com"],
                      not_before=now + 5 * 86400, not_after=now + 40 * 86400)
    p.expiring = p.leaf("expiring", p.ca1, "serverAuth", ["brief.example.com"],
                        not_after=now + 3 * 86400)
    # chain files: leaf then CA (in order), CA then leaf (out of order)
    for name, parts in (("exact-chain", [p.exact.crt, p.ca1.crt]),
                        ("bad-order", [p.ca1.crt, p.exact.crt])):
        with open(os.path.join(p.dir, name + ".crt"), "w") as f:
            for part in parts:
                f.write(open(part).read())
    # an encrypted key
    enc = os.path.join(p.dir, "enc.key")
    subprocess.run(["openssl", "pkey", "-in", p.exact.key, "-out", enc, "-aes256", "-passout",
                    "pass:secret"], check=True, timeout=T(30))
    p.enc_key = enc
    garbage = os.path.join(p.dir, "garbage.crt")
    with open(garbage, "w") as f:
        f.write("this is not a certificate\n")
    p.garbage = garbage
    return p


def test_rejections_and_warnings(env):
    """Every rejection reason exits 1 with the reason and changes nothing; warnings exit 0."""
    p = make_pki(env)
    o = Origin(env)
    d = p.dir
    cases = [
        (("shop.example.com", p.garbage, p.exact.key), "holds no certificate"),
        (("shop.example.com", os.path.join(d, "bad-order.crt"), p.exact.key),
         "chain out of order"),
        (("shop.example.com", p.exact.crt, p.rsa.key), "does not match the certificate"),
        (("shop.example.com", p.exact.crt, p.enc_key), "encrypted"),
        (("old.example.com", p.expired.crt, p.expired.key), "expired"),
        (("other.example.com", p.exact.crt, p.exact.key), "does not cover"),
        (("x.y.apps.example.com", p.wild.crt, p.wild.key), "does not cover"),
        (("bad..name", p.exact.crt, p.exact.key), "invalid hostname"),
        (("shop.example.com", p.exact.crt, p.exact.crt), "no private key"),
    ]
    seq0 = o.status()["seq"]
    for (name, crt, key), why in cases:
        r = ctl(o, "cert", "put", name, crt, key)
        eq(r.rc, 1, "cert put %s %s: %r" % (name, os.path.basename(crt), r))
        check(why in r.err, "reason %r in %r" % (why, r.err))
    # Files hermodctl cannot take: exit 2 with why, nothing sent. The key file is read into one
    # buffer sized before the first byte (docs/tls.md: no copy of a key left behind), so the
    # bound is checked on what was read, one byte past the limit.
    big = os.path.join(d, "big.key")
    with open(big, "w") as f:
        f.write(open(p.exact.key).read() + "#" * (16 * 1024))
    empty = os.path.join(d, "empty.key")
    open(empty, "w").close()
    exact_size = os.path.join(d, "exact-size.key")
    with open(exact_size, "w") as f:  # exactly the 16 KiB limit: read whole, then judged as PEM
        k = open(p.exact.key).read()
        f.write(k + "\n" * (16 * 1024 - len(k)))
    for key, why, rc in ((os.path.join(d, "missing.key"), "cannot read key", 2),
                         (big, "1 to 16384", 2), (empty, "1 to 16384", 2),
                         (exact_size, "", 0)):
        r = ctl(o, "cert", "put", "shop.example.com", p.exact.crt, key)
        eq(r.rc, rc, "cert put with key %s: %r" % (os.path.basename(key), r))
        check(why in r.err, "reason %r in %r" % (why, r.err))
    r = ctl(o, "cert", "rm", "shop.example.com")
    eq(r.rc, 0, "cert rm: %r" % r)
    seq0 = o.status()["seq"]
    # The origin's own check, without hermodctl's: a request made by hand (batch file).
    batch = {"changes": [{"op": "cert.put", "name": "shop.example.com",
                          "cert": open(p.exact.crt).read(), "key": open(p.rsa.key).read()}]}
    r = ctl(o, "apply", "-", input=json.dumps(batch).encode())
    eq(r.rc, 1, "apply of a mismatched key: %r" % r)
    check("does not match the certificate" in r.err, r.err)
    eq(o.status()["seq"], seq0, "nothing changed")
    eq(o.status()["certs"], 0, "no certificate")
    # Warnings: accepted (exit 0), printed.
    r = ctl(o, "cert", "put", "soon.example.com", p.future.crt, p.future.key)
    eq(r.rc, 0, "not yet valid is a warning: %r" % r)
    check("warning" in r.err and "not valid before" in r.err, r.err)
    r = ctl(o, "--json", "cert", "put", "brief.example.com", p.expiring.crt, p.expiring.key)
    eq(r.rc, 0, "expiring soon is a warning: %r" % r)
    check("expires" in r.json().get("warnings", ""), r.out)
    eq(o.status()["certs"], 2, "both accepted")
    check_no_keys(env, p)


def test_store_on_the_edge(env):
    """Put, list, look up, rotate, remove: the edge's store has exactly the entries; mode 0600,
    this user's; `certs`, `lookup`, `dump`, `status`; restarts and a snapshot resync keep it."""
    p = make_pki(env)
    o = Origin(env)
    e = Edge(env, o)
    d = p.dir
    o.ctl("app", "put", "shop")
    o.ctl("domain", "put", "shop.example.com", "shop")
    o.ctl("domain", "put", "a.apps.example.com", "shop")
    puts = [("shop.example.com", os.path.join(d, "exact-chain.crt"), p.exact.key),
            ("rsa.example.com", p.rsa.crt, p.rsa.key),
            ("*.apps.example.com", p.wild.crt, p.wild.key),
            ("default", p.dflt.crt, p.dflt.key)]
    for name, crt, key in puts:
        r = ctl(o, "cert", "put", name, crt, key)
        eq(r.rc, 0, "cert put %s: %r" % (name, r))
    wait_converged(o, [e])
    st = e.status()
    eq(st["certs"], 4, "edge status certs")
    eq(st["digest"], o.status()["digest"], "the digest covers certificates")
    store = st["cert_store"]
    eq(store, e.table[:-len(".table")] + ".certs", "store path from --table")
    sb = os.stat(store)
    eq(stat.S_IMODE(sb.st_mode), 0o600, "store mode")
    eq(sb.st_uid, os.geteuid(), "store owner")
    peek = peek_store(store, "shop.example.com", "a.apps.example.com", "b.apps.example.com",
                      "x.b.apps.example.com", "rsa.example.com", "-", "unknown.example.org")
    eq(peek["certs"], 4, "entries in the file")
    h = peek["hosts"]
    eq([h[k]["match"] for k in ("shop.example.com", "a.apps.example.com", "b.apps.example.com",
                                "x.b.apps.example.com", "rsa.example.com", "-",
                                "unknown.example.org")],
       [1, 2, 2, 3, 1, 3, 3], "SNI selection: exact, wildcard one label, default")
    # certs listing: names, expiry, fingerprint, SANs; no key
    certs = admin(e.admin, "certs")["certs"]
    by = {c["name"]: c for c in certs}
    eq(sorted(by), ["*.apps.example.com", "default", "rsa.example.com", "shop.example.com"],
       "certs names")
    eq(by["shop.example.com"]["sans"], ["shop.example.com"], "sans")
    leaf_sha = subprocess.run(["openssl", "x509", "-in", p.exact.crt, "-noout", "-fingerprint",
                               "-sha256"], stdout=subprocess.PIPE, check=True, timeout=T(30))
    want = leaf_sha.stdout.decode().split("=", 1)[1].strip().replace(":", "").lower()
    eq(by["shop.example.com"]["sha256"], want, "the leaf's fingerprint")
    check(abs(by["shop.example.com"]["not_after"] - (time.time() + 10 * 86400)) < 7200,
          by["shop.example.com"])
    eq(sorted(admin(o.admin, "certs")["certs"], key=lambda c: c["name"]),
       sorted(certs, key=lambda c: c["name"]), "the origin lists the same")
    # lookup names the certificate SNI would pick
    eq(admin(e.admin, "lookup a.apps.example.com")["cert"], "*.apps.example.com", "lookup cert")
    eq(admin(e.admin, "lookup shop.example.com")["cert"], "shop.example.com", "lookup cert")
    r = ctl(o, "--admin", e.admin, "lookup", "shop.example.com", control=False)
    check("cert         shop.example.com" in r.out, r.out)
    r = ctl(o, "--admin", e.admin, "certs", control=False)
    eq(r.rc, 0, r)
    check("NAME" in r.out and "*.apps.example.com" in r.out and want in r.out, r.out)
    dump = admin(e.admin, "dump")
    eq(sorted(c["name"] for c in dump["certs"]), sorted(by), "dump lists certificates")
    r = ctl(o, "--admin", e.admin, "dump", control=False)
    check("SHA256" in r.out and "rsa.example.com" in r.out, r.out)
    # Rotation: same name, new certificate: the store serves the new chain.
    before = peek["hosts"]["shop.example.com"]["chain_sha256"]
    r = ctl(o, "cert", "put", "shop.example.com", p.exact2.crt, p.exact2.key)
    eq(r.rc, 0, r)
    wait_converged(o, [e])
    after = peek_store(store, "shop.example.com")["hosts"]["shop.example.com"]["chain_sha256"]
    check(after != before, "rotated: %s -> %s" % (before, after))
    # Restart the edge: it resumes its store (no resync).
    e.restart()
    wait_converged(o, [e])
    eq(e.status()["certs"], 4, "after an edge restart")
    # Removal.
    eq(ctl(o, "cert", "rm", "rsa.example.com").rc, 0, "cert rm")
    r = ctl(o, "cert", "rm", "rsa.example.com")
    eq(r.rc, 1, "removing it again: %r" % r)
    check("no such certificate" in r.err, r.err)
    wait_converged(o, [e])
    eq(peek_store(store, "rsa.example.com")["hosts"]["rsa.example.com"]["match"], 3,
       "rsa.example.com falls back to default")
    # The origin restarts from its snapshot and journal: the same state; a new edge loads it
    # from a snapshot (certificates in the chunks).
    digest = o.status()["digest"]
    o.restart()
    eq(o.status()["digest"], digest, "origin restart keeps the certificates")
    eq(o.status()["certs"], 3, "origin certs after restart")
    e2 = Edge(env, o, name="edge2")
    wait_converged(o, [e, e2])
    eq(e2.status()["certs"], 3, "a new edge gets them by snapshot")
    eq(peek_store(e2.status()["cert_store"], "shop.example.com")["hosts"]["shop.example.com"]
       ["chain_sha256"], after, "the rotated certificate on the new edge")
    check_no_keys(env, p)
    # Keys in the files that must hold them only, and those are 0600.
    for f in glob.glob(os.path.join(o.data, "*")):
        mode = stat.S_IMODE(os.stat(f).st_mode)
        check(mode & 0o077 == 0 or not os.path.isfile(f),
              "%s is mode %o and may hold keys" % (f, mode))


def test_many_certificates_in_one_request(env):
    """A batch file of many cert.put and cert.rm changes is one atomic batch: every record's id
    matches its bytes on the edge (the origin keeps each canonical record in place while the
    request is validated), and one refused certificate refuses the whole file."""
    p = make_pki(env)
    o = Origin(env)
    e = Edge(env, o)
    chain, key = open(p.wild.crt).read(), open(p.wild.key).read()
    # 300: enough for the request's records to outgrow the heap into a mapping of their own.
    changes = [{"op": "cert.put", "name": "h%d.apps.example.com" % i, "cert": chain, "key": key}
               for i in range(300)]
    changes.append({"op": "cert.rm", "name": "h0.apps.example.com"})
    r = ctl(o, "--json", "apply", "-", input=json.dumps({"changes": changes}).encode())
    eq(r.rc, 0, "apply: %r" % r)
    wait_converged(o, [e])
    eq(e.status()["certs"], 299, "certificates on the edge")
    eq(e.status()["digest_mismatches"], 0, "no resync")
    eq(e.status()["snapshots"], 1, "only the first load")
    peek = peek_store(e.status()["cert_store"], "h299.apps.example.com", "h0.apps.example.com")
    eq(peek["hosts"]["h299.apps.example.com"]["match"], 1, "exact entry")
    eq(peek["hosts"]["h0.apps.example.com"], None, "removed in the same batch; no default")
    seq = o.status()["seq"]
    bad = [{"op": "cert.put", "name": "x%d.apps.example.com" % i, "cert": chain, "key": key}
           for i in range(5)]
    bad.append({"op": "cert.put", "name": "x.other.example.com", "cert": chain, "key": key})
    r = ctl(o, "apply", "-", input=json.dumps({"changes": bad}).encode())
    eq(r.rc, 1, "one certificate not covering its name refuses the file: %r" % r)
    check("change 5 (cert.put x.other.example.com)" in r.err, r.err)
    eq(o.status()["seq"], seq, "nothing changed")
    check_no_keys(env, p)


def test_certificates_in_a_later_part_are_checked(env):
    """A request of several parts (more changes than one part holds) has its cert.put changes
    checked wherever they are: the origin counts them as the parts arrive, so one in the last
    part is checked (a refused one refuses the whole request, with its index across the parts)
    and an accepted one reaches the edge as its canonical record."""
    p = make_pki(env)
    o = Origin(env)
    e = Edge(env, o)
    chain, key = open(p.wild.crt).read(), open(p.wild.key).read()
    apps = [{"op": "app.put", "app": "a%d" % i} for i in range(17000)]  # a part holds 16384
    seq = o.status()["seq"]
    bad = apps + [{"op": "cert.put", "name": "x.other.example.com", "cert": chain, "key": key}]
    r = ctl(o, "apply", "-", input=json.dumps({"changes": bad}).encode())
    eq(r.rc, 1, "a certificate not covering its name in the last part: %r" % r)
    check("change 17000 (cert.put x.other.example.com)" in r.err, r.err)
    eq(o.status()["seq"], seq, "nothing changed")
    good = apps + [{"op": "cert.put", "name": "h1.apps.example.com", "cert": chain, "key": key}]
    r = ctl(o, "--json", "apply", "-", input=json.dumps({"changes": good}).encode())
    eq(r.rc, 0, "apply: %r" % r)
    wait_converged(o, [e])
    eq((e.status()["apps"], e.status()["certs"]), (17000, 1), "apps and certificates on the edge")
    eq(e.status()["digest_mismatches"], 0, "no resync")
    check_no_keys(env, p)


def test_checks_leave_the_loop_free(env):
    """A request's certificates are checked on the thread pool, not on the origin's loop: while
    the checks of a 1,000-certificate request are held (a test build's gate), the origin answers
    a small request, which is sequenced first, and its heartbeats reach the edge, which stays
    fresh; once the gate opens the big request is acknowledged after it. A refused certificate
    in the middle of a request checked in several pieces is answered as the first refused one
    (the same reason text as when the loop checked them one by one)."""
    p = make_pki(env)
    gate = env.path("certjob-gate")
    o = Origin(env, proc_env={"HM_TEST_CERTJOB_GATE": gate})
    e = Edge(env, o)
    wait_converged(o, [e])
    chain, key = open(p.wild.crt).read(), open(p.wild.key).read()
    changes = [{"op": "cert.put", "name": "h%d.apps.example.com" % i, "cert": chain, "key": key}
               for i in range(1000)]
    big = {}

    def send_big():
        big["r"] = ctl(o, "--json", "apply", "-", input=json.dumps({"changes": changes}).encode(),
                       timeout=T(300))

    t = threading.Thread(target=send_big)
    t.start()
    try:
        ht.wait_for(lambda: o.status()["cert_checks_running"] == 1, T(60),
                    "the big request's checks on the thread pool")
        small = ctl(o, "--json", "app", "put", "small")
        eq(small.rc, 0, "a small request answered during the checks: %r" % small)
        check(t.is_alive(), "the big request is not answered yet")
        eq(o.status()["cert_checks_running"], 1, "still checking")
        # Heartbeats go on: the edge sees a new one (its age goes down) and is not stale.
        ages = [e.status()["last_heartbeat_ms"]]

        def new_heartbeat():
            ages.append(e.status()["last_heartbeat_ms"])
            return ages[-1] is not None and ages[-2] is not None and ages[-1] < ages[-2]
        ht.wait_for(new_heartbeat, T(30), "a heartbeat during the checks")
        eq(e.status()["stale"], False, "the edge is not stale")
        check(t.is_alive(), "the big request is still not answered")
    finally:
        open(gate, "w").close()
        t.join(T(300))
    r = big["r"]
    eq(r.rc, 0, "the big request: %r" % r)
    check(r.json()["seq"] > small.json()["seq"], "sequenced after the small one: %r %r" %
          (r.out, small.out))
    eq(o.status()["cert_checks"], 1, "one request checked off the loop")
    wait_converged(o, [e])
    eq(e.status()["certs"], 1000, "certificates on the edge")
    # Refused in the middle: two bad certificates in different pieces; the first is the answer.
    seq = o.status()["seq"]
    bad = [{"op": "cert.put", "name": "x%d.apps.example.com" % i, "cert": chain, "key": key}
           for i in range(200)]
    bad[77]["name"] = "x77.other.example.com"
    bad[150]["name"] = "x150.other.example.com"
    r = ctl(o, "apply", "-", input=json.dumps({"changes": bad}).encode())
    eq(r.rc, 1, "refused: %r" % r)
    check("change 77 (cert.put x77.other.example.com): " in r.err and "does not cover" in r.err,
          r.err)
    eq(o.status()["seq"], seq, "nothing changed")
    check_no_keys(env, p)


def test_stop_during_checks(env):
    """SIGTERM while a request's certificates are being checked (held by the gate, which never
    opens): the checks are cancelled, the origin stops cleanly (not by its exit deadline), the
    request is not applied (its client resends it to the restarted origin), and a restart serves
    the same state."""
    p = make_pki(env)
    gate = env.path("certjob-gate")
    o = Origin(env, proc_env={"HM_TEST_CERTJOB_GATE": gate})
    chain, key = open(p.wild.crt).read(), open(p.wild.key).read()
    changes = [{"op": "cert.put", "name": "h%d.apps.example.com" % i, "cert": chain, "key": key}
               for i in range(200)]
    seq = o.status()["seq"]
    big = {}

    def send_big():
        big["r"] = ctl(o, "--json", "--reply-timeout", "2s", "apply", "-",
                       input=json.dumps({"changes": changes}).encode(), timeout=T(60))

    t = threading.Thread(target=send_big)
    t.start()
    try:
        ht.wait_for(lambda: o.status()["cert_checks_running"] == 1, T(60),
                    "the request's checks on the thread pool")
        o.stop()  # exit 0 within T(10) s, or it fails
    finally:
        t.join(T(60))
    check(big["r"].rc != 0, "the request was not acknowledged: %r" % big["r"])
    log = o.proc.stdout() + o.proc.stderr()
    check("stopped at seq" in log and "shutdown stuck" not in log,
          "a clean stop, not the exit deadline: %s" % log[-600:])
    o.proc_env = None
    o.start()
    eq(o.status()["seq"], seq, "nothing applied")
    eq(o.status()["certs"], 0, "no certificate")


def test_certs_answer_streams(env):
    """`certs` is written in slices as the client reads, straight from the store (constant
    memory in the count), not built whole: a reader that stalls after the first bytes of a ~2 MB
    answer, while a certificate is put, gets the entries listed before the change and then an
    "error" saying the certificates changed (a built answer would hold all the old entries and
    no error); a reader that keeps up gets every entry once, well-formed; hermodctl prints it as
    it streams, and exits 1 on the error."""
    p = make_pki(env)
    o = Origin(env)
    e = Edge(env, o)
    # 150 long SANs per certificate: ~9 KB of JSON per entry, 200 entries ~2 MB, far past the
    # admin socket's slice and the socket buffers.
    sans = ["*.apps.example.com"] + ["san-%03d-%s.example.org" % (k, "x" * 40) for k in range(149)]
    big = p.leaf("bigsans", p.ca1, "serverAuth", sans)
    chain, key = open(big.crt).read(), open(big.key).read()
    n = 200
    changes = [{"op": "cert.put", "name": "h%d.apps.example.com" % i, "cert": chain, "key": key}
               for i in range(n)]
    r = ctl(o, "--json", "apply", "-", input=json.dumps({"changes": changes}).encode(),
            timeout=T(300))
    eq(r.rc, 0, "apply: %r" % r)
    wait_converged(o, [e])

    for proc in (o, e):
        s, first = ht.admin_stalled(proc.admin, "certs")
        check(first.startswith(b'{"certs":[{"name":'), first[:80])
        # While the reader stalls, a certificate is put (and reaches the edge).
        k = 0 if proc is o else 1
        r = ctl(o, "cert", "put", "late%d.apps.example.com" % k, p.wild.crt, p.wild.key)
        eq(r.rc, 0, "cert put: %r" % r)
        wait_converged(o, [e])
        s.settimeout(T(20))
        buf = ht.admin_read_line(s, first)
        s.close()
        OUTPUTS.append(buf.decode())
        d = json.loads(buf)
        check("changed" in d.get("error", ""), "the answer says the certificates changed: %r" %
              buf[-200:])
        names = [c["name"] for c in d["certs"]]
        check(0 < len(names) < n, "only the entries listed before the change: %d" % len(names))
        eq(len(set(names)), len(names), "no entry twice")
        check(all(c["sans"] == sans and len(c["sha256"]) == 64 for c in d["certs"]),
              "entries well-formed")
    # A reader that keeps up: all of them, once each, no error.
    for proc in (o, e):
        d = admin(proc.admin, "certs")
        eq(d.get("error"), None, "no error")
        names = sorted(c["name"] for c in d["certs"])
        eq(len(names), n + 2, "every certificate")
        eq(len(set(names)), n + 2, "none twice")
    r = ctl(o, "--admin", e.admin, "certs", control=False)
    eq(r.rc, 0, "hermodctl certs: %r" % r)
    check(r.out.startswith("NAME"), "the table's heading first: %r" % r.out[:80])
    eq(len([l for l in r.out.splitlines() if ".apps.example.com" in l]), n + 2,
       "a line per certificate")
    check_no_keys(env, p)


def test_joining_edge_sizes_the_store_once(env):
    """A snapshot says how many certificates it holds and how much store heap they take
    (SNAPSHOT_REP version 4, and the snapshot file's header): an edge joining by a snapshot of 300
    certificates (more than a default store's 256 entries) makes its store once, with no load
    started again. A snapshot written as before (version 3 chunks, no count: a test build's
    HM_TEST_SNAP_VERSION=3) still loads, growing the store as before."""
    p = make_pki(env)
    chain, key = open(p.wild.crt).read(), open(p.wild.key).read()
    changes = [{"op": "cert.put", "name": "h%d.apps.example.com" % i, "cert": chain, "key": key}
               for i in range(300)]
    for tag, old in (("new", False), ("old", True)):
        o = Origin(env, name="origin-" + tag, extra=["--compact-after", "1"],
                   proc_env={"HM_TEST_SNAP_VERSION": "3"} if old else None)
        r = ctl(o, "apply", "-", input=json.dumps({"changes": changes}).encode(),
                timeout=T(300))
        eq(r.rc, 0, "apply: %r" % r)
        seq = o.status()["seq"]
        ht.wait_for(lambda: o.status()["snapshot_seq"] == seq, T(60),
                    "a snapshot at seq %d" % seq)
        e = Edge(env, o, name="edge-" + tag)
        wait_converged(o, [e])
        st = e.status()
        eq(st["certs"], 300, "%s format: every certificate on the edge" % tag)
        eq(st["snapshots"], 1, "%s format: loaded from the snapshot" % tag)
        eq(st["digest_mismatches"], 0, "%s format: the origin's digest" % tag)
        if old:
            check(st["snapshot_restarts"] >= 1, "the old format grows the store by loading "
                  "again: %d" % st["snapshot_restarts"])
        else:
            eq(st["snapshot_restarts"], 0, "sized once")
        e.proc.stop()
        o.stop()


def test_full_file_system_under_the_store(env):
    """A certificate store that cannot grow (a full /run) is handled as the table is: the batch
    is not applied, the last version stays for the routers, status says why, and the edge
    catches up on its own once there is room."""
    mnt = env.path("fs")
    if not ht.mount_tmpfs(env, mnt):
        return
    p = make_pki(env)
    o = Origin(env)
    e = Edge(env, o, table=os.path.join(mnt, "hermod.table"))
    eq(ctl(o, "cert", "put", "shop.example.com", p.exact.crt, p.exact.key).rc, 0, "first put")
    wait_converged(o, [e])
    before = e.status()
    store = before["cert_store"]
    eq(before["table_error"], None, "table_error while there is room")
    st = os.statvfs(mnt)
    filler = os.path.join(mnt, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (st.f_bavail * st.f_frsize - 16 * 1024))
    # More than the store's first megabyte of heap: it must reserve more.
    chain, key = open(p.rsa.crt).read(), open(p.rsa.key).read()
    o.apply([{"op": "cert.put", "name": "rsa.example.com", "cert": chain, "key": key}] +
            [{"op": "cert.put", "name": "h%d.apps.example.com" % i,
              "cert": open(p.wild.crt).read(), "key": open(p.wild.key).read()}
             for i in range(600)])
    ht.wait_for(lambda: e.status()["table_error"] is not None, T(10),
                "the edge to report that it cannot write the store")
    st = e.status()
    check("space" in st["table_error"], "table_error: %r" % st["table_error"])
    check(e.proc.alive(), "the edge died")
    eq(st["seq"], before["seq"], "seq the edge reports")
    eq(peek_store(store)["certs"], 1, "the store at the path keeps its last version")
    os.unlink(filler)
    wait_converged(o, [e], T(30), "the edge once there is room again")
    eq(e.status()["table_error"], None, "table_error once written")
    eq(peek_store(store)["certs"], 602, "every certificate")


def test_squatted_store_refused(env):
    """A store file someone else owns, or that others may read, is refused: the edge does not
    start (nor touch it) and says why."""
    o = Origin(env)
    table = env.path("sq.table")
    store = env.path("sq.certs")
    with open(store, "wb") as f:
        f.write(b"x" * 8192)
    os.chmod(store, 0o644)
    e = Edge(env, o, name="sq", table=table, wait=False)
    code = e.proc.wait(T(10))
    e.proc.expected_exit = True
    check(code not in (None, 0), "the edge refuses to start")
    check("refusing the certificate store" in e.proc.tail() and "readable by others" in
          e.proc.tail(), e.proc.tail())
    eq(open(store, "rb").read(), b"x" * 8192, "the file is untouched")
    os.chown(store, 12345, 12345)
    os.chmod(store, 0o600)
    e = Edge(env, o, name="sq2", table=table, wait=False)
    code = e.proc.wait(T(10))
    e.proc.expected_exit = True
    check(code not in (None, 0), "refused when owned by another user")
    check("owned by uid 12345" in e.proc.tail(), e.proc.tail())


def test_ticket_keys(env):
    """The origin makes ticket keys, rotates them every period keeping the previous one, and
    every edge's store has the same keys: current first (encrypts), then next, then previous."""
    o = Origin(env, extra=["--ticket-key-rotation", "2s"])
    e1 = Edge(env, o, name="e1")
    e2 = Edge(env, o, name="e2")
    wait_converged(o, [e1, e2])
    first = peek_store(e1.status()["cert_store"])
    check(first["ticket_keys"] >= 2, first)
    # Wait for a rotation to reach both edges.
    def rotated():
        a = peek_store(e1.status()["cert_store"])
        return a if a["ticket_keys"] == 3 and a["key_names"][0] != first["key_names"][0] \
            else None
    a = ht.wait_for(rotated, T(20), "a ticket key rotation on the edge")
    wait_converged(o, [e1, e2])
    b = peek_store(e2.status()["cert_store"])
    eq(b["key_names"], peek_store(e1.status()["cert_store"])["key_names"],
       "both nodes have the same keys")
    # The key that encrypted before the rotation still decrypts: it is now in the list.
    check(first["key_names"][0] in a["key_names"], "previous key kept: %s %s" % (first, a))
    # After one more rotation the old current key is gone (it served its extra period).
    def gone():
        c = peek_store(e1.status()["cert_store"])
        return c if first["key_names"][0] not in c["key_names"] else None
    ht.wait_for(gone, T(20), "the oldest key to age out")
    check(o.status()["ticket_rotations"] >= 2, o.status())
    # Never in the routing table, which is world-readable.
    peek = e1.peek()
    check("tls-ticket" not in json.dumps(peek), "ticket keys not in the table")
    eq(e1.status()["secrets"], 1, "the table holds only the affinity secret")


def peek_store(path, *hosts):
    d = cert_peek(path, *hosts)
    OUTPUTS.append(json.dumps(d))
    return d


def check_no_keys(env, p):
    """No private key's base64 in any output seen so far, nor in any process's log."""
    keys = []
    for c in (p.exact, p.exact2, p.rsa, p.wild, p.dflt, p.expired, p.future, p.expiring):
        keys += key_body(c.key)
    check(len(keys) > 20, "key lines to look for")
    logs = [proc.stdout() + proc.stderr() for proc in env.processes]
    for text in OUTPUTS + logs:
        for k in keys:
            check(k not in text, "key material in an output: %r" % text[:200])


if __name__ == "__main__":
    ht.run(globals())

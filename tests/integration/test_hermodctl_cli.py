"""hermodctl (issue 3, ../shared/CONTRACT.md): every control and admin command, the exit codes
(0 done, 1 rejected with the origin's reason on stderr, 2 usage, 3 cannot reach), --json,
HERMOD_CONTROL / HERMOD_ADMIN, human-readable tables, and apply (stdin, files, multi-part,
all-or-nothing).
"""

import json
import time

import hermod_test as ht
from hermod_test import T, check, eq
from syncd_util import Edge, Origin, wait_converged


def setup(env):
    o = Origin(env)
    e = Edge(env, o)
    eq(o.ctl("app", "put", "web").rc, 0, "app put")
    eq(o.ctl("domain", "put", "www.example.com", "web").rc, 0, "domain put")
    eq(o.ctl("dyno", "put", "web", "web.1", "10.0.0.1:5000").rc, 0, "dyno put")
    wait_converged(o, [e])
    return o, e


def unchanged(o, before, what):
    st = o.status()
    eq((st["seq"], st["digest"]), (before["seq"], before["digest"]), "state after " + what)


def test_control_commands_and_output(env):
    o, e = setup(env)
    r = o.ctl("app", "put", "api", "--maintenance", "on", "--affinity", "on", "--balance",
              "least-conn")
    eq(r.rc, 0, "app put with flags (%r)" % r)
    eq(r.out.strip(), "seq 4", "hermodctl prints the seq it was given")
    r = o.ctl("--json", "dyno", "put", "api", "worker.3", "[2001:db8::1]:9000", "--state",
              "crashed")
    eq(r.rc, 0, "dyno put --json")
    j = r.json()
    eq((j["ok"], j["seq"], j["changes"], j["epoch"]), (True, 5, 1, o.status()["epoch"]),
       "--json answer")
    eq(o.ctl("domain", "put", "*.API.example.com", "api").rc, 0, "wildcard domain")
    wait_converged(o, [e])
    lk = ht.admin_request(e.admin, "lookup x.api.example.com")
    eq((lk["app"], lk["maintenance"], lk["affinity"], lk["balance"]),
       ("api", True, True, "least-conn"), "app settings")
    eq(lk["dynos"], [{"name": "worker.3", "addr": "[2001:db8::1]:9000", "state": "crashed"}],
       "dynos")
    eq(o.ctl("dyno", "rm", "api", "worker.3").rc, 0, "dyno rm")
    eq(o.ctl("domain", "rm", "*.api.example.com").rc, 0, "domain rm")
    eq(o.ctl("app", "rm", "web").rc, 0, "app rm")
    wait_converged(o, [e])
    st = e.status()
    eq((st["apps"], st["domains"], st["dynos"]), (1, 0, 0), "app rm cascades")


def test_rejections(env):
    o, e = setup(env)
    before = o.status()
    cases = [
        (["dyno", "put", "nope", "web.1", "10.0.0.1:80"], "no such app"),
        (["domain", "put", "x.example.com", "nope"], "no such app"),
        (["dyno", "rm", "web", "web.9"], "no such dyno"),
        (["domain", "rm", "nowhere.example.com"], "no such domain"),
        (["app", "rm", "ghost"], "no such app"),
        (["dyno", "put", "web", "web.2", "localhost:80"], "invalid dyno address"),
        (["dyno", "put", "web", "web.2", "10.0.0.1:0"], "invalid dyno address"),
        (["dyno", "put", "web", "web", "10.0.0.1:80"], "invalid dyno name"),
        (["app", "put", "Web"], "invalid app name"),
        (["app", "put", "-x"], None),  # looks like a flag: usage
        (["domain", "put", "bad_host..com", "web"], "invalid hostname"),
    ]
    for args, reason in cases:
        r = o.ctl(*args)
        if reason is None:
            eq(r.rc, 2, "hermodctl %s (%r)" % (" ".join(args), r))
            continue
        eq(r.rc, 1, "hermodctl %s (%r)" % (" ".join(args), r))
        check(reason in r.err, "stderr of %s should say %r: %r" % (args, reason, r.err))
        eq(len(r.err.strip().splitlines()), 1, "one line on stderr")
    r = o.ctl("--json", "dyno", "put", "nope", "web.1", "10.0.0.1:80")
    eq(r.rc, 1, "--json rejection")
    j = r.json()
    eq((j["ok"], j["code"], j["index"]), (False, "ENOAPP", 0), "--json rejection fields")
    check("no such app" in j["error"], j)
    unchanged(o, before, "rejections")
    eq(o.status()["rejected"] >= 5, True, "rejections counted by the origin")


def test_usage_errors(env):
    o = Origin(env)
    for args in ([], ["app"], ["app", "put"], ["app", "frob", "x"], ["dyno", "put", "a", "b"],
                 ["--bogus", "status"], ["domain", "put", "x.com", "web", "--maintenance", "on"],
                 ["app", "put", "web", "--state", "up"], ["app", "put", "web", "--maintenance",
                                                         "maybe"],
                 ["apply"], ["apply", "a", "b"], ["status", "now"], ["lookup"], ["bounce"],
                 ["--timeout", "soon", "status"], ["apply", env.path("missing.json")]):
        r = o.ctl(*args)
        eq(r.rc, 2, "hermodctl %s (%r)" % (" ".join(args), r))
        check(r.err.startswith("hermodctl: ") and len(r.err.strip().splitlines()) == 1,
              "one-line usage error: %r" % r.err)
    r = o.ctl("--help")
    check(r.rc == 0 and "apply FILE" in r.out and "--control" in r.out, "--help: %r" % r)


def test_cannot_reach(env):
    port = ht.free_port()
    o = Origin(env)
    t0 = time.monotonic()
    r = o.ctl("--control", "tcp://127.0.0.1:%d" % port, "--timeout", "500ms", "app", "put", "x",
              control=False)
    dt = time.monotonic() - t0
    eq(r.rc, 3, "unreachable origin (%r)" % r)
    check("cannot reach" in r.err, r.err)
    check(dt < T(5), "bounded wait: %.1fs" % dt)
    r = o.ctl("--admin", env.path("nothing.sock"), "--timeout", "300ms", "status")
    eq(r.rc, 3, "unreachable admin socket (%r)" % r)
    check("cannot reach" in r.err, r.err)


def test_a_stuck_step_is_given_up(env):
    """hermodctl's watchdog: a step that waits on libnng past its budget (here the process is
    stopped while it dials an origin that is not there, --timeout 5s, and let go 17 s later,
    past the 5 s and the watchdog's 10 s slack) ends with exit 3 and says which step was
    stuck and where its main thread waited, instead of hanging whoever runs it."""
    import os
    import signal
    import subprocess
    port = ht.free_port()
    p = subprocess.Popen([ht.binary("hermodctl"), "--control", "tcp://127.0.0.1:%d" % port,
                          "--insecure-plaintext", "--timeout", "5s", "app", "put", "x"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # nng's threads exist once the socket is open, which is after the watchdog is armed.
        def nng_threads():
            for t in os.listdir("/proc/%d/task" % p.pid):
                with open("/proc/%d/task/%s/comm" % (p.pid, t)) as f:
                    if f.read().startswith("nng:"):
                        return True
            return False
        ht.wait_for(nng_threads, T(5), "hermodctl to open its socket")
        p.send_signal(signal.SIGSTOP)
        time.sleep(17)
        p.send_signal(signal.SIGCONT)
        out, err = p.communicate(timeout=T(10))
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    err = err.decode(errors="replace")
    eq(p.returncode, 3, "exit 3 (%s)" % err)
    check("stuck in libnng while reaching an origin" in err, err)
    where = err.split("where it waited:\n", 1)[-1].splitlines()
    check(len([ln for ln in where if "[0x" in ln]) >= 3, "the main thread's stack: %s" % err)


def test_environment_defaults(env):
    o, e = setup(env)
    r = o.ctl("app", "put", "envapp", control=False, env={"HERMOD_CONTROL": o.control})
    eq(r.rc, 0, "HERMOD_CONTROL (%r)" % r)
    wait_converged(o, [e])
    r = o.ctl("--json", "status", control=False, env={"HERMOD_ADMIN": e.admin})
    eq(r.rc, 0, "HERMOD_ADMIN (%r)" % r)
    eq(r.json()["role"], "edge", "status via HERMOD_ADMIN")
    r = o.ctl("--admin", o.admin, "--json", "status", control=False,
              env={"HERMOD_ADMIN": e.admin})
    eq(r.json()["role"], "origin", "--admin wins over HERMOD_ADMIN")


def test_admin_commands_human_and_json(env):
    o, e = setup(env)
    adm = ["--admin", e.admin]
    r = o.ctl(*adm, "status")
    eq(r.rc, 0, "status")
    check("seq" in r.out and "digest" in r.out and "edge" in r.out, r.out)
    r = o.ctl(*adm, "lookup", "WWW.example.com")
    eq(r.rc, 0, "lookup")
    check("web.1" in r.out and "10.0.0.1:5000" in r.out and "DYNO" in r.out, r.out)
    r = o.ctl(*adm, "--json", "lookup", "www.example.com")
    eq(r.json()["app"], "web", "lookup --json")
    r = o.ctl(*adm, "lookup", "unknown.example.org")
    eq(r.rc, 1, "lookup of an unknown host")
    check("no app for this host" in r.err, r.err)
    r = o.ctl(*adm, "--json", "lookup", "unknown.example.org")
    eq((r.rc, r.json()), (1, {"error": "no app for this host"}), "--json error")
    r = o.ctl(*adm, "dump")
    eq(r.rc, 0, "dump")
    for word in ("APP", "DOMAIN", "DYNO", "www.example.com", "web.1"):
        check(word in r.out, "dump output lacks %r:\n%s" % (word, r.out))
    r = o.ctl(*adm, "--json", "dump")
    d = r.json()
    eq((len(d["apps"]), len(d["domains"]), len(d["dynos"])), (1, 1, 1), "dump --json")


def test_apply(env):
    o, e = setup(env)
    batch = {"changes": [{"op": "app.put", "app": "b"},
                         {"op": "domain.put", "domain": "b.example.com", "app": "b"},
                         {"op": "dyno.put", "app": "b", "dyno": "web.1", "addr": "10.1.0.1:80"}]}
    r = o.ctl("apply", "-", input=json.dumps(batch).encode())
    eq((r.rc, r.out.strip()), (0, "seq 4"), "apply from stdin (%r)" % r)
    path = env.write("batch.json", json.dumps({"changes": [{"op": "app.rm", "app": "b"}]}))
    eq(o.ctl("apply", path).rc, 0, "apply FILE")
    before = o.status()
    # All or nothing: a change that fails validation at the origin rejects the whole batch.
    bad = {"changes": [{"op": "app.put", "app": "c"},
                       {"op": "dyno.put", "app": "c", "dyno": "web.1", "addr": "10.2.0.1:80"},
                       {"op": "domain.put", "domain": "c.example.com", "app": "c"},
                       {"op": "dyno.rm", "app": "c", "dyno": "web.7"}]}
    r = o.ctl("--json", "apply", "-", input=json.dumps(bad).encode())
    eq(r.rc, 1, "a batch with a bad change (%r)" % r)
    eq(r.json()["index"], 3, "index of the change at fault")
    check("change 3" in r.err and "no such dyno" in r.err, r.err)
    unchanged(o, before, "a rejected batch")
    # A change that breaks the grammar is found before anything is sent.
    batches = o.status()["batches"]
    r = o.ctl("apply", "-", input=b'{"changes": [{"op": "app.put", "app": "ok"}, '
                                   b'{"op": "dyno.put", "app": "ok", "dyno": "x", '
                                   b'"addr": "1.2.3.4:5"}]}')
    eq(r.rc, 1, "grammar error in the file (%r)" % r)
    check("change 1" in r.err, r.err)
    eq(o.status()["batches"], batches, "nothing was sent")
    for text in (b"not json", b'{"changes": [', b'{"changes": [{"op": "app.put"}]}',
                 b'{"changes": [{"op": "fly", "app": "a"}]}'):
        r = o.ctl("apply", "-", input=text)
        eq(r.rc, 1, "malformed batch %r (%r)" % (text, r))
    r = o.ctl("apply", "-", input=b'{"changes": []}')
    eq(r.rc, 0, "an empty batch does nothing (%r)" % r)
    unchanged(o, before, "bad and empty batches")
    wait_converged(o, [e])


def test_multi_part_apply(env):
    o, e = setup(env)
    n = 40000  # more than HM_PROTO_MAX_CHANGES: three parts under one request
    changes = [{"op": "app.put", "app": "many"}]
    changes += [{"op": "dyno.put", "app": "many", "dyno": "w.%d" % i,
                 "addr": "10.%d.%d.%d:80" % (i >> 16, i >> 8 & 255, i & 255)} for i in range(n)]
    before = o.status()
    bad = changes + [{"op": "dyno.rm", "app": "many", "dyno": "w.%d" % (n + 5)}]
    r = o.ctl("--json", "apply", "-", input=json.dumps({"changes": bad}).encode())
    eq(r.rc, 1, "a multi-part batch with a bad last change (%r)" % r)
    eq(r.json()["index"], n + 1, "index across parts")
    unchanged(o, before, "a rejected multi-part batch")
    r = o.ctl("--json", "apply", "-", input=json.dumps({"changes": changes}).encode())
    eq(r.rc, 0, "multi-part apply (%r)" % r)
    eq((r.json()["seq"], r.json()["changes"]), (before["seq"] + 1, n + 1), "one seq for all")
    wait_converged(o, [e], T(20))
    eq(e.status()["dynos"], n + 1, "dynos on the edge")


if __name__ == "__main__":
    ht.run(globals())

"""Deployment files (issue 5): deploy/systemd/*.service and deploy/examples/*.json against the real
programs.

* every unit passes `systemd-analyze verify` (when systemd is installed), with ExecStart pointed
  at the built programs; without it, the units are parsed and their essentials checked;
* every flag of every ExecStart is one the program documents in --help, and the program accepts
  the example config the unit names (`--config FILE --help` parses and validates every key and
  value without starting);
* every key of every example config is a documented option, and the three examples, with only
  their addresses and paths moved to loopback and a temp dir, run a working node: a change
  published with hermodctl is routed to a dyno;
* readiness: the units are Type=notify, so each program must send READY=1 on $NOTIFY_SOCKET once
  it really serves (sd_notify's datagram protocol, common/sdnotify.h).
"""

import glob
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time

import hermod_test as ht
from hermod_test import T, check, eq, fail, timeout, wait_for
from pki import cluster_pki

DEPLOY = os.path.join(ht.SRC_ROOT, "deploy")
UNITS = sorted(glob.glob(os.path.join(DEPLOY, "systemd", "*.service")))
EXAMPLES = os.path.join(DEPLOY, "examples")
# What each unit runs: the installed path maps to the build's program.
INSTALLED = {"/usr/bin/hermod-syncd": "hermod-syncd", "/usr/bin/hermod-router": "hermod-router"}


def read_unit(path):
    """A unit file as {section: [(key, value), ...]} (repeated keys kept)."""
    out, sec = {}, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                sec = line[1:-1]
                out.setdefault(sec, [])
                continue
            check(sec is not None and "=" in line, "%s: bad line %r" % (path, raw))
            k, _, v = line.partition("=")
            out[sec].append((k.strip(), v.strip()))
    return out


def unit_get(unit, sec, key):
    return [v for k, v in unit.get(sec, []) if k == key]


def help_text(argv):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    p = subprocess.run(argv + ["--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=T(10), env=env)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def execstart(unit_path):
    """(argv with the build's program, config path) of a unit's ExecStart."""
    unit = read_unit(unit_path)
    starts = unit_get(unit, "Service", "ExecStart")
    eq(len(starts), 1, "%s: ExecStart lines" % os.path.basename(unit_path))
    argv = shlex.split(starts[0])
    check(argv[0] in INSTALLED, "%s runs %s, not a hermod program" % (unit_path, argv[0]))
    argv[0] = ht.binary(INSTALLED[argv[0]])
    config = None
    if "--config" in argv:
        config = argv[argv.index("--config") + 1]
    return argv, config


def example_for(config_path):
    """deploy/examples/X.json for a unit's /etc/hermod/X.json."""
    check(config_path and config_path.startswith("/etc/hermod/"),
          "a unit's --config should live in /etc/hermod: %r" % config_path)
    p = os.path.join(EXAMPLES, os.path.basename(config_path))
    check(os.path.isfile(p), "no example config %s for %s" % (p, config_path))
    return p


def test_every_unit_and_example_is_covered(env):
    names = sorted(os.path.basename(u) for u in UNITS)
    eq(names, ["hermod-edge.service", "hermod-origin.service", "hermod-router.service"],
       "units in deploy/systemd")
    used = set()
    for u in UNITS:
        _, config = execstart(u)
        used.add(os.path.basename(example_for(config)))
    eq(sorted(used), sorted(os.path.basename(p) for p in glob.glob(os.path.join(EXAMPLES,
                                                                               "*.json"))),
       "example configs used by the units")


def test_units_verify(env):
    tool = shutil.which("systemd-analyze")
    units = {os.path.basename(u): read_unit(u) for u in UNITS}
    for name, unit in units.items():
        eq(unit_get(unit, "Service", "Type"), ["notify"], "%s Type=" % name)
        check(unit_get(unit, "Service", "Restart"), "%s: no Restart=" % name)
        eq(unit_get(unit, "Service", "User"), ["hermod"], "%s User=" % name)
        eq(unit_get(unit, "Service", "NoNewPrivileges"), ["yes"], "%s NoNewPrivileges=" % name)
        eq(unit_get(unit, "Service", "ProtectSystem"), ["strict"], "%s ProtectSystem=" % name)
        check(unit_get(unit, "Install", "WantedBy"), "%s: no WantedBy=" % name)
    # The router reads (and writes counters into) the table the edge creates with mode 0640,
    # and refuses one that another user owns: the same user.
    eq(unit_get(units["hermod-router.service"], "Service", "User"),
       unit_get(units["hermod-edge.service"], "Service", "User"), "router and edge users")
    # /run/hermod holds the table and the control socket (0660): the group, nobody else.
    for name, unit in units.items():
        eq(unit_get(unit, "Service", "RuntimeDirectory"), ["hermod"],
           "%s RuntimeDirectory=" % name)
        eq(unit_get(unit, "Service", "RuntimeDirectoryMode"), ["0750"],
           "%s RuntimeDirectoryMode=" % name)
    for name in ("hermod-origin.service", "hermod-edge.service"):
        eq(unit_get(units[name], "Service", "ExecReload"), ["/bin/kill -HUP $MAINPID"],
           "%s reloads its certificates on SIGHUP" % name)
    if tool is None:
        print("# systemd-analyze is not installed: units parsed and checked only", flush=True)
        return
    # verify wants ExecStart programs to exist: point them at the build.
    d = env.path("units")
    os.makedirs(d)
    for u in UNITS:
        text = open(u).read()
        for inst, prog in INSTALLED.items():
            text = text.replace(inst + " ", ht.binary(prog) + " ")
        with open(os.path.join(d, os.path.basename(u)), "w") as f:
            f.write(text)
    files = sorted(glob.glob(os.path.join(d, "*.service")))
    p = subprocess.run([tool, "verify", "--man=no"] + files, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=T(60))
    out = p.stdout.decode(errors="replace")
    ours = [ln for ln in out.splitlines() if "hermod" in ln]
    print("# systemd-analyze verify: rc %d, %d line(s) about hermod units" % (p.returncode,
                                                                            len(ours)),
          flush=True)
    check(p.returncode == 0 and not ours, "systemd-analyze verify (rc %d):\n%s" %
          (p.returncode, out))


def test_execstart_flags_and_example_configs(env):
    for u in UNITS:
        name = os.path.basename(u)
        argv, config = execstart(u)
        prog = argv[:2] if argv[1] in ("origin", "edge") else argv[:1]
        rc, text, err = help_text(prog)
        eq(rc, 0, "%s --help exit status (%s)" % (" ".join(prog), err))
        documented = set(re.findall(r"--([a-z][a-z0-9-]*)", text))
        for a in argv[len(prog):]:
            if a.startswith("--"):
                check(a[2:] in documented, "%s: ExecStart flag %s is not in `%s --help`" %
                      (name, a, " ".join(os.path.basename(x) for x in prog)))
        example = example_for(config)
        with open(example) as f:
            keys = json.load(f)
        for k in keys:
            check(k in documented and k not in ("config", "help"),
                  "%s: key %r is not an option of %s" % (os.path.basename(example), k,
                                                         " ".join(prog)))
        # The program parses and validates the example as the unit would pass it.
        run = [example if a == config else a for a in argv]
        rc, _, err = help_text(run)
        eq(rc, 0, "%s with %s (--help after parsing it): %s" % (name, example, err.strip()))


def loopback_configs(env):
    """The three examples with addresses and paths moved to loopback ports and env's temp dir
    (every key kept; the certificates are a PKI made for the test, the origin is dialed by its
    certificate's name, localhost); returns {name: path}."""
    ex = {n: json.load(open(os.path.join(EXAMPLES, n + ".json")))
          for n in ("origin", "edge", "router")}
    p_pub, p_sync = ht.free_port(), ht.free_port()
    pki = cluster_pki(env.path("pki"))

    def port_of(url):
        return int(url.rsplit(":", 1)[1])
    ports = {port_of(ex["origin"]["publish"]): p_pub, port_of(ex["origin"]["sync"]): p_sync}
    check(ex["origin"]["control"].startswith("ipc://") and all(
        ex[n][k].startswith("tls+tcp://") for n in ("origin", "edge") for k in ("publish",
                                                                              "sync")),
          "the examples use the secure defaults: control over ipc, publish and sync over TLS")
    o = dict(ex["origin"])
    o.update(control="ipc://" + env.path("control.sock"),
             publish="tls+tcp://127.0.0.1:%d" % p_pub, sync="tls+tcp://127.0.0.1:%d" % p_sync,
             data=env.path("origin-data"), admin=env.path("origin.sock"),
             **{"tls-cert": pki.origin.pem, "tls-ca": pki.cluster.crt})
    e = dict(ex["edge"])
    e.update(publish="tls+tcp://localhost:%d" % ports[port_of(ex["edge"]["publish"])],
             sync="tls+tcp://localhost:%d" % ports[port_of(ex["edge"]["sync"])],
             table=env.path("hermod.table"), admin=env.path("edge.sock"),
             **{"tls-cert": pki.edge1.pem, "tls-ca": pki.cluster.crt})
    r = dict(ex["router"])
    r.update(table=e["table"], listen="127.0.0.1:%d" % ht.free_port(),
             metrics="127.0.0.1:%d" % ht.free_port())
    out = {}
    for name, cfg, orig in (("origin", o, ex["origin"]), ("edge", e, ex["edge"]),
                            ("router", r, ex["router"])):
        eq(sorted(cfg), sorted(orig), "keys of the rewritten %s example" % name)
        out[name] = env.write(name + ".json", json.dumps(cfg, indent=2))
    return out, o, e, r


@timeout(60)
def test_examples_run_a_node(env):
    paths, o, e, r = loopback_configs(env)
    origin = env.start("origin", [ht.binary("hermod-syncd"), "origin", "--config",
                                  paths["origin"]])
    wait_for(lambda: ht.admin_ready(o["admin"]) or (not origin.alive() and fail(
        "origin exited:\n" + origin.tail())), T(10), "the origin from origin.json")
    edge = env.start("edge", [ht.binary("hermod-syncd"), "edge", "--config", paths["edge"]])
    wait_for(lambda: ht.admin_ready(e["admin"]) or (not edge.alive() and fail(
        "edge exited:\n" + edge.tail())), T(10), "the edge from edge.json")
    router = env.start("router", [ht.binary("hermod-router"), "--config", paths["router"]])
    port = int(r["listen"].rsplit(":", 1)[1])
    wait_for(lambda: ht.port_open(port) or (not router.alive() and fail(
        "router exited:\n" + router.tail())), T(10), "the router from router.json")
    d = env.dyno("web.1")
    batch = {"changes": [ht.ch_app("ex"), ht.ch_domain("ex.test", "ex"),
                         ht.ch_dyno("ex", "web.1", d.addr)]}
    eq(oct(os.stat(o["control"][len("ipc://"):]).st_mode & 0o777), oct(0o660),
       "the control socket's mode")
    p = subprocess.run([ht.binary("hermodctl"), "--control", o["control"], "--json", "apply",
                        "-"], input=json.dumps(batch).encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=T(30))
    eq(p.returncode, 0, "hermodctl apply (%s)" % p.stderr.decode(errors="replace"))
    seq = json.loads(p.stdout)["seq"]
    wait_for(lambda: (ht.admin_ready(e["admin"]) or {}).get("seq", 0) >= seq, T(10),
             "the edge to apply seq %d" % seq)
    resp = wait_for(lambda: (lambda x: x if x.status == 200 else None)(
        ht.http_get(port, "/hello", "ex.test")), T(5), "a 200 through the router")
    eq(resp.header("x-dyno"), "web.1", "the dyno that answered")
    mport = int(r["metrics"].rsplit(":", 1)[1])
    m = ht.http_get(mport, "/metrics", "127.0.0.1")
    eq(m.status, 200, "GET /metrics from router.json's metrics address")
    print("# examples: origin, edge and router ran from the example configs (addresses and "
          "paths moved to loopback) and routed a request", flush=True)


class NotifySocket:
    """A socket to receive sd_notify datagrams, as systemd does for a Type=notify unit."""

    def __init__(self, env, name):
        self.path = env.path(name + ".notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.msgs = []
        env.defer(self.sock.close)

    def poll(self):
        while True:
            try:
                self.msgs.append(self.sock.recv(4096).decode(errors="replace"))
            except BlockingIOError:
                return self.msgs

    def ready(self):
        return any("READY=1" in m.split("\n") for m in self.poll())


@timeout(60)
def test_ready_notification(env):
    """Type=notify units start only when the program says READY=1; a program that never does is
    killed by systemd after TimeoutStartSec."""
    missing = []
    for prog in ("hermod-syncd", "hermod-router"):
        with open(ht.binary(prog), "rb") as f:
            if b"NOTIFY_SOCKET" not in f.read():
                missing.append(prog)
    check(not missing, "%s never read $NOTIFY_SOCKET: the programs do not send sd_notify "
          "READY=1 yet (common/sdnotify.h), so their Type=notify units would be killed after "
          "TimeoutStartSec" % " and ".join(missing))
    paths, o, e, r = loopback_configs(env)
    port = int(r["listen"].rsplit(":", 1)[1])
    results = {}
    for name, argv, serving in (
            ("origin", [ht.binary("hermod-syncd"), "origin", "--config", paths["origin"]],
             lambda: ht.admin_ready(o["admin"])),
            ("edge", [ht.binary("hermod-syncd"), "edge", "--config", paths["edge"]],
             lambda: ht.admin_ready(e["admin"]) and os.path.exists(e["table"])),
            ("router", [ht.binary("hermod-router"), "--config", paths["router"]],
             lambda: ht.port_open(port))):
        ns = NotifySocket(env, name)
        t0 = time.monotonic()
        p = env.start(name, argv, extra_env={"NOTIFY_SOCKET": ns.path})
        try:
            wait_for(lambda: ns.ready() or (not p.alive() and fail(
                "%s exited:\n%s" % (name, p.tail()))), T(15),
                "%s to send READY=1 on $NOTIFY_SOCKET (its unit is Type=notify)" % name)
        except ht.TestFailure as ex:
            results[name] = str(ex)
            continue
        took = time.monotonic() - t0
        check(serving(), "%s said READY=1 before it serves" % name)
        results[name] = None
        print("# readiness: %s sent READY=1 %.0f ms after exec (%r)" % (
            name, took * 1e3, ns.msgs[:3]), flush=True)
    bad = {k: v for k, v in results.items() if v}
    check(not bad, "; ".join("%s: %s" % kv for kv in bad.items()))


if __name__ == "__main__":
    ht.run(globals())

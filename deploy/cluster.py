#!/usr/bin/env python3
"""A local hermod cluster in the foreground: what `./deploy/dev up` runs after building.

Starts, on loopback: one origin; two edge nodes, each an edge syncd with its own table and a
router on its own port; three sample dynos (tests/integration/dyno.py in "hello" mode). Publishes
an app with two domains, prints the commands to try, then streams the routers' access logs until
Ctrl-C (or SIGTERM), which stops everything it started and removes its temporary files.

The syncd sockets use mutual TLS (--no-tls: plaintext on loopback), with a throwaway PKI made with
the openssl command in the work dir, as docs/operations.md tells operators to: a cluster CA that
signs the origin's certificate (serverAuth, DNS localhost) and one per node (clientAuth), and a
control-plane CA (the origin's --control-ca) that signs hermodctl's certificate.

Ports (all on 127.0.0.1): syncd control/publish/sync --base, --base+1, --base+2 (7400-7402);
routers --router-port and the next one (8081, 8082); their metrics --metrics-port and the next
one (9181, 9182); dynos --dyno-port and the next two (5001-5003).

--ha (issue 13, docs/operations.md "Several origins"): no single point of failure in the control
tier. etcd (Debian's etcd-server; --etcd-members 1 or 3) on loopback, two origins sharing it
(`--store etcd:...`, each with its own cache directory), the edges following both (`--publish
URL,URL --sync URL,URL`) and hermodctl given both control URLs. The second origin's sockets are
--base+3 .. --base+5; etcd's client and peer ports follow (--base+6 on: two per member).
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BANNER_READY = "hermod is up"


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_port(port, timeout, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def admin(sock, cmd, timeout=1.0):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(sock)
        s.sendall(cmd.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def openssl(*args):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {args[0]}: {r.stderr.strip()[-300:]}")


def make_pki(d):
    """The throwaway PKI (see the module's docstring). Returns {name: path} of what the programs
    are given: ca, control_ca (certificates), origin, node1, node2, control (chain + key)."""
    os.makedirs(d, mode=0o700)

    def key(name):
        path = os.path.join(d, name + ".key")
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", path)
        return path

    def ca(name):
        crt = os.path.join(d, name + ".crt")
        openssl("req", "-x509", "-new", "-key", key(name), "-out", crt, "-days", "7",
                "-subj", f"/CN=hermod dev {name}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return crt

    def leaf(name, ca_name, usage, dns=None):
        k, csr = key(name), os.path.join(d, name + ".csr")
        crt, ext, pem = (os.path.join(d, name + x) for x in (".crt", ".ext", ".pem"))
        openssl("req", "-new", "-key", k, "-out", csr, "-subj", f"/CN={name}")
        with open(ext, "w") as f:
            f.write(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    f"extendedKeyUsage={usage}\n" +
                    (f"subjectAltName=DNS:{dns}\n" if dns else ""))
        ca_crt = os.path.join(d, ca_name + ".crt")
        openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey",
                os.path.join(d, ca_name + ".key"), "-CAcreateserial", "-out", crt,
                "-days", "7", "-extfile", ext)
        with open(pem, "w") as f:
            f.write(open(crt).read() + open(k).read())
        os.chmod(pem, 0o600)
        return pem

    out = {"ca": ca("cluster-ca"), "control_ca": ca("control-ca")}
    out["origin"] = leaf("origin", "cluster-ca", "serverAuth", "localhost")
    out["node1"] = leaf("node1", "cluster-ca", "clientAuth")
    out["node2"] = leaf("node2", "cluster-ca", "clientAuth")
    out["control"] = leaf("control", "control-ca", "clientAuth")
    return out


def shown(path):
    """A path as the user should type it: relative if under the current directory."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


class Cluster:
    def __init__(self, args):
        self.build = os.path.abspath(args.build)
        base = args.base
        self.router_ports = [args.router_port, args.router_port + 1]
        self.metrics_ports = [args.metrics_port, args.metrics_port + 1]
        self.dyno_ports = [args.dyno_port + i for i in range(3)]
        self.work = tempfile.mkdtemp(prefix="hermod-dev.")
        self.procs = []
        self.syncd = os.path.join(self.build, "syncd", "hermod-syncd")
        self.ctl = os.path.join(self.build, "syncd", "hermodctl")
        self.router = os.path.join(self.build, "router", "hermod-router")
        self.tls = not args.no_tls
        # The origin listens on 127.0.0.1; over TLS, peers dial it by its certificate's name.
        scheme, host = ("tls+tcp", "localhost") if self.tls else ("tcp", "127.0.0.1")
        self.pki = None
        self.nodes = []
        # --ha: a second origin and etcd; the lists below hold every origin's URLs.
        self.ha = args.ha
        self.etcd_members = args.etcd_members if args.ha else 0
        norigins = 2 if args.ha else 1
        self.syncd_ports = [base + i for i in range(3 * norigins)]
        self.etcd_ports = [base + 3 * norigins + i for i in range(2 * self.etcd_members)]
        self.origins = [{"name": "origin" if norigins == 1 else f"origin{k + 1}",
                         "listen": [f"{scheme}://127.0.0.1:{base + 3 * k + i}"
                                    for i in range(3)],
                         "dial": [f"{scheme}://{host}:{base + 3 * k + i}" for i in range(3)]}
                        for k in range(norigins)]
        self.control, self.publish, self.sync = (",".join(o["dial"][i] for o in self.origins)
                                                 for i in range(3))

    def log_path(self, name):
        return os.path.join(self.work, name + ".log")

    def start(self, name, argv, stdout=None):
        """Starts argv in a session of its own (a terminal's Ctrl-C reaches this script only; it
        then stops the children in order). Logs go to WORK/NAME.log; stdout=PIPE keeps stdout
        (a router's access log) for the console."""
        log = open(self.log_path(name), "wb")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                 stdout=stdout if stdout is not None else log,
                                 stderr=log, start_new_session=True)
        finally:
            log.close()
        p.hermod_name = name
        self.procs.append(p)
        return p

    def control_flags(self):
        """hermodctl's flags for the control socket (with its certificate when over TLS)."""
        flags = ["--control", self.control]
        if self.pki:
            flags += ["--tls-cert", self.pki["control"], "--tls-ca", self.pki["ca"]]
        return flags

    def tls_flags(self, who):
        if not self.pki:
            return []
        flags = ["--tls-cert", self.pki[who], "--tls-ca", self.pki["ca"]]
        return flags + (["--control-ca", self.pki["control_ca"]] if who == "origin" else [])

    def hermodctl(self, *args, stdin=None):
        r = subprocess.run([self.ctl, *self.control_flags(), *args], input=stdin,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"hermodctl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout.strip()

    def start_etcd(self):
        """The etcd members on loopback (--ha); returns the client URLs. Data on the work dir."""
        etcd = shutil.which("etcd")
        if etcd is None:
            raise RuntimeError("--ha needs etcd (Debian's etcd-server; ./deploy/dev installs it)")
        n = self.etcd_members
        client = [f"http://127.0.0.1:{self.etcd_ports[2 * i]}" for i in range(n)]
        peer = [f"http://127.0.0.1:{self.etcd_ports[2 * i + 1]}" for i in range(n)]
        initial = ",".join(f"etcd{i + 1}={peer[i]}" for i in range(n))
        members = [self.start(f"etcd{i + 1}", [
            etcd, "--name", f"etcd{i + 1}", "--data-dir", os.path.join(self.work, f"etcd{i + 1}"),
            "--listen-client-urls", client[i], "--advertise-client-urls", client[i],
            "--listen-peer-urls", peer[i], "--initial-advertise-peer-urls", peer[i],
            "--initial-cluster", initial, "--initial-cluster-token", "hermod-dev",
            "--initial-cluster-state", "new", "--enable-v2=false"]) for i in range(n)]
        for p, port in zip(members, self.etcd_ports[0::2]):
            if not wait_port(port, 30, p):
                raise RuntimeError(f"{p.hermod_name} does not listen on {port}: see "
                                   f"{self.log_path(p.hermod_name)}")
        return client

    def check_store(self):
        """--ha: refuses clearly, before anything starts, if this build's origin has no store."""
        r = subprocess.run([self.syncd, "origin", "--help"], capture_output=True, text=True,
                           timeout=30)
        if "--store" not in r.stdout:
            raise RuntimeError("--ha needs hermod-syncd origin with the etcd store (--store "
                               "etcd:URL, issue 13); this build has none")

    def up(self):
        for prog in (self.syncd, self.ctl, self.router):
            if not os.access(prog, os.X_OK):
                raise RuntimeError(f"{prog} is not built (--build {self.build})")
        for port in (self.syncd_ports + self.etcd_ports + self.router_ports +
                     self.metrics_ports + self.dyno_ports):
            if not port_free(port):
                raise RuntimeError(f"port {port} is in use: stop what uses it, or choose other "
                                   "ports (--base, --router-port, --metrics-port, --dyno-port)")
        store = []
        if self.ha:
            self.check_store()
            store = ["--store", "etcd:" + ",".join(self.start_etcd())]
        if self.tls:
            self.pki = make_pki(os.path.join(self.work, "pki"))
        started = []
        for o in self.origins:
            started.append(self.start(o["name"], [
                self.syncd, "origin", "--control", o["listen"][0], "--publish", o["listen"][1],
                "--sync", o["listen"][2], "--data", os.path.join(self.work, o["name"]),
                "--admin", os.path.join(self.work, o["name"] + ".sock"), "--node", o["name"],
                *store, *self.tls_flags("origin")]))
        origin = started[0]
        for i in (1, 2):
            node = {"name": f"node{i}", "port": self.router_ports[i - 1],
                    "metrics": self.metrics_ports[i - 1],
                    "table": os.path.join(self.work, f"node{i}.table"),
                    "admin": os.path.join(self.work, f"node{i}.sock")}
            self.nodes.append(node)
            node["edge"] = self.start(f"edge{i}", [
                self.syncd, "edge", "--publish", self.publish, "--sync", self.sync,
                "--table", node["table"], "--admin", node["admin"], "--node", node["name"],
                *self.tls_flags(node["name"])])
            # No --affinity-secret-file: the routers use the cluster's secret from the table.
            node["router"] = self.start(f"router{i}", [
                self.router, "--table", node["table"],
                "--listen", f"127.0.0.1:{node['port']}", "--workers", "2",
                "--metrics", f"127.0.0.1:{node['metrics']}"], stdout=subprocess.PIPE)
        dyno = os.path.join(ROOT, "tests", "integration", "dyno.py")
        self.dynos = []
        for i, port in enumerate(self.dyno_ports, 1):
            self.dynos.append(self.start(f"web.{i}", [
                sys.executable, dyno, "--host", "127.0.0.1", "--port", str(port),
                "--name", f"web.{i}", "--mode", "hello"]))
        for p, port in ([(d, port) for d, port in zip(self.dynos, self.dyno_ports)] +
                        [(n["router"], n["port"]) for n in self.nodes] +
                        [(n["router"], n["metrics"]) for n in self.nodes]):
            if not wait_port(port, 15, p):
                raise RuntimeError(f"{p.hermod_name} does not listen on {port}: see "
                                   f"{self.log_path(p.hermod_name)}")
        for p in started:
            if p.poll() is not None:
                raise RuntimeError(f"{p.hermod_name} exited: see {self.log_path(p.hermod_name)}")
        batch = {"changes": [
            {"op": "app.put", "app": "demo"},
            {"op": "domain.put", "domain": "demo.example.com", "app": "demo"},
            {"op": "domain.put", "domain": "*.demo.example.com", "app": "demo"},
        ] + [{"op": "dyno.put", "app": "demo", "dyno": f"web.{i}", "addr": f"127.0.0.1:{port}",
              "state": "up"} for i, port in enumerate(self.dyno_ports, 1)]}
        deadline = time.time() + 15
        while True:
            try:
                seq = json.loads(self.hermodctl("--json", "apply", "-",
                                                stdin=json.dumps(batch)))["seq"]
                break
            except RuntimeError:
                if time.time() > deadline or any(p.poll() is not None for p in started):
                    raise
                time.sleep(0.2)
        # Both edges must have applied it before we say "try this".
        deadline = time.time() + 15
        for node in self.nodes:
            while True:
                try:
                    if admin(node["admin"], "status").get("seq", 0) >= seq:
                        break
                except (OSError, ValueError):
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"{node['name']} did not get the sample app: see "
                                       f"{self.work}/edge*.log")
                time.sleep(0.05)
        return seq

    def banner(self, seq):
        ctl = shlex.quote(shown(self.ctl))
        c = " ".join(shlex.quote(a) for a in self.control_flags())
        n1, n2 = self.nodes
        a1, a2 = n1["admin"], n2["admin"]
        u1, u2 = f"http://127.0.0.1:{n1['port']}", f"http://127.0.0.1:{n2['port']}"
        jar = os.path.join(self.work, "cookies")
        d2 = f"127.0.0.1:{self.dyno_ports[1]}"
        dynos = ", ".join(f"web.{i} 127.0.0.1:{p}" for i, p in enumerate(self.dyno_ports, 1))
        origins = "\n".join(
            f"  {o['name']:<8} control {o['dial'][0]}  publish {o['dial'][1]}  sync {o['dial'][2]}"
            f"\n           admin {self.work}/{o['name']}.sock  logs {self.work}/*.log"
            for o in self.origins)
        if self.ha:
            origins += (f"\n  etcd     {self.etcd_members} member(s), client ports "
                        f"{', '.join(str(p) for p in self.etcd_ports[0::2])}: both origins "
                        f"share it; edges follow both, hermodctl tries both")
        print(f"""
{BANNER_READY} (state at seq {seq}); work dir {self.work}
{origins}
  trust    {"mutual TLS; CA, certificates and keys in " + self.work + "/pki (docs/security.md)"
            if self.tls else "plaintext on loopback (--no-tls)"}
  node1    router {u1}  metrics http://127.0.0.1:{n1['metrics']}/metrics  admin {a1}
  node2    router {u2}  metrics http://127.0.0.1:{n2['metrics']}/metrics  admin {a2}
  dynos    {dynos} (app "demo": demo.example.com, *.demo.example.com)

Try:
  curl -i -H 'Host: demo.example.com' {u1}/
  curl -i -H 'Host: api.demo.example.com' {u2}/    # the wildcard domain, on node2
  curl -i -H 'Host: nope.example.com' {u1}/    # 404, No such app
  {ctl} --admin {a1} status
  {ctl} --admin {a2} lookup api.demo.example.com
  curl -s http://127.0.0.1:{n1['metrics']}/metrics    # Prometheus metrics of node1's router

Session affinity (a cookie signed with the cluster's secret sends a client to the same dyno on
every node; no configuration):
  {ctl} {c} app put demo --affinity on
  curl -s -c {jar} -b {jar} -H 'Host: demo.example.com' {u1}/
  curl -s -c {jar} -b {jar} -H 'Host: demo.example.com' {u2}/
  {ctl} {c} app put demo --affinity off

A dyno going down (routers stop sending it requests as soon as the edges have the change,
within milliseconds), and coming back:
  {ctl} {c} dyno put demo web.2 {d2} --state down
  for i in 1 2 3 4 5 6; do curl -s -H 'Host: demo.example.com' {u1}/; done
  {ctl} {c} dyno put demo web.2 {d2} --state up

Maintenance mode (503, code H80 in the access log), and back:
  {ctl} {c} app put demo --maintenance on
  curl -i -H 'Host: demo.example.com' {u2}/
  {ctl} {c} app put demo --maintenance off

Access logs follow (node1/node2). Ctrl-C stops everything and removes {self.work}.
""", flush=True)

    def follow_logs(self):
        def pump(node):
            for line in node["router"].stdout:
                sys.stdout.write(f"{node['name']} | {line.decode(errors='replace')}")
                sys.stdout.flush()
        for node in self.nodes:
            threading.Thread(target=pump, args=(node,), daemon=True).start()

    def watch(self):
        while True:
            for p in self.procs:
                if p.poll() is not None:
                    print(f"{p.hermod_name} exited with {p.returncode}; see "
                          f"{self.log_path(p.hermod_name)}", file=sys.stderr)
                    return 1
            time.sleep(0.5)

    def tails(self, n=8):
        """The last lines of every log, for a failure (the work dir is removed after)."""
        for p in self.procs:
            try:
                with open(self.log_path(p.hermod_name), "rb") as f:
                    lines = f.read().decode(errors="replace").splitlines()[-n:]
            except OSError:
                continue
            if lines:
                print(f"--- {p.hermod_name}.log (last lines)\n" +
                      "\n".join("  " + ln for ln in lines), file=sys.stderr)

    def down(self):
        """SIGTERM to each program in reverse start order (dynos, routers, edges, origin); what
        has not exited 10 s later is killed. Returns the names of programs that did not exit
        cleanly."""
        unclean = []
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                unclean.append(f"{p.hermod_name} (killed)")
            try:
                os.killpg(p.pid, signal.SIGKILL)  # anything left in its group (router workers)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
            if p.returncode not in (0, -signal.SIGTERM) and f"{p.hermod_name} (killed)" \
                    not in unclean:
                unclean.append(f"{p.hermod_name} (exit {p.returncode})")
        if unclean:
            self.tails(40)
        shutil.rmtree(self.work, ignore_errors=True)
        return unclean


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="the meson build directory (default: build/)")
    ap.add_argument("--base", type=int, default=7400,
                    help="first of the three syncd ports: control, publish, sync (7400)")
    ap.add_argument("--router-port", type=int, default=8081,
                    help="node1's router port; node2's is the next one (8081)")
    ap.add_argument("--metrics-port", type=int, default=9181,
                    help="node1's router metrics port; node2's is the next one (9181)")
    ap.add_argument("--dyno-port", type=int, default=5001,
                    help="first of the three dyno ports (5001)")
    ap.add_argument("--no-tls", action="store_true",
                    help="plaintext syncd sockets on loopback instead of mutual TLS")
    ap.add_argument("--ha", action="store_true",
                    help="etcd and two origins sharing it; edges and hermodctl use both")
    ap.add_argument("--etcd-members", type=int, choices=(1, 3), default=1,
                    help="etcd members with --ha (1)")
    args = ap.parse_args()
    cluster = Cluster(args)
    # Ctrl-C, SIGTERM and SIGHUP (terminal closed) stop the cluster. SIGINT is set explicitly:
    # a shell starts background jobs with it ignored, and Python keeps it so.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(0))
    rc = 0
    try:
        seq = cluster.up()
        cluster.banner(seq)
        cluster.follow_logs()
        rc = cluster.watch()
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        print(f"cluster: {e}", file=sys.stderr)
        rc = 1
    finally:
        if rc:
            cluster.tails()
        # A second Ctrl-C or SIGTERM while stopping must not leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nstopping", file=sys.stderr, flush=True)
        unclean = cluster.down()
        if unclean:
            print("cluster: did not stop cleanly: " + ", ".join(unclean), file=sys.stderr)
            rc = rc or 1
        print(f"stopped; removed {cluster.work}", file=sys.stderr, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

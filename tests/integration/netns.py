"""Network namespaces for multi-node tests: a private bridge, one namespace per node, veth pairs.

Every name carries this process's id, so concurrent test runs never collide, and everything is
removed on close() -- also when the test fails, and at the next start if a run was SIGKILLed
(leftovers whose pid is dead are swept). Addresses are in 10.X.0.0/24 on a bridge that is
attached to nothing else: no packet leaves the machine.

    with Network() as net:
        origin = net.add_node("origin")
        edge = net.add_node("edge1")
        p = edge.popen(["hermod-syncd", "edge", "--publish", f"tcp://{origin.ip}:7401", ...])
        net.cut(edge)      # link down: the node is unreachable
        net.heal(edge)     # link up again

Needs root and iproute2 (ip netns, ip link).
"""

import os
import re
import shutil
import signal
import subprocess
import time

PREFIX = "hmt"


def _ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def available():
    """True if this process can create namespaces (root with iproute2)."""
    if os.geteuid() != 0:
        return False
    try:
        return _ip("netns", "list", check=False).returncode == 0
    except FileNotFoundError:
        return False


def kill_namespace_pids(ns, timeout=5.0):
    """SIGKILLs every process still running in namespace ns and waits (up to timeout s) for them
    to be gone, so that deleting the namespace really frees it (a process left inside keeps the
    namespace, its veth and its addresses alive)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()
                if p.isdigit()]
        if not pids or time.monotonic() > deadline:
            return pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def sweep_leftovers():
    """Removes namespaces and bridges of earlier runs whose process is gone (killing whatever
    those runs left running inside them)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        m = re.match(rf"({PREFIX}(\d+)-\S+)", line)
        if m and not os.path.exists(f"/proc/{m.group(2)}"):
            kill_namespace_pids(m.group(1))
            _ip("netns", "del", m.group(1), check=False)
    for name in os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else []:
        m = re.match(rf"{PREFIX}(\d+)-", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        m = re.search(rf"\d+: ({PREFIX}(\d+)br)[:@]", line)
        if m and not os.path.exists(f"/proc/{m.group(2)}"):
            _ip("link", "del", m.group(1), check=False)


class Node:
    def __init__(self, net, name, index):
        self.net = net
        self.name = name
        self.ns = f"{PREFIX}{os.getpid()}-{name}"
        self.ip = f"{net.subnet}.{index}"
        # Interface names are limited to 15 bytes.
        self.veth_host = f"{PREFIX[:2]}{os.getpid() % 100000}v{index}"
        self.veth_node = "eth0"

    def argv(self, args):
        """args prefixed so that they run inside this node's namespace."""
        return ["ip", "netns", "exec", self.ns, *args]

    def set_hosts(self, names):
        """Names this node resolves ({name: ip}): `ip netns exec` bind-mounts
        /etc/netns/NS/hosts over /etc/hosts for what runs inside. Removed with the node."""
        d = f"/etc/netns/{self.ns}"
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n::1 localhost\n")
            for name, ip in names.items():
                f.write(f"{ip} {name}\n")

    def popen(self, args, **kwargs):
        return subprocess.Popen(self.argv(args), **kwargs)

    def run(self, args, **kwargs):
        return subprocess.run(self.argv(args), **kwargs)

    def __repr__(self):
        return f"Node({self.name} {self.ip})"


class Network:
    def __init__(self):
        if not available():
            raise RuntimeError("network namespaces need root and iproute2")
        sweep_leftovers()
        pid = os.getpid()
        self.bridge = f"{PREFIX}{pid}br"[:15]
        self.subnet = f"10.{20 + pid % 200}.{pid // 200 % 250}"
        self.nodes = []
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "up")

    def host_address(self):
        """Gives the bridge an address in the host's namespace (subnet.1), so that the test
        itself can reach the nodes (and they it); still attached to nothing else. Returns it."""
        ip = f"{self.subnet}.1"
        if not getattr(self, "host_ip", None):
            _ip("addr", "add", f"{ip}/24", "dev", self.bridge)
            self.host_ip = ip
        return ip

    def add_node(self, name):
        node = Node(self, name, len(self.nodes) + 2)
        self.nodes.append(node)
        _ip("netns", "add", node.ns)
        _ip("-n", node.ns, "link", "set", "lo", "up")
        _ip("link", "add", node.veth_host, "type", "veth", "peer", "name", node.veth_node,
            "netns", node.ns)
        _ip("link", "set", node.veth_host, "master", self.bridge)
        _ip("link", "set", node.veth_host, "up")
        _ip("-n", node.ns, "addr", "add", f"{node.ip}/24", "dev", node.veth_node)
        _ip("-n", node.ns, "link", "set", node.veth_node, "up")
        return node

    def cut(self, node):
        """Takes the node's link down: it keeps running but cannot reach or be reached."""
        _ip("link", "set", node.veth_host, "down")

    def heal(self, node):
        _ip("link", "set", node.veth_host, "up")

    def partition(self, a, b):
        """Every packet between nodes a and b dropped (a blackhole route to the other in each),
        while both keep their links to everyone else: a partition, not a dead node."""
        _ip("-n", a.ns, "route", "add", "blackhole", f"{b.ip}/32")
        _ip("-n", b.ns, "route", "add", "blackhole", f"{a.ip}/32")

    def unpartition(self, a, b):
        _ip("-n", a.ns, "route", "del", "blackhole", f"{b.ip}/32")
        _ip("-n", b.ns, "route", "del", "blackhole", f"{a.ip}/32")

    def close(self):
        for node in self.nodes:
            # Processes still running in the namespace would keep it alive: the test stops its
            # processes first (checking how they exit); whatever is left is killed here.
            kill_namespace_pids(node.ns)
            _ip("netns", "del", node.ns, check=False)
            shutil.rmtree(f"/etc/netns/{node.ns}", ignore_errors=True)
        _ip("link", "del", self.bridge, check=False)
        self.nodes = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

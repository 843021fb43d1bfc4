"""What the benchmarks on etcd share (bench/failover.py, bench/etcd_churn.py,
bench/etcd_measure.py): their figures depend on the disk etcd fsyncs to, so each keeps etcd's
data and the origins' under a directory on a real disk (--dir) and removes it, with every
process it started, however the run ends; and each prints the machine's load with its figures,
since another process's load skews them."""

import contextlib
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))

import etcd_util as eu  # noqa: E402
import hermod_test as ht  # noqa: E402


def load():
    """The 1, 5 and 15 minute load averages, for the header line of a run."""
    return " ".join("%.2f" % x for x in os.getloadavg())


@contextlib.contextmanager
def run_dir(name, dir):
    """Exits (with a message) unless etcd is installed; yields (env, root): a test Env named
    name and a new directory under dir. On the way out every process env started is stopped
    (problems printed), then env's and root's files are removed."""
    if not eu.available():
        sys.exit("etcd is not installed")
    env = ht.Env(name)
    root = tempfile.mkdtemp(prefix="hermod-%s-" % name, dir=dir)
    try:
        yield env, root
    finally:
        for p in env.teardown():
            print("# problem: %s" % p)
        env.remove()
        shutil.rmtree(root, ignore_errors=True)


def origin(env, root, cluster, name, extra=()):
    """etcd_util.origin, its data under root/name (on the disk under test)."""
    return eu.origin(env, cluster, name, extra, data=os.path.join(root, name))

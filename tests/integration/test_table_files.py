"""The routing table file and local users (issue 10, contract "Trust between nodes": Files).

The attack: an unprivileged user who creates the table file first (the old default was in
world-writable /dev/shm) hijacked the node's routing: the edge "resumed" the attacker's table
and the router served it, sending bank.example to the attacker. Now the edge and the router
refuse a table that is not owned by their own uid (or root), or that its group or others may
write, with a reason; the edge creates the table mode 0640.

The tests run as root, so "another user" is uid 65534 (nobody), set with chown.
"""

import json
import os
import stat
import subprocess
import sys

import hermod_test as ht
from hermod_test import T, check, eq, wait_for
from syncd_util import Edge, Origin, wait_converged

NOBODY = 65534


def squat(env, path, attacker_addr):
    """A valid table at path, routing bank.example to attacker_addr, as another user made it."""
    batch = {"changes": [{"op": "app.put", "app": "bank"},
                         {"op": "domain.put", "domain": "bank.example", "app": "bank"},
                         {"op": "dyno.put", "app": "bank", "dyno": "web.1",
                          "addr": attacker_addr}]}
    p = subprocess.run([ht.binary("hm-tablectl"), "--table", path, "apply", "-"],
                       input=json.dumps(batch).encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=T(20))
    eq(p.returncode, 0, "hm-tablectl: %r" % p.stderr)


def test_edge_refuses_a_squatted_table(env):
    attacker = env.dyno("web.1")
    table = env.path("squat.table")
    squat(env, table, attacker.addr)
    os.chown(table, NOBODY, NOBODY)
    os.chmod(table, 0o644)
    o = Origin(env)
    e = Edge(env, o, table=table, wait=False)
    wait_for(lambda: not e.proc.alive(), T(10), "the edge to refuse the table and exit")
    e.proc.expected_exit = True
    eq(e.proc.returncode, 1, "the edge's exit status")
    err = e.proc.stderr()
    check("owned by uid %d" % NOBODY in err and table in err,
          "the edge says why: %s" % err[-600:])
    eq(os.stat(table).st_uid, NOBODY, "the attacker's file is left alone")


def test_router_refuses_a_squatted_or_group_writable_table(env):
    attacker = env.dyno("web.1")
    table = env.path("squat.table")
    squat(env, table, attacker.addr)
    for owner, mode, why in ((NOBODY, 0o644, "owned by uid %d" % NOBODY),
                             (0, 0o664, "writable by its group"),
                             (0, 0o646, "writable by others")):
        os.chown(table, owner, owner)
        os.chmod(table, mode)
        r = env.router(table=table)
        resp = r.get("/", host="bank.example")
        eq(resp.status, 503, "a request for bank.example (uid %d, mode %o)" % (owner, mode))
        r.wait_log(code="H99")
        eq(len(attacker.requests()), 0, "the attacker's dyno got no request")
        wait_for(lambda: why in r.stderr(), T(10), "the router to log why (%s)" % why)
        r.stop()
    # Owned by us and not writable by others: served.
    os.chown(table, 0, 0)
    os.chmod(table, 0o640)
    r = env.router(table=table)
    eq(r.get("/", host="bank.example").status, 200, "a table we own")


def test_edge_creates_the_table_0640(env):
    o = Origin(env)
    old = os.umask(0)  # the mode is the program's choice, not the umask's
    try:
        e = Edge(env, o)
    finally:
        os.umask(old)
    o.apply([{"op": "app.put", "app": "a"}])
    wait_converged(o, [e])
    st = os.stat(e.table)
    eq(oct(stat.S_IMODE(st.st_mode)), oct(0o640), "the table's mode")
    eq(st.st_uid, os.geteuid(), "the table's owner")


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("# needs root (files owned by another user): skipped")
        sys.exit(77)
    ht.run(globals())

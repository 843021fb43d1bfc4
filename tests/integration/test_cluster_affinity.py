"""One affinity secret for the cluster (issue 10, contract "Trust between nodes").

Before: session affinity broke across nodes unless every router was handed the same secret file
by hand; without one each router signed cookies with a random key of its own. Now the origin
makes a 32-byte secret at its first start, keeps it in its state (journal, snapshots), delivers it
to edges (in snapshots, and as a change for a data directory that had none), and routers read
it from their node's table. It is never shown: not in dump, lookup or status.

* A cookie issued by the router of one node is honoured by the router of another, with no
  secret file; it survives an origin restart; --affinity-secret-file still overrides (and must
  hold 32 bytes).
* A data directory without a secret (made by an older build: HM_TEST_NO_SECRET=1 in test builds)
  gets one as its next batch, which edges apply as a change, not a resync.
"""

import json
import subprocess

import hermod_test as ht
from hermod_test import T, check, eq, wait_for
from syncd_util import Edge, Origin, wait_converged

HOST = "shop.example"
COOKIE = "hermod-session-affinity"


def publish_app(o, dynos):
    o.apply([{"op": "app.put", "app": "shop", "affinity": True},
             {"op": "domain.put", "domain": HOST, "app": "shop"}] +
            [{"op": "dyno.put", "app": "shop", "dyno": d.name, "addr": d.addr} for d in dynos])


def get(router, cookie=None):
    headers = [("Cookie", "%s=%s" % (COOKIE, cookie))] if cookie else None
    r = ht.http_get(router.port, "/echo", HOST, headers)
    eq(r.status, 200, "status through %s" % router.name)
    value = None
    for v in r.headers_all("Set-Cookie"):
        name, _, rest = v.partition("=")
        if name.strip() == COOKIE:
            value = rest.split(";")[0]
    return r.header("X-Dyno"), value


def honoured(router, cookie, dyno):
    """True if router sends a request carrying cookie to dyno without issuing a new cookie."""
    got, reissued = get(router, cookie)
    return got == dyno and reissued is None


def two_nodes(env, o, dynos):
    edges = [Edge(env, o, name="node%d" % i) for i in (1, 2)]
    wait_converged(o, edges)
    routers = [env.router(name="router%d" % i, table=e.table, workers=2)
               for i, e in zip((1, 2), edges)]
    return edges, routers


def test_a_cookie_from_one_node_is_honoured_on_another(env):
    o = Origin(env)
    dynos = [env.dyno("web.%d" % i) for i in range(1, 5)]
    publish_app(o, dynos)
    edges, (r1, r2) = two_nodes(env, o, dynos)
    dyno, cookie = get(r1)
    check(cookie is not None, "the first router issues a cookie")
    for _ in range(5):
        check(honoured(r2, cookie, dyno), "the other node's router honours it")
        check(honoured(r1, cookie, dyno), "and the first")
    # Durable: the origin restarted keeps it; a node that joins later has it.
    o.restart()
    late = Edge(env, o, name="late")
    wait_converged(o, edges + [late])
    r3 = env.router(name="router3", table=late.table)
    check(honoured(r3, cookie, dyno), "a node that joined after an origin restart")
    # Never shown.
    st = o.status()
    eq(st["secrets"], 1, "the origin holds one secret")
    eq(edges[0].status()["secrets"], 1, "so does an edge")
    for sock in (o.admin, edges[0].admin):
        dump = ht.admin_request(sock, "dump")
        eq(sorted(dump), ["apps", "certs", "digest", "domains", "dynos", "epoch", "node", "role",
                          "seq"], "dump's keys")
        check("secret" not in json.dumps(dump), "no secret in dump")
    r = o.ctl("--admin", edges[0].admin, "--json", "dump", control=False)
    check("secret" not in r.out, "hermodctl dump shows none")
    # --affinity-secret-file overrides the cluster's (and must be long enough).
    own = env.router(name="own-key", table=edges[0].table,
                     affinity_secret_file=env.write("own.secret", b"k" * 32))
    got, reissued = get(own, cookie)
    check(reissued is not None, "a router with its own key does not take the cluster's cookie")
    short = env.write("short.secret", b"k" * 31)
    p = subprocess.run([ht.binary("hermod-router"), "--table", edges[0].table, "--listen",
                        "127.0.0.1:%d" % ht.free_port(), "--affinity-secret-file", short],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(10))
    eq(p.returncode, 2, "a 31-byte secret file: %r" % p.stderr)
    check(b"fewer than 32 bytes" in p.stderr, "the reason: %r" % p.stderr)


def test_an_origin_without_a_secret_makes_one_as_a_change(env):
    o = Origin(env, proc_env={"HM_TEST_NO_SECRET": "1"})
    dynos = [env.dyno("web.%d" % i) for i in range(1, 4)]
    publish_app(o, dynos)
    edges, (r1, r2) = two_nodes(env, o, dynos)
    eq(edges[0].status()["secrets"], 0, "no secret yet")
    dyno, cookie = get(r1)
    check(not honoured(r2, cookie, dyno), "without a shared secret, cookies are per router")
    before = [e.status() for e in edges]
    seq0 = o.status()["seq"]
    o.proc_env = None
    o.restart()
    wait_for(lambda: o.status()["seq"] == seq0 + 1, T(10), "the origin to publish its secret")
    wait_converged(o, edges)
    for e, b in zip(edges, before):
        st = e.status()
        eq(st["secrets"], 1, "%s has the secret" % e.name)
        eq(st["snapshots"], b["snapshots"], "%s got it as a change, not a resync" % e.name)
    # The routers take the new key within a second (their table check).
    def cross():
        d, c = get(r1)
        return c is not None and honoured(r2, c, d)
    wait_for(cross, T(5), "the routers to sign with the cluster secret")
    for _ in range(5):
        check(cross(), "a cookie from node 1 on node 2")


if __name__ == "__main__":
    ht.run(globals())

"""Convergence (issue 3): two edges and 1,000 random changes (single changes and batches, every
op, removals cascading) give three equal digests, equal dumps, and table files that routers read
at the same digest.
"""

import hermod_test as ht
from hermod_test import T, eq
from syncd_util import Edge, Origin, random_changes, rng_for, wait_converged


def state_of(admin):
    d = ht.admin_request(admin, "dump")
    return (sorted(tuple(sorted(a.items())) for a in d["apps"]),
            sorted(tuple(sorted(x.items())) for x in d["domains"]),
            sorted(tuple(sorted(x.items())) for x in d["dynos"]), d["digest"], d["seq"])


def test_two_edges_1000_random_changes(env):
    rng = rng_for("convergence")
    o = Origin(env)
    e1 = Edge(env, o, name="edge1")
    changes = random_changes(rng, 1000)
    i = 0
    batches = 0
    e2 = None
    while i < len(changes):
        n = rng.choice([1, 1, 1, 2, 5, 20])
        part = changes[i:i + n]
        if n == 1 and rng.random() < 0.5:
            c = part[0]
            args = {"app.put": lambda c: ["app", "put", c["app"], "--maintenance",
                                          "on" if c["maintenance"] else "off", "--affinity",
                                          "on" if c["affinity"] else "off", "--balance",
                                          c["balance"]],
                    "app.rm": lambda c: ["app", "rm", c["app"]],
                    "domain.put": lambda c: ["domain", "put", c["domain"], c["app"]],
                    "domain.rm": lambda c: ["domain", "rm", c["domain"]],
                    "dyno.put": lambda c: ["dyno", "put", c["app"], c["dyno"], c["addr"],
                                           "--state", c["state"]],
                    "dyno.rm": lambda c: ["dyno", "rm", c["app"], c["dyno"]]}[c["op"]](c)
            r = o.ctl(*args)
            eq(r.rc, 0, "hermodctl %s (%r)" % (" ".join(args), r))
        else:
            o.apply(part)
        batches += 1
        i += n
        if e2 is None and i >= 500:
            e2 = Edge(env, o, name="edge2")  # joins in the middle
    wait_converged(o, [e1, e2], T(10))
    so, s1, s2 = state_of(o.admin), state_of(e1.admin), state_of(e2.admin)
    eq(s1, so, "edge1's dump vs the origin's")
    eq(s2, so, "edge2's dump vs the origin's")
    eq(o.status()["listener_restarts"], 0, "no listener was re-created without a reason")
    print("# %d changes in %d requests; digests %s" % (len(changes), batches, so[3]),
          flush=True)


if __name__ == "__main__":
    ht.run(globals())

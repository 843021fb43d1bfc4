"""Strings from files, the network and other programs (issue 10, "Files and local users").

* A batch string with an embedded NUL ("victim.test\\u0000.tenant.example") used to be applied as
  "victim.test": cJSON cuts the string at the NUL. Now any control character in a batch file is
  refused with a reason that names the change and the field, before anything is sent.
* The origin refuses the same string when a client sends it on the wire (msgpack strings carry
  their length, so it arrives whole): HM_ECONTROL, nothing applied.
* hermodctl escapes control characters in everything it prints (a node name, an admin error, a
  reason), so a name holding terminal escapes cannot drive the operator's terminal; and it will
  not send a lookup argument that would end the admin request's line.
"""

import json
import struct

import hermod_test as ht
from hermod_test import check, eq
from syncd_util import (PROTO_REQ, REQ_ID, Edge, Origin, mp_ctl_req, port_of, sp_connect,
                        sp_recv, sp_send, wait_converged)

HM_ECONTROL = -5027


def test_nul_in_a_batch_file_is_rejected(env):
    o = Origin(env)
    seq0 = o.status()["seq"]
    batch = ('{"changes":[{"op":"app.put","app":"tenant"},'
             '{"op":"domain.put","domain":"victim.test\\u0000.tenant.example","app":"tenant"}]}')
    r = o.ctl("apply", "-", input=batch.encode())
    eq(r.rc, 1, "hermodctl apply of a NUL in a domain: %r" % r)
    check('change 1: "domain": holds a control character (U+0000)' in r.err,
          "the reason names the change and the field: %r" % r.err)
    eq(o.status()["seq"], seq0, "nothing was applied")
    # A raw escape character in a name, and a C1 control written as an escape.
    for bad in ('"a\x1b[2J"', '"a\\u009b31m"', '"a\\n"'):
        r = o.ctl("apply", "-",
                  input=('{"changes":[{"op":"app.put","app":%s}]}' % bad).encode())
        eq(r.rc, 1, "app name %r" % bad)
        check("holds a control character" in r.err, "reason for %r: %r" % (bad, r.err))
    eq(o.status()["seq"], seq0, "nothing was applied")


def test_nul_on_the_wire_is_rejected(env):
    o = Origin(env)
    seq0 = o.status()["seq"]
    s = sp_connect(port_of(o.control), PROTO_REQ)
    req_id = bytes(range(16))
    changes = [[1, "tenant", False, False, 0],
               [3, "victim.test\x00.tenant.example", "tenant"]]
    sp_send(s, mp_ctl_req(req_id, changes), header=REQ_ID)
    rep = sp_recv(s)
    s.close()
    check(rep is not None, "the origin answers")
    check(b"control character" in rep, "the reply says why: %r" % rep)
    check(b"\xd1" + struct.pack(">h", HM_ECONTROL) in rep,
          "the reply's code is HM_ECONTROL: %r" % rep)
    eq(o.status()["seq"], seq0, "nothing was applied")
    r = o.ctl("--json", "apply", "-", input=b'{"changes":[{"op":"app.put","app":"ok"}]}')
    eq(r.rc, 0, "the next request: %r" % r)


def test_hermodctl_escapes_what_it_prints(env):
    o = Origin(env)
    e = Edge(env, o, name="edge")
    evil = "node\x1b]0;owned\x07\x1b[2J\x9b31m"  # U+009B: CSI, a C1 control
    e.proc.stop()
    e.extra = []
    argv = e.argv()
    argv[argv.index("--node") + 1] = evil
    e.proc = env.start("edge-evil", argv)
    ht.wait_for(lambda: ht.admin_ready(e.admin), ht.T(10), "the edge's admin socket")
    o.apply([{"op": "app.put", "app": "a"}])
    wait_converged(o, [e])

    r = o.ctl("--admin", e.admin, "status", control=False)
    eq(r.rc, 0, "status: %r" % r)
    check("\x1b" not in r.out and "\x07" not in r.out and "\x9b" not in r.out,
          "no raw control character in the output: %r" % r.out)
    check("node\\x1b]0;owned\\x07\\x1b[2J\\x9b31m" in r.out, "escaped: %r" % r.out)

    r = o.ctl("--admin", e.admin, "--json", "status", control=False)
    eq(r.rc, 0, "status --json: %r" % r)
    check("\x1b" not in r.out and "\x9b" not in r.out, "no raw escape in JSON: %r" % r.out)
    eq(json.loads(r.out)["node"], evil, "the JSON still decodes to the node's name")

    r = o.ctl("--admin", e.admin, "lookup", "a.test\nstatus", control=False)
    eq(r.rc, 2, "a lookup argument that would end the request line: %r" % r)
    check("\n" not in r.err.strip() and "\\x0a" in r.err, "escaped in the message: %r" % r.err)


if __name__ == "__main__":
    ht.run(globals())

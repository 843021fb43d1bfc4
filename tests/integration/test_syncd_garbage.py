"""Garbage, oversized and newer-version messages on every syncd socket (issue 3, robustness).

The origin's control, publish and sync sockets and the edge's subscription each get bytes that
are not a message, messages that do not decode, messages of a newer schema version, and
messages over the receive bound. Nothing crashes or stops: a bad control request is answered
with an error, a bad sync request is dropped, an oversized message closes that connection, and
the edge skips and counts what it cannot use and still converges. A forged heartbeat whose
digest disagrees with the edge's makes it log an error and resync from a snapshot.
"""

import os
import socket

import hermod_test as ht
from hermod_test import T, check, eq, wait_for
from syncd_util import (PROTO_REQ, PROTO_SUB, REQ_ID, EvilRelay, Edge, Origin, closed_within,
                        mp, mp_ctl_req, mp_heartbeat, port_of, sp_connect, sp_recv, sp_send,
                        wait_converged)

OVERSIZE = (4 << 20) + 1


def ctl_status(reply):
    """(message type, status byte) of a CTL_REP body (after REQ_ID): [8, 1, bin16, status..]."""
    check(reply is not None and reply[:4] == REQ_ID, "REP must echo the request id: %r" %
          (reply[:8] if reply else reply))
    body = reply[4:]
    check(body[0] == 0x99 and body[1] == 8 and body[3:5] == b"\xc4\x10",
          "not a CTL_REP: %r" % body[:8])
    return body[21]


def send_oversized(port, proto):
    s = sp_connect(port, proto)
    # Announce a message over the bound, then start sending it.
    s.sendall((OVERSIZE + 4).to_bytes(8, "big") + REQ_ID + b"x" * 65536)
    check(closed_within(s, T(5)), "a message over 4 MiB must close the connection")
    s.close()


def raw_garbage(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
    s.sendall(os.urandom(64) + b"GET / HTTP/1.1\r\n\r\n")
    check(closed_within(s, T(5)), "a peer that does not speak SP must be disconnected")
    s.close()


def test_control_socket(env):
    o = Origin(env)
    e = Edge(env, o)
    port = port_of(o.control)
    s = sp_connect(port, PROTO_REQ)
    for body, what in ((b"", "empty"), (os.urandom(100), "random bytes"),
                       (b"\x96\x07\x01", "truncated"),
                       (mp([99, 1, 1, 2]), "unknown type"),
                       (mp([7, 2, b"r" * 16, 0, 1, [], "more"]), "newer version"),
                       (mp([7, 1, b"r" * 16, 5, 1, []]), "part out of range"),
                       (mp_ctl_req(b"q" * 16, [[1, "BAD_NAME", False, False, 0]]), "bad name"),
                       (mp_ctl_req(b"q" * 16, [[3, "x.example.com", "nosuchapp"]]),
                        "unknown app")):
        sp_send(s, body, header=REQ_ID)
        eq(ctl_status(sp_recv(s)), 2, "status of the answer to %s" % what)
    # The same connection still gets a valid request through.
    sp_send(s, mp_ctl_req(os.urandom(16), [[1, "rawapp", False, False, 0]]), header=REQ_ID)
    eq(ctl_status(sp_recv(s)), 0, "a valid raw request is acknowledged")
    s.close()
    send_oversized(port, PROTO_REQ)
    raw_garbage(port)
    st = o.status()
    check(st["bad_requests"] >= 4, "bad requests counted: %s" % st["bad_requests"])
    eq(st["seq"], 1, "only the valid request changed anything")
    r = o.ctl("app", "put", "after")
    eq(r.rc, 0, "hermodctl after the garbage (%r)" % r)
    wait_converged(o, [e])


def test_sync_socket(env):
    o = Origin(env)
    o.ctl("app", "put", "one")
    port = port_of(o.sync)
    s = sp_connect(port, PROTO_REQ)
    for body in (os.urandom(50), b"", mp([3, 2, 1, 0, 0]), mp([1, 1, 1, 1, 0, 0, 1, []])):
        sp_send(s, body, header=REQ_ID)
    # Bad requests are dropped, not answered; a good one is answered.
    epoch = int(o.status()["epoch"], 16)
    sp_send(s, mp([3, 1, epoch, 0, 0]), header=REQ_ID)
    rep = sp_recv(s, timeout=T(5))
    check(rep is not None and rep[:4] == REQ_ID and rep[5] == 4, "a CATCHUP_REP: %r" %
          (rep[:8] if rep else rep))
    s.close()
    send_oversized(port, PROTO_REQ)
    raw_garbage(port)
    check(o.status()["bad_sync_requests"] >= 3, "bad sync requests counted")
    e = Edge(env, o)
    wait_converged(o, [e], what="an edge joining after the garbage")


def test_publish_socket(env):
    o = Origin(env)
    e = Edge(env, o)
    port = port_of(o.publish)
    s = sp_connect(port, PROTO_SUB)
    try:
        for _ in range(5):
            sp_send(s, os.urandom(200))  # a SUB peer talking back
    except OSError:
        pass
    check(closed_within(s, T(5)), "a subscriber that sends is disconnected")
    s.close()
    send_oversized(port, PROTO_SUB)
    raw_garbage(port)
    o.ctl("app", "put", "after")
    wait_converged(o, [e])


def test_edge_skips_what_it_cannot_use(env):
    o = Origin(env)
    relay = EvilRelay(env, port_of(o.publish))
    e = Edge(env, o, publish=relay.url)
    relay.wait_subscribers()
    o.ctl("app", "put", "one")
    wait_converged(o, [e])
    st = o.status()
    epoch = int(st["epoch"], 16)
    garbage = [
        b"", os.urandom(1), os.urandom(300), b"\x92", b"\x96\x02\x01\xcf",
        mp([2, 1, epoch]),                                     # too few fields
        mp([2, 1, epoch, 1, 0, b"short"]),                     # digest of the wrong length
        mp([99, 1, 0]),                                        # unknown type
        mp([1, 1, epoch, 5, 0, 0, 1, [[1, "BAD NAME", False, False, 0]]]),  # bad change
        mp([1, 1, epoch, 5, 0, 0, 1, [[1, "ok", False, False, 0]], "x"]),   # trailing field
        mp([1, 1, epoch, 2, 0, 0, 1, [[1, "x" * 64, False, False, 0]]]),    # name too long
        mp([2, 1, epoch, 1, 0, b"d" * 16]) + b"\x00",          # trailing byte
    ]
    newer = [mp([2, 2, epoch, 1, 0, b"d" * 16, "extra"]),
             mp([1, 7, "anything", "at", "all"])]
    before = e.status()
    for body in garbage + newer:
        relay.inject(body)
    wait_for(lambda: e.status()["skipped_invalid"] - before["skipped_invalid"] >= len(garbage),
             T(5), "the edge to count the garbage")
    st = e.status()
    eq(st["skipped_version"] - before["skipped_version"], len(newer), "newer-version messages")
    o.ctl("app", "put", "two")
    wait_converged(o, [e], what="the edge to converge after the garbage")
    eq(st["digest_mismatches"], 0, "no digest mismatch from skipped messages")
    # Over the receive bound, and bytes that are not SP frames: the edge drops that
    # connection, reconnects and catches up.
    relay.inject(b"z" * OVERSIZE)
    relay.inject_raw(b"\xff" * 16)
    o.ctl("app", "put", "three")
    wait_converged(o, [e], what="the edge after oversized input on its subscription")
    check(e.proc.alive(), "edge alive")


def test_digest_mismatch_resyncs(env):
    o = Origin(env)
    relay = EvilRelay(env, port_of(o.publish))
    e = Edge(env, o, publish=relay.url)
    relay.wait_subscribers()
    o.apply([{"op": "app.put", "app": "a"}, {"op": "domain.put", "domain": "a.test", "app": "a"}])
    wait_converged(o, [e])
    st = o.status()
    snaps = e.status()["snapshots"]
    relay.inject(mp_heartbeat(int(st["epoch"], 16), st["seq"], b"\x01" * 16))
    wait_for(lambda: e.status()["digest_mismatches"] >= 1, T(5), "the mismatch to be noticed")
    wait_for(lambda: e.status()["snapshots"] > snaps, T(10), "a full resync")
    wait_converged(o, [e])
    check("digest mismatch" in e.proc.stderr(), "the mismatch must be logged as an error")


if __name__ == "__main__":
    ht.run(globals())

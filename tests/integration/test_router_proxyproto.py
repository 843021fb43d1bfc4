#!/usr/bin/env python3
"""hermod-router --proxy-protocol (issue 11; CONTRACT.md "HTTP behaviour"): every connection on
both listeners (plain and TLS) starts with a PROXY v1 or v2 header; the client address in the
log line (fwd=) and X-Forwarded-For is the header's; a connection without a valid header is
closed without routing anything, and one whose header does not come is closed by a timeout
(the TLS handshake timeout, the plain listener's idle timeout)."""

import socket
import ssl
import struct

import hermod_test as hm
from hermod_test import T, check, eq, wait_for
from test_router_tls import HOST, get, put_cert, tls_router, Pki

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, dst="127.0.0.1", sport=40000, dport=443, fam="TCP4"):
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2_inet(src, dst="10.0.0.1", sport=40000, dport=443, tlv=b""):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport) + tlv
    return V2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def v2_inet6(src, dst="2001:db8::2", sport=40000, dport=443):
    body = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) +
            struct.pack("!HH", sport, dport))
    return V2_SIG + bytes([0x21, 0x21]) + struct.pack("!H", len(body)) + body


V2_LOCAL = V2_SIG + bytes([0x20, 0x00, 0, 0])


def setup(env, **kw):
    pk = Pki(env)
    store = env.path("tls.certs")  # not the edge's store beside the table
    put_cert(store, "default", pk.default)
    d = env.dyno("web.1")
    env.routing().app("app", [HOST], [(d.name, d.addr)])
    return tls_router(env, store, proxy_protocol="true", **kw)


def tls_after(port, preamble):
    """A TLS connection (hermod_test.Conn) whose TCP stream starts with preamble."""
    c = hm.Conn(port, connect=False)
    raw = socket.create_connection(("127.0.0.1", port), timeout=c.timeout)
    raw.sendall(preamble)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c.sock = ctx.wrap_socket(raw, server_hostname=HOST)
    return c


def xff(resp):
    return hm.hdr(hm.echo_of(resp)["headers"], "X-Forwarded-For")


def refused(r):
    return r.metric("hermod_proxy_protocol_refused_total") or 0


def test_client_address_from_header_both_listeners(env):
    r = setup(env)
    # Plain: the header and the request in one write (the transport hands the rest on).
    with hm.Conn(r.port) as c:
        c.send(v1("203.0.113.7") + hm.request_bytes("GET", "/echo/p1", HOST))
        eq(xff(c.read_response()), ["203.0.113.7"], "v1 on the plain listener")
        c.send(hm.request_bytes("GET", "/echo/p1b", HOST))
        eq(xff(c.read_response()), ["203.0.113.7"], "the next request on the connection")
    with hm.Conn(r.port) as c:
        c.send(v2_inet("198.51.100.9", tlv=b"\x04\x00\x02ab"))
        c.send(hm.request_bytes("GET", "/echo/p2", HOST, [("X-Forwarded-For", "192.0.2.1")]))
        eq(xff(c.read_response()), ["192.0.2.1, 198.51.100.9"], "v2 (with a TLV), appended")
    with hm.Conn(r.port) as c:
        c.send(v1("2001:db8::7", "2001:db8::1", fam="TCP6"))
        c.send(hm.request_bytes("GET", "/echo/p3", HOST))
        eq(xff(c.read_response()), ["2001:db8::7"], "v1 TCP6")
    with hm.Conn(r.port) as c:
        c.send(V2_LOCAL + hm.request_bytes("GET", "/echo/p4", HOST))
        eq(xff(c.read_response()), ["127.0.0.1"], "v2 LOCAL: the socket's address")
    # TLS: the header before the client hello.
    with tls_after(r.tls_port, v2_inet6("2001:db8::9")) as c:
        eq(xff(get(c, "/echo/t1")), ["2001:db8::9"], "v2 IPv6 on the TLS listener")
    with tls_after(r.tls_port, v1("192.0.2.44")) as c:
        eq(xff(get(c, "/echo/t2")), ["192.0.2.44"], "v1 on the TLS listener")
    for path, fwd in (("/echo/p1", "203.0.113.7"), ("/echo/p3", "2001:db8::7"),
                      ("/echo/t1", "2001:db8::9")):
        ll = r.wait_log(path=path)
        eq(ll.get("fwd"), fwd, "log fwd= of %s" % path)
    eq(refused(r), 0, "nothing refused")


def test_missing_or_invalid_header_closed_without_routing(env):
    r = setup(env)
    bad = [hm.request_bytes("GET", "/echo/none", HOST),                   # no header
           b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\nGET /echo/bad HTTP/1.1\r\n\r\n",  # v1 short
           V2_SIG + bytes([0x21, 0x11, 0, 4]) + b"\x01\x02\x03\x04",    # v2 addresses short
           b"PROXY " + b"x" * 120]                                         # v1 without an end
    for i, data in enumerate(bad):
        with hm.Conn(r.port) as c:
            c.send(data)
            eq(c.read_some(), b"", "plain case %d: closed without an answer" % i)
        with hm.Conn(r.tls_port) as c:
            c.send(data)
            eq(c.read_some(), b"", "TLS case %d: closed without an answer" % i)
    # A TLS client hello straight away (no header) is refused the same way.
    try:
        tls_after(r.tls_port, b"").close()
        hm.fail("a TLS handshake without a PROXY header succeeded")
    except (ssl.SSLError, ConnectionResetError, OSError):
        pass
    wait_for(lambda: refused(r) == 2 * len(bad) + 1, T(5), "every refusal counted")
    check(not any((ll.get("path") or "").startswith("/echo") for ll in r.logs()),
          "nothing was routed")
    eq(r.metric("hermod_tls_handshake_failures_total", 'reason="bad_message"'), 0.0,
       "not counted as TLS failures")


def test_header_that_never_completes_times_out(env):
    r = setup(env, tls_handshake_timeout="1s", keepalive_timeout="1s")
    for port in (r.port, r.tls_port):
        with hm.Conn(port, timeout=T(15)) as c:
            c.send(b"PROXY TCP4 1.2.3.4 ")
            eq(c.read_some(), b"", "port %d: closed when the header did not come" % port)
    eq(r.metric("hermod_tls_handshakes_in_progress"), 0.0, "nothing left in progress")


if __name__ == "__main__":
    hm.run(globals())

#!/usr/bin/env python3
"""hermod-router's TLS listener (issue 11; CONTRACT.md "HTTP behaviour", docs/tls.md): which
certificate each SNI gets from the node's certificate store, unrecognized_name, old protocol
versions refused, a rotated certificate used by the next handshake while open connections go on,
session resumption on another router that reads a store with the same ticket keys, the same HTTP
behaviour as the plain listener (forwarded headers, protocol=https, Secure affinity cookies,
WebSocket upgrades), the handshake timeout and the bound on handshakes in progress.

The stores the routers read are written with tests/tools/hm-certstore-put (what an edge writes:
the origin's checks, canonical PEM) at paths of their own (--cert-store), since the node's store
beside the table belongs to the routing backend's edge; the test of that derived path puts its
certificate through the control plane (hermodctl, origin, edge) when the backend is a cluster.
Certificates are made by the test with the openssl command (pki.py). Clients: Python's ssl
module, curl and openssl s_client."""

import os
import select
import socket
import ssl
import subprocess
import threading
import warnings

import hermod_test as hm
from hermod_test import T, check, eq, wait_for
from pki import PKI

HOST = "a.example.test"

warnings.filterwarnings("ignore", "ssl.TLSVersion.TLSv1", DeprecationWarning)


def put_cert(store, name, cert):
    """Puts cert (a pki.Cert: chain then key) under name into the store at path store."""
    p = subprocess.run([hm.binary("hm-certstore-put"), store, "put", name, cert.crt, cert.key],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=T(30))
    eq(p.returncode, 0, "hm-certstore-put %s: %s" % (name, p.stdout.decode(errors="replace")))


def put_keys(store, *keys):
    """Sets the store's ticket keys (80 random bytes each, the first encrypts)."""
    p = subprocess.run([hm.binary("hm-certstore-put"), store, "keys"] + [k.hex() for k in keys],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=T(30))
    eq(p.returncode, 0, "hm-certstore-put keys: %s" % p.stdout.decode(errors="replace"))


class Pki:
    """A CA and server certificates for every kind of name."""

    def __init__(self, env):
        p = PKI(env.path("pki"))
        self.ca = p.ca("tls-ca")
        self.exact = p.leaf("exact", self.ca, "serverAuth", [HOST])
        self.wild = p.leaf("wild", self.ca, "serverAuth", ["*.w.example.test"])
        self.default = p.leaf("default", self.ca, "serverAuth", ["default.example.test"])
        self.pki = p

    def leaf(self, name, dns):
        return self.pki.leaf(name, self.ca, "serverAuth", dns)


def setup(env, default=True, keys=True, store=None, **router_kw):
    """Certificates in a store, an app on HOST and *.w.example.test with one echo dyno, and a
    router with a plain and a TLS listener. Returns (router, pki, store). The store is not the
    one beside the table (hermod.certs): that one is the edge's when the backend is a cluster."""
    pk = Pki(env)
    store = store or env.path("tls.certs")
    put_cert(store, HOST, pk.exact)
    put_cert(store, "*.w.example.test", pk.wild)
    if default:
        put_cert(store, "default", pk.default)
    if keys:
        put_keys(store, os.urandom(80))
    d = env.dyno("web.1")
    env.routing().app("app", [HOST, "*.w.example.test", "default.example.test"],
                      [(d.name, d.addr)], **router_kw.pop("app_settings", {}))
    r = tls_router(env, store, **router_kw)
    return r, pk, store


def tls_router(env, store, **kw):
    r = env.router(tls_listen="127.0.0.1:%d" % hm.free_port(), cert_store=store, metrics=True,
                   **kw)
    r.tls_port = int(r.argv[r.argv.index("--tls-listen") + 1].rsplit(":", 1)[1])
    wait_for(lambda: hm.port_open(r.tls_port), T(10), "the TLS listener")
    return r


def client_ctx(pk=None, maxv=None, minv=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if pk is not None:
        ctx.load_verify_locations(pk.ca.crt)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if maxv is not None:
        ctx.maximum_version = maxv
    if minv is not None:
        ctx.minimum_version = minv
    return ctx


def tls_conn(port, sni, ctx=None, session=None):
    """A hermod_test.Conn over TLS (handshake done)."""
    c = hm.Conn(port, connect=False)
    raw = socket.create_connection(("127.0.0.1", port), timeout=c.timeout)
    try:
        c.sock = (ctx or client_ctx()).wrap_socket(raw, server_hostname=sni, session=session)
    except BaseException:
        raw.close()
        raise
    return c


def get(c, target="/echo", host=HOST, headers=None):
    c.send(hm.request_bytes("GET", target, host, headers))
    return c.read_response()


def peer_der(c):
    return c.sock.getpeercert(binary_form=True)


def fail_count(r, reason):
    return r.metric("hermod_tls_handshake_failures_total", 'reason="%s"' % reason) or 0


def test_tls_listener_alone_with_the_store_beside_the_table(env):
    pk = Pki(env)
    # No --cert-store: the store is the table's path with .certs for .table. A cluster's edge
    # writes it (the certificate goes through hermodctl and the origin); a backend that writes
    # only the table leaves it to the test tool.
    d = env.dyno("web.1")
    routing = env.routing()
    if routing.kind == "cluster":
        routing.apply([{"op": "cert.put", "name": "default", "cert": open(pk.default.crt).read(),
                        "key": open(pk.default.key).read()}])
    else:
        put_cert(env.path("hermod.certs"), "default", pk.default)
    routing.app("app", [HOST], [(d.name, d.addr)])
    port = hm.free_port()
    p = env.start("router", [hm.binary("hermod-router"), "--table", env.table, "--tls-listen",
                             "127.0.0.1:%d" % port, "--workers", "1"])
    wait_for(lambda: hm.port_open(port), T(10), "the TLS listener")
    with tls_conn(port, HOST) as c:
        eq(peer_der(c), pk.default.der(), "the certificate from the derived store")
        eq(get(c).status, 200, "HTTPS without a plain listener")
    err = wait_for(lambda: "listening on" in p.stderr() and p.stderr(), T(10), "the start-up line")
    line = [ll for ll in err.splitlines() if "listening on" in ll][0]
    check("listening on TLS 127.0.0.1:%d with" % port in line, "only the TLS listener: %s" % line)
    check(env.path("hermod.certs") in line, "the derived store named: %s" % line)


# -- certificate selection ---------------------------------------------------------------------

def test_sni_selects_exact_wildcard_default(env):
    r, pk, _ = setup(env)
    cases = [(HOST, pk.exact), ("x.w.example.test", pk.wild), ("other.test", pk.default),
             ("a.b.w.example.test", pk.default),  # a wildcard covers one label only
             (None, pk.default)]
    for sni, cert in cases:
        with tls_conn(r.tls_port, sni) as c:
            eq(peer_der(c), cert.der(), "certificate for SNI %r" % sni)
            eq(get(c).status, 200, "request over SNI %r" % sni)
    # A verifying client accepts the chain and the names.
    with tls_conn(r.tls_port, HOST, client_ctx(pk)) as c:
        eq(c.sock.selected_alpn_protocol(), None, "no ALPN offered, none chosen")
    ctx = client_ctx(pk)
    ctx.set_alpn_protocols(["http/1.1"])
    with tls_conn(r.tls_port, "x.w.example.test", ctx) as c:
        eq(c.sock.selected_alpn_protocol(), "http/1.1", "ALPN http/1.1")
        eq(get(c, host="x.w.example.test").status, 200, "request after ALPN")
    # curl (SNI from the URL, certificate verified against the CA).
    p = subprocess.run(["curl", "-sS", "--cacert", pk.ca.crt, "--resolve",
                        "x.w.example.test:%d:127.0.0.1" % r.tls_port,
                        "https://x.w.example.test:%d/hello" % r.tls_port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=T(20))
    eq((p.returncode, p.stdout), (0, b"hello from web.1\n"), "curl over the wildcard certificate")
    # openssl s_client: the subject it reports for each name.
    for sni, cn in ((HOST, "exact"), ("z.w.example.test", "wild"), ("else.test", "default")):
        p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % r.tls_port,
                            "-servername", sni, "-CAfile", pk.ca.crt, "-verify_return_error"],
                           input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=T(20))
        out = p.stdout.decode(errors="replace")
        check("CN = %s" % cn in out or "CN=%s" % cn in out,
              "s_client -servername %s: expected CN %s in:\n%s" % (sni, cn, out[-1500:]))
    eq(fail_count(r, "unrecognized_name"), 0, "no handshake failed")


def test_unrecognized_name_without_default(env):
    r, pk, _ = setup(env, default=False)
    try:
        tls_conn(r.tls_port, "nothing.test").close()
        hm.fail("a handshake for a name without a certificate succeeded")
    except ssl.SSLError as e:
        check("UNRECOGNIZED_NAME" in str(e).upper(), "alert unrecognized_name, got %s" % e)
    wait_for(lambda: fail_count(r, "unrecognized_name") == 1, T(5),
             "the failure counted as unrecognized_name")
    # The covered names still work on the same listener.
    with tls_conn(r.tls_port, HOST) as c:
        eq(get(c).status, 200, "exact name")


def test_old_protocol_versions_refused(env):
    r, _, _ = setup(env)
    for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = client_ctx(maxv=v, minv=ssl.TLSVersion.TLSv1)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        try:
            tls_conn(r.tls_port, HOST, ctx).close()
            hm.fail("a %s handshake succeeded" % v.name)
        except (ssl.SSLError, ConnectionResetError):
            pass
    wait_for(lambda: fail_count(r, "protocol_version") == 2, T(5),
             "both refusals counted as protocol_version")
    for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        with tls_conn(r.tls_port, HOST, client_ctx(maxv=v, minv=v)) as c:
            eq(c.sock.version(), {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[v.name], "version")
            eq(get(c).status, 200, "request over %s" % v.name)


def test_plain_http_to_tls_port_closed(env):
    r, _, _ = setup(env)
    with hm.Conn(r.tls_port) as c:
        c.send(hm.request_bytes("GET", "/echo", HOST))
        while c.read_some():
            pass
    wait_for(lambda: fail_count(r, "http_request") == 1, T(5), "counted as http_request")
    check(not any(ll.get("path") == "/echo" for ll in r.logs()), "nothing was routed")


# -- HTTP over TLS -------------------------------------------------------------------------------

def test_forwarded_headers_log_and_secure_cookie(env):
    r, _, _ = setup(env, app_settings={"affinity": True})
    with tls_conn(r.tls_port, HOST) as c:
        resp = get(c, "/echo/tls")
        e = hm.echo_of(resp)
        eq(hm.hdr(e["headers"], "X-Forwarded-Proto"), ["https"], "X-Forwarded-Proto")
        eq(hm.hdr(e["headers"], "X-Forwarded-Port"), [str(r.tls_port)], "X-Forwarded-Port")
        eq(hm.hdr(e["headers"], "X-Forwarded-For"), ["127.0.0.1"], "X-Forwarded-For")
        cookie = resp.header("set-cookie")
        check(cookie is not None and cookie.endswith("; Secure"), "Secure cookie: %r" % cookie)
        # Keep-alive: a second request on the connection.
        eq(get(c, "/echo/tls2").status, 200, "second request on the connection")
    ll = r.wait_log(path="/echo/tls")
    eq(ll.get("protocol"), "https", "log protocol")
    r.wait_log(path="/echo/tls2", protocol="https")
    # The plain listener of the same router: http, no Secure.
    resp = hm.http_get(r.port, "/echo/plain", HOST)
    e = hm.echo_of(resp)
    eq(hm.hdr(e["headers"], "X-Forwarded-Proto"), ["http"], "plain X-Forwarded-Proto")
    eq(hm.hdr(e["headers"], "X-Forwarded-Port"), [str(r.port)], "plain X-Forwarded-Port")
    check("Secure" not in (resp.header("set-cookie") or ""), "no Secure over plain HTTP")
    r.wait_log(path="/echo/plain", protocol="http")


def test_http2_by_alpn(env):
    """ALPN h2 on the TLS listener: the same exchange as HTTP/1.1 (forwarded headers, https in
    the log line), concurrent streams on one connection, and http/1.1 for a client that asks
    for it (as a WebSocket client does)."""
    r, pk, _ = setup(env)
    ctx = client_ctx(pk)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_conn(r.tls_port, HOST, ctx) as c:
        eq(c.sock.selected_alpn_protocol(), "h2", "ALPN h2 offered and chosen")
    url = "https://%s:%d" % (HOST, r.tls_port)
    base = ["curl", "-sS", "--cacert", pk.ca.crt, "--resolve", "%s:%d:127.0.0.1" % (HOST, r.tls_port)]
    p = subprocess.run(base + ["--http2", "-w", "\n%{http_version}", url + "/echo/h2tls"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=T(20))
    eq(p.returncode, 0, "curl --http2: %r" % p.stdout[-300:])
    body, version = p.stdout.rsplit(b"\n", 1)
    eq(version, b"2", "curl spoke HTTP/2")
    import json
    e = json.loads(body)
    eq(hm.hdr(e["headers"], "X-Forwarded-Proto"), ["https"], "X-Forwarded-Proto over h2")
    eq(hm.hdr(e["headers"], "X-Forwarded-Port"), [str(r.tls_port)], "X-Forwarded-Port over h2")
    eq(e["version"], "HTTP/1.1", "HTTP/1.1 to the dyno")
    r.wait_log(path="/echo/h2tls", protocol="https", status="200")
    p = subprocess.run(base + ["--http1.1", "-w", "\n%{http_version}", url + "/hello"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=T(20))
    eq(p.stdout.rsplit(b"\n", 1)[-1], b"1.1", "curl --http1.1 over the same listener")
    # curl --http1.0 offers ALPN "http/1.0" only: accepted (as nginx does; refusing it failed
    # the handshake), and a chunked answer reaches the HTTP/1.0 client unchunked and whole.
    p = subprocess.run(base + ["-v", "--http1.0", "-D", "-", url + "/chunked?chunks=3&size=5"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(20))
    err = p.stderr.decode(errors="replace")
    eq(p.returncode, 0, "curl --http1.0: %s" % err[-400:])
    check("> GET /chunked?chunks=3&size=5 HTTP/1.0" in err, "curl sent HTTP/1.0: %s" % err[-400:])
    check("http/1.0" in err.split("> GET")[0], "ALPN http/1.0 agreed: %s" % err[-600:])
    head, rest = p.stdout.split(b"\r\n\r\n", 1)
    check(head.startswith(b"HTTP/1.1 200"), head[:40])
    check(b"transfer-encoding" not in head.lower(), "no Transfer-Encoding to HTTP/1.0: %r" % head)
    eq(rest, b"aaaaabbbbbccccc", "the body, whole")
    # h2load: 2 connections x 10 concurrent streams, every request answered 200.
    p = subprocess.run(["h2load", "-n", "200", "-c", "2", "-m", "10",
                        "https://127.0.0.1:%d/hello" % r.tls_port, "-H", ":authority: " + HOST],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=T(60))
    out = p.stdout.decode(errors="replace")
    check("200 succeeded" in out and "200 2xx" in out and "Application protocol: h2" in out,
          "h2load over TLS: %s" % out[-1500:])


def h2_records(port, frames, done):
    """Opens HTTP/2 over TLS by hand (Python's ssl on memory BIOs over a raw socket, so that the
    records can be counted), sends the preface, SETTINGS and frames in one record, and reads
    frames until done(frames read) is true. Returns (TLS records received after the handshake,
    the frames read as (type, flags, stream, payload))."""
    import struct
    ctx = client_ctx()
    ctx.set_alpn_protocols(["h2"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_side=False, server_hostname=HOST)
    raw = socket.create_connection(("127.0.0.1", port), timeout=T(10))
    with raw:
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(out.read())
                data = raw.recv(65536)
                check(data, "the router closed during the handshake")
                inc.write(data)
        raw.sendall(out.read())
        eq(obj.selected_alpn_protocol(), "h2", "ALPN h2")
        obj.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0) + frames)
        raw.sendall(out.read())
        pending, plain, got, records = b"", b"", [], 0
        while not done(got):
            data = raw.recv(65536)
            check(data, "the router closed first: %r" % [f[:3] for f in got])
            pending += data
            while len(pending) >= 5 and len(pending) >= 5 + struct.unpack(">H", pending[3:5])[0]:
                n = 5 + struct.unpack(">H", pending[3:5])[0]
                inc.write(pending[:n])
                pending = pending[n:]
                records += 1
            while True:
                try:
                    plain += obj.read(65536)
                except ssl.SSLWantReadError:
                    break
            while len(plain) >= 9 and len(plain) >= 9 + struct.unpack(">I", b"\0" + plain[:3])[0]:
                n = struct.unpack(">I", b"\0" + plain[:3])[0]
                sid = struct.unpack(">I", plain[5:9])[0] & 0x7fffffff
                got.append((plain[3], plain[4], sid, plain[9:9 + n]))
                plain = plain[9 + n:]
        return records, got


def h2_frame(ftype, flags, sid, payload=b""):
    import struct
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def h2_get(sid, path, host):
    """HEADERS (END_STREAM, END_HEADERS) of a GET: :method GET, :scheme https, then :path and
    :authority as literals without indexing."""
    block = bytes([0x82, 0x87, 4, len(path)]) + path.encode() + bytes([1, len(host)]) + \
        host.encode()
    return h2_frame(1, 0x5, sid, block)


def test_http2_batch_sealed_into_few_records(env):
    """HTTP/2 over TLS writes the answers to one read as one batch: the transport takes it
    through try_writev, gathering the small frames into a few records and one system call, as
    plain TCP takes a batch in one writev (before, every four buffers were a record and a write
    of their own). The answers here come from the router itself (no dyno for the host), so they
    are all ready after that one read."""
    r, _, _ = setup(env)
    n = 20
    frames = b"".join(h2_get(2 * i + 1, "/x%d" % i, "nobody.example.test") for i in range(n))

    def ended(got):
        return len({f[2] for f in got if f[2] > 0 and f[1] & 1 and f[0] in (0, 1)}) == n
    records, got = h2_records(r.tls_port, frames, ended)
    statuses = [f for f in got if f[0] == 1 and f[2] > 0]
    eq(len(statuses), n, "a HEADERS answer per stream")
    check(records <= 4, "%d records for the server's SETTINGS and %d answers" % (records, n))


def test_http2_download_through_a_full_socket(env):
    """A large HTTP/2 download over TLS to a client that reads slowly: the socket fills, so
    try_writev's records go out in part and their rest with a queued write, and the protocol then
    offers again what was sealed but not taken. Every byte arrives once, in order."""
    r, pk, _ = setup(env)
    import hashlib
    size = 8 << 20
    with tls_conn(r.tls_port, HOST) as c:
        want = hashlib.sha256(get(c, "/bytes/%d" % size).body).hexdigest()
    p = subprocess.run(["curl", "-sS", "--http2", "--limit-rate", "2M", "--cacert", pk.ca.crt,
                        "--resolve", "%s:%d:127.0.0.1" % (HOST, r.tls_port), "-w",
                        "%{http_version}", "-o", env.path("h2.body"),
                        "https://%s:%d/bytes/%d" % (HOST, r.tls_port, size)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=T(120))
    eq((p.returncode, p.stdout), (0, b"2"), "curl --http2")
    with open(env.path("h2.body"), "rb") as f:
        eq(hashlib.sha256(f.read()).hexdigest(), want, "the HTTP/2 download, byte for byte")


def test_errors_and_refusals_over_tls(env):
    r, _, _ = setup(env)
    with tls_conn(r.tls_port, HOST) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: nosuch.test\r\n\r\n")
        eq(c.read_response().status, 404, "unknown host over TLS")
    with tls_conn(r.tls_port, HOST) as c:
        c.send(b"GET / HTTP/1.1\r\n\r\n")  # no Host: refused by the protocol itself
        resp = c.read_response()
        eq(resp.status, 400, "request without Host over TLS")
    ll = r.wait_log(status="400")
    eq((ll.get("code"), ll.get("protocol")), ("H26", "https"), "refusal's log line")


def test_large_bodies_both_ways(env):
    r, _, _ = setup(env)
    body = os.urandom(3 << 20)
    with tls_conn(r.tls_port, HOST) as c:
        c.send(hm.request_bytes("POST", "/sink", HOST, body=body))
        resp = c.read_response()
        import hashlib
        import json
        eq(json.loads(resp.body)["sha256"], hashlib.sha256(body).hexdigest(), "upload")
        resp = get(c, "/bytes/5000000")
        eq(len(resp.body), 5000000, "download")


def test_close_notify_before_close(env):
    """A connection the router closes after its answer (HTTP/1.0, Connection: close) ends with
    close_notify before the FIN (RFC 8446, 6.1), on TLS 1.3 and 1.2: a client that reads to the
    end of the stream, refusing a ragged EOF as OpenSSL 3 does by default, sees the end, not a
    truncation. (Before: the fast close after an answer sent the FIN alone.)"""
    r, _, _ = setup(env)
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = client_ctx(maxv=version, minv=version)
        for req in (b"GET /hello HTTP/1.0\r\nHost: %s\r\n\r\n" % HOST.encode(),
                    b"GET /hello HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                    % HOST.encode()):
            raw = socket.create_connection(("127.0.0.1", r.tls_port), timeout=T(10))
            s = ctx.wrap_socket(raw, server_hostname=HOST, suppress_ragged_eofs=False)
            s.sendall(req)
            data = hm.read_to_eof(s, T(10))
            s.close()
            check(not isinstance(data, Exception), "%s %r: the stream ended without "
                  "close_notify (%r)" % (version.name, req.split(b"\r\n")[0], data))
            check(data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello from web.1\n"),
                  "%s: the whole answer before close_notify: %r" % (version.name, data[-80:]))


def test_renegotiation_refused_at_once(env):
    """A TLS 1.2 client asking to renegotiate (openssl s_client's R) gets the no_renegotiation
    warning at once, not silence until the idle timeout: the alert that reading produced goes
    out although the protocol has nothing to write. (Before: s_client hung.)"""
    r, _, _ = setup(env)
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % r.tls_port,
                        "-servername", HOST, "-tls1_2", "-msg"], input=b"R\n",
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=T(20))
    out = p.stdout.decode(errors="replace")
    check("RENEGOTIATING" in out, "s_client asked to renegotiate: %s" % out[-600:])
    check("warning no_renegotiation" in out, "the refusal arrived: %s" % out[-600:])
    # The router is unharmed: the next client is served.
    with tls_conn(r.tls_port, HOST, client_ctx(maxv=ssl.TLSVersion.TLSv1_2)) as c:
        eq(get(c).status, 200, "a request after the refused renegotiation")


class SClient:
    """openssl s_client on a keep-alive connection, driven line by line: each step waits for
    s_client's own report of the previous one (its -msg trace), not for time."""

    def __init__(self, port, *args):
        self.p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                                   "-servername", HOST, "-msg"] + list(args),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        self.lines = []
        threading.Thread(target=lambda: self.lines.extend(
            ln.decode(errors="replace") for ln in iter(self.p.stdout.readline, b"")),
            daemon=True).start()

    def seen(self, text, n=1):
        return lambda: sum(text in ln for ln in list(self.lines)) >= n

    def wait(self, text, what, n=1):
        wait_for(self.seen(text, n), T(10), what)

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def tail(self):
        return "".join(self.lines[-20:])

    def close(self):
        self.p.stdin.close()
        try:
            self.p.wait(timeout=T(10))
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


REQ = b"GET /hello HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"


def key_updates(sc):
    """Requests before and after s_client's KeyUpdate without (k) and with (K) update_requested;
    for K the router's own KeyUpdate comes before its next application data (RFC 8446 4.6.3)."""
    sc.send(REQ)
    sc.wait("hello from web.1", "the answer before the updates")
    for i, cmd in enumerate((b"k", b"K")):
        sc.send(cmd + b"\n")
        sc.wait(">>> TLS 1.3, Handshake [length 0005], KeyUpdate", "s_client sent KeyUpdate "
                "(%s)" % cmd.decode(), n=i + 1)
        sc.send(REQ)
        sc.wait("hello from web.1", "the answer under the new keys", n=i + 2)
    check(sc.seen("<<< TLS 1.3, Handshake [length 0005], KeyUpdate")(),
          "the router's own KeyUpdate, as requested: %s" % sc.tail())
    check(not any("Alert" in ln and "fatal" in ln for ln in sc.lines),
          "no fatal alert: %s" % sc.tail())


def test_key_update_both_ways(env):
    """TLS 1.3 KeyUpdate from openssl s_client, on a keep-alive connection (a full handshake,
    libssl's): without (k) and with (K) update_requested."""
    r, _, _ = setup(env)
    sc = SClient(r.tls_port, "-tls1_3")
    try:
        sc.wait("Verify return code", "s_client ready")
        key_updates(sc)
    finally:
        sc.close()


def test_fast_path_with_outside_clients(env):
    """TLS 1.3 resumption on the router's own handshake code (router/tls13.c), with clients
    nobody here wrote: openssl s_client resuming a saved session (-sess_out/-sess_in), then
    KeyUpdates both ways on it; curl resuming its own session on a second connection; Python
    resuming with ALPN h2 and with http/1.1. Each counted on hermod_tls_fast_path_handshakes_total,
    and a full handshake is not."""
    r, pk, _ = setup(env)
    sess = env.path("s_client.sess")
    sc = SClient(r.tls_port, "-tls1_3", "-sess_out", sess)
    try:
        sc.wait("Verify return code", "s_client ready")
        sc.send(REQ)
        sc.wait("hello from web.1", "the first answer (the ticket comes with it)")
    finally:
        sc.close()
    eq(r.metric("hermod_tls_fast_path_handshakes_total"), 0.0, "a full handshake is libssl's")
    sc = SClient(r.tls_port, "-tls1_3", "-sess_in", sess)
    try:
        sc.wait("Reused, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256", "s_client resumed")
        key_updates(sc)
    finally:
        sc.close()
    eq(r.metric("hermod_tls_fast_path_handshakes_total"), 1.0, "s_client on the fast path")
    # curl: two requests, the first connection closed by the answer; the second resumes.
    url = "https://%s:%d/hello" % (HOST, r.tls_port)
    p = subprocess.run(["curl", "-sS", "-v", "--http1.1", "--tlsv1.3", "--cacert", pk.ca.crt, "--resolve",
                        "%s:%d:127.0.0.1" % (HOST, r.tls_port), "-H", "Connection: close",
                        url, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=T(20))
    err = p.stderr.decode(errors="replace")
    eq(p.returncode, 0, "curl: %s" % err[-400:])
    eq(p.stdout.count(b"hello from web.1"), 2, "both answers")
    check("SSL re-using session ID" in err, "curl resumed: %s" % err[-800:])
    eq(r.metric("hermod_tls_fast_path_handshakes_total"), 2.0, "curl on the fast path")
    # Python: ALPN on a resumed connection is agreed anew (h2, then http/1.1).
    for alpn in (["h2", "http/1.1"], ["http/1.1"]):
        ctx = client_ctx(pk, minv=ssl.TLSVersion.TLSv1_3)
        ctx.set_alpn_protocols(alpn)
        with tls_conn(r.tls_port, HOST, ctx) as c:
            if alpn[0] == "http/1.1":
                eq(get(c).status, 200, "first connection")
            else:
                c.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                c.sock.recv(9)  # the server's SETTINGS: the ticket came before it
            s = c.sock.session
        with tls_conn(r.tls_port, HOST, ctx, session=s) as c:
            check(c.sock.session_reused, "resumed with ALPN %s" % alpn[0])
            eq(c.sock.selected_alpn_protocol(), alpn[0], "ALPN agreed on the resumed connection")
            if alpn[0] == "http/1.1":
                eq(get(c).status, 200, "a request on the resumed connection")
    eq(r.metric("hermod_tls_fast_path_handshakes_total"), 4.0, "Python on the fast path")


def test_apachebench(env):
    """ApacheBench, an HTTP/1.0 client nobody here wrote: a TLS connection and handshake per
    request, and HTTP/1.0 keep-alive (`ab -k`) over TLS and on the plain listener; every
    request answered 200, none failed, every keep-alive request kept its connection."""
    import re
    r, _, _ = setup(env)

    def ab(*args):
        p = subprocess.run(["ab", "-q", "-n", "300", "-c", "10", "-H", "Host: " + HOST] +
                           list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=T(60))
        out = p.stdout.decode(errors="replace")
        eq(p.returncode, 0, "ab %s: %s" % (" ".join(args), out[-800:]))

        def field(name):
            m = re.search(r"^%s:\s+(\d+)" % re.escape(name), out, re.M)
            return int(m.group(1)) if m else None
        eq(field("Complete requests"), 300, "ab %s: complete requests" % " ".join(args))
        eq(field("Failed requests"), 0, "ab %s: failed requests: %s" % (" ".join(args), out))
        check("Non-2xx responses" not in out, "ab %s: non-2xx answers: %s" % (args, out))
        return field("Keep-Alive requests") or 0

    tls = "https://127.0.0.1:%d/hello" % r.tls_port
    eq(ab(tls), 0, "a connection per request over TLS")
    eq(ab("-k", tls), 300, "HTTP/1.0 keep-alive over TLS")
    eq(ab("-k", "http://127.0.0.1:%d/hello" % r.port), 300, "HTTP/1.0 keep-alive, plain")
    r.wait_log(path="/hello", protocol="https", status="200")


def test_websocket_upgrade_over_tls(env):
    r, _, _ = setup(env)
    with tls_conn(r.tls_port, HOST) as c:
        c.send(hm.request_bytes("GET", "/upgrade", HOST,
                                [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                 ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                 ("Sec-WebSocket-Version", "13")]))
        resp = c.read_response(interim=True)
        eq(resp.status, 101, "101 over TLS")
        for n in (5, 70000):
            data = os.urandom(n)
            c.send(data)
            eq(c.read_exact(n), data, "%d bytes through the wss tunnel" % n)
    r.wait_log(path="/upgrade", protocol="https", status="101")


# -- rotation and resumption ---------------------------------------------------------------------

def test_rotation_keeps_open_connection(env):
    r, pk, store = setup(env)
    with tls_conn(r.tls_port, HOST) as old:
        eq(get(old).status, 200, "before the rotation")
        eq(peer_der(old), pk.exact.der(), "the first certificate")
        new = pk.leaf("exact2", [HOST])
        put_cert(store, HOST, new)
        # The next handshake uses the new certificate (no reload, no signal).
        with tls_conn(r.tls_port, HOST) as c:
            eq(peer_der(c), new.der(), "a new handshake gets the rotated certificate")
            eq(get(c).status, 200, "request on the new connection")
        eq(get(old).status, 200, "the connection opened before the rotation still serves")
        check(not old.eof, "the old connection stays open")
    # A removed name falls back to the default.
    subprocess.run([hm.binary("hm-certstore-put"), store, "rm", HOST], check=True,
                   timeout=T(30))
    with tls_conn(r.tls_port, HOST) as c:
        eq(peer_der(c), pk.default.der(), "after rm: the default certificate")


def resumes(first_port, second_port, version):
    ctx = client_ctx(maxv=version, minv=version)
    with tls_conn(first_port, HOST, ctx) as c:
        eq(get(c).status, 200, "first connection")  # TLS 1.3 tickets follow the handshake
        sess = c.sock.session
        check(sess is not None and sess.has_ticket, "a session ticket was issued")
    with tls_conn(second_port, HOST, ctx, session=sess) as c:
        reused = c.sock.session_reused
        eq(get(c).status, 200, "resumed connection")
    return reused


def test_the_ticket_comes_with_the_first_answer(env):
    """A TLS 1.3 session ticket goes out in front of the first response, in its write, not in
    a write and a packet of its own right after the handshake (no client waits for a ticket,
    RFC 8446 4.6.1): after a full handshake (libssl's) and after a resumption (the fast path),
    nothing arrives until the request; then the answer brings a new ticket, which resumes."""
    r, pk, _ = setup(env)
    ctx = client_ctx(pk, minv=ssl.TLSVersion.TLSv1_3)
    sess = None
    for kind in ("full", "resumed", "resumed again"):
        with tls_conn(r.tls_port, HOST, ctx, session=sess) as c:
            eq(c.sock.session_reused, sess is not None, "%s handshake" % kind)
            before = c.sock.session.id
            rd, _, _ = select.select([c.sock], [], [], 0.3)
            eq(rd, [], "%s: nothing arrives before the request" % kind)
            eq(get(c).status, 200, "%s: the answer" % kind)
            sess = c.sock.session
            check(sess.has_ticket and sess.id != before, "%s: a new ticket came with the "
                  "answer" % kind)
    eq(r.metric("hermod_tls_fast_path_handshakes_total"), 2.0, "resumed on the fast path")


def test_resumption_across_two_routers(env):
    keys = [os.urandom(80), os.urandom(80)]
    r1, pk, s1 = setup(env)
    put_keys(s1, *keys)
    # A second node: its own store (written by its own edge) with the same certificate and
    # ticket keys, its own router.
    s2 = env.path("node2.certs")
    put_cert(s2, HOST, pk.exact)
    put_keys(s2, *keys)
    r2 = tls_router(env, s2, name="router2")
    for v in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        check(resumes(r1.tls_port, r2.tls_port, v), "%s session from router 1 resumed on "
              "router 2" % v.name)
        check(resumes(r2.tls_port, r1.tls_port, v), "%s session from router 2 resumed on "
              "router 1" % v.name)
    eq(r2.metric("hermod_tls_handshakes_total", 'kind="resumed"'), 2.0, "router 2 resumed")
    # A node whose store has other keys cannot decrypt the ticket: a full handshake, no error.
    s3 = env.path("node3.certs")
    put_cert(s3, HOST, pk.exact)
    put_keys(s3, os.urandom(80))
    r3 = tls_router(env, s3, name="router3")
    check(not resumes(r1.tls_port, r3.tls_port, ssl.TLSVersion.TLSv1_3),
          "a ticket under unknown keys is not resumed")
    # The previous key still decrypts after a rotation (keys[1] is the previous one now).
    put_keys(s2, os.urandom(80), keys[0])
    check(resumes(r1.tls_port, r2.tls_port, ssl.TLSVersion.TLSv1_2),
          "a ticket under the previous key resumes after the rotation")


# -- handshake limits ----------------------------------------------------------------------------

def test_handshake_timeout(env):
    r, _, _ = setup(env, tls_handshake_timeout="1s")
    with hm.Conn(r.tls_port, timeout=T(15)) as c:
        c.send(b"\x16\x03\x01")  # the start of a record, then nothing
        eq(c.read_some(), b"", "the router closed the silent handshake")
    wait_for(lambda: fail_count(r, "timeout") == 1, T(5), "counted as timeout")
    eq(r.metric("hermod_tls_handshakes_in_progress"), 0.0, "no handshake in progress")


def accept_queue(port):
    """Connections waiting in the kernel's accept queue of the listener on 127.0.0.1:port (a
    listening socket's rx_queue in /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == "0100007F:%04X" % port and fields[3] == "0A":
                return int(fields[4].split(":")[1], 16)
    return None


def test_handshakes_in_progress_bounded(env):
    r, _, _ = setup(env, tls_max_handshakes=2, workers=1)
    held = [hm.Conn(r.tls_port) for _ in range(2)]
    wait_for(lambda: r.metric("hermod_tls_handshakes_in_progress") == 2, T(10),
             "two handshakes in progress")
    result = {}

    def third():
        try:
            with tls_conn(r.tls_port, HOST) as c:
                result["status"] = get(c).status
        except Exception as e:  # noqa: BLE001 (reported below)
            result["error"] = e

    t = threading.Thread(target=third)
    t.start()
    wait_for(lambda: accept_queue(r.tls_port) == 1, T(10),
             "the third connection waiting in the listener's backlog")
    check(not result, "the third handshake waited in the backlog: %r" % result)
    check((r.metric("hermod_tls_accept_paused_total") or 0) >= 1, "the pause is counted")
    eq(r.metric("hermod_tls_handshakes_in_progress"), 2.0, "still two in progress")
    # The plain listener is not held back.
    eq(hm.http_get(r.port, "/hello", HOST).status, 200, "plain HTTP while TLS is paused")
    held[0].close()
    t.join(T(15))
    eq(result.get("status"), 200, "the third connection served once a handshake ended (%r)" %
       result)
    held[1].close()


def test_expiry_gauge_and_counts(env):
    r, pk, store = setup(env)
    import datetime
    p = subprocess.run(["openssl", "x509", "-in", pk.exact.crt, "-noout", "-enddate"],
                       stdout=subprocess.PIPE, check=True, timeout=T(10))
    end = p.stdout.decode().strip().split("=", 1)[1]
    t = datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y GMT").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    wait_for(lambda: r.metric("hermod_tls_certificates") == 3, T(10), "3 certificates seen")
    got = r.metric("hermod_tls_certificate_soonest_expiry_seconds")
    check(got is not None and abs(got - t) <= 5, "soonest expiry %r, a leaf ends at %r" % (got, t))
    sooner = pk.pki.leaf("sooner", pk.ca, "serverAuth", ["s.example.test"],
                         not_after=t - 3 * 86400)
    put_cert(store, "s.example.test", sooner)
    wait_for(lambda: abs((r.metric("hermod_tls_certificate_soonest_expiry_seconds") or 0) -
                         (t - 3 * 86400)) <= 5, T(10), "the gauge follows a sooner certificate")
    with tls_conn(r.tls_port, HOST) as c:
        get(c)
    eq(r.metric("hermod_tls_handshakes_total", 'kind="full"'), 1.0, "one full handshake")


def test_cert_cache_bound_and_metrics(env):
    """--tls-cert-cache bounds the parsed certificates a worker keeps: with room for one, two
    names taken in turn parse again each time; every choice is counted as a hit or a miss, every
    certificate dropped for room as an eviction, and the gauge shows what is kept."""
    r, pk, store = setup(env, tls_cert_cache=1)

    def cache():
        return (r.metric("hermod_tls_cert_cache_lookups_total", 'result="hit"'),
                r.metric("hermod_tls_cert_cache_lookups_total", 'result="miss"'),
                r.metric("hermod_tls_cert_cache_evictions_total"),
                r.metric("hermod_tls_cert_cache_entries"))

    eq(cache(), (0.0, 0.0, 0.0, 0.0), "nothing parsed before the first handshake")
    for sni in (HOST, HOST, "x.w.example.test", HOST):
        with tls_conn(r.tls_port, sni, client_ctx(pk)) as c:
            eq(get(c).status, 200, "answered for %s" % sni)
    # HOST: miss; HOST: hit; the wildcard: miss, HOST evicted; HOST: miss, the wildcard evicted
    eq(cache(), (1.0, 3.0, 2.0, 1.0), "hits, misses, evictions, entries")


# -- a store truncated in place ------------------------------------------------------------------

def handshake_fails(port, sni):
    """The alert a handshake ends with (its text), or a failure of the test if it succeeds."""
    try:
        tls_conn(port, sni).close()
    except ssl.SSLError as e:
        return str(e)
    hm.fail("a handshake for %s succeeded with the store truncated" % sni)


def test_store_truncated_under_the_worker(env):
    """The node's store truncated in place (same inode: an operator's truncate, a full disk, a
    copy tool) under a running worker: before, the worker's next handshake read the mapping
    past the file's new end and the worker died of SIGBUS. Now the worker's map is guarded
    (common/pubfile's fault registry, the table's): it turns to zero pages, handshakes fail
    unrecognized_name, hermod_tls_cert_store_faults_total counts it, and the worker maps the
    store again once a valid one is there."""
    r, pk, store = setup(env)
    workers = r.wait_workers()
    with tls_conn(r.tls_port, HOST) as c:
        eq(peer_der(c), pk.exact.der(), "before: the exact certificate")
        eq(get(c).status, 200, "before: a request")
    with open(store, "rb") as f:
        saved = f.read()
    os.truncate(store, 4096)  # the header stays, the index and the heap are gone
    for sni in (HOST, "x.w.example.test", "other.test"):
        err = handshake_fails(r.tls_port, sni)
        check("UNRECOGNIZED_NAME" in err.upper(), "%s: alert unrecognized_name, got %s" % (sni, err))
    wait_for(lambda: (r.metric("hermod_tls_cert_store_faults_total") or 0) >= 1, T(10),
             "the worker to count the truncated store")
    eq(r.metric("hermod_worker_restarts_total"), 0.0, "worker restarts")
    eq(r.workers(), workers, "the worker that served before (none may have died)")
    wait_for(lambda: "certificate store %s shrank" % store in r.stderr(), T(10),
             "the worker to log the truncated store")
    # Plain HTTP never stopped.
    eq(hm.http_get(r.port, "/hello", HOST).status, 200, "plain HTTP while the store is bad")
    # The same file written back in place (same inode): handshakes go on.
    with open(store, "r+b") as f:
        f.write(saved)

    def served():
        try:
            with tls_conn(r.tls_port, HOST) as c:
                return peer_der(c) == pk.exact.der() and get(c).status == 200
        except (ssl.SSLError, OSError):
            return False
    wait_for(served, T(10), "handshakes once the store is valid again")
    eq(r.workers(), workers, "the same worker at the end")
    eq(r.metric("hermod_worker_restarts_total"), 0.0, "worker restarts at the end")


if __name__ == "__main__":
    hm.run(globals())

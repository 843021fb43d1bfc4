#!/usr/bin/env python3
"""The HTTP/2 engine (router/h2.c) against real clients: curl --http2-prior-knowledge, nghttp and
h2load (Debian's nghttp2-client), through tests/tools/hm-h2serve, which runs the engine behind a
plain socket with canned answers. Uploads come back byte for byte (with a length, and chunked
when curl does not know it), downloads larger than every window arrive whole, trailers reach the
client, router errors keep their status and body, thousands of multiplexed requests all succeed,
and SIGTERM lets a download in flight finish. In the sanitizer build this is also the engine
under real traffic with ASan watching."""

import os
import shutil
import signal
import subprocess

import hermod_test as hm
from hermod_test import T, check, eq, wait_for


def client(name):
    path = shutil.which(name)
    check(path is not None, "%s not installed (deploy/dev installs nghttp2-client and curl)" % name)
    return path


def serve(env):
    port = hm.free_port()
    p = env.start("h2serve", [hm.binary("hm-h2serve"), "--listen", "127.0.0.1:%d" % port])
    wait_for(lambda: "ready" in p.stdout(), T(10), "hm-h2serve ready")
    return p, "http://127.0.0.1:%d" % port


def run(argv, timeout, stdin=None):
    r = subprocess.run(argv, input=stdin, capture_output=True, timeout=T(timeout))
    check(r.returncode == 0, "%s exited %d: %s" % (argv[0], r.returncode, r.stderr[-2000:]))
    return r


def curl(*args, stdin=None, timeout=30):
    return run([client("curl"), "-sS", "--http2-prior-knowledge"] + list(args), timeout, stdin)


def test_curl_requests_uploads_errors(env):
    _, url = serve(env)
    r = curl("-i", url + "/")
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/2 200"), "status line %r" % head[:40])
    check(b"\r\nvia: 1.1 hermod" in head, "no Via in %r" % head)
    eq(body, b"Hello, world\n", "body")

    # 1 MiB with a content-length, then 300 KiB from a pipe (no length: chunked toward the
    # "dyno"): both come back whole through windows of 64 KiB.
    data = os.urandom(1 << 20)
    src = env.path("upload.bin")
    with open(src, "wb") as f:
        f.write(data)
    eq(curl("--data-binary", "@" + src, url + "/echo").stdout, data, "echoed upload")
    piped = os.urandom(300 * 1024)
    eq(curl("-T", "-", url + "/echo", stdin=piped).stdout, piped, "echoed chunked upload")

    r = curl("-i", url + "/status/503")
    check(r.stdout.startswith(b"HTTP/2 503"), "router error status: %r" % r.stdout[:40])
    check(r.stdout.endswith(b"\r\n\r\nApplication Error\n"), "router error body: %r" % r.stdout)
    r = curl("-i", "-H", "expect: nonsense", url + "/")
    check(r.stdout.startswith(b"HTTP/2 417"), "Expect other than 100-continue: %r" % r.stdout[:40])
    # A bad request costs its stream, not the connection: nghttp sends every URI on one
    # connection, a path of 9000 bytes (414 as on HTTP/1) and a good one. (curl 7.88 itself
    # fails a second request on a reused prior-knowledge connection, with nginx too.)
    long_path = "/" + "a" * 9000
    r = run([client("nghttp"), "-v", url + long_path, url + "/"], 30)
    out = r.stdout.decode()
    check(":status: 414" in out and ":status: 200" in out, "both answers:\n" + out[-3000:])
    eq(out.count("recv SETTINGS frame"), 2, "one connection (SETTINGS and its ACK)")


def test_nghttp_trailers_and_big_download(env):
    _, url = serve(env)
    r = run([client("nghttp"), "-v", url + "/trailers"], 30)
    out = r.stdout.decode()
    check("x-checksum: 42" in out and "x-count: 1" in out, "trailers not received:\n" + out)
    # 20 MB: far more than any window; the engine sends only what the client's windows allow.
    run([client("nghttp"), "-n", url + "/size?n=20000000"], 60)
    dl = run([client("curl"), "-sS", "--http2-prior-knowledge", url + "/size?n=20000000"], 60)
    eq(len(dl.stdout), 20000000, "downloaded bytes")


def test_h2load_multiplexed(env):
    p, url = serve(env)
    h2load = client("h2load")
    r = run([h2load, "-n", "20000", "-c", "50", "-m", "10", url + "/"], 120)
    out = r.stdout.decode()
    check("20000 succeeded, 0 failed, 0 errored" in out, "h2load:\n" + out)
    r = run([h2load, "-n", "64", "-c", "4", "-m", "16", url + "/size?n=1000000"], 120)
    out = r.stdout.decode()
    check("64 succeeded, 0 failed, 0 errored" in out, "h2load downloads:\n" + out)
    body = env.path("post.bin")
    with open(body, "wb") as f:
        f.write(os.urandom(100 * 1024))
    r = run([h2load, "-n", "400", "-c", "8", "-m", "10", "-d", body, url + "/echo"], 120)
    out = r.stdout.decode()
    check("400 succeeded, 0 failed, 0 errored" in out, "h2load uploads:\n" + out)
    p.stop()
    check("requests 20464 errors 0" in p.stdout(), "server's count: %r" % p.stdout())


def test_sigterm_lets_a_download_finish(env):
    p, url = serve(env)
    out = env.path("dl.bin")
    dl = subprocess.Popen([client("curl"), "-sS", "--http2-prior-knowledge", "--limit-rate",
                           "4M", "-o", out, url + "/size?n=8000000"])
    env.cleanups.append(lambda: dl.poll() is None and dl.kill())
    wait_for(lambda: os.path.exists(out) and os.path.getsize(out) > 0, T(10), "first bytes")
    p.send_signal(signal.SIGTERM)
    eq(dl.wait(T(60)), 0, "curl's exit status")
    eq(os.path.getsize(out), 8000000, "downloaded bytes")
    eq(p.wait(T(10)), 0, "hm-h2serve's exit status after the drain")
    p.expected_exit = True


if __name__ == "__main__":
    hm.run(globals())

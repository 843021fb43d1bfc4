"""Certificates for the TLS tests, made with the openssl command-line tool (standard library only).

PKI(dir) makes CAs and leaf certificates the way docs/operations.md tells operators to: EC P-256
keys, a CA with basicConstraints CA:TRUE, leaves with an extended key usage (serverAuth for the
origin, clientAuth for edges and control clients) and DNS names. A leaf's .pem holds its chain
(the leaf) and its key, as --tls-cert wants; .crt the certificate alone. Validity dates are set
with `openssl ca` so that expired and not-yet-valid certificates can be made too.
"""

import os
import subprocess
import time

_CA_CONF = """
[ ca ]
default_ca = local
[ local ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
"""


def _run(argv, **kw):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, **kw)
    if p.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(argv[:3]), p.stderr.decode()[-800:]))
    return p.stdout


def _stamp(t):
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))


class Cert:
    def __init__(self, pki, name):
        self.name = name
        self.key = os.path.join(pki.dir, name + ".key")
        self.crt = os.path.join(pki.dir, name + ".crt")
        self.pem = os.path.join(pki.dir, name + ".pem")

    def der(self):
        return _run(["openssl", "x509", "-in", self.crt, "-outform", "DER"])


class PKI:
    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)

    def _key(self, path, algo="ec"):
        if algo == "rsa":
            _run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                  "-out", path])
        else:
            _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-out", path])
        os.chmod(path, 0o600)

    def ca(self, name):
        c = Cert(self, name)
        self._key(c.key)
        _run(["openssl", "req", "-x509", "-new", "-key", c.key, "-out", c.crt, "-days", "30",
              "-subj", "/CN=%s" % name, "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        cadir = os.path.join(self.dir, name + ".ca")
        os.makedirs(os.path.join(cadir, "newcerts"), exist_ok=True)
        open(os.path.join(cadir, "index.txt"), "w").close()
        with open(os.path.join(cadir, "serial"), "w") as f:
            f.write("%016X\n" % int.from_bytes(os.urandom(7), "big"))
        with open(os.path.join(cadir, "ca.conf"), "w") as f:
            f.write(_CA_CONF.format(dir=cadir))
        c.cadir = cadir
        with open(c.pem, "w") as f:
            f.write(open(c.crt).read())
        return c

    def leaf(self, name, ca, eku="clientAuth", dns=(), not_before=None, not_after=None,
             key_of=None, algo="ec"):
        """A certificate for name signed by ca. eku: "serverAuth", "clientAuth" or both
        comma-separated (None: no extension). dns: subjectAltName DNS names. Dates are unix
        times (default: an hour ago to 10 days on). key_of: reuse another Cert's key. algo:
        "ec" (P-256) or "rsa" (2048 bits)."""
        c = Cert(self, name)
        if key_of is not None:
            with open(key_of.key) as src, open(c.key, "w") as dst:
                dst.write(src.read())
            os.chmod(c.key, 0o600)
        else:
            self._key(c.key, algo)
        csr = os.path.join(self.dir, name + ".csr")
        _run(["openssl", "req", "-new", "-key", c.key, "-out", csr, "-subj", "/CN=%s" % name])
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n")
            if eku:
                f.write("extendedKeyUsage=%s\n" % eku)
            if dns:
                f.write("subjectAltName=%s\n" % ",".join("DNS:" + d for d in dns))
        now = time.time()
        nb = not_before if not_before is not None else now - 3600
        na = not_after if not_after is not None else now + 10 * 86400
        _run(["openssl", "ca", "-batch", "-notext", "-config", os.path.join(ca.cadir, "ca.conf"),
              "-cert", ca.crt, "-keyfile", ca.key, "-in", csr, "-out", c.crt,
              "-extfile", ext, "-startdate", _stamp(nb), "-enddate", _stamp(na)])
        with open(c.pem, "w") as f:
            f.write(open(c.crt).read() + open(c.key).read())
        os.chmod(c.pem, 0o600)
        return c


def cluster_pki(directory):
    """The usual set: a cluster CA with an origin (localhost), two edges and a control client;
    a separate control-plane CA with its own control client; another CA with an impostor
    origin; an expired edge certificate."""
    p = PKI(directory)
    p.cluster = p.ca("cluster-ca")
    p.control = p.ca("control-ca")
    p.other = p.ca("other-ca")
    p.origin = p.leaf("origin", p.cluster, "serverAuth", ["localhost"])
    p.edge1 = p.leaf("edge1", p.cluster, "clientAuth", ["edge1"])
    p.edge2 = p.leaf("edge2", p.cluster, "clientAuth", ["edge2"])
    p.ctl = p.leaf("ctl", p.control, "clientAuth")
    p.ctl_cluster = p.leaf("ctl-cluster", p.cluster, "clientAuth")
    p.impostor = p.leaf("impostor", p.other, "serverAuth", ["localhost"])
    now = time.time()
    p.expired = p.leaf("expired", p.cluster, "clientAuth", ["edge9"], not_before=now - 20 * 86400,
                       not_after=now - 86400)
    return p

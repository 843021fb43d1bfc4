#!/usr/bin/env bash
# Runs Debian's testssl.sh (package testssl.sh) against hermod-router's TLS listener and fails on
# any finding rated HIGH or CRITICAL (issue 11). A documented check, not part of the suite: it
# takes minutes. The listener serves a certificate as an operator would have one: issued by a
# CA (made here and given to testssl with --add-ca), valid for 90 days, with an OCSP URI; the
# store is written with hm-certstore-put, session ticket keys included.
#
# Run from the project root after building into build/ (or BUILD=...):   tests/check-testssl.sh
# Prints every finding above INFO/OK and exits 0 (none HIGH or CRITICAL) or 1.
set -u
BUILD=${BUILD:-build}
for t in testssl openssl python3; do command -v $t >/dev/null || { echo "missing $t (apt-get install testssl.sh openssl python3)"; exit 2; }; done
router=$BUILD/router/hermod-router tablectl=$BUILD/tests/tools/hm-tablectl certput=$BUILD/tests/tools/hm-certstore-put
for f in "$router" "$tablectl" "$certput"; do [ -x "$f" ] || { echo "no $f: build first"; exit 2; }; done
W=$(mktemp -d /tmp/hermod-testssl.XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$W"; }
trap cleanup EXIT
HP=${PORT:-19643} BP=$((HP + 1)) LP=$((HP + 2)) NAME=tls.example.com
cd "$W" || exit 1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj /CN=testssl-ca \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
	-keyout ca.key -out ca.pem 2>/dev/null || exit 1
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=$NAME -keyout leaf.key -out leaf.csr 2>/dev/null || exit 1
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s\nauthorityInfoAccess=OCSP;URI:http://ocsp.example.com\n' $NAME > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 90 -extfile leaf.ext -out leaf.pem 2>/dev/null || exit 1
"$OLDPWD/$certput" certs put default leaf.pem leaf.key || exit 1
"$OLDPWD/$certput" certs keys "$(head -c 80 /dev/urandom | od -An -tx1 | tr -d ' \n')" || exit 1
echo '{"changes":[{"op":"app.put","app":"a"},{"op":"domain.put","domain":"'$NAME'","app":"a"},{"op":"dyno.put","app":"a","dyno":"web.1","addr":"127.0.0.1:'$BP'","state":"up"}]}' |
	"$OLDPWD/$tablectl" --table table apply - >/dev/null || exit 1
python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "3"); self.end_headers(); self.wfile.write(b"ok\n")
    do_HEAD = do_GET
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()' $BP & pids+=($!)
"$OLDPWD/$router" --table table --cert-store certs --listen 127.0.0.1:$LP --tls-listen 127.0.0.1:$HP --workers 1 \
	--access-log /dev/null 2>router.err & pids+=($!)
for i in $(seq 50); do openssl s_client -connect 127.0.0.1:$HP -servername $NAME </dev/null >/dev/null 2>&1 && break; sleep 0.2; done
testssl --quiet --color 0 --warnings off --add-ca ca.pem --jsonfile out.json --ip 127.0.0.1 $NAME:$HP >testssl.out 2>&1
python3 - out.json <<'P'
import json, sys
findings = json.load(open(sys.argv[1]))
bad = 0
for f in findings:
    if f["severity"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL"):
        print("%-8s %-28s %s" % (f["severity"], f["id"], f["finding"][:120]))
        bad += f["severity"] in ("HIGH", "CRITICAL")
print("%d findings, %d HIGH or CRITICAL" % (len(findings), bad))
sys.exit(1 if bad or not findings else 0)
P

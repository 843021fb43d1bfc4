#!/usr/bin/env bash
# Counts heap calls of one hermod-router worker per proxied request in the steady state.
#
# Run from the project root after building into build/ (or BUILD=...):   bench/router_allocs.sh
# Needs wrk and nginx. A backend nginx answers a short body; the table is written with
# hm-tablectl; the router runs with bench/malloc_count.so preloaded. After a warm-up load (which
# fills the free lists and the dyno pool), the worker's counters are read (SIGURG), the same
# load runs again, and the counters are read once more: the difference divided by the requests
# of the second load is the figure. Env: BUILD (build), DURATION (5s), CONNS (50), PROTO (h1: wrk
# over HTTP/1.1 keep-alive; h2: h2load over HTTP/2, with prior knowledge (the router's --h2c) or
# by ALPN over TLS, STREAMS (10) concurrent streams per connection), TLS=1 (the same over HTTPS
# keep-alive: an ECDSA P-256 default certificate written into the store with hm-certstore-put,
# the router's --tls-listen; handshakes happen in the warm-up only).
set -u
BUILD=${BUILD:-build} DURATION=${DURATION:-5s} CONNS=${CONNS:-50} PROTO=${PROTO:-h1} STREAMS=${STREAMS:-10}
tools="wrk nginx"; flags=""
[ "$PROTO" = h2 ] && tools="h2load nginx" flags="--h2c"
for t in $tools; do command -v $t >/dev/null || { echo "missing $t"; exit 2; }; done
router=$BUILD/router/hermod-router tablectl=$BUILD/tests/tools/hm-tablectl preload=$BUILD/bench/malloc_count.so
certput=$BUILD/tests/tools/hm-certstore-put TLS=${TLS:-0}
for f in "$router" "$tablectl" "$preload"; do [ -x "$f" ] || [ -f "$f" ] || { echo "no $f: build first"; exit 2; }; done
W=$(mktemp -d /tmp/hermod-allocs.XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; sleep 0.3; rm -rf "$W"; }
trap cleanup EXIT
BP=19501 MP=19502
cat > "$W/backend.conf" <<C
worker_processes 1; daemon off; pid $W/backend.pid; error_log $W/backend.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:$BP; location / { return 200 "hello from a dyno\n"; } } }
C
nginx -c "$W/backend.conf" & pids+=($!)
echo '{"changes":[{"op":"app.put","app":"bench"},{"op":"domain.put","domain":"bench.example.com","app":"bench"},{"op":"dyno.put","app":"bench","dyno":"web.1","addr":"127.0.0.1:'$BP'","state":"up"}]}' |
	"$tablectl" --table "$W/table" apply - >/dev/null || exit 1
tls=() url=http://127.0.0.1:$MP/
if [ "$TLS" = 1 ]; then
	SP=19503
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=bench.example.com \
		-addext subjectAltName=DNS:bench.example.com -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
	"$certput" "$W/table.certs" put default "$W/cert.pem" "$W/key.pem" || exit 1
	"$certput" "$W/table.certs" keys "$(head -c 80 /dev/urandom | od -An -tx1 | tr -d ' \n')" || exit 1
	tls=(--tls-listen 127.0.0.1:$SP) url=https://127.0.0.1:$SP/
fi
LD_PRELOAD=$(realpath "$preload") MALLOC_COUNT_OUT="$W/counts" \
	"$router" --table "$W/table" --listen 127.0.0.1:$MP "${tls[@]}" --workers 1 $flags >/dev/null 2>"$W/router.err" & pids+=($!)
master=$!
for i in $(seq 50); do curl -s -o /dev/null -H 'Host: bench.example.com' http://127.0.0.1:$MP/ && break; sleep 0.1; done
worker=$(pgrep -P "$master" | head -1)
[ -n "$worker" ] || { echo "no worker"; cat "$W/router.err"; exit 1; }
if [ "$PROTO" = h2 ]; then
	load() { h2load -c"$CONNS" -m"$STREAMS" -D"${DURATION%s}" -H ':authority: bench.example.com' "$url" | awk '/^requests:/{print $8}'; }
else
	load() { wrk -t1 -c"$CONNS" -d"$DURATION" -H 'Host: bench.example.com' "$url" | awk '/ requests in /{print $1}'; }
fi
snap() { : > "$W/counts"; kill -URG "$worker"; sleep 0.2; sed -E 's/.*malloc=([0-9]+) calloc=([0-9]+) realloc=([0-9]+) memalign=([0-9]+) free=([0-9]+)/\1 \2 \3 \4 \5/' "$W/counts"; }
read -r m0 c0 r0 a0 f0 < <(snap)
warm=$(load)
read -r m1 c1 r1 a1 f1 < <(snap)
n=$(load)
read -r m2 c2 r2 a2 f2 < <(snap)
rss=$(awk '/VmRSS/{print $2}' /proc/"$worker"/status)
echo "warm-up: $warm requests, heap calls: malloc $((m1 - m0)) calloc $((c1 - c0)) free $((f1 - f0)) (start-up before it: malloc $m0)"
echo "measured: $n requests with $CONNS connections"
echo "heap calls during the measured load: malloc $((m2 - m1)) calloc $((c2 - c1)) realloc $((r2 - r1)) memalign $((a2 - a1)) free $((f2 - f1))"
awk -v n="$n" -v t=$(( (m2 - m1) + (c2 - c1) + (r2 - r1) + (a2 - a1) )) 'BEGIN{printf "allocations per request: %.6f\n", (n > 0 ? t / n : 0)}'
echo "worker RSS after the load: ${rss} KiB"

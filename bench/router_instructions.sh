#!/usr/bin/env bash
# User-space instructions per request of one hermod-router worker, counted by callgrind: a figure
# that the neighbours' load on a shared machine does not move (CPU time per request does, by
# ±20% between rounds here). Used for the cost of session affinity (docs/router.md).
#
# Run from the project root after building into build/:   bench/router_instructions.sh
# Needs valgrind, h2load and nginx. For each case the router runs under callgrind twice, once
# serving N1 and once N2 keep-alive requests (10 connections); the difference of the worker's
# totals divided by N2 - N1 is the figure (start-up and shutdown cancel out).
#   plain        an app without affinity, requests without a cookie
#   plain+cookie the same app, requests carrying a cookie header as long as an affinity one
#   affinity     an app with affinity, requests carrying a valid affinity cookie
# Env: BUILD (build), N1 (2000), N2 (12000), MODE (ka | close | h2: HTTP/2 with prior knowledge,
# the router with --h2c, 10 streams per connection).
set -u
BUILD=${BUILD:-build} N1=${N1:-2000} N2=${N2:-12000} MODE=${MODE:-ka}
for t in valgrind h2load nginx curl; do command -v $t >/dev/null || { echo "missing $t"; exit 2; }; done
router=$BUILD/router/hermod-router tablectl=$BUILD/tests/tools/hm-tablectl
for f in "$router" "$tablectl"; do [ -x "$f" ] || { echo "no $f: build first"; exit 2; }; done
BP=19701 MP=19702 flags="" proto=(--h1)
[ "$MODE" = h2 ] && flags=--h2c proto=(-m 10)
PAD="Cookie: x-session=1765456789.web.1.AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdE"

# instructions N AFFINITY EXTRA-HEADER: the worker's total instructions after N requests
instructions() {
	local n=$1 aff=$2 extra=$3 W nginx_pid router_pid h cookie wk total
	W=$(mktemp -d /tmp/hermod-instr.XXXX)
	cat > "$W/backend.conf" <<C
worker_processes 1; daemon off; pid $W/backend.pid; error_log $W/backend.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:$BP; location / { return 200 "hello from a dyno\n"; } } }
C
	nginx -c "$W/backend.conf" & nginx_pid=$!
	echo '{"changes":[{"op":"app.put","app":"bench","affinity":'"$aff"'},{"op":"domain.put","domain":"bench.example.com","app":"bench"},{"op":"dyno.put","app":"bench","dyno":"web.1","addr":"127.0.0.1:'$BP'","state":"up"}]}' |
		"$tablectl" --table "$W/table" apply - >/dev/null || exit 1
	valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$W/cg.%p" \
		"$router" --table "$W/table" --listen 127.0.0.1:$MP --workers 1 --access-log /dev/null $flags \
		2>"$W/router.err" & router_pid=$!
	for _ in $(seq 100); do curl -s -o /dev/null -H 'Host: bench.example.com' http://127.0.0.1:$MP/ && break; sleep 0.2; done
	h=(-H ':authority: bench.example.com')
	if [ "$aff" = true ]; then
		cookie=$(curl -s -D - -o /dev/null -H 'Host: bench.example.com' http://127.0.0.1:$MP/ |
			grep -i '^set-cookie' | sed 's/^[^:]*: //; s/;.*//' | tr -d '\r')
		h+=(-H "Cookie: $cookie")
	fi
	[ -n "$extra" ] && h+=(-H "$extra")
	[ "$MODE" = close ] && h+=(-H 'Connection: close')
	h2load "${proto[@]}" -n "$n" -c 10 "${h[@]}" http://127.0.0.1:$MP/ | grep -q "$n succeeded" ||
		{ echo "requests failed" >&2; exit 1; }
	kill $router_pid; wait $router_pid 2>/dev/null
	for f in "$W"/cg.*; do grep -q on_acceptable "$f" && wk=$f; done
	total=$(callgrind_annotate "$wk" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
	kill $nginx_pid; rm -rf "$W"
	echo "$total"
}

per_request() { local a b; a=$(instructions "$N1" "$@"); b=$(instructions "$N2" "$@"); echo $(( (b - a) / (N2 - N1) )); }

plain=$(per_request false "")
padded=$(per_request false "$PAD")
aff=$(per_request true "")
echo "user-space instructions per request ($MODE, one worker):"
printf '  %-13s %6d\n' plain "$plain" plain+cookie "$padded" affinity "$aff"
awk -v p="$plain" -v q="$padded" -v a="$aff" 'BEGIN{printf "affinity: %+.1f%% over the same request without affinity, %+.1f%% over plain\n", (a-q)*100/q, (a-p)*100/p}'

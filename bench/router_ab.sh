#!/usr/bin/env bash
# Two builds of hermod-router side by side (A and B: say, before and after a change), under the
# same load, rounds alternating A B A B so that the neighbours' load on a shared machine falls on
# both alike. Prints each round and the medians: requests/s, p99, and CPU per request (user +
# system time of the router's processes over the requests served, the steadiest figure), then
# B/A. One worker each, wrk with CONNS connections to an nginx backend returning a short body, the
# table written by hm-tablectl, access log to /dev/null, as in ../shared/bench/peers.sh.
#
# Run from the project root:   bench/router_ab.sh BUILD_A BUILD_B
# Env: ROUNDS (6), DURATION (5s), CONNS (50), MODE (ka | close: a new connection per request).
set -u
[ $# -eq 2 ] || { echo "usage: bench/router_ab.sh BUILD_A BUILD_B"; exit 2; }
ROUNDS=${ROUNDS:-6} DURATION=${DURATION:-5s} CONNS=${CONNS:-50} MODE=${MODE:-ka}
for t in wrk nginx curl; do command -v $t >/dev/null || { echo "missing $t"; exit 2; }; done
for b in "$1" "$2"; do
	for f in "$b/router/hermod-router" "$b/tests/tools/hm-tablectl"; do
		[ -x "$f" ] || { echo "no $f: build first"; exit 2; }
	done
done
W=$(mktemp -d /tmp/hermod-ab.XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; sleep 0.3; rm -rf "$W"; }
trap cleanup EXIT
BP=19801 PA=19802 PB=19803
cat >"$W/backend.conf" <<C
worker_processes 1; daemon off; pid $W/backend.pid; error_log $W/backend.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:$BP; location / { return 200 "hello from a dyno\n"; } } }
C
nginx -c "$W/backend.conf" & pids+=($!)
# Each build reads a table its own hm-tablectl wrote: the file format may differ between them.
for ab in a b; do
	[ $ab = a ] && bd=$1 || bd=$2
	echo '{"changes":[{"op":"app.put","app":"bench"},{"op":"domain.put","domain":"bench.example.com","app":"bench"},{"op":"dyno.put","app":"bench","dyno":"web.1","addr":"127.0.0.1:'$BP'","state":"up"}]}' |
		"$bd/tests/tools/hm-tablectl" --table "$W/table-$ab" apply - >/dev/null || exit 1
done
"$1/router/hermod-router" --table "$W/table-a" --listen 127.0.0.1:$PA --workers 1 --access-log /dev/null \
	2>"$W/a.err" & pids+=($!); root_a=$!
"$2/router/hermod-router" --table "$W/table-b" --listen 127.0.0.1:$PB --workers 1 --access-log /dev/null \
	2>"$W/b.err" & pids+=($!); root_b=$!
for p in $PA $PB; do
	for _ in $(seq 100); do
		[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.example.com' http://127.0.0.1:$p/)" = 200 ] && break
		sleep 0.1
	done
done
ticks() { local t=0 p; for p in $1 $(pgrep -P "$1"); do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
HZ=$(getconf CLK_TCK)
run() { # port root -> "rps p99 cpu_us_per_req"
	local before after out extra=()
	[ "$MODE" = close ] && extra=(-H 'Connection: close')
	before=$(ticks "$2")
	out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H 'Host: bench.example.com' "${extra[@]}" "http://127.0.0.1:$1/" 2>&1)
	after=$(ticks "$2")
	echo "$out" | awk -v dt=$((after - before)) -v hz="$HZ" '/Requests\/sec/{r=$2} /^ +99%/{p99=$2} / requests in /{n=$1}
		/Non-2xx|Socket errors/{bad=1}
		END{ v=p99; if (v ~ /us$/) v=v/1000; else if (v ~ /ms$/) v=v+0; else if (v ~ /s$/) v=v*1000;
		     printf "%s %.3f %.2f %s\n", r, v, (n>0 ? dt*1e6/hz/n : 0), (bad ? "ERRORS" : "") }'
}
med() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
declare -A RPS P99 CPU
echo "mode $MODE, A=$1, B=$2, $ROUNDS rounds of $DURATION"
for r in $(seq "$ROUNDS"); do
	for x in A B; do
		if [ $x = A ]; then port=$PA root=$root_a; else port=$PB root=$root_b; fi
		read -r rps p99 cpu bad < <(run $port $root)
		echo "round $r $x: $rps req/s p99 ${p99}ms cpu $cpu us/req ${bad}"
		RPS[$x]+="$rps "; P99[$x]+="$p99 "; CPU[$x]+="$cpu "
	done
done
for x in A B; do
	printf "median %s: %8.0f req/s  p99 %6.3f ms  cpu %6.2f us/req\n" $x "$(echo ${RPS[$x]} | med)" \
		"$(echo ${P99[$x]} | med)" "$(echo ${CPU[$x]} | med)"
done
awk -v ra="$(echo ${RPS[A]} | med)" -v rb="$(echo ${RPS[B]} | med)" -v ca="$(echo ${CPU[A]} | med)" \
	-v cb="$(echo ${CPU[B]} | med)" 'BEGIN{printf "B/A: rps %.3f  cpu/req %.3f\n", rb/ra, cb/ca}'

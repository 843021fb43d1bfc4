#!/usr/bin/env bash
# ../shared/bench/peers.sh without hermod-syncd: the same load, peers and rounds, with the
# routing table written directly by tests/tools/hm-tablectl instead of origin + edge +
# hermodctl. For measuring the router alone (or before syncd is built); the judged figures come
# from peers.sh itself. Run from the project root; same environment variables as peers.sh.
set -u
peers=${PEERS_SH:-../shared/bench/peers.sh}
[ -r "$peers" ] || { echo "no $peers"; exit 2; }
script=$(mktemp /tmp/hermod-peers-direct.XXXX)
trap 'rm -f "$script"' EXIT
python3 - "$peers" "$script" <<'PY' || exit 2
import sys
s = open(sys.argv[1]).read()
s = s.replace("for b in hermod-syncd hermod-router hermodctl; do", "for b in hermod-router hm-tablectl; do", 1)
a = s.index('"$hermod_syncd" origin')
b = s.index("ok=0; for i in $(seq 100)")
table = ('{"changes":[{"op":"app.put","app":"bench"},{"op":"domain.put","domain":"bench.example.com",'
         '"app":"bench"},{"op":"dyno.put","app":"bench","dyno":"web.1","addr":"127.0.0.1:\'$BP\'",'
         '"state":"up"}]}')
s = s[:a] + ('"$hermod_router" --table "$W/table" --listen 127.0.0.1:$MP --workers 1 >/dev/null '
             '2>"$W/router.err" & pids+=($!); ROOT_hermod=$!\n'
             "echo '" + table + "' | \"$hm_tablectl\" --table \"$W/table\" apply - >/dev/null\n") + s[b:]
open(sys.argv[2], "w").write(s)
PY
bash "$script"

#!/usr/bin/env bash
# ../shared/bench/peers.sh without hermod-syncd: the same load, peers and rounds, with the
# routing table written directly by tests/tools/hm-tablectl instead of origin + edge +
# hermodctl. For measuring the router alone (or before syncd is built); the judged figures come
# from peers.sh itself. Run from the project root; same environment variables as peers.sh, and
# one mode more: MODE=h2c, HTTP/2 with prior knowledge on plain TCP (h2load, 10 streams per
# connection, as MODE=h2 but without TLS): hermod with --h2c, HAProxy with a "proto h2" bind,
# nginx with a plain "http2" listen.
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


# MODE=h2c: each proxy gets a plain HTTP/2 listener (hermod: --h2c on its own) and h2load speaks
# HTTP/2 with prior knowledge to it.
def sub(old, new):
    global s
    if old not in s:
        sys.exit("router_peers.sh: peers.sh changed, cannot add MODE=h2c near: " + old)
    s = s.replace(old, new, 1)


sub("case $MODE in ka|close|tls|tls-close|h2) ;;", "case $MODE in ka|close|tls|tls-close|h2|h2c) ;;")
sub("HPS=19143 NPS=19243 MPS=19343", "HPS=19143 NPS=19243 MPS=19343 HPC=19180 NPC=19280")
sub("  bind 127.0.0.1:$HPS ssl crt", "  bind 127.0.0.1:$HPC proto h2\n  bind 127.0.0.1:$HPS ssl crt")
sub("listen 127.0.0.1:$NPS ssl http2;", "listen 127.0.0.1:$NPS ssl http2; listen 127.0.0.1:$NPC http2;")
sub("--listen 127.0.0.1:$MP --workers 1", '--listen 127.0.0.1:$MP $( [ "$MODE" = h2c ] && echo --h2c ) --workers 1')
sub('  if [ "$mode" = h2 ]; then\n',
    '  [ "$mode" = h2c ] && { scheme=http; port=$(h2c_port "$1"); }\n'
    '  if [ "$mode" = h2 ] || [ "$mode" = h2c ]; then\n')
sub('"https://127.0.0.1:$port/" 2>&1)', '"$scheme://127.0.0.1:$port/" 2>&1)')
sub("# The TLS listener of each proxy",
    'h2c_port() { case $1 in $HP) echo $HPC;; $NP) echo $NPC;; *) echo "$1";; esac; }\n'
    "# The TLS listener of each proxy")
open(sys.argv[2], "w").write(s)
PY
bash "$script"

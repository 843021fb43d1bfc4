#!/bin/sh
# Fails if hermod-router holds any symbol the routing table's writer library defines: the router
# links the table's read side only (common/meson.build; docs/table.md, "Code"). Usage:
#   check-router-links.sh NM HERMOD_ROUTER LIBHM_TABLE_WRITE.a
set -eu
nm=$1 router=$2 writer=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$nm" --defined-only "$writer" | awk 'NF == 3 && $2 ~ /^[TDBR]$/ { print $3 }' | sort -u >"$tmp/writer"
"$nm" --defined-only "$router" | awk 'NF == 3 { print $3 }' | sort -u >"$tmp/router"
# Not vacuous: the writer library defines the writer, and the router has the reader.
grep -qx 'hm_table_writer_open' "$tmp/writer" || { echo "no hm_table_writer_open in $writer"; exit 1; }
grep -qx 'hm_table_route' "$tmp/router" || { echo "no hm_table_route in $router"; exit 1; }
both=$(comm -12 "$tmp/writer" "$tmp/router")
if [ -n "$both" ]; then
	echo "hermod-router links the table's writer:"
	echo "$both"
	exit 1
fi
echo "hermod-router: $(wc -l <"$tmp/writer") writer symbols, none linked"

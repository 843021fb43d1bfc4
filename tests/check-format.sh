#!/bin/sh
# Fails if any C source differs from what .clang-format makes of it (the house style is applied,
# not just checked in). Run from anywhere; it looks at the tracked sources of this checkout.
set -eu
cd "$(dirname "$0")/.."
bad=0
for f in $(git ls-files '*.c' '*.h'); do
	if ! clang-format --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then
		echo "not formatted: $f (clang-format --style=file -i $f)"
		bad=1
	fi
done
exit $bad

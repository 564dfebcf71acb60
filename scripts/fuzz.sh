#!/usr/bin/env bash
# fuzz.sh runs every fuzz target of the module for a while each.
#
#   scripts/fuzz.sh [DURATION]     (default 30s; any `go test -fuzztime` value)
#
# New crashers land in the package's testdata/fuzz/ and fail `make test` from
# then on, until fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-30s}
status=0
while IFS= read -r line; do
	file=${line%%:*}
	target=$(sed -E 's/^.*func (Fuzz[A-Za-z0-9_]*).*/\1/' <<<"$line")
	pkg=./$(dirname "$file")
	echo "==> $pkg $target ($fuzztime)"
	go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" || status=1
done < <(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' . | sed 's|^\./||')
exit $status

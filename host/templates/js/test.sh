#!/usr/bin/env bash
# Tests {{name}} through the real host against the recorded responses in tests/ (no network):
#   callout check                             loads, compiles and cross-checks it
#   tests/ok.json         (200 with an item)  exit 0 and the reply "A-1 is a blue widget."
#   tests/not-found.json  (404)               exit 1 and a not-found failure
# Build the component first (README.md). Run from anywhere: bash path/to/{{name}}/test.sh
# CALLOUT names the callout binary (default: callout on PATH); CALLOUT_DATA_DIR the data dir.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
callout=${CALLOUT:-callout}
failed=0

run() { "$callout" --actions "$(dirname "$here")" "$@" 2>&1; }

# expect WHAT WANTED_EXIT (- for any) TEXT: checks the last run's $out and $code.
expect() {
  if { [ "$2" = - ] || [ "$code" = "$2" ]; } && grep -qF -- "$3" <<<"$out"; then
    echo "ok: $1"
  else
    echo "FAILED: $1 (exit $code, wanted $2 and output with: $3)"
    sed 's/^/    /' <<<"$out"
    failed=$((failed + 1))
  fi
}

out=$(run check); code=$? # exits 1 when a sibling action fails to load: only this line counts
expect "callout check loads {{name}}" - "ok {{name}} ("

out=$(run test {{name}} --input '{"id": "A-1"}' --mock "$here/tests/ok.json"); code=$?
expect "a found item is the outcome and the reply" 0 "the user would see: A-1 is a blue widget."

out=$(run test {{name}} --input '{"id": "nope"}' --mock "$here/tests/not-found.json"); code=$?
expect "an unknown item is not-found" 1 '"class": "not-found"'

[ "$failed" = 0 ] && echo "all passed" || { echo "$failed failed"; exit 1; }

#!/usr/bin/env bash
# Tests {{name}} against the recorded responses in tests/, through the real host:
#   callout check                            loads, compiles and cross-checks it
#   tests/ok.json         (200 with an item) exit 0 and the reply "A-1 is a blue widget."
#   tests/not-found.json  (404)              exit 1 and a not-found failure
# Build the component first (README.md). Run from anywhere: bash path/to/{{name}}/test.sh
# CALLOUT names the callout binary (default: callout on PATH); CALLOUT_DATA_DIR the data dir.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
callout=${CALLOUT:-callout}
passed=0
failed=0

run() { "$callout" --actions "$(dirname "$here")" "$@" 2>&1; }

expect() { # expect NAME WANTED_EXIT(- for any) TEXT OUTPUT EXIT
  if { [ "$2" = - ] || [ "$5" = "$2" ]; } && grep -qF -- "$3" <<<"$4"; then
    echo "ok: $1"
    passed=$((passed + 1))
  else
    echo "FAILED: $1 (exit $5, wanted $2 and output with: $3)"
    printf '%s\n' "$4" | sed 's/^/    /'
    failed=$((failed + 1))
  fi
}

out=$(run check) # exits 1 if a sibling action fails to load: only this one's line counts
expect "callout check loads {{name}}" - "ok {{name}} (" "$out" $?

out=$(run test {{name}} --input '{"id": "A-1"}' --mock "$here/tests/ok.json")
expect "a found item is the outcome and the reply" 0 "the user would see: A-1 is a blue widget." "$out" $?

out=$(run test {{name}} --input '{"id": "nope"}' --mock "$here/tests/not-found.json")
expect "an unknown item is not-found" 1 '"class": "not-found"' "$out" $?

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

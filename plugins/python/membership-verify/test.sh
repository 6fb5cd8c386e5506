#!/usr/bin/env bash
# Tests membership-verify-py through the real host with the recorded responses in tests/: the
# request it renders (dry-run), and each answer of the membership API mapped to the outcome or
# failure the Rust membership-verify gives (class, kind, status, Retry-After, reply, retries).
# Build the component first (../README.md). From the repository root:
#   bash plugins/python/membership-verify/test.sh
# CALLOUT names the callout binary (default: target/debug/callout, else callout on PATH);
# CALLOUT_DATA_DIR the data dir (default .callout: the compile cache makes reruns quick).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
callout=${CALLOUT:-$(command -v "$here/../../../target/debug/callout" || echo callout)}
input='{"member_id": "M-1001", "date_of_birth": "1990-04-12"}'
passed=0
failed=0

run() { "$callout" --actions "$(dirname "$here")" "$@" 2>&1; }

expect() { # expect NAME WANTED_EXIT OUTPUT EXIT TEXT...
  local name=$1 want=$2 out=$3 got=$4 text ok=1
  shift 4
  [ "$got" = "$want" ] || ok=0
  for text in "$@"; do grep -qF -- "$text" <<<"$out" || ok=0; done
  if [ "$ok" = 1 ]; then
    echo "ok: $name"
    passed=$((passed + 1))
  else
    echo "FAILED: $name (exit $got, wanted $want and output with: $*)"
    printf '%s\n' "$out" | sed 's/^/    /'
    failed=$((failed + 1))
  fi
}

mock() { run test membership-verify-py --input "$input" --mock "$here/tests/$1.json"; }

out=$(run check)
expect "callout check loads it" 0 "$out" $? "ok membership-verify-py (" "1 action(s) ok, 0 failed"

out=$(run test membership-verify-py --input "$input" --dry-run)
expect "dry-run renders the request" 0 "$out" $? \
  "POST https://members.example.com/memberships/verify" \
  "authorization: Bearer {{secret.MEMBERSHIP_TOKEN}}" "content-type: application/json" \
  "Idempotency-Key: " '{"member_id":"M-1001","date_of_birth":"1990-04-12"}'

out=$(mock active)
expect "an active membership" 0 "$out" $? '"active": true' '"membership_active": true' \
  "the user would see: Membership M-1001 is active on the gold plan until 2027-01-31."

out=$(mock inactive)
expect "a lapsed membership" 0 "$out" $? '"active": false' '"expired_on": "2026-06-30"' \
  "the user would see: Membership M-2002 is not active (it expired on 2026-06-30)."

out=$(mock not-found)
expect "404 is not-found, never retried" 1 "$out" $? '"class": "not-found"' "attempts: 1" \
  "no membership matches M-1001 with that date of birth" \
  "the user would see: I couldn't find a membership with that ID and date of birth."

out=$(mock rate-limited)
expect "429 is rate-limited with Retry-After, retried once" 1 "$out" $? \
  '"kind": "rate-limited"' '"status": 429' '"retry_after_ms": 2000' "attempts: 2"

out=$(mock server-error)
expect "503 is server-error, retried once" 1 "$out" $? '"kind": "server-error"' \
  '"status": 503' "attempts: 2" "the user would see: Sorry, I can't check memberships"

out=$(mock client-error)
expect "422 is client-error quoting the body, not retried" 1 "$out" $? \
  '"kind": "client-error"' '"status": 422' "the upstream answered 422: {" "attempts: 1"

out=$(mock timeout)
expect "a timeout is upstream timeout, retried once" 1 "$out" $? '"kind": "timeout"' \
  "attempts: 2"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# Tests crm-lead-js through the real host against the recorded responses in tests/ (no network):
# the outcomes the Rust crm-lead gives for the same answers. Build crm_lead.wasm first
# (docs/plugins-js.md). Run from anywhere: bash plugins/js/crm-lead/test.sh
# CALLOUT names the callout binary (default: callout on PATH); CALLOUT_DATA_DIR the data dir.
# The retried cases wait for their backoff: about 10 s in all.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
callout=${CALLOUT:-callout}
lead='{"name": "Ada", "email": "ada@example.com", "company": "Acme"}'
failed=0

# expect WHAT MOCK WANTED_EXIT TEXT...: runs the action on tests/MOCK.json, checks every TEXT.
expect() {
  local what=$1 mock=$2 want=$3 out code text
  shift 3
  out=$("$callout" --actions "$(dirname "$here")" test crm-lead-js --input "$lead" \
    --mock "$here/tests/$mock.json" 2>&1)
  code=$?
  for text in "$@"; do
    if [ "$code" != "$want" ] || ! grep -qF -- "$text" <<<"$out"; then
      echo "FAILED: $what (exit $code, wanted $want and output with: $text)"
      sed 's/^/    /' <<<"$out"
      failed=$((failed + 1))
      return
    fi
  done
  echo "ok: $what"
}

expect "201: the lead's id and the reply" created 0 '"id": "lead_000001"' \
  "the user would see: Thanks Ada, our team will be in touch at ada@example.com." \
  "Idempotency-Key: " "authorization: Bearer {{secret.CRM_TOKEN}}"
expect "409: a client error, not retried" conflict 1 '"kind": "client-error"' '"status": 409' \
  "attempts: 1"
expect "503: a server error, retried 3 times" unavailable 1 '"kind": "server-error"' "attempts: 4"
expect "429: rate-limited with Retry-After" rate-limited 1 '"kind": "rate-limited"' \
  '"retry_after_ms": 2000' "attempts: 4"
expect "no answer: a timeout, retried" timeout 1 '"kind": "timeout"' "attempts: 4"

[ "$failed" = 0 ] && echo "all passed" || { echo "$failed failed"; exit 1; }

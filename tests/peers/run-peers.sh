#!/usr/bin/env bash
# Runs the independent peers against a real `callout serve` and `callout mcp`.
#
#   tests/peers/run-peers.sh [REPO_ROOT]     (default: this script's repository)
#
# Needs target/debug/callout, the actions built (./dev plugins) and .venv (./dev setup). It
# starts `callout demo-backend` and `callout serve` on free loopback ports (the actions pointed
# at the back end through callout.toml overrides, --dev-loopback and the token in the secrets'
# env variables, as `callout demo` does), then runs: openapi_check.py, schemathesis against
# /openapi.json (admin paths excluded), rest_peer.py (real calls checked against the document),
# mcp_peer.py over /mcp and over `callout mcp` on stdio, and checks that the back end saw the
# calls with its token. Every step runs; the exit status is non-zero if any failed. All traffic
# stays on 127.0.0.1.
set -uo pipefail

root=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
bin=$root/target/debug/callout
py=$root/.venv/bin/python
st=$root/.venv/bin/schemathesis
peers=$root/tests/peers
actions=$root/plugins

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'run-peers: %s\n' "$*" >&2; exit 1; }

[ -x "$bin" ] || die "no $bin (cargo build)"
"$bin" serve --help >/dev/null 2>&1 || die "$bin has no serve subcommand"
[ -x "$py" ] && [ -x "$st" ] || die "no .venv with the peers' tools (./dev setup)"
[ -f "$actions/target/wasm32-wasip2/release/order_status.wasm" ] || die "the actions are not built (./dev plugins)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/callout-peers.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rand() { "$py" -c 'import secrets; print(secrets.token_hex(16))'; }
free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
http_ok() { # URL: exit 0 when it answers 200
  "$py" -c 'import sys, urllib.request as u; sys.exit(0 if u.urlopen(sys.argv[1], timeout=2).status == 200 else 1)' "$1" 2>/dev/null
}
# Dumps a log's end for a failed step.
show_log() { echo "--- last lines of $1:" >&2; tail -n 30 "$1" >&2; echo "---" >&2; }

# The secrets and keys: fresh for each run, passed only through the environment.
token=demo-$(rand)
export CALLOUT_DEMO_TOKEN=$token ORDERS_API_TOKEN=$token MEMBERSHIP_API_TOKEN=$token CRM_API_TOKEN=$token
export CALLOUT_AGENT_KEY=agent-$(rand) CALLOUT_ADMIN_KEY=admin-$(rand)
unset CALLOUT_ACTIONS CALLOUT_DATA_DIR CALLOUT_CONFIG

say "starting the demo back end"
"$bin" demo-backend --listen 127.0.0.1:0 >"$tmp/backend.log" 2>&1 &
pids+=($!)
backend=
for _ in $(seq 100); do
  backend=$(sed -n 's|^demo back end listening on \(http://127\.0\.0\.1:[0-9]*\)$|\1|p' "$tmp/backend.log")
  [ -n "$backend" ] && break
  kill -0 "${pids[0]}" 2>/dev/null || break
  sleep 0.1
done
[ -n "$backend" ] || { show_log "$tmp/backend.log"; die "the demo back end did not start"; }
backend_addr=${backend#http://}

port=$(free_port)
base=http://127.0.0.1:$port
cat >"$tmp/callout.toml" <<EOF
[server]
listen = "127.0.0.1:$port"

[[server.api_keys]]
name = "agent"
scope = "agent"
env = "CALLOUT_AGENT_KEY"

[[server.api_keys]]
name = "admin"
scope = "admin"
env = "CALLOUT_ADMIN_KEY"

[actions.order-status.config]
base_url = "$backend"

[actions.membership-verify.config]
base_url = "$backend"

[actions.crm-lead.config]
base_url = "$backend"
EOF

say "starting callout serve on $base (demo back end $backend)"
"$bin" serve --actions "$actions" --data-dir "$tmp/serve-data" --config "$tmp/callout.toml" \
  --listen "127.0.0.1:$port" --dev-loopback "$backend_addr" >"$tmp/serve.log" 2>&1 &
serve_pid=$!
pids+=("$serve_pid")
up=
for _ in $(seq 300); do
  http_ok "$base/healthz" && { up=1; break; }
  kill -0 "$serve_pid" 2>/dev/null || break
  sleep 0.2
done
[ -n "$up" ] || { show_log "$tmp/serve.log"; die "callout serve did not answer GET /healthz with 200"; }

passed=0
failed=0
failures=()
step() { # NAME COMMAND...: runs one check, records its outcome
  local name=$1 start rc
  shift
  say "$name"
  start=$SECONDS
  "$@"
  rc=$?
  if [ "$rc" = 0 ]; then
    passed=$((passed + 1))
    say "$name: passed ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1))
    failures+=("$name")
    say "$name: FAILED (exit $rc, $((SECONDS - start)) s)"
  fi
}

schemathesis_run() {
  # In $tmp, so that nothing is left in the repository. schemathesis.toml: failing warnings.
  # Every check (statuses, content types, schemas and headers of the answers, no 5xx, invalid
  # data rejected, unsupported methods 405, auth enforced: ignored_auth also sends each request
  # without and with a wrong key) except positive_data_acceptance: the document states some
  # input rules only in prose (the conversation id's characters), so valid-looking data is
  # rightly refused.
  (cd "$tmp" && timeout 120 "$st" --config-file "$peers/schemathesis.toml" run "$base/openapi.json" \
    --header "Authorization: Bearer $CALLOUT_AGENT_KEY" \
    --exclude-path-regex '^/(v1/admin|mcp)' \
    --checks all --exclude-checks positive_data_acceptance \
    --phases examples,coverage,fuzzing \
    --max-examples 100 --seed 1 --workers 2 --request-timeout 20 \
    --generation-database none --no-color)
}

backend_saw_calls() {
  # The peers' order-status calls (REST and MCP) reached the back end, each with its token.
  "$py" - "$backend/_demo/requests" <<'PY'
import json, os, sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + os.environ["CALLOUT_DEMO_TOKEN"]})
reqs = json.load(urllib.request.urlopen(req, timeout=10))
found = [r for r in reqs if r["method"] == "GET" and r["path"] == "/orders/123456" and r["status"] == 200]
bad = [r for r in reqs if not r["authorized"]]
print(f"the demo back end received {len(reqs)} request(s), {len(found)} GET /orders/123456 answered 200")
if not found:
    sys.exit("no GET /orders/123456 answered 200 reached the demo back end")
if bad:
    sys.exit(f"requests without the bearer token: {bad[:3]}")
PY
}

server_still_up() {
  kill -0 "$serve_pid" 2>/dev/null && http_ok "$base/healthz" && echo "callout serve still answers GET /healthz"
}

step "openapi document" "$py" "$peers/openapi_check.py" "$base"
step "schemathesis" schemathesis_run
step "rest calls" "$py" "$peers/rest_peer.py" --expect-status shipped "$base"
step "mcp over http" "$py" "$peers/mcp_peer.py" --expect-status shipped --http "$base/mcp"
step "mcp over stdio" "$py" "$peers/mcp_peer.py" --expect-status shipped --stdio -- \
  "$bin" mcp --actions "$actions" --data-dir "$tmp/mcp-data" --config "$tmp/callout.toml" \
  --dev-loopback "$backend_addr"
step "back end saw the calls" backend_saw_calls
step "server survived" server_still_up

if [ "$failed" != 0 ]; then
  show_log "$tmp/serve.log"
  say "failed: ${failures[*]}"
fi
echo "run-peers: $passed passed, $failed failed"
[ "$failed" = 0 ]

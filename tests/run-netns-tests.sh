#!/usr/bin/env bash
# Runs the SSRF tests (tests/integration/ssrf.rs) inside a fresh, loopback-only network namespace.
#
# Those tests grant an action every host ("*://*:*") so that only the blocked-network guard
# stands between a corpus of forbidden URLs and the network; they are #[ignore]d in a plain
# `cargo test` and must only run where a broken guard cannot reach anything. This script:
#   1. builds the wasm test plugins (tests/plugins) and the integration test binary, outside the
#      namespace, where crates can still be fetched (both are no-ops after `cargo test
#      --workspace`);
#   2. enters new network and mount namespaces (`unshare --net --mount`), remounts /sys so that
#      /sys/class/net shows the new namespace (each test checks it holds only `lo`), brings `lo`
#      up and puts a few of the corpus's private addresses on it, so that a request leaking past
#      the guard to them reaches the tests' canary listener instead of failing to connect;
#   3. runs the ignored `ssrf::` tests from the binary there. Extra arguments go to the test
#      binary (e.g. a test name filter is already set; add `--nocapture`).
# Needs root (unshare), iproute2 and python3. Exits non-zero when a test fails.
#
#   sudo tests/run-netns-tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'run-netns-tests.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root: it creates network namespaces with unshare --net"
for tool in unshare ip mount python3 cargo; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

say "building the wasm test plugins (tests/plugins)"
# The same invocation as tests/integration/support.rs, so the tests find them up to date and
# never need cargo's network inside the namespace.
(cd tests/plugins && env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_TARGET_DIR \
  -u CARGO_BUILD_TARGET -u CARGO_BUILD_RUSTFLAGS \
  cargo build --release --target wasm32-wasip2 --target-dir "$PWD/target" --quiet)

say "locating the integration test binary"
# --workspace, exactly as `./dev test` builds it: with `-p callout` cargo would resolve features
# differently and rebuild part of the tree (wasmtime's macros included).
BIN=$(cargo test --workspace --test integration --no-run --message-format=json |
  python3 -c '
import json, sys
exe = ""
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    target = msg.get("target") or {}
    if msg.get("reason") == "compiler-artifact" and target.get("name") == "integration" \
            and msg.get("executable"):
        exe = msg["executable"]
print(exe)
')
[ -n "$BIN" ] && [ -x "$BIN" ] || die "cargo did not report the integration test binary"

# Private addresses of the corpus to put on lo inside the namespace (best effort: a kernel that
# refuses one just makes a leak to it fail to connect instead of reaching the canary).
CANARY_ADDRS="10.0.0.1/32 10.1.2.3/32 172.16.0.1/32 192.168.1.1/32 169.254.169.254/32 \
100.64.0.1/32 198.18.0.1/32 192.0.2.1/32 240.0.0.1/32 \
fd00::1/128 fec0::1/128 2001::1/128 2001:db8::1/128 2002:7f00:1::/128 64:ff9b::a9fe:a9fe/128"
export CANARY_ADDRS

say "running the SSRF tests in a loopback-only network namespace"
# CARGO_NET_OFFLINE: the tests build tests/plugins with cargo (a no-op after step 1); offline, a
# cargo that wanted the network would fail at once instead of retrying.
cd host
exec unshare --net --mount sh -c '
  set -e
  mount -t sysfs sysfs /sys
  ip link set lo up
  for addr in $CANARY_ADDRS; do ip addr add "$addr" dev lo 2>/dev/null || true; done
  echo "interfaces: $(ls /sys/class/net | tr "\n" " ")" >&2
  bin=$1; shift
  exec env CARGO_NET_OFFLINE=true "$bin" --ignored ssrf:: --test-threads=2 "$@"
' run-netns-tests "$BIN" "$@"

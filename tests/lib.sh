# Shared helpers for the test scripts: free ports, waiting for HTTP, and starting the runtime
# on loopback with cleanup on exit. Source it; do not run it.

ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
FACEKEY_RUNTIME_BIN="${FACEKEY_RUNTIME_BIN:-$ROOT/target/debug/facekey-runtime}"
CLEANUP_PIDS=()
CLEANUP_DIRS=()

cleanup() {
  local pid
  for pid in "${CLEANUP_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${CLEANUP_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  local d
  for d in "${CLEANUP_DIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# fail MESSAGE: print it, and the end of the runtime's log when one was started, then exit 1.
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  if [ -n "${RUNTIME_LOG:-}" ]; then tail -n 40 "$RUNTIME_LOG" >&2; fi
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL [SECONDS]: wait until URL answers 2xx.
wait_http() {
  local url="$1" deadline=$(( $(date +%s) + ${2:-60} ))
  until curl -fs -o /dev/null "$url"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "timed out waiting for $url" >&2; return 1; fi
    sleep 0.2
  done
}

# new_admin_key FILE: create an admin API key with the runtime's own command, append its line to
# FILE and export it as FACEKEY_API_KEY (what the test scripts and the UI e2e send).
new_admin_key() {
  local out
  out=$("$FACEKEY_RUNTIME_BIN" new-api-key tests --scopes admin 2>/dev/null)
  FACEKEY_API_KEY=$(sed -n 1p <<<"$out")
  sed -n 2p <<<"$out" >>"$1"
  export FACEKEY_API_KEY
}

# start_runtime [ARGS...]: start the runtime on a free loopback port with a keys file holding an
# admin key (FACEKEY_API_KEY; AUTH is its curl header); sets RUNTIME_URL.
start_runtime() {
  local port dir
  port=$(free_port)
  dir=$(mktemp -d)
  CLEANUP_DIRS+=("$dir")
  new_admin_key "$dir/api-keys"
  # RUNTIME_EXTRA_SCOPES="verify enrol": one more key per scope, exported as FACEKEY_KEY_<SCOPE>.
  local scope out
  for scope in ${RUNTIME_EXTRA_SCOPES:-}; do
    out=$("$FACEKEY_RUNTIME_BIN" new-api-key "tests-$scope" --scopes "$scope" 2>/dev/null)
    sed -n 2p <<<"$out" >>"$dir/api-keys"
    export "FACEKEY_KEY_${scope^^}=$(sed -n 1p <<<"$out")"
  done
  AUTH="authorization: Bearer $FACEKEY_API_KEY"
  FACEKEY_DATA_DIR="$dir/data" FACEKEY_AUDIT_LOG="$dir/audit.log" "$FACEKEY_RUNTIME_BIN" \
    --listen "127.0.0.1:$port" --api-keys-file "$dir/api-keys" --log warn "$@" \
    >"$dir/runtime.log" 2>&1 &
  CLEANUP_PIDS+=("$!")
  RUNTIME_URL="http://127.0.0.1:$port"
  RUNTIME_LOG="$dir/runtime.log"
  RUNTIME_AUDIT_LOG="$dir/audit.log"
  if ! wait_http "$RUNTIME_URL/readyz" 120; then
    cat "$RUNTIME_LOG" >&2
    return 1
  fi
}

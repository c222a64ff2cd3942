# Sourced by bench/verify/run.sh and bench/overload/run.sh (ROOT set, `set -euo pipefail`): the
# runtime they measure, started on a free loopback port with an admin key, one subject enrolled
# from astronaut.png and the verify request body ready.
#
#   start_bench_runtime [EXTRA RUNTIME FLAGS...]
#
#   add_bench_key ID SCOPES   # appends a key to the keys file, prints its authorization header
#
# Sets work (a temp dir removed on exit with the server stopped), pid, url, WRK_AUTH (exported,
# the admin key's authorization header: the stage split is only in admin answers) and id (the
# subject); writes $work/body.json (the 640x480 JPEG as base64 JSON) and $work/runtime.log.
# Without FACEKEY_RUNTIME_BIN it builds the release runtime; wrk comes from apt when missing.

command -v wrk >/dev/null || apt-get install -y -qq --no-install-recommends wrk >/dev/null
if [ -z "${FACEKEY_RUNTIME_BIN:-}" ]; then
  "$ROOT/scripts/setup-onnxruntime.sh" >/dev/null
  (cd "$ROOT" && cargo build --release --locked -q -p facekey-runtime --bin facekey-runtime)
  FACEKEY_RUNTIME_BIN="$ROOT/target/release/facekey-runtime"
fi

work=$(mktemp -d)
pid=""
# The run's own status is kept: under set -e the server's 143 from `wait` would replace it (and
# skip the rm).
cleanup() {
  local rc=$?
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# A new key ID with SCOPES: its line appended to $work/api-keys (the runtime re-reads the file
# within 2 s), its `Bearer` header printed.
add_bench_key() {
  local key_out
  key_out=$("$FACEKEY_RUNTIME_BIN" new-api-key "$1" --scopes "$2" 2>/dev/null)
  sed -n 2p <<<"$key_out" >>"$work/api-keys"
  echo "Bearer $(sed -n 1p <<<"$key_out")"
}

start_bench_runtime() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  url="http://127.0.0.1:$port"
  WRK_AUTH=$(add_bench_key bench admin)
  export WRK_AUTH
  "$FACEKEY_RUNTIME_BIN" --listen "127.0.0.1:$port" --data-dir "$work/data" --log warn \
    --api-keys-file "$work/api-keys" --audit-log off --allow-insecure "$@" >"$work/runtime.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -fs "$url/readyz" >/dev/null && break; sleep 0.1; done
  curl -fs "$url/readyz" >/dev/null || { cat "$work/runtime.log"; exit 1; }

  id=$(curl -fs -H "authorization: $WRK_AUTH" "$url/v1/subjects" -H 'content-type: application/json' -d '{"name":"bench"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -fs -H "authorization: $WRK_AUTH" "$url/v1/subjects/$id/faces" -F image=@"$ROOT/runtime/testdata/faces/astronaut.png" >/dev/null
  python3 - "$id" "$ROOT/runtime/testdata/faces/astronaut_640x480.jpg" >"$work/body.json" <<'PY'
import base64, json, sys
print(json.dumps({"subject": sys.argv[1], "image": base64.b64encode(open(sys.argv[2], "rb").read()).decode()}))
PY
}

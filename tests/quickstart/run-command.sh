#!/usr/bin/env bash
# The README's first command, as a user runs it: scripts/run.sh sets up and starts the runtime,
# which must become ready with its bundled models and serve the bundled UI and the API.
# Uses the dev profile (FACEKEY_RUN_PROFILE=dev) so the suite's existing build is reused.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"
port=$(free_port)
work=$(mktemp -d); CLEANUP_DIRS+=("$work")
FACEKEY_RUN_PROFILE=dev FACEKEY_DATA_DIR="$work/data" \
  scripts/run.sh --listen "127.0.0.1:$port" >"$work/run.log" 2>&1 &
CLEANUP_PIDS+=("$!")
url="http://127.0.0.1:$port"
if ! wait_http "$url/readyz" 300; then cat "$work/run.log" >&2; exit 1; fi
# The exec'd runtime is the process cargo started; stop it by port owner at exit as well.
runtime_pid=$(pgrep -f -- "--listen 127.0.0.1:$port" | head -n 1 || true)
[ -n "$runtime_pid" ] && CLEANUP_PIDS+=("$runtime_pid")

curl -fsS "$url/" | grep -q '<div id="root">' || { echo "FAIL: / is not the bundled UI" >&2; exit 1; }
curl -fsS "$url/metrics" | grep -q 'facekey_model_info{kind="embedding",model="dlib_resnet"} 1' ||
  { echo "FAIL: models not reported loaded" >&2; exit 1; }
# First start: an admin key is created and shown once as a login URL; the API needs it.
key=$(grep -o "$url/#key=fk_[A-Za-z0-9_-]*" "$work/run.log" | head -n 1 | sed 's/.*#key=//')
[ -n "$key" ] || { echo "FAIL: no login URL in the start-up output" >&2; cat "$work/run.log" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d '{"features":[1,0.5,-1]}' "$url/v1/score")
[ "$code" = 401 ] || { echo "FAIL: /v1/score without a key answered $code, not 401" >&2; exit 1; }
curl -fsS -H "authorization: Bearer $key" -H 'content-type: application/json' -d '{"features":[1,0.5,-1]}' "$url/v1/score" |
  grep -q '"decision":"accept"' || { echo "FAIL: /v1/score with the login key" >&2; exit 1; }
echo "quickstart: scripts/run.sh serves the UI, the models and the API (keyed by its login URL)"

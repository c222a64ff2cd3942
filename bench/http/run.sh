#!/usr/bin/env bash
# HTTP load benchmark: POST /v1/score of facekey-runtime (Rust) against the seed's stack
# (FastAPI + uvicorn + numpy, bench/http/peer/app.py), same weights file, same JSON contract,
# same machine, same wrk settings, in one run. See bench/README.md.
#
# Settings (environment):
#   DURATION=15s CONNECTIONS=64 THREADS=2   wrk settings for each measured run
#   WARMUP=5s                               unmeasured wrk run against each server first
#   ROUNDS=2                                measured runs per server, order alternating; medians
#                                           (the mean of the two for 2 rounds) reported
#   PEER_WORKERS=$(nproc)                   uvicorn worker processes
#   FACEKEY_RUNTIME_BIN=path                use this binary instead of `cargo build --release`
#   PEER_VENV=dir                           reuse (or create) this virtualenv instead of a throwaway one
#   RESULTS_JSON=bench/http/results/latest.json   where to write the summary ("" to skip)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-5s}
ROUNDS=${ROUNDS:-2}
PEER_WORKERS=${PEER_WORKERS:-$(nproc)}
RESULTS_JSON=${RESULTS_JSON-$HERE/results/latest.json}
WEIGHTS=$ROOT/runtime/weights/reference.json
BODY='{"features":[1,0.5,-1]}'
PY=${PYTHON:-python3}
LIB=$HERE/benchlib.py

log() { printf '\n== %s\n' "$*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/facekey-bench.XXXXXX")
RUST_PID=""
PEER_PID=""
stop() {
    local pid=$1 name=$2
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name (pid $pid) did not stop on SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    stop "$RUST_PID" facekey-runtime
    stop "$PEER_PID" uvicorn
    if [[ $rc -ne 0 ]]; then
        for f in rust.log peer.log; do
            [[ -s $WORK/$f ]] && { echo "--- last lines of $f" >&2; tail -n 20 "$WORK/$f" >&2; }
        done
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ---------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk (Debian package)"
    apt-get install -y --no-install-recommends wrk >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends wrk >/dev/null; }
fi

# --- the peer: a throwaway virtualenv --------------------------------------------------------
VENV=${PEER_VENV:-$WORK/venv}
log "installing the peer (FastAPI + uvicorn + numpy) into $VENV"
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/peer/requirements.txt"
PEER_VERSIONS=$("$VENV/bin/python" -c 'import json, sys, fastapi, uvicorn, numpy, pydantic, uvloop, httptools
print(json.dumps({"python": sys.version.split()[0], "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__,
  "numpy": numpy.__version__, "pydantic": pydantic.__version__, "uvloop": uvloop.__version__,
  "httptools": httptools.__version__}))')

# --- the Rust runtime ----------------------------------------------------------------------
if [[ -n ${FACEKEY_RUNTIME_BIN:-} ]]; then
    BIN=$FACEKEY_RUNTIME_BIN
else
    log "building facekey-runtime (release)"
    (cd "$ROOT" && cargo build --release --quiet -p facekey-runtime)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/facekey-runtime
fi
[[ -x $BIN ]] || { echo "no runtime binary at $BIN" >&2; exit 1; }
RUST_VERSION=$("$BIN" --version)

# --- start both on loopback ------------------------------------------------------------------
RUST_PORT=$("$PY" "$LIB" freeport)
PEER_PORT=$("$PY" "$LIB" freeport)
while [[ $PEER_PORT == "$RUST_PORT" ]]; do PEER_PORT=$("$PY" "$LIB" freeport); done
RUST_URL=http://127.0.0.1:$RUST_PORT
PEER_URL=http://127.0.0.1:$PEER_PORT

log "starting facekey-runtime on $RUST_URL and the peer ($PEER_WORKERS uvicorn workers) on $PEER_URL"
# An API key for the load (a real client sends one; its check is part of the measured cost).
KEY_OUT=$("$BIN" new-api-key bench --scopes verify 2>/dev/null)
sed -n 2p <<<"$KEY_OUT" >"$WORK/api-keys"
export WRK_AUTH="Bearer $(sed -n 1p <<<"$KEY_OUT")"
"$BIN" --listen "127.0.0.1:$RUST_PORT" --weights "$WEIGHTS" --api-keys-file "$WORK/api-keys" \
    --audit-log off --allow-insecure --log warn >"$WORK/rust.log" 2>&1 &
RUST_PID=$!
FACEKEY_WEIGHTS_FILE=$WEIGHTS "$VENV/bin/uvicorn" app:app --app-dir "$HERE/peer" \
    --host 127.0.0.1 --port "$PEER_PORT" --workers "$PEER_WORKERS" \
    --no-access-log --log-level warning >"$WORK/peer.log" 2>&1 &
PEER_PID=$!
"$PY" "$LIB" wait "$RUST_URL/healthz" "$RUST_PID" 60
"$PY" "$LIB" wait "$PEER_URL/healthz" "$PEER_PID" 60
# uvicorn answers as soon as the first worker is up; give the others a moment to bind too.
sleep 2

log "contract parity (numbers within 1e-9, same decision, same status and error code)"
"$PY" "$LIB" parity "$RUST_URL/v1/score" "$PEER_URL/v1/score"

# --- load ----------------------------------------------------------------------------------
"$PY" "$LIB" meta "$WORK/meta.json" threads="$THREADS" connections="$CONNECTIONS" \
    duration="$DURATION" warmup="$WARMUP" rounds="$ROUNDS" peer_workers="$PEER_WORKERS" \
    body="$BODY" versions="$(echo "$PEER_VERSIONS" | "$PY" -c "import json,sys; d=json.load(sys.stdin); d['facekey_runtime']='$RUST_VERSION'; print(json.dumps(d))")"
echo "load average now: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (wrk shares these cores with the servers)"

export WRK_BODY=$BODY
WRK=(wrk -t"$THREADS" -c"$CONNECTIONS" --latency -s "$HERE/score.lua")
for target in rust peer; do
    url_var=${target^^}_URL
    log "warm-up: $target, $WARMUP"
    "${WRK[@]}" -d"$WARMUP" "${!url_var}/v1/score" >/dev/null
done
for round in $(seq "$ROUNDS"); do
    # Alternate the order so neither server always runs first.
    if (( round % 2 )); then order=(peer rust); else order=(rust peer); fi
    for target in "${order[@]}"; do
        url_var=${target^^}_URL
        pid_var=${target^^}_PID
        log "round $round/$ROUNDS: $target (${!url_var}), wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency"
        "$PY" "$LIB" measure "$target" "${!url_var}/v1/score" "${!pid_var}" "$WORK/$target-$round.json" \
            -- "${WRK[@]}" -d"$DURATION"
    done
done

log "results"
"$PY" "$LIB" report "$WORK" "$RESULTS_JSON"

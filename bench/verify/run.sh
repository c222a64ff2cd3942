#!/usr/bin/env bash
# Benchmark POST /v1/verify end to end on a single-face 640x480 JPEG
# (runtime/testdata/faces/astronaut_640x480.jpg, enrolled from astronaut.png) and compare its
# latency with the model-inference floor (time spent inside ONNX Runtime, from the response's
# inference_ms). Prints p50/p99 latency and requests/s at several concurrencies, the server's
# per-stage split, and the ratio of end-to-end p50 to the floor.
#
# Env: FACEKEY_RUNTIME_BIN (skip the release build), DURATION (wrk run, default 15s),
# CONCURRENCY (list, default "1 2 4"), PROBES (sequential requests for the split, default 60),
# RUNTIME_ARGS (extra runtime flags, e.g. "--liveness both"), RESULTS_JSON.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/bench/verify"
DURATION="${DURATION:-15s}"
CONCURRENCY="${CONCURRENCY:-1 2 4}"
PROBES="${PROBES:-60}"
RESULTS_JSON="${RESULTS_JSON-$HERE/results/latest.json}"

source "$ROOT/bench/verify/server.sh"
# shellcheck disable=SC2086
start_bench_runtime ${RUNTIME_ARGS:-}

echo "facekey-runtime /v1/verify, 640x480 JPEG ($(stat -c %s "$ROOT/runtime/testdata/faces/astronaut_640x480.jpg") bytes, base64 JSON)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$HERE/probe.py" "$url/v1/verify" "$work/body.json" 5 >/dev/null   # warm-up
probe=$(python3 "$HERE/probe.py" "$url/v1/verify" "$work/body.json" "$PROBES")

declare -a rows=()
for c in $CONCURRENCY; do
  out=$(WRK_BODY_FILE="$work/body.json" wrk -t1 -c"$c" -d"$DURATION" --latency -s "$HERE/verify.lua" "$url/v1/verify")
  rows+=("$c $(grep '^FACEKEY_WRK' <<<"$out" | cut -d' ' -f2-)")
done

python3 - "$probe" "$RESULTS_JSON" "${rows[@]}" <<'PY'
import json, sys, datetime
probe = json.loads(sys.argv[1]); results_path = sys.argv[2]
runs = []
for row in sys.argv[3:]:
    c, js = row.split(" ", 1); w = json.loads(js)
    secs = w["duration_us"] / 1e6
    runs.append({"connections": int(c), "rps": w["requests"] / secs, "p50_ms": w["latency_us"]["p50"] / 1000,
                 "p99_ms": w["latency_us"]["p99"] / 1000, "non200": w["non200"], "errors": w["errors"]})
print("\nsequential probe (%d requests):" % probe["requests"])
print("  client p50 %.1f ms, p99 %.1f ms" % (probe["client_ms"]["p50"], probe["client_ms"]["p99"]))
print("  server stages, median ms: " + ", ".join("%s %.2f" % kv for kv in probe["stages_ms_median"].items()))
print("  model inference, median ms: " + ", ".join("%s %.2f" % kv for kv in probe["models_ms_median"].items()))
print("  floor (sum of model inference) p50 %.1f ms; liveness models: %s" % (probe["floor_ms"]["p50"], ",".join(probe["liveness_models"])))
ratio = probe["ratio_p50_client_to_floor"]
print("  end-to-end p50 / floor = %.2fx (target <= 1.3x: %s)" % (ratio, "met" if ratio <= 1.3 else "NOT met"))
print("\nwrk load:")
print("  %-11s %10s %10s %10s %8s" % ("connections", "req/s", "p50 ms", "p99 ms", "non-200"))
for r in runs:
    print("  %-11d %10.1f %10.1f %10.1f %8d" % (r["connections"], r["rps"], r["p50_ms"], r["p99_ms"], r["non200"] + r["errors"]))
if results_path:
    import os
    os.makedirs(os.path.dirname(results_path), exist_ok=True)
    json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "probe": probe, "wrk": runs}, open(results_path, "w"), indent=2)
    print("\nwrote", results_path)
PY

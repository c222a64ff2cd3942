#!/usr/bin/env bash
# POST /v1/verify latency with the match and passive liveness on one model each (dlib,
# fr_liveness: before issue 13 item 7) against the fused pairs (dlib+faceres,
# fr_liveness+human_liveness: the defaults), same binary, same machine, alternating ROUNDS times
# (dlib, fused, dlib, fused, ...) so load drift hits both. Each run is bench/verify/run.sh (its
# own server, enrolment and probe); the summary is the median over rounds of each setting's
# sequential-probe client p50 and wrk p50s, and the fused / dlib ratio (goal <= 1.5x).
#
# Env: FACEKEY_RUNTIME_BIN (skip the release build), ROUNDS (default 2), OUT_DIR
# (default bench/verify/results), and run.sh's DURATION, CONCURRENCY, PROBES.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/bench/verify"
ROUNDS="${ROUNDS:-2}"
OUT_DIR="${OUT_DIR:-$HERE/results}"
if [ -z "${FACEKEY_RUNTIME_BIN:-}" ]; then
  "$ROOT/scripts/setup-onnxruntime.sh" >/dev/null
  (cd "$ROOT" && cargo build --release --locked -q -p facekey-runtime --bin facekey-runtime)
  FACEKEY_RUNTIME_BIN="$ROOT/target/release/facekey-runtime"
fi
export FACEKEY_RUNTIME_BIN
mkdir -p "$OUT_DIR"
declare -A ARGS=(
  [dlib]="--match-models dlib --passive-liveness-models fr_liveness"
  [fused]="--match-models dlib+faceres --passive-liveness-models fr_liveness+human_liveness"
)
loads=()
for r in $(seq 1 "$ROUNDS"); do
  for m in dlib fused; do
    loads+=("$m/$r: $(cut -d' ' -f1-3 /proc/loadavg)")
    echo "== round $r, $m: ${ARGS[$m]} (load $(cut -d' ' -f1-3 /proc/loadavg))"
    RESULTS_JSON="$OUT_DIR/models-$m-$r.json" RUNTIME_ARGS="${ARGS[$m]}" "$HERE/run.sh"
  done
done

python3 - "$OUT_DIR" "$ROUNDS" "${loads[@]}" <<'PY'
import json, statistics, sys, datetime
out, rounds, loads = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
summary = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "rounds": rounds, "load_before_each_run": loads, "settings": {}}
for m in ("dlib", "fused"):
    runs = [json.load(open(f"{out}/models-{m}-{r}.json")) for r in range(1, rounds + 1)]
    p50 = statistics.median(r["probe"]["client_ms"]["p50"] for r in runs)
    wrk = {}
    for r in runs:
        for w in r["wrk"]:
            wrk.setdefault(w["connections"], []).append(w)
    summary["settings"][m] = {
        "probe_client_p50_ms": p50,
        "probe_client_p50_ms_each": [r["probe"]["client_ms"]["p50"] for r in runs],
        "models_ms_median": runs[-1]["probe"]["models_ms_median"],
        "stages_ms_median": runs[-1]["probe"]["stages_ms_median"],
        "wrk": {c: {"p50_ms": statistics.median(x["p50_ms"] for x in ws),
                    "rps": statistics.median(x["rps"] for x in ws)} for c, ws in wrk.items()},
    }
d, f = summary["settings"]["dlib"], summary["settings"]["fused"]
summary["ratio_p50_fused_to_dlib"] = f["probe_client_p50_ms"] / d["probe_client_p50_ms"]
print("\nsequential probe client p50 (median of %d rounds): dlib %.1f ms, fused %.1f ms, ratio %.2fx (goal <= 1.5x: %s)"
      % (rounds, d["probe_client_p50_ms"], f["probe_client_p50_ms"], summary["ratio_p50_fused_to_dlib"],
         "met" if summary["ratio_p50_fused_to_dlib"] <= 1.5 else "NOT met"))
for c in d["wrk"]:
    print("wrk -c%s p50: dlib %.1f ms, fused %.1f ms; req/s %.1f vs %.1f"
          % (c, d["wrk"][c]["p50_ms"], f["wrk"][c]["p50_ms"], d["wrk"][c]["rps"], f["wrk"][c]["rps"]))
print("load before each run:", "; ".join(loads))
json.dump(summary, open(f"{out}/models.json", "w"), indent=2)
print("wrote", f"{out}/models.json")
PY

#!/usr/bin/env bash
# Overload and soak benchmarks of POST /v1/verify (the 640x480 JPEG as base64 JSON, as
# bench/verify). One command each; prints a summary and writes results/<mode>.json.
#
#   bench/overload/run.sh overload   # unloaded p99, sustainable rate S (wrk), 4xS for 5 min, recovery at S/2
#   bench/overload/run.sh soak       # unloaded p99, S (wrk), then 80 % of S for 10 min
#   bench/overload/run.sh fair       # unloaded p99, S (wrk), a second key at S/4 alone for 30 s, then
#                                    # beside the first key at 4xS for 2 min: what each key is served
#
# Env: FACEKEY_RUNTIME_BIN (skip the release build), RUNTIME_ARGS (extra runtime flags),
# OVERLOAD_SECS (300), SOAK_SECS (600), RECOVERY_SECS (60), FACTOR (4), SOAK_FRACTION (0.8),
# FAIR_SECS (120), SMALL_FRACTION (0.25: the second key's rate over S),
# SUSTAIN_CONNECTIONS (wrk -c for the sustainable rate; default: the runtime's max in-flight,
# nproc), RATE (skip the wrk step and use this sustainable rate; SUSTAIN_P99_MS its p99), RESULTS_DIR.
set -euo pipefail
MODE="${1:-overload}"
case "$MODE" in overload|soak|fair) ;; *) echo "usage: $0 overload|soak|fair" >&2; exit 2 ;; esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/bench/overload"
RESULTS_DIR="${RESULTS_DIR:-$HERE/results}"
OVERLOAD_SECS="${OVERLOAD_SECS:-300}"
SOAK_SECS="${SOAK_SECS:-600}"
RECOVERY_SECS="${RECOVERY_SECS:-60}"
FACTOR="${FACTOR:-4}"
SOAK_FRACTION="${SOAK_FRACTION:-0.8}"
FAIR_SECS="${FAIR_SECS:-120}"
SMALL_FRACTION="${SMALL_FRACTION:-0.25}"
SUSTAIN_CONNECTIONS="${SUSTAIN_CONNECTIONS:-$(nproc)}"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

source "$ROOT/bench/verify/server.sh"
# shellcheck disable=SC2086
start_bench_runtime --lockout-attempts 0 ${RUNTIME_ARGS:-}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load before $load_before"
python3 "$ROOT/bench/verify/probe.py" "$url/v1/verify" "$work/body.json" 5 >/dev/null   # warm-up
# The fair mode's second key (verify scope), read by the runtime within 2 s.
SMALL_AUTH=""
if [ "$MODE" = fair ]; then
  SMALL_AUTH=$(add_bench_key small verify)
  sleep 3
fi
export SMALL_AUTH

# The sustainable rate: closed-loop wrk at the runtime's in-flight limit (every request is
# admitted at once; more connections would only queue or be shed).
# Its p99 is the latency of full concurrency without any queueing: the floor the accepted p99
# under overload is also compared with (on a small machine, requests in flight share the cores).
SUSTAIN_P99_MS="${SUSTAIN_P99_MS:-null}"
if [ -z "${RATE:-}" ]; then
  out=$(WRK_BODY_FILE="$work/body.json" wrk -t1 -c"$SUSTAIN_CONNECTIONS" -d30s --latency \
    -s "$ROOT/bench/verify/verify.lua" "$url/v1/verify")
  # Captured first so that a failed assertion stops the script here (set -e).
  sustained=$(grep '^FACEKEY_WRK' <<<"$out" | cut -d' ' -f2- | python3 -c '
import json, sys
w = json.load(sys.stdin)
assert w["non200"] == 0 and w["errors"] == 0, w
print(round(w["requests"] / (w["duration_us"] / 1e6), 2), w["latency_us"]["p99"] / 1000)')
  read -r RATE SUSTAIN_P99_MS <<<"$sustained"
fi
echo "sustainable rate S = $RATE verify/s (wrk -c$SUSTAIN_CONNECTIONS, 30 s, no 503; p99 $SUSTAIN_P99_MS ms)"

python3 - "$MODE" "$RATE" "$url" "$work" "$pid" "$RESULTS_DIR" "$OVERLOAD_SECS" "$SOAK_SECS" \
  "$RECOVERY_SECS" "$FACTOR" "$SOAK_FRACTION" "$FAIR_SECS" "$SMALL_FRACTION" >"$work/phases.json" <<'PY'
import json, os, sys
mode, rate, url, work, pid, out, over, soak, rec, factor, frac, fair, small = sys.argv[1:]
rate, factor, frac, small = float(rate), float(factor), float(frac), float(small)
phases = [{"name": "unloaded", "closed": 1, "seconds": 20}]
flood, alone = os.environ["WRK_AUTH"], os.environ["SMALL_AUTH"]
if mode == "fair":
    phases += [{"name": "small_alone", "streams": [{"name": "small", "rate": small * rate, "auth": alone}],
                "seconds": 30},
               {"name": "fair", "seconds": int(fair),
                "streams": [{"name": "flood", "rate": factor * rate, "auth": flood},
                            {"name": "small", "rate": small * rate, "auth": alone}]}]
elif mode == "overload":
    phases += [{"name": "overload", "rate": factor * rate, "seconds": int(over)},
               {"name": "recovery", "rate": rate / 2, "seconds": int(rec)}]
else:
    phases += [{"name": "soak", "rate": frac * rate, "seconds": int(soak)}]
print(json.dumps({"url": url + "/v1/verify", "body_file": work + "/body.json",
                  "auth": flood, "pid": int(pid),
                  "phases": phases, "out": work + "/raw.json"}))
PY
python3 "$HERE/loadgen.py" "$work/phases.json" >/dev/null
kill -0 "$pid" 2>/dev/null || { echo "the runtime died during the run"; cat "$work/runtime.log"; exit 1; }
# The runtime's own count of refusals by reason (the whole run; the wrk step sheds none): 503
# overloaded, and 429 too_many_inferences as inference_share.
curl -fs -H "authorization: $WRK_AUTH" "$url/metrics" | grep '^facekey_admission_rejected_total' >"$work/rejected.txt" || true
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

mkdir -p "$RESULTS_DIR"
python3 - "$MODE" "$RATE" "$work/raw.json" "$RESULTS_DIR/$MODE.json" "$load_before" "$load_after" \
  "${RUNTIME_ARGS:-}" "$SUSTAIN_P99_MS" "$work/rejected.txt" <<'PY'
import datetime, json, os, re, statistics, subprocess, sys
mode, rate, raw, dest, before, after, args, sustain_p99, rejected_file = sys.argv[1:]
rejected = {m.group(1): int(float(m.group(2))) for m in
            re.finditer(r'reason="([a-z_]+)"\} (\S+)', open(rejected_file).read())}
rate = float(rate)
sustain_p99 = None if sustain_p99 == "null" else float(sustain_p99)
data = json.load(open(raw))
ph = {p["name"]: p for p in data["phases"]}
base = ph["unloaded"]
print("unloaded: p50 %.1f ms, p99 %.1f ms (%d sequential requests)" % (
    base["accepted_ms"]["p50"], base["accepted_ms"]["p99"], base["accepted"]))
verdicts = {}

def rss_over(p):
    lo, hi = p["began_at_s"], p["began_at_s"] + p["seconds"]
    pts = [kib for t, kib in data["rss_kib"] if lo <= t <= hi]
    # The first 30 s fill caches and pools; flatness is judged after it.
    steady = [kib for t, kib in data["rss_kib"] if lo + 30 <= t <= hi] or pts
    med = statistics.median(steady)
    return {"samples": len(pts), "start_mib": round(pts[0] / 1024, 1), "end_mib": round(pts[-1] / 1024, 1),
            "min_mib": round(min(steady) / 1024, 1), "max_mib": round(max(steady) / 1024, 1),
            "median_mib": round(med / 1024, 1),
            "spread_pct": round(100 * max(max(steady) - med, med - min(steady)) / med, 1)}

def show(p):
    a, s = p["accepted_ms"], p["shed_ms"]
    print("%s: offered %.1f/s (target %s) for %.0f s: %d accepted (%.2f/s), %d shed 503, %d errors %s" % (
        p["name"], p["offered_rate"], p["target_rate"], p["seconds"], p["accepted"], p["accepted_rps"],
        p["shed_503"], p["errors"], p["error_statuses"] or ""))
    if a["p50"] is not None:
        print("  accepted latency ms: p50 %.1f p90 %.1f p99 %.1f max %.1f" % (a["p50"], a["p90"], a["p99"], a["max"]))
    if s["p50"] is not None:
        print("  503 latency ms:      p50 %.2f p99 %.2f max %.2f" % (s["p50"], s["p99"], s["max"]))

if mode == "fair":
    alone, both = ph["small_alone"]["streams"][0], {st["name"]: st for st in ph["fair"]["streams"]}
    show(alone)
    for st in both.values():
        show(st)
        if st["refused_429"]:
            print("  429 too_many_inferences: %d, p50 %.2f p99 %.2f ms" % (
                st["refused_429"], st["refused_429_ms"]["p50"], st["refused_429_ms"]["p99"]))
    small, flood = both["small"], both["flood"]
    verdicts = {
        "small_served_alone": round(alone["accepted"] / max(alone["requests"], 1), 3),
        "small_served_beside_flood": round(small["accepted"] / max(small["requests"], 1), 3),
        "small_p99_alone_ms": alone["accepted_ms"]["p99"],
        "small_p99_beside_flood_ms": small["accepted_ms"]["p99"],
        "flood_accepted_rps_over_sustainable": round(flood["accepted_rps"] / rate, 2),
        "all_accepted_rps_over_sustainable": round((flood["accepted_rps"] + small["accepted_rps"]) / rate, 2),
        "flood_429": flood["refused_429"], "flood_503": flood["shed_503"],
    }
elif mode == "overload":
    o, r = ph["overload"], ph["recovery"]
    show(o); show(r)
    o["rss"] = rss_over(o)
    print("  RSS during overload (after 30 s): %s" % o["rss"])
    ratio = o["accepted_ms"]["p99"] / base["accepted_ms"]["p99"]
    verdicts = {
        "accepted_p99_over_unloaded_p99": round(ratio, 2),
        "accepted_p99_within_2x": ratio <= 2,
        "sustainable_p99_ms": sustain_p99,
        "accepted_p99_over_sustainable_p99": round(o["accepted_ms"]["p99"] / sustain_p99, 2) if sustain_p99 else None,
        "shed_p99_ms": o["shed_ms"]["p99"],
        "rss_flat_10pct": o["rss"]["spread_pct"] <= 10,
        "accepted_rps_over_sustainable": round(o["accepted_rps"] / rate, 2),
        "recovery_shed": r["shed_503"], "recovery_errors": r["errors"],
        "recovery_first_5s_p99_ms": r["accepted_first_5s_ms"]["p99"],
    }
else:
    s = ph["soak"]
    show(s)
    s["rss"] = rss_over(s)
    print("  RSS during soak (after 30 s): %s" % s["rss"])
    verdicts = {"errors": s["errors"], "shed_503": s["shed_503"], "zero_errors": s["errors"] == 0 and s["shed_503"] == 0,
                "rss_flat_10pct": s["rss"]["spread_pct"] <= 10,
                "p99_over_unloaded_p99": round(s["accepted_ms"]["p99"] / base["accepted_ms"]["p99"], 2)}
print("refused by reason (runtime metrics; inference_share is 429, the rest 503):", json.dumps(rejected))
print("verdicts:", json.dumps(verdicts))
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"nproc": os.cpu_count(), "cpu": cpu, "load_before": before, "load_after": after},
           "runtime_args": args, "sustainable_rate": rate, "sustainable_p99_ms": sustain_p99, "verdicts": verdicts,
           "rejected_by_reason": rejected,
           "phases": data["phases"], "rss_kib": data["rss_kib"]}, open(dest, "w"), indent=1)
print("load average before %s, after %s; wrote %s" % (before, after, dest))
PY

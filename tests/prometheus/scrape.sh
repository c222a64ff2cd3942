#!/usr/bin/env bash
# A real Prometheus scrapes the runtime on loopback: the exposition passes `promtool check
# metrics`, and PromQL sees the request, decision and inference series the runtime produced.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

start_runtime
for i in 1 2 3; do
  curl -fsS -H "$AUTH" -H 'content-type: application/json' -d '{"features":[1,0.5,-1]}' "$RUNTIME_URL/v1/score" >/dev/null
done
curl -fsS -H "$AUTH" -H 'content-type: application/json' -d '{"features":[-3,-3,-3]}' "$RUNTIME_URL/v1/score" >/dev/null
curl -sS -o /dev/null -H "$AUTH" -H 'content-type: application/json' -d '{"features":[1]}' "$RUNTIME_URL/v1/score"
# A refused request, so the access-control series are exposed too.
curl -sS -o /dev/null -H 'content-type: application/json' -d '{"features":[1,0.5,-1]}' "$RUNTIME_URL/v1/score"

echo "promtool check metrics"
curl -fsS "$RUNTIME_URL/metrics" | promtool check metrics

work=$(mktemp -d); CLEANUP_DIRS+=("$work")
pport=$(free_port)
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: facekey-runtime
    metrics_path: /metrics
    static_configs:
      - targets: ["${RUNTIME_URL#http://}"]
YAML
prometheus --config.file="$work/prometheus.yml" --web.listen-address="127.0.0.1:$pport" \
  --storage.tsdb.path="$work/tsdb" >"$work/prometheus.log" 2>&1 &
CLEANUP_PIDS+=("$!")
wait_http "http://127.0.0.1:$pport/-/ready" 30

query() {
  curl -fsS --get "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")'
}
expect() {
  local q="$1" want="$2" got deadline=$(( $(date +%s) + 30 ))
  while :; do
    got=$(query "$q")
    if [ "$got" = "$want" ]; then echo "ok: $q = $got"; return 0; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "FAIL: $q = $got, want $want" >&2; cat "$work/prometheus.log" >&2; return 1
    fi
    sleep 0.5
  done
}
expect 'up{job="facekey-runtime"}' 1
expect 'sum(facekey_http_requests_total{route="/v1/score",status="200"})' 4
expect 'sum(facekey_http_requests_total{route="/v1/score",status="422"})' 1
expect 'facekey_decisions_total{outcome="accept"}' 3
expect 'facekey_decisions_total{outcome="reject"}' 1
expect 'facekey_inference_duration_seconds_count{model="fusion"}' 4
expect 'count(facekey_build_info)' 1
echo "prometheus scrape: passed"

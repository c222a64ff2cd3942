#!/usr/bin/env bash
# End to end, on loopback, with real programs: a burst of presentation attacks against the real
# runtime ends in an email from Alertmanager naming the FaceKeyDeployment and the attack count,
# and in the runtime's own spoof email, both in the mailbox of a real SMTP server.
#
#   facekey-operator render -f <FaceKeyDeployment>      the objects a cluster would get
#     -> tests/alerts/derive.py                         what prometheus-operator / the kubelet make of them
#   facekey-runtime   env from the rendered ConfigMap + Secret; FACEKEY_LIVENESS_THRESHOLD=1.0
#                     (spec.models.thresholds.spoof: 1.0) makes every face a spoof
#   prometheus        scrapes it as the ServiceMonitor says (its metrics port, no API key),
#                     evaluates the PrometheusRule
#   prometheus-alertmanager  routes as the AlertmanagerConfig says (namespace matcher included)
#   tests/smtp/server.py     aiosmtpd with STARTTLS + AUTH required, maildir
#
# Test-only changes to what a cluster would run (each also printed in the derived files):
#   - scrape interval 1s, rule evaluation interval 1s, Alertmanager group_wait 1s;
#   - FaceKeySpoofAttemptsHigh's `for` 1m -> 15s and FaceKeyApiKeyQuotaNearlyFull's 15m -> 2s
#     (the CRD has no `for` field; only that field of the rendered rules is rewritten, by
#     derive.py --test-for);
#   - an `enrol` key beside the admin key, with a subject quota of 2, which it then fills: the
#     quota alert's chain (runtime gauges, rule, Alertmanager, mail) like the spoof alert's;
#   - service discovery is one static target carrying the labels Kubernetes would attach.
# Afterwards the runtime's real /metrics is checked against docs/metrics.md
# (tests/metrics/catalogue.py) and every Grafana panel query against this Prometheus
# (tests/alerts/dashboard_queries.py).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
HERE="$ROOT/tests/alerts"
PY="$ROOT/.venv-tests/bin/python"
OPERATOR="${FACEKEY_OPERATOR_BIN:-$ROOT/target/debug/facekey-operator}"
started=$(date +%s)

fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf 'ok: %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }
for tool in prometheus promtool prometheus-alertmanager amtool openssl curl; do
  command -v "$tool" >/dev/null || fail "$tool missing (run tests/setup.sh)"
done
[ -x "$PY" ] || fail "$PY missing (run tests/setup.sh)"
[ -x "$OPERATOR" ] || fail "operator binary $OPERATOR missing"
[ -x "$FACEKEY_RUNTIME_BIN" ] || fail "runtime binary $FACEKEY_RUNTIME_BIN missing"

WORK=$(mktemp -d); CLEANUP_DIRS+=("$WORK")
on_failure() {
  local f
  for f in runtime.log prometheus.log alertmanager.log smtp.log prometheus.yml alertmanager.yml; do
    [ -f "$WORK/$f" ] && { echo "--- $f" >&2; tail -n 40 "$WORK/$f" >&2; }
  done
  [ -n "${RUNTIME_LOG:-}" ] && { echo "--- runtime log" >&2; tail -n 40 "$RUNTIME_LOG" >&2; }
  return 0
}
trap 'status=$?; [ "$status" -ne 0 ] && on_failure; cleanup; exit "$status"' EXIT

NS=facekey-e2e
NAME=gate-a
POD="$NAME-7d9c5b6f4-x2x8q"
# An application pod the webhook injected the runtime into (the resource allows sidecars).
SIDECAR_POD="shop-5f7b9c6d4-q8z2m"
ATTACKS=5
SMTP_USER=alerts@facekey.test
SMTP_PASSWORD=e2e-secret
SMTP_PORT=$(free_port); PROM_PORT=$(free_port); AM_PORT=$(free_port); METRICS_PORT=$(free_port)
SIDECAR_PORT=$(free_port); SIDECAR_METRICS_PORT=$(free_port)

# --- SMTP server: STARTTLS + AUTH required --------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
  -addext extendedKeyUsage=serverAuth -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
SMTP_AUTH_EXCLUDE=LOGIN "$PY" "$ROOT/tests/smtp/server.py" "$SMTP_PORT" "$WORK/cert.pem" "$WORK/key.pem" "$WORK/maildir" \
  "$SMTP_USER" "$SMTP_PASSWORD" >"$WORK/smtp.log" 2>&1 &
CLEANUP_PIDS+=("$!")

# --- The FaceKeyDeployment and what the operator renders for it ------------------------------
cat >"$WORK/fkd.yaml" <<YAML
apiVersion: facekey.dev/v1alpha1
kind: FaceKeyDeployment
metadata:
  name: $NAME
  namespace: $NS
spec:
  image: ghcr.io/facekey/runtime:0.1.0
  replicas: 1
  models:
    thresholds:
      spoof: 1.0
  monitoring:
    rules:
      spoofRatePerMinute: 0.4
  sidecar: {}
  alerting:
    email:
      to: security@facekey.test
      from: $SMTP_USER
      smarthost: 127.0.0.1:$SMTP_PORT
      authSecretRef:
        name: $NAME-smtp
        key: password
      caSecretRef:
        name: $NAME-smtp-ca
        key: ca.crt
YAML
"$OPERATOR" render -f "$WORK/fkd.yaml" >"$WORK/rendered.yaml"
# The Secrets the resource names: the SMTP password and the CA (here the test server's own
# self-signed certificate) that both mailers must trust.
SECRETS=(--secret "$NAME-smtp/password=$SMTP_PASSWORD" --secret "$NAME-smtp-ca/ca.crt=@$WORK/cert.pem")

"$PY" "$HERE/derive.py" prometheus --rendered "$WORK/rendered.yaml" --pod "$POD" \
  --target "127.0.0.1:PORT_PLACEHOLDER" --alertmanager "127.0.0.1:$AM_PORT" --out "$WORK" \
  --sidecar-target "127.0.0.1:SIDECAR_PLACEHOLDER" --sidecar-pod "$SIDECAR_POD" \
  --test-scrape-interval 1s --test-evaluation-interval 1s --test-for FaceKeySpoofAttemptsHigh=15s \
  --test-for FaceKeyApiKeyQuotaNearlyFull=2s --test-for FaceKeyRuntimeDown=20s --test-for FaceKeySidecarDown=2s
"$PY" "$HERE/derive.py" alertmanager --rendered "$WORK/rendered.yaml" "${SECRETS[@]}" \
  --out "$WORK/alertmanager.yml" --test-group-wait 1s
grep -q "ca_file: $WORK/alertmanager-secrets/$NAME-smtp-ca/ca.crt" "$WORK/alertmanager.yml" \
  || fail "the AlertmanagerConfig's tlsConfig.ca did not reach the Alertmanager configuration"
amtool check-config "$WORK/alertmanager.yml" >/dev/null || fail "amtool check-config"
grep -qF "namespace=\"$NS\"" "$WORK/alertmanager.yml" \
  || fail "derived Alertmanager route lacks the namespace matcher"
# The routing tree: an alert of this deployment reaches its receiver only with its namespace
# label (the matcher prometheus-operator injects); without it, it falls through to "null".
route_of() { amtool config routes test --config.file="$WORK/alertmanager.yml" "$@" | tr -d '[:space:]'; }
[ "$(route_of alertname=FaceKeySpoofAttemptsHigh namespace="$NS" facekey_deployment="$NAME")" = "$NS/$NAME/email" ] \
  || fail "an alert with namespace and facekey_deployment is not routed to $NS/$NAME/email"
[ "$(route_of alertname=FaceKeySpoofAttemptsHigh facekey_deployment="$NAME")" = "null" ] \
  || fail "an alert without the namespace label should not reach the receiver"
ok "rendered $(grep -c '^kind:' "$WORK/rendered.yaml") objects; derived Prometheus and Alertmanager configs; routing tree checked"

# --- The runtime, with the environment the kubelet would give the pod ------------------------
"$PY" "$HERE/derive.py" runtime-env --rendered "$WORK/rendered.yaml" "${SECRETS[@]}" \
  --mount-root "$WORK/pod" >"$WORK/runtime.env"
grep -Eqx 'FACEKEY_LIVENESS_THRESHOLD=1(\.0)?' "$WORK/runtime.env" || fail "rendered runtime env lacks FACEKEY_LIVENESS_THRESHOLD=1.0"
# The CA Secret mounted where the Deployment says, and FACEKEY_SMTP_CA_FILE naming it.
ca_file=$(sed -n 's/^FACEKEY_SMTP_CA_FILE=//p' "$WORK/runtime.env")
[ -n "$ca_file" ] && cmp -s "$ca_file" "$WORK/cert.pem" \
  || fail "the rendered runtime does not trust the CA of caSecretRef (FACEKEY_SMTP_CA_FILE=$ca_file)"
while IFS= read -r kv; do export "${kv?}"; done <"$WORK/runtime.env"
export FACEKEY_INSTANCE="$POD"
# --listen, --metrics-listen and --data-dir (flags win) replace the pod's 0.0.0.0:8080,
# 0.0.0.0:9090 and /var/lib/facekey.
# Every face is a spoof at this liveness threshold, so the enrolment below would be refused by
# the enrolment liveness gate: enrol as from an ID photo.
# An application's `enrol` key (FACEKEY_KEY_ENROL) beside the admin key, with a subject quota of
# 2: its one subject below holds half of it, its second all of it (FaceKeyApiKeyQuotaNearlyFull).
RUNTIME_EXTRA_SCOPES=enrol start_runtime --data-dir "$WORK/data" --enrol-liveness off \
  --metrics-listen "127.0.0.1:$METRICS_PORT" --max-subjects-per-key 2
RUNTIME_PID=${CLEANUP_PIDS[-1]}
METRICS_URL="http://127.0.0.1:$METRICS_PORT"
wait_http "$METRICS_URL/readyz" 30 || fail "the metrics listener does not answer"
ok "runtime ready at $RUNTIME_URL, metrics at $METRICS_URL"
# A second runtime stands in for a sidecar in an application pod: its own keys and data.
mkdir -p "$WORK/sidecar"
"$FACEKEY_RUNTIME_BIN" new-api-key sidecar --scopes verify 2>/dev/null | sed -n 2p >"$WORK/sidecar/api-keys"
FACEKEY_INSTANCE="$SIDECAR_POD" FACEKEY_DATA_DIR="$WORK/sidecar/data" FACEKEY_AUDIT_LOG="$WORK/sidecar/audit.log" \
  "$FACEKEY_RUNTIME_BIN" --listen "127.0.0.1:$SIDECAR_PORT" --metrics-listen "127.0.0.1:$SIDECAR_METRICS_PORT" \
  --api-keys-file "$WORK/sidecar/api-keys" --log warn >"$WORK/sidecar/runtime.log" 2>&1 &
SIDECAR_PID=$!
CLEANUP_PIDS+=("$SIDECAR_PID")
wait_http "http://127.0.0.1:$SIDECAR_METRICS_PORT/readyz" 120 \
  || { tail -n 20 "$WORK/sidecar/runtime.log" >&2; fail "the sidecar runtime does not answer"; }
# The ServiceMonitor's endpoint is the pod's `metrics` port: the metrics listener; the
# PodMonitor's, the sidecar's.
sed -i -e "s/127.0.0.1:PORT_PLACEHOLDER/127.0.0.1:$METRICS_PORT/" \
  -e "s/127.0.0.1:SIDECAR_PLACEHOLDER/127.0.0.1:$SIDECAR_METRICS_PORT/" "$WORK/prometheus.yml"
promtool check config "$WORK/prometheus.yml" >/dev/null || fail "promtool check config"

# --- Alertmanager and Prometheus -----------------------------------------------------------
prometheus-alertmanager --config.file="$WORK/alertmanager.yml" --storage.path="$WORK/am" \
  --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= >"$WORK/alertmanager.log" 2>&1 &
CLEANUP_PIDS+=("$!")
prometheus --config.file="$WORK/prometheus.yml" --web.listen-address="127.0.0.1:$PROM_PORT" \
  --storage.tsdb.path="$WORK/tsdb" --rules.alert.resend-delay=1s >"$WORK/prometheus.log" 2>&1 &
CLEANUP_PIDS+=("$!")
wait_http "http://127.0.0.1:$AM_PORT/-/ready" 30
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" 30
grep -q ready "$WORK/smtp.log" || { sleep 1; grep -q ready "$WORK/smtp.log"; } || fail "SMTP server did not start"

PROM="http://127.0.0.1:$PROM_PORT"
query() {
  curl -fsS --get "$PROM/api/v1/query" --data-urlencode "query=$1"
}
# The target's labels come from the ServiceMonitor's relabelling: the selector and port kept
# the target, and namespace/job/pod/service/endpoint are what prometheus-operator would set.
deadline=$(( $(date +%s) + 30 ))
until query "up{namespace=\"$NS\",job=\"$NAME\",pod=\"$POD\",service=\"$NAME\",endpoint=\"metrics\",container=\"runtime\"} == 1" | grep -q '"value"'; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "no target with the labels a ServiceMonitor gives"
  sleep 0.5
done
ok "Prometheus scrapes the runtime as namespace=$NS job=$NAME pod=$POD"
# The sidecar's target: the PodMonitor's jobLabel gives it the same job, and it has no `service`.
deadline=$(( $(date +%s) + 30 ))
until query "up{namespace=\"$NS\",job=\"$NAME\",pod=\"$SIDECAR_POD\",service=\"\",endpoint=\"facekey-metrics\",container=\"facekey-runtime\"} == 1" | grep -q '"value"'; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "no sidecar target with the labels a PodMonitor gives"
  sleep 0.5
done
ok "Prometheus scrapes the sidecar as namespace=$NS job=$NAME pod=$SIDECAR_POD"
# FaceKeyRuntimeDown's rendered expression selects the Deployment's own targets by a label only a
# ServiceMonitor gives (sidecars have none): on this real target it must find the runtime up
# (an empty result), where a selector the target lacks would fire through `absent`.
down_expr=$("$PY" -c 'import sys, yaml
rules = yaml.safe_load(open(sys.argv[1]))["groups"]
print(next(r["expr"] for g in rules for r in g["rules"] if r.get("alert") == "FaceKeyRuntimeDown"))' "$WORK/rules.yaml")
grep -qF "service=\"$NAME\"" <<<"$down_expr" || fail "FaceKeyRuntimeDown does not select the Service's targets: $down_expr"
query "$down_expr" >"$WORK/runtime-down.json"
"$PY" -c 'import json, sys; r = json.load(open(sys.argv[1]))["data"]["result"]; sys.exit(1 if r else 0)' \
  "$WORK/runtime-down.json" || fail "FaceKeyRuntimeDown's expression finds the runtime down while it is scraped: $(cat "$WORK/runtime-down.json")"
ok "FaceKeyRuntimeDown's expression sees the scraped runtime up"

# --- The burst of presentation attacks ----------------------------------------------------
FACE="$ROOT/runtime/testdata/faces/astronaut_640x480.jpg"
for i in $(seq "$ATTACKS"); do
  curl -fsS -H "$AUTH" "$RUNTIME_URL/v1/liveness" -F "image=@$FACE" >"$WORK/liveness-$i.json"
  "$PY" - "$WORK/liveness-$i.json" <<'PY' || fail "attack $i was not judged a spoof"
import json, sys
faces = json.load(open(sys.argv[1]))["faces"]
assert len(faces) == 1, faces
assert faces[0]["liveness"]["decision"] == "reject", faces[0]["liveness"]
PY
done
ok "$ATTACKS presentation attacks, every one judged a spoof"

# --- The mails ---------------------------------------------------------------------------
# mail.py waits for a message matching a subject pattern and prints its decoded text.
wait_mail() { "$PY" "$HERE/mail.py" "$WORK/maildir" "$1" "${2:-60}"; }

wait_mail "spoof attempt detected on $POD" 30 >"$WORK/runtime-mail.txt" \
  || fail "the runtime's own spoof email did not arrive"
grep -q "liveness=" "$WORK/runtime-mail.txt" || fail "runtime email lacks the liveness score"
ok "the runtime's own spoof email arrived (STARTTLS + AUTH)"

wait_mail "FaceKeySpoofAttemptsHigh" 60 >"$WORK/am-mail.txt" \
  || { query 'ALERTS' >&2; curl -fsS "http://127.0.0.1:$AM_PORT/api/v2/alerts" >&2; fail "no Alertmanager email"; }
grep -q "presentation attacks against FaceKeyDeployment $NS/$NAME" "$WORK/am-mail.txt" \
  || { cat "$WORK/am-mail.txt" >&2; fail "Alertmanager email does not name the deployment"; }
grep -q "$ATTACKS presentation attacks" "$WORK/am-mail.txt" \
  || { cat "$WORK/am-mail.txt" >&2; fail "Alertmanager email does not give the attack count $ATTACKS"; }
grep -q "facekey_deployment *= *$NAME" "$WORK/am-mail.txt" \
  || { cat "$WORK/am-mail.txt" >&2; fail "Alertmanager email lacks the facekey_deployment label"; }
# It went through the AlertmanagerConfig's receiver, named as prometheus-operator names it.
curl -fsS "http://127.0.0.1:$AM_PORT/api/v2/alerts?filter=alertname%3DFaceKeySpoofAttemptsHigh" |
  "$PY" -c 'import json,sys; a=json.load(sys.stdin); names={r["name"] for x in a for r in x["receivers"]}; sys.exit(0 if sys.argv[1] in names else f"receivers {names}")' \
  "$NS/$NAME/email" || fail "alert not routed to $NS/$NAME/email"
ok "Alertmanager emailed: $(grep -o "[0-9]* presentation attacks against FaceKeyDeployment $NS/$NAME" "$WORK/am-mail.txt" | head -1)"

# --- Traffic on every other endpoint that moves a metric (score, enrolment, verify) ------------
curl -fsS -H "$AUTH" "$RUNTIME_URL/v1/score" -H 'content-type: application/json' -d '{"features":[1,0.5,-1]}' >/dev/null
# The application's key creates and enrols (its quota series, the key-quota panel).
APP_AUTH="authorization: Bearer $FACEKEY_KEY_ENROL"
subject=$(curl -fsS -H "$APP_AUTH" "$RUNTIME_URL/v1/subjects" -H 'content-type: application/json' -d '{"name":"E2E"}' |
  "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -fsS -H "$APP_AUTH" "$RUNTIME_URL/v1/subjects/$subject/faces" -F "image=@$ROOT/runtime/testdata/faces/astronaut.png" >/dev/null
# Two verifies more than a scrape apart, so rate() over the verify series is not 0 (0/0 = NaN).
for i in 1 2; do
  curl -fsS -H "$AUTH" "$RUNTIME_URL/v1/verify" -F "subject=$subject" -F "image=@$FACE" >/dev/null
  sleep 1.5
done
curl -sS -o /dev/null "$RUNTIME_URL/no-such-route"
curl -sS -o /dev/null "$RUNTIME_URL/v1/subjects"  # refused without a key: an access-control series
sleep 1  # another scrape, so rate() over these counters has two samples
ok "score, enrolment and verify traffic"

# --- The metrics catalogue against this real scrape ------------------------------------------
curl -fsS "$METRICS_URL/metrics" >"$WORK/runtime-metrics.txt"
"$PY" "$ROOT/tests/metrics/catalogue.py" runtime "$ROOT/docs/metrics.md" "$WORK/runtime-metrics.txt" \
  || fail "docs/metrics.md and the runtime's /metrics disagree"
ok "docs/metrics.md lists exactly the runtime's metric families"

# --- The /v1/verify SLO recording rules see the verify traffic --------------------------------
sel="namespace=\"$NS\",job=\"$NAME\",facekey_deployment=\"$NAME\""
for rec in facekey:slo_verify_slow:ratio_rate5m facekey:slo_verify_errors:ratio_rate3d; do
  deadline=$(( $(date +%s) + 15 ))
  until query "$rec{$sel}" | grep -q '"value"'; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "recording rule $rec has no series for $NS/$NAME"
    sleep 0.5
  done
done
# No 5xx on /v1/verify: the error ratio is 0 (not absent, which would hide it from dashboards).
deadline=$(( $(date +%s) + 15 ))
until query "facekey:slo_verify_errors:ratio_rate5m{$sel}" >"$WORK/slo.json" && grep -q '"0"\]' "$WORK/slo.json"; do
  [ "$(date +%s)" -lt "$deadline" ] || { cat "$WORK/slo.json" >&2; fail "verify error ratio is not 0"; }
  sleep 0.5
done
ok "SLO recording rules evaluate on the verify traffic (error ratio 0)"

# --- A key reaching its quota: the runtime's gauges, the rule, Alertmanager, the mail ------------
# The same chain as the spoof alert, for the operator's per-key quota alert: the key's second
# subject fills its quota of 2, and the mail must name the key and the quota.
curl -fsS -H "$APP_AUTH" "$RUNTIME_URL/v1/subjects" -H 'content-type: application/json' -d '{"name":"E2E 2"}' >/dev/null
status=$(curl -sS -o "$WORK/third.json" -w '%{http_code}' -H "$APP_AUTH" "$RUNTIME_URL/v1/subjects" \
  -H 'content-type: application/json' -d '{"name":"E2E 3"}')
[ "$status" = 507 ] && grep -q key_subject_quota "$WORK/third.json" \
  || fail "a third subject of the key answered $status: $(cat "$WORK/third.json")"
wait_mail "FaceKeyApiKeyQuotaNearlyFull" 60 >"$WORK/quota-mail.txt" \
  || { query 'ALERTS' >&2; fail "no Alertmanager email for the key at its quota"; }
grep -q "API key tests-enrol of FaceKeyDeployment $NS/$NAME holds 100% of its subjects quota" "$WORK/quota-mail.txt" \
  || { cat "$WORK/quota-mail.txt" >&2; fail "the quota email does not name the key, the deployment and the quota"; }
ok "a key at its subject quota: 507 key_subject_quota, and Alertmanager emailed FaceKeyApiKeyQuotaNearlyFull"

# --- Every Grafana panel query returns data from this Prometheus ------------------------------
# No Grafana server exists in any registry here: the panels' PromQL is checked instead.
"$PY" "$HERE/dashboard_queries.py" "$WORK/rendered.yaml" "$PROM" >"$WORK/dashboard.log" \
  || { cat "$WORK/dashboard.log"; fail "dashboard panel queries without data"; }
ok "all $(grep -c '^ok:' "$WORK/dashboard.log") dashboard panel queries return data"

# --- The runtime Deployment down while a sidecar is up, then the sidecar down -----------------
# firing NAME [LABEL=VALUE]: wait until Prometheus has alert NAME firing (with that label).
firing() {
  local sel="alertname=\"$1\",alertstate=\"firing\",namespace=\"$NS\"${2:+,$2}" deadline=$(( $(date +%s) + 60 ))
  until query "ALERTS{$sel}" | grep -q '"value"'; do
    [ "$(date +%s)" -lt "$deadline" ] || { query 'ALERTS' >&2; fail "$1 did not fire"; }
    sleep 0.5
  done
}
# Until Prometheus first scraped the targets, `absent` held the alert pending: its `for` (20 s
# here) must outlast that on a loaded machine, or it fires before the runtime is ever seen.
"$PY" "$HERE/mail.py" "$WORK/maildir" FaceKeyRuntimeDown 0 >/dev/null \
  && fail "FaceKeyRuntimeDown was emailed while the runtime was up"
kill "$RUNTIME_PID"; wait "$RUNTIME_PID" 2>/dev/null || true
firing FaceKeyRuntimeDown
# The sidecar kept `up` at 1 for the job: a rule over every target of the job stays quiet.
query "sum by (namespace, job) (up{namespace=\"$NS\",job=\"$NAME\"}) < 1 or absent(up{namespace=\"$NS\",job=\"$NAME\"})" >"$WORK/any-target.json"
"$PY" -c 'import json, sys; sys.exit(1 if json.load(open(sys.argv[1]))["data"]["result"] else 0)' "$WORK/any-target.json" \
  || fail "the sidecar did not keep the job's targets up: this case proves nothing"
wait_mail "FaceKeyRuntimeDown" 60 >"$WORK/down-mail.txt" || fail "no Alertmanager email for FaceKeyRuntimeDown"
ok "the runtime killed with a sidecar up: FaceKeyRuntimeDown fired and was emailed"
kill "$SIDECAR_PID"; wait "$SIDECAR_PID" 2>/dev/null || true
firing FaceKeySidecarDown "pod=\"$SIDECAR_POD\""
ok "the sidecar killed: FaceKeySidecarDown fired for pod $SIDECAR_POD"

echo "alerts end to end: passed in $(( $(date +%s) - started ))s"

#!/usr/bin/env bash
# Validate what the FaceKey operator renders and ships with real outside tools:
#   - every built-in object `facekey-operator render` produces for the samples and fixtures
#     (NetworkPolicies, PodDisruptionBudgets, pod overrides and scan Jobs with DB mirrors, a
#     Trivy server or several pull secrets included), and the kustomize base, against Kubernetes' schemas
#     (kubernetes-validate --strict); the policy floor's flags refuse what they should;
#   - ServiceMonitor / PodMonitor / PrometheusRule / AlertmanagerConfig against prometheus-operator's
#     schemas
#     (npm @kubernetes-models/prometheus-operator);
#   - the rule groups with `promtool check rules` and `promtool test rules` (rules-test.yaml:
#     every service alert and the /v1/verify SLO burn-rate alerts, exact labels and annotations;
#     operator-rules-test.yaml: the operator's own webhook alerts in manifests/monitoring);
#   - the Grafana dashboard's structure, and its panel queries as recording rules for promtool;
#   - sample FaceKeyDeployments against the CRD's openAPIV3Schema (check-jsonschema), and
#     known-bad ones must fail it; CEL-invalid ones must make `render` fail;
#   - `kubectl kustomize manifests` builds offline;
#   - sidecar injection: `render --inject` of workload fixtures is strictly valid, opt-out and
#     unknown resources behave, the webhook objects and the cert-manager component build;
#   - the runtime's --check-config on each sample's rendered environment;
#   - the Argo CD health check, run with Lua 5.1 on the operator's recorded statuses;
#   - the scan Job's pod, container by container, with the real trivy and operator binaries.
#
# Inputs (env): VENV (Python venv with kubernetes-validate, check-jsonschema, PyYAML),
# NODE_MODULES (with @kubernetes-models/prometheus-operator and js-yaml), FACEKEY_OPERATOR_BIN
# (built operator binary), FACEKEY_RUNTIME_BIN (built runtime binary), K8S_VERSION (schema
# version, default 1.35.0 = the k8s-openapi feature).
# Tools installed by tests/setup.sh; promtool comes from Debian's `prometheus` package.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv-tests}"
NODE_MODULES="${NODE_MODULES:-$ROOT/tests/node/node_modules}"
BIN="${FACEKEY_OPERATOR_BIN:-$ROOT/target/debug/facekey-operator}"
K8S_VERSION="${K8S_VERSION:-1.35.0}"
HERE="$ROOT/tests/operator"
PY="$VENV/bin/python"

fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
pass() { printf 'PASS: %s\n' "$*"; }

[ -x "$BIN" ] || fail "operator binary $BIN missing (cargo build -p facekey-operator, or set FACEKEY_OPERATOR_BIN)"
[ -x "$VENV/bin/kubernetes-validate" ] || fail "$VENV/bin/kubernetes-validate missing (run tests/setup.sh)"
[ -x "$VENV/bin/check-jsonschema" ] || fail "$VENV/bin/check-jsonschema missing (run tests/setup.sh)"
[ -d "$NODE_MODULES/@kubernetes-models/prometheus-operator" ] || fail "$NODE_MODULES lacks @kubernetes-models/prometheus-operator"
[ -d "$NODE_MODULES/js-yaml" ] || fail "$NODE_MODULES lacks js-yaml"
command -v promtool >/dev/null || fail "promtool missing (apt-get install prometheus)"
command -v node >/dev/null || fail "node missing"
# kubectl from the pinned wheel in the venv (tests/requirements.txt), else one on PATH.
KUBECTL="$VENV/bin/kubectl"
[ -x "$KUBECTL" ] || KUBECTL="$(command -v kubectl)" || fail "kubectl missing (run tests/setup.sh)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Validate a multi-document YAML file strictly; every built-in document must pass.
k8s_validate() {
  local file="$1" what="$2" out docs passed
  if ! out="$("$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$file" 2>&1)"; then
    printf '%s\n' "$out" >&2
    fail "$what: kubernetes-validate --strict reported errors"
  fi
  if grep -q '^ERROR' <<<"$out"; then
    printf '%s\n' "$out" >&2
    fail "$what: kubernetes-validate reported errors"
  fi
  docs="$("$PY" -c 'import sys,yaml; print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if isinstance(d, dict)))' "$file")"
  passed="$(grep -c ' passed for resource ' <<<"$out" || true)"
  [ "$passed" -eq "$docs" ] || { printf '%s\n' "$out" >&2; fail "$what: $passed of $docs objects validated"; }
  pass "$what: $passed objects valid against Kubernetes $K8S_VERSION schemas (strict)"
}

# 1. Render the samples and fixtures through the operator's own builder.
RESOURCES=("$ROOT"/manifests/samples/facekeydeployment*.yaml "$ROOT"/operator/tests/fixtures/resources/*.yaml)
: >"$WORK/rendered.yaml"
# Some fixtures disable the scan gate, which the default policy floor refuses (checked below).
for r in "${RESOURCES[@]}"; do
  "$BIN" render -f "$r" --include-scan-job --require-scan=false >>"$WORK/rendered.yaml" || fail "render $r"
done
"$BIN" render -f "$ROOT/manifests/samples/facekeydeployment-minimal.yaml" --without-monitoring-crds \
  >"$WORK/rendered-no-crds.yaml" || fail "render without monitoring CRDs"
if grep -q 'monitoring.coreos.com' "$WORK/rendered-no-crds.yaml"; then
  fail "render --without-monitoring-crds still produced prometheus-operator objects"
fi
# One NetworkPolicy per resource, except the fixture that disables it (weights-configmap.yaml).
policies="$(grep -c '^kind: NetworkPolicy' "$WORK/rendered.yaml" || true)"
[ "$policies" -eq $(( ${#RESOURCES[@]} - 1 )) ] || fail "expected $(( ${#RESOURCES[@]} - 1 )) NetworkPolicies, rendered $policies"
# A PodDisruptionBudget only where at least two pods are asked for: the full sample (autoscaling
# from 2), weights-configmap.yaml (3) and pod-overrides.yaml (2); none for a single pod.
pdbs="$(grep -c '^kind: PodDisruptionBudget' "$WORK/rendered.yaml" || true)"
[ "$pdbs" -eq 3 ] || fail "expected 3 PodDisruptionBudgets, rendered $pdbs"
grep -A12 '^kind: PodDisruptionBudget' "$WORK/rendered.yaml" | grep -q 'minAvailable' && fail "a PodDisruptionBudget sets minAvailable"
pass "rendered ${#RESOURCES[@]} resource files ($(grep -c '^kind:' "$WORK/rendered.yaml") objects, $pdbs PodDisruptionBudgets)"

# The cluster policy floor: the default flags refuse a disabled gate, a severity above the
# ceiling (flag and environment variable), and a resource's own scanner.
if "$BIN" render -f "$ROOT/operator/tests/fixtures/resources/models-and-rps.yaml" >/dev/null 2>"$WORK/floor.err"; then
  fail "render accepted scanGate.enabled: false under the default policy floor"
fi
grep -q -- '--require-scan' "$WORK/floor.err" || { cat "$WORK/floor.err" >&2; fail "the floor's refusal does not name --require-scan"; }
if FACEKEY_OPERATOR_MAX_ALLOWED_SEVERITY=LOW "$BIN" render -f "$ROOT/manifests/samples/facekeydeployment.yaml" >/dev/null 2>"$WORK/floor.err"; then
  fail "render accepted maxSeverity MEDIUM under FACEKEY_OPERATOR_MAX_ALLOWED_SEVERITY=LOW"
fi
grep -q 'at most LOW' "$WORK/floor.err" || { cat "$WORK/floor.err" >&2; fail "the severity refusal does not name the ceiling"; }
printf '%s\n' 'apiVersion: facekey.dev/v1alpha1' 'kind: FaceKeyDeployment' 'metadata: {name: own}' \
  'spec: {image: "img:1", scanGate: {scannerImage: "example.com/not-trivy:1"}}' >"$WORK/own-scanner.yaml"
"$BIN" render -f "$WORK/own-scanner.yaml" >/dev/null 2>&1 && fail "render accepted a resource's own scanner image"
"$BIN" render -f "$WORK/own-scanner.yaml" --allow-scanner-overrides=true >/dev/null || fail "--allow-scanner-overrides=true still refuses"
pass "the default policy floor refuses a disabled gate, a severity above the ceiling and a resource's scanner"

# Scanner settings of air-gapped clusters (DB mirrors) and Trivy's server mode reach the scan Job,
# which stays schema-valid.
"$BIN" render -f "$ROOT/operator/tests/fixtures/resources/pod-overrides.yaml" --include-scan-job \
  --scanner-image registry.internal.example/aquasecurity/trivy:0.76.0 \
  --db-repository registry.internal.example/aquasecurity/trivy-db:2 \
  --java-db-repository registry.internal.example/aquasecurity/trivy-java-db:1 >"$WORK/mirror.yaml" || fail "render with DB mirrors"
FACEKEY_OPERATOR_TRIVY_SERVER=http://trivy.trivy-system:4954 "$BIN" render --include-scan-job \
  -f "$ROOT/operator/tests/fixtures/resources/pod-overrides.yaml" >"$WORK/server.yaml" || fail "render with a Trivy server"
grep -q -- '- --db-repository' "$WORK/mirror.yaml" && grep -q -- '- --java-db-repository' "$WORK/mirror.yaml" \
  && grep -q 'image: registry.internal.example/aquasecurity/trivy:0.76.0' "$WORK/mirror.yaml" || fail "DB mirrors missing from the scan Job"
grep -A1 -- '- --server' "$WORK/server.yaml" | grep -q 'http://trivy.trivy-system:4954' || fail "--server missing from the scan Job"

# Registry logins of the scan: every pull secret is mounted and merged, in order, by an init
# container into the Docker config Trivy reads; the Job stays schema-valid.
printf '%s\n' 'apiVersion: facekey.dev/v1alpha1' 'kind: FaceKeyDeployment' 'metadata: {name: creds, namespace: ns}' \
  'spec: {image: "corp.example/fk:1", imagePullSecrets: [{name: dockerhub}, {name: corp-registry}]}' >"$WORK/creds.yaml"
"$BIN" render -f "$WORK/creds.yaml" --include-scan-job >"$WORK/creds-rendered.yaml" || fail "render with two pull secrets"
"$PY" -c 'import sys,yaml; yaml.safe_dump_all([d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Job"], open(sys.argv[2], "w"))' \
  "$WORK/creds-rendered.yaml" "$WORK/creds-job.yaml"
grep -q -- '--input' "$WORK/creds-job.yaml" && grep -q 'secretName: corp-registry' "$WORK/creds-job.yaml" \
  || fail "the scan Job does not merge both pull secrets"
# The merge itself, on files laid out as the Job mounts them: both formats, first one wins.
mkdir -p "$WORK/ps/0-dockerhub" "$WORK/ps/1-corp-registry" "$WORK/ps/2-absent" "$WORK/dc"
printf '%s' '{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOjE="}}}' >"$WORK/ps/0-dockerhub/dockerconfigjson"
printf '%s' '{"corp.example":{"auth":"Y29ycDox","email":"ops@example.com"},"docker.io":{"auth":"bm86MQ=="}}' >"$WORK/ps/1-corp-registry/dockercfg"
"$BIN" merge-docker-config --input "$WORK/ps/0-dockerhub" --input "$WORK/ps/1-corp-registry" --input "$WORK/ps/2-absent" \
  --output "$WORK/dc/config.json" 2>"$WORK/merge.log" || { cat "$WORK/merge.log" >&2; fail "merge-docker-config"; }
"$PY" -c 'import json,sys; a=json.load(open(sys.argv[1]))["auths"]; sys.exit(a != {"https://index.docker.io/v1/": {"auth": "aHViOjE="}, "corp.example": {"auth": "Y29ycDox", "email": "ops@example.com"}})' \
  "$WORK/dc/config.json" || { cat "$WORK/dc/config.json" >&2; fail "merged Docker config"; }
printf '%s' '{"corp.example": ' >"$WORK/ps/1-corp-registry/dockercfg"
if "$BIN" merge-docker-config --input "$WORK/ps/0-dockerhub" --input "$WORK/ps/1-corp-registry" \
  --output "$WORK/dc/bad.json" --termination-log "$WORK/dc/termination-log" 2>/dev/null; then
  fail "merge-docker-config accepted a pull secret that is not JSON"
fi
grep -q '1-corp-registry/dockercfg (key .dockercfg): not valid JSON' "$WORK/dc/termination-log" \
  || fail "merge-docker-config did not explain the malformed pull secret in its termination log"
pass "scan Job registry logins: both pull secrets mounted and merged (first wins), malformed one refused"

"$PY" "$HERE/manifest_tools.py" split "$WORK/rendered.yaml" "$WORK/split" >/dev/null

# 2. Built-in kinds against Kubernetes' OpenAPI schemas.
k8s_validate "$WORK/split/builtins.yaml" "rendered built-in objects"
k8s_validate "$WORK/rendered-no-crds.yaml" "rendered objects without monitoring CRDs"
k8s_validate "$WORK/mirror.yaml" "pod overrides, PDB and scan Job with DB mirrors"
k8s_validate "$WORK/server.yaml" "scan Job in Trivy server mode"
k8s_validate "$WORK/creds-job.yaml" "scan Job merging two pull secrets"

# 3. prometheus-operator kinds against their schemas.
EXPECT_KINDS=ServiceMonitor,PodMonitor,PrometheusRule,AlertmanagerConfig NODE_MODULES="$NODE_MODULES" \
  node "$HERE/validate-prometheus-operator.mjs" "$WORK/split/prometheus-operator.yaml" >"$WORK/promop.log" 2>&1 \
  || { cat "$WORK/promop.log" >&2; fail "prometheus-operator schema validation"; }
pass "prometheus-operator objects: $(grep -c '^ok' "$WORK/promop.log") valid"
# Only the fixture that allows sidecars (with monitoring on) gets a PodMonitor.
podmonitors="$(grep -c '^kind: PodMonitor' "$WORK/rendered.yaml" || true)"
[ "$podmonitors" -eq 1 ] || fail "expected 1 PodMonitor (operator/tests/fixtures/resources/sidecar.yaml), rendered $podmonitors"

# 4. Alerting and recording rules.
promtool check rules "$WORK/split/rules.yaml" >"$WORK/promtool.log" 2>&1 \
  || { cat "$WORK/promtool.log" >&2; fail "promtool check rules"; }
pass "promtool check rules: $(grep -o 'SUCCESS: [0-9]* rules found' "$WORK/promtool.log")"
# The unit tests are written for the full sample (namespace facekey, name facekey) alone.
"$BIN" render -f "$ROOT/manifests/samples/facekeydeployment.yaml" >"$WORK/sample.yaml"
"$PY" "$HERE/manifest_tools.py" split "$WORK/sample.yaml" "$WORK/sample" >/dev/null
cp "$HERE/rules-test.yaml" "$WORK/sample/rules-test.yaml"
promtool test rules "$WORK/sample/rules-test.yaml" >"$WORK/promtool-test.log" 2>&1 \
  || { cat "$WORK/promtool-test.log" >&2; fail "promtool test rules"; }
pass "promtool test rules: alert unit tests pass"

# 5. Grafana dashboards: structure, and every panel query parses as PromQL.
"$PY" "$HERE/manifest_tools.py" dashboard-check "$WORK/dashboard-rules.yaml" "$WORK"/split/dashboards/*.json \
  >"$WORK/dash.log" || fail "dashboard structure"
promtool check rules "$WORK/dashboard-rules.yaml" >/dev/null 2>&1 || fail "dashboard panel queries are not valid PromQL"
pass "dashboards: $(cat "$WORK/dash.log") valid"

# 6. Sample resources against the CRD schema; known-bad ones must be rejected.
"$PY" "$HERE/manifest_tools.py" crd-schema "$ROOT/crds/facekeydeployment.yaml" "$WORK/crd-schema.json"
n="$("$PY" "$HERE/manifest_tools.py" extract-kind FaceKeyDeployment "$WORK/samples" "${RESOURCES[@]}")"
[ "$n" -ge 3 ] || fail "expected sample FaceKeyDeployments, found $n"
"$VENV/bin/check-jsonschema" --schemafile "$WORK/crd-schema.json" "$WORK"/samples/*.json >/dev/null \
  || fail "sample FaceKeyDeployments do not match the CRD schema"
pass "$n sample FaceKeyDeployments match the CRD schema"
bad=0
for f in "$HERE"/invalid/*.yaml; do
  rm -rf "$WORK/bad" && "$PY" "$HERE/manifest_tools.py" extract-kind FaceKeyDeployment "$WORK/bad" "$f" >/dev/null
  if "$VENV/bin/check-jsonschema" --schemafile "$WORK/crd-schema.json" "$WORK"/bad/*.json >/dev/null 2>&1; then
    fail "$(basename "$f") should be rejected by the CRD schema"
  fi
  bad=$((bad + 1))
done
pass "$bad invalid FaceKeyDeployments rejected by the CRD schema"
for f in "$HERE"/invalid-cel/*.yaml; do
  if "$BIN" render -f "$f" >/dev/null 2>"$WORK/render.err"; then
    fail "render accepted $(basename "$f"), which breaks a CEL rule"
  fi
  grep -q 'invalid spec' "$WORK/render.err" || { cat "$WORK/render.err" >&2; fail "render of $(basename "$f") failed for another reason"; }
done
pass "render refuses specs that break the CRD's CEL rules"

# 7. The kustomize base builds offline and its objects (CRD, RBAC, Deployment) are schema-valid.
"$KUBECTL" kustomize "$ROOT/manifests" >"$WORK/kustomized.yaml" || fail "kubectl kustomize manifests"
k8s_validate "$WORK/kustomized.yaml" "kubectl kustomize manifests"

# 8. The optional monitoring overlay (the operator's own ServiceMonitor) builds and is valid.
"$KUBECTL" kustomize "$ROOT/manifests/monitoring" >"$WORK/monitoring.yaml" || fail "kubectl kustomize manifests/monitoring"
EXPECT_KINDS=ServiceMonitor,PrometheusRule NODE_MODULES="$NODE_MODULES" \
  node "$HERE/validate-prometheus-operator.mjs" "$WORK/monitoring.yaml" >"$WORK/monitoring.log" 2>&1 \
  || { cat "$WORK/monitoring.log" >&2; fail "manifests/monitoring schema validation"; }
grep -q 'honorLabels: true' "$WORK/monitoring.yaml" || fail "the operator ServiceMonitor must honour labels"
pass "manifests/monitoring: operator ServiceMonitor and PrometheusRule valid"
# The operator's own alerts (sidecar injection webhook): schema above, then promtool.
mkdir -p "$WORK/operator-rules"
"$PY" - "$WORK/monitoring.yaml" "$WORK/operator-rules/operator-rules.yaml" <<'PYEOF' || fail "no PrometheusRule in manifests/monitoring"
import sys, yaml
groups = [g for d in yaml.safe_load_all(open(sys.argv[1]))
          if isinstance(d, dict) and d.get("kind") == "PrometheusRule" for g in d["spec"]["groups"]]
assert groups, "no rule groups"
yaml.safe_dump({"groups": groups}, open(sys.argv[2], "w"), sort_keys=False)
PYEOF
promtool check rules "$WORK/operator-rules/operator-rules.yaml" >"$WORK/operator-promtool.log" 2>&1 \
  || { cat "$WORK/operator-promtool.log" >&2; fail "promtool check rules (operator alerts)"; }
cp "$HERE/operator-rules-test.yaml" "$WORK/operator-rules/"
promtool test rules "$WORK/operator-rules/operator-rules-test.yaml" >"$WORK/operator-promtool-test.log" 2>&1 \
  || { cat "$WORK/operator-promtool-test.log" >&2; fail "promtool test rules (operator alerts)"; }
pass "manifests/monitoring: operator webhook alerts ($(grep -o '[0-9]* rules found' "$WORK/operator-promtool.log")) pass their promtool unit tests"

# 9. Sidecar injection: the webhook's objects are in the base; `render --inject` (the webhook's own
# decision and JSON patch) of a Deployment, a Pod, a CronJob and an opted-out StatefulSet gives
# strictly valid objects with the native sidecar where asked; an unknown resource is refused; the
# cert-manager component builds and its built-in objects are valid.
grep -q '^kind: MutatingWebhookConfiguration' "$WORK/kustomized.yaml" || fail "the base lacks the MutatingWebhookConfiguration"
grep -q 'name: facekey-webhook$' "$WORK/kustomized.yaml" || fail "the base lacks the webhook Service"
WH="$ROOT/operator/tests/fixtures/webhook"
"$BIN" render --inject -f "$WH/deployment.yaml" --resources "$WH/resources.yaml" >"$WORK/injected.yaml" \
  || fail "render --inject deployment.yaml"
"$BIN" render --inject -f "$WH/workloads.yaml" --resources "$WH/resources.yaml" >>"$WORK/injected.yaml" \
  || fail "render --inject workloads.yaml"
k8s_validate "$WORK/injected.yaml" "render --inject (sidecar injected)"
sidecars="$(grep -c 'name: facekey-runtime$' "$WORK/injected.yaml" || true)"
[ "$sidecars" -eq 3 ] || fail "expected 3 injected sidecars (Deployment, Pod, CronJob; not the opted-out StatefulSet), found $sidecars"
grep -q 'value: 127.0.0.1:7070' "$WORK/injected.yaml" || fail "the sidecar must listen on 127.0.0.1"
grep -q 'restartPolicy: Always' "$WORK/injected.yaml" || fail "the sidecar must be a native sidecar"
# The PodMonitor rendered for shop/verifier selects the pods `render --inject` injected for that
# same resource and scrapes a port the sidecar declares.
"$PY" - "$WORK/rendered.yaml" "$WORK/injected.yaml" <<'PYEOF' || fail "the PodMonitor does not match the injected pods"
import sys, yaml
pm = next(d for d in yaml.safe_load_all(open(sys.argv[1]))
          if isinstance(d, dict) and d.get("kind") == "PodMonitor")
sel = pm["spec"]["selector"]["matchLabels"]
port = pm["spec"]["podMetricsEndpoints"][0]["port"]
pods = []
for d in yaml.safe_load_all(open(sys.argv[2])):
    if not isinstance(d, dict):
        continue
    spec = d.get("spec", {})
    tpl = d if d.get("kind") == "Pod" else spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    if not tpl:
        continue
    side = [c for c in tpl.get("spec", {}).get("initContainers", []) if c["name"] == "facekey-runtime"]
    if side and d["metadata"].get("namespace") == pm["metadata"]["namespace"]:
        pods.append((tpl["metadata"].get("labels", {}), side[0]))
assert pods, "no injected pod of the PodMonitor's namespace"
for labels, side in pods:
    assert all(labels.get(k) == v for k, v in sel.items()), (sel, labels)
    assert port in [p.get("name") for p in side.get("ports", [])], (port, side.get("ports"))
    assert labels[pm["spec"]["jobLabel"]] == pm["metadata"]["name"]
print(f"PodMonitor selects {len(pods)} injected pod templates on port {port}")
PYEOF
if "$BIN" render --inject -f "$WH/unknown.yaml" --resources "$WH/resources.yaml" >/dev/null 2>"$WORK/unknown.err"; then
  fail "render --inject admitted a pod naming an unknown FaceKeyDeployment"
fi
grep -q 'shop/verfier.*does not exist' "$WORK/unknown.err" || { cat "$WORK/unknown.err" >&2; fail "unknown resource: unclear message"; }
pass "render --inject: sidecars injected where asked, opt-out respected, unknown resource refused"
mkdir -p "$WORK/cm-overlay"
rel="$("$PY" -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$ROOT/manifests" "$WORK/cm-overlay")"
printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [%s]\ncomponents: [%s/components/webhook-cert-manager]\n' "$rel" "$rel" >"$WORK/cm-overlay/kustomization.yaml"
"$KUBECTL" kustomize "$WORK/cm-overlay" >"$WORK/cert-manager.yaml" || fail "kubectl kustomize with the webhook-cert-manager component"
grep -q 'cert-manager.io/inject-ca-from: facekey-system/facekey-webhook' "$WORK/cert-manager.yaml" || fail "cert-manager component: no CA injection annotation"
grep -q 'value: cert-manager' "$WORK/cert-manager.yaml" || fail "cert-manager component: the operator is not switched to cert-manager certificates"
"$PY" -c 'import sys,yaml; docs=[d for d in yaml.safe_load_all(open(sys.argv[1])) if isinstance(d, dict) and not d["apiVersion"].startswith("cert-manager.io/")]; yaml.safe_dump_all(docs, open(sys.argv[2], "w"))' \
  "$WORK/cert-manager.yaml" "$WORK/cert-manager-builtin.yaml"
k8s_validate "$WORK/cert-manager-builtin.yaml" "kustomize with the webhook-cert-manager component (built-in kinds)"
# The optional NetworkPolicy restricting the webhook port builds onto the base and is valid.
mkdir -p "$WORK/np-overlay"
rel="$("$PY" -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$ROOT/manifests" "$WORK/np-overlay")"
printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [%s]\ncomponents: [%s/components/webhook-network-policy]\n' "$rel" "$rel" >"$WORK/np-overlay/kustomization.yaml"
"$KUBECTL" kustomize "$WORK/np-overlay" >"$WORK/network-policy.yaml" || fail "kubectl kustomize with the webhook-network-policy component"
grep -q '^kind: NetworkPolicy' "$WORK/network-policy.yaml" || fail "webhook-network-policy component: no NetworkPolicy"
k8s_validate "$WORK/network-policy.yaml" "kustomize with the webhook-network-policy component"
# The example overlays (overlays/): copied and edited as their comments say (another namespace,
# another registry), they install with nothing left naming facekey-system or their own example
# namespace, the scan Jobs' image equal to the operator's, and (cert-manager) the certificate
# and the CA injection naming the new namespace; built-in kinds are schema-valid.
for overlay in namespace namespace-cert-manager; do
  mkdir -p "$WORK/overlays/$overlay"
  rel="$("$PY" -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$ROOT/manifests" "$WORK/overlays/$overlay")"
  sed -e "s#^namespace: facekey-auth\$#namespace: acme-auth#" \
      -e "s#newName: ghcr.io/facekey/operator#newName: registry.acme.example/facekey/operator#" \
      -e "s#newTag: 0.1.0#newTag: 9.9.9#" \
      -e "s#\.\./\.\./manifests#$rel#" \
      "$ROOT/overlays/$overlay/kustomization.yaml" >"$WORK/overlays/$overlay/kustomization.yaml"
  "$KUBECTL" kustomize "$ROOT/overlays/$overlay" >/dev/null || fail "kubectl kustomize overlays/$overlay"
  "$KUBECTL" kustomize "$WORK/overlays/$overlay" >"$WORK/overlay-$overlay.yaml" \
    || fail "kubectl kustomize overlays/$overlay (edited)"
  "$PY" - "$WORK/overlay-$overlay.yaml" "$WORK/overlay-$overlay-builtin.yaml" <<'PYEOF' || fail "overlays/$overlay: the namespace or the image did not follow"
import sys, yaml
text = open(sys.argv[1]).read()
for stale in ("facekey-system", "facekey-auth", "ghcr.io/facekey/operator"):
    assert stale not in text, f"{stale} left in the build"
docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
ns = [d for d in docs if d["kind"] == "Namespace"]
assert [d["metadata"]["name"] for d in ns] == ["acme-auth"], ns
assert ns[0]["metadata"]["labels"]["facekey.dev/sidecar-injection"] == "disabled"
for d in docs:
    if d["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                         "MutatingWebhookConfiguration"):
        assert d["metadata"].get("namespace") == "acme-auth", (d["kind"], d["metadata"])
op = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "facekey-operator")
c = next(c for c in op["spec"]["template"]["spec"]["containers"] if c["name"] == "operator")
env = {e["name"]: e.get("value") for e in c["env"]}
assert c["image"] == "registry.acme.example/facekey/operator:9.9.9", c["image"]
assert env["FACEKEY_OPERATOR_IMAGE"] == c["image"], env
mwc = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
assert mwc["webhooks"][0]["clientConfig"]["service"]["namespace"] == "acme-auth"
crb = [s for d in docs if d["kind"] == "ClusterRoleBinding" for s in d["subjects"]]
assert crb and all(s["namespace"] == "acme-auth" for s in crb), crb
cert = [d for d in docs if d["kind"] == "Certificate" and d["metadata"]["name"] == "facekey-webhook"]
if cert:
    assert "facekey-webhook.acme-auth.svc" in cert[0]["spec"]["dnsNames"], cert[0]["spec"]
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "acme-auth/facekey-webhook"
yaml.safe_dump_all([d for d in docs if not d["apiVersion"].startswith("cert-manager.io/")],
                   open(sys.argv[2], "w"))
print(f"{len(docs)} objects in acme-auth")
PYEOF
  k8s_validate "$WORK/overlay-$overlay-builtin.yaml" "overlays/$overlay (edited)"
done
pass "overlays/: another namespace and registry need no patch beyond the overlay (plain and cert-manager)"

# 10. The runtime starts on what the operator renders: each sample's runtime environment as the
#     kubelet builds it (the ConfigMap's envFrom and the Secret-backed env, derived by
#     tests/alerts/derive.py; Secret values stand-ins) passes the real runtime binary's
#     --check-config, the checks start-up runs before it reads a file or loads a model.
RUNTIME_BIN="${FACEKEY_RUNTIME_BIN:-$ROOT/target/debug/facekey-runtime}"
[ -x "$RUNTIME_BIN" ] || fail "runtime binary $RUNTIME_BIN missing (cargo build -p facekey-runtime, or set FACEKEY_RUNTIME_BIN)"
checked=0
for sample in "$ROOT"/manifests/samples/facekeydeployment*.yaml; do
  name="$(basename "$sample" .yaml)"
  "$BIN" render -f "$sample" >"$WORK/env-$name.yaml"
  "$PY" "$ROOT/tests/alerts/derive.py" runtime-env --rendered "$WORK/env-$name.yaml" --any-secret stand-in \
    | grep '^FACEKEY_' >"$WORK/env-$name.env"
  mapfile -t vars <"$WORK/env-$name.env"
  env -i PATH="$PATH" "${vars[@]}" "$RUNTIME_BIN" --check-config >/dev/null 2>"$WORK/check-config.err" \
    || { cat "$WORK/check-config.err" >&2; fail "$name: the runtime refuses the environment the operator renders"; }
  checked=$((checked + 1))
done
[ "$checked" -ge 3 ] || fail "only $checked samples checked"
# And it would refuse a broken one: the same check is not a no-op.
env -i PATH="$PATH" "${vars[@]}" FACEKEY_LIVENESS=off "$RUNTIME_BIN" --check-config >/dev/null 2>&1 \
  && fail "--check-config accepted FACEKEY_LIVENESS=off without --allow-insecure"
pass "the runtime's --check-config accepts the environment rendered for each of the $checked samples"

# 11. GitOps health: the shipped Argo CD health check (manifests/gitops/argocd-health.lua, the
#     same script in the argocd-cm patch and in docs/operator.md) run with a real Lua 5.1 on the
#     statuses the reconciler writes in ten states (operator/tests/golden/gitops-health.json,
#     from operator/tests/gitops_health.rs); the patch is a valid ConfigMap.
command -v lua5.1 >/dev/null || fail "lua5.1 missing (tests/setup.sh installs Debian's lua5.1)"
"$PY" "$ROOT/tests/operator/argocd_health.py" "$ROOT/operator/tests/golden/gitops-health.json" \
  "$ROOT/manifests/gitops/argocd-health.lua" "$ROOT/manifests/gitops/argocd-cm-patch.yaml" "$ROOT/docs/operator.md" \
  || fail "Argo CD health check"
k8s_validate "$ROOT/manifests/gitops/argocd-cm-patch.yaml" "the argocd-cm patch"
pass "the Argo CD health check maps the operator's statuses as documented"

# 12. The scan Job's pod run here with the real programs (tests/operator/scan_job.py): each
#     container's exact command line and environment, volumes as directories shared as in the
#     pod. The real trivy (the scanner image's version, from the venv) must accept the Job's flags
#     and fail only where the network starts (its DB download from the expected repository, or
#     the expected Trivy server); the real operator binary merges the pull secrets' logins and
#     turns a recorded report into the summary for the Job's image.
TRIVY_BIN="$VENV/bin/trivy"
sample="$ROOT/manifests/samples/facekeydeployment.yaml"
report="$ROOT/operator/tests/fixtures/trivy/runtime-0.1.0-pass.json"
"$BIN" render --include-scan-job -f "$sample" >"$WORK/scan-default.yaml"
want_trivy="$(grep -o 'image: [^ ]*trivy:[0-9.]*' "$WORK/scan-default.yaml" | head -1 | sed 's/.*trivy://')"
have_trivy="$("$TRIVY_BIN" --version | sed -n 's/^Version: //p')"
[ "$want_trivy" = "$have_trivy" ] || fail "the scan Job runs trivy $want_trivy, the venv has $have_trivy: keep tests/requirements.txt's trivy at the operator's default scanner version"
"$PY" "$HERE/scan_job.py" "$WORK/scan-default.yaml" "$BIN" "$TRIVY_BIN" "$report" "$WORK/pod-default" \
  --expect-db trivy-db || fail "scan Job pod (defaults)"
"$BIN" render --include-scan-job -f "$sample" --db-repository registry.internal.example/aquasecurity/trivy-db:2 \
  --java-db-repository registry.internal.example/aquasecurity/trivy-java-db:1 >"$WORK/scan-mirror.yaml"
"$PY" "$HERE/scan_job.py" "$WORK/scan-mirror.yaml" "$BIN" "$TRIVY_BIN" "$report" "$WORK/pod-mirror" \
  --expect-db registry.internal.example/aquasecurity/trivy-db:2 || fail "scan Job pod (DB mirrors)"
FACEKEY_OPERATOR_TRIVY_SERVER=http://trivy.trivy-system:4954 "$BIN" render --include-scan-job -f "$sample" >"$WORK/scan-server.yaml"
"$PY" "$HERE/scan_job.py" "$WORK/scan-server.yaml" "$BIN" "$TRIVY_BIN" "$report" "$WORK/pod-server" \
  --expect-server http://trivy.trivy-system:4954 || fail "scan Job pod (Trivy server)"
printf '%s\n' 'apiVersion: facekey.dev/v1alpha1' 'kind: FaceKeyDeployment' 'metadata: {name: logins, namespace: ns}' \
  'spec: {image: "ghcr.io/facekey/runtime:0.1.0", imagePullSecrets: [{name: dockerhub}, {name: corp-registry}]}' >"$WORK/logins.yaml"
"$BIN" render --include-scan-job -f "$WORK/logins.yaml" >"$WORK/scan-logins.yaml"
"$PY" "$HERE/scan_job.py" "$WORK/scan-logins.yaml" "$BIN" "$TRIVY_BIN" "$report" "$WORK/pod-logins" --expect-db trivy-db \
  --expect-login dockerhub.registry.example --expect-login corp-registry.registry.example || fail "scan Job pod (pull secrets)"
pass "the scan Job's pod runs with the real trivy $have_trivy and operator binaries: defaults, DB mirrors, Trivy server, pull secrets"

echo "operator manifest checks: all passed"

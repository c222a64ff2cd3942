#!/usr/bin/env python3
"""Helpers for tests/operator/check.sh: split rendered manifests, extract rule groups, turn the
CRD's openAPIV3Schema into a strict JSON schema, and check Grafana dashboards.

Needs PyYAML (installed with kubernetes-validate in the test venv)."""

import json
import sys
from pathlib import Path

import yaml

PROMETHEUS_OPERATOR = "monitoring.coreos.com/"


def docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]


def split(rendered, outdir):
    """Write builtins.yaml, prometheus-operator.yaml, rules.yaml and dashboards/*.json."""
    out = Path(outdir)
    (out / "dashboards").mkdir(parents=True, exist_ok=True)
    builtins, promop, groups, dashboards = [], [], [], 0
    for d in docs(rendered):
        if str(d.get("apiVersion", "")).startswith(PROMETHEUS_OPERATOR):
            promop.append(d)
            if d.get("kind") == "PrometheusRule":
                groups.extend(d["spec"]["groups"])
        else:
            builtins.append(d)
        labels = d.get("metadata", {}).get("labels", {}) or {}
        if d.get("kind") == "ConfigMap" and labels.get("grafana_dashboard") == "1":
            for key, text in d.get("data", {}).items():
                (out / "dashboards" / key).write_text(text, encoding="utf-8")
                dashboards += 1
    with open(out / "builtins.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump_all(builtins, f, sort_keys=False)
    with open(out / "prometheus-operator.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump_all(promop, f, sort_keys=False)
    with open(out / "rules.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    print(
        f"{len(builtins)} built-in objects, {len(promop)} prometheus-operator objects, "
        f"{len(groups)} rule groups, {dashboards} dashboards"
    )
    if not builtins or not promop or not groups or not dashboards:
        sys.exit("expected built-in objects, prometheus-operator objects, rules and dashboards")


def strict_schema(node):
    """openAPIV3Schema -> JSON schema that, like `kubectl --validate=strict`, rejects unknown
    fields, and understands `nullable`."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schema(crd_path, out_path):
    crd = docs(crd_path)[0]
    version = crd["spec"]["versions"][0]
    schema = strict_schema(version["schema"]["openAPIV3Schema"])
    # metadata is validated by the API server itself, not by the CRD schema.
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version['name']}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind"})
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    Path(out_path).write_text(json.dumps(schema, indent=1), encoding="utf-8")


def extract_kind(kind, outdir, *files):
    """Write every document of `kind` in `files` as its own JSON file; print the count."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for path in files:
        for d in docs(path):
            if d.get("kind") == kind:
                n += 1
                (out / f"{Path(path).stem}-{n}.json").write_text(json.dumps(d), encoding="utf-8")
    print(n)


def dashboard_check(rules_out, *paths):
    """Check dashboard JSON structure; write each panel query as a recording rule."""
    rules, problems = [], []
    for path in paths:
        dash = json.loads(Path(path).read_text(encoding="utf-8"))
        name = Path(path).name
        for field in ("uid", "title", "panels", "schemaVersion"):
            if not dash.get(field):
                problems.append(f"{name}: missing {field}")
        if len(str(dash.get("uid", ""))) > 40:
            problems.append(f"{name}: uid longer than 40 characters")
        variables = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
        ids = [p.get("id") for p in dash.get("panels", [])]
        if len(ids) != len(set(ids)) or None in ids:
            problems.append(f"{name}: panel ids missing or not unique: {ids}")
        for panel in dash.get("panels", []):
            pid = panel.get("id")
            ds = panel.get("datasource", {})
            if ds.get("type") != "prometheus":
                problems.append(f"{name}: panel {pid} has no prometheus datasource")
            uid = str(ds.get("uid", ""))
            if uid.startswith("${") and uid[2:-1] not in variables:
                problems.append(f"{name}: panel {pid} uses undefined variable {uid}")
            grid = panel.get("gridPos", {})
            if not all(k in grid for k in ("h", "w", "x", "y")):
                problems.append(f"{name}: panel {pid} lacks gridPos")
            targets = panel.get("targets", [])
            if not targets:
                problems.append(f"{name}: panel {pid} has no targets")
            for t in targets:
                if not t.get("expr") or not t.get("refId"):
                    problems.append(f"{name}: panel {pid} target lacks expr/refId")
                    continue
                rules.append({"record": f"dashboard:panel_{pid}_{t['refId']}", "expr": t["expr"]})
    if problems:
        sys.exit("\n".join(problems))
    with open(rules_out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f)
    print(f"{len(paths)} dashboards, {len(rules)} panel queries")


if __name__ == "__main__":
    commands = {
        "split": split,
        "crd-schema": crd_schema,
        "extract-kind": extract_kind,
        "dashboard-check": dashboard_check,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(commands)}}} ARGS...")
    commands[sys.argv[1]](*sys.argv[2:])

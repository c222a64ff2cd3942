#!/usr/bin/env python3
"""Runs the shipped Argo CD health check on the statuses the operator writes, with a real Lua 5.1.

Argo CD evaluates `resource.customizations.health.<group>_<kind>` with gopher-lua (Lua 5.1): the
resource is the global `obj` (JSON objects as tables, arrays as 1-based tables, null as absent)
and the script returns `{status, message}`. This script does the same with `lua5.1` for every
object in operator/tests/golden/gitops-health.json (written by operator/tests/gitops_health.rs
from real reconciles) and checks the health Argo CD would show for each, and that the copies of
the script in the argocd-cm patch and in docs/operator.md are the shipped file.

Usage: argocd_health.py GOLDEN_JSON HEALTH_LUA CM_PATCH_YAML OPERATOR_MD   (needs PyYAML)
"""
import json
import re
import subprocess
import sys
import tempfile

import yaml

GOLDEN, LUA, CM, DOC = sys.argv[1:5]
KEY = "resource.customizations.health.facekey.dev_FaceKeyDeployment"

# What Argo CD must show, per scenario of the golden file (every scenario needs one).
EXPECTED = {
    "created, no status yet": "Progressing",
    "scan pending": "Progressing",
    "rolling out": "Progressing",
    "available": "Healthy",
    # Ready=True is still the old generation's: not Healthy before the operator has seen the change.
    "spec changed, not yet observed": "Progressing",
    "image blocked, the previous one serving": "Degraded",
    # The old generation's pods are all available, but this generation was never applied.
    "a spec change whose apply fails, the previous generation serving": "Progressing",
    "scan failed": "Degraded",
    "invalid spec": "Degraded",
    "scaled to zero": "Healthy",
    # RBAC refuses a read the operator needs: retrying alone cannot help.
    "a read refused (RBAC)": "Degraded",
    # A newer operator's value: this operator leaves the resource alone and says why.
    "spec undecodable": "Degraded",
}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def lua_string(s):
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        out.append(c if 32 <= b < 127 and c not in '"\\' else f"\\{b:03d}")
    return '"' + "".join(out) + '"'


def lua_value(v):
    """A JSON value as a Lua 5.1 table constructor, as Argo CD hands it to the script."""
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return lua_string(v)
    if isinstance(v, list):
        return "{" + ", ".join(lua_value(x) for x in v) + "}"
    return "{" + ", ".join(f"[{lua_string(k)}] = {lua_value(x)}" for k, x in v.items() if x is not None) + "}"


def health(script_path, obj):
    program = (
        f"obj = {lua_value(obj)}\n"
        f"local hs = assert(loadfile({lua_string(script_path)}))()\n"
        'io.write(tostring(hs.status), "\\t", tostring(hs.message))\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(program)
        f.flush()
        r = subprocess.run(["lua5.1", f.name], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"lua5.1 failed on the health script: {r.stderr.strip()}")
    status, _, message = r.stdout.partition("\t")
    return status, message


script = open(LUA).read()
cm = yaml.safe_load(open(CM))
if cm.get("metadata", {}).get("name") != "argocd-cm" or cm.get("data", {}).get(KEY) != script:
    fail(f"{CM}: data[{KEY}] of argocd-cm is not {LUA}")
blocks = re.findall(r"```lua\n(.*?)```", open(DOC).read(), re.S)
if script not in blocks:
    fail(f"{DOC}: no ```lua block equal to {LUA}")

cases = json.load(open(GOLDEN))
names = [c["scenario"] for c in cases]
if sorted(names) != sorted(EXPECTED):
    fail(f"scenarios {names} and expectations {sorted(EXPECTED)} differ: give every scenario its expected health")
for case in cases:
    obj = case["object"]
    status, message = health(LUA, obj)
    want = EXPECTED[case["scenario"]]
    if status != want:
        fail(f"{case['scenario']}: Argo CD would show {status} ({message}), expected {want}")
    if not message or message == "nil":
        fail(f"{case['scenario']}: {status} without a message")
    conditions = (obj.get("status") or {}).get("conditions") or []
    stalled = [c for c in conditions if c["type"] == "Stalled" and c["status"] == "True"]
    if status == "Degraded" and message != stalled[0]["message"]:
        fail(f"{case['scenario']}: Degraded with {message!r}, not the Stalled condition's message")
    print(f"  {case['scenario']:<42} {status:<12} {message[:90]}")
print(f"ok: the Argo CD health check gives the expected health for {len(cases)} operator statuses (lua5.1)")

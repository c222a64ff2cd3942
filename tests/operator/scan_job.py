#!/usr/bin/env python3
"""Runs a rendered scan Job's pod on this machine with the real binaries, container by container.

The operator's scan Job is three programs sharing volumes: `facekey-operator merge-docker-config`
(init: the pull secrets' logins into one Docker config), `trivy image` (init: the report), and
`facekey-operator scan-summary` (the summary the operator reads from the termination message).
Each runs here with exactly the command, arguments and environment the Job gives it; every
volume is a directory (emptyDirs shared between containers as in the pod, Secret volumes filled
with stand-in logins under the Job's own item paths), mount paths rewritten to those directories.

There is no network: Trivy cannot download its vulnerability DB or reach a registry, so it must
fail *after* parsing its flags (a flag it does not know, a bad value or a missing argument would
fail before): at the DB step against the expected DB repository, or, as a client of a Trivy
server (which downloads no DB), when it fetches the image it would send the server.
Then a recorded report (operator/tests/fixtures/trivy) stands in for the one Trivy would have
written, and scan-summary must turn it into the summary for the Job's image.

Usage: scan_job.py RENDERED_YAML OPERATOR_BIN TRIVY_BIN REPORT_JSON WORKDIR
         (--expect-db REPO | --expect-server URL) [--expect-login REGISTRY ...]
Prints one line per container; exits 1 on the first failure.
"""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys

import yaml

p = argparse.ArgumentParser()
p.add_argument("rendered")
p.add_argument("operator_bin")
p.add_argument("trivy_bin")
p.add_argument("report")
p.add_argument("work")
p.add_argument("--expect-db")
p.add_argument("--expect-server")
p.add_argument("--expect-login", action="append", default=[])
a = p.parse_args()

# Trivy's messages for command lines it cannot parse (cobra/pflag and Trivy's own flag checks).
USAGE_ERRORS = ("unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument",
                "unknown command", "accepts ", "flag error", "requires at least")


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


jobs = [d for d in yaml.safe_load_all(open(a.rendered)) if isinstance(d, dict) and d.get("kind") == "Job"]
if len(jobs) != 1:
    fail(f"{a.rendered}: {len(jobs)} Jobs, expected the one scan Job")
job = jobs[0]
image_scanned = job["metadata"]["annotations"]["facekey.dev/scan-image"]
pod = job["spec"]["template"]["spec"]
shutil.rmtree(a.work, ignore_errors=True)
os.makedirs(a.work)

# Volumes as directories; Secret volumes get a stand-in login for every item the Job projects.
vol_dir = {}
for v in pod.get("volumes", []):
    d = os.path.join(a.work, "vol-" + v["name"])
    os.makedirs(d)
    vol_dir[v["name"]] = d
    if "secret" in v:
        name = v["secret"]["secretName"]
        for item in v["secret"].get("items", []):
            if item["key"] == ".dockerconfigjson":
                auth = base64.b64encode(f"{name}:stand-in".encode()).decode()
                body = {"auths": {f"{name}.registry.example": {"auth": auth}}}
                with open(os.path.join(d, item["path"]), "w") as f:
                    json.dump(body, f)
            # .dockercfg left absent: a Secret of type dockerconfigjson has no such key, and the
            # kubelet skips an optional item whose key is missing.


def remap(value, mounts):
    """A path under a mount path, as the same path under the volume's directory."""
    for mount_path, host in sorted(mounts.items(), key=lambda m: -len(m[0])):
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return host + value[len(mount_path.rstrip("/")):]
    return value


def run(container, kind):
    mounts = {m["mountPath"]: vol_dir[m["name"]] for m in container.get("volumeMounts", [])}
    term = os.path.join(a.work, f"termination-log-{container['name']}")
    mounts["/dev/termination-log"] = term
    argv = [remap(x, mounts) for x in container.get("command", []) + container.get("args", [])]
    if kind == "trivy":
        if not argv or argv[0] != "trivy":
            fail(f"container {container['name']}: command {argv[:1]} is not trivy")
        argv[0] = a.trivy_bin
    else:
        if container.get("command"):
            fail(f"container {container['name']}: the operator image's entrypoint is overridden")
        argv = [a.operator_bin] + argv
    env = {"PATH": os.environ["PATH"],
           # No network here; fail fast instead of waiting for DNS or a connect timeout.
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = remap(e["value"], mounts)
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    message = open(term).read() if os.path.exists(term) else ""
    return r, message, argv


def output_of(argv):
    """The path after `--output` (the report Trivy writes, the Docker config the merge writes)."""
    if "--output" not in argv[:-1]:
        fail(f"no --output in {argv}")
    return argv[argv.index("--output") + 1]


containers = pod.get("initContainers", []) + pod["containers"]
seen = []
for c in containers:
    kind = "trivy" if "trivy" in c["image"].split("/")[-1] else "operator"
    r, message, argv = run(c, kind)
    out = (r.stdout + r.stderr).strip()
    if kind == "trivy":
        if r.returncode == 0:
            fail(f"trivy succeeded without a network: {out[-400:]}")
        if any(u in out for u in USAGE_ERRORS):
            fatal = [line for line in out.splitlines() if "FATAL" in line] or [out[-600:]]
            fail(f"trivy refused the Job's command line: {fatal[0]}")
        if a.expect_server:
            # Client mode downloads no DB: it fetches the image itself, then would send its
            # layers to the server; here the fetch is where the network starts.
            args = c["args"]
            if "--server" not in args or args[args.index("--server") + 1] != a.expect_server:
                fail(f"trivy's arguments do not name the server {a.expect_server}: {args}")
            if "DB error" in out or "trivy-db" in out:
                fail(f"trivy in server mode went for its own DB: {out[-600:]}")
            if f"unable to inspect the image ({image_scanned})" not in out:
                fail(f"trivy in server mode did not reach fetching {image_scanned}: {out[-600:]}")
            reached = f"fetching the image, client of {a.expect_server} (no DB download)"
        else:
            if "DB" not in out or a.expect_db not in out:
                fail(f"trivy did not reach its DB step with {a.expect_db}: {out[-600:]}")
            reached = f"its DB step ({a.expect_db})"
        if image_scanned not in " ".join(c["args"]):
            fail(f"trivy's arguments do not name the image {image_scanned}")
        # What Trivy would have left in the report volume.
        shutil.copy(a.report, output_of(argv))
        seen.append(f"{c['name']}: flags accepted by the real {a.trivy_bin}, failed offline at {reached}")
    elif r.returncode != 0:
        fail(f"container {c['name']} ({' '.join(c['args'][:1])}) failed: {out[-600:]} {message[-300:]}")
    elif c["args"][0] == "merge-docker-config":
        config = json.load(open(output_of(argv)))
        logins = sorted(config.get("auths", {}))
        for want in a.expect_login:
            if want not in logins:
                fail(f"merged Docker config has logins {logins}, not {want}")
        seen.append(f"{c['name']}: merged logins {logins}")
    elif c["args"][0] == "scan-summary":
        try:
            summary = json.loads(message)
        except ValueError:
            fail(f"scan-summary wrote no JSON to its termination log: {message[:300]!r}")
        repository = image_scanned.split("@")[0].rsplit(":", 1)[0]
        if summary.get("image") != image_scanned or not str(summary.get("digest", "")).startswith(repository + "@sha256:"):
            fail(f"the summary is not of {image_scanned} pinned in {repository}: {message[:300]}")
        if len(message.encode()) > 4096:
            fail(f"the summary is {len(message.encode())} bytes, over the kubelet's 4096-byte termination message")
        seen.append(f"{c['name']}: summary of {len(message)} bytes, {image_scanned} -> {summary['digest']}")
    else:
        fail(f"unexpected operator container {c['name']}: {c['args'][:1]}")

names = [c["name"] for c in containers]
if "trivy" not in names or names[-1] != "summary":
    fail(f"containers {names}: expected trivy then the summary last")
for line in seen:
    print("  " + line)

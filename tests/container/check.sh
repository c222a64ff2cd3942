#!/usr/bin/env bash
# Static checks of the container build (no Docker engine runs here): hadolint lints the
# Dockerfile and `trivy config` (offline, embedded checks) must report no misconfiguration.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv-tests}"
cd "$ROOT"

echo "hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp Dockerfile .dockerignore "$work/"
echo "trivy config Dockerfile"
"$VENV/bin/trivy" config --skip-check-update --quiet --exit-code 1 --cache-dir "$work/cache" "$work"
# The runtime stage's layout, checked against what the build stages produce here: every file it
# copies from the onnxruntime stage is what scripts/setup-onnxruntime.sh installs (the library
# and its licence notices), every file it copies from the context exists and is not ignored,
# and FACEKEY_ORT_LIBRARY names the library where it is copied.
echo "runtime image layout"
scripts/setup-onnxruntime.sh >/dev/null
python3 - "$ROOT" <<'PY'
import fnmatch, os, re, sys
root = sys.argv[1]
text = open(os.path.join(root, "Dockerfile")).read()
stage = text.split("AS runtime", 1)[1].split("\nFROM ", 1)[0]
ignored = [l.strip() for l in open(os.path.join(root, ".dockerignore")) if l.strip() and not l.startswith("#")]
problems = []
dests = []
for line in stage.splitlines():
    m = re.match(r"COPY\s+(?:--from=(\S+)\s+)?(?:--chown=\S+\s+)?(.+)", line)
    if not m:
        continue
    stage_from, paths = m.group(1), m.group(2).split()
    sources, dest = paths[:-1], paths[-1]
    for src in sources:
        if stage_from == "onnxruntime":
            local = os.path.join(root, ".tools/onnxruntime", os.path.basename(src))
            if not os.path.exists(local):
                problems.append(f"{src}: setup-onnxruntime.sh does not produce {os.path.basename(src)}")
            dests.append(dest if dest.endswith("/") is False else dest + os.path.basename(src))
        elif stage_from is None:
            if not os.path.exists(os.path.join(root, src)):
                problems.append(f"{src}: not in the build context")
            if any(fnmatch.fnmatch(src, pat.rstrip("/")) for pat in ignored):
                problems.append(f"{src}: excluded by .dockerignore")
lib = re.search(r"FACEKEY_ORT_LIBRARY=(\S+)", stage).group(1)
if lib not in dests:
    problems.append(f"FACEKEY_ORT_LIBRARY={lib} is not where the library is copied ({dests})")
if problems:
    sys.exit("FAIL: " + "; ".join(problems))
print(f"  {len(dests)} files from the onnxruntime stage, the library at {lib}")
PY
echo "container checks: passed"

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
echo "container checks: passed"

#!/usr/bin/env bash
# Install everything the test suite needs, idempotently: Debian packages (Prometheus, Chromium,
# ffmpeg, wrk, PostgreSQL and PgBouncer, Lua 5.1 for the Argo CD health check), a project-local Python venv with the schema and SMTP tools, npm packages for the
# schema and browser tests, the ONNX Runtime library and the built UI. Safe to run repeatedly;
# a second run takes seconds. Needs root (or sudo) for apt only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '\n== setup: %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- Debian packages -----------------------------------------------------------------------
APT_PACKAGES=(prometheus prometheus-alertmanager wrk chromium ffmpeg curl unzip postgresql pgbouncer openssl lua5.1 python3-venv jq)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python tools in a project-local venv ----------------------------------------------------
VENV="$ROOT/.venv-tests"
if [ ! -x "$VENV/bin/python" ]; then
  log "python venv $VENV"
  python3 -m venv "$VENV"
fi
if ! cmp -s "$ROOT/tests/requirements.txt" "$VENV/.installed-requirements" 2>/dev/null; then
  log "pip install -r tests/requirements.txt"
  "$VENV/bin/pip" install -q -r "$ROOT/tests/requirements.txt"
  cp "$ROOT/tests/requirements.txt" "$VENV/.installed-requirements"
fi

# --- npm packages for schema checks and the browser test ------------------------------------
for dir in tests/node tests/ui; do
  if [ -f "$dir/package-lock.json" ] && { [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; }; then
    log "npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done

# --- ONNX Runtime library (from the PyPI wheel, checksum pinned) -----------------------------
if [ -x scripts/setup-onnxruntime.sh ]; then
  scripts/setup-onnxruntime.sh
fi

# --- The UI bundle the runtime embeds -------------------------------------------------------
if [ -f ui/package-lock.json ]; then
  scripts/build-ui.sh
fi
log "done"

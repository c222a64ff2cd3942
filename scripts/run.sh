#!/usr/bin/env bash
# Set up and run the FaceKey runtime on this machine with its embedded defaults: fetch the ONNX
# Runtime library (PyPI wheel, checksum pinned), build the UI, build the runtime in release and
# serve on 0.0.0.0:8080 (override with --listen or FACEKEY_LISTEN). Extra arguments go to the
# runtime, e.g. `scripts/run.sh --listen 127.0.0.1:9000`. FACEKEY_RUN_PROFILE picks the cargo
# profile (default release; the test suite uses dev to reuse its build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# What the build needs, checked up front with the fix for each (README, "Quick start").
missing=()
version_at_least() { # have want: whether dotted version $1 >= $2
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
  missing+=("Rust 1.94 or newer (https://rustup.rs, or your distribution's rustup package)")
else
  rust="$(rustc --version | awk '{print $2}')"
  version_at_least "$rust" 1.94 || missing+=("Rust 1.94 or newer (found $rust: rustup update)")
fi
command -v cc >/dev/null || missing+=("a C compiler (Debian/Ubuntu: apt install build-essential)")
if [ -f ui/package-lock.json ]; then
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    missing+=("Node.js 20.19 or newer with npm (e.g. the NodeSource or nvm packages)")
  else
    node_version="$(node --version | tr -d v)"
    version_at_least "$node_version" 20.19 \
      || missing+=("Node.js 20.19 or newer (found $node_version)")
  fi
fi
if ! compgen -G "${FACEKEY_ORT_DIR:-.tools/onnxruntime}/libonnxruntime.so*" >/dev/null \
  && ! "${PYTHON:-python3}" -m pip --version >/dev/null 2>&1; then
  missing+=("python3 with pip, to fetch the ONNX Runtime wheel from PyPI (Debian/Ubuntu: apt install python3-pip)")
fi
[ "$(uname -m)" = x86_64 ] || missing+=("an x86_64 machine (the pinned ONNX Runtime wheel is x86_64 only; found $(uname -m))")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "scripts/run.sh: missing prerequisites:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
if [ -x scripts/setup-onnxruntime.sh ]; then scripts/setup-onnxruntime.sh; fi
# The runtime looks in .tools/onnxruntime by itself; a library put elsewhere is named to it.
if [ -n "${FACEKEY_ORT_DIR:-}" ] && [ -z "${FACEKEY_ORT_LIBRARY:-}" ]; then
  export FACEKEY_ORT_LIBRARY="$FACEKEY_ORT_DIR/libonnxruntime.so"
fi
if [ -f ui/package-lock.json ]; then scripts/build-ui.sh; fi
exec cargo run --profile "${FACEKEY_RUN_PROFILE:-release}" --locked -p facekey-runtime \
  --bin facekey-runtime -- "$@"

#!/usr/bin/env bash
# Set up and run the FaceKey runtime on this machine with its embedded defaults: fetch the ONNX
# Runtime library (PyPI wheel, checksum pinned), build the UI, build the runtime in release and
# serve on 0.0.0.0:8080 (override with --listen or FACEKEY_LISTEN). Extra arguments go to the
# runtime, e.g. `scripts/run.sh --listen 127.0.0.1:9000`. FACEKEY_RUN_PROFILE picks the cargo
# profile (default release; the test suite uses dev to reuse its build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -x scripts/setup-onnxruntime.sh ]; then scripts/setup-onnxruntime.sh; fi
if [ -f ui/package-lock.json ]; then scripts/build-ui.sh; fi
exec cargo run --profile "${FACEKEY_RUN_PROFILE:-release}" --locked -p facekey-runtime \
  --bin facekey-runtime -- "$@"

#!/usr/bin/env bash
# Run a command against a freshly started runtime on loopback: the command gets FACEKEY_URL,
# the runtime is stopped afterwards. Extra runtime flags go in FACEKEY_RUNTIME_ARGS.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck disable=SC2086
start_runtime ${FACEKEY_RUNTIME_ARGS:-}
export FACEKEY_URL="$RUNTIME_URL"
status=0
"$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- runtime log ($RUNTIME_LOG)" >&2
  tail -n 50 "$RUNTIME_LOG" >&2 || true
fi
exit "$status"

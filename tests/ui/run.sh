#!/usr/bin/env bash
# Browser end-to-end test of the UI against a running facekey-runtime at $FACEKEY_URL.
# Builds nothing: the runtime (with the UI embedded) must already serve $FACEKEY_URL.
# Installs what it needs when missing: Debian's chromium and ffmpeg (as root) and the
# pinned playwright-core (npm ci). Prepares the fake camera video and runs e2e.mjs.
set -euo pipefail

: "${FACEKEY_URL:?set FACEKEY_URL to the base URL of a running facekey-runtime}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

need_apt=()
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "run.sh: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]})" >&2
    exit 2
  fi
  echo "run.sh: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -d "$here/node_modules/playwright-core" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

face="${FACEKEY_FACE_IMAGE:-}"
if [ -z "$face" ]; then
  for candidate in \
    "$repo/runtime/testdata/faces/astronaut.png" \
    "$repo/../shared/data/faces/astronaut.png" \
    /work/shared/data/faces/astronaut.png; do
    if [ -f "$candidate" ]; then face="$candidate"; break; fi
  done
fi
[ -n "$face" ] && [ -f "$face" ] || { echo "run.sh: no astronaut.png face image found" >&2; exit 2; }
face="$(cd "$(dirname "$face")" && pwd)/$(basename "$face")"

work="$(mktemp -d "${TMPDIR:-/tmp}/facekey-e2e.XXXXXX")"
trap 'rm -rf "$work"' EXIT
ffmpeg -loglevel error -y -i "$face" -frames:v 1 -pix_fmt yuv420p "$work/face.y4m"

echo "run.sh: testing $FACEKEY_URL with face $face"
FACEKEY_FAKE_CAMERA="$work/face.y4m" FACEKEY_FACE_IMAGE="$face" node "$here/e2e.mjs"

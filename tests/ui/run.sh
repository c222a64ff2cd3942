#!/usr/bin/env bash
# Browser end-to-end test of the UI against a running facekey-runtime at $FACEKEY_URL.
# Builds at most the evaluation lab (see below): the runtime (with the UI embedded) must already serve $FACEKEY_URL.
# Installs what it needs when missing: Debian's chromium and ffmpeg (as root) and the
# pinned playwright-core (npm ci). Prepares the fake camera videos and runs e2e.mjs: the enrolled
# face for the single-image steps and, for the liveness challenge, a synthetic person performing
# the challenge actions from the evaluation lab (`facekey-eval sequences --y4m`, built when cargo
# is here and the lab can write one). Without it the challenge runs on Chromium's built-in fake
# camera pattern, which has no face, and must end failed or expired with reasons.
# With the lab's clip the challenge must pass, within 3 runs, each one before the last ending only
# unfinished, and the verification with the passed session must accept the enrolled subject
# (FACEKEY_CHALLENGE_EXPECT=passed, see below). That needs a runtime whose sessions suit the
# looping clip: `--session-ttl-secs 22 --session-max-frames 240` (tests/run.sh starts it so, with
# `--session-replay-window-secs 0`: the identify step's session repeats the looping clip's frames
# that the verified session sent, a replay the runtime would otherwise refuse);
# e2e.mjs checks the session it gets and says so otherwise.
# FACEKEY_CHALLENGE_CAMERA (a y4m; with FACEKEY_CHALLENGE_ACTIONS, the challenge it performs),
# FACEKEY_CHALLENGE_EXPECT (passed | progress | verdict),
# FACEKEY_CHALLENGE_ATTEMPTS (3) and FACEKEY_EVAL_BIN (the lab binary; set, it is never built)
# override.
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

challenge="${FACEKEY_CHALLENGE_CAMERA:-}"
if [ -z "$challenge" ]; then
  eval_bin="${FACEKEY_EVAL_BIN:-$repo/target/debug/facekey-eval}"
  if [ -z "${FACEKEY_EVAL_BIN:-}" ] && [ ! -x "$eval_bin" ] && command -v cargo >/dev/null && [ -f "$repo/runtime/eval/Cargo.toml" ]; then
    (cd "$repo" && cargo build -q --locked -p facekey-eval) || echo "run.sh: cannot build facekey-eval" >&2
  fi
  lab_help="$("$eval_bin" sequences --help 2>/dev/null || true)"
  if [ -x "$eval_bin" ] && grep -q -- '--y4m-copies' <<<"$lab_help"; then
    # The lab's clip: the astronaut (the enrolled photo) performing one challenge, open mouth
    # then blink, COPIES times over, about 0.9 s per action, each copy with its own randomness,
    # so no two frames are alike. The runtime fails a session in which an action the challenge
    # leaves out is done, so no clip passes every challenge: e2e.mjs redraws each session the
    # page opens until the runtime asks for this one (FACEKEY_CHALLENGE_ACTIONS). The clip holds
    # only its challenge's actions, so it passes from wherever it is when the session opens.
    # Chromium loops the file, and a later loop's frames are exact repeats the runtime rightly
    # fails (duplicate_frames):
    # the clip must outlast a session (22 s, see above). 480x360: the debug runtime checks
    # about 4 frames/s of it (3 at 640x480).
    actions="open_mouth,blink"
    if (cd "$repo" && "$eval_bin" sequences --photos astronaut.png --frame 480x360 --actions "$actions" \
      --y4m-copies "${FACEKEY_CHALLENGE_COPIES:-14}" --y4m "$work/challenge.y4m") >"$work/sequences.log" 2>&1 \
      && [ -s "$work/challenge.y4m" ]; then
      challenge="$work/challenge.y4m"
      tail -n 1 "$work/sequences.log"
      export FACEKEY_CHALLENGE_EXPECT="${FACEKEY_CHALLENGE_EXPECT:-passed}"
      export FACEKEY_CHALLENGE_ACTIONS="$actions"
    else
      echo "run.sh: facekey-eval sequences --y4m failed:" >&2
      tail -n 20 "$work/sequences.log" >&2
      exit 1
    fi
  fi
fi
if [ -n "$challenge" ]; then
  echo "run.sh: the liveness challenge's camera plays $challenge"
  export FACEKEY_CHALLENGE_CAMERA="$challenge"
else
  echo "run.sh: no challenge video (facekey-eval cannot write one): the challenge runs on Chromium's pattern, without a face"
  unset FACEKEY_CHALLENGE_CAMERA
fi

echo "run.sh: testing $FACEKEY_URL with face $face"
FACEKEY_FAKE_CAMERA="$work/face.y4m" FACEKEY_FACE_IMAGE="$face" node "$here/e2e.mjs"

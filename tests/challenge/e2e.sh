#!/usr/bin/env bash
# End to end: the real runtime's challenge-session API driven with synthetic clips from
# `facekey-eval sequences` (issue 13 item 6). One subject (astronaut.png) is enrolled; then, per
# case, a session is opened, a clip is rendered for the session's own random challenge and sent in
# real time (tests/challenge/drive.py):
#   genuine       the face turns / looks up / blinks / opens the mouth as asked: the session
#                 passes (within 3 sessions, as a person who is not seen tries again: about 1
#                 synthetic clip in 25 has a painted blink fr_eye does not read closed; a try may
#                 only end unfinished), verifies the subject once, a second use is 409 session_used;
#   static_photo  the same photo hand-held (shift, roll, zoom, JPEG noise): never passes;
#   flat_print    the photo as a flat print tilted and turned in 3-D: never passes;
#   replay        the verified genuine clip, recorded: sessions are opened and closed until one
#                 draws its challenge again, the clip is sent into it (fresh timestamps), the
#                 session passes, and verify refuses it as replayed_session (the frames repeat a
#                 session accepted for the subject).
#   every_action  the face doing every action in an order that holds every challenge, sent into
#                 a session whose challenge it does not start with: fails unrequested_action.
# Test-only change: --session-ttl-secs 300, because the debug build of facekey-eval renders a clip
# in tens of seconds after the session opened (the default TTL is 60 s).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
EVAL="${FACEKEY_EVAL_BIN:-$ROOT/target/debug/facekey-eval}"
started=$(date +%s)
[ -x "$FACEKEY_RUNTIME_BIN" ] || fail "runtime binary $FACEKEY_RUNTIME_BIN missing"
[ -x "$EVAL" ] || fail "facekey-eval binary $EVAL missing (cargo build -p facekey-eval)"
WORK=$(mktemp -d); CLEANUP_DIRS+=("$WORK")

start_runtime --session-ttl-secs 300
subject=$(curl -fsS -H "$AUTH" "$RUNTIME_URL/v1/subjects" -H 'content-type: application/json' \
  -d '{"name":"Challenge E2E"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -fsS -H "$AUTH" "$RUNTIME_URL/v1/subjects/$subject/faces" \
  -F "image=@$ROOT/runtime/testdata/faces/astronaut.png" >/dev/null || fail "enrolment"

CHALLENGE_FRAME="${CHALLENGE_FRAME:-480x360}" CHALLENGE_FPS="${CHALLENGE_FPS:-8}" \
  python3 "$ROOT/tests/challenge/drive.py" "$RUNTIME_URL" "$subject" "$EVAL" "$WORK" \
  genuine replay every_action static_photo flat_print || fail "challenge sessions"
printf 'ok: challenge sessions end to end (%ss)\n' "$(( $(date +%s) - started ))"

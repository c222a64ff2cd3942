#!/usr/bin/env bash
# scripts/delete-key-data.sh, the runbooks' clean-up after a leaked key, against the real runtime:
# an application key creates two subjects (one with a face) and enrols a face into a subject the
# admin key created beside the admin's own face; the dry run lists exactly those and deletes
# nothing; a failed listing stops it before any deletion; --yes deletes the key's subjects and its
# face, and leaves the admin's subject and face.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
started=$(date +%s)
ok() { printf 'ok: %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }
RUNTIME_EXTRA_SCOPES=enrol start_runtime
ADMIN="authorization: Bearer $FACEKEY_API_KEY"
APP="authorization: Bearer $FACEKEY_KEY_ENROL"
FACE="$ROOT/runtime/testdata/faces/astronaut.png"
SAME="$ROOT/runtime/testdata/faces/astronaut_640x480.jpg"  # the same person, another copy

subject() { # KEY_HEADER NAME -> id
  curl -fsS -H "$1" "$RUNTIME_URL/v1/subjects" -H 'content-type: application/json' \
    -d "{\"name\":\"$2\"}" | jq -r .id
}
enrol() { # KEY_HEADER SUBJECT IMAGE -> face id
  curl -fsS -H "$1" "$RUNTIME_URL/v1/subjects/$2/faces" -F "image=@$3" | jq -r .face_id
}
faces_of() { curl -fsS -H "$ADMIN" "$RUNTIME_URL/v1/subjects/$1" | jq -r '.templates[].id' | sort; }
exists() { [ "$(curl -sS -o /dev/null -w '%{http_code}' -H "$ADMIN" "$RUNTIME_URL/v1/subjects/$1")" = 200 ]; }

shared=$(subject "$ADMIN" "Shared")
admin_face=$(enrol "$ADMIN" "$shared" "$SAME")
app1=$(subject "$APP" "App one")
app2=$(subject "$APP" "App two")
enrol "$APP" "$app1" "$FACE" >/dev/null
# Into the admin's subject the enrol key must pass the match gate: the same person.
app_face=$(enrol "$APP" "$shared" "$FACE")
[ -n "$admin_face" ] && [ -n "$app_face" ] || fail "enrolments did not answer face ids"
ok "the app key created 2 subjects and enrolled a face into the admin's subject"

export FACEKEY_URL="$RUNTIME_URL"
dry=$("$ROOT/scripts/delete-key-data.sh" tests-enrol)
echo "$dry" | sed 's/^/  /'
grep -q "2 subject(s) it created, 1 face(s) it enrolled into other subjects" <<<"$dry" \
  || fail "the dry run counted otherwise"
grep -qx "  face $shared/$app_face" <<<"$dry" || fail "the dry run does not list the app's face"
exists "$app1" && exists "$app2" || fail "the dry run deleted a subject"
[ "$(faces_of "$shared" | wc -l)" = 2 ] || fail "the dry run deleted a face"
ok "dry run: lists the 2 subjects and the face, deletes nothing"

# A listing that fails (here a key the runtime refuses) stops the script before any deletion,
# with an error, instead of finding nothing and reporting success.
if refused=$(FACEKEY_API_KEY=not-a-key "$ROOT/scripts/delete-key-data.sh" tests-enrol --yes 2>&1); then
  fail "a refused listing exited 0: $refused"
fi
grep -q "nothing deleted" <<<"$refused" || fail "a refused listing did not say so: $refused"
exists "$app1" && exists "$app2" || fail "a refused listing deleted a subject"
ok "a refused listing fails loudly and deletes nothing"

"$ROOT/scripts/delete-key-data.sh" tests-enrol --yes | sed 's/^/  /'
exists "$app1" && fail "subject $app1 of the app key survived"
exists "$app2" && fail "subject $app2 of the app key survived"
[ "$(faces_of "$shared")" = "$admin_face" ] || fail "the shared subject should keep the admin's face only"
again=$("$ROOT/scripts/delete-key-data.sh" tests-enrol --yes)
grep -q "0 subject(s) it created, 0 face(s)" <<<"$again" || fail "a second run found more: $again"
ok "--yes: the app key's subjects and face are gone, the admin's subject and face stay; a second run finds nothing"

printf 'delete-key-data: passed in %ss\n' "$(( $(date +%s) - started ))"

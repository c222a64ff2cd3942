#!/usr/bin/env bash
# Delete what one API key wrote: every subject it created (`created_by`) and every face it
# enrolled into other subjects (`enrolled_by`) — the clean-up after a leaked or runaway key
# (docs/operator.md, FaceKeySubjectsRefused / FaceKeyTemplatesRefused). Revoke the key first
# (remove its line from the keys file or Secret), or it keeps writing.
#
#   scripts/delete-key-data.sh KEY_ID           # dry run: lists what would be deleted
#   scripts/delete-key-data.sh KEY_ID --yes     # deletes it
#
# Env: FACEKEY_URL (default http://127.0.0.1:8080) and FACEKEY_API_KEY, a key with the `admin`
# scope (listing and deleting need it). Needs curl and jq. Subjects and faces written before
# the runtime recorded writers name no key and are never touched. Every deletion is in the
# runtime's audit trail under the admin key. Needs bash 4 or later; the admin key goes to curl
# on its standard input, never on a command line (where `ps` would show it).
set -euo pipefail
if [ "${BASH_VERSINFO[0]}" -lt 4 ]; then
  echo "$0: needs bash 4 or later (this is $BASH_VERSION)" >&2
  exit 1
fi

usage() { echo "usage: $0 KEY_ID [--yes]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
key_id=$1
apply=false
if [ $# -eq 2 ]; then
  [ "$2" = --yes ] || usage
  apply=true
fi
[ -n "$key_id" ] || usage
: "${FACEKEY_API_KEY:?set FACEKEY_API_KEY to a key with the admin scope}"
url=${FACEKEY_URL:-http://127.0.0.1:8080}
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is required" >&2; exit 1; }
done

# curl with the admin key's header read from its standard input (curl's config syntax).
as_admin() { curl -sS -K - "$@" <<<"header = \"authorization: Bearer $FACEKEY_API_KEY\""; }
api() { as_admin -f "$@"; }
die() { echo "$0: $*; nothing deleted" >&2; exit 1; }
# Every subject id of `GET /v1/subjects?<filter>=<key id>`, following the `next` cursors. Any
# failed or unexpected answer fails the whole listing (`set -e` does not reach into command
# substitutions, hence the explicit checks).
subject_ids() {
  local filter=$1 after="" page
  while :; do
    page=$(api --get "$url/v1/subjects" --data-urlencode "$filter=$key_id" \
      --data-urlencode limit=1000 ${after:+--data-urlencode "after=$after"}) || return 1
    jq -e '.subjects | type == "array"' <<<"$page" >/dev/null || return 1
    jq -r '.subjects[].id' <<<"$page" || return 1
    after=$(jq -r '.next // empty' <<<"$page") || return 1
    [ -n "$after" ] || break
  done
}

# Everything is listed before anything is deleted; a failed listing stops here.
listed=$(subject_ids created_by) || die "listing the subjects $key_id created failed"
created=()
declare -A own=()
for subject in $listed; do
  created+=("$subject")
  own[$subject]=1
done
# Faces the key enrolled into subjects it did not create (its own subjects go whole).
listed=$(subject_ids enrolled_by) || die "listing the subjects $key_id enrolled faces into failed"
faces=()
for subject in $listed; do
  [ -z "${own[$subject]+x}" ] || continue
  detail=$(api "$url/v1/subjects/$subject") || die "reading subject $subject failed"
  ids=$(jq -r --arg key "$key_id" '.templates[] | select(.enrolled_by == $key) | .id' \
    <<<"$detail") || die "subject $subject answered no face list"
  for face in $ids; do
    faces+=("$subject/$face")
  done
done

echo "API key $key_id: ${#created[@]} subject(s) it created, ${#faces[@]} face(s) it enrolled into other subjects"
if ! $apply; then
  for subject in "${created[@]}"; do echo "  subject $subject"; done
  for face in "${faces[@]}"; do echo "  face $face"; done
  echo "dry run: nothing deleted; run again with --yes to delete them"
  exit 0
fi
# 204 deleted; 404 already gone (deleted meanwhile, or the subject with it): both fine.
delete() {
  local status
  status=$(as_admin -o /dev/null -w '%{http_code}' -X DELETE "$url$1") || status=000
  case $status in
    204 | 404) ;;
    *) echo "$0: DELETE $1 answered $status; stopping" >&2; exit 1 ;;
  esac
}
for subject in "${created[@]}"; do delete "/v1/subjects/$subject"; done
for face in "${faces[@]}"; do delete "/v1/subjects/${face%%/*}/faces/${face#*/}"; done
echo "deleted ${#created[@]} subject(s) and ${#faces[@]} face(s)"

#!/usr/bin/env bash
# The runtime's OpenAPI document is the contract application teams generate clients from; this
# checks it against the real server (debug build, bundled models) with real tools:
#   1. openapi-spec-validator: the document is valid OpenAPI 3.1;
#   2. tests/api/real_cases.py: real requests with the sample photos through every operation (the
#      success answers generated data cannot reach), with admin, verify and enrol keys, each answer
#      checked by schemathesis's checks;
#   3. schemathesis (tests/api/schemathesis.toml): generated requests for every operation, with
#      every check (documented status codes, content types, response schemas and headers, schema-
#      valid requests accepted and schema-violating ones refused, refused without a key, no 5xx),
#      in all phases (examples, coverage, fuzzing, stateful), with a fixed seed.
# Env: CONTRACT_EXAMPLES (25 per operation and phase), CONTRACT_SEED (20261204).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
VENV="${VENV:-$ROOT/.venv-tests}"
started=$(date +%s)
[ -x "$VENV/bin/schemathesis" ] || fail "schemathesis missing from $VENV (bash tests/setup.sh)"
WORK=$(mktemp -d); CLEANUP_DIRS+=("$WORK")

RUNTIME_EXTRA_SCOPES="verify enrol" start_runtime
curl -fsS "$RUNTIME_URL/openapi.json" >"$WORK/openapi.json" || fail "GET /openapi.json"
"$VENV/bin/openapi-spec-validator" "$WORK/openapi.json" >"$WORK/validator.log" 2>&1 \
  || { cat "$WORK/validator.log" >&2; fail "the OpenAPI document is not valid OpenAPI"; }
printf 'ok: /openapi.json is valid OpenAPI %s (%s operations)\n' \
  "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["openapi"])' "$WORK/openapi.json")" \
  "$(python3 -c 'import json,sys; print(sum(len(v) for v in json.load(open(sys.argv[1]))["paths"].values()))' "$WORK/openapi.json")"

# Every reason a challenge session can fail with has words in the UI (not the code with spaces).
python3 - "$WORK/openapi.json" "$ROOT/ui/src/lib/challenge.ts" <<'PYEOF' || fail "the UI lacks words for a session failure reason"
import json, re, sys
reasons = json.load(open(sys.argv[1]))["components"]["schemas"]["FailReason"]["enum"]
ui = open(sys.argv[2]).read()
missing = [r for r in reasons if not re.search(r"^\s+%s:" % re.escape(r), ui, re.M)]
assert not missing, f"no words in ui/src/lib/challenge.ts for {missing}"
print(f"ok: the UI words every session failure reason ({len(reasons)})")
PYEOF
# Real requests first: generated ones may use up the admin key's session budget (64 open).
"$VENV/bin/python" "$ROOT/tests/api/real_cases.py" "$RUNTIME_URL" "$ROOT/runtime/testdata/faces" || fail "real requests"

# schemathesis writes its cache (.hypothesis) to the working directory: keep it out of the tree.
(cd "$WORK" && "$VENV/bin/schemathesis" --config-file "$ROOT/tests/api/schemathesis.toml" run \
  "$RUNTIME_URL/openapi.json" --header "Authorization: Bearer $FACEKEY_API_KEY" \
  --max-examples "${CONTRACT_EXAMPLES:-25}" --seed "${CONTRACT_SEED:-20261204}" --workers 1 --no-color) \
  >"$WORK/schemathesis.log" 2>&1 || { tail -n 120 "$WORK/schemathesis.log" >&2; fail "schemathesis found answers that break the document"; }
grep -E '^ +[0-9]+ generated' "$WORK/schemathesis.log" | sed 's/^ */ok: schemathesis: /'

printf 'api contract: passed in %ss\n' "$(( $(date +%s) - started ))"

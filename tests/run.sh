#!/usr/bin/env bash
# The whole test suite: installs what it needs (tests/setup.sh), then formatting, clippy, every
# Rust test, the UI's unit tests, and the tests that run real outside programs (Prometheus,
# schema validators, Chromium). Exits non-zero on the first failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
started=$(date +%s)
last_stage=""
last_start=$started
# Each stage's heading, after the time the previous one took (CI's budget is read from these).
stage() {
  local now
  now=$(date +%s)
  [ -n "$last_stage" ] && printf '==== (%ss: %s)\n' "$((now - last_start))" "$last_stage"
  last_stage="$1"
  last_start=$now
  printf '\n==== %s (%s free on disk)\n' "$*" "$(df -h --output=avail . | tail -1 | tr -d ' ')"
}

stage "setup"
tests/setup.sh

stage "rustfmt"
cargo fmt --all -- --check

stage "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

stage "cargo test (all crates)"
cargo test --workspace --locked

if [ -f ui/package.json ]; then
  stage "ui: typecheck, lint and unit tests"
  (cd ui && npm run --silent typecheck && npm run --silent lint && npm test --silent)
fi

export FACEKEY_RUNTIME_BIN="$ROOT/target/debug/facekey-runtime"
export FACEKEY_OPERATOR_BIN="$ROOT/target/debug/facekey-operator"

stage "quickstart: the README's run command (scripts/run.sh) serves UI, models and API"
tests/quickstart/run-command.sh

stage "api: the OpenAPI document against the real runtime (openapi-spec-validator, schemathesis, real requests)"
tests/api/contract.sh
tests/api/delete_key_data.sh

stage "prometheus: real scrape of the runtime, promtool metric lint"
tests/prometheus/scrape.sh

stage "alerts: runtime -> Prometheus -> Alertmanager -> SMTP, from the operator's rendered objects"
tests/alerts/e2e.sh

stage "challenge: synthetic clips through the real session API (genuine passes and verifies once; photo and print fail)"
FACEKEY_EVAL_BIN="$ROOT/target/debug/facekey-eval" tests/challenge/e2e.sh

stage "container: hadolint and trivy config on the Dockerfile"
tests/container/check.sh

if [ -x tests/operator/check.sh ]; then
  stage "operator: rendered objects against Kubernetes and prometheus-operator schemas"
  tests/operator/check.sh
fi

if [ -x tests/ui/run.sh ]; then
  stage "ui: end-to-end in headless Chromium against the runtime"
  # Strict: a step whose API is missing fails instead of being skipped. The liveness challenge
  # must pass on the lab's 28 s looping clip of one challenge (tests/ui/run.sh; the test redraws
  # the session until the runtime asks for it): sessions end within 22 s, before the clip comes
  # round again with frames the runtime rightly fails as repeats, and their frame budget lasts
  # that long at the UI's top capture rate of 10 frames/s (defaults: 60 s, 160 frames). The identify view's
  # challenge runs after the verified one on the same looping clip, so its frames repeat frames
  # of a session accepted for the subject, which the replay record refuses as a replayed
  # recording (`replayed_session`, what it is for: the runtime tests and tests/challenge cover
  # it): here the record is off.
  FACEKEY_E2E_STRICT=1 FACEKEY_RUNTIME_ARGS="--session-ttl-secs 22 --session-max-frames 240 --session-replay-window-secs 0" \
    tests/with-runtime.sh tests/ui/run.sh
fi

stage "fuzz: every cargo-fuzz target for a bounded time (FUZZ_SECONDS, default 20 s each)"
# The fuzz build is a second build of the runtime (about 3 GB) with its own flags. On CI nothing
# after this stage needs the debug build (about 5 GB), so it makes room first: a CI machine ran
# out of disk here with both on it.
if [ "${CI:-}" = true ]; then
  cargo clean --profile dev
  printf '(%s free on disk after removing the debug build)\n' "$(df -h --output=avail . | tail -1 | tr -d ' ')"
fi
tests/fuzz.sh

stage "done"
printf '\n==== all tests passed in %ss\n' "$(( $(date +%s) - started ))"

#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of every target in fuzz/ (cargo-fuzz + libFuzzer on the stable
# toolchain: `-s none` builds without a sanitizer, RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z
# flags). Each target runs FUZZ_SECONDS (default 20) from its committed seeds (fuzz/seeds/<target>)
# plus a working corpus (fuzz/corpus/<target>, git-ignored). A crash, a panic, an input slower
# than 10 s or more than 2 GB of memory fails the stage; libFuzzer saves the input under
# fuzz/artifacts/<target>/, and it then becomes a regression test in runtime/tests/fuzz_regressions.rs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
CARGO_FUZZ_VERSION=0.13.1
if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
cd "$ROOT/fuzz"
export RUSTC_BOOTSTRAP=1
# Optimised (-O), as every run below: the same flags, so the runs reuse this build.
cargo fuzz build -s none -O
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "== fuzz $target for ${FUZZ_SECONDS}s"
  log="$(mktemp)"
  if ! cargo fuzz run -s none -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/"
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$log" | tr '\n' ' '
  echo
  rm -f "$log"
done

#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 600), one after another, then prints
# a table: target, executions, crashes, corpus size. Exits non-zero if any target crashed.
#   bash scripts/fuzz.sh          # the README's figures (an hour of one core)
#   bash scripts/fuzz.sh 15       # the CI smoke run
# Crash inputs land in fuzz/artifacts/TARGET/ (gitignored); new corpus entries in
# fuzz/corpus/TARGET/ (only the committed seed-* files are tracked). Reproduce a crash with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-… (from the repo root).
# The fuzz crate needs nightly features (sanitizers); RUSTC_BOOTSTRAP=1 unlocks them on the
# stable toolchain, so no second toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${1:-600}"
case "$SECS" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== cargo install cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

TARGETS=(protocol_request credential dotenv_roundtrip config snapshot launch_argv)
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$TARGET_DIR/$HOST/release"
LOGS="$TARGET_DIR/fuzz-logs"
mkdir -p "$LOGS"

echo "== cargo fuzz build (all targets)"
(cd fuzz && cargo fuzz build --target-dir "$TARGET_DIR")

rows=()
failed=0
for t in "${TARGETS[@]}"; do
  echo "== $t: ${SECS} s"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="$LOGS/$t.log"
  dict=()
  if [ -f "fuzz/dicts/$t.dict" ]; then dict=(-dict="fuzz/dicts/$t.dict"); fi
  status=0
  "$BIN_DIR/$t" "fuzz/corpus/$t" "${dict[@]}" \
    -max_total_time="$SECS" -print_final_stats=1 -timeout=25 -rss_limit_mb=2048 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || status=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  crashes="$(grep -c 'Test unit written to' "$log" || true)"
  if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes=1 # died without writing an input (e.g. failed to start): still a failure
  fi
  corpus="$(find "fuzz/corpus/$t" -type f | wc -l)"
  rows+=("$t|${execs:-?}|$crashes|$corpus")
  if [ "$crashes" -ne 0 ]; then
    failed=1
    echo "!! $t crashed (exit $status); log: $log" >&2
    grep -E 'panicked at|ERROR: |SUMMARY|Test unit written to' "$log" | head -n 20 >&2 || true
  fi
done

echo
echo "Fuzzing, ${SECS} s per target (bash scripts/fuzz.sh ${SECS}):"
echo
printf '| %-16s | %12s | %7s | %11s |\n' target executions crashes "corpus size"
printf '|%s|%s|%s|%s|\n' "------------------" "-------------:" "--------:" "------------:"
for row in "${rows[@]}"; do
  IFS='|' read -r t e c n <<<"$row"
  printf '| %-16s | %12s | %7s | %11s |\n' "$t" "$e" "$c" "$n"
done
exit "$failed"

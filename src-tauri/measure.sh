#!/usr/bin/env bash
# Measures the menu-bar app for the README (issue 5):
#   - the release binary's size (`cargo build --release -p keyferry-tray`; strip is on in the
#     profile);
#   - start → tray ready: exec to the StatusNotifierItem registering with a watcher, and to
#     the agent socket answering (median of KF_MEASURE_RUNS, default 5);
#   - idle RSS, PSS and CPU over KF_MEASURE_SECS (default 60) seconds, of the app process and
#     of its WebKit helpers separately, with the window hidden (as at login) and open.
#
#   CARGO_TARGET_DIR=/work/target-tauri src-tauri/measure.sh
#
# The timings run src-tauri/tests/measure.rs (an ignored test, same harness as the
# end-to-end tests: Xvfb, a private session bus, gnome-keyring, a throwaway HOME) against the
# release binary. Output: stdout and test-output/tray-measure.md.
# Needs what the end-to-end tests need (src-tauri/DEPS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac

cargo build --release -p keyferry-tray
bin=$target/release/keyferry-tray
bytes=$(stat -c %s "$bin")
echo "== release binary: $bin"
echo "   $bytes bytes ($(awk -v b="$bytes" 'BEGIN { printf "%.1f MiB", b / 1048576 }')); $(file -b "$bin" | grep -oE 'not stripped|stripped')"

echo "== start-up and idle (release binary, under Xvfb)"
KF_E2E_TRAY=$bin cargo test -p keyferry-tray --test measure -- --ignored --nocapture

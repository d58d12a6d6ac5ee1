#!/usr/bin/env bash
# Measures the menu-bar app for the README (issues 5 and 12):
#   - the release binary's size (built as it ships: `tauri build --no-bundle`);
#   - memory, the whole process tree (app + WebKit helpers), PSS from smaps_rollup sampled
#     once a second (issue 12): idle for KF_MEASURE_SECS (60) s with the window never opened;
#     then the window opened (a second launch, as from the launcher) for 10 s; then closed (a
#     WM_DELETE_WINDOW, as the title bar's close button sends) and sampled 30–40 s after;
#   - unless --memory-only: start → tray ready and idle RSS/PSS/CPU per process
#     (src-tauri/tests/measure.rs, an ignored test on the end-to-end harness; issue 5).
#
#   CARGO_TARGET_DIR=/work/target-tauri src-tauri/measure.sh [--memory-only]
#   KF_MEASURE_BIN=path/to/keyferry-tray src-tauri/measure.sh --memory-only   # no build
#   KF_MEASURE_APP_ENV="VAR=value …" adds variables to the app's environment (experiments)
#
# World: Xvfb, a private session bus with an unlocked gnome-keyring, a throwaway HOME holding
# one setup-token, a StatusNotifierWatcher (scripts/xsession.sh, scripts/sni-watcher.py).
# Output: stdout and test-output/tray-memory.md. Needs what the end-to-end tests need
# (src-tauri/DEPS.md) plus python3-gi and python3-xlib (src-tauri/close-window.py).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
memory_only=0
[ "${1:-}" = --memory-only ] && memory_only=1
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
export CARGO_TARGET_DIR=$target
SECS=${KF_MEASURE_SECS:-60}
TOKEN=sk-ant-oat01-MEASUREmeasureMEASUREmeasure-0042

[ -n "${KF_MEASURE_CLI:-}" ] || cargo build --release --locked --bin keyferry
cli=${KF_MEASURE_CLI:-$target/release/keyferry}
bin=${KF_MEASURE_BIN:-}
if [ -z "$bin" ]; then
  tauri=$root/target/npm/node_modules/.bin/tauri
  [ -x "$tauri" ] || npm install --silent --no-audit --no-fund --prefix target/npm @tauri-apps/cli@2
  (cd src-tauri && "$tauri" build --no-bundle -- --locked)
  bin=$target/release/keyferry-tray
fi
bytes=$(stat -c %s "$bin")
echo "== release binary: $bin"
echo "   $bytes bytes ($(awk -v b="$bytes" 'BEGIN { printf "%.1f MiB", b / 1048576 }')); $(file -b "$bin" | grep -oE 'not stripped|stripped')"

# ---- memory: never opened → opened → closed ------------------------------------------------
# shellcheck source=scripts/xsession.sh
. scripts/xsession.sh
work=$(mktemp -d /tmp/kf-measure.XXXXXX)
trap 'xs_stop; rm -rf "$work"' EXIT
xs_start "$work" keyring

tree_pids() { # $1: root pid → it and every descendant
  ps -e -o pid=,ppid= | awk -v r="$1" '{ parent[$1] = $2 } END {
    keep[r] = 1; grew = 1
    while (grew) { grew = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 } }
    for (p in keep) print p }'
}
# One sample: "total_kib comm=kib comm=kib…" (same-named processes summed).
sample() {
  local p kb comm
  declare -A by=()
  local total=0
  for p in $(tree_pids "$1"); do
    kb=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null) || continue
    [ -n "$kb" ] || continue
    comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
    by[$comm]=$(( ${by[$comm]:-0} + kb ))
    total=$((total + kb))
  done
  local line=$total
  for comm in "${!by[@]}"; do line+=" $comm=${by[$comm]}"; done
  echo "$line"
}
# measure LABEL SECONDS: mean total PSS over SECONDS one-second samples, and the processes.
results=()
measure() {
  local label=$1 n=$2 sum=0 last
  for _ in $(seq "$n"); do
    last=$(sample "$app")
    sum=$((sum + ${last%% *}))
    sleep 1
  done
  local mean_mib procs
  mean_mib=$(awk -v s="$sum" -v n="$n" 'BEGIN { printf "%.1f", s / n / 1024 }')
  procs=$(tr ' ' '\n' <<<"${last#* }" | awk -F= 'NF == 2 { printf "%s%s %.1f", sep, $1, $2 / 1024; sep = ", " }')
  echo "   $label: $mean_mib MiB PSS (mean of $n s); last sample by process (MiB): $procs"
  results+=("| $label | $mean_mib MiB | $procs |")
}
webkit_count() { tree_pids "$app" | while read -r p; do cat "/proc/$p/comm" 2>/dev/null; done | grep -c '^WebKit' || true; }
webkit_running() { [ "$(webkit_count)" -gt 0 ]; }
webkit_gone() { [ "$(webkit_count)" = 0 ]; }

printf '%s' "$TOKEN" | "${XS_ENV[@]}" "$cli" --no-agent setup claude >/dev/null
"${XS_ENV[@]}" /usr/bin/python3 scripts/sni-watcher.py 120 stay >"$work/watcher.out" 2>&1 &
XS_PIDS+=("$!")
xs_wait 10 grep -q '^watching' "$work/watcher.out" || { cat "$work/watcher.out"; exit 1; }
read -r -a app_env <<<"${KF_MEASURE_APP_ENV:-}"
"${XS_ENV[@]}" "${app_env[@]}" "$bin" >"$work/app.log" 2>&1 &
app=$!
XS_PIDS+=("$app")
xs_wait 120 grep -q '^registered' "$work/watcher.out" || { echo "no tray:"; cat "$work/app.log"; exit 1; }
echo "== memory, PSS of the whole process tree (app pid $app)"
sleep 10 # settle, as measure.rs does: the agent's first resolve pass
webkit_gone || { echo "WebKit runs before the window was ever opened"; exit 1; }
measure "idle ${SECS} s, window never opened" "$SECS"

"${XS_ENV[@]}" "${app_env[@]}" "$bin" >"$work/second.log" 2>&1 || true # single instance: asks the first to open
xs_wait 60 webkit_running || { echo "the window did not open:"; cat "$work/app.log"; exit 1; }
sleep 10
measure "window open (10 s after opening)" 10

"${XS_ENV[@]}" /usr/bin/python3 src-tauri/close-window.py Keyferry
closed_at=$(date +%s)
if xs_wait 30 webkit_gone; then
  gone="WebKit's processes exited $(($(date +%s) - closed_at)) s after closing"
else
  gone="WebKit's processes still running 30 s after closing: $(tree_pids "$app" | xargs -r ps -o comm= -p | grep WebKit | sort | uniq -c | awk '{ printf "%s%s × %s", sep, $1, $2; sep = ", " }')"
fi
echo "   $gone"
left=$((closed_at + 30 - $(date +%s)))
[ "$left" -gt 0 ] && sleep "$left"
measure "window closed (30–40 s after closing)" 10

# Reopened after the network process was stopped: WebKit starts a new one for the page.
"${XS_ENV[@]}" "${app_env[@]}" "$bin" >"$work/third.log" 2>&1 || true
xs_wait 60 webkit_running || { echo "the window did not reopen:"; cat "$work/app.log"; exit 1; }
sleep 10
measure "window reopened (10 s after opening)" 10
kill -TERM "$app"
xs_wait 10 bash -c "! kill -0 $app 2>/dev/null" || echo "!! the app did not quit within 10 s"

mkdir -p test-output
{
  echo "Binary: \`$bin\` ($bytes bytes). Machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)."
  echo
  echo "| whole process tree | PSS | by process, last sample (MiB) |"
  echo "|---|---|---|"
  printf '%s\n' "${results[@]}"
  echo
  echo "$gone."
} >test-output/tray-memory.md
echo "== written to test-output/tray-memory.md"

if [ "$memory_only" = 0 ]; then
  echo "== start-up and idle per process (release binary, under Xvfb)"
  KF_E2E_TRAY=$bin cargo test -p keyferry-tray --test measure -- --ignored --nocapture
fi

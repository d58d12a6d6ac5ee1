#!/usr/bin/env bash
# Smoke run of the real app under Xvfb, on a private session bus with an unlocked
# gnome-keyring and a throwaway HOME: the app must start the agent in-process, the CLI must
# reach it over the socket, and the window must render (screenshot in test-output/).
#
#   CARGO_TARGET_DIR=/work/target-tauri src-tauri/smoke.sh [screenshot.png]
#
# Needs the packages in src-tauri/DEPS.md (xvfb, imagemagick, gnome-keyring, dbus).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
shot=${1:-$root/test-output/tray-window.png}
tray=$target/debug/keyferry-tray
cli=$target/debug/keyferry
for b in "$tray" "$cli"; do
  [[ -x $b ]] || { echo "smoke: $b missing; build with: cargo build -p keyferry -p keyferry-tray" >&2; exit 2; }
done
mkdir -p "$(dirname "$shot")"

work=$(mktemp -d /tmp/kf-smoke.XXXXXX)
export HOME=$work/home XDG_RUNTIME_DIR=$work/run
mkdir -p "$HOME" && mkdir -m 700 "$XDG_RUNTIME_DIR"
unset KEYFERRY_SOCK KEYFERRY_CONFIG XDG_CONFIG_HOME XDG_STATE_HOME

display=:$((90 + RANDOM % 9))
Xvfb "$display" -screen 0 1280x960x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
xvfb=$!
cleanup() { kill "$xvfb" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export DISPLAY=$display
for _ in $(seq 50); do [[ -e /tmp/.X11-unix/X${display#:} ]] && break; sleep 0.1; done

export TRAY CLI=$cli SHOT=$shot WORK=$work
TRAY=$tray
dbus-run-session -- bash -euo pipefail -c '
  printf %s smoke-password | gnome-keyring-daemon --unlock --components=secrets >/dev/null
  # A setup-token in the keychain (claude), an expiring Gemini login on disk, no Codex.
  printf %s sk-ant-oat01-SMOKEsmokeSMOKEsmokeSMOKE0042 | "$CLI" --no-agent setup claude >/dev/null
  mkdir -p "$HOME/.gemini"
  exp=$(( ($(date +%s) + 2*86400 + 3*3600) * 1000 ))
  printf "{\"access_token\":\"ya29.smoke-smoke-smoke-0042\",\"refresh_token\":\"1//smoke\",\"scope\":\"openid\",\"token_type\":\"Bearer\",\"expiry_date\":%s}" "$exp" >"$HOME/.gemini/oauth_creds.json"
  chmod 600 "$HOME/.gemini/oauth_creds.json"

  start=$(date +%s%N)
  "$TRAY" --show >"$WORK/tray.log" 2>&1 &
  app=$!
  sock=$XDG_RUNTIME_DIR/keyferry/agent.sock
  for _ in $(seq 300); do [[ -S $sock ]] && break; sleep 0.1; done
  [[ -S $sock ]] || { echo "smoke: no socket at $sock" >&2; cat "$WORK/tray.log" >&2; exit 1; }
  echo "smoke: socket up after $(( ($(date +%s%N) - start) / 1000000 )) ms"
  "$CLI" --require-agent status
  "$CLI" --require-agent get claude >/dev/null
  echo "smoke: get claude over the socket: ok"
  "$CLI" lock
  if "$CLI" --require-agent get claude >/dev/null 2>"$WORK/locked.err"; then
    echo "smoke: get served while locked" >&2; exit 1
  fi
  grep -q "locked" "$WORK/locked.err" && echo "smoke: locked: $(cat "$WORK/locked.err")"
  sleep 2
  import -window root "${SHOT%.png}-locked.png"
  "$CLI" unlock
  "$CLI" --require-agent get claude >/dev/null
  sleep 2
  import -window root "$SHOT"
  echo "smoke: screenshots $SHOT ${SHOT%.png}-locked.png"
  if command -v xdotool >/dev/null; then
    # The lower half of the window: reroll wizard, access log, settings.
    xdotool mousemove 640 500
    for _ in $(seq 12); do xdotool click 5; sleep 0.05; done
    sleep 1
    import -window root "${SHOT%.png}-lower.png"
  fi
  kill -TERM "$app"
  for _ in $(seq 50); do kill -0 "$app" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$app" 2>/dev/null; then echo "smoke: app ignored SIGTERM" >&2; kill -KILL "$app"; exit 1; fi
  [[ ! -e $sock ]] || { echo "smoke: socket left behind" >&2; exit 1; }
  echo "smoke: clean exit, socket removed"
  grep -E "WARN|ERROR" "$WORK/tray.log" >&2 || true

  # A headless agent already serving: the app attaches as a client instead.
  "$CLI" agent >"$WORK/agent.log" 2>&1 &
  agent=$!
  for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
  "$TRAY" >"$WORK/tray2.log" 2>&1 &
  app=$!
  for _ in $(seq 100); do grep -q "tray ready" "$WORK/tray2.log" && break; sleep 0.1; done
  grep -q "attached to a running agent" "$WORK/tray2.log" || { echo "smoke: app did not attach" >&2; cat "$WORK/tray2.log" >&2; exit 1; }
  echo "smoke: attached to the headless agent (pid $agent)"
  "$CLI" lock && sleep 1 && "$CLI" unlock
  kill -TERM "$app"; wait "$app" || true
  [[ -S $sock ]] || { echo "smoke: the attached app removed the agent socket" >&2; exit 1; }
  "$CLI" --require-agent status >/dev/null && echo "smoke: headless agent still serving after the app quit"
  kill -TERM "$agent"; wait "$agent" || true
'

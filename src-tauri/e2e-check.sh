#!/usr/bin/env bash
# Manual end-to-end recipe (the real app through tauri-driver + WebKitWebDriver, plain
# W3C WebDriver over curl): reroll by paste and by a stand-in `claude setup-token`, then an
# `ask`-policy approval answered Allow once and Deny from the window. Prints what it saw.
#
#   CARGO_TARGET_DIR=/work/target-tauri src-tauri/e2e-check.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export TARGET=${CARGO_TARGET_DIR:-$root/target}/debug
export DRIVER=$(command -v tauri-driver || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tauri-driver")
export SHOTS=$root/test-output
mkdir -p "$SHOTS"
work=$(mktemp -d /tmp/kf-wd.XXXXXX)
export HOME=$work/home XDG_RUNTIME_DIR=$work/run
mkdir -p "$HOME"; mkdir -m 700 "$XDG_RUNTIME_DIR"
Xvfb :79 -screen 0 1280x960x24 -nolisten tcp >/dev/null 2>&1 &
xv=$!
sleep 1
export DISPLAY=:79 WORK=$work
dbus-run-session -- bash -c '
  mkdir -p $HOME/.config/keyferry; printf "[policy.claude]\nmode = \"ask\"\n" > $HOME/.config/keyferry/config.toml
  printf %s pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null
  printf %s sk-ant-oat01-OLDoldOLDoldOLDold0001 | $TARGET/keyferry --no-agent setup claude >/dev/null 2>&1
  printf "#!/bin/sh\necho Opening browser...\necho \"Your OAuth token: sk-ant-oat01-FAKEfakeFAKEfakeFAKE0003\"\necho Store it safely.\n" > $WORK/claude; chmod +x $WORK/claude
  export KEYFERRY_CLAUDE=$WORK/claude
  $DRIVER --port 4444 >$WORK/driver.log 2>&1 &
  drv=$!
  sleep 2
  wd() { curl -s -X "$1" "http://127.0.0.1:4444$2" -H "content-type: application/json" ${3:+-d "$3"}; }
  sid=$(wd POST /session "{\"capabilities\":{\"alwaysMatch\":{\"tauri:options\":{\"application\":\"$TARGET/keyferry-tray\",\"args\":[\"--show\"]}}}}" | python3 -c "import sys,json; print(json.load(sys.stdin)[\"value\"][\"sessionId\"])")
  echo "session $sid"
  sleep 2
  find() { wd POST /session/$sid/element "{\"using\":\"css selector\",\"value\":\"$1\"}" | python3 -c "import sys,json; v=json.load(sys.stdin)[\"value\"]; print(list(v.values())[0])"; }
  echo "title: $(wd GET /session/$sid/title)"
  el=$(find "#paste"); wd POST /session/$sid/element/$el/value "{\"text\":\"sk-ant-oat01-NEWnewNEWnewNEWnew0002\"}" >/dev/null
  el=$(find "#use-paste"); wd POST /session/$sid/element/$el/click "{}" >/dev/null; sleep 1
  el=$(find "#candidate"); echo "candidate: $(wd GET /session/$sid/element/$el/text)"
  el=$(find "#store"); wd POST /session/$sid/element/$el/click "{}" >/dev/null; sleep 2
  el=$(find "#stored"); echo "stored: $(wd GET /session/$sid/element/$el/text)"
  echo "stored token (direct read): $($TARGET/keyferry --no-agent get claude)"
  el=$(find "#run-setup"); wd POST /session/$sid/element/$el/click "{}" >/dev/null; sleep 2
  el=$(find "#setup-output"); echo "output: $(wd GET /session/$sid/element/$el/text)"
  el=$(find "#candidate"); echo "candidate: $(wd GET /session/$sid/element/$el/text)"
  el=$(find "#store"); wd POST /session/$sid/element/$el/click "{}" >/dev/null; sleep 2
  echo "stored token (direct read): $($TARGET/keyferry --no-agent get claude)"
  unset KEYFERRY_CLAUDE
  $TARGET/keyferry --require-agent get claude >$WORK/ask.out 2>$WORK/ask.err &
  getp=$!
  sleep 2
  el=$(find "[data-testid=approval] .text"); echo "approval: $(wd GET /session/$sid/element/$el/text)"
  el=$(find "[data-testid=approval] button[data-decision=allow_once]"); echo "click: $(wd POST /session/$sid/element/$el/click "{}")"
  sleep 1; el=$(find "#notice"); echo "notice: $(wd GET /session/$sid/element/$el/text)"
  wd POST /session/$sid/execute/sync "{\"script\":\"return document.querySelectorAll(\\\"[data-testid=approval]\\\").length + \\\" \\\" + JSON.stringify(window.__lastErr||null)\",\"args\":[]}"; echo
  wait $getp; echo "ask get rc=$? out=$(cat $WORK/ask.out) err=$(cat $WORK/ask.err)"
  $TARGET/keyferry --require-agent get claude >$WORK/ask.out 2>$WORK/ask.err &
  getp=$!
  sleep 2
  el=$(find "[data-testid=approval] button[data-decision=deny]"); wd POST /session/$sid/element/$el/click "{}" >/dev/null
  wait $getp; echo "deny get rc=$? out=$(cat $WORK/ask.out) err=$(cat $WORK/ask.err)"
  wd GET /session/$sid/screenshot | python3 -c "import sys,json,base64; open(\"$SHOTS/webdriver-reroll.png\",\"wb\").write(base64.b64decode(json.load(sys.stdin)[\"value\"]))"
  wd DELETE /session/$sid >/dev/null
  kill -TERM $drv; wait $drv; cat $WORK/driver.log | tail -20
'
kill $xv
rm -rf "$work"

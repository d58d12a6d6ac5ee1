# Sourced by scripts/package-test.sh and src-tauri/measure.sh: a private desktop for one run,
# as the tray's end-to-end tests build it (src-tauri/tests/support): Xvfb on a display it
# picks itself, a session bus without service activation, a throwaway HOME and a 0700
# XDG_RUNTIME_DIR, optionally an unlocked gnome-keyring Secret Service. Every wait has a
# deadline.
#
#   xs_start DIR [keyring]   starts it all under DIR; sets XS_ENV (an `env -i …` prefix)
#   xs_stop                  stops what xs_start started (call it from an EXIT trap)

XS_PIDS=()
XS_ENV=()

xs_fail() { echo "xsession: $*" >&2; return 1; }

# xs_wait SECONDS COMMAND...: polls COMMAND every 0.1 s until it succeeds; fails after SECONDS.
xs_wait() {
  local n=$(($1 * 10)); shift
  while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 0.1; n=$((n - 1)); done
  return 1
}

xs_start() {
  local dir=$1 keyring=${2:-}
  mkdir -p "$dir/home" "$dir/run"
  chmod 0700 "$dir/run"
  # Xvfb writes the display number it took to fd 3 once it accepts clients.
  Xvfb -displayfd 3 -nolisten tcp -screen 0 1280x800x24 3>"$dir/display" >"$dir/xvfb.log" 2>&1 &
  XS_PIDS+=("$!")
  xs_wait 10 test -s "$dir/display" || xs_fail "Xvfb reported no display in 10 s: $(cat "$dir/xvfb.log")" || return 1
  cat >"$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:path=$dir/run/bus</listen>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy>
</busconfig>
CONF
  dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile >"$dir/dbus.log" 2>&1 &
  XS_PIDS+=("$!")
  xs_wait 10 test -S "$dir/run/bus" || xs_fail "dbus-daemon did not listen in 10 s: $(cat "$dir/dbus.log")" || return 1
  XS_ENV=(env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$dir/home" XDG_RUNTIME_DIR="$dir/run"
    XDG_CONFIG_HOME="$dir/home/.config" XDG_DATA_HOME="$dir/home/.local/share"
    XDG_STATE_HOME="$dir/home/.local/state" XDG_CACHE_HOME="$dir/home/.cache"
    DISPLAY=":$(head -n1 "$dir/display")" DBUS_SESSION_BUS_ADDRESS="unix:path=$dir/run/bus"
    KEYFERRY_SOCK="$dir/run/keyferry.sock" RUST_LOG=info)
  if [ "$keyring" = keyring ]; then
    # The daemon reads its unlock password from stdin up to EOF.
    printf 'xsession-keyring' | "${XS_ENV[@]}" gnome-keyring-daemon --unlock \
      --components=secrets --foreground >"$dir/keyring.log" 2>&1 &
    XS_PIDS+=("$!")
    xs_wait 10 "${XS_ENV[@]}" dbus-send --session --print-reply --dest=org.freedesktop.secrets \
      /org/freedesktop/secrets org.freedesktop.Secret.Service.ReadAlias string:default >/dev/null 2>&1 \
      || xs_fail "no Secret Service in 10 s: $(cat "$dir/keyring.log")" || return 1
  fi
}

xs_stop() {
  local p
  for p in "${XS_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${XS_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  XS_PIDS=()
}

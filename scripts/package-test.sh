#!/usr/bin/env bash
# Builds the .deb (scripts/package.sh --debug --deb-only; --release for the release profile),
# installs it (`dpkg -i` as root, else `dpkg -x` into a scratch root), checks the CLI, its
# completions and man pages are where the package promises, then starts the installed app
# under Xvfb with a private session bus, a throwaway HOME and a StatusNotifierWatcher
# (scripts/sni-watcher.py) until its tray item registers, and stops it. Removes the package
# again (`dpkg -r`) when it installed it. Every wait has a deadline.
#
#   scripts/package-test.sh [--release]
#
# Needs: dpkg, Xvfb, dbus-daemon, python3-gi (scripts/deps.sh test), npm.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
profile=--debug
[ "${1:-}" = --release ] && profile=
START_DEADLINE=${KF_PACKAGE_START_DEADLINE:-90}

fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
t0=$(date +%s)
# shellcheck disable=SC2086 # $profile is one flag or none
scripts/package.sh $profile --deb-only
deb=$(ls "$root"/target/package/out/*.deb)
t_built=$(date +%s)
pkg=$(dpkg-deb -f "$deb" Package)
echo "== $deb (package $pkg)"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's/^\.//' | sort >"$root/target/package/contents.txt"

work=$(mktemp -d /tmp/kf-package-test.XXXXXX)
# shellcheck source=scripts/xsession.sh
. "$root/scripts/xsession.sh"
installed=0
cleanup() {
  local rc=$?
  xs_stop
  [ "$installed" = 1 ] && dpkg -r "$pkg" >/dev/null
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

if [ "$(id -u)" = 0 ]; then
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    fail "$pkg is already installed on this machine; remove it first (dpkg -r $pkg)"
  fi
  echo "== dpkg -i"
  dpkg -i "$deb" >/dev/null
  installed=1
  prefix=
else
  echo "== not root: dpkg -x into $work/root"
  dpkg -x "$deb" "$work/root"
  prefix=$work/root
fi

echo "== files"
for f in /usr/bin/keyferry /usr/bin/keyferry-tray \
  /usr/share/bash-completion/completions/keyferry \
  /usr/share/zsh/vendor-completions/_keyferry \
  /usr/share/fish/vendor_completions.d/keyferry.fish \
  /usr/share/man/man1/keyferry.1.gz /usr/share/man/man1/keyferry-snapshot.1.gz \
  /usr/share/applications/Keyferry.desktop; do
  [ -f "$prefix$f" ] || fail "$f is not installed; the package has:
$(cat "$root/target/package/contents.txt")"
done
[ -x "$prefix/usr/bin/keyferry" ] || fail "/usr/bin/keyferry is not executable"
"$prefix/usr/bin/keyferry" --version | grep -q "^keyferry " || fail "keyferry --version"
grep -q "complete -F _keyferry" "$prefix/usr/share/bash-completion/completions/keyferry" \
  || fail "the bash completion does not complete keyferry"
grep -q "snapshot" "$prefix/usr/share/bash-completion/completions/keyferry" \
  || fail "the bash completion lacks the subcommands"
head -1 "$prefix/usr/share/zsh/vendor-completions/_keyferry" | grep -q "^#compdef keyferry" \
  || fail "the zsh completion has no #compdef line"
grep -q "complete -c keyferry" "$prefix/usr/share/fish/vendor_completions.d/keyferry.fish" \
  || fail "the fish completion does not complete keyferry"
zcat "$prefix/usr/share/man/man1/keyferry.1.gz" | grep -q '^\.TH KEYFERRY 1' \
  || fail "keyferry.1 has no .TH KEYFERRY line"
if [ -n "$prefix" ]; then
  echo "   (scratch root: the app is checked from there)"
fi

echo "== start the installed app under Xvfb, private bus, throwaway HOME (deadline ${START_DEADLINE}s)"
xs_start "$work"
"${XS_ENV[@]}" /usr/bin/python3 "$root/scripts/sni-watcher.py" "$START_DEADLINE" >"$work/watcher.out" 2>&1 &
watcher=$!
XS_PIDS+=("$watcher")
for _ in $(seq 100); do grep -q "^watching" "$work/watcher.out" && break; sleep 0.1; done
grep -q "^watching" "$work/watcher.out" || fail "the watcher did not take its name: $(cat "$work/watcher.out")"

app_start=$(date +%s.%N)
"${XS_ENV[@]}" "$prefix/usr/bin/keyferry-tray" >"$work/app.log" 2>&1 &
app=$!
XS_PIDS+=("$app")
if ! wait "$watcher"; then
  echo "--- app log:" >&2; cat "$work/app.log" >&2
  fail "the installed app's tray did not register: $(cat "$work/watcher.out")"
fi
app_ready=$(date +%s.%N)
grep "^registered" "$work/watcher.out"
kill -0 "$app" 2>/dev/null || fail "the app exited after registering: $(cat "$work/app.log")"
for _ in $(seq 100); do [ -S "$work/run/keyferry.sock" ] && break; sleep 0.1; done
[ -S "$work/run/keyferry.sock" ] || fail "the app's agent socket did not appear: $(cat "$work/app.log")"
# A window that costs nothing until opened: no WebKit process below the app.
children=$(ps --ppid "$app" -o comm= || true)
echo "   app pid $app, children: ${children:-none}"
if grep -q WebKit <<<"$children"; then fail "WebKit runs with the window never opened"; fi
kill -TERM "$app"
for _ in $(seq 100); do kill -0 "$app" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$app" 2>/dev/null; then fail "the app did not quit within 10 s of SIGTERM"; fi
wait "$app" || true
if [ -e "$work/run/keyferry.sock" ]; then fail "the app left its socket behind"; fi

awk -v b="$t_built" -v a="$t0" -v s="$app_start" -v r="$app_ready" -v e="$(date +%s)" 'BEGIN {
  printf "== package-test OK: build %d s, tray registered %.1f s after start, total %d s\n", b - a, r - s, e - a }'

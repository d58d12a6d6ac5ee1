#!/usr/bin/env bash
# Installs the Debian packages Keyferry's build and tests need (as root), or says exactly
# what to install. Usage: scripts/deps.sh build|tray|test
set -euo pipefail

# libdbus is vendored (built from source by the dbus crate): only a C compiler is needed.
build=(gcc make)
# clang: the macOS lint cross-compiles ring's C (scripts/test.sh).
lint=(clang)
# Real parts the tests drive: a Secret Service on a private bus, kernel keyutils, socat as a
# raw protocol client, useradd/runuser for the second-user test, ps for argv checks,
# bubblewrap sandboxes, OpenSSH (sshd on 127.0.0.1), Python 3 for the stand-in macOS
# `security` tool (testkit/bin/security); nginx as the gateway benchmark's reference proxy;
# a Docker engine and compose for the container recipes (testkit::docker starts its own
# dockerd), Podman (testkit::podman, a store of its own), curl inside those containers.
test=(dbus gnome-keyring libsecret-tools keyutils socat passwd util-linux procps
      bubblewrap openssh-server openssh-client python3 nginx-light
      docker.io docker-compose podman curl iproute2)

# The tray (Tauri 2 on WebKitGTK 4.1), and running it headless end to end: Xvfb, the WebKit
# WebDriver that tauri-driver drives. See src-tauri/DEPS.md.
tray=(libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev build-essential
      xvfb webkit2gtk-driver)
# scripts/package-test.sh: its StatusNotifierWatcher is Python on GLib's Gio; src-tauri/measure.sh
# closes the window with python3-xlib; the panel's end-to-end test reads what Copy put on the
# clipboard with xclip.
tray+=(python3-gi python3-xlib xclip)

want=("${build[@]}")
[ "${1:-build}" = test ] && want+=("${test[@]}" "${tray[@]}" "${lint[@]}")
[ "${1:-build}" = tray ] && want+=("${tray[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the real claude CLI; any install with an `npm` command will do
# (NodeSource's nodejs package ships npm itself).
if [ "${1:-build}" = test ] && ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "keyferry: missing Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "keyferry: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

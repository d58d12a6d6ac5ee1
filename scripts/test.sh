#!/usr/bin/env bash
# The test command (README): installs what it needs, then formatting, lints for Linux and
# macOS, and every test — the library and CLI, the agent, delivery into sandboxes, and the
# tray app end to end. Tests start their own D-Bus, gnome-keyring, agents, sshd and Xvfb.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh test

# Some tests need root (a second Unix user made with useradd, sshd): they fail saying so
# when not run as root, never skip. CI runs as root.
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh runs tests that need root: run it as root (CI does), e.g. sudo -E bash scripts/test.sh" >&2
  exit 1
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-apple-darwin; then
  rustup target add aarch64-apple-darwin
fi

# tauri-driver drives the tray's window through WebKitWebDriver; pinned to 2.x (3.x is alpha).
if ! command -v tauri-driver >/dev/null && [ ! -x "$HOME/.cargo/bin/tauri-driver" ]; then
  echo "== cargo install tauri-driver@^2"
  cargo install tauri-driver --locked --version '^2'
fi
export PATH="$HOME/.cargo/bin:$PATH"

# The real CLIs (npm) for the delivery and gateway tests, kept under target/ (not global):
# Claude Code, Codex and Gemini CLI, majors pinned (0.x: the minor is the major).
NPM_CLIS=(@anthropic-ai/claude-code@2 @openai/codex@0.171 @google/gemini-cli@0.61)
if [ ! -x target/npm/node_modules/.bin/claude ] || [ ! -x target/npm/node_modules/.bin/codex ] \
   || [ ! -x target/npm/node_modules/.bin/gemini ]; then
  echo "== npm install ${NPM_CLIS[*]} (into target/npm)"
  mkdir -p target/npm
  npm install --silent --no-audit --no-fund --prefix target/npm "${NPM_CLIS[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (linux, workspace)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo clippy (aarch64-apple-darwin, DOCS_RS=1, workspace)"
# ring (rustls' crypto) compiles C in its build script: clang, with stand-ins for the few
# SDK headers it includes (scripts/macos-lint/); the objects are never linked.
CC_aarch64_apple_darwin=clang CFLAGS_aarch64_apple_darwin="-nostdlibinc -I$PWD/scripts/macos-lint" \
  DOCS_RS=1 cargo clippy --target aarch64-apple-darwin --workspace --all-targets -- -D warnings
echo "== cargo test (library, CLI, agent, delivery)"
cargo test --workspace --exclude keyferry-tray -- --test-threads "${KF_TEST_THREADS:-4}"
echo "== cargo test (tray app, end to end under Xvfb)"
cargo test -p keyferry-tray -- --test-threads 1
echo "== the .deb: built (debug), installed, started under Xvfb until its tray registers"
bash scripts/package-test.sh
echo "== fuzz smoke (10 s per target; scripts/fuzz.sh 600 is the long run)"
bash scripts/fuzz.sh 10

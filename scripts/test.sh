#!/usr/bin/env bash
# The test command (README): installs what it needs, then formatting, lints for Linux and
# macOS, and every test. Tests start their own D-Bus, gnome-keyring and agents.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh test

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-apple-darwin; then
  rustup target add aarch64-apple-darwin
fi

# The real Claude Code CLI (npm) for the delivery tests, kept under target/ (not global).
if [ ! -x target/npm/node_modules/.bin/claude ]; then
  echo "== npm install @anthropic-ai/claude-code@2 (into target/npm)"
  mkdir -p target/npm
  npm install --silent --no-audit --no-fund --prefix target/npm @anthropic-ai/claude-code@2
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (linux)"
cargo clippy --all-targets -- -D warnings
echo "== cargo clippy (aarch64-apple-darwin, DOCS_RS=1)"
DOCS_RS=1 cargo clippy --target aarch64-apple-darwin --all-targets -- -D warnings
echo "== cargo test"
cargo test -- --test-threads "${KF_TEST_THREADS:-4}"

#!/usr/bin/env bash
# Runs Keyferry (README): builds it (installing Debian build deps as root if missing) and
# runs `keyferry ARGS…`, by default the agent in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build
cargo build --release --bin keyferry
exec target/release/keyferry "${@:-agent}"

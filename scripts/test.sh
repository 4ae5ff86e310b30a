#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit and integration, real webrtc-rs peers) and the
# headless-Chromium end-to-end tests. Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

target="${CARGO_TARGET_DIR:-target}"
cargo build --locked --bin conclave
cargo test --locked --workspace

echo "== browser end-to-end tests (headless Chromium) =="
(cd tests/browser && CONCLAVE_BIN="$(realpath "$target")/debug/conclave" npm test)

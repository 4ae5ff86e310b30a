#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit and integration, real webrtc-rs peers) and the
# headless-Chromium end-to-end tests. Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# Cargo's own answer, always absolute: CARGO_TARGET_DIR, a .cargo/config setting, or ./target.
# Resolved here, before any `cd`, so the browser tests find the binary however it was set.
target="$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build --locked --bin conclave --example plane_echo
cargo test --locked --workspace

echo "== browser end-to-end tests (headless Chromium) =="
(cd tests/browser && CONCLAVE_BIN="$target/debug/conclave" npm test)

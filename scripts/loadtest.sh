#!/usr/bin/env bash
# Runs the load tool (release build) against Conclave, or Conclave and Janus side by side:
#   scripts/loadtest.sh --preset audio-fanout                         # Conclave only
#   scripts/loadtest.sh --preset audio-fanout --target both --rounds 2  # A B A B, then ratios
#   scripts/loadtest.sh --help                                         # every option
# The server is pinned to core 0 and the clients to core 1 (see docs/performance.md). Prints
# one JSON line per run and, with --target both, one comparison line (medians and ratios).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --locked --bin conclave --bin conclave-loadtest >&2
target="$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$target/release/conclave-loadtest" "$@"

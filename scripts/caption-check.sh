#!/usr/bin/env bash
# The caption check of BENCHMARKS.md: twenty sentences from a fake microphone in headless
# Chromium, captions measured on a second page. Builds the release server first.
#   scripts/caption-check.sh                 # idle machine, tiny.en
#   scripts/caption-check.sh --load          # one CPU hog per core
#   scripts/caption-check.sh --model base    # Whisper base
#   scripts/caption-check.sh --assert        # fail when a target is missed
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
target="$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build --locked --release --bin conclave
cd tests/browser
CONCLAVE_BIN="$target/release/conclave" node caption-check.mjs "$@"

#!/usr/bin/env bash
# Runs the server in development mode on http://127.0.0.1:8080: installs what is missing,
# builds in release mode, fetches and converts the Whisper model into ./data if it is not there
# yet (our own converter; see `conclave model install`), then serves with an API key pair
# generated and kept in ./data. Extra arguments are passed to `conclave serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --locked --release --bin conclave
bin="${CARGO_TARGET_DIR:-target}/release/conclave"
data="${CONCLAVE_DATA_DIR:-data}"
# `./scripts/run.sh --model base` installs (and serves) Whisper base instead of tiny.en.
model="${CONCLAVE_MODEL:-tiny.en}"
prev=""
for arg in "$@"; do
  [ "$prev" = "--model" ] && model="$arg"
  case "$arg" in --model=*) model="${arg#--model=}" ;; esac
  prev="$arg"
done
"$bin" model install --data-dir "$data" --model "$model"
exec "$bin" serve --dev --data-dir "$data" "$@"

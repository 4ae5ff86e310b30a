#!/usr/bin/env bash
# Runs the server in development mode on http://127.0.0.1:8080 (API key pair generated and kept
# in ./data). Installs what is missing first. Extra arguments are passed to `conclave serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
exec cargo run --locked --release --bin conclave -- serve --dev "$@"

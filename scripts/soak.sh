#!/usr/bin/env bash
# Join/leave churn soak: the churn test (tests/churn.rs) in release mode for 30 minutes (or
# the seconds given as $1), on loopback only. Prints descriptors, threads and RSS after every
# cycle and fails if they do not return to baseline at the end. CI runs a short version as
# part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-1800}"
CONCLAVE_CHURN_CYCLES=1000000 CONCLAVE_CHURN_SECS="$secs" CONCLAVE_TEST_LOG=error \
  cargo test --locked --release --test churn -- --nocapture

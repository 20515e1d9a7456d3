#!/usr/bin/env bash
# Installs headless Chromium (Debian packages chromium and chromium-driver, plus a font so
# screenshots show text) for the /docs and /console browser tests
# (the console test drives the browser through chromedriver). Idempotent: nothing to do when present.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-browser: not root; install chromium and chromium-driver with apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation >&2
chromium --version >&2

#!/usr/bin/env bash
# Installs the storage services the tests start on 127.0.0.1, pinned:
#   Azurite (Azure Blob emulator) from npm, per package.json / package-lock.json, into node_modules/;
#   moto (S3-compatible server) from PyPI, per requirements-test.txt, into .test-services/python/;
#   promtool (Prometheus's exposition linter) from Debian's prometheus package, when missing.
# Safe to run again; the tests start and stop their own instances.
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund
if [ ! -x .test-services/python/bin/moto_server ]; then
    python3 -m venv .test-services/python
fi
.test-services/python/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
if ! command -v promtool >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

#!/usr/bin/env bash
# The whole test suite. Tests start the servers they need (registry, token server) themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec python3 -m pytest "$@"

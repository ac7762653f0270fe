#!/usr/bin/env bash
# The whole test suite: lint and type checks, then pytest (arguments go to pytest).
# Tests start the servers they need (registry, token server, daemon) themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
python3 -m ruff check .
python3 -m mypy
exec python3 -m pytest "$@"

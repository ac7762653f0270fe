#!/usr/bin/env bash
# The main job on an embedded default: no network, no external registry.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec python3 scripts/demo.py "$@"

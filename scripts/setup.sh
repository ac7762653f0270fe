#!/usr/bin/env bash
# Installs what occystrap and its tests need on a fresh Debian machine (idempotent):
# Debian packages from .ci/packages.txt, then every distribution in this repo, editable.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
while read -r pkg; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < .ci/packages.txt
if ((${#missing[@]})); then
    SUDO=$([[ $(id -u) -eq 0 ]] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# Editable installs are not byte-compiled, and PYTHONDONTWRITEBYTECODE may be set:
# without this, every start of occystrap compiles its sources again (about 60 ms).
python3 -m compileall -q occystrap_core/src plugins/*/src >/dev/null

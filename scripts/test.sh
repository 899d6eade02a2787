#!/usr/bin/env bash
# Install everything the test suite needs, then run it.
#
#   bash scripts/test.sh [pytest arguments]
#
# Installs, when missing: Debian's chromium (the consent-page browser
# test), a virtual environment in .venv with the package and its
# test extras, and the test realm's Node packages (tests/idp). Needs Python
# 3.11+, Node.js 20+ and npm; apt-get runs only as root and only for what
# is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "missing system packages: ${need_apt[*]}; install them with apt-get (as root) and rerun" >&2
        exit 1
    fi
    echo "installing system packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

for tool in node npm python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool: install it and rerun" >&2; exit 1; }
done

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

if [ ! -d tests/idp/node_modules ] || [ tests/idp/package-lock.json -nt tests/idp/node_modules ]; then
    npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error
fi

exec .venv/bin/python -m pytest "$@"

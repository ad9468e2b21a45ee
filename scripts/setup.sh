#!/usr/bin/env bash
# Create .venv (if missing) and install rlextra with the pinned stack. Usage: scripts/setup.sh [EXTRAS]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt \
  -e ".${extras:+[$extras]}" 2> >(grep -v "^WARNING: Location" >&2)

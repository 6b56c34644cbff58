#!/usr/bin/env bash
# Set the machine up (scripts/setup.sh, idempotent), clean Mininet leftovers,
# then run the test suite from the repo root. Arguments are passed to pytest.
# Run as root: the integration tests build real Mininet fabrics.
# "No tests collected" (pytest exit 5) is a failure, on purpose.
set -euo pipefail
HERE=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
VENV=$(bash "$HERE/setup.sh")   # prints the venv; progress and errors go to stderr
# `mn -c` removes what an interrupted earlier run may have left (it deletes
# every OVS bridge on the machine and kills leftover Mininet processes).
mn -c >/dev/null 2>&1 || true
cd -- "$HERE/.."
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"

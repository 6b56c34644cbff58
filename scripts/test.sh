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
# Under the fabric lock (sdnvirt/emulation/lock.py): never in the middle of
# another run's fabric.
lock=${SDNVIRT_FABRIC_LOCK:-/run/lock/sdnvirt-fabric.lock}
mkdir -p -- "${lock%/*}"
flock -w 1800 "$lock" mn -c >/dev/null 2>&1 || true
cd -- "$HERE/.."
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"

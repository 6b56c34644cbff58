#!/usr/bin/env bash
# Set the machine up (scripts/setup.sh, idempotent), run the static checks
# (ruff, mypy, the import contracts: configured in pyproject.toml; seconds),
# clean Mininet leftovers, then run the test suite from the repo root.
# Arguments are passed to pytest.
# Run as root: the integration tests build real Mininet fabrics.
# "No tests collected" (pytest exit 5) is a failure, on purpose.
set -euo pipefail
HERE=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
VENV=$(bash "$HERE/setup.sh")   # prints the venv; progress and errors go to stderr
cd -- "$HERE/.."
# Static checks first (seconds, against minutes of tests). All of them run, so that
# one run shows every finding; a check's output is shown only if it fails.
failed=()
check() {   # check NAME COMMAND...
    local name=$1 out
    shift
    out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; failed+=("$name"); }
}
check ruff "$VENV/bin/ruff" check .
check mypy "$VENV/bin/mypy"
check lint-imports "$VENV/bin/lint-imports" --no-logo
if ((${#failed[@]})); then
    printf 'test: static checks failed: %s\n' "${failed[*]}" >&2
    exit 1
fi
printf 'test: ruff, mypy and the import contracts pass\n' >&2
# `mn -c` removes what an interrupted earlier run may have left (it deletes
# every OVS bridge on the machine and kills leftover Mininet processes).
# Under the fabric lock (sdnvirt/emulation/lock.py): never in the middle of
# another run's fabric.
lock=${SDNVIRT_FABRIC_LOCK:-/run/lock/sdnvirt-fabric.lock}
mkdir -p -- "${lock%/*}"
flock -w 1800 "$lock" mn -c >/dev/null 2>&1 || true
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"

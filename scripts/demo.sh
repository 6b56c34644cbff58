#!/usr/bin/env bash
# Set the machine up (scripts/setup.sh, idempotent), then run `sdnvirt demo`.
# Arguments are passed to `sdnvirt demo`. Run as root (Mininet needs it).
set -euo pipefail
HERE=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
VENV=$(bash "$HERE/setup.sh")   # prints the venv; progress and errors go to stderr
exec "$VENV/bin/sdnvirt" demo "$@"

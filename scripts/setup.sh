#!/usr/bin/env bash
# Get a Debian 12 machine ready to run sdnvirt, its demo and its tests:
#   - the system packages (Open vSwitch, Mininet, tools), installed only if missing;
#   - openvswitch-testcontroller stopped and disabled (it would take port 6653),
#     and so are the prometheus, prometheus-node-exporter and etcd services
#     that Debian starts on install (the tests run their own Prometheus and etcd);
#   - Open vSwitch running (the userspace datapath needs no kernel module);
#   - a venv with sdnvirt installed in editable mode with the extras the demo
#     and the tests need (emulation, test: see pyproject.toml), with Debian's
#     Python packages visible (Debian's `mininet` is not on PyPI).
#
# Idempotent and non-interactive; a second run only checks and takes seconds.
# Run as root on a fresh machine. Works from any directory.
#
# Environment:
#   SDNVIRT_VENV   where the venv goes (default: <repo>/.venv)
#
# Progress goes to stderr; the venv path is printed on stdout at the end.
set -euo pipefail

REPO=$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/.." && pwd -P)
VENV=$(realpath -m -- "${SDNVIRT_VENV:-$REPO/.venv}")
SYSTEM_PYTHON=/usr/bin/python3   # not whatever python3 is first on PATH (pyenv...)
OVS_CTL=/usr/share/openvswitch/scripts/ovs-ctl
OVS_RUNDIR=${OVS_RUNDIR:-/var/run/openvswitch}   # OVS's own variables, as its tools read them
OVS_LOGDIR=${OVS_LOGDIR:-/var/log/openvswitch}

PACKAGES=(
    openvswitch-switch mininet iperf3 ethtool iproute2 iputils-ping
    iputils-arping python3-venv python3-dev tcpdump procps psmisc curl
    prometheus etcd-server
    qemu-system-x86 linux-image-cloud-amd64 busybox-static
)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf -- "$TMP"' EXIT

# run_quiet DESCRIPTION COMMAND...: run COMMAND with its output kept aside;
# show that output (on stderr) and stop only if COMMAND fails.
run_quiet() {
    local desc=$1 rc=0
    shift
    "$@" >"$TMP/out" 2>&1 || rc=$?
    if ((rc != 0)); then
        log "error: $desc failed (exit $rc):"
        cat -- "$TMP/out" >&2
        exit "$rc"
    fi
}

need_root() {
    [[ $EUID -eq 0 ]] || die "$1 needs root: run this script as root (e.g. with sudo)"
}

# --- system packages ---------------------------------------------------------

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) || status=
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    need_root "installing ${missing[*]}"
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-q -o DPkg::Lock::Timeout=300
              -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    # Finish a dpkg run that was interrupted, or apt-get refuses to work.
    run_quiet "dpkg --configure -a" dpkg --configure -a
    run_quiet "apt-get update" apt-get "${apt_opts[@]}" update
    run_quiet "apt-get install" apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
fi

# --- services Debian enables on install --------------------------------------
# openvswitch-testcontroller (some setups pull it in) listens on 6653, the
# OpenFlow port sdnvirt uses, and would answer our switches. prometheus (and
# prometheus-node-exporter, if something pulled it in) would scrape and store
# forever on a test machine; the tests start their own Prometheus on a free
# port. etcd would hold 2379 and keep a data directory; the tests and the lab
# start their own cluster on loopback ports in a temporary directory. Stop and disable the services; a process running outside them is only
# reported, never killed.

disable_service() {
    local svc=$1
    [[ -e /etc/init.d/$svc || -e /lib/systemd/system/$svc.service || -e /usr/lib/systemd/system/$svc.service ]] ||
        return 0
    if [[ -d /run/systemd/system ]]; then       # systemd is PID 1
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    else
        # Only if the service itself runs (its pidfile): etcd's script, Debian's
        # generic init-d-script, would otherwise kill every etcd process on the
        # machine, the clusters the tests and benchmarks started too.
        if [[ -x /etc/init.d/$svc ]] && /etc/init.d/$svc status >/dev/null 2>&1; then
            /etc/init.d/$svc stop >/dev/null 2>&1 || true
        fi
        # Disable it for the next boot, whichever init system that will be.
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
        systemctl --root=/ disable "$svc" >/dev/null 2>&1 || true
    fi
}

for svc in openvswitch-testcontroller prometheus prometheus-node-exporter etcd; do
    disable_service "$svc"
done
if pids=$(pgrep -d ' ' -f '^(/usr/bin/)?ovs-testcontroller( |$)'); then
    log "warning: ovs-testcontroller is running (pid $pids) and may hold OpenFlow port 6653;" \
        "not stopping it: stop it yourself if sdnvirt cannot listen"
fi

# --- Open vSwitch -------------------------------------------------------------

ovs_ready() {
    ovs-vsctl --timeout=2 show >/dev/null 2>&1 &&
        ovs-appctl --timeout=2 -t ovs-vswitchd version >/dev/null 2>&1
}

if ! ovs_ready; then
    need_root "starting Open vSwitch"
    log "starting Open vSwitch"
    if [[ -d /run/systemd/system ]]; then
        systemctl start openvswitch-switch >/dev/null 2>&1 || true
    fi
    if ! ovs_ready; then
        # Without the openvswitch kernel module ovs-ctl prints warnings (and,
        # where modules are loadable, gives up before ovs-vswitchd): sdnvirt
        # uses the userspace datapath, which does not need the module.
        "$OVS_CTL" start --system-id=random >"$TMP/ovs-ctl.out" 2>&1 || true
    fi
    deadline=$((SECONDS + 20))
    until ovs-vsctl --timeout=2 show >/dev/null 2>&1 || ((SECONDS >= deadline)); do
        sleep 0.5
    done
    vswitchd_pid=$(cat -- "$OVS_RUNDIR/ovs-vswitchd.pid" 2>/dev/null) || vswitchd_pid=
    if ovs-vsctl --timeout=2 show >/dev/null 2>&1 && ! ovs_ready &&
            ! { [[ -n $vswitchd_pid ]] && kill -0 "$vswitchd_pid" 2>/dev/null; }; then
        # ovsdb-server is up but ovs-ctl did not start ovs-vswitchd (no kernel
        # module): start it the way ovs-ctl does.
        ovs-vswitchd "unix:$OVS_RUNDIR/db.sock" -vconsole:emer -vsyslog:err -vfile:info \
            --mlockall --no-chdir --log-file="$OVS_LOGDIR/ovs-vswitchd.log" \
            --pidfile="$OVS_RUNDIR/ovs-vswitchd.pid" --detach --monitor \
            >>"$TMP/ovs-ctl.out" 2>&1 || true
    fi
    until ovs_ready || ((SECONDS >= deadline)); do
        sleep 0.5
    done
    if ! ovs_ready; then
        [[ -s $TMP/ovs-ctl.out ]] && cat -- "$TMP/ovs-ctl.out" >&2
        die "Open vSwitch did not come up within 20 s (see $OVS_LOGDIR/)"
    fi
fi

# --- the venv -----------------------------------------------------------------
# One setup at a time per machine past this point: two pip runs in one venv
# would break it. (Only python/pip run under the lock, so no daemon inherits it.)

if [[ $EUID -eq 0 ]]; then lock=/run/lock/sdnvirt-setup.lock; else lock=${XDG_RUNTIME_DIR:-/tmp}/sdnvirt-setup.lock; fi
mkdir -p -- "${lock%/*}" 2>/dev/null || true
if command -v flock >/dev/null && exec 9>>"$lock"; then
    flock -w 900 9 || die "another scripts/setup.sh has held $lock for 15 minutes"
fi

venv_ok() {
    [[ -x $VENV/bin/python && -f $VENV/pyvenv.cfg ]] &&
        grep -qiE '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" &&
        "$VENV/bin/python" -c 'import sys; assert sys.base_prefix == "/usr", sys.base_prefix' >/dev/null 2>&1 &&
        "$VENV/bin/python" -m pip --version >/dev/null 2>&1
}

# Imports the venv must provide; sdnvirt must come from this checkout.
verify() {
    (cd / && SDNVIRT_REPO=$REPO "$VENV/bin/python" -c '
import os, mininet.net, os_ken, pyroute2, sdnvirt
where = os.path.dirname(os.path.realpath(sdnvirt.__file__))
want = os.path.join(os.environ["SDNVIRT_REPO"], "sdnvirt")
assert where == want, f"sdnvirt is imported from {where}, not {want}"
')
}

if ! venv_ok; then
    if [[ -e $VENV && ! -f $VENV/pyvenv.cfg && -n $(ls -A -- "$VENV" 2>/dev/null) ]]; then
        die "$VENV exists and is not a venv: remove it or set SDNVIRT_VENV"
    fi
    log "creating venv $VENV"
    run_quiet "creating the venv" "$SYSTEM_PYTHON" -m venv --system-site-packages --clear "$VENV"
fi

# pip runs again only when pyproject.toml (dependencies, entry points) changed,
# or when the imports do not work.
stamp=$VENV/.sdnvirt-setup-stamp
want=$({ printf '%s\n' "$REPO"; cat -- "$REPO/pyproject.toml"; } | sha256sum | cut -d' ' -f1)
if [[ $(cat -- "$stamp" 2>/dev/null) == "$want" ]] && verify >/dev/null 2>&1; then
    :
else
    rm -f -- "$stamp"
    log "installing sdnvirt and its dependencies into $VENV (pip)"
    run_quiet "pip install" env PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$VENV/bin/python" -m pip install -q -e "${REPO}[emulation,test]"
    run_quiet "checking the venv (import mininet.net, os_ken, pyroute2, sdnvirt)" verify
    printf '%s\n' "$want" >"$stamp"
fi

log "ready"
printf '%s\n' "$VENV"

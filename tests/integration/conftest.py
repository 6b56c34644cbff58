"""A real controller daemon process driving a real Mininet fabric."""

import copy
import signal
import time

import pytest
from fabrics import TWO_TENANTS

from sdnvirt import config
from sdnvirt.emulation import lab
from sdnvirt.emulation.launcher import Emulation, build_topo, wait_connected
from sdnvirt.emulation.underlay import vtep_plan

# The unit tests' two tenants on one subnet (web1/db1 and web2/db2 share
# their addresses), with one more red VM on leaf4.
TENANTS = copy.deepcopy(TWO_TENANTS["tenants"])
TENANTS["red"]["vms"]["db3"] = {"mac": "02:00:00:00:02:03", "ip": "10.1.0.14", "host": "leaf4"}


class Fabric:
    """Controller process + emulation, with the config they share."""

    def __init__(self, tmp_path, tenants, topo, params, extra=None, encap="vlan"):
        lab.ensure_ovs()
        self.doc = {"controller": {"openflow": {"port": lab.free_port()},
                                   "fabric": {"settle": 1.0, "packet_in_rate": 100}},
                    "tenants": copy.deepcopy(tenants), **copy.deepcopy(extra or {})}
        if encap == "vxlan":
            # Hypervisors with their own Open vSwitch over a Linux-bridge underlay, VTEPs 192.168.254.N.
            self.doc["controller"]["fabric"]["encapsulation"] = "vxlan"
            for name, spec in vtep_plan(build_topo(topo, params).hypervisors()).items():
                self.doc.setdefault("hypervisors", {}).setdefault(name, {}).update(spec)
        self.cfg = config.parse(self.doc)
        self.ctl = lab.ControllerProcess(self.doc, tmp_path)
        self.emu = Emulation(self.cfg, topo, params, controller_port=self.ctl.port)

    def start(self):
        self.ctl.start()
        self.emu.start()
        wait_connected(self.emu.net)
        self.wait_reachable()
        return self

    def stop(self):
        self.emu.stop()
        self.ctl.stop()

    def host(self, name):
        return self.emu.host(name)

    def vm(self, name):
        return next(vm for t in self.cfg.tenants.values() for n, vm in t.vms.items() if n == name)

    def pairs(self):
        for tname, tenant in sorted(self.cfg.tenants.items()):
            for a in sorted(tenant.vms):
                for b in sorted(tenant.vms):
                    if a != b:
                        yield tname, a, b

    def wait_reachable(self, timeout=30.0):
        """Every VM reaches every VM of its tenant (first ARP and learning done)."""
        deadline = time.monotonic() + timeout
        pending = list(self.pairs())
        while pending and time.monotonic() < deadline:
            pending = [(t, a, b) for t, a, b in pending
                       if not lab.ping(self.host(a), str(self.vm(b).ip), wait=0.5)]
        assert not pending, f"unreachable after {timeout}s: {pending}\n{self.ctl.log_tail()}"

    def restart_controller(self, signum=signal.SIGKILL):
        """Stop the controller with ``signum`` and start it again: a new run, whose events start afresh."""
        self.ctl.stop(signum)
        self.ctl.start()

    def alive(self):
        return self.ctl.proc is not None and self.ctl.proc.poll() is None


@pytest.fixture(scope="module")
def leafspine(tmp_path_factory):
    fab = Fabric(tmp_path_factory.mktemp("leafspine"), TENANTS, "leafspine", {"spines": 2, "leaves": 4})
    try:
        yield fab.start()
    finally:
        fab.stop()

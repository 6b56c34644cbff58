"""An in-memory datacenter for bench/scale.py: fabric, tenants, VMs, services, and the changes events make.

A fat tree or a leaf-spine whose edge switches / leaves are the hypervisors;
each tenant's VMs spread over the hypervisors, tenants offset from each other;
services of a few backends each, spread over the tenants.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdnvirt import config
from sdnvirt.fabric import FAT_TREE_DPIDS, Fabric, PortRef, fat_tree, leaf_spine
from sdnvirt.model import Location, Model

BACKENDS = 4            # per service
SLACK_PORTS = 4         # free access ports per hypervisor, for VMs that move or arrive


def fabric_of(kind: str, vms: int) -> tuple[Fabric, list[int], int]:
    """The fabric, its hypervisors and the first access port of each."""
    if kind.startswith("fattree-"):
        k = int(kind.removeprefix("fattree-"))
        edges = k * k // 2
        fab = fat_tree(k, vm_ports=-(-vms // edges) + SLACK_PORTS)
        return fab, sorted(d for d in fab.switches if d >> 8 == FAT_TREE_DPIDS[2] >> 8), k // 2 + 1
    if kind.startswith("leafspine-"):
        spines, leaves = (int(n) for n in kind.removeprefix("leafspine-").split("x"))
        fab = leaf_spine(spines, leaves, -(-vms // leaves) + SLACK_PORTS)
        return fab, sorted(d for d in fab.switches if d >> 8 == 1), spines + 1
    raise ValueError(f"unknown fabric {kind!r}: fattree-K or leafspine-SxL")


def tenant_doc(t: int, vms: int, services: list[int]) -> dict:
    """Tenant ``t`` with ``vms`` VMs and the services numbered ``services``."""
    def ip(i: int) -> str:
        return f"10.0.{(i + 10) >> 8}.{(i + 10) & 0xFF}"
    return {"segment": t + 1, "subnet": "10.0.0.0/16",
            "vms": {f"t{t}v{v}": {"mac": f"02:00:{t >> 8:02x}:{t & 0xFF:02x}:{v >> 8:02x}:{v & 0xFF:02x}",
                                  "ip": ip(v)} for v in range(vms)},
            "services": {f"s{s}": {"vip": f"10.0.200.{j % 250 + 1}", "port": 1000 + j,
                                   "backends": [{"vm": f"t{t}v{(j * BACKENDS + b) % vms}", "port": 80}
                                                for b in range(min(BACKENDS, vms))]}
                         for j, s in enumerate(services)}}


def document(size: dict) -> dict:
    tenants, vms, services = size["tenants"], size["vms"], size["services"]
    return {"tenants": {f"t{t}": tenant_doc(t, vms // tenants + (t < vms % tenants),
                                            list(range(t, services, tenants))) for t in range(tenants)}}


class Datacenter:
    """The model and the fabric of one size, with the moves a benchmark makes in it."""

    def __init__(self, size: dict):
        self.size = size
        self.fab, self.hypervisors, first = fabric_of(size["fabric"], size["vms"])
        self.doc = document(size)
        self.model = Model(config.parse(self.doc))
        ports = {d: sorted(p for p in self.fab.edge_ports(d) if p >= first) for d in self.hypervisors}
        # A tenant's VMs spread over the hypervisors, tenants offset from each other.
        for vm in self.model.vms():
            t, v = int(vm.tenant[1:]), int(vm.name.split("v")[1])
            at = self.hypervisors[(t * 7 + v) % len(self.hypervisors)]
            self.model.bind(vm.name, Location(at, ports[at].pop(0)))
        self.free = ports

    def learn(self, name: str, loc: Location) -> None:
        """The VM's frame seen at ``loc``, its old port down: what packet-in learning does."""
        vm = self.model.vm(name)
        assert vm is not None
        seen = self.model.observe(vm.mac, vm.ip, loc, lambda _: False)
        assert seen.bound, seen.reason

    def elsewhere(self, loc: Location) -> Location:
        """A free port on another hypervisor."""
        dpid = next(d for d in self.hypervisors if d != loc.dpid and self.free[d])
        return Location(dpid, self.free[dpid].pop(0))

    def apply_doc(self, edit: Callable[[dict], None]) -> Callable[[], None]:
        """An API change: the document edited and parsed now (the API's thread), adopted by the
        returned function (the controller's loop)."""
        edit(self.doc)
        parsed = config.parse(self.doc)
        return lambda: self.model.set_config(parsed)

    def uplink(self) -> tuple[PortRef, PortRef]:
        """A hypervisor's first fabric link."""
        a = min(a for a in self.fab.links if a[0] == self.hypervisors[0])
        return a, self.fab.links[a]


def changes(dc: Datacenter) -> list[tuple[str, Callable[[], Callable[[], Any]]]]:
    """The change kinds, in the order they are made: each prepares (off the loop) and returns
    what the controller does on its loop."""
    model = dc.model
    quiet = f"t0v{dc.size['vms'] // dc.size['tenants'] - 1}"      # a VM that backs no service
    link = dc.uplink()
    moved: dict[str, Location] = {}

    def backend_down():
        svc = model.services()[0]
        return lambda: model.health[svc.health_key(svc.backends[0])].force_down("bench")

    def vm_port_down():
        moved["at"] = model.locations[quiet]
        return lambda: model.unbind(quiet, "its port went down")

    def vm_learnt():
        return lambda: dc.learn(quiet, moved["at"])

    def vm_moved():
        to = dc.elsewhere(model.locations[quiet])
        return lambda: dc.learn(quiet, to)

    def vm_added_api():
        return dc.apply_doc(lambda d: d["tenants"]["t0"]["vms"].update(
            {"added": {"mac": "02:ff:00:00:00:01", "ip": "10.0.199.1"}}))

    def tenant_added_api():
        t = dc.size["tenants"]
        adopt = dc.apply_doc(lambda d: d["tenants"].update({f"t{t}": tenant_doc(t, 10, [])}))
        places = [dc.elsewhere(Location(0, 0)) for _ in range(10)]

        def run() -> None:
            adopt()
            for v, loc in enumerate(places):      # and its VMs learnt
                dc.learn(f"t{t}v{v}", loc)
        return run

    def link_down():
        return lambda: dc.fab.remove_links_at(link[0])

    def link_up():
        return lambda: (dc.fab.add_link(*link), dc.fab.add_link(link[1], link[0]))

    kinds = [("nothing", lambda: lambda: None), ("backend_down", backend_down), ("vm_port_down", vm_port_down),
             ("vm_learnt", vm_learnt), ("vm_moved", vm_moved), ("vm_added_api", vm_added_api),
             ("tenant_added_api", tenant_added_api), ("link_down", link_down), ("link_up", link_up)]
    return [(k, fn) for k, fn in kinds if k != "backend_down" or model.services()]

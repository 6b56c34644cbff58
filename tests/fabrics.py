"""Fabrics and configs built in memory for the unit tests."""

from sdnvirt import config
from sdnvirt.fabric import Fabric, leaf_spine
from sdnvirt.model import Location, Model

# Leaf i is dpid 0x100+i, spine j 0x200+j; leaf port j links to spine j, ports spines+1.. are access ports.
leafspine = leaf_spine


TWO_TENANTS = {
    "tenants": {
        "blue": {"segment": 101, "subnet": "10.1.0.0/24", "vms": {
            "web1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11", "host": "leaf1"},
            "web2": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12", "host": "leaf2"},
            "web3": {"mac": "02:00:00:00:01:03", "ip": "10.1.0.13", "host": "leaf1"},
        }},
        "red": {"segment": 102, "subnet": "10.1.0.0/24", "vms": {
            "db1": {"mac": "02:00:00:00:02:01", "ip": "10.1.0.11", "host": "leaf1"},
            "db2": {"mac": "02:00:00:00:02:02", "ip": "10.1.0.12", "host": "leaf3"},
        }},
    }
}


def placed_model(doc=TWO_TENANTS, spines=2) -> Model:
    """Each VM bound on its host leaf, on access ports in config order."""
    model = Model(config.parse(doc))
    next_port: dict[int, int] = {}
    for vm in model.vms():
        dpid = 0x100 + int(vm.host.removeprefix("leaf"))
        port = next_port.get(dpid, spines + 1)
        next_port[dpid] = port + 1
        model.bind(vm.name, Location(dpid, port))
    return model


TUNNEL_PORT = 50     # each leaf's VXLAN port in vxlan_fabric


def vtep(leaf: int) -> str:
    return f"192.168.254.{leaf}"


def vxlan_doc(doc=TWO_TENANTS, leaves=4) -> dict:
    """``doc`` in vxlan mode: every leaf a hypervisor with a VTEP."""
    return {**doc, "controller": {"fabric": {"encapsulation": "vxlan"}},
            "hypervisors": {f"leaf{i}": {"vtep": vtep(i)} for i in range(1, leaves + 1)}}


def vxlan_fabric(spines=2, leaves=4, vm_ports=3) -> Fabric:
    """``leafspine`` with a VXLAN port (``TUNNEL_PORT``, named vxlan0) on every leaf:
    the spines are then a mere underlay."""
    return leaf_spine(spines, leaves, vm_ports, (TUNNEL_PORT, "vxlan0"))

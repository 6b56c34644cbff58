"""VXLAN mode's emulated datacenter: hypervisors with their own Open vSwitch
over an IP underlay that OpenFlow does not control.

A topology's hypervisors become ``Hypervisor`` nodes, each in its own network
namespace with its own Open vSwitch (privateovs.py) holding two bridges:

- ``br-phy``: standalone (NORMAL), never connected to the controller, the
  hypervisor's uplinks and, on its internal port, the VTEP address; this is
  where a hypervisor of a datacenter has its physical NIC and address;
- the hypervisor bridge (the topology's name for it), connected to the
  controller: the VMs' ports and one flow-based VXLAN port
  (``remote_ip=flow key=flow local_ip=<VTEP>``): the controller's flows set
  the tunnel's destination and VNI.

The controller is reached over a management veth into the root namespace
(a /31 of 198.18.0.0/15, the benchmarking range, so no real network is
routed): the controller must listen on those addresses (0.0.0.0 does).
The hypervisor namespaces have no other route out: no default route, never
toward a real interface.

The topology's other switches (spines, aggregation, core) become
``UnderlayBridge`` nodes: a Linux bridge in a namespace of its own, which
speaks no OpenFlow and holds no tenant state.  Where the underlay has loops
(a leaf-spine with several spines) every bridge runs spanning tree.

Underlay links carry MTU 1600, so that a VM's 1500-byte frame fits with
VXLAN's 50 bytes: the userspace datapath drops oversize frames silently.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from functools import partial

from mininet.node import Switch
from mininet.topo import Topo
from mininet.util import quietRun

from ..config import Config
from .privateovs import PrivateOVS

UNDERLAY_MTU = 1600
MGMT_NET = ipaddress.IPv4Network("198.18.0.0/15")
# Linux's shortest forward delay (2 s) with spanning tree on; OVS's is 4 s,
# but a bridge takes the root's timers and the Linux bridges win the root.
STP_FORWARD_DELAY_CS = 200
STP_ROOT_PRIORITY = 0
# The underlay carries nothing but the VTEPs' traffic: not the router
# solicitations and MLD reports Linux sends from every interface that comes up.
NO_IPV6 = "sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"


def mgmt_addresses(index: int) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]:
    """The management /31 of hypervisor number ``index`` (0-based): (root side, hypervisor side)."""
    base = MGMT_NET.network_address + 2 * index
    if base + 1 > MGMT_NET.broadcast_address:
        raise ValueError(f"at most {MGMT_NET.num_addresses // 2} hypervisors")
    return ipaddress.IPv4Interface(f"{base}/31"), ipaddress.IPv4Interface(f"{base + 1}/31")


def vtep_network(vteps: Iterable[ipaddress.IPv4Address]) -> ipaddress.IPv4Network:
    """The underlay subnet the VTEPs share: the smallest holding them all,
    and no longer than /24 (a /31 or /32 would leave no room to grow)."""
    addrs = list(vteps)
    if not addrs:
        raise ValueError("no VTEP addresses")
    net = ipaddress.IPv4Network(f"{addrs[0]}/24", strict=False)
    while not all(a in net for a in addrs):
        net = net.supernet()
    return net


def has_loops(switches: Iterable[str], links: Iterable[tuple[str, str]]) -> bool:
    """Whether the switch graph has a cycle (union-find; parallel links count)."""
    parent = {s: s for s in switches}

    def root(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra == rb:
            return True
        parent[ra] = rb
    return False


class Hypervisor(Switch):
    """A hypervisor with its own Open vSwitch in its own namespace (see the module)."""

    def __init__(self, name: str, vtep: ipaddress.IPv4Interface, mgmt_index: int,
                 tunnel_port: str = "vxlan0", stp: bool = False, **params):
        params["inNamespace"] = True
        super().__init__(name, **params)
        self.controlIntf = None
        self.vtep, self.tunnel_port, self.stp = vtep, tunnel_port, stp
        self.mgmt_root, self.mgmt_here = mgmt_addresses(mgmt_index)
        self.ovs: PrivateOVS | None = None

    @property
    def mgmt_intf(self) -> str:
        """The root namespace's end of the management veth."""
        return f"{self.name}-mgmt"

    def start(self, controllers) -> None:
        self._shell(NO_IPV6, "ip link set lo up")
        self._mgmt()
        self.ovs = ovs = PrivateOVS(self.name, self.pid).start()
        uplinks: list[tuple[str, int]] = []
        vm_ports: list[tuple[str, int]] = []
        for intf, port in sorted(self.ports.items(), key=lambda item: item[1]):
            if intf.name == "lo":
                continue
            other = intf.link.intf2 if intf.link.intf1 is intf else intf.link.intf1
            (uplinks if isinstance(other.node, Switch) else vm_ports).append((intf.name, port))
        phy = ["add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev",
               "fail_mode=standalone", "other_config:disable-in-band=true",
               "--", "set", "interface", "br-phy", f"mtu_request={UNDERLAY_MTU}"]
        if self.stp:
            phy += ["--", "set", "bridge", "br-phy", "stp_enable=true", "other_config:stp-forward-delay=4"]
        for name, _ in uplinks:
            self._shell(f"ip link set dev {name} mtu {UNDERLAY_MTU} up")
            phy += ["--", "add-port", "br-phy", name]
        ovs.vsctl(*phy)
        self._shell(f"ip addr add {self.vtep} dev br-phy", "ip link set dev br-phy up")
        hv = ["add-br", self.name, "--", "set", "bridge", self.name, "datapath_type=netdev",
              "fail_mode=secure", "protocols=OpenFlow13", f"other_config:datapath-id={self.dpid}",
              "other_config:disable-in-band=true"]
        for name, port in vm_ports:
            hv += ["--", "add-port", self.name, name, "--", "set", "interface", name, f"ofport_request={port}"]
        hv += self.tunnel_port_args()
        targets = [f"tcp:{self.mgmt_root.ip}:{c.port}" for c in controllers]
        if targets:
            hv += ["--", "set-controller", self.name, *targets]
        ovs.vsctl(*hv)

    def tunnel_port_args(self) -> list[str]:
        """ovs-vsctl's commands that add the bridge's flow-based VXLAN port."""
        return ["--", "add-port", self.name, self.tunnel_port, "--", "set", "interface", self.tunnel_port,
                "type=vxlan", "options:remote_ip=flow", "options:key=flow", f"options:local_ip={self.vtep.ip}"]

    def _mgmt(self) -> None:
        # Made in the root namespace and its far end moved here: Mininet's
        # links cannot have an end outside a node.
        root = self.mgmt_intf
        self._root(f"ip link add {root} type veth peer name mgmt netns {self.pid}",
                   f"ip addr add {self.mgmt_root} dev {root}", f"ip link set {root} up")
        self._shell(f"ip addr add {self.mgmt_here} dev mgmt", "ip link set mgmt up")

    def attach(self, intf) -> None:
        assert self.ovs is not None
        self.ovs.vsctl("add-port", self.name, str(intf))
        self._shell(f"ip link set dev {intf} up")

    def detach(self, intf) -> None:
        assert self.ovs is not None
        self.ovs.vsctl("--if-exists", "del-port", self.name, str(intf))

    def connected(self) -> bool:
        return self.ovs is not None and "is_connected: true" in self.ovs.vsctl("list", "controller")

    def stop(self, deleteIntfs: bool = True) -> None:
        if self.ovs is not None:
            self.ovs.stop()
            self.ovs = None
        # The veth's root end goes with the namespace, which goes with the node's shell.
        super().stop(deleteIntfs)

    def _shell(self, *cmds: str) -> None:
        _sh(self.name, self.cmd, cmds)

    def _root(self, *cmds: str) -> None:
        _sh(self.name, partial(quietRun, shell=True), cmds)


class UnderlayBridge(Switch):
    """A switch of the underlay: a Linux bridge alone in a namespace, no OpenFlow."""

    def __init__(self, name: str, stp: bool = False, **params):
        params["inNamespace"] = True
        super().__init__(name, **params)
        self.controlIntf = None
        self.stp = stp

    def start(self, controllers) -> None:
        stp = (f" stp_state 1 forward_delay {STP_FORWARD_DELAY_CS} priority {STP_ROOT_PRIORITY}"
               if self.stp else "")
        cmds = [NO_IPV6, f"ip link add name br0 type bridge{stp}"]
        for intf in self.intfList():
            if intf.name != "lo":
                cmds += [f"ip link set dev {intf} mtu {UNDERLAY_MTU} master br0 up"]
        cmds += ["ip link set dev br0 up"]
        _sh(self.name, self.cmd, cmds)

    def connected(self) -> bool:
        return True     # nothing to connect to: that is the point


def _sh(where: str, run: Callable[[str], str], cmds: Iterable[str]) -> None:
    """Run shell commands one by one with ``run`` (a node's shell or the root's);
    the first that fails raises RuntimeError with its output."""
    for cmd in cmds:
        out = run(f"{cmd} || echo FAILED")
        if "FAILED" in out:
            raise RuntimeError(f"{where}: {cmd}: {out.replace('FAILED', '').strip()}")


def vtep_plan(hypervisors: Iterable[str]) -> dict[str, dict[str, str]]:
    """A VTEP address for each hypervisor, as a config's ``hypervisors:`` section
    (192.168.254.N, in the order given): for the demo and the tests."""
    names = list(hypervisors)
    if len(names) > 254:
        raise ValueError(f"at most 254 hypervisors get a VTEP of 192.168.254.0/24, not {len(names)}")
    return {name: {"vtep": f"192.168.254.{i}"} for i, name in enumerate(names, start=1)}


def vxlan_topo(topo: Topo, config: Config) -> None:
    """Make ``topo`` VXLAN mode's: its hypervisors ``Hypervisor`` nodes with the
    config's VTEPs, its other switches ``UnderlayBridge`` nodes.  Plain Python;
    raises ValueError naming a hypervisor without a VTEP."""
    hypervisors = list(topo.hypervisors())
    vteps = {h: spec.vtep for h, spec in config.hypervisors.items() if spec.vtep is not None}
    missing = [h for h in hypervisors if h not in vteps]
    if missing:
        raise ValueError(f"vxlan mode: no VTEP for hypervisor(s) {', '.join(missing)} "
                         f"(hypervisors.NAME.vtep in the config)")
    net = vtep_network(vteps[h] for h in hypervisors)
    switches = set(topo.switches())
    stp = has_loops(switches, [(a, b) for a, b in topo.links() if a in switches and b in switches])
    for index, name in enumerate(hypervisors):
        topo.nodeInfo(name).update(cls=Hypervisor, vtep=ipaddress.IPv4Interface(f"{vteps[name]}/{net.prefixlen}"),
                                   mgmt_index=index, tunnel_port=config.controller.fabric.tunnel_port, stp=stp)
    for name in switches.difference(hypervisors):
        topo.nodeInfo(name).update(cls=UnderlayBridge, stp=stp)

"""A namespace VM's network interface, moved between switches by hand.

The mechanics of a move, without any protocol: the hypervisor agent uses
them for migrations, the migration benchmark alone for an uncoordinated
move.  Everything done in the VM's namespace goes through pyroute2 or
``mnexec``, never the Mininet host's shell, which belongs to whoever drives
the host.

A switch's ports are where its ``Bridge`` says: in VLAN mode a bridge of the
machine's Open vSwitch, its ports in the root namespace; in VXLAN mode a
hypervisor's own Open vSwitch, its ports in the hypervisor's namespace
(underlay.Hypervisor).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from pyroute2 import IPRoute, netns

from .underlay import Hypervisor

# Moves into one switch at once (concurrent migrations) must not both take
# the same free interface name.
NAMING = threading.Lock()


class Bridge:
    """A switch's side of a VM's cable: the namespace its ports live in and the
    Open vSwitch that holds it; without ``pid``, the machine's."""

    def __init__(self, switch: str, pid: int | None = None, env: dict[str, str] | None = None):
        self.switch, self.pid, self.env = switch, pid, env
        self.ipr = IPRoute() if pid is None else _netlink_in(pid)

    @classmethod
    def of(cls, net, switch: str) -> Bridge:
        """Switch ``switch`` of Mininet ``net``'s."""
        node = net.get(switch)
        if isinstance(node, Hypervisor) and node.ovs is not None:
            return cls(switch, node.pid, node.ovs.env)
        return cls(switch)

    def close(self) -> None:
        self.ipr.close()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def vsctl(self, *args: str, check: bool = True) -> str:
        res = subprocess.run(["ovs-vsctl", "--timeout=5", *args], capture_output=True, text=True, timeout=10,
                             env=self.env)
        if check and res.returncode != 0:
            raise subprocess.CalledProcessError(res.returncode, res.args, res.stdout, res.stderr)
        return res.stdout

    def run(self, cmd: list[str]) -> None:
        """``cmd`` in the bridge's namespace, its failure ignored."""
        subprocess.run(cmd if self.pid is None else ["mnexec", "-a", str(self.pid), *cmd],
                       capture_output=True, timeout=5)

    def free_port_name(self, *also: Bridge) -> str:
        """The next ``<switch>-ethN`` no interface uses (here nor in the namespaces
        of ``also``), like Mininet names a switch's ports.

        Nor a port of the bridge: a moved VM's old port stays on it for a moment
        after its interface is gone (see TIDY_AFTER)."""
        ports = set(self.vsctl("list-ports", self.switch).split())
        n = 1
        while f"{self.switch}-eth{n}" in ports or any(b.ipr.link_lookup(ifname=f"{self.switch}-eth{n}")
                                                      for b in (self, *also)):
            n += 1
        return f"{self.switch}-eth{n}"

    def ofport(self, name: str, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.vsctl("get", "Interface", name, "ofport", check=False).strip()
            if out.lstrip("-").isdigit() and int(out) > 0:
                return int(out)
            time.sleep(0.05)
        raise TimeoutError(f"OVS gave {name} no OpenFlow port in {timeout:g} s")

    def remove(self, name: str) -> None:
        """Port ``name`` off the bridge and its interface gone."""
        self.vsctl("--if-exists", "del-port", self.switch, name, check=False)
        for index in self.ipr.link_lookup(ifname=name):
            self.ipr.link("del", index=index)


def remove_plugged(emu, plugged: set[tuple[str, str]]) -> None:
    """Every (switch, interface) in ``plugged`` removed (VMPorts collects them)."""
    for switch, name in sorted(plugged):
        with Bridge.of(emu.net, switch) as bridge:
            bridge.remove(name)
    plugged.clear()


class VMPorts:
    """A VM's network interface and the switch ports it can move between.

    The mechanics of a move without any protocol: the agent uses them for
    migrations, the benchmark alone for an uncoordinated move.
    ``plugged`` collects the (switch, interface) made, for remove_plugged().
    """

    def __init__(self, emu, vm: str, prefixlen: int, plugged: set[tuple[str, str]]):
        self.emu, self.vm, self.prefixlen, self.plugged = emu, vm, prefixlen, plugged
        self.host = emu.host(vm)
        self.ns = _netlink_in(self.host.pid)
        self.bridges: dict[str, Bridge] = {}
        self.intf = str(self.host.defaultIntf())      # keeps its name across moves
        self.stale: tuple[str, str] | None = None     # (switch, its end of the interface swap() replaced)

    def bridge(self, switch: str) -> Bridge:
        if switch not in self.bridges:
            self.bridges[switch] = Bridge.of(self.emu.net, switch)
        return self.bridges[switch]

    def close(self) -> None:
        self.ns.close()
        for bridge in self.bridges.values():
            bridge.close()

    def plug(self, switch: str, inside: str) -> Port:
        """A new port for the VM on ``switch``: the VM's end (named ``inside``) in its namespace, down."""
        br = self.bridge(switch)
        with NAMING:
            outside = br.free_port_name()
            br.ipr.link("add", ifname=outside, kind="veth", peer={"ifname": inside})
        self.plugged.add((switch, outside))
        br.ipr.link("set", index=br.ipr.link_lookup(ifname=inside)[0], net_ns_pid=self.host.pid)
        br.ipr.link("set", index=br.ipr.link_lookup(ifname=outside)[0], state="up")
        br.vsctl("add-port", switch, outside)
        # TCP over the userspace datapath needs checksums computed in software.
        self._in_vm(["ethtool", "-K", inside, "tx", "off"])
        br.run(["ethtool", "-K", outside, "tx", "off"])
        return Port(switch, outside, inside, br.ofport(outside))

    def unplug(self, port: Port) -> None:
        self.bridge(port.switch).remove(port.outside)
        self.plugged.discard((port.switch, port.outside))

    def swap(self, port: Port) -> None:
        """The VM's interface replaced by ``port``'s inside end, same name, MAC and IP; down until up()."""
        ns = self.ns
        [old] = ns.get_links(ifname=self.intf)
        mac = old.get_attr("IFLA_ADDRESS")
        here = self.emu.placement[self.vm]
        peer = _peer_name(self.bridge(here).ipr, old)
        self.stale = (here, peer) if peer else None
        ns.link("del", index=old["index"])
        index = ns.link_lookup(ifname=port.inside)[0]
        ns.link("set", index=index, ifname=self.intf, address=mac)
        ns.addr("add", index=index, address=self.host.IP(), prefixlen=self.prefixlen)
        self.emu.placement[self.vm] = port.switch

    def up(self) -> None:
        self.ns.link("set", index=self.ns.link_lookup(ifname=self.intf)[0], state="up")

    def tidy(self) -> None:
        """The old port, gone with its veth, off its bridge too; after the VM runs again:
        ovs-vsctl waits for the switch."""
        if self.stale:
            switch, name = self.stale
            self.bridge(switch).vsctl("--if-exists", "del-port", switch, name, check=False)
            self.plugged.discard(self.stale)
            self.stale = None

    @contextlib.contextmanager
    def frozen(self):
        """Every process of the VM stopped (SIGSTOP) for the block."""
        pids = _processes_in(self.host.pid)
        _signal(pids, signal.SIGSTOP)
        try:
            yield
        finally:
            _signal(pids, signal.SIGCONT)

    def mute(self) -> None:
        """No IPv6 on the VM's interface: Linux's chatter when a link comes up
        (router solicitations, MLD reports, DAD) would announce the VM."""
        self._in_vm(["sysctl", "-q", "-w", f"net.ipv6.conf.{self.intf}.disable_ipv6=1"])

    def announce(self) -> None:
        """One gratuitous ARP from the VM, as a guest does when its link comes up."""
        self._in_vm(["arping", "-c", "1", "-U", "-I", self.intf, self.host.IP()])

    def _in_vm(self, cmd: list[str]) -> None:
        subprocess.run(["mnexec", "-a", str(self.host.pid), *cmd], capture_output=True, timeout=5)


class Port:
    def __init__(self, switch: str, outside: str, inside: str, ofport: int):
        self.switch, self.outside, self.inside, self.ofport = switch, outside, inside, ofport


def _netlink_in(pid: int) -> IPRoute:
    """A netlink socket in the network namespace of process ``pid``.

    Made by switching only this thread into the namespace (setns is per
    thread) and back: pyroute2's NetNS forks a helper instead, which runs the
    process's signal handlers (``sdnvirt topo``'s SIGTERM) when it is ended.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        netns.setns(f"/proc/{pid}/ns/net", flags=0)
        return IPRoute()
    finally:
        netns.setns(home, flags=0)
        os.close(home)


def _peer_name(ipr: IPRoute, link) -> str | None:
    """The switch's end of a VM's veth, by the peer's interface index (``ipr`` in the switch's namespace)."""
    peer = link.get_attr("IFLA_LINK")
    found = ipr.get_links(peer) if peer else []
    return found[0].get_attr("IFLA_IFNAME") if found else None


def _processes_in(pid: int) -> list[int]:
    """Every process in the network namespace of process ``pid``: the VM's.

    Refused for our own namespace (a host whose shell died and whose pid
    went to another process): that would stop the switches and everything else.
    """
    ns = os.readlink(f"/proc/{pid}/ns/net")
    if ns == os.readlink("/proc/self/ns/net"):
        raise RuntimeError(f"process {pid} is in this process's network namespace, not a VM's")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns/net") == ns:
                    found.append(int(entry.name))
            except OSError:
                pass     # gone meanwhile
    return found


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

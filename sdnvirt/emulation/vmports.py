"""A namespace VM's network interface, moved between switches by hand.

The mechanics of a move, without any protocol: the hypervisor agent uses
them for migrations, the migration benchmark alone for an uncoordinated
move.  Everything done in the VM's namespace goes through pyroute2 or
``mnexec``, never the Mininet host's shell, which belongs to whoever drives
the host.
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

# Moves into one switch at once (concurrent migrations) must not both take
# the same free interface name.
NAMING = threading.Lock()


class VMPorts:
    """A VM's network interface and the switch ports it can move between.

    The mechanics of a move without any protocol: the agent uses them for
    migrations, the benchmark alone for an uncoordinated move.
    ``plugged`` collects the switch-side interfaces made, for clean-up.
    """

    def __init__(self, emu, vm: str, prefixlen: int, plugged: set[str]):
        self.emu, self.vm, self.prefixlen, self.plugged = emu, vm, prefixlen, plugged
        self.host = emu.host(vm)
        self.ns = _netlink_in(self.host.pid)
        self.ipr = IPRoute()
        self.intf = str(self.host.defaultIntf())      # keeps its name across moves
        self.stale: str | None = None                 # the switch end of the interface swap() replaced

    def close(self) -> None:
        self.ns.close()
        self.ipr.close()

    def plug(self, switch: str, inside: str) -> Port:
        """A new port for the VM on ``switch``: the VM's end (named ``inside``) in its namespace, down."""
        with NAMING:
            outside = free_port_name(self.ipr, switch)
            self.ipr.link("add", ifname=outside, kind="veth", peer={"ifname": inside})
        self.plugged.add(outside)
        self.ipr.link("set", index=self.ipr.link_lookup(ifname=inside)[0], net_ns_pid=self.host.pid)
        self.ipr.link("set", index=self.ipr.link_lookup(ifname=outside)[0], state="up")
        subprocess.run(["ovs-vsctl", "--timeout=5", "add-port", switch, outside], check=True,
                       capture_output=True, timeout=10)
        # TCP over the userspace datapath needs checksums computed in software.
        self._in_vm(["ethtool", "-K", inside, "tx", "off"])
        subprocess.run(["ethtool", "-K", outside, "tx", "off"], capture_output=True, timeout=5)
        return Port(switch, outside, inside, ofport_of(outside))

    def unplug(self, port: Port) -> None:
        subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-port", port.switch, port.outside],
                       capture_output=True, timeout=10)
        for index in self.ipr.link_lookup(ifname=port.outside):
            self.ipr.link("del", index=index)
        self.plugged.discard(port.outside)

    def swap(self, port: Port) -> None:
        """The VM's interface replaced by ``port``'s inside end, same name, MAC and IP; down until up()."""
        ns = self.ns
        [old] = ns.get_links(ifname=self.intf)
        mac = old.get_attr("IFLA_ADDRESS")
        self.stale = _peer_name(self.ipr, old)
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
            subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-port", self.stale],
                           capture_output=True, timeout=10)
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


def free_port_name(ipr: IPRoute, switch: str) -> str:
    """The next ``<switch>-ethN`` no interface uses, like Mininet names a switch's ports.

    Nor a port of the bridge: a moved VM's old port stays on it for a moment
    after its interface is gone (see TIDY_AFTER)."""
    ports = set(subprocess.run(["ovs-vsctl", "--timeout=5", "list-ports", switch], check=True,
                               capture_output=True, text=True, timeout=10).stdout.split())
    n = 1
    while f"{switch}-eth{n}" in ports or ipr.link_lookup(ifname=f"{switch}-eth{n}"):
        n += 1
    return f"{switch}-eth{n}"


def _peer_name(ipr: IPRoute, link) -> str | None:
    """The root-namespace end of a VM's veth, by the peer's interface index."""
    peer = link.get_attr("IFLA_LINK")
    found = ipr.get_links(peer) if peer else []
    return found[0].get_attr("IFLA_IFNAME") if found else None


def ofport_of(name: str, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ovs-vsctl", "--timeout=5", "get", "Interface", name, "ofport"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        if out.lstrip("-").isdigit() and int(out) > 0:
            return int(out)
        time.sleep(0.05)
    raise TimeoutError(f"OVS gave {name} no OpenFlow port in {timeout:g} s")


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

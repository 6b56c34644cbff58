"""Start a Mininet fabric with the config's VMs as hosts, for ``sdnvirt topo``.

The fabric's switches are Open vSwitch bridges (userspace datapath unless
the config says ``emulation.datapath: kernel``) in secure fail mode, speaking
OpenFlow 1.3 to the controller; every VM of the config becomes a Mininet
host with the VM's name, MAC and IP, plugged into its hypervisor switch.

Everything up to creating the first Mininet object (topology, placement,
validation) is plain Python and runs without root.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from functools import partial
from typing import Any, NamedTuple

from mininet.net import Mininet
from mininet.node import OVSSwitch, RemoteController
from mininet.topo import Topo

from ..api.client import Client
from ..api.token import TokenError, read_token
from ..config import Config
from . import privateovs
from .agent import Agent
from .lock import fabric_lock
from .qemu import QemuVM, start_guests
from .topologies import fattree, leafspine, single
from .underlay import Hypervisor, UnderlayBridge, vxlan_topo
from .vmports import Bridge

# Importing mininet.log makes MininetLogger the class of every logger
# created afterwards in the process: each would get its own newline-less
# stderr handler and level OUTPUT (INFO swallowed, warnings doubled).
# Mininet's own logger already exists, so undo that for everyone else.
if logging.getLoggerClass() is not logging.Logger:
    logging.setLoggerClass(logging.Logger)

log = logging.getLogger(__name__)

# Linux interface names are at most 15 characters; a VM's interface is
# "<name>-eth0".
MAX_VM_NAME = 10


class TopologyKind(NamedTuple):
    cls: type[Topo]
    # parsed `sdnvirt topo` arguments (--spines, --leaves, --k) -> Topo parameters
    params: Callable[[argparse.Namespace], dict[str, Any]]


TOPOLOGIES: dict[str, TopologyKind] = {
    "single": TopologyKind(single.SingleTopo, lambda args: {}),
    "leafspine": TopologyKind(leafspine.LeafSpineTopo,
                              lambda args: {"spines": args.spines, "leaves": args.leaves}),
    "fattree": TopologyKind(fattree.FatTreeTopo, lambda args: {"k": args.k}),
}

# The launcher adds the config's VMs itself: no default h1, h2, ...
_NO_DEFAULT_HOSTS = {
    "single": {"hosts": 0},
    "leafspine": {"hosts_per_leaf": 0},
    "fattree": {"hosts_per_edge": 0},
}


def topo_params(name: str, args: argparse.Namespace | Mapping[str, Any] | None) -> dict[str, Any]:
    """The Topo parameters for topology ``name`` from parsed CLI arguments.

    A mapping is taken as the parameters themselves; None means the defaults.
    """
    kind = _kind(name)
    if args is None:
        return {}
    if isinstance(args, Mapping):
        return dict(args)
    return kind.params(args)


def build_topo(name: str, args: argparse.Namespace | Mapping[str, Any] | None = None) -> Topo:
    """Build topology ``name`` (in memory only, no root needed) without default hosts.

    ``args`` is either the parsed ``sdnvirt topo`` arguments or a dict of
    Topo parameters (see topo_params()).
    Raises ValueError for an unknown name or an impossible shape.
    """
    kind = _kind(name)
    params = {**topo_params(name, args), **_NO_DEFAULT_HOSTS[name]}
    try:
        return kind.cls(**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for topology {name}: {err}") from None


def _kind(name: str) -> TopologyKind:
    try:
        return TOPOLOGIES[name]
    except KeyError:
        raise ValueError(f"unknown topology {name!r}; known: {', '.join(sorted(TOPOLOGIES))}") from None


def place_vms(config: Config, topo: Topo) -> dict[str, str]:
    """Decide the hypervisor of every VM of the config: {vm name: switch name}.

    A VM with a ``host`` goes there, which must be one of topo.hypervisors();
    VMs without one are spread round-robin over the hypervisors, in the
    order of tenant and VM names.  Raises ValueError naming the VM when it
    cannot be placed or cannot be a Mininet host.
    """
    hypervisors = list(topo.hypervisors())
    taken = set(topo.nodes())
    placement: dict[str, str] = {}
    next_hv = 0
    for tname, tenant in sorted(config.tenants.items()):
        for vname, vm in sorted(tenant.vms.items()):
            where = f"VM {vname} (tenant {tname})"
            if len(vname) > MAX_VM_NAME:
                raise ValueError(f"{where}: the name is longer than {MAX_VM_NAME} characters, "
                                 f"too long for the emulation's interface names ({vname}-eth0)")
            if vname in taken:
                raise ValueError(f"{where}: the name is already used by a node of the topology")
            if vm.host is None:
                if not hypervisors:
                    raise ValueError(f"{where}: the topology has no hypervisor to put it on")
                placement[vname] = hypervisors[next_hv % len(hypervisors)]
                next_hv += 1
            elif vm.host in hypervisors:
                placement[vname] = vm.host
            else:
                raise ValueError(f"{where}: host {vm.host} is not a hypervisor of this topology "
                                 f"(hypervisors: {', '.join(hypervisors)})")
    return placement


class Emulation:
    """A running Mininet fabric with the config's VMs; a context manager.

    ``with Emulation(cfg, "leafspine", {"spines": 2, "leaves": 4}) as emu:``
    starts it (root needed) and stops it on exit.
    """

    def __init__(self, config: Config, topo_name: str, topo_params: Mapping[str, Any] | None = None,
                 controller_port: int = 6653, controller_ip: str = "127.0.0.1",
                 controllers: Sequence[tuple[str, int]] = ()):
        """``controllers``: (ip, port) of every instance of a cluster, which each
        switch connects to; without them, the one at controller_ip:controller_port."""
        self.config = config
        self.topo_name = topo_name
        self.topo_params = dict(topo_params or {})
        self.controllers = list(controllers) or [(controller_ip, controller_port)]
        self.controller_ip, self.controller_port = self.controllers[0]
        self.topo: Topo | None = None
        self.placement: dict[str, str] = {}
        self.net: Mininet | None = None
        self.guests: dict[str, QemuVM] = {}     # the qemu VMs, by name
        self._lock = ExitStack()

    # -- building (no root) --------------------------------------------------
    def build_topo(self) -> Topo:
        """The topology with one host per VM added; validates the placement.

        Pure Python: raises ValueError before anything is created on the system.
        """
        topo = build_topo(self.topo_name, self.topo_params)
        placement = place_vms(self.config, topo)
        for _, tenant in sorted(self.config.tenants.items()):
            for vname, vm in sorted(tenant.vms.items()):
                if vm.kind != "netns":
                    continue    # started by start() once the switches are
                topo.addHost(vname, mac=vm.mac, ip=f"{vm.ip}/{tenant.subnet.prefixlen}")
                topo.addLink(vname, placement[vname])
        if self.config.controller.fabric.encapsulation == "vxlan":
            vxlan_topo(topo, self.config)
        self.topo, self.placement = topo, placement
        return topo

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> Emulation:
        if self.net is not None:
            raise RuntimeError("the emulation is already started")
        topo = self.build_topo()
        if os.geteuid() != 0:
            # Mininet itself would print an error and exit(1).
            raise PermissionError("the emulation needs root (Mininet creates namespaces and OVS bridges)")
        datapath = "user" if self.config.emulation.datapath == "user" else "kernel"
        switch = partial(OVSSwitch, datapath=datapath, protocols="OpenFlow13", failMode="secure")
        log.info("starting topology %s %s (%s datapath) with %d VMs, controllers %s",
                 self.topo_name, self.topo_params, datapath, len(self.placement),
                 " ".join(f"{ip}:{port}" for ip, port in self.controllers))
        self._lock.enter_context(fabric_lock())
        try:
            for name in privateovs.sweep():
                log.warning("removed the Open vSwitch of hypervisor %s left by an earlier run", name)
            # build=False then build(): same as build=True, but self.net is
            # set first so that a failure half-way through is still cleaned up.
            self.net = Mininet(topo, switch=switch, controller=None, autoSetMacs=False, build=False)
            for i, (ip, port) in enumerate(self.controllers):
                self.net.addController(f"c{i}", controller=_Controller, ip=ip, port=port)
            self.net.build()
            self.net.start()
            for host in self.net.hosts:
                _boot(host)
            self.guests = start_guests(self.config, self.placement, partial(Bridge.of, self.net))
        except BaseException:
            self.stop()
            raise
        return self

    def plug(self, name: str, hypervisor: str, mac: str, ip: str):
        """Plug a host that no config declares into a hypervisor's free port.

        The controller must treat it as a stranger: this is how tests bring
        a rogue machine onto the fabric.
        """
        if self.net is None:
            raise RuntimeError("the emulation is not started")
        host = self.net.addHost(name, mac=mac, ip=ip)
        switch = self.net.get(hypervisor)
        link = self.net.addLink(host, switch)
        switch.attach(link.intf2)
        host.configDefault()
        _boot(host)
        return host

    def stop(self) -> None:
        net, self.net = self.net, None
        try:
            guests, self.guests = self.guests, {}
            for guest in guests.values():
                guest.stop()
            if net is not None:
                log.info("stopping topology %s", self.topo_name)
                for node in net.values():
                    if node.shell is not None and node.shell.poll() is not None:
                        # Mininet would wait forever for the prompt of a shell
                        # that died (it keeps the pty open itself); the node's
                        # namespace and interfaces died with it.
                        log.warning("node %s's shell is gone; skipping its commands", node.name)
                        node.cmd = _gone
                net.stop()
        finally:
            self._lock.close()

    def __enter__(self) -> Emulation:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- lookups -------------------------------------------------------------
    def host(self, vm_name: str):
        """The Mininet Host of a VM."""
        if self.net is None:
            raise RuntimeError("the emulation is not started")
        if vm_name not in self.placement:
            raise KeyError(vm_name)
        return self.net.get(vm_name)

    def hypervisor(self, vm_name: str) -> str:
        """The name of the switch a VM is plugged into."""
        if vm_name not in self.placement:
            raise KeyError(vm_name)
        return self.placement[vm_name]


def _gone(*_args, **_kwargs) -> str:
    return ""


def _boot(host) -> None:
    for intf in host.intfList():
        # TCP over the OVS userspace datapath never connects with checksum
        # offload on the veth (ping works either way).
        out = host.cmd(f"ethtool -K {intf} tx off >/dev/null 2>&1 || echo FAILED")
        if "FAILED" in out:
            log.warning("%s: ethtool -K %s tx off failed", host, intf)
    # Like a VM that has just booted: one gratuitous ARP.
    host.cmd(f"arping -c 1 -U -I {host.defaultIntf()} {host.IP()} >/dev/null 2>&1 &")


def _flow_count(switch) -> int | None:
    """Number of flows in a switch's bridge, or None if ovs-ofctl cannot tell."""
    # A VXLAN mode hypervisor's bridge is in its own Open vSwitch.
    env = switch.ovs.env if isinstance(switch, Hypervisor) and switch.ovs else None
    try:
        res = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch.name],
                             capture_output=True, text=True, timeout=5, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return sum(1 for line in res.stdout.splitlines() if "actions=" in line)


def wait_connected(net: Mininet, timeout: float = 20.0, interval: float = 0.2,
                   cancel: threading.Event | None = None) -> None:
    """Wait until every switch has at least one flow, which the controller
    installs when a switch connects; raise TimeoutError naming the others.

    (ovs-vsctl's Controller is_connected lags by seconds, so it is not used.)
    Returns early, without error, once ``cancel`` is set.
    """
    deadline = time.monotonic() + timeout
    waiting = [sw for sw in net.switches if not isinstance(sw, UnderlayBridge)]
    while True:
        waiting = [sw for sw in waiting if not _flow_count(sw)]
        if not waiting or (cancel is not None and cancel.is_set()):
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no flows after {timeout:g}s (controller not connected?) "
                               f"on: {', '.join(sw.name for sw in waiting)}")
        time.sleep(min(interval, left))


def api_client(config: Config, controller_ip: str) -> Client:
    """A client of the controller's API for the hypervisor agent, with the
    token the daemon wrote (OSError or TokenError if it cannot be read)."""
    api = config.controller.api
    host = controller_ip if api.address.is_unspecified else str(api.address)
    host = f"[{host}]" if ":" in host else host
    return Client(f"http://{host}:{api.port}", read_token(config.controller.token_path))


def run_topo(config: Config, topo_name: str, topo_params: Mapping[str, Any] | None,
             controller_port: int = 6653, cli: bool = False, controller_ip: str = "127.0.0.1",
             connect_timeout: float = 20.0, controllers: Sequence[tuple[str, int]] = ()) -> None:
    """``sdnvirt topo``: run the fabric in the foreground until the Mininet
    CLI exits (cli=True) or SIGTERM/SIGINT arrives (cli=False); always stop it."""
    # Mininet logs through its own stderr handler; do not repeat its lines
    # through the root logger's.
    logging.getLogger("mininet").propagate = False
    emu = Emulation(config, topo_name, topo_params, controller_port=controller_port,
                    controller_ip=controller_ip, controllers=controllers)
    stopping = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if not cli:
        # Installed before start() so that a signal during start-up still
        # leads to a clean stop.
        def on_signal(signum, _frame):
            log.info("got %s, stopping", signal.Signals(signum).name)
            stopping.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        emu.start()
        assert emu.net is not None
        try:
            wait_connected(emu.net, timeout=connect_timeout, cancel=stopping)
            if not stopping.is_set():
                log.info("all %d switches have flows from the controller", len(emu.net.switches))
        except TimeoutError as err:
            log.warning("%s; carrying on, the controller may start later", err)
        for vm, hv in sorted(emu.placement.items()):
            log.info("VM %s on %s", vm, hv)
        try:
            agent = Agent(emu, api_client(config, controller_ip), config).start()
        except (OSError, TokenError) as err:
            agent = None
            log.warning("no hypervisor agent, so no migrations: cannot read the controller's API token: %s", err)
        try:
            if cli:
                from .console import Console
                Console(emu.net, agent, timeout=config.migration.timeout + 5)
            else:
                log.info("running; stop with SIGTERM or Ctrl-C")
                while not stopping.wait(1.0):
                    pass
        finally:
            if agent is not None:
                agent.stop()
    finally:
        emu.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Controller(RemoteController):
    """Mininet's remote controller, checked with a plain connect.

    Mininet's own check runs telnet in a shell and decodes what comes back as
    UTF-8; an OpenFlow controller answers with a binary HELLO whose random xid
    is often not UTF-8, and the whole start fails with UnicodeDecodeError."""

    def checkListening(self) -> None:
        try:
            socket.create_connection((self.ip, self.port), timeout=2).close()
        except OSError as err:
            log.warning("unable to contact the remote controller at %s:%d: %s", self.ip, self.port, err)

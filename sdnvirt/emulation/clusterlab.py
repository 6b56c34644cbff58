"""Several controller processes on one etcd driving one Mininet fabric, every
switch connected to all of them: what the cluster's integration tests and
``bench/ha.py`` share."""

from __future__ import annotations

import copy
import signal
from collections.abc import Iterable
from pathlib import Path

from .. import config
from .etcdlab import EtcdLab
from .lab import ControllerProcess, free_port, wait_for
from .launcher import Emulation, wait_connected
from .relay import Relay


class ClusterLab:
    def __init__(self, workdir: str | Path, doc: dict, topo: str, params: dict, size: int = 3,
                 lease_ttl: float = 2.0, relayed: Iterable[str] = ()):
        """``doc``: the config every instance shares; each gets its name, its own
        ports and the etcd endpoints added.  The instances named in ``relayed``
        reach etcd through relays (``relays[name]``) that can cut them off it."""
        self.workdir = Path(workdir)
        self.etcd = EtcdLab(3, self.workdir / "etcd")
        (self.workdir / "etcd").mkdir(parents=True, exist_ok=True)
        self.names = [f"ctl{i}" for i in range(size)]
        self.relays = {name: [Relay(("127.0.0.1", m.client)) for m in self.etcd.members] for name in relayed}
        self.docs = []
        for name in self.names:
            d = copy.deepcopy(doc)
            ctl = d.setdefault("controller", {})
            ctl["openflow"] = {**ctl.get("openflow", {}), "port": free_port()}
            endpoints = [r.url for r in self.relays[name]] if name in self.relays else self.etcd.endpoints
            ctl["cluster"] = {"name": name, "etcd": endpoints, "lease_ttl": lease_ttl}
            self.docs.append(d)
        self.ctls = {name: ControllerProcess(d, self.workdir / name) for name, d in zip(self.names, self.docs,
                                                                                        strict=True)}
        self.cfg = config.parse(self.docs[0])
        self.emu = Emulation(self.cfg, topo, params,
                             controllers=[("127.0.0.1", c.port) for c in self.ctls.values()])

    def start(self, timeout: float = 30.0) -> ClusterLab:
        self.etcd.start()
        for ctl in self.ctls.values():
            ctl.start()
        self.emu.start()
        assert self.emu.net is not None
        wait_connected(self.emu.net, timeout=timeout)
        if not wait_for(self.settled, timeout, 0.2):
            raise TimeoutError(f"switches without exactly one master: {self.masters()}")
        return self

    def stop(self) -> None:
        self.emu.stop()
        for ctl in self.ctls.values():
            ctl.stop(signal.SIGKILL)
        for relay in (r for relays in self.relays.values() for r in relays):
            relay.close()
        self.etcd.close()

    def alive(self) -> list[str]:
        return [n for n, c in self.ctls.items() if c.proc is not None and c.proc.poll() is None]

    def status(self, name: str) -> dict:
        cluster: dict = self.ctls[name].api().get("/status")["cluster"]
        return cluster

    def masters(self, views: dict[str, dict] | None = None) -> dict[str, list[str]]:
        """By dpid: the live instances that hold MASTER at the switch, as each says
        (``views``: each live instance's cluster status, if already read)."""
        found: dict[str, list[str]] = {}
        for name in self.alive():
            for dpid, role in (views[name] if views else self.status(name))["roles"].items():
                found.setdefault(dpid, [])
                if role == "master":
                    found[dpid].append(name)
        return found

    def settled(self) -> bool:
        """Every switch has exactly one master, and every live instance is connected
        to all of them and has found every link between them: until then, each link
        found moves paths, and the instances move theirs each on its own switches,
        with no order between them."""
        assert self.emu.net is not None
        switches = set(self.emu.net.switches)
        links = sum(1 for link in self.emu.net.links if {link.intf1.node, link.intf2.node} <= switches)
        views = {name: self.ctls[name].api().get("/status") for name in self.alive()}
        masters = self.masters({name: v["cluster"] for name, v in views.items()})
        return (len(masters) == len(switches) and all(len(m) == 1 for m in masters.values())
                and all(v["links"] == links for v in views.values()))

    def taken_over(self, dpids: Iterable[str], names: Iterable[str], cursors: dict[str, int],
                   timeout: float) -> dict[str, float]:
        """When one of ``names`` became MASTER of each of ``dpids`` after its cursor (those that
        did, each waited for at most ``timeout`` s per instance): wall-clock times by dpid."""
        taken = {}
        for dpid in dpids:
            for name in names:
                e = self.ctls[name].wait_event("role_changed", {"dpid": dpid, "role": "master"}, cursors[name],
                                               timeout=timeout)
                if e is not None:
                    taken[dpid] = e["time"]
                    break
        return taken

    def master_of(self, switch: str) -> str:
        assert self.emu.net is not None
        dpid = self.emu.net.get(switch).dpid
        (name,) = self.masters()[dpid]
        return name

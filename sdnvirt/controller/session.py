"""One connected switch: everything the controller knows of it, in one place.

A session is made when a switch finishes its handshake and dropped when its
connection dies; a switch that reconnects gets a new one and is read afresh.
What outlives a connection is kept elsewhere: the fabric's links, the VMs'
places, the counters' running totals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from ..plan.flows import Flow, Group, Meter
from ..plan.reconcile import Batches, Tables
from . import ofmsg

# What is read of a switch to know what it holds.
READS = ("meters", "groups", "flows")


class Role(Enum):
    """The controller's OpenFlow role at this switch: EQUAL without a cluster
    (OpenFlow's default, full access); in a cluster SLAVE until the switch
    answers this instance's MASTER request (``roles``)."""

    EQUAL = "equal"
    MASTER = "master"
    SLAVE = "slave"


@dataclass
class SwitchSession:
    dp: Any                        # os-ken's Datapath
    dpid: int
    name: str = ""
    role: Role = Role.EQUAL
    # What the switch holds, as last read or written; None until the first
    # read of that kind has come back complete.
    installed_flows: dict[tuple[Any, ...], Flow] | None = None
    installed_groups: dict[int, Group] | None = None
    installed_meters: dict[int, Meter] | None = None
    # Bumped on every re-read of the flows: a reconcile planned against an
    # older read does not overwrite what the newer read found.
    generation: int = 0
    # What it holds was the desired state at the end of its last round:
    # the next round diffs only the keys the engine says changed since.
    synced: bool = False
    # The last reconcile request its confirmed changes covered, since it was last read.
    covered: int = 0
    # Came back holding our flows: left as it is until the fabric settles.
    warm: bool = False
    # LLDP and probes sent to or through it may have been dropped for lack of
    # flows: sent again once its flows are in.
    unannounced: bool = True
    last_resync: float = float("-inf")
    locate_due: tuple[float, float] | None = None     # (next probes, step)
    # vxlan mode, a hypervisor: whether its tunnel port was up at the last look (None: not looked yet).
    tunnel_up: bool | None = None
    # Multipart replies being assembled, by request xid: (what, parts so far).
    multipart: dict[int, tuple[str, list]] = field(default_factory=dict)
    # What the switch counted, from the periodic stats replies.
    table_flows: dict[int, int] = field(default_factory=dict)
    flow_counters: dict[int, list] = field(default_factory=dict)     # table -> flow stats

    @property
    def ready(self) -> bool:
        """Its flows, groups and meters have been read: it can be reconciled."""
        return None not in (self.installed_flows, self.installed_groups, self.installed_meters)

    @property
    def writable(self) -> bool:
        return self.role is not Role.SLAVE

    def reconcilable(self, settled: bool) -> bool:
        """Read, ours to write, and not a warm switch while the fabric settles."""
        return self.ready and self.writable and not (self.warm and not settled)

    def tables(self) -> Tables:
        flows, groups, meters = self.installed_flows, self.installed_groups, self.installed_meters
        assert flows is not None and groups is not None and meters is not None, "read the switch first"
        return Tables(dict(flows), dict(groups), dict(meters))

    def live(self) -> Tables:
        """What it holds, not copied: read it, do not change it (``apply`` does)."""
        flows, groups, meters = self.installed_flows, self.installed_groups, self.installed_meters
        assert flows is not None and groups is not None and meters is not None, "read the switch first"
        return Tables(flows, groups, meters)

    def apply(self, batches: Batches) -> None:
        """The switch has done ``batches``: it holds their entries, the very objects."""
        held = self.live()
        for batch in batches.phases.values():
            held.apply(batch)

    def read_requests(self) -> list[Any]:
        """Requests for everything the switch holds; a newer read replaces an unfinished one."""
        self.multipart = {x: e for x, e in self.multipart.items() if e[0] not in READS}
        self.installed_meters = self.installed_groups = self.installed_flows = None
        self.generation += 1
        self.synced = False
        self.covered = 0
        dp = self.dp
        reqs = [parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL), parser.OFPGroupDescStatsRequest(dp, 0),
                parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch())]
        for req, what in zip(reqs, READS, strict=True):
            self.request(req, what)
        return reqs

    def read(self, what: str, body: list) -> None:
        """A whole reply to one of ``read_requests``."""
        if what == "meters":
            self.installed_meters = {m.meter_id: m for m in map(ofmsg.installed_meter, body)}
        elif what == "groups":
            self.installed_groups = {g.group_id: g for g in map(ofmsg.installed_group, body)}
        else:
            self.installed_flows = {f.key: f for f in map(ofmsg.installed_flow, body)}

    def request(self, msg: Any, what: str) -> None:
        """Remember a multipart request so its reply parts are put together."""
        self.dp.set_xid(msg)
        self.multipart[msg.xid] = (what, [])

    def reply_part(self, msg: Any, more: bool) -> tuple[str, list] | None:
        """Add a reply's body; (what was asked, whole body) once the last part is in."""
        entry = self.multipart.get(msg.xid)
        if entry is None:
            return None
        entry[1].extend(msg.body)
        if more:
            return None
        return self.multipart.pop(msg.xid)

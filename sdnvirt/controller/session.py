"""One connected switch: everything the controller knows of it, in one place.

A session is made when a switch finishes its handshake and dropped when its
connection dies; a switch that reconnects gets a new one and is read afresh.
Nothing else in the controller is keyed by dpid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..plan.reconcile import Tables


class Role(Enum):
    """The controller's OpenFlow role at this switch (one controller: always master)."""

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
    installed_flows: dict | None = None
    installed_groups: dict | None = None
    installed_meters: dict | None = None
    # Bumped on every re-read of the flows: a reconcile planned against an
    # older read does not overwrite what the newer read found.
    generation: int = 0
    # Came back holding our flows: left as it is until the fabric settles.
    warm: bool = False
    # LLDP and probes sent to or through it may have been dropped for lack of
    # flows: sent again once its flows are in.
    unannounced: bool = True
    last_resync: float = float("-inf")
    locate_due: tuple[float, float] | None = None     # (next probes, step)
    # Multipart replies being assembled, by request xid: (what, parts so far).
    multipart: dict[int, tuple[str, list]] = field(default_factory=dict)
    # What the switch counted, from the periodic stats replies.
    table_flows: dict[int, int] = field(default_factory=dict)
    flow_counters: dict[int, list] = field(default_factory=dict)     # table -> flow stats

    @property
    def ready(self) -> bool:
        """Its flows, groups and meters have been read: it can be reconciled."""
        return None not in (self.installed_flows, self.installed_groups, self.installed_meters)

    def tables(self) -> Tables:
        assert self.ready
        return Tables(dict(self.installed_flows), dict(self.installed_groups), dict(self.installed_meters))

    def installed(self, tables: Tables) -> None:
        self.installed_flows, self.installed_groups, self.installed_meters = tables.flows, tables.groups, tables.meters

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

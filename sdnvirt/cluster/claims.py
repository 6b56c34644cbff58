"""Which instance masters which switch: pure decisions over the cluster's view.

Each live instance's record lists the switches it is connected to. A switch
is owned by the instance that rendezvous hashing (highest random weight)
picks among those connected to it: every instance computes the same owner
from the same view, an instance joining takes only its share of switches,
and one leaving moves only its own. Ownership is taken in etcd by a claim
(a key per switch, created only if absent, bound to the owner's lease) and
the claim's revision is the OpenFlow generation_id the owner sends with its
MASTER role request, so a switch itself refuses an older master.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PREFIX = "/sdnvirt/cluster/"
MEMBERS = PREFIX + "members/"
SWITCHES = PREFIX + "switches/"
LEADER = PREFIX + "leader"
LLDP_SECRET = PREFIX + "lldp-secret"
# A backend's health as the master of its switch, which alone probes it, found it.
HEALTH = PREFIX + "health/"


def member_key(name: str) -> str:
    return MEMBERS + name


def switch_key(dpid: int) -> str:
    return f"{SWITCHES}{dpid:016x}"


def health_key(key: tuple[str, str, str]) -> str:
    """The etcd key of a backend's health key (tenant, service, vm:port)."""
    return HEALTH + "/".join(key)


@dataclass(frozen=True)
class Claim:
    owner: str
    revision: int       # the claim's revision: the owner's generation_id at the switch


@dataclass
class View:
    """What the cluster's keys say, as last read or watched."""

    members: dict[str, frozenset[int]] = field(default_factory=dict)    # live instance -> switches it reaches
    claims: dict[int, Claim] = field(default_factory=dict)
    leader: str | None = None
    health: dict[tuple[str, str, str], bool] = field(default_factory=dict)     # backend -> up
    revision: int = 0

    def apply(self, key: str, value: object, revision: int) -> None:
        """One key's new value (None: deleted) from a listing or a watch."""
        self.revision = max(self.revision, revision)
        if key.startswith(MEMBERS):
            name = key[len(MEMBERS):]
            if isinstance(value, dict):
                self.members[name] = frozenset(int(d, 16) for d in value.get("switches", []))
            else:
                self.members.pop(name, None)
        elif key.startswith(SWITCHES):
            dpid = int(key[len(SWITCHES):], 16)
            if isinstance(value, dict):
                self.claims[dpid] = Claim(str(value["owner"]), revision)
            else:
                self.claims.pop(dpid, None)
        elif key == LEADER:
            self.leader = str(value["name"]) if isinstance(value, dict) else None
        elif key.startswith(HEALTH):
            tenant, service, backend = key[len(HEALTH):].split("/", 2)
            if isinstance(value, dict):
                self.health[tenant, service, backend] = bool(value["up"])
            else:
                self.health.pop((tenant, service, backend), None)


def weight(member: str, dpid: int) -> int:
    digest = hashlib.blake2b(f"{member}/{dpid:016x}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(dpid: int, members: Mapping[str, Iterable[int]]) -> str | None:
    """The instance that should master ``dpid``: among those connected to it, the
    one of highest weight (ties, which a 64-bit hash makes unlikely, by name)."""
    candidates = [name for name, dpids in members.items() if dpid in dpids]
    return max(candidates, key=lambda name: (weight(name, dpid), name), default=None)


@dataclass(frozen=True)
class Moves:
    take: list[int]                     # switches to claim (their claim is absent)
    release: list[tuple[int, int]]      # (switch, claim revision) to give up to their owner


def moves(me: str, view: View, connected: Iterable[int]) -> Moves:
    """What ``me`` does next: claim the switches it should own that nobody
    holds, and release the ones it holds that another instance, connected to
    them, should own. A claim someone else holds is never taken over: it
    goes when its holder releases it or its lease expires."""
    members = {**view.members, me: frozenset(connected)}
    take = sorted(d for d in members[me] if d not in view.claims and owner(d, members) == me)
    release = sorted((d, c.revision) for d, c in view.claims.items()
                     if c.owner == me and owner(d, members) not in (me, None))
    return Moves(take, release)

"""Which instance masters which switch: pure decisions over the cluster's view.

Each live instance's record lists the switches it is connected to. A switch
is owned by the instance that rendezvous hashing (highest random weight)
picks among those connected to it: every instance computes the same owner
from the same view, an instance joining takes only its share of switches,
and one leaving moves only its own. Ownership is taken in etcd by a claim
(a key per switch, created only if absent, bound to the owner's lease) and
the claim's revision is the OpenFlow generation_id the owner sends with its
MASTER role request, so a switch itself refuses an older master.

A backend is probed by the master of its switch alone, which writes what
its probes decide under ``HEALTH`` for the others to apply. Those keys
follow the desired state like the claims follow the members
(``health_writes``): a master writes its verdict wherever the key says
otherwise or another instance said it (a switch taken over, a backend new or
created again, a key deleted meanwhile), so a verdict left about an
earlier backend of the same name lasts until the master's next step (its
master gone: until the switch's next master takes over); the keys of
backends the desired state no longer has are deleted by their writer, and
by the leader once their writer is gone.

A migration is coordinated by the instance that accepted it, which says
under ``PLACEMENTS`` what the others need to plan as it does: the VM's
pending target, where the VM is, whether the migration drains it
(``Migration.placement``). One key per VM, the latest migration's, bound to
the writer's lease: a lost coordinator's go with it, and the VM stays
wherever it last said (``placement_writes``). The master of the switch of
the VM's pending target says under ``PREPARED`` once it holds the VM's flows
there (the same writes, its own keys), and the coordinator lets the data
transfer start only then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from ..store import ABSENT, Expect

PREFIX = "/sdnvirt/cluster/"
MEMBERS = PREFIX + "members/"
SWITCHES = PREFIX + "switches/"
LEADER = PREFIX + "leader"
LLDP_SECRET = PREFIX + "lldp-secret"
# A backend's health as the master of its switch, which alone probes it, found it.
HEALTH = PREFIX + "health/"

# A migrating VM's placement, as the instance coordinating its migration says.
PLACEMENTS = PREFIX + "placements/"
# A migrating VM's pending target, prepared: as the master of its switch says.
PREPARED = PREFIX + "prepared/"

HealthKey = tuple[str, str, str]        # tenant, service, vm:port


def member_key(name: str) -> str:
    return MEMBERS + name


def switch_key(dpid: int) -> str:
    return f"{SWITCHES}{dpid:016x}"


def health_key(key: HealthKey) -> str:
    """The etcd key of a backend's health key (tenant, service, vm:port)."""
    return HEALTH + "/".join(key)


def placement_key(vm: str) -> str:
    return PLACEMENTS + vm


def prepared_key(vm: str) -> str:
    return PREPARED + vm


@dataclass(frozen=True)
class Claim:
    owner: str
    revision: int       # the claim's revision: the owner's generation_id at the switch


@dataclass(frozen=True)
class Verdict:
    up: bool
    by: str             # the instance whose probes found it
    revision: int       # the key's: a deletion compares it, so that a verdict written since stays


@dataclass(frozen=True)
class Placement:
    """What an instance says of a migrating VM, under ``PLACEMENTS`` or ``PREPARED``."""

    by: str             # the instance coordinating the VM's latest migration; or the one that prepared it
    doc: Mapping[str, Any]   # Migration.placement; or {"id": the migration, "at": [dpid, port] prepared}
    revision: int


@dataclass
class View:
    """What the cluster's keys say, as last read or watched."""

    members: dict[str, frozenset[int]] = field(default_factory=dict)    # live instance -> switches it reaches
    claims: dict[int, Claim] = field(default_factory=dict)
    leader: str | None = None
    health: dict[HealthKey, Verdict] = field(default_factory=dict)
    placements: dict[str, Placement] = field(default_factory=dict)     # by VM
    prepared: dict[str, Placement] = field(default_factory=dict)       # by VM
    revision: int = 0

    def apply(self, key: str, value: object, revision: int) -> None:
        """One key's new value (None: deleted) from a listing or a watch; KeyError,
        TypeError or ValueError for a value not as sdnvirt writes it."""
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
                self.health[tenant, service, backend] = Verdict(bool(value["up"]), str(value["by"]), revision)
            else:
                self.health.pop((tenant, service, backend), None)
        elif key.startswith(PLACEMENTS):
            vm = key[len(PLACEMENTS):]
            if isinstance(value, dict):
                placement = value["placement"]
                if not isinstance(placement, dict) or not isinstance(placement.get("id"), int) \
                        or {"active", "pending", "at", "drained"} - placement.keys():
                    raise ValueError("not a migration's placement")
                self.placements[vm] = Placement(str(value["by"]), placement, revision)
            else:
                self.placements.pop(vm, None)
        elif key.startswith(PREPARED):
            vm = key[len(PREPARED):]
            if isinstance(value, dict):
                prepared = value["prepared"]
                if not isinstance(prepared, dict) or not isinstance(prepared.get("id"), int) \
                        or not isinstance(prepared.get("at"), list):
                    raise ValueError("not a prepared target")
                self.prepared[vm] = Placement(str(value["by"]), prepared, revision)
            else:
                self.prepared.pop(vm, None)


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


@dataclass(frozen=True)
class HealthWrites:
    put: dict[HealthKey, bool]          # verdicts to write as ``me``'s
    delete: list[tuple[HealthKey, int]]     # (backend, the revision its key must still be at)


def health_writes(me: str, view: View, verdicts: Mapping[HealthKey, bool],
                  known: AbstractSet[HealthKey]) -> HealthWrites:
    """What ``me`` writes of the backends' health: ``verdicts``, those of the
    backends on the switches it masters, wherever the keys say otherwise or
    say another's; the deletion of the keys about backends that ``known``
    (every backend of its desired state) lacks, that it wrote or, as the
    leader, that an instance no longer live wrote."""
    put = {key: up for key, up in verdicts.items()
           if (said := view.health.get(key)) is None or (said.up, said.by) != (up, me)}
    delete = sorted((key, said.revision) for key, said in view.health.items()
                    if key not in known and (said.by == me or (view.leader == me and said.by not in view.members)))
    return HealthWrites(put, delete)


@dataclass(frozen=True)
class PlacementWrites:
    # By VM: the placement, and what its key must still be (ABSENT, or the revision last seen):
    # a write decided on a view that lags behind another instance's is not made.
    put: dict[str, tuple[Mapping[str, Any], Expect]]
    delete: list[tuple[str, int]]           # (VM, the revision its key must still be at)


def placement_writes(me: str, keys: Mapping[str, Placement], placements: Mapping[str, Mapping[str, Any]]
                     ) -> PlacementWrites:
    """What ``me`` writes of the migrations it coordinates (or prepares): each
    VM's latest (``placements``) wherever its key (``keys``: the view's
    placements, or prepared targets) says otherwise, unless it is about a
    later migration (another instance's since), each only if its key is still
    as the view saw it, and the deletion of the keys it wrote about VMs it no
    longer names (gone from the desired state, or left from before a restart).
    A key that says the same, whoever wrote it, is left: two instances that
    both say it (a switch handed over) would otherwise take turns writing it."""
    put: dict[str, tuple[Mapping[str, Any], Expect]] = {
        vm: (doc, ABSENT if said is None else said.revision) for vm, doc in placements.items()
        if (said := keys.get(vm)) is None or (said.doc != doc and said.doc["id"] <= doc["id"])}
    delete = sorted((vm, said.revision) for vm, said in keys.items()
                    if said.by == me and vm not in placements)
    return PlacementWrites(put, delete)

"""What happened in the controller, as data: the machine interface beside the log.

Tests, benchmarks, the demo and operators' scripts follow the controller
through these events (``GET /v1/events``) and its metrics, never through
its log text.  Every event has an id, a wall-clock time, a ``Kind`` and a few
fields whose values are enums, ints, floats, bools, strings or None;
outcomes and causes are enums, not sentences.

Ids start at the hub's creation time in microseconds and grow by one per
event, so a cursor a client kept from an earlier run of the daemon is older
than anything a restarted daemon holds: it is told it missed events instead
of waiting for ids the new run will reach later with other events.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from itertools import islice
from typing import Any, NamedTuple

DEFAULT_KEEP = 10_000


class Kind(StrEnum):
    RECONCILED = "reconciled"                   # a reconcile run changed flows or groups
    SWITCH_CONNECTED = "switch_connected"
    SWITCH_LOST = "switch_lost"
    SWITCH_FLOWS_READ = "switch_flows_read"
    LINK_UP = "link_up"
    LINK_DOWN = "link_down"
    VM_LOCATED = "vm_located"
    VM_CLAIM_IGNORED = "vm_claim_ignored"       # a frame claimed a VM somewhere it may not be
    VM_LEFT_PORT = "vm_left_port"
    VM_LOST = "vm_lost"                         # its migration failed away from its port: probed everywhere
    BACKEND_UP = "backend_up"
    BACKEND_DOWN = "backend_down"
    MIGRATION = "migration"                     # a step of a migration (its phase and outcome)
    CONFIG_APPLIED = "config_applied"
    CONFIG_RELOAD_FAILED = "config_reload_failed"
    HANDLER_ERROR = "handler_error"             # an exception the daemon caught and survived
    ROLE_CHANGED = "role_changed"               # this instance became master or slave of a switch
    CLUSTER_CHANGED = "cluster_changed"         # the members, the leader, or this instance fenced itself


class Found(StrEnum):
    """How a VM was located."""

    LEARNT = "learnt"           # a frame it sent on its own
    PROBE = "probe"             # its answer to the controller's ARP probe
    RECOVERED = "recovered"     # the switch's own flows, read after a (re)connection


class Claim(StrEnum):
    """Why a frame did not move a VM to the port it came from."""

    WRONG_IP = "wrong_ip"
    PORT_TAKEN = "port_taken"
    MIGRATING = "migrating"
    STILL_UP = "still_up"
    NO_OVERLAY = "no_overlay"   # vxlan mode: its switch is no hypervisor with a VTEP


class Cause(StrEnum):
    """Why a backend went up or down."""

    ANSWERED = "answered"           # its health checks passed (udp: nothing said the port is closed)
    NO_ANSWER = "no_answer"         # a probe timed out
    REFUSED = "refused"             # TCP reset or ICMP unreachable
    WRONG_ANSWER = "wrong_answer"   # an answer that is not a pass (HTTP status, closed early...)
    SWITCH_LOST = "switch_lost"
    VM_LEFT_PORT = "vm_left_port"
    MIGRATION = "migration"         # its VM's migration was rolled back away from its port
    SHARED = "shared"               # several controllers: as the master of its switch found it


class LinkDown(StrEnum):
    TIMED_OUT = "timed_out"     # no LLDP for link_timeout
    PORT_DOWN = "port_down"     # either end's port went down or away


class Step(StrEnum):
    """The steps of a migration that the controller reports."""

    ACCEPTED = "accepted"
    PLUGGED = "plugged"         # the target port exists: preparing it
    CAPTURED = "captured"       # target prepared, state captured: data transfer may start
    ARRIVED = "arrived"         # the VM is at its target: flipping its paths
    FLIPPED = "flipped"         # paths lead to the target
    FINISHED = "finished"       # ok
    ENDED = "ended"             # rolled back or failed (the outcome says which)


class Handler(StrEnum):
    """Where an exception was caught (os-ken's own handlers count as OPENFLOW)."""

    PACKET_IN = "packet_in"
    RECONCILE = "reconcile"
    PERIODIC = "periodic"
    OPENFLOW = "openflow"
    API = "api"
    THREAD = "thread"


class Source(StrEnum):
    FILE = "file"
    API = "api"
    STORE = "store"     # committed by another writer (another process or instance)


@dataclass(frozen=True)
class Event:
    id: int
    time: float
    kind: Kind
    fields: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "time": self.time, "kind": self.kind.value, "fields": self.fields}


class Page(NamedTuple):
    events: list[Event]
    oldest: int         # id of the oldest event kept (the next id while none is)
    last: int           # id of the newest event published, whatever its kind


_SCALARS = (str, int, float, bool, type(None))


class Events:
    """A bounded ring of the last ``keep`` events; thread-safe."""

    def __init__(self, keep: int = DEFAULT_KEEP, clock: Callable[[], float] = time.time):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.clock = clock
        self._ring: deque[Event] = deque(maxlen=keep)
        self._next = int(clock() * 1_000_000) + 1
        self._cond = threading.Condition()

    def publish(self, kind: Kind | str, **fields: Any) -> int:
        """Record an event; returns its id. Enum values are stored as their values."""
        known = Kind(kind)
        for name, value in fields.items():
            if isinstance(value, Enum):
                fields[name] = value.value
            elif not isinstance(value, _SCALARS):
                raise TypeError(f"event field {name}={value!r}: not an enum, str, int, float, bool or None")
        with self._cond:
            event = Event(self._next, self.clock(), known, fields)
            self._next += 1
            self._ring.append(event)
            self._cond.notify_all()
        return event.id

    def last(self) -> int:
        """The newest id so far: a cursor that sees only what comes next."""
        with self._cond:
            return self._next - 1

    def since(self, after: int = 0, kinds: Iterable[Kind | str] | None = None, timeout: float = 0.0,
              where: Callable[[Event], bool] | None = None) -> Page:
        """Events newer than ``after`` (of ``kinds`` if given, for which ``where`` holds
        if given), oldest first; if there are none yet, wait up to ``timeout`` seconds for one."""
        wanted = None if kinds is None else {Kind(k) for k in kinds}
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                page = self._page(after, wanted, where)
                left = deadline - time.monotonic()
                if page.events or left <= 0:
                    return page
                self._cond.wait(left)

    def _page(self, after: int, wanted: set[Kind] | None, where: Callable[[Event], bool] | None) -> Page:
        last = self._next - 1
        oldest = self._ring[0].id if self._ring else self._next
        if after > last:
            after = 0       # a cursor from a run whose clock was ahead of this one's
        kept = islice(self._ring, max(0, after - oldest + 1), None)
        events = [e for e in kept if (wanted is None or e.kind in wanted) and (where is None or where(e))]
        return Page(events, oldest, last)


def missed(after: int, page: Page) -> bool:
    """Whether events after the cursor ``after`` are gone from the ring (0: no cursor yet)."""
    return after > page.last or 0 < after < page.oldest - 1

"""The store contract: JSON documents under hierarchical string keys, with
etcd's revisions, compare-and-set, transactions and watches.

Written to etcd 3.4's semantics, so that the embedded SQLite store and a
shared etcd store answer alike:

- The store has one revision counter, 1 when the store is new. Every
  committed transaction that changes something takes the next revision; all
  its puts and deletes carry it. A transaction that changes nothing (a
  delete of an absent key) takes none.
- Each key keeps the revision that created it and the one that last
  modified it (etcd's create_revision and mod_revision). Compare-and-set is
  on the mod revision: ``expect=REV`` (the key is at REV), ``expect=ABSENT``
  (the key does not exist: etcd's create_revision == 0), ``expect=None`` (no
  condition).
- A watch yields the changes committed after a revision, in revision order,
  never splitting a transaction across batches (etcd's watch with
  ``start_revision = after + 1``). History is compacted: ``compact(REV)``
  forgets the changes before REV; a watch that needs them raises
  ``Compacted`` and its owner re-lists, then watches after the listing's
  revision (etcd's ``compact_revision``, whose watch is cancelled).

Leases (a key that disappears when its owner stops renewing it) belong to
the several-controller store only: ``LeasedStore`` says where they go.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()
"""``expect=ABSENT``: the key must not exist."""

Expect = int | _Absent | None


class Item(NamedTuple):
    value: Any
    revision: int       # the revision that last modified the key
    created: int        # the revision that created it (since it last did not exist)


class Listing(NamedTuple):
    items: dict[str, Item]
    revision: int       # the store's revision the listing is at: watch after it


@dataclass(frozen=True)
class Event:
    key: str
    value: Any          # None when deleted
    revision: int
    deleted: bool = False


@dataclass(frozen=True)
class Put:
    key: str
    value: Any
    expect: Expect = None


@dataclass(frozen=True)
class Delete:
    key: str
    expect: Expect = None


Op = Put | Delete


class StoreError(Exception):
    """The store cannot do what it was asked (unreachable, unreadable, read-only...)."""


class Unconfirmed(StoreError):
    """A write reached the store and no answer came back (etcd without its
    quorum keeps a write it took, and applies it once the quorum returns): it
    may yet take effect, or not. Read before writing it again."""


class Conflict(StoreError):
    """A compare failed: someone else changed a key since it was read. Nothing
    was written. ``keys``: those whose compare failed (every compared key,
    from a store that cannot tell which)."""

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)
        super().__init__(f"changed meanwhile by another writer: {', '.join(self.keys)}")


class Compacted(StoreError):
    """The history a watch needs is gone: list again, and watch after the listing's revision."""

    def __init__(self, after: int, compacted: int):
        self.after, self.compacted = after, compacted
        super().__init__(f"the changes after revision {after} are compacted (history starts at {compacted})")


class LeaseExpired(StoreError):
    """The lease is gone (it was not renewed in time, or was revoked), and so are its keys."""

    def __init__(self, lease: int):
        self.lease = lease
        super().__init__(f"lease {lease:x} has expired")


class Watch(Protocol):
    """Batches of changes, consumed by one thread: iterating blocks until changes
    come, and ends once ``cancel()`` is called (from any thread). Each batch
    holds whole transactions, in revision order. Raises Compacted when the
    history it needs is gone, StoreError when the store fails."""

    def __iter__(self) -> Iterator[list[Event]]: ...

    def cancel(self) -> None: ...


class Store(Protocol):
    """Every write is durable when it returns; reads see every write that returned."""

    name: str           # where it is, for people (a path, endpoints)

    def get(self, key: str) -> Item | None: ...

    def list(self, prefix: str) -> Listing:
        """Every key starting with ``prefix``, read at one revision."""
        ...

    def revision(self) -> int: ...

    def put(self, key: str, value: Any, *, expect: Expect = None) -> int:
        """The new revision; Conflict if ``expect`` does not hold."""
        ...

    def delete(self, key: str, *, expect: Expect = None) -> int:
        """The new revision (the current one if the key was absent); Conflict if ``expect`` does not hold."""
        ...

    def commit(self, ops: Sequence[Op], compares: Mapping[str, Expect] | None = None) -> int:
        """Apply every op, or none: Conflict if any op's ``expect`` or any of
        ``compares`` (conditions on keys not written) fails. Returns the new
        revision. A key appears at most once in ``ops`` (ValueError), as etcd
        requires."""
        ...

    def watch(self, prefix: str, after: int) -> Watch:
        """The changes to keys under ``prefix`` committed after revision ``after``."""
        ...

    def compact(self, revision: int) -> None:
        """Forget the changes made before ``revision`` (the keys' values stay);
        ValueError past the store's revision, nothing to do before the last
        compaction."""
        ...

    def close(self) -> None: ...


class LeasedStore(Store, Protocol):
    """What the several-controller store (etcd) adds, and the embedded one
    has no use for: keys bound to a lease vanish when it expires, which is
    how a dead controller's claims on switches are released."""

    def grant(self, ttl: float) -> int:
        """A new lease's id."""
        ...

    def keepalive(self, lease: int) -> float:
        """Renew the lease; its remaining ttl. LeaseExpired if it has expired."""
        ...

    def revoke(self, lease: int) -> None: ...

    def put_leased(self, key: str, value: Any, lease: int, *, expect: Expect = None) -> int: ...

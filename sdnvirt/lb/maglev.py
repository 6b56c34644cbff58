"""Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights.

The lookup table has a prime number of slots; each backend walks its own
permutation of the slots and claims the first free one on its turn.  A
backend of weight w gets w turns per round, so shares follow the weights,
and removing a backend frees only (about) its own slots: the others keep
theirs.  The table is what the switch hashes new connections into.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping
from typing import TypeVar, cast

B = TypeVar("B", bound=Hashable)

# Prime, and large against the few backends of one service: shares come out
# within a fraction of a percent of the weights.
DEFAULT_SIZE = 251


def _hash(key: str, salt: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8, salt=salt).digest(), "big")


def table(weights: Mapping[B, int], size: int = DEFAULT_SIZE) -> list[B]:
    """The lookup table: ``size`` slots, each naming a backend of positive weight.

    Backends are keyed by any hashable with a stable ``str`` (the same name
    gives the same permutation across runs and processes).  Empty if no
    backend has a positive weight.
    """
    backends = sorted((b for b, w in weights.items() if w > 0), key=str)
    if not backends:
        return []
    if size < 2 or any(size % d == 0 for d in range(2, int(size ** 0.5) + 1)):
        raise ValueError(f"Maglev table size must be a prime, not {size}")
    perms = []
    for b in backends:
        offset = _hash(str(b), b"maglev-offset") % size
        skip = _hash(str(b), b"maglev-skip") % (size - 1) + 1
        perms.append((offset, skip))
    slots: list[B | None] = [None] * size
    nexts = [0] * len(backends)
    filled = 0
    while True:
        for i, b in enumerate(backends):
            for _ in range(weights[b]):
                offset, skip = perms[i]
                while True:
                    slot = (offset + nexts[i] * skip) % size
                    nexts[i] += 1
                    if slots[slot] is None:
                        break
                slots[slot] = b
                filled += 1
                if filled == size:
                    return cast(list[B], slots)      # no slot is None any more

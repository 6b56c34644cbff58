"""One emulated fabric per machine at a time.

Every Mininet run shares the machine's one Open vSwitch, and bridge and
interface names are fixed by the topologies, so two runs at once (two test
sessions, a benchmark beside the tests, `mn -c` in the middle of a run)
silently destroy each other's fabrics.  Everything that builds or cleans
fabrics takes this lock first; `scripts/test.sh` takes it around `mn -c`
with flock(1) on the same file.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

PATH = os.environ.get("SDNVIRT_FABRIC_LOCK", "/run/lock/sdnvirt-fabric.lock")
WAIT = 1800.0

_held = 0                 # reentrant within a process: a benchmark holds it around its emulations
_fd: int | None = None
_mutex = threading.Lock()


@contextmanager
def fabric_lock(timeout: float = WAIT) -> Iterator[None]:
    """Hold the machine's fabric lock; waits up to ``timeout`` seconds for it
    and raises TimeoutError naming the holder when it does not come."""
    global _held, _fd
    with _mutex:
        if _held == 0:
            os.makedirs(os.path.dirname(PATH), exist_ok=True)
            fd = os.open(PATH, os.O_RDWR | os.O_CREAT, 0o644)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                        os.close(fd)
                        raise TimeoutError(f"another emulation (pid {holder or '?'}) has held {PATH} "
                                           f"for {timeout:g} s") from None
                    time.sleep(0.5)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _fd = fd
        _held += 1
    try:
        yield
    finally:
        with _mutex:
            _held -= 1
            if _held == 0 and _fd is not None:
                os.close(_fd)     # closing the descriptor drops the flock
                _fd = None

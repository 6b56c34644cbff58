import multiprocessing
import time

import pytest

from sdnvirt.emulation import lock


def _hold(path, ready, release):
    lock.PATH = path
    with lock.fabric_lock():
        ready.set()
        release.wait(10)


def test_lock_is_exclusive_between_processes_and_reentrant_within_one(tmp_path, monkeypatch):
    path = str(tmp_path / "fabric.lock")
    monkeypatch.setattr(lock, "PATH", path)
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(path, ready, release))
    other.start()
    try:
        assert ready.wait(10)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=f"pid {other.pid}"):
            with lock.fabric_lock(timeout=1.0):
                pass
        assert time.monotonic() - t0 >= 1.0
    finally:
        release.set()
        other.join(10)
    with lock.fabric_lock(timeout=5):
        with lock.fabric_lock(timeout=0):     # the same process again: no wait
            pass
        assert lock._held == 1
    assert lock._held == 0 and lock._fd is None

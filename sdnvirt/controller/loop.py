"""The one thread that owns the controller's state.

Everything that reads or changes the model, the fabric or the switch
sessions runs here, one piece of work at a time: os-ken's receive thread,
the API's threads and the store's watch post work (``post``) or post and
wait for the answer (``call``); timers are work posted for later.  So the
state needs no lock, and a handler never sees it half-changed.

Time comes from ``clock``: unit tests drive ``run_due`` with a clock of
their own instead of sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

LOG = logging.getLogger("sdnvirt.controller")

T = TypeVar("T")
CALL_TIMEOUT = 30.0
_IDLE = 0.5     # the longest nap while no timer is due: posts wake it anyway
BATCH = 64      # posted pieces of work run between two looks at the timers


class Loop:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 on_error: Callable[[Callable[..., Any]], None] = lambda fn: None):
        """``on_error(fn)``: told of every piece of work that raised (the log has the traceback)."""
        self.clock = clock
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple, Future | None]] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._on_error = on_error
        self._thread: threading.Thread | None = None

    # -- from any thread ---------------------------------------------------------
    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.put((fn, args, None))

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = CALL_TIMEOUT) -> T:
        """Run ``fn`` on the loop and return what it returns (or raise what it raised)."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        done: Future = Future()
        self._queue.put((fn, args, done))
        try:
            return done.result(timeout)
        except TimeoutError:
            done.cancel()       # not run later for a caller that has given up
            raise

    def start(self, name: str = "sdnvirt-controller") -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- on the loop ---------------------------------------------------------------
    def after(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop once ``delay`` seconds have passed."""
        heapq.heappush(self._timers, (self.clock() + delay, next(self._seq), fn, args))

    def run_due(self) -> float | None:
        """Run the timers that are due; how long until the next one (None: no timer)."""
        while self._timers and self._timers[0][0] <= self.clock():
            _, _, fn, args = heapq.heappop(self._timers)
            self._guarded(fn, args)
        return self._timers[0][0] - self.clock() if self._timers else None

    def run_posted(self, wait: float = 0.0) -> bool:
        """Run what was posted, waiting up to ``wait`` for the first; False if nothing came.
        At most BATCH pieces, so that a stream of posts never holds up the timers."""
        try:
            fn, args, done = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return False
        for ran in range(1, BATCH + 1):
            if done is None:
                self._guarded(fn, args)
            elif done.set_running_or_notify_cancel():
                try:
                    done.set_result(fn(*args))
                except BaseException as err:    # noqa: BLE001 - handed to the caller
                    done.set_exception(err)
            if ran == BATCH:
                break
            try:
                fn, args, done = self._queue.get_nowait()
            except queue.Empty:
                break
        return True

    def _run(self) -> None:
        # Runs as long as the process: the daemon ends with os._exit.
        while True:
            until = self.run_due()
            self.run_posted(min(_IDLE, until) if until is not None else _IDLE)

    def _guarded(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            fn(*args)
        except Exception:    # noqa: BLE001 - no piece of work may stop the controller
            LOG.exception("%s failed", getattr(fn, "__qualname__", fn))
            self._on_error(fn)

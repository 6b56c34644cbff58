"""etcd v3's JSON gateway (``/v3/...``, served by every etcd 3.4 member on its
client port) over plain ``http.client``.

Why not a client library: the gRPC clients block eventlet, which os-ken may
run under; the old ``etcd3`` package no longer imports with current protobuf;
``etcd3gw`` talks to one endpoint only, its watches hang silently when their
member dies and its keepalive thread ends on the first error of an etcd
leader change. Each of those is handled here:

- every request goes to the endpoint that answered last, and on a connection
  error, a timeout or an ``Unavailable`` answer to the next one, until each
  was tried once;
- a stream (a watch) that stays silent for ``idle`` seconds is closed by the
  caller and started again, possibly on another member;
- lease keepalives are single requests, so an error is one failed renewal,
  never the end of renewing.

Each request (over all the endpoints it tries) and each stream opened is
reported to ``observe`` with its duration and its result: ``ok``,
``refused`` (etcd answered with an error) or ``unreachable`` (no member
answered), which the daemon's metrics count.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .contract import StoreError, Unconfirmed

# gRPC status codes the gateway passes on, for which another member may do better.
_UNAVAILABLE = 14
_DEADLINE_EXCEEDED = 4

# The requests that change the store: one that reached a member unanswered may yet be applied.
_WRITES = frozenset({"/v3/kv/txn", "/v3/kv/put", "/v3/kv/deleterange"})

T = TypeVar("T")
Observe = Callable[[str, float, str], None]
"""(operation: the request path's last part, seconds, result)"""


def ignore(operation: str, seconds: float, result: str) -> None:
    pass


class GatewayError(StoreError):
    """etcd refused a request; ``code`` is its gRPC status code."""

    def __init__(self, message: str, code: int):
        self.code = code
        super().__init__(message)


def endpoint(url: str) -> tuple[str, int]:
    """(host, port) of ``http://HOST:PORT``; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"an etcd endpoint is http://HOST:PORT, not {url!r}")
    return parts.hostname, parts.port or 2379


class Gateway:
    def __init__(self, endpoints: Sequence[str], timeout: float = 2.0, observe: Observe = ignore):
        """``timeout``: seconds one request may take on one endpoint."""
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.urls = list(endpoints)
        self._addresses = [endpoint(url) for url in self.urls]
        self.timeout = timeout
        self.observe = observe
        self._current = 0
        # A kept-alive connection per thread: http.client's are not thread-safe.
        self._local = threading.local()

    @property
    def name(self) -> str:
        return ",".join(self.urls)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers; its JSON answer.

        A write retried on another endpoint after its answer was lost may
        have been applied already: a compare-and-set then fails with a
        Conflict, which callers take as a lost race and read again: unless a
        member may have taken it before (then the compare may have failed on
        the write's own effect), which raises Unconfirmed, as does a write no
        member answered after one may have taken it."""
        return self._observed(path, lambda: self._call(path, body))

    def stream(self, path: str, body: dict[str, Any], idle: float) -> Stream:
        """A stream of JSON messages from the first endpoint that takes the request."""
        return self._observed(path, lambda: self._stream(path, body, idle))

    def _observed(self, path: str, request: Callable[[], T]) -> T:
        started = time.monotonic()
        result = "unreachable"
        try:
            answer = request()
            result = "ok"
            return answer
        except GatewayError:
            result = "refused"
            raise
        finally:
            self.observe(path.rsplit("/", 1)[-1], time.monotonic() - started, result)

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        # A member may have taken the write: only a refused connection says it did not.
        taken = False
        for index in self._order():
            try:
                answer = self._post(index, path, body)
            except (OSError, http.client.HTTPException) as err:
                self._drop()
                taken = taken or not isinstance(err, ConnectionRefusedError)
                errors.append(f"{self.urls[index]}: {err or type(err).__name__}")
                continue
            except GatewayError as err:
                if err.code in (_UNAVAILABLE, _DEADLINE_EXCEEDED):
                    taken = True
                    errors.append(f"{self.urls[index]}: {err}")
                    continue
                if taken and path in _WRITES:
                    raise Unconfirmed(f"{err}, after a member may have taken the write: it may still apply it") \
                        from err
                raise
            self._current = index
            # A compare that fails after a member may have taken the write may fail on the write's own effect.
            if taken and path == "/v3/kv/txn" and not answer.get("succeeded", False):
                raise Unconfirmed(f"a compare failed on {self.urls[index]} after another member may have taken "
                                  f"the write ({'; '.join(errors)}): it may have been applied")
            return answer
        message = f"etcd unreachable: no member answered (down, cut off, or without a quorum): {'; '.join(errors)}"
        if taken and path in _WRITES:
            raise Unconfirmed(message + "; a member that took the write may still apply it once etcd's quorum "
                              "is back")
        raise StoreError(message)

    def _stream(self, path: str, body: dict[str, Any], idle: float) -> Stream:
        errors = []
        for index in self._order():
            conn = http.client.HTTPConnection(*self._addresses[index], timeout=self.timeout)
            try:
                conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
                response = conn.getresponse()
                if response.status != 200:
                    raise _refusal(response.status, response.read())
                if conn.sock is not None:
                    conn.sock.settimeout(idle)
            except (OSError, http.client.HTTPException, GatewayError) as err:
                conn.close()
                errors.append(f"{self.urls[index]}: {err or type(err).__name__}")
                continue
            self._current = index
            return Stream(conn, response)
        raise StoreError(f"etcd unreachable: no member answered (down, cut off, or without a quorum): "
                         f"{'; '.join(errors)}")

    def _order(self) -> list[int]:
        n = len(self.urls)
        return [(self._current + i) % n for i in range(n)]

    def _post(self, index: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
        held = getattr(self._local, "conn", None)
        if held is None or held[0] != index:
            self._drop()
            held = (index, http.client.HTTPConnection(*self._addresses[index], timeout=self.timeout))
            self._local.conn = held
        conn = held[1]
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise _refusal(response.status, data)
        answer: dict[str, Any] = json.loads(data)
        return answer

    def _drop(self) -> None:
        held = getattr(self._local, "conn", None)
        if held is not None:
            held[1].close()
        self._local.conn = None

    def close(self) -> None:
        self._drop()


class Stream:
    """The messages of one streamed answer, read by one thread, which closes it;
    ``interrupt()`` from another thread ends the reading (with an OSError or at once)."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self._conn, self._response = conn, response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            line = self._response.readline()
            if not line:
                return
            if line.strip():
                message: dict[str, Any] = json.loads(line)
                yield message

    def interrupt(self) -> None:
        # Only the socket: closing the connection under the reader's feet breaks http.client.
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass    # closed already: the reader has ended or will

    def close(self) -> None:
        self._conn.close()


def _refusal(status: int, data: bytes) -> GatewayError:
    try:
        answer = json.loads(data)
        return GatewayError(str(answer.get("error") or answer.get("message")), int(answer.get("code", 0)))
    except (ValueError, AttributeError):
        return GatewayError(f"HTTP {status}: {data[:200]!r}", 0)

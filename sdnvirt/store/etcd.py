"""The store shared by several controllers: the contract on etcd 3.4, through
its JSON gateway (``etcd_http``).

Values are the documents' JSON, keys and values base64 as the gateway wants
them. etcd's own revisions are the contract's: the contract was written to
them. A compare-and-set transaction reads the compared keys in its failure
branch, at the same revision, so a Conflict names exactly the keys that
changed, as the embedded store's does.
"""

from __future__ import annotations

import base64
import builtins
import http.client
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .contract import ABSENT, Compacted, Conflict, Delete, Event, Expect, Item, LeaseExpired, Listing, Op, Put
from .etcd_http import Gateway, GatewayError, Observe, Stream, ignore

_NOT_FOUND = 5
_OUT_OF_RANGE = 11


class EtcdStore:
    def __init__(self, endpoints: Sequence[str], *, timeout: float = 2.0, idle: float = 3.0,
                 observe: Observe | None = None):
        """``timeout``: seconds one request may take on one member. ``idle``:
        seconds a watch may hear nothing before it is started again from its
        last revision (a member that hangs or is cut off says nothing).
        ``observe``: told each request's operation, duration and result.
        Raises StoreError naming the endpoints if none answers."""
        self._gateway = Gateway(endpoints, timeout, observe or ignore)
        self.name = f"etcd {self._gateway.name}"
        self.idle = idle
        self.revision()

    # -- reads -------------------------------------------------------------------
    def get(self, key: str) -> Item | None:
        kvs = self._call("/v3/kv/range", {"key": _b64(key)}).get("kvs", [])
        return _item(kvs[0]) if kvs else None

    def list(self, prefix: str) -> Listing:
        answer = self._call("/v3/kv/range", _range(prefix))
        items = {_unb64(kv["key"]): _item(kv) for kv in answer.get("kvs", [])}
        return Listing(items, int(answer["header"]["revision"]))

    def revision(self) -> int:
        answer = self._call("/v3/kv/range", {"key": _b64("\0"), "count_only": True})
        return int(answer["header"]["revision"])

    # -- writes ------------------------------------------------------------------
    def put(self, key: str, value: Any, *, expect: Expect = None) -> int:
        return self.commit([Put(key, value, expect)])

    def put_leased(self, key: str, value: Any, lease: int, *, expect: Expect = None) -> int:
        return self._commit([Put(key, value, expect)], {}, lease)

    def delete(self, key: str, *, expect: Expect = None) -> int:
        return self.commit([Delete(key, expect)])

    def commit(self, ops: Sequence[Op], compares: Mapping[str, Expect] | None = None) -> int:
        return self._commit(ops, compares or {}, 0)

    def _commit(self, ops: Sequence[Op], compares: Mapping[str, Expect], lease: int) -> int:
        keys = [op.key for op in ops]
        if len(set(keys)) != len(keys):
            raise ValueError(f"a key is written twice in one transaction: {sorted(keys)}")
        checks = [*compares.items(), *((op.key, op.expect) for op in ops if op.expect is not None)]
        body = {
            "compare": [_compare(key, expect) for key, expect in checks],
            "success": [_request(op, lease) for op in ops],
            "failure": [{"request_range": {"key": _b64(key)}} for key, _ in checks],
        }
        answer = self._call("/v3/kv/txn", body)
        if not answer.get("succeeded") and checks:
            found = [r["response_range"].get("kvs", []) for r in answer.get("responses", [])]
            failed = [key for (key, expect), kvs in zip(checks, found, strict=True) if not _holds(kvs, expect)]
            raise Conflict(failed or [key for key, _ in checks])
        return int(answer["header"]["revision"])

    def compact(self, revision: int) -> None:
        try:
            # physical: a watch into the history just compacted fails from now on.
            self._call("/v3/kv/compaction", {"revision": revision, "physical": True})
        except GatewayError as err:
            if err.code != _OUT_OF_RANGE:
                raise
            if "future revision" in str(err):
                raise ValueError(f"cannot compact to revision {revision}: {err}") from None

    # -- leases --------------------------------------------------------------------
    def grant(self, ttl: float) -> int:
        """etcd counts leases in whole seconds (at least its minimum, 2 s with default timings)."""
        return int(self._call("/v3/lease/grant", {"TTL": max(1, math.ceil(ttl))})["ID"])

    def keepalive(self, lease: int) -> float:
        result = self._call("/v3/lease/keepalive", {"ID": lease}).get("result", {})
        ttl = int(result.get("TTL", 0))
        if ttl <= 0:
            raise LeaseExpired(lease)
        return float(ttl)

    def revoke(self, lease: int) -> None:
        try:
            self._call("/v3/lease/revoke", {"ID": lease})
        except GatewayError as err:
            if err.code != _NOT_FOUND:     # expired already: its keys are gone, as asked
                raise

    # -- watches -------------------------------------------------------------------
    def watch(self, prefix: str, after: int) -> EtcdWatch:
        return EtcdWatch(self, prefix, after)

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._gateway.call(path, body)

    def close(self) -> None:
        self._gateway.close()


class EtcdWatch:
    """One etcd watch, started again from the last revision it reported when its
    stream ends or stays silent ``idle`` seconds (the member died or hangs)."""

    def __init__(self, store: EtcdStore, prefix: str, after: int):
        self._store, self._prefix, self._after = store, prefix, after
        self._stream: Stream | None = None
        self.cancelled = False

    def __iter__(self) -> Iterator[builtins.list[Event]]:
        while not self.cancelled:
            request = {"create_request": {**_range(self._prefix), "start_revision": self._after + 1}}
            self._stream = self._store._gateway.stream("/v3/watch", request, self._store.idle)
            if self.cancelled:      # cancelled while the stream was being opened
                self._stream.close()
                return
            try:
                yield from self._read(self._stream)
            except (OSError, http.client.HTTPException):
                pass    # silent too long, or its member went: start again where it was
            finally:
                self._stream.close()

    def _read(self, stream: Stream) -> Iterator[builtins.list[Event]]:
        for message in stream:
            if "error" in message:
                return
            result = message.get("result", {})
            if int(result.get("compact_revision", 0)):
                raise Compacted(self._after, int(result["compact_revision"]))
            events = [_event(e) for e in result.get("events", [])]
            if events:
                self._after = events[-1].revision
                yield events

    def cancel(self) -> None:
        self.cancelled = True
        if self._stream is not None:
            self._stream.interrupt()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(data: str) -> str:
    return base64.b64decode(data).decode()


def _range(prefix: str) -> dict[str, str]:
    """Every key starting with ``prefix`` (every key for an empty one)."""
    if not prefix:
        return {"key": _b64("\0"), "range_end": _b64("\0")}
    return {"key": _b64(prefix), "range_end": _b64(prefix[:-1] + chr(ord(prefix[-1]) + 1))}


def _item(kv: dict[str, Any]) -> Item:
    return Item(json.loads(_unb64(kv["value"])), int(kv["mod_revision"]), int(kv["create_revision"]))


def _event(e: dict[str, Any]) -> Event:
    kv = e["kv"]
    deleted = e.get("type") == "DELETE"
    value = None if deleted else json.loads(_unb64(kv["value"]))
    return Event(_unb64(kv["key"]), value, int(kv["mod_revision"]), deleted)


def _compare(key: str, expect: Expect) -> dict[str, Any]:
    if expect is ABSENT:
        return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": expect}


def _holds(kvs: builtins.list[dict[str, Any]], expect: Expect) -> bool:
    if expect is ABSENT:
        return not kvs
    return bool(kvs) and int(kvs[0]["mod_revision"]) == expect


def _request(op: Op, lease: int) -> dict[str, Any]:
    if isinstance(op, Delete):
        return {"request_delete_range": {"key": _b64(op.key)}}
    value = _b64(json.dumps(op.value, sort_keys=True))
    return {"request_put": {"key": _b64(op.key), "value": value, **({"lease": lease} if lease else {})}}

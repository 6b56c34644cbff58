"""A client of the REST API (standard library only: the CLI, tests and scripts use it)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any


class ApiError(Exception):
    """The daemon refused the call (``status`` is its HTTP code) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class Client:
    def __init__(self, url: str, token: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        """The decoded JSON answer of ``method path`` (path relative to /v1)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/v1{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = raw.decode(errors="replace")
            raise ApiError(err.code, _describe(err.code, detail), detail) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ApiError(0, f"cannot reach the sdnvirt API at {self.url}: {reason} "
                              "(is the controller running, with this address and port?)") from None
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.call("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def events(self, after: int = 0, kinds: Iterable[str] = (), wait: float = 0.0) -> dict:
        """``GET /v1/events``: {"events": [...], "last": cursor for the next call, "oldest", "missed"}."""
        query = urllib.parse.urlencode({"after": after, "kind": list(kinds), "wait": wait}, doseq=True)
        return self.call("GET", f"/events?{query}", timeout=wait + self.timeout)


def _describe(status: int, detail: Any) -> str:
    if isinstance(detail, dict):
        detail = detail.get("detail", detail)
    if isinstance(detail, list):
        detail = "\n".join(f"{p.get('loc')}: {p.get('msg')}" if isinstance(p, dict) else str(p) for p in detail)
    return f"HTTP {status}: {detail}"

"""A throwaway etcd cluster on loopback ports, in a temporary directory: what
the tests, the benchmarks and a demo of several controllers share, started
from Debian's ``etcd`` (package ``etcd-server``) and never its service."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .lab import free_port, wait_for


class EtcdError(Exception):
    pass


class Member:
    def __init__(self, name: str, root: Path):
        self.name, self.dir = name, root / name
        self.client, self.peer = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer}"


class EtcdLab:
    def __init__(self, size: int = 3, root: str | Path | None = None):
        if shutil.which("etcd") is None:
            raise EtcdError("etcd is not installed (Debian package etcd-server; scripts/setup.sh installs it)")
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="sdnvirt-etcd-")
        self.root = Path(root or self._tmp.name)    # type: ignore[union-attr]
        self.members = [Member(f"etcd{i}", self.root) for i in range(size)]

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self, timeout: float = 30.0) -> EtcdLab:
        for member in self.members:
            self.start_member(member)
        if not wait_for(self.healthy, timeout, 0.1):
            self.close()
            raise EtcdError(f"etcd did not become healthy in {timeout:.0f} s (logs in {self.root})")
        return self

    def start_member(self, member: Member, new: bool = True) -> None:
        """``new``: the first start, which forms the cluster; a member started
        again comes back with its data."""
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        formed = ["--initial-cluster-state", "new", "--initial-cluster-token", f"sdnvirt-{self.root.name}"]
        log = open(self.root / f"{member.name}.log", "ab")     # the process keeps its own copy
        member.proc = subprocess.Popen(
            ["etcd", "--name", member.name, "--data-dir", str(member.dir),
             "--listen-client-urls", member.url, "--advertise-client-urls", member.url,
             "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
             "--initial-cluster", cluster, *(formed if new else []),
             # Timings for a local network (etcd's tuning guide: heartbeat ~ the round trip,
             # election 10x): a lost leader is replaced in ~0.6 s, well inside a 2 s lease.
             "--heartbeat-interval", "50", "--election-timeout", "500"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def healthy(self, member: Member | None = None) -> bool:
        for m in [member] if member else [m for m in self.members if m.proc and m.proc.poll() is None]:
            try:
                with urllib.request.urlopen(f"{m.url}/health", timeout=1) as answer:
                    if json.load(answer).get("health") != "true":
                        return False
            except (OSError, urllib.error.URLError, ValueError):
                return False
        return True

    def leader(self) -> Member:
        """The member the others follow (each says which it is, by id)."""
        for m in self.members:
            if m.proc and m.proc.poll() is None:
                status = _post(f"{m.url}/v3/maintenance/status", {})
                if status["leader"] == status["header"]["member_id"]:
                    return m
        raise EtcdError("no etcd member is the leader")

    def kill(self, member: Member, sig: int = signal.SIGKILL) -> None:
        if member.proc and member.proc.poll() is None:
            member.proc.send_signal(sig)
            member.proc.wait(10)

    def restart(self, member: Member) -> None:
        self.kill(member)
        self.start_member(member, new=False)

    def close(self) -> None:
        for member in self.members:
            self.kill(member, signal.SIGTERM)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EtcdLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=2) as answer:
        return json.load(answer)

"""One TCP conversation with an echo server (a QEMU guest's port 7) that must survive a migration.

Shared by the integration tests and bench/migration_qemu.py: a line every
``interval`` s, each echoed before the next, for ``seconds``.
"""

from __future__ import annotations

import subprocess
import sys

ECHO_PORT = 7

_TALK = r"""
import socket, sys, time
host, port, seconds, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
lines, end = 0, time.monotonic() + seconds
try:
    with socket.create_connection((host, port), timeout=5) as s:
        f = s.makefile("rwb")
        while time.monotonic() < end:
            f.write(b"line %d\n" % lines)
            f.flush()
            if f.readline() != b"line %d\n" % lines:
                raise RuntimeError("wrong or no echo")
            lines += 1
            time.sleep(interval)
    print("ok", lines)
except Exception as err:
    print("FAIL", lines, type(err).__name__, err)
"""


def talk(host, ip: str, seconds: float, port: int = ECHO_PORT, interval: float = 0.01) -> subprocess.Popen:
    """Start the conversation from Mininet host ``host``; see talked()."""
    return host.popen([sys.executable, "-c", _TALK, ip, str(port), str(seconds), str(interval)],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def talked(proc: subprocess.Popen, timeout: float = 60.0) -> tuple[int, str | None]:
    """(lines echoed, None) once it has ended, or (lines echoed before, why it broke)."""
    words = proc.communicate(timeout=timeout)[0].split(maxsplit=2)
    if len(words) >= 2 and words[0] == "ok":
        return int(words[1]), None
    if len(words) >= 2 and words[0] == "FAIL":
        return int(words[1]), words[2] if len(words) > 2 else "?"
    return 0, f"no result: {' '.join(words)!r}"

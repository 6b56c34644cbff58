"""The API's admin token: made once, kept in a file only its owner can read."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class TokenError(Exception):
    pass


def ensure_token(path: str | Path) -> str:
    """The token in ``path``; a new one is written there if there is none.

    The file is created with mode 0600 under a temporary name and linked into
    place, so it is never readable by others, nor seen half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return read_token(path)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass        # another process made it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)
    return read_token(path)


def read_token(path: str | Path) -> str:
    """The token in ``path``; refused if others may read the file."""
    with open(path) as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TokenError(f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}): "
                             f"chmod 600 it or remove it for a new token")
        token = f.read().strip()
    if not token:
        raise TokenError(f"{path} is empty: remove it for a new token")
    return token

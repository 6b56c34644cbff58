"""The QEMU guests' boot image: a Debian kernel and a tiny busybox initramfs.

Everything comes from Debian packages (linux-image-cloud-amd64 and
busybox-static, which scripts/setup.sh installs); nothing is downloaded.
The initramfs is written here, as a newc cpio archive, gzip-compressed:
busybox, the virtio network modules of the kernel it boots with, and
``init.sh`` as /init.  It is cached under a directory named by the hash of
everything that goes into it, so a build after an upgrade of either package,
or a change of init.sh, makes a new one and an unchanged one is reused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

INIT = Path(__file__).with_name("init.sh")
BUSYBOX = Path("/bin/busybox")
BOOT = Path("/boot")
MODULES = Path("/lib/modules")
# In load order: each after those it needs.
NET_MODULES = ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
               "failover", "net_failover", "virtio_net"]
# The modules' places in a Debian kernel tree.
_MODULE_DIRS = ["kernel/drivers/virtio", "kernel/net/core", "kernel/drivers/net"]
FORMAT = 1      # of the archive this module writes: a new one invalidates every cached image


class ImageError(RuntimeError):
    """The image cannot be built: a package is missing or a file is unreadable."""


@dataclass(frozen=True)
class Image:
    kernel: Path
    initrd: Path


def find_kernel(boot: Path = BOOT, modules: Path = MODULES) -> tuple[Path, Path]:
    """The newest kernel in ``boot`` whose modules include virtio_net: (vmlinuz, its modules' dir)."""
    found = []
    for vmlinuz in boot.glob("vmlinuz-*"):
        release = vmlinuz.name.removeprefix("vmlinuz-")
        if _module_path(modules / release, "virtio_net") is not None:
            found.append((_version_key(release), vmlinuz, modules / release))
    if not found:
        raise ImageError(f"no kernel in {boot} with virtio_net among its modules in {modules}: "
                         "install linux-image-cloud-amd64 (scripts/setup.sh does)")
    _, vmlinuz, tree = max(found)
    return vmlinuz, tree


def build(cache: Path, boot: Path = BOOT, modules: Path = MODULES, busybox: Path = BUSYBOX) -> Image:
    """The guest image, built into ``cache`` unless an identical one is there already."""
    kernel, tree = find_kernel(boot, modules)
    if not busybox.is_file():
        raise ImageError(f"{busybox} is missing: install busybox-static (scripts/setup.sh does)")
    files: dict[str, bytes] = {"init": INIT.read_bytes(), "bin/busybox": busybox.read_bytes(),
                               "modules": "".join(f"{m}\n" for m in NET_MODULES).encode()}
    for name in NET_MODULES:
        path = _module_path(tree, name)
        if path is None:
            raise ImageError(f"module {name} is missing from {tree}")
        files[f"lib/modules/{name}.ko"] = path.read_bytes()
    digest = hashlib.sha256(f"{FORMAT}\n{kernel}\n".encode())
    for name, data in sorted(files.items()):
        digest.update(f"{name}\n{len(data)}\n".encode())
        digest.update(data)
    where = Path(cache) / digest.hexdigest()[:16]
    initrd = where / "initrd.gz"
    if not initrd.is_file():
        where.mkdir(parents=True, exist_ok=True)
        partial = initrd.with_suffix(f".{os.getpid()}")
        partial.write_bytes(gzip.compress(_cpio(files), mtime=0))
        partial.rename(initrd)      # atomically: a concurrent build finds a whole one or none
    return Image(kernel=kernel, initrd=initrd)


def _module_path(tree: Path, name: str) -> Path | None:
    for sub in _MODULE_DIRS:
        path = tree / sub / f"{name}.ko"
        if path.is_file():
            return path
    return None


def _version_key(release: str) -> list[int | str]:
    """6.1.0-57-cloud-amd64 sorts after 6.1.0-9-cloud-amd64."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", release)]


_DIRS = ["bin", "dev", "lib", "lib/modules", "mnt", "proc", "sys"]
_EXECUTABLE = {"init", "bin/busybox"}


def _cpio(files: dict[str, bytes]) -> bytes:
    """A newc cpio archive (what the kernel unpacks as its initramfs) of
    directories, a console device, /bin/sh and ``files``."""
    out = io.BytesIO()
    entries: list[tuple[str, int, bytes, int]] = [(d, 0o040755, b"", 0) for d in _DIRS]
    # The kernel opens /dev/console for init before init can mount devtmpfs.
    entries.append(("dev/console", 0o020600, b"", os.makedev(5, 1)))
    entries.append(("bin/sh", 0o120777, b"busybox", 0))
    entries += [(name, 0o100755 if name in _EXECUTABLE else 0o100644, data, 0)
                for name, data in sorted(files.items())]
    entries.append(("TRAILER!!!", 0, b"", 0))
    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, os.major(rdev), os.minor(rdev), len(encoded), 0]
        out.write(b"070701" + "".join(f"{f:08x}" for f in fields).encode() + encoded)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))
    return out.getvalue()

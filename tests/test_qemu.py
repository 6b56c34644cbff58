"""The QEMU guests' image and command line, without QEMU."""

import gzip
from pathlib import Path

import pytest

from sdnvirt import config
from sdnvirt.emulation import guest
from sdnvirt.emulation.qemu import GuestSpec, command_line, guest_specs

SPEC = GuestSpec("q1", "02:00:00:00:01:02", "10.1.0.12/24", 128, dirty=4)


def fake_system(root: Path, releases=("6.1.0-9-cloud-amd64", "6.1.0-57-cloud-amd64")) -> dict:
    """A /boot, /lib/modules and busybox with the kernels ``releases``."""
    boot, modules = root / "boot", root / "modules"
    boot.mkdir()
    for release in releases:
        (boot / f"vmlinuz-{release}").write_bytes(b"kernel " + release.encode())
        for name in guest.NET_MODULES:
            sub = "kernel/net/core" if name == "failover" else (
                "kernel/drivers/net" if name.endswith("net") else "kernel/drivers/virtio")
            (modules / release / sub).mkdir(parents=True, exist_ok=True)
            (modules / release / sub / f"{name}.ko").write_bytes(f"{release} {name}".encode())
    busybox = root / "busybox"
    busybox.write_bytes(b"busybox 1")
    return {"boot": boot, "modules": modules, "busybox": busybox}


def cpio_names(initrd: Path) -> dict[str, bytes]:
    """Name -> data of each entry of a gzip'd newc archive."""
    data, at = gzip.decompress(initrd.read_bytes()), 0
    entries: dict[str, bytes] = {}
    while True:
        assert data[at:at + 6] == b"070701"
        fields = [int(data[at + 6 + 8 * i: at + 14 + 8 * i], 16) for i in range(13)]
        size, namesize = fields[6], fields[11]
        name = data[at + 110: at + 110 + namesize - 1].decode()
        at += 110 + namesize
        at += -at % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = data[at:at + size]
        at += size
        at += -at % 4


def test_image_has_init_busybox_and_the_newest_kernels_modules(tmp_path):
    system = fake_system(tmp_path)
    image = guest.build(tmp_path / "cache", **system)
    assert image.kernel.name == "vmlinuz-6.1.0-57-cloud-amd64"
    entries = cpio_names(image.initrd)
    assert entries["init"] == guest.INIT.read_bytes()
    assert entries["bin/busybox"] == b"busybox 1"
    assert entries["bin/sh"] == b"busybox"
    assert entries["lib/modules/virtio_net.ko"] == b"6.1.0-57-cloud-amd64 virtio_net"
    assert entries["modules"].decode().split() == guest.NET_MODULES
    assert entries["modules"].decode().split().index("virtio_ring") < guest.NET_MODULES.index("virtio")
    assert "dev/console" in entries


def test_image_is_cached_by_its_inputs(tmp_path):
    system = fake_system(tmp_path)
    first = guest.build(tmp_path / "cache", **system)
    stamp = first.initrd.stat().st_mtime_ns
    again = guest.build(tmp_path / "cache", **system)
    assert again == first and again.initrd.stat().st_mtime_ns == stamp
    system["busybox"].write_bytes(b"busybox 2")
    upgraded = guest.build(tmp_path / "cache", **system)
    assert upgraded.initrd != first.initrd
    assert cpio_names(upgraded.initrd)["bin/busybox"] == b"busybox 2"


def test_image_without_a_kernel_or_busybox_says_what_to_install(tmp_path):
    system = fake_system(tmp_path, releases=())
    with pytest.raises(guest.ImageError, match="linux-image-cloud-amd64"):
        guest.build(tmp_path / "cache", **system)
    (tmp_path / "b").mkdir()
    system = fake_system(tmp_path / "b")
    system["busybox"].unlink()
    with pytest.raises(guest.ImageError, match="busybox-static"):
        guest.build(tmp_path / "cache", **system)


def test_command_line():
    image = guest.Image(Path("/boot/vmlinuz"), Path("/cache/initrd.gz"))
    cmd = command_line(SPEC, image, "leaf2-eth5", Path("/run/q/qmp.sock"), Path("/run/q/console.log"))
    assert cmd[cmd.index("-accel") + 1] == "tcg" and cmd[cmd.index("-m") + 1] == "128"
    assert "tap,id=net0,ifname=leaf2-eth5,script=no,downscript=no" in cmd
    # The guest computes its own checksums: OVS's userspace datapath would forward them unfinished.
    assert "virtio-net-pci,netdev=net0,mac=02:00:00:00:01:02,csum=off,romfile=" in cmd
    append = cmd[cmd.index("-append") + 1].split()
    assert {"sdnvirt.name=q1", "sdnvirt.ip=10.1.0.12/24", "sdnvirt.dirty=4"} <= set(append)
    assert "unix:/run/q/qmp.sock,server=on,wait=off" in cmd
    assert "-incoming" not in cmd
    dest = command_line(SPEC, image, "leaf3-eth5", Path("/q"), Path("/c"), accel="kvm", incoming="tcp:127.0.0.1:4444")
    assert dest[-2:] == ["-incoming", "tcp:127.0.0.1:4444"] and dest[dest.index("-accel") + 1] == "kvm"


def test_config_kinds():
    cfg = config.parse({"tenants": {"t": {"segment": 1, "subnet": "10.0.0.0/24", "vms": {
        "a": {"mac": "02:00:00:00:00:01", "ip": "10.0.0.1"},
        "q": {"mac": "02:00:00:00:00:02", "ip": "10.0.0.2", "kind": "qemu", "memory": 128, "dirty": 8}}}}})
    assert guest_specs(cfg) == {"q": GuestSpec("q", "02:00:00:00:00:02", "10.0.0.2/24", 128, 8)}
    with pytest.raises(config.ConfigError, match="dirty: applies to kind qemu only"):
        config.parse({"tenants": {"t": {"segment": 1, "subnet": "10.0.0.0/24", "vms": {
            "a": {"mac": "02:00:00:00:00:01", "ip": "10.0.0.1", "dirty": 8}}}}})
    with pytest.raises(config.ConfigError, match="kind"):
        config.parse({"tenants": {"t": {"segment": 1, "subnet": "10.0.0.0/24", "vms": {
            "a": {"mac": "02:00:00:00:00:01", "ip": "10.0.0.1", "kind": "xen"}}}}})

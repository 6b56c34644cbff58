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


# -- QEMU's migration as the agent drives it, with fake QEMUs -------------------------------------

class FakeGuest:
    """A QemuVM without QEMU: answers QMP commands from ``answers``; the source's
    ``migrate`` plays ``script`` (guest role, event name, data, time) as QMP events."""

    script: list = []
    made: list = []

    def __init__(self, spec, image, switch, accel="tcg", incoming=None, bridge_of=None):
        self.spec, self.image, self.switch, self.accel, self.incoming = spec, image, switch, accel, incoming
        self.bridge_of = bridge_of
        self.on_event, self.ofport, self.commands, self.running, self.stopped = None, 7, [], True, False
        self.answers = {"query-migrate": {"status": "completed", "total-time": 640, "downtime": 19,
                                          "setup-time": 3, "ram": {"transferred": 5_000_000, "total": 134_000_000,
                                                                   "dirty-sync-count": 3}}}
        FakeGuest.made.append(self)

    def start(self):
        return self

    def alive(self):
        return not self.stopped

    def stop(self):
        self.stopped = True

    def execute(self, cmd, args=None, timeout=10.0):
        self.commands.append((cmd, args))
        if cmd == "query-status":
            return {"status": "running" if self.running else "paused"}
        if cmd in ("stop", "cont"):
            self.running = cmd == "cont"
        if cmd == "cont" and self.incoming:     # a destination told to run: QEMU says RESUME
            self.on_event(self, {"event": "RESUME", "data": {}, "timestamp": {"seconds": 101, "microseconds": 0}})
        if cmd == "migrate":
            dest = FakeGuest.made[-1]
            for role, name, data, at in FakeGuest.script:
                guest = self if role == "source" else dest
                guest.on_event(guest, {"event": name, "data": data,
                                       "timestamp": {"seconds": int(at), "microseconds": round(at % 1 * 1e6)}})
        return self.answers.get(cmd, {})


class FakeAgent:
    def __init__(self, source):
        self.emu = type("Emu", (), {})()
        self.emu.guests, self.emu.placement = {"q1": source}, {"q1": "leaf2"}
        self.settings = config.MigrationSettings(timeout=5.0)
        self.reports = []

    def _report(self, mid, event, **fields):
        self.reports.append((event, fields))
        return {"phase": "data_transfer"}


LIVE = [("source", "MIGRATION", {"status": "active"}, 100.0), ("source", "STOP", {}, 100.5),
        ("source", "MIGRATION", {"status": "completed"}, 100.52), ("dest", "RESUME", {}, 100.56),
        ("dest", "MIGRATION", {"status": "completed"}, 100.57)]


@pytest.fixture
def fake_qemu(monkeypatch):
    from sdnvirt.emulation import qemu_migration
    monkeypatch.setattr(qemu_migration, "QemuVM", FakeGuest)
    monkeypatch.setattr(qemu_migration, "TIDY_AFTER", 0)
    FakeGuest.made = []
    source = FakeGuest(SPEC, None, "leaf2")
    agent = FakeAgent(source)
    return qemu_migration, source, agent


def test_live_migration_reports_the_stop_as_frozen_and_the_resume_as_thawed(fake_qemu):
    qemu_migration, source, agent = fake_qemu
    FakeGuest.script = LIVE
    move = qemu_migration.QemuMove(agent, {"id": 4, "vm": "q1", "mode": "live", "target": "leaf1"})
    move.run()
    move.close()
    dest = FakeGuest.made[-1]
    assert dest.switch == "leaf1" and dest.spec == SPEC and dest.incoming.startswith("tcp:127.0.0.1:")
    events = [e for e, _ in agent.reports if e != "heartbeat"]
    assert events == ["plugged", "frozen", "thawed"]
    assert agent.reports[0][1] == {"port": 7}
    frozen = dict(agent.reports)["frozen"]
    thawed = dict(agent.reports)["thawed"]
    assert frozen == {"frozen_at": 100.5}
    assert thawed["frozen_at"] == 100.5 and thawed["thawed_at"] == 100.56
    assert thawed["qemu"] == {"status": "completed", "total_time": 0.64, "downtime": 0.019, "setup_time": 0.003,
                              "ram_transferred": 5_000_000, "ram_total": 134_000_000, "dirty_passes": 3,
                              "stop": 100.5, "resume": 100.56, "stop_to_resume": 0.06}
    cmds = [c for c, _ in source.commands]
    assert cmds.index("migrate-set-capabilities") < cmds.index("migrate") and "stop" not in cmds
    assert dict(source.commands)["migrate"] == {"uri": dest.incoming}
    assert agent.emu.guests["q1"] is dest and agent.emu.placement["q1"] == "leaf1"
    assert source.stopped and not dest.stopped


def test_a_resume_read_before_the_sources_stop_flips_the_paths_at_once_and_keeps_the_stops_time(fake_qemu):
    qemu_migration, source, agent = fake_qemu
    FakeGuest.script = [("source", "MIGRATION", {"status": "active"}, 100.0), ("dest", "RESUME", {}, 100.502),
                        ("source", "STOP", {}, 100.5), ("dest", "MIGRATION", {"status": "completed"}, 100.51)]
    move = qemu_migration.QemuMove(agent, {"id": 7, "vm": "q1", "mode": "live", "target": "leaf1"})
    move.run()
    move.close()
    assert [e for e, _ in agent.reports if e != "heartbeat"] == ["plugged", "frozen", "thawed"]
    thawed = dict(agent.reports)["thawed"]
    assert thawed["frozen_at"] == 100.5 and thawed["thawed_at"] == 100.502


def test_a_failed_migration_after_the_stop_resumes_the_guest_at_its_source(fake_qemu):
    qemu_migration, source, agent = fake_qemu
    FakeGuest.script = [("source", "STOP", {}, 100.5), ("source", "MIGRATION", {"status": "failed"}, 100.6)]
    source.answers["query-migrate"] = {"status": "failed"}
    move = qemu_migration.QemuMove(agent, {"id": 5, "vm": "q1", "mode": "cold", "target": "leaf1"})
    with pytest.raises(qemu_migration.GuestError, match="failed"):
        move.run()
    move.undo()
    move.close()
    dest = FakeGuest.made[-1]
    assert [e for e, _ in agent.reports if e != "heartbeat"] == ["plugged", "frozen"]
    cmds = [c for c, _ in source.commands]
    # Cold: stopped before the migration; QEMU had ended it, so it is not cancelled, and the guest goes on.
    assert cmds.index("stop") < cmds.index("migrate") and "migrate_cancel" not in cmds
    assert cmds[-1] == "cont" and source.running and not source.stopped
    assert dest.stopped and agent.emu.guests["q1"] is source


def test_cold_migration_starts_the_guest_at_the_destination(fake_qemu):
    qemu_migration, source, agent = fake_qemu
    FakeGuest.script = [("source", "STOP", {}, 100.0), ("source", "MIGRATION", {"status": "completed"}, 100.7),
                        ("dest", "MIGRATION", {"status": "completed"}, 100.75)]
    move = qemu_migration.QemuMove(agent, {"id": 6, "vm": "q1", "mode": "cold", "target": "leaf1"})
    move.run()
    dest = FakeGuest.made[-1]
    assert ("cont", None) in dest.commands
    thawed = dict(agent.reports)["thawed"]
    assert thawed["frozen_at"] == 100.0 and thawed["thawed_at"] == 101.0

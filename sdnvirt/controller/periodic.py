"""The controller's periodic work: LLDP rounds, VM location probes, counters,
link expiry, health probes, warm switches, migration deadlines.

Runs on the controller's loop every TICK seconds, as a timer it sets again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..events import LinkDown
from . import locate, stats, tunnels

if TYPE_CHECKING:
    from .core import Controller

LOG = logging.getLogger("sdnvirt.controller")

TICK = 0.05


def tick(ctl: Controller) -> None:
    ctl.loop.after(TICK, tick, ctl)
    now = ctl.clock()
    settings = ctl.settings
    sessions = list(ctl.sessions.values())
    if now >= ctl.next_lldp:
        ctl.next_lldp = now + settings.lldp_interval
        for s in sessions:
            ctl.send_frames(ctl.discovery.frames(ctl.fabric, s.dpid))
    for s in sessions:
        lost = locate.due(s, now, settings.locate_interval)
        if lost is not None:
            ctl.send_frames(locate.probes(ctl.model, ctl.fabric, s.dpid, lost=lost))
    if now >= ctl.next_stats:
        ctl.next_stats = now + stats.INTERVAL
        for s in sessions:
            for req in ctl.counters.requests(s, settings.encapsulation == "vxlan"):
                ctl.send(s, req)
    gone = ctl.discovery.expire(ctl.fabric, now, settings.link_timeout)
    for src in gone:
        LOG.warning("link from %016x:%d timed out", *src)
        ctl.link_down(*src, LinkDown.TIMED_OUT)
    if gone:
        ctl.request(topology=True)
    ctl.send_frames(ctl.prober.tick(now))
    if any(s.warm for s in sessions) and ctl.settled():
        ctl.dirty = True
        ctl.schedule(0)
    ctl.migrations.tick()
    tunnels.check(ctl)

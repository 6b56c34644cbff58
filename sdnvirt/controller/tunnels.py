"""vxlan mode: a hypervisor whose tunnel port is missing or down is said so, once, in the log.

Its VMs then reach no VM on another hypervisor, and none reaches them: the
planner sends nothing into a tunnel port that is not there
(``encap.Vtep.port`` None).  The metrics say the same all the time
(``sdnvirt_vtep_up``); the tunnels' counters (``sdnvirt_tunnel_*``) show a
remote VTEP that the underlay does not reach.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..plan.encap import VxlanEncap, vteps

if TYPE_CHECKING:
    from .core import Controller

LOG = logging.getLogger("sdnvirt.controller")


def check(ctl: Controller) -> None:
    """Log each connected hypervisor's tunnel port going missing or coming back."""
    config = ctl.model.config
    if config.controller.fabric.encapsulation != VxlanEncap.name:
        return
    ends = vteps(ctl.fabric, config)
    for session in ctl.sessions.values():
        vtep = ends.get(session.dpid)
        if vtep is None:
            continue
        up = vtep.port is not None
        if up == session.tunnel_up:
            continue
        if not up:
            LOG.warning("hypervisor %s (%016x): VTEP %s unusable, no port %s up on its bridge: its VMs are cut off "
                        "from the other hypervisors", session.name, session.dpid, vtep.address,
                        config.controller.fabric.tunnel_port)
        elif session.tunnel_up is not None:
            LOG.info("hypervisor %s (%016x): VTEP %s usable again (tunnel port %d up)", session.name, session.dpid,
                     vtep.address, vtep.port)
        session.tunnel_up = up

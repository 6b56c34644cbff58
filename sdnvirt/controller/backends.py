"""A backend going up or down, told the same way whoever decided it (its
probes, its switch or port gone, its migration rolled back, another
instance's probes): one log line and one ``backend_up``/``backend_down``
event, both read off the backend's health in the model, so neither can say
something the model does not hold.
"""

from __future__ import annotations

import logging

from ..events import Cause, Events, Kind
from ..model import Backend, Model, Service

LOG = logging.getLogger("sdnvirt.controller")


def changed(events: Events, model: Model, svc: Service, backend: Backend, cause: Cause) -> None:
    """Tell that the backend's health just changed; ``cause``: what changed it."""
    health = model.health[svc.health_key(backend)]
    LOG.warning("backend %s of %s/%s is %s (%s)", backend.key, svc.tenant, svc.name, "UP" if health.up else "DOWN",
                health.last_reason)
    events.publish(Kind.BACKEND_UP if health.up else Kind.BACKEND_DOWN, tenant=svc.tenant, service=svc.name,
                   backend=backend.key, cause=cause)

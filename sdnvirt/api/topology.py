"""The fabric as the controller sees it, and the health of every backend."""

from __future__ import annotations

from fastapi import APIRouter

from .deps import ControllerDep
from .schemas import BackendHealth, Topology

router = APIRouter(tags=["fabric"])


@router.get("/topology", response_model=Topology)
def get_topology(controller: ControllerDep):
    """Switches and their ports, links between switches, where each VM is."""
    return controller.topology()


@router.get("/health", response_model=list[BackendHealth])
def get_health(controller: ControllerDep):
    """Every backend of every service: health, last check, latency, counters."""
    return [{"tenant": svc["tenant"], "service": svc["name"], "backend": f"{b['vm']}:{b['port']}", **b}
            for svc in controller.snapshot()["services"] for b in svc["backends"]]

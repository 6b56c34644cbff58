"""The fabric as the controller sees it."""

from __future__ import annotations

from fastapi import APIRouter

from .deps import ControllerDep
from .schemas import Topology

router = APIRouter(tags=["fabric"])


@router.get("/topology", response_model=Topology)
def get_topology(controller: ControllerDep):
    """Switches and their ports, links between switches, where each VM is."""
    return controller.topology()

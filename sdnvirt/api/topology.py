"""The fabric as the controller sees it."""

from __future__ import annotations

from fastapi import APIRouter

from .deps import ControllerDep
from .schemas import FabricTables, Topology

router = APIRouter(tags=["fabric"])


@router.get("/topology", response_model=Topology)
def get_topology(controller: ControllerDep):
    """Switches and their ports, links between switches, where each VM is."""
    return controller.topology()


@router.get("/switches/tables", response_model=FabricTables)
def get_switch_tables(controller: ControllerDep):
    """What each connected switch holds, as the controller last read or wrote it: flows (with
    their owners), groups and meters; the links, the tenants and where each VM is (``sdnvirt trace``)."""
    return controller.tables()

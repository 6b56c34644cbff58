"""Migrations: ask for one, follow it; and where the hypervisor agent reports its steps."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from ..config import Name
from ..migration import Refused
from .access import forbidden
from .deps import ControllerDep, PrincipalDep
from .schemas import Error

router = APIRouter(tags=["migrations"])


class MigrationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vm: Name
    target: Name                                  # the hypervisor (switch name) to move it to
    mode: Literal["live", "cold"] = "live"


class AgentEvent(BaseModel):
    """A step of the hypervisor agent (see sdnvirt/emulation/agent.py)."""

    model_config = ConfigDict(extra="forbid")
    event: Literal["plugged", "heartbeat", "frozen", "thawed", "aborted"]
    port: int | None = Field(None, ge=1)          # plugged: the VM's OpenFlow port on the target
    frozen_at: float | None = None                # frozen, thawed: wall-clock seconds
    thawed_at: float | None = None                # thawed
    # thawed, a QEMU live migration: QEMU's figures (sdnvirt/emulation/qemu_migration.py)
    qemu: dict | None = None
    reason: str | None = None                     # aborted


class PhaseTimes(BaseModel):
    start: float
    end: float | None
    duration: float | None


class Migration(BaseModel):
    """``sdnvirt.migration.Migration.as_dict``; times are wall-clock seconds."""

    id: int
    vm: str
    tenant: str
    mode: str
    source: str
    target: str
    source_port: int
    target_port: int | None
    phase: str
    phases: dict[str, PhaseTimes]
    requested_at: float
    frozen_at: float | None
    thawed_at: float | None
    flipped_at: float | None
    downtime: float | None
    qemu: dict | None = None
    outcome: str | None
    reason: str
    controller: str | None = None
    drained: list[str]
    state: dict


_NOT_FOUND = {status.HTTP_404_NOT_FOUND: {"model": Error, "description": "no such migration"}}


@router.post("/migrations", response_model=Migration, status_code=status.HTTP_201_CREATED,
             responses={status.HTTP_409_CONFLICT: {"model": Error, "description": "refused; nothing changed"}})
def create_migration(body: MigrationRequest, controller: ControllerDep):
    """Move a VM to another hypervisor; the hypervisor agent carries it out."""
    try:
        return controller.migrate(body.vm, body.target, body.mode)
    except Refused as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None


@router.get("/migrations", response_model=list[Migration])
def list_migrations(controller: ControllerDep, who: PrincipalDep):
    """Every migration since the controller started (a tenant token's: of its VMs), oldest first,
    running ones included."""
    return [r for r in controller.migration_records() if who.tenant in (None, r["tenant"])]


@router.get("/migrations/{mid}", response_model=Migration, responses=_NOT_FOUND)
def get_migration(mid: int, controller: ControllerDep, who: PrincipalDep):
    """Another tenant's migration is refused to a tenant token (403): ids are not names, and the
    operator moves VMs."""
    record = controller.migration_record(mid)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no migration {mid}")
    if who.tenant not in (None, record["tenant"]):
        raise forbidden(who, "GET", f"/v1/migrations/{mid}")
    return record


@router.post("/migrations/{mid}/events", response_model=Migration,
             responses={**_NOT_FOUND, status.HTTP_409_CONFLICT: {"model": Error,
                                                                  "description": "does not fit the migration's state"}})
def report_event(mid: int, body: AgentEvent, controller: ControllerDep):
    """The hypervisor agent's report of a step; answers the migration as it is now."""
    fields = body.model_dump(exclude={"event"}, exclude_none=True)
    try:
        return controller.migration_event(mid, body.event, **fields)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no migration {mid}") from None
    except ValueError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None

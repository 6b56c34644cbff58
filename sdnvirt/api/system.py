"""The daemon itself: status and version, config reload."""

from __future__ import annotations

import time

from fastapi import APIRouter, status

from .. import __version__
from ..config import ConfigError
from .deps import ConfigStateDep, ControllerDep
from .errors import config_problems
from .schemas import Error, Reloaded, Status

router = APIRouter(tags=["daemon"])
_STARTED = time.monotonic()


@router.get("/status", response_model=Status)
def get_status(controller: ControllerDep, state: ConfigStateDep):
    doc = controller.snapshot()
    backends = [b for svc in doc["services"] for b in svc["backends"]]
    return Status(version=__version__, uptime_s=round(time.monotonic() - _STARTED, 3),
                  config_file=state.path, store=state.store.name,
                  switches=len(doc["switches"]), links=doc["links"], vms=len(doc["vms"]),
                  vms_located=sum(1 for vm in doc["vms"] if vm["switch"]), services=len(doc["services"]),
                  backends=len(backends), backends_up=sum(1 for b in backends if b["up"]), cluster=doc.get("cluster"))


@router.post("/reload", response_model=Reloaded, responses={
    status.HTTP_422_UNPROCESSABLE_CONTENT: {"model": Error, "description": "the file is invalid; nothing changed"}})
def reload(state: ConfigStateDep):
    """Re-read the config file, like SIGHUP; an invalid file changes nothing."""
    try:
        cfg = state.reload_file()
    except ConfigError as err:
        raise config_problems(err) from None
    return Reloaded(tenants=len(cfg.tenants), vms=sum(len(t.vms) for t in cfg.tenants.values()))

"""The cookie of each kind of object that owns flows (see flows.cookie)."""

from __future__ import annotations

from ..model import VM, Service
from .flows import Owner, cookie

FABRIC_COOKIE = cookie(Owner.FABRIC)


def tenant_cookie(segment: int, tenant: str) -> int:
    return cookie(Owner.TENANT, segment, tenant)


def vm_cookie(vm: VM) -> int:
    return cookie(Owner.VM, vm.segment, vm.name)


def service_cookie(svc: Service) -> int:
    return cookie(Owner.SERVICE, svc.segment, svc.name)

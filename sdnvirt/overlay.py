"""What the API changed, laid over the config file: the effective config.

The file is the base. The overlay holds, per object, what the API made of it:
a new or replaced object (``{"spec": ...}``) or a deleted one
(``{"deleted": true}``, which hides the file's object). Objects, by kind:

========  ======================  =============================================
kind      key                     spec
========  ======================  =============================================
tenant    ``blue``                the tenant's own keys (segment, subnet,
                                  service_address), not its VMs, services or
                                  security groups
vm        ``blue/web1``           ``config.VMSpec``
service   ``blue/web``            ``config.ServiceSpec`` (backends included)
security_group ``blue/admin``     ``secgroups.SecurityGroupSpec``
drain     ``blue/web/web1:8080``  ``{"drained": bool}`` for one backend
========  ======================  =============================================

An entry equal to what the file says is not kept, so an object the API set
back to the file's version follows the file again.  Pure functions over
plain JSON documents: the caller validates the result as a whole config.
"""

from __future__ import annotations

import copy
from typing import Any

KINDS = ("tenant", "vm", "service", "security_group", "drain")
Entries = dict[tuple[str, str], dict]     # (kind, key) -> {"spec": ...} | {"deleted": True}
_CHILDREN = {"vm": "vms", "service": "services", "security_group": "security_groups"}


def backend_key(backend: dict) -> str:
    return f"{backend['vm']}:{backend['port']}"


def own(tenant: dict) -> dict:
    """A tenant's own keys: what a "tenant" entry holds."""
    return {k: v for k, v in tenant.items() if k not in _CHILDREN.values()}


def effective(base: dict, entries: Entries) -> dict:
    """The file's document with the overlay applied (tenants first, drains last)."""
    doc = copy.deepcopy(base)
    tenants = doc.setdefault("tenants", {})
    for kind in KINDS:
        for (k, key), entry in sorted(entries.items()):
            if k == kind:
                _apply(tenants, kind, key.split("/"), entry)
    return doc


def _apply(tenants: dict, kind: str, parts: list[str], entry: dict) -> None:
    deleted = entry.get("deleted", False)
    if kind == "tenant":
        if deleted:
            tenants.pop(parts[0], None)
        else:
            old = tenants.get(parts[0], {})
            tenants[parts[0]] = {**copy.deepcopy(entry["spec"]),
                                 **{c: old.get(c, {}) for c in _CHILDREN.values()}}
        return
    tenant = tenants.get(parts[0])
    if tenant is None:
        return      # its tenant is gone: nothing to apply it to
    if kind in _CHILDREN:
        children = tenant.setdefault(_CHILDREN[kind], {})
        if deleted:
            children.pop(parts[1], None)
        else:
            children[parts[1]] = copy.deepcopy(entry["spec"])
    else:
        service = tenant.get("services", {}).get(parts[1]) or {}
        for backend in service.get("backends", []):
            if backend_key(backend) == parts[2]:
                backend["drained"] = entry["spec"]["drained"]


def lookup(doc: dict, kind: str, key: str) -> Any | None:
    """Object (kind, key) of an effective document, as an entry's spec would hold it; None if absent."""
    parts = key.split("/")
    tenant = doc.get("tenants", {}).get(parts[0])
    if tenant is None:
        return None
    if kind == "tenant":
        return own(tenant)
    if kind in _CHILDREN:
        return tenant.get(_CHILDREN[kind], {}).get(parts[1])
    service = tenant.get("services", {}).get(parts[1]) or {}
    return next(({"drained": b.get("drained", False)} for b in service.get("backends", [])
                 if backend_key(b) == parts[2]), None)


class Changes:
    """Edits to the overlay, one object at a time; ``changed`` is what to persist
    (an entry, or None: remove the entry)."""

    def __init__(self, base: dict, entries: Entries):
        self.base = base
        self.entries = dict(entries)
        self.changed: dict[tuple[str, str], dict | None] = {}

    def doc(self) -> dict:
        return effective(self.base, self.entries)

    def set(self, kind: str, key: str, spec: Any | None) -> None:
        """Make object (kind, key) be ``spec`` (None: deleted) in the effective config."""
        underneath = self._underneath(kind, key)
        if spec is None:
            entry = {"deleted": True} if underneath is not None else None
        else:
            entry = None if spec == underneath else {"spec": spec}
        self._record((kind, key), entry)

    def _underneath(self, kind: str, key: str) -> Any | None:
        """Object (kind, key) as the effective config would hold it without its own entry."""
        drained = kind == "service" and any(k == "drain" and d.startswith(f"{key}/") for k, d in self.entries)
        if kind in _CHILDREN and not drained:
            # A VM or a service (with no drain entries) is the file's, as long
            # as its tenant exists: a tenant entry replaces only the tenant's
            # own keys. Answered without building the whole document, which
            # made replacing a tenant of N VMs cost N documents.
            tenant, child = key.split("/")
            entry = self.entries.get(("tenant", tenant))
            in_file = self.base.get("tenants", {}).get(tenant)
            if (entry.get("deleted", False) if entry is not None else in_file is None):
                return None
            return (in_file or {}).get(_CHILDREN[kind], {}).get(child)
        rest = {k: v for k, v in self.entries.items() if k != (kind, key)}
        return lookup(effective(self.base, rest), kind, key)

    def forget(self, kind: str, prefix: str) -> None:
        """Remove the entries of ``kind`` whose key starts with ``prefix``: the file's version shows again."""
        for k, key in list(self.entries):
            if k == kind and key.startswith(prefix):
                self._record((k, key), None)

    def _record(self, ref: tuple[str, str], entry: dict | None) -> None:
        if entry is None:
            if self.entries.pop(ref, None) is not None:
                self.changed[ref] = None
        elif self.entries.get(ref) != entry:
            self.entries[ref] = entry
            self.changed[ref] = entry

    # -- what the API does with them ---------------------------------------------
    def put_tenant(self, name: str, spec: dict) -> None:
        """The tenant becomes exactly ``spec`` (its VMs and services included)."""
        before = self.doc()["tenants"].get(name, {})
        self.set("tenant", name, own(spec))
        self.forget("drain", f"{name}/")
        for kind, children in _CHILDREN.items():
            names = set(spec.get(children, {})) | set(before.get(children, {})) \
                | set(self.base.get("tenants", {}).get(name, {}).get(children, {}))
            for child in sorted(names):
                self.set(kind, f"{name}/{child}", spec.get(children, {}).get(child))

    def delete_tenant(self, name: str) -> None:
        for kind in ("drain", "service", "vm", "security_group"):
            self.forget(kind, f"{name}/")
        self.set("tenant", name, None)

    def put_service(self, tenant: str, name: str, spec: dict | None) -> None:
        """The service becomes ``spec`` (None: deleted); its backends' drained flags are the spec's."""
        self.forget("drain", f"{tenant}/{name}/")
        self.set("service", f"{tenant}/{name}", spec)

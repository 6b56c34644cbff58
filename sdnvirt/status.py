"""The daemon's live state as the API shows it: plain JSON-able documents.

Pure functions of the model and the fabric; the controller's view calls them
on the controller's loop (``sdnvirt.controller.view.View``).
"""

from __future__ import annotations

from collections.abc import Iterable

from . import __version__
from .fabric import Fabric
from .model import Location, Model, Service
from .plan.documents import tables_doc
from .plan.encap import VxlanEncap, vteps
from .plan.flows import Owner, is_ours
from .plan.owners import FABRIC_COOKIE, service_cookie, tenant_cookie, vm_cookie
from .plan.reconcile import Tables


def snapshot(model: Model, fabric: Fabric, flows: dict[int, int], counters: dict | None = None) -> dict:
    """``flows``: how many flows each connected switch holds, by dpid;
    ``counters``: what the switches counted per backend, by health key."""
    names = switch_names(fabric)
    return {
        "version": __version__,
        "switches": [{"dpid": f"{dpid:016x}", "name": names[dpid],
                      "ports_up": sum(1 for up in sw.ports.values() if up),
                      "fabric_ports": fabric.fabric_ports(dpid), "flows": flows.get(dpid)}
                     for dpid, sw in sorted(fabric.switches.items())],
        "links": len(fabric.confirmed_links()) // 2,
        "vms": vms(model, names),
        "services": services(model, model.services(), counters or {}),
    }


def switch_names(fabric: Fabric) -> dict[int, str]:
    return {dpid: sw.name or f"{dpid:016x}" for dpid, sw in fabric.switches.items()}


def vms(model: Model, names: dict[int, str], tenant: str | None = None) -> list[dict]:
    """The VMs (of ``tenant``, or all) and where they are; ``names``: ``switch_names``."""
    return [{"tenant": vm.tenant, "name": vm.name, "mac": vm.mac, "ip": str(vm.ip),
             "switch": names.get(loc.dpid) if loc else None, "dpid": f"{loc.dpid:016x}" if loc else None,
             "port": loc.port if loc else None}
            for vm in model.vms() if tenant in (None, vm.tenant) for loc in [model.locations.get(vm.name)]]


def services(model: Model, chosen: Iterable[Service], counters: dict) -> list[dict]:
    """``chosen`` services with each backend's health and what the switches ``counters``
    counted for it (``stats.backend_counters``)."""
    return [{
        "tenant": svc.tenant, "name": svc.name, "vip": str(svc.vip), "protocol": svc.protocol,
        "port": svc.port, "on_empty": svc.on_empty,
        "backends": [{
            "vm": b.vm.name, "port": b.port, "weight": b.weight, "drained": b.drained,
            "up": h.up, "takes_new_connections": model.usable(svc, b),
            "last_check": h.last_reason,
            "last_latency_ms": None if h.last_latency is None else round(h.last_latency * 1000, 3),
            "checks": dict(h.results),
            **counters.get(svc.health_key(b), {})}
            for b in svc.backends for h in [model.health[svc.health_key(b)]]],
    } for svc in chosen]


def topology(model: Model, fabric: Fabric, flows: dict[int, int]) -> dict:
    """Switches with their ports, the links between them (each once), and where each VM is."""
    names = switch_names(fabric)
    links = [(a, b) for a, b in fabric.confirmed_links() if a < b]
    peer = {a: b for x, y in links for a, b in ((x, y), (y, x))}
    held = {loc: name for name, loc in model.locations.items()}

    def end(ref) -> dict:
        return {"switch": names.get(ref[0], f"{ref[0]:016x}"), "dpid": f"{ref[0]:016x}", "port": ref[1]}
    return {
        "switches": [{
            "dpid": f"{dpid:016x}", "name": names[dpid], "flows": flows.get(dpid),
            "ports": [{"port": port, "up": up, "peer": end(peer[(dpid, port)]) if (dpid, port) in peer else None,
                       "vm": held.get(Location(dpid, port))}
                      for port, up in sorted(sw.ports.items())],
        } for dpid, sw in sorted(fabric.switches.items())],
        "links": [{"a": end(a), "b": end(b)} for a, b in links],
        "vms": vms(model, names),
    }


def tables(model: Model, fabric: Fabric, held: dict[int, Tables | None]) -> dict:
    """What the connected switches hold (``held``: None until read), each flow
    with its cookie's owner named, with the links and where each VM is: what
    ``sdnvirt trace`` traces a packet through."""
    names = switch_names(fabric)
    tunnels = vteps(fabric, model.config) if model.config.controller.fabric.encapsulation == VxlanEncap.name else {}
    owners = _owners(model)
    switches = []
    for dpid, t in sorted(held.items()):
        doc = tables_doc(t if t is not None else Tables())
        for f in doc["flows"]:
            c = int(f["cookie"], 16)
            f["owner"] = owners.get(c) or (f"{Owner(c >> 56).name.lower()} (no such object)" if is_ours(c)
                                           else "not sdnvirt's")
        vtep = tunnels.get(dpid)
        switches.append({"dpid": f"{dpid:016x}", "name": names.get(dpid, f"{dpid:016x}"), "read": t is not None,
                         "vtep": None if vtep is None else {"address": vtep.address, "port": vtep.port}, **doc})
    return {
        "switches": switches,
        "links": [{"a": {"dpid": f"{a[0]:016x}", "port": a[1]}, "b": {"dpid": f"{b[0]:016x}", "port": b[1]}}
                  for a, b in fabric.confirmed_links() if a < b],
        "tenants": [{"name": name, "segment": t.segment} for name, t in sorted(model.config.tenants.items())],
        "vms": vms(model, names),
    }


def _owners(model: Model) -> dict[int, str]:
    """A name for the owner of every cookie sdnvirt writes for this model."""
    out = {FABRIC_COOKIE: "fabric"}
    for name, t in model.config.tenants.items():
        out[tenant_cookie(t.segment, name)] = f"tenant {name}"
    out.update({vm_cookie(vm): f"vm {vm.tenant}/{vm.name}" for vm in model.vms()})
    out.update({service_cookie(svc): f"service {svc.tenant}/{svc.name}" for svc in model.services()})
    return out

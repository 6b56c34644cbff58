"""``sdnvirt trace``: a packet followed through the flows the switches hold (after ovn-trace and Antrea's Traceflow).

The daemon is asked what each switch holds (``GET /v1/switches/tables``:
the controller's copy of every switch's flows, groups and meters, read from
the switch and kept up to date by every change it sent), the specs are
rebuilt and ``plan.trace`` follows the packet, hop by hop, from the source
VM's port.  The destination's MAC is what the VM would learn: the answer
to its ARP request, traced through the same flows first.

The trace sees no conntrack in the switches: a packet to a VIP is the first
packet of a new connection, and every distinct bucket of a select group is
followed, so every backend it may reach is shown.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from .plan.documents import flow_doc, tables_of
from .plan.encap import Vtep
from .plan.flows import ETH_TYPE_ARP, ETH_TYPE_IPV4, OFPP_IN_PORT
from .plan.trace import (
    CONTROLLER,
    CT,
    DELIVERED,
    DROPPED,
    ENDS,
    ENTER,
    FLOW,
    GROUP,
    LINK,
    TUNNEL,
    FakeFabric,
    Step,
    Trace,
)

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
BROADCAST = "ff:ff:ff:ff:ff:ff"


class TraceError(Exception):
    """The trace cannot be made: an unknown tenant or VM, a bad address."""


@dataclass(frozen=True)
class Destination:
    ip: ipaddress.IPv4Address
    port: int | None
    protocol: str

    def __str__(self) -> str:
        return f"{self.ip}{'' if self.port is None else f':{self.port}'}/{self.protocol}"


def destination(text: str) -> Destination:
    """IP[:PORT][/tcp|udp|icmp]; with a port and no protocol, tcp; with neither, icmp."""
    m = re.fullmatch(r"([^:/]+)(?::([^/]*))?(?:/(.*))?", text.strip())
    if m is None:
        raise TraceError(f"bad destination {text!r}: expected IP[:PORT][/tcp|udp|icmp]")
    address, port, protocol = m.groups()
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise TraceError(f"bad destination {text!r}: {address!r} is not an IPv4 address") from None
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise TraceError(f"bad destination {text!r}: the port must be a number from 1 to 65535")
    protocol = (protocol or ("tcp" if port else "icmp")).lower()
    if protocol not in PROTOCOLS:
        raise TraceError(f"bad destination {text!r}: the protocol is tcp, udp or icmp, not {protocol!r}")
    if protocol == "icmp" and port is not None:
        raise TraceError(f"bad destination {text!r}: icmp has no port")
    return Destination(ip, None if port is None else int(port), protocol)


def _packet(vm: dict, mac: str, dst: Destination, sport: int) -> dict[str, Any]:
    pkt: dict[str, Any] = {"eth_src": vm["mac"], "eth_dst": mac, "eth_type": ETH_TYPE_IPV4,
                           "ip_proto": PROTOCOLS[dst.protocol], "ipv4_src": vm["ip"], "ipv4_dst": str(dst.ip)}
    if dst.protocol == "icmp":
        return {**pkt, "icmpv4_type": 8, "icmpv4_code": 0}
    return {**pkt, f"{dst.protocol}_src": sport, f"{dst.protocol}_dst": dst.port or 0}


def _arp_request(vm: dict, ip: ipaddress.IPv4Address) -> dict[str, Any]:
    return {"eth_src": vm["mac"], "eth_dst": BROADCAST, "eth_type": ETH_TYPE_ARP, "arp_op": 1,
            "arp_sha": vm["mac"], "arp_spa": vm["ip"], "arp_tha": "00:00:00:00:00:00", "arp_tpa": str(ip)}


def trace(doc: dict, tenant: str, vm_name: str, dst: Destination, mac: str | None = None,
          sport: int = 49152) -> dict[str, Any]:
    """The trace of a packet from ``vm_name`` to ``dst`` through ``doc`` (GET /switches/tables), as a document."""
    if tenant not in {t["name"] for t in doc["tenants"]}:
        raise TraceError(f"no tenant {tenant!r} (tenants: {', '.join(t['name'] for t in doc['tenants']) or 'none'})")
    vm = next((v for v in doc["vms"] if v["tenant"] == tenant and v["name"] == vm_name), None)
    if vm is None:
        raise TraceError(f"tenant {tenant} has no VM {vm_name!r}")
    if vm["dpid"] is None:
        raise TraceError(f"VM {vm_name} is not located: the controller knows no switch port for it yet")
    switches = {int(sw["dpid"], 16): sw for sw in doc["switches"]}
    at = (int(vm["dpid"], 16), vm["port"])
    if at[0] not in switches or not switches[at[0]]["read"]:
        raise TraceError(f"the tables of VM {vm_name}'s switch {vm['switch']} have not been read yet")
    links = {(int(link["a"]["dpid"], 16), link["a"]["port"]): (int(link["b"]["dpid"], 16), link["b"]["port"])
             for link in doc["links"]}
    tunnels = {dpid: Vtep(sw["vtep"]["address"], sw["vtep"]["port"]) for dpid, sw in switches.items() if sw.get("vtep")}
    fabric = FakeFabric({dpid: tables_of(sw) for dpid, sw in switches.items()}, links, tunnels)
    out: dict[str, Any] = {"from": vm, "to": str(dst), "arp": None}
    if mac is None:
        arp = fabric.trace(*at, _arp_request(vm, dst.ip))
        answers = [d.fields["arp_sha"] for d in arp.deliveries()
                   if (d.dpid, d.port) == at and d.fields.get("arp_op") == 2]
        out["arp"] = {"who_has": str(dst.ip), "answer": answers[0] if answers else None, **_doc(arp, doc, fabric)}
        if not answers:
            out["packet"] = None
            return out
        mac = answers[0]
    pkt = _packet(vm, mac, dst, sport)
    return {**out, "packet": pkt, **_doc(fabric.trace(*at, pkt), doc, fabric)}


def _doc(t: Trace, doc: dict, fabric: FakeFabric) -> dict[str, Any]:
    names = {int(sw["dpid"], 16): sw["name"] for sw in doc["switches"]}
    owners = {f["cookie"]: f["owner"] for sw in doc["switches"] for f in sw["flows"]}
    vms = {(int(v["dpid"], 16), v["port"]): f"{v['tenant']}/{v['name']}" for v in doc["vms"] if v["dpid"]}

    def step(s: Step) -> dict[str, Any]:
        flow = None
        if s.flow is not None:
            flow = flow_doc(s.flow)
            flow["owner"] = owners.get(flow["cookie"], "?")
        peer = fabric.peer.get((s.dpid, s.port)) if s.what == LINK and s.port is not None else None
        return {"depth": s.depth, "what": s.what, "switch": names.get(s.dpid, f"{s.dpid:016x}"),
                "dpid": f"{s.dpid:016x}", "table": s.table, "flow": flow, "port": s.port,
                "peer": {"switch": names.get(peer[0], f"{peer[0]:016x}"), "port": peer[1]} if peer else None,
                "vm": vms.get((s.dpid, s.port)) if s.what == DELIVERED else None,
                "detail": s.detail, "packet": s.fields or None}
    steps = [step(s) for s in t.steps]
    return {"steps": steps, "ends": [s for s in steps if s["what"] in ENDS]}


# -- for people -----------------------------------------------------------------------

def _value(name: str, v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return f"{_value(name, v[0])}/{_value(name, v[1])}"
    if isinstance(v, int) and name in ("eth_type", "ct_state", "vlan_vid", "metadata"):
        return hex(v)
    return str(v)


def _action(a: list | tuple) -> str:
    kind = a[0]
    if kind == "output":
        return "output:in_port" if a[1] == OFPP_IN_PORT else f"output:{a[1]}"
    if kind == "set":
        return f"set_field:{_value(a[1], a[2])}->{a[1]}"
    if kind == "move":
        return f"move:{a[1]}->{a[2]}"
    if kind == "group":
        return f"group:{a[1]}"
    if kind == "ct":
        _, flags, zone, table, nat = a
        nat_text = "" if nat is None else ",nat" if len(nat) == 1 else f",nat(dst={nat[1]}:{nat[2]})"
        return f"ct({'commit,' if flags & 1 else ''}zone={zone},table={table}{nat_text})"
    return kind if len(a) == 1 or kind == "controller" else repr(tuple(a))


def actions_text(instructions: list | tuple) -> str:
    """A flow's instructions as ovs-ofctl writes them, near enough."""
    parts = []
    for i in instructions:
        if i[0] == "apply":
            parts += [_action(a) for a in i[1]]
        elif i[0] == "goto":
            parts.append(f"goto_table:{i[1]}")
        elif i[0] == "meta":
            parts.append(f"write_metadata:{i[1]:#x}")
        elif i[0] == "meter":
            parts.append(f"meter:{i[1]}")
    return ",".join(parts) or "drop"


def _line(s: dict) -> str:
    pad = "  " * s["depth"]
    what, f = s["what"], s["flow"]
    if what == ENTER:
        return f"{pad}{s['switch']} port {s['port']}"
    if what == FLOW:
        match = ",".join(f"{k}={_value(k, v)}" for k, v in f["match"].items()) or "*"
        return (f"{pad}  table {s['table']} priority {f['priority']} ({f['owner']}): {match}\n"
                f"{pad}      -> {actions_text(f['instructions'])}")
    if what == GROUP:
        return f"{pad}  {s['detail']}"
    if what == CT:
        p = s["packet"]
        to = f"{p.get('ipv4_dst')}:{p.get('tcp_dst', p.get('udp_dst', '-'))}"
        return f"{pad}  conntrack {s['detail']}; now to {to}, recirculated to table {s['table']}"
    if what == LINK:
        return f"{pad}  out of port {s['port']} to {s['peer']['switch']} port {s['peer']['port']}"
    if what == TUNNEL:
        return f"{pad}  out of tunnel port {s['port']}: {s['detail']}"
    return f"{pad}  => {_end(s)}"


def _end(s: dict) -> str:
    where = f"{s['switch']} port {s['port']}"
    if s["what"] == DELIVERED:
        return f"DELIVERED to {s['vm'] or 'a port with no known VM'} at {where}"
    if s["what"] == CONTROLLER:
        return f"SENT TO THE CONTROLLER by {s['switch']}"
    if s["what"] == DROPPED:
        f = s["flow"]
        return f"DROPPED in {s['switch']}" + (f" table {s['table']}" if s["table"] is not None else "") + (
            f" by its priority {f['priority']} flow ({f['owner']})" if f else f": {s['detail']}")
    return f"{s['what'].upper()} in {s['switch']}: {s['detail']}"


def describe(result: dict) -> str:
    """The trace for people: each step on its own line, forks indented, the ends last."""
    vm = result["from"]
    head = f"from {vm['tenant']}/{vm['name']} ({vm['ip']}, {vm['switch']} port {vm['port']}) to {result['to']}"
    lines = [head]
    arp = result["arp"]
    if arp is not None:
        lines.append(f"ARP who-has {arp['who_has']}: "
                     + (f"answered with {arp['answer']}" if arp["answer"] else "no answer; the ARP request:"))
        if not arp["answer"]:
            lines += [_line(s) for s in arp["steps"]]
            return "\n".join([*lines, "result: never sent (its destination's MAC is unknown to the VM)"])
    lines += [_line(s) for s in result["steps"]]
    lines.append("result: " + "; ".join(_end(s) for s in result["ends"]))
    return "\n".join(lines)

"""ARP answered in the edge switch from the model, OVN-style: for the tenant's VMs, its VIPs and its probe address.

ARP requests arrive only at the asker's edge switch, so only the switches
holding one of the tenant's VMs get the answers.  A VM that is not located
yet is answered for too, so that its peers can resolve it.
"""

from __future__ import annotations

from collections.abc import Hashable
from enum import IntEnum
from ipaddress import IPv4Address

from ...config import virtual_mac
from ...model import Service
from ..feature import Context, Contribution, Feature, declare
from ..flows import ETH_TYPE_ARP, OFPP_IN_PORT, Flow, Owner, apply, flow
from ..owners import service_cookie, vm_cookie
from ..tables import Table
from ..tenancy import Tenant


class Prio(IntEnum):     # table ARP
    ANSWER = 100


def arp_answer(segment: int, mac: str, ip: str, owner_cookie: int) -> Flow:
    """Turn a tenant's ARP request for ``ip`` into the reply, back out of the port it came in."""
    return flow(
        Table.ARP, Prio.ANSWER,
        {"metadata": segment, "eth_type": ETH_TYPE_ARP, "arp_op": 1, "arp_tpa": ip},
        [apply(("move", "eth_src", "eth_dst", 48),
               ("set", "eth_src", mac),
               ("set", "arp_op", 2),
               ("move", "arp_sha", "arp_tha", 48),
               ("move", "arp_spa", "arp_tpa", 32),
               ("set", "arp_sha", mac),
               ("set", "arp_spa", ip),
               ("output", OFPP_IN_PORT))],
        owner_cookie)


class ArpAnswers(Feature):
    declaration = declare("ARP answers", {Table.ARP: set(Prio)}, {Owner.VM, Owner.TENANT, Owner.SERVICE})
    reads_paths = False

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._answers: dict[str, list[Flow]] = {}     # one list per tenant, for all its switches

    def tenant_inputs(self, tenant: Tenant) -> Hashable:
        return self.ctx.model.tenant(tenant.name).probe_ip

    def parts(self, tenant: Tenant) -> dict[Hashable, object]:
        # One part per switch: a VM on a new switch adds that switch's answers only.
        return dict.fromkeys(tenant.members, (tenant.vms, tenant.services, self.tenant_inputs(tenant)))

    def part(self, tenant: Tenant, key: Hashable, out: Contribution) -> None:
        answers = self._answers.get(tenant.name)
        if answers is None:
            answers = self._answers[tenant.name] = self._answers_of(tenant)
        assert isinstance(key, int)
        out.add(key, *answers)

    def _answers_of(self, tenant: Tenant) -> list[Flow]:
        segment = tenant.segment
        answers = [arp_answer(segment, vm.mac, str(vm.ip), vm_cookie(vm)) for vm in tenant.vms]
        if tenant.services:
            # Health probes come from the probe address: backends must resolve it.
            probe_ip = self.ctx.model.tenant(tenant.name).probe_ip
            answers.append(arp_answer(segment, virtual_mac(probe_ip), str(probe_ip), tenant.cookie))
            # Services may share a VIP on different ports: the first by name answers.
            vips: dict[IPv4Address, Service] = {}
            for svc in tenant.services:
                vips.setdefault(svc.vip, svc)
            answers += (arp_answer(segment, svc.vip_mac, str(vip), service_cookie(svc)) for vip, svc in vips.items())
        return answers

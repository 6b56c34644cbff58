"""Fake switches on a fabric, programmed from a model as the controller programs switches."""

from fabrics import leafspine

from sdnvirt.controller.fakeswitch import FakeSwitch
from sdnvirt.model import Location, Model
from sdnvirt.plan.encap import vteps
from sdnvirt.plan.flows import OFPP_CONTROLLER
from sdnvirt.plan.pipeline import plan
from sdnvirt.plan.reconcile import Tables, reconcile, reconcile_fabric
from sdnvirt.plan.trace import FakeFabric


class Switches:
    """Fake switches on a fabric (by default a leaf-spine), programmed from a model,
    joined by the fabric's links and, in vxlan mode, by tunnels between its VTEPs."""

    def __init__(self, model: Model, fab=None):
        self.model = model
        self.fab = fab or leafspine()
        self.held = {dpid: FakeSwitch(dpid) for dpid in self.fab.switches}
        self.fake = FakeFabric({dpid: sw.tables for dpid, sw in self.held.items()}, self.fab.links,
                               vteps(self.fab, model.config))

    def reconcile(self, after_each_batch=lambda phase, dpid, whole: None) -> int:
        """Make the switches hold the model's plan; the number of batches it took.

        ``after_each_batch(phase, dpid, whole)``: ``whole`` once the phase is
        in every switch (the sender's barriers)."""
        desired = plan(self.model, self.fab)
        wants = {dpid: Tables.of(desired.flows[dpid], desired.groups[dpid], desired.meters[dpid])
                 for dpid in self.held}
        work = reconcile_fabric(wants, {dpid: sw.tables for dpid, sw in self.held.items()}, desired.wires)
        batches = 0
        steps = {dpid: changes.steps() for dpid, changes in work.items()}
        for step in sorted({step for by_step in steps.values() for step in by_step}):
            switches = [dpid for dpid, by_step in sorted(steps.items()) if step in by_step]
            for dpid in switches:
                self.held[dpid].apply(steps[dpid][step])
                batches += 1
                after_each_batch(step[0], dpid, dpid == switches[-1])
        assert not any(reconcile(Tables.of(desired.flows[d], desired.groups[d], desired.meters[d]), sw.tables)
                       for d, sw in self.held.items())
        return batches

    def send(self, vm_name, pkt, bucket=None, at=None):
        loc = at or self.model.locations[vm_name]
        return self.fake.send(loc.dpid, loc.port, pkt, bucket)

    def where(self, deliveries):
        """Who got the packets: VM names, the controller, or dpid:port."""
        names = {loc: name for name, loc in self.model.locations.items()}
        return sorted("controller" if d.port == OFPP_CONTROLLER else
                      names.get(Location(d.dpid, d.port), f"{d.dpid:#x}:{d.port}") for d in deliveries)


def ip(src, dst_mac, dst_ip, sport=40000, dport=80, proto=6):
    l4 = {6: "tcp", 17: "udp"}[proto]
    return {"eth_src": src.mac, "eth_dst": dst_mac, "eth_type": 0x0800, "ip_proto": proto,
            "ipv4_src": str(src.ip), "ipv4_dst": dst_ip, f"{l4}_src": sport, f"{l4}_dst": dport}

"""The planner's output applied to a fake fabric: isolation and forwarding proved without a switch."""

import itertools

import pytest
from fabrics import leafspine, placed_model

from sdnvirt.fabric import Fabric
from sdnvirt.model import Location
from sdnvirt.plan.features.port_security import recover_locations
from sdnvirt.plan.flows import OFPP_CONTROLLER, OFPVID_PRESENT, Owner, cookie_owner
from sdnvirt.plan.pipeline import plan
from sdnvirt.plan.reconcile import Tables, Verb, reconcile
from sdnvirt.plan.tables import Table
from sdnvirt.plan.trace import FakeFabric

BCAST = "ff:ff:ff:ff:ff:ff"


def fabric_and_model():
    fab, model = leafspine(), placed_model()
    return fab, model, FakeFabric.of(plan(model, fab).flows, fab.links)


def frame(vm, dst_mac, **fields):
    pkt = {"eth_src": vm.mac, "eth_dst": dst_mac, "eth_type": 0x0800,
           "ipv4_src": str(vm.ip), "ipv4_dst": "10.1.0.99"}
    pkt.update(fields)
    return pkt


def arp_request(vm, target_ip):
    return {"eth_src": vm.mac, "eth_dst": BCAST, "eth_type": 0x0806, "arp_op": 1,
            "arp_sha": vm.mac, "arp_spa": str(vm.ip), "arp_tha": "00:00:00:00:00:00",
            "arp_tpa": target_ip}


def send(fake, model, vm, pkt):
    loc = model.locations[vm.name]
    return fake.send(loc.dpid, loc.port, pkt)


def where(model, deliveries):
    names = {loc: name for name, loc in model.locations.items()}
    return sorted(names.get(Location(d.dpid, d.port), f"{d.dpid:#x}:{d.port}") for d in deliveries)


def test_unicast_reaches_exactly_the_destination_within_a_tenant():
    fab, model, fake = fabric_and_model()
    for a, b in itertools.permutations(model.vms(), 2):
        got = where(model, send(fake, model, a, frame(a, b.mac)))
        assert got == ([b.name] if a.tenant == b.tenant else []), (a.name, b.name)


def test_delivered_frames_are_untagged_and_unchanged():
    fab, model, fake = fabric_and_model()
    web1, web2 = model.vm("web1"), model.vm("web2")
    [d] = send(fake, model, web1, frame(web1, web2.mac))
    assert d.fields["vlan_vid"] == 0
    assert d.fields["eth_src"] == web1.mac and d.fields["ipv4_src"] == str(web1.ip)


@pytest.mark.parametrize("asker,target,answer", [
    ("web1", "10.1.0.12", "web2"), ("db1", "10.1.0.12", "db2"),
    ("web2", "10.1.0.11", "web1"), ("db2", "10.1.0.11", "db1"),
])
def test_arp_is_answered_in_the_edge_switch_per_tenant(asker, target, answer):
    fab, model, fake = fabric_and_model()
    vm = model.vm(asker)
    [reply] = send(fake, model, vm, arp_request(vm, target))
    assert Location(reply.dpid, reply.port) == model.locations[asker]
    f = reply.fields
    want = model.vm(answer)
    assert (f["arp_op"], f["arp_sha"], f["arp_spa"], f["eth_src"]) == (2, want.mac, target, want.mac)
    assert (f["arp_tha"], f["arp_tpa"], f["eth_dst"]) == (vm.mac, str(vm.ip), vm.mac)


def test_arp_for_unknown_address_goes_nowhere():
    fab, model, fake = fabric_and_model()
    vm = model.vm("web1")
    assert send(fake, model, vm, arp_request(vm, "10.1.0.200")) == []


@pytest.mark.parametrize("sender", ["web1", "web2", "db1", "db2"])
def test_broadcast_and_multicast_stay_in_the_tenant_and_arrive_once(sender):
    fab, model, fake = fabric_and_model()
    vm = model.vm(sender)
    peers = sorted(v.name for v in model.vms() if v.tenant == vm.tenant and v.name != sender)
    for dst, etype in [(BCAST, 0x0800), ("33:33:ff:00:00:01", 0x86DD), ("01:00:5e:00:00:fb", 0x0800)]:
        pkt = frame(vm, dst, eth_type=etype)
        if etype == 0x86DD:
            pkt = {"eth_src": vm.mac, "eth_dst": dst, "eth_type": etype}
        assert where(model, send(fake, model, vm, pkt)) == peers


@pytest.mark.parametrize("change", [
    {"eth_src": "02:00:00:00:01:03"},          # another VM's MAC
    {"eth_src": "02:00:00:00:09:09"},          # an undeclared MAC
    {"ipv4_src": "10.1.0.12"},                 # another VM's IP
    {"vlan_vid": OFPVID_PRESENT | 102},        # a fabric tag injected from an access port
    {"eth_type": 0x88CC},                      # LLDP from a VM port (fake links)
])
def test_spoofed_frames_from_a_vm_port_are_dropped(change):
    fab, model, fake = fabric_and_model()
    web1 = model.vm("web1")
    pkt = frame(web1, model.vm("web2").mac)
    pkt.update(change)
    assert send(fake, model, web1, pkt) == []


def test_arp_spoof_is_dropped():
    fab, model, fake = fabric_and_model()
    web1 = model.vm("web1")
    pkt = arp_request(web1, "10.1.0.12")
    pkt["arp_spa"] = "10.1.0.13"
    assert send(fake, model, web1, pkt) == []


def test_frames_on_a_free_port_go_to_the_controller_for_learning():
    fab, model, fake = fabric_and_model()
    [d] = fake.send(0x104, 3, {"eth_src": "02:00:00:00:01:01", "eth_dst": BCAST, "eth_type": 0x0806})
    assert d.port == OFPP_CONTROLLER


def test_lldp_on_fabric_ports_goes_to_the_controller_and_other_fabric_frames_are_dropped():
    fab, model, fake = fabric_and_model()
    [d] = fake.send(0x201, 1, {"eth_src": "02:00:00:00:00:aa", "eth_dst": "01:80:c2:00:00:0e",
                               "eth_type": 0x88CC})
    assert d.port == OFPP_CONTROLLER
    assert fake.send(0x201, 1, {"eth_src": "02:00:00:00:00:aa", "eth_dst": BCAST, "eth_type": 0x0800}) == []
    unknown_segment = {"eth_src": "02:00:00:00:00:aa", "eth_dst": "02:00:00:00:01:01",
                       "eth_type": 0x0800, "vlan_vid": OFPVID_PRESENT | 999}
    assert fake.send(0x101, 1, unknown_segment) == []


def test_paths_survive_a_link_failure():
    fab, model, _ = fabric_and_model()
    web1, web2 = model.vm("web1"), model.vm("web2")
    for spine in (0x201, 0x202):
        fab2 = leafspine()
        fab2.remove_links_at((0x102, spine - 0x200))
        fake = FakeFabric.of(plan(model, fab2).flows, fab2.links)
        assert where(model, send(fake, model, web1, frame(web1, web2.mac))) == ["web2"]
        assert where(model, send(fake, model, web2, frame(web2, web1.mac))) == ["web1"]


def test_destinations_spread_over_both_spines():
    fab, model, _ = fabric_and_model()
    tables = plan(model, fab).flows
    uplinks = {f.instructions[0][1][-1][1] for f in tables[0x101] if f.table == Table.ROUTE and f.instructions}
    assert uplinks == {1, 2}


def test_plan_does_not_depend_on_discovery_order():
    model = placed_model()
    a = leafspine()
    b = Fabric()
    for dpid in sorted(a.switches, reverse=True):
        sw = b.add_switch(dpid)
        sw.name = a.switches[dpid].name
        for p, up in sorted(a.switches[dpid].ports.items(), reverse=True):
            b.set_port(dpid, p, up)
    for src, dst in sorted(a.links.items(), reverse=True):
        b.add_link(src, dst)
    assert plan(model, a) == plan(model, b)


def test_only_switches_on_a_tenants_paths_carry_its_flows():
    fab, model, _ = fabric_and_model()
    tables = plan(model, fab).flows
    red_cookies = {f.cookie for f in tables[0x102] if cookie_owner(f.cookie)[1] == 102}
    assert red_cookies == set()   # leaf2 holds no red VM and is on no red path
    assert any(cookie_owner(f.cookie)[1] == 102 for f in tables[0x103])


def test_every_flow_names_its_owner():
    fab, model, _ = fabric_and_model()
    for flows in plan(model, fab).flows.values():
        for f in flows:
            assert cookie_owner(f.cookie)[0] in {int(o) for o in Owner}


def test_diff_moves_only_what_a_vm_move_changes():
    fab, model, _ = fabric_and_model()
    before = plan(model, fab).flows
    model.bind("web2", Location(0x104, 3))
    after = plan(model, fab).flows
    changed = {dpid: reconcile(Tables.of(after[dpid]), Tables.of(before[dpid])) for dpid in after}
    touched = {cookie_owner(f.cookie)[2] for c in changed.values() for verb in Verb for f in c.entries(verb)}
    from sdnvirt.plan.flows import object_id
    assert object_id("db1") not in touched and object_id("db2") not in touched
    assert changed[0x102].entries(Verb.DELETE) and changed[0x104].entries(Verb.ADD)


def test_locations_are_recovered_from_installed_flows():
    fab, model, _ = fabric_and_model()
    tables = plan(model, fab).flows
    fresh = placed_model()
    fresh.locations.clear()
    found = {}
    for dpid, flows in tables.items():
        found.update(recover_locations(fresh, dpid, flows))
    assert found == model.locations


def test_a_link_seen_both_ways_keeps_both_directions():
    fab = leafspine()
    assert fab.links[(0x101, 1)] == (0x201, 1) and fab.links[(0x201, 1)] == (0x101, 1)
    assert not fab.add_link((0x101, 1), (0x201, 1))
    assert not fab.add_link((0x201, 1), (0x101, 1))


def test_packets_to_the_controller_are_metered_except_lldp_on_known_fabric_ports():
    from sdnvirt.plan.features.discovery import Prio
    from sdnvirt.plan.tables import MeterId
    fab, model, _ = fabric_and_model()
    for dpid, flows in plan(model, fab).flows.items():
        for f in flows:
            sends_up = any(i[0] == "apply" and any(a[0] == "controller" for a in i[1]) for i in f.instructions)
            if not sends_up:
                continue
            metered = [i[1] for i in f.instructions if i[0] == "meter"]
            if f.priority == Prio.FABRIC_LLDP:
                assert metered == [] and f.match_dict["in_port"] in fab.fabric_ports(dpid)
            else:
                assert metered in ([MeterId.LEARN], [MeterId.DISCOVERY]), f


def test_a_vm_whose_port_has_no_pseudo_mac_gets_no_flow_elsewhere():
    fab, model, _ = fabric_and_model()
    web2 = model.vm("web2")
    model.bind("web2", Location(0x102, 0x10000))
    flows = plan(model, fab).flows
    assert not [f for f in flows[0x101] if f.match_dict.get("eth_dst") == web2.mac]
    assert [f for f in flows[0x102] if f.match_dict.get("eth_dst") == web2.mac]

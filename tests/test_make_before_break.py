"""Changes reconciled into fake switches through the real messages, with packets traced after EACH batch.

A fabric of ``FakeSwitch``es is programmed the way the controller programs
switches: plan, reconcile against what each switch holds, and the phases'
messages in order, every switch's batch of a phase before any switch's
next.  After every batch the packets that matter are traced: whatever the
moment, none is lost or leaks.
"""

import copy
import itertools

import pytest
from fabrics import TWO_TENANTS, placed_model, vxlan_doc, vxlan_fabric
from switches import Switches, ip
from test_services import doc_with

from sdnvirt import config
from sdnvirt.migration import Migrations
from sdnvirt.model import Location, Model
from sdnvirt.plan.features.port_security import recover_locations
from sdnvirt.plan.trace import CONTROLLER, DELIVERED, LOOP, by_hash

SWITCHES = {f"leaf{i}": 0x100 + i for i in range(1, 5)}
NAMES = {dpid: name for name, dpid in SWITCHES.items()}
VIP = "10.1.0.100"


# -- (a) a migration flip ----------------------------------------------------------------

def _migration(sw):
    model = sw.model
    migs = Migrations(model, wall=lambda: 1000.0, mono=lambda: 1000.0)
    sw.reconcile()
    mig = migs.request("web1", "leaf4", "live", SWITCHES, NAMES)
    migs.plugged(mig.id, 5)
    return migs, mig, model.locations["web1"], Location(0x104, 5)


def _to_web1(sw, ends, loop=False):
    """A frame to web1, from another leaf and from the source's own, reaches one
    of ``ends`` and nothing else, or (``loop``: may) loops."""
    web1 = sw.model.vm("web1")
    for peer in (sw.model.vm("web2"), sw.model.vm("web3")):
        trace = sw.fake.trace(*_at(sw.model, peer.name), ip(peer, web1.mac, str(web1.ip)))
        if loop and [e.what for e in trace.ends] == [LOOP]:
            continue
        assert [(d.dpid, d.port) for d in trace.deliveries()] in ends and len(trace.ends) == 1, (peer, trace.ends)


def test_traffic_to_a_migrating_vm_reaches_it_at_its_source_or_its_target_after_every_batch():
    sw = Switches(placed_model())
    migs, mig, source, target = _migration(sw)
    web1, web2 = sw.model.vm("web1"), sw.model.vm("web2")
    # Preparation: the target is made ready, every path still leads to the source.
    assert sw.reconcile(lambda phase, dpid, whole: _to_web1(sw, [[(source.dpid, source.port)]]))
    # Once ready, the VM's frames are let in at the target already.
    assert sw.where(sw.send("web1", ip(web1, web2.mac, str(web2.ip)), at=target)) == ["web2"]
    migs.capture(mig.id, [], {})
    assert migs.arrived(mig.id)
    # The flip: every batch delivers at one end or the other, never elsewhere,
    # and every phase, once in all the switches, leaves every path whole.
    spine = sw.held[0x201]
    added = dict(spine.added)
    ends = [[(source.dpid, source.port)], [(target.dpid, target.port)]]
    assert sw.reconcile(lambda phase, dpid, whole: _to_web1(sw, ends, loop=not whole)) >= 2
    _to_web1(sw, [[(target.dpid, target.port)]])
    # Paths were rewritten in place: the switches kept those flows (and their counters).
    assert all(spine.added[k] == added[k] for k, f in spine.tables.flows.items()
               if f.match_dict.get("eth_dst") == web1.mac)


def test_no_batch_of_a_migration_flip_makes_a_loop():
    sw = Switches(placed_model())
    migs, mig, source, target = _migration(sw)
    sw.reconcile()
    migs.capture(mig.id, [], {})
    migs.arrived(mig.id)
    ends = [[(source.dpid, source.port)], [(target.dpid, target.port)]]
    sw.reconcile(lambda phase, dpid, whole: _to_web1(sw, ends))


# -- (b) a backend going down ------------------------------------------------------------

def _vip_syn(model, client, sport):
    svc = model.services()[0]
    return ip(client, svc.vip_mac, VIP, sport=sport)


def test_a_backend_going_down_keeps_its_connections_and_takes_no_new_ones_after_every_batch():
    model = placed_model(doc_with())           # blue/web: web2:8080 (weight 2), web3:8080
    sw = Switches(model)
    sw.reconcile()
    web1 = model.vm("web1")
    # Connections opened as a switch would open them: one bucket, committed.
    opened = {}
    for sport in range(40000, 40030):
        [d] = sw.send("web1", _vip_syn(model, web1, sport), bucket=by_hash)
        assert (d.fields["ipv4_dst"], d.fields["tcp_dst"]) == (str(model.vm(sw.where([d])[0]).ip), 8080)
        opened[sport] = sw.where([d])[0]
    assert set(opened.values()) == {"web2", "web3"}
    # A backend's reply comes back from the VIP.
    sport = next(p for p, b in opened.items() if b == "web2")
    web2 = model.vm("web2")
    [back] = sw.send("web2", ip(web2, web1.mac, str(web1.ip), sport=8080, dport=sport))
    assert sw.where([back]) == ["web1"]
    assert (back.fields["ipv4_src"], back.fields["tcp_src"], back.fields["eth_src"]) == (
        VIP, 80, model.services()[0].vip_mac)

    def check(live, new_to):
        def after(phase, dpid, whole):
            for sport, backend in opened.items():
                # Every bucket the packet may hash to: the committed translation wins.
                trace = sw.fake.trace(*_at(model, "web1"), _vip_syn(model, web1, sport))
                assert {(e.what, *sw.where(trace.deliveries())) for e in trace.ends} == {(DELIVERED, backend)}, \
                    (sport, backend, phase, hex(dpid))
            fresh = sw.fake.trace(*_at(model, "web1"), _vip_syn(model, web1, 50000))
            assert {e.what for e in fresh.ends} == {new_to} and set(sw.where(fresh.deliveries())) <= live, \
                (phase, hex(dpid), fresh.ends)
        return after

    model.health[("blue", "web", "web2:8080")].force_down("test")
    sw.reconcile(check({"web3"}, DELIVERED))
    # The last one too: open connections go on, new ones are the controller's to reject.
    model.health[("blue", "web", "web3:8080")].force_down("test")
    sw.reconcile(check({"controller"}, CONTROLLER))
    assert not any(s.tables.groups for s in sw.held.values())


def _at(model, name):
    loc = model.locations[name]
    return loc.dpid, loc.port


# -- (c) a warm restart ------------------------------------------------------------------

@pytest.mark.parametrize("vxlan", [False, True])
def test_a_restarted_controller_finds_its_vms_in_the_switches_and_changes_nothing(vxlan):
    doc = doc_with()
    if vxlan:
        doc = vxlan_doc(doc)
        doc["tenants"]["blue"]["segment"] = 70001      # a VNI: wider than 16 bits
    before = placed_model(doc)
    sw = Switches(before, vxlan_fabric() if vxlan else None)
    sw.reconcile()
    # A new controller: the config, no locations; the switches as read back.
    after = Model(before.config)
    for dpid, held in sw.held.items():
        for name, loc in recover_locations(after, dpid, held.tables.flows.values()).items():
            after.bind(name, loc)
    assert after.locations == before.locations
    sw.model = after
    assert sw.reconcile() == 0
    web1, web2 = after.vm("web1"), after.vm("web2")
    assert sw.where(sw.send("web1", ip(web1, web2.mac, str(web2.ip)))) == ["web2"]


# -- (d) a VM added, a tenant added ---------------------------------------------------------

def test_isolation_holds_after_every_batch_while_a_vm_and_a_tenant_are_added():
    model = placed_model()
    sw = Switches(model)
    sw.reconcile()
    doc = copy.deepcopy(TWO_TENANTS)
    doc["tenants"]["blue"]["vms"]["web4"] = {"mac": "02:00:00:00:01:04", "ip": "10.1.0.14", "host": "leaf3"}
    # The same addresses as blue's, on the same switches.
    doc["tenants"]["green"] = {"segment": 103, "subnet": "10.1.0.0/24", "vms": {
        "g1": {"mac": "02:00:00:00:03:01", "ip": "10.1.0.11", "host": "leaf1"},
        "g2": {"mac": "02:00:00:00:03:02", "ip": "10.1.0.12", "host": "leaf4"}}}
    existing = set(model.locations)
    model.set_config(config.parse(doc))
    for name, loc in (("web4", Location(0x103, 4)), ("g1", Location(0x101, 6)), ("g2", Location(0x104, 3))):
        model.bind(name, loc)

    def isolated(final):
        def check(phase, dpid, whole):
            for a, b in itertools.permutations(model.vms(), 2):
                got = sw.where(sw.send(a.name, ip(a, b.mac, str(b.ip))))
                # A VM whose flows are not in yet: its frames are learnt from.
                learning = [["controller"]] if not final and a.name not in existing else []
                if a.tenant != b.tenant:
                    assert got in [[], *learning], (a.name, b.name, phase, hex(dpid))
                elif final or {a.name, b.name} <= existing:
                    assert got == [b.name], (a.name, b.name, phase, hex(dpid))
                else:
                    assert got in [[], [b.name], *learning], (a.name, b.name, phase, hex(dpid))
                broadcast = sw.where(sw.send(a.name, ip(a, "ff:ff:ff:ff:ff:ff", "10.1.0.255")))
                assert all(n == "controller" or model.vm(n).tenant == a.tenant for n in broadcast), (a.name, broadcast)
        return check

    assert sw.reconcile(isolated(final=False))
    isolated(final=True)(None, 0, True)


# -- (e) a link that moves the spanning tree ---------------------------------------------

def test_broadcast_never_loops_nor_doubles_while_a_link_moves_the_spanning_tree():
    sw = Switches(placed_model())
    leaf2_up, spine1_down = (0x102, 1), (0x201, 2)
    sw.fab.remove_links_at(leaf2_up)
    sw.reconcile()       # the tree reaches leaf2 through spine 2

    def broadcast_whole(phase, dpid, whole):
        for vm in sw.model.vms():
            at = _at(sw.model, vm.name)
            trace = sw.fake.trace(*at, {"eth_src": vm.mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x86DD})
            got = [(d.dpid, d.port) for d in trace.deliveries()]
            assert LOOP not in [e.what for e in trace.ends] and len(got) == len(set(got)), (vm.name, phase, hex(dpid))

    # Back: leaf2 hangs off spine 1 again. Were spine 1 to take the port before spine 2 gave
    # it up, leaf1 - spine1 - leaf2 - spine2 - leaf1 would be a loop for a moment.
    sw.fab.add_link(leaf2_up, spine1_down)
    sw.fab.add_link(spine1_down, leaf2_up)
    assert sw.reconcile(broadcast_whole) >= 2

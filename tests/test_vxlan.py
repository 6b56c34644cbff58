"""VXLAN mode: the config's rules, the tunnel flows, and isolation proved on fake switches joined by tunnels."""

import copy
import json
from types import SimpleNamespace

import pytest
from fabrics import TUNNEL_PORT, TWO_TENANTS, placed_model, vtep, vxlan_doc, vxlan_fabric
from switches import Switches, ip
from test_loop import Clock, FakeDatapath
from test_services import doc_with

from sdnvirt import config, status
from sdnvirt.config import ConfigError
from sdnvirt.controller import ofmsg, packet_in, packets, tunnels
from sdnvirt.controller.core import Controller
from sdnvirt.controller.discovery import Discovery
from sdnvirt.controller.locate import probes
from sdnvirt.controller.stats import SwitchCounters
from sdnvirt.counters import Totals
from sdnvirt.events import Claim, Events, Kind
from sdnvirt.metrics import Metrics, Snapshot, StateCollector
from sdnvirt.migration import Migrations
from sdnvirt.model import Location, Model
from sdnvirt.plan.encap import overlay_end, vteps
from sdnvirt.plan.flows import OFPP_LOCAL, Owner, apply, cookie, cookie_owner, flow, goto, write_metadata
from sdnvirt.plan.pipeline import plan
from sdnvirt.plan.tables import Table
from sdnvirt.plan.trace import DELIVERED, DROPPED, by_hash
from sdnvirt.tracing import describe, destination, trace

BLUE_VNI, RED_VNI = 70001, 70002


def vni_doc(doc=TWO_TENANTS):
    """``doc`` in vxlan mode, its tenants' segments VNIs above the VLAN range."""
    d = vxlan_doc(copy.deepcopy(doc))
    d["tenants"]["blue"]["segment"], d["tenants"]["red"]["segment"] = BLUE_VNI, RED_VNI
    return d


def problems(doc) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as err:
        config.parse(doc, "f.yaml")
    return err.value.problems


def vxlan_switches(doc=None) -> Switches:
    sw = Switches(placed_model(doc or vni_doc()), vxlan_fabric())
    sw.reconcile()
    return sw


# -- config ---------------------------------------------------------------------

def test_a_vxlan_config_with_vnis_above_4094_validates():
    cfg = config.parse(vni_doc())
    assert cfg.controller.fabric.encapsulation == "vxlan" and cfg.controller.fabric.tunnel_port == "vxlan0"
    assert cfg.tenants["blue"].segment == BLUE_VNI
    assert str(cfg.hypervisors["leaf2"].vtep) == vtep(2)
    assert cfg.capacity("leaf2") == cfg.migration.max_vms     # a vtep alone leaves the default capacity


def test_a_vni_is_refused_in_vlan_mode_and_above_24_bits_in_vxlan_mode():
    d = vni_doc()
    d["controller"]["fabric"]["encapsulation"] = "vlan"
    assert ("tenants.blue.segment", f"{BLUE_VNI} is not a VLAN id (1..4094); VNIs up to 16777215 need "
            "controller.fabric.encapsulation: vxlan") in problems(d)
    d = vni_doc()
    d["tenants"]["blue"]["segment"] = 1 << 24
    assert problems(d)[0][0] == "tenants.blue.segment"


def test_two_tenants_whose_vnis_share_a_conntrack_zone_are_refused():
    d = vni_doc()
    d["tenants"]["red"]["segment"] = BLUE_VNI + (1 << 16)
    assert problems(d) == [("tenants.red.segment", f"segment {BLUE_VNI + (1 << 16)} shares conntrack zone "
                            f"{BLUE_VNI & 0xFFFF} (its low 16 bits) with tenant blue: tenants need segments "
                            "that differ in their low 16 bits")]


@pytest.mark.parametrize("spoil, path, says", [
    (lambda d: d["hypervisors"]["leaf3"].pop("vtep"), "hypervisors.leaf3.vtep", "required in vxlan mode"),
    (lambda d: d["hypervisors"]["leaf3"].update(vtep=vtep(1)), "hypervisors.leaf3.vtep",
     f"{vtep(1)} is already the vtep of leaf1"),
    (lambda d: d["hypervisors"]["leaf3"].update(vtep="10.1.0.200"), "hypervisors.leaf3.vtep",
     "is inside the subnet 10.1.0.0/24 of tenant blue"),
    (lambda d: d["hypervisors"]["leaf3"].update(vtep="224.0.0.5"), "hypervisors.leaf3.vtep", "not a unicast"),
    (lambda d: d["hypervisors"].pop("leaf3"), "tenants.red.vms.db2.host", "leaf3 is not under hypervisors"),
    (lambda d: d.pop("hypervisors"), "hypervisors", "vxlan mode needs each hypervisor listed"),
])
def test_vteps_are_checked_in_vxlan_mode(spoil, path, says):
    d = vni_doc()
    spoil(d)
    assert any(p == path and says in msg for p, msg in problems(d)), problems(d)


def test_vlan_mode_ignores_vteps_and_needs_none():
    d = vni_doc()
    d["controller"]["fabric"]["encapsulation"] = "vlan"
    d["tenants"]["blue"]["segment"], d["tenants"]["red"]["segment"] = 101, 102
    d["hypervisors"]["leaf3"].pop("vtep")
    assert config.parse(d).hypervisors["leaf3"].vtep is None


def test_a_cookie_carries_a_24_bit_vni():
    c = cookie(Owner.VM, 0xFFFFFF, "web1")
    assert cookie_owner(c)[:2] == (Owner.VM, 0xFFFFFF)


# -- the flows --------------------------------------------------------------------

def test_unicast_goes_into_the_tunnel_to_the_destinations_vtep_and_only_the_hypervisors_hold_tenants():
    model = placed_model(vni_doc())
    flows = plan(model, vxlan_fabric(), checked=True).flows
    web2 = model.vm("web2")
    assert flow(Table.FORWARD, 100, {"metadata": BLUE_VNI, "eth_dst": web2.mac},
                [apply(("set", "tunnel_id", BLUE_VNI), ("set", "tun_ipv4_dst", vtep(2)), ("output", TUNNEL_PORT))],
                cookie(Owner.VM, BLUE_VNI, "web2")) in flows[0x101]
    # leaf2 takes blue in from leaf1's VTEP, the only other one that hosts blue.
    blue_in = [f for f in flows[0x102] if f.table == Table.INGRESS and f.priority == 200]
    assert blue_in == [flow(Table.INGRESS, 200, {"in_port": TUNNEL_PORT, "tunnel_id": BLUE_VNI,
                                                 "tun_ipv4_src": vtep(1)},
                            [write_metadata(BLUE_VNI), goto(Table.UNNAT)], cookie(Owner.TENANT, BLUE_VNI, "blue"))]
    # Anything else from the tunnel is dropped, LLDP included.
    assert flow(Table.INGRESS, 155, {"in_port": TUNNEL_PORT}, [], cookie(Owner.FABRIC)) in flows[0x102]
    # Head-end replication: one copy per other VTEP of the tenant.
    assert flow(Table.FLOOD, 100, {"metadata": BLUE_VNI},
                [apply(("output", 3), ("output", 4), ("set", "tunnel_id", BLUE_VNI), ("set", "tun_ipv4_dst", vtep(2)),
                       ("output", TUNNEL_PORT))], cookie(Owner.TENANT, BLUE_VNI, "blue")) in flows[0x101]
    # The underlay (here OpenFlow spines) holds no tenant, and leaf4 (no VM) neither.
    for dpid in (0x201, 0x202, 0x104):
        assert {f.cookie for f in flows[dpid]} == {cookie(Owner.FABRIC)}, hex(dpid)


def test_a_thousand_tenants_with_vnis_above_4094_validate_and_plan():
    tenants = {f"t{t}": {"segment": 5000 + t, "subnet": "10.0.0.0/24", "vms": {
        f"t{t}v{v}": {"mac": f"02:00:00:{t >> 8:02x}:{t & 0xFF:02x}:{v:02x}", "ip": f"10.0.0.{v + 10}",
                      "host": f"leaf{(t + v) % 4 + 1}"} for v in range(2)}} for t in range(1000)}
    model = Model(config.parse(vxlan_doc({"tenants": tenants})))
    fab = vxlan_fabric(vm_ports=500)
    for i, vm in enumerate(model.vms()):
        model.bind(vm.name, Location(0x100 + int(vm.host.removeprefix("leaf")), 3 + i // 4))
    flows = plan(model, fab).flows
    assert {f.cookie for dpid in (0x201, 0x202) for f in flows[dpid]} == {cookie(Owner.FABRIC)}
    # leaf1 holds the VMs of every tenant t with t % 4 in (0, 3), each with one peer on another leaf.
    ingress = [f for f in flows[0x101] if f.table == Table.INGRESS and f.priority == 200]
    assert sorted(f.match_dict["tunnel_id"] for f in ingress) == [5000 + t for t in range(1000) if t % 4 in (0, 3)]


def test_a_hypervisor_without_its_tunnel_port_keeps_its_own_vms_but_sends_nothing_away():
    model = placed_model(vni_doc())
    fab = vxlan_fabric()
    fab.set_port(0x101, TUNNEL_PORT, False)
    assert vteps(fab, model.config)[0x101].port is None
    flows = plan(model, fab, checked=True).flows
    web2, web3 = model.vm("web2"), model.vm("web3")
    forward = {f.match_dict["eth_dst"]: f for f in flows[0x101] if f.table == Table.FORWARD and f.priority == 100}
    assert web3.mac in forward and web2.mac not in forward


# -- fake switches joined by tunnels -------------------------------------------------

def test_tenants_with_the_same_addresses_are_isolated_by_their_vni():
    sw = vxlan_switches()
    m = sw.model
    web1, web2, db1, db2 = (m.vm(n) for n in ("web1", "web2", "db1", "db2"))
    assert sw.where(sw.send("web1", ip(web1, web2.mac, str(web2.ip)))) == ["web2"]
    assert sw.where(sw.send("db1", ip(db1, db2.mac, str(db2.ip)))) == ["db2"]
    # db1 shares web1's address: to blue's MACs it reaches nothing.
    assert sw.send("db1", ip(db1, web2.mac, str(web2.ip))) == []
    # The frame crossed in a tunnel, and left it with no tunnel field.
    [d] = sw.send("web1", ip(web1, web2.mac, str(web2.ip)))
    assert not {"tunnel_id", "tun_ipv4_src", "tun_ipv4_dst"} & d.fields.keys()
    # Broadcast: blue's VMs on every hypervisor of blue, nobody else.
    bcast = {**ip(web1, "ff:ff:ff:ff:ff:ff", "10.1.0.255", proto=17)}
    assert sw.where(sw.send("web1", bcast)) == ["web2", "web3"]


def test_a_frame_from_an_unknown_vtep_or_with_a_vni_the_hypervisor_does_not_serve_is_dropped():
    sw = vxlan_switches()
    web1, web2 = sw.model.vm("web1"), sw.model.vm("web2")
    frame = ip(web1, web2.mac, str(web2.ip))

    def tunnelled(vni, src):
        return sw.fake.trace(0x102, TUNNEL_PORT, {**frame, "tunnel_id": vni, "tun_ipv4_src": src})
    assert sw.where(tunnelled(BLUE_VNI, vtep(1)).deliveries()) == ["web2"]      # the real thing
    for vni, src in ((BLUE_VNI, "192.168.254.99"), (BLUE_VNI, vtep(4)), (RED_VNI, vtep(1)), (4242, vtep(1))):
        trace = tunnelled(vni, src)
        assert [(e.what, e.flow.priority if e.flow else None) for e in trace.ends] == [(DROPPED, 155)], (vni, src)


def test_a_vm_cannot_send_into_the_tunnel_or_with_another_tenants_vni():
    sw = vxlan_switches()
    web1, db2 = sw.model.vm("web1"), sw.model.vm("db2")
    # Tunnel fields on a VM's frame are a VM's lie: its port security classifies it as blue.
    spoofed = {**ip(web1, db2.mac, str(db2.ip)), "tunnel_id": RED_VNI}
    assert sw.send("web1", spoofed) == []
    # Nor can it reach the underlay: to a VTEP's address a frame goes nowhere, or as a broadcast, to its tenant only.
    for mac in ("ff:ff:ff:ff:ff:ff", "02:00:00:00:fe:02"):
        assert sw.where(sw.send("web1", ip(web1, mac, vtep(2), proto=17))) == (["web2", "web3"] if mac[0] == "f" else [])


def test_a_vm_on_a_switch_without_vtep_gets_no_flows():
    d = vni_doc()
    d["hypervisors"].pop("leaf4")
    model = Model(config.parse(d))
    fab = vxlan_fabric()
    assert not overlay_end(fab, model.config, 0x104) and overlay_end(fab, model.config, 0x101)
    model.bind("web1", Location(0x104, 3))
    model.bind("web2", Location(0x102, 3))
    flows = plan(model, fab, checked=True).flows
    assert {f.cookie for f in flows[0x104]} == {cookie(Owner.FABRIC)}
    assert not [f for f in flows[0x102] if f.match_dict.get("eth_dst") == model.vm("web1").mac]


def controller(doc, ports):
    """A controller whose switches (dpid -> bridge name, and its ports' names) have connected."""
    events = Events()
    ctl = Controller(config.parse(doc), Metrics(), events, lambda handler: None, clock=Clock())
    dps = {}
    for dpid, (name, names) in ports.items():
        dp = dps[dpid] = FakeDatapath()
        dp.id = dpid
        ctl.switch_connected(dp, dpid)
        ctl.ports_described(dp, [SimpleNamespace(port_no=p, name=n.encode(), config=0, state=0)
                                 for p, n in ((OFPP_LOCAL, name), *names.items())])
    return ctl, dps, events


def test_a_frame_from_a_vm_on_a_switch_without_vtep_is_not_learnt_and_says_why():
    d = vni_doc()
    d["hypervisors"].pop("leaf4")
    ctl, dps, events = controller(d, {dpid: (name, {3: f"{name}-eth3", TUNNEL_PORT: "vxlan0"})
                                      for dpid, name in ((0x104, "leaf4"), (0x101, "leaf1"))})
    web1 = ctl.model.vm("web1")
    announce = packets.gratuitous_arp(web1.mac, str(web1.ip))
    for dpid in (0x104, 0x101):
        packet_in.handle(ctl, SimpleNamespace(datapath=dps[dpid], match={"in_port": 3}, cookie=cookie(Owner.FABRIC),
                                              reason=0, data=announce))
    assert ctl.model.locations == {"web1": Location(0x101, 3)}
    [ignored] = events.since(0, [Kind.VM_CLAIM_IGNORED]).events
    assert ignored.fields == {"vm": "web1", "tenant": "blue", "dpid": f"{0x104:016x}", "port": 3,
                              "refused": Claim.NO_OVERLAY}


def test_vlan_mode_says_when_two_switches_share_a_label():
    # Labels are the low 24 bits of the dpid: the third switch's clashes with the first's.
    _, _, events = controller(copy.deepcopy(TWO_TENANTS), {0x101: ("leaf1", {}), 0x102: ("leaf2", {}),
                                                          0x7000101: ("leaf9", {})})
    said = [e.fields for e in events.since(0, [Kind.SWITCH_CONNECTED]).events]
    assert said == [{"dpid": f"{0x101:016x}"}, {"dpid": f"{0x102:016x}"},
                    {"dpid": f"{0x7000101:016x}", "label_shared_with": f"{0x101:016x}"}]


def test_a_hypervisor_without_its_tunnel_port_is_logged_once_and_in_the_metrics(caplog):
    ctl, dps, _ = controller(vni_doc(), {0x101: ("leaf1", {3: "leaf1-eth3", TUNNEL_PORT: "vxlan0"}),
                                         0x102: ("leaf2", {3: "leaf2-eth3"})})

    def vtep_up():
        snap = Snapshot(ctl.model, ctl.fabric, {}, set(ctl.sessions), {}, {}, Totals(4), Totals(2), Totals(1), [])
        metrics = Metrics()
        metrics.registry.register(StateCollector(lambda read: read(), lambda: snap))
        return {s.labels["switch"]: s.value for family in metrics.registry.collect() for s in family.samples
                if s.name == "sdnvirt_vtep_up"}
    with caplog.at_level("INFO", logger="sdnvirt.controller"):
        caplog.clear()
        tunnels.check(ctl)
        tunnels.check(ctl)
        assert [r.getMessage() for r in caplog.records] == [
            f"hypervisor leaf2 ({0x102:016x}): VTEP {vtep(2)} unusable, no port vxlan0 up on its bridge: its VMs are "
            "cut off from the other hypervisors"]
        # leaf3 and leaf4 have not connected.
        assert vtep_up() == {"leaf1": 1, "leaf2": 0, "leaf3": 0, "leaf4": 0}
        caplog.clear()
        ctl.port_status(dps[0x102], SimpleNamespace(port_no=TUNNEL_PORT, name=b"vxlan0", config=0, state=0), False)
        tunnels.check(ctl)
        assert [r.getMessage() for r in caplog.records if "VTEP" in r.getMessage()] == [
            f"hypervisor leaf2 ({0x102:016x}): VTEP {vtep(2)} usable again (tunnel port {TUNNEL_PORT} up)"]
        assert vtep_up()["leaf2"] == 1


def test_neither_lldp_nor_arp_probes_go_out_of_a_tunnel_port():
    model = Model(config.parse(vni_doc()))
    fab = vxlan_fabric()
    settings = model.config.controller.fabric
    assert {p for _, p, _ in Discovery(lambda: settings).frames(fab, 0x101)} == {1, 2, 3, 4, 5}
    assert {p for _, p, _ in probes(model, fab, 0x101)} == {3, 4, 5}
    # In vlan mode a port of that name is a port like any other.
    assert TUNNEL_PORT in {p for _, p, _ in Discovery().frames(fab, 0x101)}


def test_the_load_balancer_translates_at_the_clients_hypervisor_and_tunnels_to_the_backend():
    sw = vxlan_switches(vni_doc(doc_with()))           # blue/web: web2:8080 (leaf2), web3:8080 (leaf1)
    m = sw.model
    web1, svc = m.vm("web1"), m.services()[0]
    reached = set()
    for sport in range(40000, 40020):
        [d] = sw.send("web1", ip(web1, svc.vip_mac, str(svc.vip), sport=sport), bucket=by_hash)
        reached |= set(sw.where([d]))
    assert reached == {"web2", "web3"}
    sport = next(p for p in range(40000, 40020)
                 if sw.where(sw.send("web1", ip(web1, svc.vip_mac, str(svc.vip), sport=p), bucket=by_hash)) == ["web2"])
    web2 = m.vm("web2")
    [back] = sw.send("web2", ip(web2, web1.mac, str(web1.ip), sport=8080, dport=sport))
    assert sw.where([back]) == ["web1"] and back.fields["ipv4_src"] == str(svc.vip)


def test_a_migration_flip_changes_the_tunnel_destination_and_no_batch_loses_the_vm():
    sw = vxlan_switches()
    m = sw.model
    names = {f"leaf{i}": 0x100 + i for i in range(1, 5)}
    migs = Migrations(m, wall=lambda: 1000.0, mono=lambda: 1000.0)
    mig = migs.request("web2", "leaf4", "live", names, {d: n for n, d in names.items()})
    migs.plugged(mig.id, 5)
    sw.reconcile()
    migs.capture(mig.id, [], {})
    assert migs.arrived(mig.id)
    web1, web2 = m.vm("web1"), m.vm("web2")
    ends = ({(0x102, 3)}, {(0x104, 5)})

    def to_web2(phase, dpid, whole):
        trace = sw.fake.trace(0x101, 3, ip(web1, web2.mac, str(web2.ip)))
        assert [e.what for e in trace.ends] == [DELIVERED], (phase, hex(dpid), trace.steps)
        assert {(d.dpid, d.port) for d in trace.deliveries()} in ends
    sw.reconcile(to_web2)
    forward = next(f for f in sw.held[0x101].tables.flows.values()
                   if f.table == Table.FORWARD and f.match_dict.get("eth_dst") == web2.mac)
    assert ("set", "tun_ipv4_dst", vtep(4)) in forward.instructions[0][1]
    assert sw.where(sw.send("web1", ip(web1, web2.mac, str(web2.ip)))) == ["web2"]


def test_a_fabric_flipped_from_vlan_to_vxlan_keeps_every_path_whole_after_every_batch():
    vlan = vxlan_doc(copy.deepcopy(TWO_TENANTS))
    vlan["controller"]["fabric"]["encapsulation"] = "vlan"
    sw = Switches(placed_model(vlan), vxlan_fabric())
    sw.reconcile()
    m = sw.model
    pairs = [("web1", "web2"), ("web2", "web1"), ("db1", "db2"), ("db2", "db1")]

    def whole(phase, dpid, done):
        for a, b in pairs:
            src, dst = m.vm(a), m.vm(b)
            assert sw.where(sw.send(a, ip(src, dst.mac, str(dst.ip)))) == [b], (a, b, phase, hex(dpid))
    whole(None, 0, True)
    m.set_config(config.parse(vxlan_doc(copy.deepcopy(TWO_TENANTS))))
    sw.reconcile(whole)
    assert all({f.cookie for f in sw.held[s].tables.flows.values()} == {cookie(Owner.FABRIC)} for s in (0x201, 0x202))


def test_sdnvirt_trace_follows_a_packet_through_the_tunnel_from_the_apis_document():
    sw = vxlan_switches()
    doc = json.loads(json.dumps(status.tables(sw.model, sw.fab, {d: s.tables for d, s in sw.held.items()})))
    result = trace(doc, "blue", "web1", destination("10.1.0.12:22"))
    assert [(e["what"], e["vm"]) for e in result["ends"]] == [(DELIVERED, "blue/web2")]
    assert f"out of tunnel port {TUNNEL_PORT}: VNI {BLUE_VNI} to {vtep(2)}" in describe(result)


# -- metrics ------------------------------------------------------------------------

def test_tunnel_traffic_is_counted_per_hypervisor_and_remote_vtep_from_the_flows():
    model = placed_model(vni_doc())
    fab = vxlan_fabric()
    counters = SwitchCounters()
    counters.names = {dpid: sw.name for dpid, sw in fab.switches.items()}
    for dpid, flows in plan(model, fab).flows.items():
        for table in (Table.INGRESS, Table.FORWARD, Table.FLOOD):
            # What a switch would answer: each flow of the table, having counted 7 packets of 100 bytes.
            mods = [(f, ofmsg.flow_mod(None, f, 0)) for f in flows if f.table == table]
            body = [SimpleNamespace(table_id=table, priority=f.priority, match=m.match, instructions=m.instructions,
                                    cookie=f.cookie, packet_count=7, byte_count=700) for f, m in mods]
            if body:
                counters.flows(model, SimpleNamespace(dpid=dpid), body)
    metrics = Metrics()
    metrics.registry.register(StateCollector(lambda read: read(), lambda: Snapshot(
        model, fab, {}, set(), {}, {}, Totals(4), Totals(2), Totals(1), [], counters.tunnels)))
    samples = {(s.labels["switch"], s.labels["remote_vtep"], s.labels["direction"]): s.value
               for family in metrics.registry.collect() for s in family.samples
               if s.name == "sdnvirt_tunnel_packets_total"}
    # Into the tunnel: a flow per remote VM (leaf1 to web2 and db2, leaf2 to web1 and web3,
    # leaf3 to db1) and a tenant's broadcasts; out of it, one flow per tenant and peer.
    assert samples == {("leaf1", vtep(2), "tx"): 14, ("leaf1", vtep(3), "tx"): 14,
                       ("leaf2", vtep(1), "tx"): 21, ("leaf3", vtep(1), "tx"): 14,
                       ("leaf1", vtep(2), "rx"): 7, ("leaf1", vtep(3), "rx"): 7,
                       ("leaf2", vtep(1), "rx"): 7, ("leaf3", vtep(1), "rx"): 7}

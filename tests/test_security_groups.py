"""Security groups on fake switches fed the real messages: the allowed/denied matrix, stateful replies,
remote groups and prefixes, rule changes on established connections, the load balancer, what is never filtered."""

import copy
import ipaddress
from types import SimpleNamespace

import pytest
from fabrics import TWO_TENANTS, leafspine, placed_model
from switches import Switches, ip

from sdnvirt import config
from sdnvirt.config import ConfigError, virtual_mac
from sdnvirt.controller.stats import SwitchCounters
from sdnvirt.counters import Totals
from sdnvirt.metrics import Metrics, Snapshot, StateCollector
from sdnvirt.model import Model
from sdnvirt.plan.features.security_groups import port_masks
from sdnvirt.plan.pipeline import plan
from sdnvirt.plan.tables import Table
from sdnvirt.plan.trace import by_hash
from sdnvirt.plan.zones import vm_zones, zone

GROUPS = {
    "web": {"rules": [
        {"direction": "ingress", "protocol": "tcp", "port": 80},
        {"direction": "ingress", "protocol": "tcp", "port": "8000-8099", "remote_group": "admin"},
        {"direction": "ingress", "protocol": "icmp"},
        {"direction": "egress"},
    ]},
    "admin": {"rules": [
        {"direction": "egress", "protocol": "tcp", "port": 80},
        {"direction": "egress", "protocol": "tcp", "port": "8000-8099"},
        {"direction": "ingress", "protocol": "tcp", "port": 22, "remote_ip": "10.1.0.0/28"},
    ]},
}


def doc(**edits):
    """blue: web1 open (leaf1), web2 in web (leaf2), web3 in admin (leaf1), web4 open at 10.1.0.40 (leaf3)."""
    d = copy.deepcopy(TWO_TENANTS)
    blue = d["tenants"]["blue"]
    blue["security_groups"] = copy.deepcopy(GROUPS)
    blue["vms"]["web2"]["security_groups"] = ["web"]
    blue["vms"]["web3"]["security_groups"] = ["admin"]
    blue["vms"]["web4"] = {"mac": "02:00:00:00:01:04", "ip": "10.1.0.40", "host": "leaf3"}
    for edit in edits.values():
        edit(blue)
    return d


@pytest.fixture
def net():
    sw = Switches(placed_model(doc()))
    sw.reconcile()
    return sw


def vm(sw, name):
    return sw.model.vm(name)


def tcp(sw, src, dst, dport, sport=40000, proto=6):
    d = vm(sw, dst)
    return ip(vm(sw, src), d.mac, str(d.ip), sport, dport, proto)


def ping(sw, src, dst, reply=False):
    s, d = vm(sw, src), vm(sw, dst)
    return {"eth_src": s.mac, "eth_dst": d.mac, "eth_type": 0x0800, "ip_proto": 1,
            "ipv4_src": str(s.ip), "ipv4_dst": str(d.ip), "icmpv4_type": 0 if reply else 8}


def gets(sw, src, pkt):
    """Who receives ``pkt`` sent by ``src``; the connections it commits are kept."""
    return sw.where(sw.send(src, pkt, bucket=by_hash))


@pytest.mark.parametrize("src, dst, port, proto, allowed", [
    ("web1", "web2", 80, 6, True),           # ingress tcp 80 from anywhere
    ("web1", "web2", 81, 6, False),
    ("web1", "web2", 80, 17, False),         # udp: no rule
    ("web3", "web2", 8042, 6, True),         # 8000-8099 from the admin group
    ("web1", "web2", 8042, 6, False),        # ... web1 is not in it
    ("web3", "web2", 8100, 6, False),        # ... nor is 8100 in the range
    ("web1", "web3", 22, 6, True),           # 22 from 10.1.0.0/28
    ("web4", "web3", 22, 6, False),          # ... 10.1.0.40 is outside it
    ("web3", "web1", 80, 6, True),           # admin's egress: tcp 80 only
    ("web3", "web1", 443, 6, False),
    ("web3", "web4", 53, 17, False),
    ("web2", "web4", 53, 17, True),          # web's egress: anything
    ("web1", "web4", 9999, 6, True),         # two open VMs: as without groups
])
def test_the_rules_decide_the_first_packet(net, src, dst, port, proto, allowed):
    assert gets(net, src, tcp(net, src, dst, port, proto=proto)) == ([dst] if allowed else [])


def test_icmp_is_its_own_protocol(net):
    assert gets(net, "web1", ping(net, "web1", "web2")) == ["web2"]
    assert gets(net, "web1", ping(net, "web1", "web3")) == []
    assert gets(net, "web2", ping(net, "web2", "web1", reply=True)) == ["web1"]


def test_replies_of_allowed_connections_pass_and_others_do_not(net):
    # web3 may not be reached on port 40000, nor web2 send from 22 unasked,
    # but both answer connections their rules allowed.
    assert gets(net, "web1", tcp(net, "web1", "web3", 40000, sport=80)) == []
    assert gets(net, "web3", tcp(net, "web3", "web1", 80)) == ["web1"]
    assert gets(net, "web1", tcp(net, "web1", "web3", 40000, sport=80)) == ["web3"]
    assert gets(net, "web1", tcp(net, "web1", "web3", 22)) == ["web3"]
    assert gets(net, "web3", tcp(net, "web3", "web1", 40000, sport=22)) == ["web1"]


def test_a_removed_rule_stops_the_connections_it_allowed(net):
    assert gets(net, "web1", tcp(net, "web1", "web2", 80)) == ["web2"]
    assert gets(net, "web2", tcp(net, "web2", "web1", 40000, sport=80)) == ["web1"]
    assert gets(net, "web1", tcp(net, "web1", "web2", 80)) == ["web2"]       # established
    net.model.set_config(config.parse(doc(drop_80=lambda blue: blue["security_groups"]["web"]["rules"].pop(0))))
    net.reconcile()
    assert gets(net, "web1", tcp(net, "web1", "web2", 80)) == []
    # web2's egress allows anything, but a reply is checked as a reply,
    # against the ingress rule that is gone.
    assert gets(net, "web2", tcp(net, "web2", "web1", 40000, sport=80)) == []


def test_joining_a_group_changes_what_its_peers_allow(net):
    assert gets(net, "web1", tcp(net, "web1", "web2", 8042)) == []
    net.model.set_config(config.parse(doc(join=lambda blue: blue["vms"]["web1"].update(security_groups=["admin"]))))
    net.reconcile()
    assert gets(net, "web1", tcp(net, "web1", "web2", 8042)) == ["web2"]


def test_an_empty_list_of_groups_denies_everything_both_ways(net):
    net.model.set_config(config.parse(doc(empty=lambda blue: blue["vms"]["web4"].update(security_groups=[]))))
    net.reconcile()
    assert gets(net, "web1", tcp(net, "web1", "web4", 80)) == []
    assert gets(net, "web4", tcp(net, "web4", "web1", 80)) == []
    assert gets(net, "web4", ping(net, "web4", "web1")) == []


def test_neighbour_discovery_and_arp_are_never_filtered_other_ipv6_is(net):
    web1, web2 = vm(net, "web1"), vm(net, "web2")
    for icmpv6_type, delivered in ((135, ["web2"]), (136, ["web2"]), (128, [])):
        ns = {"eth_src": web1.mac, "eth_dst": web2.mac, "eth_type": 0x86DD, "ip_proto": 58,
              "icmpv6_type": icmpv6_type}
        assert gets(net, "web1", ns) == delivered
        back = {**ns, "eth_src": web2.mac, "eth_dst": web1.mac}
        assert gets(net, "web2", back) == (["web1"] if delivered else [])
    arp = {"eth_src": web2.mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0806, "arp_op": 1,
           "arp_spa": str(web2.ip), "arp_sha": web2.mac, "arp_tpa": str(web1.ip)}
    assert [d.port for d in net.send("web2", arp)] == [net.model.locations["web2"].port]


def test_ipv4_broadcast_skips_vms_in_groups_ipv6_multicast_does_not(net):
    web1 = vm(net, "web1")
    bcast = {"eth_src": web1.mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0800, "ip_proto": 17,
             "ipv4_src": str(web1.ip), "ipv4_dst": "10.1.0.255", "udp_src": 68, "udp_dst": 67}
    assert gets(net, "web1", bcast) == ["web4"]                   # not web2 nor web3 (in groups)
    solicit = {"eth_src": web1.mac, "eth_dst": "33:33:ff:00:00:12", "eth_type": 0x86DD, "ip_proto": 58,
               "icmpv6_type": 135}
    assert gets(net, "web1", solicit) == ["web2", "web3", "web4"]


SERVICE = {"vip": "10.1.0.100", "port": 80, "backends": [{"vm": "web2", "port": 8080}]}


@pytest.fixture
def lb():
    sw = Switches(placed_model(doc(svc=lambda blue: blue.update(services={"www": SERVICE}))))
    sw.reconcile()
    return sw


def test_a_backend_is_checked_by_its_ingress_rules_after_translation(lb):
    to_vip = ip(vm(lb, "web3"), virtual_mac(ipaddress.IPv4Address("10.1.0.100")), "10.1.0.100", 40000, 80)
    assert gets(lb, "web3", to_vip) == ["web2"]          # admin may reach 8000-8099
    reply = tcp(lb, "web2", "web3", 40000, sport=8080)
    delivered = lb.send("web2", reply, bucket=by_hash)
    assert lb.where(delivered) == ["web3"]
    assert dict(delivered[0].packet)["ipv4_src"] == "10.1.0.100"       # translated back
    web1 = ip(vm(lb, "web1"), to_vip["eth_dst"], "10.1.0.100", 40001, 80)
    assert gets(lb, "web1", web1) == []                   # web1 may reach web2's 80, not its 8080


def test_a_backend_in_groups_answers_health_probes(lb):
    probe_ip = config.parse(doc()).tenants["blue"].probe_ip
    web2 = vm(lb, "web2")
    answer = {"eth_src": web2.mac, "eth_dst": virtual_mac(probe_ip), "eth_type": 0x0800, "ip_proto": 6,
              "ipv4_src": str(web2.ip), "ipv4_dst": str(probe_ip), "tcp_src": 8080, "tcp_dst": 33000}
    assert gets(lb, "web2", answer) == ["controller"]


def test_a_vm_without_groups_gets_no_conntrack():
    sw = Switches(placed_model(TWO_TENANTS))
    sw.reconcile()
    trace = sw.fake.trace(0x101, sw.model.locations["web1"].port, tcp(sw, "web1", "web2", 80), by_hash)
    assert [s.what for s in trace.steps if s.what == "ct"] == []


def test_each_guarded_vm_is_tracked_once_each_way_in_its_own_zone(net):
    trace = net.fake.trace(0x101, net.model.locations["web3"].port, tcp(net, "web3", "web2", 8042), by_hash)
    zones = [s.detail.split(":")[0] for s in trace.steps if s.what == "ct"]
    mine = vm_zones(["web2", "web3"], {zone(101), zone(102)})
    assert zones == [f"zone {mine['web3']}", f"zone {mine['web3']}", f"zone {mine['web2']}", f"zone {mine['web2']}"]


def test_zones_are_distinct_stable_and_none_is_a_tenants():
    names = [f"vm{i}" for i in range(2000)]
    zones = vm_zones(names, {101, 102})
    assert len(set(zones.values())) == len(names) and not {0, 101, 102} & set(zones.values())
    assert vm_zones(reversed(names), {101, 102}) == zones


@pytest.mark.parametrize("first, last", [(1, 65535), (80, 80), (8000, 8099), (1023, 1025), (0, 0), (2, 65534)])
def test_port_masks_cover_the_range_exactly(first, last):
    covered = set()
    for m in port_masks(first, last):
        value, mask = m if isinstance(m, tuple) else (m, 0xFFFF)
        block = {p for p in range(65536) if p & mask == value & mask}
        assert not covered & block
        covered |= block
    assert covered == set(range(first, last + 1))


def bad(path, **edits):
    with pytest.raises(ConfigError) as err:
        config.parse(doc(**edits))
    assert {p.removesuffix(".int").removesuffix(".str") for p, _ in err.value.problems} == {path}, err.value


def rule(i, **fields):
    return lambda blue: blue["security_groups"]["web"]["rules"][i].update(fields)


def test_the_config_names_the_key_of_a_bad_group_or_rule():
    base = "tenants.blue"
    bad(f"{base}.vms.web1.security_groups.0", x=lambda blue: blue["vms"]["web1"].update(security_groups=["nope"]))
    bad(f"{base}.security_groups.web.rules.1.remote_group", x=rule(1, remote_group="nope"))
    bad(f"{base}.security_groups.web.rules.0.port", x=rule(0, port=70000))
    bad(f"{base}.security_groups.web.rules.0.port", x=rule(0, port="90-80"))
    bad(f"{base}.security_groups.web.rules.0.protocol", x=rule(0, protocol="sctp"))
    bad(f"{base}.security_groups.web.rules.2", x=rule(2, port=7))
    bad(f"{base}.security_groups.web.rules.1", x=rule(1, remote_ip="10.0.0.0/8"))


def test_a_vm_lists_its_groups_in_the_model():
    model = Model(config.parse(doc()))
    assert model.vm("web2").groups == ("web",) and model.vm("web2").guarded
    assert model.vm("web1").groups is None and not model.vm("web1").guarded


def test_drops_are_counted_per_vm_and_direction_from_the_drop_flows_counters():
    model = placed_model(doc())
    fab = leafspine()
    counters = SwitchCounters()
    held = plan(model, fab).flows
    for dpid, flows in held.items():
        for table in (Table.SG_EGRESS, Table.SG_INGRESS):
            # What a switch would answer: each flow of the table, having counted 7 packets.
            body = [SimpleNamespace(table_id=table, priority=f.priority, match=dict(f.match), packet_count=7)
                    for f in flows if f.table == table]
            if body:
                counters.flows(model, SimpleNamespace(dpid=dpid), body)
    metrics = Metrics()
    metrics.registry.register(StateCollector(lambda read: read(), lambda: Snapshot(
        model, fab, {}, set(), {}, {}, Totals(4), Totals(2), counters.sg_dropped, [])))
    samples = {(s.name, s.labels.get("vm"), s.labels.get("direction")): s.value
               for family in metrics.registry.collect() for s in family.samples
               if s.name == "sdnvirt_security_group_dropped_packets_total"}
    # Two drop flows per VM and direction (IPv4 tracked, IPv6); open VMs have none.
    assert samples == {("sdnvirt_security_group_dropped_packets_total", vm, d): 14
                       for vm in ("web2", "web3") for d in ("ingress", "egress")}

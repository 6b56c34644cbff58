"""Three controller processes on a real three-member etcd, one leaf-spine
fabric connected to all of them: one master per switch, a change through one
instance applied by the others, a migration coordinated by one and followed
by the others, kill -9 of a master under a 1 ms ping stream,
a graceful handover, slaves that never write, a backend's health shared
and deleted with its service, and etcd's faults: one member
of three lost, then the quorum lost and regained; a real Prometheus scrapes
them all for the cluster's dashboard row and alerts."""

import time

import pytest
from fabrics import TWO_TENANTS
from monitoring import panel_exprs

from sdnvirt.api.client import ApiError
from sdnvirt.cluster import claims
from sdnvirt.emulation import lab
from sdnvirt.emulation.agent import Agent
from sdnvirt.emulation.clusterlab import ClusterLab
from sdnvirt.store import EtcdStore

from .test_monitoring import Prometheus, fires, until

pytestmark = pytest.mark.integration

LEASE = 2.0
VIP = "10.1.0.100"


def cluster_doc():
    """TWO_TENANTS, with a service whose backends web2 (leaf2) and web3 (leaf1) are
    probed by their own switches' masters, and a client of blue on leaf3."""
    blue = TWO_TENANTS["tenants"]["blue"]
    vms = {**blue["vms"], "app1": {"mac": "02:00:00:00:01:09", "ip": "10.1.0.19", "host": "leaf3"}}
    web = {"vip": VIP, "port": 80,
           "health_check": {"type": "tcp", "interval": 0.2, "timeout": 0.2, "rise": 2, "fall": 2},
           "backends": [{"vm": "web2", "port": 8080}, {"vm": "web3", "port": 8080}]}
    red = TWO_TENANTS["tenants"]["red"]
    # 1.5 s of pre-copy: time to look at the target while it runs.
    red_vms = {**red["vms"], "db1": {**red["vms"]["db1"], "memory": 1500}}
    return {"controller": {"fabric": {"settle": 1.0}},
            "tenants": {**TWO_TENANTS["tenants"], "blue": {**blue, "vms": vms, "services": {"web": web}},
                        "red": {**red, "vms": red_vms}}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    lab.ensure_ovs()
    c = ClusterLab(tmp_path_factory.mktemp("cluster"), cluster_doc(), "leafspine", {"spines": 2, "leaves": 3},
                   lease_ttl=LEASE)
    c.prom, c.servers = None, {}
    try:
        c.start()
        c.servers = {n: lab.serve_http(c.emu.host(n), 8080, n) for n in ("web2", "web3")}
        c.prom = Prometheus(tmp_path_factory.mktemp("prometheus"), *(ctl.metrics_port for ctl in c.ctls.values()))
        yield c
    finally:
        for server in c.servers.values():
            server.terminate()
        if c.prom is not None:
            c.prom.stop()
        c.stop()


def reachable(c, a, b):
    return lab.wait_for(lambda: lab.ping(c.emu.host(a), ip_of(c, b), wait=0.5), 20)


def ip_of(c, vm):
    return next(str(v.ip) for t in c.cfg.tenants.values() for n, v in t.vms.items() if n == vm)


def test_each_switch_has_one_master_and_the_switches_are_spread(cluster):
    masters = cluster.masters()
    assert all(len(m) == 1 for m in masters.values()), masters
    assert len({m[0] for m in masters.values()}) >= 2, masters      # 5 switches over 3 instances
    views = [cluster.status(n) for n in cluster.alive()]
    assert all(v["switches"] == views[0]["switches"] for v in views)
    assert views[0]["leader"] in cluster.names and len(views[0]["members"]) == 3
    assert reachable(cluster, "web1", "web2") and reachable(cluster, "db1", "db2")


def test_a_vm_added_through_one_instance_is_applied_by_the_master_of_its_switch(cluster):
    host_master = cluster.master_of("leaf3")
    other = next(n for n in cluster.alive() if n != host_master)
    cursor = cluster.ctls[host_master].cursor()
    cluster.ctls[other].api().post("/tenants/blue/vms", {"name": "web4", "mac": "02:00:00:00:01:04",
                                                          "ip": "10.1.0.14", "host": "leaf3"})
    assert cluster.ctls[host_master].wait_event("config_applied", after=cursor, timeout=10)
    assert any(vm["name"] == "web4" for vm in cluster.ctls[host_master].api().get("/vms"))


def test_slaves_never_write(cluster):
    for name in cluster.alive():
        ctl = cluster.ctls[name]
        assert ctl.metric("sdnvirt_openflow_errors_total", type="bad_request") == 0, name      # no IS_SLAVE
    withheld = sum(cluster.ctls[n].metric("sdnvirt_openflow_messages_withheld_total") for n in cluster.alive())
    assert withheld > 0         # slaves had writes to make (LLDP, probes) and made none


def test_a_backend_its_switchs_master_finds_down_is_down_for_every_instance_and_every_client_until_deleted(cluster):
    prober = cluster.master_of("leaf2")         # web2's switch: the only instance that probes web2
    clients = [vm for vm, leaf in (("web1", "leaf1"), ("app1", "leaf3")) if cluster.master_of(leaf) != prober]
    assert clients, "every client's switch has the backend's master: nothing shared to test"
    assert all(lab.wait_for(lambda c=c: lab.http_get(cluster.emu.host(c), f"http://{VIP}/") in ("web2", "web3"), 10)
               for c in clients)
    cursors = {n: cluster.ctls[n].cursor() for n in cluster.alive()}
    cluster.servers.pop("web2").terminate()
    for n in cluster.alive():
        e = cluster.ctls[n].wait_event("backend_down", {"backend": "web2:8080"}, cursors[n], timeout=5)
        assert e is not None and e["fields"]["cause"] == ("refused" if n == prober else "shared"), (n, e)
    # The clients' switches, mastered by others, send new connections to web3 only.
    assert lab.wait_for(lambda: all(lab.http_get(cluster.emu.host(c), f"http://{VIP}/") == "web3" for c in clients), 5)
    assert all(lab.http_get(cluster.emu.host(c), f"http://{VIP}/") == "web3" for c in clients for _ in range(5))
    cursors = {n: cluster.ctls[n].cursor() for n in cluster.alive()}
    cluster.servers["web2"] = lab.serve_http(cluster.emu.host("web2"), 8080, "web2")
    for n in cluster.alive():
        assert cluster.ctls[n].wait_event("backend_up", {"backend": "web2:8080"}, cursors[n], timeout=5), n
    # Deleted while web2 is down, the service's verdicts go with it; created again with web2 serving, no
    # instance takes the old verdict for the new backend's.
    cursors = {n: cluster.ctls[n].cursor() for n in cluster.alive()}
    cluster.servers.pop("web2").terminate()
    assert all(cluster.ctls[n].wait_event("backend_down", {"backend": "web2:8080"}, cursors[n], timeout=5)
               for n in cluster.alive())
    api, store = cluster.ctls[prober].api(), EtcdStore(cluster.etcd.endpoints)
    api.delete("/tenants/blue/services/web")
    assert lab.wait_for(lambda: not store.list(claims.HEALTH).items, 5), store.list(claims.HEALTH).items
    cluster.servers["web2"] = lab.serve_http(cluster.emu.host("web2"), 8080, "web2")
    api.post("/tenants/blue/services", {"name": "web", **cluster_doc()["tenants"]["blue"]["services"]["web"]})
    assert lab.wait_for(lambda: all(any(lab.http_get(cluster.emu.host(c), f"http://{VIP}/") == "web2" for _ in range(8))
                                    for c in clients), 10)
    time.sleep(1.0)         # the prober's checks (0.2 s) and every instance's plans since
    assert all(b["up"] for n in cluster.alive() for b in cluster.ctls[n].api().get("/health")
               if b["backend"] == "web2:8080")


def test_a_migration_one_instance_coordinates_is_prepared_and_flipped_by_the_masters_of_the_other_switches(cluster):
    # db1 (leaf1) moves to leaf2 under a ping stream from db2 (leaf3); the coordinator masters neither.
    others = {cluster.master_of("leaf2"), cluster.master_of("leaf3")}
    coordinator = next(n for n in cluster.alive() if n not in others)
    api = cluster.ctls[coordinator].api()
    stream = lab.ping_stream(cluster.emu.host("db2"), ip_of(cluster, "db1"), seconds=5)
    time.sleep(0.5)
    agent = Agent(cluster.emu, api, cluster.cfg)
    mid = agent.request("db1", "leaf2")["id"]
    assert lab.wait_for(lambda: api.get(f"/migrations/{mid}")["phase"] == "data_transfer", 5), \
        api.get(f"/migrations/{mid}")
    # The data transfer starts once the target's master (another instance: the coordinator's word
    # reaches it through etcd) says it holds the VM's flows at the new port.
    port = api.get(f"/migrations/{mid}")["target_port"]
    assert any("02:00:00:00:02:01" in f and f"in_port={port}" in f for f in lab.dump_flows("leaf2")), \
        lab.dump_flows("leaf2")
    assert api.get(f"/migrations/{mid}")["frozen_at"] is None
    rec = agent.wait(mid, timeout=15)
    assert rec["outcome"] == "ok", rec
    times, sent, lost = lab.stream_result(stream)
    gap, _, _ = lab.longest_gap(times)
    # The others flip when etcd brings them the coordinator's word: a few ms after it flipped its own.
    assert gap <= rec["downtime"] + 0.1, (gap, rec["downtime"], sent, lost)
    for n in cluster.alive():
        [vm] = [v for v in cluster.ctls[n].api().get("/vms") if v["name"] == "db1"]
        assert (vm["switch"], vm["port"]) == ("leaf2", port), (n, vm)


def test_kill_9_of_a_leafs_master_moves_its_switches_with_no_packet_lost_and_no_flow_rewritten(cluster):
    victim = cluster.master_of("leaf1")
    mine = [d for d, m in cluster.masters().items() if m == [victim]]
    survivors = [n for n in cluster.alive() if n != victim]
    stream = lab.ping_stream(cluster.emu.host("web1"), ip_of(cluster, "web2"), seconds=6)
    time.sleep(1.0)
    cursors = {n: cluster.ctls[n].cursor() for n in survivors}
    killed = time.time()
    cluster.ctls[victim].stop(9)
    # A backend on a switch of the victim dies with it: nobody probes it until a survivor masters its switch.
    cluster.servers.pop("web3").terminate()
    taken = {dpid: t - killed for dpid, t in cluster.taken_over(mine, survivors, cursors, LEASE + 3).items()}
    assert set(taken) == set(mine), f"not taken over: {set(mine) - set(taken)}"
    assert max(taken.values()) <= LEASE + 1.5, taken        # lease_ttl + 0.5 s, with room for a loaded machine
    # bench/ha.py measures how long after the kill (the bound: takeover + fall x interval + timeout).
    down = [cluster.ctls[n].wait_event("backend_down", {"backend": "web3:8080"}, cursors[n], timeout=5)
            for n in survivors]
    assert all(e is not None for e in down), down
    times, sent, lost = lab.stream_result(stream)
    assert len(times) > 1000 and lost == 0, (sent, lost, lab.longest_gap(times),
                                             timeline(cluster, survivors, cursors, killed))
    # The new masters read the switches and changed nothing that was right.
    assert lab.wait_for(cluster.settled, 10)
    for n in survivors:
        changes = [e["fields"] for e in cluster.ctls[n].events("reconciled", after=cursors[n])]
        assert sum(f["flow_add"] + f["flow_modify"] + f["flow_delete"] for f in changes) == 0, \
            timeline(cluster, survivors, cursors, killed)
    cluster.servers["web3"] = lab.serve_http(cluster.emu.host("web3"), 8080, "web3")


def timeline(c, names, cursors, since):
    """What the instances saw and did after ``since``, for a failure's message."""
    kinds = ("role_changed", "cluster_changed", "link_down", "link_up", "reconciled")
    keep = ("dpid", "role", "members", "port", "cause", "src_dpid", "src_port", "flow_add", "flow_modify",
            "flow_delete", "group_add", "group_modify", "group_delete")
    return sorted(((round(e["time"] - since, 3), n, e["kind"], {k: v for k, v in e["fields"].items() if v and k in keep})
                   for n in names for e in c.ctls[n].events(kinds, after=cursors[n])), key=lambda e: e[:3])


def test_sigterm_hands_the_switches_over_at_once(cluster):
    leaving = cluster.master_of("leaf2")
    mine = [d for d, m in cluster.masters().items() if m == [leaving]]
    (stay,) = [n for n in cluster.alive() if n != leaving]
    cursor = cluster.ctls[stay].cursor()
    cluster.ctls[leaving].stop()
    stopped = time.time()
    taken = cluster.taken_over(mine, [stay], {stay: cursor}, 5)
    assert set(taken) == set(mine) and all(t - stopped < 1.0 for t in taken.values()), (taken, stopped)
    assert lab.wait_for(cluster.settled, 10)
    assert reachable(cluster, "web1", "web2") and reachable(cluster, "db2", "db1")


def test_etcd_one_member_lost_nothing_visible_quorum_lost_writes_refused_flows_untouched_then_resumed(cluster):
    (name,) = cluster.alive()
    ctl, etcd, prom = cluster.ctls[name], cluster.etcd, cluster.prom
    api = ctl.api()
    cursor = ctl.cursor()
    # One member of three lost (the leader, the worst one): nothing visible.
    etcd.kill(etcd.leader())
    api.post("/tenants/blue/vms", {"name": "web5", "mac": "02:00:00:00:01:05", "ip": "10.1.0.15", "host": "leaf2"})
    assert lab.wait_for(lambda: any("02:00:00:00:01:05" in f for f in lab.dump_flows("leaf2")), 10)
    assert not ctl.events("cluster_changed", {"fenced": True}, cursor) and not ctl.events("role_changed", after=cursor)

    # The quorum lost: the instance fences itself, refuses writes, answers reads, leaves the flows alone.
    flows = {sw.name: sorted(map(lab.flow_key, lab.dump_flows(sw.name))) for sw in cluster.emu.net.switches}
    cursor = ctl.cursor()
    etcd.kill(next(m for m in etcd.members if m.proc.poll() is None))
    assert ctl.wait_event("cluster_changed", {"fenced": True}, cursor, timeout=LEASE + 3)
    with pytest.raises(ApiError) as refused:
        api.post("/tenants/blue/vms", {"name": "web6", "mac": "02:00:00:00:01:06", "ip": "10.1.0.16", "host": "leaf2"})
    assert refused.value.status == 503 and "etcd unreachable" in str(refused.value), refused.value
    assert {vm["name"] for vm in api.get("/tenants/blue/vms")} >= {"web1", "web5"}
    assert ctl.api().get("/status")["cluster"]["fenced"] is True
    assert reachable(cluster, "web1", "web2")
    fires(prom, ctl, "SdnvirtEtcdUnreachable")
    fires(prom, ctl, "SdnvirtSwitchWithoutMaster", switch="leaf1")
    fires(prom, ctl, "SdnvirtClusterMemberLost")

    # The quorum back: the instance masters its switches again and rewrites nothing.
    for member in etcd.members:
        if member.proc.poll() is not None:
            etcd.start_member(member, new=False)
    assert ctl.wait_event("cluster_changed", {"fenced": False}, cursor, timeout=20)
    assert lab.wait_for(cluster.settled, 20)
    # A change after it is applied, and the only one.
    api.post("/tenants/blue/vms", {"name": "web6", "mac": "02:00:00:00:01:06", "ip": "10.1.0.16", "host": "leaf2"})
    assert lab.wait_for(lambda: any("02:00:00:00:01:06" in f for f in lab.dump_flows("leaf2")), 10)
    now = {sw.name: sorted(map(lab.flow_key, lab.dump_flows(sw.name))) for sw in cluster.emu.net.switches}
    web6 = sum(1 for lines in now.values() for f in lines if "02:00:00:00:01:06" in f or "10.1.0.16" in f)
    assert {sw: [f for f in lines if "02:00:00:00:01:06" not in f and "10.1.0.16" not in f]
            for sw, lines in now.items()} == flows
    changes = [e["fields"] for e in ctl.events("reconciled", after=cursor)]
    assert sum(f["flow_add"] + f["flow_modify"] + f["flow_delete"] for f in changes) == web6, changes
    # The dashboard's cluster row has data from the cluster's daemons.
    for board, title, expr in panel_exprs(cluster=True):
        until(lambda expr=expr: prom.query(expr), 10, f"data for {board}/{title}: {expr}")

"""One controller of two cut off from etcd (the relay it reaches etcd through drops
everything) while its switches still reach it: it fences itself before the other
takes its switches over, no packet of a 1 ms stream is lost, and once it reaches
etcd again it takes its share back with no flow rewritten."""

import time

import pytest

from sdnvirt.emulation import lab
from sdnvirt.emulation.clusterlab import ClusterLab

from .test_cluster import LEASE, cluster_doc, ip_of, timeline

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path):
    lab.ensure_ovs()
    c = ClusterLab(tmp_path, cluster_doc(), "leafspine", {"spines": 2, "leaves": 3}, size=2, lease_ttl=LEASE,
                   relayed=("ctl0", "ctl1"))
    try:
        yield c.start()
    finally:
        c.stop()


def test_an_instance_cut_off_from_etcd_fences_itself_before_its_switches_move_and_comes_back_rewriting_nothing(
        cluster):
    cut = cluster.master_of("leaf1")
    mine = [d for d, m in cluster.masters().items() if m == [cut]]
    others = [n for n in cluster.alive() if n != cut]
    stream = lab.ping_stream(cluster.emu.host("web1"), ip_of(cluster, "web2"), seconds=6)
    time.sleep(1.0)
    cursors = {n: cluster.ctls[n].cursor() for n in cluster.alive()}
    # Counted since its start: a switch handed over while the instances joined may have refused a write in flight.
    refused = cluster.ctls[cut].metric("sdnvirt_openflow_errors_total", type="bad_request")
    for relay in cluster.relays[cut]:
        relay.cut()         # its switches and its API still reach it; etcd does not
    try:
        fenced = cluster.ctls[cut].wait_event("cluster_changed", {"fenced": True}, cursors[cut], timeout=LEASE + 2)
        taken = cluster.taken_over(mine, others, cursors, LEASE + 3)
        assert fenced is not None and set(taken) == set(mine), (fenced, taken, mine)
        # Silent before its lease could be taken over: no write of it ever met another's claim.
        assert fenced["time"] < min(taken.values()), (fenced["time"], taken)
        assert cluster.ctls[cut].metric("sdnvirt_openflow_errors_total", type="bad_request") == refused, \
            (refused, timeline(cluster, cluster.alive(), cursors, fenced["time"]))
        times, sent, lost = lab.stream_result(stream)
        assert len(times) > 1000 and lost == 0, (sent, lost, lab.longest_gap(times))
    finally:
        for relay in cluster.relays[cut]:
            relay.mend()
    # Back: it joins again and takes its share, and nobody rewrites a flow that was right.
    assert cluster.ctls[cut].wait_event("cluster_changed", {"fenced": False}, fenced["id"], timeout=10)
    assert lab.wait_for(cluster.settled, 30), {n: cluster.status(n) for n in cluster.alive()}
    time.sleep(2.0)
    changes = [e["fields"] for n in cluster.alive() for e in cluster.ctls[n].events("reconciled", after=cursors[n])]
    assert sum(f["flow_add"] + f["flow_modify"] + f["flow_delete"] for f in changes) == 0, \
        timeline(cluster, cluster.alive(), cursors, fenced["time"])

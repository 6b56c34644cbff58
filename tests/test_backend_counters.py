"""What the switches counted, per backend: the lb and unnat tables' flow stats summed by owner."""

from types import SimpleNamespace

from fabrics import placed_model
from test_services import doc_with

from sdnvirt.controller.stats import backend_counters
from sdnvirt.plan.tables import Table

BLUE, RED = 101, 102


def stat(priority, packets, **match):
    return SimpleNamespace(priority=priority, match=match, packet_count=packets, byte_count=packets * 100)


def test_each_backend_gets_the_counters_that_name_it_summed_over_the_switches_and_no_other():
    model = placed_model(doc_with(services_red={"db": {"vip": "10.1.0.200", "port": 5432, "backends": [
        {"vm": "db2", "port": 5432}]}}))
    web2, db2 = str(model.vm("web2").ip), str(model.vm("db2").ip)
    assert web2 == db2          # the tenants' subnets overlap: the segment tells them apart
    leaf1 = {Table.LB: [stat(95, 5, metadata=BLUE, ipv4_dst=web2, tcp_dst=8080),
                        stat(90, 7, metadata=BLUE, ipv4_dst=web2),
                        stat(95, 11, metadata=BLUE, ipv4_dst=web2, tcp_dst=9090),    # another port: not a connection
                        stat(95, 13, metadata=RED, ipv4_dst=db2, tcp_dst=5432),
                        stat(80, 17, metadata=BLUE, ipv4_dst=web2)],                 # not a backend's flow
             Table.UNNAT: [stat(100, 3, metadata=BLUE, ipv4_src=web2, tcp_src=8080),
                           stat(100, 19, metadata=BLUE, ipv4_src=web2, tcp_src=9090)]}
    leaf2 = {Table.LB: [stat(95, 1, metadata=BLUE, ipv4_dst=web2, tcp_dst=8080)],
             Table.UNNAT: [stat(100, 2, metadata=RED, ipv4_src=db2, tcp_src=5432)]}
    sessions = {1: SimpleNamespace(flow_counters=leaf1), 2: SimpleNamespace(flow_counters=leaf2)}

    counted = backend_counters(model, sessions)
    assert counted["blue", "web", "web2:8080"] == {
        "connections": 6, "packets_to_backend": 24, "bytes_to_backend": 2400,
        "packets_from_backend": 3, "bytes_from_backend": 300}
    assert counted["red", "db", "db2:5432"] == {
        "connections": 13, "packets_to_backend": 13, "bytes_to_backend": 1300,
        "packets_from_backend": 2, "bytes_from_backend": 200}
    assert counted["blue", "web", "web3:8080"] == dict.fromkeys(counted["blue", "web", "web3:8080"], 0)
    # Asked for one service: that service's backends only.
    (db,) = [svc for svc in model.services() if svc.name == "db"]
    assert backend_counters(model, sessions, [db]) == {("red", "db", "db2:5432"): counted["red", "db", "db2:5432"]}

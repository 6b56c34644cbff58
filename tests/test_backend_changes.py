"""A backend going up or down is told alike whatever decided it: the same
event fields and the same log line, read off the model's health."""

import copy
import logging

from fabrics import TWO_TENANTS, placed_model

from sdnvirt import config
from sdnvirt.controller import backends
from sdnvirt.controller.core import Controller
from sdnvirt.events import Cause, Events
from sdnvirt.metrics import Metrics

KEY = ("blue", "web", "web2:8080")


def doc():
    doc = copy.deepcopy(TWO_TENANTS)
    doc["tenants"]["blue"]["services"] = {"web": {
        "vip": "10.1.0.100", "port": 80, "backends": [{"vm": "web2", "port": 8080}, {"vm": "web3", "port": 8080}],
        "health_check": {"interval": 0.2, "timeout": 0.2, "rise": 1, "fall": 1}}}
    return doc


def told(events, caplog):
    """Each backend event since the start, as (kind, fields), and the log lines about backends."""
    return ([(e.kind, e.fields) for e in events.since(0).events if e.kind.startswith("backend_")],
            [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend ")])


def test_the_event_and_the_log_line_say_what_the_models_health_holds(caplog):
    model, events = placed_model(doc()), Events()
    svc = model.services()[0]
    model.health[KEY].force_down("its switch disconnected")
    with caplog.at_level(logging.WARNING, logger="sdnvirt.controller"):
        backends.changed(events, model, svc, svc.backends[0], Cause.SWITCH_LOST)
        model.health[KEY].record(True, "SYN-ACK")
        backends.changed(events, model, svc, svc.backends[0], Cause.ANSWERED)
    fields = {"tenant": "blue", "service": "web", "backend": "web2:8080"}
    assert told(events, caplog) == (
        [("backend_down", {**fields, "cause": "switch_lost"}), ("backend_up", {**fields, "cause": "answered"})],
        ["backend web2:8080 of blue/web is DOWN (its switch disconnected)",
         "backend web2:8080 of blue/web is UP (SYN-ACK)"])


def test_the_prober_and_a_vm_leaving_its_port_tell_it_the_same_way(caplog):
    events = Events()
    ctl = Controller(config.parse(doc()), Metrics(), events, lambda handler: None, clock=lambda: 100.0)
    ctl.model.locations.update(placed_model(doc()).locations)
    web3 = ctl.model.locations["web3"]
    with caplog.at_level(logging.WARNING, logger="sdnvirt.controller"):
        ctl.prober.tick(100.0)          # both probed; no switch: no answer
        ctl.prober.tick(100.3)          # timed out: web2 down (and web3, probed alike)
        ctl.unbind_port(web3.dpid, web3.port)       # web3 already down: nothing more to tell
    kinds, lines = told(events, caplog)
    assert [(kind, f["backend"], f["cause"]) for kind, f in kinds] == [
        ("backend_down", "web2:8080", "no_answer"), ("backend_down", "web3:8080", "no_answer")]
    assert lines == ["backend web2:8080 of blue/web is DOWN (no reply)", "backend web3:8080 of blue/web is DOWN (no reply)"]
    ctl.model.bind("web3", web3)        # back, and probed up again
    ctl.model.health["blue", "web", "web3:8080"].record(True, "SYN-ACK")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sdnvirt.controller"):
        ctl.unbind_port(web3.dpid, web3.port)
    kinds, lines = told(events, caplog)
    assert kinds[-1] == ("backend_down", {"tenant": "blue", "service": "web", "backend": "web3:8080",
                                          "cause": "vm_left_port"})
    assert lines == ["backend web3:8080 of blue/web is DOWN (its VM left its port)"]

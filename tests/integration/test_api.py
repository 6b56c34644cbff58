"""Changes made through the REST API take effect in a real fabric."""

import time

import pytest

from sdnvirt.emulation import lab

pytestmark = pytest.mark.integration

WEB4 = {"name": "web4", "mac": "02:00:00:00:01:04", "ip": "10.1.0.14", "host": "leaf2"}


def _until(check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
    return False


def test_a_vm_added_through_the_api_gets_connectivity_and_loses_it_when_deleted(leafspine):
    api = leafspine.ctl.api()
    # Plugged in before it exists for the controller: a stranger, whose frames go nowhere.
    web4 = leafspine.emu.plug("web4", "leaf2", WEB4["mac"], f"{WEB4['ip']}/24")
    web1 = str(leafspine.vm("web1").ip)
    assert not lab.reachable(web4, web1, tries=2)

    assert api.post("/tenants/blue/vms", WEB4)["origin"] == "api"
    assert _until(lambda: lab.ping(web4, web1, wait=0.5), 30), leafspine.ctl.log_tail()
    assert {v["name"]: v["switch"] for v in api.get("/vms")}["web4"] == "leaf2"
    # Its address is red's db3's too: blue asks, blue's web4 answers.
    web3 = leafspine.host("web3")
    web3.cmd(f"ip neigh flush dev {web3.defaultIntf()}")
    assert lab.reachable(web3, WEB4["ip"]) and WEB4["mac"] in web3.cmd(f"ip neigh show {WEB4['ip']}")

    api.delete("/tenants/blue/vms/web4")
    assert _until(lambda: not lab.reachable(web4, web1, tries=2), 30), leafspine.ctl.log_tail()
    assert "web4" not in {v["name"] for v in api.get("/vms")}
    assert not lab.reachable(web3, WEB4["ip"], tries=2)

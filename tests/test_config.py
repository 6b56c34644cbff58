"""The config file: every mistake is reported as ``source: key.path: reason``."""

import ipaddress
import textwrap

import pytest

from sdnvirt.config import ConfigError, load, parse

# The README's example: two tenants with the same subnet and an address used in both.
EXAMPLE = textwrap.dedent("""\
    controller:
      openflow:
        address: 0.0.0.0
        port: 6653
      fabric:
        lldp_interval: 1.0
        link_timeout: 3.5
      log_level: info
    tenants:
      blue:
        segment: 101
        subnet: 10.1.0.0/24
        vms:
          web1: {mac: "02:00:00:00:01:01", ip: 10.1.0.11, host: leaf1}
          web2: {mac: "02:00:00:00:01:02", ip: 10.1.0.12, host: leaf2}
      red:
        segment: 102
        subnet: 10.1.0.0/24
        vms:
          db1: {mac: "02:00:00:00:02:01", ip: 10.1.0.11, host: leaf1}
    """)


def doc():
    """A valid document to spoil, one key at a time."""
    return {
        "tenants": {
            "blue": {"segment": 101, "subnet": "10.1.0.0/24", "vms": {
                "web1": {"mac": "02:00:00:00:01:01", "ip": "10.1.0.11"},
                "web2": {"mac": "02:00:00:00:01:02", "ip": "10.1.0.12"},
            }},
            "red": {"segment": 102, "subnet": "10.1.0.0/24", "vms": {
                "db1": {"mac": "02:00:00:00:02:01", "ip": "10.1.0.11"},
            }},
        }
    }


def problems(data, source="test.yaml") -> str:
    with pytest.raises(ConfigError) as err:
        parse(data, source)
    return str(err.value)


def write(tmp_path, text, name="sdnvirt.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- what is accepted ----------------------------------------------------------

def test_readme_example_loads(tmp_path):
    cfg = load(write(tmp_path, EXAMPLE))
    assert set(cfg.tenants) == {"blue", "red"}
    blue, red = cfg.tenants["blue"], cfg.tenants["red"]
    assert (blue.segment, red.segment) == (101, 102)
    assert blue.subnet == red.subnet == ipaddress.IPv4Network("10.1.0.0/24")
    assert set(blue.vms) == {"web1", "web2"} and set(red.vms) == {"db1"}
    assert blue.vms["web1"].ip == red.vms["db1"].ip == ipaddress.IPv4Address("10.1.0.11")
    assert blue.vms["web1"].host == "leaf1"
    assert cfg.controller.openflow.port == 6653
    assert cfg.controller.fabric.link_timeout == 3.5


def test_same_ip_in_two_tenants_is_accepted():
    cfg = parse(doc())
    assert cfg.tenants["blue"].vms["web1"].ip == cfg.tenants["red"].vms["db1"].ip


def test_mac_is_normalised_to_lower_case():
    d = doc()
    d["tenants"]["blue"]["vms"]["web1"]["mac"] = "02:AB:CD:EF:01:0A"
    assert parse(d).tenants["blue"].vms["web1"].mac == "02:ab:cd:ef:01:0a"


def test_empty_file_gives_the_defaults(tmp_path):
    cfg = load(write(tmp_path, ""))
    assert cfg.controller.openflow.port == 6653
    assert str(cfg.controller.openflow.address) == "0.0.0.0"
    assert cfg.tenants == {}


# -- unknown keys --------------------------------------------------------------

@pytest.mark.parametrize("where, path", [
    (lambda d: d, "bogus"),
    (lambda d: d["tenants"]["blue"], "tenants.blue.bogus"),
    (lambda d: d["tenants"]["blue"]["vms"]["web1"], "tenants.blue.vms.web1.bogus"),
])
def test_unknown_key_is_rejected_with_its_path(where, path):
    d = doc()
    where(d)["bogus"] = 1
    msg = problems(d)
    assert msg.startswith(f"test.yaml: {path}: ")
    assert "Extra inputs are not permitted" in msg


# -- segments ------------------------------------------------------------------

@pytest.mark.parametrize("segment, reason", [
    (0, "greater than or equal to 1"),
    (4095, "is not a VLAN id (1..4094)"),
    (1 << 24, "less than or equal to 16777215"),
    ("101", "valid integer"),
])
def test_bad_segment_is_rejected(segment, reason):
    d = doc()
    d["tenants"]["blue"]["segment"] = segment
    msg = problems(d)
    assert msg.startswith("test.yaml: tenants.blue.segment: ")
    assert reason in msg


def test_segment_used_by_two_tenants_is_rejected():
    d = doc()
    d["tenants"]["red"]["segment"] = 101
    assert problems(d) == "test.yaml: tenants.red.segment: segment 101 is already used by tenant blue"


# -- VM identities -------------------------------------------------------------

def test_mac_used_in_two_tenants_is_rejected():
    d = doc()
    d["tenants"]["red"]["vms"]["db1"]["mac"] = "02:00:00:00:01:01"
    assert problems(d) == "test.yaml: tenants.red.vms.db1.mac: MAC 02:00:00:00:01:01 is already used by VM web1"


def test_mac_clash_is_found_whatever_the_case():
    d = doc()
    d["tenants"]["red"]["vms"]["db1"]["mac"] = "02:00:00:00:01:01".upper()
    assert "tenants.red.vms.db1.mac: MAC 02:00:00:00:01:01 is already used by VM web1" in problems(d)


def test_vm_name_used_in_two_tenants_is_rejected():
    d = doc()
    d["tenants"]["red"]["vms"]["web1"] = d["tenants"]["red"]["vms"].pop("db1")
    assert problems(d) == "test.yaml: tenants.red.vms.web1: VM name web1 is already used in tenant blue"


def test_same_ip_twice_in_one_tenant_is_rejected():
    d = doc()
    d["tenants"]["blue"]["vms"]["web2"]["ip"] = "10.1.0.11"
    assert problems(d) == "test.yaml: tenants.blue.vms.web2.ip: 10.1.0.11 is already used by VM web1 of this tenant"


def test_ip_outside_the_subnet_is_rejected():
    d = doc()
    d["tenants"]["blue"]["vms"]["web2"]["ip"] = "10.2.0.12"
    assert problems(d) == "test.yaml: tenants.blue.vms.web2.ip: 10.2.0.12 is outside the tenant subnet 10.1.0.0/24"


@pytest.mark.parametrize("ip", ["10.1.0.0", "10.1.0.255"])
def test_network_and_broadcast_addresses_are_rejected(ip):
    d = doc()
    d["tenants"]["blue"]["vms"]["web2"]["ip"] = ip
    assert problems(d) == (f"test.yaml: tenants.blue.vms.web2.ip: "
                           f"{ip} is the network or broadcast address of 10.1.0.0/24")


def test_multicast_mac_is_rejected():
    d = doc()
    d["tenants"]["blue"]["vms"]["web1"]["mac"] = "03:00:00:00:01:01"
    msg = problems(d)
    assert msg.startswith("test.yaml: tenants.blue.vms.web1.mac: ")
    assert "03:00:00:00:01:01 is a multicast MAC; a VM needs a unicast one" in msg


@pytest.mark.parametrize("mac", ["02:00:00:00:01", "02-00-00-00-01-01", "02:00:00:00:01:0g", ""])
def test_malformed_mac_is_rejected(mac):
    d = doc()
    d["tenants"]["blue"]["vms"]["web1"]["mac"] = mac
    msg = problems(d)
    assert msg.startswith("test.yaml: tenants.blue.vms.web1.mac: ")
    assert f"not a MAC address like 02:00:00:00:01:01: {mac!r}" in msg


def test_unquoted_mac_that_yaml_reads_as_a_number_is_rejected(tmp_path):
    # YAML 1.1 reads 52:54:00:12:34:56 as a base-60 integer.
    text = EXAMPLE.replace('"02:00:00:00:01:01"', "52:54:00:12:34:56")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}: tenants.blue.vms.web1.mac: ")


def test_every_problem_is_reported_on_its_own_line():
    d = doc()
    d["tenants"]["red"]["segment"] = 101
    d["tenants"]["blue"]["vms"]["web2"]["ip"] = "10.9.9.9"
    lines = problems(d).splitlines()
    assert sorted(lines) == [
        "test.yaml: tenants.blue.vms.web2.ip: 10.9.9.9 is outside the tenant subnet 10.1.0.0/24",
        "test.yaml: tenants.red.segment: segment 101 is already used by tenant blue",
    ]


# -- controller settings -------------------------------------------------------

@pytest.mark.parametrize("timeout", [1.0, 0.5])
def test_link_timeout_must_be_longer_than_lldp_interval(timeout):
    d = doc()
    d["controller"] = {"fabric": {"lldp_interval": 1.0, "link_timeout": timeout}}
    assert problems(d) == "test.yaml: controller.fabric.link_timeout: must be longer than lldp_interval (1.0)"


# -- the file ------------------------------------------------------------------

def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "tenants:\n  blue:\n    segment: [101\n    subnet: 10.1.0.0/24\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == (f"{path}: (top level): not valid YAML: line 4, column 11: "
                              "expected ',' or ']', but got ':'")


def test_tab_indentation_error_names_the_line(tmp_path):
    path = write(tmp_path, "controller:\n  log_level: info\n\tbad: 1\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert f"{path}: (top level): not valid YAML: line 3, column 1:" in str(err.value)


def test_missing_file_is_reported(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"{path}: (top level): cannot read: No such file or directory"


def test_unreadable_file_is_reported(tmp_path):
    # A directory cannot be read as a file, even by root (chmod would not stop root).
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert str(err.value) == f"{tmp_path}: (top level): cannot read: Is a directory"


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_document_that_is_not_a_mapping_is_rejected(tmp_path, text, kind):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"{path}: (top level): the config must be a mapping, not {kind}"


def test_errors_from_load_name_the_file(tmp_path):
    path = write(tmp_path, EXAMPLE.replace("segment: 102", "segment: 101"), "tenants.yaml")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"{path}: tenants.red.segment: segment 101 is already used by tenant blue"
    assert err.value.source == str(path)
    assert err.value.problems == [("tenants.red.segment", "segment 101 is already used by tenant blue")]


def test_the_full_example_lists_every_setting_at_its_default():
    from pathlib import Path

    import yaml

    from sdnvirt.config import ControllerSettings, EmulationSettings, MigrationSettings
    path = Path(__file__).parent.parent / "deploy" / "examples" / "full.yaml"
    doc = yaml.safe_load(path.read_text())
    cfg = load(path)
    assert cfg.controller == ControllerSettings() and cfg.emulation == EmulationSettings()
    assert cfg.migration == MigrationSettings()

    def keys(d, prefix=""):
        return {prefix + k for k in d} | {x for k, v in d.items() if isinstance(v, dict)
                                         for x in keys(v, f"{prefix}{k}.")}
    schema = {"controller": ControllerSettings().model_dump(), "emulation": EmulationSettings().model_dump(),
              "migration": MigrationSettings().model_dump()}
    assert keys(schema) == keys({k: doc[k] for k in schema})

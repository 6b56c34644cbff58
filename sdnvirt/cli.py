"""The ``sdnvirt`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from urllib.parse import quote

from . import __version__
from .cli_access import add_parsers
from .config import Config, ConfigError, load
from .events import Kind
from .state import ConfigState
from .store import StoreError
from .store.opening import exists, open_store, where

EXIT_CONFIG = 1


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def _load_or_exit(path: str):
    try:
        return load(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def check_config(path: str) -> int:
    """Validate the file, and with the API's changes laid over it, as the daemon
    would at its start or a reload, when the store it names exists already."""
    cfg = _load_or_exit(path)
    settings = cfg.controller
    try:
        state = ConfigState(path, cfg, open_store(settings, readonly=True)) if exists(settings) else None
    except (OSError, StoreError) as err:
        # The daemon could not start on it either.
        print(f"{path}: cannot read the store {where(settings)}: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as err:
        print(f"{path} does not fit the changes made through the API (in {where(settings)}); "
              f"the daemon would refuse it:\n{err}", file=sys.stderr)
        return EXIT_CONFIG
    stored = ""
    if state is not None:
        cfg, n = state.config, len(state.entries)
        stored = f", with {n} change{'' if n == 1 else 's'} made through the API in {where(settings)}"
    vms = sum(len(t.vms) for t in cfg.tenants.values())
    print(f"{path}: configuration is valid ({len(cfg.tenants)} tenants, {vms} VMs{stored})")
    return 0


def cmd_controller(args) -> int:
    if args.check_config:
        return check_config(args.check_config)
    cfg = _load_or_exit(args.config)
    _logging(args.log_level or cfg.controller.log_level)
    from .controller.daemon import run
    return run(args.config, cfg)


def cmd_topo(args) -> int:
    cfg = _load_or_exit(args.config)
    _logging(args.log_level or "info")
    from .emulation.launcher import run_topo, topo_params
    try:
        run_topo(cfg, args.name, topo_params(args.name, args),
                 controller_port=args.controller_port or cfg.controller.openflow.port,
                 controller_ip=args.controller_ip, cli=not args.no_cli,
                 controllers=[_host_port(c) for c in args.controller])
    except (ValueError, PermissionError) as err:
        print(f"sdnvirt topo: {err}", file=sys.stderr)
        return 2
    return 0


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--controller is HOST:PORT, not {text!r}")
    return host, int(port)


def _table(rows: list[list], header: list[str]) -> str:
    rows = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


def _show(args, doc, rows: list[list], header: list[str]) -> int:
    """``doc`` as JSON with --json, else the table."""
    print(json.dumps(doc, indent=1) if args.json else _table(rows, header))
    return 0


def cmd_status(args) -> int:
    api = _api(args)
    status, topo = api.get("/status"), api.get("/topology")
    if args.json:
        print(json.dumps({**status, "topology": topo}, indent=1))
        return 0
    print(f"sdnvirt {status['version']}, up {status['uptime_s']:.0f} s, config {status['config_file']}\n"
          f"switches {status['switches']}, links {status['links']}, "
          f"VMs located {status['vms_located']}/{status['vms']}, services {status['services']}, "
          f"backends up {status['backends_up']}/{status['backends']}")
    cluster = status.get("cluster")
    if cluster:
        print(f"cluster: this instance {cluster['name']}, members {', '.join(cluster['members'])}, "
              f"leader {cluster['leader']}{', FENCED (writing to no switch)' if cluster['fenced'] else ''}; "
              "masters: " + ", ".join(f"{d} {m['master']}" for d, m in cluster['switches'].items()))
    print()
    return _show(args, None, [[s["name"], s["dpid"], sum(p["up"] for p in s["ports"]),
                               sum(p["peer"] is not None for p in s["ports"]), s["flows"]] for s in topo["switches"]],
                 ["SWITCH", "DPID", "PORTS UP", "FABRIC PORTS", "FLOWS"])


def cmd_tenants(args) -> int:
    doc = _api(args).get("/tenants")
    return _show(args, doc, [[t["name"], t["segment"], t["subnet"], len(t["vms"]), len(t["services"]), t["origin"]]
                             for t in doc], ["TENANT", "SEGMENT", "SUBNET", "VMS", "SERVICES", "FROM"])


def cmd_vms(args) -> int:
    doc = _api(args).get("/vms")
    return _show(args, doc, [[v["tenant"], v["name"], v["mac"], v["ip"], v["switch"], v["port"], v["origin"]]
                             for v in doc], ["TENANT", "VM", "MAC", "IP", "SWITCH", "PORT", "FROM"])


def _backend_rows(backends: list[dict], services: dict) -> list[list]:
    return [[b["tenant"], b["service"], services.get((b["tenant"], b["service"]), "-"), b["backend"], b["weight"],
             "DOWN" if not b["up"] else "drained" if b["drained"] else "UP",
             "yes" if b["takes_new_connections"] else "no", b["last_check"], b["last_latency_ms"],
             b["connections"], b["bytes_to_backend"], b["bytes_from_backend"]] for b in backends]


BACKEND_HEADER = ["TENANT", "SERVICE", "VIP", "BACKEND", "WEIGHT", "STATE", "NEW CONNS", "LAST CHECK",
                  "LATENCY MS", "CONNECTIONS", "BYTES IN", "BYTES OUT"]


def cmd_services(args) -> int:
    api = _api(args)
    services, health = api.get("/services"), api.get("/health")
    if args.json:
        by_service: dict[tuple[str, str], list[dict[str, object]]] = {}
        for b in health:
            by_service.setdefault((b["tenant"], b["service"]), []).append(b)
        print(json.dumps([{**s, "backends": by_service.get((s["tenant"], s["name"]), [])} for s in services],
                         indent=1))
        return 0
    vips = {(s["tenant"], s["name"]): f"{s['vip']}:{s['port']}/{s['protocol']}" for s in services}
    return _show(args, None, _backend_rows(health, vips), BACKEND_HEADER)


def cmd_drain(args) -> int:
    """Drain (or undrain) the backends of a service that match VM[:PORT]."""
    tenant, _, service = args.service.partition("/")
    api = _api(args)
    base = f"/tenants/{quote(tenant, safe='')}/services/{quote(service, safe='')}/backends"
    vm, _, port = args.backend.partition(":")
    chosen = [b for b in api.get(base) if b["vm"] == vm and port in ("", str(b["port"]))]
    if not chosen:
        print(f"sdnvirt {args.command}: service {args.service} has no backend {args.backend}", file=sys.stderr)
        return 1
    done = [api.post(f"{base}/{quote(b['backend'], safe='')}/{args.command}") for b in chosen]
    return _show(args, done, _backend_rows(done, {}), BACKEND_HEADER)


def _api(args):
    """A client of the daemon's REST API: --api and --token-file (the admin's or a tenant's token), else --config,
    else $SDNVIRT_API_URL and $SDNVIRT_API_TOKEN_FILE, else 127.0.0.1:9303 and /var/lib/sdnvirt/api-token."""
    from .api.client import Client
    from .api.token import TokenError, read_token
    from .config import ControllerSettings
    settings = _load_or_exit(args.config).controller if args.config else ControllerSettings()
    host = "127.0.0.1" if settings.api.address.is_unspecified else str(settings.api.address)
    env = {} if args.config else os.environ
    url = (args.api or env.get("SDNVIRT_API_URL")
           or f"http://{f'[{host}]' if ':' in host else host}:{settings.api.port}")
    token_file = args.token_file or env.get("SDNVIRT_API_TOKEN_FILE") or settings.token_path
    try:
        return Client(url, read_token(token_file))
    except (OSError, TokenError) as err:
        print(f"sdnvirt: cannot read the API token: {err}\n(the daemon writes it at its first start to "
              "controller.api.token_file; say where with --config FILE or --token-file)", file=sys.stderr)
        sys.exit(1)


def _client_command(func):
    """The API's refusals and an unreachable daemon as one line on stderr and exit 1."""
    def run(args) -> int:
        from .api.client import ApiError
        try:
            return func(args)
        except ApiError as err:
            hint = " (not a token of this daemon, or a revoked one: see --token-file)" if err.status == 401 else ""
            print(f"sdnvirt {args.command}: {err}{hint}", file=sys.stderr)
            return 1
    return run


def cmd_migrate(args) -> int:
    import time

    from .migration import describe
    client = _api(args)
    rec = client.post("/migrations", {"vm": args.vm, "target": args.to, "mode": args.mode})
    deadline = time.monotonic() + args.timeout
    while args.wait and rec["outcome"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
        rec = client.get(f"/migrations/{rec['id']}")
    print(json.dumps(rec, indent=1) if args.json else describe(rec))
    return 0 if rec["outcome"] in (None, "ok") else 1


def cmd_migrations(args) -> int:
    import datetime as dt

    records = _api(args).get("/migrations")
    if args.json:
        print(json.dumps(records, indent=1))
        return 0

    def ms(rec, phase):
        p = rec["phases"].get(phase)
        return None if p is None or p["duration"] is None else round(p["duration"] * 1000)

    def qemu(rec, key, scale=1000.0):
        # A QEMU live migration's own figures (seconds, bytes); none for a namespace VM.
        value = (rec.get("qemu") or {}).get(key)
        return None if value is None else round(value * scale, 1)
    print(_table([[r["id"], r["vm"], r["mode"], r["source"], r["target"],
                   dt.datetime.fromtimestamp(r["requested_at"], dt.UTC).strftime("%H:%M:%S"),
                   r["phase"], r["outcome"] or "running",
                   None if r["downtime"] is None else round(r["downtime"] * 1000, 1),
                   ms(r, "preparation"), ms(r, "data_transfer"), ms(r, "restoration"),
                   qemu(r, "total_time"), qemu(r, "downtime"), qemu(r, "stop_to_resume"),
                   qemu(r, "ram_transferred", 1 / 2**20), qemu(r, "dirty_passes", 1), r["reason"] or None]
                  for r in records],
                 ["ID", "VM", "MODE", "FROM", "TO", "REQUESTED (UTC)", "PHASE", "OUTCOME", "DOWNTIME MS",
                  "PREPARATION MS", "DATA TRANSFER MS", "RESTORATION MS", "QEMU TOTAL MS", "QEMU DOWNTIME MS",
                  "STOP-RESUME MS", "RAM MIB", "PASSES", "REASON"]))
    return 0


def cmd_trace(args) -> int:
    from .tracing import TraceError, describe, destination, trace
    try:
        dst = destination(args.to)
        result = trace(_api(args).get("/switches/tables"), args.tenant, args.vm, dst, args.mac, args.sport)
    except TraceError as err:
        print(f"sdnvirt trace: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1) if args.json else describe(result))
    return 0


def cmd_events(args) -> int:
    """The daemon's events as JSON lines; with --follow, until interrupted."""
    client = _api(args)
    cursor = args.after
    try:
        while True:
            page = client.events(cursor, args.kind, wait=25.0 if args.follow else 0.0)
            if page["missed"]:
                print(f"sdnvirt events: events after {cursor} are gone (the daemon's ring moved on, "
                      "or it restarted)", file=sys.stderr)
            for event in page["events"]:
                print(json.dumps(event), flush=True)
            cursor = page["last"]
            if not args.follow:
                return 0
    except KeyboardInterrupt:
        return 0


def cmd_image(args) -> int:
    from .emulation.guest import ImageError, build
    cfg = _load_or_exit(args.config) if args.config else Config()
    try:
        image = build(Path(cfg.controller.state_dir) / "images")
    except (ImageError, OSError) as err:
        print(f"sdnvirt image build: {err}", file=sys.stderr)
        return 1
    print(f"kernel {image.kernel}\ninitrd {image.initrd}")
    return 0


def cmd_demo(args) -> int:
    _logging(args.log_level or "warning")
    from .emulation.demo import run_demo
    return run_demo(keep_logs=args.keep_logs, encap=args.encap)


def cmd_store_copy(args) -> int:
    from .store import copying
    try:
        source = copying.open_spec(args.source, source=True)
        target = copying.open_spec(args.target, source=False)
        n = copying.copy(source, target)
    except (OSError, ValueError, StoreError) as err:
        print(f"sdnvirt store copy: {err}", file=sys.stderr)
        return 1
    print(f"copied {n} key{'' if n == 1 else 's'} from {source.name} to {target.name}")
    return 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdnvirt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sdnvirt {__version__}")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("controller", help="run the OpenFlow controller daemon in the foreground")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--config", metavar="FILE", help="serve with this config (SIGHUP re-reads it)")
    mode.add_argument("--check-config", metavar="FILE", help="validate FILE and exit (0 when valid)")
    p.set_defaults(func=cmd_controller)

    # Topology names and shapes are checked by the launcher: importing it
    # here would make every command, the daemon included, load Mininet.
    p = sub.add_parser("topo", help="launch a Mininet fabric with the config's VMs")
    p.add_argument("name", help="single | leafspine | fattree")
    p.add_argument("--config", metavar="FILE", required=True)
    p.add_argument("--no-cli", action="store_true", help="no Mininet CLI: run until SIGTERM, then clean up")
    p.add_argument("--controller-ip", default="127.0.0.1")
    p.add_argument("--controller-port", type=int, help="default: controller.openflow.port of the config")
    p.add_argument("--controller", action="append", default=[], metavar="HOST:PORT",
                   help="every instance of a cluster, each switch connecting to all (repeatable; "
                   "replaces --controller-ip/--controller-port)")
    p.add_argument("--spines", type=int, default=2, metavar="N", help="leafspine: spine switches (default 2)")
    p.add_argument("--leaves", type=int, default=4, metavar="N", help="leafspine: leaf switches (default 4)")
    p.add_argument("--k", type=int, default=4, metavar="K", help="fattree: switch radix, even (default 4)")
    p.set_defaults(func=cmd_topo)

    def api_options(p, json_option: bool = True):
        where = p.add_mutually_exclusive_group()
        where.add_argument("--config", metavar="FILE", help="the daemon's config: where its API listens, its token")
        where.add_argument("--api", metavar="URL", help="the daemon's API (default http://127.0.0.1:9303)")
        p.add_argument("--token-file", metavar="FILE", help="default: controller.api.token_file of the config, "
                       "or /var/lib/sdnvirt/api-token")
        if json_option:
            p.add_argument("--json", action="store_true", help="JSON for scripts")

    for name, func, what in (
            ("status", cmd_status, "a summary and the switches"), ("tenants", cmd_tenants, "every tenant"),
            ("vms", cmd_vms, "every VM and where it is"),
            ("services", cmd_services, "every service and the health of its backends")):
        p = sub.add_parser(name, help=f"show {what} (from the daemon's API)")
        api_options(p)
        p.set_defaults(func=_client_command(func))
    for name, what in (("drain", "no new connections to a backend; the ones it has finish"),
                       ("undrain", "new connections to a drained backend again")):
        p = sub.add_parser(name, help=what + " (kept across restarts)")
        p.add_argument("service", metavar="TENANT/SERVICE")
        p.add_argument("backend", metavar="VM[:PORT]", help="without PORT: every backend of the VM in the service")
        api_options(p)
        p.set_defaults(func=_client_command(cmd_drain))

    p = sub.add_parser("migrate", help="move a VM to another hypervisor (the hypervisor agent of "
                                       "`sdnvirt topo` carries it out)")
    p.add_argument("vm")
    p.add_argument("--to", required=True, metavar="HYPERVISOR", help="the switch to move it to")
    p.add_argument("--mode", choices=["live", "cold"], default="live")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="return once it is accepted")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for its end (default 60)")
    api_options(p)
    p.set_defaults(func=_client_command(cmd_migrate))

    p = sub.add_parser("migrations", help="every migration: phases, downtime, outcome")
    api_options(p)
    p.set_defaults(func=_client_command(cmd_migrations))

    p = sub.add_parser("trace", help="follow a packet from a VM, hop by hop, through the flows the switches hold")
    p.add_argument("--tenant", required=True)
    p.add_argument("--from", dest="vm", required=True, metavar="VM")
    p.add_argument("--to", required=True, metavar="IP[:PORT][/PROTO]",
                   help="the destination: a VM's address, a VIP, any IP; PROTO tcp, udp or icmp "
                        "(default tcp with a port, icmp without)")
    p.add_argument("--mac", help="the destination MAC (default: the answer to the VM's ARP request, traced too)")
    p.add_argument("--sport", type=int, default=49152, metavar="PORT", help="the source port (default 49152)")
    api_options(p)
    p.set_defaults(func=_client_command(cmd_trace))
    p = sub.add_parser("events", help="what happened in the daemon, one JSON object a line")
    p.add_argument("--follow", "-f", action="store_true", help="wait for new events until interrupted")
    p.add_argument("--kind", action="append", default=[], choices=[k.value for k in Kind],
                   help="only this kind (repeatable)")
    p.add_argument("--after", type=int, default=0, metavar="ID", help="only events after this id")
    api_options(p, json_option=False)
    p.set_defaults(func=_client_command(cmd_events))

    p = sub.add_parser("store", help="the daemon's store, with the daemons stopped")
    store_sub = p.add_subparsers(dest="store_command", required=True)
    p = store_sub.add_parser("copy", help="copy the state into an empty store (SQLite to etcd, or back)")
    p.add_argument("--from", dest="source", required=True, metavar="STORE", help="sqlite:PATH or etcd:URL[,URL...]")
    p.add_argument("--to", dest="target", required=True, metavar="STORE", help="sqlite:PATH or etcd:URL[,URL...]")
    p.set_defaults(func=cmd_store_copy)

    p = sub.add_parser("image", help="the QEMU guests' boot image")
    p.add_argument("action", choices=["build"], help="build it into <state_dir>/images unless it is there")
    p.add_argument("--config", metavar="FILE", help="whose controller.state_dir (default /var/lib/sdnvirt)")
    p.set_defaults(func=cmd_image)
    add_parsers(sub, api_options, _client_command)      # token, audit

    p = sub.add_parser("demo", help="controller + leaf-spine fabric + two tenants + traffic, then clean up")
    p.add_argument("--keep-logs", action="store_true", help="keep the controller log and config")
    p.add_argument("--encap", choices=["vlan", "vxlan"], default="vlan", help="tenants as VLANs or VXLAN tunnels")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``sdnvirt`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import __version__
from .config import ConfigError, load

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


def cmd_controller(args) -> int:
    if args.check_config:
        cfg = _load_or_exit(args.check_config)
        vms = sum(len(t.vms) for t in cfg.tenants.values())
        print(f"{args.check_config}: configuration is valid ({len(cfg.tenants)} tenants, {vms} VMs)")
        return 0
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
                 controller_ip=args.controller_ip, cli=not args.no_cli)
    except (ValueError, PermissionError) as err:
        print(f"sdnvirt topo: {err}", file=sys.stderr)
        return 2
    return 0


def _state(args) -> dict | None:
    from . import status
    state_dir = args.state_dir or (_load_or_exit(args.config).controller.state_dir if args.config
                                   else "/var/lib/sdnvirt")
    try:
        doc = status.read(state_dir)
    except FileNotFoundError:
        print(f"sdnvirt: no {state_dir}/{status.FILE}: is the controller running with this state_dir?",
              file=sys.stderr)
        return None
    except (OSError, ValueError) as err:
        print(f"sdnvirt: cannot read {state_dir}/{status.FILE}: {err}", file=sys.stderr)
        return None
    import time
    doc["age_s"] = round(time.time() - doc.pop("written_at", 0), 1)
    return doc


def _table(rows: list[list], header: list[str]) -> str:
    rows = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def cmd_show(args) -> int:
    doc = _state(args)
    if doc is None:
        return 1
    if args.json:
        print(json.dumps(doc if args.command == "status" else doc[args.command], indent=1))
        return 0
    if args.command == "status":
        located = sum(1 for vm in doc["vms"] if vm["switch"])
        backends = [b for svc in doc["services"] for b in svc["backends"]]
        print(f"sdnvirt {doc['version']} (state written {doc['age_s']} s ago)\n"
              f"switches {len(doc['switches'])}, links {doc['links']}, "
              f"VMs located {located}/{len(doc['vms'])}, services {len(doc['services'])}, "
              f"backends up {sum(b['up'] for b in backends)}/{len(backends)}\n")
        print(_table([[s["name"], s["dpid"], s["ports_up"], len(s["fabric_ports"]), s["flows"]]
                      for s in doc["switches"]], ["SWITCH", "DPID", "PORTS UP", "FABRIC PORTS", "FLOWS"]))
    elif args.command == "vms":
        print(_table([[v["tenant"], v["name"], v["mac"], v["ip"], v["switch"], v["port"]] for v in doc["vms"]],
                     ["TENANT", "VM", "MAC", "IP", "SWITCH", "PORT"]))
    else:
        print(_table([[s["tenant"], s["name"], f"{s['vip']}:{s['port']}/{s['protocol']}",
                       f"{b['vm']}:{b['port']}", b["weight"], "UP" if b["up"] else "DOWN",
                       "yes" if b["takes_new_connections"] else "no", b["last_check"], b["last_latency_ms"],
                       b.get("connections"), b.get("bytes_to_backend"), b.get("bytes_from_backend")]
                      for s in doc["services"] for b in s["backends"]],
                     ["TENANT", "SERVICE", "VIP", "BACKEND", "WEIGHT", "HEALTH", "NEW CONNS", "LAST CHECK",
                      "LATENCY MS", "CONNECTIONS", "BYTES IN", "BYTES OUT"]))
    return 0


def _api(args):
    """A client of the daemon's REST API: --api/--token-file, else what --config says, else the defaults."""
    from .api.client import Client
    from .api.token import TokenError, read_token
    from .config import ControllerSettings
    settings = _load_or_exit(args.config).controller if args.config else ControllerSettings()
    host = "127.0.0.1" if settings.api.address.is_unspecified else str(settings.api.address)
    url = args.api or f"http://{f'[{host}]' if ':' in host else host}:{settings.api.port}"
    try:
        return Client(url, read_token(args.token_file or settings.token_path))
    except (OSError, TokenError) as err:
        print(f"sdnvirt: cannot read the API token: {err}", file=sys.stderr)
        sys.exit(1)


def cmd_migrate(args) -> int:
    import time

    from .api.client import ApiError
    from .migration import describe
    client = _api(args)
    try:
        rec = client.post("/migrations", {"vm": args.vm, "target": args.to, "mode": args.mode})
        deadline = time.monotonic() + args.timeout
        while args.wait and rec["outcome"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
            rec = client.get(f"/migrations/{rec['id']}")
    except ApiError as err:
        print(f"sdnvirt migrate: {err}", file=sys.stderr)
        return 1
    print(json.dumps(rec, indent=1) if args.json else describe(rec))
    return 0 if rec["outcome"] in (None, "ok") else 1


def cmd_migrations(args) -> int:
    import datetime as dt

    from .api.client import ApiError
    try:
        records = _api(args).get("/migrations")
    except ApiError as err:
        print(f"sdnvirt migrations: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(records, indent=1))
        return 0

    def ms(rec, phase):
        p = rec["phases"].get(phase)
        return None if p is None or p["duration"] is None else round(p["duration"] * 1000)
    print(_table([[r["id"], r["vm"], r["mode"], r["source"], r["target"],
                   dt.datetime.fromtimestamp(r["requested_at"], dt.timezone.utc).strftime("%H:%M:%S"),
                   r["phase"], r["outcome"] or "running",
                   None if r["downtime"] is None else round(r["downtime"] * 1000, 1),
                   ms(r, "preparation"), ms(r, "data_transfer"), ms(r, "restoration"), r["reason"] or None]
                  for r in records],
                 ["ID", "VM", "MODE", "FROM", "TO", "REQUESTED (UTC)", "PHASE", "OUTCOME", "DOWNTIME MS",
                  "PREPARATION MS", "DATA TRANSFER MS", "RESTORATION MS", "REASON"]))
    return 0


def cmd_demo(args) -> int:
    _logging(args.log_level or "warning")
    from .emulation.demo import run_demo
    return run_demo(keep_logs=args.keep_logs)


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
    p.add_argument("--spines", type=int, default=2, metavar="N", help="leafspine: spine switches (default 2)")
    p.add_argument("--leaves", type=int, default=4, metavar="N", help="leafspine: leaf switches (default 4)")
    p.add_argument("--k", type=int, default=4, metavar="K", help="fattree: switch radix, even (default 4)")
    p.set_defaults(func=cmd_topo)

    for name, what in (("status", "the daemon's switches and a summary"), ("vms", "every VM and where it is"),
                       ("services", "every service and the health of its backends")):
        p = sub.add_parser(name, help=f"show {what}")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--state-dir", help="the daemon's controller.state_dir (default /var/lib/sdnvirt)")
        where.add_argument("--config", metavar="FILE", help="take state_dir from this config")
        p.add_argument("--json", action="store_true", help="JSON for scripts")
        p.set_defaults(func=cmd_show)

    def api_options(p):
        where = p.add_mutually_exclusive_group()
        where.add_argument("--config", metavar="FILE", help="the daemon's config: where its API listens, its token")
        where.add_argument("--api", metavar="URL", help="the daemon's API (default http://127.0.0.1:9303)")
        p.add_argument("--token-file", metavar="FILE", help="default: controller.api.token_file of the config, "
                       "or /var/lib/sdnvirt/api-token")
        p.add_argument("--json", action="store_true", help="JSON for scripts")

    p = sub.add_parser("migrate", help="move a VM to another hypervisor (the hypervisor agent of "
                                       "`sdnvirt topo` carries it out)")
    p.add_argument("vm")
    p.add_argument("--to", required=True, metavar="HYPERVISOR", help="the switch to move it to")
    p.add_argument("--mode", choices=["live", "cold"], default="live")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="return once it is accepted")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for its end (default 60)")
    api_options(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("migrations", help="every migration: phases, downtime, outcome")
    api_options(p)
    p.set_defaults(func=cmd_migrations)

    p = sub.add_parser("demo", help="controller + leaf-spine fabric + two tenants + traffic, then clean up")
    p.add_argument("--keep-logs", action="store_true", help="keep the controller log and config")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

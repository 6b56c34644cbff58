"""The ``sdnvirt`` command."""

from __future__ import annotations

import argparse
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

    p = sub.add_parser("demo", help="controller + leaf-spine fabric + two tenants + traffic, then clean up")
    p.add_argument("--keep-logs", action="store_true", help="keep the controller log and config")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

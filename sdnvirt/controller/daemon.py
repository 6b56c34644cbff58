"""The controller daemon: os-ken started in-process, signals for systemd."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from .. import __version__
from ..config import Config, ConfigError, load

LOG = logging.getLogger("sdnvirt.daemon")


def run(config_path: str, config: Config) -> int:
    """Serve OpenFlow until SIGTERM/SIGINT; SIGHUP re-reads ``config_path``."""
    # os-ken reads its own options from a global oslo.config object; the ones
    # sdnvirt sets come from the sdnvirt config, the rest keep their defaults.
    from os_ken import cfg as osken_cfg
    from os_ken.base.app_manager import AppManager

    # The signals are blocked before os-ken starts any thread (threads inherit
    # the mask) and taken by sigwait() here: a handler would only run once
    # the main thread woke up, and a signal delivered to another thread
    # would leave it asleep.
    signals = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)

    of = config.controller.openflow
    osken_cfg.CONF(args=["--ofp-listen-host", str(of.address), "--ofp-tcp-listen-port", str(of.port)],
                   project="os_ken", default_config_files=[])
    manager = AppManager.get_instance()
    manager.load_apps(["sdnvirt.controller.app"])
    contexts = manager.create_contexts()
    manager.instantiate_apps(sdnvirt_config=config, **contexts)
    app = manager.applications["sdnvirt"]
    LOG.info("sdnvirt %s controller listening for OpenFlow 1.3 on %s:%d", __version__, of.address, of.port)

    while True:
        signum = signal.sigwait(signals)
        if signum == signal.SIGHUP:
            # Reloading takes the model lock: never block signal handling on it.
            threading.Thread(target=_reload, args=(app, config_path), name="sdnvirt-reload", daemon=True).start()
            continue
        LOG.info("%s: stopping; switches keep their flows (fail-secure)", signal.Signals(signum).name)
        logging.shutdown()
        sys.stderr.flush()
        # Nothing to undo: the OpenFlow sockets close with the process and the
        # switches keep forwarding. os-ken's close() would join its native hub
        # threads, which can block forever.
        os._exit(0)


def _reload(app, config_path: str) -> None:
    try:
        new = load(config_path)
    except ConfigError as err:
        LOG.error("config reload failed, still running on the previous config:\n%s", err)
        return
    app.reload(new)

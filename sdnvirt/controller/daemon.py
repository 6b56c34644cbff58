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
    from os_ken.lib import hub

    of = config.controller.openflow
    osken_cfg.CONF(args=["--ofp-listen-host", str(of.address), "--ofp-tcp-listen-port", str(of.port)],
                   project="os_ken", default_config_files=[])
    manager = AppManager.get_instance()
    manager.load_apps(["sdnvirt.controller.app"])
    contexts = manager.create_contexts()
    threads = manager.instantiate_apps(sdnvirt_config=config, **contexts)
    app = manager.applications["sdnvirt"]
    LOG.info("sdnvirt %s controller listening for OpenFlow 1.3 on %s:%d", __version__, of.address, of.port)

    def reload(*_):
        # Reloading takes the model lock: do it off the signal handler.
        def work():
            try:
                new = load(config_path)
            except ConfigError as err:
                LOG.error("config reload failed, still running on the previous config:\n%s", err)
                return
            app.reload(new)
        threading.Thread(target=work, name="sdnvirt-reload", daemon=True).start()

    def stop(signum, _frame):
        LOG.info("%s: stopping; switches keep their flows (fail-secure)", signal.Signals(signum).name)
        app.close()
        logging.shutdown()
        sys.stderr.flush()
        # os-ken's native hub threads cannot be interrupted; the OpenFlow
        # sockets close with the process and the switches keep forwarding.
        os._exit(0)

    signal.signal(signal.SIGHUP, reload)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    hub.joinall(threads)
    return 0

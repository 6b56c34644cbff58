"""The controller daemon: os-ken, the REST API and the store watch (other writers' changes) started
in-process, signals for systemd."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from .. import __version__
from ..api import server
from ..api.app import create_app
from ..api.token import TokenError, ensure_token
from ..cluster.member import Member
from ..config import Config, ConfigError
from ..events import Events, Handler, Kind
from ..metrics import Metrics
from ..state import ConfigState
from ..store import StoreError
from ..store.opening import open_store, where

LOG = logging.getLogger("sdnvirt.daemon")

# Seconds the store watch gets to end: a change it is applying finishes first.
STOP_TIMEOUT = 5.0


def run(config_path: str, config: Config) -> int:
    """Serve OpenFlow and the API until SIGTERM/SIGINT; SIGHUP re-reads ``config_path``."""
    settings = config.controller
    metrics = Metrics()
    try:
        store = open_store(settings, observe=metrics.etcd_request)
    except (OSError, StoreError) as err:
        return _fail(f"cannot open the store {where(settings)}: {err}")
    member = None
    if settings.cluster is not None:
        try:
            member = Member(settings.cluster.name, settings.cluster.etcd, settings.cluster.lease_ttl,
                            observe=metrics.etcd_request)
        except StoreError as err:
            return _fail(f"cannot join the cluster on {where(settings)}: {err}")
    try:
        token = ensure_token(settings.token_path)
    except OSError as err:
        return _fail(f"cannot make the API token {settings.token_path} (controller.api.token_file): {err}")
    except TokenError as err:
        return _fail(str(err))
    try:
        api_socket = server.bind(settings.api.address, settings.api.port)
    except OSError as err:
        return _fail(f"cannot listen for the REST API on {settings.api.address}:{settings.api.port} "
                     f"(controller.api): {err.strerror}")
    events = Events(settings.api.events_kept)
    try:
        state = ConfigState(config_path, config, store, events=events)
    except ConfigError as err:
        return _fail(f"the config file and the changes made through the API do not fit together; "
                     f"change the file:\n{err}")
    except StoreError as err:
        return _fail(f"cannot read the store {where(settings)}: {err}")

    # os-ken reads its own options from a global oslo.config object; the ones
    # sdnvirt sets come from the sdnvirt config, the rest keep their defaults.
    from os_ken import cfg as osken_cfg
    from os_ken.base.app_manager import AppManager

    from .view import View

    # The signals are blocked before os-ken starts any thread (threads inherit
    # the mask) and taken by sigwait() here: a handler would only run once
    # the main thread woke up, and a signal delivered to another thread
    # would leave it asleep.
    signals = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)

    # Served before os-ken starts, so that a port already taken ends the
    # daemon at once and cleanly.
    exporter = settings.metrics
    try:
        metrics.serve(str(exporter.address), exporter.port)
    except OSError as err:
        return _fail(f"cannot serve metrics on {exporter.address}:{exporter.port} (controller.metrics): "
                     f"{err.strerror}")
    state.reloaded = metrics.reloaded

    def failed(handler: Handler) -> None:
        metrics.handler_errors.labels(handler.value).inc()
        events.publish(Kind.HANDLER_ERROR, handler=handler)
    _count_thread_errors(failed)

    of = config.controller.openflow
    osken_cfg.CONF(args=["--ofp-listen-host", str(of.address), "--ofp-tcp-listen-port", str(of.port)],
                   project="os_ken", default_config_files=[])
    manager = AppManager.get_instance()
    manager.load_apps(["sdnvirt.controller.app"])
    contexts = manager.create_contexts()
    manager.instantiate_apps(sdnvirt_config=state.config, sdnvirt_metrics=metrics, sdnvirt_events=events,
                             sdnvirt_failed=failed, sdnvirt_store=store, sdnvirt_member=member, **contexts)
    app = manager.applications["sdnvirt"]
    controller = View(app.controller, app.roles)
    if member is not None:
        try:
            member.start()
        except StoreError as err:
            # os-ken's threads are running: leave without waiting for them.
            os._exit(_fail(f"cannot join the cluster on {where(settings)}: {err}"))
    state.apply = controller.reload
    # The API's changes committed by another process (or instance) reach this
    # one through the store: watched from the revision the state was read at.
    follower = threading.Thread(target=state.follow, name="sdnvirt-store-watch", daemon=True)
    follower.start()
    server.serve(create_app(controller, state, token, events, failed), api_socket)
    LOG.info("sdnvirt %s controller listening for OpenFlow 1.3 on %s:%d, REST API on http://%s:%d/v1, "
             "metrics on http://%s:%d/metrics", __version__, of.address, of.port, settings.api.address,
             settings.api.port, exporter.address, exporter.port)

    while True:
        signum = signal.sigwait(signals)
        if signum == signal.SIGHUP:
            # Reloading waits for the controller's loop: never block signal handling on it.
            threading.Thread(target=_reload, args=(state,), name="sdnvirt-reload", daemon=True).start()
            continue
        LOG.info("%s: stopping; switches keep their flows (fail-secure)", signal.Signals(signum).name)
        if member is not None:
            member.stop()       # first: the other instances take the switches over at once
        state.stop()
        follower.join(STOP_TIMEOUT)
        logging.shutdown()
        sys.stderr.flush()
        # Nothing to undo: the OpenFlow sockets close with the process and the
        # switches keep forwarding. os-ken's close() would join its native hub
        # threads, which can block forever.
        os._exit(0)


def _count_thread_errors(failed) -> None:
    """An exception that ends one of the daemon's threads is counted, then printed as before."""
    print_it = threading.excepthook

    def hook(args) -> None:
        failed(Handler.THREAD)
        print_it(args)
    threading.excepthook = hook


def _fail(message: str) -> int:
    print(f"sdnvirt controller: {message}", file=sys.stderr)
    return 1


def _reload(state: ConfigState) -> None:
    try:
        state.reload_file()
    except ConfigError as err:
        LOG.error("config reload failed, still running on the previous config:\n%s", err)

"""The API's HTTP server: uvicorn on a daemon thread of the controller process.

uvicorn installs signal handlers only from the main thread (see
``uvicorn.Server.capture_signals``), so SIGTERM/SIGHUP stay the daemon's.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading

import uvicorn
from fastapi import FastAPI


def bind(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> socket.socket:
    """The listening socket, made before the server thread starts so that a
    port already in use stops the daemon at once with a clear error."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((str(address), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def serve(app: FastAPI, sock: socket.socket) -> threading.Thread:
    # log_config=None: uvicorn logs through the daemon's logging setup. One line
    # per request only at debug level: the hypervisor agents poll several times
    # a second, which would bury everything else at info.
    access_log = logging.getLogger().isEnabledFor(logging.DEBUG)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off", server_header=False,
                                           access_log=access_log))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sdnvirt-api", daemon=True)
    thread.start()
    return thread

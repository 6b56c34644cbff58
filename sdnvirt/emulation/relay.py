"""A TCP relay on loopback that can be cut like a network partition: what the
cluster tests put between one controller and etcd.

Cut, it drops what either side sends and answers nothing (connections stay
open, requests time out), as a lost link would; mended, it relays again and
the connections that lived through the cut are closed, so clients reconnect.
"""

from __future__ import annotations

import socket
import threading

from .lab import free_port

_CHUNK = 65536


class Relay:
    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._cut = False
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, name=f"relay-{self.port}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        with self._lock:
            self._cut = True

    def mend(self) -> None:
        with self._lock:
            self._cut = False
            held, self._open = self._open, set()
        for sock in held:
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self.mend()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self._open.add(client)
                cut = self._cut
            if cut:
                continue        # held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=2.0)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.add(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(_CHUNK):
                if not self._cut:
                    dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            if self._cut:
                return          # held open through the cut; mend() closes it
            self._open -= {src, dst}
        for sock in (src, dst):
            sock.close()

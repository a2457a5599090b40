"""A loopback TCP proxy that the fault tests put between a store and its server.

It forwards bytes both ways until told otherwise: `stall` stops forwarding (the
connections stay open and nothing answers, like a hung server or a lost network),
`cut_after(n)` lets *n* more bytes of replies through and then drops every
connection (a reply cut half-way), `forward` resumes.  Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator


class FaultProxy:
    """Listens on a free loopback port and relays each connection to ``127.0.0.1:target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._stalled = False
        self._budget: int | None = None  # reply bytes still let through before cutting
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what the tests turn

    def forward(self) -> None:
        with self._lock:
            self._stalled, self._budget = False, None

    def stall(self) -> None:
        with self._lock:
            self._stalled = True

    def cut_after(self, reply_bytes: int) -> None:
        with self._lock:
            self._stalled, self._budget = False, reply_bytes

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._listener.close()
        self._drop_all()

    # ---- the relay

    def _drop_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                pairs = list(self._pairs)
                stalled = self._stalled
            watched = [self._listener] + ([] if stalled else [s for pair in pairs for s in pair])
            try:
                readable, _, _ = select.select(watched, [], [], 0.05)
            except (OSError, ValueError):  # a socket closed under us
                continue
            for sock in readable:
                if sock is self._listener:
                    self._accept()
                else:
                    self._relay(sock, pairs)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        try:
            server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._pairs.append((client, server))

    def _relay(self, sock: socket.socket, pairs: list[tuple[socket.socket, socket.socket]]) -> None:
        pair = next((p for p in pairs if sock in p), None)
        if pair is None:
            return
        client, server = pair
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(pair)
            return
        with self._lock:
            budget = self._budget
            if sock is server and budget is not None:
                data = data[:budget]
                self._budget = budget - len(data)
        try:
            (client if sock is server else server).sendall(data)
        except OSError:
            self._drop(pair)
            return
        if sock is server and budget is not None and self._budget == 0:
            self._drop_all()  # the reply stops here, half-way

    def _drop(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def fault_proxy(target: int) -> Iterator[FaultProxy]:
    with FaultProxy(target) as proxy:
        yield proxy

"""A loopback TCP proxy that the fault tests put between a store and its server.

It forwards bytes both ways until told otherwise: `stall` stops forwarding (the
connections stay open and nothing answers, like a hung server or a lost network),
`cut_after(n)` lets *n* more bytes of replies through and then drops every
connection (a reply cut half-way), `forward` resumes.  Only 127.0.0.1 is ever used.

Two small helpers of the fault tests live here too: `Attempt` runs a call on its own
thread so that a call that hangs cannot hang the test, and `publish` reports what a
test measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

FIGURES_ENV = "STOCKSTORE_RELIABILITY_FIGURES"


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
            with self._lock:
                stalled = self._stalled  # a stall takes effect at once, not after this select
            for sock in readable:
                if sock is self._listener:
                    self._accept()
                elif not stalled:
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


class Attempt:
    """*call* run on a daemon thread and timed: a call that hangs cannot hang the test.

    `wait` says whether it finished within a limit; a test whose call hung unsticks it
    (resumes the server, closes the proxy) and waits again, so no thread outlives it.
    """

    def __init__(self, call: Callable[[], Any], name: str = "attempt") -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.seconds: float | None = None  # set once the call has returned or raised
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(call,), name=name, daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as exc:  # handed to the test, which judges it
            self.error = exc
        finally:
            self.seconds = time.monotonic() - self._started

    def wait(self, limit: float) -> bool:
        """True if the call has finished (returned or raised) within *limit* more seconds."""
        self._thread.join(limit)
        return not self._thread.is_alive()


def publish(scenario: str, **figures: Any) -> None:
    """Report what a fault test measured: printed (pytest shows it with -s, and on failure).

    With ``$STOCKSTORE_RELIABILITY_FIGURES`` set, also appended there as a JSON line:
    docs/reliability.md quotes those figures.
    """
    line = json.dumps({"scenario": scenario, **figures}, default=str, sort_keys=False)
    print(f"FIGURES {line}")
    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")

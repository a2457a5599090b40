"""Real memcached servers for the tests, each on a free loopback port.

``STOCKSTORE_TEST_MEMCACHED_SERVERS`` (``host:port[,host:port...]``) uses servers
already running instead.  Without it, ``memcached`` processes are started here
and stopped at the end.  A missing binary skips the tests, unless ``CI`` or
``STOCKSTORE_REQUIRE_SERVERS`` is set: then the environment promised it, and the
tests fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

ENV = "STOCKSTORE_TEST_MEMCACHED_SERVERS"


def _required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("STOCKSTORE_REQUIRE_SERVERS"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MemcachedProcess:
    """One ``memcached`` on 127.0.0.1, started and waited for until it accepts connections.

    The fault tests can also `kill`, `pause`, `resume` and `restart` it (on the same port).
    """

    def __init__(self) -> None:
        binary = shutil.which("memcached") or next(
            (p for p in ("/usr/bin/memcached", "/usr/sbin/memcached") if os.path.exists(p)), None
        )
        if binary is None:
            message = "memcached is not installed (scripts/test installs it)"
            if _required():
                pytest.fail(message)
            pytest.skip(message)
        self.binary = binary
        for _ in range(5):  # another process may take the free port before memcached binds it
            self.port = _free_port()
            if self._start():
                return
            self.stop()
        pytest.fail("memcached did not start")

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self) -> bool:
        self.process = subprocess.Popen(
            [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64", "-u", "root"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self._wait()

    def kill(self) -> None:
        """SIGKILL: the server and everything it held are gone."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open (new ones are accepted by the kernel) and nothing answers."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """SIGKILL, then start again on the same port, empty (memcached keeps nothing)."""
        self.kill()
        deadline = time.monotonic() + 10
        while not self._start():  # the port may linger for a moment after the kill
            self.stop()
            if time.monotonic() > deadline:
                pytest.fail(f"memcached did not restart on port {self.port}")
            time.sleep(0.1)

    def _wait(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def memcached_servers(count: int) -> Iterator[list[str]]:
    """*count* servers as ``"host:port"`` strings: from the environment, or started here."""
    configured = os.environ.get(ENV)
    if configured:
        servers = [s.strip() for s in configured.split(",") if s.strip()]
        if len(servers) < count:
            pytest.skip(f"{ENV} names {len(servers)} server(s); this test needs {count}")
        yield servers[:count]
        return
    started: list[MemcachedProcess] = []
    try:
        for _ in range(count):
            started.append(MemcachedProcess())
        yield [p.server for p in started]
    finally:
        for p in started:
            p.stop()


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[str]:
    """One memcached server for the whole session."""
    with memcached_servers(1) as servers:
        yield servers[0]


@pytest.fixture(scope="session")
def memcached_two_servers() -> Iterator[list[str]]:
    """Two memcached servers for the whole session (a HashClient spreads keys over both)."""
    with memcached_servers(2) as servers:
        yield servers


@pytest.fixture
def memcached_processes() -> Iterator[list[MemcachedProcess]]:
    """Two memcached servers of this test's own, which it may kill, pause and restart (stopped at the end)."""
    started: list[MemcachedProcess] = []
    try:
        for _ in range(2):
            started.append(MemcachedProcess())
        yield started
    finally:
        for p in started:
            p.stop()

"""Real redis-server processes for the tests, each on a free loopback port.

``STOCKSTORE_TEST_REDIS_URL`` / ``STOCKSTORE_TEST_REDIS_CLUSTER_URL`` point the tests at
servers already running instead.  Without them, ``redis-server`` processes are started
here (a cluster is made with ``redis-cli --cluster create``) and stopped at the end.  A
missing binary skips the tests, unless ``CI`` or ``STOCKSTORE_REQUIRE_SERVERS`` is set:
then the environment promised it, and the tests fail.

`RedisProcess` can also be killed, paused and restarted, for the fault tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

URL_ENV = "STOCKSTORE_TEST_REDIS_URL"
CLUSTER_ENV = "STOCKSTORE_TEST_REDIS_CLUSTER_URL"


def _required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("STOCKSTORE_REQUIRE_SERVERS"))


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/local/bin/{name}") if os.path.exists(p)), None
    )
    if found is None:
        message = f"{name} is not installed (scripts/test installs it)"
        if _required():
            pytest.fail(message)
        pytest.skip(message)
    return found


def key_names(raw: Any, namespace: str, *, marks: bool = False) -> set[str]:
    """Every key a raw client sees under *namespace* (``SCAN``), as text; the families' marks only if *marks*.

    A mark (``<prefix>p``) is a family's, not a record's: it stays when its records go.
    """
    names = {k.decode() for k in raw.scan_iter(match=f"{namespace}:*", count=1000)}
    return names if marks else {n for n in names if n.count(":") != 2 or not n.endswith(":p")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int, tls: ssl.SSLContext | None = None) -> bool:
    with contextlib.suppress(OSError), contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=0.5))
        if tls is not None:
            sock = stack.enter_context(tls.wrap_socket(sock, server_hostname="127.0.0.1"))
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")
    return False


def _certificate(directory: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (and its key) in *directory*; the certificate's path."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert


class RedisProcess:
    """One ``redis-server`` on 127.0.0.1 with its own directory; *args* are extra server options.

    With *tls*, it speaks only TLS, with a self-signed certificate made for it.
    """

    def __init__(self, *args: str, port: int | None = None, tls: bool = False) -> None:
        self.binary = _binary("redis-server")
        self.args = list(args)
        self.dir = Path(tempfile.mkdtemp(prefix="stockstore-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.cert: Path | None = None
        self._tls: ssl.SSLContext | None = None
        if tls:
            self.cert = _certificate(self.dir)
            self._tls = ssl.create_default_context(cafile=str(self.cert))
        for _ in range(5):  # another process may take the free port before redis binds it
            self.port = port or free_port()
            if self.start():
                return
            if port is not None:
                break
        pytest.fail(f"redis-server did not start; see {self.dir}/redis.log")

    @property
    def url(self) -> str:
        if self.cert is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.cert}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> bool:
        """Start (or restart) the server on its port; True once it answers PING."""
        ports = ["--port", str(self.port)]
        if self.cert is not None:
            key = self.dir / "key.pem"
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.cert)]
            ports += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(self.cert), "--tls-auth-clients", "no"]
        command = [self.binary, *ports, "--bind", "127.0.0.1", "--dir", str(self.dir)]
        command += ["--save", "", "--appendonly", "no", "--logfile", "redis.log", *self.args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _ping(self.port, self._tls):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def kill(self) -> None:
        """SIGKILL: the server dies without saving anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections open but answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def save(self) -> Path:
        """``SAVE``: write a snapshot of the data now (``dump.rdb`` in its directory); its path.

        `start` loads it, so a restart after `kill` brings back the data as it was here.
        """
        out = subprocess.run(
            [_binary("redis-cli"), "-p", str(self.port), "SAVE"], capture_output=True, text=True, timeout=60
        )
        if out.stdout.strip() != "OK":
            pytest.fail(f"redis SAVE failed: {out.stdout.strip()} {out.stderr.strip()}")
        return self.dir / "dump.rdb"

    def restart(self, *, snapshot: bool) -> None:
        """SIGKILL, then start on the same port: from the last `save` if *snapshot*, else empty."""
        self.kill()
        if not snapshot:
            (self.dir / "dump.rdb").unlink(missing_ok=True)
        elif not (self.dir / "dump.rdb").exists():
            pytest.fail("restart(snapshot=True) without an earlier save()")
        if not self.start():
            pytest.fail(f"redis-server did not restart on port {self.port}; see {self.dir}/redis.log")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A Redis Cluster of *masters* masters and *replicas* replicas each, on free loopback ports.

    *args* are extra server options of every node (``"--cluster-node-timeout", "1000"``
    makes a failover take about a second instead of fifteen).
    """

    def __init__(self, masters: int = 3, replicas: int = 0, args: tuple[str, ...] = ()) -> None:
        self.nodes: list[RedisProcess] = []
        try:
            for _ in range(masters * (1 + replicas)):
                node = RedisProcess("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", *args)
                self.nodes.append(node)
            create = [_binary("redis-cli"), "--cluster", "create"]
            create += [f"127.0.0.1:{n.port}" for n in self.nodes]
            create += ["--cluster-replicas", str(replicas), "--cluster-yes"]
            subprocess.run(create, check=True, capture_output=True, timeout=60)
            self.wait_ok()
            if replicas:
                self.wait_replicated()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def wait_ok(self, timeout: float = 30) -> None:
        """Wait until every live node reports ``cluster_state:ok`` and knows every slot."""
        cli = _binary("redis-cli")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                if node.process is None or node.process.poll() is not None:
                    continue
                out = subprocess.run(
                    [cli, "-p", str(node.port), "cluster", "info"], capture_output=True, text=True, timeout=5
                ).stdout
                states.append("cluster_state:ok" in out and "cluster_slots_assigned:16384" in out)
            if states and all(states):
                return
            time.sleep(0.1)
        pytest.fail("the Redis cluster did not reach cluster_state:ok")

    def _ask(self, node: RedisProcess, *command: str) -> str:
        out = subprocess.run(
            [_binary("redis-cli"), "-p", str(node.port), *command], capture_output=True, text=True, timeout=5
        )
        return out.stdout

    def wait_replicated(self, timeout: float = 30) -> None:
        """Wait until every replica has finished its first sync (a replica that never synced is never promoted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roles = [self._ask(n, "info", "replication") for n in self.nodes]
            if all("role:master" in r or "master_link_status:up" in r for r in roles):
                return
            time.sleep(0.1)
        pytest.fail("the Redis cluster's replicas did not sync with their masters")

    def wait_failover(self, victim: RedisProcess, timeout: float = 30) -> None:
        """Wait until the live nodes have marked the killed *victim* as failed and the cluster is ok again.

        Right after a kill every node still reports ``cluster_state:ok``: failure
        detection takes ``cluster-node-timeout``, then a replica is promoted.
        """
        deadline = time.monotonic() + timeout
        witness = next(n for n in self.nodes if n is not victim and n.process is not None and n.process.poll() is None)
        while time.monotonic() < deadline:
            lines = self._ask(witness, "cluster", "nodes").splitlines()
            flags = next((ln.split()[2] for ln in lines if f":{victim.port}@" in ln), "")
            if "fail" in flags.split(","):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the Redis cluster never marked node {victim.port} as failed")
        self.wait_ok(max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A Redis URL: from the environment, or a server started here."""
    configured = os.environ.get(URL_ENV)
    if configured:
        yield configured
        return
    server = RedisProcess()
    try:
        yield server.url
    finally:
        server.close()


@contextlib.contextmanager
def redis_cluster() -> Iterator[str]:
    """A ``redis+cluster://`` URL: from the environment, or a 3-master cluster started here."""
    configured = os.environ.get(CLUSTER_ENV)
    if configured:
        yield configured
        return
    cluster = RedisCluster(masters=3)
    try:
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One Redis server for the whole session."""
    with redis_server() as url:
        yield url


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    """A plain redis-py client of the session's server, to look at what a store wrote."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_tls_url() -> Iterator[str]:
    """A Redis server that speaks only TLS (a ``rediss://`` URL with its CA certificate)."""
    server = RedisProcess(tls=True)
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """One 3-master Redis Cluster for the whole session."""
    with redis_cluster() as url:
        yield url


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    """A redis-server of this test's own, which it may kill, pause and restart (stopped at the end)."""
    server = RedisProcess()
    try:
        yield server
    finally:
        server.close()


def namespace_user_url(url: str, namespace: str) -> str:
    """*url* (``rediss://``) as a new ACL user who may touch only *namespace*'s keys and run no KEYS or FLUSH*."""
    import redis

    from stockstore.backends.redis import quote

    user, password = f"u{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    with redis.Redis.from_url(url) as admin:
        admin.acl_setuser(
            user, enabled=True, passwords=[f"+{password}"], keys=[f"{quote(namespace, safe='')}:*"],
            commands=["+@all", "-@dangerous", "+info"],
        )  # fmt: skip
    return url.replace("rediss://", f"rediss://{user}:{password}@")

"""Fixtures for integration tests against a real ZooKeeper (started here, always stopped)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from failoverd.zk import ZkCluster
from lab.zookeeper import ZooKeeperServer

from .relay import Relay

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).resolve().with_name("lease_child.py")


def _server(base: Path) -> ZooKeeperServer:
    # tickTime 100 ms keeps expiry precise; explicit bounds, or sessions are capped at 2 s.
    return ZooKeeperServer(
        base, tick_time_ms=100, min_session_timeout_ms=200, max_session_timeout_ms=20000
    )


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """One server per test module; tests isolate themselves with their own chroot."""
    server = _server(tmp_path_factory.mktemp("zookeeper"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_zookeeper(tmp_path: Path) -> Iterator[ZooKeeperServer]:
    """A server of the test's own, for tests that stop or restart it."""
    server = _server(tmp_path / "zookeeper")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def zk_chroot() -> str:
    return f"/failoverd/t-{uuid.uuid4().hex[:10]}"


MakeCluster = Callable[..., ZkCluster]


@pytest.fixture
def make_cluster(zk_chroot: str) -> Iterator[MakeCluster]:
    """``make_cluster(server, node, *, session_timeout=4.0, chroot=..., credentials=None,
    layout=True)``: a started ZkCluster, closed at teardown."""
    made: list[ZkCluster] = []

    def make(
        server: ZooKeeperServer | Relay,
        node: str,
        *,
        session_timeout: float = 4.0,
        chroot: str = zk_chroot,
        credentials: tuple[str, str] | None = None,
        layout: bool = True,
    ) -> ZkCluster:
        cluster = ZkCluster([server.hosts], chroot, node, session_timeout, credentials)
        made.append(cluster)
        cluster.start(timeout=5.0)
        if layout:
            cluster.ensure_layout()
            cluster.wait_view(5.0)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.close()


@pytest.fixture
def raw_client() -> Iterator[Callable[..., KazooClient]]:
    """Plain kazoo clients, to write what a well-behaved daemon never would."""
    made: list[KazooClient] = []

    def make(server: ZooKeeperServer, auth: tuple[str, str] | None = None) -> KazooClient:
        auth_data = [("digest", f"{auth[0]}:{auth[1]}")] if auth else None
        client = KazooClient(hosts=server.hosts, timeout=4.0, auth_data=auth_data)
        client.start(timeout=5.0)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            client.stop()
            client.close()


class Child:
    """A ``lease_child.py`` process: a ZooKeeper client we can freeze or kill by PID."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
        )
        self.lines: list[str] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, prefix: str, timeout: float = 10.0) -> str:
        """The next stdout line starting with ``prefix`` (bounded by ``timeout``)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for _ in range(1000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if not ready:
                break
            line = self.proc.stdout.readline().decode().strip()
            if not line:  # EOF: the child died
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        self.kill()
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        raise AssertionError(f"child never said {prefix!r}; stdout {self.lines}; stderr:\n{err}")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """Thaw (a stopped process cannot die of SIGTERM handlers) and SIGKILL, by PID."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def spawn_child() -> Iterator[Callable[..., Child]]:
    """``spawn_child(server, chroot, node, session_timeout, mode)``; killed at teardown."""
    children: list[Child] = []

    def spawn(
        server: ZooKeeperServer, chroot: str, node: str, session_timeout: float, mode: str
    ) -> Child:
        child = Child([server.hosts, chroot, node, str(session_timeout), mode])
        children.append(child)
        return child

    try:
        yield spawn
    finally:
        for child in children:
            child.kill()
            for stream in (child.proc.stdout, child.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def zk_proxy() -> Iterator[Callable[[ZooKeeperServer], Relay]]:
    """``zk_proxy(server)``: a partitionable relay in front of ``server``; closed at teardown."""
    proxies: list[Relay] = []

    def make(server: ZooKeeperServer) -> Relay:
        proxy = Relay((server.host, server.port))  # a client's relay: one attempt
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.close()

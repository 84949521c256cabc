"""Fixtures for integration tests against a real ZooKeeper (started here, always stopped)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from failoverd.zk import ZkCluster
from lab.zookeeper import ZooKeeperServer, free_port

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
        server: ZooKeeperServer | TcpProxy,
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


class TcpProxy:
    """A loopback TCP relay to ZooKeeper that a test can partition.

    ``blackhole()`` keeps every socket open but drops all bytes, like a partition: the client
    only notices by its own timeouts. ``heal()`` drops the stale connections so the client
    reconnects afresh.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._dropping = False
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        threading.Thread(target=self._serve, name="zk-proxy", daemon=True).start()

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        for _ in range(10_000_000):  # ends with close(); the count only bounds the loop
            if self._stop.is_set():
                return
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._socks.append(down)
                if self._dropping:
                    continue  # held open, never answered
            try:
                up = socket.create_connection(self.target, timeout=1.0)
            except OSError:
                down.close()
                continue
            with self._lock:
                self._socks.append(up)
            for src, dst in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(None)
        for _ in range(10_000_000):
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            if self._dropping:
                continue
            try:
                dst.sendall(data)
            except OSError:
                break
        for sock in (src, dst):
            self._close(sock)

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def blackhole(self) -> None:
        self._dropping = True

    def heal(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
            self._dropping = False
        for sock in socks:
            self._close(sock)

    def close(self) -> None:
        self._stop.set()
        self.heal()
        self._close(self._listener)


@pytest.fixture
def zk_proxy() -> Iterator[Callable[[ZooKeeperServer], TcpProxy]]:
    """``zk_proxy(server)``: a partitionable relay in front of ``server``; closed at teardown."""
    proxies: list[TcpProxy] = []

    def make(server: ZooKeeperServer) -> TcpProxy:
        proxy = TcpProxy((server.host, server.port))
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.close()

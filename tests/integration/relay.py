"""A loopback TCP relay that tests can partition."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

HOST = "127.0.0.1"


class Relay:
    """A loopback TCP relay that a test can partition: a client's way to its ZooKeeper server
    (``zk_proxy``), or one server's way to another (``ensemble``).

    ``blackhole()`` keeps every socket open and drops every byte, new connections included,
    like a partition: the ends only notice by their own timeouts. ``heal()`` closes them all so
    that both sides reconnect afresh. ``patience``: seconds to keep trying the target before
    giving a connection up; between servers, one connecting to a leader that is not listening
    yet must see what it would without a relay (a refusal, which ZooKeeper retries), not a
    connection that is accepted and then reset.
    """

    def __init__(self, target: tuple[str, int], patience: float = 0.0) -> None:
        self.target = target
        self.patience = patience
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._dropping = False
        self._closed = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        threading.Thread(target=self._serve, name=f"relay-{self.port}", daemon=True).start()

    @property
    def hosts(self) -> str:
        return f"{HOST}:{self.port}"

    def _serve(self) -> None:
        for _ in range(10_000_000):  # ends with close(); the count only bounds the loop
            if self._closed.is_set():
                return
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._socks.append(down)
                dropping = self._dropping
            if not dropping:  # else held open, never answered
                threading.Thread(target=self._connect, args=(down,), daemon=True).start()

    def _connect(self, down: socket.socket) -> None:
        deadline = time.monotonic() + self.patience
        up: socket.socket | None = None
        for _ in range(1000):
            if self._dropping or self._closed.is_set():
                return  # cut meanwhile: hold ``down`` like the others
            try:
                up = socket.create_connection(self.target, timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        if up is None:
            self._close(down)
            return
        with self._lock:
            self._socks.append(up)
        for sock in (down, up):  # relay small packets at once, as a direct link would
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for src, dst in ((down, up), (up, down)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(None)
        except OSError:  # closed already (heal, or the other direction ended)
            self._close(dst)
            return
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
        self._closed.set()
        self.heal()
        self._close(self._listener)

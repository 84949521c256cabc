"""A real standalone ZooKeeper 3.8 server for tests, the demo and benchmarks.

Why a real server: the failover logic depends on ZooKeeper's actual session semantics (timeout
negotiation, ephemeral nodes vanishing on expiry, reconnects after a restart), which a fake would
only imitate. The server listens on 127.0.0.1 only, on a free port, keeps its data under
``base_dir`` and is stopped by PID.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from lab.process import ServerProcess

JAVA = "java"
CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"
MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"
JVM_OPTIONS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


class ZooKeeperError(RuntimeError):
    """The server could not be started or stopped; the message carries its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago: the kernel picks it, so parallel runs do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def four_letter(host: str, port: int, cmd: str, timeout: float = 2.0) -> str:
    """Send a four-letter command (``srvr``, ``cons``, ...) and return the whole answer."""
    chunks: list[bytes] = []
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(cmd.encode("ascii"))
        deadline = time.monotonic() + timeout
        for _ in range(10_000):  # bounded: the server closes the connection after answering
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd!r} to {host}:{port}: no end of answer in {timeout} s")
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class ZooKeeperServer(ServerProcess):
    """One standalone ZooKeeper server process (``ZooKeeperServerMain``), on 127.0.0.1 only."""

    def __init__(
        self,
        base_dir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        tick_time_ms: int = 100,
        min_session_timeout_ms: int = 200,
        max_session_timeout_ms: int = 20000,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.tick_time_ms = tick_time_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.data_dir = self.base_dir / "data"
        self.config_path = self.base_dir / "zoo.cfg"
        self.log_path = self.base_dir / "zookeeper.log"

    # -- properties -------------------------------------------------------------------------

    @property
    def hosts(self) -> str:
        """The connect string for clients."""
        return f"{self.host}:{self.port}"

    # -- life cycle -------------------------------------------------------------------------

    def write_config(self) -> None:
        """zoo.cfg with explicit session bounds: a small tickTime silently caps sessions."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"tickTime={self.tick_time_ms}",
            f"dataDir={self.data_dir}",
            f"clientPort={self.port}",
            f"clientPortAddress={self.host}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,conf,cons",
            f"minSessionTimeout={self.min_session_timeout_ms}",
            f"maxSessionTimeout={self.max_session_timeout_ms}",
            "forceSync=no",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until it serves requests (``srvr`` says standalone)."""
        if self.running:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        cmd = [JAVA, *JVM_OPTIONS, "-cp", CLASSPATH, MAIN_CLASS, str(self.config_path)]
        self._spawn(cmd, self.log_path, self.base_dir)

        def probe() -> str | None:
            if "Mode: standalone" in self.four_letter("srvr", timeout=0.5):
                return None
            return "srvr answered, but not 'Mode: standalone'"

        self._wait_ready(probe, timeout, ZooKeeperError, "ZooKeeper", verb="come up", interval=0.05)

    def restart(self, timeout: float = 20.0) -> None:
        """Stop and start again on the same port with the same data (sessions survive)."""
        self.stop()
        self.start(timeout)

    # -- helpers ----------------------------------------------------------------------------

    def four_letter(self, cmd: str, timeout: float = 2.0) -> str:
        return four_letter(self.host, self.port, cmd, timeout)

    def __repr__(self) -> str:
        return f"ZooKeeperServer({self.hosts}, pid={self.pid}, dir={self.base_dir})"

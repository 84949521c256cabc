"""Real ZooKeeper 3.8 servers for tests, the demo and benchmarks: a standalone server, and a
three-server ensemble on loopback.

Why real servers: the failover logic depends on ZooKeeper's actual session semantics (timeout
negotiation, ephemeral nodes vanishing on expiry, reconnects after a restart, elections), which a
fake would only imitate. Every server listens on 127.0.0.1 only, on free ports, keeps its data
under its ``base_dir`` and is stopped by PID.
"""

from __future__ import annotations

import random
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from lab.process import ServerProcess, wait_for

JAVA = "java"
CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"
MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"
QUORUM_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
HOST = "127.0.0.1"
JVM_OPTIONS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


class ZooKeeperError(RuntimeError):
    """The server could not be started or stopped; the message carries its log's tail."""


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
PORTS_BELOW_EPHEMERAL = 12000  # how many ports under the kernel's range free_port draws from


def free_port(host: str = "127.0.0.1") -> int:
    """A port free a moment ago, drawn at random from below the kernel's ephemeral range.

    Not one the kernel picks (bind to port 0): it hands that port out again to the next
    outgoing connection or port-0 bind, and a server started on it a moment later finds it
    taken (the suite saw a ZooKeeper of three exit on "Address already in use" while the
    relays of its ensemble bound theirs). Below the range, only another free_port can draw it.
    """
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    draw = random.SystemRandom()
    for _ in range(100):
        port = draw.randrange(max(1024, low - PORTS_BELOW_EPHEMERAL), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # all taken: the kernel's
        s.bind((host, 0))
        picked: int = s.getsockname()[1]
        return picked


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


# -- a three-server ensemble on loopback --------------------------------------------------------


@dataclass(frozen=True)
class EnsembleTiming:
    """The zoo.cfg settings that decide how long a cut-off server keeps serving and how fast an
    election ends. ``min_notification_ms``/``max_notification_ms``: FastLeaderElection's vote
    resend interval (None: ZooKeeper's default), see lab/templates/zoo.cfg."""

    tick_time_ms: int = 100
    init_limit: int = 50
    sync_limit: int = 20
    min_session_timeout_ms: int = 200
    max_session_timeout_ms: int = 20000
    min_notification_ms: int | None = None
    max_notification_ms: int | None = None


# The namespace lab's settings (lab/templates/zoo.cfg, lab/cluster.py's session bounds): a
# loopback ensemble that times elections and follower drop-outs as the lab does.
LAB_TIMING = EnsembleTiming(
    tick_time_ms=100,
    init_limit=10,
    sync_limit=5,
    min_session_timeout_ms=1000,
    max_session_timeout_ms=10000,
    min_notification_ms=50,
    max_notification_ms=400,
)


class QuorumServer(ServerProcess):
    """One ``QuorumPeerMain`` of a loopback ensemble (server id ``sid``); started by the
    ensemble, which writes its zoo.cfg."""

    def __init__(self, base_dir: Path, sid: int) -> None:
        self.sid = sid
        self.base_dir = base_dir
        self.host = HOST
        self.port = free_port()
        self.peer_port = free_port()
        self.election_port = free_port()
        self.data_dir = base_dir / "data"
        self.config_path = base_dir / "zoo.cfg"
        self.log_path = base_dir / "zookeeper.log"

    @property
    def hosts(self) -> str:
        return f"{self.host}:{self.port}"

    def four_letter(self, cmd: str, timeout: float = 1.0) -> str:
        return four_letter(self.host, self.port, cmd, timeout)

    def mode(self) -> str | None:
        """``leader``, ``follower``, or None while it serves no requests."""
        try:
            answer = self.four_letter("srvr", timeout=0.5)
        except OSError:
            return None
        match = re.search(r"^Mode: (\w+)", answer, re.MULTILINE)
        return match.group(1) if match else None

    def spawn(self) -> None:
        """Start the JVM on the zoo.cfg written already (a restart keeps ports and data)."""
        cmd = [JAVA, *JVM_OPTIONS, "-cp", CLASSPATH, QUORUM_MAIN, str(self.config_path)]
        self._spawn(cmd, self.log_path, self.base_dir)

    def start(self, timeout: float = 10.0) -> None:  # the ensemble starts its servers
        raise NotImplementedError("use LoopbackEnsemble.start")


class LoopbackEnsemble:
    """Three ``QuorumServer``s on 127.0.0.1 that reach each other directly; a subclass may
    route their quorum traffic elsewhere (``route``), as the tests' relayed ensemble does."""

    def __init__(self, base_dir: Path, timing: EnsembleTiming | None = None) -> None:
        self.timing = timing or EnsembleTiming()
        self.servers = {sid: QuorumServer(base_dir / f"zk{sid}", sid) for sid in (1, 2, 3)}

    @property
    def hosts(self) -> str:
        """The connect string naming all three servers."""
        return ",".join(s.hosts for s in self.servers.values())

    def route(self, sid: int, target: int) -> tuple[int, int]:
        """The (peer, election) ports on 127.0.0.1 by which server ``sid`` reaches ``target``."""
        server = self.servers[target]
        return server.peer_port, server.election_port

    def write_configs(self) -> None:
        t = self.timing
        for i, server in self.servers.items():
            server.data_dir.mkdir(parents=True, exist_ok=True)
            (server.data_dir / "myid").write_text(f"{i}\n")
            lines = [
                f"tickTime={t.tick_time_ms}",
                f"initLimit={t.init_limit}",
                f"syncLimit={t.sync_limit}",
                f"dataDir={server.data_dir}",
                f"clientPort={server.port}",
                f"clientPortAddress={HOST}",
                "admin.enableServer=false",
                "4lw.commands.whitelist=ruok,srvr,conf,cons,mntr",
                f"minSessionTimeout={t.min_session_timeout_ms}",
                f"maxSessionTimeout={t.max_session_timeout_ms}",
                "forceSync=no",
                "maxClientCnxns=0",
            ]
            if t.min_notification_ms is not None:
                lines.append(f"fastleader.minNotificationInterval={t.min_notification_ms}")
            if t.max_notification_ms is not None:
                lines.append(f"fastleader.maxNotificationInterval={t.max_notification_ms}")
            for j, other in self.servers.items():
                peer, election = (
                    (other.peer_port, other.election_port) if j == i else self.route(i, j)
                )
                lines.append(f"server.{j}={HOST}:{peer}:{election}")
            server.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 30.0) -> None:
        """Start all three and wait for one leader and two followers."""
        for server in self.servers.values():
            server.base_dir.mkdir(parents=True, exist_ok=True)
        self.write_configs()
        for server in self.servers.values():
            server.spawn()
        if not wait_for(self.settled, timeout, step=0.05):
            tails = "\n".join(f"--- zk{s.sid}\n{s.log_tail(15)}" for s in self.servers.values())
            self.stop()
            raise ZooKeeperError(f"the ensemble did not form within {timeout} s:\n{tails}")

    def modes(self) -> dict[int, str | None]:
        return {sid: s.mode() for sid, s in self.servers.items()}

    def settled(self) -> bool:
        return sorted(str(m) for m in self.modes().values()) == ["follower", "follower", "leader"]

    def leader(self) -> QuorumServer:
        for sid, mode in self.modes().items():
            if mode == "leader":
                return self.servers[sid]
        raise ZooKeeperError(f"no leader: {self.modes()}")

    def a_follower(self) -> QuorumServer:
        for sid, mode in self.modes().items():
            if mode == "follower":
                return self.servers[sid]
        raise ZooKeeperError(f"no follower: {self.modes()}")

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

"""A three-server ZooKeeper ensemble on loopback whose quorum traffic the test controls.

Every server listens on its own real peer and election ports, but reaches the other two only
through TCP relays (``Relay``): server i's zoo.cfg names server j by the relay i->j. So
``cut(n)`` can isolate server n from the other two (its relays hold every socket open and drop
every byte, like a partition: ZooKeeper only notices by its own timeouts) while a client stays
connected straight to n's client port, which is never relayed. Servers are stopped by PID; the
data lives under the test's temp dir.

One leak, and how it is closed: when a server with a lower id opens an election connection to
one with a higher id, the higher one drops it and connects back to the address the lower one
*announced* (its own ``server.N`` line, the real port), not through a relay. ``cut`` therefore
also aborts those direct election connections (``ss -K``, an RST; the kernel supports socket
destruction here); while the relays hold every new connection, no announcement gets through, so
no new direct one can be made until ``heal``.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.process import ServerProcess, wait_for
from lab.zookeeper import CLASSPATH, JAVA, JVM_OPTIONS, ZooKeeperError, four_letter, free_port

from .relay import HOST, Relay

QUORUM_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
RELAY_PATIENCE = 2.0  # seconds a relay between servers keeps trying the target


@dataclass(frozen=True)
class EnsembleTiming:
    """The zoo.cfg settings that decide how long a cut-off server keeps serving."""

    tick_time_ms: int = 100
    init_limit: int = 50
    sync_limit: int = 20
    min_session_timeout_ms: int = 200
    max_session_timeout_ms: int = 20000


class QuorumServer(ServerProcess):
    """One ``QuorumPeerMain`` of the ensemble (server id ``sid``)."""

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
        cmd = [JAVA, *JVM_OPTIONS, "-cp", CLASSPATH, QUORUM_MAIN, str(self.config_path)]
        self._spawn(cmd, self.log_path, self.base_dir)

    def start(self, timeout: float = 10.0) -> None:  # the ensemble starts its servers
        raise NotImplementedError("use Ensemble.start")


class Ensemble:
    """Three servers, six relays per direction pair (peer and election port each way)."""

    def __init__(self, base_dir: Path, timing: EnsembleTiming | None = None) -> None:
        self.timing = timing or EnsembleTiming()
        self.servers = {sid: QuorumServer(base_dir / f"zk{sid}", sid) for sid in (1, 2, 3)}
        # relays[(i, j)] = (peer relay, election relay) that server i uses to reach server j
        self.relays: dict[tuple[int, int], tuple[Relay, Relay]] = {}
        for i in self.servers:
            for j, target in self.servers.items():
                if i != j:
                    self.relays[(i, j)] = (
                        Relay((HOST, target.peer_port), RELAY_PATIENCE),
                        Relay((HOST, target.election_port), RELAY_PATIENCE),
                    )

    @property
    def hosts(self) -> str:
        """The connect string naming all three servers."""
        return ",".join(s.hosts for s in self.servers.values())

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
            ]
            for j, other in self.servers.items():
                if j == i:
                    lines.append(f"server.{j}={HOST}:{other.peer_port}:{other.election_port}")
                else:
                    peer, election = self.relays[(i, j)]
                    lines.append(f"server.{j}={HOST}:{peer.port}:{election.port}")
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

    def _relays_of(self, sid: int) -> list[Relay]:
        return [p for (i, j), pair in self.relays.items() if sid in (i, j) for p in pair]

    def cut(self, sid: int) -> None:
        """Partition server ``sid`` from the other two; its clients stay connected to it."""
        for proxy in self._relays_of(sid):
            proxy.blackhole()
        self._abort_direct_election_links(sid)

    def _abort_direct_election_links(self, sid: int) -> None:
        """Abort the election connections between ``sid`` and the others that bypass the relays
        (made by connecting back to an announced address): both ends, by their port pair."""
        pids = {s.pid: n for n, s in self.servers.items() if s.pid is not None}
        election = {s.election_port: n for n, s in self.servers.items()}
        listing = subprocess.run(
            ["ss", "-tnpH", "state", "established"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        for line in listing.splitlines():
            fields = line.split()
            owner = re.search(r"pid=(\d+),", line)
            if len(fields) < 4 or owner is None or int(owner.group(1)) not in pids:
                continue
            local = int(fields[2].rsplit(":", 1)[1])
            peer = int(fields[3].rsplit(":", 1)[1])
            from_server, to_server = pids[int(owner.group(1))], election.get(peer)
            if to_server is None or from_server == to_server or sid not in (from_server, to_server):
                continue
            for a, b in ((local, peer), (peer, local)):
                subprocess.run(
                    ["ss", "-K", "-tn", f"( sport = :{a} and dport = :{b} )"],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )

    def heal(self, sid: int) -> None:
        for proxy in self._relays_of(sid):
            proxy.heal()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        for pair in self.relays.values():
            for proxy in pair:
                proxy.close()

"""A three-server ZooKeeper ensemble on loopback whose quorum traffic the test controls.

lab/zookeeper.py's ``LoopbackEnsemble``, with one change: every server listens on its own real
peer and election ports, but reaches the other two only through TCP relays (``Relay``): server
i's zoo.cfg names server j by the relay i->j (``route``). So ``cut(n)`` can isolate server n
from the other two (its relays hold every socket open and drop every byte, like a partition:
ZooKeeper only notices by its own timeouts) while a client stays connected straight to n's
client port, which is never relayed. Servers are stopped by PID; the data lives under the test's
temp dir.

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
from pathlib import Path

from lab.zookeeper import EnsembleTiming, LoopbackEnsemble, QuorumServer

from .relay import HOST, Relay

__all__ = ["Ensemble", "EnsembleTiming", "QuorumServer"]

RELAY_PATIENCE = 2.0  # seconds a relay between servers keeps trying the target


class Ensemble(LoopbackEnsemble):
    """Three servers, six relays per direction pair (peer and election port each way)."""

    def __init__(self, base_dir: Path, timing: EnsembleTiming | None = None) -> None:
        super().__init__(base_dir, timing)
        # relays[(i, j)] = (peer relay, election relay) that server i uses to reach server j
        self.relays: dict[tuple[int, int], tuple[Relay, Relay]] = {}
        for i in self.servers:
            for j, target in self.servers.items():
                if i != j:
                    self.relays[(i, j)] = (
                        Relay((HOST, target.peer_port), RELAY_PATIENCE),
                        Relay((HOST, target.election_port), RELAY_PATIENCE),
                    )

    def route(self, sid: int, target: int) -> tuple[int, int]:
        """Server ``sid`` reaches ``target`` through the relays ``cut`` controls."""
        peer, election = self.relays[(sid, target)]
        return peer.port, election.port

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
        super().stop()
        for pair in self.relays.values():
            for proxy in pair:
                proxy.close()

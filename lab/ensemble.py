"""The lab's ZooKeeper ensemble: three servers, each in a namespace of its own on the lab switch,
and the faults the ZooKeeper-trouble scenarios need (DESIGN.md, "ZooKeeper trouble").

    flzk  10.77.0.5  server.1        flzk2  10.77.0.6  server.2        flzk3  10.77.0.7  server.3

Every server runs ``QuorumPeerMain`` from ``lab/roles/zookeeper.sh`` with the same ``server.N``
lines, its own ``myid`` and its data on tmpfs; both daemons list all three. The timing (tickTime,
initLimit, syncLimit) is chosen and explained in ``lab/templates/zoo.cfg``: an election after the
leader dies ends well within the daemons' 2 s session timeout, and a follower cut off from its
leader stops answering within 0.5 s.

``Lab.zk`` is the ``Ensemble`` of a lab::

    lab.zk.modes() -> {server: mode}   leader, follower, standalone, "not serving" or "down"
    lab.zk.leader()                    lab.zk.wait_serving(servers=None, timeout=)
    lab.zk.session_id(node)            the session holding members/<node>, from ``dump``
    lab.zk.server_of(node)             the server that session is connected to, from ``cons``
    lab.zk.sessions()                  {node: server} for both nodes
    faults: kill(server) (SIGKILL), stop(server) (SIGTERM), start(server, wait=),
            stop_all(), start_all(), cut_node(node, servers=None), heal_node(node),
            isolate(server, nodes=()), heal_server(server), move_session(node, server)

A cut is a pair of blackhole routes, one in each namespace (``Lab.cut``): both ends see silence
on established connections and an immediate error on new ones. ``move_session`` forces a node's
ZooKeeper connection onto a chosen server without ending its session: the other servers
blackholed from the node for a moment, its connections aborted (``ss -K``), and kazoo reconnects
to the one server it can reach; the routes go once ``cons`` shows it there.

The parsers (``parse_mode``, ``parse_cons``, ``ephemeral_owners``, ``server_of_session``) are
pure and unit-tested; everything else needs a running lab (root).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from lab.process import wait_for

if TYPE_CHECKING:
    from lab.cluster import Lab

_T = TypeVar("_T")
_R = TypeVar("_R")

SERVERS = ("flzk", "flzk2", "flzk3")
SERVER_ADDRESSES = {"flzk": "10.77.0.5", "flzk2": "10.77.0.6", "flzk3": "10.77.0.7"}
MYID = {"flzk": 1, "flzk2": 2, "flzk3": 3}
CLIENT_PORT = 2181
QUORUM_PORT = 2888  # followers to the leader
ELECTION_PORT = 3888  # leader election, between every pair
SERVING_MODES = ("leader", "follower", "standalone")
NOT_SERVING = "not serving"  # the process answers, but is in an election or has no quorum
DOWN = "down"  # nothing answers


def connect_string(port: int = CLIENT_PORT) -> str:
    """The daemons' ``zookeeper_hosts``, as one kazoo host string."""
    return ",".join(f"{SERVER_ADDRESSES[s]}:{port}" for s in SERVERS)


def server_spec() -> str:
    """``ZK_SERVERS`` for lab/roles/zookeeper.sh: ``ID=ADDRESS`` for every server."""
    return " ".join(f"{MYID[s]}={SERVER_ADDRESSES[s]}" for s in SERVERS)


# -- the four-letter answers, parsed ----------------------------------------------------------


def parse_mode(srvr: str) -> str:
    """The server's mode from its ``srvr`` answer: leader, follower, standalone (or observer);
    NOT_SERVING when it answers without one ("This ZooKeeper instance is not currently serving
    requests", during an election or without a quorum); DOWN when there is no answer."""
    if not srvr.strip():
        return DOWN
    match = re.search(r"^Mode: (\w+)", srvr, re.MULTILINE)
    return match.group(1) if match else NOT_SERVING


@dataclass(frozen=True)
class Connection:
    """One client connection in a ``cons`` answer."""

    address: str  # the client's address
    port: int
    session_id: int | None  # None for a connection without a session (a four-letter command)
    established_ms: int | None  # wall clock, milliseconds
    timeout_ms: int | None  # the negotiated session timeout


_CONS_LINE = re.compile(r"^\s*/(?P<addr>\S+?):(?P<port>\d+)\[\d+\]\((?P<fields>.*)\)\s*$")


def parse_cons(text: str) -> list[Connection]:
    """The connections a ``cons`` answer lists, one a line, e.g. `` /10.77.0.11:41234[1](queued=0,
    recved=9,sent=9,sid=0x1000...,lop=PING,est=17...,to=2000,...)`` (without the line break)."""
    out = []
    for line in text.splitlines():
        match = _CONS_LINE.match(line)
        if match is None:
            continue
        fields = dict(kv.split("=", 1) for kv in match.group("fields").split(",") if "=" in kv)
        sid = fields.get("sid")
        out.append(
            Connection(
                address=match.group("addr"),
                port=int(match.group("port")),
                session_id=int(sid, 16) if sid else None,
                established_ms=_int(fields.get("est")),
                timeout_ms=_int(fields.get("to")),
            )
        )
    return out


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def ephemeral_owners(dump: str) -> dict[str, int]:
    """Ephemeral path -> owning session id, from the ``Sessions with Ephemerals`` part of a
    ``dump`` answer (a session line ``0x1000...:``, then its paths indented)."""
    owners: dict[str, int] = {}
    session: int | None = None
    in_ephemerals = False
    for line in dump.splitlines():
        if line.startswith("Sessions with Ephemerals"):
            in_ephemerals = True
            continue
        if not in_ephemerals:
            continue
        match = re.fullmatch(r"0x([0-9a-fA-F]+):", line.strip())
        if match and not line[:1].isspace():
            session = int(match.group(1), 16)
        elif line[:1].isspace() and line.strip().startswith("/") and session is not None:
            owners[line.strip()] = session
        elif line.strip() and not line[:1].isspace():
            in_ephemerals = False  # the next section ("Connections dump:")
    return owners


def server_of_session(session_id: int, cons: Mapping[str, str]) -> str | None:
    """The server whose ``cons`` lists ``session_id`` (``cons``: server -> its answer); when a
    server that lost the client has not noticed yet, the latest connection wins."""
    best: tuple[int, str] | None = None
    for server, text in cons.items():
        for c in parse_cons(text):
            if c.session_id == session_id:
                key = (c.established_ms or 0, server)
                if best is None or key > best:
                    best = key
    return None if best is None else best[1]


# -- the ensemble of a running lab ------------------------------------------------------------


class ZooKeeperFaultError(RuntimeError):
    """An ensemble operation did not reach the state it promised; the message says which."""


class Ensemble:
    """The three servers of ``lab``: their modes, the nodes' sessions, and faults.

    ``addresses`` names every lab host (servers and nodes), ``chroot`` is the daemons' (their
    member records are ``<chroot>/members/<node>``)."""

    def __init__(self, lab: Lab, addresses: Mapping[str, str], chroot: str) -> None:
        self.lab = lab
        self.addresses = dict(addresses)
        self.chroot = chroot

    # -- observing ------------------------------------------------------------------------------

    def four_letter(self, server: str, command: str, timeout: float = 1.0) -> str:
        """``command`` sent to ``server`` from its own namespace (so it answers even when the
        server is cut off from everything); '' when nothing answers."""
        self._check_server(server)
        if not self.lab._ns_exists(server):
            return ""
        url = f"telnet://{SERVER_ADDRESSES[server]}:{CLIENT_PORT}"
        try:
            proc = self.lab.exec(
                server, ["curl", "-s", "-m", f"{timeout:g}", url], timeout + 2.0, input=command
            )
        except subprocess.TimeoutExpired:
            return ""
        return proc.stdout

    def mode(self, server: str) -> str:
        return parse_mode(self.four_letter(server, "srvr"))

    def modes(self) -> dict[str, str]:
        """Every server's mode (``parse_mode``), asked in parallel."""
        return dict(zip(SERVERS, self._each(self.mode, SERVERS), strict=True))

    def leader(self) -> str | None:
        """The server that says it leads (None during an election or without a quorum)."""
        leaders = [s for s, m in self.modes().items() if m == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def wait_serving(self, servers: Iterable[str] | None = None, timeout: float = 30.0) -> str:
        """Until one server leads and every one of ``servers`` (default: all three) serves as
        leader or follower; returns the leader. ZooKeeperFaultError with the modes otherwise."""
        wanted = tuple(servers) if servers is not None else SERVERS
        last: dict[str, str] = {}

        def whole() -> str | None:
            nonlocal last
            last = self.modes()
            leaders = [s for s, m in last.items() if m == "leader"]
            if len(leaders) == 1 and all(last[s] in SERVING_MODES for s in wanted):
                return leaders[0]
            return None

        leader = wait_for(whole, timeout, step=0.1)
        if leader is None:
            raise ZooKeeperFaultError(
                f"ZooKeeper not serving within {timeout:g} s: {_describe(last)}"
            )
        return leader

    def session_id(self, node: str) -> int | None:
        """The session that owns the node's member record (``dump`` on a serving server), None
        when no server answers or the node has no member record."""
        path = f"{self.chroot}/members/{node}"
        for server in SERVERS:
            owners = ephemeral_owners(self.four_letter(server, "dump"))
            if path in owners:
                return owners[path]
        return None

    def server_of(self, node: str) -> str | None:
        """The server the node's daemon session is connected to (``cons`` of every server)."""
        sid = self.session_id(node)
        if sid is None:
            return None
        answers = self._each(lambda s: self.four_letter(s, "cons"), SERVERS)
        return server_of_session(sid, dict(zip(SERVERS, answers, strict=True)))

    def sessions(self, nodes: Sequence[str] = ("fln1", "fln2")) -> dict[str, str | None]:
        """{node: the server its daemon's session is connected to, or None}."""
        sids = {n: self.session_id(n) for n in nodes}
        answers = self._each(lambda s: self.four_letter(s, "cons"), SERVERS)
        cons = dict(zip(SERVERS, answers, strict=True))
        return {n: None if sid is None else server_of_session(sid, cons) for n, sid in sids.items()}

    # -- servers up and down --------------------------------------------------------------------

    def kill(self, server: str) -> int:
        """SIGKILL the server's JVM (a crash: no goodbye to its peers or clients); its PID."""
        pid = self.lab.pid(self._check_server(server), "zookeeper")
        if pid is None:
            raise ZooKeeperFaultError(f"{server}: ZooKeeper is not running")
        os.kill(pid, signal.SIGKILL)
        if not wait_for(lambda: self.lab.pid(server, "zookeeper") is None, 5.0):
            raise ZooKeeperFaultError(f"{server}: ZooKeeper (pid {pid}) survived SIGKILL")
        return pid

    def stop(self, server: str) -> None:
        """A clean stop (SIGTERM, by its role script)."""
        self.lab.stop_component(self._check_server(server), "zookeeper")

    def start(self, server: str, *, wait: bool = True) -> None:
        """Start the server if it is not running. ``wait``: until it serves (it needs a quorum:
        one more server up); otherwise only until its process answers (``ruok``)."""
        self.lab.start_zookeeper(self._check_server(server), wait_serving=wait)

    def stop_all(self) -> None:
        """Stop all three (SIGTERM), in parallel: the ensemble is gone."""
        self._each(self.stop, SERVERS)

    def start_all(self, timeout: float = 30.0) -> str:
        """Start whichever servers are down, in parallel (they form a quorum together), and
        wait until all three serve; returns the leader."""
        self._each(lambda s: self.start(s, wait=False), SERVERS)
        return self.wait_serving(timeout=timeout)

    # -- partitions -----------------------------------------------------------------------------

    def cut_node(self, node: str, servers: Iterable[str] | None = None) -> None:
        """Cut ``node`` off from ``servers`` (default: all three)."""
        for server in servers if servers is not None else SERVERS:
            self.lab.cut(node, self._check_server(server))

    def heal_node(self, node: str) -> None:
        """Remove every cut between ``node`` and a server (idempotent)."""
        for server in SERVERS:
            self.lab.uncut(node, server)

    def isolate(self, server: str, nodes: Iterable[str] = ()) -> None:
        """Cut ``server`` off from the other two servers and from ``nodes``: with a quorum on
        the other side, it stops serving once it has not heard from the leader for syncLimit
        ticks, and its clients' sessions expire at the leader."""
        self._check_server(server)
        for other in SERVERS:
            if other != server:
                self.lab.cut(server, other)
        for node in nodes:
            self.lab.cut(server, node)

    def heal_server(self, server: str) -> None:
        """Remove every cut of ``server`` (to servers and nodes; idempotent)."""
        self._check_server(server)
        for other in self.addresses:
            if other != server:
                self.lab.uncut(server, other)

    def move_session(self, node: str, server: str, timeout: float = 5.0) -> float:
        """Force the node's daemon session onto ``server`` without ending it; the seconds it
        took (0 when it is there already). For the moment it takes, the node cannot reach the
        other servers; kazoo reconnects within milliseconds, well inside the session timeout
        and the daemon's self_fence_after. ZooKeeperFaultError if it does not get there."""
        self._check_server(server)
        started = time.monotonic()
        if self.server_of(node) == server:
            return 0.0
        added = []
        try:
            for other in SERVERS:
                if other != server and not self.lab.blackholed(node, other):
                    self.lab.blackhole(node, other)
                    added.append(other)
            # Abort the node's connections to every ZooKeeper server (a reset, not a timeout).
            self.lab.exec(node, ["ss", "-K", "-t", "dport", "=", f":{CLIENT_PORT}"], timeout=5)
            if not wait_for(lambda: self.server_of(node) == server, timeout, step=0.05):
                raise ZooKeeperFaultError(
                    f"{node}'s session did not move to {server} within {timeout:g} s "
                    f"(it is on {self.server_of(node)})"
                )
        finally:
            for other in added:
                self.lab.unblackhole(node, other)
        return time.monotonic() - started

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _check_server(server: str) -> str:
        if server not in SERVERS:
            raise ValueError(f"unknown ZooKeeper server {server!r} (one of {', '.join(SERVERS)})")
        return server

    @staticmethod
    def _each(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """``fn`` over ``items`` in parallel, results in order; the first error raised."""
        with ThreadPoolExecutor(max_workers=len(items) or 1) as pool:
            return list(pool.map(fn, items))


def _describe(modes: Mapping[str, str]) -> str:
    return ", ".join(f"{s} {m}" for s, m in modes.items()) or "no answer"

"""The two-node lab in network namespaces, and the Python API the e2e tests, bench and demo drive.

Layout (DESIGN.md, "The lab"): namespaces ``fln1`` and ``fln2`` (the nodes), ``flzk``, ``flzk2``
and ``flzk3`` (a ZooKeeper ensemble of three, lab/ensemble.py), ``flcli`` (a client) and
``flsw``, which holds the bridge ``br0`` joining them; each host namespace has ``lo`` and an
``eth0`` in 10.77.0.0/24 that exists nowhere else. The host's own network namespace, interfaces
and routes are never touched: every ``ip`` command names its namespace, and every lab process
runs inside one (``ip netns exec``).

Every component is started and stopped by its role script in ``lab/roles/`` (``network.sh``,
``zookeeper.sh``, ``postgres.sh``, ``app.sh``, ``squid.sh``, ``sshd.sh``, ``failoverd.sh``), which
take their parameters from environment variables and know nothing of namespaces, so that the
same scripts provision the Vagrant VMs. This module only orchestrates them: it wraps each call in
``ip netns exec``, runs independent steps in parallel, and reads the PID files they leave under
the lab directory (default ``/var/tmp/failoverd-lab``)::

    /var/tmp/failoverd-lab/                 0755 root
      flzk/   zoo.cfg zookeeper.log zookeeper.pid   (data on tmpfs:
                                                     /dev/shm/<root name>-zookeeper/flzk)
      flzk2/ flzk3/                         the same, for the other two servers
      replication-mode                      the daemons' [replication] mode (below)
      fln1/   failoverd.toml failoverd.log failoverd.pid   the daemon, config from
                                                            lab/templates/failoverd.toml
              app.log app.pid app.fault                     the donations app on 127.0.0.1:8080
              squid.pid squid.out squid/ (proxy)            Squid on *:80, squid.conf, cache.log
              sshd_config sshd.log sshd.pid ssh/ (0700)     host key, fencing client key,
                                                            authorized_keys, known_hosts
              pg/ (postgres, 0700) data/ socket/ postgres.log
              daemon-owns-postgres                          see "Ownership" below
      fln2/   the same

Ownership of PostgreSQL. The lab initialises and starts each node's PostgreSQL (primary on fln1,
streaming replica of it on fln2) until it first starts that node's failoverd; from then on the
daemon owns the database (stops, promotes, restarts it as a replica) and ``up()`` never starts it
again, even when it is down. So after ``crash(node)``, ``restore_link(node)`` and ``up()`` (or
``start_component(node, ...)`` for each of ``app``, ``squid``, ``sshd`` and ``failoverd``) restart
only what the daemon does not own; bringing the database back is the daemon's job.
``start_component(node, "postgres")`` starts it by hand when a test wants that.

Replication mode. Both daemons run with the same ``[replication] mode`` (async, sync or
strict; the lab's default is sync), and the lab keeps it in one place, ``replication-mode`` in
its directory, from which every config is written. ``up(replication_mode=M)`` starts the lab in
M; ``set_replication_mode(M)`` switches a running lab: both configs rewritten, then a rolling
restart of the daemons, the passive first, each time until one node is active and the other
streams from it again, so a test or the benchmark can compare modes in one lab.

The API, for tests, the benchmark and the demo (``lab/lab`` is its command line)::

    lab = Lab(root=Path("/var/tmp/failoverd-lab"))
    lab.up(replication_mode=None, monitoring=False) -> seconds
    lab.down() -> seconds          lab.is_up()
    lab.monitoring                 Prometheus, Alertmanager and the webhook receiver in flcli
                                   (lab/monitoring.py): up(), down(), pages(), wait_page(...)
    lab.replication_mode           lab.set_replication_mode(mode) -> seconds
    lab.status() -> LabStatus      (.render(): what `lab/lab status` prints)
    lab.wait_healthy(timeout)      until `failoverctl status` says HEALTHY
    lab.wait_redundant(timeout)    until one active, one passive streaming from it; the active
    lab.cluster_status(via=None)   `failoverctl status --json` (+ exit_code), None if no answer
    lab.exec(ns, argv, timeout)    lab.failoverctl(node, *args)     lab.http(ns, method, url, body)
    lab.query(node, sql, dbname=)  lab.zk_command("srvr", ns=, server=)
    lab.vip_holders()              lab.writable_primaries()         lab.database_state(node)
    lab.pid(node, component)       lab.pids(node)
    lab.node_dir(node)             lab.config_path(node)            lab.daemon_log(node)
    lab.log_path(node, component)  lab.ssh_dir(node)                lab.pg_data_dir(node)
    faults: crash(node), restore_link(node, drop_vip=), partition_from_zk(node, servers=None),
            heal_zk(node), partition_nodes(), heal_nodes(), cut(a, b), uncut(a, b), cuts(),
            heal_cuts(), freeze_daemon(node), thaw_daemon(node), stop_component(node, name),
            start_component(node, name)
    lab.zk                         the ZooKeeper ensemble (lab/ensemble.py): modes(), leader(),
                                   server_of(node), kill/stop/start(server), stop_all(),
                                   start_all(), isolate(server, nodes=), move_session(...)

Components: ``zookeeper`` on ``flzk``, ``flzk2`` and ``flzk3``; ``postgres``, ``app``,
``squid``, ``sshd`` and ``failoverd`` on ``fln1`` and ``fln2``. Only one lab runs on a host at
a time (the namespace names are fixed). Everything here needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failoverd.config import SYNC_MODES, SyncMode
from lab.ensemble import (
    CLIENT_PORT,
    ELECTION_PORT,
    MYID,
    QUORUM_PORT,
    SERVER_ADDRESSES,
    SERVERS,
    Ensemble,
    ZooKeeperFaultError,
    connect_string,
    server_spec,
)
from lab.monitoring import Monitoring, MonitoringError, monitoring_command
from lab.process import wait_for
from lab.profiles import PROFILE_FILE, PROFILES, parse_profile
from lab.profiles import ZK_MIN_SESSION_MS as PROFILE_ZK_MIN_SESSION_MS

REPO = Path(__file__).resolve().parents[1]
ROLES = REPO / "lab" / "roles"
DEFAULT_ROOT = Path("/var/tmp/failoverd-lab")
# The virtual environment supplies the interpreter and the dependencies; the code of failoverd
# and of the lab is always this checkout's (PYTHONPATH in _env), even when the environment holds
# an editable install of another checkout (a git worktree sharing the main one's .venv).
DEFAULT_VENV = Path(os.environ.get("LAB_VENV") or REPO / ".venv")

SWITCH = "flsw"
BRIDGE = "br0"
IFACE = "eth0"
PREFIX = 24
ZK_SERVERS = SERVERS  # flzk, flzk2, flzk3: the ensemble (lab/ensemble.py)
ZK_NS = ZK_SERVERS[0]  # the first server, 10.77.0.5
CLIENT_NS = "flcli"
NODES = ("fln1", "fln2")
ADDRESSES = {
    **SERVER_ADDRESSES,
    "fln1": "10.77.0.11",
    "fln2": "10.77.0.12",
    CLIENT_NS: "10.77.0.50",
}
NAMESPACES = (SWITCH, *ZK_SERVERS, *NODES, CLIENT_NS)
LAB_NET = "10.77.0.0/24"
VIP = "10.77.0.100/24"
VIP_IP = VIP.split("/", maxsplit=1)[0]
ZK_PORT = CLIENT_PORT
ZK_HOSTS = connect_string()  # every server, as the daemons' configs list them
PG_PORT = 5432
APP_PORT = 8080
SQUID_PORT = 80
SSH_PORT = 22
METRICS_PORT = 9641
CLUSTER = "lab"
CHROOT = f"/failoverd/{CLUSTER}"
PG_DB = "donations"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
ZK_MAX_SESSION_MS = 10000
INITIAL_PRIMARY = "fln1"
LAB_REPLICATION_MODE: SyncMode = "sync"  # until up(replication_mode=) or a switch says otherwise
MODE_FILE = "replication-mode"

NODE_COMPONENTS = ("postgres", "app", "squid", "sshd", "failoverd")
COMPONENTS: dict[str, tuple[str, ...]] = {
    **{s: ("zookeeper",) for s in ZK_SERVERS},
    **{n: NODE_COMPONENTS for n in NODES},
}
OWNED_MARKER = "daemon-owns-postgres"
LEAKED_SHM = "leaked-shm-ids"  # System V segments of PostgreSQL servers killed by crash()
DOWN_DAEMON_STOP_TIMEOUT = 4.0  # seconds between SIGTERM and SIGKILL for a daemon in down()
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LabError(RuntimeError):
    """A lab step failed; the message says which and carries the role script's output."""


def parse_replication_mode(text: str) -> SyncMode:
    """``text`` as a ``[replication] mode``; ValueError naming the modes otherwise."""
    for mode in SYNC_MODES:
        if mode == text:
            return mode
    raise ValueError(f"unknown replication mode {text!r} (one of {', '.join(SYNC_MODES)})")


# -- processes --------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (here PID 1 may never reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pids: Iterable[int]) -> set[int]:
    """The given PIDs and all their descendants."""
    children = _children_map()
    found: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def netns_id(path: str) -> tuple[int, int] | None:
    """Identity (device, inode) of a network namespace file (``/run/netns/NAME``,
    ``/proc/PID/ns/net``); None when there is no such file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _pids_in_netns(ns: str) -> set[int]:
    """Every live process whose network namespace is ``ns``."""
    target = netns_id(f"/run/netns/{ns}")
    if target is None:
        return set()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and netns_id(f"/proc/{entry.name}/ns/net") == target:
            pid = int(entry.name)
            if pid != os.getpid() and _alive(pid):
                found.add(pid)
    return found


def _wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    return bool(wait_for(predicate, timeout, interval))


def _kill_all(collect: Callable[[], set[int]], timeout: float = 5.0) -> set[int]:
    """SIGKILL every process ``collect()`` names, returning them. Everything is SIGSTOPped first,
    asking ``collect`` again until it names nobody new, so nothing forks a child we miss or
    reacts to the others dying."""
    me = os.getpid()
    victims: set[int] = set()
    for _ in range(10):
        new = collect() - victims - {me}
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        victims |= new
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if not _wait(lambda: not any(_alive(p) for p in victims), timeout):
        left = sorted(p for p in victims if _alive(p))
        raise LabError(f"processes survived SIGKILL: {left}")
    return victims


# -- status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentStatus:
    """One component of one namespace: its PID (None when down) and whether it runs there."""

    namespace: str
    name: str
    pid: int | None
    in_namespace: bool  # the process's network namespace is ``namespace``

    @property
    def up(self) -> bool:
        return self.pid is not None


@dataclass
class LabStatus:
    root: Path
    namespaces: dict[str, bool]
    components: list[ComponentStatus]
    vip_holders: list[str]
    databases: dict[str, str]  # node -> "primary", "replica (streaming)", "down", ...
    links: dict[str, str]  # node -> "up" / "down" / "absent"
    partitioned: list[str]  # nodes cut off from every ZooKeeper server
    replication_mode: str = LAB_REPLICATION_MODE
    zookeeper: dict[str, str] = field(default_factory=dict)  # server -> mode (lab/ensemble.py)
    zk_sessions: dict[str, str | None] = field(default_factory=dict)  # node -> its server
    cuts: dict[str, list[str]] = field(default_factory=dict)  # namespace -> hosts cut off
    monitoring: dict[str, int | None] = field(default_factory=dict)  # component -> PID, if started
    failoverctl: str = ""
    failoverctl_code: int | None = None
    failoverctl_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def all_up(self) -> bool:
        return all(self.namespaces.values()) and all(c.up for c in self.components)

    def component(self, namespace: str, name: str) -> ComponentStatus:
        for c in self.components:
            if (c.namespace, c.name) == (namespace, name):
                return c
        raise KeyError((namespace, name))

    def render(self) -> str:
        """The human-readable report of ``lab/lab status``."""
        state = "up" if self.all_up else "partial" if any(self.namespaces.values()) else "down"
        lines = [f"lab {self.root}: {state}", ""]

        def row(*cells: str) -> None:
            widths = (10, 12, 10, 7, 8, 0)
            lines.append(
                " ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=False)).rstrip()
            )

        row("NAMESPACE", "ADDRESS", "COMPONENT", "STATE", "PID", "NOTE")
        for ns in NAMESPACES:
            present = self.namespaces.get(ns, False)
            addr = ADDRESSES.get(ns, "-")
            if not present:
                row(ns, addr, "namespace", "absent", "-")
                continue
            if ns == SWITCH:
                row(ns, "-", "bridge", "up", "-", BRIDGE)
                continue
            notes = []
            if self.links.get(ns, "up") != "up":
                notes.append(f"{IFACE} {self.links[ns]}")
            if ns in self.cuts:
                notes.append(f"cut off from {', '.join(self.cuts[ns])}")
            if ns not in COMPONENTS:
                row(ns, addr, "client", "-", "-", ", ".join(notes))
                if ns == CLIENT_NS:
                    for name, pid in self.monitoring.items():
                        row("", "", name, "up" if pid else "down", str(pid or "-"))
                continue
            label, label_addr = ns, addr
            for c in [c for c in self.components if c.namespace == ns]:
                note = self.databases.get(ns, "") if c.name == "postgres" else ""
                if c.name == "zookeeper" and c.up:
                    note = self.zookeeper.get(ns, "")
                if c.up and not c.in_namespace:
                    note = f"{note} NOT IN ITS NAMESPACE".strip()
                row(label, label_addr, c.name, "up" if c.up else "down", str(c.pid or "-"), note)
                label = label_addr = ""
            if notes:
                row("", "", "", "", "", ", ".join(notes))
        lines.append("")
        lines.append(f"VIP {VIP} on: {', '.join(self.vip_holders) or 'nobody'}")
        dbs = ", ".join(f"{n} {self.databases.get(n, 'down')}" for n in NODES)
        lines.append(f"PostgreSQL: {dbs}")
        lines.append(f"Replication: {self.replication_mode}")
        if self.zookeeper:
            leaders = [s for s, m in self.zookeeper.items() if m == "leader"]
            modes = ", ".join(f"{s} {m}" for s, m in self.zookeeper.items())
            lead = f"{leaders[0]} leads" if len(leaders) == 1 else "no leader"
            lines.append(f"ZooKeeper: {lead} ({modes})")
        if self.zk_sessions:
            where = ", ".join(f"{n} on {s or 'none'}" for n, s in self.zk_sessions.items())
            lines.append(f"ZooKeeper sessions: {where}")
        if self.failoverctl_from is not None:
            lines.append("")
            lines.append(
                f"failoverctl status (from {self.failoverctl_from}, exit {self.failoverctl_code}):"
            )
            lines.append(self.failoverctl.rstrip())
        return "\n".join(lines) + "\n"


# -- the lab ----------------------------------------------------------------------------------


class Lab:
    """The two-node lab rooted at ``root``. Needs root; one lab per host.

    ``log`` receives one line per step of ``up``/``down`` (the CLI prints them; tests may
    pass ``print`` or leave it silent).
    """

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        *,
        venv: Path = DEFAULT_VENV,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.venv = Path(venv).absolute()
        # tmpfs; one directory per server under it
        self.zk_data_dir = Path("/dev/shm") / f"{self.root.name}-zookeeper"
        self.zk = Ensemble(self, ADDRESSES, CHROOT)
        self.monitoring = Monitoring(self.root, venv=self.venv, log=self._step)
        self._log = log or (lambda _line: None)
        self._t0 = time.monotonic()

    # -- paths --------------------------------------------------------------------------------

    def node_dir(self, node: str) -> Path:
        """The directory of a namespace's components (``fln1``, ``fln2``, ``flzk``, ``flzk2``,
        ``flzk3``)."""
        self._check_ns(node, COMPONENTS)
        return self.root / node

    def config_path(self, node: str) -> Path:
        """The node's generated failoverd configuration."""
        return self.node_dir(self._node(node)) / "failoverd.toml"

    def daemon_log(self, node: str) -> Path:
        """The node's failoverd log (JSON lines)."""
        return self.node_dir(self._node(node)) / "failoverd.log"

    def log_path(self, node: str, component: str) -> Path:
        """Where a component's output goes."""
        self._check_component(node, component)
        d = self.node_dir(node)
        return {
            "zookeeper": d / "zookeeper.log",
            "postgres": d / "pg" / "postgres.log",
            "app": d / "app.log",
            "squid": d / "squid" / "cache.log",
            "sshd": d / "sshd.log",
            "failoverd": d / "failoverd.log",
        }[component]

    def ssh_dir(self, node: str) -> Path:
        return self.node_dir(self._node(node)) / "ssh"

    def pg_data_dir(self, node: str) -> Path:
        return self.node_dir(self._node(node)) / "pg" / "data"

    @property
    def failoverd_bin(self) -> Path:
        return self.venv / "bin" / "failoverd"

    @property
    def failoverctl_bin(self) -> Path:
        return self.venv / "bin" / "failoverctl"

    def fence_command(self, node: str) -> str:
        """The forced command the node's sshd runs for its peer's key: ``fence-self`` with the
        node's own config, from this checkout."""
        config = self.config_path(node)
        return f"/usr/bin/env PYTHONPATH={REPO} {self.failoverd_bin} fence-self -c {config}"

    # -- life cycle ---------------------------------------------------------------------------

    def up(
        self,
        *,
        replication_mode: str | None = None,
        monitoring: bool = False,
        profile: str | None = None,
    ) -> float:
        """Bring up whatever is not running (idempotent); returns the seconds it took.

        ``profile`` (lab/profiles.py: default, fast) sets the daemons' timings and ZooKeeper's
        least session; None keeps the lab's. A lab that runs another profile is refused: take
        it down first (ZooKeeper's servers and both daemons would need a restart).

        ``monitoring`` also starts Prometheus, Alertmanager and the webhook receiver in flcli
        (lab/monitoring.py), alongside the rest; without it the lab is what it always was.

        ``replication_mode`` (async, sync, strict) is the daemons' ``[replication] mode``;
        None keeps the lab's (``replication_mode``). A different mode on a lab whose daemons
        already run is switched to once everything is up (``set_replication_mode``).

        Order: configs (checked with ``failoverd check-config``), network; then in parallel
        ZooKeeper, the databases (fln1's primary, then fln2's replica from a base backup), the
        apps, Squids and sshds; then, once ZooKeeper and the databases are ready, both daemons
        together (fln1's takes the lease: its database is the primary, and fln2's waits for it,
        see tests/unit/test_core_peer_primary.py).
        Raises LabError naming every step that failed (the lab is left as it is: ``down()``).
        """
        self._t0 = time.monotonic()
        self._preflight()
        if not self.root.exists() and any(self._ns_exists(ns) for ns in NAMESPACES):
            raise LabError(
                f"lab namespaces exist but {self.root} does not: a lab with another root is up "
                "(take it down with `lab/lab --root ROOT down`), or a lab was half removed "
                "(`lab/lab down` clears it)"
            )
        if profile is not None:
            wanted_profile = parse_profile(profile)
            if wanted_profile != self.profile and self.is_up():
                raise LabError(
                    f"the lab runs the {self.profile} profile: `lab/lab down` first to bring it "
                    f"up in the {wanted_profile} profile"
                )
        self._prepare_dirs()
        if profile is not None:
            (self.root / PROFILE_FILE).write_text(f"{profile}\n")
        switch_to: SyncMode | None = None
        if replication_mode is not None:
            wanted = parse_replication_mode(replication_mode)
            if wanted != self.replication_mode:
                if any(self.pid(n, "failoverd") is not None for n in NODES):
                    switch_to = wanted  # daemons run the old configs: restart them, later
                else:
                    self._write_replication_mode(wanted)
        with ThreadPoolExecutor(max_workers=12) as pool:
            configs = [
                pool.submit(self._role, n, "failoverd", "config", netns=False) for n in NODES
            ]
            self._gather(configs)
            self._network("start")
            watch = [pool.submit(self._start_monitoring)] if monitoring else []
            # All three together: a server serves only once a quorum is up.
            zks = [pool.submit(self._start, s, "zookeeper") for s in ZK_SERVERS]
            dbs = pool.submit(self._start_databases)
            keys = [pool.submit(self._role, n, "sshd", "keys") for n in NODES]
            others = [pool.submit(self._start, n, c) for n in NODES for c in ("app", "squid")]
            self._gather(keys)
            sshds = [pool.submit(self._start, n, "sshd") for n in NODES]
            self._gather([*zks, dbs])
            daemons = [pool.submit(self._start, n, "failoverd") for n in NODES]
            self._gather([*others, *sshds, *daemons, *watch])
        if switch_to is not None:
            self._switch_replication_mode(switch_to, timeout=120.0)
        took = time.monotonic() - self._t0
        self._step(f"up in {took:.1f} s (replication {self.replication_mode})")
        return took

    def down(self) -> float:
        """Stop everything by PID, delete the namespaces, remove the lab directory and the
        ZooKeeper data; idempotent. Returns the seconds it took."""
        self._t0 = time.monotonic()
        self._require_root()
        errors: list[str] = []
        # A frozen process cannot even exit: thaw everything in the lab first.
        for ns in NAMESPACES:
            for pid in _pids_in_netns(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        with ThreadPoolExecutor(max_workers=12) as pool:
            # The daemons first, so that none of them reacts to the others going away; a
            # shorter bound than stop_component's, since nothing needs handing over.
            daemons = [
                pool.submit(self._stop, n, "failoverd", stop_timeout=DOWN_DAEMON_STOP_TIMEOUT)
                for n in NODES
                if self.root.exists()
            ]
            errors += self._collect(daemons)
            rest: list[Future[Any]] = [
                pool.submit(self._stop, ns, c)
                for ns, comps in COMPONENTS.items()
                for c in comps
                if c != "failoverd" and self.root.exists()
            ]
            if self.root.exists():
                rest.append(pool.submit(self._stop_monitoring))
            errors += self._collect(rest)

        # Anything else still running in a lab namespace (a fence command, an arping...).
        def strays() -> set[int]:
            found: set[int] = set()
            for ns in NAMESPACES:
                found |= _pids_in_netns(ns)
            return _descendants(found) if found else found

        if strays():
            try:
                killed = _kill_all(strays)
                self._step(f"killed {len(killed)} stray lab process(es): {sorted(killed)}")
            except LabError as e:
                errors.append(str(e))
        try:
            self._network("stop")
        except LabError as e:
            errors.append(str(e))
        self._remove_run_sshd()
        self._remove_leaked_shm()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.zk_data_dir, ignore_errors=True)
        left = [p for p in (self.root, self.zk_data_dir) if p.exists()]
        if left:
            errors.append(f"could not remove {', '.join(map(str, left))}")
        took = time.monotonic() - self._t0
        if errors:
            raise LabError("lab down: " + "\n".join(errors))
        self._step(f"down in {took:.1f} s")
        return took

    def wait_healthy(self, timeout: float = 20.0) -> float:
        """Wait until ``failoverctl status`` says HEALTHY (exit 0: one active node, the other
        an eligible passive); returns the seconds it took. ``up()`` does not wait for this: it
        returns once both daemons have started, before they have settled their roles."""
        start = time.monotonic()
        last = ""
        while time.monotonic() - start < timeout:
            for node in NODES:
                if self.pid(node, "failoverd") is None:
                    continue
                proc = self.failoverctl(node, "status", timeout=10.0)
                if proc.returncode == 0:
                    return time.monotonic() - start
                last = (proc.stdout + proc.stderr).strip()
                break
            time.sleep(0.2)
        raise LabError(f"cluster not healthy within {timeout:g} s; last status:\n{last}")

    def cluster_status(self, via: str | None = None) -> dict[str, Any] | None:
        """``failoverctl status --json`` from ``via``'s namespace, or the first node that
        answers (the host cannot reach ZooKeeper), with the command's exit code as
        ``exit_code``; None when none answers."""
        for node in [self._node(via)] if via else list(NODES):
            try:
                proc = self.failoverctl(node, "status", "--json", timeout=15.0)
            except subprocess.TimeoutExpired:
                continue
            if proc.stdout.strip().startswith("{"):
                doc: dict[str, Any] = json.loads(proc.stdout)
                if "error" in doc:  # status --json's document for "did not answer"
                    continue
                doc["exit_code"] = proc.returncode
                return doc
        return None

    def redundant(self, *, mixed_modes: bool = False) -> str | None:
        """The active node when the cluster is redundant, None otherwise: ``failoverctl
        status`` healthy (one node active, the other an eligible passive), the VIP on the
        active node only, its database the primary and the peer's a replica that streams.
        ``mixed_modes``: halfway through a switch of replication mode the two daemons run
        different modes, and status (judging by its own node's) may call the missing sync
        standby degraded: that alone is then accepted."""
        doc = self.cluster_status()
        accepted = (0, 1) if mixed_modes else (0,)
        if doc is None or doc.get("exit_code") not in accepted:
            return None
        if mixed_modes and doc.get("exit_code") == 1:
            others = [w for w in doc.get("warnings", []) if "synchronous standby" not in w]
            if others:
                return None
        active = [m["node"] for m in doc.get("members", []) if m.get("role") == "active"]
        if len(active) != 1 or self.vip_holders() != active:
            return None
        states = self.database_states()
        passive = next(n for n in NODES if n != active[0])
        if states.get(active[0]) != "primary" or states.get(passive) != "replica (streaming)":
            return None
        return str(active[0])

    def wait_redundant(self, timeout: float = 60.0, *, mixed_modes: bool = False) -> str:
        """Until the cluster is redundant (``redundant``); the active node. LabError after
        ``timeout`` seconds."""
        node = wait_for(lambda: self.redundant(mixed_modes=mixed_modes), timeout, step=0.5)
        if node is None:
            raise LabError(
                f"timed out after {timeout:g} s waiting for an active node and an eligible "
                "passive streaming from it"
            )
        return node

    # -- replication mode ---------------------------------------------------------------------

    @property
    def replication_mode(self) -> SyncMode:
        """The daemons' ``[replication] mode``: what ``up(replication_mode=)`` or
        ``set_replication_mode`` last chose, kept in the lab directory (the one place the
        configs take it from); LAB_REPLICATION_MODE before either, and after ``down``."""
        try:
            text = (self.root / MODE_FILE).read_text().strip()
        except OSError:
            return LAB_REPLICATION_MODE
        return parse_replication_mode(text)

    def set_replication_mode(self, mode: str, timeout: float = 120.0) -> float:
        """Run the lab's cluster in ``mode`` (async, sync, strict) from now on; returns the
        seconds it took, 0 when it already does.

        Both nodes' configs are rewritten, then the daemons restart one at a time, the passive
        first, and each time the lab waits (up to ``timeout``) for one active node and one
        passive streaming from it. The active's restart is a clean stop (SIGTERM: it steps
        down, stops PostgreSQL cleanly and releases the lease with its final LSN), so the peer
        takes over with nothing lost and the old active comes back as its replica: the active
        node changes. LabError when the lab is not up or does not settle."""
        wanted = parse_replication_mode(mode)
        self._t0 = time.monotonic()
        self._require_root()
        if not self.is_up():
            raise LabError(
                "the lab is not up: `lab/lab up --mode MODE` brings it up in a replication mode"
            )
        if not self._switch_replication_mode(wanted, timeout):
            return 0.0
        took = time.monotonic() - self._t0
        self._step(f"replication {wanted} in {took:.1f} s")
        return took

    def _switch_replication_mode(self, wanted: SyncMode, timeout: float) -> bool:
        """Switch to ``wanted`` (set_replication_mode); False when the lab already runs it."""
        if wanted == self.replication_mode and all(
            self._configured_mode(n) == wanted for n in NODES
        ):
            self._step(f"replication already {wanted}")
            return False
        active = self.wait_redundant(timeout, mixed_modes=True)  # a switch left halfway
        self._write_replication_mode(wanted)
        for node in NODES:
            self._role(node, "failoverd", "config", netns=False)
        for node in (next(n for n in NODES if n != active), active):
            self._stop(node, "failoverd")
            self._start(node, "failoverd")
            now_active = self.wait_redundant(timeout, mixed_modes=node != active)
            self._step(f"{node:<5} failoverd restarted ({wanted}); {now_active} active")
        return True

    @property
    def profile(self) -> str:
        """The timing profile the lab was brought up in (lab/profiles.py); default before."""
        try:
            return parse_profile((self.root / PROFILE_FILE).read_text().strip())
        except (OSError, ValueError):
            return "default"

    def _write_replication_mode(self, mode: SyncMode) -> None:
        path = self.root / MODE_FILE
        path.with_suffix(".tmp").write_text(f"{mode}\n")
        path.with_suffix(".tmp").replace(path)

    def _configured_mode(self, node: str) -> str | None:
        """The ``[replication] mode`` the node's config file says, None without one."""
        try:
            config = tomllib.loads(self.config_path(node).read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return None
        mode = config.get("replication", {}).get("mode")
        return mode if isinstance(mode, str) else None

    def is_up(self) -> bool:
        """Every namespace exists and every component runs."""
        return all(self._ns_exists(ns) for ns in NAMESPACES) and all(
            self.pid(ns, c) is not None for ns, comps in COMPONENTS.items() for c in comps
        )

    def status(self, *, failoverctl: bool = True) -> LabStatus:
        """What runs where, who holds the VIP, which database is primary, and (unless
        ``failoverctl=False``) ``failoverctl status`` run from a node that can reach ZooKeeper."""
        namespaces = {ns: self._ns_exists(ns) for ns in NAMESPACES}
        components = []
        for ns, comps in COMPONENTS.items():
            for c in comps:
                pid = self.pid(ns, c)
                inside = pid is not None and self._in_netns(pid, ns)
                components.append(ComponentStatus(ns, c, pid, inside))
        st = LabStatus(
            root=self.root,
            namespaces=namespaces,
            components=components,
            vip_holders=self.vip_holders(),
            databases=self.database_states(),
            links={n: self._link_state(n) for n in NODES},
            partitioned=[n for n in NODES if self._partitioned(n)],
            replication_mode=self.replication_mode,
            cuts=self.cuts(),
            monitoring=self.monitoring.pids() if self.monitoring.requested() else {},
        )
        if any(namespaces[s] for s in ZK_SERVERS):
            st.zookeeper = self.zk.modes()
            if any(m != "down" for m in st.zookeeper.values()):
                st.zk_sessions = self.zk.sessions(NODES)
        if failoverctl:
            for node in NODES:
                if not namespaces.get(node) or not self.config_path(node).exists():
                    continue
                if st.links.get(node) != "up" or node in st.partitioned:
                    continue
                proc = self.failoverctl(node, "status", timeout=10.0)
                st.failoverctl = (proc.stdout + proc.stderr).strip()
                st.failoverctl_code = proc.returncode
                st.failoverctl_from = node
                if proc.returncode != 3:  # 3: ZooKeeper unreachable from there; try the other
                    break
        return st

    # -- running things in the lab ------------------------------------------------------------

    def exec(
        self,
        ns: str,
        argv: Sequence[str],
        timeout: float = 10.0,
        *,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside namespace ``ns`` (``ip netns exec``); never raises on a non-zero
        exit (look at ``returncode``); raises ``subprocess.TimeoutExpired`` after ``timeout``."""
        self._check_ns(ns, NAMESPACES)
        full_env = {
            "PATH": SYSTEM_PATH,
            "LC_ALL": "C",
            "HOME": "/root",
            "PYTHONPATH": str(REPO),  # `python -m lab.workload` and friends
            **(env or {}),
        }
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            check=False,
        )

    def failoverctl(
        self, node: str, *args: str, timeout: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """``failoverctl -c <node's config> ARGS`` inside the node's namespace."""
        argv = [str(self.failoverctl_bin), "-c", str(self.config_path(node)), *args]
        return self.exec(self._node(node), argv, timeout)

    def http(
        self,
        ns: str,
        method: str,
        url: str,
        body: Any = None,
        timeout: float = 5.0,
    ) -> tuple[int, Any]:
        """One HTTP request with curl from namespace ``ns``: (status, JSON or text). Status 0
        when nothing answered within ``timeout``."""
        argv = ["curl", "-sS", "-m", f"{timeout:g}", "-X", method, "-w", "\n%{http_code}"]
        data = None
        if body is not None:
            data = body if isinstance(body, str) else json.dumps(body)
            argv += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        argv.append(url)
        try:
            proc = self.exec(ns, argv, timeout + 2.0, input=data)
        except subprocess.TimeoutExpired:
            return 0, None
        text, _, code = proc.stdout.rpartition("\n")
        status = int(code) if code.strip().isdigit() else 0
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def zk_command(
        self, command: str = "srvr", ns: str = "fln1", timeout: float = 2.0, *, server: str = ZK_NS
    ) -> str:
        """A ZooKeeper four-letter command sent from namespace ``ns`` to ``server`` (default
        flzk); '' when nothing answers. ``lab.zk`` asks every server, from its own namespace."""
        self._check_ns(server, ZK_SERVERS)
        argv = ["curl", "-s", "-m", f"{timeout:g}", f"telnet://{ADDRESSES[server]}:{ZK_PORT}"]
        try:
            return self.exec(ns, argv, timeout + 2.0, input=command).stdout
        except subprocess.TimeoutExpired:
            return ""

    def query(
        self, node: str, sql: str, *, dbname: str = "postgres", timeout: float = 2.0
    ) -> list[list[str]]:
        """Run ``sql`` with psql against the node's PostgreSQL (TCP to 127.0.0.1 inside its
        namespace); rows of text fields. Raises LabError when it fails or takes too long."""
        argv = [
            str(PG_BIN / "psql"), "-X", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-d", dbname, "-c", sql,
        ]  # fmt: skip
        try:
            proc = self.exec(self._node(node), argv, timeout, env={"PGCONNECT_TIMEOUT": "2"})
        except subprocess.TimeoutExpired:
            raise LabError(f"{node}: {sql!r} took more than {timeout:g} s") from None
        if proc.returncode != 0:
            raise LabError(f"{node}: {sql!r} failed: {proc.stderr.strip()}")
        return [line.split("\t") for line in proc.stdout.splitlines()]

    # -- observing ----------------------------------------------------------------------------

    def pid(self, node: str, component: str) -> int | None:
        """PID of a running component (``zookeeper`` on ``flzk``, ``flzk2`` and ``flzk3``;
        ``postgres`` (the postmaster), ``app``, ``squid``, ``sshd``, ``failoverd`` on a node);
        None when it is not running."""
        self._check_component(node, component)
        d = self.root / node
        if component == "postgres":
            data = d / "pg" / "data"
            pid = self._read_pid(data / "postmaster.pid")
            if pid is None:
                return None
            try:  # the postmaster chdirs to its data directory: a reused PID never matches
                ok = Path(os.readlink(f"/proc/{pid}/cwd")) == data.resolve()
            except OSError:
                ok = False
            return pid if ok else None
        marker = {
            "zookeeper": "QuorumPeerMain",
            "app": "lab.donations",
            "squid": "squid",
            "sshd": "sshd",
            "failoverd": "failoverd run",
        }[component]
        pid = self._read_pid(d / f"{component}.pid")
        if pid is None or marker not in _cmdline(pid):
            return None
        return pid

    def pids(self, node: str) -> set[int]:
        """Every live process of a node: its components, their descendants, and anything else
        running in its network namespace."""
        roots = {p for c in COMPONENTS[node] if (p := self.pid(node, c)) is not None}
        return _descendants(roots) | _pids_in_netns(node)

    def vip_holders(self, *, include_down_links: bool = False) -> list[str]:
        """The nodes that have the VIP configured on an interface that is up (at most one, if
        failoverd is right). A crashed node keeps its addresses on its downed ``eth0`` (the
        kernel does not drop them) but answers for none: it counts only with
        ``include_down_links=True``."""
        holders = []
        for node in NODES:
            if not self._ns_exists(node):
                continue
            proc = subprocess.run(
                ["ip", "-n", node, "-j", "addr", "show"],
                capture_output=True, text=True, timeout=5, check=False,
            )  # fmt: skip
            try:
                links = json.loads(proc.stdout or "[]")
            except ValueError:
                continue
            for link in links:
                if not include_down_links and "UP" not in link.get("flags", []):
                    continue
                if any(a.get("local") == VIP_IP for a in link.get("addr_info", [])):
                    holders.append(node)
                    break
        return holders

    def database_state(self, node: str, timeout: float = 1.0) -> str:
        """``primary``, ``replica (<wal receiver status>)`` or ``down`` (no answer within
        ``timeout``), asked over TCP to 127.0.0.1 inside the node's namespace."""
        if not self._ns_exists(node):
            return "down"
        query = (
            "SELECT pg_is_in_recovery(),"
            " coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')"
        )
        argv = [
            str(PG_BIN / "psql"), "-X", "-At", "-F", " ",
            "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-d", "postgres",
            "-c", query,
        ]  # fmt: skip
        try:
            proc = self.exec(node, argv, timeout, env={"PGCONNECT_TIMEOUT": "2"})
        except subprocess.TimeoutExpired:
            return "down"
        fields = proc.stdout.split()
        if proc.returncode != 0 or len(fields) != 2:
            return "down"
        return "primary" if fields[0] == "f" else f"replica ({fields[1]})"

    def database_states(self, timeout: float = 1.0) -> dict[str, str]:
        with ThreadPoolExecutor(max_workers=len(NODES)) as pool:
            futures = {n: pool.submit(self.database_state, n, timeout) for n in NODES}
            return {n: f.result() for n, f in futures.items()}

    def writable_primaries(self, timeout: float = 1.0) -> list[str]:
        """The nodes whose PostgreSQL answers ``pg_is_in_recovery() = false`` within
        ``timeout`` (at most one, if failoverd is right)."""
        return [n for n, s in self.database_states(timeout).items() if s == "primary"]

    # -- faults -------------------------------------------------------------------------------

    def crash(self, node: str) -> list[int]:
        """The node dies: its ``eth0`` goes down first (so nothing it had open says goodbye to
        the peer or ZooKeeper), then every process of the node is SIGKILLed: the daemon, every
        PostgreSQL process, the app, Squid, sshd and anything else in its namespace. Returns the
        PIDs killed. ``restore_link`` and ``up``/``start_component`` bring it back (see the
        module docstring: the daemon, not the lab, restarts PostgreSQL)."""
        node = self._node(node)
        self._ip(node, "link", "set", "dev", IFACE, "down")
        victims = _kill_all(lambda: self.pids(node))
        # A real crash ends in a reboot, after which postmaster.pid names no process; here the
        # killed postmaster may linger as a zombie and make PostgreSQL refuse to start. Its
        # System V segment would outlive it too: noted, for down() to remove.
        pid_file = self.pg_data_dir(node) / "postmaster.pid"
        with contextlib.suppress(OSError, IndexError, ValueError):
            shmid = int(pid_file.read_text().splitlines()[6].split()[1])
            with open(self.node_dir(node) / LEAKED_SHM, "a") as f:
                f.write(f"{shmid}\n")
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        return sorted(victims)

    def restore_link(self, node: str, *, drop_vip: bool = False) -> None:
        """Set the node's ``eth0`` up again (after ``crash``). The VIP, if the node held it
        when it crashed, is live again with it (a node that froze and came back) unless
        ``drop_vip`` removes it first (a node that rebooted: failoverd's addresses do not
        survive a reboot)."""
        node = self._node(node)
        if drop_vip and node in self.vip_holders(include_down_links=True):
            self._ip(node, "addr", "del", VIP, "dev", IFACE)
        self._ip(node, "link", "set", "dev", IFACE, "up")

    # A cut between two lab hosts is a blackhole route to the other's address in each one's
    # namespace: established connections hear nothing more, new ones fail at once. ``blackhole``
    # is one half of it (the other host's packets still arrive, but nothing goes back).

    def blackhole(self, ns: str, to: str) -> None:
        """A blackhole route to ``to``'s address inside ``ns``."""
        self._check_ns(ns, ADDRESSES)
        self._check_ns(to, ADDRESSES)
        self._ip(ns, "route", "replace", "blackhole", f"{ADDRESSES[to]}/32")

    def unblackhole(self, ns: str, to: str) -> None:
        """Remove that route (idempotent)."""
        if self.blackholed(ns, to):
            self._ip(ns, "route", "del", "blackhole", f"{ADDRESSES[to]}/32")

    def blackholed(self, ns: str, to: str) -> bool:
        self._check_ns(to, ADDRESSES)
        return ADDRESSES[to] in self._blackholes(ns)

    def cut(self, a: str, b: str) -> None:
        """Cut lab hosts ``a`` and ``b`` off from each other, both ways."""
        self.blackhole(a, b)
        self.blackhole(b, a)

    def uncut(self, a: str, b: str) -> None:
        """Remove the cut between ``a`` and ``b`` (idempotent; either half alone too)."""
        self.unblackhole(a, b)
        self.unblackhole(b, a)

    def cuts(self) -> dict[str, list[str]]:
        """{namespace: the lab hosts it has a blackhole route to}, for namespaces with any."""
        by_address = {a: ns for ns, a in ADDRESSES.items()}
        found = {}
        for ns in ADDRESSES:
            hosts = sorted(by_address[a] for a in self._blackholes(ns) if a in by_address)
            if hosts:
                found[ns] = hosts
        return found

    def heal_cuts(self) -> None:
        """Remove every blackhole route to a lab host in every lab namespace."""
        for ns, hosts in self.cuts().items():
            for to in hosts:
                self.unblackhole(ns, to)

    def partition_from_zk(self, node: str, servers: Iterable[str] | None = None) -> None:
        """Cut the node off from ZooKeeper only: from all three servers, or from ``servers``."""
        self.zk.cut_node(self._node(node), servers)

    def heal_zk(self, node: str) -> None:
        """Remove every cut between the node and a ZooKeeper server (idempotent)."""
        self.zk.heal_node(self._node(node))

    def partition_nodes(self) -> None:
        """Cut the two nodes off from each other (not from ZooKeeper or the client)."""
        self.cut(*NODES)

    def heal_nodes(self) -> None:
        """Remove the cut between the nodes (idempotent)."""
        self.uncut(*NODES)

    def repair(self, timeout: float = 90.0) -> list[str]:
        """Undo what a test's faults may have left behind, so that one failed test does not
        fail every later one on the same lab: cuts and downed links, ZooKeeper servers and node
        components that are down (not PostgreSQL: its daemon starts it), a paused cluster. Then
        wait until redundant. What it did, one line each; LabError when it cannot."""
        missing = [ns for ns in NAMESPACES if not self._ns_exists(ns)]
        if missing:
            raise LabError(f"the lab is not up: no namespace {', '.join(missing)}")
        done: list[str] = []
        if self.cuts():
            self.heal_cuts()
            done.append("removed the cuts")
        for node in NODES:
            self.heal_zk(node)
        st = self.status(failoverctl=False)
        for node, link in st.links.items():
            if link == "down":
                self.restore_link(node, drop_vip=True)  # as after a reboot
                done.append(f"{node}: link up again, without the VIP")
        for server in ZK_SERVERS:
            if not st.component(server, "zookeeper").up:
                self.start_zookeeper(server, wait_serving=False)
                done.append(f"{server}: ZooKeeper started")
        for node in NODES:
            for name in NODE_COMPONENTS:
                if name != "postgres" and not st.component(node, name).up:
                    self.start_component(node, name)
                    done.append(f"{node}: {name} started")
        self.zk.wait_serving(timeout=timeout)
        doc = self.cluster_status()
        if doc is not None and doc.get("paused"):
            resumed = self.failoverctl(NODES[0], "resume", timeout=30)
            done.append(f"failoverctl resume: exit {resumed.returncode}")
        self.wait_redundant(timeout)
        return done

    def start_zookeeper(self, server: str, *, wait_serving: bool = True) -> None:
        """Start one ZooKeeper server if it is not running; until it serves (it needs a
        quorum), or with ``wait_serving=False`` only until its process answers."""
        self._check_ns(server, ZK_SERVERS)
        self._require_ns(server)
        self._role(
            server,
            "zookeeper",
            "start",
            extra_env={"ZK_WAIT": "serving" if wait_serving else "running"},
        )

    def signal_postgres(self, node: str, sig: signal.Signals) -> list[int]:
        """Send ``sig`` to the node's postmaster and every child of it (a hung server: SIGSTOP;
        SIGCONT wakes it). Returns the PIDs signalled; none when it is not running."""
        postmaster = self.pid(self._node(node), "postgres")
        if postmaster is None:
            return []
        victims = sorted(_descendants({postmaster}))
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return victims

    def freeze_daemon(self, node: str) -> int:
        """SIGSTOP the node's failoverd (a hung daemon: its ZooKeeper session lives on until the
        server expires it). Returns its PID."""
        return self._signal_daemon(node, signal.SIGSTOP)

    def thaw_daemon(self, node: str) -> int:
        """SIGCONT the node's failoverd."""
        return self._signal_daemon(node, signal.SIGCONT)

    def stop_component(self, node: str, name: str) -> None:
        """Stop one component by its role script (SIGTERM by PID, bounded wait, SIGKILL;
        PostgreSQL: a fast shutdown)."""
        self._check_component(node, name)
        self._stop(node, name)

    def start_component(self, node: str, name: str) -> None:
        """Start one component by its role script if it is not running (``postgres`` included:
        an explicit request overrides the daemon's ownership; see the module docstring)."""
        self._check_component(node, name)
        self._require_ns(node)
        if name == "failoverd":
            (self.node_dir(node) / OWNED_MARKER).touch()
        self._start(node, name)

    # -- internals ----------------------------------------------------------------------------

    def _step(self, text: str) -> None:
        self._log(f"[{time.monotonic() - self._t0:5.1f}s] {text}")

    @staticmethod
    def _check_ns(ns: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        if ns not in allowed:
            raise ValueError(f"unknown lab namespace {ns!r} (expected one of {', '.join(allowed)})")

    def _node(self, node: str) -> str:
        self._check_ns(node, NODES)
        return node

    def _check_component(self, node: str, component: str) -> None:
        self._check_ns(node, COMPONENTS)
        if component not in COMPONENTS[node]:
            raise ValueError(
                f"{node} runs no {component!r} (it runs {', '.join(COMPONENTS[node])})"
            )

    @staticmethod
    def _ns_exists(ns: str) -> bool:
        return Path(f"/run/netns/{ns}").exists()

    def _require_ns(self, ns: str) -> None:
        if not self._ns_exists(ns):
            raise LabError(f"namespace {ns} does not exist: run `lab/lab up` first")

    @staticmethod
    def _in_netns(pid: int, ns: str) -> bool:
        want = netns_id(f"/run/netns/{ns}")
        return want is not None and netns_id(f"/proc/{pid}/ns/net") == want

    @staticmethod
    def _read_pid(path: Path) -> int | None:
        try:
            first = path.read_text().split("\n", 1)[0].strip()
        except OSError:
            return None
        if not first.isdigit():
            return None
        pid = int(first)
        return pid if _alive(pid) else None

    @staticmethod
    def _require_root() -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, PostgreSQL as postgres, sshd)")

    def _preflight(self) -> None:
        self._require_root()
        missing = [
            str(p)
            for p in (
                self.failoverd_bin, self.failoverctl_bin, self.venv / "bin" / "python",
                PG_BIN / "initdb", PG_BIN / "pg_basebackup", PG_BIN / "psql",
                Path("/usr/sbin/sshd"), Path("/usr/sbin/squid"),
                Path("/usr/share/java/zookeeper.jar"),
            )
            if not p.exists()
        ]  # fmt: skip
        missing += [
            c
            for c in ("ip", "java", "curl", "ssh-keygen", "runuser", "setsid")
            if not shutil.which(c)
        ]
        if missing:
            raise LabError(f"missing: {', '.join(missing)}")

    def _prepare_dirs(self) -> None:
        for d in (self.root, *(self.root / ns for ns in COMPONENTS)):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)  # PostgreSQL and Squid run as other users: they must get through
        for parent in self.root.parents:  # ... every directory on the way, too
            if parent.stat().st_mode & 0o001 == 0:
                raise LabError(f"{parent} is not searchable by other users: choose another root")

    def _env(self, ns: str, component: str) -> dict[str, str]:
        env = {
            "PATH": SYSTEM_PATH,
            "LC_ALL": "C",
            "HOME": "/root",
            "REPO": str(REPO),
            "VENV": str(self.venv),
            "PYTHONPATH": str(REPO),
            "LAB_VENV": str(self.venv),  # the daemons' power switch is lab/lab
        }
        if component == "network":
            env["LAB_HOSTS"] = " ".join(f"{n}={a}" for n, a in ADDRESSES.items())
            env |= {
                "LAB_PREFIX": str(PREFIX),
                "LAB_SWITCH": SWITCH,
                "LAB_BRIDGE": BRIDGE,
                "LAB_IFACE": IFACE,
            }
            return env
        env |= {"LAB_DIR": str(self.root / ns), "ADDR": ADDRESSES[ns]}
        if ns in ZK_SERVERS:
            env |= {
                "ZK_PORT": str(ZK_PORT),
                "ZK_DATA_DIR": str(self.zk_data_dir / ns),
                "ZK_MIN_SESSION_MS": str(PROFILE_ZK_MIN_SESSION_MS[self.profile]),
                "ZK_MAX_SESSION_MS": str(ZK_MAX_SESSION_MS),
                "ZK_SERVERS": server_spec(),
                "ZK_MYID": str(MYID[ns]),
                "ZK_QUORUM_PORT": str(QUORUM_PORT),
                "ZK_ELECTION_PORT": str(ELECTION_PORT),
            }
            return env
        peer = next(n for n in NODES if n != ns)
        peer_ssh = self.root / peer / "ssh"
        env |= {
            "NODE": ns,
            "PEER": peer,
            "PEER_ADDR": ADDRESSES[peer],
            "PG_ROLE": "primary" if ns == INITIAL_PRIMARY else "replica",
            "PG_PORT": str(PG_PORT),
            "PG_DB": PG_DB,
            "PG_BIN": str(PG_BIN),
            "TRUST_NET": LAB_NET,
            "APP_PORT": str(APP_PORT),
            "SQUID_PORT": str(SQUID_PORT),
            "SSH_PORT": str(SSH_PORT),
            "PEER_CLIENT_KEY": str(peer_ssh / "id_ed25519.pub"),
            "PEER_HOST_KEY": str(peer_ssh / "ssh_host_ed25519_key.pub"),
            "CLUSTER": CLUSTER,
            "CHROOT": CHROOT,
            "ZK_HOSTS": ZK_HOSTS,
            "VIP": VIP,
            "VIP_IFACE": IFACE,
            "METRICS_ENABLED": "true" if _daemon_serves_metrics() else "false",
            "METRICS_PORT": str(METRICS_PORT),
            "REPLICATION_MODE": self.replication_mode,
            **PROFILES[self.profile],
            # sshd gives a forced command a clean environment: name the checkout there too.
            "FENCE_COMMAND": self.fence_command(ns),
        }
        return env

    def _role(
        self,
        ns: str,
        component: str,
        action: str,
        *,
        netns: bool = True,
        timeout: float = 90.0,
        extra_env: dict[str, str] | None = None,
    ) -> str:
        """Run ``lab/roles/<component>.sh <action>`` (inside ``ns`` when it exists and
        ``netns``); returns its output, raises LabError with it on failure."""
        script = ROLES / f"{component}.sh"
        argv = ["bash", str(script), action]
        if netns and self._ns_exists(ns):
            argv = ["ip", "netns", "exec", ns, *argv]
        elif netns and action not in ("stop", "status"):
            raise LabError(f"{ns} {component} {action}: namespace {ns} does not exist")
        env = self._env(ns, component) | (extra_env or {})
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd="/",
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{ns} {component} {action}: no result within {timeout:g} s") from None
        out = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0:
            raise LabError(f"{ns} {component} {action} failed (exit {proc.returncode}):\n{out}")
        last = out.splitlines()[-1] if out else "done"
        self._step(f"{ns:<5} {component:<9} {action}: {last.split(': ', 1)[-1]}")
        return out

    def _start(self, ns: str, component: str) -> str:
        if component == "failoverd":
            (self.root / ns / OWNED_MARKER).touch()
        return self._role(ns, component, "start")

    def _stop(self, ns: str, component: str, *, stop_timeout: float | None = None) -> str:
        extra = {"PG_STOP_MODE": "fast"} if component == "postgres" else {}
        if stop_timeout is not None:
            extra["STOP_TIMEOUT"] = f"{stop_timeout:g}"
        return self._role(ns, component, "stop", extra_env=extra)

    def _start_monitoring(self) -> None:
        try:
            self.monitoring.up()
        except MonitoringError as e:
            raise LabError(str(e)) from None

    def _stop_monitoring(self) -> None:
        try:
            self.monitoring.down()
        except MonitoringError as e:
            raise LabError(str(e)) from None

    def _start_databases(self) -> None:
        for node in sorted(NODES, key=lambda n: n != INITIAL_PRIMARY):  # the primary first
            if (self.root / node / OWNED_MARKER).exists():
                if self.pid(node, "postgres") is None:
                    self._step(
                        f"{node:<5} postgres  left alone: owned by its failoverd, which "
                        "restarts it (start_component to start it by hand)"
                    )
                continue
            self._role(node, "postgres", "start")

    def _network(self, action: str) -> str:
        # The one role script that runs in the host's namespace: it only creates, configures
        # and deletes lab namespaces, every `ip` command with `-n NAMESPACE`.
        return self._role("host", "network", action, netns=False, timeout=30.0)

    def _gather(self, futures: Sequence[Future[Any]]) -> None:
        errors = self._collect(futures)
        if errors:
            raise LabError("lab up failed:\n" + "\n\n".join(errors))

    @staticmethod
    def _collect(futures: Sequence[Future[Any]]) -> list[str]:
        errors = []
        for f in futures:
            try:
                f.result()
            except LabError as e:
                errors.append(str(e))
        return errors

    def _ip(self, node: str, *args: str) -> None:
        self._require_ns(node)
        proc = subprocess.run(
            ["ip", "-n", node, *args], capture_output=True, text=True, timeout=10, check=False
        )
        if proc.returncode != 0:
            raise LabError(f"ip -n {node} {' '.join(args)}: {proc.stderr.strip()}")

    def _link_state(self, node: str) -> str:
        if not self._ns_exists(node):
            return "absent"
        proc = subprocess.run(
            ["ip", "-n", node, "-j", "link", "show", "dev", IFACE],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
        try:
            flags = json.loads(proc.stdout)[0].get("flags", [])
        except (ValueError, IndexError):
            return "absent"
        return "up" if "UP" in flags else "down"

    def _partitioned(self, node: str) -> bool:
        """The node cannot reach any ZooKeeper server."""
        holes = self._blackholes(node)
        return all(ADDRESSES[s] in holes for s in ZK_SERVERS)

    def _blackholes(self, ns: str) -> set[str]:
        """The addresses ``ns`` has a blackhole route to (host routes: the lab adds no others)."""
        if not self._ns_exists(ns):
            return set()
        proc = subprocess.run(
            ["ip", "-n", ns, "route", "show", "type", "blackhole"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
        return {
            fields[1].removesuffix("/32")
            for line in proc.stdout.splitlines()
            if len(fields := line.split()) > 1 and fields[0] == "blackhole"
        }

    def _signal_daemon(self, node: str, sig: signal.Signals) -> int:
        pid = self.pid(self._node(node), "failoverd")
        if pid is None:
            raise LabError(f"failoverd is not running on {node}")
        os.kill(pid, sig)
        return pid

    def _remove_run_sshd(self) -> None:
        """/run/sshd, if the lab made it (sshd.sh leaves a marker) and no sshd runs any more
        (another sshd on the host may have come to rely on it since)."""
        if not any((self.root / n / "created-run-sshd").exists() for n in NODES):
            return
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _alive(int(entry.name)):
                argv0 = _cmdline(int(entry.name)).split(" ", 1)[0]
                if argv0 == "sshd:" or Path(argv0).name == "sshd":
                    return
        with contextlib.suppress(OSError):
            Path("/run/sshd").rmdir()

    def _remove_leaked_shm(self) -> None:
        """The System V segments of servers crash() killed, if nothing is attached any more."""
        ids: set[int] = set()
        for node in NODES:
            with contextlib.suppress(OSError):
                ids |= {int(x) for x in (self.root / node / LEAKED_SHM).read_text().split()}
        if not ids:
            return
        try:
            table = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
        except OSError:
            return
        for row in table:
            cols = row.split()  # key shmid perms size cpid lpid nattch ...
            if len(cols) > 6 and int(cols[1]) in ids and cols[6] == "0":
                subprocess.run(["ipcrm", "-m", cols[1]], capture_output=True, check=False)


def _daemon_serves_metrics() -> bool:
    """Whether this build has a metrics endpoint (failoverd/metrics.py); until then the
    generated configs say ``enabled = false``."""
    try:
        return importlib.util.find_spec("failoverd.metrics") is not None
    except (ImportError, ValueError):
        return False


# -- command line (lab/lab) -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lab/lab",
        description="The failoverd two-node lab in network namespaces (run as root).",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("LAB_ROOT", DEFAULT_ROOT)),
        help=f"lab directory (default $LAB_ROOT or {DEFAULT_ROOT})",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = up = sub.add_parser("up", help="bring up whatever is not running (idempotent)")
    p.add_argument(
        "--mode",
        choices=SYNC_MODES,
        help="[replication] mode of both daemons (default: the lab's, "
        f"{LAB_REPLICATION_MODE} on a new lab); a running lab is switched to it",
    )
    p.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        help="timings (lab/profiles.py): default, or fast (0.5 s ZooKeeper session); a lab up "
        "in another profile must be taken down first",
    )
    p.add_argument(
        "--systemd",
        action="store_true",
        help="fln1 and fln2 as booted Debian containers, installed by scripts/install-node "
        "(lab/containers.py)",
    )
    p = sub.add_parser(
        "mode",
        help="print the replication mode, or switch a running lab to MODE (both configs "
        "rewritten, the daemons restarted one at a time, the passive first)",
    )
    p.add_argument("mode", nargs="?", choices=SYNC_MODES)
    p.add_argument("--timeout", type=float, default=120.0, help="per restart (default 120 s)")
    up.add_argument(
        "--monitoring",
        action="store_true",
        help="also Prometheus, Alertmanager and a webhook receiver in flcli (lab/monitoring.py)",
    )
    p = sub.add_parser(
        "monitoring",
        help="Prometheus (:9090), Alertmanager (:9093) and the webhook receiver (:9099) in flcli",
    )
    p.add_argument("action", choices=("up", "down", "status", "pages"))
    sub.add_parser("down", help="stop everything, delete the namespaces and the lab directory")
    p = sub.add_parser("status", help="what runs where, VIP, databases, failoverctl status")
    p.add_argument("--json", action="store_true", help="machine-readable (no failoverctl)")
    for name, text in (
        ("start", "start one component"),
        ("stop", "stop one component"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("node", choices=list(COMPONENTS))
        p.add_argument("component", choices=sorted({c for cs in COMPONENTS.values() for c in cs}))
    for name, text in (
        ("crash", "SIGKILL every process of a node and set its link down"),
        ("restore-link", "set a node's eth0 up again"),
        ("heal", "remove every cut between a node and the ZooKeeper servers"),
        ("freeze", "SIGSTOP the node's failoverd"),
        ("thaw", "SIGCONT the node's failoverd"),
        ("zk-session", "the ZooKeeper server the node's daemon session is connected to"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("node", choices=list(NODES))
    p = sub.add_parser("partition", help="cut a node off from the ZooKeeper servers")
    p.add_argument("node", choices=list(NODES))
    p.add_argument(
        "--from", dest="servers", action="append", choices=list(ZK_SERVERS),
        help="only from this server (repeatable; default all three)",
    )  # fmt: skip
    sub.add_parser("heal-all", help="remove every cut in the lab (nodes and ZooKeeper servers)")
    sub.add_parser("zk-leader", help="print the ZooKeeper server that leads (exit 1: none)")
    for name, text in (
        ("zk-kill", "SIGKILL one ZooKeeper server"),
        ("zk-heal", "remove every cut of one ZooKeeper server"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("server", choices=list(ZK_SERVERS))
    for name, text in (
        ("zk-stop", "stop one ZooKeeper server (SIGTERM), or all of them"),
        ("zk-start", "start one ZooKeeper server, or all of them, and wait until they serve"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("server", choices=[*ZK_SERVERS, "all"])
    p = sub.add_parser(
        "zk-isolate", help="cut a ZooKeeper server off from the other two (and from nodes)"
    )
    p.add_argument("server", choices=list(ZK_SERVERS))
    p.add_argument(
        "--node", dest="nodes", action="append", choices=list(NODES), default=[],
        help="also from this node (repeatable)",
    )  # fmt: skip
    p = sub.add_parser("zk-move", help="move a node's daemon session to a ZooKeeper server")
    p.add_argument("node", choices=list(NODES))
    p.add_argument("server", choices=list(ZK_SERVERS))
    p = sub.add_parser("exec", help="run a command inside a lab namespace")
    p.add_argument("ns", choices=list(NAMESPACES))
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("enter", help="run a command inside a node's container (--systemd lab)")
    p.add_argument("node", choices=list(NODES))
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("failoverctl", help="failoverctl with a node's config, in its namespace")
    p.add_argument("node", choices=list(NODES))
    p.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    lab = Lab(args.root, log=None if args.quiet else say)
    # The systemd tier (lab/containers.py) runs on this lab's network and ZooKeeper.
    from lab.containers import SystemdLab  # noqa: PLC0415 (it imports this module)

    containers = SystemdLab(lab)
    try:
        match args.command:
            case "up" if args.systemd:
                if args.mode is not None:
                    parser.error("--mode: the systemd lab runs its own configuration (sync)")
                containers.up()
            case "down" if containers.is_systemd_lab() or containers.leftovers():
                containers.down()
            case "status" if containers.is_systemd_lab() and not args.json:
                print("\n".join(containers.status_lines()))
                st = lab.status()
                print(st.render(), end="")
                return 0
            case "enter":
                if not args.argv:
                    parser.error("enter: which command?")
                proc = containers.run(args.node, args.argv, timeout=600.0)
                sys.stdout.write(proc.stdout)
                sys.stderr.write(proc.stderr)
                return proc.returncode
            case "up":
                lab.up(replication_mode=args.mode, monitoring=args.monitoring, profile=args.profile)
            case "monitoring":
                return monitoring_command(lab.monitoring, args.action)
            case "mode":
                if args.mode is not None:
                    lab.set_replication_mode(args.mode, timeout=args.timeout)
                print(lab.replication_mode)
            case "down":
                lab.down()
            case "status":
                if args.json:
                    st = lab.status(failoverctl=False)
                    print(json.dumps(_status_json(st), indent=2))
                    return 0 if st.all_up else 1
                st = lab.status()
                print(st.render(), end="")
                return 0 if st.all_up else 1
            case "start":
                lab.start_component(args.node, args.component)
            case "stop":
                lab.stop_component(args.node, args.component)
            case "crash":
                say(f"killed {lab.crash(args.node)}")
            case "restore-link":
                lab.restore_link(args.node)
            case "partition":
                lab.partition_from_zk(args.node, args.servers)
            case "heal":
                lab.heal_zk(args.node)
            case "heal-all":
                lab.heal_cuts()
            case "zk-leader":
                leader = lab.zk.leader()
                print(leader or "none")
                return 0 if leader else 1
            case "zk-kill":
                say(f"killed {args.server} (pid {lab.zk.kill(args.server)})")
            case "zk-stop":
                if args.server == "all":
                    lab.zk.stop_all()
                else:
                    lab.zk.stop(args.server)
            case "zk-start":
                if args.server == "all":
                    say(f"{lab.zk.start_all()} leads")
                else:
                    lab.zk.start(args.server)
            case "zk-isolate":
                lab.zk.isolate(args.server, args.nodes)
            case "zk-heal":
                lab.zk.heal_server(args.server)
            case "zk-session":
                server = lab.zk.server_of(args.node)
                print(server or "none")
                return 0 if server else 1
            case "zk-move":
                took = lab.zk.move_session(args.node, args.server)
                say(f"{args.node}'s session on {args.server} ({took:.2f} s)")
            case "freeze":
                lab.freeze_daemon(args.node)
            case "thaw":
                lab.thaw_daemon(args.node)
            case "exec":
                if not args.argv:
                    parser.error("exec: which command?")
                return subprocess.run(
                    ["ip", "netns", "exec", args.ns, *args.argv], check=False
                ).returncode
            case "failoverctl":
                proc = lab.failoverctl(args.node, *args.args, timeout=60.0)
                sys.stdout.write(proc.stdout)
                sys.stderr.write(proc.stderr)
                return proc.returncode
    except (LabError, ZooKeeperFaultError, MonitoringError, ValueError) as e:
        print(f"lab: error: {e}", file=sys.stderr)
        return 1
    return 0


def _status_json(st: LabStatus) -> dict[str, Any]:
    return {
        "root": str(st.root),
        "up": st.all_up,
        "namespaces": st.namespaces,
        "components": [
            {"namespace": c.namespace, "name": c.name, "pid": c.pid, "in_namespace": c.in_namespace}
            for c in st.components
        ],
        "vip_holders": st.vip_holders,
        "databases": st.databases,
        "links": st.links,
        "partitioned": st.partitioned,
        "cuts": st.cuts,
        "replication_mode": st.replication_mode,
        "zookeeper": st.zookeeper,
        "zk_sessions": st.zk_sessions,
        "monitoring": st.monitoring,
    }


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `lab/lab status | head`
        sys.stderr.close()
        sys.exit(1)

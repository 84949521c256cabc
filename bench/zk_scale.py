"""Many clusters on one ZooKeeper ensemble: what N two-daemon clusters cost the ensemble and
the host, how fast one of them fails over while the others run, and whether killing the
ZooKeeper leader under all of them makes any fail over.

    python bench/zk_scale.py --clusters N [--ensemble loopback|lab] [--seconds S]
                             [--failover-runs R] [--leader-kills K] [--observe S]
                             [--batch B] [--session T] [--failsafe] [--json] [--keep]

Every cluster is two real daemons (``failoverd run``) on loopback addresses of their own
(cluster i: 127.(1 + i // 256).(i % 256).1 and .2), with their own name and chroot
(/failoverd/scale-007), no VIP and no database (no [postgres]: unmanaged), one command check
(``true``, every 0.5 s), no metrics endpoint and, unless --failsafe, no failsafe, so a daemon
binds no port (with --failsafe, each its pledge port on its own address, one secret for all,
pledge_ttl = the session timeout); timings as in the lab (session timeout 2 s, --session).
Fencing: these nodes run no sshd and have no key, so the SSH level fails at once and the power
level fences; its command is ``true`` (a loopback node holds nothing a power switch would have
to take away; the benchmark itself kills the daemon it fails over from).

--ensemble loopback (the default): a three-server ensemble on 127.0.0.1 with the namespace
lab's zoo.cfg timing (lab/zookeeper.py's LoopbackEnsemble with LAB_TIMING), random ports, a temp
dir, stopped by PID at the end. --ensemble lab: the running namespace lab's three servers
(10.77.0.5-7:2181; `lab/lab up` first, as root). The host cannot reach them, so the benchmark
runs itself again inside the lab's client namespace (flcli), daemons included; the leader is
found and killed and restarted through lab/ensemble.py (the lab's own two daemons see those
kills too, as in its zk-leader scenario). Everything else is the same code.

Steps: start the clusters in batches of --batch (default 5), each batch until every cluster in
it has a lease holder; wait (bounded) until every cluster has one active and one passive node,
naming those that never do. Then:
- steady window (--seconds, default 20): ZooKeeper requests per second, in total and per
  cluster, from every server's ``mntr`` at both ends of the window, summed over the servers:
  zk_packets_received (every client request, pings included), zk_cnt_readlatency (requests
  answered locally: reads, pings included) and zk_cnt_updatelatency (requests through the
  quorum: writes); and the CPU (% of one core: utime + stime of the process and of its reaped
  children, the check commands, from /proc/PID/stat), memory (VmRSS) and threads of the
  daemons (median, max, total), of the ZooKeeper servers (total), and the host's CPU
  (/proc/stat; 100 % a core);
- failover of cluster 0 while the others run (--failover-runs, default 3): SIGKILL its active
  daemon, time until the other node holds the lease and its record says active; restart the
  killed daemon and wait until it is passive again;
- leader kill (--leader-kills, default 3): SIGKILL the ZooKeeper leader (srvr/mntr say which),
  watch every cluster's lease for --observe seconds (default 15), count lease holder changes
  (failovers; target 0), leases that went away, epochs the leases advanced by, and the most
  threads a daemon has at the end; then restart the server and wait until all three serve.

The benchmark stops itself (and everything it started) when the host's threads pass half of
pid_max: in a ZooKeeper reconnect storm the daemons' threads multiply (kazoo's DataWatch starts
a thread for every watch at every reconnect, each retrying without end behind one lock while
the connection flaps), and here at 50 clusters that once used up every PID on the machine.

Prints a table; with --json, one JSON object instead: {"ensemble", "clusters", "daemons",
"session_timeout_s", "startup_s", "clusters_without_active": [...], "window_s",
"zk_requests_per_s", "zk_requests_per_s_per_cluster", "zk_reads_per_s", "zk_writes_per_s",
"zk_connections" (the benchmark's own observer and mntr connections included), "zk_znodes",
"zk_watches", "daemon_cpu_percent": {"median", "max", "total"}, "daemon_rss_mb": {...},
"daemon_threads": {...}, "zookeeper_cpu_percent", "zookeeper_rss_mb", "host_cpu_percent",
"failover_s": [...], "failover_median_s", "leader_kills": [{"server", "election_s", "failovers",
"leases_lost", "epochs_advanced", "daemon_threads_max"}], "leader_kill_failovers"}. Daemon logs
and configs are under a temp dir (kept with --keep, and named at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.recipe.watchers import DataWatch

from bench.zk_scale_report import (
    COUNTERS,
    GAUGES,
    Window,
    build_report,
    count_failovers,
    counter_rate,
    cpu_percent,
    cpu_ticks,
    epochs_advanced,
    gauge_max,
    gauge_sum,
    host_ticks,
    leases_lost,
    parse_mntr,
    render_table,
    rounded,
    status_number,
    task_count,
)
from failoverd.zk.errors import MalformedRecord
from failoverd.zk.records import lease_from_json, member_from_json
from lab.cluster import CLIENT_NS, ZK_HOSTS, Lab, LabError, netns_id
from lab.ensemble import SERVERS
from lab.loopback import BIN, DaemonProcess, write_config
from lab.process import wait_for
from lab.sshd import stand_in_fencing
from lab.zookeeper import LAB_TIMING, LoopbackEnsemble, QuorumServer, ZooKeeperError

NODE_NAMES = ("n1", "n2")
SESSION_TIMEOUT = 2.0  # the lab's
# The lab's other timings that differ from the test defaults write_config starts from.
LAB_TIMINGS = {"min_failover_interval": 5.0, "start_timeout": 5.0}
CHECK_INTERVAL = 0.5  # the lab's checks
BATCH_LEASE_TIMEOUT = 60.0  # seconds for a started batch to have its lease holders
FAILOVER_TIMEOUT = 30.0
REJOIN_TIMEOUT = 30.0
SERVING_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0  # for all daemons together, after SIGTERM; SIGKILL after
READ_TIMEOUT = 5.0
TASK_SHARE = 0.5  # of pid_max: the host's threads past which the benchmark stops itself
REEXEC_MARK = "FAILOVERD_ZK_SCALE_IN_FLCLI"
# -- the ensemble under test ----------------------------------------------------------------------


class ZooKeeperUnderTest(Protocol):
    """The three servers the clusters share: what the benchmark asks of them and does to them."""

    @property
    def hosts(self) -> str:
        """The connect string naming all three."""
        ...

    @property
    def servers(self) -> tuple[str, ...]: ...

    def mntr(self, server: str) -> str:
        """The server's ``mntr`` answer; '' when it does not answer."""
        ...

    def leader(self) -> str | None: ...

    def kill(self, server: str) -> None:
        """SIGKILL the server."""
        ...

    def start(self, server: str) -> None:
        """Start the killed server again and wait until all three serve."""
        ...

    def pids(self) -> dict[str, int]: ...

    def close(self) -> None:
        """Leave the ensemble as it was found (loopback: stopped; lab: all three running)."""
        ...


class LoopbackZooKeeper:
    """A loopback ensemble of our own, with the lab's timing; stopped by PID in ``close``."""

    def __init__(self, base_dir: Path) -> None:
        self.ensemble = LoopbackEnsemble(base_dir, LAB_TIMING)
        self.ensemble.start()
        self.hosts = self.ensemble.hosts
        self.servers = tuple(f"zk{sid}" for sid in self.ensemble.servers)

    def _server(self, name: str) -> QuorumServer:
        return self.ensemble.servers[int(name.removeprefix("zk"))]

    def mntr(self, server: str) -> str:
        try:
            return self._server(server).four_letter("mntr")
        except OSError:
            return ""

    def leader(self) -> str | None:
        modes = self.ensemble.modes()
        leaders = [sid for sid, mode in modes.items() if mode == "leader"]
        return f"zk{leaders[0]}" if len(leaders) == 1 else None

    def kill(self, server: str) -> None:
        self._server(server).kill()

    def start(self, server: str) -> None:
        self._server(server).spawn()
        if not wait_for(self.ensemble.settled, SERVING_TIMEOUT, step=0.1):
            raise ZooKeeperError(
                f"{server} restarted, but the ensemble does not serve: {self.ensemble.modes()}"
            )

    def pids(self) -> dict[str, int]:
        return {f"zk{sid}": s.pid for sid, s in self.ensemble.servers.items() if s.pid is not None}

    def close(self) -> None:
        self.ensemble.stop()


class LabZooKeeper:
    """The running namespace lab's ensemble (lab/ensemble.py); left with all three running."""

    def __init__(self, root: Path) -> None:
        # The venv running this is the one whose failoverd the daemons run; the lab's role
        # scripts only start ZooKeeper here, which needs none.
        self.lab = Lab(root, venv=Path(sys.prefix))
        self.hosts = ZK_HOSTS
        self.servers = SERVERS
        self.lab.zk.wait_serving(timeout=10.0)

    def mntr(self, server: str) -> str:
        return self.lab.zk.four_letter(server, "mntr")

    def leader(self) -> str | None:
        return self.lab.zk.leader()

    def kill(self, server: str) -> None:
        self.lab.zk.kill(server)

    def start(self, server: str) -> None:
        # Running, then serving: under the load of many clusters a restarted server may take
        # longer than the role script's 35 s to sync with the leader (initLimit is 1 s here, so
        # it retries), and the script would stop it again.
        for attempt in range(3):  # bounded: a JVM started on a saturated host may hang
            try:
                self.lab.zk.start(server, wait=False)
                break
            except LabError as e:
                if attempt == 2:
                    raise
                print(f"zk_scale: starting {server} again: {e}", file=sys.stderr)
        self.lab.zk.wait_serving(timeout=SERVING_TIMEOUT)

    def pids(self) -> dict[str, int]:
        return {s: pid for s in self.servers if (pid := self.lab.pid(s, "zookeeper")) is not None}

    def close(self) -> None:
        if any(self.lab.pid(s, "zookeeper") is None for s in self.servers):
            self.lab.zk.start_all(timeout=SERVING_TIMEOUT)


# -- the clusters ---------------------------------------------------------------------------------


def member_addresses(index: int) -> dict[str, str]:
    """Cluster ``index``'s own loopback addresses, one per node, unlike any other cluster's."""
    net = f"127.{1 + index // 256}.{index % 256}"
    return {name: f"{net}.{i}" for i, name in enumerate(NODE_NAMES, start=1)}


def node_config_extra(
    failsafe: FailsafeFiles | None = None,
    node: str = "",
    fencing_files: tuple[Path, Path] | None = None,
) -> str:
    """The tables every scale node has on top of write_config's: fencing and one check, and
    the failsafe (each node its own store, one secret for all) when asked for.
    ``fencing_files``: stand-in (identity, known_hosts) so that check-config's file checks
    pass; the SSH level reaches nothing either way."""
    pledges = ""
    if failsafe is not None:
        pledges = (
            "\n[failsafe]\nenabled = true\n"
            f'secret_file = "{failsafe.secret}"\n'
            f'store_dir = "{failsafe.store_dir(node)}"\n'
            f"pledge_ttl = {failsafe.pledge_ttl}\n"
        )
    return pledges + (
        "\n[fencing]\n"
        "# No sshd on these loopback nodes (the keys are stand-ins): the SSH level fails at once\n"
        "# and the power level fences. A loopback node holds no VIP and no database.\n"
        'power_command = ["true"]\n'
        "power_timeout = 5.0\n"
        "check_interval = 0\n"
        + (
            ""
            if fencing_files is None
            else f'identity_file = "{fencing_files[0]}"\nknown_hosts = "{fencing_files[1]}"\n'
        )
        + "\n[checks.alive]\n"
        'type = "command"\n'
        'command = ["true"]\n'
        f"interval = {CHECK_INTERVAL}\n"
        "timeout = 1.0\n"
    )


@dataclass(frozen=True)
class FailsafeFiles:
    """The failsafe's secret (one for every cluster, mode 0600) and where each node keeps its
    promises; pledge_ttl is the session timeout, the least check-config takes."""

    secret: Path
    stores: Path
    pledge_ttl: float

    @classmethod
    def create(cls, workdir: Path, pledge_ttl: float) -> FailsafeFiles:
        secret = workdir / "failsafe.key"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(48))
        return cls(secret, workdir / "failsafe", pledge_ttl)

    def store_dir(self, node: str) -> Path:
        return self.stores / node


@dataclass
class ScaleCluster:
    """One two-daemon cluster of the benchmark: its configs, and its daemons while they run."""

    index: int
    configs: dict[str, Path]
    daemons: dict[str, DaemonProcess] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"scale-{self.index:03d}"

    @property
    def chroot(self) -> str:
        return f"/failoverd/{self.name}"

    def start(self, node: str) -> DaemonProcess:
        daemon = DaemonProcess(self.configs[node])
        self.daemons[node] = daemon
        return daemon

    def peer(self, node: str) -> str:
        return next(n for n in NODE_NAMES if n != node)


def make_cluster(
    index: int, workdir: Path, hosts: str, session: float, failsafe: FailsafeFiles | None = None
) -> ScaleCluster:
    directory = workdir / f"scale-{index:03d}"
    directory.mkdir(parents=True, exist_ok=True)
    cluster = ScaleCluster(index, {})
    fencing_files = stand_in_fencing(directory, sorted(set(member_addresses(index).values())))
    for node in NODE_NAMES:
        cluster.configs[node] = write_config(
            directory / f"{node}.toml",
            node,
            hosts,
            cluster.chroot,
            cluster=cluster.name,
            extra=node_config_extra(failsafe, f"{cluster.name}-{node}", fencing_files),
            session=session,
            addresses=member_addresses(index),
            timings=LAB_TIMINGS,
        )
    return cluster


def check_config(config: Path) -> str:
    """``failoverd check-config`` on one generated config (it also asks the ensemble for its
    timing); its notes, or RuntimeError with everything it said."""
    done = subprocess.run(
        [str(BIN / "failoverd"), "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"check-config {config} exited {done.returncode}:\n{done.stderr}")
    return done.stderr.strip()


# -- watching the clusters through ZooKeeper ------------------------------------------------------


@dataclass(frozen=True)
class ClusterState:
    """Who holds a cluster's lease (and its epoch) and what each member's record says."""

    holder: str | None
    epoch: int | None
    roles: dict[str, str | None]

    @property
    def redundant(self) -> bool:
        """One active holding the lease, the other passive."""
        if self.holder is None:
            return False
        other = next(n for n in self.roles if n != self.holder)
        return self.roles.get(self.holder) == "active" and self.roles.get(other) == "passive"


def _lease(data: bytes | None) -> tuple[str | None, int | None]:
    if not data:
        return None, None
    try:
        lease = lease_from_json(data)
    except MalformedRecord:
        return None, None
    return lease.node, lease.epoch


def _role(node: str, data: bytes | None) -> str | None:
    if not data:
        return None
    return getattr(member_from_json(node, data), "role", None)


class Observer:
    """One kazoo client of the benchmark's own: reads the clusters' records, and watches their
    leases so that a leader kill's failovers are seen as they happen."""

    def __init__(self, hosts: str) -> None:
        logging.getLogger("kazoo").setLevel(logging.CRITICAL)
        # A long session: the observer must outlive a leader kill without losing its watches.
        self.client = KazooClient(hosts=hosts, timeout=10.0)
        self.client.start(timeout=15.0)
        self._lock = threading.Lock()
        self.lease_log: dict[int, list[tuple[float, str | None, int | None]]] = {}
        self._watches: list[DataWatch] = []

    def read(self, paths: Sequence[str]) -> dict[str, bytes | None]:
        """Every path's data, asked all at once; None for a missing node or no answer."""
        pending = {p: self.client.get_async(p) for p in paths}
        out: dict[str, bytes | None] = {}
        for path, result in pending.items():
            try:
                out[path] = result.get(timeout=READ_TIMEOUT)[0]
            except (NoNodeError, KazooException, KazooTimeoutError):
                out[path] = None
        return out

    def states(self, clusters: Sequence[ScaleCluster]) -> dict[int, ClusterState]:
        paths = [f"{c.chroot}/lease" for c in clusters] + [
            f"{c.chroot}/members/{n}" for c in clusters for n in NODE_NAMES
        ]
        data = self.read(paths)
        out = {}
        for c in clusters:
            holder, epoch = _lease(data[f"{c.chroot}/lease"])
            roles = {n: _role(n, data[f"{c.chroot}/members/{n}"]) for n in NODE_NAMES}
            out[c.index] = ClusterState(holder, epoch, roles)
        return out

    def state(self, cluster: ScaleCluster) -> ClusterState:
        return self.states([cluster])[cluster.index]

    def watch_leases(self, clusters: Sequence[ScaleCluster]) -> None:
        """Log every change of every cluster's lease (time, holder, epoch) from now on."""
        for c in clusters:
            self.lease_log[c.index] = []
            seen = functools.partial(self._lease_seen, c.index)
            self._watches.append(DataWatch(self.client, f"{c.chroot}/lease", seen))

    def _lease_seen(self, index: int, data: bytes | None, _stat: Any, _event: Any = None) -> None:
        """DataWatch's callback (kazoo's thread): the lease is now ``data``."""
        holder, epoch = _lease(data)
        with self._lock:
            self.lease_log[index].append((time.monotonic(), holder, epoch))

    def leases_since(self, index: int, since: float) -> list[tuple[str | None, int | None]]:
        """The lease as it was at ``since`` and every change after it."""
        with self._lock:
            log = list(self.lease_log.get(index, []))
        before = [(h, e) for t, h, e in log if t < since][-1:]
        return before + [(h, e) for t, h, e in log if t >= since]

    def delete_tree(self, path: str) -> None:
        with contextlib.suppress(KazooException, KazooTimeoutError):
            self.client.delete(path, recursive=True)

    def close(self) -> None:
        with contextlib.suppress(KazooException, KazooTimeoutError):
            self.client.stop()
        self.client.close()


# -- sampling /proc -------------------------------------------------------------------------------


class TaskLimitError(RuntimeError):
    """The host is running out of threads: stop before other people's forks fail."""


def check_tasks() -> bool:
    """Raise TaskLimitError when the host's threads pass TASK_SHARE of pid_max (a ZooKeeper
    reconnect storm makes every daemon's kazoo start a thread per watch per reconnect, and at
    N = 50 here that used all of them); False otherwise, so that it can be polled."""
    tasks = task_count(Path("/proc/loadavg").read_text())
    limit = int(TASK_SHARE * int(Path("/proc/sys/kernel/pid_max").read_text()))
    if tasks > limit:
        raise TaskLimitError(f"{tasks} threads on the host, more than {limit}: stopping")
    return False


def pause(seconds: float) -> None:
    """Sleep, watching the host's thread count."""
    wait_for(check_tasks, seconds, step=0.5)


@dataclass(frozen=True)
class ProcSample:
    cpu_ticks: int
    rss_kb: int | None
    threads: int | None


def proc_sample(pids: Mapping[str, int]) -> dict[str, ProcSample]:
    """Every named process still there, from /proc."""
    out: dict[str, ProcSample] = {}
    for name, pid in pids.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        out[name] = ProcSample(
            cpu_ticks(stat), status_number(status, "VmRSS"), status_number(status, "Threads")
        )
    return out


def threads(samples: Iterable[ProcSample]) -> list[float]:
    return [float(s.threads) for s in samples if s.threads is not None]


def daemon_pids(clusters: Sequence[ScaleCluster]) -> dict[str, int]:
    return {
        f"{c.name}/{n}": d.pid
        for c in clusters
        for n, d in c.daemons.items()
        if d.proc.poll() is None
    }


# -- the steps ------------------------------------------------------------------------------------


Say = Callable[[str], None]


def all_hold_lease(observer: Observer, clusters: Sequence[ScaleCluster]) -> bool:
    return not check_tasks() and all(s.holder for s in observer.states(clusters).values())


def start_clusters(
    clusters: Sequence[ScaleCluster], observer: Observer, batch: int, say: Say
) -> None:
    """Both daemons of ``batch`` clusters at a time; the next batch once every cluster of this
    one has a lease holder (bounded), so that the start-ups (imports, sessions) do not pile up."""
    for first in range(0, len(clusters), batch):
        group = clusters[first : first + batch]
        for c in group:
            for node in NODE_NAMES:
                c.start(node)
        held = wait_for(
            functools.partial(all_hold_lease, observer, group), BATCH_LEASE_TIMEOUT, 0.2
        )
        say(
            f"started clusters {group[0].index}..{group[-1].index}"
            + ("" if held else f" (not all holding a lease after {BATCH_LEASE_TIMEOUT:g} s)")
        )


def wait_redundant(
    clusters: Sequence[ScaleCluster], observer: Observer, timeout: float
) -> list[str]:
    """Until every cluster has one active and one passive node (bounded); the names of those
    without an active node at the end."""
    last: dict[int, ClusterState] = {}

    def all_redundant() -> bool:
        nonlocal last
        check_tasks()
        last = observer.states(clusters)
        return all(s.redundant for s in last.values())

    wait_for(all_redundant, timeout, step=0.5)
    return [
        c.name
        for c in clusters
        if (s := last.get(c.index)) is None or s.holder is None or s.roles.get(s.holder) != "active"
    ]


def steady_window(
    clusters: Sequence[ScaleCluster], zk: ZooKeeperUnderTest, seconds: float
) -> Window:
    hz = os.sysconf("SC_CLK_TCK")
    daemons = daemon_pids(clusters)
    servers = zk.pids()

    def mntr_all() -> dict[str, dict[str, str]]:
        return {s: parse_mntr(zk.mntr(s)) for s in zk.servers}

    mntr_before = mntr_all()
    host_before = host_ticks(Path("/proc/stat").read_text())
    procs_before = proc_sample({**daemons, **servers})
    started = time.monotonic()
    pause(seconds)
    took = time.monotonic() - started
    procs_after = proc_sample({**daemons, **servers})
    host_after = host_ticks(Path("/proc/stat").read_text())
    mntr_after = mntr_all()

    def cpu(name: str) -> float | None:
        if name not in procs_before or name not in procs_after:
            return None
        return cpu_percent(procs_before[name].cpu_ticks, procs_after[name].cpu_ticks, took, hz)

    def rss(names: Iterable[str]) -> list[float]:
        return [float(r) for n in names if n in procs_after and (r := procs_after[n].rss_kb)]

    daemon_cpu = [v for n in daemons if (v := cpu(n)) is not None]
    zk_cpu = [v for n in servers if (v := cpu(n)) is not None]
    zk_rss = rss(servers)
    busy = host_after[0] - host_before[0]
    return Window(
        seconds=took,
        rates={k: counter_rate(mntr_before, mntr_after, key, took) for k, key in COUNTERS.items()},
        gauges={
            "connections": gauge_sum(mntr_after, GAUGES["connections"]),
            "znodes": gauge_max(mntr_after, GAUGES["znodes"]),
            "watches": gauge_sum(mntr_after, GAUGES["watches"]),
        },
        daemon_cpu=daemon_cpu,
        daemon_rss_kb=rss(daemons),
        daemon_threads=threads(procs_after[n] for n in daemons if n in procs_after),
        zookeeper_cpu=sum(zk_cpu) if zk_cpu else None,
        zookeeper_rss_kb=sum(zk_rss) if zk_rss else None,
        host_cpu=cpu_percent(0, busy, took, hz),
    )


def failover_once(cluster: ScaleCluster, observer: Observer, say: Say) -> float | None:
    """SIGKILL the cluster's active daemon; seconds until the peer holds the lease and says it
    is active (None: not within FAILOVER_TIMEOUT). Then the killed one is started again, and
    this returns once it is passive (bounded)."""
    before = observer.state(cluster)
    if not before.redundant or before.holder is None:
        say(f"{cluster.name} is not redundant before the failover: {before}")
        return None
    active = before.holder
    peer = cluster.peer(active)
    killed_at = time.monotonic()
    cluster.daemons[active].kill()

    def peer_active() -> bool:
        check_tasks()
        s = observer.state(cluster)
        return s.holder == peer and s.roles.get(peer) == "active"

    took = (
        time.monotonic() - killed_at if wait_for(peer_active, FAILOVER_TIMEOUT, step=0.02) else None
    )
    cluster.start(active)
    back = wait_for(lambda: observer.state(cluster).redundant, REJOIN_TIMEOUT, step=0.2)
    say(
        f"{cluster.name}: {active} killed, {peer} active after "
        + (f"{took:.2f} s" if took is not None else f"more than {FAILOVER_TIMEOUT:g} s")
        + ("" if back else f"; {active} not passive again within {REJOIN_TIMEOUT:g} s")
    )
    return took


def leader_kill(
    clusters: Sequence[ScaleCluster],
    observer: Observer,
    zk: ZooKeeperUnderTest,
    observe: float,
    say: Say,
) -> dict[str, Any]:
    """SIGKILL the ZooKeeper leader, watch every lease for ``observe`` seconds, restart it."""
    leader = zk.leader() or wait_for(zk.leader, SERVING_TIMEOUT, step=0.1)
    if leader is None:
        raise ZooKeeperError("no ZooKeeper leader to kill")
    killed_at = time.monotonic()
    zk.kill(leader)
    elected = wait_for(
        lambda: (new := zk.leader()) is not None and new != leader, SERVING_TIMEOUT, step=0.05
    )
    election = time.monotonic() - killed_at if elected else None
    pause(max(0.0, killed_at + observe - time.monotonic()))
    final = observer.states(clusters)
    samples = proc_sample(daemon_pids(clusters)).values()
    most_threads = max((p.threads for p in samples if p.threads is not None), default=None)
    failovers = lost = advanced = 0
    for c in clusters:
        seen = observer.leases_since(c.index, killed_at)
        seen.append((final[c.index].holder, final[c.index].epoch))
        failovers += count_failovers([h for h, _ in seen])
        lost += leases_lost([h for h, _ in seen])
        advanced += epochs_advanced([e for _, e in seen])
    zk.start(leader)
    say(
        f"ZooKeeper leader {leader} killed: new leader after "
        + (f"{election:.2f} s" if election is not None else "no election")
        + f"; over {observe:g} s {failovers} failovers, {lost} leases lost, epochs +{advanced}"
        + f"; a daemon's threads at most {most_threads}"
    )
    return {
        "server": leader,
        "election_s": rounded(election),
        "failovers": failovers,
        "leases_lost": lost,
        "epochs_advanced": advanced,
        "daemon_threads_max": most_threads,
    }


def stop_daemons(clusters: Sequence[ScaleCluster]) -> None:
    """SIGTERM to all at once (an active steps down cleanly), then SIGKILL whoever outlives
    STOP_TIMEOUT; by PID."""
    daemons = [d for c in clusters for d in c.daemons.values()]
    for d in daemons:
        d.signal(signal.SIGCONT)
        d.signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for d in daemons:
        if d.wait(max(0.1, deadline - time.monotonic())) is None:
            d.kill()


# -- running it -----------------------------------------------------------------------------------


def in_client_namespace() -> bool:
    """Whether this process runs in the lab's client namespace (flcli)."""
    want = netns_id(f"/run/netns/{CLIENT_NS}")
    return want is not None and netns_id("/proc/self/ns/net") == want


def reexec_in_client_namespace() -> None:
    """Run this command again inside flcli (``ip netns exec``), whence the lab's ZooKeeper is
    reachable; the daemons, the observer and check-config then all run there."""
    if netns_id(f"/run/netns/{CLIENT_NS}") is None:
        raise SystemExit(f"zk_scale: no {CLIENT_NS} namespace: is the lab up (`lab/lab up`)?")
    if os.environ.get(REEXEC_MARK):
        raise SystemExit(f"zk_scale: ran again in {CLIENT_NS}, but is not in it")
    script = str(Path(__file__).resolve())
    os.environ[REEXEC_MARK] = "1"
    os.execvp("ip", ["ip", "netns", "exec", CLIENT_NS, sys.executable, script, *sys.argv[1:]])


@contextlib.contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that every ``finally`` stops what it started."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace, workdir: Path, say: Say) -> dict[str, Any]:
    """Everything, in order; whatever was started is stopped by PID on the way out."""
    zk: ZooKeeperUnderTest | None = None
    observer: Observer | None = None
    clusters: list[ScaleCluster] = []
    try:
        if args.ensemble == "lab":
            zk = LabZooKeeper(args.lab_root)
        else:
            zk = LoopbackZooKeeper(workdir / "zookeeper")
        say(f"ZooKeeper ({args.ensemble}): {zk.hosts}, leader {zk.leader()}")
        observer = Observer(zk.hosts)
        failsafe = FailsafeFiles.create(workdir, args.session) if args.failsafe else None
        clusters = [
            make_cluster(i, workdir, zk.hosts, args.session, failsafe) for i in range(args.clusters)
        ]
        notes = check_config(clusters[0].configs["n1"])
        say("check-config: ok" + (f"; {notes}" if notes else ""))
        observer.watch_leases(clusters)
        started = time.monotonic()
        start_clusters(clusters, observer, args.batch, say)
        without_active = wait_redundant(clusters, observer, args.settle)
        startup = time.monotonic() - started
        say(
            f"{len(clusters) - len(without_active)} of {len(clusters)} clusters active after "
            f"{startup:.1f} s" + (f"; none active: {without_active}" if without_active else "")
        )
        window = steady_window(clusters, zk, args.seconds)
        say(f"steady window of {window.seconds:.1f} s measured")
        failovers = [failover_once(clusters[0], observer, say) for _ in range(args.failover_runs)]
        kills = []
        for _ in range(args.leader_kills):
            unsettled = wait_redundant(clusters, observer, REJOIN_TIMEOUT)
            if unsettled:
                say(f"before the leader kill, no active node in {unsettled}")
            kills.append(leader_kill(clusters, observer, zk, args.observe, say))
        return build_report(
            ensemble=args.ensemble,
            clusters=len(clusters),
            session=args.session,
            failsafe=args.failsafe,
            startup_s=startup,
            without_active=without_active,
            window=window,
            failovers_s=failovers,
            kills=kills,
        )
    finally:
        stop_daemons(clusters)
        if observer is not None:
            for c in clusters:  # the lab's ensemble outlives us: leave no chroots there
                observer.delete_tree(c.chroot)
            observer.close()
        if zk is not None:
            zk.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=10, help="two-daemon clusters (10)")
    parser.add_argument("--ensemble", choices=("loopback", "lab"), default="loopback")
    parser.add_argument("--seconds", type=float, default=20.0, help="steady window (20 s)")
    parser.add_argument("--failover-runs", type=int, default=3, help="failovers of cluster 0 (3)")
    parser.add_argument("--leader-kills", type=int, default=3, help="ZooKeeper leader kills (3)")
    parser.add_argument("--observe", type=float, default=15.0, help="seconds after a kill (15)")
    parser.add_argument("--batch", type=int, default=5, help="clusters started at a time (5)")
    parser.add_argument(
        "--settle", type=float, default=120.0, help="seconds for all to be active (120)"
    )
    parser.add_argument("--session", type=float, default=SESSION_TIMEOUT, help="session timeout")
    parser.add_argument("--lab-root", type=Path, default=Path("/var/tmp/failoverd-lab"))
    parser.add_argument(
        "--failsafe", action="store_true", help="peer pledges on (an election is ridden out)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument("--keep", action="store_true", help="keep the configs and daemon logs")
    args = parser.parse_args(argv)
    if args.clusters < 1 or args.batch < 1:
        parser.error("--clusters and --batch must be at least 1")
    if min(args.failover_runs, args.leader_kills) < 0:
        parser.error("--failover-runs and --leader-kills must not be negative")
    if min(args.seconds, args.observe, args.settle, args.session) <= 0:
        parser.error("--seconds, --observe, --settle and --session must be positive")
    if args.ensemble == "lab" and not in_client_namespace():
        reexec_in_client_namespace()

    def say(line: str) -> None:
        print(f"zk_scale: {line}", file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="failoverd-zk-scale-"))
    try:
        with terminated_as_interrupt():
            report = run(args, workdir, say)
    except TaskLimitError as e:
        say(f"stopped: {e} (everything it started is stopped)")
        return 1
    finally:
        if args.keep:
            say(f"configs and daemon logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report) if args.json else render_table(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

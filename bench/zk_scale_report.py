"""bench/zk_scale.py's pure parts: parsing ZooKeeper's ``mntr`` and /proc, the arithmetic of
rates and spreads, counting failovers from observed lease holders, and the report (one JSON
object, and a table). Kept apart from the running so that they are unit-tested alone."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

COUNTERS = {
    "requests": "zk_packets_received",
    "reads": "zk_cnt_readlatency",
    "writes": "zk_cnt_updatelatency",
}
GAUGES = {
    "connections": "zk_num_alive_connections",
    "znodes": "zk_znode_count",
    "watches": "zk_watch_count",
}


# -- the pure parts: parsing and arithmetic -------------------------------------------------------


def parse_mntr(text: str) -> dict[str, str]:
    """``mntr``'s answer (``key<TAB>value`` lines) as a dict; other lines are ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("\t")
        if sep and key.startswith("zk_"):
            out[key] = value.strip()
    return out


def _number(mntr: Mapping[str, str], key: str) -> float | None:
    try:
        return float(mntr[key])
    except (KeyError, ValueError):
        return None


def counter_rate(
    before: Mapping[str, Mapping[str, str]],
    after: Mapping[str, Mapping[str, str]],
    key: str,
    seconds: float,
) -> float | None:
    """Per second, summed over the servers (server -> parsed ``mntr``) that answered at both
    ends with a counter that did not go back (a restarted server starts from 0); None if none
    did."""
    total = 0.0
    counted = 0
    for server, start in before.items():
        a = _number(start, key)
        b = _number(after.get(server, {}), key)
        if a is None or b is None or b < a:
            continue
        total += b - a
        counted += 1
    return total / seconds if counted and seconds > 0 else None


def gauge_sum(mntr: Mapping[str, Mapping[str, str]], key: str) -> float | None:
    """A gauge summed over the servers that report it (connections: each has its own)."""
    values = [v for m in mntr.values() if (v := _number(m, key)) is not None]
    return sum(values) if values else None


def gauge_max(mntr: Mapping[str, Mapping[str, str]], key: str) -> float | None:
    """A gauge every server holds a copy of (znodes): the largest copy."""
    values = [v for m in mntr.values() if (v := _number(m, key)) is not None]
    return max(values) if values else None


def cpu_ticks(stat: str) -> int:
    """utime + stime + cutime + cstime from /proc/PID/stat: the process and its reaped
    children (a daemon's check commands). The command name may hold spaces: split after ')'."""
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def status_number(status: str, key: str) -> int | None:
    """A number from /proc/PID/status (``VmRSS`` in kB, ``Threads``); None when the line is
    not there (a zombie has no VmRSS)."""
    for line in status.splitlines():
        name, sep, value = line.partition(":")
        if sep and name == key:
            return int(value.split()[0])
    return None


def task_count(loadavg: str) -> int:
    """Threads and processes on the host: /proc/loadavg's fourth field is running/total."""
    return int(loadavg.split()[3].split("/")[1])


def host_ticks(stat: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line; idle and iowait are not
    busy."""
    fields = [int(x) for x in stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def cpu_percent(ticks_before: int, ticks_after: int, seconds: float, hz: int) -> float:
    """Percent of one core over ``seconds`` (200 = two cores busy)."""
    if seconds <= 0:
        return 0.0
    return 100.0 * (ticks_after - ticks_before) / hz / seconds


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Median, max and total; None each when there is nothing to summarise."""
    if not values:
        return {"median": None, "max": None, "total": None}
    return {
        "median": statistics.median(values),
        "max": max(values),
        "total": sum(values),
    }


def count_failovers(holders: Sequence[str | None]) -> int:
    """Changes of lease holder in a sequence of observed holders (None: no lease). A lease that
    goes away and comes back to the same node is no failover (``leases_lost`` counts it)."""
    changes = 0
    last: str | None = None
    for holder in holders:
        if holder is None:
            continue
        if last is not None and holder != last:
            changes += 1
        last = holder
    return changes


def leases_lost(holders: Sequence[str | None]) -> int:
    """How often a held lease went away (an expired session or a release)."""
    return sum(1 for a, b in itertools.pairwise(holders) if a is not None and b is None)


def epochs_advanced(epochs: Sequence[int | None]) -> int:
    """By how much the lease epoch grew: every acquisition adds one, so this also counts the
    takeovers an observer missed while it was reconnecting."""
    seen = [e for e in epochs if e is not None]
    return max(seen) - seen[0] if seen else 0


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _mb(kb: float | None) -> float | None:
    return None if kb is None else kb / 1024


def render_table(report: Mapping[str, Any]) -> str:
    """The report as the lines a person reads; every number the JSON has, in a few rows."""

    def num(value: float | None, fmt: str = ".1f") -> str:
        return "-" if value is None else format(value, fmt)

    def trio(s: Mapping[str, float | None], fmt: str = ".1f") -> str:
        return (
            f"median {num(s['median'], fmt)}, max {num(s['max'], fmt)}, "
            f"total {num(s['total'], fmt)}"
        )

    missing = report["clusters_without_active"]
    rows = [
        ("start-up", f"{num(report['startup_s'])} s, "
         + (f"{len(missing)} without an active node: {missing}" if missing
            else f"all {report['clusters']} clusters active")),
        ("ZooKeeper requests/s", f"total {num(report['zk_requests_per_s'])}, per cluster "
         f"{num(report['zk_requests_per_s_per_cluster'], '.2f')} (reads "
         f"{num(report['zk_reads_per_s'])}, writes {num(report['zk_writes_per_s'])})"),
        ("ZooKeeper state", f"{num(report['zk_connections'], '.0f')} connections, "
         f"{num(report['zk_znodes'], '.0f')} znodes, {num(report['zk_watches'], '.0f')} watches"),
        ("daemon CPU % of a core", trio(report["daemon_cpu_percent"])),
        ("daemon RSS MB", trio(report["daemon_rss_mb"], ".0f")),
        ("daemon threads", trio(report["daemon_threads"], ".0f")),
        ("ZooKeeper CPU % / RSS MB", f"{num(report['zookeeper_cpu_percent'])} / "
         f"{num(report['zookeeper_rss_mb'], '.0f')} (three servers)"),
        ("host CPU % (100 a core)", num(report["host_cpu_percent"])),
        ("failover of cluster 0 s", " ".join(num(s, ".2f") for s in report["failover_s"])
         + f" (median {num(report['failover_median_s'], '.2f')})"),
    ]  # fmt: skip
    for kill in report["leader_kills"]:
        rows.append(
            (
                f"leader {kill['server']} killed",
                f"election {num(kill['election_s'], '.2f')} s, failovers {kill['failovers']}, "
                f"leases lost {kill['leases_lost']}, epochs +{kill['epochs_advanced']}, "
                f"threads of a daemon at most {num(kill['daemon_threads_max'], '.0f')}",
            )
        )
    rows.append(("failovers on leader kills", f"{report['leader_kill_failovers']} (target 0)"))
    head = (
        f"zk_scale: {report['clusters']} clusters ({report['daemons']} daemons) on the "
        f"{report['ensemble']} ensemble, session timeout {report['session_timeout_s']:g} s, "
        f"failsafe {'on' if report.get('failsafe') else 'off'}, window {report['window_s']:g} s"
    )
    width = max(len(name) for name, _ in rows) + 2
    return "\n".join([head, *(f"{name:<{width}}{value}" for name, value in rows)])


@dataclass
class Window:
    """What the steady window measured."""

    seconds: float
    rates: dict[str, float | None]
    gauges: dict[str, float | None]
    daemon_cpu: list[float]
    daemon_rss_kb: list[float]
    daemon_threads: list[float]
    zookeeper_cpu: float | None
    zookeeper_rss_kb: float | None
    host_cpu: float


def build_report(
    *,
    ensemble: str,
    clusters: int,
    session: float,
    failsafe: bool,
    startup_s: float,
    without_active: Sequence[str],
    window: Window,
    failovers_s: Sequence[float | None],
    kills: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The one JSON object: every measurement, rounded."""
    requests = window.rates["requests"]
    done = [f for f in failovers_s if f is not None]
    cpu = spread(window.daemon_cpu)
    rss = spread(window.daemon_rss_kb)
    tasks = spread(window.daemon_threads)
    return {
        "ensemble": ensemble,
        "clusters": clusters,
        "daemons": 2 * clusters,
        "session_timeout_s": session,
        "failsafe": failsafe,
        "startup_s": rounded(startup_s, 1),
        "clusters_without_active": list(without_active),
        "window_s": rounded(window.seconds, 1),
        "zk_requests_per_s": rounded(requests, 1),
        "zk_requests_per_s_per_cluster": rounded(
            None if requests is None else requests / clusters, 2
        ),
        "zk_reads_per_s": rounded(window.rates["reads"], 1),
        "zk_writes_per_s": rounded(window.rates["writes"], 1),
        "zk_connections": window.gauges["connections"],
        "zk_znodes": window.gauges["znodes"],
        "zk_watches": window.gauges["watches"],
        "daemon_cpu_percent": {k: rounded(v, 2) for k, v in cpu.items()},
        "daemon_rss_mb": {k: rounded(_mb(v), 1) for k, v in rss.items()},
        "daemon_threads": tasks,
        "zookeeper_cpu_percent": rounded(window.zookeeper_cpu, 1),
        "zookeeper_rss_mb": rounded(_mb(window.zookeeper_rss_kb), 1),
        "host_cpu_percent": rounded(window.host_cpu, 1),
        "failover_s": [rounded(f) for f in failovers_s],
        "failover_median_s": rounded(statistics.median(done)) if done else None,
        "leader_kills": list(kills),
        "leader_kill_failovers": sum(int(k["failovers"]) for k in kills),
    }

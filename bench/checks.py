"""What the health checks cost: the time of one round of checks, and the CPU of a daemon running
them.

It brings up its own real servers on loopback (PostgreSQL 15 primary and streaming replica, the
donations app, Squid in front of it, ZooKeeper), all under one temporary directory, and stops
every one of them by PID at the end.

(a) Check latency: every check the daemon runs (the app over HTTP, Squid, PostgreSQL on the
    primary, PostgreSQL on the replica, the direct probe of the peer's database), ``--rounds``
    times alone, then ``--rounds`` times all at once as the daemon does (one thread per check):
    min/median/max per check, and of the whole concurrent round.
(b) Daemon CPU: a real ``failoverd run`` with those checks every 0.5 s, and one with no checks at
    all, each measured from /proc/PID/stat (utime + stime) over ``--duration`` seconds once it
    is settled; reported as percent of one core.

Usage: ``.venv/bin/python bench/checks.py [--json] [--rounds N] [--duration S]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `lab` and `failoverd` importable
    sys.path.insert(0, str(REPO))

from kazoo.client import KazooClient  # noqa: E402
from kazoo.exceptions import NoNodeError  # noqa: E402

from failoverd.checks.base import Checker  # noqa: E402
from failoverd.checks.http import HttpCheck  # noqa: E402
from failoverd.checks.postgres import PeerDatabaseProbe, PostgresCheck  # noqa: E402
from failoverd.checks.squid import SquidCheck  # noqa: E402
from failoverd.config import CheckConfig, PostgresConfig  # noqa: E402
from lab.donations import DonationsApp  # noqa: E402
from lab.postgres import PostgresServer  # noqa: E402
from lab.process import wait_for as poll  # noqa: E402
from lab.squid import SquidServer  # noqa: E402
from lab.zookeeper import ZooKeeperServer  # noqa: E402

BIN = Path(sys.executable).parent
INTERVAL = 0.5  # the daemon's check interval under test
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Lab:
    """Primary, replica, app, Squid and ZooKeeper under ``base``; ``close()`` stops them all."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.primary = PostgresServer(base / "pg1", name="pg1")
        self.replica = PostgresServer(base / "pg2", name="pg2")
        self.app = DonationsApp(base / "app", self.primary.dsn(), "n1")
        self.squid = SquidServer(base / "squid", self.app.port)
        self.zookeeper = ZooKeeperServer(base / "zk")

    def start(self) -> None:
        self.primary.init_primary()
        self.primary.start()
        self.replica.init_replica(self.primary)
        self.replica.start()
        self.app.start()
        self.squid.start()
        self.zookeeper.start()

    def close(self) -> None:
        for stop in (
            self.zookeeper.stop,
            self.squid.stop,
            self.app.stop,
            self.replica.close,
            self.primary.close,
        ):
            with contextlib.suppress(Exception):
                stop()


def check_cfg(name: str, check_type: Any, **kwargs: Any) -> CheckConfig:
    return CheckConfig(
        name=name, type=check_type, interval=INTERVAL, timeout=1.0, rise=1, fall=1, **kwargs
    )


def checkers(lab: Lab) -> dict[str, Checker]:
    """Every check of a node, as ``failoverd run`` builds them, on the lab's servers."""
    pg = PostgresConfig(host=lab.primary.host, port=lab.primary.port)
    return {
        "http (app)": HttpCheck(check_cfg("app", "http", url=lab.app.url("/health"))),
        "squid": SquidCheck(
            check_cfg(
                "proxy",
                "squid",
                url=lab.squid.url("/health"),
                cache_manager_url=lab.squid.mgr_url("info"),
            )
        ),
        "postgres (primary)": PostgresCheck(
            check_cfg("db", "postgres"),
            PostgresConfig(
                host=lab.primary.host, port=lab.primary.port, data_dir=lab.primary.data_dir
            ),
        ),
        "postgres (replica)": PostgresCheck(
            check_cfg("db", "postgres"),
            PostgresConfig(
                host=lab.replica.host, port=lab.replica.port, data_dir=lab.replica.data_dir
            ),
        ),
        "peer probe": PeerDatabaseProbe(lab.replica.host, lab.replica.port, pg, 1.0),
    }


def stats(values: Sequence[float]) -> dict[str, float]:
    """min/median/max in milliseconds."""
    return {
        "min_ms": round(min(values) * 1000, 3),
        "median_ms": round(statistics.median(values) * 1000, 3),
        "max_ms": round(max(values) * 1000, 3),
    }


def timed_probe(checker: Checker) -> float:
    started = time.perf_counter()
    result = checker.probe()
    took = time.perf_counter() - started
    if not result.ok:
        raise RuntimeError(f"a check failed during the benchmark: {result.reason}")
    return took


def measure_rounds(checks: dict[str, Checker], rounds: int) -> dict[str, Any]:
    """Each check alone, then all at once (one thread per check, as the runner does)."""
    for checker in checks.values():  # warm up: first connections, Squid's first request
        timed_probe(checker)
    alone: dict[str, list[float]] = {name: [] for name in checks}
    for _ in range(rounds):
        for name, checker in checks.items():
            alone[name].append(timed_probe(checker))

    together: dict[str, list[float]] = {name: [] for name in checks}
    walls: list[float] = []
    for _ in range(rounds):
        gate = threading.Barrier(len(checks) + 1)
        took: dict[str, float] = {}
        errors: list[BaseException] = []

        def run(
            name: str,
            checker: Checker,
            gate: threading.Barrier = gate,
            took: dict[str, float] = took,
            errors: list[BaseException] = errors,
        ) -> None:
            gate.wait(timeout=10)
            try:
                took[name] = timed_probe(checker)
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=run, args=item) for item in checks.items()]
        for t in threads:
            t.start()
        gate.wait(timeout=10)
        started = time.perf_counter()
        for t in threads:
            t.join(timeout=10)
        walls.append(time.perf_counter() - started)
        if errors:
            raise RuntimeError(f"a check failed in a concurrent round: {errors[0]}")
        for name, value in took.items():
            together[name].append(value)
        time.sleep(0.01)
    return {
        "rounds": rounds,
        "alone": {name: stats(v) for name, v in alone.items()},
        "concurrent": {name: stats(v) for name, v in together.items()},
        "concurrent_round": stats(walls),
    }


# -- daemon CPU ---------------------------------------------------------------------------------


def daemon_config(path: Path, lab: Lab, chroot: str, with_checks: bool) -> Path:
    """Node n1 on the lab's primary; its peer n2 is the replica's address and port (no daemon
    there). No [vip]: nothing on the host's interfaces changes."""
    text = f"""node = "n1"

[cluster]
name = "bench"
zookeeper_hosts = ["{lab.zookeeper.hosts}"]
chroot = "{chroot}"

[[members]]
name = "n1"
address = "127.0.0.11"
db_port = {lab.primary.port}

[[members]]
name = "n2"
address = "{lab.replica.host}"
db_port = {lab.replica.port}

[timings]
session_timeout = 2.0

[metrics]
enabled = false
"""
    if with_checks:
        common = f"interval = {INTERVAL}\ntimeout = 1.0\nrise = 2\nfall = 2\n"
        text += f"""
[postgres]
host = "{lab.primary.host}"
port = {lab.primary.port}
data_dir = "{lab.primary.data_dir}"
bin_dir = "{lab.primary.bin_dir}"

[checks.app]
type = "http"
url = "{lab.app.url("/health")}"
{common}
[checks.proxy]
type = "squid"
url = "{lab.squid.url("/health")}"
cache_manager_url = "{lab.squid.mgr_url("info")}"
{common}
[checks.db]
type = "postgres"
{common}"""
    path.write_text(text)
    return path


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far (children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    return bool(poll(predicate, timeout, step))


@contextlib.contextmanager
def daemon(config: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = config.with_suffix(".log")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(BIN / "failoverd"), "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


def member(zk: KazooClient, chroot: str, node: str) -> dict[str, Any]:
    try:
        data, _ = zk.get(f"{chroot}/members/{node}")
    except NoNodeError:
        return {}
    record: dict[str, Any] = json.loads(data) if data else {}
    return record


def measure_daemon(lab: Lab, with_checks: bool, duration: float) -> dict[str, Any]:
    chroot = f"/failoverd/bench-{'checks' if with_checks else 'bare'}-{os.getpid()}"
    config = daemon_config(
        lab.base / f"n1-{'checks' if with_checks else 'bare'}.toml", lab, chroot, with_checks
    )
    zk = KazooClient(hosts=lab.zookeeper.hosts)
    zk.start(timeout=10)
    try:
        with daemon(config) as proc:

            def settled() -> bool:
                record = member(zk, chroot, "n1")
                checks = record.get("checks", [])
                return record.get("role") == "active" and (
                    not with_checks or (len(checks) == 3 and all(c["healthy"] for c in checks))
                )

            if not wait_for(settled, 30.0):
                log = config.with_suffix(".log").read_text()[-3000:]
                raise RuntimeError(f"the daemon did not settle as active; its log:\n{log}")
            time.sleep(2.0)  # past start-up work (imports, first connections)
            wall0, cpu0 = time.monotonic(), cpu_seconds(proc.pid)
            time.sleep(duration)
            wall1, cpu1 = time.monotonic(), cpu_seconds(proc.pid)
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode} while measured")
            record = member(zk, chroot, "n1")
            threads = len(list(Path(f"/proc/{proc.pid}/task").iterdir()))
            rss = rss_mb(proc.pid)
    finally:
        zk.stop()
        zk.close()
    return {
        "checks": sorted(c["name"] for c in record.get("checks", [])),
        "interval_s": INTERVAL if with_checks else None,
        "measured_s": round(wall1 - wall0, 2),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 2),
        "threads": threads,
        "rss_mb": rss,
        "role": record.get("role"),
    }


# -- output -------------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    lat = result["latency"]
    lines = [
        f"check latency over {lat['rounds']} rounds (ms)  "
        f"[{result['machine']['cpus']} CPUs, loadavg {result['machine']['loadavg']}]",
        "",
        f"{'check':<22}{'alone min':>10}{'median':>9}{'max':>9}"
        f"{'concurrent min':>17}{'median':>9}{'max':>9}",
    ]
    for name, alone in lat["alone"].items():
        both = lat["concurrent"][name]
        lines.append(
            f"{name:<22}{alone['min_ms']:>10.2f}{alone['median_ms']:>9.2f}{alone['max_ms']:>9.2f}"
            f"{both['min_ms']:>17.2f}{both['median_ms']:>9.2f}{both['max_ms']:>9.2f}"
        )
    r = lat["concurrent_round"]
    lines.append(
        f"{'whole round':<22}{'':>28}{r['min_ms']:>17.2f}{r['median_ms']:>9.2f}{r['max_ms']:>9.2f}"
    )
    lines += ["", "failoverd run, CPU from /proc/PID/stat (utime + stime)", ""]
    lines.append(
        f"{'daemon':<34}{'measured':>9}{'cpu':>9}{'% of a core':>13}{'threads':>9}{'RSS':>9}"
    )
    for label, d in (
        ("3 checks + peer probe every 0.5 s", result["daemon_with_checks"]),
        ("no checks", result["daemon_without_checks"]),
    ):
        lines.append(
            f"{label:<34}{d['measured_s']:>8.1f}s{d['cpu_s']:>8.2f}s"
            f"{d['cpu_percent_of_one_core']:>12.2f}%{d['threads']:>9}{d['rss_mb']:>7.1f}MB"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=50, help="rounds of checks (default 50)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of daemon CPU to measure (default 30)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be at least 1 and --duration positive")

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr, flush=True)

    base = Path(tempfile.mkdtemp(prefix="failoverd-bench-", dir="/tmp"))
    base.chmod(0o755)  # the postgres and proxy users must reach their directories
    lab = Lab(base)
    try:
        say(f"starting PostgreSQL primary and replica, app, Squid, ZooKeeper under {base}")
        lab.start()
        say(f"timing {args.rounds} rounds of checks")
        latency = measure_rounds(checkers(lab), args.rounds)
        say(f"measuring a daemon with checks for {args.duration:g} s")
        with_checks = measure_daemon(lab, True, args.duration)
        say(f"measuring a daemon without checks for {args.duration:g} s")
        without = measure_daemon(lab, False, args.duration)
    finally:
        lab.close()
        shutil.rmtree(base, ignore_errors=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "loadavg": round(os.getloadavg()[0], 2)},
        "latency": latency,
        "daemon_with_checks": with_checks,
        "daemon_without_checks": without,
    }
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

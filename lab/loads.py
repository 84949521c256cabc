"""Loads that must not cause a failover: both cores saturated on the active, the report query
in a loop, a heavy write load (issue 12, "false failovers under load").

A failover tool also fails by moving when it should not: a node too busy to answer within a
check's timeout looks dead. Each load runs on a redundant cluster with the paced writer of
lab/workload.py for ``seconds``; afterwards the lease holder, its epoch and the client's
acknowledgements tell whether the service moved. The report loop runs inside ``flcli`` as
``python -m lab.loads reports``; the CPU load is Debian's stress-ng inside the active's
namespace (namespaces share the machine's cores: the whole lab feels it, as a real node's
daemon, database and proxy would share theirs).
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from failoverd.clock import boottime
from lab.cluster import REPO, Lab, LabError
from lab.scenarios import Workload
from lab.workload import failovers, max_gap

LOADS = ("cpu", "report", "writes")
HEAVY_WRITERS = 16  # closed-loop writers for the heavy write load
REPORT_THREADS = 4  # concurrent GET /totals loops
VIP = "10.77.0.100"


@dataclass
class LoadResult:
    load: str
    seconds: float
    active_before: str | None
    epoch_before: int | None
    active_after: str | None
    epoch_after: int | None
    acknowledged: int = 0
    failed: int = 0
    max_gap_s: float | None = None
    client_failovers: int = 0  # changes of the node acknowledging writes
    load_done: int = 0  # reports answered, or stress-ng's bogo-ops line
    load_failed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def moved(self) -> bool:
        """The service moved: another lease holder, or the client saw another node."""
        return self.active_before != self.active_after or self.client_failovers > 0

    def summary(self) -> dict[str, Any]:
        return asdict(self) | {"moved": self.moved}


def stress_ng() -> str:
    """The stress-ng binary, or a clear error (scripts/setup installs it)."""
    path = shutil.which("stress-ng")
    if path is None:
        raise FileNotFoundError("stress-ng is not installed (scripts/setup installs it)")
    return path


def cpu_load(node: str, seconds: float) -> subprocess.Popen[str]:
    """Every core busy for ``seconds``, from inside ``node``'s namespace."""
    return subprocess.Popen(
        ["ip", "netns", "exec", node, stress_ng(), "--cpu", "0", "--timeout", f"{int(seconds)}s",
         "--metrics-brief"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def report_loop(host: str, seconds: float, threads: int, timeout: float = 5.0) -> tuple[int, int]:
    """``threads`` loops of GET /totals for ``seconds``: (answered 200, failed)."""
    counts = [0, 0]
    lock = threading.Lock()
    deadline = boottime() + seconds

    def loop() -> None:
        for _ in range(int(seconds * 1000) + 1):  # bounded: 1,000 reports a second at most
            if boottime() >= deadline:
                return
            ok = _get_totals(host, timeout)
            with lock:
                counts[0 if ok else 1] += 1

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=seconds + timeout + 5)
    return counts[0], counts[1]


def _get_totals(host: str, timeout: float) -> bool:
    conn = http.client.HTTPConnection(host, 80, timeout=timeout)
    try:
        conn.request("GET", "/totals")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lab loads (the report loop runs in flcli)")
    sub = parser.add_subparsers(dest="command", required=True)
    reports = sub.add_parser("reports", help="GET /totals in loops; prints a JSON line")
    reports.add_argument("--host", default=VIP)
    reports.add_argument("--seconds", type=float, required=True)
    reports.add_argument("--threads", type=int, default=REPORT_THREADS)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.threads < 1:
        parser.error("--seconds must be positive and --threads at least 1")
    done, failed = report_loop(args.host, args.seconds, args.threads)
    print(json.dumps({"answered": done, "failed": failed}))
    return 0


def parse_reports_output(text: str) -> tuple[int, int]:
    """(answered, failed) from ``reports``' JSON line; (0, 0) when it printed none."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            doc = json.loads(line)
            return int(doc["answered"]), int(doc["failed"])
    return 0, 0


def run_load(lab: Lab, load: str, seconds: float, workdir: Path) -> LoadResult:
    """``load`` for ``seconds`` on a redundant cluster, the paced writer (or, for ``writes``,
    HEAVY_WRITERS closed-loop writers) all along; what moved."""
    if load not in LOADS:
        raise ValueError(f"unknown load {load!r} (one of {', '.join(LOADS)})")
    active = lab.wait_redundant(timeout=60)
    before = _lease(lab)
    writers = HEAVY_WRITERS if load == "writes" else 1
    workload = Workload(lab, workdir / load, duration=seconds + 30, writers=writers)
    result = LoadResult(load, seconds, before[0] or active, before[1], None, None)
    started = boottime()
    try:
        if load == "cpu":
            proc = cpu_load(active, seconds)
            out, _ = proc.communicate(timeout=seconds + 30)
            result.load_done = 1 if proc.returncode == 0 else 0
            result.notes.append(out.strip().splitlines()[-1] if out.strip() else "")
        elif load == "report":
            python = lab.venv / "bin" / "python"
            done = lab.exec(
                "flcli",
                [str(python), "-m", "lab.loads", "reports", "--seconds", str(seconds)],
                timeout=seconds + 30,
                env={"PYTHONPATH": str(REPO)},
            )
            result.load_done, result.load_failed = parse_reports_output(done.stdout)
        else:
            time.sleep(seconds)
    finally:
        ended = boottime()
        workload.stop()
    ok = [a for a in workload.acks() if a.get("ok")]
    result.acknowledged = len(ok)
    result.failed = len(workload.acks()) - len(ok)
    window = [a for a in ok if started <= float(a["done"]) <= ended]
    result.max_gap_s = round(max_gap(window, started, ended), 3) if window else None
    result.client_failovers = failovers(ok)
    try:
        lab.wait_redundant(timeout=60)
    except LabError as e:
        result.notes.append(str(e))
    result.active_after, result.epoch_after = _lease(lab)
    return result


def _lease(lab: Lab) -> tuple[str | None, int | None]:
    doc = lab.cluster_status() or {}
    lease = doc.get("lease") or {}
    node, epoch = lease.get("node"), lease.get("epoch")
    return (str(node) if node else None), (int(epoch) if epoch is not None else None)


if __name__ == "__main__":
    sys.exit(main())

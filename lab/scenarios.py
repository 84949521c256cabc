"""Failover scenarios in the two-node lab, from a client's point of view.

Each scenario starts the client and sampler (lab/workload.py) in ``flcli``, injects one fault
into the active node, waits for the passive to take over, and returns what the client saw:
the outage from the fault to the first write acknowledged after it, split-brain samples, epoch
ordering of acknowledgements, acknowledged writes missing from the surviving primary, and the
takeover's phases from failoverd's own history record. ``restore`` brings the faulty node back
as a streaming replica, so scenarios can run back to back (the tests and bench/failover.py).

``steady`` runs the workload without a fault: latency and donations per second alone, so the
cost of a replication mode is measured without a failover in the way. Every scenario takes a
number of writers (lab/workload.py: one is the paced probe, N are closed-loop writers).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failoverd.clock import boottime, walltime
from lab.cluster import ZK_NS, Lab, LabError
from lab.workload import JsonlFollower, Verdict, analyze, read_jsonl

NODES = ("fln1", "fln2")
REPO = Path(__file__).resolve().parents[1]
SCENARIOS = (
    "crash",
    "app",
    "postgres",
    "squid",
    "zk-partition",
    "freeze",
    "switchover",
    "pause-partition",
    "pg-freeze",
    "zk-down",
)
ZK_DOWN_S = 30.0  # zk-down: how long ZooKeeper stays stopped
TAKEOVER_TIMEOUT = {"zk-down": ZK_DOWN_S + 30.0}
TAKEOVER_KINDS = ("failover", "stepdown", "switchover", "bootstrap", "readopt")
LAB_MIN_FAILOVER_INTERVAL = 5.0  # lab/templates/failoverd.toml


class ScenarioError(RuntimeError):
    """The lab did not reach the state a scenario needs; the message says which."""


def other(node: str) -> str:
    return NODES[1] if node == NODES[0] else NODES[0]


def cluster_status(lab: Lab, via: str | None = None) -> dict[str, Any]:
    """``failoverctl status --json`` from a node's namespace (the host cannot reach ZooKeeper)."""
    doc = lab.cluster_status(via)
    if doc is None:
        where = f"from {via}" if via else "from either node"
        raise ScenarioError(f"failoverctl status did not answer {where}")
    return doc


def roles(doc: dict[str, Any]) -> dict[str, str]:
    return {m["node"]: m.get("role", "?") for m in doc.get("members", [])}


def history(lab: Lab, via: str, limit: int = 20) -> list[dict[str, Any]]:
    proc = lab.failoverctl(via, "history", "--json", "--limit", str(limit), timeout=15)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def wait_until(what: str, check: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    """Poll ``check`` until truthy; bounded in count and time; ScenarioError says what failed."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 2):
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(step)
    raise ScenarioError(f"timed out after {timeout:g} s waiting for {what}")


def wait_redundant(lab: Lab, timeout: float = 60.0) -> str:
    """Until one node is active with the VIP and a writable primary, and the other a passive,
    eligible replica whose WAL receiver streams from it; the active node's name."""
    try:
        return lab.wait_redundant(timeout)
    except LabError as e:
        raise ScenarioError(str(e)) from None


@dataclass
class ScenarioResult:
    scenario: str
    active_before: str
    active_after: str | None
    verdict: Verdict
    phases_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fault_at: float = 0.0  # boottime of the fault
    healed_at: float | None = None  # boottime the fault was healed (restore, or by itself)
    redundant_at: float | None = None  # one active and one streaming passive again

    @property
    def outage_s(self) -> float | None:
        return self.verdict.outage_s

    @property
    def redundant_s(self) -> float | None:
        """From the fault to one active and one passive streaming from it again."""
        return None if self.redundant_at is None else self.redundant_at - self.fault_at

    @property
    def healed_to_redundant_s(self) -> float | None:
        """From the moment the fault was gone (the node reachable again) to redundancy."""
        if self.redundant_at is None or self.healed_at is None:
            return None
        return self.redundant_at - self.healed_at

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "from": self.active_before,
            "to": self.active_after,
            "outage_s": self.outage_s,
            "acknowledged": self.verdict.acknowledged,
            "lost_acknowledged": len(self.verdict.lost),
            "split_brain_samples": self.verdict.split_brain_samples,
            "epoch_order_violations": len(self.verdict.epoch_order_violations),
            "phases_s": self.phases_s,
            "writers": self.verdict.writers,
            "latency_p50_s": self.verdict.latency_p50_s,
            "latency_p99_s": self.verdict.latency_p99_s,
            "donations_per_s": self.verdict.rate_per_s,
            "donations_per_s_outside_outage": self.verdict.rate_outside_outage_per_s,
            "redundant_s": self.redundant_s,
            "healed_to_redundant_s": self.healed_to_redundant_s,
            "notes": self.notes,
        }


class Workload:
    """The client and sampler as a process inside ``flcli``, with ``writers`` writers."""

    def __init__(self, lab: Lab, out: Path, duration: float, writers: int = 1) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        os.chmod(out, 0o755)
        # A directory used before would hand back its old journal and its "ready" at once.
        for stale in ("ready", "stop", "acks.jsonl", "samples.jsonl"):
            (out / stale).unlink(missing_ok=True)
        python = lab.venv / "bin" / "python"
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", "flcli", str(python), "-m", "lab.workload",
             "--out", str(out), "--duration", str(duration), "--writers", str(writers)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=(out / "workload.log").open("w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._acks = JsonlFollower(out / "acks.jsonl")
        wait_until("the client to start", (out / "ready").exists, 20, step=0.05)

    def acks(self) -> list[dict[str, Any]]:
        """Every answer recorded so far (read incrementally: the list grows between calls)."""
        return self._acks.read()

    def stop(self) -> None:
        (self.out / "stop").write_text("")
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def _kill_postgres(lab: Lab, node: str) -> None:
    pid = lab.pid(node, "postgres")
    if pid is None:
        raise ScenarioError(f"{node}: PostgreSQL is not running")
    os.kill(pid, signal.SIGKILL)  # the postmaster; its backends notice and exit


def _switchover(lab: Lab, node: str) -> None:
    """A planned switchover away from ``node`` with `failoverctl promote` (not a fault, but
    measured the same way: the write-unavailability window a client sees)."""
    proc = lab.failoverctl(node, "promote", "--yes", "--timeout", "30", timeout=60)
    (lab.root / "last-switchover.out").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise ScenarioError(f"failoverctl promote failed: {(proc.stdout + proc.stderr).strip()}")


def _pause_partition(lab: Lab, node: str) -> None:
    """The split brain once seen here: pause the cluster, cut the active off from ZooKeeper and
    from its peer, resume. Pause must not suspend the active's self-fencing."""
    peer = other(node)
    for command in ("pause", "resume"):
        if command == "resume":
            lab.partition_from_zk(node)
            lab.partition_nodes()
        proc = lab.failoverctl(peer, command, timeout=15)
        if proc.returncode != 0:
            raise ScenarioError(f"failoverctl {command}: {(proc.stdout + proc.stderr).strip()}")
        if command == "pause":
            time.sleep(1.0)  # both daemons see the pause


def _zk_down(lab: Lab, node: str) -> threading.Timer:
    """ZooKeeper stopped for ZK_DOWN_S seconds: nobody can take the lease, and the active
    self-fences. It comes back by itself (the returned timer starts it)."""
    lab.stop_component(ZK_NS, "zookeeper")
    timer = threading.Timer(ZK_DOWN_S, lab.start_component, args=(ZK_NS, "zookeeper"))
    timer.start()
    return timer


FAULTS: dict[str, Callable[[Lab, str], object]] = {
    "crash": lambda lab, n: lab.crash(n),
    "app": lambda lab, n: lab.stop_component(n, "app"),
    "postgres": _kill_postgres,
    "squid": lambda lab, n: lab.stop_component(n, "squid"),
    "zk-partition": lambda lab, n: lab.partition_from_zk(n),
    "freeze": lambda lab, n: lab.freeze_daemon(n),
    "switchover": _switchover,
    "pause-partition": _pause_partition,
    "pg-freeze": lambda lab, n: lab.signal_postgres(n, signal.SIGSTOP),
    "zk-down": _zk_down,
}


def surviving_ids(lab: Lab, node: str) -> set[str]:
    rows = lab.query(node, "SELECT id FROM donations", dbname="donations", timeout=10)
    return {r[0] for r in rows}


def takeover_phases(lab: Lab, via: str, fault_wall: float) -> dict[str, float]:
    """Phases of the takeover from failoverd's history record, plus detection: from the fault
    to the moment the new active started to take over."""
    for rec in reversed(history(lab, via)):
        if rec.get("kind") in TAKEOVER_KINDS and rec.get("to") == via:
            phases = {k: float(v) for k, v in (rec.get("phases") or {}).items()}
            when = rec.get("time")
            if isinstance(when, int | float) and "total" in phases:
                phases["detection"] = max(0.0, float(when) - phases["total"] - fault_wall)
            fences = [
                r for r in history(lab, via)
                if r.get("kind") == "fence" and isinstance(r.get("time"), int | float)
                and float(r["time"]) >= fault_wall
            ]  # fmt: skip
            if fences and "fence" not in phases:
                fence_phases = fences[-1].get("phases") or {}
                if "fence" in fence_phases:
                    phases["fence"] = float(fence_phases["fence"])
            return phases
    return {}


def run(
    lab: Lab,
    scenario: str,
    workdir: Path,
    *,
    takeover_timeout: float | None = None,
    writers: int = 1,
    traffic_before: float = 0.0,
    traffic_after: float = 1.0,
) -> ScenarioResult:
    """One scenario on a redundant cluster; leaves the faulty node as the fault left it (but
    for faults that end by themselves: zk-down, freeze). The fault comes once at least ten
    writes are acknowledged and ``traffic_before`` seconds have passed; the client goes on
    ``traffic_after`` seconds past the takeover (late acknowledgements show there)."""
    if scenario not in FAULTS:
        raise ValueError(f"unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})")
    if takeover_timeout is None:
        takeover_timeout = TAKEOVER_TIMEOUT.get(scenario, 30.0)
    active = wait_redundant(lab)
    passive = other(active)
    # A step-down within min_failover_interval of the last takeover is refused (anti-flap, by
    # design): let it pass so every scenario tests the failover, not the flap guard.
    takeovers = [r for r in history(lab, active) if r.get("kind") in TAKEOVER_KINDS]
    if takeovers and isinstance(takeovers[-1].get("time"), int | float):
        since = walltime() - float(takeovers[-1]["time"])
        time.sleep(max(0.0, LAB_MIN_FAILOVER_INTERVAL + 0.5 - since))
    duration = traffic_before + takeover_timeout + traffic_after + 30
    workload = Workload(lab, workdir / scenario, duration=duration, writers=writers)
    notes: list[str] = []
    try:
        # Normal traffic first, so the outage is measured against a working site.
        started = time.monotonic()
        wait_until(
            "acknowledged writes before the fault",
            lambda: sum(1 for a in workload.acks() if a.get("ok")) >= 10,
            15,
            step=0.1,
        )
        time.sleep(max(0.0, started + traffic_before - time.monotonic()))
        before = [int(a["epoch"]) for a in workload.acks() if a.get("ok")]
        old_epoch = max(before) if before else -1
        fault_at, fault_wall = boottime(), walltime()
        healing = FAULTS[scenario](lab, active)

        def taken_over() -> bool:
            """A write acknowledged under a newer epoch: the service is back (by the passive,
            or, after a ZooKeeper outage, by the old active leading again)."""
            return any(
                a.get("ok") and a["sent"] >= fault_at and int(a["epoch"]) > old_epoch
                for a in workload.acks()
            )

        try:
            wait_until("the service to be back", taken_over, takeover_timeout, step=0.05)
        except ScenarioError as e:
            notes.append(str(e))
        time.sleep(traffic_after)  # late acknowledgements would show here
    finally:
        workload.stop()
    healed_at: float | None = None
    if isinstance(healing, threading.Timer):  # the fault ends by itself
        healing.join(timeout=ZK_DOWN_S + 10)
        healed_at = fault_at + ZK_DOWN_S
    if scenario == "freeze":
        lab.thaw_daemon(active)  # it finds itself fenced, and rejoins by itself
        healed_at = boottime()
    acks = workload.acks()
    samples = read_jsonl(workload.out / "samples.jsonl")
    try:
        ids: set[str] | None = surviving_ids(lab, passive)
    except LabError as e:
        ids = None
        notes.append(f"could not read the surviving primary: {e}")
    verdict = analyze(acks, samples, fault_at, ids)
    phases = takeover_phases(lab, verdict.served_after or passive, fault_wall)
    return ScenarioResult(
        scenario,
        active,
        verdict.served_after,
        verdict,
        phases,
        notes,
        fault_at=fault_at,
        healed_at=healed_at,
    )


def steady(lab: Lab, workdir: Path, seconds: float, *, writers: int = 1) -> ScenarioResult:
    """The workload for ``seconds`` on a redundant cluster and no fault: latency, donations per
    second and split-brain samples, and every acknowledged donation looked for on the primary
    afterwards. A node that failed over under the load is noted, not hidden."""
    active = wait_redundant(lab)
    workload = Workload(lab, workdir / "steady", duration=seconds + 30, writers=writers)
    try:
        time.sleep(seconds)
    finally:
        workload.stop()
    notes: list[str] = []
    primary = wait_redundant(lab, timeout=30)
    if primary != active:
        notes.append(f"the active moved from {active} to {primary} under the load")
    try:
        ids: set[str] | None = surviving_ids(lab, primary)
    except LabError as e:
        ids = None
        notes.append(f"could not read the primary: {e}")
    samples = read_jsonl(workload.out / "samples.jsonl")
    verdict = analyze(workload.acks(), samples, None, ids)
    return ScenarioResult("steady", active, primary, verdict, notes=notes)


def restore(lab: Lab, result: ScenarioResult, timeout: float = 60.0) -> float:
    """Heal the fault as the world would (power back on, the app restarted, the route back),
    then wait, without any command, for one active and one passive streaming from it. Records
    when and returns the time from the heal to redundancy; ScenarioError if it never comes."""
    node, scenario = result.active_before, result.scenario
    healed_at = boottime()
    if scenario == "crash":
        # A reboot: the link back, the node's services started; failoverd rejoins PostgreSQL.
        lab.restore_link(node, drop_vip=True)
        for component in ("sshd", "app", "squid", "failoverd"):
            lab.start_component(node, component)
    elif scenario == "app":
        lab.start_component(node, "app")
    elif scenario == "squid":
        lab.start_component(node, "squid")
    elif scenario == "zk-partition":
        lab.heal_zk(node)
    elif scenario == "pause-partition":
        lab.heal_zk(node)
        lab.heal_nodes()
    elif scenario == "pg-freeze":
        lab.signal_postgres(node, signal.SIGCONT)  # failoverd killed it already, if it could
    if result.healed_at is None:
        result.healed_at = healed_at
    wait_redundant(lab, timeout=timeout)
    result.redundant_at = boottime()
    return result.redundant_at - result.healed_at

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

ZooKeeper trouble (DESIGN.md), on the lab's ensemble of three (lab/ensemble.py):

- ``zk-leader``: the ZooKeeper leader killed. An election, not a failure: expected, no failover
  and no client write failing. Watched for ``OBSERVE_S`` seconds; no takeover awaited.
- ``zk-isolated-follower``: the active and the follower its session is on (moved there first if
  need be) cut off from the leader, the third server and the passive. The follower answers
  reads until it notices (syncLimit), the active's session expires at the leader: expected, the
  passive takes over and no sample sees two primaries.
- ``zk-down``: all three servers stopped for ``ZK_DOWN_S`` seconds. With the failsafe (peer
  pledges, on in the lab), expected: no failover, writes acknowledged throughout, and the
  active holding the lease again (a new epoch) once ZooKeeper is back; without it, the active
  self-fences and the site serves again once ZooKeeper is back.
- ``zk-down-blip``: all three servers stopped for ``ZK_BLIP_DOWN_S`` seconds, and during it the
  nodes cut off from each other for ``BLIP_S`` (a peer that stalls, datagrams lost): the active
  self-fences once its pledges lapse, as it must, and serves again, same epoch, once its peer
  pledges again; ZooKeeper still down. Expected: no failover, and no gap much longer than the
  blip.
- ``zk-cut-active``: the active cut off from all three servers, not from the passive. With the
  failsafe, expected: the active keeps serving under the passive's pledges (without it, the
  passive takes over after the session). Watched for ``OBSERVE_S`` seconds, takeover or not.
- ``zk-cut-both``: the active cut off from all three servers and from the passive: no pledge
  can reach it, it self-fences, the passive takes over.

Each run reports, besides the outage, the failovers the client saw and the longest time without
an acknowledged write (lab/workload.py), and what was done (``ScenarioResult.fault``: the server
killed or isolated, where the sessions were); ``restore`` heals it (servers started, cuts gone).
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
from lab.cluster import ZK_SERVERS, Lab, LabError
from lab.ensemble import ZooKeeperFaultError
from lab.workload import JsonlFollower, Verdict, analyze, read_jsonl

NODES = ("fln1", "fln2")
REPO = Path(__file__).resolve().parents[1]
SCENARIOS = (
    "crash",
    "app",
    "postgres",
    "squid",
    "freeze",
    "switchover",
    "restart",
    "pause-partition",
    "pg-freeze",
    "zk-down",
    "zk-down-blip",
    "zk-leader",
    "zk-isolated-follower",
    "zk-cut-active",
    "zk-cut-both",
)
ZK_DOWN_S = 60.0  # zk-down: how long ZooKeeper stays stopped
ZK_BLIP_DOWN_S = 30.0  # zk-down-blip: how long ZooKeeper stays stopped...
BLIP_AT_S, BLIP_S = 8.0, 3.0  # ... and when, in it, the nodes are cut off from each other
# Faults that end by themselves, after so many seconds.
ENDS_AFTER_S = {"zk-down": ZK_DOWN_S, "zk-down-blip": ZK_BLIP_DOWN_S}
# Scenarios watched for a fixed time after the fault instead of until a takeover: none is
# expected (zk-leader), or none once the failsafe is there (zk-cut-active, zk-down: watched
# until well after ZooKeeper is back).
OBSERVE_S = {
    "zk-leader": 10.0,
    "zk-cut-active": 20.0,
    "zk-down": ZK_DOWN_S + 15.0,
    "zk-down-blip": ZK_BLIP_DOWN_S + 15.0,
}
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
    fault: dict[str, Any] = field(default_factory=dict)  # what was done (server, sessions...)
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
            "failovers": self.verdict.failovers,
            "max_gap_s": self.verdict.max_gap_s,
            "acknowledged": self.verdict.acknowledged,
            "failed": self.verdict.failed,
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
            "fault": self.fault,
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


def _restart_daemon(lab: Lab, node: str) -> None:
    """`systemctl restart failoverd` on the active, as the lab runs it: SIGTERM (the daemon steps
    down: VIP off, a clean stop, the lease released with the final LSN), then a fresh start,
    which comes back as a passive of the new active. Not a fault: a switchover nobody asked
    for, measured the same way."""
    lab.stop_component(node, "failoverd")
    lab.start_component(node, "failoverd")


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


def _zk_down(lab: Lab, node: str, plan: Plan) -> threading.Timer:
    """All three ZooKeeper servers stopped for ZK_DOWN_S seconds: nobody can take the lease.
    They come back by themselves (the returned timer starts them)."""
    lab.zk.stop_all()
    timer = threading.Timer(ZK_DOWN_S, lab.zk.start_all)
    timer.start()
    return timer


def _zk_down_blip(lab: Lab, node: str, plan: Plan) -> threading.Timer:
    """``_zk_down`` for ZK_BLIP_DOWN_S, the nodes cut off from each other BLIP_S into it."""
    lab.zk.stop_all()
    threading.Timer(BLIP_AT_S, lab.partition_nodes).start()
    threading.Timer(BLIP_AT_S + BLIP_S, lab.heal_nodes).start()
    timer = threading.Timer(ZK_BLIP_DOWN_S, lab.zk.start_all)
    timer.start()
    return timer


Plan = dict[str, Any]  # what a scenario's preparation chose, for its fault and its restore


def _plan_zk_leader(lab: Lab, active: str) -> Plan:
    return {"zk_server": lab.zk.wait_serving(), "sessions": lab.zk.sessions(NODES)}


def isolation_plan(
    leader: str, sessions: dict[str, str | None], active: str
) -> tuple[str, dict[str, str]]:
    """Pure: the follower to isolate with the active, and the session moves that puts the
    active's session on it and the passive's off it: ``(follower, {node: server})``. The
    active's own follower when it is on one; else a follower the passive is not on. A passive
    sharing the chosen follower moves to the leader."""
    passive = other(active)
    followers = [s for s in ZK_SERVERS if s != leader]
    on = sessions.get(active)
    follower = on if on in followers else next(f for f in followers if f != sessions.get(passive))
    moves: dict[str, str] = {}
    if on != follower:
        moves[active] = str(follower)
    if sessions.get(passive) == follower:
        moves[passive] = leader
    return str(follower), moves


def _plan_isolated_follower(lab: Lab, active: str) -> Plan:
    """``isolation_plan`` carried out: the sessions moved where the partition needs them."""
    leader = lab.zk.wait_serving()
    before = lab.zk.sessions(NODES)
    follower, moves = isolation_plan(leader, before, active)
    for node, server in moves.items():
        lab.zk.move_session(node, server)
    after = lab.zk.sessions(NODES)
    if after[active] != follower or after[other(active)] == follower:
        raise ScenarioError(f"sessions not where the partition needs them: {after}")
    return {
        "zk_server": follower,
        "leader": leader,
        "third": next(s for s in ZK_SERVERS if s not in (leader, follower)),
        "sessions_before": before,
        "moved": moves,
    }


def _isolate_follower(lab: Lab, node: str, plan: Plan) -> None:
    """The active and its follower on one side; the leader, the third server and the passive
    on the other (the client reaches everyone)."""
    lab.zk.cut_node(node, [plan["leader"], plan["third"]])
    lab.partition_nodes()
    lab.zk.isolate(plan["zk_server"], nodes=[other(node)])


def _cut_both(lab: Lab, node: str, plan: Plan) -> None:
    lab.zk.cut_node(node)
    lab.partition_nodes()


PREPARE: dict[str, Callable[[Lab, str], Plan]] = {
    "zk-leader": _plan_zk_leader,
    "zk-isolated-follower": _plan_isolated_follower,
}
FAULTS: dict[str, Callable[[Lab, str, Plan], object]] = {
    "crash": lambda lab, n, _: lab.crash(n),
    "app": lambda lab, n, _: lab.stop_component(n, "app"),
    "postgres": lambda lab, n, _: _kill_postgres(lab, n),
    "squid": lambda lab, n, _: lab.stop_component(n, "squid"),
    "freeze": lambda lab, n, _: lab.freeze_daemon(n),
    "switchover": lambda lab, n, _: _switchover(lab, n),
    "restart": lambda lab, n, _: _restart_daemon(lab, n),
    "pause-partition": lambda lab, n, _: _pause_partition(lab, n),
    "pg-freeze": lambda lab, n, _: lab.signal_postgres(n, signal.SIGSTOP),
    "zk-down": _zk_down,
    "zk-down-blip": _zk_down_blip,
    "zk-leader": lambda lab, n, plan: lab.zk.kill(plan["zk_server"]),
    "zk-isolated-follower": _isolate_follower,
    "zk-cut-active": lambda lab, n, _: lab.zk.cut_node(n),
    "zk-cut-both": _cut_both,
}
# Restored by healing every cut in the lab.
CUT_SCENARIOS = (
    "pause-partition",
    "zk-isolated-follower",
    "zk-cut-active",
    "zk-cut-both",
    "zk-down-blip",
)


def surviving_ids(lab: Lab, node: str) -> set[str]:
    rows = lab.query(node, "SELECT id FROM donations", dbname="donations", timeout=10)
    return {r[0] for r in rows}


def takeover_phases(lab: Lab, via: str, fault_wall: float) -> dict[str, float]:
    """Phases of the takeover from failoverd's history record, plus detection: from the fault
    to the moment the new active started to take over."""
    for rec in reversed(history(lab, via)):
        when = rec.get("time")
        if not isinstance(when, int | float) or float(when) < fault_wall:
            continue  # an earlier takeover: none followed this fault
        if rec.get("kind") in TAKEOVER_KINDS and rec.get("to") == via:
            phases = {k: float(v) for k, v in (rec.get("phases") or {}).items()}
            when = rec.get("time")
            # "promotion" runs from the lease going free (older records: "total" did).
            after_lease = phases.get("promotion", phases.get("total"))
            if isinstance(when, int | float) and after_lease is not None:
                phases["detection"] = max(0.0, float(when) - after_lease - fault_wall)
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
    """One scenario on a redundant cluster and a whole ZooKeeper ensemble; leaves the faulty
    node as the fault left it (but for faults that end by themselves: zk-down, freeze). The
    fault comes once at least ten writes are acknowledged and ``traffic_before`` seconds have
    passed; the client goes on ``traffic_after`` seconds past the takeover (late
    acknowledgements show there), or, for the scenarios of OBSERVE_S, until that long after the
    fault, takeover or not."""
    if scenario not in FAULTS:
        raise ValueError(f"unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})")
    observe = OBSERVE_S.get(scenario)
    if takeover_timeout is None:
        takeover_timeout = observe or 30.0
    try:
        lab.zk.wait_serving(timeout=30)
    except ZooKeeperFaultError as e:
        raise ScenarioError(str(e)) from None
    active = wait_redundant(lab)
    passive = other(active)
    plan: Plan = {}
    if scenario in PREPARE:
        try:
            plan = PREPARE[scenario](lab, active)
        except (LabError, ZooKeeperFaultError) as e:
            raise ScenarioError(f"{scenario}: could not prepare: {e}") from None
        if wait_redundant(lab) != active:
            raise ScenarioError(f"{scenario}: the active moved while preparing ({plan})")
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
        healing = FAULTS[scenario](lab, active, plan)

        def taken_over() -> bool:
            """A write acknowledged under a newer epoch: the service is back (by the passive,
            or, after a ZooKeeper outage, by the old active leading again)."""
            return any(
                a.get("ok") and a["sent"] >= fault_at and int(a["epoch"]) > old_epoch
                for a in workload.acks()
            )

        if observe is not None:  # watched for a while, takeover or not
            time.sleep(max(0.0, fault_at + takeover_timeout - boottime()))
        else:
            try:
                wait_until("the service to be back", taken_over, takeover_timeout, step=0.05)
            except ScenarioError as e:
                notes.append(str(e))
            time.sleep(traffic_after)  # late acknowledgements would show here
    finally:
        workload.stop()
    healed_at: float | None = None
    if isinstance(healing, threading.Timer):  # the fault ends by itself
        ends_after = ENDS_AFTER_S[scenario]
        healing.join(timeout=ends_after + 10)
        healed_at = fault_at + ends_after
    if scenario == "freeze":
        lab.thaw_daemon(active)  # it finds itself fenced, and rejoins by itself
        healed_at = boottime()
    acks = workload.acks()
    samples = read_jsonl(workload.out / "samples.jsonl")
    # The acknowledged ids are looked for on the one primary left (the passive, after a
    # takeover; the active still, after a fault it rode out), else on the passive.
    primaries = lab.writable_primaries()
    survivor = primaries[0] if len(primaries) == 1 else passive
    try:
        ids: set[str] | None = surviving_ids(lab, survivor)
    except LabError as e:
        ids = None
        notes.append(f"could not read the surviving primary: {e}")
    verdict = analyze(acks, samples, fault_at, ids)
    phases = takeover_phases(lab, verdict.served_after or passive, fault_wall)
    active_after = verdict.served_after
    if active_after is None and observe is not None:  # nothing taken over: who serves now
        after = [a for a in acks if a.get("ok") and a["sent"] >= fault_at]
        active_after = str(max(after, key=lambda a: a["done"])["node"]) if after else None
    return ScenarioResult(
        scenario,
        active,
        active_after,
        verdict,
        phases,
        notes,
        fault=plan,
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
    elif scenario in CUT_SCENARIOS:
        lab.heal_cuts()
    elif scenario == "pg-freeze":
        lab.signal_postgres(node, signal.SIGCONT)  # failoverd killed it already, if it could
    elif scenario == "zk-leader":
        lab.zk.start(result.fault["zk_server"], wait=False)  # it rejoins as a follower
    if scenario.startswith("zk-"):  # the whole ensemble back, as the next run needs it
        try:
            lab.zk.wait_serving(timeout=timeout)
        except ZooKeeperFaultError as e:
            raise ScenarioError(str(e)) from None
    if result.healed_at is None:
        result.healed_at = healed_at
    wait_redundant(lab, timeout=timeout)
    result.redundant_at = boottime()
    return result.redundant_at - result.healed_at

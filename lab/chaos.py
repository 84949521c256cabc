"""The chaos nemesis: fault after fault on the lab while writers post donations through the VIP.

Each fault is picked at random (a seeded ``random.Random``, so a seed replays the same run),
held for a random time, healed as the world would heal it, and followed by a wait for the
cluster to be healthy again (redundant: one active, the other streaming from it) before the
next. The run starts with every kind once, in a shuffled order, then draws kinds at random, so
any run of at least ``len(KINDS)`` faults covers them all. What happened is recorded as a
``lab.chaos_check.History`` and judged there; nothing here decides what is a violation.

The faults, made with what this kernel has (no netem, no iptables): signals, links set down,
blackhole routes, and routes switched on and off in short random slots for loss. Which node a
fault hits is part of the kind (``active``, ``passive``) or drawn (``either``); a fault on the
passive, a ZooKeeper leader kill and a cut between the nodes must not move the service.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from failoverd.clock import boottime, walltime
from failoverd.core.context import OPERATOR_NEEDED
from lab.chaos_check import Fault, History, OperatorWait
from lab.cluster import ADDRESSES, NODES, Lab, LabError
from lab.decisions import read_decisions
from lab.ensemble import ZooKeeperFaultError
from lab.scenarios import Workload, other, surviving_ids
from lab.workload import read_jsonl

Target = Literal["active", "passive", "either", "ensemble", "nodes"]
Heal = Callable[[], object]
HEALTHY_BOUND = 60.0  # seconds from a heal to a redundant cluster
# Operator waits that protect acknowledged data or safety; the others (a rejoin left to a
# person by configuration) are violations in a lab configured to heal by itself.
DATA_AT_RISK = frozenset(
    {"not_sync_standby", "two_primaries", "peer_left_serving", "fencing_exhausted"}
)
APP_SLOW_S = 3.0  # /health answers after this long: past every check's timeout


@dataclass(frozen=True)
class FaultKind:
    name: str
    target: Target
    hold: tuple[float, float]  # seconds the fault lasts before its heal, drawn uniformly
    inject: Callable[[ChaosRun, str], Heal]
    # Whether the fault may move the service, by the role of the node it hit ("active",
    # "passive"; "" for the ensemble or the link between the nodes).
    may_move: Callable[[str], bool]


def _on_active(role: str) -> bool:
    return role == "active"


def _always(role: str) -> bool:
    return True


def _never(role: str) -> bool:
    return False


class ChaosRun:
    """One run: the lab, the random source, the history being recorded."""

    def __init__(
        self,
        lab: Lab,
        workdir: Path,
        seed: int,
        *,
        healthy_bound: float = HEALTHY_BOUND,
        say: Callable[[str], None] = print,
    ) -> None:
        self.lab = lab
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.seed = seed
        self.healthy_bound = healthy_bound
        self.say = say
        self.faults: list[Fault] = []
        self.notes: list[str] = []

    # -- the driver --------------------------------------------------------------------------

    def plan(self, count: int) -> list[FaultKind]:
        """Every kind once in a shuffled order, then kinds drawn at random."""
        kinds = list(KINDS)
        self.rng.shuffle(kinds)
        while len(kinds) < count:
            kinds.append(self.rng.choice(KINDS))
        return kinds[:count]

    def run(self, count: int, *, writers: int = 1) -> History:
        plan = self.plan(count)
        budget = sum(k.hold[1] for k in plan) + count * (self.healthy_bound + 30) + 60
        self.lab.zk.wait_serving(timeout=30)
        self.lab.wait_redundant(timeout=self.healthy_bound)
        workload = Workload(self.lab, self.workdir, duration=budget, writers=writers)
        started_wall, started_boot = walltime(), boottime()
        try:
            for index, kind in enumerate(plan):
                if not self.one(index, kind):
                    self.notes.append(f"stopped after fault #{index}: not healthy again")
                    break
        finally:
            workload.stop()
        ids = self._surviving_ids()
        return History(
            seed=self.seed,
            faults=list(self.faults),
            acks=list(workload.acks()),
            samples=read_jsonl(workload.out / "samples.jsonl"),
            surviving_ids=ids,
            operator_waits=self._operator_waits(started_wall, started_boot),
        )

    def one(self, index: int, kind: FaultKind) -> bool:
        """Inject, hold, heal, wait healthy; records the fault. False: not healthy again."""
        active_before, epoch_before = self._lease()
        if active_before is None:
            active_before = self.lab.wait_redundant(timeout=self.healthy_bound)
            active_before, epoch_before = self._lease()
        role, node = self._target(kind, active_before or NODES[0])
        hold = round(self.rng.uniform(*kind.hold), 2)
        self.say(f"#{index} {kind.name} on {node or kind.target} for {hold:.1f} s")
        started = boottime()
        detail = ""
        try:
            heal = kind.inject(self, node)
        except (LabError, ZooKeeperFaultError, OSError) as e:
            detail = f"could not inject: {e}"
            heal = _nothing
        time.sleep(max(0.0, started + hold - boottime()))
        healed = boottime()
        try:
            heal()
        except (LabError, ZooKeeperFaultError, OSError) as e:
            detail = f"{detail} could not heal: {e}".strip()
        healthy_at: float | None = None
        try:
            self.lab.zk.wait_serving(timeout=self.healthy_bound)
            self.lab.wait_redundant(timeout=max(1.0, healed + self.healthy_bound - boottime()))
            healthy_at = boottime()
        except (LabError, ZooKeeperFaultError) as e:
            detail = f"{detail} {e}".strip()
        active_after, epoch_after = self._lease()
        self.faults.append(
            Fault(
                index=index,
                kind=kind.name,
                target=node or kind.target,
                started=started,
                healed=healed,
                healthy_at=healthy_at,
                may_move=kind.may_move(role),
                active_before=active_before,
                epoch_before=epoch_before,
                active_after=active_after,
                epoch_after=epoch_after,
                detail=detail,
            )
        )
        took = "never" if healthy_at is None else f"{healthy_at - healed:.1f} s"
        self.say(f"   healed; healthy again after {took}; active {active_before} -> {active_after}")
        return healthy_at is not None

    def _target(self, kind: FaultKind, active: str) -> tuple[str, str]:
        """(role, node) the fault hits; ("", "") for the ensemble or the link between nodes."""
        if kind.target == "active":
            return "active", active
        if kind.target == "passive":
            return "passive", other(active)
        if kind.target == "either":
            role = self.rng.choice(("active", "passive"))
            return role, active if role == "active" else other(active)
        return "", ""

    def _lease(self) -> tuple[str | None, int | None]:
        doc = self.lab.cluster_status()
        lease = (doc or {}).get("lease") or {}
        node, epoch = lease.get("node"), lease.get("epoch")
        return (str(node) if node else None), (int(epoch) if epoch is not None else None)

    def _surviving_ids(self) -> set[str] | None:
        try:
            primary = self.lab.wait_redundant(timeout=self.healthy_bound)
            return surviving_ids(self.lab, primary)
        except LabError as e:
            self.notes.append(f"could not read the surviving primary: {e}")
            return None

    def _operator_waits(self, wall0: float, boot0: float) -> list[OperatorWait]:
        """Every decision whose reason code waits for a person, from both daemons' logs."""
        return [
            OperatorWait(
                t=boot0 + (d.wall - wall0),
                node=d.node,
                reason=d.event,
                data_at_risk=d.event in DATA_AT_RISK,
            )
            for node in NODES
            for d in read_decisions(self.lab.daemon_log(node), node, since_wall=wall0)
            if d.event in OPERATOR_NEEDED
        ]


# -- the faults --------------------------------------------------------------------------------


def _nothing() -> None:
    """A fault that ends by itself (the daemon restarts what was killed)."""


def _crash(run: ChaosRun, node: str) -> Heal:
    run.lab.crash(node)
    return lambda: _reboot(run.lab, node)


def _reboot(lab: Lab, node: str) -> None:
    """A crashed node powered on again: its link, then its services; failoverd rejoins
    PostgreSQL by itself."""
    lab.restore_link(node, drop_vip=True)
    for component in ("sshd", "app", "squid", "failoverd"):
        lab.start_component(node, component)


def _daemon_kill(run: ChaosRun, node: str) -> Heal:
    pid = run.lab.pid(node, "failoverd")
    if pid is None:
        raise LabError(f"failoverd is not running on {node}")
    os.kill(pid, signal.SIGKILL)
    return lambda: run.lab.start_component(node, "failoverd")


def _daemon_freeze(run: ChaosRun, node: str) -> Heal:
    run.lab.freeze_daemon(node)
    return lambda: _quietly(run.lab.thaw_daemon, node)


def _quietly(action: Callable[[str], object], node: str) -> None:
    """A heal whose target may be gone (a frozen daemon that was fenced and restarted)."""
    try:
        action(node)
    except LabError as e:
        print(f"   heal: {e}")


def _postgres_kill(run: ChaosRun, node: str) -> Heal:
    pid = run.lab.pid(node, "postgres")
    if pid is None:
        raise LabError(f"{node}: PostgreSQL is not running")
    os.kill(pid, signal.SIGKILL)
    return _nothing


def _postgres_freeze(run: ChaosRun, node: str) -> Heal:
    run.lab.signal_postgres(node, signal.SIGSTOP)
    return lambda: _quietly(lambda n: run.lab.signal_postgres(n, signal.SIGCONT), node)


def _component_down(name: str) -> Callable[[ChaosRun, str], Heal]:
    def inject(run: ChaosRun, node: str) -> Heal:
        run.lab.stop_component(node, name)
        return lambda: run.lab.start_component(node, name)

    return inject


def _app_slow(run: ChaosRun, node: str) -> Heal:
    fault_file = run.lab.node_dir(node) / "app.fault"
    fault_file.write_text(f"slow:{APP_SLOW_S}\n")
    return lambda: fault_file.write_text("")


def _zk_cut(run: ChaosRun, node: str) -> Heal:
    run.lab.zk.cut_node(node)
    return lambda: run.lab.zk.heal_node(node)


def _node_cut(run: ChaosRun, node: str) -> Heal:
    run.lab.partition_nodes()
    return run.lab.heal_nodes


def _zk_leader_kill(run: ChaosRun, node: str) -> Heal:
    leader = run.lab.zk.wait_serving(timeout=30)
    run.lab.zk.kill(leader)
    return lambda: run.lab.zk.start(leader, wait=False)


def _zk_stop_all(run: ChaosRun, node: str) -> Heal:
    run.lab.zk.stop_all()
    return run.lab.zk.start_all


class _Flapper:
    """Intermittent loss on one node's link: every other lab host blackholed from inside the
    node's namespace in short random slots (on 20-150 ms, off 50-300 ms), until stopped."""

    def __init__(self, lab: Lab, node: str, rng: random.Random, limit_s: float) -> None:
        self.lab, self.node, self.limit_s = lab, node, limit_s
        self.rng = random.Random(rng.random())  # its own stream: the main one stays replayable
        self.stop = threading.Event()
        self.hosts = [h for h in ADDRESSES if h != node]
        self.thread = threading.Thread(target=self._flap, daemon=True)
        self.thread.start()

    def _flap(self) -> None:
        deadline = time.monotonic() + self.limit_s
        for _ in range(int(self.limit_s / 0.07) + 1):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            self._routes("replace")
            self.stop.wait(self.rng.uniform(0.02, 0.15))
            self._routes("del")
            self.stop.wait(self.rng.uniform(0.05, 0.3))

    def _routes(self, verb: str) -> None:
        batch = "".join(f"route {verb} blackhole {ADDRESSES[h]}/32\n" for h in self.hosts)
        subprocess.run(
            ["ip", "-n", self.node, "-force", "-batch", "-"],
            input=batch,
            text=True,
            capture_output=True,
            timeout=5,
            check=False,
        )

    def end(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self._routes("del")


def _link_loss(run: ChaosRun, node: str) -> Heal:
    flapper = _Flapper(run.lab, node, run.rng, limit_s=60.0)
    return flapper.end


def _takeover_kill(run: ChaosRun, node: str) -> Heal:
    """The active crashes; the passive's daemon is killed while it takes over (a random moment
    in the second after the session would expire)."""
    passive = other(node)
    run.lab.crash(node)
    time.sleep(run.rng.uniform(1.8, 3.0))
    pid = run.lab.pid(passive, "failoverd")
    if pid is not None:
        os.kill(pid, signal.SIGKILL)

    def heal() -> None:
        run.lab.start_component(passive, "failoverd")
        _reboot(run.lab, node)

    return heal


BACKGROUND = ("zk-leader-kill", "node-cut", "app-slow-passive", "postgres-freeze-passive")


def _promote_during(run: ChaosRun, node: str) -> Heal:
    """`failoverctl promote` while another fault is on: the switchover goes through or is
    refused with a reason; either way nothing unsafe."""
    background = run.rng.choice(BACKGROUND)
    passive = other(node)
    if background == "zk-leader-kill":
        heal = _zk_leader_kill(run, node)
    elif background == "node-cut":
        heal = _node_cut(run, node)
    elif background == "app-slow-passive":
        heal = _app_slow(run, passive)
    else:
        heal = _postgres_freeze(run, passive)
    time.sleep(run.rng.uniform(0.0, 1.0))
    proc = run.lab.failoverctl(node, "promote", "--yes", "--timeout", "20", timeout=40)
    out = (proc.stdout + proc.stderr).strip().splitlines()
    run.say(f"   promote during {background}: exit {proc.returncode}: {out[-1] if out else ''}")
    return heal


KINDS: tuple[FaultKind, ...] = (
    FaultKind("active-crash", "active", (1.0, 5.0), _crash, _always),
    FaultKind("passive-crash", "passive", (1.0, 5.0), _crash, _never),
    FaultKind("daemon-kill", "either", (0.5, 4.0), _daemon_kill, _on_active),
    FaultKind("daemon-freeze", "either", (0.5, 4.0), _daemon_freeze, _on_active),
    FaultKind("postgres-kill", "either", (0.5, 3.0), _postgres_kill, _on_active),
    FaultKind("postgres-freeze", "either", (0.5, 4.0), _postgres_freeze, _on_active),
    FaultKind("app-down", "either", (0.5, 5.0), _component_down("app"), _on_active),
    FaultKind("app-slow", "either", (0.5, 5.0), _app_slow, _on_active),
    FaultKind("squid-down", "either", (0.5, 5.0), _component_down("squid"), _on_active),
    FaultKind("zk-cut-active", "active", (1.0, 6.0), _zk_cut, _always),
    FaultKind("node-cut", "nodes", (1.0, 6.0), _node_cut, _never),
    FaultKind("zk-leader-kill", "ensemble", (1.0, 5.0), _zk_leader_kill, _never),
    FaultKind("zk-stop-all", "ensemble", (2.0, 10.0), _zk_stop_all, _always),
    FaultKind("link-loss", "active", (2.0, 8.0), _link_loss, _always),
    FaultKind("takeover-kill", "active", (0.5, 2.0), _takeover_kill, _always),
    FaultKind("promote-during-fault", "active", (0.5, 3.0), _promote_during, _always),
)
KIND_NAMES = tuple(k.name for k in KINDS)


def history_record(history: History) -> dict[str, Any]:
    """The whole history as one JSON document, to be judged again later."""
    return {
        "seed": history.seed,
        "profile": history.profile,
        "faults": [f.record() for f in history.faults],
        "acks": history.acks,
        "samples": history.samples,
        "surviving_ids": None if history.surviving_ids is None else sorted(history.surviving_ids),
        "operator_waits": [w.__dict__ for w in history.operator_waits],
    }


def history_from_record(doc: dict[str, Any]) -> History:
    ids = doc.get("surviving_ids")
    return History(
        seed=int(doc["seed"]),
        profile=str(doc.get("profile", "default")),
        faults=[Fault.from_record(f) for f in doc["faults"]],
        acks=list(doc["acks"]),
        samples=list(doc["samples"]),
        surviving_ids=None if ids is None else set(ids),
        operator_waits=[OperatorWait(**w) for w in doc.get("operator_waits", [])],
    )

"""The chaos suite's judge: one pure pass over a whole recorded history.

A chaos run (``bench/chaos.py``) injects fault after fault while writers post donations through
the VIP and a sampler records, every 50 ms, who holds the VIP and which PostgreSQL accepts
writes. This module reads what was recorded and nothing else, so that a history written to disk
can be judged again, and so that the judge itself is tested on histories made to hold each kind
of violation (tests/unit/test_chaos_check.py).

The rules, each a ``Violation.rule``:

- ``two_vip_holders`` / ``two_primaries``: a sample in which two nodes hold the VIP, or two
  PostgreSQL servers accept writes;
- ``epoch_order``: a write of epoch e acknowledged after the first acknowledgement of a later
  epoch (the old active kept committing after the new one started);
- ``lost_write``: an acknowledged donation missing on the surviving primary at the end;
- ``not_healed``: after a fault's heal, the cluster did not become healthy (redundant: one
  active, the other streaming) within ``healthy_bound``;
- ``moved``: a fault that must not move the service did (a ZooKeeper leader kill, a cut
  between the nodes, any fault on the passive): the node or epoch acknowledging writes changed
  while it lasted, or the lease changed hands;
- ``operator_needed``: a node waited for an operator although no acknowledged data would have
  been lost without one;
- ``blind_sampling``: the sampler stalled for longer than ``max_sample_gap`` while a fault was
  active, so a split brain could have gone unseen: the history cannot clear that fault.

Times are CLOCK_BOOTTIME seconds (lab/workload.py), one time line for every namespace.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.workload import epoch_order_violations, max_gap

SAMPLE_INTERVAL = 0.05  # seconds: the sampler's cadence the issue asks for
MAX_SAMPLE_GAP = 1.0  # seconds without a sample during a fault before the history goes blind
HEALTHY_BOUND = 60.0  # seconds from a heal to a redundant cluster (DESIGN: "heal by itself")


@dataclass(frozen=True)
class Fault:
    """One fault the nemesis injected, as it recorded it."""

    index: int
    kind: str
    target: str  # the node, ZooKeeper server or link it hit
    started: float
    healed: float | None  # None: never healed (the run was cut short)
    healthy_at: float | None  # when the cluster was seen redundant again after the heal
    may_move: bool  # whether this fault may move the service to the other node
    active_before: str | None = None  # the lease holder when it started
    epoch_before: int | None = None
    active_after: str | None = None  # the lease holder once healthy again
    epoch_after: int | None = None
    detail: str = ""

    @property
    def window_end(self) -> float | None:
        """Until when the fault's effects count as its own: healthy again, else healed."""
        return self.healthy_at if self.healthy_at is not None else self.healed

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Fault:
        return cls(
            index=int(rec["index"]),
            kind=str(rec["kind"]),
            target=str(rec["target"]),
            started=float(rec["started"]),
            healed=_opt_float(rec.get("healed")),
            healthy_at=_opt_float(rec.get("healthy_at")),
            may_move=bool(rec["may_move"]),
            active_before=_opt_str(rec.get("active_before")),
            epoch_before=_opt_int(rec.get("epoch_before")),
            active_after=_opt_str(rec.get("active_after")),
            epoch_after=_opt_int(rec.get("epoch_after")),
            detail=str(rec.get("detail", "")),
        )

    def record(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "target": self.target,
            "started": self.started,
            "healed": self.healed,
            "healthy_at": self.healthy_at,
            "may_move": self.may_move,
            "active_before": self.active_before,
            "epoch_before": self.epoch_before,
            "active_after": self.active_after,
            "epoch_after": self.epoch_after,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class OperatorWait:
    """A node that said it needs an operator (``must_rejoin`` with manual rejoin, a refused
    promotion, ...), and whether acknowledged data would otherwise have been lost."""

    t: float
    node: str
    reason: str
    data_at_risk: bool


@dataclass
class History:
    """Everything a chaos run recorded."""

    seed: int
    faults: list[Fault]
    acks: list[dict[str, Any]]  # lab/workload.py client records: id, sent, done, ok, node, epoch
    samples: list[dict[str, Any]]  # lab/workload.py sampler records: t, vip, writable
    surviving_ids: set[str] | None  # ids on the primary at the end; None: not read
    operator_waits: list[OperatorWait] = field(default_factory=list)
    profile: str = "default"


@dataclass(frozen=True)
class Violation:
    rule: str
    t: float | None
    fault: int | None  # the index of the fault in progress, if any
    text: str

    def line(self) -> str:
        at = "" if self.t is None else f" at t={self.t:.3f}"
        during = "" if self.fault is None else f" during fault #{self.fault}"
        return f"{self.rule}{at}{during}: {self.text}"


@dataclass(frozen=True)
class FaultReport:
    """What one fault cost: the longest time without an acknowledged write while it lasted,
    the time from its heal to a healthy cluster, and the failovers the client saw."""

    index: int
    kind: str
    outage_s: float
    to_healthy_s: float | None
    failovers: int


@dataclass
class Judgement:
    seed: int
    violations: list[Violation]
    faults: list[FaultReport]

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Per fault kind: count, median outage, median time to healthy, failovers."""
        out: dict[str, dict[str, Any]] = {}
        for kind, group in itertools.groupby(
            sorted(self.faults, key=lambda f: f.kind), key=lambda f: f.kind
        ):
            reports = list(group)
            healthy = [r.to_healthy_s for r in reports if r.to_healthy_s is not None]
            out[kind] = {
                "faults": len(reports),
                "outage_median_s": round(statistics.median(r.outage_s for r in reports), 3),
                "to_healthy_median_s": round(statistics.median(healthy), 3) if healthy else None,
                "failovers": sum(r.failovers for r in reports),
            }
        return out


def judge(
    history: History,
    *,
    healthy_bound: float = HEALTHY_BOUND,
    max_sample_gap: float = MAX_SAMPLE_GAP,
) -> Judgement:
    """Every violation in the history, and what each fault cost."""
    faults = sorted(history.faults, key=lambda f: f.started)
    ok = sorted((a for a in history.acks if a.get("ok")), key=lambda a: float(a["done"]))
    violations = [
        *_split_brain(history.samples, faults),
        *_blind_spots(history.samples, faults, max_sample_gap),
        *(Violation("epoch_order", None, None, text) for text in epoch_order_violations(ok)),
        *_lost(ok, history.surviving_ids),
        *_not_healed(faults, healthy_bound),
        *_moved(faults, ok),
        *_operator_needed(history.operator_waits, faults),
    ]
    return Judgement(history.seed, violations, [_report(f, ok) for f in faults])


def fault_at(faults: Sequence[Fault], t: float) -> int | None:
    """The index of the fault whose window holds ``t`` (started to healthy again), if any."""
    for f in faults:
        end = f.window_end
        if f.started <= t and (end is None or t <= end):
            return f.index
    return None


def _split_brain(samples: Iterable[Mapping[str, Any]], faults: Sequence[Fault]) -> list[Violation]:
    out = []
    for s in samples:
        t = float(s["t"])
        vip, writable = list(s.get("vip", ())), list(s.get("writable", ()))
        if len(vip) > 1:
            out.append(Violation("two_vip_holders", t, fault_at(faults, t), f"VIP on {vip}"))
        if len(writable) > 1:
            out.append(
                Violation("two_primaries", t, fault_at(faults, t), f"writable on {writable}")
            )
    return out


def _blind_spots(
    samples: Sequence[Mapping[str, Any]], faults: Sequence[Fault], max_gap_s: float
) -> list[Violation]:
    """Sampler stalls inside a fault's window: that part of the history proves nothing."""
    times = sorted(float(s["t"]) for s in samples)
    out = []
    for f in faults:
        end = f.window_end
        if end is None:
            continue
        inside = [t for t in times if f.started <= t <= end]
        edges = [f.started, *inside, end]
        worst = max((b - a for a, b in itertools.pairwise(edges)), default=0.0)
        if worst > max_gap_s:
            out.append(
                Violation(
                    "blind_sampling",
                    f.started,
                    f.index,
                    f"no VIP/primary sample for {worst:.2f} s (at most {max_gap_s:.2f} s)",
                )
            )
    return out


def _lost(ok: Sequence[Mapping[str, Any]], surviving: set[str] | None) -> list[Violation]:
    if surviving is None:
        return [Violation("lost_write", None, None, "the surviving primary's ids were not read")]
    return [
        Violation(
            "lost_write",
            float(a["done"]),
            None,
            f"donation {a['id']} acknowledged by {a.get('node')} at epoch {a.get('epoch')}",
        )
        for a in ok
        if a["id"] not in surviving
    ]


def _not_healed(faults: Sequence[Fault], bound: float) -> list[Violation]:
    out = []
    for f in faults:
        if f.healed is None:
            out.append(Violation("not_healed", f.started, f.index, f"{f.kind} was never healed"))
        elif f.healthy_at is None:
            out.append(
                Violation("not_healed", f.healed, f.index, f"{f.kind}: not healthy again at all")
            )
        elif f.healthy_at - f.healed > bound:
            out.append(
                Violation(
                    "not_healed",
                    f.healed,
                    f.index,
                    f"{f.kind}: healthy {f.healthy_at - f.healed:.1f} s after the heal "
                    f"(bound {bound:.0f} s)",
                )
            )
    return out


def _moved(faults: Sequence[Fault], ok: Sequence[Mapping[str, Any]]) -> list[Violation]:
    """A fault that must not move the service moved it to the other node: the lease holder
    changed, or the client saw another node acknowledge while the fault lasted. The same node
    re-taking its lease at a new epoch (after a whole-ensemble outage) is no move."""
    out = []
    for f in faults:
        if f.may_move or f.active_before is None:
            continue
        if f.active_after is not None and f.active_after != f.active_before:
            out.append(
                Violation(
                    "moved",
                    f.started,
                    f.index,
                    f"{f.kind} on {f.target}: the lease went from {f.active_before} "
                    f"(epoch {f.epoch_before}) to {f.active_after} (epoch {f.epoch_after})",
                )
            )
            continue
        end = f.window_end
        others = sorted(
            {
                str(a.get("node"))
                for a in ok
                if float(a["done"]) >= f.started
                and (end is None or float(a["done"]) <= end)
                and str(a.get("node")) != f.active_before
            }
        )
        if others:
            out.append(
                Violation(
                    "moved",
                    f.started,
                    f.index,
                    f"{f.kind} on {f.target}: writes acknowledged by {others} while "
                    f"{f.active_before} was active",
                )
            )
    return out


def _operator_needed(waits: Sequence[OperatorWait], faults: Sequence[Fault]) -> list[Violation]:
    return [
        Violation(
            "operator_needed",
            w.t,
            fault_at(faults, w.t),
            f"{w.node} waits for an operator ({w.reason}) with no data at risk",
        )
        for w in waits
        if not w.data_at_risk
    ]


def _report(f: Fault, ok: Sequence[Mapping[str, Any]]) -> FaultReport:
    end = f.window_end if f.window_end is not None else f.started
    inside = [a for a in ok if f.started <= float(a["done"]) <= end]
    nodes = [(str(a.get("node")), a.get("epoch")) for a in inside]
    before = [a for a in ok if float(a["done"]) < f.started]
    if before:
        nodes.insert(0, (str(before[-1].get("node")), before[-1].get("epoch")))
    failovers = sum(1 for x, y in itertools.pairwise(nodes) if x[0] != y[0])
    return FaultReport(
        index=f.index,
        kind=f.kind,
        outage_s=round(max_gap(inside, f.started, end), 3),
        to_healthy_s=(
            round(f.healthy_at - f.healed, 3)
            if f.healthy_at is not None and f.healed is not None
            else None
        ),
        failovers=failovers,
    )


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)

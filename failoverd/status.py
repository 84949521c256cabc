"""The cluster as an operator sees it: a pure assessment of a ZooKeeper view, and its rendering.

Exit codes follow the monitoring-plugin convention so Nagios-style checks and scripts can use
``failoverctl status`` directly: 0 healthy, 1 degraded, 2 critical, 3 unknown.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from failoverd.core import (
    OPERATOR_NEEDED,
    ClusterView,
    MalformedMember,
    MemberStatus,
    ReplicationMode,
    Role,
    format_bytes,
    format_lsn,
)

HEALTHY, DEGRADED, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {HEALTHY: "healthy", DEGRADED: "degraded", CRITICAL: "critical", UNKNOWN: "unknown"}


@dataclass(frozen=True)
class Assessment:
    code: int
    warnings: tuple[str, ...]
    replication: ReplicationMode = ReplicationMode.ASYNC  # the mode of the node that asks
    sync_standby: str | None = None  # the standby named at the current epoch, if any

    @property
    def state(self) -> str:
        return STATE_NAMES[self.code]


def sync_standby(view: ClusterView) -> str | None:
    """The standby the sync record names at the current epoch: the one holding every commit the
    active acknowledged. None when it names none, or an earlier epoch's (the active of that
    epoch vouched for it, not the one now), or the record is missing or malformed."""
    record = view.sync
    if record is None or record.epoch != view.epoch:
        return None
    return record.standby


def _sync_warning(view: ClusterView, mode: ReplicationMode) -> str | None:
    """In sync and strict mode, an active without a named standby, said plainly: the promise
    the mode makes does not hold right now."""
    if mode is ReplicationMode.ASYNC or view.lease is None or sync_standby(view) is not None:
        return None
    record = view.sync
    if record is None:
        which = "no sync record: never written, or unreadable"
    elif record.epoch != view.epoch:
        which = f"the sync record is from epoch {record.epoch}"
    else:
        which = "the sync record names none"
    text = (
        f"replication mode {mode.value}, but no synchronous standby is named at epoch "
        f"{view.epoch} ({which}): acknowledged writes are on the primary only: no automatic "
        "failover after a crash"
    )
    if mode is ReplicationMode.STRICT:
        text += "; strict: new writes wait until a standby confirms them"
    return text


def assess(
    view: ClusterView,
    members: Sequence[str],
    mode: ReplicationMode = ReplicationMode.ASYNC,
    *,
    from_records: bool = False,
) -> Assessment:
    """Judge the cluster from its records; every finding is a sentence an operator can act on.

    ``mode`` is the replication mode of the node asking (its ``[replication] mode``): in sync
    and strict mode an active without a synchronous standby is degraded. ``from_records``: the
    members were learnt from ZooKeeper (an admin host, ``member_names``), so a cluster that
    shows fewer than its two nodes is missing one."""
    code = HEALTHY
    warnings: list[str] = []

    def worse(level: int, text: str) -> None:
        nonlocal code
        code = max(code, level)
        warnings.append(text)

    if from_records and len(members) < 2:
        known = ", ".join(members) or "no node"
        worse(
            DEGRADED,
            f"only {known} known from ZooKeeper: the other node publishes no status (daemon "
            "down or cut off from ZooKeeper); a node's configuration would name it",
        )

    records = {m.node: m for m in view.members}
    actives = [
        m for m in view.members if isinstance(m, MemberStatus) and m.role == Role.ACTIVE.value
    ]
    if len(actives) > 1:
        worse(
            CRITICAL, "more than one node says it is active: " + ", ".join(m.node for m in actives)
        )
    if view.lease is None:
        worse(CRITICAL, "no active node: the lease is free")
    else:
        holder = records.get(view.lease.node)
        if not isinstance(holder, MemberStatus):
            worse(DEGRADED, f"{view.lease.node} holds the lease but publishes no status")
        elif holder.role == Role.PROMOTING.value:
            worse(DEGRADED, f"{holder.node} is taking over (epoch {view.lease.epoch})")
        elif holder.role != Role.ACTIVE.value:
            worse(CRITICAL, f"{holder.node} holds the lease but is {holder.role}: {holder.reason}")
    for name in members:
        m = records.get(name)
        if m is None:
            worse(DEGRADED, f"{name} publishes no status: daemon down or cut off from ZooKeeper")
        elif isinstance(m, MalformedMember):
            worse(DEGRADED, f"{name}'s member record is malformed: {m.error}")
        else:
            failing = [c for c in m.checks if not c.healthy]
            for c in failing:
                worse(DEGRADED, f"{name} check {c.name} failing: {c.reason}")
            if m.reason_code in OPERATOR_NEEDED:
                worse(DEGRADED, f"operator needed on {name}: {m.reason}")
            elif m.role == Role.PASSIVE.value and not m.eligible:
                worse(DEGRADED, f"{name} not eligible: {m.reason}")
            elif m.role in (Role.FENCED.value, Role.STARTING.value, Role.DEMOTING.value):
                worse(DEGRADED, f"{name} is {m.role}: {m.reason}")
    for name in records:
        if name not in members:
            worse(DEGRADED, f"{name} publishes status but is not a configured member")
    sync_warning = _sync_warning(view, mode)
    if sync_warning is not None:
        worse(DEGRADED, sync_warning)
    named = sync_standby(view)
    if named is not None and named not in members:
        worse(DEGRADED, f"the sync record names {named}, which is not a configured member")
    for problem in view.problems:
        worse(DEGRADED, problem)
    if view.paused:
        warnings.append("cluster paused (maintenance): failoverd changes nothing until resumed")
    return Assessment(code, tuple(warnings), mode, named)


def member_names(view: ClusterView) -> list[str]:
    """The members as ZooKeeper knows them, for a failoverctl without a node's configuration:
    every node with a member record, the lease holder and the last leader."""
    names = [m.node for m in view.members]
    for extra in (
        view.lease.node if view.lease is not None else None,
        view.last_leader.node if view.last_leader is not None else None,
    ):
        if extra is not None:
            names.append(extra)
    return sorted(set(names))


def mode_of(view: ClusterView) -> ReplicationMode:
    """The replication mode as ZooKeeper shows it, for a failoverctl without a node's
    configuration: the active writes the sync record only in sync or strict mode (told apart
    only by the nodes' own configuration; status judges both alike)."""
    return ReplicationMode.SYNC if view.sync is not None else ReplicationMode.ASYNC


def _when(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(wall))


def _sync_json(view: ClusterView, now: float) -> dict[str, object] | None:
    record = view.sync
    if record is None:
        return None
    doc = asdict(record)
    doc["age_s"] = round(max(0.0, now - record.written_at), 3) if record.written_at else None
    return doc


def as_json(
    view: ClusterView, assessment: Assessment, cluster: str, chroot: str, now: float
) -> str:
    members = []
    for m in view.members:
        if isinstance(m, MalformedMember):
            members.append({"node": m.node, "malformed": m.error})
        else:
            record = asdict(m)
            # One age: seconds since the publisher wrote it. The model's ``age`` counts from
            # when this reader first saw the record, which for a one-shot command is about 0.
            del record["age"]
            record["age_s"] = round(max(0.0, now - m.published_at), 3)
            record["lag_bytes"] = lag_bytes(view, m)
            members.append(record)
    doc = {
        "cluster": cluster,
        "chroot": chroot,
        "state": assessment.state,
        "exit_code": assessment.code,
        "epoch": view.epoch,
        "lease": None
        if view.lease is None
        else {
            "node": view.lease.node,
            "epoch": view.lease.epoch,
            "since": view.lease.since,
        },
        "last_leader": None if view.last_leader is None else asdict(view.last_leader),
        "paused": view.paused,
        "switchover": None if view.switchover is None else asdict(view.switchover),
        "position": None if view.position is None else asdict(view.position),
        "replication": {
            "mode": assessment.replication.value,
            "sync_standby": assessment.sync_standby,
        },
        "sync": _sync_json(view, now),
        "rejoin_requests": [asdict(r) for r in view.rejoin_requests],
        "members": members,
        "warnings": list(assessment.warnings),
    }
    return json.dumps(doc, indent=2, sort_keys=True)


def lag_bytes(view: ClusterView, m: MemberStatus) -> int | None:
    """A passive's distance behind the active in bytes, from both published LSNs; None when
    not a passive or either LSN is unknown."""
    if m.role != Role.PASSIVE.value or m.lsn is None or view.lease is None:
        return None
    active = view.member(view.lease.node)
    if not isinstance(active, MemberStatus) or active.lsn is None:
        return None
    return max(0, active.lsn - m.lsn)


def _lag(view: ClusterView, m: MemberStatus) -> str:
    """The LAG cell: "-" where lag has no meaning, "?" for a passive whose lag is unknown."""
    if m.role != Role.PASSIVE.value or m.lsn is None or view.lease is None:
        return "-"
    lag = lag_bytes(view, m)
    return "?" if lag is None else format_bytes(lag)


def _replication_line(view: ClusterView, assessment: Assessment, now: float) -> str:
    """The mode this node runs in and the sync record: who holds every acknowledged commit."""
    record = view.sync
    if record is None:
        sync = "none (no record)"
    else:
        age = f"{max(0.0, now - record.written_at):.0f} s ago" if record.written_at else "?"
        current = "" if record.epoch == view.epoch else f", not the current {view.epoch}"
        sync = f"{record.standby or 'none'} (epoch {record.epoch}{current}, written {age})"
    return f"replication: {assessment.replication.value}    sync standby: {sync}"


def _checks(m: MemberStatus) -> str:
    parts = []
    for c in m.checks:
        latency = "" if c.latency is None else f" {c.latency * 1000:.0f}ms"
        parts.append(f"{c.name} {'ok' if c.healthy else 'FAIL'}{latency}")
    return ", ".join(parts) or "-"


TAKEOVER_LABELS = {
    "failover": "last failover",
    "switchover": "last switchover",
    "stepdown": "last takeover after a step-down",
}
"""History kinds that moved the lease to a node, and how status names the latest."""


def last_takeover(history: Sequence[Mapping[str, object]]) -> str | None:
    """The latest failover, step-down takeover or switchover, in words, named by its kind: a
    planned switchover is not a failover, and an operator reading "failover" would go looking
    for a fault. Its duration is the outage: from the old active's last sign of life the new
    active saw (after a crash, the session timeout is part of it) to the VIP; the part after the
    lease went free is shown beside it when it differs."""
    for rec in reversed(history):
        kind = rec.get("kind")
        if isinstance(kind, str) and kind in TAKEOVER_LABELS and rec.get("to"):
            when = rec.get("time")
            stamp = _when(float(when)) if isinstance(when, int | float) else "?"
            phases = rec.get("phases")
            total = phases.get("total") if isinstance(phases, dict) else None
            promotion = phases.get("promotion") if isinstance(phases, dict) else None
            took = ""
            if isinstance(total, int | float):
                took = f"in {total:.2f} s, "
            if (
                isinstance(total, int | float)
                and isinstance(promotion, int | float)
                and (promotion < total - 0.005)
            ):
                # total counts from the old active's last sign of life the new one saw.
                took = f"in {total:.2f} s ({promotion:.2f} s after the lease went free), "
            return (
                f"{TAKEOVER_LABELS[kind]}: {stamp} {rec.get('from') or '?'} -> {rec.get('to')} "
                f"({took}epoch {rec.get('epoch')}): {rec.get('reason', '')}"
            )
    return None


def as_table(
    view: ClusterView,
    assessment: Assessment,
    cluster: str,
    chroot: str,
    now: float,
    history: Sequence[Mapping[str, object]] = (),
) -> str:
    lines = [f"cluster {cluster} ({chroot}): {assessment.state.upper()}"]
    if view.lease is None:
        lines.append(
            f"active: none    epoch {view.epoch}    paused: {'yes' if view.paused else 'no'}"
        )
    else:
        since = view.lease.since
        lines.append(
            f"active: {view.lease.node}    epoch {view.lease.epoch}    since {_when(since)} "
            f"({max(0.0, now - since):.0f} s)    paused: {'yes' if view.paused else 'no'}"
        )
    lines.append(_replication_line(view, assessment, now))
    takeover = last_takeover(history)
    if takeover is not None:
        lines.append(takeover)
    if view.last_leader is not None:
        ll = view.last_leader
        lsn = "" if ll.final_lsn is None else f", final LSN {format_lsn(ll.final_lsn)}"
        lines.append(
            f"last release: {ll.node} epoch {ll.epoch} ({'clean' if ll.clean else 'unclean'}{lsn})"
        )
    for r in view.rejoin_requests:
        lines.append(
            f"rejoin requested: {r.node}{' (re-clone)' if r.reclone else ''} by {r.requested_by} "
            f"at {_when(r.requested_at)} ({max(0.0, now - r.requested_at):.0f} s ago)"
        )
    header = ("NODE", "ROLE", "EPOCH", "ELIGIBLE", "DB", "LAG", "AGE", "CHECKS", "REASON")
    rows: list[tuple[str, ...]] = []
    for m in view.members:
        if isinstance(m, MalformedMember):
            rows.append((m.node, *("?" * 7), f"malformed record: {m.error}"))
            continue
        rows.append(
            (
                m.node,
                m.role,
                str(m.epoch),
                "-" if m.role != Role.PASSIVE.value else ("yes" if m.eligible else "no"),
                m.db_role,
                _lag(view, m),
                f"{max(0.0, now - m.published_at):.1f}s",
                _checks(m),
                m.reason,
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines.append("")
    for row in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    if assessment.warnings:
        lines.append("")
        lines.extend(f"! {w}" for w in assessment.warnings)
    return "\n".join(lines)

"""Planned switchover, as `failoverctl promote` sees it: whether to ask at all, and which phase a
requested switchover has reached. Pure: it judges ZooKeeper views; the CLI does the I/O.

The daemons carry the switchover out (core.py): the active stops taking writes (VIP off, clean
stop), releases with its final LSN, the target replays up to it, takes the lease, promotes and
adds the VIP; the old active restarts as a replica of the new primary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from failoverd.core import ClusterView, MalformedMember, MemberStatus, Role


class SwitchoverRefusedError(Exception):
    """The switchover must not be requested; the message says why, for the operator."""


@dataclass(frozen=True)
class Plan:
    source: str | None  # the active node, None when there is none (forced)
    target: str
    epoch: int  # the lease epoch the request is made in
    warnings: tuple[str, ...] = ()


def check_target(members: Sequence[str], target: str | None) -> None:
    """Is ``target`` one of the configured members (or left to be chosen)? Decided from the
    configuration alone, before ZooKeeper is contacted: a typo must not wait for a connection."""
    if target is not None and target not in members:
        raise SwitchoverRefusedError(f"unknown node {target!r} (members: {', '.join(members)})")


def plan_switchover(
    view: ClusterView,
    members: Sequence[str],
    target: str | None,
    force: bool,
    mode: str = "async",
) -> Plan:
    """May a switchover to ``target`` be requested? SwitchoverRefusedError says why not.
    ``mode`` is ``[replication] mode``: forcing a node that is not the synchronous standby of
    record past an expired lease may lose acknowledged writes, and the plan says so."""
    if view.paused:
        raise SwitchoverRefusedError("the cluster is paused: resume it first (failoverctl resume)")
    if view.switchover is not None:
        raise SwitchoverRefusedError(
            f"a switchover to {view.switchover.target or 'the peer'} is pending already "
            f"(requested by {view.switchover.requested_by})"
        )
    check_target(members, target)
    lease = view.lease
    source = lease.node if lease is not None else None
    if target is None:
        others = [m for m in members if m != source]
        if len(others) != 1:
            raise SwitchoverRefusedError("name the node to promote")
        target = others[0]
    if target == source:
        raise SwitchoverRefusedError(f"{target} is the active node already")
    warnings: list[str] = []
    if lease is None:
        if not force:
            raise SwitchoverRefusedError(
                "no active node: nothing to switch over from (--force to promote anyway)"
            )
        warnings.append("no active node: forcing the target to take the lease")
        loss = _may_lose(view, target, mode)
        if loss is not None:
            warnings.append(loss)
    record = view.member(target)
    why = _not_eligible(record, target)
    if why is not None:
        if not force:
            raise SwitchoverRefusedError(f"{why} (--force to promote anyway)")
        warnings.append(f"forced: {why}")
    return Plan(source, target, view.epoch, tuple(warnings))


def _may_lose(view: ClusterView, target: str, mode: str) -> str | None:
    """Why a forced takeover by ``target`` with the lease free may lose acknowledged writes."""
    last = view.last_leader
    if view.epoch == 0 or (
        last is not None and last.epoch == view.epoch and last.clean and last.final_lsn is not None
    ):
        return None  # never led, or a clean release: the target replays up to its final LSN
    record = view.sync
    if mode == "async":
        return (
            "acknowledged writes may be lost: replication is asynchronous, and the last active "
            "may have acknowledged writes it had not shipped"
        )
    if record is not None and record.standby == target and record.epoch <= view.epoch:
        return None
    if record is None or record.standby is None:
        named = "no synchronous standby is recorded" + (
            "" if record is None else f" for epoch {record.epoch}"
        )
    else:
        named = f"the synchronous standby of record is {record.standby} (epoch {record.epoch})"
    return (
        f"ACKNOWLEDGED WRITES MAY BE LOST: {named}, not {target}; writes the last active "
        "acknowledged since may exist only on it"
    )


def _not_eligible(record: MemberStatus | MalformedMember | None, target: str) -> str | None:
    if record is None:
        return f"{target} publishes no status: its daemon is down"
    if isinstance(record, MalformedMember):
        return f"{target}'s member record is malformed: {record.error}"
    if record.role != Role.PASSIVE.value:
        return f"{target} is {record.role}: {record.reason}"
    if not record.eligible:
        return f"{target} not eligible: {record.reason}"
    return None


# The phases a switchover goes through, in order, as seen from ZooKeeper.
REQUESTED, DEMOTING, RELEASED, PROMOTING, DONE, ABORTED = (
    "requested",
    "demoting",
    "released",
    "promoting",
    "active",
    "aborted",
)
PHASE_TEXT = {
    REQUESTED: "request written; waiting for the active to act on it",
    DEMOTING: "the active stopped taking writes: VIP removed, PostgreSQL stopping cleanly",
    RELEASED: "the active released the lease with its final LSN",
    PROMOTING: "the target holds the lease and is promoting",
    DONE: "the target is active",
    ABORTED: "the request was refused or withdrawn",
}


def phase_of(view: ClusterView, plan: Plan, request_seen: bool) -> str:
    """How far the switchover requested under ``plan`` has come. ``request_seen``: the request
    has shown up in a view since it was written (before that, its absence means nothing)."""
    lease = view.lease
    target = view.member(plan.target)
    if lease is not None and lease.node == plan.target and lease.epoch > plan.epoch:
        if isinstance(target, MemberStatus) and target.role == Role.ACTIVE.value:
            return DONE
        return PROMOTING
    last = view.last_leader
    if lease is None and last is not None and last.epoch == plan.epoch:
        return RELEASED
    source = view.member(plan.source) if plan.source else None
    if isinstance(source, MemberStatus) and source.role == Role.DEMOTING.value:
        return DEMOTING
    if request_seen and view.switchover is None and lease is not None and lease.epoch == plan.epoch:
        return ABORTED
    return REQUESTED

"""Rejoin, as `failoverctl rejoin` sees it: whether to ask at all, and how far a requested rejoin
has come. Pure: it judges the configuration and ZooKeeper views; the CLI does the I/O.

The node's daemon carries the rejoin out (the core): with no lease and no VIP, its PostgreSQL
stopped, it follows the active as it is, or rewinds from it, or (``reclone``) is cloned from it,
and starts streaming; then it deletes its ``rejoin/<node>`` request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from failoverd.core import ClusterView, DbRole, MalformedMember, MemberStatus, Role


class RejoinRefusedError(Exception):
    """The rejoin must not be requested; the message says why, for the operator."""


@dataclass(frozen=True)
class RejoinPlan:
    node: str
    reclone: bool
    active: str | None  # the lease holder it is to follow, None when there is none yet
    epoch: int  # the epoch the request is made in
    streaming: bool  # the node already streamed as an eligible passive when asked
    warnings: tuple[str, ...] = ()


def check_node(members: Sequence[str], node: str) -> None:
    """Is ``node`` one of the configured members? Decided from the configuration alone, before
    ZooKeeper is contacted: a typo must not wait for a connection, nor write anything."""
    if node not in members:
        raise RejoinRefusedError(f"unknown node {node!r} (members: {', '.join(members)})")


def plan_rejoin(view: ClusterView, members: Sequence[str], node: str, reclone: bool) -> RejoinPlan:
    """May a rejoin of ``node`` be requested? RejoinRefusedError says why not; warnings say what
    the operator should know before confirming."""
    check_node(members, node)
    if view.paused:
        raise RejoinRefusedError("the cluster is paused: resume it first (failoverctl resume)")
    lease = view.lease
    if lease is not None and lease.node == node:
        raise RejoinRefusedError(
            f"{node} is the active node (it holds the lease, epoch {lease.epoch}): only a "
            "passive or fenced node rejoins; move the active role first (failoverctl promote)"
        )
    record = view.member(node)
    streaming = is_streaming(record)
    warnings: list[str] = []
    if lease is None:
        warnings.append(f"no active node: {node} rejoins once a node holds the lease")
    pending = view.rejoin_request(node)
    if pending is not None:
        kind = "re-clone" if pending.reclone else "rejoin"
        warnings.append(f"replaces the pending {kind} request of {node} by {pending.requested_by}")
    if record is None:
        warnings.append(f"{node} publishes no status: its daemon acts on the request when it runs")
    elif isinstance(record, MalformedMember):
        warnings.append(f"{node}'s member record is malformed: {record.error}")
    elif streaming and not reclone:
        warnings.append(
            f"{node} already streams as an eligible passive: nothing to rejoin "
            "(--reclone rebuilds its data directory anyway)"
        )
    return RejoinPlan(
        node=node,
        reclone=reclone,
        active=lease.node if lease is not None else None,
        epoch=view.epoch,
        streaming=streaming,
        warnings=tuple(warnings),
    )


def is_streaming(record: MemberStatus | MalformedMember | None) -> bool:
    """Rejoined: a passive whose database streams from the active and that could take over."""
    return (
        isinstance(record, MemberStatus)
        and record.role == Role.PASSIVE.value
        and record.db_role == DbRole.REPLICA.value
        and record.eligible
    )


def describe(record: MemberStatus | MalformedMember | None, node: str) -> str:
    """The node's state in one line, from its member record."""
    if record is None:
        return f"{node} publishes no status (daemon down or cut off from ZooKeeper)"
    if isinstance(record, MalformedMember):
        return f"{node}'s member record is malformed: {record.error}"
    eligible = ", eligible" if record.eligible else ""
    return f"{node} is {record.role}, database {record.db_role}{eligible}: {record.reason}"


@dataclass(frozen=True)
class RejoinProgress:
    """What a follower of a written request has seen so far (fold views in with ``advance``)."""

    request_seen: bool = False  # the request showed up in a view (before, absence means nothing)
    taken: bool = False  # seen, then gone: the node took it (acted on it)
    left_streaming: bool = False  # the node was seen not streaming since the request
    done: bool = False
    state: str = ""  # the node's state in words (``describe``)


def start_progress(plan: RejoinPlan) -> RejoinProgress:
    """Progress right after the request is written; a node that did not stream is on its way."""
    return RejoinProgress(left_streaming=not plan.streaming)


def advance(progress: RejoinProgress, view: ClusterView, plan: RejoinPlan) -> RejoinProgress:
    """Fold one view in. Done once the node streams as an eligible passive; after a re-clone of
    a node that streamed already, only once it also left streaming or took the request (its old
    streaming state says nothing about the clone)."""
    pending = view.rejoin_request(plan.node) is not None
    record = view.member(plan.node)
    streaming = is_streaming(record)
    seen = progress.request_seen or pending
    taken = progress.taken or (progress.request_seen and not pending)
    left = progress.left_streaming or not streaming
    done = streaming and (left or taken or not plan.reclone)
    return replace(
        progress,
        request_seen=seen,
        taken=taken,
        left_streaming=left,
        done=done,
        state=describe(record, plan.node),
    )

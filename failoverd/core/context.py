"""One step in the making: the accumulator every role writes its decisions and actions to,
and the small facts several roles ask about."""

from __future__ import annotations

from dataclasses import dataclass, replace

from failoverd.core import policy
from failoverd.core.model import (
    SEQUENCING,
    Action,
    ActionResult,
    ClusterView,
    DbRole,
    FenceOutcome,
    Observation,
    Pending,
    Reason,
    RecordEvent,
    Role,
    Settings,
    State,
    SwitchoverRequest,
    ZkState,
)


class Ctx:
    """Accumulates one step's actions; the only mutable thing in the core, and it is local."""

    def __init__(self, settings: Settings, state: State, obs: Observation) -> None:
        self.s = settings
        self.obs = obs
        self.state = state
        self.actions: list[Action] = []
        self.reason = state.reason
        self.decisions: list[Reason] = []

    # -- building actions ------------------------------------------------------------------

    def _id(self) -> int:
        n = self.state.next_id
        self.state = replace(self.state, next_id=n + 1)
        return n

    def emit(self, make: type[Action], reason: Reason, **fields: object) -> Action:
        action = make(id=self._id(), reason=reason, **fields)
        self.actions.append(action)
        if isinstance(action, SEQUENCING):
            method = str(getattr(action, "method", ""))
            pending = Pending(action.id, action.name, self.obs.now, method)
            self.state = replace(self.state, pending=pending)
        return action

    def set(self, **changes: object) -> None:
        self.state = replace(self.state, **changes)  # type: ignore[arg-type]

    def decide(self, code: str, text: str) -> Reason:
        self.reason = Reason(code, text)
        self.set(reason=self.reason)
        self.decisions.append(self.reason)
        return self.reason

    # -- facts ----------------------------------------------------------------------------

    @property
    def cluster(self) -> ClusterView | None:
        return self.obs.cluster

    def deadline(self) -> float | None:
        return policy.roundtrip_deadline(self.s, self.obs)

    def zk_fresh(self) -> bool:
        d = self.deadline()
        return d is not None and self.obs.now < d

    def holds_lease(self) -> bool:
        """The observed lease is ours, under the epoch we acquired, and still the current one."""
        c = self.cluster
        return (
            c is not None
            and c.lease is not None
            and c.lease.mine
            and c.lease.epoch == self.state.epoch
            and c.epoch == self.state.epoch
            and self.state.epoch > 0
        )

    def lease_lost(self) -> bool:
        """Positive evidence that the lease is no longer ours (not merely an unknown view).

        A view from a connection that is down is old, but never older than our acquisition
        once it shows our epoch: if it then shows the lease free or not ours, it was lost
        (a new session that read the view and was cut off again; the random traces found an
        active serving on that session's round-trip without lease or pledge)."""
        if self.obs.zk.state is ZkState.LOST:
            return True
        c = self.cluster
        if c is None:
            return False
        if c.epoch < self.state.epoch:
            return False  # a view from before our acquisition: it has not caught up yet
        return not self.holds_lease()

    def managed_db(self) -> bool:
        return self.obs.database.role is not DbRole.UNMANAGED

    def pending_result(self) -> Done | None:
        """The result of the in-flight action, or a synthesized failure once it overran."""
        p = self.state.pending
        if p is None:
            return None
        for r in self.obs.results:
            if r.action_id == p.id:
                self.set(pending=None)
                return Done(p.kind, r, p.started_at, p.method)
        limit = (
            self.s.rejoin_timeout
            if p.kind in ("RewindDatabase", "CloneDatabase")
            else self.s.action_timeout
        )
        if self.obs.now - p.started_at > limit:
            self.set(pending=None)
            detail = f"{p.kind} gave no result within {limit:g} s"
            result = ActionResult(p.id, ok=False, detail=detail)
            return Done(p.kind, result, p.started_at, p.method)
        return None


@dataclass(frozen=True)
class Done:
    """A finished sequencing action: what it was and how it went."""

    kind: str
    result: ActionResult
    sent_at: float = 0.0  # when it was emitted
    method: str = ""  # FencePeer: which level


def fence_event(st: Ctx, done: Done, epoch: int, reason: Reason) -> None:
    """Every fence attempt is a history record: its level, its outcome, how long it took."""
    st.emit(
        RecordEvent,
        reason,
        kind="fence"
        if done.result.fence in (FenceOutcome.FENCED, FenceOutcome.UNREACHABLE)
        else "fence_failed",
        epoch=epoch,
        from_node=st.s.peer,
        to_node=st.s.node,
        phases=(("fence", st.obs.now - done.sent_at),),
    )


def next_fence_level(st: Ctx, done: Done) -> str | None:
    """The level to try after one that reached the peer but failed, if any is configured."""
    if done.result.fence is FenceOutcome.FAILED and done.method != "power" and st.s.power_fence:
        return "power"
    return None


OPERATOR_NEEDED = frozenset(
    {
        "peer_left_serving",  # the peer serves without its daemon and no fence reaches it
        "fencing_exhausted",  # every fencing level reached the peer and failed
        "rejoin_needs_clone",  # only a clone can rejoin it, and [postgres] reclone = false
        "rejoin_manual",  # [postgres] rejoin = manual: waiting for failoverctl rejoin
        "two_primaries",  # both databases answer as primary with no lease to tell them apart
        # sync/strict: the lease expired and this node is not the synchronous standby of
        # record; the old active coming back ends it, else promote --force accepts the loss
        "not_sync_standby",
    }
)
"""Reason codes that no fault healing will end by itself: a person must decide (the reason
text names the command). Status reports them as such."""

SERVING_ROLES = (Role.ACTIVE, Role.PROMOTING, Role.DEMOTING)
"""Roles in which the node may hold the VIP or run the writable primary."""


def serving(st: Ctx) -> bool:
    """The VIP is seen here, or the managed database answers as a primary."""
    return st.obs.vip_present is True or (
        st.managed_db() and st.obs.database.role is DbRole.PRIMARY
    )


DATABASE_ACTIONS = (
    "Promote",
    "StopDatabase",
    "StartReplica",
    "RewindDatabase",
    "CloneDatabase",
    "StartPrimary",
    "SetSyncStandby",
)


def left_serving(st: Ctx, node: str) -> bool:
    """``last_leader`` says ``node``'s daemon stopped while paused, leaving it serving, and no
    epoch has begun since."""
    c = st.cluster
    last = None if c is None else c.last_leader
    return (
        c is not None
        and last is not None
        and last.left_serving
        and last.node == node
        and last.epoch == c.epoch
    )


def peer_left_serving(st: Ctx) -> bool:
    return left_serving(st, st.s.peer)


def fenced_since_peer_left_serving(st: Ctx) -> bool:
    seen = st.state.peer_left_serving_seen_at
    sent = st.state.peer_fence_sent_at
    return (
        seen is not None
        and sent is not None
        and st.state.peer_fenced_at is not None
        and (sent >= seen)
    )


def valid_switchover(st: Ctx) -> SwitchoverRequest | None:
    c = st.cluster
    if c is None or c.switchover is None:
        return None
    sw = c.switchover
    if sw.deadline <= st.obs.wall_now:
        return None
    if sw.from_epoch != c.epoch:
        return None
    return sw


def not_after(st: Ctx) -> float:
    deadline = st.deadline()
    if deadline is None:  # callers check zk_fresh() first
        raise AssertionError("leased action without a ZooKeeper round-trip")
    return deadline


def peer_alive_at(st: Ctx) -> float | None:
    """The peer's last sign of life as the active, on this node's clock: the later of its member
    record changing while active (its heartbeat) and a probe finding its database a primary."""
    seen = [t for t in (st.state.active_alive_at, st.state.peer_primary_seen_at) if t is not None]
    return max(seen, default=None)

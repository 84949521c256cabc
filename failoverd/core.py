"""The decision core: ``step(settings, state, observation) -> Step(state, actions, reason)``.

Theory of operation
-------------------
The core is pure: no I/O, no clock, no randomness, no logging. Time arrives as ``Observation.now``
(CLOCK_BOOTTIME seconds) and wall time as ``Observation.wall_now`` (only to compare deadlines
written by other hosts). Adapters do what the returned ``Action`` values say and report back as
``ActionResult`` values in a later observation; a failure is data, never an exception here.

At most one sequencing action (acquire, fence, promote, VIP, stop, release, start replica) is in
flight at a time (``State.pending``); publishing, history records and hooks are fire-and-forget.

Invariants kept, and why:

1. Leased actions. ``Promote`` and ``AddVip`` are only emitted while the observed lease is ours
   with the epoch we acquired, and carry ``not_after`` = send time of the last successful
   ZooKeeper round-trip + ``self_fence_after``; their adapters refuse to start later. A decision
   taken on a view that may already be stale can therefore never take effect after the point
   where the node would have self-fenced.
2. Self-fence. A node that may hold the VIP or the writable primary (active, promoting,
   demoting; paused from one of those or seen serving; a new process seen serving, after
   ``self_fence_after`` to make its first round-trip) emits ``RemoveVip`` (then
   ``StopDatabase``) in the very step in which ``self_fence_after`` has passed since that send
   time. ``self_fence_after`` < session timeout, so it is down before its session can expire and
   before the peer may take the lease. Time is counted from the send time, not from kazoo's
   SUSPENDED, which can arrive as late as 2/3 of the session timeout. Pause never suspends it:
   a paused active cut off from ZooKeeper and its peer was once seen serving beside a peer that
   took over after the pause ended. The daemon does not exit with a fence's actions queued (the
   runner would cancel them), and a demotion releases the lease only once the VIP removal and
   the database stop have succeeded.
3. Safe takeover. A free lease is never taken while a direct probe says the peer's PostgreSQL
   answers as a primary, unless a fence reached the peer after that probe. A lease that vanished
   without a clean ``last_leader`` record for its epoch expired: ``FencePeer`` is attempted before
   ``Promote``; a fence that reached the peer but failed blocks the promotion (the lease is given
   back with ``clean=False`` so that the next holder fences too).
4. Epochs only grow; a node promotes at most once per epoch (``State.promoted_epoch``).
5. Paused means paused: while the cluster's ``paused`` flag is set, only ``Publish`` is emitted,
   but for a self-fence (2.) and, when a serving node's daemon stops while paused, the record
   that it is left serving (``last_leader.left_serving``). Nothing on that node would stop it
   serving if it were then cut off, so the peer takes over from it only after a fence that
   reached it; "unreachable" proves nothing about a node nobody supervises.
6. No acknowledged write is lost on a voluntary hand-over: the active removes the VIP, stops its
   primary cleanly and releases with the final LSN and its timeline; the passive takes the lease
   only once it has replayed up to that LSN on that timeline (a diverged ex-primary's higher LSN
   on another timeline holds none of it). A forced switchover never goes to a node that could
   not become a working primary.
7. Anti-flap: rise/fall live in the checks; a failing active steps down only when the peer is
   eligible and ``min_failover_interval`` has passed since the last failover; nothing prefers a
   node, so there is no automatic fail-back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

# --------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------


class Role(StrEnum):
    STARTING = "starting"
    PASSIVE = "passive"
    PROMOTING = "promoting"
    ACTIVE = "active"
    DEMOTING = "demoting"
    FENCED = "fenced"
    PAUSED = "paused"


class ZkState(StrEnum):
    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


@dataclass(frozen=True)
class ZkStatus:
    """The ZooKeeper connection as the adapter sees it."""

    state: ZkState
    changed_at: float  # boottime of the last state change
    last_roundtrip_sent_at: float | None  # send time (boottime) of the last successful round-trip
    negotiated_timeout: float | None = None


@dataclass(frozen=True)
class LeaseInfo:
    node: str
    epoch: int
    since: float  # wall clock, for humans
    mine: bool  # held by this process's ZooKeeper session


@dataclass(frozen=True)
class LastLeader:
    """Written in the transaction that deletes ``lease`` on a voluntary release."""

    node: str
    epoch: int
    final_lsn: int | None
    clean: bool
    left_serving: bool = False  # its daemon stopped while paused, leaving VIP and primary up
    timeline: int | None = None  # the timeline final_lsn is on: LSNs compare only within one


@dataclass(frozen=True)
class CheckStatus:
    name: str
    healthy: bool  # after rise/fall hysteresis
    reason: str = ""  # why the last probe failed, in words
    latency: float | None = None  # seconds the last probe took
    successes: int = 0  # consecutive passes
    failures: int = 0  # consecutive failures


@dataclass(frozen=True)
class MemberStatus:
    """A member's published record (``members/<node>``)."""

    node: str
    role: str
    epoch: int
    eligible: bool
    healthy: bool
    reason: str
    reason_code: str = ""
    lsn: int | None = None  # primary: current write LSN; replica: received LSN
    db_role: str = "unknown"
    checks: tuple[CheckStatus, ...] = ()
    published_at: float = 0.0  # publisher's wall clock, for humans
    version: str = ""
    age: float = 0.0  # seconds since this reader last saw the record change (reader's boottime)


@dataclass(frozen=True)
class MalformedMember:
    """A member record that could not be parsed: reported, never trusted."""

    node: str
    error: str


@dataclass(frozen=True)
class SwitchoverRequest:
    target: str | None
    from_epoch: int
    requested_by: str
    deadline: float  # wall clock
    force: bool = False


@dataclass(frozen=True)
class ClusterView:
    """What the ZooKeeper adapter's watches know of the cluster."""

    epoch: int
    lease: LeaseInfo | None
    last_leader: LastLeader | None
    members: tuple[MemberStatus | MalformedMember, ...] = ()
    switchover: SwitchoverRequest | None = None
    paused: bool = False
    problems: tuple[str, ...] = ()  # malformed records, said in words; such records are ignored
    lease_changed_at: float | None = None  # boottime the reader saw the lease last change

    def member(self, name: str) -> MemberStatus | MalformedMember | None:
        for m in self.members:
            if m.node == name:
                return m
        return None


@dataclass(frozen=True)
class LocalHealth:
    checks: tuple[CheckStatus, ...] = ()
    complete: bool = True  # every configured check has reported at least once

    @property
    def healthy(self) -> bool:
        return all(c.healthy for c in self.checks)

    @property
    def failing(self) -> tuple[CheckStatus, ...]:
        return tuple(c for c in self.checks if not c.healthy)


class DbRole(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"
    STOPPED = "stopped"
    UNKNOWN = "unknown"  # managed, but not (yet) known: blocks decisions that need it
    UNMANAGED = "unmanaged"  # this cluster has no database for failoverd to manage


@dataclass(frozen=True)
class DatabaseStatus:
    role: DbRole
    lsn: int | None = None  # primary: current write LSN; replica: last received LSN
    replayed_lsn: int | None = None
    streaming: bool = False
    last_received_age: float | None = None  # seconds since WAL last arrived
    was_primary: bool | None = None  # STOPPED: last ran as a primary
    stopped_cleanly: bool | None = None  # STOPPED: the control file says a clean shutdown
    recorded_epoch: int | None = None  # epoch written into the database by its last promotion
    observed_at: float | None = None  # boottime the probe behind this started (None: now)
    timeline: int | None = None  # primary: its timeline; replica: the one it receives or replays


UNMANAGED_DB = DatabaseStatus(role=DbRole.UNMANAGED)


class PeerDb(StrEnum):
    """A direct probe of the peer's PostgreSQL over the network (not its ZooKeeper record)."""

    PRIMARY = "primary"
    REPLICA = "replica"
    DOWN = "down"  # host answered, PostgreSQL refused
    UNREACHABLE = "unreachable"  # no answer in time
    UNKNOWN = "unknown"  # not probed (yet)
    UNMANAGED = "unmanaged"


@dataclass(frozen=True)
class PeerProbe:
    state: PeerDb
    probed_at: float  # boottime when the probe was sent


class FenceOutcome(StrEnum):
    FENCED = "fenced"  # reached the peer, fence-self succeeded
    UNREACHABLE = "unreachable"  # could not reach the peer at all
    FAILED = "failed"  # reached the peer, fence-self failed


@dataclass(frozen=True)
class ActionResult:
    action_id: int
    ok: bool
    detail: str = ""
    epoch: int | None = None  # AcquireLease: the epoch now held
    final_lsn: int | None = None  # StopDatabase
    clean: bool | None = None  # StopDatabase: stopped cleanly
    timeline: int | None = None  # StopDatabase: the timeline final_lsn is on
    fence: FenceOutcome | None = None  # FencePeer


@dataclass(frozen=True)
class Observation:
    now: float  # boottime
    wall_now: float  # wall clock, only to compare cross-host deadlines
    zk: ZkStatus
    cluster: ClusterView | None  # None until the adapter has read the cluster once
    local: LocalHealth = LocalHealth()
    database: DatabaseStatus = UNMANAGED_DB
    peer_database: PeerProbe = PeerProbe(PeerDb.UNMANAGED, 0.0)
    results: tuple[ActionResult, ...] = ()
    shutdown_requested: bool = False
    vip_present: bool | None = None  # the VIP is on this node's interface (None: not looked)


# --------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    """A stable code for machines and a sentence for people."""

    code: str
    text: str


@dataclass(frozen=True)
class Action:
    id: int
    reason: Reason

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class AcquireLease(Action):
    expected_epoch: int  # the epoch counter read; the transaction sets it to expected_epoch + 1


@dataclass(frozen=True)
class ReleaseLease(Action):
    epoch: int
    final_lsn: int | None
    clean: bool
    left_serving: bool = False  # record that the node goes on serving without its daemon
    timeline: int | None = None  # the timeline final_lsn is on


@dataclass(frozen=True)
class FencePeer(Action):
    peer: str
    epoch: int  # the cluster epoch the fence is for


@dataclass(frozen=True)
class Promote(Action):
    epoch: int
    not_after: float  # boottime: the adapter refuses to start later


@dataclass(frozen=True)
class StopDatabase(Action):
    mode: Literal["fast", "immediate"]


@dataclass(frozen=True)
class StartReplica(Action):
    primary: str


@dataclass(frozen=True)
class AddVip(Action):
    epoch: int
    not_after: float  # boottime: the adapter refuses to start later


@dataclass(frozen=True)
class RemoveVip(Action):
    pass


@dataclass(frozen=True)
class Publish(Action):
    status: MemberStatus


@dataclass(frozen=True)
class RecordEvent(Action):
    kind: str  # failover, switchover, stepdown, fence, self_fence, bootstrap, ...
    epoch: int
    from_node: str | None
    to_node: str | None
    phases: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class RunHook(Action):
    role: Role
    epoch: int


@dataclass(frozen=True)
class ClearSwitchover(Action):
    pass


SEQUENCING: tuple[type[Action], ...] = (
    AcquireLease,
    ReleaseLease,
    FencePeer,
    Promote,
    StopDatabase,
    StartReplica,
    AddVip,
    RemoveVip,
)
"""Actions that change the cluster; one at a time is in flight."""


# --------------------------------------------------------------------------------------------
# Settings and state
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    node: str
    peer: str
    self_fence_after: float
    min_failover_interval: float = 30.0
    max_lag_on_failover: int = 16 * 1024 * 1024
    max_replication_silence: float = 10.0
    nofailover: bool = False
    publish_every: float = 1.0
    action_timeout: float = 10.0
    fence_retry_after: float = 5.0
    version: str = ""

    @property
    def peer_stale_after(self) -> float:
        """A peer record unchanged for this long no longer vouches for the peer."""
        return 3 * self.publish_every + 1.0


@dataclass(frozen=True)
class Pending:
    id: int
    kind: str
    started_at: float


@dataclass(frozen=True)
class Takeover:
    """Progress of becoming active under ``epoch``."""

    kind: str  # bootstrap, failover, stepdown, switchover, readopt
    from_node: str | None
    started_at: float
    fence_needed: bool = False
    fenced: bool = False
    promoted: bool = False
    phases: tuple[tuple[str, float], ...] = ()
    last_mark: float = 0.0
    expected_epoch: int | None = None  # the epoch counter the acquisition was decided on
    lease_free_since: float | None = None  # when the lease this takeover follows was seen free

    def mark(self, phase: str, now: float) -> Takeover:
        """Close a phase: how long since the previous mark."""
        return replace(self, phases=(*self.phases, (phase, now - self.last_mark)), last_mark=now)


@dataclass(frozen=True)
class Demotion:
    """Progress of giving up the active role."""

    kind: str  # stepdown, switchover, shutdown, lease_lost, aborted
    started_at: float
    vip_removed: bool = False
    db_stopped: bool = False
    released: bool = False
    final_lsn: int | None = None
    final_timeline: int | None = None
    clean: bool = True
    stop_failures: int = 0  # StopDatabase attempts that failed: the next one is immediate


@dataclass(frozen=True)
class State:
    role: Role = Role.STARTING
    epoch: int = 0  # the epoch we hold, or last held
    highest_epoch: int = 0  # highest epoch counter ever seen: guards against regressions
    promoted_epoch: int = 0  # the epoch of our last Promote: never two under one epoch
    pending: Pending | None = None
    takeover: Takeover | None = None
    demotion: Demotion | None = None
    next_id: int = 1
    last_failover_at: float | None = None
    retry_after: float | None = None  # no takeover attempt before this (after a failed fence)
    retry_reason: Reason | None = None  # why the last attempt stopped: said while waiting
    peer_fenced_at: float | None = None  # a fence reached the peer and succeeded at this time
    peer_fence_sent_at: float | None = None  # ... and was sent then: it took effect no earlier
    active_lsn: int | None = None  # last LSN the active published: its record vanishes on a crash
    lease_free_since: float | None = None
    last_publish_at: float | None = None
    last_published: MemberStatus | None = None
    handled_switchover: SwitchoverRequest | None = None  # the request last cleared or refused
    paused_from: Role | None = None  # the role a pause interrupted
    fence_final_lsn: int | None = None  # where our self-fence stopped the database
    fence_final_timeline: int | None = None
    db_changed_at: float | None = None  # a database action finished: older probes are stale
    fence_stop_clean: bool = False
    started_at: float | None = None  # boottime of this process's first observation
    paused_serving: bool = False  # paused while it may hold the VIP or the writable primary
    left_serving_recorded: bool = False  # stopping while paused: last_leader says it serves on
    peer_left_serving_seen_at: float | None = None  # first saw last_leader say the peer serves on
    reason: Reason = field(
        default_factory=lambda: Reason("starting", "waiting for the first full observation")
    )
    exit: bool = False  # the daemon may exit now (shutdown finished)


@dataclass(frozen=True)
class Step:
    state: State
    actions: tuple[Action, ...]
    reason: Reason  # the last decision: the node's state of mind after the step
    decisions: tuple[Reason, ...] = ()  # every decision taken in the step, in order


# --------------------------------------------------------------------------------------------
# Pure helpers, shared with status reporting
# --------------------------------------------------------------------------------------------


def format_bytes(n: int) -> str:
    """PostgreSQL-style sizes, so reasons read like the config that set the limit."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.0f} {unit}" if n % size == 0 else f"{n / size:.1f} {unit}"
    return f"{n} B"


def roundtrip_deadline(settings: Settings, obs: Observation) -> float | None:
    """The end of the window in which this node may still act on its lease."""
    sent = obs.zk.last_roundtrip_sent_at
    return None if sent is None else sent + settings.self_fence_after


def eligibility(settings: Settings, state: State, obs: Observation) -> tuple[bool, str]:
    """May this node take over? Returns (eligible, why not / why)."""
    cluster = obs.cluster
    if settings.nofailover:
        return False, "tagged nofailover"
    if cluster is not None and cluster.paused:
        return False, "cluster paused"
    if not obs.local.complete:
        return False, "checks have not all reported yet"
    failing = obs.local.failing
    if failing:
        return False, "; ".join(f"check {c.name} failing: {c.reason}" for c in failing)
    db = obs.database
    if db.role is DbRole.UNMANAGED:
        return True, "checks passing"
    if db.role is not DbRole.REPLICA:
        return False, f"database is {db.role.value}, not a replica"
    if not db.streaming and (
        db.last_received_age is None or db.last_received_age > settings.max_replication_silence
    ):
        silent = "never" if db.last_received_age is None else f"{db.last_received_age:.1f} s ago"
        return False, (
            f"WAL receiver not streaming, last WAL received {silent} "
            f"(max_replication_silence {settings.max_replication_silence:g} s)"
        )
    if db.lsn is None:
        return False, "received LSN unknown"
    active_lsn = _known_active_lsn(settings, state, obs)
    if active_lsn is not None:
        lag = max(0, active_lsn - db.lsn)
        if lag > settings.max_lag_on_failover:
            return False, (
                f"replica lag {format_bytes(lag)} > max_lag_on_failover "
                f"{format_bytes(settings.max_lag_on_failover)}"
            )
    return True, "replica streaming within max_lag_on_failover"


def replayed_up_to(db: DatabaseStatus, lsn: int, timeline: int | None) -> bool:
    """Has this database replayed ``lsn`` of ``timeline``? A position on another timeline says
    nothing, however high: a diverged ex-primary's LSN can pass a hand-over's final LSN without
    holding a single write of it."""
    if db.replayed_lsn is None or db.replayed_lsn < lsn:
        return False
    return timeline is None or db.timeline is None or db.timeline == timeline


def _known_active_lsn(settings: Settings, state: State, obs: Observation) -> int | None:
    """The active's last known LSN: from its record, or remembered after the record vanished."""
    peer = obs.cluster.member(settings.peer) if obs.cluster else None
    if isinstance(peer, MemberStatus) and peer.role == Role.ACTIVE and peer.lsn is not None:
        return peer.lsn
    return state.active_lsn


def peer_vouched_eligible(settings: Settings, obs: Observation) -> tuple[bool, str]:
    """Is the peer's own, fresh record saying it can take over?"""
    peer = obs.cluster.member(settings.peer) if obs.cluster else None
    if peer is None:
        return False, f"{settings.peer} has no member record (daemon down?)"
    if isinstance(peer, MalformedMember):
        return False, f"{settings.peer}'s member record is malformed: {peer.error}"
    if peer.age > settings.peer_stale_after:
        return False, f"{settings.peer}'s record is stale ({peer.age:.1f} s old)"
    if not peer.eligible:
        return False, f"{settings.peer} not eligible: {peer.reason}"
    return True, f"{settings.peer} eligible"


# --------------------------------------------------------------------------------------------
# The step function
# --------------------------------------------------------------------------------------------


class _Step:
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
            self.state = replace(self.state, pending=Pending(action.id, action.name, self.obs.now))
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
        return roundtrip_deadline(self.s, self.obs)

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
        """Positive evidence that the lease is no longer ours (not merely an unknown view)."""
        if self.obs.zk.state is ZkState.LOST:
            return True
        c = self.cluster
        if c is None or self.obs.zk.state is not ZkState.CONNECTED:
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
                return Done(p.kind, r, p.started_at)
        if self.obs.now - p.started_at > self.s.action_timeout:
            self.set(pending=None)
            detail = f"{p.kind} gave no result within {self.s.action_timeout:g} s"
            return Done(p.kind, ActionResult(p.id, ok=False, detail=detail), p.started_at)
        return None


@dataclass(frozen=True)
class Done:
    """A finished sequencing action: what it was and how it went."""

    kind: str
    result: ActionResult
    sent_at: float = 0.0  # when it was emitted


def step(settings: Settings, state: State, obs: Observation) -> Step:
    """Decide what to do about one observation. Pure: same inputs, same outputs."""
    st = _Step(settings, state, obs)
    if st.state.started_at is None:
        st.set(started_at=obs.now)
    _track_cluster(st)
    result = st.pending_result()
    if result is not None and result.kind in DATABASE_ACTIONS:
        st.set(db_changed_at=obs.now)
    st.obs = _without_stale_database(st.obs, st.state.db_changed_at)
    _dispatch(st, result)
    _remove_stray_vip(st)
    if st.state.exit and st.state.pending is not None:
        # The runner cancels queued actions when the daemon exits: a self-fence's StopDatabase
        # must not be the one dropped. Stay until it answers (bounded by action_timeout).
        st.set(exit=False)
        st.decide("exit_waiting", f"stopping once {st.state.pending.kind} has finished")
    if not st.state.exit:
        _maybe_publish(st)
    if st.state.role is Role.PAUSED:
        st.set(paused_serving=_serving(st) or st.state.paused_from in SERVING_ROLES)
    return Step(st.state, tuple(st.actions), st.reason, tuple(st.decisions))


SERVING_ROLES = (Role.ACTIVE, Role.PROMOTING, Role.DEMOTING)
"""Roles in which the node may hold the VIP or run the writable primary."""


def _serving(st: _Step) -> bool:
    """The VIP is seen here, or the managed database answers as a primary."""
    return st.obs.vip_present is True or (
        st.managed_db() and st.obs.database.role is DbRole.PRIMARY
    )


def _must_prove_session(st: _Step) -> bool:
    """Does this node serve, or may it, so that it must stop unless its session is provably
    alive? Pause changes nothing here: a paused node that serves without ZooKeeper could be
    serving beside a peer that took over once the pause ended."""
    role = st.state.role
    if role in SERVING_ROLES:
        return True
    pending = st.state.pending
    if pending is not None and pending.kind in ("RemoveVip", "StopDatabase"):
        return False  # a fence already under way; the role's own logic goes on with it
    if role is Role.PAUSED:
        return st.state.paused_from in SERVING_ROLES or _serving(st)
    if role is Role.STARTING:
        # A new process has no round-trip yet: it gets self_fence_after to make one.
        started = st.state.started_at if st.state.started_at is not None else st.obs.now
        return _serving(st) and st.obs.now - started >= st.s.self_fence_after
    return False


def supervision_role(state: State) -> str:
    """The role ExecStopPost judges an abnormal end by (``failoverd/stoppost.py``): a paused
    node that serves is ``paused-serving``, since pause does not suspend self-fencing."""
    if state.role is Role.PAUSED and state.paused_serving:
        return "paused-serving"
    return state.role.value


def _remove_stray_vip(st: _Step) -> None:
    """A VIP seen on a node that must not have it (a removal that failed, or a node restarted
    while the peer holds the lease) is removed, whatever put it there."""
    if st.obs.vip_present is not True or st.state.pending is not None:
        return
    role = st.state.role
    c = st.cluster
    held_elsewhere = c is not None and c.lease is not None and not c.lease.mine
    if role in (Role.PASSIVE, Role.FENCED) or (role is Role.STARTING and held_elsewhere):
        reason = Reason("stray_vip", f"the VIP is configured here while {role.value}: removing it")
        st.emit(RemoveVip, reason)


DATABASE_ACTIONS = ("Promote", "StopDatabase", "StartReplica")


def _without_stale_database(obs: Observation, changed_at: float | None) -> Observation:
    """A probe that started before our last change to the database says nothing about it now:
    acting on it would, say, fence a database we had just restarted as a replica."""
    observed = obs.database.observed_at
    if changed_at is None or observed is None or observed >= changed_at:
        return obs
    return replace(obs, database=DatabaseStatus(role=DbRole.UNKNOWN, observed_at=observed))


def _track_cluster(st: _Step) -> None:
    """Remember what must outlive the observation: epochs, the active's LSN, when the lease went."""
    c = st.cluster
    if c is None:
        return
    new_epoch = c.epoch > st.state.highest_epoch
    if new_epoch:
        st.set(highest_epoch=c.epoch)
    peer = c.member(st.s.peer)
    if isinstance(peer, MemberStatus) and peer.role == Role.ACTIVE and peer.lsn is not None:
        st.set(active_lsn=peer.lsn)
    if (
        c.last_leader is not None
        and c.last_leader.final_lsn is not None
        and (c.last_leader.node == st.s.peer and c.last_leader.epoch == c.epoch)
    ):
        st.set(active_lsn=max(st.state.active_lsn or 0, c.last_leader.final_lsn))
    if c.lease is None:
        if st.state.lease_free_since is None or new_epoch:
            st.set(lease_free_since=st.obs.now)
    elif st.state.lease_free_since is not None:
        st.set(lease_free_since=None)
    if _peer_left_serving(st):
        if st.state.peer_left_serving_seen_at is None:
            st.set(peer_left_serving_seen_at=st.obs.now)
    elif st.state.peer_left_serving_seen_at is not None:
        st.set(peer_left_serving_seen_at=None)


def _peer_left_serving(st: _Step) -> bool:
    """``last_leader`` says the peer's daemon stopped while paused, leaving it serving, and no
    epoch has begun since."""
    c = st.cluster
    last = None if c is None else c.last_leader
    return (
        c is not None
        and last is not None
        and last.left_serving
        and last.node == st.s.peer
        and last.epoch == c.epoch
    )


def _fenced_since_peer_left_serving(st: _Step) -> bool:
    seen = st.state.peer_left_serving_seen_at
    sent = st.state.peer_fence_sent_at
    return (
        seen is not None
        and sent is not None
        and st.state.peer_fenced_at is not None
        and (sent >= seen)
    )


def _dispatch(st: _Step, result: Done | None) -> None:
    role = st.state.role
    c = st.cluster

    # Self-fence comes before everything else, pause included: a node that may serve and
    # cannot prove its session is alive must be down before that session can expire.
    if not st.zk_fresh() and _must_prove_session(st):
        _self_fence(st)
        return

    # Paused: only observe and publish. A paused daemon that is stopped leaves everything as is,
    # and says so durably first, so the peer never takes over from it without fencing it.
    if role is Role.PAUSED:
        _note_while_paused(st, result)
        if st.obs.shutdown_requested:
            _leave_while_paused(st, result)
            return
        if c is not None and not c.paused:
            back = st.state.paused_from
            st.set(role=Role.STARTING, paused_from=None)
            st.decide("resumed", "maintenance mode ended: re-evaluating from scratch")
            if c.lease is not None and c.lease.mine and back is Role.PROMOTING:
                st.set(role=back)  # an unfinished takeover: its fence must not be skipped
                _promoting(st, None)
            elif c.lease is not None and c.lease.mine and back in (Role.PASSIVE, Role.FENCED):
                st.set(role=back)  # a lease being given back: go on giving it back
                (_passive if back is Role.PASSIVE else _fenced)(st, None)
            else:
                _starting(st)
        return

    if c is not None and c.paused:
        st.set(role=Role.PAUSED, paused_from=role, demotion=None)
        _note_while_paused(st, result)
        st.decide("paused", "cluster paused: observing only, changing nothing")
        return

    if role is Role.STARTING:
        if st.obs.shutdown_requested:
            st.set(exit=True)
            st.decide("shutdown", "stopping before taking any role")
            return
        _starting(st)
    elif role is Role.PASSIVE:
        _passive(st, result)
    elif role is Role.PROMOTING:
        _promoting(st, result)
    elif role is Role.ACTIVE:
        _active(st, result)
    elif role is Role.DEMOTING:
        _demoting(st, result)
    elif role is Role.FENCED:
        _fenced(st, result)


def _leave_while_paused(st: _Step, done: Done | None) -> None:
    """Stop while paused. A node that serves keeps serving (that is what pause promises), but
    not silently: ``last_leader`` records that it was left serving without its daemon, and the
    peer then takes over only after a fence that reached it. Unable to record that, it fences
    itself rather than leave a primary nobody watches."""
    serving = st.state.paused_serving or _serving(st) or st.state.paused_from in SERVING_ROLES
    c = st.cluster
    if done is not None and done.kind == "ReleaseLease":
        if done.result.ok:
            st.set(left_serving_recorded=True)
        else:
            st.decide(
                "self_fenced",
                f"stopping while paused and serving, but recording that failed "
                f"({done.result.detail}): fencing this node rather than leave it unwatched",
            )
            _self_fence(st)
            return
    if serving and not st.state.left_serving_recorded:
        if st.state.pending is not None:
            return
        lease = None if c is None else c.lease
        holder = None if lease is None or lease.mine else lease.node
        if c is None or holder is not None:
            why = "no ZooKeeper view" if c is None else f"{holder} holds the lease"
            st.decide(
                "self_fenced",
                f"stopping while paused and serving, but {why}: fencing this node rather "
                "than leave it unwatched",
            )
            _self_fence(st)
            return
        epoch = lease.epoch if lease is not None else c.epoch
        reason = st.decide(
            "leaving_serving",
            "stopping while paused: recording that this node goes on serving without its "
            "daemon, so the peer fences it before any takeover",
        )
        st.emit(ReleaseLease, reason, epoch=epoch, final_lsn=None, clean=False, left_serving=True)
        return
    st.set(exit=True)
    st.decide("shutdown_paused", "stopping while paused: VIP and database left as they are")


def _note_while_paused(st: _Step, done: Done | None) -> None:
    """Remember how an interrupted takeover's fence, or our own self-fence, ended; act on it
    only after the pause."""
    if done is not None and done.kind == "StopDatabase" and st.state.paused_from is Role.FENCED:
        _record_fence_stop(st, done.result)
        return
    t = st.state.takeover
    if done is None or done.kind != "FencePeer" or st.state.paused_from is not Role.PROMOTING:
        return
    if t is None:
        return
    fence = done.result.fence
    if fence in (FenceOutcome.FENCED, FenceOutcome.UNREACHABLE):
        st.set(takeover=replace(t, fenced=True))
        if fence is FenceOutcome.FENCED:
            st.set(peer_fenced_at=st.obs.now, peer_fence_sent_at=done.sent_at)
    else:
        # As on fence_failed: no promotion under this epoch; the lease goes back after the pause.
        st.set(
            paused_from=Role.PASSIVE, takeover=None, retry_after=st.obs.now + st.s.fence_retry_after
        )


# -- self-fence ---------------------------------------------------------------------------------


def _self_fence(st: _Step) -> None:
    sent = st.obs.zk.last_roundtrip_sent_at
    if st.reason.code == "self_fenced" and st.decisions and st.decisions[-1] is st.reason:
        reason = st.reason  # the caller said why already
    else:
        since = "since this process started" if sent is None else f"for {st.obs.now - sent:.2f} s"
        was = st.state.role if st.state.role is not Role.PAUSED else st.state.paused_from
        reason = st.decide(
            "self_fenced",
            f"self-fenced: no ZooKeeper round-trip {since} "
            f"(self_fence_after {st.s.self_fence_after:g} s) while "
            + (f"{was.value}" if was is not None else "serving")
            + (
                " (paused: pause does not suspend self-fencing)"
                if st.state.role is Role.PAUSED
                else ""
            ),
        )
    st.set(
        pending=None,
        takeover=None,
        demotion=None,
        role=Role.FENCED,
        paused_from=None,
        fence_final_lsn=None,  # known only once this fence's stop answers
        fence_final_timeline=None,
        fence_stop_clean=False,
    )
    st.emit(RemoveVip, reason)
    if st.managed_db():
        st.emit(StopDatabase, reason, mode="fast")
    st.emit(RunHook, reason, role=Role.FENCED, epoch=st.state.epoch)


# -- starting: safe start-up from whatever is found ------------------------------------------------


def _first_observation_missing(st: _Step) -> str | None:
    if st.cluster is None:
        return "ZooKeeper view not read yet"
    if not st.zk_fresh():
        return "no fresh ZooKeeper round-trip yet"
    if not st.obs.local.complete:
        return "checks have not all reported yet"
    if st.managed_db():
        if st.obs.database.role is DbRole.UNKNOWN:
            return "local database state unknown"
        if st.obs.peer_database.state is PeerDb.UNKNOWN:
            return "peer database not probed yet"
    return None


def _starting(st: _Step) -> None:
    """Take a role from what is found; never trust our own memory of a previous life."""
    missing = _first_observation_missing(st)
    c = st.cluster
    if missing is None and st.state.pending is not None:
        missing = f"{st.state.pending.kind} still in flight"
    if missing is not None or c is None:
        st.set(role=Role.STARTING)
        st.decide("waiting_for_observation", f"starting: {missing}")
        return
    db = st.obs.database
    lease = c.lease

    if lease is not None and lease.mine and lease.epoch == c.epoch:
        if lease.epoch > st.state.epoch:
            # An acquisition whose result we never saw: carry on with it (fencing if needed).
            st.set(epoch=lease.epoch)
            _begin_takeover(st, lease.epoch)
            return
        # Still our session (resumed from pause): keep the role the database proves.
        st.set(epoch=lease.epoch)
        if db.role in (DbRole.PRIMARY, DbRole.UNMANAGED):
            st.set(role=Role.ACTIVE)
            st.decide("active_resumed", f"still holding the lease (epoch {lease.epoch})")
            st.emit(AddVip, st.reason, epoch=lease.epoch, not_after=_not_after(st))
        else:
            _begin_demotion(st, "aborted", f"holding the lease but database is {db.role.value}")
        return

    if lease is not None:
        # Someone else is active: this node must not be (another) primary.
        if db.role is DbRole.PRIMARY:
            _fence_self_stale(
                st,
                f"own database is primary but {lease.node} holds the lease (epoch {lease.epoch})",
            )
        elif db.role is DbRole.STOPPED:
            _start_as_replica_or_fence(st, lease.node)
        else:
            st.set(role=Role.PASSIVE)
            st.decide("passive", f"{lease.node} is active (epoch {lease.epoch})")
        return

    # The lease is free.
    if db.role is DbRole.PRIMARY:
        if st.obs.peer_database.state is PeerDb.PRIMARY:
            st.set(role=Role.STARTING)
            st.decide(
                "two_primaries",
                "both databases answer as primary: resolve by hand "
                "(failoverctl status), taking nothing",
            )
            return
        if c.epoch in (0, db.recorded_epoch):
            # A fresh cluster, or the primary of the latest epoch whose daemon restarted.
            st.set(role=Role.PASSIVE)
            _try_takeover(st, readopt=True)
            return
        _fence_self_stale(
            st,
            f"own database is primary from epoch {db.recorded_epoch}, "
            f"cluster is at epoch {c.epoch}",
        )
        return
    if db.role is DbRole.STOPPED:
        last = c.last_leader
        if (
            db.was_primary
            and db.stopped_cleanly
            and last is not None
            and last.node == st.s.node
            and last.epoch == c.epoch
            and last.clean
        ):
            # We ended the latest epoch cleanly: our data is the newest; we may start as primary.
            st.set(role=Role.PASSIVE)
            _try_takeover(st, readopt=True)
            return
        _start_as_replica_or_fence(st, st.s.peer)
        return
    st.set(role=Role.PASSIVE)
    _passive(st, None)


def _fence_self_stale(st: _Step, why: str) -> None:
    reason = st.decide("stale_primary", f"fenced: {why}; must rejoin as a replica")
    st.set(role=Role.FENCED, takeover=None, demotion=None)
    st.emit(RemoveVip, reason)
    st.emit(StopDatabase, reason, mode="fast")
    st.emit(
        RecordEvent,
        reason,
        kind="fence",
        epoch=st.state.highest_epoch,
        from_node=st.s.node,
        to_node=None,
    )


def _start_as_replica_or_fence(st: _Step, primary: str) -> None:
    db = st.obs.database
    if db.was_primary and not db.stopped_cleanly:
        st.set(role=Role.FENCED)
        st.decide(
            "must_rejoin",
            "database was a primary and did not stop cleanly: "
            "it may have diverged; must rejoin (pg_rewind) before serving",
        )
        return
    st.set(role=Role.PASSIVE)
    reason = st.decide("start_replica", f"starting the database as a replica of {primary}")
    if st.state.pending is None:
        st.emit(StartReplica, reason, primary=primary)


# -- passive: wait for the lease, take it only when safe ----------------------------------------


def _passive(st: _Step, done: Done | None) -> None:
    p = st.state.pending
    if done is not None:
        _passive_result(st, done)
        if st.state.role is not Role.PASSIVE:
            return
    elif p is not None:
        return  # wait for the in-flight action
    if st.obs.shutdown_requested:
        st.set(exit=True)
        st.decide("shutdown", "stopping while passive: nothing to hand over")
        return
    c = st.cluster
    if c is None:
        st.decide("zk_unavailable", "passive: no ZooKeeper view")
        return
    lease = c.lease
    if lease is not None and lease.mine and lease.epoch == c.epoch and lease.epoch > st.state.epoch:
        # An acquisition whose result we never saw: carry on with it.
        st.set(epoch=lease.epoch)
        _begin_takeover(st, lease.epoch)
        return
    if lease is not None and lease.mine and lease.epoch == st.state.epoch:
        # A lease we gave back (after a failed fence) whose release did not go through.
        reason = st.decide(
            "releasing", f"still holding the lease (epoch {lease.epoch}): giving it back again"
        )
        st.emit(ReleaseLease, reason, epoch=lease.epoch, final_lsn=None, clean=False)
        return
    db = st.obs.database
    if db.role in (DbRole.PRIMARY, DbRole.STOPPED):
        _starting(st)  # something changed under us: re-derive the role
        return
    if lease is not None:
        ok, why = eligibility(st.s, st.state, st.obs)
        st.decide(
            "passive",
            f"{lease.node} is active (epoch {lease.epoch}); "
            + ("eligible" if ok else f"not eligible: {why}"),
        )
        return
    _try_takeover(st, readopt=False)


def _passive_result(st: _Step, done: Done) -> None:
    result = done.result
    if done.kind == "AcquireLease":
        if result.ok and result.epoch is not None and result.epoch >= st.state.highest_epoch:
            st.set(epoch=result.epoch, highest_epoch=max(st.state.highest_epoch, result.epoch))
            _begin_takeover(st, result.epoch)
        else:
            st.decide("lease_not_acquired", f"lease not acquired: {result.detail}")
    elif done.kind == "FencePeer":
        if result.fence is FenceOutcome.FENCED:
            st.set(peer_fenced_at=st.obs.now, peer_fence_sent_at=done.sent_at)
            st.decide("peer_fenced", f"{st.s.peer} fenced before taking the lease")
        else:
            outcome = result.fence.value if result.fence else "failed"
            if _peer_left_serving(st):
                reason = st.decide(
                    "peer_left_serving",
                    f"{st.s.peer} was left serving when its daemon stopped while paused, and "
                    f"the fence was {outcome} ({result.detail}): not taking the lease. Start "
                    f"failoverd on {st.s.peer}, or make sure it is down and run "
                    f"'failoverctl promote {st.s.node} --force'; retrying in "
                    f"{st.s.fence_retry_after:g} s",
                )
            else:
                reason = st.decide(
                    "fence_blocked",
                    f"{st.s.peer}'s database answers as primary and the fence was {outcome} "
                    f"({result.detail}): not taking the lease, "
                    f"retrying in {st.s.fence_retry_after:g} s",
                )
            st.set(retry_after=st.obs.now + st.s.fence_retry_after, retry_reason=reason)
            st.emit(
                RecordEvent,
                reason,
                kind="fence",
                epoch=st.state.highest_epoch,
                from_node=st.s.peer,
                to_node=st.s.node,
            )
    elif done.kind == "StartReplica":
        if result.ok:
            st.decide("replica_started", "database started as a replica")
        else:
            st.set(role=Role.FENCED)
            st.decide("must_rejoin", f"could not start as a replica: {result.detail}; must rejoin")


def _peer_blocks_takeover(st: _Step) -> bool:
    """True while the peer's database answers as a primary and no fence reached it since."""
    probe = st.obs.peer_database
    if probe.state is not PeerDb.PRIMARY:
        return False
    fenced = st.state.peer_fenced_at
    return fenced is None or probe.probed_at > fenced


def _peer_primary_may_take_lease(st: _Step) -> str | None:
    """Why not to fence a peer whose database is primary while the lease is free: its daemon is
    alive and about to take the lease itself (start-up), or the cluster was never led, so that
    primary is the one the cluster starts from. None when it must be fenced (its daemon is gone:
    frozen, crashed, or stopped while paused)."""
    c = st.cluster
    assert c is not None
    if c.epoch == 0:
        return (
            f"lease never held and {st.s.peer}'s database is primary: waiting for "
            f"{st.s.peer} to take it"
        )
    peer = c.member(st.s.peer)
    if (
        isinstance(peer, MemberStatus)
        and peer.age <= st.s.peer_stale_after
        and peer.role
        in (Role.STARTING.value, Role.PASSIVE.value, Role.PROMOTING.value, Role.ACTIVE.value)
    ):
        return (
            f"lease free and {st.s.peer}'s database is primary, but its daemon is alive "
            f"({peer.role}): waiting for it to take the lease"
        )
    return None


def _try_takeover(st: _Step, readopt: bool) -> None:
    c = st.cluster
    assert c is not None
    if st.state.pending is not None:
        return
    if c.epoch < 0:
        st.decide("epoch_unknown", "lease free but the epoch record is unreadable: taking nothing")
        return
    if not st.zk_fresh():
        st.decide(
            "zk_unavailable",
            "lease looks free, but the view is older than self_fence_after: not acting on it",
        )
        return
    if c.epoch < st.state.highest_epoch:
        st.decide(
            "epoch_regressed",
            f"ZooKeeper's epoch {c.epoch} is below {st.state.highest_epoch} "
            "seen before: state regressed, taking nothing",
        )
        return
    if st.state.retry_after is not None and st.obs.now < st.state.retry_after:
        last_try = st.state.retry_reason
        st.decide(
            "retry_wait",
            f"lease free; retrying takeover in {st.state.retry_after - st.obs.now:.1f} s"
            + ("" if last_try is None else f" (last attempt: {last_try.text})"),
        )
        return
    sw = _valid_switchover(st)
    if sw is not None and sw.target not in (None, st.s.node):
        st.decide("switchover_elsewhere", f"switchover to {sw.target} pending")
        return
    if not readopt:
        ok, why = eligibility(st.s, st.state, st.obs)
        forced = (
            sw is not None
            and sw.force
            and sw.target in (None, st.s.node)
            and st.obs.database.role in (DbRole.REPLICA, DbRole.UNMANAGED)
        )
        if not ok and not forced:
            st.decide("not_eligible", f"lease free but not eligible: {why}")
            return
        last = c.last_leader
        db = st.obs.database
        if (
            last is not None
            and last.epoch == c.epoch
            and last.clean
            and last.final_lsn is not None
            and st.managed_db()
            and not replayed_up_to(db, last.final_lsn, last.timeline)
        ):
            at = "unknown" if db.replayed_lsn is None else str(db.replayed_lsn)
            on = "" if db.timeline is None else f" on timeline {db.timeline}"
            want = "" if last.timeline is None else f" on timeline {last.timeline}"
            st.decide(
                "waiting_for_replay",
                f"{last.node} stepped down at LSN {last.final_lsn}{want}; "
                f"replayed {at}{on}: waiting before taking over",
            )
            return
    if st.managed_db() and st.obs.peer_database.state is PeerDb.UNKNOWN:
        st.decide(
            "waiting_for_probe", "lease free: waiting for a direct probe of the peer's database"
        )
        return
    if (
        not readopt
        and _peer_left_serving(st)
        and not _fenced_since_peer_left_serving(st)
        and not (sw is not None and sw.force and sw.target in (None, st.s.node))
    ):
        # Its daemon stopped while paused and left it serving: nothing on that node will stop
        # it, so "unreachable" proves nothing. Only a fence that reached it does.
        reason = st.decide(
            "fence_before_lease",
            f"lease free but {st.s.peer} was left serving when its daemon stopped while "
            "paused: fencing it before taking the lease",
        )
        st.emit(FencePeer, reason, peer=st.s.peer, epoch=c.epoch)
        return
    if _peer_blocks_takeover(st):
        changed = c.lease_changed_at
        if changed is not None and st.obs.peer_database.probed_at < changed:
            # Taken while the lease was still held: the peer may have stopped its database
            # since (a clean step-down does). Neither take the lease nor fence on it.
            st.decide(
                "waiting_for_probe",
                f"lease free: waiting for a probe of {st.s.peer}'s database newer than the "
                "lease's release (the last one said primary)",
            )
            return
        waiting = _peer_primary_may_take_lease(st)
        if waiting is not None:
            st.decide("waiting_for_peer_primary", waiting)
            return
        reason = st.decide(
            "fence_before_lease",
            f"lease free but {st.s.peer}'s database answers as "
            "primary: fencing it before taking the lease",
        )
        st.emit(FencePeer, reason, peer=st.s.peer, epoch=c.epoch)
        return
    reason = st.decide("acquiring", f"lease free: acquiring it (epoch {c.epoch + 1})")
    st.set(
        takeover=Takeover(
            kind="readopt" if readopt and c.epoch > 0 else _takeover_kind(st),
            from_node=_previous_holder(st),
            started_at=st.obs.now,
            last_mark=st.obs.now,
            lease_free_since=st.state.lease_free_since,
            expected_epoch=c.epoch,
            fence_needed=_needs_fence(c, c.epoch + 1),
        )
    )
    st.emit(AcquireLease, reason, expected_epoch=c.epoch)


def _previous_holder(st: _Step) -> str | None:
    c = st.cluster
    if c is None or c.epoch == 0:
        return None
    if c.last_leader is not None and c.last_leader.epoch == c.epoch:
        return c.last_leader.node
    return st.s.peer


def _takeover_kind(st: _Step) -> str:
    c = st.cluster
    assert c is not None
    if c.epoch == 0:
        return "bootstrap"
    sw = _valid_switchover(st)
    if sw is not None and sw.target in (None, st.s.node):
        return "switchover"
    if c.last_leader is not None and c.last_leader.epoch == c.epoch and c.last_leader.clean:
        return "stepdown"
    return "failover"


def _valid_switchover(st: _Step) -> SwitchoverRequest | None:
    c = st.cluster
    if c is None or c.switchover is None:
        return None
    sw = c.switchover
    if sw.deadline <= st.obs.wall_now:
        return None
    if sw.from_epoch != c.epoch:
        return None
    return sw


def _needs_fence(c: ClusterView, epoch: int) -> bool:
    """The lease we now hold followed one that expired (no clean last_leader for its epoch)."""
    previous = epoch - 1
    if previous <= 0:
        return False
    last = c.last_leader
    return not (last is not None and last.epoch == previous and last.clean)


def _begin_takeover(st: _Step, epoch: int) -> None:
    c = st.cluster
    t = st.state.takeover or Takeover(
        kind="failover", from_node=st.s.peer, started_at=st.obs.now, last_mark=st.obs.now
    )
    # Judged on the view the acquisition was decided on when this one is missing; with neither,
    # assume the previous lease expired: a needless fence costs time, a missing one split brain.
    if c is not None:
        fence_needed = _needs_fence(c, epoch)
    elif t.expected_epoch is not None and t.expected_epoch + 1 == epoch:
        fence_needed = t.fence_needed
    else:
        fence_needed = True
    free_since = t.lease_free_since if t.lease_free_since is not None else st.state.lease_free_since
    # Only a fence sent after the lease went free surely hit whoever held it last.
    fenced_already = (
        st.state.peer_fence_sent_at is not None
        and free_since is not None
        and st.state.peer_fence_sent_at >= free_since
    )
    if t.kind == "bootstrap" and epoch > 1:
        t = replace(t, kind="failover" if fence_needed else "stepdown")
    t = replace(t, fence_needed=fence_needed, fenced=fenced_already).mark("lease", st.obs.now)
    st.set(role=Role.PROMOTING, takeover=t, retry_after=None)
    st.decide(
        "lease_acquired",
        f"lease acquired (epoch {epoch})"
        + (": previous lease expired, fencing the peer first" if fence_needed else ""),
    )
    _promoting(st, None)


# -- promoting: fence if needed, promote, then add the VIP last -----------------------------------


def _not_after(st: _Step) -> float:
    deadline = st.deadline()
    if deadline is None:  # callers check zk_fresh() first
        raise AssertionError("leased action without a ZooKeeper round-trip")
    return deadline


def _promoting(st: _Step, done: Done | None) -> None:
    t = st.state.takeover
    if t is None:
        t = Takeover(
            kind="failover", from_node=st.s.peer, started_at=st.obs.now, last_mark=st.obs.now
        )
        st.set(takeover=t)
    epoch = st.state.epoch
    now = st.obs.now
    if done is not None:
        r = done.result
        if done.kind == "FencePeer":
            if r.fence in (FenceOutcome.FENCED, FenceOutcome.UNREACHABLE):
                assert r.fence is not None
                t = replace(t, fenced=True).mark("fence", now)
                st.set(takeover=t)
                if r.fence is FenceOutcome.FENCED:
                    st.set(peer_fenced_at=now, peer_fence_sent_at=done.sent_at)
                reason = st.decide(
                    "peer_fenced", f"{st.s.peer} fence: {r.fence.value} ({r.detail})"
                )
                st.emit(
                    RecordEvent,
                    reason,
                    kind="fence",
                    epoch=epoch,
                    from_node=st.s.peer,
                    to_node=st.s.node,
                    phases=(("fence", t.phases[-1][1]),),
                )
            else:
                reason = st.decide(
                    "fence_failed",
                    f"fencing {st.s.peer} reached it but failed ({r.detail}): not promoting; "
                    f"giving the lease back, retrying in {st.s.fence_retry_after:g} s",
                )
                st.set(
                    role=Role.PASSIVE,
                    takeover=None,
                    retry_after=now + st.s.fence_retry_after,
                    retry_reason=reason,
                )
                st.emit(
                    RecordEvent,
                    reason,
                    kind="fence_failed",
                    epoch=epoch,
                    from_node=st.s.peer,
                    to_node=st.s.node,
                )
                st.emit(ReleaseLease, reason, epoch=epoch, final_lsn=None, clean=False)
                return
        elif done.kind == "Promote":
            if not r.ok:
                _begin_demotion(st, "aborted", f"promotion failed: {r.detail}")
                return
            t = replace(t, promoted=True).mark("promote", now)
            st.set(takeover=t)
            st.decide("promoted", f"database promoted (epoch {epoch})")
        elif done.kind == "AddVip":
            if not r.ok:
                _begin_demotion(st, "aborted", f"adding the VIP failed: {r.detail}")
                return
            _become_active(st)
            return
    if st.state.pending is not None:
        return
    if st.obs.shutdown_requested:
        _begin_demotion(st, "shutdown", "stopping during a promotion: handing back")
        return
    if not st.zk_fresh():
        _self_fence(st)
        return
    if st.lease_lost():
        if t.promoted or st.state.promoted_epoch == epoch:
            _begin_demotion(st, "lease_lost", "lease lost during the promotion")
        else:
            st.set(role=Role.PASSIVE, takeover=None)
            st.decide("lease_lost", "lease lost before promoting: back to passive")
        return
    if not st.holds_lease():
        st.decide("waiting_for_lease_view", f"waiting to see our lease (epoch {epoch})")
        return
    if t.fence_needed and not t.fenced:
        reason = st.decide(
            "fencing",
            f"previous lease (epoch {epoch - 1}) expired: fencing {st.s.peer} before promoting",
        )
        st.emit(FencePeer, reason, peer=st.s.peer, epoch=epoch)
        return
    if not t.promoted:
        if not st.managed_db() or st.obs.database.role is DbRole.PRIMARY:
            t = replace(t, promoted=True)
            st.set(takeover=t)
        elif st.state.promoted_epoch >= epoch:
            _begin_demotion(st, "aborted", f"a promotion under epoch {epoch} was already tried")
            return
        else:
            reason = st.decide("promoting", f"promoting the database (epoch {epoch})")
            st.set(promoted_epoch=epoch)
            st.emit(Promote, reason, epoch=epoch, not_after=_not_after(st))
            return
    reason = st.decide("adding_vip", f"adding the VIP (epoch {epoch})")
    st.emit(AddVip, reason, epoch=epoch, not_after=_not_after(st))


def _become_active(st: _Step) -> None:
    t = st.state.takeover
    assert t is not None
    now = st.obs.now
    t = t.mark("vip", now)
    began = t.lease_free_since if t.lease_free_since is not None else t.started_at
    began = min(began, t.started_at)
    total = now - began
    reason = st.decide("active", f"active (epoch {st.state.epoch}) after {t.kind} in {total:.2f} s")
    automatic = t.kind in ("failover", "stepdown", "switchover")
    st.set(
        role=Role.ACTIVE,
        takeover=None,
        last_failover_at=now if automatic else st.state.last_failover_at,
    )
    phases = (("wait", t.started_at - began), *t.phases, ("total", total))
    st.emit(
        RecordEvent,
        reason,
        kind=t.kind,
        epoch=st.state.epoch,
        from_node=t.from_node,
        to_node=st.s.node,
        phases=phases,
    )
    st.emit(RunHook, reason, role=Role.ACTIVE, epoch=st.state.epoch)
    c = st.cluster
    if c is not None and c.switchover is not None and c.switchover.target in (None, st.s.node):
        st.set(handled_switchover=c.switchover)
        st.emit(ClearSwitchover, reason)


# -- active: keep serving, or hand over ----------------------------------------------------------


def _active(st: _Step, done: Done | None) -> None:
    if done is not None and done.kind == "AddVip" and not done.result.ok:
        _begin_demotion(st, "aborted", f"re-adding the VIP failed: {done.result.detail}")
        return
    if st.lease_lost():
        _begin_demotion(st, "lease_lost", "demoted: lease lost")
        return
    if st.obs.shutdown_requested:
        _begin_demotion(st, "shutdown", "stopping: stepping down cleanly")
        return
    c = st.cluster
    epoch = st.state.epoch
    if c is not None and c.switchover is not None and c.switchover != st.state.handled_switchover:
        sw = _valid_switchover(st)
        if sw is None:
            reason = st.decide(
                "switchover_ignored",
                "switchover request ignored: its deadline passed or the epoch moved on",
            )
            st.set(handled_switchover=c.switchover)
            st.emit(ClearSwitchover, reason)
        elif sw.target == st.s.node:
            reason = st.decide("switchover_noop", f"switchover to {st.s.node}: already active")
            st.set(handled_switchover=c.switchover)
            st.emit(ClearSwitchover, reason)
        else:
            ok, why = peer_vouched_eligible(st.s, st.obs)
            working = _can_become_primary(st)
            if ok or (sw.force and working is None):
                _begin_demotion(
                    st,
                    "switchover",
                    f"switchover to {st.s.peer} requested by "
                    f"{sw.requested_by}" + ("" if ok else f" (forced: {why})"),
                )
                return
            if sw.force and working is not None:
                why = working
            reason = st.decide("switchover_refused", f"switchover refused: {why}")
            st.set(handled_switchover=c.switchover)
            st.emit(ClearSwitchover, reason)
            st.emit(
                RecordEvent,
                reason,
                kind="switchover_refused",
                epoch=epoch,
                from_node=st.s.node,
                to_node=st.s.peer,
            )
            return
    local = st.obs.local
    if local.complete and not local.healthy:
        failing = "; ".join(f"{c.name}: {c.reason}" for c in local.failing)
        ok, why = peer_vouched_eligible(st.s, st.obs)
        if not ok:
            st.decide("degraded", f"own checks failing ({failing}) but {why}: staying active")
            return
        last = st.state.last_failover_at
        if last is not None and st.obs.now - last < st.s.min_failover_interval:
            st.decide(
                "degraded",
                f"own checks failing ({failing}) but the last failover was "
                f"{st.obs.now - last:.0f} s ago (min_failover_interval "
                f"{st.s.min_failover_interval:g} s): staying active",
            )
            return
        _begin_demotion(st, "stepdown", f"own checks failing ({failing}); {why}: stepping down")
        return
    st.decide("active", f"active (epoch {epoch})")


def _can_become_primary(st: _Step) -> str | None:
    """Why the peer could not become a working primary even if forced; None when it could.
    Forcing overrides the eligibility policy (lag, nofailover), never this."""
    peer = st.cluster.member(st.s.peer) if st.cluster else None
    if not isinstance(peer, MemberStatus) or peer.age > st.s.peer_stale_after:
        return f"{st.s.peer} has no fresh member record: its daemon is not running"
    if peer.role in (Role.FENCED.value, Role.STARTING.value):
        return f"{st.s.peer} is {peer.role}: {peer.reason}"
    if st.managed_db() and peer.db_role not in (DbRole.REPLICA.value,):
        return f"{st.s.peer}'s database is {peer.db_role}, not a running replica"
    return None


# -- demoting: VIP first, then a clean stop, then the release with the final LSN ------------------


def _begin_demotion(st: _Step, kind: str, text: str) -> None:
    reason = st.decide(kind, text)
    st.set(
        role=Role.DEMOTING,
        takeover=None,
        pending=None,
        demotion=Demotion(kind=kind, started_at=st.obs.now),
    )
    st.emit(RemoveVip, reason)


def _demoting(st: _Step, done: Done | None) -> None:
    d = st.state.demotion
    if d is None:
        d = Demotion(kind="aborted", started_at=st.obs.now)
    reason = st.reason
    if done is not None:
        r = done.result
        if done.kind == "RemoveVip" and not r.ok:
            # Still configured, for all we know: keep the lease until it is gone for sure.
            reason = st.decide(
                "vip_removal_failed",
                f"removing the VIP failed ({r.detail}); keeping the lease so that "
                f"{st.s.peer} does not add it too; trying again",
            )
        elif done.kind == "RemoveVip":
            d = replace(d, vip_removed=True)
        elif done.kind == "StopDatabase" and not r.ok:
            # Not stopped: it may still take writes. The lease stays ours (the peer must not
            # promote beside it) and the stop is tried again, harder.
            d = replace(d, clean=False, stop_failures=d.stop_failures + 1)
            reason = st.decide(
                "stop_failed",
                f"stopping the database failed ({r.detail}); keeping the lease so that "
                f"{st.s.peer} does not promote beside a primary that may still take writes; "
                "trying again in immediate mode",
            )
        elif done.kind == "StopDatabase":
            d = replace(
                d,
                db_stopped=True,
                final_lsn=r.final_lsn,
                final_timeline=r.timeline,
                clean=d.clean and r.clean is not False,
            )
        elif done.kind == "ReleaseLease":
            d = replace(d, released=r.ok)
        elif done.kind == "StartReplica":
            if r.ok:
                st.set(role=Role.PASSIVE, demotion=None)
                st.decide("passive", f"back as a replica of {st.s.peer}")
            else:
                st.set(role=Role.FENCED, demotion=None)
                st.decide("must_rejoin", f"could not start as a replica: {r.detail}; must rejoin")
            return
        st.set(demotion=d)
    if st.state.pending is not None:
        return
    if not d.vip_removed:
        st.emit(RemoveVip, reason)
        return
    if st.managed_db() and not d.db_stopped:
        st.emit(StopDatabase, reason, mode="immediate" if d.stop_failures else "fast")
        return
    if not d.released:
        if st.holds_lease():
            clean = d.clean and (d.final_lsn is not None or not st.managed_db())
            st.emit(
                ReleaseLease,
                reason,
                epoch=st.state.epoch,
                final_lsn=d.final_lsn,
                clean=clean,
                timeline=d.final_timeline,
            )
            return
        d = replace(d, released=True)
        st.set(demotion=d)
    # Handed over.
    now = st.obs.now
    lsn = "" if d.final_lsn is None else f" at LSN {d.final_lsn}"
    text = f"stepped down ({d.kind}){lsn} in {now - d.started_at:.2f} s"
    if d.kind in ("stepdown", "switchover"):
        st.set(last_failover_at=now)
    if st.obs.shutdown_requested or d.kind == "shutdown":
        done_reason = st.decide("stopped", text + "; exiting")
        st.set(role=Role.PASSIVE, demotion=None, exit=True)
    elif st.managed_db() and d.clean:
        done_reason = st.decide("stepped_down", text + f"; restarting as a replica of {st.s.peer}")
        st.emit(StartReplica, done_reason, primary=st.s.peer)
    elif st.managed_db():
        done_reason = st.decide(
            "must_rejoin", text + "; the database did not stop cleanly: must rejoin"
        )
        st.set(role=Role.FENCED, demotion=None)
    else:
        done_reason = st.decide("stepped_down", text)
        st.set(role=Role.PASSIVE, demotion=None)
    st.emit(
        RecordEvent,
        done_reason,
        kind=d.kind,
        epoch=st.state.epoch,
        from_node=st.s.node,
        to_node=None,
        phases=(("stepdown", now - d.started_at),),
    )
    st.emit(RunHook, done_reason, role=st.state.role, epoch=st.state.epoch)


# -- fenced: stay down until it is safe to be a replica again ---------------------------------


def _record_fence_stop(st: _Step, r: ActionResult) -> None:
    """Where the fence stopped the database: what a later release of the lease reports."""
    st.set(
        fence_final_lsn=r.final_lsn if r.ok else None,
        fence_final_timeline=r.timeline if r.ok else None,
        fence_stop_clean=bool(r.ok and r.clean),
    )


def _fenced(st: _Step, done: Done | None) -> None:
    if done is not None:
        r = done.result
        if done.kind == "StopDatabase":
            _record_fence_stop(st, r)
            if not r.ok:
                reason = st.decide(
                    "fence_incomplete",
                    f"fenced, but stopping the database failed: {r.detail}; "
                    "stopping it in immediate mode",
                )
                if st.managed_db():
                    st.emit(StopDatabase, reason, mode="immediate")
                    if st.obs.shutdown_requested:
                        st.set(exit=True)
                    return
        elif not r.ok:
            st.decide("fence_incomplete", f"fenced, but {done.kind} failed: {r.detail}")
    if st.obs.shutdown_requested:
        st.set(exit=True)
        return
    if st.state.pending is not None:
        return
    c = st.cluster
    if c is None or not st.zk_fresh():
        if st.reason.code not in ("self_fenced", "stale_primary", "fence_incomplete"):
            st.decide("fenced", "fenced: waiting for ZooKeeper")
        return
    if c.lease is not None and c.lease.mine and c.lease.epoch >= st.state.epoch:
        # Our session survived the fence, or an acquisition answered after we got fenced: hand
        # the lease over rather than sit on it. Only a lease we served under and stopped
        # cleanly is released clean; any other makes the next holder fence us, harmlessly.
        epoch = c.lease.epoch
        same = epoch == st.state.epoch
        clean = same and (st.state.fence_stop_clean or not st.managed_db())
        reason = st.decide(
            "fenced_release",
            f"fenced while holding the lease (epoch {epoch}): releasing it",
        )
        st.emit(
            ReleaseLease,
            reason,
            epoch=epoch,
            final_lsn=st.state.fence_final_lsn if same else None,
            clean=clean and st.state.fence_final_lsn is not None,
            timeline=st.state.fence_final_timeline if same else None,
        )
        return
    if st.obs.database.role in (DbRole.UNMANAGED, DbRole.REPLICA):
        st.set(role=Role.STARTING)
        _starting(st)
        return
    st.decide(
        "must_rejoin",
        f"fenced: database is {st.obs.database.role.value}; it must rejoin "
        f"as a replica of the active (pg_rewind) before this node serves",
    )


# -- publishing ----------------------------------------------------------------------------------


def _fingerprint(m: MemberStatus) -> tuple[object, ...]:
    """What makes a record worth publishing at once; LSNs and texts ride on the heartbeat."""
    return (
        m.role,
        m.epoch,
        m.eligible,
        m.healthy,
        m.db_role,
        m.reason_code,
        tuple((c.name, c.healthy) for c in m.checks),
    )


def _maybe_publish(st: _Step) -> None:
    if st.obs.zk.state is not ZkState.CONNECTED:
        return
    role = st.state.role
    eligible = role is Role.PASSIVE and eligibility(st.s, st.state, st.obs)[0]
    db = st.obs.database
    status = MemberStatus(
        node=st.s.node,
        role=role.value,
        epoch=st.state.epoch,
        eligible=eligible,
        healthy=st.obs.local.healthy,
        reason=st.state.reason.text,
        reason_code=st.state.reason.code,
        lsn=db.lsn,
        db_role=db.role.value,
        checks=st.obs.local.checks,
        published_at=st.obs.wall_now,
        version=st.s.version,
    )
    last = st.state.last_published
    due = st.state.last_publish_at is None or (
        st.obs.now - st.state.last_publish_at >= st.s.publish_every
    )
    if last is None or due or _fingerprint(last) != _fingerprint(status):
        st.emit(Publish, st.state.reason, status=status)
        st.set(last_publish_at=st.obs.now, last_published=status)

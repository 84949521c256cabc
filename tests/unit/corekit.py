"""Shared builders for the decision core's tests.

Three things live here:

* ``Obs``: a fluent observation builder. Its defaults describe the boring case — node ``n1`` is a
  healthy, streaming replica; ``n2`` is active under epoch 1 and its database answers as primary;
  ZooKeeper is connected and the last round-trip is fresh — and each test changes only what its
  story is about: ``Obs(100).lease_free().peer_db(PeerDb.UNREACHABLE)``.
* ``Node``: runs the core one observation at a time (checking that every step is deterministic)
  and reads back roles, reason codes and actions: ``node.see(obs).expect(Role.PASSIVE,
  "acquiring", "AcquireLease")``.
* ``World`` and ``Checker``: a small simulated two-node environment driven by random draws
  (hypothesis or ``random.Random``), coherent enough to reach every role, and the invariants the
  core must keep on every single step of such a trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from failoverd import core
from failoverd.core import (
    AcquireLease,
    Action,
    ActionResult,
    AddVip,
    CheckStatus,
    ClearSwitchover,
    CloneDatabase,
    ClusterView,
    DatabaseStatus,
    DbRole,
    FenceOutcome,
    FencePeer,
    InspectRejoin,
    LastLeader,
    LeaseInfo,
    LocalHealth,
    MalformedMember,
    MemberStatus,
    Observation,
    PeerDb,
    PeerProbe,
    Pledge,
    Position,
    Promote,
    Publish,
    RecordPosition,
    RejoinFacts,
    RejoinRequest,
    ReleaseLease,
    RemoveVip,
    RewindDatabase,
    Role,
    Settings,
    StartPrimary,
    StartReplica,
    State,
    Step,
    StopDatabase,
    SwitchoverRequest,
    SyncRecord,
    ZkState,
    ZkStatus,
)

NODE = "n1"
PEER = "n2"
MB = 1 << 20
WALL = 1_700_000_000.0  # wall clock = boottime + WALL, so cross-host deadlines are easy to write
SESSION_TIMEOUT = 10.0

SETTINGS = Settings(
    node=NODE,
    peer=PEER,
    self_fence_after=5.0,
    min_failover_interval=30.0,
    max_lag_on_failover=16 * MB,
    max_replication_silence=30.0,  # above T: WAL stops when the active dies, T before its lease
    publish_every=1.0,
    action_timeout=10.0,
    fence_retry_after=5.0,
    version="test",
)

A = TypeVar("A", bound=Action)


def healthy_checks() -> tuple[CheckStatus, ...]:
    return (
        CheckStatus("app", True),
        CheckStatus("postgres", True),
        CheckStatus("squid", True),
    )


def names(actions: Sequence[Action], *, publish: bool = False) -> list[str]:
    """Action class names in order; the records published every heartbeat (``Publish``,
    ``RecordPosition``) left out unless asked for."""
    return [a.name for a in actions if publish or not isinstance(a, Publish | RecordPosition)]


def of_type(actions: Sequence[Action], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def one(actions: Sequence[Action], kind: type[A]) -> A:
    found = of_type(actions, kind)
    assert len(found) == 1, f"expected one {kind.__name__}, got {names(actions)}"
    return found[0]


def sequencing(actions: Sequence[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, core.SEQUENCING)]


# --------------------------------------------------------------------------------------------
# A fluent observation builder
# --------------------------------------------------------------------------------------------


class Obs:
    """Build an ``Observation`` by saying only what differs from a healthy passive node."""

    def __init__(self, now: float = 100.0, settings: Settings = SETTINGS) -> None:
        self.s = settings
        self.now = now
        self.wall = WALL + now
        self._zk_state = ZkState.CONNECTED
        self._zk_changed = 0.0
        self._sent: float | None = now - 0.2
        self._cluster = True
        self._epoch = 1
        self._lease: LeaseInfo | None = LeaseInfo(PEER, 1, WALL, mine=False)
        self._last_leader: LastLeader | None = None
        self._peer: MemberStatus | MalformedMember | None = MemberStatus(
            node=PEER,
            role=Role.ACTIVE.value,
            epoch=1,
            eligible=False,
            healthy=True,
            reason="active",
            lsn=5000,
            db_role="primary",
        )
        self._switchover: SwitchoverRequest | None = None
        self._position: Position | None = None
        self._rejoin: tuple[RejoinRequest, ...] = ()
        self._sync: SyncRecord | None = None
        self._paused = False
        self._checks = healthy_checks()
        self._complete = True
        self._db = DatabaseStatus(
            DbRole.REPLICA, lsn=5000, replayed_lsn=5000, streaming=True, last_received_age=0.1
        )
        self._probe = PeerProbe(PeerDb.PRIMARY, now - 0.1)
        self._results: list[ActionResult] = []
        self._shutdown = False
        self._started_unfenced = False
        self._vip: bool | None = None
        self._pledge: Pledge | None = None
        self._pledged_until: float | None = None
        self._granting: int | None = None

    # -- ZooKeeper connection ---------------------------------------------------------------

    def roundtrip(self, ago: float) -> Obs:
        """The last successful round-trip was sent ``ago`` seconds before now."""
        self._sent = self.now - ago
        return self

    def roundtrip_at(self, sent: float | None) -> Obs:
        self._sent = sent
        return self

    def no_roundtrip(self) -> Obs:
        self._sent = None
        return self

    def zk(self, state: ZkState, changed_at: float = 0.0) -> Obs:
        self._zk_state = state
        self._zk_changed = changed_at
        return self

    def no_cluster(self) -> Obs:
        self._cluster = False
        return self

    # -- the cluster view ------------------------------------------------------------------

    def epoch(self, epoch: int) -> Obs:
        self._epoch = epoch
        return self

    def lease_mine(self, epoch: int) -> Obs:
        self._epoch = epoch
        self._lease = LeaseInfo(NODE, epoch, WALL, mine=True)
        return self

    def lease_peer(self, epoch: int) -> Obs:
        self._epoch = epoch
        self._lease = LeaseInfo(PEER, epoch, WALL, mine=False)
        return self

    def lease_held_by(self, node: str, epoch: int, *, mine: bool = False) -> Obs:
        self._epoch = epoch
        self._lease = LeaseInfo(node, epoch, WALL, mine=mine)
        return self

    def lease_free(self, epoch: int | None = None) -> Obs:
        if epoch is not None:
            self._epoch = epoch
        self._lease = None
        return self

    def last_leader(
        self,
        node: str,
        epoch: int,
        final_lsn: int | None = None,
        *,
        clean: bool = True,
        timeline: int | None = None,
    ) -> Obs:
        self._last_leader = LastLeader(node, epoch, final_lsn, clean, timeline=timeline)
        return self

    def left_serving(self) -> Obs:
        """The last leader's daemon stopped while paused, leaving it serving."""
        assert self._last_leader is not None, "say last_leader(...) first"
        self._last_leader = replace(self._last_leader, left_serving=True)
        return self

    def peer_member(
        self,
        role: Role = Role.PASSIVE,
        *,
        eligible: bool = True,
        lsn: int | None = 5000,
        reason: str = "",
        age: float = 0.2,
        db_role: DbRole | None = None,
        lsn_exact: bool = True,
    ) -> Obs:
        self._peer = MemberStatus(
            node=PEER,
            role=role.value,
            epoch=self._epoch,
            eligible=eligible,
            healthy=True,
            reason=reason or ("eligible" if eligible else "not eligible"),
            lsn=lsn,
            db_role=(db_role or (DbRole.PRIMARY if role is Role.ACTIVE else DbRole.REPLICA)).value,
            age=age,
            lsn_exact=lsn_exact,
        )
        return self

    def peer_malformed(self, error: str = "not JSON") -> Obs:
        self._peer = MalformedMember(PEER, error)
        return self

    def no_peer_member(self) -> Obs:
        self._peer = None
        return self

    def switchover(
        self,
        target: str | None,
        *,
        from_epoch: int | None = None,
        deadline_in: float = 60.0,
        force: bool = False,
        by: str = "alice",
    ) -> Obs:
        self._switchover = SwitchoverRequest(
            target=target,
            from_epoch=self._epoch if from_epoch is None else from_epoch,
            requested_by=by,
            deadline=self.wall + deadline_in,
            force=force,
        )
        return self

    def position(self, node: str, epoch: int, lsn: int, timeline: int | None = None) -> Obs:
        """The active's persisted position record."""
        self._position = Position(node, epoch, lsn, timeline, WALL)
        return self

    def no_position(self) -> Obs:
        self._position = None
        return self

    def sync(self, standby: str | None, epoch: int) -> Obs:
        """The ``sync`` record: ``standby`` holds every commit the active of ``epoch`` acked."""
        self._sync = SyncRecord(standby, epoch, WALL)
        return self

    def rejoin_request(self, node: str, *, reclone: bool = False) -> Obs:
        self._rejoin = (RejoinRequest(node, reclone, "alice", WALL),)
        return self

    def paused(self, paused: bool = True) -> Obs:
        self._paused = paused
        return self

    # -- local health and database -----------------------------------------------------------

    def check_failing(self, name: str = "app", reason: str = "HTTP 503") -> Obs:
        self._checks = tuple(
            CheckStatus(c.name, False, reason) if c.name == name else c for c in self._checks
        )
        return self

    def check_recovering(self, name: str = "postgres", passes: int = 1) -> Obs:
        """Failing by its hysteresis, but its latest ``passes`` probes passed (rise not met)."""
        self._checks = tuple(
            CheckStatus(c.name, False, f"recovering: {passes}/2 passes", successes=passes)
            if c.name == name
            else c
            for c in self._checks
        )
        return self

    def checks_incomplete(self) -> Obs:
        self._complete = False
        return self

    def db(self, status: DatabaseStatus) -> Obs:
        self._db = status
        return self

    def db_primary(self, lsn: int = 9000, recorded_epoch: int | None = None) -> Obs:
        self._db = DatabaseStatus(DbRole.PRIMARY, lsn=lsn, recorded_epoch=recorded_epoch)
        return self

    def db_replica(
        self,
        lsn: int = 5000,
        *,
        replayed: int | None = None,
        streaming: bool = True,
        received_age: float | None = 0.1,
        timeline: int | None = None,
    ) -> Obs:
        self._db = DatabaseStatus(
            DbRole.REPLICA,
            lsn=lsn,
            replayed_lsn=lsn if replayed is None else replayed,
            streaming=streaming,
            last_received_age=received_age,
            timeline=timeline,
        )
        return self

    def db_stopped(self, *, was_primary: bool, clean: bool, lsn: int | None = 9000) -> Obs:
        self._db = DatabaseStatus(
            DbRole.STOPPED, lsn=lsn, was_primary=was_primary, stopped_cleanly=clean
        )
        return self

    def db_unknown(self) -> Obs:
        self._db = DatabaseStatus(DbRole.UNKNOWN)
        return self

    def unmanaged(self) -> Obs:
        """No database for failoverd to manage: the peer is not probed either."""
        self._db = core.UNMANAGED_DB
        self._probe = PeerProbe(PeerDb.UNMANAGED, 0.0)
        return self

    def peer_db(self, state: PeerDb, *, ago: float = 0.1) -> Obs:
        self._probe = PeerProbe(state, self.now - ago)
        return self

    # -- results and shutdown ----------------------------------------------------------------

    def result(self, action_id: int, ok: bool = True, detail: str = "", **fields: Any) -> Obs:
        self._results.append(ActionResult(action_id, ok=ok, detail=detail, **fields))
        return self

    def answer(self, state: State, ok: bool = True, detail: str = "", **fields: Any) -> Obs:
        """The result of ``state``'s in-flight action."""
        assert state.pending is not None, "nothing in flight"
        return self.result(state.pending.id, ok, detail, **fields)

    def vip(self, *, present: bool | None) -> Obs:
        """Whether the VIP is seen on this node's interface (None: not looked)."""
        self._vip = present
        return self

    def shutdown(self) -> Obs:
        self._shutdown = True
        return self

    def unfenced_start(self) -> Obs:
        """This process's previous life ended abnormally and ExecStopPost's fence failed."""
        self._started_unfenced = True
        return self

    def pledge(self, epoch: int, sent_at: float, ttl: float = 2.0) -> Obs:
        """The peer granted us a pledge for ``epoch``, asked at ``sent_at``."""
        self._pledge = Pledge(epoch, sent_at, ttl)
        return self

    def promised(self, until: float | None, granting: int | None) -> Obs:
        """We promised the peer not to take the lease before ``until``; we grant to ``granting``."""
        self._pledged_until = until
        self._granting = granting
        return self

    def build(self) -> Observation:
        cluster = None
        if self._cluster:
            members: tuple[MemberStatus | MalformedMember, ...] = (
                () if self._peer is None else (self._peer,)
            )
            cluster = ClusterView(
                epoch=self._epoch,
                lease=self._lease,
                last_leader=self._last_leader,
                members=members,
                switchover=self._switchover,
                paused=self._paused,
                position=self._position,
                rejoin_requests=self._rejoin,
                sync=self._sync,
            )
        return Observation(
            now=self.now,
            wall_now=self.wall,
            zk=ZkStatus(self._zk_state, self._zk_changed, self._sent),
            cluster=cluster,
            local=LocalHealth(self._checks, self._complete, database_check="postgres"),
            database=self._db,
            peer_database=self._probe,
            results=tuple(self._results),
            shutdown_requested=self._shutdown,
            vip_present=self._vip,
            pledge=self._pledge,
            pledged_until=self._pledged_until,
            granting=self._granting,
            started_unfenced=self._started_unfenced,
        )


# --------------------------------------------------------------------------------------------
# Running the core
# --------------------------------------------------------------------------------------------


def allowed_while_paused(
    settings: Settings, obs: Observation, actions: Sequence[Action], after: State
) -> bool:
    """Paused means no side effect, but for two that protect the cluster:

    * a self-fence (``RemoveVip``, ``StopDatabase``, ``RunHook``) by a node without a fresh
      round-trip, by one whose session (and so its lease) is known lost, or by one stopping
      while serving that could not record so;
    * stopping while serving: one ``ReleaseLease`` that records the node goes on serving.
    """
    did = names(actions)
    if not did:
        return True
    deadline = core.roundtrip_deadline(settings, obs)
    stale = deadline is None or obs.now >= deadline
    c = obs.cluster
    lost = obs.zk.state is ZkState.LOST or (
        obs.zk.state is ZkState.CONNECTED
        and c is not None
        and c.epoch >= after.epoch
        and not (c.lease is not None and c.lease.mine and c.lease.epoch == after.epoch)
    )
    stale = stale or lost
    if after.role is Role.FENCED and after.reason.code == "self_fenced":
        fence = [n for n in did if n != "RunHook"]
        return (stale or obs.shutdown_requested) and fence in (
            ["RemoveVip"],
            ["RemoveVip", "StopDatabase"],
        )
    if did == ["ReleaseLease"] and obs.shutdown_requested:
        release = one(actions, ReleaseLease)
        return release.left_serving and not release.clean
    return False


def run(state: State, obs: Obs | Observation, settings: Settings = SETTINGS) -> Step:
    """One deterministic step: the same inputs twice must give equal outputs."""
    o = obs.build() if isinstance(obs, Obs) else obs
    first = core.step(settings, state, o)
    again = core.step(settings, state, o)
    assert first == again, "step is not deterministic"
    return first


@dataclass
class Seen:
    """What one step did, with assertions that read like the story."""

    step: Step

    @property
    def state(self) -> State:
        return self.step.state

    @property
    def role(self) -> Role:
        return self.step.state.role

    @property
    def code(self) -> str:
        return self.step.reason.code

    @property
    def text(self) -> str:
        return self.step.reason.text

    @property
    def actions(self) -> tuple[Action, ...]:
        return self.step.actions

    @property
    def did(self) -> list[str]:
        return names(self.step.actions)

    def one(self, kind: type[A]) -> A:
        return one(self.step.actions, kind)

    def expect(self, role: Role | None = None, code: str | None = None, *did: str) -> Seen:
        """Role and reason code after the step, and the actions (without ``Publish``) in order."""
        got = (self.role, self.code, self.did)
        if role is not None:
            assert self.role is role, f"role {self.role}, wanted {role}; got {got}"
        if code is not None:
            assert self.code == code, f"reason {self.step.reason}, wanted {code!r}; got {got}"
        assert self.did == list(did), f"actions {self.did}, wanted {list(did)}; got {got}"
        return self


class Node:
    """One failoverd daemon, fed observations one by one."""

    def __init__(self, settings: Settings = SETTINGS, state: State | None = None) -> None:
        self.settings = settings
        self.state = state if state is not None else State()
        self.log: list[Seen] = []

    def see(self, obs: Obs | Observation) -> Seen:
        seen = Seen(run(self.state, obs, self.settings))
        self.state = seen.state
        self.log.append(seen)
        return seen

    @property
    def pending_id(self) -> int:
        assert self.state.pending is not None, "nothing in flight"
        return self.state.pending.id


def state_of(role: Role, epoch: int = 3, /, **changes: Any) -> State:
    """A state in ``role`` under ``epoch``, as if the node had got there itself."""
    base = State(
        role=role,
        epoch=epoch,
        highest_epoch=epoch,
        promoted_epoch=epoch if role in (Role.ACTIVE, Role.DEMOTING) else 0,
        next_id=100,
    )
    return replace(base, **changes)


# --------------------------------------------------------------------------------------------
# A simulated two-node environment for property tests
# --------------------------------------------------------------------------------------------

Pick = Callable[[Sequence[Any]], Any]

EVENTS: tuple[str, ...] = (
    ("none",) * 24
    + ("link_down", "link_down", "link_up", "link_up", "link_up", "rt_fail", "rt_fail")
    + ("watch_lag", "watch_lag")
    + ("freeze", "stall", "stall", "session_expire")
    + ("peer_acquire", "peer_acquire", "peer_acquire", "peer_release", "peer_release_dirty")
    + ("peer_crash", "peer_crash", "peer_restart", "peer_restart")
    + ("peer_db_primary", "peer_db_down", "peer_db_unreachable", "peer_db_replica")
    + ("peer_eligible", "peer_ineligible", "peer_lagging", "peer_stale_record")
    + ("checks_fail", "checks_fail", "checks_ok", "checks_ok")
    + ("db_crash", "db_unknown", "db_lag", "db_silence", "db_heal", "db_heal")
    + ("rejoin", "rejoin", "rejoin")
    + ("pause", "resume", "resume")
    + ("sw_peer", "sw_me", "sw_any", "sw_stale", "sw_expired", "sw_force_peer", "sw_force_me")
    + ("shutdown", "restart")
)
DTS: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 0.1, 2.0, 3.0, 4.5)
STALLS: tuple[float, ...] = (5.0, 6.0, 11.0)  # a slow loop: past self_fence_after, kazoo still fine
OUTCOMES: tuple[str, ...] = ("ok",) * 10 + ("fail", "fail", "never", "lost", "slow")
FENCES: tuple[FenceOutcome, ...] = (
    FenceOutcome.FENCED,
    FenceOutcome.FENCED,
    FenceOutcome.UNREACHABLE,
    FenceOutcome.FAILED,
)
PROBE_AGES: tuple[float, ...] = (0.2, 0.2, 0.0, 1.0, 4.0)


@dataclass
class Flight:
    """An action the adapters are working on."""

    action: Action
    emitted_at: float
    done_at: float | None  # None: it never finishes (no effect, no result)
    report: bool  # False: it takes effect but its result is lost
    ok: bool
    fence: FenceOutcome
    clean: bool


@dataclass
class Lease:
    node: str
    epoch: int
    session: int  # our session ids are >= 1; the peer's is 0


@dataclass
class Truth:
    """What really happened, for the checker: when each epoch's lease ended and how."""

    vanished: dict[int, tuple[float, bool]] = field(default_factory=dict)  # epoch -> (t, clean)
    granted: dict[int, tuple[str, float]] = field(default_factory=dict)  # epoch -> (node, t)


class World:
    """Node n1 (running the core under test), node n2 (scripted, random) and ZooKeeper."""

    def __init__(self, pick: Pick, settings: Settings = SETTINGS) -> None:
        self.s = settings
        self.pick = pick
        self.now = 0.0
        self.truth = Truth()
        self.managed: bool = pick((True, True, True, False))
        self.calm: bool = pick((False, True))  # calm traces get deep into the roles
        start = pick(("peer_active", "fresh", "we_were_active", "peer_expired", "fresh_peer"))
        # ZooKeeper's own state.
        self.epoch = 0
        self.lease: Lease | None = None
        self.last_leader: LastLeader | None = None
        self.switchover: SwitchoverRequest | None = None
        self.paused = False
        # Our session and link.
        self.sid = 1
        self.session_alive = True
        self.heard_at = 0.0
        self.link_up = True
        self.link_down_at = 0.0
        self.notice_delay = 0.0
        self.lost_reported = False
        self.zk_state = ZkState.CONNECTED
        self.zk_changed = 0.0
        self.last_rt: float | None = None
        self.view: ClusterView | None = None
        self.old_lease_expires: float | None = None  # a previous life's lease, until it expires
        # Our node.
        self.db = DatabaseStatus(DbRole.REPLICA, lsn=0, replayed_lsn=0, streaming=True)
        self.db_unknown_once = False
        self.lag = 0
        self.replay_behind = 0
        self.silent = False
        self.vip = False
        self.checks = healthy_checks()
        self.complete = False  # every check reports once, soon after the process starts
        self.checks_report_at = pick((0.0, 0.5, 2.0))
        self.shutdown = False
        self.state = State()
        self.log: list[str] = []  # one line per step, to read a failing trace
        self.flights: list[Flight] = []
        self.results: list[ActionResult] = []
        # The peer.
        self.peer_alive = True
        self.peer_db = PeerDb.REPLICA
        self.peer_db_log: list[tuple[float, PeerDb]] = [(-1.0, PeerDb.REPLICA)]
        self.peer_lsn = 100 * MB
        self.peer_eligible = True
        self.peer_lag = 0
        self.peer_record_stale = False
        self.peer_crashed_at = 0.0
        self.peer_lease_expires: float | None = None
        self.probe_started = 0.5

        if start == "peer_active":
            self.epoch = pick((1, 3))
            self.lease = Lease(PEER, self.epoch, 0)
            self._set_peer_db(PeerDb.PRIMARY)
            self.db = self._replica(streaming=True)
        elif start == "fresh":
            self.db = DatabaseStatus(DbRole.PRIMARY, lsn=100 * MB)
        elif start == "fresh_peer":
            self._set_peer_db(PeerDb.PRIMARY)
            self.db = self._replica(streaming=True)
        elif start == "we_were_active":
            self.epoch = pick((1, 3))
            self.db = DatabaseStatus(DbRole.PRIMARY, lsn=100 * MB, recorded_epoch=self.epoch)
            self.lease = Lease(NODE, self.epoch, 0)  # our previous life's session
            self.truth.granted[self.epoch] = (NODE, -1.0)
            self.old_lease_expires = pick((0.5, 4.0, 9.0))
        else:  # peer_expired: the peer's lease is gone without a last_leader record
            self.epoch = pick((1, 3))
            self.truth.vanished[self.epoch] = (-1.0, False)
            self._set_peer_db(pick((PeerDb.PRIMARY, PeerDb.UNREACHABLE, PeerDb.DOWN)))
            self.peer_alive = False
            self.db = self._replica(streaming=False)
        if not self.managed:
            self.db = core.UNMANAGED_DB

    # -- helpers ---------------------------------------------------------------------------

    def _set_peer_db(self, state: PeerDb) -> None:
        self.peer_db = state
        self.peer_db_log.append((self.now, state))

    def _peer_db_at(self, t: float) -> PeerDb:
        found = PeerDb.UNKNOWN
        for when, state in self.peer_db_log:
            if when <= t:
                found = state
        return found

    def _replica(self, *, streaming: bool) -> DatabaseStatus:
        lsn = max(0, self.peer_lsn - self.lag)
        return DatabaseStatus(
            DbRole.REPLICA,
            lsn=lsn,
            replayed_lsn=lsn,
            streaming=streaming,
            last_received_age=0.1 if streaming else 30.0,
        )

    def _vanish(
        self, t: float, *, released: bool, clean: bool = False, final_lsn: int | None = None
    ) -> None:
        """The lease is deleted: released (with a last_leader record) or expired (without)."""
        lease = self.lease
        assert lease is not None
        self.truth.vanished[lease.epoch] = (t, released and clean)
        if released:
            self.last_leader = LastLeader(lease.node, lease.epoch, final_lsn, clean)
        self.lease = None

    def _our_lease(self) -> bool:
        return self.lease is not None and self.lease.session == self.sid

    # -- one tick ----------------------------------------------------------------------------

    def tick(self) -> tuple[State, Observation, Step]:
        """Advance time by a random step, deliver what happened, run the core once."""
        pick = self.pick
        event: str = "none" if self.calm and pick((True, True, False)) else pick(EVENTS)
        if event == "freeze":
            dt: float = pick((7.0, 12.0, 25.0))
        else:
            dt = pick(STALLS) if event == "stall" else pick(DTS)
        t0 = self.now
        self._event(event)
        self.now = t0 + dt
        now = self.now

        # The round-trip sent at the last observation, and the server hearing from us.
        reached = self.link_up and event != "freeze" and self.session_alive
        if reached and event != "rt_fail":
            self.last_rt = t0
        if reached:
            self.heard_at = now
        if self.session_alive and now - self.heard_at > SESSION_TIMEOUT:
            self._expire_session(self.heard_at + SESSION_TIMEOUT)
        if self.old_lease_expires is not None and now >= self.old_lease_expires:
            if self.lease is not None and self.lease.node == NODE and not self._our_lease():
                self._vanish(self.old_lease_expires, released=False)
            self.old_lease_expires = None
        if self.peer_lease_expires is not None and now >= self.peer_lease_expires:
            if self.lease is not None and self.lease.node == PEER:
                self._vanish(self.peer_lease_expires, released=False)
            self.peer_lease_expires = None

        # What kazoo reports.
        previous = self.zk_state
        if event == "freeze":
            pass  # a frozen client noticed nothing
        elif not self.link_up:
            if now - self.link_down_at >= self.notice_delay:
                self.zk_state = ZkState.SUSPENDED
        elif not self.session_alive:
            if self.lost_reported:
                self._new_session()
            else:
                self.zk_state = ZkState.LOST
                self.lost_reported = True
        else:
            self.zk_state = ZkState.CONNECTED
        if self.zk_state is not previous:
            self.zk_changed = now

        if now >= self.checks_report_at:
            self.complete = True
        self._deliver()
        self._progress(dt)
        if self.link_up and event not in ("freeze", "watch_lag") and self.session_alive:
            self.view = self._cluster_view()
        elif self.link_up and not self.session_alive and self.view is not None:
            self.view = replace(self._cluster_view(), lease=self._lease_info(mine_ok=False))

        obs = self._observation()
        self.results = []
        before = self.state
        out = core.step(self.s, before, obs)
        self.state = out.state
        self.log.append(self._describe(event, obs, before, out))
        self._launch(out.actions, obs)
        if out.state.exit:
            self._restart(clean_exit=True)
        return before, obs, out

    def _describe(self, event: str, obs: Observation, before: State, out: Step) -> str:
        c = obs.cluster
        lease = (
            "-"
            if c is None
            else "free"
            if c.lease is None
            else (f"{c.lease.node}{'*' if c.lease.mine else ''}@{c.lease.epoch}")
        )
        view = "none" if c is None else f"e{c.epoch} lease={lease}" + (" P" if c.paused else "")
        acts = ", ".join(f"{a.name}#{a.id}" for a in out.actions if not isinstance(a, Publish))
        res = ", ".join(
            f"#{r.action_id}:{'ok' if r.ok else 'fail'}"
            + (f"/{r.fence.value}" if r.fence is not None else "")
            for r in obs.results
        )
        sent = obs.zk.last_roundtrip_sent_at
        rt = "never" if sent is None else f"{sent:.2f}"
        return (
            f"t={obs.now:7.2f} {event:<18} zk={obs.zk.state.value[:4]} rt={rt}"
            f" {view} db={obs.database.role.value} peer={obs.peer_database.state.value}"
            f" res=[{res}] | {before.role.value}->{out.state.role.value} {out.reason.code}"
            f" [{acts}]"
        )

    def _new_session(self) -> None:
        self.sid += 1
        self.session_alive = True
        self.lost_reported = False
        self.heard_at = self.now
        self.zk_state = ZkState.CONNECTED

    def _expire_session(self, at: float) -> None:
        self.session_alive = False
        if self._our_lease():
            self._vanish(at, released=False)

    def _restart(self, *, clean_exit: bool) -> None:
        """The daemon exits (or is killed) and systemd starts it again: a new process."""
        if self._our_lease():
            if clean_exit and self.link_up:
                self._vanish(self.now, released=False)  # closing the session drops the lease
            else:
                self.old_lease_expires = self.now + SESSION_TIMEOUT
                assert self.lease is not None
                self.lease.session = -1  # a previous life's session
        self.sid += 1
        self.session_alive = self.link_up
        self.lost_reported = False
        self.heard_at = self.now
        self.zk_state = ZkState.CONNECTED if self.link_up else ZkState.SUSPENDED
        self.last_rt = None
        self.view = None
        self.flights = []
        self.results = []
        self.shutdown = False
        self.state = State()
        self.probe_started = self.now + 0.5
        self.complete = False
        self.checks_report_at = self.now + self.pick((0.0, 0.5, 2.0))

    def _event(self, event: str) -> None:
        pick = self.pick
        now = self.now
        if event == "link_down" and self.link_up:
            self.link_up = False
            self.link_down_at = now
            self.notice_delay = pick((0.0, 2.0, 6.0))
        elif event == "link_up":
            self.link_up = True
        elif event == "session_expire" and self.session_alive:
            self._expire_session(now)
        elif event.startswith("peer_"):
            self._peer_event(event)
        elif event == "checks_fail":
            self.checks = (CheckStatus("app", False, "HTTP 503"), *healthy_checks()[1:])
            self.complete = True
        elif event == "checks_ok":
            self.checks = healthy_checks()
            self.complete = True
        elif event.startswith("db_") and self.managed:
            self._db_event(event)
        elif event == "pause":
            self.paused = True
        elif event == "resume":
            self.paused = False
        elif event.startswith("sw_"):
            kind = event[3:]
            target = {"me": NODE, "force_me": NODE, "any": None}.get(kind, PEER)
            self.switchover = SwitchoverRequest(
                target=target,
                from_epoch=self.epoch - 1 if kind == "stale" else self.epoch,
                requested_by="alice",
                deadline=WALL + now + (-1.0 if kind == "expired" else 30.0),
                force=kind.startswith("force"),
            )
        elif event == "shutdown":
            self.shutdown = True
        elif event == "restart":
            self._restart(clean_exit=False)

    def _peer_event(self, event: str) -> None:
        now = self.now
        holds = self.lease is not None and self.lease.node == PEER and self.lease.session == 0
        if event == "peer_acquire" and self.lease is None and self.peer_alive and not self.paused:
            previous_expired = (
                self.epoch in self.truth.vanished and not (self.truth.vanished[self.epoch][1])
            )
            self.epoch += 1
            self.lease = Lease(PEER, self.epoch, 0)
            self.truth.granted[self.epoch] = (PEER, now)
            if previous_expired and self.db.role is DbRole.PRIMARY and self.pick((True, False)):
                # The peer fences us over SSH: fence-self removes the VIP and stops PostgreSQL.
                self.vip = False
                self.db = DatabaseStatus(
                    DbRole.STOPPED, lsn=self.db.lsn, was_primary=True, stopped_cleanly=True
                )
            self._set_peer_db(PeerDb.PRIMARY)
        elif event in ("peer_release", "peer_release_dirty") and holds:
            clean = event == "peer_release"
            final = self.peer_lsn if clean else None
            self.replay_behind = self.pick((0, 3 * MB))  # our replay catches up over a few ticks
            self._vanish(now, released=True, clean=clean, final_lsn=final)
            self._set_peer_db(PeerDb.REPLICA if clean else PeerDb.DOWN)
        elif event == "peer_crash" and self.peer_alive:
            self.peer_alive = False
            self.peer_crashed_at = now
            if holds:
                self.peer_lease_expires = now + SESSION_TIMEOUT
                if self.lease is not None:
                    self.lease.session = -2  # nobody renews it any more
            self._set_peer_db(self.pick((PeerDb.PRIMARY, PeerDb.UNREACHABLE, self.peer_db)))
        elif event == "peer_restart" and not self.peer_alive:
            self.peer_alive = True
            if self.peer_db is PeerDb.UNREACHABLE:
                self._set_peer_db(PeerDb.DOWN)
        elif event == "peer_db_primary":
            self._set_peer_db(PeerDb.PRIMARY)
        elif event == "peer_db_down":
            self._set_peer_db(PeerDb.DOWN)
        elif event == "peer_db_unreachable":
            self._set_peer_db(PeerDb.UNREACHABLE)
        elif event == "peer_db_replica":
            self._set_peer_db(PeerDb.REPLICA)
        elif event == "peer_eligible":
            self.peer_eligible = True
            self.peer_lag = 0
            self.peer_record_stale = False
        elif event == "peer_ineligible":
            self.peer_eligible = False
            self.peer_record_stale = False
        elif event == "peer_lagging":
            self.peer_lag = 40 * MB
        elif event == "peer_stale_record":
            self.peer_record_stale = True

    def _db_event(self, event: str) -> None:
        db = self.db
        if event == "db_crash":
            self.db = DatabaseStatus(
                DbRole.STOPPED,
                lsn=db.lsn,
                was_primary=db.role is DbRole.PRIMARY or bool(db.was_primary),
                stopped_cleanly=False,
            )
        elif event == "db_unknown":
            self.db_unknown_once = True
        elif event == "db_lag":
            self.lag = 40 * MB
        elif event == "db_silence":
            self.silent = True
        elif event == "db_heal":
            self.lag = 0
            self.silent = False
        elif event == "rejoin" and db.role is DbRole.STOPPED:
            # The operator rewinds the ex-primary and starts it as a replica.
            self.db = self._replica(streaming=self.peer_db is PeerDb.PRIMARY)

    # -- adapters ------------------------------------------------------------------------------

    def _launch(self, actions: Sequence[Action], obs: Observation) -> None:
        pick = self.pick
        outcome: str = (
            pick(OUTCOMES) if any(isinstance(a, core.SEQUENCING) for a in actions) else ""
        )
        fence: FenceOutcome = (
            pick(FENCES)
            if any(isinstance(a, FencePeer) for a in actions)
            else (FenceOutcome.FENCED)
        )
        clean: bool = (
            pick((True, True, False)) if any(isinstance(a, StopDatabase) for a in actions) else True
        )
        for a in actions:
            if isinstance(a, ClearSwitchover):
                if self.link_up and self.session_alive:
                    self.switchover = None
            elif isinstance(a, core.SEQUENCING):
                done_at: float | None = obs.now + (12.0 if outcome == "slow" else 0.01)
                if outcome == "never":
                    done_at = None
                self.flights.append(
                    Flight(
                        a,
                        obs.now,
                        done_at,
                        report=outcome != "lost",
                        ok=outcome != "fail",
                        fence=FenceOutcome.FAILED if outcome == "fail" else fence,
                        clean=clean,
                    )
                )

    def _deliver(self) -> None:
        keep: list[Flight] = []
        for f in self.flights:
            if f.done_at is None or f.done_at > self.now:
                if f.done_at is not None:
                    keep.append(f)
                continue
            result = self._perform(f)
            if f.report:
                self.results.append(result)
        self.flights = keep

    def _perform(self, f: Flight) -> ActionResult:
        a = f.action
        at = f.done_at if f.done_at is not None else self.now
        zk_ok = self.link_up and self.session_alive
        if not f.ok and not isinstance(a, FencePeer):
            return ActionResult(a.id, ok=False, detail="failed")
        if isinstance(a, AcquireLease):
            if zk_ok and self.lease is None and self.epoch == a.expected_epoch:
                self.epoch += 1
                self.lease = Lease(NODE, self.epoch, self.sid)
                self.truth.granted[self.epoch] = (NODE, at)
                return ActionResult(a.id, ok=True, epoch=self.epoch)
            return ActionResult(a.id, ok=False, detail="lease not free or epoch moved")
        if isinstance(a, ReleaseLease):
            if (
                zk_ok
                and self._our_lease()
                and self.lease is not None
                and (self.lease.epoch == a.epoch)
            ):
                self._vanish(at, released=True, clean=a.clean, final_lsn=a.final_lsn)
                return ActionResult(a.id, ok=True)
            return ActionResult(a.id, ok=False, detail="not our lease")
        if isinstance(a, FencePeer):
            outcome = f.fence
            if self.peer_db is PeerDb.UNREACHABLE and outcome is FenceOutcome.FENCED:
                outcome = FenceOutcome.UNREACHABLE
            if outcome is FenceOutcome.FENCED:
                self._set_peer_db(PeerDb.DOWN)
            return ActionResult(
                a.id, ok=outcome is not FenceOutcome.FAILED, detail="ssh", fence=outcome
            )
        if isinstance(a, Promote | StartPrimary):
            if at >= a.not_after:
                return ActionResult(a.id, ok=False, detail="refused: not_after passed")
            if self.managed:
                self.db = DatabaseStatus(DbRole.PRIMARY, lsn=self.db.lsn, recorded_epoch=a.epoch)
            return ActionResult(a.id, ok=True)
        if isinstance(a, InspectRejoin):
            # A stopped ex-primary of ours usually diverged from the peer's history.
            facts = RejoinFacts(
                was_primary=bool(self.db.was_primary),
                clean=bool(self.db.stopped_cleanly),
                local_timeline=2,
                local_lsn=self.db.lsn,
                local_checkpoint_end=None,
                primary_timeline=3,
                primary_history=((1, 10), (2, self.pick((0, 1 << 40)))),
            )
            return ActionResult(a.id, ok=True, rejoin=facts)
        if isinstance(a, RewindDatabase):
            if self.managed:
                self.db = DatabaseStatus(
                    DbRole.STOPPED, lsn=self.db.lsn, was_primary=False, stopped_cleanly=True
                )
            return ActionResult(a.id, ok=True)
        if isinstance(a, CloneDatabase):
            if self.managed:
                self.db = self._replica(streaming=self.peer_db is PeerDb.PRIMARY)
            return ActionResult(a.id, ok=True)
        if isinstance(a, AddVip):
            if at >= a.not_after:
                return ActionResult(a.id, ok=False, detail="refused: not_after passed")
            self.vip = True
            return ActionResult(a.id, ok=True)
        if isinstance(a, RemoveVip):
            self.vip = False
            return ActionResult(a.id, ok=True)
        if isinstance(a, StopDatabase):
            db = self.db
            if self.managed:
                self.db = DatabaseStatus(
                    DbRole.STOPPED,
                    lsn=db.lsn,
                    was_primary=db.role is DbRole.PRIMARY or bool(db.was_primary),
                    stopped_cleanly=f.clean,
                    recorded_epoch=db.recorded_epoch,
                )
            return ActionResult(a.id, ok=True, final_lsn=db.lsn, clean=f.clean)
        if isinstance(a, StartReplica):
            if self.managed:
                self.db = self._replica(streaming=self.peer_db is PeerDb.PRIMARY)
            return ActionResult(a.id, ok=True)
        raise AssertionError(f"unexpected sequencing action {a}")

    # -- the world moves on --------------------------------------------------------------------

    def _progress(self, dt: float) -> None:
        step = int(dt * 200_000)
        if self.peer_db is PeerDb.PRIMARY:
            self.peer_lsn += step
        if not self.managed:
            return
        db = self.db
        if db.role is DbRole.PRIMARY:
            self.db = replace(db, lsn=(db.lsn or 0) + step)
        elif db.role is DbRole.REPLICA:
            if self.replay_behind:
                self.replay_behind = max(0, self.replay_behind - MB)
            streaming = self.peer_db is PeerDb.PRIMARY and not self.silent
            if streaming:
                lsn = max(db.lsn or 0, self.peer_lsn - self.lag)
                self.db = replace(
                    db,
                    lsn=lsn,
                    replayed_lsn=lsn - self.replay_behind,
                    streaming=True,
                    last_received_age=0.1,
                )
            else:
                age = (db.last_received_age or 0.0) + dt
                replayed = (db.lsn or 0) - self.replay_behind
                self.db = replace(db, streaming=False, last_received_age=age, replayed_lsn=replayed)

    def _lease_info(self, *, mine_ok: bool = True) -> LeaseInfo | None:
        if self.lease is None:
            return None
        mine = mine_ok and self._our_lease()
        return LeaseInfo(self.lease.node, self.lease.epoch, WALL, mine=mine)

    def _cluster_view(self) -> ClusterView:
        members: tuple[MemberStatus, ...] = ()
        peer_holds = self.lease is not None and self.lease.node == PEER
        record_alive = self.peer_alive or (peer_holds and self.peer_lease_expires is not None)
        if record_alive:
            if not self.peer_alive:
                age = self.now - self.peer_crashed_at
            else:
                age = 30.0 if self.peer_record_stale else 0.2
            members = (
                MemberStatus(
                    node=PEER,
                    role=(Role.ACTIVE if peer_holds else Role.PASSIVE).value,
                    epoch=self.epoch,
                    eligible=self.peer_eligible and not peer_holds and not self.paused,
                    healthy=True,
                    reason="eligible" if self.peer_eligible else "check app failing",
                    lsn=self.peer_lsn if peer_holds else self.peer_lsn - self.peer_lag,
                    db_role=self.peer_db.value,
                    age=age,
                ),
            )
        return ClusterView(
            epoch=self.epoch,
            lease=self._lease_info(),
            last_leader=self.last_leader,
            members=members,
            switchover=self.switchover,
            paused=self.paused,
        )

    def _observation(self) -> Observation:
        db = self.db
        if self.db_unknown_once:
            db = DatabaseStatus(DbRole.UNKNOWN)
            self.db_unknown_once = False
        if not self.managed:
            probe = PeerProbe(PeerDb.UNMANAGED, 0.0)
        elif self.now < self.probe_started:
            probe = PeerProbe(PeerDb.UNKNOWN, 0.0)
        else:
            at = max(self.probe_started, self.now - self.pick(PROBE_AGES))
            probe = PeerProbe(self._peer_db_at(at), at)
        return Observation(
            now=self.now,
            wall_now=WALL + self.now,
            zk=ZkStatus(self.zk_state, self.zk_changed, self.last_rt, SESSION_TIMEOUT),
            cluster=self.view,
            local=LocalHealth(self.checks, self.complete),
            database=db,
            peer_database=probe,
            results=tuple(self.results),
            shutdown_requested=self.shutdown,
        )


# --------------------------------------------------------------------------------------------
# The invariants, checked on every step of a trace
# --------------------------------------------------------------------------------------------


class Checker:
    """Keeps what it needs across a trace and asserts the core's invariants on each step."""

    def __init__(self, settings: Settings = SETTINGS) -> None:
        self.s = settings
        self.promotes: set[int] = set()
        self.last_id = 0
        self.max_epoch = 0
        self.max_highest = 0
        self.max_cluster_epoch = 0
        self.inflight: dict[int, float] = {}
        self.fenced_delivered: list[float] = []  # when a FENCED answer was delivered
        self.fence_answers: list[tuple[float, float, FenceOutcome | None, int]] = []
        self.fence_sent: dict[int, tuple[float, int]] = {}  # id -> (emitted at, epoch)
        self.roles: set[Role] = set()
        self.codes: set[str] = set()
        self.idle_since: float | None = None

    def new_process(self) -> None:
        """A restarted daemon starts from a blank state: per-process monotony starts over."""
        self.max_epoch = 0
        self.max_highest = 0
        self.inflight = {}
        self.last_id = 0
        self.idle_since = None

    def check(self, before: State, obs: Observation, out: Step, truth: Truth) -> None:
        s = self.s
        after = out.state
        actions = out.actions
        c = obs.cluster
        self.roles.add(after.role)
        self.codes.add(out.reason.code)
        ctx = f"role {before.role}->{after.role}, {out.reason}, actions {names(actions)}"

        # 8. Deterministic (and it did not raise, or we would not be here).
        assert core.step(s, before, obs) == out, "step is not deterministic"

        # Results delivered in this observation.
        for r in obs.results:
            if r.action_id in self.fence_sent:
                sent_at, epoch = self.fence_sent.pop(r.action_id)
                self.fence_answers.append((sent_at, obs.now, r.fence, epoch))
                if r.fence is FenceOutcome.FENCED:
                    self.fenced_delivered.append(obs.now)

        deadline = core.roundtrip_deadline(s, obs)
        for a in actions:
            # 1. Leased actions only under our own, current lease, with the right not_after.
            if isinstance(a, Promote | AddVip):
                assert c is not None and c.lease is not None and c.lease.mine, ctx
                assert a.epoch == c.lease.epoch == c.epoch == after.epoch, ctx
                assert deadline is not None and a.not_after == deadline, ctx
                assert obs.now < a.not_after, ctx
                self._check_fenced_first(a, obs, truth, ctx)
            # 3. No acquisition while the peer answers as primary, unless fenced since the probe.
            if isinstance(a, AcquireLease):
                probe = obs.peer_database
                if probe.state is PeerDb.PRIMARY:
                    assert any(t >= probe.probed_at for t in self.fenced_delivered), ctx
                # 5. ... never below an epoch seen before.
                assert a.expected_epoch >= self.max_cluster_epoch, ctx
            if isinstance(a, FencePeer):
                self.fence_sent[a.id] = (obs.now, a.epoch)

        # 2. An active node that cannot prove its session removes the VIP in this very step.
        if before.role is Role.ACTIVE and (deadline is None or obs.now >= deadline):
            assert any(isinstance(a, RemoveVip) for a in actions), ctx

        # 5. One promotion per epoch; epochs never go down.
        for a in of_type(actions, Promote):
            assert a.epoch not in self.promotes, f"second Promote under epoch {a.epoch}: {ctx}"
            self.promotes.add(a.epoch)
        assert after.epoch >= self.max_epoch and after.epoch >= before.epoch, ctx
        assert after.highest_epoch >= self.max_highest, ctx
        self.max_epoch = after.epoch
        self.max_highest = after.highest_epoch
        if c is not None:
            self.max_cluster_epoch = max(self.max_cluster_epoch, c.epoch)

        # 6. Paused means paused, but for self-fencing, which pause never suspends.
        if (Role.PAUSED in (before.role, after.role)) and c is not None and c.paused:
            assert allowed_while_paused(self.s, obs, actions, after), ctx
        if after.role is Role.PAUSED:
            assert allowed_while_paused(self.s, obs, actions, after), ctx

        # 7. Unique, increasing ids; one sequencing action in flight at a time.
        for a in actions:
            assert a.id > self.last_id, ctx
            self.last_id = a.id
        self._check_sequencing(obs, actions, ctx)

        # 9. Liveness: no node sits on a lease it is not using (nothing else could take it).
        held = c is not None and c.lease is not None and c.lease.mine and c.lease.epoch == c.epoch
        fresh = obs.zk.state is ZkState.CONNECTED and deadline is not None and obs.now < deadline
        if (
            after.role in (Role.PASSIVE, Role.STARTING, Role.FENCED)
            and held
            and fresh
            and not (self.inflight)
        ):
            if self.idle_since is None:
                self.idle_since = obs.now
            assert obs.now - self.idle_since <= 2 * s.action_timeout, (
                f"{after.role} has sat on the lease since {self.idle_since}: {ctx}"
            )
        else:
            self.idle_since = None

    def _check_fenced_first(
        self, a: Promote | AddVip, obs: Observation, truth: Truth, ctx: str
    ) -> None:
        """4. After an expired lease: fence answered FENCED/UNREACHABLE first, never FAILED."""
        previous = a.epoch - 1
        ended = truth.vanished.get(previous)
        if previous < 1 or ended is None or ended[1]:
            return
        holder = truth.granted.get(previous)
        if holder is not None and holder[0] == NODE:
            return  # our own lease expired: the peer was never promoted under it
        expired_at = ended[0]
        assert any(
            sent >= expired_at
            and answered <= obs.now
            and outcome in (FenceOutcome.FENCED, FenceOutcome.UNREACHABLE)
            for sent, answered, outcome, _ in self.fence_answers
        ), f"{a.name} under epoch {a.epoch} without fencing after epoch {previous} expired: {ctx}"
        granted = truth.granted.get(a.epoch)
        since = granted[1] if granted is not None else expired_at
        assert not any(
            epoch == a.epoch
            and answered >= since
            and outcome not in (FenceOutcome.FENCED, FenceOutcome.UNREACHABLE)
            for _, answered, outcome, epoch in self.fence_answers
        ), f"{a.name} under epoch {a.epoch} after a failed fence: {ctx}"

    def _check_sequencing(self, obs: Observation, actions: Sequence[Action], ctx: str) -> None:
        delivered = [r.action_id for r in obs.results if r.action_id in self.inflight]
        if delivered:
            # The adapters run sequencing actions in order: a later one done means earlier ones.
            last = max(delivered)
            self.inflight = {i: t for i, t in self.inflight.items() if i > last}
        self.inflight = {
            i: t for i, t in self.inflight.items() if obs.now - t <= self.s.action_timeout
        }
        new = sequencing(actions)
        if not new:
            return
        kinds = [a.name for a in new]
        assert len(new) == 1 or kinds == ["RemoveVip", "StopDatabase"], ctx
        supersedes = isinstance(new[0], RemoveVip)
        assert supersedes or not self.inflight, (
            f"{kinds} emitted while {sorted(self.inflight)} still in flight: {ctx}"
        )
        self.inflight = {a.id: obs.now for a in new}


def run_trace(pick: Pick, steps: int, settings: Settings = SETTINGS) -> Checker:
    """Drive one random trace through the core, checking every step."""
    world = World(pick, settings)
    checker = Checker(settings)
    for _ in range(steps):
        before, obs, out = world.tick()
        if before == State():
            checker.new_process()
        try:
            checker.check(before, obs, out, world.truth)
        except AssertionError as e:
            trace = "\n".join(world.log[-30:])
            raise AssertionError(f"{e}\n--- the last steps of the trace ---\n{trace}") from None
    return checker

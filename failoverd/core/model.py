"""The core's data: what it observes, the actions it asks for, its settings and its state.

All frozen dataclasses: an observation in, a new state and a tuple of actions out."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    STARTING = "starting"
    PASSIVE = "passive"
    PROMOTING = "promoting"
    ACTIVE = "active"
    DEMOTING = "demoting"
    FENCED = "fenced"
    PAUSED = "paused"


class ReplicationMode(StrEnum):
    """``[replication] mode``: what an acknowledged commit promises."""

    ASYNC = "async"  # on the primary; a crash may lose up to max_lag_on_failover
    SYNC = "sync"  # also on the named standby while one is healthy; dropped after sync_drop_after
    STRICT = "strict"  # never acknowledged without the standby: writes wait for it


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
    timeline: int | None = None  # the timeline ``lsn`` is on
    # ``lsn`` is where this node's WAL ends. False: only a lower bound, a stopped database's
    # latest checkpoint, past which a crashed primary's or any replica's WAL may go on.
    lsn_exact: bool = True


@dataclass(frozen=True)
class Position:
    """The active's flushed WAL position (``position``), rewritten at most every
    ``publish_every``. Persistent: it outlives the active's session, so a passive judges its lag
    after a crash, or after its own restart, from it."""

    node: str
    epoch: int
    lsn: int
    timeline: int | None
    written_at: float  # the writer's wall clock, for humans


@dataclass(frozen=True)
class SyncRecord:
    """``sync``: the standby holding every commit the active of ``epoch`` acknowledged; None
    when none does. Written only in the order that keeps that true (``core/sync.py``), and only
    by the active of ``epoch``."""

    standby: str | None
    epoch: int
    written_at: float = 0.0  # the writer's wall clock, for humans


@dataclass(frozen=True)
class RejoinRequest:
    """``rejoin/<node>``: an operator asks the node to rejoin (``failoverctl rejoin``)."""

    node: str
    reclone: bool  # skip the rewind: clone with pg_basebackup
    requested_by: str
    requested_at: float  # wall clock


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
    position: Position | None = None
    rejoin_requests: tuple[RejoinRequest, ...] = ()
    sync: SyncRecord | None = None  # None: never written (or unreadable: then in problems)

    def member(self, name: str) -> MemberStatus | MalformedMember | None:
        for m in self.members:
            if m.node == name:
                return m
        return None

    def rejoin_request(self, node: str) -> RejoinRequest | None:
        for r in self.rejoin_requests:
            if r.node == node:
                return r
        return None


@dataclass(frozen=True)
class LocalHealth:
    checks: tuple[CheckStatus, ...] = ()
    complete: bool = True  # every configured check has reported at least once
    database_check: str | None = None  # the check that watches the managed PostgreSQL

    @property
    def healthy(self) -> bool:
        return all(c.healthy for c in self.checks)

    @property
    def failing(self) -> tuple[CheckStatus, ...]:
        return tuple(c for c in self.checks if not c.healthy)

    @property
    def failing_now(self) -> tuple[CheckStatus, ...]:
        """Failing, and the latest probe failed too: not a check merely recovering (its latest
        probes pass, its rise count is not met yet)."""
        return tuple(c for c in self.checks if not c.healthy and c.successes == 0)


class DbRole(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"
    STOPPED = "stopped"
    EMPTY = "empty"  # no cluster in the data directory (a new or replaced node): clone it
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
    # STOPPED: ``lsn`` is where its WAL ends (read from pg_wal), not just its latest checkpoint.
    # None: not said (then only a primary's clean shutdown ends WAL at its checkpoint).
    lsn_exact: bool | None = None
    recorded_epoch: int | None = None  # epoch written into the database by its last promotion
    observed_at: float | None = None  # boottime the probe behind this started (None: now)
    timeline: int | None = None  # primary: its timeline; replica: the one it receives or replays
    hung: bool = False  # its postmaster runs but does not answer within the check's budget
    # A primary's synchronous replication: the names in synchronous_standby_names (() when
    # empty, ("*",) for any), synchronous_commit, and pg_stat_replication. None: not known.
    sync_standby_names: tuple[str, ...] | None = None
    synchronous_commit: str | None = None
    standbys: tuple[StandbyStatus, ...] = ()

    def standby(self, name: str) -> StandbyStatus | None:
        for s in self.standbys:
            if s.name == name:
                return s
        return None


@dataclass(frozen=True)
class StandbyStatus:
    """One row of the primary's ``pg_stat_replication``."""

    name: str  # application_name: the standby's node name
    state: str  # startup, catchup, streaming, backup, stopping
    sync_state: str  # async, potential, sync, quorum
    flush_lsn: int | None  # what the standby has flushed: safe from the loss of the primary


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
    rejoin: RejoinFacts | None = None  # InspectRejoin
    late: bool = False  # refused because its not_after had passed: nothing was done
    # Refused because its not_after passed part-way (the server was started, then the deadline
    # passed before it was made primary under the epoch): sent again under a fresh deadline,
    # the same action finishes it. Not a failure of the server.
    overran: bool = False


@dataclass(frozen=True)
class RejoinFacts:
    """What ``InspectRejoin`` found: where this node's WAL ends, and the active's history.
    ``policy.fork_verdict`` decides from it whether the node follows, rewinds or is cloned."""

    was_primary: bool
    clean: bool  # the control file says it shut down cleanly
    local_timeline: int | None
    # A former primary: its shutdown checkpoint's location; a replica: its minimum recovery end.
    local_lsn: int | None
    local_checkpoint_end: int | None  # a former primary: where that checkpoint record ends
    primary_timeline: int | None
    # The active's timeline history: (parent timeline, switchpoint) per line, oldest first.
    primary_history: tuple[tuple[int, int], ...] = ()
    rewindable: bool = True  # data checksums or wal_log_hints: pg_rewind can work
    same_system: bool = True  # both databases come from the same initdb


@dataclass(frozen=True)
class Pledge:
    """The peer's promise, over the failsafe channel, not to take the lease before its own
    receipt time + ``ttl``. Counted here from our send time ``sent_at`` (earlier than its
    receipt): the active may serve without ZooKeeper until sent_at + ttl - pledge_margin."""

    epoch: int  # the epoch of the lease we held when we asked
    sent_at: float  # our boottime when the request left
    ttl: float


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
    # The failsafe channel. Active: the latest pledge the peer granted us. Passive: until when
    # (our boottime, kept across restarts) we promised the peer not to take the lease, and for
    # which epoch's active the channel grants pledges now (None: it grants none).
    pledge: Pledge | None = None
    pledged_until: float | None = None
    granting: int | None = None
    # This process's previous life ended abnormally while it could serve, and ExecStopPost's
    # fence-self failed (failoverd/stoppost.py leaves a marker): no start-up grace.
    started_unfenced: bool = False


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
    method: Literal["ssh", "power"] = "ssh"  # ssh: fence-self there; power: [fencing] power_command


@dataclass(frozen=True)
class Promote(Action):
    epoch: int
    not_after: float  # boottime: the adapter refuses to start later
    # synchronous_standby_names from the first commit on (strict: the peer); the epoch record
    # itself is written with synchronous_commit = local, so it never waits for a standby.
    sync_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class StopDatabase(Action):
    # kill: SIGKILL the server's process group at once (a hung server is not asked to stop)
    mode: Literal["fast", "immediate", "kill"]
    checkpoint: bool = False  # run CHECKPOINT first: a voluntary stop's shutdown stays short


@dataclass(frozen=True)
class StartPrimary(Action):
    """Start our own stopped primary again under the lease we hold: crash recovery keeps every
    write it had, and the epoch is recorded again. Not a promotion: no new timeline, so the
    adapter refuses a stopped replica."""

    epoch: int
    not_after: float  # boottime: the adapter refuses to start later


@dataclass(frozen=True)
class InspectRejoin(Action):
    """Read where our WAL ends and the primary's timeline history (``RejoinFacts``)."""

    primary: str


@dataclass(frozen=True)
class RewindDatabase(Action):
    """``pg_rewind`` from the primary, then the standby configuration; it does not start."""

    primary: str


@dataclass(frozen=True)
class CloneDatabase(Action):
    """``pg_basebackup`` from the primary into a fresh directory, the old one kept aside until
    the clone streams; started as a replica."""

    primary: str


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


@dataclass(frozen=True)
class RecordPosition(Action):
    """Rewrite ``position`` (fire-and-forget, like ``Publish``)."""

    position: Position


@dataclass(frozen=True)
class ClearRejoinRequest(Action):
    """Delete ``rejoin/<node>`` once the node acted on it (fire-and-forget)."""

    node: str


@dataclass(frozen=True)
class AskPledge(Action):
    """Ask the peer for a pledge for ``epoch`` (fire-and-forget: a granted one shows up as
    ``Observation.pledge``; none granted, none shows up)."""

    epoch: int


@dataclass(frozen=True)
class SetGranting(Action):
    """Let the failsafe channel grant pledges to the active of ``epoch`` (None: to nobody).
    Once it answers, no pledge is granted that ``Observation.pledged_until`` does not count."""

    epoch: int | None


@dataclass(frozen=True)
class SetSyncStandby(Action):
    """Set ``synchronous_standby_names`` to ``names`` (quoted; () clears it) with
    ``synchronous_commit = on`` (ALTER SYSTEM, reload); ok once the server reports the value."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class RecordSync(Action):
    """Write ``sync`` = {standby, epoch} in a transaction that checks ``epoch`` is still the
    cluster's: only the active of that epoch writes it."""

    standby: str | None
    epoch: int


SEQUENCING: tuple[type[Action], ...] = (
    AcquireLease,
    ReleaseLease,
    FencePeer,
    Promote,
    StopDatabase,
    StartReplica,
    AddVip,
    RemoveVip,
    InspectRejoin,
    RewindDatabase,
    CloneDatabase,
    StartPrimary,
    SetSyncStandby,
    RecordSync,
    SetGranting,
)
"""Actions that change the cluster; one at a time is in flight."""


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
    rejoin_timeout: float = 600.0  # a rewind or a clone may take this long, not action_timeout
    rejoin_auto: bool = True  # [postgres] rejoin = "auto": rejoin without being asked
    reclone: bool = True  # [postgres] reclone: a clone may replace a data directory
    power_fence: bool = False  # [fencing] power_command is set: a second fencing level
    # Just (re)connected, the watches may still deliver what changed while cut off: a view this
    # young does not justify fencing the peer.
    view_settle_after: float = 1.0
    replication: ReplicationMode = ReplicationMode.ASYNC  # the config's default is sync
    # sync: a named standby that leaves commits waiting this long is dropped (strict: never)
    sync_drop_after: float = 5.0
    # [failsafe]: pledges let an active cut off from ZooKeeper (but not from its peer) serve on
    failsafe: bool = False
    pledge_ttl: float = 2.0
    pledge_margin: float = 0.2  # clock rates differ: the active counts its pledge this much short

    @property
    def peer_stale_after(self) -> float:
        """A peer record unchanged for this long no longer vouches for the peer."""
        return 3 * self.publish_every + 1.0

    @property
    def handover_grace(self) -> float:
        """How long a node waits for its peer to take a free lease it is expected to take (the
        target of a switchover, a node left serving whose daemon is back) before acting itself:
        about two session timeouts, self_fence_after being half of one. A working peer takes
        it within about a second."""
        return 4 * self.self_fence_after


@dataclass(frozen=True)
class Pending:
    id: int
    kind: str
    started_at: float
    method: str = ""  # FencePeer: which level (ssh, power)


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
    previous_mine: bool = False  # the lease of expected_epoch was ours (a re-adoption)
    sync_reset: bool = False  # the sync record naming the peer for an older epoch was cleared
    # When this node last saw the peer it takes over from alive as the active (State's
    # active_alive_at, or a probe that found its database a primary): where the outage that a
    # failover ends began, on this node's clock. None: never seen (a restart since).
    peer_alive_at: float | None = None

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
class Rejoin:
    """Progress of becoming a replica of the active again (``core/rejoin.py``)."""

    primary: str
    started_at: float
    step: str  # inspect, rewind, clone, start
    verdict: str = ""  # what the inspection said: follow, rewind, clone
    why: str = ""
    requested: bool = False  # an operator asked for it (failoverctl rejoin)


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
    # Self-fenced on a lapsed pledge while serving, healthy, at this epoch, ZooKeeper out of
    # reach: it may serve again under a new pledge (core/fenced.py, resume); None otherwise.
    resume_epoch: int | None = None
    resumed_at: float | None = None  # the last time it did: at most once per fence_retry_after
    resume_started: bool = False  # this resume started the database or added the VIP
    started_at: float | None = None  # boottime of this process's first observation
    paused_serving: bool = False  # paused while it may hold the VIP or the writable primary
    left_serving_recorded: bool = False  # stopping while paused: last_leader says it serves on
    peer_left_serving_seen_at: float | None = None  # first saw last_leader say the peer serves on
    peer_readopt_wait_from: float | None = None  # began waiting for that peer's daemon to re-adopt
    rejoin: Rejoin | None = None
    rejoin_retry_at: float | None = None  # after a failed rejoin step: no new attempt before
    stalls: int = 0  # rejoins that ended in a replica that does not stream: each escalates
    stalled_since: float | None = None  # a replica not streaming from an active that answers
    active_alive_at: float | None = None  # when the active last showed a sign of life
    peer_primary_seen_at: float | None = None  # the last probe that found the peer a primary
    # Active, sync mode: (the write LSN a named standby has not flushed yet, since when): the
    # commits waiting on it. Cleared once it flushes that far; past sync_drop_after it is dropped.
    sync_waiting: tuple[int, float] | None = None
    sync_dropped_lsn: int | None = None  # where a standby was dropped: named again once there
    # The last sync record this node asked to write (standby, epoch): it may have landed even
    # if no result or view says so yet, so PostgreSQL stops waiting only after a null one.
    sync_written: tuple[str | None, int] | None = None
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

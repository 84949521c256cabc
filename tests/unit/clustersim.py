"""Two real cores in one simulated world: the cluster-wide properties no single-node test can see.

``corekit.World`` runs one core against a scripted peer; it checks what one node may do. Split
brain is a property of two nodes, so here both ``n1`` and ``n2`` run ``core.step`` and a small
world carries out their actions:

* ZooKeeper: sessions that expire ``SESSION_TIMEOUT`` after the server last heard from the client
  (frozen while the whole service is down, restarted with a fresh timeout when it returns, as
  ZooKeeper does), the ephemeral lease and member records, ``epoch``, ``last_leader``, ``paused``
  and ``switchover``. A client sees the cluster through watches that go stale while it is cut off;
  kazoo says SUSPENDED some time after the link went, and LOST then a new session on reconnect.
* Per node: a host (up, or crashed), links to ZooKeeper and to the peer, the VIP, the daemon
  process (running, frozen, dead; optionally under systemd, whose watchdog kills a frozen daemon
  and whose ExecStopPost fences after an abnormal end, as ``failoverd/stoppost.py`` decides), and
  PostgreSQL with timelines: a replica follows a primary only while its position lies on the
  primary's timeline history, a promotion forks a new timeline, a crash leaves the end of WAL
  where it was.
* The operator: pause and resume, switchovers (forced or not), daemons stopped and started.

``Checker`` asserts the safety invariants at every instant: never two nodes with the VIP, never two
writable primaries, nothing acknowledged lost on a clean hand-over. The fault schedule is drawn from
a ``random.Random`` (hypothesis provides it), so every failure comes with a seed and a readable
trace of both nodes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from failoverd import core
from failoverd.core import (
    AcquireLease,
    Action,
    ActionResult,
    AddVip,
    AskPledge,
    CheckStatus,
    ClearRejoinRequest,
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
    RecordSync,
    RejoinFacts,
    RejoinRequest,
    ReleaseLease,
    RemoveVip,
    ReplicationMode,
    RewindDatabase,
    Role,
    SetGranting,
    SetSyncStandby,
    Settings,
    StandbyStatus,
    StartPrimary,
    StartReplica,
    State,
    StopDatabase,
    SwitchoverRequest,
    SyncRecord,
    ZkState,
    ZkStatus,
)
from failoverd.stoppost import FENCE_RETRY_WITHIN
from failoverd.stoppost import decide as stop_post_decides
from failoverd.switchover import SwitchoverRefusedError, plan_switchover

NODES = ("n1", "n2")
WALL = 1_700_000_000.0
SESSION_TIMEOUT = 10.0
DT = 0.25  # the world's clock step; each running daemon ticks once per step
CHECK_EVERY = 0.5  # the health checks and the peer probe refresh this often
WATCHDOG_SEC = 3.0  # below self_fence_after, as the daemon insists
RESTART_SEC = 1.0
WRITE_RATE = 400  # WAL bytes per second written through the VIP
BACKGROUND_RATE = 4  # WAL bytes per second a primary writes anyway (checkpoints)


# Not below the session timeout: a daemon that freezes while serving on a pledge is stopped by
# its watchdog (and fenced by ExecStopPost) before the pledge lapses, as before a session expires
# ([failsafe] pledge_ttl is checked so). At 3 s, the random traces found the race.
PLEDGE_TTL = SESSION_TIMEOUT


def settings_for(
    node: str, mode: ReplicationMode = ReplicationMode.ASYNC, *, failsafe: bool = False
) -> Settings:
    return Settings(
        node=node,
        peer=other(node),
        self_fence_after=5.0,
        min_failover_interval=30.0,
        max_lag_on_failover=16 * WRITE_RATE,
        max_replication_silence=30.0,
        publish_every=1.0,
        action_timeout=10.0,
        fence_retry_after=5.0,
        rejoin_timeout=40.0,  # a hung clone is given up within the liveness window
        version="sim",
        replication=mode,
        sync_drop_after=2.0,
        failsafe=failsafe,
        pledge_ttl=PLEDGE_TTL,
        pledge_margin=0.5,
    )


def other(node: str) -> str:
    return NODES[1] if node == NODES[0] else NODES[0]


# --------------------------------------------------------------------------------------------
# PostgreSQL with timelines
# --------------------------------------------------------------------------------------------


@dataclass
class Db:
    """One node's PostgreSQL. ``lsn`` is the end of its WAL (a replica's received position)."""

    state: str  # primary, replica, stopped
    tli: int = 1
    lsn: int = 0
    history: tuple[tuple[int, int], ...] = ()  # ancestor timelines and where each ended
    clean: bool = True  # stopped: the last shutdown was clean
    was_primary: bool = False  # stopped: it last ran as a primary
    recorded_epoch: int | None = None
    upstream: str | None = None  # replica: the node it streams from
    frozen: bool = False
    wal_seen_at: float | None = None  # replica: when WAL last arrived (the check's memory)
    checkpoint: tuple[int, int] | None = None  # a clean stop's shutdown checkpoint: (at, end)
    # synchronous_standby_names, kept across restarts as postgresql.auto.conf keeps it; copied
    # by a clone and a rewind, as pg_basebackup and pg_rewind copy the file
    sync_names: tuple[str, ...] = ()
    acked_upto: int = 0  # primary: the end of its acknowledged commits on its timeline

    @property
    def running(self) -> bool:
        return self.state in ("primary", "replica")

    def fork_point(self, tli: int) -> int | None:
        """Where this server's history left timeline ``tli`` (its end of WAL if it is on it)."""
        if tli == self.tli:
            return self.lsn
        return self.lineage_end(tli)

    @property
    def writable(self) -> bool:
        return self.state == "primary" and not self.frozen

    def lineage_end(self, tli: int) -> int | None:
        """Where timeline ``tli`` ends in this server's history; None if not in it."""
        if tli == self.tli:
            return 1 << 62
        for t, end in self.history:
            if t == tli:
                return end
        return None

    def can_follow(self, primary: Db) -> bool:
        """Our end of WAL lies on the primary's history: streaming from it cannot fork ours."""
        end = primary.lineage_end(self.tli)
        return end is not None and self.lsn <= end

    def has(self, tli: int, lsn: int) -> bool:
        """This server's history contains position ``lsn`` of timeline ``tli``."""
        end = self.lineage_end(tli)
        return end is not None and lsn <= min(end, self.lsn if tli == self.tli else end)


# --------------------------------------------------------------------------------------------
# ZooKeeper
# --------------------------------------------------------------------------------------------


@dataclass
class Session:
    node: str
    last_heard: float
    alive: bool = True


@dataclass
class Zk:
    up: bool = True
    epoch: int = 0
    lease: tuple[str, int, int] | None = None  # (node, epoch, session id)
    last_leader: LastLeader | None = None
    paused: bool = False
    switchover: SwitchoverRequest | None = None
    position: Position | None = None
    sync: SyncRecord | None = None
    rejoin: dict[str, RejoinRequest] = field(default_factory=dict)
    members: dict[str, tuple[MemberStatus, int]] = field(default_factory=dict)  # node -> (rec, sid)
    sessions: dict[int, Session] = field(default_factory=dict)
    next_sid: int = 1
    down_since: float | None = None

    def expire(self, now: float) -> list[int]:
        if not self.up:
            return []
        gone = [
            sid
            for sid, s in self.sessions.items()
            if s.alive and now - s.last_heard > SESSION_TIMEOUT
        ]
        for sid in gone:
            self.drop_session(sid)
        return gone

    def drop_session(self, sid: int) -> None:
        self.sessions[sid].alive = False
        if self.lease is not None and self.lease[2] == sid:
            self.lease = None
        for node, (_, owner) in list(self.members.items()):
            if owner == sid:
                del self.members[node]

    def alive(self, sid: int | None) -> bool:
        return sid is not None and sid in self.sessions and self.sessions[sid].alive


# --------------------------------------------------------------------------------------------
# A node: host, links, VIP, daemon, database
# --------------------------------------------------------------------------------------------


@dataclass
class Flight:
    """An action on the node's worker: it takes effect when it starts, answers when done."""

    action: Action
    start_at: float
    done_at: float | None  # None: it hangs until the adapter's own timeout, and takes no effect
    report: bool
    ok: bool
    result: ActionResult | None = None


@dataclass
class Client:
    """The daemon's ZooKeeper client: session, kazoo's state, round-trips, its watched view."""

    sid: int | None = None
    state: ZkState = ZkState.SUSPENDED
    changed_at: float = 0.0
    last_rt_ok: float | None = None
    rt_sent: float | None = None
    view: ClusterView | None = None
    cut_at: float | None = None  # when it last lost contact
    notice_after: float = 0.0
    member_seen: dict[str, tuple[MemberStatus, float]] = field(default_factory=dict)
    lease_seen: tuple[object, float] | None = None
    # A new session's watches are set again and answer a moment later: until then the view is
    # the old session's (an expired lease of ours still in it, no longer ``mine``).
    view_stale_until: float = 0.0


@dataclass
class Node:
    name: str
    settings: Settings
    systemd: bool
    host_up: bool = True
    zk_link: bool = True
    vip: bool = False
    db: Db = field(default_factory=lambda: Db("stopped"))
    app_ok: bool = True
    daemon: str = "dead"  # running, frozen, dead
    start_at: float | None = 0.0  # a dead daemon (re)starts then; None: only by hand
    shutdown: bool = False
    born_at: float = 0.0  # when the running daemon process started
    last_ping: float = 0.0
    state: State = field(default_factory=State)
    client: Client = field(default_factory=Client)
    flights: list[Flight] = field(default_factory=list)
    results: list[ActionResult] = field(default_factory=list)
    db_snapshot: DatabaseStatus = field(default_factory=lambda: DatabaseStatus(DbRole.UNKNOWN))
    probe: PeerProbe = field(default_factory=lambda: PeerProbe(PeerDb.UNKNOWN, 0.0))
    checks: tuple[CheckStatus, ...] = ()
    snapshot_at: float | None = None
    fence_broken: bool = False  # fence-self fails on this node (reached, but failed)
    stop_post_until: float | None = None  # ExecStopPost tries a failed fence-self again until
    unfenced_marker: bool = False  # ExecStopPost's fence failed: the next life is told so
    worker_free_at: dict[str, float] = field(default_factory=dict)  # worker -> busy until
    wal_gone: bool = False  # the WAL this node needs to rewind or follow is gone from its peer
    # The failsafe channel, served by the daemon process: whom it grants to (lost with the
    # process), the pledge it was granted last, and until when it promised (kept in a file
    # under /run: across daemon restarts, not across a reboot, after which it waits one ttl).
    granting: int | None = None
    pledge: Pledge | None = None
    pledged_until: float | None = None


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------

Pick = Callable[..., object]


class SafetyError(AssertionError):
    pass


class Sim:
    def __init__(
        self,
        rng: random.Random,
        *,
        managed: bool = True,
        mode: ReplicationMode | None = None,
        failsafe: bool | None = None,
    ) -> None:
        self.rng = rng
        self.now = 0.0
        self.zk = Zk()
        self.managed = managed
        if mode is None:
            modes = (ReplicationMode.ASYNC, ReplicationMode.SYNC, ReplicationMode.STRICT)
            mode = rng.choice((*modes, ReplicationMode.SYNC))
        self.mode = mode if managed else ReplicationMode.ASYNC
        self.failsafe = rng.random() < 0.5 if failsafe is None else failsafe
        # An operator forced a promotion: from then on a loss is the operator's choice.
        self.forced = False
        self.judge_every_loss = False
        self.peer_link = True
        self.flaky = True  # actions fail, hang or crawl now and then (a fault like the others)
        self.next_tli = 2
        self.log: list[str] = []
        self.nodes = {
            # Production runs the daemon under systemd: its watchdog and ExecStopPost are part
            # of the safety argument (DESIGN, "Timing and safety").
            n: Node(n, settings_for(n, self.mode, failsafe=self.failsafe), systemd=True)
            for n in NODES
        }
        self.acked: list[tuple[int, int, int]] = []  # (epoch, tli, lsn) acknowledged writes
        self.acked_max: dict[tuple[int, int], int] = {}  # (epoch, tli) -> highest acknowledged
        self.handovers: list[str] = []
        self.events: list[tuple[float, core.RecordEvent]] = []  # history records, when emitted
        self.roles_seen: set[Role] = set()
        self.codes_seen: set[str] = set()
        # Start: n1 holds a primary, n2 a replica of it; both daemons start at once.
        first = NODES[0]
        self.nodes[first].db = Db("primary", tli=1, lsn=1000)
        self.nodes[other(first)].db = Db("replica", tli=1, lsn=1000, upstream=first)
        for node in self.nodes.values():
            node.start_at = rng.choice((0.0, 0.0, 0.5, 2.0))

    # -- helpers ------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.log.append(f"t={self.now:7.2f} {text}")

    def reaches_zk(self, node: Node) -> bool:
        return self.zk.up and node.host_up and node.zk_link

    def reaches_peer(self, node: Node) -> bool:
        peer = self.nodes[other(node.name)]
        return self.peer_link and node.host_up and peer.host_up

    # -- the clock ----------------------------------------------------------------------------

    def advance(self) -> None:
        """One world step: time passes, WAL flows, sessions expire, daemons tick."""
        self.now += DT
        for sid in self.zk.expire(self.now):
            self.say(f"zk: session {sid} of {self.zk.sessions[sid].node} expired")
        self._wal()
        for name in NODES:
            self._supervise(self.nodes[name])
        order = list(NODES)
        self.rng.shuffle(order)
        for name in order:
            node = self.nodes[name]
            if node.daemon == "running" and self.rng.random() > 0.04:  # a loop may lag a step
                self._tick(node)
        self.check()

    def _wal(self) -> None:
        for node in self.nodes.values():
            db = node.db
            if not node.host_up or not db.running or db.frozen:
                continue
            if db.state == "primary":
                serving = node.vip and self.vip_holders() == [node.name]
                db.lsn += int((WRITE_RATE if serving else BACKGROUND_RATE) * DT)
        for node in self.nodes.values():
            db = node.db
            if not node.host_up or db.state != "replica" or db.frozen or db.upstream is None:
                continue
            up = self.nodes[db.upstream]
            if (
                up.name != node.name
                and up.host_up
                and self.peer_link
                and up.db.state == "primary"
                and not up.db.frozen
                and db.can_follow(up.db)
                and not node.wal_gone
            ):
                # Switch to the primary's timeline when we reach its fork point, as 'latest' does.
                behind = self.rng.choice((0, 0, 0, WRITE_RATE // 8, WRITE_RATE // 2))
                target = max(db.lsn, up.db.lsn - behind)
                if target > db.lsn or db.tli != up.db.tli:
                    db.tli, db.history = up.db.tli, up.db.history
                db.lsn = target
                db.wal_seen_at = self.now
        for node in self.nodes.values():
            if node.host_up and node.db.writable and node.vip and self.vip_holders() == [node.name]:
                self._acknowledge(node)

    def _acknowledge(self, node: Node) -> None:
        """Commits return once on the primary, and, while it names a standby, once that standby
        has flushed them too: what the app acknowledges never runs ahead of that."""
        db = node.db
        upto = db.lsn
        if db.sync_names:
            standby = self.nodes[other(node.name)]
            named = standby.name in db.sync_names or "*" in db.sync_names
            sdb = standby.db
            follows = (
                standby.host_up and sdb.state == "replica" and sdb.upstream == node.name
                and sdb.tli == db.tli
            )  # fmt: skip
            upto = min(db.lsn, sdb.lsn) if named and follows else db.acked_upto
        if upto > db.acked_upto:
            db.acked_upto = upto
            epoch = db.recorded_epoch or 0
            self.acked.append((epoch, db.tli, upto))
            key = (epoch, db.tli)
            self.acked_max[key] = max(self.acked_max.get(key, 0), upto)

    # -- systemd and the daemon process -------------------------------------------------------

    def _supervise(self, node: Node) -> None:
        if not node.host_up:
            return
        if node.daemon == "frozen" and node.systemd and self.now - node.last_ping > WATCHDOG_SEC:
            self.say(f"{node.name}: watchdog kills the frozen daemon")
            self._daemon_died(node, abnormal=True)
        until = node.stop_post_until
        if until is not None and (self._fence_self(node) or self.now >= until):
            fenced = not node.fence_broken
            self.say(f"{node.name}: ExecStopPost's fence-self " + ("done" if fenced else "gave up"))
            node.unfenced_marker = not fenced
            node.stop_post_until = None
            node.start_at = self.now + RESTART_SEC
        if node.daemon == "dead" and node.start_at is not None and self.now >= node.start_at:
            self._start_daemon(node)

    def _start_daemon(self, node: Node) -> None:
        node.daemon = "running"
        node.start_at = None
        node.shutdown = False
        node.state = State()
        node.flights = []
        node.results = []
        node.worker_free_at = {}
        node.client = Client(changed_at=self.now)
        node.last_ping = self.now
        node.born_at = self.now
        node.snapshot_at = None
        node.db_snapshot = DatabaseStatus(DbRole.UNKNOWN)
        node.probe = PeerProbe(PeerDb.UNKNOWN, 0.0)
        node.checks = ()
        node.granting = None  # the channel lives in the process; its promises in a file
        node.pledge = None
        self.say(f"{node.name}: daemon starts")

    def _daemon_died(self, node: Node, *, abnormal: bool) -> None:
        """The process is gone: its session lingers until it expires, its actions die with it."""
        role = core.supervision_role(node.state)
        node.daemon = "dead"
        node.flights = []
        node.results = []
        sid = node.client.sid
        if sid is not None and self.zk.alive(sid) and not abnormal and self.reaches_zk(node):
            self.zk.drop_session(sid)  # a clean exit closes its session
        if node.systemd:
            decision = stop_post_decides(
                {"SERVICE_RESULT": "watchdog" if abnormal else "success"}, role
            )
            node.start_at = self.now + RESTART_SEC
            if decision.fence:
                self.say(f"{node.name}: ExecStopPost fences ({decision.why})")
                if not self._fence_self(node):
                    # Tried again (failoverd/stoppost.py); the next life starts after that.
                    node.stop_post_until = self.now + FENCE_RETRY_WITHIN
                    node.start_at = None
        else:
            node.start_at = None

    def _fence_self(self, node: Node) -> bool:
        """``failoverd fence-self``: VIP off, PostgreSQL stopped; False when it fails."""
        if node.fence_broken:
            return False
        node.vip = False
        self._stop_db(node, fast=True)
        return True

    def _stop_db(self, node: Node, *, fast: bool) -> tuple[int | None, bool]:
        db = node.db
        if not db.running:
            return db.lsn, db.clean
        clean = fast and not db.frozen
        checkpoint = None
        if clean:
            # The shutdown checkpoint record: where it starts and where it ends.
            checkpoint = (db.lsn, db.lsn + 1)
            db = replace(db, lsn=db.lsn + 1)
        if clean and db.state == "primary":
            # A clean stop ships the end of WAL to a replica that streams from us.
            peer = self.nodes[other(node.name)]
            if (
                self.reaches_peer(node)
                and peer.db.state == "replica"
                and peer.db.upstream == node.name
                and not peer.db.frozen
                and peer.db.can_follow(db)
            ):
                peer.db.lsn = db.lsn
                peer.db.tli, peer.db.history = db.tli, db.history
        node.db = replace(
            db,
            state="stopped",
            clean=clean,
            was_primary=db.state == "primary",
            frozen=False,
            checkpoint=checkpoint,
        )
        return (checkpoint[0] if checkpoint else db.lsn), clean

    # -- one daemon tick ---------------------------------------------------------------------

    def _tick(self, node: Node) -> None:
        node.last_ping = self.now
        self._zk_client(node)
        self._snapshots(node)
        self._deliver(node)
        obs = self._observation(node)
        node.results = []
        before = node.state
        out = core.step(node.settings, before, obs)
        node.state = out.state
        if out.state.role is not Role.STARTING:
            node.unfenced_marker = False  # the daemon removes it once its role is taken
        self.roles_seen.add(out.state.role)
        self.codes_seen.update(d.code for d in out.decisions)
        acts = ", ".join(
            f"{a.name}#{a.id}" for a in out.actions if not isinstance(a, Publish | RecordPosition)
        )
        if acts or before.role is not out.state.role or before.reason != out.state.reason:
            c = obs.cluster
            lease = "-" if c is None or c.lease is None else c.lease.node
            if c is not None and c.lease is not None and c.lease.mine:
                lease += "*"
            view = "-" if c is None else f"e{c.epoch} lease={lease}" + (" P" if c.paused else "")
            view = view.replace("lease=-", "lease=free")
            self.say(
                f"{node.name}: zk={obs.zk.state.value[:4]} {view} db={obs.database.role.value}"
                f" peer={obs.peer_database.state.value} {before.role.value}->{out.state.role.value}"
                f" {out.reason.code} [{acts}]"
            )
        for action in out.actions:
            self._launch(node, action)
        if out.state.exit:
            self.say(f"{node.name}: daemon exits")
            self._daemon_died(node, abnormal=False)

    def _zk_client(self, node: Node) -> None:
        c = node.client
        reach = self.reaches_zk(node)
        # The round-trip sent last tick came back if the link held and the session lives.
        if c.rt_sent is not None and reach and self.zk.alive(c.sid):
            c.last_rt_ok = c.rt_sent
        c.rt_sent = None
        if reach:
            c.cut_at = None
            if c.sid is None or not self.zk.alive(c.sid):
                if c.sid is not None and c.state is not ZkState.LOST:
                    self._client_state(node, ZkState.LOST)  # kazoo learns of the expiry
                    c.view = _without_mine(c.view)
                    return
                sid = self.zk.next_sid
                self.zk.next_sid += 1
                self.zk.sessions[sid] = Session(node.name, self.now)
                c.sid = sid
                c.view_stale_until = self.now + self.rng.choice((0.0, 0.0, DT, 2 * DT, 4 * DT))
            self.zk.sessions[c.sid].last_heard = self.now
            self._client_state(node, ZkState.CONNECTED)
            c.rt_sent = self.now
            if self.now >= c.view_stale_until and self.rng.random() > 0.08:  # may lag a tick
                c.view = self._view_for(node)
        else:
            if c.cut_at is None:
                c.cut_at = self.now
                c.notice_after = self.rng.choice((0.0, 1.0, 2 * SESSION_TIMEOUT / 3))
            if c.state is ZkState.CONNECTED and self.now - c.cut_at >= c.notice_after:
                self._client_state(node, ZkState.SUSPENDED)

    def _client_state(self, node: Node, state: ZkState) -> None:
        if node.client.state is not state:
            node.client.state = state
            node.client.changed_at = self.now

    def _view_for(self, node: Node) -> ClusterView:
        zk, c = self.zk, node.client
        members: list[MemberStatus | MalformedMember] = []
        for name, (record, _) in sorted(zk.members.items()):
            seen = c.member_seen.get(name)
            if seen is None or seen[0] != record:
                c.member_seen[name] = (record, self.now)
            members.append(record)
        for name in list(c.member_seen):
            if name not in zk.members:
                del c.member_seen[name]
        lease = None
        if zk.lease is not None:
            holder, epoch, sid = zk.lease
            lease = LeaseInfo(holder, epoch, WALL, mine=sid == c.sid)
        key = None if zk.lease is None else zk.lease
        if c.lease_seen is None or c.lease_seen[0] != key:
            c.lease_seen = (key, self.now)
        return ClusterView(
            epoch=zk.epoch,
            lease=lease,
            last_leader=zk.last_leader,
            members=tuple(members),
            switchover=zk.switchover,
            paused=zk.paused,
            lease_changed_at=c.lease_seen[1],
            position=zk.position,
            rejoin_requests=tuple(zk.rejoin[n] for n in sorted(zk.rejoin)),
            sync=zk.sync,
        )

    def _snapshots(self, node: Node) -> None:
        """The health checks and the peer probe: refreshed every CHECK_EVERY, not every tick."""
        if node.snapshot_at is not None and self.now - node.snapshot_at < CHECK_EVERY:
            return
        node.snapshot_at = self.now
        db = node.db
        if not self.managed:
            node.db_snapshot = core.UNMANAGED_DB
            node.probe = PeerProbe(PeerDb.UNMANAGED, self.now)
        else:
            node.db_snapshot = self._db_status(node)
            node.probe = PeerProbe(self._peer_db(node), self.now)
        pg_ok = not self.managed or (db.running and not db.frozen)
        node.checks = (
            CheckStatus("app", node.app_ok, "" if node.app_ok else "HTTP 503"),
            CheckStatus("postgres", pg_ok, "" if pg_ok else "PostgreSQL down"),
            CheckStatus("squid", True),
        )

    def _db_status(self, node: Node) -> DatabaseStatus:
        db = node.db
        at = self.now
        if db.frozen:
            return DatabaseStatus(DbRole.UNKNOWN, observed_at=at, hung=True)
        if db.state == "empty":
            return DatabaseStatus(DbRole.EMPTY, observed_at=at)
        if db.state == "primary":
            return DatabaseStatus(
                DbRole.PRIMARY,
                lsn=db.lsn,
                recorded_epoch=db.recorded_epoch,
                observed_at=at,
                timeline=db.tli,
                sync_standby_names=db.sync_names,
                synchronous_commit="on",
                standbys=self._standbys(node),
            )
        if db.state == "replica":
            up = self.nodes[db.upstream] if db.upstream else None
            streaming = bool(
                up is not None
                and up.host_up
                and self.peer_link
                and up.db.writable
                and db.can_follow(up.db)
                and not node.wal_gone
            )
            # The check remembers WAL arriving only since its own daemon started.
            seen = db.wal_seen_at
            if seen is not None and seen < node.born_at:
                seen = None
            return DatabaseStatus(
                DbRole.REPLICA,
                lsn=db.lsn,
                replayed_lsn=db.lsn,
                streaming=streaming,
                last_received_age=None if seen is None else max(0.0, self.now - seen),
                recorded_epoch=db.recorded_epoch,
                observed_at=at,
                timeline=db.tli,
            )
        return DatabaseStatus(
            DbRole.STOPPED,
            lsn=db.lsn,  # where its WAL ends, as the check reads it with pg_waldump
            lsn_exact=True,
            was_primary=db.was_primary,
            stopped_cleanly=db.clean,
            recorded_epoch=db.recorded_epoch,
            observed_at=at,
            timeline=db.tli,
        )

    def _standbys(self, node: Node) -> tuple[StandbyStatus, ...]:
        """pg_stat_replication: a replica streaming from it; the row outlives a frozen standby
        or a cut link (the walsender waits for its timeout), not a crash of its server."""
        db = node.db
        peer = self.nodes[other(node.name)]
        sdb = peer.db
        if sdb.state != "replica" or sdb.upstream != node.name:
            return ()
        named = peer.name in db.sync_names or "*" in db.sync_names
        # A named standby is "sync" once it has caught up with what was acknowledged.
        caught_up = sdb.tli == db.tli and sdb.lsn >= db.acked_upto
        flush = sdb.lsn if sdb.tli == db.tli else None
        state = "streaming" if sdb.can_follow(db) else "catchup"
        return (StandbyStatus(peer.name, state, "sync" if named and caught_up else "async", flush),)

    def _peer_db(self, node: Node) -> PeerDb:
        if not self.reaches_peer(node):
            return PeerDb.UNREACHABLE
        peer_db = self.nodes[other(node.name)].db
        if peer_db.frozen:
            return PeerDb.UNKNOWN
        if peer_db.state == "primary":
            return PeerDb.PRIMARY
        if peer_db.state == "replica":
            return PeerDb.REPLICA
        return PeerDb.DOWN

    def _observation(self, node: Node) -> Observation:
        c = node.client
        complete = node.snapshot_at is not None
        view = c.view
        if view is not None:
            # As the real adapter does: a member's age is how long since this reader saw its
            # record change, counted now (a stale view ages).
            aged = tuple(
                replace(m, age=self.now - c.member_seen[m.node][1])
                if isinstance(m, MemberStatus) and m.node in c.member_seen
                else m
                for m in view.members
            )
            view = replace(view, members=aged)
        return Observation(
            now=self.now,
            wall_now=WALL + self.now,
            zk=ZkStatus(c.state, c.changed_at, c.last_rt_ok, SESSION_TIMEOUT),
            cluster=view,
            local=LocalHealth(node.checks, complete, database_check="postgres"),
            database=node.db_snapshot,
            peer_database=node.probe,
            results=tuple(node.results),
            shutdown_requested=node.shutdown,
            vip_present=node.vip,
            pledge=node.pledge if self.failsafe else None,
            pledged_until=node.pledged_until if self.failsafe else None,
            granting=node.granting if self.failsafe else None,
            started_unfenced=node.unfenced_marker,
        )

    # -- the adapters -------------------------------------------------------------------------

    def _launch(self, node: Node, action: Action) -> None:
        if isinstance(action, AskPledge):
            self._ask_pledge(node, action)
            return
        if isinstance(action, Publish):
            if self.reaches_zk(node) and self.zk.alive(node.client.sid):
                assert node.client.sid is not None
                self.zk.members[node.name] = (action.status, node.client.sid)
            return
        if isinstance(action, ClearSwitchover):
            if self.reaches_zk(node) and self.zk.alive(node.client.sid):
                self.zk.switchover = None
            return
        if isinstance(action, RecordPosition):
            if self.reaches_zk(node) and self.zk.alive(node.client.sid):
                self.zk.position = action.position
            return
        if isinstance(action, ClearRejoinRequest):
            if self.reaches_zk(node) and self.zk.alive(node.client.sid):
                self.zk.rejoin.pop(action.node, None)
            return
        if isinstance(action, core.RecordEvent):
            self.events.append((self.now, action))  # for the tests that read durations
        if not isinstance(action, core.SEQUENCING):
            return  # history records and hooks change nothing the cluster decides on
        # Workers run them in order (failoverd/actions/runner.py): the VIP's own worker for
        # AddVip/RemoveVip, one worker for the rest; an action starts once the one before it on
        # its worker has finished. One that hangs holds its worker until its own timeout inside
        # the adapter, and takes no effect.
        # Each adapter bounds its own time: a netlink call is quick, a ZooKeeper call gives up
        # after 2 s, fencing after its connect and command timeouts, the database after
        # action_timeout.
        # A stop never hangs without effect: its ladder ends in SIGKILL.
        bound = {
            "AddVip": DT,
            "RemoveVip": DT,
            "AcquireLease": 2.0,
            "ReleaseLease": 2.0,
            "RecordSync": 2.0,
        }.get(action.name, 9.0)
        draw = self.rng.random() if self.flaky else 0.5
        hangs = draw < 0.01 and bound > DT and not isinstance(action, StopDatabase)
        slow = draw > 0.985
        took = bound if slow or hangs else min(bound, self.rng.choice((DT, DT, 2 * DT, 4 * DT)))
        if isinstance(action, StopDatabase) and node.db.frozen and action.mode != "kill":
            took = 8.0  # fast, then immediate, then SIGKILL: each waits out its share
        if isinstance(action, CloneDatabase | RewindDatabase):
            took = max(took, 1.0)
        worker = "vip" if isinstance(action, AddVip | RemoveVip) else "main"
        start_at = max(self.now, node.worker_free_at.get(worker, 0.0))
        node.worker_free_at[worker] = start_at + took
        # Removing an address over netlink has no transient failure; a persistent one is a
        # broken fence-self ("fence_broken"), which the peer's fencing must then deal with. A
        # stop's ladder ends in SIGKILL. The runner reports every result, crashes included.
        reliable = isinstance(action, RemoveVip | StopDatabase)
        node.flights.append(
            Flight(
                action,
                start_at,
                None if hangs else start_at + took,
                report=True,
                ok=reliable or not self.flaky or self.rng.random() > 0.02,
            )
        )

    def _deliver(self, node: Node) -> None:
        """Start what is due (the effect), report what is done (the result)."""
        keep: list[Flight] = []
        for f in node.flights:
            if f.result is None and f.start_at <= self.now:
                if f.done_at is None:
                    continue  # it hangs: no effect, no answer
                f.result = self._perform(node, f)
            if f.done_at is not None and f.done_at <= self.now:
                if f.report and f.result is not None:
                    node.results.append(f.result)
                continue
            keep.append(f)
        node.flights = keep

    def _perform(self, node: Node, f: Flight) -> ActionResult:
        a = f.action
        zk = self.zk
        zk_ok = self.reaches_zk(node) and zk.alive(node.client.sid)
        if isinstance(a, AcquireLease):
            if zk_ok and f.ok and zk.lease is None and zk.epoch == a.expected_epoch:
                assert node.client.sid is not None
                zk.epoch += 1
                zk.lease = (node.name, zk.epoch, node.client.sid)
                self.say(f"{node.name}: acquired the lease, epoch {zk.epoch}")
                return ActionResult(a.id, ok=True, epoch=zk.epoch)
            return ActionResult(a.id, ok=False, detail="lease not free, epoch moved, or no ZK")
        if isinstance(a, ReleaseLease):
            mine = zk.lease is not None and zk.lease[2] == node.client.sid
            held = mine and zk.lease is not None and zk.lease[1] == a.epoch
            free = a.left_serving and zk.lease is None and zk.epoch == a.epoch
            if zk_ok and f.ok and (held or free):
                if not a.left_serving and (node.vip or (self.managed and node.db.writable)):
                    # Whoever takes the lease next fences on an expiry only: a release says
                    # "not serving", and the peer may add the VIP at once on an unreachable fence.
                    raise SafetyError(
                        f"{node.name} released the lease (epoch {a.epoch}) while serving: "
                        f"vip={node.vip} writable={node.db.writable}"
                    )
                zk.lease = None
                zk.last_leader = LastLeader(
                    node.name,
                    a.epoch,
                    a.final_lsn,
                    a.clean,
                    left_serving=a.left_serving,
                    timeline=a.timeline,
                )
                self.say(
                    f"{node.name}: released epoch {a.epoch} clean={a.clean}"
                    + (" left serving" if a.left_serving else "")
                )
                return ActionResult(a.id, ok=True)
            return ActionResult(a.id, ok=False, detail="not our lease")
        if isinstance(a, FencePeer):
            return self._fence_peer(node, a)
        if isinstance(a, RecordSync):
            # One transaction with a check of the epoch's version: only its active writes it.
            if zk_ok and f.ok and zk.epoch == a.epoch:
                zk.sync = SyncRecord(a.standby, a.epoch, WALL + self.now)
                self.say(f"{node.name}: sync record = {a.standby} (epoch {a.epoch})")
                return ActionResult(a.id, ok=True)
            return ActionResult(a.id, ok=False, detail="epoch moved, or no ZK")
        if not f.ok:
            return ActionResult(a.id, ok=False, detail="failed")
        if isinstance(a, Promote):
            return self._promote(node, a, f.done_at)
        if isinstance(a, AddVip):
            if self.now >= a.not_after:
                return ActionResult(a.id, ok=False, detail="refused: not_after passed", late=True)
            node.vip = True
            return ActionResult(a.id, ok=True)
        if isinstance(a, RemoveVip):
            node.vip = False
            return ActionResult(a.id, ok=True)
        if isinstance(a, StopDatabase):
            if not self.managed:
                return ActionResult(a.id, ok=True)
            lsn, clean = self._stop_db(node, fast=a.mode == "fast")
            return ActionResult(a.id, ok=True, final_lsn=lsn, clean=clean, timeline=node.db.tli)
        if isinstance(a, StartPrimary):
            return self._start_primary(node, a, f.done_at)
        if isinstance(a, InspectRejoin):
            return self._inspect(node, a)
        if isinstance(a, RewindDatabase):
            return self._rewind(node, a)
        if isinstance(a, CloneDatabase):
            return self._clone(node, a)
        if isinstance(a, StartReplica):
            return self._start_replica(node, a)
        if isinstance(a, SetGranting):
            node.granting = a.epoch
            return ActionResult(a.id, ok=True)
        if isinstance(a, SetSyncStandby):
            if not self.managed:
                return ActionResult(a.id, ok=True)
            if not node.db.running or node.db.frozen:
                return ActionResult(a.id, ok=False, detail=f"database is {node.db.state}")
            node.db.sync_names = a.names
            self.say(f"{node.name}: synchronous_standby_names = {a.names}")
            return ActionResult(a.id, ok=True)
        raise AssertionError(f"unexpected action {a}")

    def _ask_pledge(self, node: Node, a: AskPledge) -> None:
        """One datagram there and back within the step: the peer's daemon answers if it runs
        and grants to that epoch; it records its promise before it answers."""
        peer = self.nodes[other(node.name)]
        if not self.reaches_peer(node) or peer.daemon != "running" or peer.granting != a.epoch:
            return
        if self.flaky and self.rng.random() < 0.05:
            return  # a datagram lost
        until = self.now + PLEDGE_TTL
        peer.pledged_until = max(peer.pledged_until or until, until)
        node.pledge = Pledge(a.epoch, self.now, PLEDGE_TTL)

    def _fence_peer(self, node: Node, a: FencePeer) -> ActionResult:
        if not self.reaches_peer(node):
            return ActionResult(a.id, ok=True, fence=FenceOutcome.UNREACHABLE, detail="no answer")
        peer = self.nodes[a.peer]
        if self._fence_self(peer):
            self.say(f"{node.name}: fenced {peer.name} over SSH")
            return ActionResult(a.id, ok=True, fence=FenceOutcome.FENCED, detail="fenced")
        return ActionResult(a.id, ok=False, fence=FenceOutcome.FAILED, detail="fence-self failed")

    def _overran(self, node: Node, a: Promote | StartPrimary, done_at: float | None) -> bool:
        """Starting a stopped server that finishes past the action's not_after: the adapter
        finds the deadline gone once it can connect, and leaves the server up as it started
        (a former primary writable, a replica in recovery), without the epoch."""
        db = node.db
        if db.state != "stopped" or done_at is None or done_at <= a.not_after:
            return False
        node.db = replace(
            db, state="primary" if db.was_primary else "replica", wal_seen_at=None, checkpoint=None
        )
        self.say(f"{node.name}: {a.name} started the {node.db.state} past its not_after")
        return True

    def _promote(self, node: Node, a: Promote, done_at: float | None) -> ActionResult:
        if self.now >= a.not_after:
            return ActionResult(a.id, ok=False, detail="refused: not_after passed", late=True)
        if not self.managed:
            return ActionResult(a.id, ok=True)
        db = node.db
        if db.frozen:
            return ActionResult(a.id, ok=False, detail="no answer")
        if self._overran(node, a, done_at):
            return ActionResult(a.id, ok=False, detail="started, then late", overran=True)
        if db.state == "primary":
            db.recorded_epoch = a.epoch
            db.sync_names = a.sync_names
            return ActionResult(a.id, ok=True, detail="already primary")
        if db.state == "stopped" and db.was_primary:
            # A crashed one runs crash recovery first: it keeps everything it wrote.
            node.db = replace(
                db,
                state="primary",
                recorded_epoch=a.epoch,
                checkpoint=None,
                sync_names=a.sync_names,
            )
            return ActionResult(a.id, ok=True, detail="started the stopped primary")
        if db.state == "empty":
            return ActionResult(a.id, ok=False, detail="no data directory")
        self.handovers.append(f"{node.name} promoted at {db.lsn} (tli {db.tli}) epoch {a.epoch}")
        tli = self.next_tli
        self.next_tli += 1
        node.db = Db(
            "primary",
            tli=tli,
            lsn=db.lsn + 1,
            history=(*db.history, (db.tli, db.lsn)),
            recorded_epoch=a.epoch,
            sync_names=a.sync_names,
        )
        self.say(f"{node.name}: promoted to timeline {tli} at {db.lsn}")
        self._check_nothing_lost(node, a.epoch)
        self._check_zero_loss(node)
        return ActionResult(a.id, ok=True)

    def _start_primary(self, node: Node, a: StartPrimary, done_at: float | None) -> ActionResult:
        if self.now >= a.not_after:
            return ActionResult(a.id, ok=False, detail="refused: not_after passed", late=True)
        db = node.db
        if not self.managed:
            return ActionResult(a.id, ok=True)
        if db.writable:  # started already (by one that overran): the epoch is recorded
            node.db = replace(db, recorded_epoch=a.epoch)
            return ActionResult(a.id, ok=True, detail="already a primary")
        if db.state != "stopped" or not db.was_primary:
            return ActionResult(a.id, ok=False, detail=f"not a stopped primary: {db.state}")
        if self._overran(node, a, done_at):
            return ActionResult(a.id, ok=False, detail="started, then late", overran=True)
        node.db = replace(db, state="primary", recorded_epoch=a.epoch, checkpoint=None)
        return ActionResult(a.id, ok=True, detail="crash recovery, then primary again")

    def _primary_for(self, node: Node, name: str) -> Db | None:
        """The primary's database if it is reachable and answers as a primary."""
        up = self.nodes[name]
        if not self.reaches_peer(node) or up.db.state != "primary" or up.db.frozen:
            return None
        return up.db

    def _inspect(self, node: Node, a: InspectRejoin) -> ActionResult:
        db = node.db
        primary = self._primary_for(node, a.primary)
        if primary is None:
            return ActionResult(a.id, ok=False, detail=f"{a.primary} does not answer as primary")
        if db.state != "stopped":
            return ActionResult(a.id, ok=False, detail=f"database is {db.state}")
        former = db.was_primary
        at = db.checkpoint[0] if (former and db.clean and db.checkpoint) else db.lsn
        facts = RejoinFacts(
            was_primary=former,
            clean=db.clean,
            local_timeline=db.tli,
            local_lsn=at,
            local_checkpoint_end=db.checkpoint[1] if (former and db.checkpoint) else None,
            primary_timeline=primary.tli,
            primary_history=primary.history,
            rewindable=True,
        )
        return ActionResult(a.id, ok=True, rejoin=facts)

    def _rewind(self, node: Node, a: RewindDatabase) -> ActionResult:
        db = node.db
        primary = self._primary_for(node, a.primary)
        if primary is None or db.state != "stopped":
            return ActionResult(a.id, ok=False, detail="source not a primary, or target running")
        if node.wal_gone:
            return ActionResult(a.id, ok=False, detail="could not find WAL: already removed")
        fork = primary.fork_point(db.tli)
        lsn = min(db.lsn, primary.lsn) if fork is None else min(fork, primary.lsn)
        node.db = replace(
            db,
            tli=primary.tli,
            history=primary.history,
            lsn=lsn,
            clean=True,
            was_primary=False,
            checkpoint=None,
            sync_names=primary.sync_names,
            acked_upto=0,
        )
        return ActionResult(a.id, ok=True, detail="rewound")

    def _clone(self, node: Node, a: CloneDatabase) -> ActionResult:
        primary = self._primary_for(node, a.primary)
        if primary is None:
            return ActionResult(a.id, ok=False, detail=f"{a.primary} does not answer as primary")
        if node.db.running:
            return ActionResult(a.id, ok=False, detail="database is running")
        node.db = Db(
            "replica",
            tli=primary.tli,
            lsn=primary.lsn,
            history=primary.history,
            recorded_epoch=primary.recorded_epoch,
            upstream=a.primary,
            wal_seen_at=self.now,
            sync_names=primary.sync_names,
        )
        node.wal_gone = False
        return ActionResult(a.id, ok=True, detail="cloned and streaming")

    def _start_replica(self, node: Node, a: StartReplica) -> ActionResult:
        if not self.managed:
            return ActionResult(a.id, ok=True)
        db = node.db
        if db.state == "replica":
            db.upstream = a.primary
            return ActionResult(a.id, ok=True, detail="already a replica")
        if db.state != "stopped" or db.frozen:
            return ActionResult(a.id, ok=False, detail=f"database is {db.state}")
        if not db.clean:
            return ActionResult(a.id, ok=False, detail="did not stop cleanly: needs pg_rewind")
        node.db = replace(
            db, state="replica", upstream=a.primary, wal_seen_at=None, checkpoint=None
        )
        return ActionResult(a.id, ok=True)

    # -- faults and the operator --------------------------------------------------------------

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        self.say(f"FAULT {name}: crash")
        node.host_up = False
        node.vip = False
        if node.db.running:
            node.db = replace(
                node.db,
                state="stopped",
                clean=False,
                was_primary=node.db.state == "primary",
                frozen=False,
            )
        node.daemon = "dead"
        node.flights = []
        node.start_at = None
        node.stop_post_until = None
        node.unfenced_marker = False  # /run is a tmpfs: a reboot clears it

    def boot(self, name: str) -> None:
        node = self.nodes[name]
        if node.host_up:
            return
        self.say(f"HEAL {name}: boots")
        node.host_up = True
        node.start_at = self.now + RESTART_SEC
        # /run is gone with the reboot: the channel assumes a pledge given just before it.
        node.pledged_until = self.now + PLEDGE_TTL

    def kill_daemon(self, name: str) -> None:
        node = self.nodes[name]
        if node.daemon != "dead" and node.host_up:
            self.say(f"FAULT {name}: daemon SIGKILL")
            self._daemon_died(node, abnormal=True)

    def freeze_daemon(self, name: str) -> None:
        node = self.nodes[name]
        if node.daemon == "running":
            self.say(f"FAULT {name}: daemon frozen")
            node.daemon = "frozen"

    def thaw_daemon(self, name: str) -> None:
        node = self.nodes[name]
        if node.daemon == "frozen":
            self.say(f"HEAL {name}: daemon thawed")
            node.daemon = "running"

    def stop_daemon(self, name: str) -> None:
        node = self.nodes[name]
        if node.daemon == "running":
            self.say(f"OP {name}: systemctl stop")
            node.shutdown = True

    def start_daemon(self, name: str) -> None:
        node = self.nodes[name]
        if (
            node.daemon == "dead"
            and node.host_up
            and node.start_at is None
            and node.stop_post_until is None
        ):
            node.start_at = self.now

    def set_zk_link(self, name: str, up: bool) -> None:
        self.say(("HEAL" if up else "FAULT") + f" {name}: ZooKeeper link {'up' if up else 'cut'}")
        self.nodes[name].zk_link = up

    def set_peer_link(self, up: bool) -> None:
        self.say(("HEAL" if up else "FAULT") + f" node-to-node link {'up' if up else 'cut'}")
        self.peer_link = up

    def set_zk(self, up: bool) -> None:
        self.say(("HEAL" if up else "FAULT") + f" ZooKeeper {'up' if up else 'down'}")
        if up and not self.zk.up:
            for s in self.zk.sessions.values():
                s.last_heard = self.now  # sessions get a fresh timeout on restart
        self.zk.up = up

    def kill_db(self, name: str) -> None:
        node = self.nodes[name]
        if node.db.running:
            self.say(f"FAULT {name}: PostgreSQL killed")
            node.db = replace(
                node.db,
                state="stopped",
                clean=False,
                was_primary=node.db.state == "primary",
                frozen=False,
            )

    def freeze_db(self, name: str, frozen: bool) -> None:
        node = self.nodes[name]
        if node.db.running:
            self.say(("FAULT" if frozen else "HEAL") + f" {name}: PostgreSQL frozen={frozen}")
            node.db.frozen = frozen

    def set_app(self, name: str, ok: bool) -> None:
        self.say(("HEAL" if ok else "FAULT") + f" {name}: app ok={ok}")
        self.nodes[name].app_ok = ok

    def pause(self, paused: bool) -> None:
        if self.zk.up:
            self.say(f"OP {'pause' if paused else 'resume'}")
            self.zk.paused = paused

    def switchover(self, target: str | None, *, force: bool = False) -> None:
        """``failoverctl promote``: planned on what ZooKeeper shows, as failoverctl plans it
        (refused while paused, to the active, to an ineligible node without --force), then
        written. What changes between the plan and the act is the daemons' to judge."""
        if not self.zk.up:
            return
        try:
            plan = plan_switchover(self._operator_view(), NODES, target, force, self.mode.value)
        except SwitchoverRefusedError as e:
            self.say(f"OP promote {target} force={force}: refused: {e}")
            return
        self.say(f"OP promote {plan.target} force={force}")
        self.forced = self.forced or force
        self.zk.switchover = SwitchoverRequest(
            target=plan.target,
            from_epoch=plan.epoch,
            requested_by="op",
            deadline=WALL + self.now + 30.0,
            force=force,
        )

    def _operator_view(self) -> ClusterView:
        """ZooKeeper's content as failoverctl reads it (no session of its own holds anything)."""
        zk = self.zk
        lease = None
        if zk.lease is not None:
            lease = LeaseInfo(zk.lease[0], zk.lease[1], WALL, mine=False)
        return ClusterView(
            epoch=zk.epoch,
            lease=lease,
            last_leader=zk.last_leader,
            members=tuple(record for _, (record, _) in sorted(zk.members.items())),
            switchover=zk.switchover,
            paused=zk.paused,
            lease_changed_at=self.now,
            position=zk.position,
            rejoin_requests=tuple(zk.rejoin[n] for n in sorted(zk.rejoin)),
            sync=zk.sync,
        )

    # -- invariants ---------------------------------------------------------------------------

    def vip_holders(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.host_up and node.vip]

    def writable_primaries(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.host_up and node.db.writable]

    def check(self) -> None:
        holders = self.vip_holders()
        if len(holders) > 1:
            raise SafetyError(f"two VIP holders at t={self.now:.2f}: {holders}")
        if self.managed:
            primaries = self.writable_primaries()
            if len(primaries) > 1:
                raise SafetyError(f"two writable primaries at t={self.now:.2f}: {primaries}")
            self._check_sync_record()

    def _check_sync_record(self) -> None:
        """The standby the sync record names has every commit acknowledged since its epoch:
        later epochs' too, since a node that serves clears a record naming its peer first."""
        record = self.zk.sync
        if not self.managed or record is None or record.standby is None:
            return
        holder = self.nodes[record.standby].db
        for (epoch, tli), lsn in self.acked_max.items():
            if epoch >= record.epoch and not holder.has(tli, lsn):
                raise SafetyError(
                    f"t={self.now:.2f}: the sync record names {record.standby} (epoch "
                    f"{record.epoch}), which lacks the acknowledged write at {lsn} of timeline "
                    f"{tli} (epoch {epoch})"
                )

    def _check_zero_loss(self, node: Node) -> None:
        """In sync and strict mode, no promotion an operator did not force loses an
        acknowledged write."""
        if (self.mode is ReplicationMode.ASYNC and not self.judge_every_loss) or self.forced:
            return
        promoted = node.db
        for (epoch, tli), lsn in self.acked_max.items():
            if not promoted.has(tli, lsn):
                raise SafetyError(
                    f"t={self.now:.2f}: {node.name} promoted ({self.mode.value} mode) without "
                    f"the acknowledged write at {lsn} of timeline {tli} (epoch {epoch})"
                )

    def _check_nothing_lost(self, node: Node, epoch: int) -> None:
        """A promotion after a clean hand-over has every write the old primary acknowledged."""
        last = self.zk.last_leader
        if last is None or last.epoch != epoch - 1 or not last.clean or not self.handovers:
            return
        prev = [(e, t, lsn) for (e, t, lsn) in self.acked if e == last.epoch]
        promoted = self.nodes[node.name].db
        missing = [(t, lsn) for (_, t, lsn) in prev if not promoted.has(t, lsn)]
        if missing:
            raise SafetyError(
                f"{node.name} promoted after a clean hand-over of epoch {last.epoch} without "
                f"acknowledged writes {missing[-3:]}"
            )


def _without_mine(view: ClusterView | None) -> ClusterView | None:
    if view is None or view.lease is None:
        return view
    return replace(view, lease=replace(view.lease, mine=False))


# --------------------------------------------------------------------------------------------
# The nemesis: random faults, each healed after a random time
# --------------------------------------------------------------------------------------------

FAULTS: tuple[str, ...] = (
    "zk_cut",
    "zk_cut",
    "zk_cut",
    "peer_cut",
    "peer_cut",
    "zk_down",
    "crash",
    "kill_daemon",
    "freeze_daemon",
    "stop_daemon",
    "kill_db",
    "freeze_db",
    "app_fail",
    "fence_broken",
    "pause",
    "pause",
    "pause",
    "switchover",
    "switchover_force",
)
DURATIONS: tuple[float, ...] = (1.0, 3.0, 6.0, 12.0, 25.0)


@dataclass
class Fault:
    kind: str
    node: str
    heal_at: float


class Nemesis:
    """Injects faults at random moments and heals each one after a random time."""

    def __init__(self, sim: Sim, rng: random.Random, kinds: tuple[str, ...] = FAULTS) -> None:
        self.sim = sim
        self.rng = rng
        self.kinds = kinds
        self.active: list[Fault] = []
        self.injected: list[str] = []

    def step(self, *, inject: bool = True, rate: float = 0.06) -> None:
        sim = self.sim
        for fault in [f for f in self.active if f.heal_at <= sim.now]:
            self.heal(fault)
        if inject and self.rng.random() < rate:
            self.inject(self.rng.choice(self.kinds), self.rng.choice(NODES))

    def heal_all(self) -> None:
        for fault in list(self.active):
            self.heal(fault)

    def inject(self, kind: str, node: str) -> None:
        sim = self.sim
        if any(f.kind == kind and f.node == node for f in self.active):
            return
        heal_at = sim.now + self.rng.choice(DURATIONS)
        active = next((n for n in NODES if sim.nodes[n].state.role is Role.ACTIVE), node)
        if kind in ("zk_cut", "crash", "freeze_daemon", "freeze_db", "app_fail", "kill_db"):
            node = self.rng.choice((active, active, node))
        if kind == "zk_cut":
            sim.set_zk_link(node, False)
        elif kind == "peer_cut":
            sim.set_peer_link(False)
        elif kind == "zk_down":
            sim.set_zk(False)
        elif kind == "crash":
            sim.crash(node)
        elif kind == "kill_daemon":
            sim.kill_daemon(node)
        elif kind == "freeze_daemon":
            sim.freeze_daemon(node)
        elif kind == "stop_daemon":
            sim.stop_daemon(node)
        elif kind == "kill_db":
            sim.kill_db(node)
            return  # nothing to heal: the daemon must deal with it
        elif kind == "freeze_db":
            sim.freeze_db(node, True)
        elif kind == "app_fail":
            sim.set_app(node, False)
        elif kind == "fence_broken":
            sim.say(f"FAULT {node}: fence-self broken")
            sim.nodes[node].fence_broken = True
        elif kind == "pause":
            sim.pause(True)
        elif kind in ("switchover", "switchover_force"):
            target = self.rng.choice((None, node))
            sim.switchover(target, force=kind == "switchover_force")
            return
        self.active.append(Fault(kind, node, heal_at))
        self.injected.append(kind)

    def heal(self, fault: Fault) -> None:
        sim = self.sim
        self.active.remove(fault)
        kind, node = fault.kind, fault.node
        if kind == "zk_cut":
            sim.set_zk_link(node, True)
        elif kind == "peer_cut":
            sim.set_peer_link(True)
        elif kind == "zk_down":
            sim.set_zk(True)
        elif kind == "crash":
            sim.boot(node)
        elif kind in ("kill_daemon", "stop_daemon"):
            sim.start_daemon(node)
        elif kind == "freeze_daemon":
            sim.thaw_daemon(node)
        elif kind == "freeze_db":
            sim.freeze_db(node, False)
        elif kind == "app_fail":
            sim.set_app(node, True)
        elif kind == "fence_broken":
            sim.say(f"HEAL {node}: fence-self works again")
            sim.nodes[node].fence_broken = False
        elif kind == "pause":
            sim.pause(False)


def run_random(
    rng: random.Random,
    *,
    seconds: float,
    kinds: tuple[str, ...] = FAULTS,
    mode: ReplicationMode | None = None,
    judge_every_loss: bool = False,
) -> Sim:
    """A random trace of ``seconds`` with faults throughout; raises SafetyError with the trace.
    ``judge_every_loss`` holds even async mode to zero loss: to show the checker can fail."""
    sim = Sim(rng, managed=True if mode is not None else rng.random() < 0.85, mode=mode)
    sim.judge_every_loss = judge_every_loss
    nemesis = Nemesis(sim, rng, kinds)
    steps = int(seconds / DT)
    try:
        for i in range(steps):
            nemesis.step(inject=i * DT > 15.0)
            sim.advance()
    except SafetyError as e:
        trace = "\n".join(sim.log[-60:])
        raise SafetyError(f"{e}\n--- the last events ---\n{trace}") from None
    return sim


# --------------------------------------------------------------------------------------------
# Liveness: once every fault is healed, one active and one passive streaming from it
# --------------------------------------------------------------------------------------------


class LivenessError(AssertionError):
    pass


def converged(sim: Sim) -> str | None:
    """None when one node is active (VIP, writable primary) and the other a passive whose
    database streams from it; else what is still missing, in words."""
    nodes = sim.nodes
    down = [
        n
        for n in NODES
        if nodes[n].daemon != "running" or not nodes[n].host_up or nodes[n].shutdown
    ]
    if down:
        return f"daemon not running (or still stopping) on {down}"
    # An active re-taking its lease at a new epoch after its session expired (failsafe) is
    # PROMOTING for a moment while it serves on: VIP and primary stay up.
    active = [
        n
        for n in NODES
        if nodes[n].state.role is Role.ACTIVE
        or (nodes[n].state.role is Role.PROMOTING and nodes[n].vip)
    ]
    if len(active) != 1:
        roles = {n: nodes[n].state.role.value for n in NODES}
        return f"{len(active)} active nodes: {roles}"
    a = nodes[active[0]]
    p = nodes[other(a.name)]
    if sim.vip_holders() != [a.name]:
        return f"VIP held by {sim.vip_holders()}"
    lease = sim.zk.lease
    if lease is None or lease[0] != a.name or lease[2] != a.client.sid:
        return f"{a.name} is active but ZooKeeper's lease is {lease}"
    if a.client.state is not ZkState.CONNECTED or not sim.zk.alive(a.client.sid):
        return f"{a.name} is active but its session is {a.client.state.value}"
    if a.state.epoch != lease[1]:
        return f"{a.name} holds the lease of epoch {lease[1]} but acts under {a.state.epoch}"
    proven = a.client.last_rt_ok
    if proven is None or sim.now - proven >= settings_for(a.name).self_fence_after - DT:
        return f"{a.name} is active but has not proven its session lately"
    if p.state.role is not Role.PASSIVE:
        return f"{p.name} is {p.state.role.value} ({p.state.reason.text})"
    if not sim.managed:
        return None
    if not a.db.writable:
        return f"{a.name}'s database is {a.db.state}"
    db = p.db
    follows = (
        db.state == "replica"
        and not db.frozen
        and db.upstream == a.name
        and db.can_follow(a.db)
        and not p.wal_gone
    )
    if not follows:
        return f"{p.name}'s database is {db.state}, not streaming from {a.name}"
    if sim.mode is not ReplicationMode.ASYNC:
        record = sim.zk.sync
        if record is None or record.standby != p.name or record.epoch != a.state.epoch:
            return f"{p.name} streams, but the sync record is {record}"
        if p.name not in a.db.sync_names:
            return f"{a.name}'s synchronous_standby_names is {a.db.sync_names}"
    return None


def heal_everything(sim: Sim, nemesis: Nemesis) -> None:
    """Every fault gone: the nemesis's own, and what no heal of it brings back by itself."""
    nemesis.heal_all()
    sim.flaky = False  # actions fail no more: that is a fault too
    sim.zk.switchover = None  # and no operator request pending
    sim.set_zk(True)
    sim.set_peer_link(True)
    sim.pause(False)
    for name in NODES:
        node = sim.nodes[name]
        sim.boot(name)
        sim.set_zk_link(name, True)
        sim.set_app(name, True)
        sim.freeze_db(name, False)
        sim.thaw_daemon(name)
        node.fence_broken = False
        if node.daemon == "dead" and node.start_at is None and node.stop_post_until is None:
            node.start_at = sim.now
    sim.say("HEAL everything")


def run_to_health(
    rng: random.Random,
    *,
    faults_for: float,
    settle_within: float,
    kinds: tuple[str, ...] = FAULTS,
    mode: ReplicationMode | None = None,
) -> tuple[Sim, float]:
    """Faults for ``faults_for`` seconds, then all healed: the cluster must be one active and one
    streaming passive (in sync and strict mode: its synchronous standby of record) within
    ``settle_within`` seconds, without any command. Returns the sim and how long healing took."""
    sim = Sim(rng, managed=rng.random() < 0.85, mode=mode)
    nemesis = Nemesis(sim, rng, kinds)
    try:
        for i in range(int(faults_for / DT)):
            nemesis.step(inject=i * DT > 15.0)
            sim.advance()
        heal_everything(sim, nemesis)
        healed_at = sim.now
        for _ in range(int(settle_within / DT)):
            sim.advance()
            settled = all(n.state.pending is None for n in sim.nodes.values())
            if converged(sim) is None and settled:
                # Healthy, with nothing in flight (a decision taken before the heal may still
                # land): and it stays so.
                for _ in range(int(10.0 / DT)):
                    sim.advance()
                    missing = converged(sim)
                    if missing is not None:
                        raise LivenessError(f"healthy, then not any more: {missing}")
                return sim, sim.now - healed_at - 10.0
    except (SafetyError, LivenessError) as e:
        trace = "\n".join(sim.log[-70:])
        raise type(e)(f"{e}\n--- the last events ---\n{trace}") from None
    missing = converged(sim)
    trace = "\n".join(sim.log[-70:])
    raise LivenessError(
        f"not healthy {settle_within:g} s after every fault healed: {missing}\n"
        f"--- the last events ---\n{trace}"
    )

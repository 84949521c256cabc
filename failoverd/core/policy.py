"""Pure judgements shared by the core and by status reporting: eligibility, deadlines, sizes."""

from __future__ import annotations

from failoverd.core.model import (
    DatabaseStatus,
    DbRole,
    MalformedMember,
    MemberStatus,
    Observation,
    RejoinFacts,
    ReplicationMode,
    Role,
    Settings,
    State,
)


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
    if db.lsn is None:
        return False, "received LSN unknown"
    # Both daemons alive, no active: what each node reports of its own WAL decides, and it
    # knows better than any record of an active that is no more.
    lead = most_advanced(settings, obs)
    if lead is not None and lead[0]:
        return True, lead[1]  # the peer, alive, has less: nothing it could miss
    ahead = _peer_ahead(settings, obs)
    if ahead is not None:
        return False, ahead
    if sync_standby_of_record(settings, obs):
        # Lag and silence only estimate what a crash could lose; the record says it is nothing.
        return True, "the synchronous standby of record: it holds every acknowledged commit"
    target = active_position(settings, state, obs)
    if target is not None:
        lsn, timeline = target
        c = obs.cluster
        current = c is not None and c.position is not None and c.position.epoch == c.epoch
        mine = db.timeline
        if current and timeline is not None and mine is not None and mine > timeline:
            # Beyond the timeline the current epoch's active writes on: a fork. (Beyond an
            # older record's, it may only mean a later active died before writing its own.)
            return False, (
                f"on timeline {mine}, beyond the active's timeline {timeline}: "
                "its history has forked"
            )
        comparable = timeline is None or mine is None or mine <= timeline
        lag = max(0, lsn - db.lsn)
        if comparable and lag > settings.max_lag_on_failover:
            return False, (
                f"replica lag {format_bytes(lag)} > max_lag_on_failover "
                f"{format_bytes(settings.max_lag_on_failover)}"
            )
    silence = _replication_silence(settings, state, obs)
    if silence is not None:
        return False, silence
    if db.streaming:
        return True, "replica streaming within max_lag_on_failover"
    return True, "replica within max_lag_on_failover of the active's last known position"


def sync_standby_of_record(settings: Settings, obs: Observation) -> bool:
    """With the lease free, does the ``sync`` record name this node (see ``sync_refusal``)?"""
    c = obs.cluster
    return (
        settings.replication is not ReplicationMode.ASYNC
        and c is not None
        and c.lease is None
        and c.sync is not None
        and c.sync.standby == settings.node
        and c.sync.epoch <= c.epoch
    )


def sync_refusal(settings: Settings, obs: Observation) -> str | None:
    """Why this node may not take a free lease in sync or strict mode, or None.

    After an expiry the active may have acknowledged commits nobody else has, unless it waited
    for a standby: only the standby the ``sync`` record names is known to hold them all. The
    record may be older than the current epoch: any node that served since cleared it before
    acknowledging its first commit (``promoting``), so an epoch taken since by a takeover that
    never served leaves it standing. A clean release says its final LSN, which the passive
    replays first; a live peer that has less WAL than this node has nothing this node lacks."""
    c = obs.cluster
    if settings.replication is ReplicationMode.ASYNC or c is None or c.epoch == 0:
        return None
    last = c.last_leader
    if last is not None and last.epoch == c.epoch and last.clean and last.final_lsn is not None:
        return None
    lead = most_advanced(settings, obs)
    if lead is not None and lead[0]:
        return None
    if sync_standby_of_record(settings, obs):
        return None
    record = c.sync
    if record is None:
        named = "no synchronous standby was ever recorded"
    elif record.standby is None:
        named = f"no synchronous standby was named at epoch {record.epoch}"
    else:
        named = f"the synchronous standby at epoch {record.epoch} is {record.standby}"
    return (
        f"{named}: {settings.peer} may have acknowledged writes this node does not have "
        f"({settings.replication.value} mode). Bring {settings.peer} back, or accept the loss "
        f"with 'failoverctl promote {settings.node} --force'"
    )


def peer_not_serving(settings: Settings, obs: Observation) -> MemberStatus | None:
    """The peer's own fresh record, when its daemon is alive, its database does not serve and
    it says how far its WAL goes; None otherwise."""
    c = obs.cluster
    peer = None if c is None else c.member(settings.peer)
    if not isinstance(peer, MemberStatus) or peer.age > settings.peer_stale_after:
        return None
    if peer.db_role == DbRole.PRIMARY.value or peer.lsn is None:
        return None
    if c is not None and c.lease is not None:
        return None  # someone leads: this comparison is for a free lease
    return peer


def wal_order(timeline: int | None, lsn: int, node: str) -> tuple[int, int, str]:
    """How far a node's WAL goes, to compare two nodes: a later timeline wins (it is the later
    promotion), then the higher LSN; equal, the lower node name, so exactly one node wins."""
    return (timeline or 0, lsn, _reverse(node))


def _reverse(name: str) -> str:
    return "".join(chr(0x10FFFF - ord(ch)) for ch in name)


def most_advanced(settings: Settings, obs: Observation) -> tuple[bool, str] | None:
    """With no active and the peer's daemon alive, which of the two should lead? (True when
    this node, and why), or None when the peer's position is not known."""
    peer = peer_not_serving(settings, obs)
    db = obs.database
    if peer is None or peer.lsn is None or db.lsn is None:
        return None
    # A record without a timeline (an older daemon's) compares by LSN alone.
    known = db.timeline is not None and peer.timeline is not None
    mine = wal_order(db.timeline if known else None, db.lsn, settings.node)
    theirs = wal_order(peer.timeline if known else None, peer.lsn, settings.peer)
    where = f"timeline {db.timeline} at {format_lsn(db.lsn)}"
    there = f"timeline {peer.timeline} at {format_lsn(peer.lsn)}"
    if mine > theirs:
        if not peer.lsn_exact:
            # Its stopped database's end of WAL could not be read: the checkpoint it reports is
            # a lower bound, and the commits it acknowledged may lie beyond it.
            return None
        return True, f"the most advanced node: {where}, {settings.peer} {there}"
    at_least = "" if peer.lsn_exact else "at least "
    return False, f"{settings.peer} is further ahead ({at_least}{there}; here {where})"


def wal_end_known(db: DatabaseStatus) -> bool:
    """Is ``db.lsn`` where this database's WAL ends? A running server's is (its write or receive
    position); a stopped one's is when read from its WAL, else it is the latest checkpoint,
    which ends WAL only after a primary's clean shutdown. A crashed primary's WAL goes on past
    it, and a replica's checkpoint is its last restartpoint, behind what it received."""
    if db.role is not DbRole.STOPPED:
        return True
    if db.lsn_exact is not None:
        return db.lsn_exact
    return db.was_primary is True and db.stopped_cleanly is True


def peer_can_lead(settings: Settings, obs: Observation, peer: MemberStatus) -> bool:
    """Its own checks pass, but for the database check (its database is stopped, of course)."""
    dbcheck = obs.local.database_check
    return all(c.healthy for c in peer.checks if c.name != dbcheck) and peer.role in (
        Role.PASSIVE.value,
        Role.FENCED.value,
        Role.STARTING.value,
    )


def _peer_ahead(settings: Settings, obs: Observation) -> str | None:
    """Why not to take a free lease from a live peer that holds more WAL: it should lead, or the
    gap is more than a failover may lose."""
    verdict = most_advanced(settings, obs)
    if verdict is None or verdict[0]:
        return None
    peer = peer_not_serving(settings, obs)
    assert peer is not None and peer.lsn is not None
    db = obs.database
    same = peer.timeline is None or db.timeline is None or peer.timeline == db.timeline
    gap = peer.lsn - (db.lsn or 0) if same else None
    if peer_can_lead(settings, obs, peer):
        return f"{verdict[1]}: it should lead"
    if gap is None or gap > settings.max_lag_on_failover:
        size = "on a later timeline" if gap is None else f"{format_bytes(gap)} more than here"
        return (
            f"{verdict[1]}, {size} (max_lag_on_failover "
            f"{format_bytes(settings.max_lag_on_failover)}), and it cannot lead: its checks "
            "are failing"
        )
    return None


def _replication_silence(settings: Settings, state: State, obs: Observation) -> str | None:
    """Why the replica may have missed too much while not streaming, or None.

    Silence counts from the active's last sign of life, not from now: a replica whose WAL
    stopped when the active died (a crash, a ZooKeeper outage that self-fenced it) has missed
    nothing, however long ago that was. With the active alive now, it counts from now. A
    restarted passive that never saw WAL arrive relies on the persisted position instead."""
    db = obs.database
    if db.streaming:
        return None
    c = obs.cluster
    alive_now = c is not None and c.lease is not None and c.lease.node == settings.peer
    limit = f"(max_replication_silence {settings.max_replication_silence:g} s)"
    if db.last_received_age is None:
        if alive_now:
            return f"WAL receiver not streaming, last WAL received never {limit}"
        if active_position(settings, state, obs) is None:
            return (
                "WAL receiver not streaming, last WAL received never, and no record of the "
                "active's position to judge its lag by"
            )
        return None
    stopped_at = obs.now - db.last_received_age
    last_alive = obs.now if alive_now else state.active_alive_at
    silent = max(0.0, (obs.now if last_alive is None else last_alive) - stopped_at)
    if silent <= settings.max_replication_silence:
        return None
    if alive_now or last_alive is None:  # counted from now: the strict reading
        return (
            f"WAL receiver not streaming, last WAL received {db.last_received_age:.1f} s ago "
            f"{limit}"
        )
    return f"WAL stopped arriving {silent:.1f} s before {settings.peer} was last seen alive {limit}"


def replayed_up_to(db: DatabaseStatus, lsn: int, timeline: int | None) -> bool:
    """Has this database replayed ``lsn`` of ``timeline``? A position on another timeline says
    nothing, however high: a diverged ex-primary's LSN can pass a hand-over's final LSN without
    holding a single write of it."""
    if db.replayed_lsn is None or db.replayed_lsn < lsn:
        return False
    return timeline is None or db.timeline is None or db.timeline == timeline


def active_position(
    settings: Settings, state: State, obs: Observation
) -> tuple[int, int | None] | None:
    """The furthest the active is known to have written, and on which timeline if known: its
    live record, what we remembered of it, the persisted position of the current epoch, or the
    final LSN of a clean release. A crash can lose at most what came after it."""
    found: list[tuple[int, int | None]] = []
    live = known_active_lsn(settings, state, obs)
    if live is not None:
        found.append((live, None))
    c = obs.cluster
    if c is not None:
        # The latest position written, whatever its epoch: an epoch taken since by a takeover
        # that never served (killed while fencing, say) wrote none, and one that served wrote
        # its own within publish_every.
        pos = c.position
        if pos is not None and pos.epoch <= c.epoch:
            found.append((pos.lsn, pos.timeline))
        last = c.last_leader
        if last is not None and last.epoch == c.epoch and last.final_lsn is not None:
            found.append((last.final_lsn, last.timeline))
    if not found:
        return None
    lsn = max(f[0] for f in found)
    timelines = [t for _, t in found if t is not None]
    return lsn, (max(timelines) if timelines else None)


def known_active_lsn(settings: Settings, state: State, obs: Observation) -> int | None:
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


def format_lsn(lsn: int) -> str:
    """PostgreSQL's notation, ``0/3000028``: what operators see in its own views and logs."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def fork_verdict(f: RejoinFacts) -> tuple[str, str]:
    """May this stopped node follow the active as it is, or must it be rewound or cloned?

    Returns ("follow" | "rewind" | "clone", why). A replica may follow when its minimum recovery
    end lies at or before the point where the active's history left the replica's timeline; a
    former primary only when that point is exactly the end of its shutdown checkpoint (the
    active received everything, the checkpoint included). Anything else may hold WAL the active
    never had: following it would fork history silently.
    """
    if not f.same_system:
        return "clone", "its data comes from another initdb than the active's"
    if not f.clean:
        return "rewind", "it did not shut down cleanly: its end of WAL is unknown until rewound"
    local, primary = f.local_timeline, f.primary_timeline
    if local is None or f.local_lsn is None or primary is None:
        return "rewind", "its timeline or end of WAL is unknown"
    at = f"timeline {local} at {format_lsn(f.local_lsn)}"
    if local > primary:
        return "rewind", f"it is on {at}, beyond the active's timeline {primary}"
    if local == primary:
        return "follow", f"it is on the active's timeline {primary} at {format_lsn(f.local_lsn)}"
    for parent, switchpoint in f.primary_history:
        if parent > local:
            break
        if parent != local:
            continue
        fork = f"the active left timeline {local} at {format_lsn(switchpoint)}"
        if not f.was_primary:
            if f.local_lsn > switchpoint:
                return "rewind", f"diverged: it replayed {at}, past the fork ({fork})"
            return "follow", f"{at}, {fork}: no fork in between"
        end = f.local_checkpoint_end
        if f.local_lsn >= switchpoint:
            return (
                "rewind",
                f"diverged: its shutdown checkpoint on {at} lies past the fork ({fork})",
            )
        if end == switchpoint:
            return "follow", f"its shutdown checkpoint ends where {fork}"
        ends = "unknown" if end is None else format_lsn(end)
        return "rewind", (
            f"diverged: its WAL on timeline {local} runs to {ends}, not to the fork ({fork})"
        )
    return "rewind", f"the active's history does not contain its {at}"

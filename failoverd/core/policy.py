"""Pure judgements shared by the core and by status reporting: eligibility, deadlines, sizes."""

from __future__ import annotations

from failoverd.core.model import (
    DatabaseStatus,
    DbRole,
    MalformedMember,
    MemberStatus,
    Observation,
    RejoinFacts,
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
    active_lsn = known_active_lsn(settings, state, obs)
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

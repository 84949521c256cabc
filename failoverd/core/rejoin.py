"""Rejoin: a stopped, diverged or empty node becomes a streaming replica of the active again.

No one-way doors: after a crash, a self-fence or a PostgreSQL failure the old active is left
stopped, possibly with writes the new active never got. It compares its end of WAL with the
active's timeline history (``policy.fork_verdict``): not diverged, it follows as it is;
diverged, ``pg_rewind``; a rewind that cannot work (no checksums, WAL gone), a clone with
``pg_basebackup`` when ``reclone`` allows it. An empty data directory is cloned: nothing to lose.

It only rejoins while it holds no lease and no VIP, its own database is stopped, and the peer
holds the lease of the current epoch and answers a direct probe as a primary. In manual mode it
waits for ``failoverctl rejoin NODE``. A replica that starts but never streams (diverged
silently, or the WAL it needs is gone) is stopped and rejoined again, each time a step harder:
inspect, then rewind, then clone.
"""

from __future__ import annotations

from dataclasses import replace

from failoverd.core import context, policy
from failoverd.core.model import (
    ClearRejoinRequest,
    CloneDatabase,
    DbRole,
    InspectRejoin,
    PeerDb,
    Rejoin,
    RewindDatabase,
    Role,
    StartReplica,
)

REJOIN_ACTIONS = ("InspectRejoin", "RewindDatabase", "CloneDatabase", "StartReplica")


def why_not(st: context.Ctx) -> str | None:
    """Why this node may not rejoin now, in words; None when it may. (Manual mode waiting for
    a request is said apart: ``manual_wait``.)"""
    c = st.cluster
    if c is None or not st.zk_fresh():
        return "waiting for ZooKeeper"
    lease = c.lease
    if lease is None or lease.node != st.s.peer or lease.epoch != c.epoch:
        return "no active to follow: the lease is free"
    if st.obs.vip_present is True:
        return "the VIP is still configured here"
    db = st.obs.database.role
    if db not in (DbRole.STOPPED, DbRole.EMPTY):
        return f"its database is {db.value}, not stopped"
    if st.obs.peer_database.state is not PeerDb.PRIMARY:
        return f"waiting for {st.s.peer}'s database to answer as a primary"
    return None


def manual_wait(st: context.Ctx) -> bool:
    c = st.cluster
    return not st.s.rejoin_auto and (c is None or c.rejoin_request(st.s.node) is None)


def run(st: context.Ctx, done: context.Done | None) -> None:
    """One step of the rejoin (the fenced role calls it once nothing else is to be done)."""
    if done is not None and done.kind in REJOIN_ACTIONS and st.state.rejoin is not None:
        _on_result(st, done)
        if st.state.role is not Role.FENCED or st.state.pending is not None:
            return
    if st.state.pending is not None:
        return
    if st.state.rejoin is not None and done is None:
        # Its step is no longer in flight (answered while the node was paused or in another
        # role, or lost with a restart of the action): start over from the inspection.
        st.set(rejoin=None)
    blocked = why_not(st)
    if blocked is not None:
        if st.state.rejoin is not None:
            st.set(rejoin=None)
        st.decide("must_rejoin", f"fenced: must rejoin as a replica of {st.s.peer}; {blocked}")
        return
    if manual_wait(st):
        st.decide(
            "rejoin_manual",
            f"fenced: must rejoin as a replica of {st.s.peer}; rejoin = manual: waiting for "
            f"'failoverctl rejoin {st.s.node}'",
        )
        return
    retry = st.state.rejoin_retry_at
    if retry is not None and st.obs.now < retry:
        return
    if st.state.rejoin is None:
        _begin(st)


def _begin(st: context.Ctx) -> None:
    c = st.cluster
    assert c is not None
    request = c.rejoin_request(st.s.node)
    r = Rejoin(
        primary=st.s.peer, started_at=st.obs.now, step="inspect", requested=request is not None
    )
    st.set(rejoin=r, rejoin_retry_at=None)
    if st.obs.database.role is DbRole.EMPTY:
        _clone(st, "its data directory is empty")
        return
    if request is not None and request.reclone:
        _clone(st, f"{request.requested_by} asked for a clone")
        return
    if st.state.stalls >= 2:
        _clone(st, f"{st.state.stalls} rejoins ended in a replica that does not stream")
        return
    if st.state.stalls == 1:
        reason = st.decide(
            "rewinding",
            f"the last rejoin ended in a replica that does not stream: pg_rewind from {st.s.peer}",
        )
        st.set(rejoin=replace(r, step="rewind", verdict="rewind"))
        st.emit(RewindDatabase, reason, primary=st.s.peer)
        return
    reason = st.decide(
        "inspecting",
        f"fenced: comparing its end of WAL with {st.s.peer}'s timeline history",
    )
    st.emit(InspectRejoin, reason, primary=st.s.peer)


def _on_result(st: context.Ctx, done: context.Done) -> None:
    r = st.state.rejoin
    assert r is not None
    res = done.result
    if done.kind == "InspectRejoin":
        facts = res.rejoin
        if not res.ok or facts is None:
            _failed(st, f"inspecting failed: {res.detail}")
            return
        verdict, why = policy.fork_verdict(facts)
        st.set(rejoin=replace(r, verdict=verdict, why=why))
        if verdict == "follow":
            _start(st, f"not diverged ({why})")
        elif verdict == "rewind" and facts.rewindable:
            reason = st.decide("rewinding", f"diverged ({why}): pg_rewind from {st.s.peer}")
            st.set(rejoin=replace(st.state.rejoin or r, step="rewind"))
            st.emit(RewindDatabase, reason, primary=st.s.peer)
        elif verdict == "rewind":
            _clone(
                st, f"{why}, and pg_rewind cannot work: neither data checksums nor wal_log_hints"
            )
        else:
            _clone(st, why)
    elif done.kind == "RewindDatabase":
        if res.ok:
            _start(st, f"rewound ({res.detail})")
        else:
            _clone(st, f"pg_rewind failed: {res.detail}")
    elif done.kind == "CloneDatabase":
        if res.ok:
            _rejoined(st, f"cloned from {st.s.peer} ({res.detail})")
        else:
            _failed(st, f"the clone failed: {res.detail}")
    elif done.kind == "StartReplica":
        if res.ok:
            _rejoined(st, f"started as a replica of {st.s.peer} ({r.why or res.detail})")
        elif r.verdict == "follow":
            st.set(stalls=max(st.state.stalls, 1))
            _failed(st, f"could not start as a replica: {res.detail}")
        else:
            st.set(stalls=max(st.state.stalls, 2))
            _failed(st, f"could not start as a replica after the rewind: {res.detail}")


def _start(st: context.Ctx, why: str) -> None:
    r = st.state.rejoin
    assert r is not None
    reason = st.decide("start_replica", f"{why}: starting as a replica of {st.s.peer}")
    st.set(rejoin=replace(r, step="start"))
    st.emit(StartReplica, reason, primary=st.s.peer)


def _clone(st: context.Ctx, why: str) -> None:
    r = st.state.rejoin
    assert r is not None
    c = st.cluster
    request = None if c is None else c.rejoin_request(st.s.node)
    allowed = (
        st.s.reclone
        or st.obs.database.role is DbRole.EMPTY
        or (request is not None and request.reclone)
    )
    if not allowed:
        st.set(rejoin=None, rejoin_retry_at=st.obs.now + st.s.fence_retry_after)
        st.decide(
            "rejoin_needs_clone",
            f"{why}; reclone = false, so it waits: run 'failoverctl rejoin {st.s.node} "
            "--reclone' to clone it from the active (whatever it alone holds is discarded)",
        )
        return
    reason = st.decide("cloning", f"{why}: cloning from {st.s.peer} (pg_basebackup)")
    st.set(rejoin=replace(r, step="clone", verdict=r.verdict or "clone", why=why))
    st.emit(CloneDatabase, reason, primary=st.s.peer)


def _failed(st: context.Ctx, why: str) -> None:
    st.set(rejoin=None, rejoin_retry_at=st.obs.now + st.s.fence_retry_after)
    st.decide(
        "rejoin_failed",
        f"{why}; trying again in {st.s.fence_retry_after:g} s",
    )


def _rejoined(st: context.Ctx, why: str) -> None:
    r = st.state.rejoin
    st.set(role=Role.PASSIVE, rejoin=None, rejoin_retry_at=None, stalled_since=None)
    reason = st.decide("rejoined", why)
    c = st.cluster
    if r is not None and c is not None and c.rejoin_request(st.s.node) is not None:
        st.emit(ClearRejoinRequest, reason, node=st.s.node)

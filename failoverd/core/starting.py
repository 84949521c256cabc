"""Start-up: take a role from what is found, never from memory of a previous life."""

from __future__ import annotations

from failoverd.core import context, demoting, fenced, passive, policy, promoting, rejoin
from failoverd.core.model import (
    AddVip,
    DbRole,
    PeerDb,
    Role,
    StartReplica,
    StopDatabase,
)


def first_observation_missing(st: context.Ctx) -> str | None:
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


def run(st: context.Ctx) -> None:
    """Take a role from what is found; never trust our own memory of a previous life."""
    if kill_hung_database(st, "starting"):
        return
    missing = first_observation_missing(st)
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
            promoting.begin(st, lease.epoch)
            return
        # Still our session (resumed from pause): keep the role the database proves.
        st.set(epoch=lease.epoch)
        if db.role in (DbRole.PRIMARY, DbRole.UNMANAGED):
            st.set(role=Role.ACTIVE)
            st.decide("active_resumed", f"still holding the lease (epoch {lease.epoch})")
            st.emit(AddVip, st.reason, epoch=lease.epoch, not_after=context.not_after(st))
        else:
            demoting.begin(st, "aborted", f"holding the lease but database is {db.role.value}")
        return

    if lease is not None:
        # Someone else is active: this node must not be (another) primary.
        if db.role is DbRole.PRIMARY:
            fenced.fence_self_stale(
                st,
                f"own database is primary but {lease.node} holds the lease (epoch {lease.epoch})",
            )
        elif db.role in (DbRole.STOPPED, DbRole.EMPTY):
            start_as_replica_or_rejoin(st, lease.node)
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
        if c.epoch in (0, db.recorded_epoch) or promoted_after_last_active(st):
            # A fresh cluster, the primary of the latest epoch whose daemon restarted, or one
            # promoted after the last active that served (its daemon died before it recorded
            # the epoch): it has everything, it leads.
            st.set(role=Role.PASSIVE)
            passive.try_takeover(st, readopt=True)
            return
        fenced.fence_self_stale(
            st,
            f"own database is primary from epoch {db.recorded_epoch}, "
            f"cluster is at epoch {c.epoch}",
        )
        return
    if db.role is DbRole.STOPPED and latest_primary(st) is not None:
        # The most advanced node: nobody was promoted since it led, so it has every write the
        # peer has, and more. It may lead again, after the same checks as any takeover.
        failing = [
            f"{chk.name}: {chk.reason}"
            for chk in st.obs.local.failing
            if chk.name != st.obs.local.database_check  # stopped, of course it fails
        ]
        if failing:
            st.set(role=Role.FENCED)
            st.decide(
                "not_eligible",
                "the latest primary, stopped, could lead again, but checks are failing: "
                + "; ".join(failing),
            )
            return
        st.set(role=Role.PASSIVE)
        passive.try_takeover(st, readopt=True)
        return
    if db.role in (DbRole.STOPPED, DbRole.EMPTY):
        start_as_replica_or_rejoin(st, st.s.peer)
        return
    st.set(role=Role.PASSIVE)
    passive.run(st, None)


def kill_hung_database(st: context.Ctx, role: str) -> bool:
    """A PostgreSQL that runs but does not answer is never waited on: it may be a primary that
    resumes taking writes beside the peer's at any moment. Killed at once, it is a stopped
    database, which every role knows what to do with (re-adopt, rejoin, restart)."""
    db = st.obs.database
    if not (st.managed_db() and db.hung and st.state.pending is None):
        return False
    if not any(c.name == st.obs.local.database_check for c in st.obs.local.failing):
        return False  # not hung for long enough: the check's fall count decides
    reason = st.decide(
        "database_hung",
        f"{role}: PostgreSQL runs but does not answer: killing it rather than wait for it",
    )
    st.emit(StopDatabase, reason, mode="kill")
    return True


def promoted_after_last_active(st: context.Ctx) -> bool:
    """Our primary's timeline is beyond the one the last serving active wrote its position on:
    it was promoted after that active, by a takeover of ours that did not live to record its
    epoch, and holds every write that active had. A stale primary is on that timeline or an
    older one."""
    c = st.cluster
    db = st.obs.database
    pos = None if c is None else c.position
    return (
        pos is not None
        and pos.node != st.s.node
        and pos.timeline is not None
        and db.timeline is not None
        and db.timeline > pos.timeline
    )


def latest_primary(st: context.Ctx) -> str | None:
    """Why this stopped node is the primary of the current epoch (nobody was promoted since),
    or None. From what is persisted, so it survives our restart: our clean release of the
    latest epoch, or the position record we wrote while leading it."""
    c = st.cluster
    db = st.obs.database
    if c is None:
        return None
    if not db.was_primary:
        # A stopped replica leads only as the most advanced of two live daemons.
        lead = policy.most_advanced(st.s, st.obs)
        return lead[1] if lead is not None and lead[0] else None
    last = c.last_leader
    if (
        last is not None
        and last.node == st.s.node
        and last.epoch == c.epoch
        and last.clean
        and db.stopped_cleanly
    ):
        return f"it ended epoch {c.epoch} with a clean stop"
    pos = c.position
    if pos is not None and pos.node == st.s.node and pos.epoch == c.epoch and c.epoch > 0:
        return f"it led epoch {c.epoch}, the latest, and nobody was promoted since"
    lead = policy.most_advanced(st.s, st.obs)
    if lead is not None and lead[0]:
        return lead[1]
    return None


def start_as_replica_or_rejoin(st: context.Ctx, primary: str) -> None:
    """A cleanly stopped replica can follow as it is; a former primary, an unclean stop or an
    empty directory rejoins (``core/rejoin.py``): compared with the active's history first."""
    db = st.obs.database
    if db.role is DbRole.EMPTY or db.was_primary or not db.stopped_cleanly:
        st.set(role=Role.FENCED)
        rejoin.run(st, None)
        return
    st.set(role=Role.PASSIVE)
    reason = st.decide("start_replica", f"starting the database as a replica of {primary}")
    if st.state.pending is None:
        st.emit(StartReplica, reason, primary=primary)

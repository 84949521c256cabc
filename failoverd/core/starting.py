"""Start-up: take a role from what is found, never from memory of a previous life."""

from __future__ import annotations

from failoverd.core import context, demoting, fenced, passive, promoting
from failoverd.core.model import (
    AddVip,
    DbRole,
    PeerDb,
    Role,
    StartReplica,
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
        elif db.role is DbRole.STOPPED:
            start_as_replica_or_fence(st, lease.node)
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
            passive.try_takeover(st, readopt=True)
            return
        fenced.fence_self_stale(
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
            passive.try_takeover(st, readopt=True)
            return
        start_as_replica_or_fence(st, st.s.peer)
        return
    st.set(role=Role.PASSIVE)
    passive.run(st, None)


def start_as_replica_or_fence(st: context.Ctx, primary: str) -> None:
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

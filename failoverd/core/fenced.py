"""Fencing ourselves, and the fenced role: stay down until it is safe to be a replica again."""

from __future__ import annotations

from failoverd.core import context, rejoin, starting
from failoverd.core.model import (
    ActionResult,
    DbRole,
    RecordEvent,
    ReleaseLease,
    RemoveVip,
    Role,
    RunHook,
    StopDatabase,
)


def self_fence(st: context.Ctx) -> None:
    sent = st.obs.zk.last_roundtrip_sent_at
    if st.reason.code == "self_fenced" and st.decisions and st.decisions[-1] is st.reason:
        reason = st.reason  # the caller said why already
    else:
        since = "since this process started" if sent is None else f"for {st.obs.now - sent:.2f} s"
        was = st.state.role if st.state.role is not Role.PAUSED else st.state.paused_from
        reason = st.decide(
            "self_fenced",
            f"self-fenced: no ZooKeeper round-trip {since} "
            f"(self_fence_after {st.s.self_fence_after:g} s)"
            + (f" and no live pledge from {st.s.peer}" if st.s.failsafe else "")
            + " while "
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
        st.emit(StopDatabase, reason, mode="kill" if st.obs.database.hung else "fast")
    st.emit(RunHook, reason, role=Role.FENCED, epoch=st.state.epoch)


def fence_self_stale(st: context.Ctx, why: str) -> None:
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


def record_fence_stop(st: context.Ctx, r: ActionResult) -> None:
    """Where the fence stopped the database: what a later release of the lease reports."""
    st.set(
        fence_final_lsn=r.final_lsn if r.ok else None,
        fence_final_timeline=r.timeline if r.ok else None,
        fence_stop_clean=bool(r.ok and r.clean),
    )


def run(st: context.Ctx, done: context.Done | None) -> None:
    if done is not None and done.kind in rejoin.REJOIN_ACTIONS and st.state.rejoin is not None:
        rejoin.run(st, done)
        return
    if done is not None:
        r = done.result
        if done.kind == "StopDatabase":
            record_fence_stop(st, r)
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
        if context.serving(st):
            # The fence did not take (yet): a release now would let the peer add the VIP
            # beside ours on a fence that finds us unreachable.
            reason = st.decide(
                "fence_incomplete",
                "fenced while holding the lease, but the VIP or the primary is still up: "
                "stopping them again before releasing it",
            )
            if st.obs.vip_present is True:
                st.emit(RemoveVip, reason)
            if st.managed_db() and st.obs.database.role is DbRole.PRIMARY:
                st.emit(StopDatabase, reason, mode="immediate")
            return
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
    db = st.obs.database.role
    if db in (DbRole.UNMANAGED, DbRole.REPLICA) or (
        c.lease is None and db in (DbRole.STOPPED, DbRole.PRIMARY)
    ):
        # Nothing left to rejoin from, or no active to rejoin to: take a role from what is
        # found (the most advanced node may lead again).
        st.set(role=Role.STARTING)
        starting.run(st)
        return
    rejoin.run(st, None)

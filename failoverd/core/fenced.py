"""Fencing ourselves, and the fenced role: stay down until it is safe to be a replica again."""

from __future__ import annotations

from failoverd.core import context, failsafe, rejoin, starting
from failoverd.core.model import (
    ActionResult,
    AddVip,
    DbRole,
    RecordEvent,
    ReleaseLease,
    RemoveVip,
    Role,
    RunHook,
    StartPrimary,
    StopDatabase,
)


def self_fence(st: context.Ctx) -> None:
    sent = st.obs.zk.last_roundtrip_sent_at
    if st.reason.code == "self_fenced" and st.decisions and st.decisions[-1] is st.reason:
        reason = st.reason  # the caller said why already
    else:
        since = "since this process started" if sent is None else f"for {st.obs.now - sent:.2f} s"
        if sent is None and st.obs.started_unfenced:
            since += " (its previous life ended serving, and ExecStopPost's fence-self failed)"
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
        resume_epoch=st.state.epoch if may_resume_later(st) else None,
        resume_started=False,
    )
    st.emit(RemoveVip, reason)
    if st.managed_db():
        st.emit(StopDatabase, reason, mode="kill" if st.obs.database.hung else "fast")
    st.emit(RunHook, reason, role=Role.FENCED, epoch=st.state.epoch)


def may_resume_later(st: context.Ctx) -> bool:
    """Is this self-fence one a new pledge may undo while ZooKeeper stays out of reach? Only
    for an active that was healthy, under a lease the view still shows as this node's, and
    not one that resumed within fence_retry_after (a channel that keeps failing must not make
    the database flap). The peer that pledged cannot have taken the lease: it grants only
    while it does not lead, to the active of the lease it last saw."""
    c, now = st.cluster, st.obs.now
    local = st.obs.local
    return (
        st.s.failsafe
        and st.state.role is Role.ACTIVE
        and st.state.epoch > 0
        and local.complete
        and local.healthy
        and not st.obs.shutdown_requested
        and c is not None
        and c.lease is not None
        and c.lease.node == st.s.node
        and c.lease.epoch == st.state.epoch
        and (st.state.resumed_at is None or now - st.state.resumed_at >= st.s.fence_retry_after)
    )


def resume(st: context.Ctx, done: context.Done | None) -> bool:
    """Self-fenced on a lapsed pledge (a stalled peer, a lost datagram) while ZooKeeper is out
    for everyone: nobody can take over until it is back, so the site would stay down for as
    long. Once the peer pledges again, start the database as primary and add the VIP, each
    only under that pledge, and serve at the same epoch. True while that is under way."""
    epoch = st.state.resume_epoch
    if epoch is None:
        return False
    if epoch != st.state.epoch or not st.s.failsafe or st.obs.shutdown_requested:
        return end_resume(st, "resume_ended", "stopping, or no longer at that epoch")
    peer = st.s.peer
    if done is not None and done.kind in ("StartPrimary", "AddVip") and not done.result.ok:
        st.set(resume_started=True)  # whatever it did is undone, or finished below
        r = done.result
        if not (r.late or r.overran):
            return end_resume(
                st,
                "resume_failed",
                f"serving again failed ({done.kind}: {r.detail}); fenced until ZooKeeper is back",
            )
        if not failsafe.pledged(st):
            return end_resume(
                st, "resume_ended", f"{peer}'s pledge lapsed before serving again ({r.detail})"
            )
        # Refused for time alone (a database slower to start than one pledge lasts): the
        # asking went on, and under the pledge that holds now the same step finishes it.
        deadline = failsafe.pledge_deadline(st)
        assert deadline is not None  # pledged
        reason = st.decide(
            "resuming",
            f"{done.kind} outlasted the pledge it was sent under ({r.detail}): sending it again "
            f"under {peer}'s new pledge (epoch {epoch})",
        )
        action = StartPrimary if done.kind == "StartPrimary" else AddVip
        st.emit(action, reason, epoch=epoch, not_after=deadline)
        return True
    if done is not None and done.kind == "AddVip":
        st.set(role=Role.ACTIVE, resume_epoch=None, resume_started=False)
        st.decide(
            "resumed",
            f"active (epoch {epoch}) again on {peer}'s new pledge: ZooKeeper is still out of "
            "reach, and nobody could have taken over",
        )
        return True
    if st.state.pending is not None:
        return True
    if not failsafe.pledged(st):
        if st.state.resume_started:  # lapsed half-way: the database may be up, seen or not
            return end_resume(st, "resume_ended", f"{peer}'s pledge lapsed before serving again")
        st.decide(
            "resume_asking",
            f"self-fenced without ZooKeeper (epoch {epoch}): asking {peer} for a pledge to "
            "serve again",
        )
        return True
    deadline = failsafe.pledge_deadline(st)
    assert deadline is not None  # pledged
    if (done is not None and done.kind == "StartPrimary") or not st.managed_db():
        st.set(resume_started=True, resumed_at=st.state.resumed_at or st.obs.now)
        reason = st.decide("resuming", f"{peer} pledged again: adding the VIP (epoch {epoch})")
        st.emit(AddVip, reason, epoch=epoch, not_after=deadline)
        return True
    if st.obs.database.role is not DbRole.STOPPED:
        st.decide(
            "resume_asking",
            f"{peer} pledged again, but the database is {st.obs.database.role.value}, not "
            "stopped: waiting for it before starting it as primary",
        )
        return True
    reason = st.decide(
        "resuming",
        f"{peer} pledged again while ZooKeeper is out: starting the database as primary "
        f"(epoch {epoch})",
    )
    st.set(resumed_at=st.obs.now, resume_started=True)
    st.emit(StartPrimary, reason, epoch=epoch, not_after=deadline)
    return True


def end_resume(st: context.Ctx, code: str, why: str) -> bool:
    """No more resuming; what it started (the database, the VIP) is stopped again, as the
    fence left it. True when stops were emitted."""
    started = st.state.resume_started
    st.set(resume_epoch=None, resume_started=False)
    if not started:
        return False
    reason = st.decide(code, f"{why}: stopping what serving again had started")
    st.emit(RemoveVip, reason)
    if st.managed_db():
        st.emit(StopDatabase, reason, mode="fast")
    return True


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
    if st.state.resume_epoch is not None and (st.cluster is None or not st.zk_fresh()):
        if done is not None and done.kind == "StopDatabase":
            record_fence_stop(st, done.result)
            if done.result.ok:
                done = None
            else:
                st.set(resume_epoch=None)  # the fence's own retry below, and no resume
        if done is None or done.kind in ("StartPrimary", "AddVip"):
            if st.state.resume_epoch is not None and resume(st, done):
                return
            done = None
    elif st.state.resume_epoch is not None:
        # ZooKeeper is back: the lease decides, as for any fence. What a resume under way may
        # have started is stopped first (once its action answered), as the fence left it.
        if st.state.pending is not None:
            return
        if end_resume(st, "resume_ended", "ZooKeeper is back before serving again"):
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

"""The failsafe: an active that lost ZooKeeper, but not its peer, serves on while the peer
pledges not to take the lease (DESIGN, "ZooKeeper trouble").

The peer promises "not before my receipt time + pledge_ttl"; the active counts the pledge from
its own send time, earlier, and pledge_margin short for clock rates. So by the time the peer may
lead, the active is down: it self-fences once it has neither a fresh round-trip nor a live
pledge. The passive grants pledges only to the active of the lease it last saw, stops granting
before it takes a free lease, and then waits until every pledge it gave has lapsed (they are
kept across its restarts). A ZooKeeper outage of both nodes, or of the active alone, is then
not an outage of the site.
"""

from __future__ import annotations

from failoverd.core import context, promoting
from failoverd.core.model import AcquireLease, AskPledge, Role, SetGranting, Takeover, ZkState


def pledge_deadline(st: context.Ctx) -> float | None:
    """Until when our latest pledge lets us serve without a round-trip (our clock).

    Not to its end: only while it is as fresh as a round-trip must be (self_fence_after from
    its request). A daemon that freezes while serving on a pledge cannot fence itself; its
    watchdog and ExecStopPost must, before the peer may lead. Serving up to the pledge's end
    would leave them the margin alone (the random traces found it); stopping at
    self_fence_after leaves them pledge_ttl - self_fence_after, no less than a session gives."""
    p = st.obs.pledge
    if not st.s.failsafe or p is None or st.state.epoch <= 0 or p.epoch != st.state.epoch:
        return None
    return min(p.sent_at + p.ttl - st.s.pledge_margin, p.sent_at + st.s.self_fence_after)


def pledged(st: context.Ctx) -> bool:
    deadline = pledge_deadline(st)
    return deadline is not None and st.obs.now < deadline


def may_serve(st: context.Ctx) -> bool:
    """A fresh round-trip, or else a live pledge: what keeps a serving node from self-fencing."""
    return st.zk_fresh() or pledged(st)


def retake_lease(st: context.Ctx) -> bool:
    """Our session was lost (it expired while ZooKeeper was out of reach) but the peer's pledge
    still holds: nobody can have taken the lease, so re-take it at a new epoch while serving
    instead of stepping down. True while that is under way; False when the lease went to
    someone else (or no pledge holds), and the caller steps down."""
    if not pledged(st):
        return False
    c = st.cluster
    if st.obs.zk.state is not ZkState.CONNECTED or c is None:
        st.decide(
            "session_lost_on_pledge",
            f"ZooKeeper session lost; serving on {st.s.peer}'s pledge until a new one is up",
        )
        return True
    pending = st.state.pending
    if pending is not None and pending.kind == "AcquireLease":
        return True  # our re-take is in flight: its result decides
    lease = c.lease
    if lease is not None and lease.mine and lease.epoch == c.epoch > st.state.epoch:
        # Re-taken, and the view shows it before the result came: carry on with it.
        st.set(epoch=lease.epoch, highest_epoch=max(st.state.highest_epoch, lease.epoch))
        promoting.begin(st, lease.epoch)
        return True
    if (
        lease is not None
        and lease.node == st.s.node
        and not lease.mine
        and lease.epoch == c.epoch == st.state.epoch
    ):
        # Our own lease, of the session that expired: the new session's watches have not
        # answered yet (ZooKeeper deleted it with that session). Nobody else can hold it while
        # the pledge does: wait for the view rather than step down on it.
        st.decide(
            "retake_waiting",
            f"new ZooKeeper session: waiting for the view to drop our expired lease (epoch "
            f"{lease.epoch}) before re-taking it; serving on {st.s.peer}'s pledge meanwhile",
        )
        return True
    if lease is not None or c.epoch != st.state.epoch:
        return False
    if st.state.pending is None:
        now = st.obs.now
        reason = st.decide(
            "retaking_lease",
            f"session lost, lease free at epoch {c.epoch} and {st.s.peer} pledged not to take "
            f"it: re-taking it (epoch {c.epoch + 1}) while serving",
        )
        st.set(
            takeover=Takeover(
                kind="readopt",
                from_node=st.s.node,
                started_at=now,
                last_mark=now,
                expected_epoch=c.epoch,
                previous_mine=True,
            )
        )
        st.emit(AcquireLease, reason, expected_epoch=c.epoch)
    return True


def in_trouble(st: context.Ctx) -> bool:
    """ZooKeeper is slow or gone for us: the round-trip has aged past a third of
    self_fence_after, the connection is not up, or our session (and lease) was lost while we
    serve. Then a pledge is asked for (not before: a passive holding pledges would take over a
    crashed active only once they lapsed)."""
    sent = st.obs.zk.last_roundtrip_sent_at
    aged = sent is None or st.obs.now - sent > st.s.self_fence_after / 3
    return aged or st.obs.zk.state is not ZkState.CONNECTED or not st.holds_lease()


def maybe_ask(st: context.Ctx) -> None:
    """An active (or a paused node that serves) in ZooKeeper trouble asks its peer for a pledge
    every step while its own checks pass; the adapter keeps one request in flight."""
    role = st.state.role
    serving = role is Role.ACTIVE or (role is Role.PAUSED and st.state.paused_serving)
    # Self-fenced on a lapsed pledge, to serve again under a new one (fenced.resume): its own
    # fence stopped the database, so its checks cannot pass; a failed resume ends the asking.
    resuming = role is Role.FENCED and st.state.resume_epoch == st.state.epoch
    if not st.s.failsafe or not (serving or resuming) or st.state.epoch <= 0:
        return
    if not in_trouble(st):
        return
    local = st.obs.local
    if serving and not (local.complete and local.healthy):
        return  # a failing active must not hold its peer off: let the pledges lapse
    st.emit(AskPledge, st.reason, epoch=st.state.epoch)


def promised_for(st: context.Ctx) -> float:
    """Seconds we are still bound not to take the lease (0 when free to)."""
    until = st.obs.pledged_until
    return 0.0 if until is None else max(0.0, until - st.obs.now)


def on_result(st: context.Ctx, done: context.Done) -> None:
    if not done.result.ok:
        st.decide("failsafe_failed", f"the failsafe channel refused a change: {done.result.detail}")


def manage_granting(st: context.Ctx) -> bool:
    """A node that does not serve grants pledges to the active of the lease it sees, and goes
    on granting to it while the lease stays free at that epoch (its session may have expired
    with ZooKeeper cut off from it alone: it serves on the pledges, and re-takes the lease once
    back). A stale view changes nothing (a ZooKeeper outage). True when SetGranting was
    emitted; the caller then does nothing else this step."""
    if not st.s.failsafe or st.state.pending is not None:
        return False
    c = st.cluster
    if c is None or not st.zk_fresh() or st.obs.zk.state is not ZkState.CONNECTED:
        return False
    lease, granting = c.lease, st.obs.granting
    if lease is not None:
        want = lease.epoch if lease.node == st.s.peer else None
    else:
        # Free: keep granting while the peer still asks (it serves on them); once its pledges
        # lapse, stop_granting_before_taking ends it.
        want = granting if granting == c.epoch and promised_for(st) > 0 else None
    if granting == want or (lease is None and want is None):
        return False
    text = (
        f"granting pledges to {st.s.peer}, active under epoch {want}"
        if want is not None
        else "granting no pledges: the lease is not the peer's"
    )
    st.emit(SetGranting, st.decide("failsafe_granting", text), epoch=want)
    return True


def stop_granting_before_taking(st: context.Ctx) -> bool:
    """Before a takeover of a free lease: none while the peer serves on our pledges (it renews
    them: the site is up); once they lapsed, stop granting, so that no pledge comes after the
    count, and check again. True while the takeover must wait (the decision says why)."""
    if not st.s.failsafe:
        return False
    left = promised_for(st)
    if left > 0:
        st.decide(
            "pledge_pending",
            f"lease free, but {st.s.peer} holds a pledge from this node for {left:.1f} s "
            "more (it serves on it while it renews it): not taking the lease",
        )
        return True
    if st.obs.granting is not None:
        if st.state.pending is None:
            reason = st.decide(
                "failsafe_stop_granting",
                f"lease free and {st.s.peer}'s pledges lapsed: granting none before taking it",
            )
            st.emit(SetGranting, reason, epoch=None)
        return True
    return False

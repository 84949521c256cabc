"""Promoting: fence if the previous lease expired, promote, then add the VIP last."""

from __future__ import annotations

from dataclasses import replace

from failoverd.core import context, demoting, fenced, passive, sync
from failoverd.core.model import (
    AddVip,
    ClearSwitchover,
    DbRole,
    FenceOutcome,
    FencePeer,
    Promote,
    RecordEvent,
    RecordSync,
    ReleaseLease,
    Role,
    RunHook,
    Takeover,
)


def begin(st: context.Ctx, epoch: int) -> None:
    c = st.cluster
    t = st.state.takeover or Takeover(
        kind="failover",
        from_node=st.s.peer,
        started_at=st.obs.now,
        last_mark=st.obs.now,
        peer_alive_at=context.peer_alive_at(st),
    )
    # Judged on the view the acquisition was decided on when this one is missing; with neither,
    # assume the previous lease expired: a needless fence costs time, a missing one split brain.
    if c is not None:
        fence_needed = passive.needs_fence(c, epoch)
    elif t.expected_epoch is not None and t.expected_epoch + 1 == epoch:
        fence_needed = t.fence_needed
    else:
        fence_needed = True
    if t.previous_mine and t.expected_epoch is not None and t.expected_epoch + 1 == epoch:
        # The lease that expired was our own (we re-adopt after our own crash or self-fence):
        # the peer was never promoted under it, and a healthy replica is not fenced.
        fence_needed = False
    free_since = t.lease_free_since if t.lease_free_since is not None else st.state.lease_free_since
    # Only a fence sent after the lease went free surely hit whoever held it last.
    fenced_already = (
        st.state.peer_fence_sent_at is not None
        and free_since is not None
        and st.state.peer_fence_sent_at >= free_since
    )
    if t.kind == "bootstrap" and epoch > 1:
        t = replace(t, kind="failover" if fence_needed else "stepdown")
    t = replace(t, fence_needed=fence_needed, fenced=fenced_already).mark("lease", st.obs.now)
    st.set(role=Role.PROMOTING, takeover=t, retry_after=None)
    st.decide(
        "lease_acquired",
        f"lease acquired (epoch {epoch})"
        + (": previous lease expired, fencing the peer first" if fence_needed else ""),
    )
    run(st, None)


def run(st: context.Ctx, done: context.Done | None) -> None:
    t = st.state.takeover
    if t is None:
        t = Takeover(
            kind="failover",
            from_node=st.s.peer,
            started_at=st.obs.now,
            last_mark=st.obs.now,
            peer_alive_at=context.peer_alive_at(st),
        )
        st.set(takeover=t)
    epoch = st.state.epoch
    now = st.obs.now
    if done is not None:
        r = done.result
        if done.kind == "FencePeer":
            level = context.next_fence_level(st, done)
            how = done.method or "ssh"
            if r.fence in (FenceOutcome.FENCED, FenceOutcome.UNREACHABLE):
                assert r.fence is not None
                t = replace(t, fenced=True).mark("fence", now)
                st.set(takeover=t)
                if r.fence is FenceOutcome.FENCED:
                    st.set(peer_fenced_at=now, peer_fence_sent_at=done.sent_at)
                reason = st.decide(
                    "peer_fenced", f"{st.s.peer} fence ({how}): {r.fence.value} ({r.detail})"
                )
                context.fence_event(st, done, epoch, reason)
            elif level is not None:
                reason = st.decide(
                    "fencing",
                    f"fencing {st.s.peer} over SSH reached it but failed ({r.detail}): "
                    f"trying the {level} level",
                )
                context.fence_event(st, done, epoch, reason)
                st.emit(FencePeer, reason, peer=st.s.peer, epoch=epoch, method=level)
                return
            else:
                levels = "every fencing level" if st.s.power_fence else "fencing"
                code = "fencing_exhausted" if st.s.power_fence else "fence_failed"
                text = (
                    f"{levels} reached {st.s.peer} but failed (last, {how}: {r.detail}): not "
                    "promoting"
                )
                if context.serving(st):
                    # A re-adoption that already serves: a release says "not serving", and
                    # the next holder may add the VIP on a fence that finds us unreachable.
                    # So the VIP and the primary go first (demoting releases last).
                    demoting.begin(
                        st, "aborted", f"{text}; stepping down before giving the lease back"
                    )
                    context.fence_event(st, done, epoch, st.reason)
                    return
                reason = st.decide(
                    code,
                    f"{text}; giving the lease back, retrying in {st.s.fence_retry_after:g} s",
                )
                st.set(
                    role=Role.PASSIVE,
                    takeover=None,
                    retry_after=now + st.s.fence_retry_after,
                    retry_reason=reason,
                )
                context.fence_event(st, done, epoch, reason)
                st.emit(ReleaseLease, reason, epoch=epoch, final_lsn=None, clean=False)
                return
        elif done.kind in ("Promote", "AddVip") and (r.late or r.overran):
            # Refused for time alone: the round-trip it was sent on aged before it ran, or while
            # it started the server (up now, not promoted under the epoch). Not a failure: the
            # steps below send it again on a fresh one, which finishes it, or self-fence.
            if done.kind == "Promote":
                st.set(promoted_epoch=epoch - 1)  # nothing was promoted under this epoch
            st.decide("leased_action_late", f"{done.kind} came too late: {r.detail}")
        elif done.kind == "Promote":
            if not r.ok:
                demoting.begin(st, "aborted", f"promotion failed: {r.detail}")
                return
            t = replace(t, promoted=True).mark("promote", now)
            st.set(takeover=t)
            st.decide("promoted", f"database promoted (epoch {epoch})")
        elif done.kind == "RecordSync":
            if not r.ok:
                demoting.begin(st, "aborted", f"clearing the sync record failed: {r.detail}")
                return
            st.set(takeover=replace(t, sync_reset=True))
            t = st.state.takeover
            assert t is not None
        elif done.kind == "AddVip":
            if not r.ok:
                demoting.begin(st, "aborted", f"adding the VIP failed: {r.detail}")
                return
            become_active(st)
            return
    if st.state.pending is not None:
        return
    if st.obs.shutdown_requested:
        demoting.begin(st, "shutdown", "stopping during a promotion: handing back")
        return
    if not st.zk_fresh():
        fenced.self_fence(st)
        return
    if st.lease_lost():
        if t.promoted or st.state.promoted_epoch == epoch:
            demoting.begin(st, "lease_lost", "lease lost during the promotion")
        else:
            st.set(role=Role.PASSIVE, takeover=None)
            st.decide("lease_lost", "lease lost before promoting: back to passive")
        return
    if not st.holds_lease():
        st.decide("waiting_for_lease_view", f"waiting to see our lease (epoch {epoch})")
        return
    if t.fence_needed and not t.fenced:
        reason = st.decide(
            "fencing",
            f"previous lease (epoch {epoch - 1}) expired: fencing {st.s.peer} before promoting",
        )
        st.emit(FencePeer, reason, peer=st.s.peer, epoch=epoch)
        return
    if _sync_record_names_peer(st) and not t.sync_reset:
        # The peer's standing as the one holding every acknowledged commit ends before this
        # node can acknowledge its first: before the promotion, which clears whom its database
        # waits for, since a re-adopted primary may still have the VIP (left serving). Only
        # then: a takeover that is fenced out or dies before this keeps the peer's standing.
        reason = st.decide(
            "sync_reset",
            f"clearing the sync record (it names {st.s.peer}) before serving (epoch {epoch})",
        )
        st.emit(RecordSync, reason, standby=None, epoch=epoch)
        return
    if not t.promoted:
        db = st.obs.database
        if not st.managed_db() or (db.role is DbRole.PRIMARY and db.recorded_epoch == epoch):
            t = replace(t, promoted=True)
            st.set(takeover=t)
        elif st.state.promoted_epoch >= epoch:
            demoting.begin(st, "aborted", f"a promotion under epoch {epoch} was already tried")
            return
        else:
            # Already a primary (bootstrap, re-adoption): Promote records the epoch in it, as a
            # promotion does, so that a later start compares it with the cluster's.
            what = {
                DbRole.PRIMARY: "recording the epoch in the primary",
                DbRole.STOPPED: "starting the stopped primary",
            }.get(db.role, "promoting the database")
            reason = st.decide("promoting", f"{what} (epoch {epoch})")
            st.set(promoted_epoch=epoch)
            st.emit(
                Promote,
                reason,
                epoch=epoch,
                not_after=context.not_after(st),
                sync_names=sync.start_names(st),
            )
            return
    reason = st.decide("adding_vip", f"adding the VIP (epoch {epoch})")
    st.emit(AddVip, reason, epoch=epoch, not_after=context.not_after(st))


def _sync_record_names_peer(st: context.Ctx) -> bool:
    c = st.cluster
    return (
        c is not None
        and c.sync is not None
        and c.sync.standby == st.s.peer
        and c.sync.epoch < st.state.epoch
    )


def become_active(st: context.Ctx) -> None:
    t = st.state.takeover
    assert t is not None
    now = st.obs.now
    t = t.mark("vip", now)
    lease_free = t.lease_free_since if t.lease_free_since is not None else t.started_at
    lease_free = min(lease_free, t.started_at)
    began = outage_began(t, st.s.peer, lease_free)
    total = now - began
    promotion = now - lease_free
    after_lease = f" ({promotion:.2f} s after the lease went free)" if began < lease_free else ""
    reason = st.decide(
        "active",
        f"active (epoch {st.state.epoch}) after {t.kind} in {total:.2f} s{after_lease}",
    )
    automatic = t.kind in ("failover", "stepdown", "switchover")
    st.set(
        role=Role.ACTIVE,
        takeover=None,
        last_failover_at=now if automatic else st.state.last_failover_at,
    )
    silence = (("silence", lease_free - began),) if began < lease_free else ()
    phases = (
        *silence,
        ("wait", t.started_at - lease_free),
        *t.phases,
        ("promotion", promotion),
        ("total", total),
    )
    st.emit(
        RecordEvent,
        reason,
        kind=t.kind,
        epoch=st.state.epoch,
        from_node=t.from_node,
        to_node=st.s.node,
        phases=phases,
    )
    st.emit(RunHook, reason, role=Role.ACTIVE, epoch=st.state.epoch)
    c = st.cluster
    if c is not None and c.switchover is not None and c.switchover.target in (None, st.s.node):
        st.set(handled_switchover=c.switchover)
        st.emit(ClearSwitchover, reason)


def outage_began(t: Takeover, peer: str, lease_free: float) -> float:
    """Where a takeover's duration counts from, on this node's clock.

    A failover or a takeover after a step-down ends an outage that began at the old active's last
    sign of life this node saw (its member record changing while active, its database answering
    as a primary): the session timeout waited out after a crash is part of it. A switchover is
    asked for while the old active is alive and serving, so it counts from the takeover's start
    (the lease going free), as do bootstrap and re-adoption, where nobody was lost.
    """
    alive = t.peer_alive_at
    if t.kind in ("failover", "stepdown") and t.from_node == peer and alive is not None:
        return min(alive, lease_free)
    return lease_free

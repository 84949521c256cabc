"""Active: keep serving, or hand over (switchover, failing checks)."""

from __future__ import annotations

from failoverd.core import context, demoting, failsafe, policy, promoting, starting, sync
from failoverd.core.model import (
    AddVip,
    ClearSwitchover,
    DbRole,
    MemberStatus,
    RecordEvent,
    Role,
    StartPrimary,
)


def run(st: context.Ctx, done: context.Done | None) -> None:
    if done is not None and done.kind == "AddVip" and not done.result.ok:
        if not done.result.late:
            demoting.begin(st, "aborted", f"re-adding the VIP failed: {done.result.detail}")
            return
        # Emitted on a round-trip that aged before it ran (just after a reconnect): nothing was
        # done. The lease checks below decide on the fresh round-trip; a missing VIP is re-added.
        st.decide("vip_late", f"re-adding the VIP came too late ({done.result.detail})")
    if done is not None and done.kind in ("SetSyncStandby", "RecordSync"):
        sync.on_result(st, done)
    if done is not None and done.kind == "StartPrimary":
        if done.result.ok or done.result.overran:
            # Overran: up as the primary it was, only past the round-trip it was sent on.
            st.decide("database_restarted", f"own database started again ({done.result.detail})")
        else:
            st.set(retry_after=st.obs.now + st.s.fence_retry_after)
            st.decide(
                "restart_failed",
                f"starting its own database again failed ({done.result.detail}); trying again "
                f"in {st.s.fence_retry_after:g} s",
            )
    if done is not None and done.kind == "AcquireLease":
        r = done.result
        if r.ok and r.epoch is not None and r.epoch > st.state.epoch:
            st.set(epoch=r.epoch, highest_epoch=max(st.state.highest_epoch, r.epoch))
            promoting.begin(st, r.epoch)  # records the epoch; VIP and primary stay up
            return
        st.decide("lease_not_retaken", f"re-taking the lease failed: {r.detail}")
    if not st.zk_fresh():
        # Only a live pledge gets here (the stepper self-fences otherwise): nothing current to
        # decide on, so serve and wait for ZooKeeper.
        if st.obs.shutdown_requested:
            demoting.begin(st, "shutdown", "stopping: stepping down without ZooKeeper")
            return
        left = (failsafe.pledge_deadline(st) or st.obs.now) - st.obs.now
        st.decide(
            "serving_on_pledge",
            f"active (epoch {st.state.epoch}) without a ZooKeeper round-trip: serving on "
            f"{st.s.peer}'s pledge ({max(0.0, left):.1f} s left)",
        )
        return
    if st.lease_lost():
        if failsafe.retake_lease(st):
            return
        demoting.begin(st, "lease_lost", "demoted: lease lost")
        return
    if st.obs.shutdown_requested:
        demoting.begin(st, "shutdown", "stopping: stepping down cleanly")
        return
    c = st.cluster
    epoch = st.state.epoch
    if c is not None and c.switchover is not None and c.switchover != st.state.handled_switchover:
        sw = context.valid_switchover(st)
        if sw is None:
            reason = st.decide(
                "switchover_ignored",
                "switchover request ignored: its deadline passed or the epoch moved on",
            )
            st.set(handled_switchover=c.switchover)
            st.emit(ClearSwitchover, reason)
        elif sw.target == st.s.node:
            reason = st.decide("switchover_noop", f"switchover to {st.s.node}: already active")
            st.set(handled_switchover=c.switchover)
            st.emit(ClearSwitchover, reason)
        else:
            ok, why = policy.peer_vouched_eligible(st.s, st.obs)
            working = can_become_primary(st)
            if ok or (sw.force and working is None):
                demoting.begin(
                    st,
                    "switchover",
                    f"switchover to {st.s.peer} requested by "
                    f"{sw.requested_by}" + ("" if ok else f" (forced: {why})"),
                )
                return
            if sw.force and working is not None:
                why = working
            reason = st.decide("switchover_refused", f"switchover refused: {why}")
            st.set(handled_switchover=c.switchover)
            st.emit(ClearSwitchover, reason)
            st.emit(
                RecordEvent,
                reason,
                kind="switchover_refused",
                epoch=epoch,
                from_node=st.s.node,
                to_node=st.s.peer,
            )
            return
    local = st.obs.local
    # Only checks whose latest probe failed: one that passes again and waits for its rise count
    # (its database just started again by this node, say) would move the service for nothing.
    if local.complete and local.failing_now:
        failing = "; ".join(f"{c.name}: {c.reason}" for c in local.failing_now)
        ok, why = policy.peer_vouched_eligible(st.s, st.obs)
        if not ok:
            if _restart_own_database(st, f"{failing}; {why}"):
                return
            st.decide("degraded", f"own checks failing ({failing}) but {why}: staying active")
            return
        last = st.state.last_failover_at
        if last is not None and st.obs.now - last < st.s.min_failover_interval:
            st.decide(
                "degraded",
                f"own checks failing ({failing}) but the last failover was "
                f"{st.obs.now - last:.0f} s ago (min_failover_interval "
                f"{st.s.min_failover_interval:g} s): staying active",
            )
            return
        demoting.begin(st, "stepdown", f"own checks failing ({failing}); {why}: stepping down")
        return
    if st.obs.vip_present is False and st.state.pending is None:
        # Removed behind our back (a fence that raced our takeover, an operator): the lease is
        # ours and fresh, so the address belongs here.
        reason = st.decide(
            "vip_missing", f"active (epoch {epoch}) but the VIP is missing: adding it"
        )
        st.emit(AddVip, reason, epoch=epoch, not_after=context.not_after(st))
        return
    if sync.manage(st):
        return
    st.decide("active", f"active (epoch {epoch}){sync.describe(st)}")


def _restart_own_database(st: context.Ctx, why: str) -> bool:
    """Its PostgreSQL crashed or hangs and the peer cannot take over: start it again here
    (crash recovery keeps every write it had) rather than serve nothing for ever."""
    if starting.kill_hung_database(st, "active"):
        return True
    if not st.managed_db() or st.obs.database.role is not DbRole.STOPPED:
        return False
    if st.state.pending is not None:
        return True
    retry = st.state.retry_after
    if retry is not None and st.obs.now < retry:
        return False
    reason = st.decide(
        "restarting_database",
        f"own database stopped ({why}): starting it again, as the primary it was",
    )
    st.emit(StartPrimary, reason, epoch=st.state.epoch, not_after=context.not_after(st))
    return True


def can_become_primary(st: context.Ctx) -> str | None:
    """Why the peer could not become a working primary even if forced; None when it could.
    Forcing overrides the eligibility policy (lag, nofailover), never this."""
    peer = st.cluster.member(st.s.peer) if st.cluster else None
    if not isinstance(peer, MemberStatus) or peer.age > st.s.peer_stale_after:
        return f"{st.s.peer} has no fresh member record: its daemon is not running"
    if peer.role in (Role.FENCED.value, Role.STARTING.value):
        return f"{st.s.peer} is {peer.role}: {peer.reason}"
    if st.managed_db() and peer.db_role not in (DbRole.REPLICA.value,):
        return f"{st.s.peer}'s database is {peer.db_role}, not a running replica"
    return None

"""Maintenance mode: observe and publish only, but for a self-fence, which pause never suspends,
and the record a serving node leaves when its daemon stops while paused."""

from __future__ import annotations

from dataclasses import replace

from failoverd.core import context, fenced
from failoverd.core.model import (
    FenceOutcome,
    ReleaseLease,
    Role,
)


def leave(st: context.Ctx, done: context.Done | None) -> None:
    """Stop while paused. A node that serves keeps serving (that is what pause promises), but
    not silently: ``last_leader`` records that it was left serving without its daemon, and the
    peer then takes over only after a fence that reached it. Unable to record that, it fences
    itself rather than leave a primary nobody watches."""
    serving = (
        st.state.paused_serving
        or context.serving(st)
        or st.state.paused_from in context.SERVING_ROLES
    )
    c = st.cluster
    if done is not None and done.kind == "ReleaseLease":
        if done.result.ok:
            st.set(left_serving_recorded=True)
        else:
            st.decide(
                "self_fenced",
                f"stopping while paused and serving, but recording that failed "
                f"({done.result.detail}): fencing this node rather than leave it unwatched",
            )
            fenced.self_fence(st)
            return
    if serving and not st.state.left_serving_recorded:
        if st.state.pending is not None:
            return
        lease = None if c is None else c.lease
        holder = None if lease is None or lease.mine else lease.node
        if c is None or holder is not None:
            why = "no ZooKeeper view" if c is None else f"{holder} holds the lease"
            st.decide(
                "self_fenced",
                f"stopping while paused and serving, but {why}: fencing this node rather "
                "than leave it unwatched",
            )
            fenced.self_fence(st)
            return
        epoch = lease.epoch if lease is not None else c.epoch
        reason = st.decide(
            "leaving_serving",
            "stopping while paused: recording that this node goes on serving without its "
            "daemon, so the peer fences it before any takeover",
        )
        st.emit(ReleaseLease, reason, epoch=epoch, final_lsn=None, clean=False, left_serving=True)
        return
    st.set(exit=True)
    st.decide("shutdown_paused", "stopping while paused: VIP and database left as they are")


def note_result(st: context.Ctx, done: context.Done | None) -> None:
    """Remember how an interrupted takeover's fence, or our own self-fence, ended; act on it
    only after the pause."""
    if done is not None and done.kind == "StopDatabase" and st.state.paused_from is Role.FENCED:
        fenced.record_fence_stop(st, done.result)
        return
    t = st.state.takeover
    if done is None or done.kind != "FencePeer" or st.state.paused_from is not Role.PROMOTING:
        return
    if t is None:
        return
    fence = done.result.fence
    if fence in (FenceOutcome.FENCED, FenceOutcome.UNREACHABLE):
        st.set(takeover=replace(t, fenced=True))
        if fence is FenceOutcome.FENCED:
            st.set(peer_fenced_at=st.obs.now, peer_fence_sent_at=done.sent_at)
    else:
        # As on fence_failed: no promotion under this epoch; the lease goes back after the pause.
        st.set(
            paused_from=Role.PASSIVE, takeover=None, retry_after=st.obs.now + st.s.fence_retry_after
        )

"""Passive: follow the active, and take a free lease only when it is safe."""

from __future__ import annotations

from failoverd.core import context, demoting, failsafe, policy, promoting, starting
from failoverd.core.model import (
    AcquireLease,
    ClearRejoinRequest,
    ClusterView,
    DbRole,
    FenceOutcome,
    FencePeer,
    MemberStatus,
    PeerDb,
    ReleaseLease,
    Role,
    StopDatabase,
    SwitchoverRequest,
    Takeover,
    ZkState,
)


def run(st: context.Ctx, done: context.Done | None) -> None:
    p = st.state.pending
    if done is not None:
        on_result(st, done)
        if st.state.role is not Role.PASSIVE:
            return
    elif p is not None:
        return  # wait for the in-flight action
    if st.obs.shutdown_requested:
        st.set(exit=True)
        st.decide("shutdown", "stopping while passive: nothing to hand over")
        return
    c = st.cluster
    if c is None:
        st.decide("zk_unavailable", "passive: no ZooKeeper view")
        return
    lease = c.lease
    if lease is not None and lease.mine and lease.epoch == c.epoch and lease.epoch > st.state.epoch:
        # An acquisition whose result we never saw: carry on with it.
        st.set(epoch=lease.epoch)
        promoting.begin(st, lease.epoch)
        return
    if lease is not None and lease.mine and lease.epoch == st.state.epoch:
        # A lease we gave back (after a failed fence) whose release did not go through.
        if context.serving(st):
            # Never released while serving (the next holder may add the VIP at once).
            demoting.begin(
                st,
                "aborted",
                f"holding the lease (epoch {lease.epoch}) as passive but serving: "
                "stepping down before giving it back",
            )
            return
        reason = st.decide(
            "releasing", f"still holding the lease (epoch {lease.epoch}): giving it back again"
        )
        st.emit(ReleaseLease, reason, epoch=lease.epoch, final_lsn=None, clean=False)
        return
    db = st.obs.database
    if db.role in (DbRole.PRIMARY, DbRole.STOPPED, DbRole.EMPTY):
        starting.run(st)  # something changed under us: re-derive the role
        return
    if lease is not None and lease.node == st.s.peer and replica_needs_rejoin(st):
        return
    if lease is not None:
        ok, why = policy.eligibility(st.s, st.state, st.obs)
        st.decide(
            "passive",
            f"{lease.node} is active (epoch {lease.epoch}); "
            + ("eligible" if ok else f"not eligible: {why}"),
        )
        return
    try_takeover(st, readopt=False)


def on_result(st: context.Ctx, done: context.Done) -> None:
    result = done.result
    if done.kind == "AcquireLease":
        if result.ok and result.epoch is not None and result.epoch >= st.state.highest_epoch:
            st.set(epoch=result.epoch, highest_epoch=max(st.state.highest_epoch, result.epoch))
            promoting.begin(st, result.epoch)
        else:
            st.decide("lease_not_acquired", f"lease not acquired: {result.detail}")
    elif done.kind == "FencePeer":
        level = context.next_fence_level(st, done)
        how = done.method or "ssh"
        if result.fence is FenceOutcome.FENCED:
            st.set(peer_fenced_at=st.obs.now, peer_fence_sent_at=done.sent_at)
            reason = st.decide(
                "peer_fenced",
                f"{st.s.peer} fenced ({how}: {result.detail}) before taking the lease",
            )
            context.fence_event(st, done, st.state.highest_epoch, reason)
        elif level is not None:
            reason = st.decide(
                "fencing",
                f"fencing {st.s.peer} over SSH reached it but failed ({result.detail}): "
                f"trying the {level} level",
            )
            context.fence_event(st, done, st.state.highest_epoch, reason)
            epoch = st.cluster.epoch if st.cluster is not None else st.state.highest_epoch
            st.emit(FencePeer, reason, peer=st.s.peer, epoch=epoch, method=level)
        else:
            outcome = result.fence.value if result.fence else "failed"
            if context.peer_left_serving(st):
                reason = st.decide(
                    "peer_left_serving",
                    f"{st.s.peer} was left serving when its daemon stopped while paused, and "
                    f"the fence was {outcome} ({result.detail}): not taking the lease. Start "
                    f"failoverd on {st.s.peer}, or make sure it is down and run "
                    f"'failoverctl promote {st.s.node} --force'; retrying in "
                    f"{st.s.fence_retry_after:g} s",
                )
            elif result.fence is FenceOutcome.FAILED:
                reason = st.decide(
                    "fencing_exhausted",
                    f"{st.s.peer}'s database answers as primary and every fencing level "
                    f"reached it but failed (last, {how}: {result.detail}): not taking the "
                    f"lease, retrying in {st.s.fence_retry_after:g} s",
                )
            else:
                reason = st.decide(
                    "fence_blocked",
                    f"{st.s.peer}'s database answers as primary and the fence was {outcome} "
                    f"({result.detail}): not taking the lease, "
                    f"retrying in {st.s.fence_retry_after:g} s",
                )
            st.set(retry_after=st.obs.now + st.s.fence_retry_after, retry_reason=reason)
            context.fence_event(st, done, st.state.highest_epoch, reason)
    elif done.kind == "StartReplica":
        if result.ok:
            st.decide("replica_started", "database started as a replica")
        else:
            st.set(role=Role.FENCED)
            st.decide("must_rejoin", f"could not start as a replica: {result.detail}; must rejoin")


def replica_needs_rejoin(st: context.Ctx) -> bool:
    """A replica that an operator asked to rejoin, or that does not stream from an active whose
    database answers as a primary (silently diverged, or the WAL it needs is gone), is stopped
    and brought back by the rejoin (``core/rejoin.py``), each time a step harder."""
    c = st.cluster
    db = st.obs.database
    if c is None or not st.managed_db() or db.role is not DbRole.REPLICA:
        return False
    request = c.rejoin_request(st.s.node)
    if request is not None and not request.reclone and db.streaming:
        reason = st.decide(
            "rejoin_requested",
            f"asked to rejoin by {request.requested_by}, but it already streams from "
            f"{st.s.peer}: nothing to do",
        )
        st.emit(ClearRejoinRequest, reason, node=st.s.node)
        return False
    if request is not None:
        _stop_to_rejoin(
            st,
            "rejoin_requested",
            f"{request.requested_by} asked it to rejoin"
            + (" by a clone" if request.reclone else "")
            + ": stopping its database",
        )
        return True
    if db.streaming or st.obs.peer_database.state is not PeerDb.PRIMARY:
        if db.streaming and (st.state.stalled_since is not None or st.state.stalls):
            st.set(stalled_since=None, stalls=0)
        elif st.state.stalled_since is not None:
            st.set(stalled_since=None)  # the active is not answering: not this replica's fault
        return False
    since = st.state.stalled_since if st.state.stalled_since is not None else st.obs.now
    st.set(stalled_since=since)
    stalled = st.obs.now - since
    if stalled <= st.s.max_replication_silence:
        return False
    why = (
        f"not streaming from {st.s.peer} for {stalled:.0f} s although its database answers as "
        "a primary (diverged, or the WAL it needs is gone)"
    )
    if not st.s.rejoin_auto:
        st.decide("replica_stalled", f"{why}; rejoin = manual: run 'failoverctl rejoin "
                  f"{st.s.node}'")  # fmt: skip
        return True
    st.set(stalls=st.state.stalls + 1)
    _stop_to_rejoin(st, "replica_stalled", f"{why}: stopping it to rejoin")
    return True


def _stop_to_rejoin(st: context.Ctx, code: str, text: str) -> None:
    reason = st.decide(code, text)
    st.set(role=Role.FENCED, stalled_since=None, rejoin=None, rejoin_retry_at=None)
    st.emit(StopDatabase, reason, mode="fast")


def peer_blocks_takeover(st: context.Ctx) -> bool:
    """True while the peer's database answers as a primary and no fence reached it since."""
    probe = st.obs.peer_database
    if probe.state is not PeerDb.PRIMARY:
        return False
    fenced = st.state.peer_fenced_at
    return fenced is None or probe.probed_at > fenced


def peer_primary_may_take_lease(st: context.Ctx) -> str | None:
    """Why not to fence a peer whose database is primary while the lease is free: its daemon is
    alive and about to take the lease itself (start-up), or the cluster was never led, so that
    primary is the one the cluster starts from. None when it must be fenced (its daemon is gone:
    frozen, crashed, or stopped while paused)."""
    c = st.cluster
    assert c is not None
    if c.epoch == 0:
        return (
            f"lease never held and {st.s.peer}'s database is primary: waiting for "
            f"{st.s.peer} to take it"
        )
    peer = c.member(st.s.peer)
    if (
        isinstance(peer, MemberStatus)
        and peer.age <= st.s.peer_stale_after
        and peer.role
        in (Role.STARTING.value, Role.PASSIVE.value, Role.PROMOTING.value, Role.ACTIVE.value)
    ):
        return (
            f"lease free and {st.s.peer}'s database is primary, but its daemon is alive "
            f"({peer.role}): waiting for it to take the lease"
        )
    return None


def try_takeover(st: context.Ctx, readopt: bool) -> None:
    c = st.cluster
    assert c is not None
    if st.state.pending is not None:
        return
    if c.epoch < 0:
        st.decide("epoch_unknown", "lease free but the epoch record is unreadable: taking nothing")
        return
    if not st.zk_fresh() or st.obs.zk.state is not ZkState.CONNECTED:
        # A suspended connection's view may be stale, and the acquisition would fail anyway:
        # neither take the lease nor fence the peer on it.
        st.decide(
            "zk_unavailable",
            "lease looks free, but the ZooKeeper view is not current: not acting on it",
        )
        return
    if c.epoch < st.state.highest_epoch:
        st.decide(
            "epoch_regressed",
            f"ZooKeeper's epoch {c.epoch} is below {st.state.highest_epoch} "
            "seen before: state regressed, taking nothing",
        )
        return
    if st.state.retry_after is not None and st.obs.now < st.state.retry_after:
        last_try = st.state.retry_reason
        # A wait that only a person can end keeps its code, so status says so.
        operator = last_try is not None and last_try.code in context.OPERATOR_NEEDED
        st.decide(
            last_try.code if operator and last_try is not None else "retry_wait",
            f"lease free; retrying takeover in {st.state.retry_after - st.obs.now:.1f} s"
            + ("" if last_try is None else f" (last attempt: {last_try.text})"),
        )
        return
    if failsafe.stop_granting_before_taking(st):
        return
    sw = context.valid_switchover(st)
    if sw is not None and sw.target not in (None, st.s.node) and not _switchover_stalled(st, sw):
        return
    why = "re-adopting what it serves" if readopt else ""
    if not readopt:
        ok, why = policy.eligibility(st.s, st.state, st.obs)
        forced = (
            sw is not None
            and sw.force
            and sw.target in (None, st.s.node)
            and st.obs.database.role in (DbRole.REPLICA, DbRole.UNMANAGED)
        )
        if not ok and not forced:
            st.decide("not_eligible", f"lease free but not eligible: {why}")
            return
        refusal = policy.sync_refusal(st.s, st.obs)
        if refusal is not None and not forced:
            st.decide("not_sync_standby", f"lease free but not taking it: {refusal}")
            return
        last = c.last_leader
        db = st.obs.database
        if (
            last is not None
            and last.epoch == c.epoch
            and last.clean
            and last.final_lsn is not None
            and st.managed_db()
            and not policy.replayed_up_to(db, last.final_lsn, last.timeline)
        ):
            at = "unknown" if db.replayed_lsn is None else policy.format_lsn(db.replayed_lsn)
            on = "" if db.timeline is None else f" on timeline {db.timeline}"
            want = "" if last.timeline is None else f" on timeline {last.timeline}"
            st.decide(
                "waiting_for_replay",
                f"{last.node} stepped down at LSN {policy.format_lsn(last.final_lsn)}{want}; "
                f"replayed {at}{on}: waiting before taking over",
            )
            return
    if st.managed_db() and st.obs.peer_database.state is PeerDb.UNKNOWN:
        st.decide(
            "waiting_for_probe", "lease free: waiting for a direct probe of the peer's database"
        )
        return
    if (
        not readopt
        and context.peer_left_serving(st)
        and not context.fenced_since_peer_left_serving(st)
        and not (sw is not None and sw.force and sw.target in (None, st.s.node))
    ):
        # Its daemon stopped while paused and left it serving: nothing on that node will stop
        # it, so "unreachable" proves nothing. Only a fence that reached it does.
        if not _view_settled(st) or _waiting_for_readopt(st):
            return
        reason = st.decide(
            "fence_before_lease",
            f"lease free but {st.s.peer} was left serving when its daemon stopped while "
            "paused: fencing it before taking the lease",
        )
        st.emit(FencePeer, reason, peer=st.s.peer, epoch=c.epoch)
        return
    if peer_blocks_takeover(st):
        changed = c.lease_changed_at
        if changed is not None and st.obs.peer_database.probed_at < changed:
            # Taken while the lease was still held: the peer may have stopped its database
            # since (a clean step-down does). Neither take the lease nor fence on it.
            st.decide(
                "waiting_for_probe",
                f"lease free: waiting for a probe of {st.s.peer}'s database newer than the "
                "lease's release (the last one said primary)",
            )
            return
        waiting = peer_primary_may_take_lease(st)
        if waiting is not None:
            st.decide("waiting_for_peer_primary", waiting)
            return
        if not _view_settled(st):
            return
        reason = st.decide(
            "fence_before_lease",
            f"lease free but {st.s.peer}'s database answers as "
            "primary: fencing it before taking the lease",
        )
        st.emit(FencePeer, reason, peer=st.s.peer, epoch=c.epoch)
        return
    # Why this node may lead goes with it: the history and the log say what a takeover rested on.
    reason = st.decide(
        "acquiring",
        f"lease free: acquiring it (epoch {c.epoch + 1}): {why}"
        if why
        else f"lease free: acquiring it (epoch {c.epoch + 1})",
    )
    st.set(
        takeover=Takeover(
            kind="readopt" if readopt and c.epoch > 0 else takeover_kind(st),
            from_node=previous_holder(st),
            started_at=st.obs.now,
            last_mark=st.obs.now,
            lease_free_since=st.state.lease_free_since,
            peer_alive_at=context.peer_alive_at(st),
            expected_epoch=c.epoch,
            fence_needed=needs_fence(c, c.epoch + 1) and not led_last_epoch(st),
            previous_mine=led_last_epoch(st),
        )
    )
    st.emit(AcquireLease, reason, expected_epoch=c.epoch)


def _switchover_stalled(st: context.Ctx, sw: SwitchoverRequest) -> bool:
    """Has the switchover this node stepped down for stalled? The target takes the lease within
    about a second when it can (it replays to the final LSN it already streamed, then promotes);
    one that has not within two session timeouts cannot (cut off, frozen, lagging past what it
    can fetch). Until the request's deadline the site would have no primary: this node, which
    holds everything up to the final LSN, leads again instead. Safe: whoever takes the lease
    first leads, and the epoch then moves on, which voids the request."""
    c = st.cluster
    last = None if c is None else c.last_leader
    free_since = st.state.lease_free_since
    bound = st.s.handover_grace
    handed_over = (
        c is not None
        and last is not None
        and last.node == st.s.node
        and last.clean
        and last.epoch == c.epoch
    )
    if not handed_over or free_since is None or st.obs.now - free_since < bound:
        st.decide("switchover_elsewhere", f"switchover to {sw.target} pending")
        return False
    st.decide(
        "switchover_stalled",
        f"switchover to {sw.target} stalled: the lease has been free "
        f"{st.obs.now - free_since:.1f} s since {st.s.node} stepped down and {sw.target} has "
        "not taken it: leading again",
    )
    return True


def _waiting_for_readopt(st: context.Ctx) -> bool:
    """The peer left serving is back under a daemon (its member record, bound to its session,
    is there): it re-adopts the VIP and primary it kept and takes the lease again, as after a
    `systemctl restart` while paused. Fencing it now would make that restart a switchover.
    Waiting is safe (the lease stays free, nobody promotes); it is bounded, and a daemon that
    has not taken the lease within about two session timeouts is fenced as before."""
    c = st.cluster
    peer = None if c is None else c.member(st.s.peer)
    if not isinstance(peer, MemberStatus) or peer.role == Role.FENCED.value:
        return False
    since = st.state.peer_readopt_wait_from
    if since is None:
        since = st.obs.now
        st.set(peer_readopt_wait_from=since)
    grace = st.s.handover_grace
    if st.obs.now - since >= grace:
        return False
    st.decide(
        "waiting_for_readopt",
        f"lease free; {st.s.peer} was left serving when its daemon stopped while paused, and its "
        f"daemon is back ({peer.role}): waiting up to {grace:g} s for it to take the lease "
        "again before fencing it",
    )
    return True


def _view_settled(st: context.Ctx) -> bool:
    """A free lease seen just after a (re)connect may be news from before the cut: the watches
    deliver what changed meanwhile a moment later. Fencing on it could stop a healthy active
    (taking the lease on it cannot go wrong: the acquisition checks the epoch)."""
    young = st.obs.now - st.obs.zk.changed_at
    if young >= st.s.view_settle_after:
        return True
    st.decide(
        "zk_settling",
        f"lease looks free, but ZooKeeper reconnected {young:.1f} s ago: waiting "
        f"{st.s.view_settle_after:g} s for the view to settle before fencing {st.s.peer}",
    )
    return False


def led_last_epoch(st: context.Ctx) -> bool:
    """Did we serve under the current epoch's lease? Then we fenced whoever led before us when
    we took it, and the peer was never promoted under it: re-adopting needs no fence. Holding
    it is not enough (a takeover whose fence failed gives its lease back without serving); only
    our database's recorded epoch, or a position record we wrote as active, shows we served."""
    c = st.cluster
    if c is None or c.epoch == 0:
        return False
    db = st.obs.database
    pos = c.position
    return (db.role is DbRole.PRIMARY and db.recorded_epoch == c.epoch) or (
        pos is not None and pos.node == st.s.node and pos.epoch == c.epoch
    )


def previous_holder(st: context.Ctx) -> str | None:
    c = st.cluster
    if c is None or c.epoch == 0:
        return None
    if c.last_leader is not None and c.last_leader.epoch == c.epoch:
        return c.last_leader.node
    return st.s.peer


def takeover_kind(st: context.Ctx) -> str:
    c = st.cluster
    assert c is not None
    if c.epoch == 0:
        return "bootstrap"
    sw = context.valid_switchover(st)
    if sw is not None and sw.target in (None, st.s.node):
        return "switchover"
    if c.last_leader is not None and c.last_leader.epoch == c.epoch and c.last_leader.clean:
        return "stepdown"
    return "failover"


def needs_fence(c: ClusterView, epoch: int) -> bool:
    """The lease we now hold followed one that expired (no clean last_leader for its epoch)."""
    previous = epoch - 1
    if previous <= 0:
        return False
    last = c.last_leader
    return not (last is not None and last.epoch == previous and last.clean)

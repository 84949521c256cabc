"""The single entry, ``step()``: bookkeeping that outlives an observation, the self-fence rule
that comes before any role, then the role's own step."""

from __future__ import annotations

from dataclasses import replace

from failoverd.core import (
    active,
    context,
    demoting,
    failsafe,
    fenced,
    passive,
    paused,
    promoting,
    publish,
    starting,
)
from failoverd.core.model import (
    DatabaseStatus,
    DbRole,
    MemberStatus,
    Observation,
    PeerDb,
    Reason,
    RemoveVip,
    Role,
    Settings,
    State,
    Step,
)


def step(settings: Settings, state: State, obs: Observation) -> Step:
    """Decide what to do about one observation. Pure: same inputs, same outputs."""
    st = context.Ctx(settings, state, obs)
    if st.state.started_at is None:
        st.set(started_at=obs.now)
    track_cluster(st)
    result = st.pending_result()
    if result is not None and result.kind in context.DATABASE_ACTIONS:
        st.set(db_changed_at=obs.now)
    st.obs = without_stale_database(st.obs, st.state.db_changed_at)
    dispatch(st, result)
    remove_stray_vip(st)
    if not st.state.exit:
        failsafe.maybe_ask(st)
    if st.state.exit and st.state.pending is not None:
        # The runner cancels queued actions when the daemon exits: a self-fence's StopDatabase
        # must not be the one dropped. Stay until it answers (bounded by action_timeout).
        st.set(exit=False)
        st.decide("exit_waiting", f"stopping once {st.state.pending.kind} has finished")
    if not st.state.exit:
        publish.maybe_publish(st)
    if st.state.role is Role.PAUSED:
        st.set(paused_serving=context.serving(st) or st.state.paused_from in context.SERVING_ROLES)
    return Step(st.state, tuple(st.actions), st.reason, tuple(st.decisions))


def must_prove_session(st: context.Ctx) -> bool:
    """Does this node serve, or may it, so that it must stop unless its session is provably
    alive? Pause changes nothing here: a paused node that serves without ZooKeeper could be
    serving beside a peer that took over once the pause ended."""
    role = st.state.role
    if role in context.SERVING_ROLES:
        return True
    pending = st.state.pending
    if pending is not None and pending.kind in ("RemoveVip", "StopDatabase"):
        return False  # a fence already under way; the role's own logic goes on with it
    if role is Role.PAUSED:
        return st.state.paused_from in context.SERVING_ROLES or context.serving(st)
    if role is Role.FENCED and st.state.resume_epoch is not None:
        return context.serving(st)  # serving again on a pledge (fenced.resume), not yet active
    if role is Role.STARTING:
        # A new process has no round-trip yet: it gets self_fence_after to make one, unless its
        # previous life ended unfenced. That life's last round-trip may be long past, and the
        # peer may lead, on a fence that does not reach here, before any grace would end.
        if st.obs.started_unfenced:
            return context.serving(st)
        started = st.state.started_at if st.state.started_at is not None else st.obs.now
        return context.serving(st) and st.obs.now - started >= st.s.self_fence_after
    return False


def supervision_role(state: State) -> str:
    """The role ExecStopPost judges an abnormal end by (``failoverd/stoppost.py``): a paused
    node that serves is ``paused-serving``, since pause does not suspend self-fencing."""
    if state.role is Role.PAUSED and state.paused_serving:
        return "paused-serving"
    return state.role.value


def remove_stray_vip(st: context.Ctx) -> None:
    """A VIP seen on a node that must not have it (a removal that failed, or a node restarted
    while the peer holds the lease) is removed, whatever put it there."""
    if st.obs.vip_present is not True or st.state.pending is not None:
        return
    role = st.state.role
    c = st.cluster
    held_elsewhere = c is not None and c.lease is not None and not c.lease.mine
    if role in (Role.PASSIVE, Role.FENCED) or (role is Role.STARTING and held_elsewhere):
        reason = Reason("stray_vip", f"the VIP is configured here while {role.value}: removing it")
        st.emit(RemoveVip, reason)


def without_stale_database(obs: Observation, changed_at: float | None) -> Observation:
    """A probe that started before our last change to the database says nothing about it now:
    acting on it would, say, fence a database we had just restarted as a replica."""
    observed = obs.database.observed_at
    if changed_at is None or observed is None or observed > changed_at:
        return obs
    return replace(obs, database=DatabaseStatus(role=DbRole.UNKNOWN, observed_at=observed))


def track_cluster(st: context.Ctx) -> None:
    """Remember what must outlive the observation: epochs, the active's LSN, when the lease went."""
    c = st.cluster
    if c is None:
        return
    new_epoch = c.epoch > st.state.highest_epoch
    if new_epoch:
        st.set(highest_epoch=c.epoch)
    peer = c.member(st.s.peer)
    if isinstance(peer, MemberStatus) and peer.role == Role.ACTIVE:
        # Its heartbeat changes the record every publish_every: when we last saw it change is
        # its last sign of life (replication silence is counted up to it).
        seen = st.obs.now - peer.age
        if st.state.active_alive_at is None or seen > st.state.active_alive_at:
            st.set(active_alive_at=seen)
        if peer.lsn is not None:
            st.set(active_lsn=peer.lsn)
    if (
        c.last_leader is not None
        and c.last_leader.final_lsn is not None
        and (c.last_leader.node == st.s.peer and c.last_leader.epoch == c.epoch)
    ):
        st.set(active_lsn=max(st.state.active_lsn or 0, c.last_leader.final_lsn))
    probe = st.obs.peer_database
    if probe.state is PeerDb.PRIMARY and (
        st.state.peer_primary_seen_at is None or probe.probed_at > st.state.peer_primary_seen_at
    ):
        st.set(peer_primary_seen_at=probe.probed_at)
    if c.lease is None:
        if st.state.lease_free_since is None or new_epoch:
            st.set(lease_free_since=st.obs.now)
    elif st.state.lease_free_since is not None:
        st.set(lease_free_since=None)
    if context.peer_left_serving(st):
        if st.state.peer_left_serving_seen_at is None:
            st.set(peer_left_serving_seen_at=st.obs.now)
    elif st.state.peer_left_serving_seen_at is not None:
        st.set(peer_left_serving_seen_at=None, peer_readopt_wait_from=None)


def dispatch(st: context.Ctx, result: context.Done | None) -> None:
    role = st.state.role
    c = st.cluster

    # Self-fence comes before everything else, pause included: a node that may serve and
    # cannot prove its session is alive (nor hold its peer's pledge) must be down before that
    # session can expire (or the pledge lapse).
    if not failsafe.may_serve(st) and must_prove_session(st):
        fenced.self_fence(st)
        return
    if (
        st.s.failsafe
        and role is Role.PAUSED
        and must_prove_session(st)
        and st.lease_lost()
        and not failsafe.pledged(st)
        and not context.left_serving(st, st.s.node)
    ):
        # A round-trip proves a session, not the lease: one that expired while a pledge kept
        # this paused node serving left it serving on nothing once the pledge lapsed. (Left
        # serving by a stop while paused is recorded: the peer fences it before taking over.)
        st.decide(
            "self_fenced",
            "self-fenced: paused and serving, but the lease is no longer ours and no pledge "
            f"from {st.s.peer} holds (pause does not suspend self-fencing)",
        )
        fenced.self_fence(st)
        return
    if result is not None and result.kind == "SetGranting":
        failsafe.on_result(st, result)
        result = None
    if (
        role in (Role.PASSIVE, Role.FENCED)
        and result is None
        and not (c is not None and c.paused)
        and failsafe.manage_granting(st)
    ):
        return

    # Paused: only observe and publish. A paused daemon that is stopped leaves everything as is,
    # and says so durably first, so the peer never takes over from it without fencing it.
    if role is Role.PAUSED:
        paused.note_result(st, result)
        if st.obs.shutdown_requested:
            paused.leave(st, result)
            return
        if c is not None and not c.paused:
            back = st.state.paused_from
            st.set(role=Role.STARTING, paused_from=None)
            st.decide("resumed", "maintenance mode ended: re-evaluating from scratch")
            if c.lease is not None and c.lease.mine and back is Role.PROMOTING:
                st.set(role=back)  # an unfinished takeover: its fence must not be skipped
                promoting.run(st, None)
            elif c.lease is not None and c.lease.mine and back in (Role.PASSIVE, Role.FENCED):
                st.set(role=back)  # a lease being given back: go on giving it back
                (passive.run if back is Role.PASSIVE else fenced.run)(st, None)
            else:
                starting.run(st)
        return

    if c is not None and c.paused:
        st.set(role=Role.PAUSED, paused_from=role, demotion=None)
        paused.note_result(st, result)
        st.decide("paused", "cluster paused: observing only, changing nothing")
        return

    if role is Role.STARTING:
        if st.obs.shutdown_requested:
            st.set(exit=True)
            st.decide("shutdown", "stopping before taking any role")
            return
        starting.run(st)
    elif role is Role.PASSIVE:
        passive.run(st, result)
    elif role is Role.PROMOTING:
        promoting.run(st, result)
    elif role is Role.ACTIVE:
        active.run(st, result)
    elif role is Role.DEMOTING:
        demoting.run(st, result)
    elif role is Role.FENCED:
        fenced.run(st, result)

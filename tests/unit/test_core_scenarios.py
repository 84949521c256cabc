"""Failover stories, told one observation at a time from node n1's point of view.

Each line is ``node.see(<what n1 observes>).expect(<role>, <reason code>, <actions...>)``; the
observation builder says only what differs from "n2 is active under epoch 1, n1 is a healthy
streaming replica, ZooKeeper is fine". Times are boottime seconds; ``answer(node.state, ...)`` is
the result of the action n1 has in flight.
"""

from __future__ import annotations

import dataclasses

import pytest
from corekit import (
    MB,
    NODE,
    PEER,
    SESSION_TIMEOUT,
    SETTINGS,
    Node,
    Obs,
    state_of,
)

from failoverd.core import (
    AcquireLease,
    AddVip,
    DatabaseStatus,
    DbRole,
    FenceOutcome,
    FencePeer,
    PeerDb,
    Promote,
    RecordEvent,
    RejoinFacts,
    ReleaseLease,
    RemoveVip,
    Role,
    StartPrimary,
    StartReplica,
    StopDatabase,
    ZkState,
)

SFA = SETTINGS.self_fence_after


def rejoin_facts(
    *,
    clean: bool = True,
    local_lsn: int = 9000,
    checkpoint_end: int | None = None,
    fork: int = 9000,
) -> RejoinFacts:
    """n1, a stopped ex-primary on timeline 1; n2 left timeline 1 at ``fork`` for timeline 2."""
    return RejoinFacts(
        was_primary=True,
        clean=clean,
        local_timeline=1,
        local_lsn=local_lsn,
        local_checkpoint_end=checkpoint_end,
        primary_timeline=2,
        primary_history=((1, fork),),
    )


def phases(event: RecordEvent) -> dict[str, float]:
    return {name: round(seconds, 3) for name, seconds in event.phases}


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


def test_bootstrap_of_a_fresh_cluster() -> None:
    """The lab started PostgreSQL on n1; failoverd starts for the first time."""

    def fresh(t: float) -> Obs:
        return Obs(t).lease_free(0).no_peer_member().db_primary(lsn=1000).peer_db(PeerDb.REPLICA)

    n1 = Node()
    n1.see(fresh(0.0).no_cluster()).expect(Role.STARTING, "waiting_for_observation")
    n1.see(fresh(0.2).db_unknown()).expect(Role.STARTING, "waiting_for_observation")
    seen = n1.see(fresh(0.5)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    assert seen.one(AcquireLease).expected_epoch == 0
    # Epoch 1 follows nothing: no fence. The database is already the primary: Promote only
    # records the epoch in it, so that a later start can compare it with the cluster's.
    got = fresh(0.6).lease_mine(1).answer(n1.state, epoch=1)
    seen = n1.see(got).expect(Role.PROMOTING, "promoting", "Promote")
    assert "recording the epoch" in seen.text and seen.one(Promote).epoch == 1
    recorded = fresh(0.65).lease_mine(1).db_primary(lsn=1000, recorded_epoch=1)
    n1.see(recorded.answer(n1.state)).expect(Role.PROMOTING, "adding_vip", "AddVip")
    seen = n1.see(fresh(0.7).lease_mine(1).answer(n1.state))
    seen.expect(Role.ACTIVE, "active", "RecordEvent", "RunHook")
    event = seen.one(RecordEvent)
    assert (event.kind, event.epoch, event.from_node, event.to_node) == ("bootstrap", 1, None, NODE)
    # A bootstrap is not an automatic failover: it does not start min_failover_interval.
    assert seen.state.last_failover_at is None


# --------------------------------------------------------------------------------------------
# The active crashes: its lease expires without a last_leader record
# --------------------------------------------------------------------------------------------


def crashed(t: float) -> Obs:
    """n2 crashed: its lease and member record expired, nothing answers on its address."""
    return (
        Obs(t)
        .lease_free(3)
        .no_peer_member()
        .peer_db(PeerDb.UNREACHABLE)
        .db_replica(5000, streaming=False, received_age=t - 99.0)
    )


def takeover(t: float) -> Obs:
    return crashed(t).lease_mine(4)


def passive_at_epoch_3() -> Node:
    n1 = Node()
    n1.see(Obs(99.0).lease_peer(3).peer_member(Role.ACTIVE, lsn=5000)).expect(
        Role.PASSIVE, "passive"
    )
    return n1


def test_active_crashes_and_the_passive_takes_over_after_a_fence_that_reaches_nobody() -> None:
    n1 = passive_at_epoch_3()
    n1.see(crashed(109.5).peer_db(PeerDb.UNKNOWN)).expect(Role.PASSIVE, "waiting_for_probe")
    seen = n1.see(crashed(110.0)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    assert seen.one(AcquireLease).expected_epoch == 3
    seen = n1.see(takeover(110.1).answer(n1.state, epoch=4))
    seen.expect(Role.PROMOTING, "fencing", "FencePeer")
    assert (seen.one(FencePeer).peer, seen.one(FencePeer).epoch) == (PEER, 4)
    fence = takeover(110.4).answer(n1.state, detail="ssh: no route", fence=FenceOutcome.UNREACHABLE)
    seen = n1.see(fence).expect(Role.PROMOTING, "promoting", "RecordEvent", "Promote")
    assert seen.one(Promote).not_after == pytest.approx(110.4 - 0.2 + SFA)
    seen = n1.see(takeover(111.0).db_primary(recorded_epoch=4).answer(n1.state))
    seen.expect(Role.PROMOTING, "adding_vip", "AddVip")
    seen = n1.see(takeover(111.1).db_primary(recorded_epoch=4).answer(n1.state))
    seen.expect(Role.ACTIVE, "active", "RecordEvent", "RunHook")
    event = seen.one(RecordEvent)
    assert (event.kind, event.epoch, event.from_node, event.to_node) == ("failover", 4, PEER, NODE)
    assert phases(event) == {
        # n2 was last seen alive at 98.9 (its database answering as a primary); the lease was
        # seen free at 109.5: the outage began at the former, and the total counts from it.
        "silence": 10.6,
        "wait": 0.5,  # the lease was seen free at 109.5; the probe came at 110
        "lease": 0.1,
        "fence": 0.3,
        "promote": 0.6,
        "vip": 0.1,
        "promotion": 1.6,  # from the lease going free to the VIP: the number status once showed
        "total": 12.2,
    }
    assert seen.state.last_failover_at == 111.1


def test_active_crashes_and_the_fence_reaches_it_then_the_passive_promotes() -> None:
    n1 = passive_at_epoch_3()
    n1.see(crashed(110.0)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    n1.see(takeover(110.1).answer(n1.state, epoch=4)).expect(Role.PROMOTING, "fencing", "FencePeer")
    fence = takeover(110.4).answer(n1.state, detail="fence-self ok", fence=FenceOutcome.FENCED)
    seen = n1.see(fence).expect(Role.PROMOTING, "promoting", "RecordEvent", "Promote")
    assert seen.state.peer_fenced_at == 110.4


def test_active_crashes_and_the_fence_fails_then_the_lease_goes_back_and_is_retried() -> None:
    n1 = passive_at_epoch_3()
    n1.see(crashed(110.0)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    n1.see(takeover(110.1).answer(n1.state, epoch=4)).expect(Role.PROMOTING, "fencing", "FencePeer")
    failed = takeover(110.4).answer(n1.state, ok=False, detail="exit 1", fence=FenceOutcome.FAILED)
    seen = n1.see(failed).expect(Role.PASSIVE, "fence_failed", "RecordEvent", "ReleaseLease")
    release = seen.one(ReleaseLease)
    assert (release.epoch, release.clean) == (4, False)  # so that the next holder fences too
    given_back = crashed(110.5).epoch(4).last_leader(NODE, 4, None, clean=False)
    n1.see(given_back.answer(n1.state)).expect(Role.PASSIVE, "retry_wait")
    n1.see(crashed(115.0).epoch(4).last_leader(NODE, 4, clean=False)).expect(
        Role.PASSIVE, "retry_wait"
    )
    seen = n1.see(crashed(115.4).epoch(4).last_leader(NODE, 4, clean=False))
    seen.expect(Role.PASSIVE, "acquiring", "AcquireLease")
    assert seen.one(AcquireLease).expected_epoch == 4
    again = crashed(115.5).lease_mine(5).last_leader(NODE, 4, clean=False)
    n1.see(again.answer(n1.state, epoch=5)).expect(Role.PROMOTING, "fencing", "FencePeer")


def test_a_lease_that_expired_while_n1_was_not_looking_is_fenced_again() -> None:
    """n1 fenced n2 while epoch 3's lease was free, then froze. Meanwhile n2 came back, took
    epoch 4 and froze in turn, and its lease expired. The old fence says nothing about n2 since."""
    n1 = passive_at_epoch_3()
    n1.see(crashed(110.0).peer_db(PeerDb.PRIMARY)).expect(
        Role.PASSIVE, "fence_before_lease", "FencePeer"
    )
    fenced = crashed(110.3).peer_db(PeerDb.PRIMARY, ago=0.5)
    seen = n1.see(fenced.answer(n1.state, fence=FenceOutcome.FENCED))
    seen.expect(Role.PASSIVE, "acquiring", "RecordEvent", "AcquireLease")
    assert seen.one(RecordEvent).kind == "fence"  # every fence attempt is a history record

    # n1 freezes for 40 s: n2 took epoch 4 first (n1's acquisition failed), and it expired since.
    def later(t: float) -> Obs:
        return crashed(t).epoch(4).db_replica(6000, streaming=False, received_age=t - 135.0)

    late = later(150.0).answer(n1.state, ok=False, detail="epoch moved")
    seen = n1.see(late).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    assert seen.one(AcquireLease).expected_epoch == 4
    got = later(150.1).lease_mine(5).answer(n1.state, epoch=5)
    n1.see(got).expect(Role.PROMOTING, "fencing", "FencePeer")


# --------------------------------------------------------------------------------------------
# The active's app check fails: a clean, voluntary step-down and the passive's takeover
# --------------------------------------------------------------------------------------------


def active_at_epoch_3() -> Node:
    return Node(state=state_of(Role.ACTIVE, 3, next_id=10))


def serving(t: float) -> Obs:
    return (
        Obs(t)
        .lease_mine(3)
        .db_primary(lsn=9000, recorded_epoch=3)
        .peer_member(Role.PASSIVE, eligible=True)
        .peer_db(PeerDb.REPLICA)
    )


def test_an_active_does_not_step_down_for_a_check_whose_latest_probes_pass() -> None:
    """Its database just started again by this node (a re-adoption after a ZooKeeper outage, a
    restart): the check's latest probe passes, only its rise count is not met yet. The lab's
    fast profile stepped down 42 ms after such a re-adoption and failed over for nothing."""
    n1 = active_at_epoch_3()
    recovering = serving(300.0).check_recovering("postgres")
    seen = n1.see(recovering).expect(Role.ACTIVE, "active")
    assert not any(isinstance(a, RemoveVip | ReleaseLease) for a in seen.actions), seen.actions
    # The probe fails again: now it is failing, and the eligible peer takes over.
    failing = serving(300.5).check_failing("postgres", "PostgreSQL connection refused")
    n1.see(failing).expect(Role.DEMOTING, "stepdown", "RemoveVip")


def test_the_active_app_check_fails_and_it_steps_down_cleanly() -> None:
    n1 = active_at_epoch_3()
    n1.see(serving(200.0)).expect(Role.ACTIVE, "active")
    failing = serving(200.5).check_failing("app", "HTTP 503 (3 of 3)")
    seen = n1.see(failing).expect(Role.DEMOTING, "stepdown", "RemoveVip")
    assert "own checks failing (app: HTTP 503 (3 of 3)); n2 eligible: stepping down" in seen.text
    seen = n1.see(serving(200.6).check_failing().answer(n1.state))
    seen.expect(Role.DEMOTING, "stepdown", "StopDatabase")
    assert seen.one(StopDatabase).mode == "fast"
    stopped = serving(201.5).check_failing().db_stopped(was_primary=True, clean=True, lsn=9100)
    seen = n1.see(stopped.answer(n1.state, final_lsn=9100, clean=True))
    seen.expect(Role.DEMOTING, "stepdown", "ReleaseLease")
    release = seen.one(ReleaseLease)
    assert (release.epoch, release.final_lsn, release.clean) == (3, 9100, True)
    released = (
        Obs(201.6)
        .lease_free(3)
        .last_leader(NODE, 3, 9100, clean=True)
        .check_failing()
        .db_stopped(was_primary=True, clean=True, lsn=9100)
        .peer_db(PeerDb.REPLICA)
    )
    seen = n1.see(released.answer(n1.state))
    seen.expect(Role.DEMOTING, "stepped_down", "StartReplica", "RecordEvent", "RunHook")
    assert seen.one(StartReplica).primary == PEER
    assert seen.one(RecordEvent).kind == "stepdown"
    seen = n1.see(Obs(202.0).lease_peer(4).check_failing().answer(n1.state))
    seen.expect(Role.PASSIVE, "passive")


def test_the_passive_waits_for_replay_then_promotes_without_fencing() -> None:
    def stepped_down(t: float, replayed: int) -> Obs:
        return (
            Obs(t)
            .lease_free(3)
            .last_leader(PEER, 3, 9100, clean=True)
            .peer_db(PeerDb.DOWN)
            .db_replica(9100, replayed=replayed, streaming=False, received_age=0.5)
        )

    n1 = passive_at_epoch_3()
    seen = n1.see(stepped_down(201.6, replayed=8800)).expect(Role.PASSIVE, "waiting_for_replay")
    # LSNs in PostgreSQL's notation: 9100 is 0/238C, 8800 is 0/2260.
    assert seen.text == "n2 stepped down at LSN 0/238C; replayed 0/2260: waiting before taking over"
    n1.see(stepped_down(201.7, replayed=9100)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    seen = n1.see(stepped_down(201.8, 9100).lease_mine(4).answer(n1.state, epoch=4))
    seen.expect(Role.PROMOTING, "promoting", "Promote")  # no FencePeer: it said how it ended
    promoted = stepped_down(202.3, 9100).lease_mine(4).db_primary(9100, recorded_epoch=4)
    n1.see(promoted.answer(n1.state)).expect(Role.PROMOTING, "adding_vip", "AddVip")
    seen = n1.see(promoted.answer(n1.state))
    seen.expect(Role.ACTIVE, "active", "RecordEvent", "RunHook")
    event = seen.one(RecordEvent)
    assert (event.kind, event.from_node) == ("stepdown", PEER)


def test_minimum_interval_between_automatic_failovers() -> None:
    n1 = Node(state=state_of(Role.ACTIVE, 3, next_id=10, last_failover_at=111.1))
    seen = n1.see(serving(120.0).check_failing()).expect(Role.ACTIVE, "degraded")
    assert "the last failover was 9 s ago (min_failover_interval 30 s): staying active" in seen.text
    n1.see(serving(140.0).check_failing()).expect(Role.ACTIVE, "degraded")
    n1.see(serving(141.1).check_failing()).expect(Role.DEMOTING, "stepdown", "RemoveVip")


def test_the_active_stays_when_its_checks_fail_and_the_passive_is_not_eligible() -> None:
    n1 = active_at_epoch_3()
    lagging = (
        serving(200.0)
        .check_failing()
        .peer_member(
            Role.PASSIVE, eligible=False, reason="replica lag 34 MB > max_lag_on_failover 16 MB"
        )
    )
    seen = n1.see(lagging).expect(Role.ACTIVE, "degraded")
    assert seen.text == (
        "own checks failing (app: HTTP 503) but n2 not eligible: "
        "replica lag 34 MB > max_lag_on_failover 16 MB: staying active"
    )


# --------------------------------------------------------------------------------------------
# ZooKeeper trouble for the active
# --------------------------------------------------------------------------------------------


def test_zookeeper_partition_of_the_active_self_fences_before_the_session_can_expire() -> None:
    n1 = active_at_epoch_3()
    # The last round-trip that came back was sent at 100.0; nothing comes back after that.
    n1.see(serving(100.1).roundtrip_at(100.0)).expect(Role.ACTIVE, "active")
    n1.see(serving(102.0).roundtrip_at(100.0)).expect(Role.ACTIVE, "active")  # kazoo: connected
    suspended = serving(104.9).roundtrip_at(100.0).zk(ZkState.SUSPENDED, changed_at=104.0)
    n1.see(suspended).expect(Role.ACTIVE, "active")
    # The view still says the lease is ours, kazoo still says SUSPENDED: the send time decides.
    seen = n1.see(serving(105.0).roundtrip_at(100.0).zk(ZkState.SUSPENDED, changed_at=104.0))
    seen.expect(Role.FENCED, "self_fenced", "RemoveVip", "StopDatabase", "RunHook")
    assert seen.actions[0].name == "RemoveVip"  # the VIP goes first
    assert 100.0 + SESSION_TIMEOUT > 105.0  # down before the peer can have the lease


def test_a_frozen_active_resumed_after_the_peer_took_over_finds_itself_fenced() -> None:
    n1 = active_at_epoch_3()
    n1.see(serving(100.2).roundtrip_at(100.0)).expect(Role.ACTIVE, "active")
    # Frozen for 30 s. kazoo has not noticed anything; its view is the one from before.
    seen = n1.see(serving(130.0).roundtrip_at(100.0))
    seen.expect(Role.FENCED, "self_fenced", "RemoveVip", "StopDatabase", "RunHook")
    # kazoo learns the session expired; n2 holds epoch 4.
    lost = (
        Obs(130.3)
        .zk(ZkState.LOST, changed_at=130.3)
        .roundtrip_at(100.0)
        .lease_peer(4)
        .db_stopped(was_primary=True, clean=True, lsn=9300)
    )
    seen = n1.see(lost.answer(n1.state, final_lsn=9300, clean=True))
    seen.expect(Role.FENCED, "self_fenced")
    # Back, it rejoins by itself: it wrote past n2's fork, so it is rewound, then follows.
    back = Obs(131.0).lease_peer(4).db_stopped(was_primary=True, clean=True, lsn=9300)
    n1.see(back).expect(Role.FENCED, "inspecting", "InspectRejoin")
    diverged = rejoin_facts(local_lsn=9300, checkpoint_end=9400, fork=9000)
    seen = n1.see(back.answer(n1.state, rejoin=diverged))
    seen.expect(Role.FENCED, "rewinding", "RewindDatabase")
    assert "diverged" in seen.text
    n1.see(back.answer(n1.state, detail="rewound")).expect(
        Role.FENCED, "start_replica", "StartReplica"
    )
    n1.see(Obs(132.0).lease_peer(4).answer(n1.state)).expect(Role.PASSIVE, "rejoined")
    assert not any(
        isinstance(a, AddVip | Promote | AcquireLease) for s in n1.log for a in s.actions
    )


# --------------------------------------------------------------------------------------------
# The passive cannot take over, and says why
# --------------------------------------------------------------------------------------------


def test_the_passive_not_eligible_does_not_take_over_and_says_why() -> None:
    n1 = passive_at_epoch_3()
    lagging = Obs(100.0).lease_peer(3).peer_member(Role.ACTIVE, lsn=134 * MB).db_replica(100 * MB)
    seen = n1.see(lagging).expect(Role.PASSIVE, "passive")
    assert seen.text == (
        "n2 is active (epoch 3); not eligible: replica lag 34 MB > max_lag_on_failover 16 MB"
    )
    for t in (110.0, 111.0, 130.0):
        gone = crashed(t).db_replica(100 * MB, streaming=False, received_age=2.0)
        seen = n1.see(gone).expect(Role.PASSIVE, "not_eligible")
        assert seen.text == (
            "lease free but not eligible: replica lag 34 MB > max_lag_on_failover 16 MB"
        )


def test_the_passive_with_a_silent_wal_receiver_does_not_take_over() -> None:
    """WAL stopped arriving at 99 while n2 lived on, and wrote, until 130.4."""
    n1 = passive_at_epoch_3()
    alive = Obs(130.4).lease_peer(3).peer_member(Role.ACTIVE, lsn=5000, age=0.0)
    seen = n1.see(alive.db_replica(5000, streaming=False, received_age=31.4))
    seen.expect(Role.PASSIVE, "passive")
    assert "not eligible: WAL receiver not streaming, last WAL received 31.4 s ago" in seen.text
    seen = n1.see(crashed(130.5)).expect(Role.PASSIVE, "not_eligible")
    assert seen.text == (
        "lease free but not eligible: WAL stopped arriving 31.4 s before n2 was last seen "
        "alive (max_replication_silence 30 s)"
    )


def test_silence_counts_from_the_actives_last_sign_of_life_not_from_now() -> None:
    """A ZooKeeper outage: the active self-fenced at 100, its shutdown ended the WAL stream at
    the same moment. 40 s later ZooKeeper is back: the passive missed nothing and takes over."""
    n1 = passive_at_epoch_3()
    n1.see(Obs(100.0).lease_peer(3).peer_member(Role.ACTIVE, lsn=5000, age=0.0))
    back = (
        Obs(140.0)
        .lease_free(3)
        .no_peer_member()
        .peer_db(PeerDb.DOWN)
        .db_replica(5000, streaming=False, received_age=40.0)
    )
    n1.see(back).expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_a_restarted_passive_judges_its_lag_from_the_persisted_position() -> None:
    """Its daemon restarted: it never saw WAL arrive and never saw the active alive. The
    position the active persisted says how far behind it is."""
    restarted = Node()

    def after_restart(t: float, lsn: int) -> Obs:
        return (
            Obs(t)
            .lease_free(3)
            .no_peer_member()
            .peer_db(PeerDb.UNREACHABLE)
            .position(PEER, 3, 5000)
            .db_replica(lsn, streaming=False, received_age=None)
        )

    restarted.see(after_restart(200.0, 4900)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    far_behind = Node()
    seen = far_behind.see(after_restart(200.0, 5000 - 20 * MB)).expect(Role.PASSIVE, "not_eligible")
    assert "replica lag 20 MB > max_lag_on_failover 16 MB" in seen.text
    unknown = Node()
    no_position = after_restart(200.0, 4900).no_position()
    seen = unknown.see(no_position).expect(Role.PASSIVE, "not_eligible")
    assert "no record of the active's position" in seen.text


# --------------------------------------------------------------------------------------------
# Planned switchover
# --------------------------------------------------------------------------------------------


def test_planned_switchover_away_from_the_active() -> None:
    n1 = active_at_epoch_3()
    seen = n1.see(serving(300.0).switchover(PEER, by="alice"))
    seen.expect(Role.DEMOTING, "switchover", "RemoveVip")
    n1.see(serving(300.1).switchover(PEER).answer(n1.state)).expect(
        Role.DEMOTING, "switchover", "StopDatabase"
    )
    stopped = serving(300.8).db_stopped(was_primary=True, clean=True, lsn=9200)
    seen = n1.see(stopped.answer(n1.state, final_lsn=9200, clean=True))
    seen.expect(Role.DEMOTING, "switchover", "ReleaseLease")
    released = Obs(300.9).lease_free(3).last_leader(NODE, 3, 9200).peer_db(PeerDb.REPLICA)
    seen = n1.see(released.db_stopped(was_primary=True, clean=True).answer(n1.state))
    seen.expect(Role.DEMOTING, "stepped_down", "StartReplica", "RecordEvent", "RunHook")
    assert seen.one(RecordEvent).kind == "switchover"
    seen = n1.see(Obs(301.5).lease_peer(4).answer(n1.state)).expect(Role.PASSIVE, "passive")
    assert seen.state.last_failover_at == 300.9


def test_planned_switchover_to_the_passive() -> None:
    def released(t: float) -> Obs:
        return (
            Obs(t)
            .lease_free(3)
            .last_leader(PEER, 3, 5000, clean=True)
            .switchover(NODE, from_epoch=3, by="alice")
            .peer_db(PeerDb.DOWN)
        )

    n1 = passive_at_epoch_3()
    seen = n1.see(released(300.9)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    n1.see(released(301.0).lease_mine(4).answer(n1.state, epoch=4)).expect(
        Role.PROMOTING, "promoting", "Promote"
    )
    promoted = released(301.5).lease_mine(4).db_primary(5000, recorded_epoch=4)
    n1.see(promoted.answer(n1.state)).expect(Role.PROMOTING, "adding_vip", "AddVip")
    seen = n1.see(promoted.answer(n1.state))
    seen.expect(Role.ACTIVE, "active", "RecordEvent", "RunHook", "ClearSwitchover")
    assert seen.one(RecordEvent).kind == "switchover"


# --------------------------------------------------------------------------------------------
# Maintenance, restarts, rejoin
# --------------------------------------------------------------------------------------------


def test_maintenance_mode_changes_nothing_and_a_stop_leaves_everything_in_place() -> None:
    n1 = active_at_epoch_3()
    n1.see(serving(400.0).paused()).expect(Role.PAUSED, "paused")
    # Checks failing, a forced switchover: nothing happens while paused.
    busy = serving(401.0).paused().check_failing().switchover(PEER, force=True)
    seen = n1.see(busy).expect(Role.PAUSED, "paused")
    # Stopped while paused, it leaves VIP and database as they are, but says so durably first:
    # last_leader records that it goes on serving without its daemon.
    stopping = serving(402.0).paused().shutdown()
    seen = n1.see(stopping).expect(Role.PAUSED, "leaving_serving", "ReleaseLease")
    release = seen.one(ReleaseLease)
    assert (release.epoch, release.left_serving, release.clean) == (3, True, False)
    assert not seen.state.exit
    seen = n1.see(serving(402.2).paused().shutdown().answer(n1.state))
    seen.expect(Role.PAUSED, "shutdown_paused")
    assert seen.state.exit
    # The daemon starts again while the cluster is still paused (its old lease went with it).
    restarted = Node()
    paused = Obs(410.0).lease_free(3).paused().db_primary(recorded_epoch=3).peer_db(PeerDb.REPLICA)
    restarted.see(paused).expect(Role.PAUSED, "paused")
    resumed = Obs(420.0).lease_free(3).db_primary(recorded_epoch=3).peer_db(PeerDb.REPLICA)
    seen = restarted.see(resumed).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    assert seen.state.takeover is not None
    assert seen.state.takeover.kind == "readopt"


def test_a_crashed_ex_primary_is_rewound_and_rejoins_by_itself() -> None:
    n1 = Node()
    crashed_primary = Obs(50.0).lease_peer(4).db_stopped(was_primary=True, clean=False)
    n1.see(crashed_primary).expect(Role.FENCED, "inspecting", "InspectRejoin")
    unclean = rejoin_facts(clean=False)
    seen = n1.see(crashed_primary.answer(n1.state, rejoin=unclean))
    seen.expect(Role.FENCED, "rewinding", "RewindDatabase")
    assert "did not shut down cleanly" in seen.text
    rewound = Obs(52.0).lease_peer(4).db_stopped(was_primary=False, clean=True)
    n1.see(rewound.answer(n1.state)).expect(Role.FENCED, "start_replica", "StartReplica")
    n1.see(Obs(53.0).lease_peer(4).answer(n1.state)).expect(Role.PASSIVE, "rejoined")
    n1.see(Obs(54.0).lease_peer(4)).expect(Role.PASSIVE, "passive")


def test_a_rewind_that_fails_falls_back_to_a_clone() -> None:
    n1 = Node()
    crashed_primary = Obs(50.0).lease_peer(4).db_stopped(was_primary=True, clean=False)
    n1.see(crashed_primary).expect(Role.FENCED, "inspecting", "InspectRejoin")
    n1.see(crashed_primary.answer(n1.state, rejoin=rejoin_facts(clean=False)))
    failed = crashed_primary.answer(n1.state, ok=False, detail="WAL file already removed")
    seen = n1.see(failed).expect(Role.FENCED, "cloning", "CloneDatabase")
    assert "pg_rewind failed: WAL file already removed" in seen.text
    cloned = Obs(60.0).lease_peer(4).answer(n1.state, detail="cloned in 3.1 s")
    n1.see(cloned).expect(Role.PASSIVE, "rejoined")


def test_an_empty_data_directory_is_cloned_from_the_active() -> None:
    n1 = Node()
    empty = Obs(10.0).lease_peer(4).db(DatabaseStatus(DbRole.EMPTY))
    seen = n1.see(empty).expect(Role.FENCED, "cloning", "CloneDatabase")
    assert "empty" in seen.text


def test_rejoin_waits_for_the_active_to_answer_as_a_primary_and_manual_mode_for_a_request() -> None:
    def stopped_at(t: float) -> Obs:
        return Obs(t).lease_peer(4).db_stopped(was_primary=True, clean=False)

    n1 = Node()
    seen = n1.see(stopped_at(9.0).peer_db(PeerDb.UNREACHABLE)).expect(Role.FENCED, "must_rejoin")
    assert "waiting for n2's database to answer as a primary" in seen.text
    stopped = stopped_at(10.0)
    manual = Node(dataclasses.replace(SETTINGS, rejoin_auto=False))
    seen = manual.see(stopped).expect(Role.FENCED, "rejoin_manual")
    assert "rejoin = manual: waiting for 'failoverctl rejoin n1'" in seen.text
    asked = stopped.rejoin_request(NODE, reclone=True)
    seen = manual.see(asked).expect(Role.FENCED, "cloning", "CloneDatabase")
    seen = manual.see(asked.answer(manual.state, detail="cloned"))
    seen.expect(Role.PASSIVE, "rejoined", "ClearRejoinRequest")


def test_no_automatic_fail_back() -> None:
    """n1 was active, self-fenced, n2 took over. n1 comes back perfectly healthy: not diverged
    (n2 got its shutdown checkpoint), it follows n2 and stays passive."""
    n1 = Node()
    back = Obs(500.0).lease_peer(4).db_stopped(was_primary=True, clean=True)
    n1.see(back).expect(Role.FENCED, "inspecting", "InspectRejoin")
    follows = rejoin_facts(local_lsn=9000, checkpoint_end=9100, fork=9100)
    n1.see(back.answer(n1.state, rejoin=follows)).expect(
        Role.FENCED, "start_replica", "StartReplica"
    )
    n1.see(Obs(501.0).lease_peer(4).answer(n1.state)).expect(Role.PASSIVE, "rejoined")
    for t in range(502, 600, 7):
        n1.see(Obs(float(t)).lease_peer(4)).expect(Role.PASSIVE, "passive")
    assert all(not s.did for s in n1.log[3:])


def test_the_acquisition_result_can_arrive_before_the_watch_shows_the_lease() -> None:
    n1 = passive_at_epoch_3()
    n1.see(crashed(110.0)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    early = crashed(110.1).answer(n1.state, epoch=4)  # the view still shows the free lease
    n1.see(early).expect(Role.PROMOTING, "waiting_for_lease_view")
    n1.see(takeover(110.2)).expect(Role.PROMOTING, "fencing", "FencePeer")


def test_a_release_that_fails_after_a_failed_fence_is_retried() -> None:
    n1 = passive_at_epoch_3()
    n1.see(crashed(110.0)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    n1.see(takeover(110.1).answer(n1.state, epoch=4)).expect(Role.PROMOTING, "fencing", "FencePeer")
    failed = takeover(110.4).answer(n1.state, ok=False, fence=FenceOutcome.FAILED)
    n1.see(failed).expect(Role.PASSIVE, "fence_failed", "RecordEvent", "ReleaseLease")
    seen = n1.see(takeover(110.5).answer(n1.state, ok=False, detail="ConnectionLoss"))
    seen.expect(Role.PASSIVE, "releasing", "ReleaseLease")
    assert seen.one(ReleaseLease).clean is False


def test_shutdown_of_the_active_hands_over_and_exits() -> None:
    n1 = active_at_epoch_3()
    n1.see(serving(600.0).shutdown()).expect(Role.DEMOTING, "shutdown", "RemoveVip")
    n1.see(serving(600.1).shutdown().answer(n1.state)).expect(
        Role.DEMOTING, "shutdown", "StopDatabase"
    )
    stopped = serving(601.0).shutdown().db_stopped(was_primary=True, clean=True, lsn=9400)
    seen = n1.see(stopped.answer(n1.state, final_lsn=9400, clean=True))
    seen.expect(Role.DEMOTING, "shutdown", "ReleaseLease")
    assert seen.one(ReleaseLease).clean is True
    gone = Obs(601.1).lease_free(3).shutdown().db_stopped(was_primary=True, clean=True)
    seen = n1.see(gone.answer(n1.state)).expect(Role.PASSIVE, "stopped", "RecordEvent", "RunHook")
    assert seen.state.exit


# --------------------------------------------------------------------------------------------
# Pause never suspends self-fencing (the split brain seen in the lab)
# --------------------------------------------------------------------------------------------


def test_a_paused_active_cut_off_from_zookeeper_fences_itself_in_time() -> None:
    """Pause, cut the active off from ZooKeeper and its peer, resume: the peer may take over
    once the session expires, so the paused active must be down by then."""
    n1 = active_at_epoch_3()
    n1.see(serving(500.0).paused()).expect(Role.PAUSED, "paused")
    cut = serving(500.0 + SFA - 0.1).paused().roundtrip(SFA - 0.1).zk(ZkState.SUSPENDED)
    n1.see(cut).expect(Role.PAUSED, "paused")
    seen = n1.see(serving(500.0 + SFA).paused().roundtrip(SFA).zk(ZkState.SUSPENDED))
    seen.expect(Role.FENCED, "self_fenced", "RemoveVip", "StopDatabase", "RunHook")
    assert "pause does not suspend self-fencing" in seen.text
    # The stale view still says paused: it stays fenced, and does not fence again.
    later = serving(500.0 + SFA + 1).paused().roundtrip(SFA + 1).zk(ZkState.SUSPENDED)
    n1.see(later.answer(n1.state, final_lsn=9000, clean=True)).expect(Role.PAUSED, "paused")


def test_a_paused_passive_without_zookeeper_does_nothing() -> None:
    n1 = Node(state=state_of(Role.PASSIVE, 3, next_id=10))
    n1.see(Obs(600.0).lease_peer(3).paused()).expect(Role.PAUSED, "paused")
    quiet = Obs(600.0 + 2 * SFA).lease_peer(3).paused().roundtrip(2 * SFA).zk(ZkState.SUSPENDED)
    n1.see(quiet).expect(Role.PAUSED, "paused")


def test_a_new_process_that_finds_itself_serving_proves_its_session_or_fences() -> None:
    """A daemon restarted on a node whose database is primary (ExecStopPost did not fence, or
    it is not run by systemd) gets self_fence_after to make a round-trip."""
    n1 = Node()

    def restarted(t: float) -> Obs:
        return Obs(t).no_roundtrip().zk(ZkState.SUSPENDED).no_cluster().db_primary()

    n1.see(restarted(700.0)).expect(Role.STARTING, "waiting_for_observation")
    n1.see(restarted(700.0 + SFA - 0.1)).expect(Role.STARTING, "waiting_for_observation")
    n1.see(restarted(700.0 + SFA)).expect(
        Role.FENCED, "self_fenced", "RemoveVip", "StopDatabase", "RunHook"
    )


def test_a_new_process_whose_previous_life_ended_unfenced_fences_at_once() -> None:
    """ExecStopPost's fence-self failed after an abnormal end while serving: the previous life's
    last round-trip may be long past, and the peer may lead on a fence that does not reach
    here. No grace: a new process that finds itself serving stops at once (the simulator found
    two VIP holders: the grace outlasted the old session)."""
    for serving_obs in (
        Obs(700.0).no_roundtrip().zk(ZkState.SUSPENDED).no_cluster().db_primary(),
        Obs(700.0).no_roundtrip().zk(ZkState.SUSPENDED).no_cluster().vip(present=True),
    ):
        n1 = Node()
        seen = n1.see(serving_obs.unfenced_start())
        seen.expect(Role.FENCED, "self_fenced", *seen.did)
        assert "RemoveVip" in seen.did, seen.did
        assert "ExecStopPost's fence-self failed" in seen.text, seen.text
    # Nothing to fence: it waits for its first observation as any new process does.
    n2 = Node()
    quiet = Obs(700.0).no_roundtrip().zk(ZkState.SUSPENDED).no_cluster().db_replica(5000)
    n2.see(quiet.unfenced_start()).expect(Role.STARTING, "waiting_for_observation")


def test_stopping_while_self_fencing_waits_for_the_database_to_stop() -> None:
    """The runner cancels queued actions when the daemon exits: the stop must not be one."""
    n1 = active_at_epoch_3()
    gone = serving(800.0).roundtrip(SFA).zk(ZkState.SUSPENDED).shutdown()
    seen = n1.see(gone).expect(Role.FENCED, "self_fenced", "RemoveVip", "StopDatabase", "RunHook")
    assert not seen.state.exit
    seen = n1.see(serving(800.2).roundtrip(SFA + 0.2).zk(ZkState.SUSPENDED).shutdown())
    assert not seen.state.exit and seen.code == "exit_waiting"
    done = serving(800.4).roundtrip(SFA + 0.4).zk(ZkState.SUSPENDED).shutdown()
    seen = n1.see(done.answer(n1.state, final_lsn=9000, clean=True))
    assert seen.state.exit


def test_a_paused_node_that_cannot_record_it_is_left_serving_fences_itself() -> None:
    n1 = active_at_epoch_3()
    n1.see(serving(900.0).paused()).expect(Role.PAUSED, "paused")
    n1.see(serving(900.1).paused().shutdown()).expect(
        Role.PAUSED, "leaving_serving", "ReleaseLease"
    )
    failed = serving(900.3).paused().shutdown().answer(n1.state, ok=False, detail="connection loss")
    seen = n1.see(failed).expect(Role.FENCED, "self_fenced", "RemoveVip", "StopDatabase", "RunHook")
    assert "recording that failed" in seen.text
    assert not seen.state.exit


def left_serving(t: float) -> Obs:
    """n2's daemon stopped while paused, leaving its VIP and primary; then the pause ended."""
    return (
        Obs(t)
        .lease_free(3)
        .last_leader(PEER, 3, None, clean=False)
        .left_serving()
        .no_peer_member()
        .db_replica(5000, streaming=False, received_age=1.0)
    )


def test_the_peer_is_fenced_before_a_takeover_from_a_node_left_serving() -> None:
    n1 = passive_at_epoch_3()
    seen = n1.see(left_serving(1000.0).peer_db(PeerDb.UNREACHABLE))
    seen.expect(Role.PASSIVE, "fence_before_lease", "FencePeer")
    # Unreachable proves nothing about a node nobody supervises: no takeover, and why.
    unreachable = left_serving(1000.5).peer_db(PeerDb.UNREACHABLE)
    seen = n1.see(unreachable.answer(n1.state, fence=FenceOutcome.UNREACHABLE, detail="timeout"))
    seen.expect(Role.PASSIVE, "peer_left_serving", "RecordEvent")  # said as needing a person
    assert [d.code for d in seen.step.decisions] == ["peer_left_serving", "peer_left_serving"]
    assert "failoverctl promote n1 --force" in seen.text
    seen = n1.see(left_serving(1002.0).peer_db(PeerDb.UNREACHABLE))
    seen.expect(Role.PASSIVE, "peer_left_serving")
    assert "was left serving" in seen.text, seen.text
    # Once the link is back the fence reaches it, and the takeover goes ahead.
    n1.see(left_serving(1006.0).peer_db(PeerDb.PRIMARY)).expect(
        Role.PASSIVE, "fence_before_lease", "FencePeer"
    )
    fenced = left_serving(1006.5).peer_db(PeerDb.DOWN)
    seen = n1.see(fenced.answer(n1.state, fence=FenceOutcome.FENCED))
    seen.expect(Role.PASSIVE, "acquiring", "RecordEvent", "AcquireLease")
    assert [d.code for d in seen.step.decisions] == ["peer_fenced", "acquiring"]


def test_a_node_left_serving_whose_daemon_is_back_is_given_time_to_take_its_lease_again() -> None:
    """`systemctl restart` of a paused active: its daemon is back (its member record is there)
    and will re-adopt the VIP and primary it kept. Fencing it then would turn the restart into
    a switchover after the pause (seen in the systemd lab); wait for it, for a while."""
    n1 = passive_at_epoch_3()
    back = left_serving(1000.0).peer_member(Role.STARTING).peer_db(PeerDb.PRIMARY)
    seen = n1.see(back)
    seen.expect(Role.PASSIVE, "waiting_for_readopt")
    assert PEER in seen.text and "take" in seen.text, seen.text
    n1.see(left_serving(1002.0).peer_member(Role.STARTING).peer_db(PeerDb.PRIMARY)).expect(
        Role.PASSIVE, "waiting_for_readopt"
    )
    # It never took the lease back: after the grace, fence it as for any node left serving.
    late = left_serving(1000.0 + SETTINGS.handover_grace + 0.1).peer_member(Role.STARTING)
    n1.see(late.peer_db(PeerDb.PRIMARY)).expect(Role.PASSIVE, "fence_before_lease", "FencePeer")


def test_a_node_left_serving_without_its_daemon_is_fenced_at_once() -> None:
    n1 = passive_at_epoch_3()
    n1.see(left_serving(1000.0).peer_db(PeerDb.PRIMARY)).expect(
        Role.PASSIVE, "fence_before_lease", "FencePeer"
    )


def test_a_forced_promote_overrides_the_node_left_serving() -> None:
    n1 = passive_at_epoch_3()
    forced = left_serving(1100.0).peer_db(PeerDb.UNREACHABLE).switchover(NODE, force=True)
    n1.see(forced).expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_a_forced_switchover_never_goes_to_a_node_that_cannot_become_a_primary() -> None:
    n1 = active_at_epoch_3()
    fenced_peer = serving(1200.0).peer_member(Role.FENCED, eligible=False, reason="must rejoin")
    seen = n1.see(fenced_peer.switchover(PEER, force=True))
    seen.expect(Role.ACTIVE, "switchover_refused", "ClearSwitchover", "RecordEvent")
    assert "must rejoin" in seen.text


def test_a_stop_that_fails_keeps_the_lease_until_the_database_is_down() -> None:
    """Releasing with a primary that may still take writes would let the peer promote beside it."""
    n1 = active_at_epoch_3()
    n1.see(serving(1300.0).check_failing()).expect(Role.DEMOTING, "stepdown", "RemoveVip")
    seen = n1.see(serving(1300.1).check_failing().answer(n1.state))
    assert seen.one(StopDatabase).mode == "fast"
    failed = serving(1300.5).check_failing().answer(n1.state, ok=False, detail="stuck")
    seen = n1.see(failed).expect(Role.DEMOTING, "stop_failed", "StopDatabase")
    assert seen.one(StopDatabase).mode == "immediate"
    stopped = serving(1301.0).check_failing().answer(n1.state, final_lsn=9100, clean=False)
    n1.see(stopped).expect(Role.DEMOTING, "stop_failed", "ReleaseLease")


def test_a_diverged_replica_never_passes_for_caught_up_on_another_timeline() -> None:
    """A crashed ex-primary's LSN on its own timeline can exceed the hand-over's final LSN on the
    new one without holding any of it."""
    n1 = passive_at_epoch_3()
    diverged = (
        Obs(1400.0)
        .lease_free(3)
        .last_leader(PEER, 3, 9000, clean=True, timeline=3)
        .peer_db(PeerDb.DOWN)
        .db_replica(12000, streaming=False, received_age=1.0, timeline=2)
    )
    n1.see(diverged).expect(Role.PASSIVE, "waiting_for_replay")
    caught_up = diverged.db_replica(9000, streaming=False, received_age=1.0, timeline=3)
    n1.see(caught_up).expect(Role.PASSIVE, "acquiring", "AcquireLease")


# --------------------------------------------------------------------------------------------
# Healing: every wait has a deadline and a way out
# --------------------------------------------------------------------------------------------


def test_readopting_after_our_own_crash_does_not_fence_a_healthy_replica() -> None:
    """n1 led epoch 3 and crashed; its database came back stopped. Nobody was promoted since
    (the position record is n1's, epoch 3): it is the most advanced node and leads again, and
    n2, a replica all along, is not fenced for it."""
    n1 = Node()

    def back(t: float) -> Obs:
        return (
            Obs(t)
            .lease_free(3)
            .position(NODE, 3, 9000, timeline=2)
            .peer_member(Role.PASSIVE, eligible=False, lsn=8000)
            .peer_db(PeerDb.REPLICA)
            .db_stopped(was_primary=True, clean=False, lsn=9000)
        )

    n1.see(back(10.0)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    got = back(10.2).lease_mine(4).answer(n1.state, epoch=4)
    seen = n1.see(got).expect(Role.PROMOTING, "promoting", "Promote")
    assert "starting the stopped primary" in seen.text
    assert not any(isinstance(a, FencePeer) for s in n1.log for a in s.actions)


def test_the_most_advanced_of_two_stopped_nodes_leads_and_the_other_waits_for_it() -> None:
    """Both stopped, no lease, nobody knows from the records who led last (the newest epoch's
    holder died before writing a position). Each node's own report decides: timeline, then LSN."""

    def stopped(t: float, mine: int, theirs: int) -> Obs:
        return (
            Obs(t)
            .lease_free(5)
            .peer_member(Role.FENCED, eligible=False, lsn=theirs)
            .peer_db(PeerDb.DOWN)
            .db(
                DatabaseStatus(
                    DbRole.STOPPED, lsn=mine, was_primary=True, stopped_cleanly=True, timeline=3
                )
            )
        )

    ahead = Node()
    seen = ahead.see(stopped(10.0, 9000, 8000)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    behind = Node()
    seen = behind.see(stopped(10.0, 8000, 9000)).expect(Role.FENCED, "must_rejoin")
    assert "no active to follow" in seen.text


def test_a_crashed_peer_back_with_its_database_stopped_is_not_overtaken_on_its_checkpoint() -> None:
    """n2 led epoch 3 and crashed; its daemon is back before its database. A stopped database
    reports its latest checkpoint, and a crashed one's WAL goes on past it: the acknowledged
    commits n2 took alone after the replica fell silent are there. n1's WAL stopped long
    before n2 was last seen: not eligible. A checkpoint below n1's position must not make n1
    "the most advanced node" (the lab saw n1 take over, fence n2 and lose those commits)."""
    n1 = passive_at_epoch_3()  # last saw n2 alive at 99.0
    silent = SETTINGS.max_replication_silence + 5.0  # WAL stopped this long before that

    def back(t: float, *, exact: bool) -> Obs:
        return (
            Obs(t)
            .lease_free(3)
            .position(PEER, 3, 9000)
            .peer_member(
                Role.STARTING, eligible=False, lsn=7000, db_role=DbRole.STOPPED, lsn_exact=exact
            )
            .peer_db(PeerDb.DOWN)
            .db_replica(8000, streaming=False, received_age=t - 99.0 + silent)
        )

    seen = n1.see(back(130.0, exact=False)).expect(Role.PASSIVE, "not_eligible")
    assert "most advanced" not in seen.text
    # A clean stop's shutdown checkpoint is where its WAL ends: then n1 does hold more.
    seen = n1.see(back(130.5, exact=True)).expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_a_crashed_peer_whose_checkpoint_is_ahead_is_still_ahead() -> None:
    """A lower bound above our own position settles it: the peer holds more and should lead."""
    n1 = passive_at_epoch_3()
    free = (
        Obs(140.0)
        .lease_free(3)
        .peer_member(
            Role.FENCED, eligible=False, lsn=5000 + 4 * MB, db_role=DbRole.STOPPED, lsn_exact=False
        )
        .peer_db(PeerDb.DOWN)
        .db_replica(5000, streaming=False, received_age=0.5)
    )
    seen = n1.see(free).expect(Role.PASSIVE, "not_eligible")
    assert "n2 is further ahead" in seen.text and "it should lead" in seen.text


def test_a_live_peer_with_more_wal_is_not_overtaken() -> None:
    """n1 is a replica that could take the free lease by the lag policy, but n2, alive and
    healthy with its database stopped, holds more: n2 should lead, not lose it."""
    n1 = passive_at_epoch_3()
    free = (
        Obs(120.0)
        .lease_free(3)
        .peer_member(Role.FENCED, eligible=False, lsn=5000 + 4 * MB)
        .peer_db(PeerDb.DOWN)
        .db_replica(5000, streaming=False, received_age=0.5)
    )
    seen = n1.see(free).expect(Role.PASSIVE, "not_eligible")
    assert "n2 is further ahead" in seen.text and "it should lead" in seen.text


def test_an_active_whose_database_crashed_restarts_it_when_the_peer_cannot_take_over() -> None:
    n1 = active_at_epoch_3()
    crashed_db = (
        serving(600.0)
        .db_stopped(was_primary=True, clean=False)
        .check_failing("postgres", "PostgreSQL connection refused")
        .peer_member(Role.PASSIVE, eligible=False, reason="replica lag 40 MB")
    )
    seen = n1.see(crashed_db).expect(Role.ACTIVE, "restarting_database", "StartPrimary")
    assert seen.one(StartPrimary).epoch == 3
    back = serving(601.0).check_failing("postgres", "starting")
    seen = n1.see(back.peer_member(Role.PASSIVE, eligible=False).answer(n1.state, detail="ok"))
    assert seen.code in ("database_restarted", "degraded")


def test_a_hung_database_is_killed_not_asked_to_stop() -> None:
    """PostgreSQL frozen on the active: the step-down kills it at once (a fast stop would wait
    out the whole ladder) and releases unclean, so the peer fences before it promotes."""
    n1 = active_at_epoch_3()
    hung = serving(700.0).db(DatabaseStatus(DbRole.UNKNOWN, hung=True))
    hung = hung.check_failing("postgres", "no answer within 1 s")
    n1.see(hung).expect(Role.DEMOTING, "stepdown", "RemoveVip")
    seen = n1.see(hung.answer(n1.state)).expect(Role.DEMOTING, "stepdown", "StopDatabase")
    stop = seen.one(StopDatabase)
    assert (stop.mode, stop.checkpoint) == ("kill", False)
    killed = serving(700.2).db_stopped(was_primary=True, clean=False).check_failing("postgres")
    seen = n1.see(killed.answer(n1.state, final_lsn=9000, clean=False))
    seen.expect(Role.DEMOTING, "stepdown", "ReleaseLease")
    assert not seen.one(ReleaseLease).clean


def test_a_voluntary_stop_runs_a_checkpoint_first() -> None:
    n1 = active_at_epoch_3()
    n1.see(serving(710.0).check_failing()).expect(Role.DEMOTING, "stepdown", "RemoveVip")
    seen = n1.see(serving(710.1).check_failing().answer(n1.state))
    stop = seen.one(StopDatabase)
    assert (stop.mode, stop.checkpoint) == ("fast", True)


def test_a_starting_node_kills_a_hung_database_rather_than_wait_for_it() -> None:
    n1 = Node()
    hung = Obs(5.0).lease_peer(4).db(DatabaseStatus(DbRole.UNKNOWN, hung=True))
    seen = n1.see(hung.check_failing("postgres", "no answer")).expect(
        Role.STARTING, "database_hung", "StopDatabase"
    )
    assert seen.one(StopDatabase).mode == "kill"


def test_a_replica_that_does_not_stream_is_stopped_and_rejoined_each_time_harder() -> None:
    """Started as a replica, but it never streams although n2 answers as a primary (it forked
    silently, or the WAL it needs is gone): stopped and rejoined, then rewound, then cloned."""
    n1 = passive_at_epoch_3()
    silence = SETTINGS.max_replication_silence

    def stuck(t: float) -> Obs:
        return Obs(t).lease_peer(3).db_replica(4000, streaming=False, received_age=None)

    n1.see(stuck(200.0)).expect(Role.PASSIVE, "passive")
    seen = n1.see(stuck(200.0 + silence + 0.5))
    seen.expect(Role.FENCED, "replica_stalled", "StopDatabase")
    assert seen.state.stalls == 1
    stopped = Obs(231.0).lease_peer(3).db_stopped(was_primary=False, clean=True)
    seen = n1.see(stopped.answer(n1.state, clean=True))
    seen.expect(Role.FENCED, "rewinding", "RewindDatabase")  # the second try goes straight on
    n1.see(stopped.answer(n1.state)).expect(Role.FENCED, "start_replica", "StartReplica")
    n1.see(Obs(232.0).lease_peer(3).answer(n1.state)).expect(Role.PASSIVE, "rejoined")
    n1.see(stuck(233.0)).expect(Role.PASSIVE, "passive")
    seen = n1.see(stuck(233.0 + silence + 0.5))
    seen.expect(Role.FENCED, "replica_stalled", "StopDatabase")
    assert seen.state.stalls == 2
    seen = n1.see(stopped.answer(n1.state, clean=True)).expect(
        Role.FENCED, "cloning", "CloneDatabase"
    )
    assert "2 rejoins ended in a replica that does not stream" in seen.text


def test_a_fence_that_reaches_the_peer_but_fails_tries_the_power_switch() -> None:
    n1 = Node(dataclasses.replace(SETTINGS, power_fence=True), state=passive_at_epoch_3().state)
    n1.see(crashed(110.0)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    n1.see(takeover(110.1).answer(n1.state, epoch=4)).expect(Role.PROMOTING, "fencing", "FencePeer")
    failed = takeover(110.4).answer(n1.state, ok=False, detail="exit 1", fence=FenceOutcome.FAILED)
    seen = n1.see(failed).expect(Role.PROMOTING, "fencing", "RecordEvent", "FencePeer")
    assert seen.one(FencePeer).method == "power"
    assert seen.one(RecordEvent).kind == "fence_failed"
    off = takeover(111.0).answer(n1.state, fence=FenceOutcome.FENCED, detail="power off")
    seen = n1.see(off).expect(Role.PROMOTING, "promoting", "RecordEvent", "Promote")
    assert "power" in seen.one(RecordEvent).reason.text


def test_every_fencing_level_failing_gives_the_lease_back_and_says_so() -> None:
    n1 = Node(dataclasses.replace(SETTINGS, power_fence=True), state=passive_at_epoch_3().state)
    n1.see(crashed(110.0))
    n1.see(takeover(110.1).answer(n1.state, epoch=4))
    ssh = takeover(110.4).answer(n1.state, ok=False, detail="exit 1", fence=FenceOutcome.FAILED)
    n1.see(ssh)
    power = takeover(111.0).answer(n1.state, ok=False, detail="no PDU", fence=FenceOutcome.FAILED)
    seen = n1.see(power).expect(Role.PASSIVE, "fencing_exhausted", "RecordEvent", "ReleaseLease")
    assert "every fencing level" in seen.text


def test_an_active_puts_back_a_vip_removed_behind_its_back() -> None:
    n1 = active_at_epoch_3()
    missing = serving(800.0)
    seen = n1.see(missing.vip(present=False)).expect(Role.ACTIVE, "vip_missing", "AddVip")
    assert seen.one(AddVip).epoch == 3


def test_a_promotion_and_a_vip_refused_as_late_are_sent_again_not_aborted() -> None:
    """The round-trip they were sent on aged before they ran: the adapters did nothing, so the
    takeover goes on (a second Promote under the epoch is then no second promotion)."""
    n1 = passive_at_epoch_3()
    n1.see(crashed(110.0)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    acquired = takeover(110.1).answer(n1.state, epoch=4)
    n1.see(acquired).expect(Role.PROMOTING, "fencing", "FencePeer")
    fence = takeover(110.4).answer(n1.state, fence=FenceOutcome.UNREACHABLE)
    n1.see(fence).expect(Role.PROMOTING, "promoting", "RecordEvent", "Promote")
    late = takeover(110.6).answer(n1.state, ok=False, detail="refused: late", late=True)
    seen = n1.see(late).expect(Role.PROMOTING, "promoting", "Promote")
    assert "leased_action_late" in [d.code for d in seen.step.decisions]
    promoted = takeover(111.0).db_primary(recorded_epoch=4)
    n1.see(promoted.answer(n1.state)).expect(Role.PROMOTING, "adding_vip", "AddVip")
    late_vip = takeover(111.1).db_primary(recorded_epoch=4)
    late_vip = late_vip.answer(n1.state, ok=False, detail="refused: late", late=True)
    n1.see(late_vip).expect(Role.PROMOTING, "adding_vip", "AddVip")
    failed = takeover(111.2).db_primary(recorded_epoch=4).answer(n1.state, ok=False, detail="x")
    n1.see(failed).expect(Role.DEMOTING, "aborted", "RemoveVip")


def test_a_promotion_that_overran_its_deadline_is_sent_again_not_aborted() -> None:
    """Starting the stopped replica outlasted the round-trip the Promote was sent on: the
    server is up, in recovery, not promoted. That is no failure of the server: the same
    action, sent again on a fresh round-trip, finishes it (the fast profile's re-adoption
    after a ZooKeeper restart aborted on a start longer than self_fence_after)."""
    n1 = passive_at_epoch_3()
    n1.see(crashed(110.0)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    n1.see(takeover(110.1).answer(n1.state, epoch=4)).expect(Role.PROMOTING, "fencing", "FencePeer")
    fence = takeover(110.4).db_stopped(was_primary=False, clean=True)
    n1.see(fence.answer(n1.state, fence=FenceOutcome.UNREACHABLE)).expect(
        Role.PROMOTING, "promoting", "RecordEvent", "Promote"
    )
    overran = takeover(112.0).answer(
        n1.state, ok=False, detail="started the stopped replica; refused: late", overran=True
    )
    seen = n1.see(overran).expect(Role.PROMOTING, "promoting", "Promote")
    assert "leased_action_late" in [d.code for d in seen.step.decisions]
    assert seen.one(Promote).epoch == 4
    promoted = takeover(112.3).db_primary(recorded_epoch=4)
    n1.see(promoted.answer(n1.state)).expect(Role.PROMOTING, "adding_vip", "AddVip")


def test_an_active_whose_database_restart_overran_serves_on_without_waiting() -> None:
    """The active restarted its own crashed database, and the start outlasted the round-trip:
    the server is up as the primary it was, so there is nothing to retry after
    fence_retry_after."""
    n1 = active_at_epoch_3()
    down = serving(800.0).db_stopped(was_primary=True, clean=False).check_failing()
    n1.see(down.peer_member(Role.PASSIVE, eligible=False)).expect(
        Role.ACTIVE, "restarting_database", "StartPrimary"
    )
    overran = serving(802.0).db_primary(lsn=9000, recorded_epoch=3)
    seen = n1.see(overran.answer(n1.state, ok=False, detail="refused: late", overran=True))
    assert n1.state.role is Role.ACTIVE and n1.state.retry_after is None, seen.text
    assert "database_restarted" in [d.code for d in seen.step.decisions]


def test_an_active_whose_vip_came_too_late_tries_again_on_a_fresh_round_trip() -> None:
    """Resumed just after a reconnect, the VIP was re-added on a round-trip that aged before
    the action ran: the adapter did nothing, and that is not a reason to step down."""
    n1 = active_at_epoch_3()
    seen = n1.see(serving(800.0).vip(present=False)).expect(Role.ACTIVE, "vip_missing", "AddVip")
    late = (
        serving(800.5)
        .vip(present=False)
        .result(seen.one(AddVip).id, ok=False, detail="refused: past not_after", late=True)
    )
    again = n1.see(late).expect(Role.ACTIVE, "vip_missing", "AddVip")
    assert again.one(AddVip).not_after > 800.5
    failed = (
        serving(801.0)
        .vip(present=False)
        .result(again.one(AddVip).id, ok=False, detail="no such device")
    )
    n1.see(failed).expect(Role.DEMOTING, "aborted", "RemoveVip")


def test_a_view_just_after_a_reconnect_fences_nobody_until_it_settles() -> None:
    """Reconnected a moment ago, the view may still show the lease free although the peer took
    it meanwhile: fencing on it would stop a healthy active."""
    n1 = passive_at_epoch_3()
    young = crashed(110.0).peer_db(PeerDb.PRIMARY).zk(ZkState.CONNECTED, changed_at=109.6)
    seen = n1.see(young).expect(Role.PASSIVE, "zk_settling")
    assert "reconnected 0.4 s ago" in seen.text
    settled = crashed(110.7).peer_db(PeerDb.PRIMARY).zk(ZkState.CONNECTED, changed_at=109.6)
    n1.see(settled).expect(Role.PASSIVE, "fence_before_lease", "FencePeer")


def test_a_suspended_connection_takes_and_fences_nothing() -> None:
    n1 = passive_at_epoch_3()
    suspended = crashed(110.0).peer_db(PeerDb.PRIMARY).zk(ZkState.SUSPENDED, changed_at=109.0)
    seen = n1.see(suspended).expect(Role.PASSIVE, "zk_unavailable")
    assert "not current" in seen.text


def test_a_switchover_target_that_never_catches_up_leaves_the_old_active_to_lead_again() -> None:
    """n1 stepped down for a switchover to n2 at LSN 9200 and restarted as a replica of n2; n2
    never replays that far (cut off, frozen). Once the lease has been free for two session
    timeouts, n1, which has everything, leads again, well before the request's deadline: the
    chaos suite measured a 20 s outage per such switchover when n1 waited for the deadline."""
    n1 = Node(state=state_of(Role.PASSIVE, 3, next_id=50))

    def after(t: float, deadline_in: float) -> Obs:
        return (
            Obs(t)
            .lease_free(3)
            .last_leader(NODE, 3, 9200, clean=True)
            .switchover(PEER, deadline_in=deadline_in)
            .peer_member(Role.PASSIVE, eligible=False, lsn=8000, reason="waiting_for_replay")
            .peer_db(PeerDb.REPLICA)
            .db_replica(9200, streaming=False, received_age=None)
        )

    seen = n1.see(after(300.0, 20.0)).expect(Role.PASSIVE, "switchover_elsewhere")
    seen = n1.see(after(300.0 + SETTINGS.handover_grace - 0.1, 20.0)).expect(
        Role.PASSIVE, "switchover_elsewhere"
    )
    seen = n1.see(after(300.0 + SETTINGS.handover_grace + 0.1, 19.0))
    seen.expect(Role.PASSIVE, "acquiring", "AcquireLease")
    assert "switchover_stalled" in [d.code for d in seen.step.decisions]
    assert seen.one(AcquireLease).expected_epoch == 3


def test_the_switchover_target_waits_while_the_old_active_hands_over() -> None:
    """Only the node that stepped down takes a stalled switchover's lease back; a passive that
    is not the target and did not lead waits for the target as before."""
    n1 = Node(state=state_of(Role.PASSIVE, 3, next_id=50))

    def pending(t: float) -> Obs:
        return (
            Obs(t)
            .lease_free(3)
            .last_leader(PEER, 3, 9200, clean=True)
            .switchover(PEER, deadline_in=20.0)
            .peer_member(Role.PASSIVE, eligible=True, lsn=9200)
            .peer_db(PeerDb.DOWN)
            .db_replica(9200, streaming=False, received_age=None)
        )

    n1.see(pending(400.0)).expect(Role.PASSIVE, "switchover_elsewhere")
    n1.see(pending(400.0 + SETTINGS.handover_grace + 1.0)).expect(
        Role.PASSIVE, "switchover_elsewhere"
    )


def test_a_passive_killed_while_it_fenced_judges_itself_from_the_last_position_written() -> None:
    """n1 took epoch 4 after n2's crash and was killed while fencing, before it promoted.
    Started again it knows nothing in memory; the position n2 wrote as the active of epoch 3
    still says how far behind it may be."""
    restarted = Node()
    back = (
        Obs(50.0)
        .lease_free(4)
        .position(PEER, 3, 5000, timeline=1)
        .no_peer_member()
        .peer_db(PeerDb.UNREACHABLE)
        .db_replica(4990, streaming=False, received_age=None, timeline=1)
    )
    restarted.see(back).expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_a_primary_promoted_by_a_takeover_that_died_before_recording_its_epoch_leads() -> None:
    """Killed between pg_promote and recording epoch 4: the database is a primary of epoch 3 by
    its record, but on timeline 2, beyond the timeline n2 served on (position, timeline 1). It
    holds everything n2 had: it leads; stopping it would leave the site without a primary."""
    restarted = Node()
    back = (
        Obs(60.0)
        .lease_free(4)
        .position(PEER, 3, 5000, timeline=1)
        .no_peer_member()
        .peer_db(PeerDb.UNREACHABLE)
        .db(DatabaseStatus(DbRole.PRIMARY, lsn=5100, recorded_epoch=3, timeline=2))
    )
    restarted.see(back).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    stale = Node()
    old = back.db(DatabaseStatus(DbRole.PRIMARY, lsn=5100, recorded_epoch=3, timeline=1))
    stale.see(old).expect(Role.FENCED, "stale_primary", "RemoveVip", "StopDatabase", "RecordEvent")

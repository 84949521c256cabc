"""Table tests for the decision core: one transition of the roles table per test (or row).

Every test starts from a state the node could be in, shows it one observation (built with
``corekit.Obs``: only what differs from a healthy passive replica is said) and checks the role it
ends in, the reason code and the actions, in order (``Publish`` left out).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from corekit import (
    MB,
    NODE,
    PEER,
    SETTINGS,
    Node,
    Obs,
    names,
    run,
    state_of,
)

from failoverd import core
from failoverd.core import (
    AcquireLease,
    AddVip,
    ClearSwitchover,
    DatabaseStatus,
    DbRole,
    Demotion,
    FenceOutcome,
    FencePeer,
    InspectRejoin,
    PeerDb,
    Pending,
    Promote,
    Publish,
    RecordEvent,
    ReleaseLease,
    Role,
    StartReplica,
    State,
    StopDatabase,
    Takeover,
    ZkState,
    eligibility,
    format_bytes,
)

EPOCH = 3


def active_obs(now: float = 100.0, epoch: int = EPOCH) -> Obs:
    """n1 holds the lease and runs the primary; n2 is a healthy, eligible replica."""
    return (
        Obs(now)
        .lease_mine(epoch)
        .db_primary(lsn=9000, recorded_epoch=epoch)
        .peer_member(Role.PASSIVE, eligible=True)
        .peer_db(PeerDb.REPLICA)
    )


def free_obs(now: float = 100.0, epoch: int = EPOCH) -> Obs:
    """The lease is free under ``epoch`` (the peer's lease expired); the peer cannot be reached."""
    return Obs(now).lease_free(epoch).peer_db(PeerDb.UNREACHABLE).no_peer_member()


def passive(highest: int = EPOCH, **changes: Any) -> State:
    return replace(State(role=Role.PASSIVE, highest_epoch=highest, next_id=100), **changes)


def active(epoch: int = EPOCH, **changes: Any) -> State:
    return state_of(Role.ACTIVE, epoch, **changes)


def promoting(epoch: int = EPOCH, *, fence_needed: bool = False, **changes: Any) -> State:
    t = Takeover(
        kind="failover",
        from_node=PEER,
        started_at=90.0,
        fence_needed=fence_needed,
        last_mark=90.0,
    )
    return state_of(Role.PROMOTING, epoch, takeover=t, **changes)


def demoting(epoch: int = EPOCH, kind: str = "stepdown", **changes: Any) -> State:
    changes.setdefault("demotion", Demotion(kind=kind, started_at=90.0))
    return state_of(Role.DEMOTING, epoch, **changes)


def pending(kind: str, at: float = 99.0, action_id: int = 99) -> Pending:
    return Pending(action_id, kind, at)


# --------------------------------------------------------------------------------------------
# Self-fence: every node that may hold the VIP, from the send time of the last round-trip
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ACTIVE, Role.PROMOTING, Role.DEMOTING])
@pytest.mark.parametrize("silent_for", [5.0, 5.001, 7.5, 60.0])
def test_self_fences_once_self_fence_after_has_passed_since_the_roundtrip_send_time(
    role: Role, silent_for: float
) -> None:
    state = {Role.ACTIVE: active(), Role.PROMOTING: promoting(), Role.DEMOTING: demoting()}[role]
    seen = Node(state=state).see(active_obs().roundtrip(silent_for))
    seen.expect(Role.FENCED, "self_fenced", "RemoveVip", "StopDatabase", "RunHook")
    assert seen.one(StopDatabase).mode == "fast"
    assert f"no ZooKeeper round-trip for {silent_for:.2f} s (self_fence_after 5 s)" in seen.text


@pytest.mark.parametrize("role", [Role.ACTIVE, Role.PROMOTING, Role.DEMOTING])
def test_self_fences_when_there_never_was_a_roundtrip(role: Role) -> None:
    state = {Role.ACTIVE: active(), Role.PROMOTING: promoting(), Role.DEMOTING: demoting()}[role]
    seen = Node(state=state).see(active_obs().no_roundtrip())
    seen.expect(Role.FENCED, "self_fenced", "RemoveVip", "StopDatabase", "RunHook")
    assert "no ZooKeeper round-trip since this process started" in seen.text


def test_active_keeps_serving_just_before_the_self_fence_deadline() -> None:
    Node(state=active()).see(active_obs().roundtrip(4.999)).expect(Role.ACTIVE, "active")


def test_self_fence_counts_from_the_send_time_not_from_kazoo_suspended() -> None:
    # kazoo still says CONNECTED (it can be 2/3 T late): the round-trip send time decides.
    obs = active_obs().zk(ZkState.CONNECTED).roundtrip(5.0)
    Node(state=active()).see(obs).expect(Role.FENCED, "self_fenced", *SELF_FENCE)
    # ... and SUSPENDED alone, with a fresh round-trip, is no reason to go down.
    obs = active_obs().zk(ZkState.SUSPENDED, changed_at=99.0).roundtrip(1.0)
    Node(state=active()).see(obs).expect(Role.ACTIVE, "active")


SELF_FENCE = ("RemoveVip", "StopDatabase", "RunHook")


def test_self_fence_without_a_managed_database_removes_the_vip_only() -> None:
    obs = active_obs().unmanaged().roundtrip(6.0)
    Node(state=active()).see(obs).expect(Role.FENCED, "self_fenced", "RemoveVip", "RunHook")


def test_self_fence_comes_before_the_paused_flag() -> None:
    obs = active_obs().paused().roundtrip(6.0)
    Node(state=active()).see(obs).expect(Role.FENCED, "self_fenced", *SELF_FENCE)


def test_self_fence_supersedes_the_action_in_flight() -> None:
    state = promoting(pending=pending("Promote"))
    seen = Node(state=state).see(active_obs().db_replica().roundtrip(6.0))
    seen.expect(Role.FENCED, "self_fenced", *SELF_FENCE)
    assert seen.state.pending is not None
    assert seen.state.pending.kind == "StopDatabase"


def test_passive_node_with_a_stale_roundtrip_has_nothing_to_fence() -> None:
    seen = Node(state=passive(1)).see(Obs().roundtrip(30.0))
    assert seen.role is Role.PASSIVE
    assert seen.did == []


def test_fenced_node_whose_session_survived_releases_the_lease_with_its_final_lsn() -> None:
    node = Node(state=active())
    node.see(active_obs(100).roundtrip(5.5)).expect(Role.FENCED, "self_fenced", *SELF_FENCE)
    stopped = active_obs(101).db_stopped(was_primary=True, clean=True, lsn=9100)
    seen = node.see(stopped.answer(node.state, final_lsn=9100, clean=True).roundtrip(0.1))
    seen.expect(Role.FENCED, "fenced_release", "ReleaseLease")
    release = seen.one(ReleaseLease)
    assert (release.epoch, release.final_lsn, release.clean) == (EPOCH, 9100, True)


def test_fenced_node_whose_stop_was_not_clean_releases_the_lease_dirty() -> None:
    node = Node(state=active())
    node.see(active_obs(100).roundtrip(5.5))
    stopped = active_obs(101).db_stopped(was_primary=True, clean=False)
    seen = node.see(stopped.answer(node.state, final_lsn=9100, clean=False).roundtrip(0.1))
    assert seen.one(ReleaseLease).clean is False


def test_fenced_node_with_a_stopped_ex_primary_compares_histories_before_it_follows() -> None:
    state = state_of(Role.FENCED, EPOCH)
    obs = Obs().lease_peer(EPOCH + 1).db_stopped(was_primary=True, clean=True)
    seen = Node(state=state).see(obs).expect(Role.FENCED, "inspecting", "InspectRejoin")
    assert seen.one(InspectRejoin).primary == PEER


def test_fenced_node_rejoined_as_a_replica_becomes_passive() -> None:
    state = state_of(Role.FENCED, EPOCH)
    obs = Obs().lease_peer(EPOCH + 1)
    Node(state=state).see(obs).expect(Role.PASSIVE, "passive")


def test_fenced_node_retries_a_stop_that_failed_in_immediate_mode() -> None:
    # "stops PostgreSQL: fast mode, immediate if that hangs" (DESIGN, Timing and safety).
    node = Node(state=active())
    node.see(active_obs(100).roundtrip(5.5)).expect(Role.FENCED, "self_fenced", *SELF_FENCE)
    still_primary = active_obs(111).roundtrip(20)  # the fast stop gave no result in time
    seen = node.see(still_primary)
    assert seen.role is Role.FENCED
    assert seen.one(StopDatabase).mode == "immediate"


# --------------------------------------------------------------------------------------------
# Starting: safe start-up from whatever is found
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obs", "missing"),
    [
        (Obs().no_cluster(), "ZooKeeper view not read yet"),
        (Obs().no_roundtrip(), "no fresh ZooKeeper round-trip yet"),
        (Obs().roundtrip(5.0), "no fresh ZooKeeper round-trip yet"),
        (Obs().checks_incomplete(), "checks have not all reported yet"),
        (Obs().db_unknown(), "local database state unknown"),
        (Obs().peer_db(PeerDb.UNKNOWN), "peer database not probed yet"),
    ],
)
def test_starting_waits_for_a_full_first_observation(obs: Obs, missing: str) -> None:
    seen = Node().see(obs).expect(Role.STARTING, "waiting_for_observation")
    assert seen.text == f"starting: {missing}"


def test_starting_with_the_peer_active_and_a_replica_becomes_passive() -> None:
    Node().see(Obs().lease_peer(EPOCH)).expect(Role.PASSIVE, "passive")


def test_starting_finds_a_stale_primary_while_the_peer_holds_the_lease_and_fences_it() -> None:
    seen = Node().see(Obs().lease_peer(EPOCH).db_primary(recorded_epoch=EPOCH - 1))
    seen.expect(Role.FENCED, "stale_primary", "RemoveVip", "StopDatabase", "RecordEvent")
    assert seen.one(RecordEvent).kind == "fence"


def test_starting_finds_a_primary_of_an_older_epoch_with_the_lease_free_and_fences_it() -> None:
    obs = free_obs(epoch=5).db_primary(recorded_epoch=4)
    seen = Node().see(obs)
    seen.expect(Role.FENCED, "stale_primary", "RemoveVip", "StopDatabase", "RecordEvent")
    assert "from epoch 4, cluster is at epoch 5" in seen.text


def test_starting_crashed_ex_primary_rejoins_by_comparing_histories_first() -> None:
    obs = Obs().lease_peer(EPOCH).db_stopped(was_primary=True, clean=False)
    Node().see(obs).expect(Role.FENCED, "inspecting", "InspectRejoin")


def test_starting_crashed_ex_primary_must_rejoin_even_when_the_lease_is_free() -> None:
    obs = free_obs().db_stopped(was_primary=True, clean=False)
    Node().see(obs).expect(Role.FENCED, "must_rejoin")


def test_starting_with_a_stopped_replica_starts_it_as_a_replica_of_the_active() -> None:
    obs = Obs().lease_peer(EPOCH).db_stopped(was_primary=False, clean=True)
    seen = Node().see(obs).expect(Role.PASSIVE, "start_replica", "StartReplica")
    assert seen.one(StartReplica).primary == PEER


def test_starting_with_both_databases_primary_takes_nothing() -> None:
    obs = free_obs().db_primary(recorded_epoch=EPOCH).peer_db(PeerDb.PRIMARY)
    seen = Node().see(obs).expect(Role.STARTING, "two_primaries")
    assert "resolve by hand" in seen.text


def test_starting_primary_of_a_fresh_cluster_acquires_the_first_epoch() -> None:
    obs = Obs().lease_free(0).db_primary().peer_db(PeerDb.REPLICA).no_peer_member()
    seen = Node().see(obs).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    assert seen.one(AcquireLease).expected_epoch == 0


def test_starting_primary_of_the_latest_epoch_readopts_it() -> None:
    obs = free_obs().db_primary(recorded_epoch=EPOCH).peer_db(PeerDb.REPLICA)
    seen = Node().see(obs).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    assert seen.one(AcquireLease).expected_epoch == EPOCH
    assert seen.state.takeover is not None
    assert seen.state.takeover.kind == "readopt"


def test_starting_clean_last_leader_with_a_cleanly_stopped_primary_readopts() -> None:
    obs = (
        free_obs()
        .last_leader(NODE, EPOCH, 9000, clean=True)
        .db_stopped(was_primary=True, clean=True)
    )
    Node().see(obs).expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_resumed_still_holding_the_lease_with_a_primary_is_active_again() -> None:
    state = active(role=Role.PAUSED, paused_from=Role.ACTIVE)
    seen = Node(state=state).see(active_obs())
    seen.expect(Role.ACTIVE, "active_resumed", "AddVip")
    vip = seen.one(AddVip)
    assert (vip.epoch, vip.not_after) == (EPOCH, 99.8 + SETTINGS.self_fence_after)


def test_resumed_still_holding_the_lease_with_a_replica_hands_it_back() -> None:
    state = active(role=Role.PAUSED, paused_from=Role.ACTIVE)
    seen = Node(state=state).see(active_obs().db_replica())
    seen.expect(Role.DEMOTING, "aborted", "RemoveVip")


def test_starting_holding_a_lease_it_never_heard_of_carries_on_with_the_takeover() -> None:
    # Only our own AcquireLease can have made the lease ours: its result was lost.
    seen = Node().see(active_obs())
    seen.expect(Role.PROMOTING, "fencing", "FencePeer")


def test_shutdown_while_starting_exits_at_once() -> None:
    seen = Node().see(Obs().no_cluster().shutdown()).expect(Role.STARTING, "shutdown")
    assert seen.state.exit


# --------------------------------------------------------------------------------------------
# Passive: the lease is taken only when free, eligible and safe
# --------------------------------------------------------------------------------------------


def test_passive_stays_passive_while_the_peer_holds_the_lease() -> None:
    seen = Node(state=passive()).see(Obs().lease_peer(EPOCH)).expect(Role.PASSIVE, "passive")
    assert seen.text == f"{PEER} is active (epoch {EPOCH}); eligible"


def test_passive_acquires_a_free_lease_with_the_epoch_it_read() -> None:
    seen = Node(state=passive()).see(free_obs())
    seen.expect(Role.PASSIVE, "acquiring", "AcquireLease")
    assert seen.one(AcquireLease).expected_epoch == EPOCH
    # What the takeover rests on is said with it.
    assert seen.text.startswith(f"lease free: acquiring it (epoch {EPOCH + 1}): "), seen.text
    assert "replica" in seen.text or "checks passing" in seen.text, seen.text


def test_passive_waits_for_a_direct_probe_of_the_peer() -> None:
    seen = Node(state=passive()).see(free_obs().peer_db(PeerDb.UNKNOWN))
    seen.expect(Role.PASSIVE, "waiting_for_probe")


@pytest.mark.parametrize("probe", [PeerDb.REPLICA, PeerDb.DOWN, PeerDb.UNREACHABLE])
def test_passive_acquires_when_the_peer_database_is_not_a_primary(probe: PeerDb) -> None:
    seen = Node(state=passive()).see(free_obs().peer_db(probe))
    seen.expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_passive_fences_a_peer_that_answers_as_primary_before_taking_the_lease() -> None:
    node = Node(state=passive())
    seen = node.see(free_obs(100).peer_db(PeerDb.PRIMARY))
    seen.expect(Role.PASSIVE, "fence_before_lease", "FencePeer")
    assert seen.one(FencePeer).epoch == EPOCH
    fenced = free_obs(101).peer_db(PeerDb.PRIMARY, ago=0.5)  # probed before the fence landed
    seen = node.see(fenced.answer(node.state, fence=FenceOutcome.FENCED))
    seen.expect(Role.PASSIVE, "acquiring", "RecordEvent", "AcquireLease")


def test_passive_fences_again_when_a_probe_after_the_fence_still_says_primary() -> None:
    state = passive(peer_fenced_at=100.0)
    seen = Node(state=state).see(free_obs(102).peer_db(PeerDb.PRIMARY, ago=1.0))
    seen.expect(Role.PASSIVE, "fence_before_lease", "FencePeer")


@pytest.mark.parametrize("outcome", [FenceOutcome.FAILED, FenceOutcome.UNREACHABLE, None], ids=str)
def test_passive_does_not_take_the_lease_when_the_fence_of_a_live_primary_fails(
    outcome: FenceOutcome | None,
) -> None:
    node = Node(state=passive())
    node.see(free_obs(100).peer_db(PeerDb.PRIMARY))
    answered = free_obs(101).peer_db(PeerDb.PRIMARY).answer(node.state, ok=False, fence=outcome)
    seen = node.see(answered).expect(Role.PASSIVE, None, "RecordEvent")
    # Every level failed: only a person can end that wait, and the node says so.
    wait = "fencing_exhausted" if outcome is FenceOutcome.FAILED else "retry_wait"
    assert seen.code == wait
    event = seen.one(RecordEvent)
    expected = {
        FenceOutcome.FAILED: ("fence_failed", "fencing_exhausted"),  # reached it, failed
        FenceOutcome.UNREACHABLE: ("fence", "fence_blocked"),
        None: ("fence_failed", "fence_blocked"),  # no answer at all
    }[outcome]
    assert (event.kind, event.reason.code) == expected
    assert seen.state.retry_after == 101 + SETTINGS.fence_retry_after
    node.see(free_obs(105).peer_db(PeerDb.PRIMARY)).expect(Role.PASSIVE, wait)
    seen = node.see(free_obs(106).peer_db(PeerDb.PRIMARY))
    seen.expect(Role.PASSIVE, "fence_before_lease", "FencePeer")


MAX_LAG = "max_lag_on_failover 16 MB"


@pytest.mark.parametrize(
    ("obs", "why"),
    [
        (
            free_obs().db_replica(lsn=100 * MB).peer_member(Role.ACTIVE, lsn=134 * MB),
            f"replica lag 34 MB > {MAX_LAG}",
        ),
        (
            free_obs().db_replica(lsn=100 * MB).peer_member(Role.ACTIVE, lsn=116 * MB + MB // 2),
            f"replica lag 16.5 MB > {MAX_LAG}",
        ),
        (free_obs().db_replica(lsn=100 * MB).peer_member(Role.ACTIVE, lsn=116 * MB), None),
        (free_obs().db_replica(streaming=False, received_age=30.0), None),
        (
            free_obs().db_replica(streaming=False, received_age=31.5),
            "WAL receiver not streaming, last WAL received 31.5 s ago "
            "(max_replication_silence 30 s)",
        ),
        (
            free_obs().db_replica(streaming=False, received_age=None),
            "WAL receiver not streaming, last WAL received never, and no record of the active's "
            "position to judge its lag by",
        ),
        (free_obs().check_failing("app", "HTTP 503"), "check app failing: HTTP 503"),
        (free_obs().check_failing("squid", "slow: 2.1 s"), "check squid failing: slow: 2.1 s"),
        (free_obs().checks_incomplete(), "checks have not all reported yet"),
        (free_obs().db_unknown(), "database is unknown, not a replica"),
        (
            free_obs().db(DatabaseStatus(DbRole.REPLICA, lsn=None, streaming=True)),
            "received LSN unknown",
        ),
    ],
)
def test_passive_not_eligible_says_why(obs: Obs, why: str | None) -> None:
    seen = Node(state=passive()).see(obs)
    if why is None:  # within the limit: eligible after all
        seen.expect(Role.PASSIVE, "acquiring", "AcquireLease")
        return
    seen.expect(Role.PASSIVE, "not_eligible")
    assert seen.text == f"lease free but not eligible: {why}"


def test_passive_lag_is_measured_against_the_lsn_remembered_after_the_record_vanished() -> None:
    node = Node(state=passive())
    node.see(Obs(99).lease_peer(EPOCH).peer_member(Role.ACTIVE, lsn=134 * MB))
    seen = node.see(free_obs(100).db_replica(lsn=100 * MB))  # the active's record is gone
    seen.expect(Role.PASSIVE, "not_eligible")
    assert "replica lag 34 MB > max_lag_on_failover 16 MB" in seen.text


def test_passive_tagged_nofailover_never_takes_over() -> None:
    settings = replace(SETTINGS, nofailover=True)
    seen = Node(settings, passive()).see(free_obs()).expect(Role.PASSIVE, "not_eligible")
    assert seen.text == "lease free but not eligible: tagged nofailover"


def test_passive_publishes_its_eligibility_and_the_reason() -> None:
    seen = Node(state=passive()).see(Obs().lease_peer(EPOCH).check_failing("app", "HTTP 503"))
    [publish] = [a for a in seen.actions if isinstance(a, Publish)]
    assert publish.status.eligible is False
    assert publish.status.reason_code == "passive"
    assert "check app failing: HTTP 503" in publish.status.reason


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 kB"),
        (16 * MB, "16 MB"),
        (34 * MB, "34 MB"),
        (MB + MB // 2, "1.5 MB"),
        (3 << 30, "3 GB"),
    ],
)
def test_format_bytes_reads_like_postgresql(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_eligibility_is_refused_while_paused() -> None:
    ok, why = eligibility(SETTINGS, passive(), free_obs().paused().build())
    assert (ok, why) == (False, "cluster paused")


def test_passive_waits_for_replay_up_to_the_final_lsn_of_a_clean_step_down() -> None:
    base = free_obs().last_leader(PEER, EPOCH, 9000, clean=True).peer_db(PeerDb.REPLICA)
    seen = Node(state=passive()).see(replace_db(base, replayed=8999))
    seen.expect(Role.PASSIVE, "waiting_for_replay")
    assert (
        seen.text
        == f"{PEER} stepped down at LSN 0/2328; replayed 0/2327: waiting before taking over"
    )
    seen = Node(state=passive()).see(replace_db(base, replayed=None))
    seen.expect(Role.PASSIVE, "waiting_for_replay")
    seen = Node(state=passive()).see(replace_db(base, replayed=9000))
    seen.expect(Role.PASSIVE, "acquiring", "AcquireLease")


def replace_db(obs: Obs, replayed: int | None) -> Obs:
    return obs.db(
        DatabaseStatus(
            DbRole.REPLICA, lsn=9000, replayed_lsn=replayed, streaming=True, last_received_age=0.1
        )
    )


@pytest.mark.parametrize("probe", [PeerDb.PRIMARY, PeerDb.UNREACHABLE])
def test_passive_does_not_act_on_a_lease_view_it_cannot_vouch_for(probe: PeerDb) -> None:
    # ZooKeeper unreachable for a minute: the lease "free" in the view may have been taken long
    # since; fencing the peer on that view could take down a healthy active.
    stale = free_obs().peer_db(probe).roundtrip(60.0).zk(ZkState.SUSPENDED, changed_at=40.0)
    seen = Node(state=passive()).see(stale)
    assert seen.role is Role.PASSIVE
    assert seen.did == []


def test_passive_refuses_a_regressed_epoch() -> None:
    seen = Node(state=passive(highest=7)).see(free_obs(epoch=5))
    seen.expect(Role.PASSIVE, "epoch_regressed")
    assert "ZooKeeper's epoch 5 is below 7" in seen.text


def test_passive_refuses_an_acquisition_result_below_the_highest_epoch_seen() -> None:
    state = passive(highest=7, pending=pending("AcquireLease"))
    seen = Node(state=state).see(free_obs(epoch=7).result(99, epoch=6))
    assert seen.role is Role.PASSIVE
    assert seen.code != "lease_acquired"
    assert "Promote" not in seen.did and "FencePeer" not in seen.did
    assert seen.state.epoch == 0


def test_passive_shutdown_exits_without_actions() -> None:
    seen = Node(state=passive()).see(Obs().lease_peer(EPOCH).shutdown())
    seen.expect(Role.PASSIVE, "shutdown")
    assert seen.state.exit


def test_passive_does_not_take_the_lease_back_from_a_healthy_active() -> None:
    # No automatic fail-back: the node that was active before has no preference at all.
    state = passive(last_failover_at=10.0, epoch=EPOCH - 1)
    seen = Node(state=state).see(Obs(500).lease_peer(EPOCH))
    seen.expect(Role.PASSIVE, "passive")


# --------------------------------------------------------------------------------------------
# Passive -> promoting: the acquisition result
# --------------------------------------------------------------------------------------------


def test_acquired_after_an_expired_lease_fences_before_promoting() -> None:
    state = passive(pending=pending("AcquireLease"))
    seen = Node(state=state).see(Obs(100).lease_mine(EPOCH + 1).result(99, epoch=EPOCH + 1))
    seen.expect(Role.PROMOTING, "fencing", "FencePeer")
    assert seen.one(FencePeer).epoch == EPOCH + 1
    assert seen.state.epoch == EPOCH + 1


def test_acquired_after_a_clean_release_promotes_without_fencing() -> None:
    state = passive(pending=pending("AcquireLease"))
    obs = Obs(100).lease_mine(EPOCH + 1).last_leader(PEER, EPOCH, 5000, clean=True)
    seen = Node(state=state).see(obs.result(99, epoch=EPOCH + 1))
    seen.expect(Role.PROMOTING, "promoting", "Promote")
    promote = seen.one(Promote)
    assert (promote.epoch, promote.not_after) == (EPOCH + 1, 99.8 + SETTINGS.self_fence_after)


def test_acquired_after_a_dirty_release_fences_too() -> None:
    state = passive(pending=pending("AcquireLease"))
    obs = Obs(100).lease_mine(EPOCH + 1).last_leader(PEER, EPOCH, None, clean=False)
    seen = Node(state=state).see(obs.result(99, epoch=EPOCH + 1))
    seen.expect(Role.PROMOTING, "fencing", "FencePeer")


def test_acquired_but_the_view_does_not_show_the_lease_yet() -> None:
    state = passive(pending=pending("AcquireLease"))
    seen = Node(state=state).see(free_obs().result(99, epoch=EPOCH + 1))
    seen.expect(Role.PROMOTING, "waiting_for_lease_view")


def test_acquisition_whose_result_was_lost_is_carried_on() -> None:
    state = passive(pending=pending("AcquireLease", at=80.0))  # timed out long ago
    seen = Node(state=state).see(Obs(100).lease_mine(EPOCH + 1))
    seen.expect(Role.PROMOTING, "fencing", "FencePeer")


def test_acquisition_whose_result_was_lost_is_carried_on_with_a_primary_database() -> None:
    # A re-adopting primary whose AcquireLease reply was lost: the lease it now holds followed
    # an expired one, so the peer is fenced before the VIP comes up, as on the normal path.
    state = passive(pending=pending("AcquireLease", at=80.0))
    obs = Obs(100).lease_mine(EPOCH + 1).db_primary(recorded_epoch=EPOCH).peer_db(PeerDb.REPLICA)
    seen = Node(state=state).see(obs)
    assert "AddVip" not in seen.did
    seen.expect(Role.PROMOTING, "fencing", "FencePeer")


def test_a_fence_before_an_earlier_lease_does_not_count_for_a_later_expiry() -> None:
    # The passive fenced n2 (FENCED) while epoch 3's lease was free, then did not observe anything
    # for a while: n2 came back, took epoch 4 and its lease expired in turn. Epoch 4's holder was
    # never fenced: taking epoch 5 must fence it first.
    state = passive(
        highest=EPOCH, lease_free_since=90.0, peer_fenced_at=91.0, peer_fence_sent_at=90.5
    )
    node = Node(state=state)
    seen = node.see(free_obs(150, epoch=EPOCH + 1))
    seen.expect(Role.PASSIVE, "acquiring", "AcquireLease")
    seen = node.see(Obs(151).lease_mine(EPOCH + 2).answer(node.state, epoch=EPOCH + 2))
    seen.expect(Role.PROMOTING, "fencing", "FencePeer")


def test_a_fence_sent_before_a_later_expiry_does_not_count_for_it() -> None:
    # The fence was sent while epoch 3's lease was free and answered late: meanwhile n2 took
    # epoch 4 and gave it back dirty. The fence may have hit n2 before it took epoch 4.
    node = Node(state=passive())
    seen = node.see(free_obs(100).peer_db(PeerDb.PRIMARY))
    seen.expect(Role.PASSIVE, "fence_before_lease", "FencePeer")
    node.see(Obs(101).lease_peer(EPOCH + 1).peer_db(PeerDb.PRIMARY))
    dirty = free_obs(103, epoch=EPOCH + 1).last_leader(PEER, EPOCH + 1, None, clean=False)
    node.see(dirty.peer_db(PeerDb.DOWN))
    answered = free_obs(104, epoch=EPOCH + 1).last_leader(PEER, EPOCH + 1, None, clean=False)
    seen = node.see(answered.peer_db(PeerDb.DOWN).answer(node.state, fence=FenceOutcome.FENCED))
    seen.expect(Role.PASSIVE, "acquiring", "RecordEvent", "AcquireLease")
    got = Obs(105).lease_mine(EPOCH + 2).last_leader(PEER, EPOCH + 1, None, clean=False)
    seen = node.see(got.answer(node.state, epoch=EPOCH + 2))
    seen.expect(Role.PROMOTING, "fencing", "FencePeer")


def test_a_fence_after_the_lease_went_free_counts_for_the_takeover() -> None:
    node = Node(state=passive())
    seen = node.see(free_obs(100).peer_db(PeerDb.PRIMARY))
    seen.expect(Role.PASSIVE, "fence_before_lease", "FencePeer")
    seen = node.see(free_obs(101).answer(node.state, fence=FenceOutcome.FENCED))
    seen.expect(Role.PASSIVE, "acquiring", "RecordEvent", "AcquireLease")
    seen = node.see(Obs(102).lease_mine(EPOCH + 1).answer(node.state, epoch=EPOCH + 1))
    seen.expect(Role.PROMOTING, "promoting", "Promote")


# --------------------------------------------------------------------------------------------
# Promoting: fence if needed, promote, VIP last
# --------------------------------------------------------------------------------------------


def promoting_obs(now: float = 100.0) -> Obs:
    return Obs(now).lease_mine(EPOCH).no_peer_member().peer_db(PeerDb.UNREACHABLE)


@pytest.mark.parametrize("outcome", [FenceOutcome.FENCED, FenceOutcome.UNREACHABLE])
def test_promoting_promotes_after_a_fence_that_fenced_or_found_nobody(
    outcome: FenceOutcome,
) -> None:
    state = promoting(fence_needed=True, pending=pending("FencePeer"))
    obs = promoting_obs().result(99, ok=True, detail="ssh", fence=outcome)
    seen = Node(state=state).see(obs).expect(Role.PROMOTING, "promoting", "RecordEvent", "Promote")
    assert seen.one(RecordEvent).kind == "fence"
    assert seen.one(Promote).epoch == EPOCH
    assert (seen.state.peer_fenced_at == 100.0) is (outcome is FenceOutcome.FENCED)


@pytest.mark.parametrize("answer", ["failed", "timeout"])
def test_promoting_does_not_promote_when_the_fence_reached_the_peer_and_failed(
    answer: str,
) -> None:
    state = promoting(fence_needed=True, pending=pending("FencePeer"))
    if answer == "failed":
        obs = promoting_obs().result(99, ok=False, detail="exit 1", fence=FenceOutcome.FAILED)
    else:
        obs = promoting_obs(99.0 + SETTINGS.action_timeout + 0.5)
    seen = Node(state=state).see(obs)
    seen.expect(Role.PASSIVE, "fence_failed", "RecordEvent", "ReleaseLease")
    release = seen.one(ReleaseLease)
    assert (release.epoch, release.clean, release.final_lsn) == (EPOCH, False, None)
    assert seen.state.retry_after == obs.now + SETTINGS.fence_retry_after
    assert seen.one(RecordEvent).kind == "fence_failed"


def test_promoting_adds_the_vip_after_the_promotion() -> None:
    state = promoting(pending=pending("Promote"), promoted_epoch=EPOCH)
    obs = promoting_obs().db_primary(recorded_epoch=EPOCH).result(99)
    seen = Node(state=state).see(obs).expect(Role.PROMOTING, "adding_vip", "AddVip")
    vip = seen.one(AddVip)
    assert (vip.epoch, vip.not_after) == (EPOCH, 99.8 + SETTINGS.self_fence_after)


def test_promoting_becomes_active_when_the_vip_is_up() -> None:
    t = Takeover(
        kind="failover",
        from_node=PEER,
        started_at=90.0,
        promoted=True,
        last_mark=95.0,
        lease_free_since=80.0,  # the lease went free at 80; the takeover began at 90
    )
    state = state_of(Role.PROMOTING, EPOCH, takeover=t, pending=pending("AddVip"))
    seen = Node(state=state).see(promoting_obs().db_primary(recorded_epoch=EPOCH).result(99))
    seen.expect(Role.ACTIVE, "active", "RecordEvent", "RunHook")
    event = seen.one(RecordEvent)
    assert (event.kind, event.from_node, event.to_node) == ("failover", PEER, NODE)
    # Nothing known of the old active's last sign of life: counted from the lease going free.
    assert event.phases == (("wait", 10.0), ("vip", 5.0), ("promotion", 20.0), ("total", 20.0))
    assert seen.state.last_failover_at == 100.0


@pytest.mark.parametrize(
    ("kind", "total"),
    [("failover", 30.0), ("stepdown", 30.0), ("switchover", 20.0), ("readopt", 20.0)],
)
def test_a_failover_counts_from_the_old_actives_last_sign_of_life(kind: str, total: float) -> None:
    """The peer was last seen alive at 70 (a crash, then a session timeout until the lease went
    free at 80): the outage is 30 s, 20 of them after the lease. A switchover is asked of a live
    active and counts from the lease; a re-adoption replaced nobody."""
    t = Takeover(
        kind=kind,
        from_node=PEER if kind != "readopt" else NODE,
        started_at=90.0,
        promoted=True,
        last_mark=95.0,
        lease_free_since=80.0,
        peer_alive_at=70.0,
    )
    state = state_of(Role.PROMOTING, EPOCH, takeover=t, pending=pending("AddVip"))
    seen = Node(state=state).see(promoting_obs().db_primary(recorded_epoch=EPOCH).result(99))
    seen.expect(Role.ACTIVE, "active", "RecordEvent", "RunHook")
    phases = dict(seen.one(RecordEvent).phases)
    assert phases["total"] == total and phases["promotion"] == 20.0
    assert phases.get("silence") == (10.0 if total == 30.0 else None)
    assert f"in {total:.2f} s" in seen.step.reason.text


@pytest.mark.parametrize("kind", ["Promote", "AddVip"])
@pytest.mark.parametrize("answer", ["failed", "timeout"])
def test_promoting_hands_back_when_a_step_fails(kind: str, answer: str) -> None:
    state = promoting(pending=pending(kind), promoted_epoch=EPOCH)
    now = 100.0 if answer == "failed" else 99.0 + SETTINGS.action_timeout + 0.1
    obs = promoting_obs(now)
    if answer == "failed":
        obs = obs.result(99, ok=False, detail="boom")
    seen = Node(state=state).see(obs).expect(Role.DEMOTING, "aborted", "RemoveVip")
    assert seen.state.demotion is not None


def test_an_action_is_not_timed_out_at_exactly_action_timeout() -> None:
    state = promoting(pending=pending("Promote", at=90.0), promoted_epoch=EPOCH)
    seen = Node(state=state).see(promoting_obs(90.0 + SETTINGS.action_timeout))
    assert seen.role is Role.PROMOTING
    assert seen.did == []


def test_promoting_never_promotes_twice_under_one_epoch() -> None:
    state = promoting(promoted_epoch=EPOCH)
    seen = Node(state=state).see(promoting_obs())
    seen.expect(Role.DEMOTING, "aborted", "RemoveVip")
    assert "already tried" in seen.text


def test_promoting_loses_the_lease_before_promoting_back_to_passive() -> None:
    seen = Node(state=promoting()).see(Obs().lease_peer(EPOCH + 1))
    seen.expect(Role.PASSIVE, "lease_lost")


def test_promoting_loses_the_lease_after_promoting_demotes() -> None:
    state = promoting(promoted_epoch=EPOCH)
    seen = Node(state=state).see(Obs().lease_peer(EPOCH + 1).db_primary(recorded_epoch=EPOCH))
    seen.expect(Role.DEMOTING, "lease_lost", "RemoveVip")


def test_promoting_shutdown_hands_back() -> None:
    seen = Node(state=promoting()).see(promoting_obs().shutdown())
    seen.expect(Role.DEMOTING, "shutdown", "RemoveVip")


# --------------------------------------------------------------------------------------------
# Active: keep serving, or hand over
# --------------------------------------------------------------------------------------------


def test_active_keeps_serving() -> None:
    seen = Node(state=active()).see(active_obs()).expect(Role.ACTIVE, "active")
    assert seen.text == f"active (epoch {EPOCH})"


def test_active_steps_down_when_its_checks_fall_and_the_peer_is_eligible() -> None:
    seen = Node(state=active()).see(active_obs().check_failing("app", "HTTP 503"))
    seen.expect(Role.DEMOTING, "stepdown", "RemoveVip")
    assert seen.text == f"own checks failing (app: HTTP 503); {PEER} eligible: stepping down"


@pytest.mark.parametrize(
    ("peer", "why"),
    [
        (
            lambda o: o.peer_member(Role.PASSIVE, eligible=False, reason="replica lag 34 MB"),
            f"{PEER} not eligible: replica lag 34 MB",
        ),
        (lambda o: o.no_peer_member(), f"{PEER} has no member record (daemon down?)"),
        (lambda o: o.peer_malformed("bad JSON"), f"{PEER}'s member record is malformed: bad JSON"),
        (lambda o: o.peer_member(Role.PASSIVE, age=4.5), f"{PEER}'s record is stale (4.5 s old)"),
    ],
)
def test_active_stays_when_its_checks_fall_but_the_peer_cannot_take_over(
    peer: object, why: str
) -> None:
    obs = peer(active_obs().check_failing("app", "HTTP 503"))  # type: ignore[operator]
    seen = Node(state=active()).see(obs).expect(Role.ACTIVE, "degraded")
    assert seen.text == f"own checks failing (app: HTTP 503) but {why}: staying active"


def test_active_stays_within_min_failover_interval_of_the_last_failover() -> None:
    state = active(last_failover_at=80.0)
    seen = Node(state=state).see(active_obs(100).check_failing())
    seen.expect(Role.ACTIVE, "degraded")
    assert "last failover was 20 s ago (min_failover_interval 30 s)" in seen.text
    seen = Node(state=state).see(active_obs(110).check_failing())
    seen.expect(Role.DEMOTING, "stepdown", "RemoveVip")


def test_active_with_checks_not_all_reported_does_not_step_down() -> None:
    obs = active_obs().check_failing().checks_incomplete()
    Node(state=active()).see(obs).expect(Role.ACTIVE, "active")


@pytest.mark.parametrize(
    "obs",
    [
        active_obs().lease_peer(EPOCH + 1),
        active_obs().lease_free(EPOCH),
        active_obs().lease_mine(EPOCH + 1),  # our session, but someone moved the epoch on
        active_obs().zk(ZkState.LOST),
    ],
    ids=["peer-holds-it", "free", "epoch-moved", "session-lost"],
)
def test_active_demotes_when_the_lease_is_lost(obs: Obs) -> None:
    seen = Node(state=active()).see(obs).expect(Role.DEMOTING, "lease_lost", "RemoveVip")
    assert seen.text == "demoted: lease lost"


def test_active_steps_down_on_a_suspended_view_that_shows_the_lease_taken() -> None:
    """A view read before the connection dropped is old, but ZooKeeper does not invent a lease:
    one of a newer epoch held by the peer is proof that ours is gone."""
    obs = active_obs().lease_peer(EPOCH + 1).zk(ZkState.SUSPENDED)
    Node(state=active()).see(obs).expect(Role.DEMOTING, "lease_lost", "RemoveVip")


def test_active_keeps_serving_on_a_suspended_view_that_still_shows_its_lease() -> None:
    obs = active_obs().zk(ZkState.SUSPENDED)
    Node(state=active()).see(obs).expect(Role.ACTIVE, "active")


def test_active_shutdown_steps_down_cleanly_releases_and_then_exits() -> None:
    node = Node(state=active())
    node.see(active_obs(100).shutdown()).expect(Role.DEMOTING, "shutdown", "RemoveVip")
    obs = active_obs(100.1).shutdown().answer(node.state)
    node.see(obs).expect(Role.DEMOTING, "shutdown", "StopDatabase")
    stopped = active_obs(101).shutdown().db_stopped(was_primary=True, clean=True, lsn=9100)
    seen = node.see(stopped.answer(node.state, final_lsn=9100, clean=True))
    seen.expect(Role.DEMOTING, "shutdown", "ReleaseLease")
    release = seen.one(ReleaseLease)
    assert (release.epoch, release.final_lsn, release.clean) == (EPOCH, 9100, True)
    assert not seen.state.exit
    released = (
        Obs(101.2)
        .shutdown()
        .lease_free(EPOCH)
        .last_leader(NODE, EPOCH, 9100)
        .db_stopped(was_primary=True, clean=True, lsn=9100)
    )
    seen = node.see(released.answer(node.state))
    seen.expect(Role.PASSIVE, "stopped", "RecordEvent", "RunHook")
    assert seen.state.exit


# -- switchover requests, seen by the active ------------------------------------------------


def test_switchover_to_an_eligible_peer_demotes() -> None:
    obs = active_obs().switchover(PEER, by="alice")
    seen = Node(state=active()).see(obs).expect(Role.DEMOTING, "switchover", "RemoveVip")
    assert seen.text == f"switchover to {PEER} requested by alice"


@pytest.mark.parametrize(
    "obs",
    [
        active_obs().switchover(PEER, deadline_in=-1.0),
        active_obs().switchover(PEER, deadline_in=0.0),
        active_obs().switchover(PEER, from_epoch=EPOCH - 1),
    ],
    ids=["expired", "expiring-now", "stale-epoch"],
)
def test_switchover_expired_or_stale_is_ignored_and_cleared(obs: Obs) -> None:
    seen = Node(state=active()).see(obs).expect(Role.ACTIVE, "active", "ClearSwitchover")
    assert seen.one(ClearSwitchover).reason.code == "switchover_ignored"


def test_switchover_to_self_is_a_noop() -> None:
    seen = Node(state=active()).see(active_obs().switchover(NODE))
    seen.expect(Role.ACTIVE, "active", "ClearSwitchover")
    assert seen.one(ClearSwitchover).reason.code == "switchover_noop"


def test_switchover_to_a_peer_that_is_not_eligible_is_refused() -> None:
    obs = active_obs().peer_member(Role.PASSIVE, eligible=False, reason="check app failing")
    seen = Node(state=active()).see(obs.switchover(PEER))
    seen.expect(Role.ACTIVE, "switchover_refused", "ClearSwitchover", "RecordEvent")
    assert seen.text == f"switchover refused: {PEER} not eligible: check app failing"
    assert seen.one(RecordEvent).kind == "switchover_refused"


def test_switchover_forced_to_a_peer_that_is_not_eligible_demotes() -> None:
    obs = active_obs().peer_member(Role.PASSIVE, eligible=False, reason="check app failing")
    seen = Node(state=active()).see(obs.switchover(PEER, force=True))
    seen.expect(Role.DEMOTING, "switchover", "RemoveVip")
    assert "(forced: n2 not eligible: check app failing)" in seen.text


def test_a_handled_switchover_request_is_not_handled_twice() -> None:
    node = Node(state=active())
    node.see(active_obs(100).switchover(NODE)).expect(Role.ACTIVE, "active", "ClearSwitchover")
    # The same request, still there (the ClearSwitchover has not landed yet).
    node.see(active_obs(101).switchover(NODE, deadline_in=59)).expect(Role.ACTIVE, "active")


# -- switchover requests, seen by the passive ------------------------------------------------


def switched_obs(now: float = 100.0) -> Obs:
    """n2 released cleanly for a switchover; n1 has replayed everything."""
    return (
        Obs(now)
        .lease_free(EPOCH)
        .last_leader(PEER, EPOCH, 5000, clean=True)
        .peer_db(PeerDb.REPLICA)
        .peer_member(Role.PASSIVE, eligible=False)
    )


def test_passive_named_by_a_switchover_takes_the_lease() -> None:
    seen = Node(state=passive()).see(switched_obs().switchover(NODE))
    seen.expect(Role.PASSIVE, "acquiring", "AcquireLease")
    assert seen.state.takeover is not None
    assert seen.state.takeover.kind == "switchover"


def test_passive_not_named_by_a_switchover_leaves_the_lease_to_the_target() -> None:
    seen = Node(state=passive()).see(switched_obs().switchover("n3"))
    seen.expect(Role.PASSIVE, "switchover_elsewhere")


def test_passive_ignores_an_expired_switchover_elsewhere() -> None:
    seen = Node(state=passive()).see(switched_obs().switchover("n3", deadline_in=-1.0))
    seen.expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_passive_named_by_a_switchover_while_not_eligible_does_not_take_over() -> None:
    obs = switched_obs().switchover(NODE).check_failing("app", "HTTP 503")
    seen = Node(state=passive()).see(obs).expect(Role.PASSIVE, "not_eligible")
    assert "check app failing: HTTP 503" in seen.text


def test_passive_named_by_a_forced_switchover_takes_over_although_not_eligible() -> None:
    # The active handed over because the operator forced it; if the target then refused too,
    # the cluster would be left without any active node.
    obs = switched_obs().switchover(NODE, force=True).check_failing("app", "HTTP 503")
    seen = Node(state=passive()).see(obs)
    seen.expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_passive_named_by_a_forced_switchover_still_waits_for_replay() -> None:
    obs = switched_obs().switchover(NODE, force=True).check_failing()
    obs = obs.last_leader(PEER, EPOCH, 6000, clean=True)
    Node(state=passive()).see(obs).expect(Role.PASSIVE, "waiting_for_replay")


def test_active_after_a_switchover_clears_the_request() -> None:
    t = Takeover(kind="switchover", from_node=PEER, started_at=90, promoted=True, last_mark=95)
    state = state_of(Role.PROMOTING, EPOCH + 1, takeover=t, pending=pending("AddVip"))
    obs = Obs(100).lease_mine(EPOCH + 1).switchover(NODE, from_epoch=EPOCH).db_primary()
    seen = Node(state=state).see(obs.result(99))
    seen.expect(Role.ACTIVE, "active", "RecordEvent", "RunHook", "ClearSwitchover")
    assert seen.one(RecordEvent).kind == "switchover"
    assert seen.state.last_failover_at == 100.0


# --------------------------------------------------------------------------------------------
# Demoting: VIP first, clean stop, release with the final LSN, restart as a replica
# --------------------------------------------------------------------------------------------


def test_demoting_goes_vip_stop_release_replica_in_that_order() -> None:
    node = Node(state=demoting(pending=pending("RemoveVip")))
    seen = node.see(active_obs(100).result(99)).expect(Role.DEMOTING, None, "StopDatabase")
    assert seen.one(StopDatabase).mode == "fast"
    stopped = active_obs(101).db_stopped(was_primary=True, clean=True, lsn=9100)
    seen = node.see(stopped.answer(node.state, final_lsn=9100, clean=True))
    seen.expect(Role.DEMOTING, None, "ReleaseLease")
    assert seen.one(ReleaseLease).final_lsn == 9100
    released = Obs(102).lease_free(EPOCH).db_stopped(was_primary=True, clean=True, lsn=9100)
    seen = node.see(released.answer(node.state))
    seen.expect(Role.DEMOTING, "stepped_down", "StartReplica", "RecordEvent", "RunHook")
    assert seen.one(StartReplica).primary == PEER
    assert seen.state.last_failover_at == 102.0
    assert " at LSN 0/238C in " in seen.text  # PostgreSQL's notation, as in its own views
    seen = node.see(Obs(103).lease_free(EPOCH).answer(node.state))
    seen.expect(Role.PASSIVE, "passive")


def test_demoting_with_an_unclean_stop_releases_dirty_and_must_rejoin() -> None:
    node = Node(state=demoting(pending=pending("StopDatabase"), demotion=None))
    node.state = replace(node.state, demotion=Demotion("stepdown", 90.0, vip_removed=True))
    stopped = active_obs(101).db_stopped(was_primary=True, clean=False)
    seen = node.see(stopped.answer(node.state, final_lsn=9100, clean=False))
    assert seen.one(ReleaseLease).clean is False
    released = Obs(102).lease_free(EPOCH).db_stopped(was_primary=True, clean=False)
    seen = node.see(released.answer(node.state))
    seen.expect(Role.FENCED, "must_rejoin", "RecordEvent", "RunHook")


def test_demoting_retries_a_release_that_failed() -> None:
    # A failed release leaves the lease ours: handing over as if it were gone would leave the
    # cluster with a lease held by a passive node that nobody can take.
    d = Demotion("stepdown", 90.0, vip_removed=True, db_stopped=True, final_lsn=9100)
    state = demoting(demotion=d, pending=pending("ReleaseLease"))
    obs = active_obs().db_stopped(was_primary=True, clean=True).result(99, ok=False)
    seen = Node(state=state).see(obs).expect(Role.DEMOTING, None, "ReleaseLease")
    assert seen.one(ReleaseLease).final_lsn == 9100


def test_demoting_whose_lease_is_already_gone_skips_the_release() -> None:
    d = Demotion("lease_lost", 90.0, vip_removed=True)
    state = demoting(demotion=d, pending=pending("StopDatabase"))
    obs = Obs().lease_peer(EPOCH + 1).db_stopped(was_primary=True, clean=True)
    seen = Node(state=state).see(obs.result(99, final_lsn=9100, clean=True))
    seen.expect(Role.DEMOTING, "stepped_down", "StartReplica", "RecordEvent", "RunHook")


# --------------------------------------------------------------------------------------------
# Paused: observe and publish, nothing else
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "obs"),
    [
        (passive(), free_obs().paused()),
        (active(), active_obs().paused().check_failing()),
        (promoting(pending=pending("Promote")), promoting_obs().paused()),
        (demoting(pending=pending("RemoveVip")), active_obs().paused()),
        (State(), Obs().paused()),
        (state_of(Role.FENCED, EPOCH), Obs().lease_peer(EPOCH + 1).paused()),
    ],
    ids=["passive", "active", "promoting", "demoting", "starting", "fenced"],
)
def test_the_paused_flag_pauses_every_role(state: State, obs: Obs) -> None:
    seen = Node(state=state).see(obs).expect(Role.PAUSED, "paused")
    assert names(seen.actions, publish=True) in (["Publish"], [])


def test_paused_ignores_everything_even_a_forced_switchover() -> None:
    node = Node(state=replace(passive(), role=Role.PAUSED))
    obs = switched_obs().paused().switchover(NODE, force=True)
    seen = node.see(obs)
    assert seen.role is Role.PAUSED
    assert seen.did == []


def test_paused_shutdown_of_a_node_that_does_not_serve_emits_nothing() -> None:
    state = replace(passive(), role=Role.PAUSED, paused_from=Role.PASSIVE)
    seen = Node(state=state).see(free_obs().paused().shutdown())
    assert seen.role is Role.PAUSED
    assert seen.code == "shutdown_paused"
    assert names(seen.actions, publish=True) == []
    assert seen.state.exit


def test_paused_shutdown_of_a_serving_node_records_that_it_is_left_serving() -> None:
    state = replace(active(), role=Role.PAUSED, paused_from=Role.ACTIVE)
    seen = Node(state=state).see(active_obs().paused().shutdown())
    seen.expect(Role.PAUSED, "leaving_serving", "ReleaseLease")
    assert seen.one(ReleaseLease).left_serving
    assert not seen.state.exit


def test_resume_re_derives_the_role_from_scratch() -> None:
    state = replace(active(), role=Role.PAUSED)
    seen = Node(state=state).see(active_obs())
    seen.expect(Role.ACTIVE, "active_resumed", "AddVip")


def test_resume_of_a_passive_with_the_lease_free_takes_over() -> None:
    state = replace(passive(), role=Role.PAUSED)
    Node(state=state).see(free_obs()).expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_resume_waits_for_the_action_that_was_in_flight_when_paused() -> None:
    node = Node(state=passive())
    node.see(free_obs(100)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    node.see(free_obs(100.5).paused()).expect(Role.PAUSED, "paused")
    seen = node.see(free_obs(101))  # resumed; the AcquireLease has not answered yet
    assert sum(1 for a in seen.actions if isinstance(a, AcquireLease)) == 0


def test_resume_does_not_re_add_the_vip_while_a_stop_of_the_database_is_in_flight() -> None:
    node = Node(state=demoting(pending=pending("RemoveVip")))
    node.see(active_obs(100).result(99)).expect(Role.DEMOTING, None, "StopDatabase")
    node.see(active_obs(100.5).paused()).expect(Role.PAUSED, "paused")
    seen = node.see(active_obs(101))  # resumed; still the primary, the stop not answered yet
    assert "AddVip" not in seen.did
    stopped = active_obs(102).db_stopped(was_primary=True, clean=True)
    seen = node.see(stopped.answer(node.state, final_lsn=9100, clean=True))
    assert "AddVip" not in seen.did


def test_resume_in_the_middle_of_a_takeover_still_fences_first() -> None:
    # The lease was taken after an expiry and the peer not fenced yet when the pause came.
    node = Node(state=passive(pending=pending("AcquireLease")))
    obs = promoting_obs(100).unmanaged().result(99, epoch=EPOCH)
    node.see(obs).expect(Role.PROMOTING, "fencing", "FencePeer")
    node.see(promoting_obs(101).unmanaged().paused()).expect(Role.PAUSED, "paused")
    seen = node.see(promoting_obs(102).unmanaged())
    assert "AddVip" not in seen.did


def paused_mid_fence() -> Node:
    """Unmanaged database, lease taken after an expiry, fence in flight when the pause comes."""
    node = Node(state=passive(pending=pending("AcquireLease")))
    obs = promoting_obs(100).unmanaged().result(99, epoch=EPOCH)
    node.see(obs).expect(Role.PROMOTING, "fencing", "FencePeer")
    node.see(promoting_obs(101).unmanaged().paused()).expect(Role.PAUSED, "paused")
    return node


@pytest.mark.parametrize("outcome", [FenceOutcome.FENCED, FenceOutcome.UNREACHABLE])
def test_a_fence_answered_during_the_pause_counts_after_resume(outcome: FenceOutcome) -> None:
    node = paused_mid_fence()
    answered = promoting_obs(102).unmanaged().paused().answer(node.state, fence=outcome)
    node.see(answered).expect(Role.PAUSED, "paused")
    seen = node.see(promoting_obs(103).unmanaged())
    seen.expect(Role.PROMOTING, "adding_vip", "AddVip")


@pytest.mark.parametrize("during_pause", [True, False], ids=["while-paused", "with-the-pause"])
def test_a_fence_that_failed_during_the_pause_gives_the_lease_back_after_resume(
    during_pause: bool,
) -> None:
    node = Node(state=passive(pending=pending("AcquireLease")))
    obs = promoting_obs(100).unmanaged().result(99, epoch=EPOCH)
    node.see(obs).expect(Role.PROMOTING, "fencing", "FencePeer")
    fence_id = node.pending_id
    failed: dict[str, Any] = {"ok": False, "detail": "exit 1", "fence": FenceOutcome.FAILED}
    if during_pause:
        node.see(promoting_obs(101).unmanaged().paused()).expect(Role.PAUSED, "paused")
        node.see(promoting_obs(102).unmanaged().paused().result(fence_id, **failed))
    else:  # the answer arrives in the very observation that shows the pause
        node.see(promoting_obs(102).unmanaged().paused().result(fence_id, **failed))
    seen = node.see(promoting_obs(103).unmanaged())
    assert not {"AddVip", "Promote", "FencePeer"} & set(seen.did), seen.did
    seen.expect(Role.PASSIVE, "releasing", "ReleaseLease")
    assert seen.one(ReleaseLease).clean is False


# --------------------------------------------------------------------------------------------
# Epochs, ids and determinism
# --------------------------------------------------------------------------------------------


def test_action_ids_are_unique_and_increasing_across_steps() -> None:
    node = Node(state=active())
    node.see(active_obs(100).check_failing())
    node.see(active_obs(101).check_failing().answer(node.state))
    ids = [a.id for seen in node.log for a in seen.actions]
    assert ids == sorted(set(ids))
    assert ids[0] == 100


def test_step_is_deterministic() -> None:
    obs = active_obs().check_failing().build()
    assert run(active(), obs) == run(active(), obs)


def test_supervision_role_says_when_a_paused_node_serves() -> None:
    """ExecStopPost fences an abnormal end of a paused node that serves (failoverd/stoppost.py)."""
    serving_pause = Node(state=active()).see(active_obs().paused())
    assert serving_pause.role is Role.PAUSED
    assert core.supervision_role(serving_pause.state) == "paused-serving"
    idle_pause = Node(state=passive()).see(free_obs().paused().peer_db(PeerDb.PRIMARY))
    assert core.supervision_role(idle_pause.state) == "paused"
    assert core.supervision_role(active()) == "active"

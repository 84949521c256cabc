"""Managed synchronous replication in the core: the order of the two writes, the drop budget,
strict mode, and who may take a free lease after an expiry (DESIGN, "Zero loss")."""

from __future__ import annotations

import dataclasses

from corekit import NODE, PEER, SETTINGS, Node, Obs, Seen, state_of
from test_core_scenarios import crashed

from failoverd.core import (
    AcquireLease,
    DatabaseStatus,
    DbRole,
    FenceOutcome,
    PeerDb,
    Promote,
    RecordEvent,
    RecordSync,
    ReplicationMode,
    Role,
    SetSyncStandby,
    Settings,
    StandbyStatus,
)

SYNC = dataclasses.replace(SETTINGS, replication=ReplicationMode.SYNC, sync_drop_after=2.0)
STRICT = dataclasses.replace(SYNC, replication=ReplicationMode.STRICT)


def primary(
    lsn: int = 9000, names: tuple[str, ...] = (), *standbys: StandbyStatus
) -> DatabaseStatus:
    return DatabaseStatus(
        DbRole.PRIMARY,
        lsn=lsn,
        recorded_epoch=3,
        sync_standby_names=names,
        synchronous_commit="on",
        standbys=standbys,
    )


def streaming(flush: int = 9000, sync_state: str = "async") -> StandbyStatus:
    return StandbyStatus(PEER, "streaming", sync_state, flush)


def serving(t: float, db: DatabaseStatus) -> Obs:
    return (
        Obs(t, SYNC)
        .lease_mine(3)
        .db(db)
        .peer_member(Role.PASSIVE, eligible=True)
        .peer_db(PeerDb.REPLICA)
    )


def active(settings: Settings = SYNC) -> Node:
    return Node(settings, state=state_of(Role.ACTIVE, 3, next_id=10))


def test_naming_sets_postgresql_first_and_records_once_it_reports_the_standby_sync() -> None:
    n1 = active()
    seen = n1.see(serving(200.0, primary(9000, (), streaming())))
    seen.expect(Role.ACTIVE, "sync_setting", "SetSyncStandby")
    assert seen.one(SetSyncStandby).names == (PEER,)
    n1.see(serving(200.2, primary(9000, (PEER,), streaming())).answer(n1.state))
    # Set, but not yet reported sync: nothing is recorded.
    n1.see(serving(200.4, primary(9000, (PEER,), streaming()))).expect(Role.ACTIVE, "active")
    seen = n1.see(serving(200.6, primary(9000, (PEER,), streaming(sync_state="sync"))))
    seen.expect(Role.ACTIVE, "sync_named", "RecordSync")
    assert (seen.one(RecordSync).standby, seen.one(RecordSync).epoch) == (PEER, 3)
    # The record is on its way: the status line must not say "no synchronous standby" (it is
    # the one line the log keeps of the active state).
    seen = n1.see(serving(200.7, primary(9000, (PEER,), streaming(sync_state="sync"))))
    seen.expect(Role.ACTIVE, "active")
    assert f"synchronous standby {PEER} (being recorded)" in seen.text
    n1.see(serving(200.8, primary(9000, (PEER,), streaming(sync_state="sync"))).answer(n1.state))
    named = serving(201.0, primary(9000, (PEER,), streaming(sync_state="sync"))).sync(PEER, 3)
    seen = n1.see(named).expect(Role.ACTIVE, "active")
    assert f"synchronous standby {PEER}" in seen.text


def test_a_standby_that_leaves_commits_waiting_is_dropped_record_first() -> None:
    n1 = active()

    def gone(t: float, names: tuple[str, ...], record: str | None) -> Obs:
        return serving(t, primary(9500, names)).sync(record, 3)

    # Commits wait on n2 (it has flushed nothing past 9000 and then vanished): within budget,
    # nothing changes.
    n1.see(gone(300.0, (PEER,), PEER)).expect(Role.ACTIVE, "active")
    n1.see(gone(301.5, (PEER,), PEER)).expect(Role.ACTIVE, "active")
    seen = n1.see(gone(302.1, (PEER,), PEER))
    seen.expect(Role.ACTIVE, "sync_dropped", "RecordSync", "RecordEvent")
    assert seen.one(RecordSync).standby is None
    assert seen.one(RecordEvent).kind == "sync_dropped"
    # The record says nobody now: then PostgreSQL stops waiting, and the commits go through.
    seen = n1.see(gone(302.3, (PEER,), None).answer(n1.state))
    seen.expect(Role.ACTIVE, "sync_setting", "SetSyncStandby")
    assert seen.one(SetSyncStandby).names == ()


def test_a_standby_that_keeps_flushing_is_never_dropped() -> None:
    n1 = active()
    for i in range(20):
        lsn = 9000 + 100 * i
        obs = serving(400.0 + 0.5 * i, primary(lsn, (PEER,), streaming(lsn - 50, "sync")))
        n1.see(obs.sync(PEER, 3)).expect(Role.ACTIVE, "active")


def test_a_dropped_standby_is_named_again_only_once_it_has_caught_up() -> None:
    n1 = Node(SYNC, state=state_of(Role.ACTIVE, 3, next_id=10, sync_dropped_lsn=9500))
    behind = serving(500.0, primary(9600, (), streaming(9400))).sync(None, 3)
    n1.see(behind).expect(Role.ACTIVE, "active")
    caught_up = serving(500.5, primary(9600, (), streaming(9600))).sync(None, 3)
    seen = n1.see(caught_up).expect(Role.ACTIVE, "sync_setting", "SetSyncStandby")
    assert seen.one(SetSyncStandby).names == (PEER,)


def test_strict_never_drops_the_standby() -> None:
    n1 = active(STRICT)
    for t in (300.0, 303.0, 310.0, 400.0):
        obs = Obs(t, STRICT).lease_mine(3).db(primary(9500, (PEER,))).sync(PEER, 3)
        n1.see(obs.peer_db(PeerDb.UNREACHABLE).no_peer_member()).expect(Role.ACTIVE, "active")


def test_strict_names_the_peer_even_before_it_streams() -> None:
    n1 = active(STRICT)
    obs = Obs(300.0, STRICT).lease_mine(3).db(primary(9500, ())).peer_db(PeerDb.DOWN)
    seen = n1.see(obs).expect(Role.ACTIVE, "sync_setting", "SetSyncStandby")
    assert seen.one(SetSyncStandby).names == (PEER,)


def test_a_record_naming_a_standby_postgresql_does_not_wait_for_is_cleared_first() -> None:
    n1 = active()
    wrong = serving(600.0, primary(9000, (), streaming())).sync(PEER, 3)
    seen = n1.see(wrong).expect(Role.ACTIVE, "sync_reset", "RecordSync")
    assert seen.one(RecordSync).standby is None


def test_async_mode_clears_synchronous_standby_names() -> None:
    n1 = active(SETTINGS)
    obs = Obs(700.0).lease_mine(3).db(primary(9000, (PEER,), streaming(9000, "sync")))
    seen = n1.see(obs.peer_member(Role.PASSIVE, eligible=True)).expect(
        Role.ACTIVE, "sync_setting", "SetSyncStandby"
    )
    assert seen.one(SetSyncStandby).names == ()


def test_a_failed_step_is_retried_later_not_at_once() -> None:
    n1 = active()
    first = n1.see(serving(200.0, primary(9000, (), streaming())))
    first.expect(Role.ACTIVE, "sync_setting", "SetSyncStandby")
    failed = serving(200.2, primary(9000, (), streaming())).answer(n1.state, ok=False, detail="x")
    seen = n1.see(failed).expect(Role.ACTIVE, "active")
    assert "sync_failed" in [d.code for d in seen.step.decisions]
    n1.see(serving(203.0, primary(9000, (), streaming()))).expect(Role.ACTIVE, "active")
    seen = n1.see(serving(205.3, primary(9000, (), streaming())))
    seen.expect(Role.ACTIVE, "sync_setting", "SetSyncStandby")


# -- who may take a free lease ----------------------------------------------------------------


def passive(settings: Settings = SYNC) -> Node:
    n1 = Node(settings)
    n1.see(Obs(99.0, settings).lease_peer(3).peer_member(Role.ACTIVE, lsn=5000)).expect(
        Role.PASSIVE, "passive"
    )
    return n1


def expired(t: float, settings: Settings = SYNC) -> Obs:
    obs = crashed(t)
    obs.s = settings
    return obs


def test_after_an_expiry_the_synchronous_standby_of_record_takes_over() -> None:
    n1 = passive()
    seen = n1.see(expired(110.0).sync(NODE, 3)).expect(Role.PASSIVE, "acquiring", "AcquireLease")
    assert seen.one(AcquireLease).expected_epoch == 3


def test_the_record_survives_an_epoch_taken_by_a_takeover_that_never_served() -> None:
    n1 = passive()
    seen = n1.see(expired(110.0).lease_free(4).sync(NODE, 3))
    seen.expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_after_an_expiry_a_node_that_is_not_the_synchronous_standby_waits_and_says_why() -> None:
    for record in (None, PEER):
        n1 = passive()
        seen = n1.see(expired(110.0).sync(record, 3)).expect(Role.PASSIVE, "not_sync_standby")
        assert not seen.did
        assert "promote n1 --force" in seen.text
    n1 = passive()
    seen = n1.see(expired(110.0)).expect(Role.PASSIVE, "not_sync_standby")
    assert "ever recorded" in seen.text


def test_a_forced_promotion_overrides_the_sync_record() -> None:
    n1 = passive()
    forced = expired(110.0).sync(None, 3).switchover(NODE, force=True)
    n1.see(forced).expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_a_clean_release_needs_no_sync_record_only_the_final_lsn() -> None:
    n1 = passive()
    released = expired(110.0).last_leader(PEER, 3, final_lsn=5000, clean=True).sync(None, 3)
    n1.see(released.db_replica(5000)).expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_async_mode_ignores_the_record() -> None:
    n1 = passive(SETTINGS)
    n1.see(crashed(110.0).sync(None, 3)).expect(Role.PASSIVE, "acquiring", "AcquireLease")


def test_the_standby_of_record_is_eligible_beyond_the_lag_bound() -> None:
    """The lag bound estimates what a crash could lose; the record says it is nothing."""
    n1 = passive()
    far = expired(110.0).sync(NODE, 3).position(PEER, 3, 5000 + 64 * (1 << 20))
    n1.see(far).expect(Role.PASSIVE, "acquiring", "AcquireLease")


# -- the new active ---------------------------------------------------------------------------


def take_over(settings: Settings, record: str | None, record_epoch: int = 3) -> tuple[Node, Seen]:
    """From a passive at epoch 3 through the fence: returns the node and the step that promotes."""
    n1 = passive(settings)
    n1.see(expired(110.0, settings).sync(record, record_epoch).switchover(NODE, force=True))
    obs = expired(110.1, settings).lease_mine(4).sync(record, record_epoch)
    n1.see(obs.answer(n1.state, epoch=4)).expect(Role.PROMOTING, "fencing", "FencePeer")
    fenced = expired(110.4, settings).lease_mine(4).sync(record, record_epoch)
    seen = n1.see(fenced.answer(n1.state, fence=FenceOutcome.UNREACHABLE))
    return n1, seen.expect(Role.PROMOTING, "promoting", "RecordEvent", "Promote")


def test_promotion_starts_strict_with_the_peer_named_and_sync_with_none() -> None:
    for settings, names in ((SYNC, ()), (STRICT, (PEER,))):
        _, seen = take_over(settings, NODE)
        assert seen.one(Promote).sync_names == names


def test_a_record_naming_the_peer_is_cleared_before_the_new_active_promotes() -> None:
    """Forced onto a node the record does not name: from its first acknowledged commit the
    peer no longer holds them all, so the record goes first, before the promotion (which
    decides whom the database waits for) and the VIP."""
    n1 = passive(SYNC)
    n1.see(expired(110.0).sync(PEER, 3).switchover(NODE, force=True))
    obs = expired(110.1).lease_mine(4).sync(PEER, 3)
    n1.see(obs.answer(n1.state, epoch=4)).expect(Role.PROMOTING, "fencing", "FencePeer")
    fenced = expired(110.4).lease_mine(4).sync(PEER, 3)
    seen = n1.see(fenced.answer(n1.state, fence=FenceOutcome.UNREACHABLE))
    seen.expect(Role.PROMOTING, "sync_reset", "RecordEvent", "RecordSync")
    assert (seen.one(RecordSync).standby, seen.one(RecordSync).epoch) == (None, 4)
    cleared = expired(110.6).lease_mine(4).sync(None, 4)
    n1.see(cleared.answer(n1.state)).expect(Role.PROMOTING, "promoting", "Promote")


def test_a_record_naming_the_new_active_itself_costs_no_extra_step() -> None:
    n1, _ = take_over(SYNC, NODE)
    promoted = expired(111.0, SYNC).lease_mine(4).sync(NODE, 3).db_primary(recorded_epoch=4)
    n1.see(promoted.answer(n1.state)).expect(Role.PROMOTING, "adding_vip", "AddVip")

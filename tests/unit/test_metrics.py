"""Metrics are derived from one tick's pure values: the state before, the core's step and its
observation. Stories run the real core (corekit) and read the registry back; single facts use
steps built by hand."""

from __future__ import annotations

import math
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest
from corekit import NODE, PEER, SETTINGS, WALL, Node, Obs, state_of
from prometheus_client import REGISTRY, CollectorRegistry

from failoverd.core import (
    ActionResult,
    CheckStatus,
    ClusterView,
    DatabaseStatus,
    DbRole,
    FenceOutcome,
    FencePeer,
    LocalHealth,
    Observation,
    PeerDb,
    Pledge,
    Reason,
    RecordEvent,
    RecordSync,
    ReplicationMode,
    Role,
    State,
    Step,
    SyncRecord,
    ZkState,
    ZkStatus,
)
from failoverd.failsafe import ASK_RESULTS, FailsafeStats, Refused
from failoverd.metrics import FAILOVER_KINDS, STEPDOWN_KINDS, Metrics, MetricsError
from lab.zookeeper import free_port

CLUSTER = "prod"
LABELS = {"node": NODE, "cluster": CLUSTER}
R = Reason("active", "active (epoch 3)")


@pytest.fixture
def m() -> Metrics:
    return Metrics(SETTINGS, CLUSTER)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, {**LABELS, **labels})


def feed(m: Metrics, before: State, step: Step, obs: Observation) -> None:
    m.update(before, step, obs)


def tick(m: Metrics, node: Node, obs: Obs) -> Step:
    """One real core step, fed to the metrics the way the daemon does."""
    before = node.state
    built = obs.build()
    seen = node.see(built)
    m.update(before, seen.step, built)
    return seen.step


def bare(now: float = 100.0, **fields: object) -> Observation:
    base = Observation(
        now=now,
        wall_now=WALL + now,
        zk=ZkStatus(ZkState.CONNECTED, 0.0, now - 0.2, negotiated_timeout=10.0),
        cluster=None,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def step_of(state: State, *actions: object, reason: Reason = R) -> Step:
    return Step(replace(state, reason=reason), tuple(actions), reason)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Naming and registry
# --------------------------------------------------------------------------------------------


def test_names_follow_the_conventions_and_every_series_has_node_and_cluster(m: Metrics) -> None:
    run_crash_failover(m)  # so that labelled children (checks, decisions) exist too
    families = [f for f in m.registry.collect() if not f.name.startswith("process_")]
    assert len(families) >= 25
    for family in families:
        assert family.name.startswith("failoverd_"), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:
            assert sample.labels["node"] == NODE, sample
            assert sample.labels["cluster"] == CLUSTER, sample


def test_each_instance_has_its_own_registry_never_the_global_one() -> None:
    a, b = Metrics(SETTINGS, "prod"), Metrics(SETTINGS, "stage")  # no duplicate registration
    assert a.registry is not b.registry
    assert not any(f.name.startswith("failoverd_") for f in REGISTRY.collect())
    shared = CollectorRegistry()
    c = Metrics(SETTINGS, "prod", registry=shared)
    assert c.registry is shared


def test_the_process_collector_exports_the_start_time_so_a_restart_shows(m: Metrics) -> None:
    started = m.registry.get_sample_value("process_start_time_seconds")
    assert started is not None
    assert time.time() - 24 * 3600 < started <= time.time()  # this test process's start
    assert m.registry.get_sample_value("process_resident_memory_bytes") is not None
    # Two Metrics on one registry: the second leaves the process collector out, or the
    # registry refuses the duplicate series.
    shared = CollectorRegistry()
    Metrics(SETTINGS, "prod", registry=shared)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(SETTINGS, "stage", registry=shared)
    other = Metrics(SETTINGS, "test", registry=CollectorRegistry(), process=False)
    assert other.registry.get_sample_value("process_start_time_seconds") is None


def test_max_lag_on_failover_is_exported_and_follows_the_settings(m: Metrics) -> None:
    assert value(m, "failoverd_max_lag_on_failover_bytes") == 16 * 1024 * 1024
    m.settings = replace(SETTINGS, max_lag_on_failover=1024)  # what a reload does
    passive = state_of(Role.PASSIVE, 3)
    feed(m, passive, step_of(passive), bare())
    assert value(m, "failoverd_max_lag_on_failover_bytes") == 1024


def test_before_the_first_tick_counters_exist_at_zero_and_unknowns_are_nan(m: Metrics) -> None:
    for kind in FAILOVER_KINDS:
        assert value(m, "failoverd_failovers_total", reason=kind) == 0
        assert value(m, "failoverd_failover_duration_seconds_count", reason=kind) == 0
    for kind in STEPDOWN_KINDS:
        assert value(m, "failoverd_stepdowns_total", reason=kind) == 0
    for outcome in FenceOutcome:
        assert value(m, "failoverd_fences_total", result=outcome.value) == 0
    assert value(m, "failoverd_role", role="starting") == 1
    assert value(m, "failoverd_role", role="active") == 0
    assert value(m, "failoverd_is_active") == 0
    assert value(m, "failoverd_last_failover_timestamp_seconds") == 0
    lag = value(m, "failoverd_replication_lag_bytes")
    assert lag is not None and math.isnan(lag)
    assert value(m, "failoverd_info", version="test") == 1


# --------------------------------------------------------------------------------------------
# Gauges from state and observation
# --------------------------------------------------------------------------------------------


def test_role_is_an_enum_gauge_and_is_active_follows_it(m: Metrics) -> None:
    active = state_of(Role.ACTIVE, 3)
    feed(m, State(), step_of(active), bare())
    assert value(m, "failoverd_role", role="active") == 1
    assert sum(value(m, "failoverd_role", role=r.value) or 0 for r in Role) == 1
    assert value(m, "failoverd_is_active") == 1
    passive = state_of(Role.PASSIVE, 3)
    feed(m, active, step_of(passive), bare())
    assert value(m, "failoverd_role", role="active") == 0
    assert value(m, "failoverd_role", role="passive") == 1
    assert value(m, "failoverd_is_active") == 0


def test_a_node_paused_while_active_still_counts_as_the_active_one(m: Metrics) -> None:
    """Pausing a healthy cluster must not look like "no active node" to the alerts."""
    paused = state_of(Role.PAUSED, 3, paused_from=Role.ACTIVE)
    feed(m, State(), step_of(paused), bare())
    assert value(m, "failoverd_role", role="paused") == 1
    assert value(m, "failoverd_paused") == 1
    assert value(m, "failoverd_is_active") == 1
    feed(m, paused, step_of(state_of(Role.PAUSED, 3, paused_from=Role.PASSIVE)), bare())
    assert value(m, "failoverd_is_active") == 0


def test_lease_and_paused_come_from_the_cluster_view(m: Metrics) -> None:
    node = Node(state=state_of(Role.ACTIVE, 3, next_id=10))
    serving = Obs(200.0).lease_mine(3).db_primary(9000, 3).peer_member(Role.PASSIVE)
    tick(m, node, serving.peer_db(PeerDb.REPLICA))
    assert value(m, "failoverd_lease_epoch") == 3
    assert value(m, "failoverd_lease_held") == 1
    assert value(m, "failoverd_paused") == 0
    tick(m, node, Obs(200.5).lease_mine(3).db_primary(9000, 3).paused())
    assert value(m, "failoverd_paused") == 1
    assert value(m, "failoverd_role", role="paused") == 1


def test_zookeeper_state_and_roundtrip_age(m: Metrics) -> None:
    zk = ZkStatus(ZkState.SUSPENDED, 99.0, last_roundtrip_sent_at=98.5, negotiated_timeout=4.0)
    feed(m, State(), step_of(State()), bare(100.0, zk=zk))
    assert value(m, "failoverd_zookeeper_connected") == 0
    assert value(m, "failoverd_zookeeper_state", state="suspended") == 1
    assert value(m, "failoverd_zookeeper_state", state="connected") == 0
    assert value(m, "failoverd_zookeeper_roundtrip_age_seconds") == pytest.approx(1.5)
    assert value(m, "failoverd_zookeeper_session_timeout_seconds") == 4.0
    never = ZkStatus(ZkState.CONNECTED, 99.0, last_roundtrip_sent_at=None)
    feed(m, State(), step_of(State()), bare(100.0, zk=never))
    assert value(m, "failoverd_zookeeper_connected") == 1
    age = value(m, "failoverd_zookeeper_roundtrip_age_seconds")
    assert age is not None and math.isnan(age)


def test_vip_presence_and_last_tick(m: Metrics) -> None:
    feed(m, State(), step_of(State()), bare(100.0, vip_present=True))
    assert value(m, "failoverd_vip_present") == 1
    assert value(m, "failoverd_last_tick_timestamp_seconds") == WALL + 100.0
    feed(m, State(), step_of(State()), bare(101.0, vip_present=None))
    vip = value(m, "failoverd_vip_present")
    assert vip is not None and math.isnan(vip)


def test_checks_up_and_each_probe_latency_observed_once(m: Metrics) -> None:
    def checks(*statuses: CheckStatus) -> Observation:
        return bare(local=LocalHealth(statuses))

    app = CheckStatus("app", True, latency=0.004, successes=5)
    db = CheckStatus("postgres", False, "refused", latency=0.3, failures=3)
    feed(m, State(), step_of(State()), checks(app, db))
    feed(m, State(), step_of(State()), checks(app, db))  # the same probes, seen on the next tick
    assert value(m, "failoverd_check_up", check="app") == 1
    assert value(m, "failoverd_check_up", check="postgres") == 0
    assert value(m, "failoverd_check_latency_seconds_count", check="app") == 1
    assert value(m, "failoverd_check_latency_seconds_sum", check="app") == pytest.approx(0.004)
    assert value(m, "failoverd_check_latency_seconds_bucket", check="app", le="0.005") == 1
    assert value(m, "failoverd_check_latency_seconds_bucket", check="app", le="0.0025") == 0
    # A new probe that happened to take exactly as long is still a new probe.
    feed(m, State(), step_of(State()), checks(replace(app, successes=6), db))
    assert value(m, "failoverd_check_latency_seconds_count", check="app") == 2
    # A hung probe has no latency: nothing to observe.
    hung = CheckStatus("postgres", False, "hung", latency=None, failures=4)
    feed(m, State(), step_of(State()), checks(replace(app, successes=6), hung))
    assert value(m, "failoverd_check_latency_seconds_count", check="postgres") == 1


def test_replication_lag_on_a_replica_and_nan_elsewhere(m: Metrics) -> None:
    passive = state_of(Role.PASSIVE, 3, active_lsn=9000)
    replica = DatabaseStatus(
        DbRole.REPLICA, lsn=8000, replayed_lsn=7900, streaming=True, last_received_age=0.7
    )
    feed(m, passive, step_of(passive), bare(database=replica))
    assert value(m, "failoverd_replication_lag_bytes") == 1000  # active's LSN - received
    assert value(m, "failoverd_replication_replay_lag_bytes") == 100  # received - replayed
    assert value(m, "failoverd_replication_lag_seconds") == pytest.approx(0.7)
    assert value(m, "failoverd_database_role", role="replica") == 1
    ahead = replace(replica, lsn=9500)  # the active's record is older than what we received
    feed(m, passive, step_of(passive), bare(database=ahead))
    assert value(m, "failoverd_replication_lag_bytes") == 0
    active = state_of(Role.ACTIVE, 3)
    primary = DatabaseStatus(DbRole.PRIMARY, lsn=9600)
    feed(m, active, step_of(active), bare(database=primary))
    assert value(m, "failoverd_database_role", role="primary") == 1
    for name in (
        "failoverd_replication_lag_bytes",
        "failoverd_replication_replay_lag_bytes",
        "failoverd_replication_lag_seconds",
    ):
        v = value(m, name)
        assert v is not None and math.isnan(v), name


def test_eligible_only_for_a_passive_that_could_take_over(m: Metrics) -> None:
    node = Node()
    tick(m, node, Obs(99.0).lease_peer(3).peer_member(Role.ACTIVE, lsn=5000))
    assert node.state.role is Role.PASSIVE
    assert value(m, "failoverd_eligible") == 1
    tick(m, node, Obs(99.5).lease_peer(3).peer_member(Role.ACTIVE).check_failing("squid"))
    assert value(m, "failoverd_eligible") == 0
    far_behind = Obs(100.0).lease_peer(3).peer_member(Role.ACTIVE, lsn=5000 + 64 * 1024 * 1024)
    tick(m, node, far_behind)
    assert value(m, "failoverd_eligible") == 0
    assert value(m, "failoverd_replication_lag_bytes") == 64 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Decisions and events
# --------------------------------------------------------------------------------------------


def test_decisions_counted_when_the_decision_changes_not_every_tick(m: Metrics) -> None:
    node = Node()
    for t in (99.0, 99.5, 100.0):
        tick(m, node, Obs(t).lease_peer(3).peer_member(Role.ACTIVE))
    assert value(m, "failoverd_decisions_total", decision="passive") == 1
    tick(m, node, Obs(100.5).lease_peer(3).peer_member(Role.ACTIVE).paused())
    tick(m, node, Obs(101.0).lease_peer(3).peer_member(Role.ACTIVE).paused())
    assert value(m, "failoverd_decisions_total", decision="paused") == 1


def run_crash_failover(m: Metrics) -> Node:
    """test_core_scenarios' crash story: n2 dies, n1 fences nobody, promotes, adds the VIP."""

    def crashed(t: float) -> Obs:
        return (
            Obs(t)
            .lease_free(3)
            .no_peer_member()
            .peer_db(PeerDb.UNREACHABLE)
            .db_replica(5000, streaming=False, received_age=t - 99.0)
        )

    n1 = Node()
    tick(m, n1, Obs(99.0).lease_peer(3).peer_member(Role.ACTIVE, lsn=5000))
    tick(m, n1, crashed(109.5).peer_db(PeerDb.UNKNOWN))
    tick(m, n1, crashed(110.0))
    tick(m, n1, crashed(110.1).lease_mine(4).answer(n1.state, epoch=4))
    fence = FenceOutcome.UNREACHABLE
    tick(m, n1, crashed(110.4).lease_mine(4).answer(n1.state, detail="no route", fence=fence))
    promoted = crashed(111.0).lease_mine(4).db_primary(recorded_epoch=4)
    tick(m, n1, promoted.answer(n1.state))
    tick(m, n1, crashed(111.1).lease_mine(4).db_primary(recorded_epoch=4).answer(n1.state))
    assert n1.state.role is Role.ACTIVE
    return n1


def test_a_crash_failover_counts_the_failover_its_duration_and_the_fence(m: Metrics) -> None:
    run_crash_failover(m)
    assert value(m, "failoverd_failovers_total", reason="failover") == 1
    assert value(m, "failoverd_failovers_total", reason="stepdown") == 0
    assert value(m, "failoverd_failover_duration_seconds_count", reason="failover") == 1
    total = value(m, "failoverd_failover_duration_seconds_sum", reason="failover")
    # The peer was last seen alive at 98.9 (its database a primary), the VIP was up at 111.1.
    assert total == pytest.approx(12.2)
    assert value(m, "failoverd_last_failover_duration_seconds") == pytest.approx(12.2)
    assert value(m, "failoverd_last_failover_timestamp_seconds") == pytest.approx(WALL + 111.1)
    assert value(m, "failoverd_fences_total", result="unreachable") == 1
    assert value(m, "failoverd_fences_total", result="fenced") == 0
    assert value(m, "failoverd_is_active") == 1
    assert value(m, "failoverd_lease_epoch") == 4
    decisions = {
        s.labels["decision"]: s.value
        for f in m.registry.collect()
        if f.name == "failoverd_decisions"
        for s in f.samples
        if s.name.endswith("_total")
    }
    # Every decision counts once, also those superseded within their step (lease_acquired is
    # followed by fencing in the same step; the fence result by promoting).
    assert decisions == {
        code: 1.0
        for code in (
            "passive",
            "waiting_for_probe",
            "acquiring",
            "lease_acquired",
            "fencing",
            "peer_fenced",
            "promoting",
            "promoted",
            "adding_vip",
            "active",
        )
    }
    assert value(m, "failoverd_stepdowns_total", reason="stepdown") == 0


def test_a_clean_stepdown_counts_on_the_node_that_steps_down(m: Metrics) -> None:
    n1 = Node(state=state_of(Role.ACTIVE, 3, next_id=10))

    def serving(t: float) -> Obs:
        return (
            Obs(t)
            .lease_mine(3)
            .db_primary(lsn=9000, recorded_epoch=3)
            .peer_member(Role.PASSIVE, eligible=True)
            .peer_db(PeerDb.REPLICA)
            .check_failing("app", "HTTP 503")
        )

    tick(m, n1, serving(200.5))
    tick(m, n1, serving(200.6).answer(n1.state))
    stopped = serving(201.5).db_stopped(was_primary=True, clean=True, lsn=9100)
    tick(m, n1, stopped.answer(n1.state, final_lsn=9100, clean=True))
    released = (
        Obs(201.6)
        .lease_free(3)
        .last_leader(NODE, 3, 9100, clean=True)
        .check_failing()
        .db_stopped(was_primary=True, clean=True, lsn=9100)
        .peer_db(PeerDb.REPLICA)
    )
    tick(m, n1, released.answer(n1.state))
    assert value(m, "failoverd_stepdowns_total", reason="stepdown") == 1
    assert value(m, "failoverd_failovers_total", reason="stepdown") == 0  # the peer counts that
    assert value(m, "failoverd_role", role="demoting") == 1
    assert value(m, "failoverd_is_active") == 0


def test_only_takeovers_by_this_node_count_as_failovers(m: Metrics) -> None:
    active = state_of(Role.ACTIVE, 3)

    def event(kind: str, to: str | None, frm: str | None = PEER) -> RecordEvent:
        return RecordEvent(1, R, kind=kind, epoch=3, from_node=frm, to_node=to, phases=())

    for kind in ("bootstrap", "readopt", "fence", "switchover_refused"):
        feed(m, active, step_of(active, event(kind, NODE)), bare())
    feed(m, active, step_of(active, event("failover", PEER, NODE)), bare())  # the peer took over
    for kind in FAILOVER_KINDS:
        assert value(m, "failoverd_failovers_total", reason=kind) == 0
    assert value(m, "failoverd_last_failover_timestamp_seconds") == 0
    feed(m, active, step_of(active, event("switchover", NODE)), bare(300.0))
    assert value(m, "failoverd_failovers_total", reason="switchover") == 1
    assert value(m, "failoverd_last_failover_timestamp_seconds") == WALL + 300.0
    # A takeover event without phases still counts, without a duration.
    assert value(m, "failoverd_failover_duration_seconds_count", reason="switchover") == 0
    feed(m, active, step_of(active, event("lease_lost", None, NODE)), bare())
    feed(m, active, step_of(active, event("lease_lost", None, PEER)), bare())
    assert value(m, "failoverd_stepdowns_total", reason="lease_lost") == 1


def test_fence_results_are_counted_once_each(m: Metrics) -> None:
    promoting = state_of(Role.PROMOTING, 4)
    fence = FencePeer(7, R, peer=PEER, epoch=4)
    feed(m, State(), step_of(promoting, fence), bare())
    fenced = ActionResult(7, ok=True, fence=FenceOutcome.FENCED)
    feed(m, promoting, step_of(promoting), bare(results=(fenced,)))
    feed(m, promoting, step_of(promoting), bare(results=(fenced,)))  # the same result again
    assert value(m, "failoverd_fences_total", result="fenced") == 1
    # A fence whose result says nothing about the outcome failed.
    feed(m, promoting, step_of(promoting, FencePeer(8, R, peer=PEER, epoch=4)), bare())
    feed(m, promoting, step_of(promoting), bare(results=(ActionResult(8, ok=False),)))
    assert value(m, "failoverd_fences_total", result="failed") == 1
    # Results of other actions are not fences.
    feed(m, promoting, step_of(promoting), bare(results=(ActionResult(9, ok=False),)))
    assert value(m, "failoverd_fences_total", result="failed") == 1
    failed = ActionResult(10, ok=False, fence=FenceOutcome.FAILED)
    feed(m, promoting, step_of(promoting), bare(results=(failed,)))
    assert value(m, "failoverd_fences_total", result="failed") == 2


# --------------------------------------------------------------------------------------------
# Synchronous replication
# --------------------------------------------------------------------------------------------


def with_sync(sync: SyncRecord | None, epoch: int = 3) -> Observation:
    return bare(cluster=ClusterView(epoch=epoch, lease=None, last_leader=None, sync=sync))


def test_the_replication_mode_is_an_enum_gauge_from_the_settings() -> None:
    for mode in ReplicationMode:
        m = Metrics(replace(SETTINGS, replication=mode), CLUSTER)
        assert {
            x.value: value(m, "failoverd_replication_mode", mode=x.value) for x in ReplicationMode
        } == {x.value: (1.0 if x is mode else 0.0) for x in ReplicationMode}
        feed(m, State(), step_of(State()), bare())  # a tick changes nothing about it
        assert value(m, "failoverd_replication_mode", mode=mode.value) == 1


def test_a_sync_standby_is_named_only_by_a_record_of_the_current_epoch(m: Metrics) -> None:
    assert value(m, "failoverd_sync_standby_named") == 0  # before the first tick
    active = state_of(Role.ACTIVE, 3)
    feed(m, active, step_of(active), with_sync(SyncRecord(PEER, 3, WALL)))
    assert value(m, "failoverd_sync_standby_named") == 1
    feed(m, active, step_of(active), with_sync(SyncRecord(None, 3, WALL)))
    assert value(m, "failoverd_sync_standby_named") == 0
    feed(m, active, step_of(active), with_sync(SyncRecord(PEER, 3, WALL)))
    # The previous active's standby vouches for nothing this one acknowledged.
    feed(m, active, step_of(active), with_sync(SyncRecord(PEER, 3, WALL), epoch=4))
    assert value(m, "failoverd_sync_standby_named") == 0
    feed(m, active, step_of(active), with_sync(None))  # never written, or malformed
    assert value(m, "failoverd_sync_standby_named") == 0
    feed(m, active, step_of(active), with_sync(SyncRecord(PEER, 3, WALL)))
    feed(m, active, step_of(active), bare())  # no view (yet): not known to be named
    assert value(m, "failoverd_sync_standby_named") == 0


def test_a_dropped_standby_counts_once_its_record_is_written(m: Metrics) -> None:
    active = state_of(Role.ACTIVE, 3)
    assert value(m, "failoverd_sync_dropped_total") == 0  # exists from start-up

    def record(action_id: int, standby: str | None, code: str) -> RecordSync:
        return RecordSync(action_id, Reason(code, code), standby=standby, epoch=3)

    feed(m, active, step_of(active, record(7, None, "sync_dropped")), with_sync(None))
    assert value(m, "failoverd_sync_dropped_total") == 0  # asked, not done yet
    done = ActionResult(7, ok=True, detail="sync = none at epoch 3")
    feed(m, active, step_of(active), bare(results=(done,)))
    feed(m, active, step_of(active), bare(results=(done,)))  # the same result seen again
    assert value(m, "failoverd_sync_dropped_total") == 1
    # A drop the ZooKeeper transaction refused dropped nothing.
    feed(m, active, step_of(active, record(8, None, "sync_dropped")), bare())
    feed(m, active, step_of(active), bare(results=(ActionResult(8, ok=False),)))
    # Naming a standby, and a new active's reset to none, are not drops.
    feed(
        m,
        active,
        step_of(active, record(9, PEER, "sync_named"), record(10, None, "sync_reset")),
        bare(),
    )
    ok = (ActionResult(9, ok=True), ActionResult(10, ok=True))
    feed(m, active, step_of(active), bare(results=ok))
    assert value(m, "failoverd_sync_dropped_total") == 1
    feed(m, active, step_of(active, record(11, None, "sync_dropped")), bare())
    feed(m, active, step_of(active), bare(results=(ActionResult(11, ok=True),)))
    assert value(m, "failoverd_sync_dropped_total") == 2


# --------------------------------------------------------------------------------------------
# The failsafe
# --------------------------------------------------------------------------------------------

FAILSAFE = replace(SETTINGS, failsafe=True, pledge_ttl=2.0, pledge_margin=0.2)


def test_without_the_failsafe_its_gauges_are_nan_and_its_counters_absent(m: Metrics) -> None:
    feed(m, State(), step_of(State()), bare(pledged_until=None))
    for name in (
        "failoverd_failsafe_pledged_until_remaining_seconds",
        "failoverd_failsafe_pledge_remaining_seconds",
    ):
        got = value(m, name)
        assert got is not None and math.isnan(got)
    assert value(m, "failoverd_failsafe_refused_total", reason="bad_mac") is None
    assert value(m, "failoverd_failsafe_pledges_granted_total") is None


def test_failsafe_counters_exist_at_zero_and_move_by_the_channel_counts() -> None:
    m = Metrics(FAILSAFE, CLUSTER)
    for reason in Refused:
        assert value(m, "failoverd_failsafe_refused_total", reason=reason.value) == 0
    for result in ASK_RESULTS:
        assert value(m, "failoverd_failsafe_asks_total", result=result) == 0
    assert value(m, "failoverd_failsafe_pledges_granted_total") == 0
    assert value(m, "failoverd_failsafe_pledges_received_total") == 0

    first = FailsafeStats(refused={"bad_mac": 2}, granted=3, asks={"pledged": 1})
    m.update_failsafe(first)
    m.update_failsafe(first)  # the same counts seen again on the next tick
    later = FailsafeStats(
        refused={"bad_mac": 2, "replay": 1}, granted=5, received=4, asks={"pledged": 4}
    )
    m.update_failsafe(later)
    assert value(m, "failoverd_failsafe_refused_total", reason="bad_mac") == 2
    assert value(m, "failoverd_failsafe_refused_total", reason="replay") == 1
    assert value(m, "failoverd_failsafe_pledges_granted_total") == 5
    assert value(m, "failoverd_failsafe_pledges_received_total") == 4
    assert value(m, "failoverd_failsafe_asks_total", result="pledged") == 4


def test_failsafe_gauges_say_how_long_each_promise_still_binds() -> None:
    m = Metrics(FAILSAFE, CLUSTER)
    feed(m, State(), step_of(State()), bare(now=100.0))
    assert value(m, "failoverd_failsafe_pledged_until_remaining_seconds") == 0
    assert value(m, "failoverd_failsafe_pledge_remaining_seconds") == 0
    obs = bare(now=100.0, pledged_until=101.5, pledge=Pledge(epoch=3, sent_at=99.5, ttl=2.0))
    feed(m, State(), step_of(State()), obs)
    assert value(m, "failoverd_failsafe_pledged_until_remaining_seconds") == pytest.approx(1.5)
    # The active counts from its send time, less the margin: 99.5 + 2.0 - 0.2 - 100.
    assert value(m, "failoverd_failsafe_pledge_remaining_seconds") == pytest.approx(1.3)
    lapsed = bare(now=200.0, pledged_until=101.5, pledge=Pledge(epoch=3, sent_at=99.5, ttl=2.0))
    feed(m, State(), step_of(State()), lapsed)
    assert value(m, "failoverd_failsafe_pledged_until_remaining_seconds") == 0
    assert value(m, "failoverd_failsafe_pledge_remaining_seconds") == 0


# --------------------------------------------------------------------------------------------
# The endpoint
# --------------------------------------------------------------------------------------------


@pytest.fixture
def served(m: Metrics) -> Iterator[Metrics]:
    m.serve("127.0.0.1", free_port())
    try:
        yield m
    finally:
        m.close()


def test_metrics_are_served_over_http(served: Metrics) -> None:
    n1 = run_crash_failover(served)
    probed = bare(local=LocalHealth((CheckStatus("app", True, latency=0.012, successes=9),)))
    served.update(n1.state, step_of(n1.state), probed)
    url = f"http://127.0.0.1:{served.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    assert 'failoverd_role{cluster="prod",node="n1",role="active"} 1.0' in text
    assert 'failoverd_failovers_total{cluster="prod",node="n1",reason="failover"} 1.0' in text
    for name in (
        "failoverd_is_active",
        "failoverd_lease_epoch",
        "failoverd_zookeeper_connected",
        "failoverd_check_latency_seconds_bucket",
        "failoverd_replication_lag_bytes",
        "failoverd_failover_duration_seconds_bucket",
        "failoverd_decisions_total",
        "failoverd_fences_total",
        "failoverd_paused",
        "failoverd_replication_mode",
        "failoverd_sync_standby_named",
        "failoverd_sync_dropped_total",
        "failoverd_max_lag_on_failover_bytes",
    ):
        assert f"\n{name}{{" in text, name
    assert "\nprocess_start_time_seconds " in text


def test_a_taken_port_is_a_clear_error_and_close_is_idempotent(m: Metrics) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(MetricsError, match=rf"127\.0\.0\.1:{port}: Address already in use"):
            m.serve("127.0.0.1", port)
    assert m.port == 0
    m.close()
    m.close()


def test_port_zero_picks_a_free_port_and_serving_twice_is_refused(m: Metrics) -> None:
    m.serve("127.0.0.1", 0)
    port = m.port
    try:
        assert port > 0
        with pytest.raises(MetricsError, match="already served"):
            m.serve("127.0.0.1", 0)
    finally:
        m.close()
    assert m.port == 0
    with socket.socket() as s:  # nothing listens on the port once closed
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_config_reloads_are_counted_by_result_and_an_applied_one_dates_the_config(
    m: Metrics,
) -> None:
    for result in ("applied", "refused"):
        assert value(m, "failoverd_config_reloads_total", result=result) == 0
    m.config_loaded_at(1000.0)
    m.config_reload("refused", None, 1500.0)
    assert value(m, "failoverd_config_reloads_total", result="refused") == 1
    assert value(m, "failoverd_config_loaded_timestamp_seconds") == 1000.0  # the old one stays
    newer = replace(SETTINGS, nofailover=True)
    m.config_reload("applied", newer, 2000.0)
    assert value(m, "failoverd_config_reloads_total", result="applied") == 1
    assert value(m, "failoverd_config_loaded_timestamp_seconds") == 2000.0
    assert m.settings is newer  # eligibility is judged with the new policy from now on

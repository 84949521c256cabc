"""Probes lag behind the core's own actions on the database.

Found in the lab: right after stepping down and restarting its database as a replica, a node
still saw its last probe say "primary" (taken before the stop), decided it was a stale primary
under the peer's lease, and fenced itself. A probe that started before the last database action
finished must not count.
"""

from __future__ import annotations

from dataclasses import replace

from failoverd.core import (
    ActionResult,
    ClusterView,
    DatabaseStatus,
    DbRole,
    Demotion,
    LeaseInfo,
    Observation,
    PeerDb,
    PeerProbe,
    Pending,
    Role,
    Settings,
    State,
    StopDatabase,
    ZkState,
    ZkStatus,
    step,
)

SETTINGS = Settings(node="fln1", peer="fln2", self_fence_after=1.0)


def observe(now: float, db: DatabaseStatus, results: tuple[ActionResult, ...] = ()) -> Observation:
    return Observation(
        now=now,
        wall_now=1_000.0 + now,
        zk=ZkStatus(ZkState.CONNECTED, 0.0, now - 0.05),
        cluster=ClusterView(epoch=2, lease=LeaseInfo("fln2", 2, 0.0, mine=False), last_leader=None),
        database=db,
        peer_database=PeerProbe(PeerDb.REPLICA, now - 0.1),
        results=results,
    )


def test_stale_primary_probe_after_start_replica_does_not_fence() -> None:
    demoting = State(
        role=Role.DEMOTING,
        epoch=1,
        pending=Pending(id=7, kind="StartReplica", started_at=10.0),
        demotion=Demotion(
            kind="stepdown",
            started_at=9.9,
            vip_removed=True,
            db_stopped=True,
            released=True,
            final_lsn=100,
        ),
        next_id=8,
    )
    stale = DatabaseStatus(role=DbRole.PRIMARY, lsn=100, observed_at=9.8)
    done = step(SETTINGS, demoting, observe(10.2, stale, (ActionResult(7, ok=True),)))
    assert done.state.role is Role.PASSIVE
    later = step(SETTINGS, done.state, observe(10.3, stale))
    assert later.state.role is Role.PASSIVE
    assert not any(isinstance(a, StopDatabase) for a in later.actions)
    fresh = replace(stale, role=DbRole.REPLICA, observed_at=10.25, streaming=True)
    assert step(SETTINGS, later.state, observe(10.4, fresh)).state.role is Role.PASSIVE


def test_a_fresh_primary_probe_under_the_peers_lease_still_fences() -> None:
    passive = State(role=Role.PASSIVE, epoch=1, db_changed_at=10.0, next_id=8)
    fresh = DatabaseStatus(role=DbRole.PRIMARY, lsn=100, observed_at=10.5)
    result = step(SETTINGS, passive, observe(10.6, fresh))
    assert result.state.role is Role.FENCED
    assert any(isinstance(a, StopDatabase) for a in result.actions)

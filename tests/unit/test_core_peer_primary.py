"""A free lease while the peer's database answers as primary: fence it, or wait for it?

Found in the lab: both daemons start together, the replica's node sees the lease free and the
peer's database primary, and fenced the very node that was about to take the lease. The peer
must only be fenced when its daemon is gone (frozen, crashed, stopped while paused).
"""

from __future__ import annotations

from failoverd.core import (
    AcquireLease,
    ClusterView,
    DatabaseStatus,
    DbRole,
    FencePeer,
    LastLeader,
    MemberStatus,
    Observation,
    PeerDb,
    PeerProbe,
    Role,
    Settings,
    State,
    ZkState,
    ZkStatus,
    step,
)

SETTINGS = Settings(node="fln2", peer="fln1", self_fence_after=1.0)
REPLICA = DatabaseStatus(role=DbRole.REPLICA, lsn=100, replayed_lsn=100, streaming=True)


def observe(epoch: int, peer_record: MemberStatus | None, now: float = 50.0) -> Observation:
    return Observation(
        now=now,
        wall_now=1_000.0,
        zk=ZkStatus(ZkState.CONNECTED, 0.0, now - 0.05),
        cluster=ClusterView(
            epoch=epoch,
            lease=None,
            last_leader=None if epoch == 0 else LastLeader("fln1", epoch - 1, 90, True),
            members=() if peer_record is None else (peer_record,),
        ),
        database=REPLICA,
        peer_database=PeerProbe(PeerDb.PRIMARY, now - 0.1),
    )


def record(role: str, age: float = 0.2) -> MemberStatus:
    return MemberStatus(
        node="fln1", role=role, epoch=0, eligible=False, healthy=True, reason="", age=age
    )


def names(obs: Observation) -> list[str]:
    return [a.name for a in step(SETTINGS, State(role=Role.PASSIVE), obs).actions]


def test_fresh_cluster_waits_for_the_primarys_node_even_without_its_record() -> None:
    for peer in (None, record("starting")):
        result = step(SETTINGS, State(role=Role.PASSIVE), observe(0, peer))
        assert not any(isinstance(a, FencePeer | AcquireLease) for a in result.actions)
        assert result.reason.code == "waiting_for_peer_primary"


def test_peer_daemon_alive_is_waited_for() -> None:
    for role in ("starting", "passive", "promoting", "active"):
        assert "FencePeer" not in names(observe(3, record(role)))
        assert "AcquireLease" not in names(observe(3, record(role)))


def test_peer_daemon_gone_or_stale_is_fenced_before_the_lease() -> None:
    assert "FencePeer" in names(observe(3, None))
    assert "FencePeer" in names(observe(3, record("passive", age=60.0)))
    assert "FencePeer" in names(observe(3, record("fenced")))
    assert "AcquireLease" not in names(observe(3, None))


def test_a_primary_probe_older_than_the_lease_release_is_not_acted_on() -> None:
    """Found in the lab: the active stepped down cleanly (database stopped, lease released) and
    the passive fenced it on a probe taken before the stop. Wait for a newer probe instead."""
    stale = observe(3, None)
    assert stale.cluster is not None
    changed = stale.peer_database.probed_at + 0.05
    obs = Observation(
        now=stale.now,
        wall_now=stale.wall_now,
        zk=stale.zk,
        cluster=ClusterView(
            epoch=3,
            lease=None,
            last_leader=LastLeader("fln1", 3, 90, True),
            lease_changed_at=changed,
        ),
        database=REPLICA,
        peer_database=stale.peer_database,
    )
    result = step(SETTINGS, State(role=Role.PASSIVE), obs)
    assert not any(isinstance(a, FencePeer | AcquireLease) for a in result.actions)
    assert result.reason.code == "waiting_for_probe"
    fresh = Observation(
        now=obs.now + 0.3,
        wall_now=obs.wall_now,
        zk=ZkStatus(ZkState.CONNECTED, 0.0, obs.now + 0.25),
        cluster=obs.cluster,
        database=REPLICA,
        peer_database=PeerProbe(PeerDb.DOWN, changed + 0.2),
    )
    assert any(isinstance(a, AcquireLease) for a in step(SETTINGS, result.state, fresh).actions)

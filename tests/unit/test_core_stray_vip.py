"""At most one node has the VIP: one seen where it must not be is removed, whatever put it there
(a removal that failed during a self-fence, a daemon restarted while the peer holds the lease)."""

from __future__ import annotations

from dataclasses import replace

from failoverd.core import (
    ClusterView,
    LeaseInfo,
    Observation,
    Pending,
    RemoveVip,
    Role,
    Settings,
    State,
    ZkState,
    ZkStatus,
    step,
)

SETTINGS = Settings(node="n1", peer="n2", self_fence_after=1.0)


def observe(mine: bool, vip: bool | None) -> Observation:
    holder = "n1" if mine else "n2"
    return Observation(
        now=10.0,
        wall_now=1_000.0,
        zk=ZkStatus(ZkState.CONNECTED, 0.0, 9.95),
        cluster=ClusterView(epoch=3, lease=LeaseInfo(holder, 3, 0.0, mine), last_leader=None),
        vip_present=vip,
    )


def removes(state: State, obs: Observation) -> bool:
    return any(isinstance(a, RemoveVip) for a in step(SETTINGS, state, obs).actions)


def test_passive_and_fenced_nodes_remove_a_vip_they_still_have() -> None:
    assert removes(State(role=Role.PASSIVE, epoch=2), observe(mine=False, vip=True))
    fenced = State(role=Role.FENCED, epoch=2)
    assert removes(fenced, observe(mine=False, vip=True))
    assert not removes(State(role=Role.PASSIVE, epoch=2), observe(mine=False, vip=False))
    assert not removes(State(role=Role.PASSIVE, epoch=2), observe(mine=False, vip=None))


def test_a_starting_node_removes_it_only_when_the_peer_holds_the_lease() -> None:
    assert removes(State(), observe(mine=False, vip=True))
    assert not removes(State(), observe(mine=True, vip=True))


def test_the_active_keeps_its_vip_and_an_action_in_flight_is_not_overtaken() -> None:
    active = State(role=Role.ACTIVE, epoch=3)
    assert not removes(active, observe(mine=True, vip=True))
    busy = replace(State(role=Role.FENCED, epoch=2), pending=Pending(5, "StopDatabase", 9.9))
    assert not removes(busy, observe(mine=False, vip=True))

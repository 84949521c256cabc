"""Cluster-wide properties: both nodes run the real core in ``clustersim``'s world.

Random traces mix partitions (a node cut off from ZooKeeper, the nodes cut off from each other,
the whole ensemble down), crashes, daemons killed, frozen and stopped, PostgreSQL killed and
frozen, failing checks, broken fencing, switchovers, and pause and resume at any moment. At every
instant of every trace:

1. at most one node holds the VIP;
2. at most one PostgreSQL accepts writes;
3. a promotion after a clean hand-over has every write the old primary acknowledged;
4. in sync and strict mode the standby the ``sync`` record names has every write acknowledged
   since the record's epoch, and no promotion an operator did not force loses one.

And liveness, "no one-way doors": once every fault is healed (hosts booted, links and ZooKeeper
back, daemons running, nothing paused or requested), the two nodes are one active (VIP, writable
primary) and one passive streaming from it within a bounded time, without any command, and stay
so.
"""

from __future__ import annotations

import random

import clustersim
import pytest
from clustersim import DT, NODES, Nemesis, SafetyError, Sim, other, run_random, run_to_health
from hypothesis import event, given, settings
from hypothesis import strategies as st

from failoverd.core import ReplicationMode, Role

# A trace draws thousands of numbers: hypothesis picks the seed, random.Random the rest.
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=300, deadline=None)
@given(seed=seeds)
def test_never_two_actives_under_random_faults(seed: int) -> None:
    sim = run_random(random.Random(seed), seconds=240.0)
    for role in sorted(sim.roles_seen):
        event(f"reached {role.value}")


@settings(max_examples=300, deadline=None)
@given(seed=seeds)
def test_never_two_actives_when_pause_meets_partitions(seed: int) -> None:
    """Only the faults of the split brain seen in the lab, so traces hit it often."""
    kinds = ("pause", "zk_cut", "peer_cut", "zk_cut", "stop_daemon")
    run_random(random.Random(seed), seconds=200.0, kinds=kinds)


def test_paused_active_cut_off_from_zookeeper_and_peer_stops_before_the_peer_leads() -> None:
    """The lab's split brain: pause, cut the active off from ZooKeeper and from its peer, resume."""
    sim = Sim(random.Random(1))
    nemesis = Nemesis(sim, random.Random(1), ())
    for _ in range(int(20 / DT)):
        sim.advance()
    active = next(n for n in NODES if sim.nodes[n].state.role is Role.ACTIVE)
    sim.pause(True)
    for _ in range(int(3 / DT)):
        sim.advance()
    sim.set_zk_link(active, False)
    sim.set_peer_link(False)
    sim.pause(False)
    for _ in range(int(60 / DT)):
        nemesis.step(inject=False)
        sim.advance()
    assert sim.vip_holders() != [active] or sim.nodes[active].state.role is Role.ACTIVE
    assert not sim.nodes[active].vip, "\n".join(sim.log[-40:])
    assert not sim.nodes[active].db.writable, "\n".join(sim.log[-40:])


@pytest.mark.parametrize("failsafe", [False, True])
def test_an_active_whose_fence_self_fails_after_its_daemon_froze_is_fenced_by_its_next_life(
    failsafe: bool,
) -> None:
    """The active, cut off from ZooKeeper and its peer, freezes; the watchdog kills it, and
    ExecStopPost's fence-self fails. The next daemon finds the node serving: with the start-up
    grace, it served on until after the peer had led (the simulator found two VIP holders so);
    told its previous life ended unfenced, it fences at once."""
    sim = Sim(random.Random(7), failsafe=failsafe)
    sim.flaky = False
    for _ in range(int(20 / DT)):
        sim.advance()
    active = next(n for n in NODES if sim.nodes[n].state.role is Role.ACTIVE)
    sim.nodes[active].fence_broken = True
    sim.set_zk_link(active, False)
    sim.set_peer_link(False)
    # It freezes soon after: its session expires after the next life starts (an earlier expiry
    # leaves nothing on the node that could fence it: then only power fencing can) and before
    # the grace would end.
    for _ in range(int(1.5 / DT)):
        sim.advance()
    assert sim.nodes[active].state.role is Role.ACTIVE
    sim.freeze_daemon(active)
    for _ in range(int(40 / DT)):
        sim.advance()  # checks: never two VIP holders, never two writable primaries
    peer = sim.nodes[other(active)]
    assert peer.state.role is Role.ACTIVE, "\n".join(sim.log[-40:])
    assert not sim.nodes[active].vip and not sim.nodes[active].db.writable
    assert any("ExecStopPost's fence-self gave up" in line for line in sim.log)


@settings(max_examples=200, deadline=None)
@given(seed=seeds)
def test_every_fault_heals_by_itself(seed: int) -> None:
    _, took = run_to_health(random.Random(seed), faults_for=150.0, settle_within=120.0)
    event(f"healthy within {10 * (int(took) // 10)}-{10 * (int(took) // 10) + 10} s")


# The faults that lose acknowledged writes under asynchronous replication.
LOSSY = ("crash", "crash", "kill_db", "freeze_db", "peer_cut", "zk_cut", "freeze_daemon")


@settings(max_examples=150, deadline=None)
@given(seed=seeds)
def test_sync_mode_loses_no_acknowledged_write(seed: int) -> None:
    """Crashes, partitions and freezes while writes flow: every promotion has every write the
    site acknowledged, and the sync record never names a standby that lacks one."""
    sim = run_random(random.Random(seed), seconds=200.0, kinds=LOSSY, mode=ReplicationMode.SYNC)
    event(f"{len(sim.handovers)} promotions")


def test_the_loss_checker_catches_what_async_mode_loses() -> None:
    """The same faults in async mode, judged as strictly: the checker must see losses."""
    losses = 0
    for seed in range(60):
        try:
            run_random(
                random.Random(seed),
                seconds=120.0,
                kinds=LOSSY,
                mode=ReplicationMode.ASYNC,
                judge_every_loss=True,
            )
        except SafetyError as e:
            assert "without the acknowledged write" in str(e), str(e).splitlines()[0]
            losses += 1
    assert losses > 0


# -- the failsafe: ZooKeeper trouble is not downtime ------------------------------------------


def settled(failsafe: bool = True, seed: int = 7) -> tuple[Sim, str]:
    """A redundant cluster (no faults, flaky actions off) and its active node."""
    sim = Sim(random.Random(seed), managed=True, mode=ReplicationMode.SYNC, failsafe=failsafe)
    sim.flaky = False
    for _ in range(int(30 / DT)):
        sim.advance()
    active = next(n for n in NODES if sim.nodes[n].state.role is Role.ACTIVE)
    return sim, active


def serve_for(sim: Sim, seconds: float) -> tuple[set[str], int]:
    """Run ``seconds``: who held the VIP at some point, and how many writes were acknowledged."""
    holders, acked, _ = watch(sim, seconds)
    return holders, acked


def watch(sim: Sim, seconds: float) -> tuple[set[str], int, int]:
    """As serve_for, and the ticks in which nobody held the VIP (a step-down shows there)."""
    holders: set[str] = set()
    acked = len(sim.acked)
    dark = 0
    for _ in range(int(seconds / DT)):
        sim.advance()
        now = sim.vip_holders()
        holders.update(now)
        dark += not now
    return holders, len(sim.acked) - acked, dark


def test_a_whole_zookeeper_outage_is_not_an_outage_of_the_site() -> None:
    sim, active = settled()
    sim.set_zk(False)
    holders, acked = serve_for(sim, 60.0)
    assert holders == {active}, "\n".join(sim.log[-40:])
    assert acked > 0.5 * 60 / DT, acked  # writes acknowledged throughout
    assert sim.nodes[active].state.role is Role.ACTIVE
    sim.set_zk(True)
    holders, _, dark = watch(sim, 30.0)
    assert dark == 0, "\n".join(sim.log[-40:])  # the lease re-taken while serving
    assert holders == {active}
    assert clustersim.converged(sim) is None, clustersim.converged(sim)


@pytest.mark.parametrize("seed", range(6))
def test_a_pledge_channel_blip_in_a_zookeeper_outage_darkens_the_site_only_for_the_blip(
    seed: int,
) -> None:
    """ZooKeeper is down for everyone and the peer stops answering for a few seconds (the lab
    saw a stalled disk under the peer's pledge store do it): the active self-fences, as it
    must. Nobody can take the lease while ZooKeeper is out, so once the peer pledges again
    the active serves again at the same epoch, not only when ZooKeeper comes back."""
    sim, active = settled(seed=seed)
    epoch = sim.nodes[active].state.epoch
    sim.set_zk(False)
    serve_for(sim, 5.0)
    sim.set_peer_link(False)
    serve_for(sim, 6.0)
    assert sim.vip_holders() == [], "\n".join(sim.log[-40:])  # the self-fence
    assert sim.nodes[active].state.role is Role.FENCED
    sim.set_peer_link(True)
    healed_at = sim.now
    back_at = None
    for _ in range(int(20 / DT)):
        sim.advance()
        if back_at is None and sim.vip_holders() == [active]:
            back_at = sim.now
    assert back_at is not None, "\n".join(sim.log[-60:])
    assert back_at - healed_at < 5.0, "\n".join(sim.log[-60:])
    node = sim.nodes[active].state
    assert (node.role, node.epoch) == (Role.ACTIVE, epoch), "\n".join(sim.log[-40:])
    holders, acked = serve_for(sim, 20.0)
    assert holders == {active} and acked > 0.5 * 20 / DT, "\n".join(sim.log[-40:])
    sim.set_zk(True)
    watch(sim, 30.0)
    assert clustersim.converged(sim) is None, clustersim.converged(sim)


@pytest.mark.parametrize("seed", range(4))
def test_a_crash_failover_counts_its_duration_from_the_last_sign_of_life(seed: int) -> None:
    """The history record and metric of a crash failover include the session timeout waited
    out before the lease went free: the duration is at least the real outage (crash to VIP),
    and longer by no more than the time between the last sign of life and the crash."""
    sim, active = settled(seed=seed)
    passive = clustersim.other(active)
    crashed_at = sim.now
    sim.crash(active)
    vip_at = None
    for _ in range(int(60 / DT)):
        sim.advance()
        if vip_at is None and sim.vip_holders() == [passive]:
            vip_at = sim.now
            break
    assert vip_at is not None, "\n".join(sim.log[-40:])
    ours = [a for _, a in sim.events if a.to_node == passive and a.kind == "failover"]
    assert ours, [a for _, a in sim.events]
    phases = dict(ours[-1].phases)
    outage = vip_at - crashed_at
    assert outage >= clustersim.SESSION_TIMEOUT  # the lease expired: the wait is real
    assert outage - DT <= phases["total"] <= outage + 1.5, (phases, outage)
    assert phases["promotion"] < phases["total"] - clustersim.SESSION_TIMEOUT + 1.5, phases
    assert phases["silence"] + phases["promotion"] == pytest.approx(phases["total"])


def test_without_the_failsafe_a_zookeeper_outage_stops_the_site() -> None:
    """The same outage with the failsafe off: the active self-fences (the test above means
    something)."""
    sim, active = settled(failsafe=False)
    sim.set_zk(False)
    serve_for(sim, 30.0)
    assert sim.vip_holders() == []
    assert sim.nodes[active].state.role is Role.FENCED


@pytest.mark.parametrize("seed", range(8))
def test_the_active_cut_off_from_zookeeper_alone_serves_on_and_retakes_the_lease(
    seed: int,
) -> None:
    """Each seed draws its own delays, the new session's view among them: the lab saw the
    active step down on a view that still showed its expired lease."""
    sim, active = settled(seed=seed)
    epoch = sim.zk.epoch
    sim.set_zk_link(active, False)
    holders, acked = serve_for(sim, 40.0)  # its session expires after 10 s
    assert holders == {active}, "\n".join(sim.log[-40:])
    assert acked > 0.5 * 40 / DT, acked
    assert sim.zk.lease is None  # expired: nobody holds it, the passive keeps its word
    sim.set_zk_link(active, True)
    holders, _, dark = watch(sim, 20.0)
    assert dark == 0, "\n".join(sim.log[-40:])  # no step-down: the lease re-taken while serving
    assert holders == {active}, "\n".join(sim.log[-40:])
    assert sim.zk.lease is not None and sim.zk.lease[0] == active
    assert sim.zk.epoch == epoch + 1
    assert clustersim.converged(sim) is None, clustersim.converged(sim)


def test_the_active_cut_off_from_zookeeper_and_its_peer_is_replaced() -> None:
    sim, active = settled()
    passive = clustersim.other(active)
    sim.set_zk_link(active, False)
    sim.set_peer_link(False)
    for _ in range(int(40 / DT)):
        sim.advance()
    assert not sim.nodes[active].vip
    assert sim.vip_holders() == [passive], "\n".join(sim.log[-40:])


@settings(max_examples=150, deadline=None)
@given(seed=seeds)
def test_never_two_actives_with_the_failsafe_under_zookeeper_trouble(seed: int) -> None:
    kinds = ("zk_cut", "zk_cut", "zk_down", "peer_cut", "pause", "crash", "freeze_daemon")
    rng = random.Random(seed)
    sim = Sim(rng, managed=rng.random() < 0.85, failsafe=True)
    nemesis = Nemesis(sim, rng, kinds)
    for i in range(int(200 / DT)):
        nemesis.step(inject=i * DT > 15.0)
        sim.advance()

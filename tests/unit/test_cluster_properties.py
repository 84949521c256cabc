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

from clustersim import DT, NODES, Nemesis, SafetyError, Sim, run_random, run_to_health
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

"""Property tests for the decision core over random observation traces.

``corekit.World`` simulates node n1 (the core under test), node n2 (scripted at random: it takes a
free lease, releases it cleanly or not, crashes, comes back, answers probes as primary or not)
and ZooKeeper (epochs, the ephemeral lease, ``last_leader``, sessions that expire after T when
our link is down or the process is frozen, kazoo noticing late). Every action the core emits is
carried out by simulated adapters that answer ok, fail, answer late, lose the answer or never
answer. ``corekit.Checker`` asserts the invariants on every single step:

1. ``Promote``/``AddVip`` only under our own current lease, with ``not_after`` = round-trip send
   time + ``self_fence_after`` and ``now < not_after``;
2. an active node without a round-trip for ``self_fence_after`` removes the VIP in that step;
3. no ``AcquireLease`` while the peer answers as primary, unless fenced (FENCED) since the probe;
4. after an expired lease no ``Promote``/``AddVip`` before a fence answered FENCED or
   UNREACHABLE, and never after a FAILED one under the same epoch;
5. one ``Promote`` per epoch; epochs never go down; acquisitions never below an epoch seen;
6. paused means only ``Publish``, but for a self-fence (pause never suspends it) and, when a
   serving node's daemon stops while paused, the record that it is left serving;
7. unique increasing ids; one sequencing action in flight at a time;
8. ``step`` is deterministic and never raises;
9. (liveness) no node sits on a lease it does not use.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from corekit import (
    NODE,
    PEER,
    SETTINGS,
    WALL,
    World,
    allowed_while_paused,
    names,
    run_trace,
    sequencing,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st

from failoverd import core
from failoverd.core import (
    ActionResult,
    AddVip,
    CheckStatus,
    ClusterView,
    DatabaseStatus,
    DbRole,
    Demotion,
    FenceOutcome,
    LastLeader,
    LeaseInfo,
    LocalHealth,
    MalformedMember,
    MemberStatus,
    Observation,
    PeerDb,
    PeerProbe,
    Pending,
    Promote,
    RemoveVip,
    Role,
    State,
    SwitchoverRequest,
    Takeover,
    ZkState,
    ZkStatus,
)

STEPS = 120


# --------------------------------------------------------------------------------------------
# Random traces through the simulated environment
# --------------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(rng=st.randoms(use_true_random=False, note_method_calls=False))
def test_invariants_hold_on_every_step_of_random_traces(rng: random.Random) -> None:
    checker = run_trace(rng.choice, STEPS)
    for role in sorted(checker.roles):
        event(f"reached {role.value}")


def test_random_traces_reach_every_role_and_the_interesting_decisions() -> None:
    """The properties above are not vacuous: the traces get deep into every role."""
    roles: Counter[Role] = Counter()
    codes: Counter[str] = Counter()
    for seed in range(300):
        checker = run_trace(random.Random(seed).choice, STEPS)
        roles.update(checker.roles)
        codes.update(checker.codes)
    for role in Role:
        assert roles[role] >= 15, f"only {roles[role]} of 300 traces reached {role}: {roles}"
    for code in (
        "acquiring",
        "fencing",
        "fence_before_lease",
        "fence_failed",
        "promoting",
        "adding_vip",
        "active",
        "stepdown",
        "switchover",
        "switchover_refused",
        "lease_lost",
        "self_fenced",
        "fenced_release",
        "stale_primary",
        "must_rejoin",
        "waiting_for_replay",
        "not_eligible",
        "retry_wait",
        "paused",
        "shutdown_paused",
        "stopped",
    ):
        assert codes[code] >= 3, f"only {codes[code]} of 300 traces decided {code!r}"


def test_traces_are_reproducible() -> None:
    first = World(random.Random(7).choice)
    second = World(random.Random(7).choice)
    for _ in range(STEPS):
        first.tick()
        second.tick()
    assert first.log == second.log
    assert first.state == second.state


# --------------------------------------------------------------------------------------------
# Arbitrary (incoherent) states and observations: never raises, local invariants hold
# --------------------------------------------------------------------------------------------

NOW = 1000.0
small_epochs = st.integers(min_value=0, max_value=6)
times = st.floats(min_value=NOW - 60, max_value=NOW, allow_nan=False)
maybe_times = st.none() | times
nodes = st.sampled_from([NODE, PEER, "n3"])
lsns = st.none() | st.integers(min_value=0, max_value=1 << 32)

checks = st.lists(
    st.builds(
        CheckStatus,
        name=st.sampled_from(["app", "postgres", "squid"]),
        healthy=st.booleans(),
        reason=st.sampled_from(["", "HTTP 503", "slow"]),
    ),
    max_size=3,
).map(tuple)

members = st.lists(
    st.one_of(
        st.builds(
            MemberStatus,
            node=nodes,
            role=st.sampled_from([r.value for r in Role]),
            epoch=small_epochs,
            eligible=st.booleans(),
            healthy=st.booleans(),
            reason=st.just("because"),
            lsn=lsns,
            age=st.floats(min_value=0, max_value=30, allow_nan=False),
        ),
        st.builds(MalformedMember, node=nodes, error=st.just("bad JSON")),
    ),
    max_size=2,
).map(tuple)

clusters = st.builds(
    ClusterView,
    epoch=small_epochs,
    lease=st.none()
    | st.builds(LeaseInfo, node=nodes, epoch=small_epochs, since=st.just(WALL), mine=st.booleans()),
    last_leader=st.none()
    | st.builds(LastLeader, node=nodes, epoch=small_epochs, final_lsn=lsns, clean=st.booleans()),
    members=members,
    switchover=st.none()
    | st.builds(
        SwitchoverRequest,
        target=st.none() | nodes,
        from_epoch=small_epochs,
        requested_by=st.just("alice"),
        deadline=st.floats(min_value=WALL + NOW - 10, max_value=WALL + NOW + 10),
        force=st.booleans(),
    ),
    paused=st.booleans(),
)

databases = st.builds(
    DatabaseStatus,
    role=st.sampled_from(list(DbRole)),
    lsn=lsns,
    replayed_lsn=lsns,
    streaming=st.booleans(),
    last_received_age=st.none() | st.floats(min_value=0, max_value=60, allow_nan=False),
    was_primary=st.none() | st.booleans(),
    stopped_cleanly=st.none() | st.booleans(),
    recorded_epoch=st.none() | small_epochs,
)


def results_for(action_ids: st.SearchStrategy[int]) -> st.SearchStrategy[ActionResult]:
    return st.builds(
        ActionResult,
        action_id=action_ids,
        ok=st.booleans(),
        epoch=st.none() | small_epochs,
        final_lsn=lsns,
        clean=st.none() | st.booleans(),
        fence=st.none() | st.sampled_from(list(FenceOutcome)),
    )


results = st.lists(results_for(st.integers(min_value=1, max_value=12)), max_size=2).map(tuple)

observations = st.builds(
    Observation,
    now=st.just(NOW),
    wall_now=st.just(WALL + NOW),
    zk=st.builds(
        ZkStatus,
        state=st.sampled_from(list(ZkState)),
        changed_at=times,
        last_roundtrip_sent_at=maybe_times,
    ),
    cluster=st.none() | clusters,
    local=st.builds(LocalHealth, checks=checks, complete=st.booleans()),
    database=databases,
    peer_database=st.builds(PeerProbe, state=st.sampled_from(list(PeerDb)), probed_at=times),
    results=results,
    shutdown_requested=st.booleans(),
)

takeovers = st.builds(
    Takeover,
    kind=st.sampled_from(["bootstrap", "failover", "stepdown", "switchover", "readopt"]),
    from_node=st.none() | nodes,
    started_at=times,
    fence_needed=st.booleans(),
    fenced=st.booleans(),
    promoted=st.booleans(),
    last_mark=times,
)

demotions = st.builds(
    Demotion,
    kind=st.sampled_from(["stepdown", "switchover", "shutdown", "lease_lost", "aborted"]),
    started_at=times,
    vip_removed=st.booleans(),
    db_stopped=st.booleans(),
    released=st.booleans(),
    final_lsn=lsns,
    clean=st.booleans(),
)

ALL_KINDS = [k.__name__ for k in core.SEQUENCING]
# What each role can have in flight (anything else stays possible, but rarer).
KINDS_BY_ROLE = {
    Role.STARTING: ["StartReplica", "RemoveVip"],
    Role.PASSIVE: ["AcquireLease", "FencePeer", "StartReplica", "ReleaseLease"],
    Role.PROMOTING: ["FencePeer", "Promote", "AddVip"],
    Role.ACTIVE: ["AddVip"],
    Role.DEMOTING: ["RemoveVip", "StopDatabase", "ReleaseLease", "StartReplica"],
    Role.FENCED: ["StopDatabase", "RemoveVip", "ReleaseLease"],
    Role.PAUSED: ALL_KINDS,
}


@st.composite
def states(draw: st.DrawFn) -> State:
    role = draw(st.sampled_from(list(Role)))
    epoch = draw(small_epochs)
    next_id = draw(st.integers(min_value=1, max_value=12))
    pending = None
    if next_id > 1 and draw(st.sampled_from([True, True, True, False])):
        likely = draw(st.sampled_from([True, True, True, False]))
        kinds = st.sampled_from(KINDS_BY_ROLE[role] if likely else ALL_KINDS)
        pending = Pending(
            draw(st.integers(min_value=1, max_value=next_id - 1)), draw(kinds), draw(times)
        )
    return State(
        role=role,
        epoch=epoch,
        highest_epoch=epoch + draw(st.integers(min_value=0, max_value=2)),
        promoted_epoch=draw(st.integers(min_value=0, max_value=epoch)),
        pending=pending,
        takeover=draw(st.none() | takeovers),
        demotion=draw(st.none() | demotions),
        next_id=next_id,
        last_failover_at=draw(maybe_times),
        retry_after=draw(st.none() | st.floats(min_value=NOW - 10, max_value=NOW + 10)),
        peer_fenced_at=draw(maybe_times),
        active_lsn=draw(lsns),
        lease_free_since=draw(maybe_times),
        paused_from=draw(st.none() | st.sampled_from(list(Role))),
    )


@st.composite
def steps(draw: st.DrawFn) -> tuple[State, Observation]:
    """A state and an observation that, more often than not, answers its in-flight action."""
    state = draw(states())
    obs = draw(observations)
    if state.pending is not None and draw(st.sampled_from([True, True, True, False])):
        answer = draw(results_for(st.just(state.pending.id)))
        obs = replace(obs, results=(answer, *obs.results))
    return state, obs


@settings(max_examples=1500, deadline=None)
@given(step=steps())
def test_step_never_raises_and_keeps_the_local_invariants(step: tuple[State, Observation]) -> None:
    state, obs = step
    s = SETTINGS
    out = core.step(s, state, obs)
    assert core.step(s, state, obs) == out
    after = out.state
    c = obs.cluster
    deadline = core.roundtrip_deadline(s, obs)
    # 1. Leased actions.
    for a in out.actions:
        if isinstance(a, Promote | AddVip):
            assert c is not None and c.lease is not None and c.lease.mine
            assert a.epoch == c.lease.epoch == c.epoch == after.epoch
            assert deadline is not None and a.not_after == deadline > obs.now
    # 2. Self-fence of an active node.
    if state.role is Role.ACTIVE and (deadline is None or obs.now >= deadline):
        assert any(isinstance(a, RemoveVip) for a in out.actions)
    # 5. Epochs never go down; one Promote per epoch.
    assert after.epoch >= state.epoch
    assert after.highest_epoch >= state.highest_epoch
    promotes = [a for a in out.actions if isinstance(a, Promote)]
    assert len(promotes) <= 1
    if promotes:
        assert promotes[0].epoch > state.promoted_epoch
    # 6. Paused means paused, but for self-fencing, which pause never suspends.
    if after.role is Role.PAUSED or (state.role is Role.PAUSED and c is not None and c.paused):
        assert allowed_while_paused(s, obs, out.actions, after), names(out.actions)
    # 7. Ids unique and increasing from the state's counter; sequencing one at a time.
    ids = [a.id for a in out.actions]
    assert ids == list(range(state.next_id, state.next_id + len(ids)))
    assert after.next_id == state.next_id + len(ids)
    kinds = [a.name for a in sequencing(out.actions)]
    assert len(kinds) <= 1 or kinds == ["RemoveVip", "StopDatabase"]
    if kinds and kinds[0] != "RemoveVip" and state.pending is not None:
        done = any(r.action_id == state.pending.id for r in obs.results)
        timed_out = obs.now - state.pending.started_at > s.action_timeout
        assert done or timed_out, f"{kinds} while {state.pending} in flight"

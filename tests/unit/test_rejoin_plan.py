"""`failoverctl rejoin` decides whether to ask, and when the node has rejoined, from views."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from failoverd.core import ClusterView, LeaseInfo, MalformedMember, MemberStatus
from failoverd.core.model import RejoinRequest
from failoverd.rejoin import (
    RejoinPlan,
    RejoinRefusedError,
    advance,
    check_node,
    describe,
    is_streaming,
    plan_rejoin,
    start_progress,
)

MEMBERS = ["fln1", "fln2"]


def member(
    node: str,
    role: str,
    db_role: str,
    eligible: bool = False,
    reason: str = "",
) -> MemberStatus:
    return MemberStatus(
        node=node,
        role=role,
        epoch=3,
        eligible=eligible,
        healthy=True,
        reason=reason or f"{node} {role}",
        db_role=db_role,
    )


ACTIVE = member("fln1", "active", "primary")
FENCED = member("fln2", "fenced", "stopped", reason="diverged from fln1: waiting for a rejoin")
STREAMING = member("fln2", "passive", "replica", eligible=True, reason="streaming from fln1")


def view(
    fln2: MemberStatus | MalformedMember | None = FENCED,
    lease: str | None = "fln1",
    **extra: object,
) -> ClusterView:
    members = (ACTIVE,) if fln2 is None else (ACTIVE, fln2)
    return ClusterView(
        epoch=3,
        lease=None if lease is None else LeaseInfo(lease, 3, 0.0, False),
        last_leader=None,
        members=members,
        **extra,  # type: ignore[arg-type]
    )


def request(node: str = "fln2", reclone: bool = False) -> RejoinRequest:
    return RejoinRequest(node, reclone, "ops@host", 1_700_000_000.0)


# -- may it be asked? ----------------------------------------------------------------------------


def test_a_fenced_node_may_rejoin_the_active_without_warnings() -> None:
    plan = plan_rejoin(view(), MEMBERS, "fln2", reclone=False)
    assert plan == RejoinPlan("fln2", False, "fln1", 3, streaming=False)


def test_an_unknown_node_is_refused_from_the_configuration_alone() -> None:
    with pytest.raises(RejoinRefusedError, match=r"unknown node 'fln9' \(members: fln1, fln2\)"):
        check_node(MEMBERS, "fln9")
    check_node(MEMBERS, "fln2")  # a member passes
    with pytest.raises(RejoinRefusedError, match="unknown node"):
        plan_rejoin(view(), MEMBERS, "fln9", reclone=False)


@pytest.mark.parametrize(
    ("v", "node", "why"),
    [
        (view(), "fln1", "fln1 is the active node (it holds the lease, epoch 3)"),
        (view(lease="fln2"), "fln2", "fln2 is the active node"),
        (view(paused=True), "fln2", "the cluster is paused: resume it first"),
        # Paused wins over everything else: nothing is asked of a paused cluster.
        (view(paused=True), "fln1", "paused"),
    ],
)
def test_refusals(v: ClusterView, node: str, why: str) -> None:
    with pytest.raises(RejoinRefusedError, match=re.escape(why)):
        plan_rejoin(v, MEMBERS, node, reclone=True)


@pytest.mark.parametrize(
    ("v", "reclone", "warning"),
    [
        (view(lease=None), False, "no active node: fln2 rejoins once a node holds the lease"),
        (
            view(rejoin_requests=(request(reclone=True),)),
            False,
            "replaces the pending re-clone request of fln2 by ops@host",
        ),
        (view(fln2=None), False, "fln2 publishes no status"),
        (view(fln2=MalformedMember("fln2", "bad json")), True, "malformed: bad json"),
        (view(fln2=STREAMING), False, "fln2 already streams as an eligible passive"),
    ],
)
def test_warnings_say_what_to_know_before_confirming(
    v: ClusterView, reclone: bool, warning: str
) -> None:
    plan = plan_rejoin(v, MEMBERS, "fln2", reclone=reclone)
    assert len(plan.warnings) == 1, plan.warnings
    assert warning in plan.warnings[0]


def test_a_streaming_node_may_be_recloned_without_a_warning() -> None:
    plan = plan_rejoin(view(fln2=STREAMING), MEMBERS, "fln2", reclone=True)
    assert plan.warnings == () and plan.streaming and plan.reclone


def test_streaming_means_passive_replica_and_eligible() -> None:
    assert is_streaming(STREAMING)
    for record in (
        replace(STREAMING, eligible=False),
        replace(STREAMING, db_role="stopped"),
        replace(STREAMING, role="fenced"),
        FENCED,
        MalformedMember("fln2", "x"),
        None,
    ):
        assert not is_streaming(record), record


# -- has it rejoined? ----------------------------------------------------------------------------


def test_a_fenced_node_is_done_once_it_streams() -> None:
    plan = plan_rejoin(view(), MEMBERS, "fln2", reclone=False)
    p = start_progress(plan)
    p = advance(p, view(), plan)  # the request not shown yet
    assert not p.done and not p.request_seen
    assert p.state == "fln2 is fenced, database stopped: diverged from fln1: waiting for a rejoin"
    rewinding = member("fln2", "fenced", "stopped", reason="rewinding from fln1")
    p = advance(p, view(rewinding, rejoin_requests=(request(),)), plan)
    assert p.request_seen and not p.taken and not p.done
    assert "rewinding from fln1" in p.state
    p = advance(p, view(rewinding), plan)
    assert p.taken and not p.done
    p = advance(p, view(STREAMING), plan)
    assert p.done
    assert p.state == "fln2 is passive, database replica, eligible: streaming from fln1"


def test_streaming_is_enough_even_before_the_request_is_taken() -> None:
    """Rejoined means passive, replica, eligible: whether the daemon has deleted its request
    yet does not matter for a plain rejoin."""
    plan = plan_rejoin(view(), MEMBERS, "fln2", reclone=False)
    p = advance(start_progress(plan), view(STREAMING, rejoin_requests=(request(),)), plan)
    assert p.done and not p.taken


def test_a_reclone_of_a_streaming_node_waits_for_the_clone() -> None:
    """Its old streaming state says nothing about the clone: done only after it left streaming
    (or took the request) and streams again."""
    plan = plan_rejoin(view(fln2=STREAMING), MEMBERS, "fln2", reclone=True)
    pending = (request(reclone=True),)
    p = advance(start_progress(plan), view(STREAMING), plan)
    assert not p.done
    p = advance(p, view(STREAMING, rejoin_requests=pending), plan)
    assert not p.done
    cloning = member("fln2", "fenced", "stopped", reason="cloning from fln1")
    p = advance(p, view(cloning, rejoin_requests=pending), plan)
    assert not p.done and p.left_streaming
    p = advance(p, view(STREAMING, rejoin_requests=pending), plan)
    assert p.done


def test_a_reclone_of_a_streaming_node_is_done_once_the_request_was_taken() -> None:
    plan = plan_rejoin(view(fln2=STREAMING), MEMBERS, "fln2", reclone=True)
    p = advance(
        start_progress(plan), view(STREAMING, rejoin_requests=(request(reclone=True),)), plan
    )
    assert not p.done
    p = advance(p, view(STREAMING), plan)
    assert p.taken and p.done


def test_a_plain_rejoin_of_a_streaming_node_is_done_at_once() -> None:
    plan = plan_rejoin(view(fln2=STREAMING), MEMBERS, "fln2", reclone=False)
    assert advance(start_progress(plan), view(STREAMING), plan).done


def test_describe_says_why_a_node_has_no_usable_record() -> None:
    assert "publishes no status" in describe(None, "fln2")
    assert "malformed: oops" in describe(MalformedMember("fln2", "oops"), "fln2")

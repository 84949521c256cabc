"""`failoverctl promote` decides whether to ask, and follows the phases, from ZooKeeper views."""

from __future__ import annotations

import pytest

from failoverd.core import (
    ClusterView,
    LastLeader,
    LeaseInfo,
    MalformedMember,
    MemberStatus,
    SwitchoverRequest,
    SyncRecord,
)
from failoverd.switchover import (
    ABORTED,
    DEMOTING,
    DONE,
    PROMOTING,
    RELEASED,
    REQUESTED,
    Plan,
    SwitchoverRefusedError,
    check_target,
    phase_of,
    plan_switchover,
)

MEMBERS = ["fln1", "fln2"]


def member(node: str, role: str, eligible: bool = True, reason: str = "") -> MemberStatus:
    return MemberStatus(
        node=node, role=role, epoch=3, eligible=eligible, healthy=True, reason=reason
    )


def view(
    lease: str | None = "fln1",
    epoch: int = 3,
    passive: MemberStatus | MalformedMember | None = None,
    active_role: str = "active",
    **extra: object,
) -> ClusterView:
    passive = member("fln2", "passive") if passive is None else passive
    return ClusterView(
        epoch=epoch,
        lease=None if lease is None else LeaseInfo(lease, epoch, 0.0, False),
        members=(member("fln1", active_role), passive),
        **{"last_leader": None, **extra},  # type: ignore[arg-type]
    )


def test_default_target_is_the_passive() -> None:
    plan = plan_switchover(view(), MEMBERS, None, force=False)
    assert plan == Plan("fln1", "fln2", 3)


@pytest.mark.parametrize(
    ("v", "target", "why"),
    [
        (view(paused=True), None, "paused"),
        (view(), "fln9", "unknown node 'fln9'"),
        (view(), "fln1", "active node already"),
        (view(lease=None), "fln2", "no active node"),
        (view(passive=member("fln2", "passive", False, "replica lag 34 MB")), None, "lag 34 MB"),
        (view(passive=MalformedMember("fln2", "bad json")), None, "malformed"),
        (view(passive=member("fln2", "fenced", False, "must rejoin")), None, "fenced"),
        (view(switchover=SwitchoverRequest("fln2", 3, "ops@host", 9e9)), None, "pending already"),
    ],
)
def test_refusals_say_why(v: ClusterView, target: str | None, why: str) -> None:
    with pytest.raises(SwitchoverRefusedError, match=why):
        plan_switchover(v, MEMBERS, target, force=False)


def test_force_overrides_eligibility_and_no_active_but_never_pause() -> None:
    lagging = view(passive=member("fln2", "passive", False, "replica lag 34 MB"))
    assert "forced" in plan_switchover(lagging, MEMBERS, None, force=True).warnings[0]
    assert plan_switchover(view(lease=None), MEMBERS, "fln2", force=True).source is None
    with pytest.raises(SwitchoverRefusedError, match="paused"):
        plan_switchover(view(paused=True), MEMBERS, None, force=True)


def test_forcing_past_an_expired_lease_warns_of_loss_unless_the_target_holds_every_write() -> None:
    def warnings(mode: str, **extra: object) -> str:
        plan = plan_switchover(view(lease=None, **extra), MEMBERS, "fln2", True, mode)
        return " | ".join(plan.warnings)

    assert "MAY BE LOST: no synchronous standby is recorded for epoch 3" in warnings(
        "sync", sync=SyncRecord(None, 3)
    )
    assert "standby of record is fln1" in warnings("strict", sync=SyncRecord("fln1", 3))
    assert "asynchronous" in warnings("async")
    assert "LOST" not in warnings("sync", sync=SyncRecord("fln2", 2))
    clean = LastLeader("fln1", 3, final_lsn=9000, clean=True)
    assert "lost" not in warnings("async", last_leader=clean).lower()


def test_phases_in_order() -> None:
    plan = Plan("fln1", "fln2", 3)
    request = SwitchoverRequest("fln2", 3, "ops@host", 9e9)
    assert phase_of(view(switchover=request), plan, request_seen=True) == REQUESTED
    assert phase_of(view(), plan, request_seen=False) == REQUESTED  # not yet in the view
    assert phase_of(view(), plan, request_seen=True) == ABORTED  # withdrawn or refused
    assert phase_of(view(active_role="demoting", switchover=request), plan, True) == DEMOTING
    released = ClusterView(epoch=3, lease=None, last_leader=LastLeader("fln1", 3, 100, True))
    assert phase_of(released, plan, True) == RELEASED
    taking = ClusterView(
        epoch=4,
        lease=LeaseInfo("fln2", 4, 0.0, False),
        last_leader=None,
        members=(member("fln2", "promoting"),),
    )
    assert phase_of(taking, plan, True) == PROMOTING
    done = ClusterView(
        epoch=4,
        lease=LeaseInfo("fln2", 4, 0.0, False),
        last_leader=None,
        members=(member("fln2", "active"),),
    )
    assert phase_of(done, plan, True) == DONE


def test_the_target_is_checked_against_the_configuration_alone() -> None:
    """`promote fln9` is refused before ZooKeeper is contacted; no target means "the other"."""
    check_target(["fln1", "fln2"], "fln2")
    check_target(["fln1", "fln2"], None)
    with pytest.raises(
        SwitchoverRefusedError, match=r"unknown node 'fln9' \(members: fln1, fln2\)"
    ):
        check_target(["fln1", "fln2"], "fln9")

"""`failoverctl status`: the assessment (exit codes) and the table an operator reads."""

from __future__ import annotations

import json
from dataclasses import replace

from failoverd.core import CheckStatus, ClusterView, LeaseInfo, MalformedMember, MemberStatus
from failoverd.core.model import Position, RejoinRequest
from failoverd.status import CRITICAL, DEGRADED, HEALTHY, as_json, as_table, assess

MEMBERS = ["fln1", "fln2"]
MB = 1 << 20


def member(node: str, role: str, **kw: object) -> MemberStatus:
    base: dict[str, object] = dict(
        node=node,
        role=role,
        epoch=3,
        eligible=role == "passive",
        healthy=True,
        reason=f"{node} {role}",
        published_at=99.0,
    )
    base.update(kw)
    return MemberStatus(**base)  # type: ignore[arg-type]


def cluster(*members: MemberStatus | MalformedMember, lease: str | None = "fln1") -> ClusterView:
    return ClusterView(
        epoch=3,
        lease=None if lease is None else LeaseInfo(lease, 3, 50.0, False),
        last_leader=None,
        members=members,
    )


def test_healthy_pair() -> None:
    view = cluster(member("fln1", "active", lsn=100 * MB), member("fln2", "passive", lsn=100 * MB))
    assert assess(view, MEMBERS).code == HEALTHY


def test_passive_not_eligible_is_degraded_and_said_in_words() -> None:
    why = "replica lag 34 MB > max_lag_on_failover 16 MB"
    view = cluster(
        member("fln1", "active", lsn=134 * MB),
        member(
            "fln2",
            "passive",
            eligible=False,
            reason=f"fln1 is active (epoch 3); not eligible: {why}",
            lsn=100 * MB,
        ),
    )
    result = assess(view, MEMBERS)
    assert result.code == DEGRADED
    assert any(w.startswith("fln2 not eligible") and why in w for w in result.warnings)
    table = as_table(view, result, "lab", "/failoverd/lab", 100.0)
    assert "34 MB" in table  # the LAG column, from both published LSNs


def test_no_active_or_two_actives_are_critical() -> None:
    assert assess(cluster(member("fln2", "passive"), lease=None), MEMBERS).code == CRITICAL
    two = cluster(member("fln1", "active"), member("fln2", "active"))
    result = assess(two, MEMBERS)
    assert result.code == CRITICAL and "more than one node" in result.warnings[0]


def test_failing_check_missing_member_and_malformed_record_degrade() -> None:
    failing = member(
        "fln2",
        "passive",
        healthy=False,
        checks=(CheckStatus("app", False, "HTTP 500, expected 200", 0.004),),
    )
    result = assess(cluster(member("fln1", "active"), failing), MEMBERS)
    assert result.code == DEGRADED and "fln2 check app failing: HTTP 500" in result.warnings[0]
    table = as_table(cluster(member("fln1", "active"), failing), result, "lab", "/x", 100.0)
    assert "app FAIL 4ms" in table
    assert assess(cluster(member("fln1", "active")), MEMBERS).code == DEGRADED
    broken = cluster(member("fln1", "active"), MalformedMember("fln2", "bad json"))
    assert "malformed" in assess(broken, MEMBERS).warnings[0]


def test_table_shows_the_last_failover_and_json_round_trips() -> None:
    view = cluster(member("fln1", "active"), member("fln2", "passive"))
    history = [
        {
            "kind": "failover",
            "from": "fln2",
            "to": "fln1",
            "epoch": 3,
            "time": 90.0,
            "reason": "active (epoch 3) after failover in 2.43 s",
            "phases": {"total": 0.43},
        }
    ]
    table = as_table(view, assess(view, MEMBERS), "lab", "/x", 100.0, history)
    assert "last failover:" in table and "fln2 -> fln1 (failover in 0.43 s, epoch 3)" in table
    doc = json.loads(as_json(view, assess(view, MEMBERS), "lab", "/x", 100.0))
    assert doc["state"] == "healthy" and doc["lease"]["node"] == "fln1"


def test_pending_rejoin_requests_and_the_position_are_shown() -> None:
    base = cluster(member("fln1", "active"), member("fln2", "fenced", reason="diverged"))
    requests = (
        RejoinRequest("fln2", True, "ops@host", 40.0),
        RejoinRequest("fln3", False, "ci@runner", 90.0),
    )
    position = Position("fln1", 3, 0x3000060, 2, 95.0)
    view = replace(base, rejoin_requests=requests, position=position)
    result = assess(view, MEMBERS)
    assert result.code == assess(base, MEMBERS).code == DEGRADED  # exit codes unchanged
    table = as_table(view, result, "lab", "/x", 100.0)
    assert (
        "rejoin requested: fln2 (re-clone) by ops@host at 1970-01-01 00:00:40Z (60 s ago)" in table
    )
    assert "rejoin requested: fln3 by ci@runner" in table
    assert "rejoin requested" not in as_table(base, result, "lab", "/x", 100.0)
    doc = json.loads(as_json(view, result, "lab", "/x", 100.0))
    assert doc["rejoin_requests"] == [
        {"node": "fln2", "reclone": True, "requested_by": "ops@host", "requested_at": 40.0},
        {"node": "fln3", "reclone": False, "requested_by": "ci@runner", "requested_at": 90.0},
    ]
    assert doc["position"] == {
        "node": "fln1",
        "epoch": 3,
        "lsn": 0x3000060,
        "timeline": 2,
        "written_at": 95.0,
    }
    empty = json.loads(as_json(base, result, "lab", "/x", 100.0))
    assert empty["rejoin_requests"] == [] and empty["position"] is None


def test_a_state_only_a_person_can_end_is_said_as_such() -> None:
    """Fault healing ends every other wait; these need a decision, and status says whose."""
    why = "fenced: must rejoin as a replica of fln1; rejoin = manual: waiting for 'failoverctl "
    why += "rejoin fln2'"
    waiting = member("fln2", "fenced", reason=why, reason_code="rejoin_manual")
    result = assess(cluster(member("fln1", "active"), waiting), MEMBERS)
    assert result.code == DEGRADED
    assert result.warnings == (f"operator needed on fln2: {why}",)
    ordinary = member("fln2", "fenced", reason="fenced: inspecting", reason_code="inspecting")
    result = assess(cluster(member("fln1", "active"), ordinary), MEMBERS)
    assert result.warnings == ("fln2 is fenced: fenced: inspecting",)

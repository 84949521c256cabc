"""`failoverctl status`: the assessment (exit codes) and the table an operator reads."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from failoverd.core import (
    CheckStatus,
    ClusterView,
    LastLeader,
    LeaseInfo,
    MalformedMember,
    MemberStatus,
    ReplicationMode,
    SyncRecord,
)
from failoverd.core.model import Position, RejoinRequest
from failoverd.status import (
    CRITICAL,
    DEGRADED,
    HEALTHY,
    as_json,
    as_table,
    assess,
    member_names,
    mode_of,
)

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
    assert "last failover: 1970-01-01 00:01:30Z fln2 -> fln1 (in 0.43 s, epoch 3)" in table
    # Since the duration counts from the old active's last sign of life, the part after the
    # lease is shown beside it: a 2.4 s outage no longer reads as "failover in 0.45 s".
    history[0]["phases"] = {"silence": 1.95, "promotion": 0.45, "total": 2.4}
    table = as_table(view, assess(view, MEMBERS), "lab", "/x", 100.0, history)
    assert (
        "last failover: 1970-01-01 00:01:30Z fln2 -> fln1 "
        "(in 2.40 s (0.45 s after the lease went free), epoch 3)"
    ) in table
    doc = json.loads(as_json(view, assess(view, MEMBERS), "lab", "/x", 100.0))
    assert doc["state"] == "healthy" and doc["lease"]["node"] == "fln1"


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        ("switchover", "last switchover:"),
        ("stepdown", "last takeover after a step-down:"),
        ("failover", "last failover:"),
    ],
)
def test_the_last_takeover_is_named_by_its_kind(kind: str, label: str) -> None:
    """A planned switchover is not a failover: an operator reading "failover" looks for a fault."""
    view = cluster(member("fln1", "active"), member("fln2", "passive"))
    history = [
        {"kind": "failover", "from": "fln1", "to": "fln2", "epoch": 2, "time": 80.0},
        {"kind": kind, "from": "fln2", "to": "fln1", "epoch": 3, "time": 90.0, "reason": "r"},
        {"kind": "fence", "from": "fln2", "to": None, "epoch": 3, "time": 95.0},
    ]
    table = as_table(view, assess(view, MEMBERS), "lab", "/x", 100.0, history)
    takeover = [line for line in table.splitlines() if line.startswith("last ") and "->" in line]
    assert takeover == [f"{label} 1970-01-01 00:01:30Z fln2 -> fln1 (epoch 3): r"]


def test_lsns_read_as_postgresql_writes_them() -> None:
    """``0/BC614E``, as in pg_stat_replication and the server log, not 12345678."""
    last = LastLeader("fln2", 3, final_lsn=12345678, clean=True)
    view = replace(cluster(member("fln1", "active"), member("fln2", "passive")), last_leader=last)
    table = as_table(view, assess(view, MEMBERS), "lab", "/x", 100.0)
    assert "last release: fln2 epoch 3 (clean, final LSN 0/BC614E)" in table
    assert "12345678" not in table
    doc = json.loads(as_json(view, assess(view, MEMBERS), "lab", "/x", 100.0))
    assert doc["last_leader"]["final_lsn"] == 12345678  # JSON keeps the number, for arithmetic


def test_json_has_one_age_and_the_passive_s_lag() -> None:
    view = cluster(
        member("fln1", "active", lsn=134 * MB, age=0.2),
        member("fln2", "passive", lsn=100 * MB, age=0.2),
    )
    doc = json.loads(as_json(view, assess(view, MEMBERS), "lab", "/x", 100.0))
    by_node = {m["node"]: m for m in doc["members"]}
    for m in by_node.values():
        assert "age" not in m and m["age_s"] == 1.0  # published at 99.0, read at 100.0
    assert by_node["fln2"]["lag_bytes"] == 34 * MB
    assert by_node["fln1"]["lag_bytes"] is None  # the active lags nothing
    unknown = cluster(member("fln1", "active"), member("fln2", "passive", lsn=100 * MB))
    doc = json.loads(as_json(unknown, assess(unknown, MEMBERS), "lab", "/x", 100.0))
    assert [m["lag_bytes"] for m in doc["members"]] == [None, None]  # the active's LSN unknown


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


# -- replication mode and the sync record -------------------------------------------------------

SYNC, STRICT, ASYNC = ReplicationMode.SYNC, ReplicationMode.STRICT, ReplicationMode.ASYNC
PRIMARY_ONLY = "acknowledged writes are on the primary only: no automatic failover after a crash"


def pair(sync: SyncRecord | None, lease: str | None = "fln1") -> ClusterView:
    view = cluster(member("fln1", "active"), member("fln2", "passive"), lease=lease)
    return replace(view, sync=sync)


def test_a_standby_named_at_the_current_epoch_is_shown_and_healthy() -> None:
    view = pair(SyncRecord("fln2", 3, 90.0))
    for mode in (SYNC, STRICT, ASYNC):
        result = assess(view, MEMBERS, mode)
        assert (result.code, result.warnings) == (HEALTHY, ())
        assert (result.replication, result.sync_standby) == (mode, "fln2")
    result = assess(view, MEMBERS, SYNC)
    table = as_table(view, result, "lab", "/x", 100.0)
    assert "replication: sync    sync standby: fln2 (epoch 3, written 10 s ago)" in table
    doc = json.loads(as_json(view, result, "lab", "/x", 100.0))
    assert doc["replication"] == {"mode": "sync", "sync_standby": "fln2"}
    assert doc["sync"] == {"standby": "fln2", "epoch": 3, "written_at": 90.0, "age_s": 10.0}


def test_sync_or_strict_without_a_named_standby_is_said_plainly() -> None:
    view = pair(SyncRecord(None, 3, 95.0))
    result = assess(view, MEMBERS, SYNC)
    assert result.code == DEGRADED and result.sync_standby is None
    assert result.warnings == (
        "replication mode sync, but no synchronous standby is named at epoch 3 (the sync "
        f"record names none): {PRIMARY_ONLY}",
    )
    table = as_table(view, result, "lab", "/x", 100.0)
    assert "replication: sync    sync standby: none (epoch 3, written 5 s ago)" in table
    assert "! replication mode sync, but no synchronous standby" in table
    doc = json.loads(as_json(view, result, "lab", "/x", 100.0))
    assert doc["replication"] == {"mode": "sync", "sync_standby": None}
    assert doc["sync"] == {"standby": None, "epoch": 3, "written_at": 95.0, "age_s": 5.0}
    assert doc["state"] == "degraded" and doc["warnings"] == list(result.warnings)

    strict = assess(view, MEMBERS, STRICT)
    assert strict.code == DEGRADED
    assert PRIMARY_ONLY in strict.warnings[0]
    assert strict.warnings[0].endswith("; strict: new writes wait until a standby confirms them")
    # async promises nothing more than the primary: nothing to say, the default.
    assert assess(view, MEMBERS, ASYNC) == assess(view, MEMBERS) == assess(pair(None), MEMBERS)
    assert assess(view, MEMBERS).code == HEALTHY


def test_a_record_of_an_earlier_epoch_or_none_at_all_names_nobody() -> None:
    """A standby the previous active named vouches for nothing the new one acknowledged."""
    earlier = pair(SyncRecord("fln1", 2, 40.0))
    result = assess(earlier, MEMBERS, SYNC)
    assert result.code == DEGRADED and result.sync_standby is None
    assert "at epoch 3 (the sync record is from epoch 2): " + PRIMARY_ONLY in result.warnings[0]
    table = as_table(earlier, result, "lab", "/x", 100.0)
    assert "sync standby: fln1 (epoch 2, not the current 3, written 60 s ago)" in table
    assert json.loads(as_json(earlier, result, "lab", "/x", 100.0))["sync"]["epoch"] == 2

    never = pair(None)
    result = assess(never, MEMBERS, SYNC)
    assert "(no sync record: never written, or unreadable): " + PRIMARY_ONLY in result.warnings[0]
    assert "sync standby: none (no record)" in as_table(never, result, "lab", "/x", 100.0)
    assert json.loads(as_json(never, result, "lab", "/x", 100.0))["sync"] is None
    # A record without the writer's time (the design's minimal one) has no age to show.
    untimed = pair(SyncRecord("fln2", 3))
    result = assess(untimed, MEMBERS, SYNC)
    assert "sync standby: fln2 (epoch 3, written ?)" in as_table(untimed, result, "l", "/x", 9.0)
    assert json.loads(as_json(untimed, result, "l", "/x", 9.0))["sync"]["age_s"] is None


def test_no_active_is_critical_and_a_strange_standby_degrades() -> None:
    """Without an active the sync record promises nothing to say more about; a name that is no
    member of this cluster is said."""
    result = assess(pair(SyncRecord(None, 3, 95.0), lease=None), MEMBERS, SYNC)
    assert result.code == CRITICAL
    assert result.warnings == ("no active node: the lease is free",)
    stranger = assess(pair(SyncRecord("fln9", 3, 95.0)), MEMBERS, SYNC)
    assert stranger.code == DEGRADED
    assert stranger.warnings == ("the sync record names fln9, which is not a configured member",)


def test_an_admin_host_learns_the_members_and_the_mode_from_zookeeper() -> None:
    both = cluster(member("fln1", "active"), member("fln2", "passive"))
    assert member_names(both) == MEMBERS
    result = assess(both, member_names(both), mode_of(both), from_records=True)
    assert result.code == HEALTHY, result.warnings
    # The passive's daemon is down: its record is gone, and only a node's config would name it.
    alone = cluster(member("fln1", "active"))
    result = assess(alone, member_names(alone), mode_of(alone), from_records=True)
    assert result.code == DEGRADED
    assert result.warnings[0].startswith("only fln1 known from ZooKeeper: the other node")
    assert mode_of(alone) is ReplicationMode.ASYNC
    synced = replace(both, sync=SyncRecord("fln2", 3))
    assert mode_of(synced) is ReplicationMode.SYNC

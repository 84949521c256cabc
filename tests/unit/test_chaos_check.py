"""The chaos judge on recorded histories: a clean one passes, and each kind of violation, put
into an otherwise clean history, is found, named and placed in the fault it happened in."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lab.chaos import KIND_NAMES, ChaosRun, history_from_record, history_record
from lab.chaos_check import Fault, History, OperatorWait, fault_at, judge

CRASH = Fault(
    index=0,
    kind="active-crash",
    target="fln1",
    started=10.0,
    healed=15.0,
    healthy_at=22.0,
    may_move=True,
    active_before="fln1",
    epoch_before=3,
    active_after="fln2",
    epoch_after=4,
)
LEADER_KILL = Fault(
    index=1,
    kind="zk-leader-kill",
    target="flzk2",
    started=30.0,
    healed=33.0,
    healthy_at=34.0,
    may_move=False,
    active_before="fln2",
    epoch_before=4,
    active_after="fln2",
    epoch_after=4,
)


def ack(t: float, node: str, epoch: int, ident: str | None = None) -> dict[str, Any]:
    return {
        "id": ident or f"{node}-{t:.2f}",
        "sent": t - 0.01,
        "done": t,
        "ok": True,
        "node": node,
        "epoch": epoch,
    }


def clean_history() -> History:
    """Writes every 0.1 s on fln1 (epoch 3) until the crash at 10 s, an outage of 2.5 s, then
    fln2 (epoch 4) to the end; samples every 50 ms with one holder and one primary."""
    acks = [ack(round(0.1 * k, 2), "fln1", 3) for k in range(1, 100)]
    acks += [ack(round(12.5 + 0.1 * k, 2), "fln2", 4) for k in range(0, 300)]
    acks.append({"id": "failed-1", "sent": 10.5, "done": 11.0, "ok": False})
    samples = []
    for k in range(int(45 / 0.05)):
        t = round(k * 0.05, 3)
        holder = "fln1" if t < 10.0 else ("fln2" if t >= 12.4 else None)
        samples.append(
            {"t": t, "vip": [holder] if holder else [], "writable": [holder] if holder else []}
        )
    return History(
        seed=7,
        faults=[CRASH, LEADER_KILL],
        acks=acks,
        samples=samples,
        surviving_ids={a["id"] for a in acks if a.get("ok")},
    )


def rules(history: History, **kw: Any) -> list[str]:
    return [v.rule for v in judge(history, **kw).violations]


def test_a_clean_history_passes_and_reports_each_fault() -> None:
    verdict = judge(clean_history())
    assert verdict.ok, [v.line() for v in verdict.violations]
    crash, leader = verdict.faults
    assert crash.outage_s == pytest.approx(2.5, abs=0.01)  # the crash at 10.0 -> 12.5
    assert crash.to_healthy_s == pytest.approx(7.0)
    assert crash.failovers == 1
    assert leader.outage_s == pytest.approx(0.1, abs=0.01)
    assert leader.failovers == 0
    kinds = verdict.by_kind()
    assert kinds["active-crash"]["faults"] == 1
    assert kinds["active-crash"]["outage_median_s"] == pytest.approx(2.5, abs=0.01)


def test_two_vip_holders_in_one_sample() -> None:
    h = clean_history()
    h.samples[250] = {"t": 12.5, "vip": ["fln1", "fln2"], "writable": ["fln2"]}
    verdict = judge(h)
    assert [v.rule for v in verdict.violations] == ["two_vip_holders"]
    assert verdict.violations[0].fault == 0
    assert "fln1" in verdict.violations[0].line()


def test_two_writable_primaries() -> None:
    h = clean_history()
    h.samples[700] = {"t": 35.0, "vip": ["fln2"], "writable": ["fln1", "fln2"]}
    verdict = judge(h)
    assert [v.rule for v in verdict.violations] == ["two_primaries"]
    assert verdict.violations[0].fault is None  # after the leader kill's window


def test_an_old_epoch_acknowledged_after_the_new_one() -> None:
    h = clean_history()
    h.acks.append(ack(12.7, "fln1", 3, "late-old-epoch"))
    assert h.surviving_ids is not None
    h.surviving_ids.add("late-old-epoch")
    assert rules(h) == ["epoch_order"]


def test_a_lost_acknowledged_write() -> None:
    h = clean_history()
    assert h.surviving_ids is not None
    h.surviving_ids.discard("fln1-5.00")
    verdict = judge(h)
    assert [v.rule for v in verdict.violations] == ["lost_write"]
    assert "fln1-5.00" in verdict.violations[0].text


def test_unread_survivors_cannot_clear_the_run() -> None:
    h = clean_history()
    h.surviving_ids = None
    assert rules(h) == ["lost_write"]


@pytest.mark.parametrize(
    ("healthy_at", "healed"),
    [(None, 15.0), (90.0, 15.0), (None, None)],
    ids=["never", "late", "unhealed"],
)
def test_not_healthy_again_within_the_bound(healthy_at: float | None, healed: float | None) -> None:
    h = clean_history()
    h.faults[0] = replace(CRASH, healthy_at=healthy_at, healed=healed)
    assert "not_healed" in rules(h, healthy_bound=60.0)


def test_a_leader_kill_that_moved_the_lease() -> None:
    h = clean_history()
    h.faults[1] = replace(LEADER_KILL, active_after="fln1", epoch_after=5)
    assert rules(h) == ["moved"]


def test_a_leader_kill_where_the_client_saw_another_node() -> None:
    h = clean_history()
    h.acks.append(ack(33.5, "fln1", 4, "served-by-the-passive"))
    assert "moved" in rules(h)


def test_the_same_node_at_a_new_epoch_is_no_move() -> None:
    h = clean_history()
    h.faults[1] = replace(LEADER_KILL, epoch_after=5)
    h.acks = [a for a in h.acks if not (a["ok"] and a["done"] > 33.0)]
    h.acks += [ack(round(33.1 + 0.1 * k, 2), "fln2", 5) for k in range(10)]
    h.surviving_ids = {a["id"] for a in h.acks if a.get("ok")}
    assert rules(h) == []


def test_a_fault_that_may_move_is_not_judged_for_moving() -> None:
    h = clean_history()
    h.faults[1] = replace(LEADER_KILL, may_move=True, active_after="fln1")
    assert rules(h) == []


def test_operator_needed_without_data_at_risk() -> None:
    h = clean_history()
    h.operator_waits = [
        OperatorWait(t=20.0, node="fln1", reason="must_rejoin", data_at_risk=False),
        OperatorWait(t=40.0, node="fln1", reason="diverged", data_at_risk=True),
    ]
    verdict = judge(h)
    assert [(v.rule, v.fault) for v in verdict.violations] == [("operator_needed", 0)]


def test_a_stalled_sampler_blinds_the_fault() -> None:
    h = clean_history()
    h.samples = [s for s in h.samples if not 11.0 <= s["t"] <= 13.0]
    verdict = judge(h)
    assert [(v.rule, v.fault) for v in verdict.violations] == [("blind_sampling", 0)]


def test_fault_records_round_trip() -> None:
    assert Fault.from_record(CRASH.record()) == CRASH
    assert fault_at([CRASH, LEADER_KILL], 21.0) == 0
    assert fault_at([CRASH, LEADER_KILL], 25.0) is None


def test_a_plan_covers_every_kind_first_and_replays_by_seed() -> None:
    def plan(seed: int, count: int) -> list[str]:
        run = ChaosRun(None, Path("/nonexistent"), seed)  # type: ignore[arg-type]
        return [k.name for k in run.plan(count)]

    first = plan(5, 40)
    assert sorted(first[: len(KIND_NAMES)]) == sorted(KIND_NAMES)
    assert plan(5, 40) == first
    assert plan(6, 40) != first
    assert plan(5, 3) == first[:3]


def test_a_history_survives_its_json_form() -> None:
    h = clean_history()
    h.operator_waits = [OperatorWait(t=20.0, node="fln1", reason="must_rejoin", data_at_risk=False)]
    again = history_from_record(json.loads(json.dumps(history_record(h))))
    assert again == h
    assert [v.rule for v in judge(again).violations] == ["operator_needed"]

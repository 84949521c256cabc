"""bench/failover.py's report: modes side by side, and what --modes accepts."""

from __future__ import annotations

from typing import Any

import pytest

from bench.failover import comparison, parse_modes, table


def row(mode: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "scenario": "crash",
        "mode": mode,
        "writers": 8,
        "outages_s": [2.4, 2.6, None],
        "failovers": [1, 1, 0],
        "max_gap_s": [2.45, 2.65, 30.5],
        "redundant_s": [9.0, 11.0, 10.0],
        "healed_to_redundant_s": [5.0, 6.0, 7.0],
        "lost_acknowledged": 3,
        "lost_acknowledged_per_run": [0, 3, 0],
        "split_brain_samples": 0,
        "epoch_order_violations": 0,
        "phases_s": {"total": 0.5},
        "latency_p50_s": [0.030, 0.040, 0.050],
        "latency_p99_s": [0.200, 0.300, None],
        "donations_per_s": [100.0, 120.0, 110.0],
        "donations_per_s_outside_outage": [150.0, 160.0, 170.0],
    }
    return base | over


def test_modes_side_by_side_per_scenario() -> None:
    text = comparison("crash", [row("async"), row("sync", lost_acknowledged_per_run=[0, 0, 0])])
    lines = text.splitlines()
    assert lines[0] == "crash: outage and load, 8 writers, 3 runs per mode"
    assert lines[1].split() == ["async", "sync"]
    cells = {line[:34].strip(): line[34:].split() for line in lines[2:-1]}
    assert cells["outage median (s)"] == ["2.500", "(1", "never)", "2.500", "(1", "never)"]
    assert cells["failovers per run"] == ["1", "1", "0", "1", "1", "0"]
    assert cells["longest without an ack (s)"] == ["30.500", "30.500"]  # the worst run
    assert cells["lost acknowledged per run"] == ["0", "3", "0", "0", "0", "0"]
    assert cells["latency p50 (ms)"] == ["40.0", "40.0"]
    assert cells["latency p99 (ms)"] == ["250.0", "250.0"]  # a run without acks is left out
    assert cells["donations/s"] == ["110.0", "110.0"]
    assert cells["donations/s outside the outage"] == ["160.0", "160.0"]


def test_steady_has_no_outage_lines() -> None:
    steady = row("async", scenario="steady", seconds=20.0, lost_acknowledged_per_run=[0])
    text = comparison("steady", [steady])
    assert text.startswith("steady: 20 s without a fault, 8 writers, 1 run per mode")
    assert "outage" not in text and "latency p99" in text
    assert table([steady]) == ""  # the fault table leaves steady out


def test_the_fault_table_names_the_mode_when_there_are_several() -> None:
    text = table([row("async"), row("sync")])
    assert "crash/async" in text and "crash/sync" in text
    assert "crash/" not in table([row("sync")])


def test_modes_are_checked() -> None:
    assert parse_modes("async, sync") == ["async", "sync"]
    with pytest.raises(ValueError, match="unknown replication mode 'quorum'"):
        parse_modes("async,quorum")
    with pytest.raises(ValueError, match="twice"):
        parse_modes("sync,sync")


def test_the_fault_table_shows_failovers_and_the_longest_gap_per_scenario() -> None:
    leader = row("sync", scenario="zk-leader", outages_s=[None, None], failovers=[0, 0],
                 max_gap_s=[0.31, 0.05])  # fmt: skip
    lines = table([leader]).splitlines()
    assert lines[0].split()[:8] == [
        "scenario", "runs", "min", "median", "max", "failovers", "max", "gap"
    ]  # fmt: skip
    cells = lines[1].split()
    assert cells[:8] == ["zk-leader", "2", "-", "-", "-", "0", "0", "0.310"], lines[1]
    assert "changes of the node acknowledging writes" in lines[-1]

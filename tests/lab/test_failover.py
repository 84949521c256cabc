"""Fail over for real: the two-node lab, from a client's point of view.

A client in flcli posts a donation through the VIP every 50 ms and records each acknowledged id
with the node and epoch that served it; a sampler records which nodes hold the VIP and which
PostgreSQL accepts writes. Each scenario asserts the outcome, that no sample saw two VIP holders
or two writable primaries, that no write of epoch e was acknowledged after the first of epoch
e+1, and counts acknowledged writes missing from the surviving primary (none allowed on a
step-down; the lab replicates asynchronously, so a crash may lose a few).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import scenarios
from lab.cluster import Lab

pytestmark = pytest.mark.lab

# Generous bounds that only a real bug breaks (targets, measured by bench/failover.py, are
# < 3 s for a crash and < 2 s for a step-down).
OUTAGE_BOUND = {"crash": 8.0, "zk-partition": 10.0, "freeze": 12.0}
STEPDOWN_BOUND = 6.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    cluster = Lab()
    cluster.up()
    try:
        scenarios.wait_redundant(cluster, timeout=90)
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scenario")


def report(result: scenarios.ScenarioResult) -> str:
    return json.dumps(result.summary(), indent=1)


def assert_safe(result: scenarios.ScenarioResult) -> None:
    v = result.verdict
    assert v.split_brain_samples == 0, report(result)
    assert v.epoch_order_violations == [], report(result)
    assert result.active_after == scenarios.other(result.active_before), report(result)
    assert v.outage_s is not None, report(result)


@pytest.mark.parametrize("scenario", ["app", "postgres", "squid"])
def test_active_steps_down_without_waiting_for_a_session_timeout(
    lab: Lab, workdir: Path, scenario: str
) -> None:
    result = scenarios.run(lab, scenario, workdir)
    print(report(result))
    assert_safe(result)
    assert result.outage_s is not None and result.outage_s < STEPDOWN_BOUND, report(result)
    if scenario in ("app", "squid"):
        # A clean step-down: stop the primary cleanly, release with the final LSN, and the
        # passive promotes only once it has replayed up to it. Nothing acknowledged is lost.
        assert result.verdict.lost == [], report(result)
        assert "fence" not in result.phases_s, report(result)
    scenarios.restore(lab, scenario, result.active_before)
    if scenario in ("app", "squid"):
        # After a clean stop the old active came back by itself as a streaming replica.
        states = lab.database_states()
        assert states[result.active_before].startswith("replica"), states


@pytest.mark.parametrize("scenario", ["crash", "zk-partition", "freeze"])
def test_lost_active_is_replaced_after_its_session(lab: Lab, workdir: Path, scenario: str) -> None:
    result = scenarios.run(lab, scenario, workdir)
    print(report(result))
    assert_safe(result)
    assert result.outage_s is not None and result.outage_s < OUTAGE_BOUND[scenario], report(result)
    old = result.active_before
    if scenario == "crash":
        # The crashed node's processes are gone; the passive fenced it (unreachable: no SSH
        # answer) before promoting.
        assert "fence" in result.phases_s, report(result)
    if scenario in ("zk-partition", "freeze"):
        # Partitioned: it self-fenced before its session expired. Frozen then resumed: the peer
        # fenced it over SSH before promoting, and it finds itself fenced. Either way its VIP is
        # gone and its database stopped, and it stays so.
        if scenario == "zk-partition":
            lab.heal_zk(old)
        time.sleep(3.0)
        doc = scenarios.cluster_status(lab)
        assert scenarios.roles(doc)[old] == "fenced", json.dumps(doc, indent=1)
        assert lab.vip_holders() == [scenarios.other(old)]
        assert lab.writable_primaries() == [scenarios.other(old)]
    scenarios.restore(lab, scenario, old)


def test_pause_never_suspends_self_fencing(lab: Lab, workdir: Path) -> None:
    """Pause, cut the active off from ZooKeeper and from its peer, resume: the passive takes
    over once the active's session expires, and by then the active has fenced itself, paused or
    not. Once seen here as hundreds of samples with two primaries."""
    result = scenarios.run(lab, "pause-partition", workdir)
    print(report(result))
    assert_safe(result)
    old = result.active_before
    assert lab.vip_holders() == [scenarios.other(old)]
    assert lab.writable_primaries() == [scenarios.other(old)]
    scenarios.restore(lab, "pause-partition", old)


def test_old_active_returning_after_a_crash_stays_out_and_must_rejoin(
    lab: Lab, workdir: Path
) -> None:
    result = scenarios.run(lab, "crash", workdir)
    assert_safe(result)
    old, new = result.active_before, scenarios.other(result.active_before)
    lab.restore_link(old, drop_vip=True)
    for component in ("sshd", "app", "squid", "failoverd"):
        lab.start_component(old, component)

    def says_must_rejoin() -> bool:
        doc = scenarios.cluster_status(lab, via=new)
        member = next((m for m in doc["members"] if m["node"] == old), None)
        return bool(member and member["role"] == "fenced" and "rejoin" in member["reason"])

    scenarios.wait_until(f"{old} to say it must rejoin", says_must_rejoin, 30)
    for _ in range(10):  # it keeps out: no VIP, no second primary
        assert lab.vip_holders() == [new]
        assert lab.writable_primaries() == [new]
        time.sleep(0.3)
    table = lab.failoverctl(new, "status").stdout
    assert f"{old} is fenced" in table and "rejoin" in table, table
    scenarios.restore(lab, "crash", old)


def test_no_failover_to_an_ineligible_passive_and_status_says_why(lab: Lab, workdir: Path) -> None:
    active = scenarios.wait_redundant(lab)
    passive = scenarios.other(active)
    # Cut the replica off from the primary: its WAL receiver stops, and once WAL has been
    # silent for max_replication_silence (10 s) the passive is not eligible.
    lab.query(passive, "ALTER SYSTEM SET primary_conninfo = 'host=10.77.0.11 port=1'")
    lab.query(passive, "SELECT pg_reload_conf()")

    def not_eligible() -> str | None:
        doc = scenarios.cluster_status(lab, via=active)
        warnings = [w for w in doc["warnings"] if w.startswith(f"{passive} not eligible")]
        return warnings[0] if warnings and doc["exit_code"] == 1 else None

    why = scenarios.wait_until("the passive to be reported not eligible", not_eligible, 30)
    assert "max_replication_silence" in why or "max_lag_on_failover" in why, why
    lab.crash(active)
    time.sleep(6.0)  # well past the session timeout (2 s)
    doc = scenarios.cluster_status(lab, via=passive)
    assert doc["lease"] is None, json.dumps(doc, indent=1)
    assert scenarios.roles(doc)[passive] == "passive"
    member = next(m for m in doc["members"] if m["node"] == passive)
    assert not member["eligible"] and "not eligible" in member["reason"], member
    assert lab.vip_holders() == [] and lab.writable_primaries() == []
    # Clean up: a fresh lab for whatever runs next.
    lab.down()
    lab.up()
    scenarios.wait_redundant(lab, timeout=90)


def test_planned_switchover_loses_nothing_and_leaves_the_cluster_redundant(
    lab: Lab, workdir: Path
) -> None:
    result = scenarios.run(lab, "switchover", workdir)
    print(report(result))
    assert_safe(result)
    assert result.verdict.lost == [], report(result)
    assert result.outage_s is not None and result.outage_s < STEPDOWN_BOUND, report(result)
    out = (lab.root / "last-switchover.out").read_text()
    assert "writes were unavailable for" in out and "redundant again" in out, out
    scenarios.restore(lab, "switchover", result.active_before)
    assert lab.database_states()[result.active_before].startswith("replica")


def test_switchover_refused_while_paused_and_to_an_unknown_node(lab: Lab) -> None:
    active = scenarios.wait_redundant(lab)
    unknown = lab.failoverctl(active, "promote", "fln9", "--yes")
    assert unknown.returncode == 2 and "unknown node 'fln9'" in unknown.stderr
    assert lab.failoverctl(active, "pause").returncode == 0
    try:
        paused = lab.failoverctl(active, "promote", "--yes", "--force")
        assert paused.returncode == 2 and "paused" in paused.stderr, paused.stderr
        assert paused.stderr.count("\n") == 1  # one clear line, no traceback
    finally:
        assert lab.failoverctl(active, "resume").returncode == 0
    assert scenarios.wait_redundant(lab) == active


def test_each_daemon_serves_metrics_on_its_address(lab: Lab) -> None:
    active = scenarios.wait_redundant(lab)
    for node, address in (("fln1", "10.77.0.11"), ("fln2", "10.77.0.12")):
        status, text = lab.http("flcli", "GET", f"http://{address}:9641/metrics")
        assert status == 200, (node, status)
        expected = "1.0" if node == active else "0.0"
        assert f'failoverd_is_active{{cluster="lab",node="{node}"}} {expected}' in str(text), text
        assert "failoverd_check_latency_seconds_bucket" in str(text)

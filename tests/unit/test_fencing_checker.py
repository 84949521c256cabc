"""The daemon's periodic fencing check, without SSH: when it checks, what it logs, what the
metrics say (failoverd/fencecheck.py, failoverd/metrics.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

from corekit import SETTINGS
from prometheus_client import CollectorRegistry

from failoverd.config import FencingConfig, Member
from failoverd.core import MemberStatus, Role
from failoverd.fencecheck import (
    FENCING_CHECK_PAUSED,
    FencingCheck,
    FencingChecker,
    dry_run_line,
    knows_dry_run,
    why_not_check,
)
from failoverd.metrics import Metrics

PEER = Member("fln2", "10.77.0.12")
LABELS = {"node": SETTINGS.node, "cluster": "lab"}


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append(("info", event, kw))

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append(("warning", event, kw))

    def error(self, event: str, **kw: Any) -> None:
        self.events.append(("error", event, kw))


def sample(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name, LABELS)


def checker(
    answers: list[FencingCheck], log: Log, metrics: Metrics, role: list[Role], interval: float
) -> tuple[FencingChecker, list[Member]]:
    asked: list[Member] = []

    def check(peer: Member, fencing: FencingConfig) -> FencingCheck:
        asked.append(peer)
        return answers.pop(0)

    made = FencingChecker(
        PEER,
        FencingConfig(check_interval=interval),
        log,
        lambda found, at: metrics.fencing_checked(found.ok, at),
        lambda: role[0] not in FENCING_CHECK_PAUSED,
        check=check,
        wall=lambda: 1_700_000_000.0,
    )
    return made, asked


def test_no_sample_before_the_first_check_then_ok_then_failed() -> None:
    metrics = Metrics(SETTINGS, "lab", CollectorRegistry())
    assert sample(metrics, "failoverd_fencing_check_ok") is None
    assert sample(metrics, "failoverd_fencing_check_timestamp_seconds") is None
    log = Log()
    good = FencingCheck("fln2", True, "ok", "root@10.77.0.12:22: ok: ... (0.050 s)", 0.05)
    bad = FencingCheck("fln2", False, "host_key_changed", "root@10.77.0.12:22: host key", 0.01)
    made, asked = checker([good, bad], log, metrics, [Role.PASSIVE], 300.0)

    assert made.run_once() == good
    assert sample(metrics, "failoverd_fencing_check_ok") == 1.0
    assert sample(metrics, "failoverd_fencing_check_timestamp_seconds") == 1_700_000_000.0
    assert made.run_once() == bad
    assert sample(metrics, "failoverd_fencing_check_ok") == 0.0
    assert asked == [PEER, PEER]
    assert [(lvl, ev) for lvl, ev, _ in log.events] == [
        ("info", "fencing_check_ok"),
        ("warning", "fencing_check_failed"),
    ]
    assert log.events[1][2] == {
        "peer": "fln2",
        "problem": "host_key_changed",
        "detail": "root@10.77.0.12:22: host key",
    }


def test_no_check_while_taking_over_stepping_down_or_fenced() -> None:
    metrics = Metrics(SETTINGS, "lab", CollectorRegistry())
    role = [Role.PROMOTING]
    good = FencingCheck("fln2", True, "ok", "ok", 0.05)
    made, asked = checker([good] * 4, Log(), metrics, role, 300.0)
    for r in (Role.PROMOTING, Role.DEMOTING, Role.FENCED):
        role[0] = r
        assert made.run_once() is None
    assert asked == []
    assert sample(metrics, "failoverd_fencing_check_ok") is None
    for r in (Role.STARTING, Role.PASSIVE, Role.ACTIVE, Role.PAUSED):
        role[0] = r
        assert made.run_once() == good, r
    assert len(asked) == 4


def test_a_crashing_check_is_logged_and_counts_as_failed() -> None:
    metrics = Metrics(SETTINGS, "lab", CollectorRegistry())
    log = Log()

    def crash(peer: Member, fencing: FencingConfig) -> FencingCheck:
        raise RuntimeError("bug")

    made = FencingChecker(
        PEER,
        FencingConfig(),
        log,
        lambda found, at: metrics.fencing_checked(found.ok, at),
        lambda: True,
        check=crash,
    )
    found = made.run_once()
    assert found is not None and not found.ok
    assert [ev for _, ev, _ in log.events] == ["fencing_check_crashed", "fencing_check_failed"]
    assert sample(metrics, "failoverd_fencing_check_ok") == 0.0


def test_the_thread_checks_at_start_and_stops_promptly() -> None:
    metrics = Metrics(SETTINGS, "lab", CollectorRegistry())
    checked = threading.Event()
    good = FencingCheck("fln2", True, "ok", "ok", 0.0)

    def check(peer: Member, fencing: FencingConfig) -> FencingCheck:
        checked.set()
        return good

    made = FencingChecker(
        PEER,
        FencingConfig(check_interval=300.0),
        Log(),
        lambda f, at: None,
        lambda: True,
        check=check,
    )
    made.start()
    assert checked.wait(5.0)  # the first check at start-up, not after an interval
    began = time.monotonic()
    made.close(timeout=5.0)
    assert time.monotonic() - began < 1.0  # the 300 s wait ends at close
    assert made._thread is not None and not made._thread.is_alive()
    del metrics


def test_the_peers_line_says_what_it_could_not_do() -> None:
    assert (
        dry_run_line("fln2", []) == "fence-self dry run on fln2: ok: could fence; changed nothing"
    )
    assert dry_run_line("fln2", ["vip.interface: no eth0", "pg_ctl missing"]) == (
        "fence-self dry run on fln2: FAILED: could not fence: "
        "vip.interface: no eth0; pg_ctl missing"
    )


def test_only_a_peer_that_knows_the_dry_run_is_asked_for_one() -> None:
    """An older fence-self ignores what it is asked and fences: the daemon must not ask it."""
    assert knows_dry_run("0.2.0") and knows_dry_run("0.10.1") and knows_dry_run("1.0.0")
    assert not knows_dry_run("0.1.0")
    assert not knows_dry_run("")  # a record without a version
    assert not knows_dry_run("0.2")  # unreadable: not asked
    assert not knows_dry_run("dev")


def record(version: str) -> MemberStatus:
    return MemberStatus("fln2", "passive", 3, True, True, "eligible", version=version)


def test_the_daemon_checks_only_when_nothing_is_under_way_and_the_peer_knows_the_dry_run() -> None:
    assert why_not_check(Role.ACTIVE, "fln2", record("0.2.0")) is None
    assert why_not_check(Role.PASSIVE, "fln2", record("0.3.1")) is None
    for busy in FENCING_CHECK_PAUSED:  # taking over or stepping down: quietly not now
        assert why_not_check(busy, "fln2", record("0.2.0")) == ""
    assert "no member record" in (why_not_check(Role.ACTIVE, "fln2", None) or "")
    old = why_not_check(Role.ACTIVE, "fln2", record("0.1.0")) or ""
    assert "0.1.0" in old and "fences for real" in old

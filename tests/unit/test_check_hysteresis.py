"""Rise/fall hysteresis: the piece that keeps a flapping check from flapping the node."""

from __future__ import annotations

import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from failoverd.checks.base import Hysteresis, Probe, judge_latency
from failoverd.checks.runner import CheckRunner
from failoverd.config import CheckConfig


def run(h: Hysteresis, outcomes: str) -> Hysteresis:
    for c in outcomes:
        h = h.feed(c == "+")
    return h


def test_unknown_until_rise_or_fall_is_reached() -> None:
    h = Hysteresis(rise=3, fall=2)
    assert run(h, "++").healthy is None
    assert run(h, "+++").healthy is True
    assert run(h, "-").healthy is None
    assert run(h, "--").healthy is False


def test_healthy_check_survives_isolated_failures() -> None:
    h = run(Hysteresis(rise=2, fall=3), "++")
    assert run(h, "-+-+--+").healthy is True  # never three failures in a row


def test_down_check_needs_rise_passes_in_a_row_to_come_back() -> None:
    h = run(Hysteresis(rise=3, fall=2), "--")
    assert run(h, "++-++").healthy is False
    assert run(h, "++-+++").healthy is True


def test_counts_are_consecutive() -> None:
    h = run(Hysteresis(rise=2, fall=2), "++--+")
    assert (h.successes, h.failures) == (1, 0)
    h = h.feed(False)
    assert (h.successes, h.failures) == (0, 1)


@settings(max_examples=300, deadline=None)
@given(
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
    outcomes=st.text(alphabet="+-", max_size=60),
)
def test_state_changes_only_after_a_full_run(rise: int, fall: int, outcomes: str) -> None:
    """Whenever the state flips, the last `rise` (or `fall`) results agree with the new state."""
    h = Hysteresis(rise=rise, fall=fall)
    seen = ""
    for c in outcomes:
        before = h.healthy
        h = h.feed(c == "+")
        seen += c
        if h.healthy != before:
            need = rise if h.healthy else fall
            assert seen[-need:] == ("+" if h.healthy else "-") * need


def test_slow_answers_fail() -> None:
    assert judge_latency(True, 0.2, 0.5, "").ok
    slow = judge_latency(True, 0.7, 0.5, "")
    assert not slow.ok and "slow" in slow.reason and "0.700" in slow.reason
    assert judge_latency(False, 0.1, 0.5, "HTTP 500").reason == "HTTP 500"


def test_a_reload_carries_each_kept_checks_state_over_under_its_new_rise_and_fall() -> None:
    class Fixed:
        def probe(self) -> Probe:
            return Probe(False, 0.01, "down")

    app = CheckConfig(name="app", type="command", command=("false",), rise=2, fall=2)
    old = CheckRunner([(app, Fixed())], log=None)
    old._slots[0].hysteresis = Hysteresis(2, 2).feed(False).feed(False).feed(False)
    old._slots[0].last = Probe(False, 0.01, "down")
    stricter = CheckConfig(name="app", type="command", command=("false",), rise=5, fall=2)
    extra = CheckConfig(name="extra", type="command", command=("true",))
    new = CheckRunner([(stricter, Fixed()), (extra, Fixed())], log=None)
    new.carry_over(old)
    snap = new.snapshot()
    kept = next(c for c in snap.checks if c.name == "app")
    assert not kept.healthy and kept.failures == 3 and kept.reason == "down"
    assert new._slots[0].hysteresis.rise == 5
    assert not snap.complete  # the new check is not judged yet
    added = next(c for c in snap.checks if c.name == "extra")
    assert added.reason == "not judged yet"


class Scripted:
    """A checker whose probes take the scripted seconds each (the last one repeats): a real
    slow answer in time, on the runner's own threads."""

    def __init__(self, durations: list[float]) -> None:
        self.durations = durations
        self.calls = 0

    def probe(self) -> Probe:
        took = self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1
        threading.Event().wait(took)
        return Probe(True, took, "ok")


def states(runner: CheckRunner, seconds: float) -> list[bool | None]:
    """The check's healthy flag, sampled every 20 ms for ``seconds``."""
    seen = []
    for _ in range(int(seconds / 0.02)):
        seen.append(runner.snapshot().checks[0].healthy)
        time.sleep(0.02)
    return seen


def test_one_probe_slower_than_its_timeout_is_one_failure_not_fall() -> None:
    """Under load one answer may take longer than the timeout: that probe fails once. It used
    to count twice (the next interval found it still running and failed again at once), so a
    single slow answer took a healthy active down with fall = 2: a false failover."""
    cfg = CheckConfig(name="app", type="command", command=("true",), interval=0.1, timeout=0.3,
                      rise=1, fall=2)  # fmt: skip
    checker = Scripted([0.01, 0.45, 0.01])
    runner = CheckRunner([(cfg, checker)], log=None)
    runner.start()
    try:
        seen = states(runner, 1.5)
    finally:
        runner.stop()
    assert checker.calls >= 3
    judged = seen[seen.index(True) :]  # before its first probe a check is not judged (False)
    assert False not in judged, seen


def test_a_probe_that_never_returns_still_brings_the_check_down() -> None:
    cfg = CheckConfig(name="app", type="command", command=("true",), interval=0.1, timeout=0.2,
                      rise=1, fall=2)  # fmt: skip
    runner = CheckRunner([(cfg, Scripted([0.01, 30.0]))], log=None)
    runner.start()
    try:
        seen = states(runner, 1.5)
    finally:
        runner.stop(wait=False)
    assert seen[-1] is False, seen
    down_at = seen.index(False) * 0.02
    assert down_at < 1.0, seen  # fall x (timeout + grace) after the hang, with room to spare

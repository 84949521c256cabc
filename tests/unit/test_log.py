"""Log severity: which decisions are warnings and errors, and that journald gets to know."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from failoverd.core import Reason, Role, State, Step
from failoverd.daemon import log_decisions
from failoverd.log import DECISION_LEVELS, decision_level, get

REPO = Path(__file__).resolve().parents[2]
CORE = "\n".join(p.read_text() for p in sorted((REPO / "failoverd" / "core").glob("*.py")))


@pytest.mark.parametrize(
    ("code", "level"),
    [
        ("fence_failed", logging.WARNING),
        ("self_fenced", logging.WARNING),
        ("must_rejoin", logging.WARNING),
        ("sync_dropped", logging.WARNING),
        ("two_primaries", logging.ERROR),
        ("fencing_exhausted", logging.ERROR),
        ("promoted", logging.INFO),
        ("passive", logging.INFO),
        ("no_such_code", logging.INFO),
    ],
)
def test_decision_levels(code: str, level: int) -> None:
    assert decision_level(code) == level


def test_every_classified_code_is_one_the_core_decides() -> None:
    """A renamed reason code must not fall back to info unnoticed."""
    missing = [code for code in DECISION_LEVELS if f'"{code}"' not in CORE]
    assert missing == []


def test_decisions_are_logged_at_their_level() -> None:
    before = State(role=Role.PROMOTING, epoch=4)
    decisions = (
        Reason("fencing", "fencing fln2"),
        Reason("fencing_exhausted", "every fencing level reached fln2 but failed"),
        Reason("passive", "passive"),
    )
    result = Step(State(role=Role.PASSIVE, epoch=4), (), decisions[-1], decisions)
    with capture_logs() as seen:
        log_decisions(get(), before, result)
    assert [(e["event"], e["log_level"]) for e in seen] == [
        ("fencing", "info"),
        ("fencing_exhausted", "error"),
        ("passive", "info"),
    ]
    assert seen[1]["reason"] == "every fencing level reached fln2 but failed"

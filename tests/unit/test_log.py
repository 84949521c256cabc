"""Log severity: which decisions are warnings and errors, and that journald gets to know."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from failoverd.core import Reason, Role, State, Step
from failoverd.log import DECISION_LEVELS, decision_level, get, log_decisions, stdout_is_journal

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


def test_stdout_is_the_journal_only_when_its_device_and_inode_match(tmp_path: Path) -> None:
    with (tmp_path / "out").open("w") as out:
        st = os.fstat(out.fileno())
        assert stdout_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, out)
        assert not stdout_is_journal({}, out)
        # Inherited by a child whose stdout goes elsewhere: not the journal.
        assert not stdout_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, out)


EMIT = """
import logging, sys
from failoverd import log
log.configure("info", json=True)
logger = log.get().bind(node="fln1")
logger.log(log.decision_level("passive"), "passive", reason="passive")
logger.log(log.decision_level("self_fenced"), "self_fenced", reason="no round-trip")
logger.log(log.decision_level("two_primaries"), "two_primaries", reason="both primary")
logging.getLogger("kazoo").warning("connection dropped")
"""


def emit(tmp_path: Path, journal: bool) -> list[str]:
    """The lines a daemon writes, with stdout a file that is, or is not, the journal's stream."""
    out = tmp_path / f"out-{journal}"
    with out.open("w") as f:
        st = os.fstat(f.fileno())
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        env["PYTHONPATH"] = str(REPO)
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", EMIT], stdout=f, env=env, check=True, timeout=60)
    return out.read_text().splitlines()


def test_the_journal_gets_each_line_s_priority(tmp_path: Path) -> None:
    """systemd reads ``<N>`` at the start of a stdout line as its priority (SyslogLevelPrefix)."""
    lines = emit(tmp_path, journal=True)
    assert [line[:3] for line in lines] == ["<6>", "<4>", "<3>", "<4>"], lines
    assert all(line[3] == "{" for line in lines), lines  # then the JSON line, unchanged
    assert '"event": "self_fenced"' in lines[1] and '"level": "warning"' in lines[1]


def test_no_prefix_on_a_pipe_or_a_file(tmp_path: Path) -> None:
    assert all(line.startswith("{") for line in emit(tmp_path, journal=False))

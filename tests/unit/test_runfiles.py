"""The daemon's runtime files: the role ExecStopPost fences by, and the marker of a failed fence
of the previous run, read at start and cleared once a role is taken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corekit import state_of

from failoverd.core import Role, State
from failoverd.runfiles import RunFiles
from failoverd.stoppost import read_role


class Log:
    def __init__(self) -> None:
        self.said: list[tuple[str, str]] = []

    def warning(self, event: str, **_: Any) -> None:
        self.said.append(("warning", event))

    def info(self, event: str, **_: Any) -> None:
        self.said.append(("info", event))


def test_the_marker_is_read_at_start_and_cleared_once_a_role_is_taken(tmp_path: Path) -> None:
    (tmp_path / "unfenced").write_text("fencing: abnormal end while active\n")
    log = Log()
    files = RunFiles({"RUNTIME_DIRECTORY": str(tmp_path)}, log)
    assert files.started_unfenced and log.said == [("warning", "previous_life_unfenced")]
    files.record(State())  # starting: the marker stays, the core gives no grace meanwhile
    assert files.started_unfenced and (tmp_path / "unfenced").exists()
    assert read_role(tmp_path / "role") == "starting"
    files.record(state_of(Role.FENCED, 3))
    assert not files.started_unfenced and not (tmp_path / "unfenced").exists()
    assert read_role(tmp_path / "role") == "fenced"
    assert log.said[-1] == ("info", "unfenced_marker_removed")


def test_a_marker_that_cannot_be_removed_is_tried_once_and_said_once(tmp_path: Path) -> None:
    (tmp_path / "unfenced").mkdir()  # unlink() fails on it
    log = Log()
    files = RunFiles({"RUNTIME_DIRECTORY": str(tmp_path)}, log)
    for _ in range(3):
        files.record(state_of(Role.ACTIVE, 3))
    assert log.said.count(("warning", "unfenced_marker_unremovable")) == 1, log.said
    assert not files.started_unfenced  # this run's role is taken: no grace withheld later
    assert read_role(tmp_path / "role") == "active"


def test_outside_systemd_there_are_no_files(tmp_path: Path) -> None:
    files = RunFiles({}, Log())
    files.record(state_of(Role.ACTIVE, 3))
    assert not files.started_unfenced and list(tmp_path.iterdir()) == []

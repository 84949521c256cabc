"""`failoverd` and `failoverctl` as a new user meets them: bad input, exit codes, versions.

Nothing here reaches ZooKeeper: every command under test must refuse or answer before it would.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from failoverd import __version__
from failoverd.cli import failoverctl_main, failoverd_main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("main", "prog"), [(failoverd_main, "failoverd"), (failoverctl_main, "failoverctl")]
)
def test_both_programs_say_the_one_version(main: object, prog: str) -> None:
    done = CliRunner().invoke(main, ["--version"])  # type: ignore[arg-type]
    assert (done.exit_code, done.output) == (0, f"{prog}, version {__version__}\n")


def test_the_version_is_written_once() -> None:
    """pyproject.toml reads it from failoverd.__version__, so the two cannot disagree."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "failoverd.__version__"}

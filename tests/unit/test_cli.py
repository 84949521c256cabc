"""`failoverd` and `failoverctl` as a new user meets them: bad input, exit codes, versions.

Nothing here reaches ZooKeeper: every command under test must refuse or answer before it would.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
import pytest
from click.testing import CliRunner, Result

from failoverd import __version__
from failoverd.cli import failoverd_main
from failoverd.cli_common import EXIT_CONFIG, EXIT_REFUSED, EXIT_USAGE
from failoverd.core import ClusterView, LeaseInfo, MemberStatus
from failoverd.ctl import failoverctl_main, group, show, steer
from failoverd.status import CRITICAL, DEGRADED, HEALTHY, UNKNOWN
from failoverd.zk import ZkUnreachable

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


CONFIG = """\
node = "fln1"

[cluster]
name = "lab"
zookeeper_hosts = ["127.0.0.1:1"]

[[members]]
name = "fln1"
address = "10.77.0.11"

[[members]]
name = "fln2"
address = "10.77.0.12"

[vip]
address = "10.77.0.100/24"
interface = "eth0"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid configuration; any attempt to reach ZooKeeper fails the test."""

    def no_zookeeper(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("contacted ZooKeeper")

    monkeypatch.setattr(group, "ZkCluster", no_zookeeper)
    path = tmp_path / "failoverd.toml"
    path.write_text(CONFIG)
    return path


def ctl(config: Path, *argv: str) -> Result:
    return CliRunner().invoke(failoverctl_main, ["-c", str(config), *argv])


def one_line_error(done: Result) -> str:
    """The single stderr line of a refused command, checked to be just that."""
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    return done.stderr.strip()


@pytest.mark.parametrize(
    ("argv", "option", "command"),
    [
        (["status", "--watch", "--interval", "-1"], "--interval", "status"),
        (["status", "--watch", "--interval", "0"], "--interval", "status"),
        (["--timeout", "-1", "status"], "--timeout", ""),
        (["promote", "--timeout", "-1", "--yes"], "--timeout", "promote"),
        (["promote", "--timeout", "0", "--yes"], "--timeout", "promote"),
        (["rejoin", "fln2", "--timeout", "-5", "--yes"], "--timeout", "rejoin"),
        (["history", "-n", "0"], "-n", "history"),
        (["history", "--limit", "-3"], "--limit", "history"),
    ],
)
def test_bad_option_values_are_usage_errors_not_critical(
    config: Path, argv: list[str], option: str, command: str
) -> None:
    """Exit 64, not click's 2: `failoverctl status` run as a check would read 2 as critical."""
    done = ctl(config, *argv)
    assert done.exit_code == EXIT_USAGE == 64
    line = one_line_error(done)
    assert line.startswith("failoverctl: error: Invalid value for ") and option in line, line
    assert line.endswith(f"(see '{' '.join(['failoverctl', command]).strip()} -h')"), line


def test_the_usage_codes_stay_out_of_the_monitoring_range() -> None:
    assert {EXIT_USAGE, EXIT_REFUSED, EXIT_CONFIG}.isdisjoint(
        {HEALTHY, DEGRADED, CRITICAL, UNKNOWN}
    )
    assert len({EXIT_USAGE, EXIT_REFUSED, EXIT_CONFIG}) == 3


def test_an_unknown_command_or_option_is_a_usage_error(config: Path) -> None:
    done = ctl(config, "stauts")
    assert done.exit_code == EXIT_USAGE
    assert (
        one_line_error(done)
        == "failoverctl: error: No such command 'stauts'. Did you mean 'status'? "
        "(see 'failoverctl -h')"
    )
    assert ctl(config, "status", "--jsn").exit_code == EXIT_USAGE
    daemon = CliRunner().invoke(failoverd_main, ["run", "--log-level", "loud"])
    assert daemon.exit_code == EXIT_USAGE and "--log-level" in one_line_error(daemon)


def test_a_bare_command_shows_its_help_as_a_usage_error() -> None:
    """Not "error: Usage: ..." on one line: the help itself, and still not 2."""
    done = CliRunner().invoke(failoverctl_main, [])
    assert done.exit_code == EXIT_USAGE
    assert done.output.startswith("Usage: failoverctl [OPTIONS] COMMAND") and "error:" not in (
        done.output
    )


def test_promote_rejects_an_unknown_node_from_the_configuration_alone(config: Path) -> None:
    done = ctl(config, "--timeout", "20", "promote", "fln9", "--yes")
    assert done.exit_code == EXIT_USAGE
    assert one_line_error(done) == (
        "failoverctl: error: switchover refused: unknown node 'fln9' (members: fln1, fln2)"
    )


def test_rejoin_rejects_an_unknown_node_with_the_same_code(config: Path) -> None:
    done = ctl(config, "rejoin", "fln9", "--yes")
    assert done.exit_code == EXIT_USAGE
    assert one_line_error(done) == (
        "failoverctl: error: rejoin refused: unknown node 'fln9' (members: fln1, fln2)"
    )


def test_a_broken_configuration_is_not_critical(config: Path) -> None:
    config.write_text(CONFIG.replace('node = "fln1"', 'node = "fln9"'))
    done = ctl(config, "status")
    assert done.exit_code == EXIT_CONFIG == 78
    assert str(config) in done.stderr and "fln9" in done.stderr


class FakeZk:
    """Just what `status` reads once connected."""

    def view(self) -> ClusterView:
        return VIEW

    def read_history(self, limit: int) -> list[dict[str, object]]:
        return []


VIEW = ClusterView(
    epoch=3,
    lease=LeaseInfo("fln1", 3, 50.0, False),
    last_leader=None,
    members=(
        MemberStatus("fln1", "active", 3, False, True, "active (epoch 3)", lsn=0x3000060),
        MemberStatus("fln2", "passive", 3, True, True, "passive", lsn=0x3000000),
    ),
)


def patch_everywhere(monkeypatch: pytest.MonkeyPatch, name: str, value: object) -> None:
    """Replace a helper of failoverctl's group in every module of it that imported it."""
    for module in (group, show, steer):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, value)


@pytest.fixture
def connected(config: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`status` sees VIEW, without ZooKeeper."""

    @contextmanager
    def fake(
        ctx: click.Context, unknown_exit: int = 1, target: object = None
    ) -> Iterator[tuple[Any, Any]]:
        yield (target if target is not None else group.resolve_target(ctx)), FakeZk()

    patch_everywhere(monkeypatch, "connected", fake)
    patch_everywhere(monkeypatch, "read_view", lambda zk, timeout: VIEW)
    # The table shows each record's age: a clock that moves on between two runs changes it.
    monkeypatch.setattr(show, "walltime", lambda: 1_700_000_000.0)
    return config


def test_ctrl_c_ends_watch_quietly_with_exit_0(
    connected: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only way out of --watch is not a verdict: not 1 (degraded), as click's abort was."""

    def interrupted(seconds: float) -> NoReturn:
        raise KeyboardInterrupt

    monkeypatch.setattr(show.time, "sleep", interrupted)
    done = ctl(connected, "status", "--watch")
    assert done.exit_code == 0, done.output
    assert "cluster lab" in done.stdout and done.stderr == ""


def test_ctrl_c_before_a_one_shot_verdict_is_unknown(
    connected: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(zk: object, timeout: float) -> NoReturn:
        raise KeyboardInterrupt

    patch_everywhere(monkeypatch, "read_view", interrupted)
    done = ctl(connected, "status")
    assert done.exit_code == UNKNOWN and done.stdout == "" and done.stderr == ""


# -- failoverctl from an admin host ---------------------------------------------------------

ADMIN = '[cluster]\nname = "prod"\nzookeeper_hosts = ["10.0.0.5:2181", "10.0.0.6:2181"]\n'


@pytest.fixture
def seen_target(connected: Path, monkeypatch: pytest.MonkeyPatch) -> list[group.Target]:
    """`status` and `promote` see VIEW; the targets they connected to are recorded."""
    targets: list[group.Target] = []

    @contextmanager
    def fake(
        ctx: click.Context, unknown_exit: int = 1, target: group.Target | None = None
    ) -> Iterator[tuple[Any, Any]]:
        resolved = target if target is not None else group.resolve_target(ctx)
        targets.append(resolved)
        yield resolved, FakeZk()

    patch_everywhere(monkeypatch, "connected", fake)
    return targets


def test_the_config_option_works_after_the_command_too(
    seen_target: list[group.Target], connected: Path
) -> None:
    done = CliRunner().invoke(failoverctl_main, ["status", "-c", str(connected)])
    assert done.exit_code == HEALTHY, done.output
    assert "cluster lab" in done.stdout
    assert seen_target[-1].members == ("fln1", "fln2")  # from the node's configuration
    before = CliRunner().invoke(failoverctl_main, ["-c", str(connected), "status"])
    assert before.stdout == done.stdout


def test_an_admin_host_needs_only_zookeeper_and_the_cluster_name(
    seen_target: list[group.Target], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FAILOVERD_CONFIG", raising=False)
    argv = ["--zookeeper", "10.0.0.5:2181,10.0.0.6:2181", "--cluster", "prod", "status", "--json"]
    done = CliRunner().invoke(failoverctl_main, argv)
    assert done.exit_code == HEALTHY, done.output
    target = seen_target[-1]
    assert target.cluster.zookeeper_hosts == ("10.0.0.5:2181", "10.0.0.6:2181")
    assert target.cluster.chroot == "/failoverd/prod"  # the default, as a node derives it
    assert target.members is None  # from the members' records: fln1 and fln2 in VIEW
    doc = json.loads(done.stdout)
    assert doc["cluster"] == "prod" and doc["state"] == "healthy"
    # The same flags after the command.
    after = CliRunner().invoke(
        failoverctl_main, ["status", "--zookeeper", "10.0.0.5:2181", "--cluster", "prod"]
    )
    assert after.exit_code == HEALTHY and "cluster prod (/failoverd/prod)" in after.stdout


def test_an_admin_file_holds_only_the_cluster_table(
    seen_target: list[group.Target], tmp_path: Path
) -> None:
    admin = tmp_path / "failoverctl.toml"
    admin.write_text(ADMIN + 'chroot = "/failoverd/prod-eu"\n')
    done = CliRunner().invoke(failoverctl_main, ["status", "-c", str(admin)])
    assert done.exit_code == HEALTHY, done.output
    assert seen_target[-1].cluster.chroot == "/failoverd/prod-eu"
    admin.write_text(ADMIN + "zookeeper_timeout = 3\n")
    done = CliRunner().invoke(failoverctl_main, ["status", "-c", str(admin)])
    assert done.exit_code == EXIT_CONFIG and "cluster.zookeeper_timeout" in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--zookeeper", "10.0.0.5:2181", "status"],
        ["--cluster", "prod", "status"],
        ["status", "--chroot", "/failoverd/x"],
    ],
)
def test_admin_flags_go_together(seen_target: list[group.Target], argv: list[str]) -> None:
    done = CliRunner().invoke(failoverctl_main, argv)
    assert done.exit_code == EXIT_USAGE
    assert one_line_error(done).startswith("failoverctl: error: --")
    assert seen_target == []


def test_bad_admin_flags_are_a_configuration_problem_named_by_key(
    seen_target: list[group.Target],
) -> None:
    argv = ["--zookeeper", "zk1", "--cluster", "prod", "status"]
    done = CliRunner().invoke(failoverctl_main, argv)
    assert done.exit_code == EXIT_CONFIG
    assert "command line: cluster.zookeeper_hosts[0]: expected 'host:port'" in done.stderr


def test_promote_from_an_admin_host_rejects_a_node_zookeeper_does_not_know(
    seen_target: list[group.Target],
) -> None:
    argv = ["--zookeeper", "10.0.0.5:2181", "--cluster", "prod", "promote", "fln9", "--yes"]
    done = CliRunner().invoke(failoverctl_main, argv)
    assert done.exit_code == EXIT_USAGE
    assert one_line_error(done) == (
        "failoverctl: error: switchover refused: unknown node 'fln9' (members: fln1, fln2)"
    )


def test_status_json_is_a_document_even_for_a_broken_configuration(config: Path) -> None:
    config.write_text(CONFIG.replace('node = "fln1"', 'node = "fln9"'))
    done = ctl(config, "status", "--json")
    assert done.exit_code == EXIT_CONFIG
    doc = json.loads(done.stdout)
    assert doc["exit_code"] == EXIT_CONFIG and doc["state"] == "unknown"
    assert "fln9" in doc["error"] and str(config) in doc["error"]
    missing = ctl(config.with_name("absent.toml"), "status", "--json")
    assert missing.exit_code == EXIT_CONFIG
    assert "cannot read config file" in json.loads(missing.stdout)["error"]


def test_status_json_is_a_document_when_zookeeper_is_unreachable(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Unreachable:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def start(self, timeout: float) -> None:
            raise ZkUnreachable("no server answered within 3 s")

        def close(self) -> None:
            pass

    monkeypatch.setattr(group, "ZkCluster", Unreachable)
    done = ctl(config, "status", "--json")
    assert done.exit_code == UNKNOWN
    doc = json.loads(done.stdout)
    assert doc == {
        "cluster": "lab",
        "chroot": "/failoverd/lab",
        "state": "unknown",
        "exit_code": UNKNOWN,
        "error": "ZooKeeper unreachable: no server answered within 3 s",
    }
    plain = ctl(config, "status")  # without --json: nothing on stdout, one line on stderr
    assert plain.exit_code == UNKNOWN and plain.stdout == ""


class TrailingHistory:
    """The new active's switchover record is there at once, the old active's only from the
    third read: the order the two daemons append them in is not fixed."""

    def __init__(self) -> None:
        self.reads = 0

    def read_history(self, limit: int) -> list[dict[str, object]]:
        self.reads += 1
        up = {"kind": "switchover", "from": "fln1", "to": "fln2", "time": 100.5}
        down = {
            "kind": "switchover",
            "from": "fln1",
            "to": None,
            "time": 100.4,
            "phases": {"stepdown": 0.3},
        }
        return [up] if self.reads < 3 else [down, up]


def test_the_switchover_window_waits_for_the_old_actives_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    history = TrailingHistory()
    plan = steer.Plan(source="fln1", target="fln2", epoch=3)
    steer._report_window(history, plan, wall_started=100.0)  # type: ignore[arg-type]
    assert history.reads == 3
    assert capsys.readouterr().out == "done: writes were unavailable for 0.400 s\n"


def test_a_forced_switchover_has_no_old_record_to_wait_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    history = TrailingHistory()
    plan = steer.Plan(source=None, target="fln2", epoch=3)
    steer._report_window(history, plan, wall_started=100.0)  # type: ignore[arg-type]
    assert history.reads == 1
    assert capsys.readouterr().out == "done in 0.500 s\n"

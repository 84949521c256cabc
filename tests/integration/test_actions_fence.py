"""Fencing over SSH against a real sshd on 127.0.0.1, and ``fence_self`` against a real
PostgreSQL.

The outcome decides whether the new active may promote, so each way a fence can end is pinned
here: FENCED only when the command ran and exited 0; UNREACHABLE only when nothing on the peer's
side answered (a blackhole, a silent address, a SYN nobody takes); FAILED for everything that
shows a live host (refused, wrong host key, unknown host, rejected key, a failing or hanging
command, an sshd that accepts TCP and says nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from failoverd.actions.fence import fence_action_result, fence_peer, power_fence
from failoverd.config import Config, FencingConfig, Member, VipConfig, parse_config
from failoverd.core import FenceOutcome
from failoverd.fencing import fence_self
from lab.postgres import BIN_DIR, PostgresServer
from lab.sshd import SshServer, keygen, known_hosts_name, public_key

pytestmark = pytest.mark.integration
# Not imported: a module imported before pytest loads it as a plugin is not assert-rewritten.
pytest_plugins = ["tests.integration.conftest_servers"]

REPO = Path(__file__).resolve().parents[2]
CONNECT_TIMEOUT = 0.3  # the production default
MakePostgres = Callable[..., PostgresServer]
MakeSshd = Callable[..., SshServer]


@pytest.fixture
def make_sshd(tmp_path: Path) -> Iterator[MakeSshd]:
    """``make_sshd(forced_command)``: a started sshd of the test's own; stopped at teardown."""
    made: list[SshServer] = []

    def make(forced_command: str | None = None) -> SshServer:
        server = SshServer(tmp_path / f"sshd{len(made)}", forced_command=forced_command)
        made.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.stop()


def script(path: Path, body: str) -> str:
    """A shell script for sshd's forced command (quoting-free in authorized_keys)."""
    path.write_text("#!/bin/sh\n" + body)
    return f"/bin/sh {path}"


def fencing_for(server: SshServer, **overrides: Any) -> FencingConfig:
    settings: dict[str, Any] = {
        "ssh_user": "root",
        "identity_file": server.client_key,
        "known_hosts": server.known_hosts,
        "connect_timeout": CONNECT_TIMEOUT,
        "command_timeout": 3.0,
        "command": "failoverd fence-self",
    }
    settings.update(overrides)
    return FencingConfig(**settings)


def member(port: int, address: str = "127.0.0.1") -> Member:
    return Member("peer", address, ssh_port=port)


def bare_fencing(tmp_path: Path) -> FencingConfig:
    """Valid files, for peers that are not sshds at all."""
    known = tmp_path / "known_hosts.empty"
    known.write_text("")
    return FencingConfig(
        identity_file=keygen(tmp_path / "id_bare"),
        known_hosts=known,
        connect_timeout=CONNECT_TIMEOUT,
    )


def seconds(detail: str) -> float:
    """The duration every detail ends with: ``... (0.123 s)``."""
    match = re.search(r"\((\d+\.\d+) s\)$", detail)
    assert match, detail
    return float(match.group(1))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "fenced.marker"


@pytest.fixture
def fencing_sshd(make_sshd: MakeSshd, marker: Path, tmp_path: Path) -> SshServer:
    """An sshd whose key runs a stand-in for ``failoverd fence-self``: writes the marker."""
    command = script(
        tmp_path / "fence-ok.sh",
        f'echo "$SSH_ORIGINAL_COMMAND" > {marker}\necho "fenced: database stopped"\nexit 0\n',
    )
    return make_sshd(command)


# -- reached the peer ------------------------------------------------------------------------------


def test_fenced_when_the_command_exits_0(fencing_sshd: SshServer, marker: Path) -> None:
    outcome, detail = fence_peer(member(fencing_sshd.port), fencing_for(fencing_sshd))
    assert outcome is FenceOutcome.FENCED, detail
    assert marker.read_text().strip() == "failoverd fence-self"  # the command asked for
    assert "fenced: database stopped" in detail
    print(f"\nFENCED in {seconds(detail):.3f} s: {detail}")
    assert seconds(detail) < 2.0
    result = fence_action_result(9, outcome, detail)
    assert result.ok and result.fence is FenceOutcome.FENCED and result.action_id == 9


def test_failed_when_the_command_exits_1(make_sshd: MakeSshd, marker: Path, tmp_path: Path) -> None:
    command = script(
        tmp_path / "fence-bad.sh",
        f"touch {marker}\necho 'pg_ctl: server does not shut down' >&2\nexit 1\n",
    )
    server = make_sshd(command)
    outcome, detail = fence_peer(member(server.port), fencing_for(server))
    assert outcome is FenceOutcome.FAILED, detail
    assert "exited 1" in detail and "server does not shut down" in detail
    assert marker.exists()
    result = fence_action_result(1, outcome, detail)
    assert not result.ok and result.fence is FenceOutcome.FAILED


def test_failed_on_a_wrong_host_key_and_the_command_never_runs(
    fencing_sshd: SshServer, marker: Path, tmp_path: Path
) -> None:
    impostor = keygen(tmp_path / "other_host_key")
    known = tmp_path / "known_hosts.wrong"
    name = known_hosts_name(fencing_sshd.host, fencing_sshd.port)
    known.write_text(f"{name} {public_key(impostor)}\n")
    outcome, detail = fence_peer(
        member(fencing_sshd.port), fencing_for(fencing_sshd, known_hosts=known)
    )
    assert outcome is FenceOutcome.FAILED, detail
    assert "host key mismatch" in detail
    assert not marker.exists()


def test_failed_on_an_unknown_host(fencing_sshd: SshServer, marker: Path, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts.empty"
    empty.write_text("")
    outcome, detail = fence_peer(
        member(fencing_sshd.port), fencing_for(fencing_sshd, known_hosts=empty)
    )
    assert outcome is FenceOutcome.FAILED, detail
    assert "not found in known_hosts" in detail
    assert not marker.exists()


def test_failed_on_a_missing_known_hosts_file(fencing_sshd: SshServer, tmp_path: Path) -> None:
    outcome, detail = fence_peer(
        member(fencing_sshd.port), fencing_for(fencing_sshd, known_hosts=tmp_path / "nope")
    )
    assert outcome is FenceOutcome.FAILED and "cannot read known_hosts" in detail


def test_failed_on_a_wrong_client_key(
    fencing_sshd: SshServer, marker: Path, tmp_path: Path
) -> None:
    stranger = keygen(tmp_path / "id_stranger")
    outcome, detail = fence_peer(
        member(fencing_sshd.port), fencing_for(fencing_sshd, identity_file=stranger)
    )
    assert outcome is FenceOutcome.FAILED, detail
    assert "authentication failed" in detail
    assert not marker.exists()


def test_failed_when_sshd_is_stopped(fencing_sshd: SshServer) -> None:
    """Refused: the host's kernel answered, so the host is alive; only sshd is down."""
    fencing_sshd.stop()
    outcome, detail = fence_peer(member(fencing_sshd.port), fencing_for(fencing_sshd))
    assert outcome is FenceOutcome.FAILED, detail
    assert "refused" in detail
    assert seconds(detail) < 0.5


def test_failed_when_the_command_hangs(make_sshd: MakeSshd, tmp_path: Path) -> None:
    pid_file = tmp_path / "hang.pid"
    command = script(tmp_path / "hang.sh", f"echo $$ > {pid_file}\necho stopping\nexec sleep 30\n")
    server = make_sshd(command)
    try:
        started = time.monotonic()
        outcome, detail = fence_peer(member(server.port), fencing_for(server), 0.5)
        took = time.monotonic() - started
        assert outcome is FenceOutcome.FAILED, detail
        assert "did not finish within 0.5 s" in detail and "stopping" in detail
        assert took < 0.5 + 1.5, detail  # connect and handshake, then the command's 0.5 s
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_failed_when_tcp_is_accepted_but_ssh_never_answers(tmp_path: Path) -> None:
    """A host whose kernel accepts the connection is alive, even if its sshd is stuck."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        outcome, detail = fence_peer(member(port), bare_fencing(tmp_path))
    assert outcome is FenceOutcome.FAILED, detail
    assert "after the TCP connection was accepted" in detail
    assert 1.0 <= seconds(detail) < 2.0  # the banner timeout: max(1 s, 3 x connect_timeout)


# -- nothing answered -----------------------------------------------------------------------------


def test_unreachable_when_syns_go_unanswered(tmp_path: Path) -> None:
    """A listener whose accept queue is full drops SYNs: no answer at all, like a dead host."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):  # fills the queue
            outcome, detail = fence_peer(member(port), bare_fencing(tmp_path))
    assert outcome is FenceOutcome.UNREACHABLE, detail
    assert "dead or cut off" in detail
    assert CONNECT_TIMEOUT <= seconds(detail) < CONNECT_TIMEOUT + 0.2
    result = fence_action_result(2, outcome, detail)
    assert result.ok and result.fence is FenceOutcome.UNREACHABLE


CHILD = """
import json, sys
from pathlib import Path
from failoverd.actions.fence import fence_peer
from failoverd.config import FencingConfig, Member
ident, known, timeout, *addresses = sys.argv[1:]
fencing = FencingConfig(identity_file=Path(ident), known_hosts=Path(known),
                        connect_timeout=float(timeout))
for address in addresses:
    outcome, detail = fence_peer(Member("peer", address, ssh_port=22), fencing)
    print(json.dumps({"address": address, "outcome": outcome.value, "detail": detail}))
"""


@pytest.fixture
def netns() -> Iterator[str]:
    """A throwaway network namespace with a silent neighbour (10.0.0.2: a static ARP entry on a
    veth whose other end answers nothing), a blackhole route (10.0.2.1) and an unreachable
    route (10.0.3.1). Deleted at teardown; the host's network is never touched."""
    name = f"fltest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot create a network namespace here: {e}")
    setup = [
        ["link", "set", "lo", "up"],
        ["link", "add", "fla", "type", "veth", "peer", "name", "flb"],
        ["addr", "add", "10.0.0.1/24", "dev", "fla"],
        ["link", "set", "fla", "up"],
        ["link", "set", "flb", "up"],
        ["neigh", "add", "10.0.0.2", "lladdr", "02:00:00:00:00:02", "dev", "fla",
         "nud", "permanent"],
        ["route", "add", "blackhole", "10.0.2.1"],
        ["route", "add", "unreachable", "10.0.3.1"],
    ]  # fmt: skip
    try:
        for args in setup:
            subprocess.run(["ip", "-n", name, *args], check=True, capture_output=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)


def test_unreachable_when_nothing_on_the_peers_side_answers(netns: str, tmp_path: Path) -> None:
    ident = keygen(tmp_path / "id_ed25519")
    known = tmp_path / "known_hosts"
    known.write_text("")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", CHILD, str(ident), str(known),
         str(CONNECT_TIMEOUT), "10.0.0.2", "10.0.2.1", "10.0.3.1"],
        capture_output=True, text=True, timeout=30, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = {r["address"]: r for r in map(json.loads, done.stdout.splitlines())}
    silent, blackhole, unreachable = results["10.0.0.2"], results["10.0.2.1"], results["10.0.3.1"]
    for r in (silent, blackhole, unreachable):
        assert r["outcome"] == "unreachable", r
        assert "dead or cut off" in r["detail"]
    # The silent host costs exactly the connect timeout; routes that say no cost nothing.
    assert CONNECT_TIMEOUT <= seconds(silent["detail"]) < CONNECT_TIMEOUT + 0.2, silent
    assert seconds(blackhole["detail"]) < 0.1 and seconds(unreachable["detail"]) < 0.1
    print(f"\nUNREACHABLE in {seconds(silent['detail']):.3f} s: {silent['detail']}")


# -- fence_self ---------------------------------------------------------------------------------


def node_config(tmp_path: Path, postgres: PostgresServer | None) -> Config:
    pg = ""
    if postgres is not None:
        pg = (
            f'\n[postgres]\nhost = "{postgres.host}"\nport = {postgres.port}\n'
            f'data_dir = "{postgres.data_dir}"\nbin_dir = "{BIN_DIR}"\n'
        )
    text = (
        'node = "n1"\n[cluster]\nname = "t"\nzookeeper_hosts = ["127.0.0.1:1"]\n'
        'chroot = "/failoverd/t"\n'
        '[[members]]\nname = "n1"\naddress = "127.0.0.11"\n'
        '[[members]]\nname = "n2"\naddress = "127.0.0.12"\n'
        '[vip]\naddress = "127.77.0.100/8"\ninterface = "lo"\n'
        "[fencing]\ncommand_timeout = 5.0\n" + pg
    )
    return parse_config(text, tmp_path / "failoverd.toml")


class RecordingVip:
    """Stands in for the netlink VIP removal; records each call and whether the database was
    still up at that moment (the VIP must go first)."""

    def __init__(self, db: PostgresServer | None, answer: tuple[bool, str] = (True, "removed")):
        self.db = db
        self.answer = answer
        self.calls: list[tuple[VipConfig, bool | None]] = []

    def __call__(self, vip: VipConfig) -> tuple[bool, str]:
        self.calls.append((vip, None if self.db is None else self.db.running))
        return self.answer


class Log:
    """The structlog calls fence_self makes, recorded."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append(("info", event, kw))

    def error(self, event: str, **kw: Any) -> None:
        self.events.append(("error", event, kw))


def test_fence_self_stops_a_primary_cleanly_and_is_idempotent(
    make_postgres: MakePostgres, tmp_path: Path
) -> None:
    server = make_postgres("fs1")
    cfg = node_config(tmp_path, server)
    vip = RecordingVip(server)
    log = Log()

    ok, detail = fence_self(cfg, log, vip)
    assert ok, detail
    assert vip.calls == [(cfg.vip, True)]  # the VIP went first, while the database still ran
    assert server.pid is None
    assert server.cluster_state() == "shut down"
    assert "fast stop" in detail
    assert [e[1] for e in log.events] == ["fence_self_vip", "fence_self_database"]
    assert log.events[1][2]["clean"] is True

    ok, detail = fence_self(cfg, log, vip)  # again: nothing left to do, still success
    assert ok, detail
    assert "already stopped" in detail
    assert len(vip.calls) == 2

    # A failing VIP removal is reported, and the database is stopped all the same.
    server.start()
    failing = RecordingVip(server, (False, "netlink: operation not permitted"))
    ok, detail = fence_self(cfg, log, failing)
    assert not ok
    assert "operation not permitted" in detail
    assert server.pid is None


def test_fence_self_without_a_database(tmp_path: Path) -> None:
    cfg = node_config(tmp_path, None)
    vip = RecordingVip(None)
    ok, detail = fence_self(cfg, Log(), vip)
    assert ok, detail
    assert "none managed" in detail
    assert len(vip.calls) == 1


# -- the second level: a power switch command -----------------------------------------------------


def power_config(tmp_path: Path, script: str, timeout: float = 5.0) -> FencingConfig:
    """A power_command that is a real shell script, called with the peer's name and address."""
    path = tmp_path / "power"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return FencingConfig(power_command=(str(path), "--plug", "{node}", "--ip", "{address}"),
                         power_timeout=timeout)  # fmt: skip


PEER = Member(name="n2", address="127.0.0.2")


def test_power_fence_runs_the_command_with_the_peers_name_and_address(tmp_path: Path) -> None:
    record = tmp_path / "called"
    script = f'echo "$*|$FAILOVERD_FENCE_NODE|$FAILOVERD_FENCE_ADDRESS" > {record}\necho off\n'
    outcome, detail = power_fence(PEER, power_config(tmp_path, script))
    assert outcome is FenceOutcome.FENCED, detail
    assert record.read_text() == "--plug n2 --ip 127.0.0.2|n2|127.0.0.2\n"
    assert "switched n2 off" in detail and detail.endswith(": off")


def test_power_fence_fails_on_a_nonzero_exit_a_timeout_or_a_missing_program(
    tmp_path: Path,
) -> None:
    outcome, detail = power_fence(PEER, power_config(tmp_path, "echo 'PDU says no' >&2\nexit 3\n"))
    assert outcome is FenceOutcome.FAILED and "exited 3" in detail and "PDU says no" in detail
    started = time.monotonic()
    # A command that hangs, with a child that keeps the pipe open: killed at the deadline.
    outcome, detail = power_fence(PEER, power_config(tmp_path, "sleep 30 &\nsleep 30\n", 0.5))
    assert outcome is FenceOutcome.FAILED and "timed out after 0.5 s" in detail
    assert time.monotonic() - started < 5.0
    missing = FencingConfig(power_command=(str(tmp_path / "nonexistent"),))
    outcome, detail = power_fence(PEER, missing)
    assert outcome is FenceOutcome.FAILED and "could not run" in detail
    outcome, detail = power_fence(PEER, FencingConfig())
    assert outcome is FenceOutcome.FAILED and "no power_command configured" in detail

"""The failsafe channel wired in: the runner runs AskPledge and SetGranting, the daemon observes
the channel each tick and refuses to start on an unusable secret. Loopback only, no ZooKeeper
(the daemons here are built, never connected)."""

from __future__ import annotations

import os
import queue
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failoverd.actions.runner import ActionRunner
from failoverd.core import ActionResult, AskPledge, Reason, SetGranting
from failoverd.daemon import Daemon, StartupError
from failoverd.failsafe import FailsafeChannel
from failoverd.zk import ZkCluster
from lab.loopback import NODES, DaemonProcess, write_config
from lab.zookeeper import ZooKeeperServer
from tests.integration.failsafe_kit import (
    KEY,
    PASSIVE,
    TTL,
    RecordingLog,
    channel_config,
    free_udp_port,
    wait_until,
)

pytestmark = pytest.mark.integration

R = Reason("test", "test")
CHROOT = "/failoverd/failsafe-wiring"


def unconnected_zk() -> ZkCluster:
    return ZkCluster(["127.0.0.1:1"], "/failoverd/prod", "n1", 4.0)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[FailsafeChannel, FailsafeChannel]]:
    port = free_udp_port()
    n1 = FailsafeChannel(channel_config(tmp_path, "n1", port), RecordingLog())
    n2 = FailsafeChannel(channel_config(tmp_path, "n2", port), RecordingLog())
    n1.start()
    n2.start()
    try:
        yield n1, n2
    finally:
        n1.close()
        n2.close()


def runner_for(
    channel: FailsafeChannel | None, tmp_path: Path, node: str = "n2"
) -> tuple[ActionRunner, queue.SimpleQueue[tuple[ActionResult, int | None]]]:
    """A runner whose results carry what the channel granted at the moment each came back."""
    results: queue.SimpleQueue[tuple[ActionResult, int | None]] = queue.SimpleQueue()

    def on_result(result: ActionResult) -> None:
        granting = None if channel is None else channel.observed()[2]
        results.put((result, granting))

    cfg = channel.cfg if channel is not None else channel_config(tmp_path, node, 1, enabled=False)
    runner = ActionRunner(cfg, unconnected_zk(), RecordingLog(), on_result, failsafe=channel)
    return runner, results


def test_set_granting_reports_only_once_the_channel_grants_as_told(
    pair: tuple[FailsafeChannel, FailsafeChannel], tmp_path: Path
) -> None:
    n1, n2 = pair
    runner, results = runner_for(n2, tmp_path)
    try:
        runner.submit(SetGranting(1, R, epoch=5))
        result, granting = results.get(timeout=2.0)
        assert (result.action_id, result.ok, granting) == (1, True, 5)
        assert "epoch 5" in result.detail
        assert n1.ask(5)
        assert wait_until(lambda: n1.observed()[0] is not None)
        runner.submit(SetGranting(2, R, epoch=None))
        result, granting = results.get(timeout=2.0)
        assert (result.action_id, result.ok, granting) == (2, True, None)
        pledge = n1.observed()[0]
        until = n2.observed()[1]
        assert pledge is not None and until is not None and pledge.sent_at + TTL <= until
    finally:
        runner.close()


def test_ask_pledge_returns_at_once_and_the_pledge_shows_up_later(
    pair: tuple[FailsafeChannel, FailsafeChannel], tmp_path: Path
) -> None:
    n1, n2 = pair
    n2.set_granting(9)
    runner, results = runner_for(n1, tmp_path, "n1")
    try:
        started = time.monotonic()
        runner.submit(AskPledge(1, R, epoch=9))
        assert time.monotonic() - started < 0.1
        assert wait_until(lambda: n1.observed()[0] is not None)
        pledge = n1.observed()[0]
        assert pledge is not None and pledge.epoch == 9
        assert results.empty()  # fire-and-forget: no result
    finally:
        runner.close()


def test_ask_pledge_never_blocks_the_loop_even_when_the_peer_is_silent(tmp_path: Path) -> None:
    port = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((PASSIVE, port))
        n1 = FailsafeChannel(channel_config(tmp_path, "n1", port), RecordingLog())
        n1.start()
        runner, _ = runner_for(n1, tmp_path, "n1")
        try:
            started = time.monotonic()
            for i in range(20):  # a tick's worth each, the first one still in flight
                runner.submit(AskPledge(i, R, epoch=3))
            assert time.monotonic() - started < 0.1  # at once: the bound is 0.3 s
            assert wait_until(lambda: n1.stats().asks.get("unanswered") == 1)
            assert n1.stats().asks["dropped"] == 19
        finally:
            runner.close()
            n1.close()


def test_without_the_failsafe_granting_nothing_is_ok_and_asking_does_nothing(
    tmp_path: Path,
) -> None:
    runner, results = runner_for(None, tmp_path)
    try:
        runner.submit(AskPledge(1, R, epoch=3))
        runner.submit(SetGranting(2, R, epoch=None))
        runner.submit(SetGranting(3, R, epoch=3))
        got = {r.action_id: r for r, _ in (results.get(timeout=2.0) for _ in range(2))}
        assert got[2].ok and "failsafe disabled" in got[2].detail
        assert not got[3].ok
        assert results.empty()
    finally:
        runner.close()


# -- the daemon -------------------------------------------------------------------------------


@pytest.fixture
def no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "FAILOVERD_ROLE_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_systemd")
def test_the_daemon_observes_the_channel_each_tick(tmp_path: Path) -> None:
    port = free_udp_port()
    passive = Daemon(channel_config(tmp_path, "n2", port))
    active = Daemon(channel_config(tmp_path, "n1", port))
    assert passive.failsafe is not None and active.failsafe is not None
    passive._start_failsafe()  # start() without ZooKeeper: only the channel
    active._start_failsafe()
    try:
        obs = passive.observe()
        assert (obs.pledge, obs.pledged_until, obs.granting) == (None, None, None)
        passive.failsafe.set_granting(4)
        active.runner.submit(AskPledge(1, R, epoch=4))
        assert wait_until(lambda: active.observe().pledge is not None)
        pledge = active.observe().pledge
        obs = passive.observe()
        assert pledge is not None and obs.granting == 4
        assert obs.pledged_until is not None and obs.pledged_until >= pledge.sent_at + TTL
    finally:
        for d in (passive, active):
            d.runner.close()
            d._close_failsafe()


@pytest.mark.usefixtures("no_systemd")
def test_without_the_failsafe_the_observation_says_nothing_of_pledges(tmp_path: Path) -> None:
    daemon = Daemon(channel_config(tmp_path, "n1", free_udp_port(), enabled=False))
    assert daemon.failsafe is None
    obs = daemon.observe()
    assert (obs.pledge, obs.pledged_until, obs.granting) == (None, None, None)


@pytest.mark.usefixtures("no_systemd")
@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (lambda key: key.chmod(0o644), r"failsafe\.secret_file: .*\(mode 644\): chmod 600 it"),
        (lambda key: key.unlink(), r"failsafe\.secret_file: cannot read"),
        (lambda key: key.write_bytes(b"short\n"), r"failsafe\.secret_file: .* holds 5 bytes"),
    ],
    ids=["too-open", "missing", "too-short"],
)
def test_the_daemon_refuses_to_start_on_an_unusable_secret(
    tmp_path: Path, spoil: object, says: str
) -> None:
    cfg = channel_config(tmp_path, "n1", free_udp_port())
    assert cfg.failsafe.secret_file is not None
    spoil(cfg.failsafe.secret_file)  # type: ignore[operator]  # after the config was checked
    started = time.monotonic()
    with pytest.raises(StartupError, match=says) as e:
        Daemon(cfg).start()
    assert time.monotonic() - started < 1.0  # before ZooKeeper is even tried
    assert str(cfg.path) in str(e.value) and "enabled = false" in str(e.value)
    assert "failsafe-test-secret" not in str(e.value)


@pytest.mark.usefixtures("no_systemd")
def test_the_daemon_refuses_to_start_when_the_channel_port_is_taken(tmp_path: Path) -> None:
    port = free_udp_port()
    cfg = channel_config(tmp_path, "n1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((cfg.self_member.address, port))
        with pytest.raises(StartupError, match=r"failsafe\.port: cannot listen"):
            Daemon(cfg).start()


def test_the_store_is_private(tmp_path: Path) -> None:
    cfg = channel_config(tmp_path, "n2", free_udp_port())
    channel = FailsafeChannel(cfg, RecordingLog())
    channel.start()
    try:
        store = cfg.failsafe.store_dir
        assert store.stat().st_mode & 0o777 == 0o700
        files = list(store.iterdir())
        assert [f.name for f in files] == ["failsafe-prod-n2.json"]
        assert all(os.stat(f).st_mode & 0o777 == 0o600 for f in files)
    finally:
        channel.close()


# -- real daemons -----------------------------------------------------------------------------


def test_daemons_run_with_the_failsafe_on_and_stop_cleanly(
    zookeeper: ZooKeeperServer, tmp_path: Path
) -> None:
    """`failoverd run` with [failsafe] enabled on the loopback pair (127.0.0.11 and .12): the
    channel starts before ZooKeeper, both take their roles, and SIGTERM ends both cleanly."""
    key = tmp_path / "failsafe.key"
    key.write_bytes(KEY.key + b"\n")
    key.chmod(0o600)
    port = free_udp_port(tuple(NODES.values()))
    daemons: dict[str, DaemonProcess] = {}
    try:
        for node in NODES:
            extra = (
                f'\n[failsafe]\nenabled = true\nsecret_file = "{key}"\nport = {port}\n'
                f'store_dir = "{tmp_path / "run" / node}"\n'
            )
            path = write_config(
                tmp_path / f"{node}.toml", node, zookeeper.hosts, CHROOT, extra=extra
            )
            daemons[node] = DaemonProcess(path)

        def settled() -> bool:
            """Each daemon's latest role, one active and one passive."""
            latest = []
            for d in daemons.values():
                roles = [e["role"] for e in d.events() if "role" in e]
                latest.append(roles[-1] if roles else None)
            return sorted(r or "" for r in latest) == ["active", "passive"]

        # One active, one passive: start-up (and the channel's, before ZooKeeper) is over.
        assert wait_until(settled, 20), [d.log.read_text()[-2000:] for d in daemons.values()]
        for node, d in daemons.items():
            started = [e for e in d.events() if e.get("event") == "failsafe_started"]
            listening = [e for e in d.events() if e.get("event") == "failsafe_listening"]
            assert started and started[0]["port"] == port, d.log.read_text()[-3000:]
            assert listening and listening[0]["address"] == NODES[node]
            assert (tmp_path / "run" / node / f"failsafe-t-{node}.json").exists()
        for d in daemons.values():
            d.stop()
            assert d.proc.returncode == 0, d.log.read_text()[-2000:]
    finally:
        for d in daemons.values():
            d.kill()

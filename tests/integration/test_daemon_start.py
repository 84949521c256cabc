"""No ZooKeeper at start-up is a state, not an exit: `failoverd run` as a process.

The daemon starts while nothing answers at its ZooKeeper address; it takes no role, says so to
systemd (STATUS=, with EXTEND_TIMEOUT_USEC= so the start job waits) and in the log at growing
intervals, never READY=1; a ZooKeeper started later on that address is found within about a
second (kazoo's retry) and the node takes its role. An address that never answers keeps it
waiting, and SIGTERM then exits cleanly. Timings: session 1 s, start_timeout 2 s (the first
report), as ``lab.loopback.write_config`` writes them.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from lab.loopback import DaemonProcess, write_config
from lab.process import wait_for
from lab.zookeeper import ZooKeeperServer, free_port

from .test_systemd import Listener

pytestmark = pytest.mark.integration

START_TIMEOUT = 2.0  # write_config's: the wait is first reported after it


@pytest.fixture
def listener() -> Iterator[Listener]:
    made = Listener(f"@failoverd-start-{time.monotonic_ns()}")
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    try:
        yield started
    finally:
        for d in started:
            d.kill()


def waiting_reports(listener: Listener) -> list[str]:
    return [
        status
        for m in listener.all()
        if (status := m.value("STATUS")) is not None and status.startswith("waiting for ZooKeeper")
    ]


def test_a_zookeeper_started_later_is_found_and_the_role_taken(
    tmp_path: Path, listener: Listener, daemons: list[DaemonProcess]
) -> None:
    port = free_port()
    config = write_config(tmp_path / "n1.toml", "n1", f"127.0.0.1:{port}", "/failoverd/later")
    daemon = DaemonProcess(config, env={"NOTIFY_SOCKET": listener.env_value})
    daemons.append(daemon)
    first = listener.wait(lambda m: (m.value("STATUS") or "").startswith("waiting for"), 10)
    assert first.has(f"EXTEND_TIMEOUT_USEC={60_000_000}"), first
    status = first.value("STATUS") or ""
    assert f"waiting for ZooKeeper at 127.0.0.1:{port} for 2 s, taking no role: " in status
    assert "Connection refused" in status
    assert daemon.proc.poll() is None
    assert not any(m.has("READY=1") for m in listener.all())

    with ZooKeeperServer(tmp_path / "zk", port=port) as server:
        up = time.monotonic()
        ready = listener.wait(lambda m: m.has("READY=1"), 15)
        active = listener.wait(
            lambda m: (m.value("STATUS") or "").startswith("role active, epoch 1, "), 10
        )
        took = active.at - up
        assert ready.at - up < took + 0.01
        assert took < 5.0, f"active {took:.2f} s after ZooKeeper came up"
        # After the wait, more time for the rest of the start, said with what happened.
        answered = [m for m in listener.all() if "ZooKeeper answered after" in str(m.fields)]
        assert answered and answered[0].has(f"EXTEND_TIMEOUT_USEC={60_000_000}")
        client = KazooClient(hosts=server.hosts)
        client.start(5)
        try:
            assert client.exists("/failoverd/later/lease") is not None
        finally:
            client.stop()
            client.close()
        daemon.stop()
        assert daemon.proc.returncode == 0
    events = [e.get("event") for e in daemon.events()]
    assert "waiting_for_zookeeper" in events and "zookeeper_reachable" in events
    assert events.index("waiting_for_zookeeper") < events.index("zookeeper_reachable")
    print(f"READY {ready.at - up:.2f} s, active {took:.2f} s after ZooKeeper came up")


def test_an_address_that_never_answers_keeps_it_waiting_until_sigterm(
    tmp_path: Path, listener: Listener, daemons: list[DaemonProcess]
) -> None:
    # Two hosts: one refuses, one accepts and never answers (a partition's silence).
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        hosts = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{silent.getsockname()[1]}"]
        config = write_config(tmp_path / "n1.toml", "n1", hosts[0], "/failoverd/never")
        config.write_text(
            config.read_text().replace(f'["{hosts[0]}"]', str(hosts).replace("'", '"'))
        )
        daemon = DaemonProcess(config, env={"NOTIFY_SOCKET": listener.env_value})
        daemons.append(daemon)
        # Logged after start_timeout, then after twice as long again: 2 s and 6 s.
        assert wait_for(
            lambda: (
                len([e for e in daemon.events() if e.get("event") == "waiting_for_zookeeper"]) >= 2
            ),
            12,
        ), daemon.log.read_text()
        assert daemon.proc.poll() is None
        waits = [e for e in daemon.events() if e.get("event") == "waiting_for_zookeeper"]
        assert [w["next_report_in_s"] for w in waits[:2]] == [4.0, 8.0]
        assert waits[1]["waited_s"] - waits[0]["waited_s"] == pytest.approx(4.0, abs=0.5)
        assert waits[0]["role"] == "starting" and waits[0]["hosts"] == ",".join(hosts)
        # kazoo's line per failed attempt (several a second) is held back meanwhile.
        text = daemon.log.read_text()
        assert "Connection dropped" not in text and "Traceback" not in text, text
        reports = waiting_reports(listener)
        assert reports and all(",".join(hosts) in r for r in reports)
        assert not any(m.has("READY=1") for m in listener.all())

        terminated = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(5) == 0, daemon.log.read_text()
        stopping = listener.wait(lambda m: m.has("STOPPING=1"), 2)
        assert stopping.at - terminated < 1.0
        exited = [e for e in daemon.events() if e.get("event") == "exited"]
        assert exited and exited[0]["reason"] == "stopped while waiting", exited
        assert re.search(r"waiting for ZooKeeper at \S+ for \d+ s", reports[-1])
    finally:
        silent.close()

"""`systemctl reload` (SIGHUP) of a real `failoverd run` against a real ZooKeeper.

The daemon runs as node n1 of a fresh cluster whose peer never starts, so it becomes active;
systemd is stood in for by the notify listener of test_systemd.py. A command check appends a
timestamp on each run, so the cadence a reload sets is measured, not taken from a log line.
"""

from __future__ import annotations

import itertools
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.loopback import DaemonProcess, write_config
from lab.process import wait_for
from lab.zookeeper import ZooKeeperServer
from tests.integration.test_systemd import Listener

pytestmark = pytest.mark.integration


def config_text(
    path: Path, node: str, hosts: str, chroot: str, ticks: Path, interval: float
) -> str:
    check = (
        f'[checks.tick]\ntype = "command"\ncommand = ["/bin/sh", "-c", '
        f'"date +%s.%N >> {ticks}"]\ninterval = {interval}\n'
    )
    write_config(path, node, hosts, chroot, extra=check)
    return path.read_text()


def probe_times(ticks: Path, since: float) -> list[float]:
    times = [float(x) for x in ticks.read_text().split()] if ticks.exists() else []
    return [t for t in times if t >= since]


def median_gap(ticks: Path, since: float) -> float:
    times = probe_times(ticks, since)
    return statistics.median(b - a for a, b in itertools.pairwise(times))


@pytest.fixture
def listener() -> Iterator[Listener]:
    made = Listener(f"@failoverd-reload-{uuid.uuid4().hex}")
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def active(
    zookeeper: ZooKeeperServer, tmp_path: Path, listener: Listener
) -> Iterator[dict[str, Any]]:
    """n1 running and active (epoch 1), its check probing every 0.2 s."""
    chroot = f"/failoverd/reload-{uuid.uuid4().hex[:10]}"
    config, ticks = tmp_path / "n1.toml", tmp_path / "ticks"
    text = config_text(config, "n1", zookeeper.hosts, chroot, ticks, 0.2)
    daemon = DaemonProcess(config, env={"NOTIFY_SOCKET": listener.env_value})
    try:
        listener.wait(lambda m: (m.value("STATUS") or "").startswith("role active, epoch 1"), 20)
        yield {"daemon": daemon, "config": config, "text": text, "ticks": ticks}
    finally:
        daemon.kill()


def events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e.get("event") == name]


def reload(daemon: DaemonProcess, listener: Listener, event: str) -> dict[str, Any]:
    """SIGHUP, then the one log event it must produce and systemd's RELOADING=1 ... READY=1."""
    before = len(events(daemon, event))
    sent = time.monotonic()
    daemon.signal(signal.SIGHUP)
    assert wait_for(lambda: len(events(daemon, event)) > before, 10), daemon.log.read_text()[-3000:]
    reloading = listener.wait(lambda m: m.at >= sent and m.has("RELOADING=1"), 5)
    listener.wait(lambda m: m.at >= reloading.at and m.has("READY=1"), 5)
    return events(daemon, event)[-1]


def test_a_new_check_interval_is_applied(active: dict[str, Any], listener: Listener) -> None:
    daemon, config, ticks = active["daemon"], active["config"], active["ticks"]
    time.sleep(1.5)
    assert median_gap(ticks, 0) < 0.4
    config.write_text(active["text"].replace("interval = 0.2", "interval = 1.0"))
    event = reload(daemon, listener, "config_reloaded")
    assert event["applied"] == ["checks"] and event["level"] == "info"
    ready = [m for m in listener.all() if m.has("READY=1")][-1]
    assert "reload applied: checks" in (ready.value("STATUS") or "")
    applied_at = time.time()
    time.sleep(4.5)
    assert 0.8 < median_gap(ticks, applied_at) < 1.3, probe_times(ticks, applied_at)
    # Still the active of epoch 1: a reload is no restart.
    status = [m.value("STATUS") for m in listener.all() if m.value("STATUS")][-1]
    assert status is not None and status.startswith("role active, epoch 1"), status
    assert daemon.proc.poll() is None


def test_a_changed_node_name_is_refused_and_nothing_changes(
    active: dict[str, Any], listener: Listener
) -> None:
    daemon, config, ticks = active["daemon"], active["config"], active["ticks"]
    # A safe change (the interval) with an unsafe one (the node's name): all or nothing.
    text = (
        active["text"]
        .replace('node = "n1"', 'node = "n2"')
        .replace("interval = 0.2", "interval = 1.0")
    )
    config.write_text(text)
    event = reload(daemon, listener, "config_reload_refused")
    assert event["level"] == "warning"
    assert len(event["refused"]) == 1 and event["refused"][0].startswith("node: "), event
    assert "nothing changed" in event["note"]
    ready = [m for m in listener.all() if m.has("READY=1")][-1]
    assert "reload refused: node: " in (ready.value("STATUS") or "")
    refused_at = time.time()
    time.sleep(2.0)
    assert median_gap(ticks, refused_at) < 0.4  # the old interval stays
    status = [m.value("STATUS") for m in listener.all() if m.value("STATUS")][-1]
    assert status is not None and status.startswith("role active, epoch 1"), status
    assert events(daemon, "config_reloaded") == []


def test_a_broken_file_is_refused_with_its_problems(
    active: dict[str, Any], listener: Listener
) -> None:
    daemon, config, ticks = active["daemon"], active["config"], active["ticks"]
    config.write_text(active["text"].replace("interval = 0.2", 'interval = "fast"'))
    event = reload(daemon, listener, "config_reload_refused")
    assert any("checks.tick.interval" in r for r in event["refused"]), event
    config.unlink()
    event = reload(daemon, listener, "config_reload_refused")
    assert any("cannot read config file" in r for r in event["refused"]), event
    refused_at = time.time()
    time.sleep(1.5)
    assert median_gap(ticks, refused_at) < 0.4
    assert daemon.proc.poll() is None
    status = [m.value("STATUS") for m in listener.all() if m.value("STATUS")][-1]
    assert status is not None and status.startswith("role active, epoch 1"), status


def test_turning_the_fencing_check_on_starts_it_at_once(
    active: dict[str, Any], listener: Listener
) -> None:
    """fencing.check_interval is applied live: the periodic check starts with the new settings
    (here the peer n2 never started, so it has no member record showing a version that knows
    the dry run: the check says so, once, and asks nothing; the point is that it runs)."""
    daemon, config = active["daemon"], active["config"]
    assert events(daemon, "fencing_check_skipped") == []
    config.write_text(active["text"].replace("check_interval = 0", "check_interval = 10"))
    event = reload(daemon, listener, "config_reloaded")
    assert event["applied"] == ["fencing.check_interval"], event
    log = daemon.log
    assert wait_for(lambda: events(daemon, "fencing_check_skipped"), 15), log.read_text()[-3000:]
    time.sleep(6.0)  # past the 5 s retry of a skipped check: said once, not at every retry
    skipped = events(daemon, "fencing_check_skipped")
    assert len(skipped) == 1 and "n2 has no member record" in skipped[0]["reason"], skipped
    assert daemon.proc.poll() is None

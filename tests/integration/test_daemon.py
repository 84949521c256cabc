"""`failoverd run` and `failoverctl` as processes against a real ZooKeeper."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from lab.loopback import BIN, NODES, DaemonProcess, start_sshd, write_config
from lab.process import wait_for
from lab.zookeeper import ZooKeeperServer, free_port

pytestmark = pytest.mark.integration

SESSION = 1.0  # short sessions keep the suite fast (write_config's default); the lab uses 2 s


def failoverd(command: str, config: Path) -> subprocess.CompletedProcess[str]:
    """One run of `failoverd COMMAND` that is expected to end by itself."""
    argv = [str(BIN / "failoverd"), command]
    argv += [str(config)] if command == "check-config" else ["-c", str(config)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def cluster(
    zookeeper: ZooKeeperServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    chroot = f"/failoverd/{request.node.name.replace('[', '_').replace(']', '')}"
    # Each node's sshd runs the real `failoverd fence-self` as its forced command, so a takeover
    # after an expired lease fences over SSH exactly as in production.
    paths = {n: tmp_path / f"{n}.toml" for n in NODES}
    sshd = start_sshd(tmp_path, paths)
    configs = {n: write_config(paths[n], n, zookeeper.hosts, chroot, sshd=sshd) for n in NODES}
    client = KazooClient(hosts=zookeeper.hosts)
    client.start(timeout=10)
    daemons: list[DaemonProcess] = []

    def start(node: str) -> DaemonProcess:
        d = DaemonProcess(configs[node])
        daemons.append(d)
        return d

    try:
        yield {"configs": configs, "zk": client, "chroot": chroot, "start": start, "sshd": sshd}
    finally:
        for d in daemons:
            d.kill()
        for server in sshd.values():
            server.stop()
        client.stop()
        client.close()


def record(zk: KazooClient, path: str) -> dict[str, Any] | None:
    try:
        data, _ = zk.get(path)
    except NoNodeError:
        return None
    return json.loads(data) if data else None


def ctl(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "failoverctl"), "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def roles(zk: KazooClient, chroot: str) -> dict[str, str | None]:
    return {n: (r or {}).get("role") for n in NODES for r in [record(zk, f"{chroot}/members/{n}")]}


def bring_up(cluster: dict[str, Any]) -> tuple[str, str, dict[str, DaemonProcess]]:
    """Start both daemons; returns (active, passive, daemons)."""
    daemons = {n: cluster["start"](n) for n in NODES}
    zk, chroot = cluster["zk"], cluster["chroot"]
    settled = wait_for(
        lambda: sorted(v or "" for v in roles(zk, chroot).values()) == ["active", "passive"], 20
    )
    assert settled, (roles(zk, chroot), [d.log.read_text()[-2000:] for d in daemons.values()])
    active = next(n for n, r in roles(zk, chroot).items() if r == "active")
    passive = next(n for n in NODES if n != active)
    return active, passive, daemons


def test_one_active_one_passive_and_status_reports_it(cluster: dict[str, Any]) -> None:
    active, passive, daemons = bring_up(cluster)
    lease = record(cluster["zk"], f"{cluster['chroot']}/lease")
    assert lease is not None and lease["node"] == active and lease["epoch"] == 1
    done = ctl(cluster["configs"][passive], "status", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["state"] == "healthy"
    assert doc["lease"]["node"] == active
    assert {m["node"]: m["role"] for m in doc["members"]} == {active: "active", passive: "passive"}
    table = ctl(cluster["configs"][active], "status")
    assert table.returncode == 0
    assert f"active: {active}" in table.stdout
    # Every decision is logged as a JSON line with its reason (stdout is not a terminal).
    events = daemons[active].events()
    assert any(e.get("event") == "active" and e.get("node") == active for e in events)


def test_sigterm_steps_down_cleanly_and_peer_takes_over_without_waiting_for_expiry(
    cluster: dict[str, Any],
) -> None:
    active, passive, daemons = bring_up(cluster)
    zk, chroot = cluster["zk"], cluster["chroot"]
    started = time.monotonic()
    daemons[active].signal(signal.SIGTERM)
    assert daemons[active].wait(10) == 0
    last = record(zk, f"{chroot}/last_leader")
    assert last is not None and last["node"] == active and last["epoch"] == 1 and last["clean"]
    assert wait_for(lambda: roles(zk, chroot)[passive] == "active", 10)
    took = time.monotonic() - started
    lease = record(zk, f"{chroot}/lease")
    assert lease is not None and lease["node"] == passive and lease["epoch"] == 2
    # A clean release needs no session expiry: generous bound, well below expiry + fence paths.
    assert took < SESSION + 3.0, took


def test_sigkill_of_the_active_is_taken_over_after_session_expiry(
    cluster: dict[str, Any],
) -> None:
    active, passive, daemons = bring_up(cluster)
    zk, chroot = cluster["zk"], cluster["chroot"]
    killed = time.monotonic()
    daemons[active].signal(signal.SIGKILL)
    assert wait_for(lambda: roles(zk, chroot)[passive] == "active", SESSION + 10)
    took = time.monotonic() - killed
    assert took >= SESSION * 0.8, f"took over before the old session could expire: {took}"
    history = zk.get_children(f"{chroot}/history")
    events = [record(zk, f"{chroot}/history/{h}") or {} for h in sorted(history)]
    kinds = [e.get("kind") for e in events]
    assert "failover" in kinds
    # The lease expired, so the new active fenced the old one over SSH before promoting: the
    # forced command ran `failoverd fence-self` there (nothing left to stop: FENCED).
    fences = [e for e in events if e.get("kind") == "fence"]
    assert fences and "fenced" in str(fences[0].get("reason")), events
    # No automatic fail-back: the restarted node comes back passive.
    cluster["start"](active)
    assert wait_for(lambda: roles(zk, chroot)[active] == "passive", SESSION + 10)
    assert roles(zk, chroot)[passive] == "active"


def test_second_daemon_with_the_same_name_is_refused(cluster: dict[str, Any]) -> None:
    active, _passive, _daemons = bring_up(cluster)
    duplicate = cluster["start"](active)
    rc = duplicate.wait(SESSION + 15)
    assert rc not in (None, 0)
    text = duplicate.log.read_text()
    assert "duplicate node name" in text or "another live daemon" in text, text
    assert "Traceback" not in text


def test_restarted_daemon_starts_once_its_lingering_session_expires(
    cluster: dict[str, Any],
) -> None:
    _active, passive, daemons = bring_up(cluster)
    zk, chroot = cluster["zk"], cluster["chroot"]
    daemons[passive].signal(signal.SIGKILL)
    daemons[passive].wait(5)
    restarted = cluster["start"](passive)  # its previous session still holds members/<passive>
    assert wait_for(lambda: roles(zk, chroot)[passive] == "passive", SESSION + 10)
    assert restarted.proc.poll() is None


def test_paused_daemon_stops_leaving_everything_and_peer_does_not_take_over(
    cluster: dict[str, Any],
) -> None:
    active, passive, daemons = bring_up(cluster)
    zk, chroot = cluster["zk"], cluster["chroot"]
    assert ctl(cluster["configs"][active], "pause").returncode == 0
    assert wait_for(lambda: set(roles(zk, chroot).values()) == {"paused"}, 10)
    daemons[active].signal(signal.SIGTERM)
    assert daemons[active].wait(10) == 0
    # It leaves serving as it was, and says so: the peer must fence it before taking over.
    last = record(zk, f"{chroot}/last_leader")
    assert last is not None and last["node"] == active and last["left_serving"], last
    assert not last["clean"]
    time.sleep(SESSION + 1.0)
    assert record(zk, f"{chroot}/lease") is None
    assert roles(zk, chroot)[passive] == "paused"
    assert ctl(cluster["configs"][passive], "resume").returncode == 0
    assert wait_for(lambda: roles(zk, chroot)[passive] == "active", 10)


def test_status_exit_codes(cluster: dict[str, Any]) -> None:
    cfg = cluster["configs"]["n1"]
    missing = ctl(cfg, "status")
    assert missing.returncode == 3 and "not found" in missing.stderr  # never initialised
    assert ctl(cfg, "init").returncode == 0
    nobody = ctl(cfg, "status", "--json")
    assert nobody.returncode == 2, nobody.stdout  # no active
    assert "no active node" in json.loads(nobody.stdout)["warnings"][0]
    cluster["start"]("n1")
    zk, chroot = cluster["zk"], cluster["chroot"]
    assert wait_for(lambda: roles(zk, chroot)["n1"] == "active", 10)
    one = ctl(cfg, "status")
    assert one.returncode == 1, one.stdout  # degraded: n2 publishes nothing
    assert "n2 publishes no status" in one.stdout
    unreachable = write_config(
        cfg.parent / "down.toml", "n1", f"127.0.0.1:{free_port()}", cluster["chroot"]
    )
    down = ctl(unreachable, "--timeout", "0.5", "status")
    assert down.returncode == 3
    assert down.stderr.count("\n") == 1 and "ZooKeeper unreachable" in down.stderr


def test_session_timeout_negotiated_below_self_fence_after_is_refused(tmp_path: Path) -> None:
    with ZooKeeperServer(tmp_path / "zk", max_session_timeout_ms=800) as server:
        cfg = write_config(tmp_path / "n1.toml", "n1", server.hosts, "/failoverd/x", session=2.0)
        done = failoverd("run", cfg)
    assert done.returncode == 1
    assert "timings.self_fence_after" in done.stderr
    assert "negotiated" in done.stderr and str(cfg) in done.stderr


def test_ensemble_timing_that_could_outlast_the_self_fence_is_refused(tmp_path: Path) -> None:
    """tickTime 1 s: the leader may hear of a round-trip up to a second late, but T 2 s minus
    self_fence_after 1.5 s leaves 0.5 s. check-config says so too, before any start."""
    with ZooKeeperServer(tmp_path / "zk", tick_time_ms=1000, min_session_timeout_ms=2000) as server:
        cfg = write_config(tmp_path / "n1.toml", "n1", server.hosts, "/failoverd/x", session=2.0)
        cfg.write_text(
            cfg.read_text().replace(
                "start_timeout = 2.0", "start_timeout = 2.0\nself_fence_after = 1.5"
            )
        )
        checked = failoverd("check-config", cfg)
        done = failoverd("run", cfg)
    assert checked.returncode == 78, checked.stderr  # EX_CONFIG, never 2 (critical)
    assert f"error: {cfg}: timings.self_fence_after: ZooKeeper's tickTime is 1 s" in checked.stderr
    assert done.returncode == 1
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in done.stderr, done.stderr
    assert f"{cfg}: timings.self_fence_after: ZooKeeper's tickTime is 1 s" in line
    assert "0.5 s" in line


class ZooKeeperWithoutConf(ZooKeeperServer):
    """A server whose four-letter whitelist leaves ``conf`` out, as many do."""

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        self.config_path.write_text(text.replace("ruok,srvr,conf,cons", "ruok,srvr,cons"))


def test_check_config_says_what_it_learnt_of_the_ensemble(tmp_path: Path) -> None:
    with (
        ZooKeeperServer(tmp_path / "zk") as server,
        ZooKeeperWithoutConf(tmp_path / "zk-noconf") as hidden,
    ):
        seen = write_config(tmp_path / "seen.toml", "n1", server.hosts, "/failoverd/x")
        blind = write_config(tmp_path / "blind.toml", "n1", hidden.hosts, "/failoverd/x")
        found = failoverd("check-config", seen)
        unknown = failoverd("check-config", blind)
        offline = subprocess.run(
            [str(BIN / "failoverd"), "check-config", "--offline", str(blind)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert found.returncode == 0, found.stderr
    assert f"note: {seen}: cluster.zookeeper_hosts: 1 standalone server: tickTime 0.1 s" in (
        found.stderr
    )
    assert "margin of session timeout 1 s - self_fence_after 0.5 s = 0.5 s" in found.stderr
    assert unknown.returncode == 0, unknown.stderr
    assert f"warning: {blind}: cluster.zookeeper_hosts: could not read" in unknown.stderr
    assert "4lw.commands.whitelist" in unknown.stderr
    assert offline.returncode == 0 and "zookeeper_hosts" not in offline.stderr


def test_vip_interface_missing_is_refused_at_start(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "n1.toml",
        "n1",
        "127.0.0.1:1",
        "/failoverd/x",
        extra='[vip]\naddress = "127.77.0.100/8"\ninterface = "nosuch0"\n',
    )
    done = failoverd("run", cfg)
    assert done.returncode == 1
    assert "vip.interface" in done.stderr and "nosuch0" in done.stderr


def test_check_config_prints_all_errors_or_the_effective_config(tmp_path: Path) -> None:
    good = write_config(tmp_path / "n1.toml", "n1", "127.0.0.1:2181", "/failoverd/x")
    ok = failoverd("check-config", good)
    assert ok.returncode == 0 and "self_fence_after = 0.5" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(
        good.read_text()
        .replace('node = "n1"', 'node = "n9"')
        .replace("session_timeout", "session_timout")
    )
    done = failoverd("check-config", bad)
    assert done.returncode == 78  # EX_CONFIG
    assert "n9" in done.stderr and "did you mean 'session_timeout'" in done.stderr
    assert all(line.startswith(str(bad)) for line in done.stderr.splitlines())


def test_promote_asks_first_and_a_no_changes_nothing(cluster: dict[str, Any]) -> None:
    active, passive, _daemons = bring_up(cluster)
    zk, chroot = cluster["zk"], cluster["chroot"]
    done = subprocess.run(
        [str(BIN / "failoverctl"), "-c", str(cluster["configs"][active]), "promote"],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1 and "not confirmed; nothing changed" in done.stderr
    assert f"switch over from {active} to {passive}" in done.stdout
    assert zk.exists(f"{chroot}/switchover") is None
    assert roles(zk, chroot)[active] == "active"


def test_promote_switches_over_and_reports_the_window(cluster: dict[str, Any]) -> None:
    active, passive, _daemons = bring_up(cluster)
    zk, chroot = cluster["zk"], cluster["chroot"]
    done = ctl(cluster["configs"][active], "promote", "--yes", "--timeout", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the target is active" in done.stdout and "writes were unavailable for" in done.stdout
    assert roles(zk, chroot) == {active: "passive", passive: "active"}
    again = ctl(cluster["configs"][active], "promote", passive, "--yes")
    assert again.returncode == 75 and "is the active node already" in again.stderr  # refused

"""Real nodes: failoverd installed by scripts/install-node and run by a real systemd (PID 1 of a
Debian 12 container per node, lab/containers.py), on Debian's own PostgreSQL layout.

What only this tier can show: the unit's sandbox lets the daemon do its work (clone, promote,
fence); the watchdog and ExecStopPost fence a frozen daemon; a restart of the active is a clean
switchover and a paused one is not; a powered-off or crashed node fails over; no ZooKeeper at
boot leaves the unit waiting, not failed. The tests share one lab (module scope) and run in
file order; each one leaves the cluster redundant again for the next.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from failoverd.clock import boottime, walltime
from lab.cluster import NODES, VIP_IP
from lab.containers import SystemdLab
from lab.monitoring import Monitoring, start_monitoring
from lab.process import wait_for
from lab.scenarios import Workload
from lab.workload import Verdict, analyze, read_jsonl

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

REDUNDANT_BOUND = 90.0  # back to one active and one streaming replica (a clone included)
TAKEOVER_BOUND = 30.0  # the peer active after a fault (the watchdog, a restart, a poweroff)


def other(node: str) -> str:
    return next(n for n in NODES if n != node)


def role_of(systemd_lab: SystemdLab, node: str) -> str | None:
    doc = systemd_lab.cluster_status()
    if doc is None:
        return None
    return next((m.get("role") for m in doc.get("members", []) if m.get("node") == node), None)


def epoch(systemd_lab: SystemdLab) -> int:
    doc = systemd_lab.cluster_status()
    assert doc is not None, "failoverctl status gave no JSON"
    return int(doc["epoch"])


def wait_active(systemd_lab: SystemdLab, node: str, timeout: float) -> float:
    """Seconds until ``node`` holds the lease as active with the VIP; fails after timeout."""
    t0 = time.monotonic()
    got = wait_for(
        lambda: role_of(systemd_lab, node) == "active" and systemd_lab.lab.vip_holders() == [node],
        timeout,
        step=0.2,
    )
    assert got, (
        f"{node} not active with the VIP within {timeout:g} s: "
        + json.dumps(systemd_lab.cluster_status())[:2000]
    )
    return time.monotonic() - t0


def surviving_ids(systemd_lab: SystemdLab, node: str) -> set[str]:
    out = systemd_lab.psql(node, "SELECT id FROM donations", dbname="donations")
    return set(out.split())


def verdict(systemd_lab: SystemdLab, workload: Workload, fault_at: float, primary: str) -> Verdict:
    workload.stop()
    samples = read_jsonl(workload.out / "samples.jsonl")
    # Split brain is judged on the VIP and on each PostgreSQL: the sampler must have seen one.
    assert any(s["writable"] for s in samples), samples[-3:]
    return analyze(workload.acks(), samples, fault_at, surviving_ids(systemd_lab, primary))


def start_workload(systemd_lab: SystemdLab, out: Path, duration: float) -> Workload:
    workload = Workload(systemd_lab.lab, out, duration=duration)
    got = wait_for(lambda: sum(1 for a in workload.acks() if a.get("ok")) >= 10, 20, step=0.1)
    assert got, f"no writes acknowledged through the VIP: {workload.acks()[-3:]}"
    return workload


# -- install and form --------------------------------------------------------------------------


def test_installed_by_the_script_the_cluster_forms(
    systemd_lab: SystemdLab, keep_logs: Path
) -> None:
    active = systemd_lab.wait_redundant(REDUNDANT_BOUND)
    passive = other(active)
    for node in NODES:
        state = systemd_lab.unit_state(node)
        assert state["ActiveState"] == "active", state
        assert systemd_lab.systemctl(node, "is-enabled", "failoverd.service").strip() == "enabled"
        # Debian's own units no longer run the cluster: failoverd does.
        assert (
            systemd_lab.run(node, ["systemctl", "is-enabled", "postgresql.service"]).stdout.strip()
            == "disabled"
        )
    status = systemd_lab.unit_state(active)["StatusText"]
    assert status.startswith("role active, epoch "), status
    assert systemd_lab.unit_state(passive)["StatusText"].startswith("role passive"), status
    shown = systemd_lab.systemctl(active, "status", "--no-pager", "failoverd.service")
    assert "active (running)" in shown and 'Status: "role active, epoch' in shown, shown
    docs = systemd_lab.run(active, ["systemctl", "show", "-P", "Documentation", "failoverd"])
    assert "file:/usr/share/doc/failoverd/README.md" in docs.stdout, docs.stdout

    # The second node was cloned from the first: one system identifier, streaming, and the
    # daemon's journal says it cloned the package's own cluster away.
    ids = {
        n: systemd_lab.check(
            n,
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                "/usr/lib/postgresql/15/bin/pg_controldata",
                "/var/lib/postgresql/15/main",
            ],
        )
        .split("Database system identifier:")[1]
        .split()[0]
        for n in NODES
    }
    assert ids[active] == ids[passive], ids
    assert systemd_lab.database_state(passive) == "replica (streaming)"
    cloned = systemd_lab.journal("fln2", "-u", "failoverd", "-o", "cat")
    assert "cloning from fln1 (pg_basebackup)" in cloned

    # The script is idempotent and never restarts a running failoverd.
    pid_before = systemd_lab.unit_state(passive)["MainPID"]
    out = systemd_lab.install_node(passive)
    assert "wrote" not in out and "generated" not in out, out
    assert systemd_lab.unit_state(passive)["MainPID"] == pid_before


# -- the watchdog and ExecStopPost ---------------------------------------------------------------


def test_frozen_active_daemon_is_killed_by_the_watchdog_and_fenced(
    systemd_lab: SystemdLab, keep_logs: Path
) -> None:
    """SIGSTOP of the active's daemon alone (its PostgreSQL keeps running): the watchdog
    (WatchdogSec=800ms) aborts it, ExecStopPost runs fence-self (VIP off, PostgreSQL stopped)
    before the peer's session-expiry takeover needs to fence, and the journal says so at
    warning priority."""
    active = systemd_lab.wait_redundant(REDUNDANT_BOUND)
    peer = other(active)
    since = systemd_lab.check(active, ["date", "+%Y-%m-%d %H:%M:%S"]).strip()
    restarts = int(systemd_lab.unit_state(active)["NRestarts"])
    systemd_lab.systemctl(active, "kill", "--kill-whom=main", "-s", "SIGSTOP", "failoverd.service")
    took = wait_active(systemd_lab, peer, TAKEOVER_BOUND)
    # The watchdog fired and the unit restarted (Restart=on-failure), ExecStopPost fenced.
    assert wait_for(
        lambda: int(systemd_lab.unit_state(active)["NRestarts"]) > restarts, 20, step=0.2
    ), systemd_lab.unit_state(active)
    unit_log = systemd_lab.journal(active, "-u", "failoverd", "--since", since, "-o", "cat")
    assert "Watchdog timeout" in unit_log or "watchdog" in unit_log.lower(), unit_log[-3000:]
    assert "fence-self on " in unit_log and ": done:" in unit_log, unit_log[-3000:]
    assert VIP_IP not in systemd_lab.check(active, ["ip", "-o", "addr", "show"])
    warnings = systemd_lab.journal(
        active, "-u", "failoverd", "--since", since, "-p", "warning", "-o", "cat"
    )
    # ExecStopPost's fence, at warning priority (the daemon itself was frozen: it said nothing).
    assert "failoverd-stop-post: fencing: abnormal end while active" in warnings, warnings[-3000:]
    assert f"fence-self on {active}: done" in warnings, warnings[-3000:]
    print(f"frozen daemon: {peer} active {took:.1f} s after SIGSTOP of {active}'s failoverd")
    # The restarted daemon brings its node back as a streaming replica by itself.
    assert systemd_lab.wait_redundant(REDUNDANT_BOUND) == peer


# -- restart: a switchover, unless paused ----------------------------------------------------------


def test_restart_of_a_paused_active_is_no_failover(
    systemd_lab: SystemdLab, keep_logs: Path
) -> None:
    active = systemd_lab.wait_redundant(REDUNDANT_BOUND)
    before = epoch(systemd_lab)
    paused = systemd_lab.failoverctl(active, "pause")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    try:
        pid = systemd_lab.unit_state(active)["MainPID"]
        systemd_lab.systemctl(active, "restart", "failoverd.service")
        assert systemd_lab.unit_state(active)["MainPID"] != pid
        # Nothing moved: the VIP and the primary stayed, the epoch too, during and after.
        for _ in range(10):
            assert systemd_lab.lab.vip_holders() == [active]
            assert systemd_lab.database_state(active) == "primary"
            time.sleep(0.3)
        assert epoch(systemd_lab) == before
    finally:
        resumed = systemd_lab.failoverctl(active, "resume")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # After the resume the restarted daemon takes its lease again; the peer, seeing its daemon
    # back, waits for that instead of fencing it (a switchover here was a bug: core/passive.py,
    # _waiting_for_readopt).
    assert systemd_lab.wait_redundant(REDUNDANT_BOUND) == active
    for _ in range(10):
        assert systemd_lab.lab.vip_holders() == [active]
        time.sleep(0.3)
    assert systemd_lab.wait_redundant(REDUNDANT_BOUND) == active


def test_restart_of_the_active_is_a_clean_switchover(
    systemd_lab: SystemdLab, keep_logs: Path
) -> None:
    """systemctl restart: SIGTERM makes the active step down (clean stop, lease released with
    its final LSN), the peer promotes without a session timeout, and no acknowledged write is
    lost; the restarted daemon comes back as the new active's replica."""
    active = systemd_lab.wait_redundant(REDUNDANT_BOUND)
    peer = other(active)
    workload = start_workload(systemd_lab, keep_logs / "workload", duration=90)
    fault_at = boottime()
    systemd_lab.systemctl(active, "restart", "failoverd.service")
    wait_active(systemd_lab, peer, TAKEOVER_BOUND)
    wait_for(
        lambda: sum(1 for a in workload.acks() if a.get("ok") and a["sent"] > fault_at) >= 20,
        20,
        step=0.1,
    )
    v = verdict(systemd_lab, workload, fault_at, peer)
    assert v.lost == [], v
    assert v.epoch_order_violations == [], v
    assert v.split_brain_samples == 0, v
    assert v.served_after == peer, v
    print(f"restart of the active: writes failed for {v.outage_s} s, {v.acknowledged} acknowledged")
    assert systemd_lab.wait_redundant(REDUNDANT_BOUND) == peer


# -- the node goes away --------------------------------------------------------------------------


def test_poweroff_of_the_active_container_fails_over_and_it_rejoins(
    systemd_lab: SystemdLab, keep_logs: Path
) -> None:
    """systemctl poweroff stops failoverd.service like any stop (a clean step-down), then the
    node is gone; booted again, it comes back as the new active's replica by itself."""
    active = systemd_lab.wait_redundant(REDUNDANT_BOUND)
    peer = other(active)
    workload = start_workload(systemd_lab, keep_logs / "workload", duration=120)
    fault_at = boottime()
    took = systemd_lab.poweroff(active)
    wait_active(systemd_lab, peer, TAKEOVER_BOUND)
    wait_for(
        lambda: sum(1 for a in workload.acks() if a.get("ok") and a["sent"] > fault_at) >= 20,
        20,
        step=0.1,
    )
    v = verdict(systemd_lab, workload, fault_at, peer)
    assert v.lost == [], v
    assert v.epoch_order_violations == [], v
    assert v.split_brain_samples == 0, v
    assert v.served_after == peer, v
    print(f"poweroff of {active} ({took:.1f} s): writes failed for {v.outage_s} s")
    systemd_lab.start_container(active)
    assert systemd_lab.wait_redundant(REDUNDANT_BOUND) == peer


def test_crash_of_the_active_node_fails_over(systemd_lab: SystemdLab, keep_logs: Path) -> None:
    """Link down, then every process of the container SIGKILLed: the peer waits out the
    session, finds SSH unreachable (the node is gone), promotes. The outage is measured as the
    namespace lab measures it (tests/lab/test_failover.py: 2.5 s there)."""
    active = systemd_lab.wait_redundant(REDUNDANT_BOUND)
    peer = other(active)
    # The real Prometheus and Alertmanager in flcli, scraping both containers: the failover
    # must page someone (the webhook receiver) through them.
    monitoring = start_monitoring(systemd_lab.lab.root, systemd_lab.lab.venv)
    try:
        crash_pages_someone(systemd_lab, monitoring, active, peer, keep_logs)
    finally:
        monitoring.down()


def crash_pages_someone(
    systemd_lab: SystemdLab, monitoring: Monitoring, active: str, peer: str, keep_logs: Path
) -> None:
    assert wait_for(lambda: len(monitoring.query('up{job="failoverd"} == 1')) == 2, 30, step=0.5), (
        monitoring.query('up{job="failoverd"}')
    )
    workload = start_workload(systemd_lab, keep_logs / "workload", duration=120)
    fault_at, fault_wall = boottime(), walltime()
    systemd_lab.crash(active)
    wait_active(systemd_lab, peer, TAKEOVER_BOUND)
    wait_for(
        lambda: sum(1 for a in workload.acks() if a.get("ok") and a["sent"] > fault_at) >= 20,
        20,
        step=0.1,
    )
    v = verdict(systemd_lab, workload, fault_at, peer)
    # Synchronous replication (the lab's mode): nothing acknowledged is lost, even on a crash.
    assert v.lost == [], v
    assert v.epoch_order_violations == [], v
    assert v.split_brain_samples == 0, v
    assert v.outage_s is not None and v.outage_s < 8.0, v
    print(f"CRASH OUTAGE (systemd lab): {v.outage_s:.2f} s, {v.acknowledged} acknowledged")
    (keep_logs / "crash-outage.txt").write_text(f"{v.outage_s:.3f}\n")
    page = monitoring.wait_page("FailoverdFailoverHappened", 60, since=fault_wall)
    assert page.labels.get("node") == peer, page
    assert page.annotations.get("runbook_url", "").endswith("#failoverdfailoverhappened"), page
    print(f"CRASH TO PAGE (systemd lab): {page.received - fault_wall:.2f} s")
    systemd_lab.restore_link(active)
    systemd_lab.start_container(active)
    assert systemd_lab.wait_redundant(REDUNDANT_BOUND) == peer


# -- no ZooKeeper at boot ---------------------------------------------------------------------


def test_no_zookeeper_at_boot_the_unit_waits_and_takes_its_role_later(
    systemd_lab: SystemdLab, keep_logs: Path
) -> None:
    """The passive node boots while the whole ensemble is down for 60 s: failoverd.service
    stays activating (waiting, its start timeout extended), never failed, and takes its role
    once ZooKeeper answers."""
    active = systemd_lab.wait_redundant(REDUNDANT_BOUND)
    passive = other(active)
    systemd_lab.poweroff(passive)
    systemd_lab.lab.zk.stop_all()
    zk_back = False
    try:
        systemd_lab.start_container(passive, wait_booted=False)
        seen: set[str] = set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60.0:
            st = systemd_lab.unit_state(passive)
            seen.add(st["ActiveState"])
            # "inactive" only until systemd reaches the unit at boot; never "failed".
            assert st["ActiveState"] in ("inactive", "activating", "active"), st
            assert st["Result"] == "success", st
            time.sleep(1.0)
        assert "activating" in seen, seen
        waiting = systemd_lab.unit_state(passive)["StatusText"]
        assert "waiting for ZooKeeper" in waiting, waiting
        systemd_lab.lab.zk.start_all()
        zk_back = True
    finally:
        if not zk_back:
            systemd_lab.lab.zk.start_all()
    assert wait_for(
        lambda: systemd_lab.unit_state(passive)["ActiveState"] == "active", 60, step=0.5
    ), systemd_lab.unit_state(passive)
    systemd_lab.wait_redundant(REDUNDANT_BOUND)
    assert int(systemd_lab.unit_state(passive)["NRestarts"]) == 0


# -- systemctl reload ---------------------------------------------------------------------------


def test_reload_applies_a_new_check_interval_and_refuses_a_new_node_name(
    systemd_lab: SystemdLab, keep_logs: Path
) -> None:
    """`systemctl reload failoverd` (SIGHUP): a new check interval is applied live, with no
    restart and no move; a changed node name is refused and nothing changes."""
    active = systemd_lab.wait_redundant(REDUNDANT_BOUND)
    config = systemd_lab.container(active).rootfs / "etc/failoverd/failoverd.toml"
    original = config.read_text()
    pid = systemd_lab.unit_state(active)["MainPID"]
    before = epoch(systemd_lab)
    try:
        assert "interval = 0.5" in original
        config.write_text(original.replace("interval = 0.5", "interval = 0.7"))
        systemd_lab.systemctl(active, "reload", "failoverd.service")
        state = systemd_lab.unit_state(active)
        assert "reload applied: checks" in state["StatusText"], state
        assert '"config_reloaded"' in systemd_lab.journal(active, "-u", "failoverd", "-o", "cat")
        # The peer's name: a valid file, so the refusal is reload's rule for the key itself.
        config.write_text(original.replace(f'node = "{active}"', f'node = "{other(active)}"'))
        systemd_lab.systemctl(active, "reload", "failoverd.service")
        state = systemd_lab.unit_state(active)
        assert "reload refused: node: " in state["StatusText"], state
        refused = systemd_lab.journal(active, "-u", "failoverd", "-p", "warning", "-o", "cat")
        assert '"config_reload_refused"' in refused, refused[-2000:]
        assert state["ActiveState"] == "active" and state["MainPID"] == pid, state
        assert systemd_lab.wait_redundant(REDUNDANT_BOUND) == active
        assert epoch(systemd_lab) == before
    finally:
        config.write_text(original)

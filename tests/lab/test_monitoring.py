"""A failover pages someone: the lab with Debian's Prometheus and Alertmanager in flcli.

The lab comes up with ``monitoring=True`` (lab/monitoring.py): Prometheus scrapes both daemons
every second and evaluates config/prometheus/alerts.yml, Alertmanager routes every alert to the
webhook receiver, which writes each notification to a file. The active node crashes; the test
waits (bounded) until the file holds the pages an operator would get, and prints how long each
took: the failover, the crashed daemon down, and, once the node is back, its daemon restarted.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from lab import scenarios
from lab.cluster import ADDRESSES, METRICS_PORT, NODES, Lab
from lab.monitoring import COMPONENTS
from lab.process import wait_for

pytestmark = pytest.mark.lab

# Bounds only a real bug breaks. The failover itself takes < 3 s in the lab; then a scrape
# (1 s), an evaluation (1 s) and Alertmanager's group_wait (1 s). FailoverdDaemonDown waits
# `for: 30s` by design; the restart is seen on the first scrape of the new process.
FAILOVER_PAGE_BOUND = 30.0
DAEMON_DOWN_PAGE_BOUND = 75.0
RESTART_PAGE_BOUND = 30.0
HEAL_BOUND = 60.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    cluster = Lab()
    took = cluster.up(monitoring=True)
    print(f"lab up with monitoring in {took:.1f} s")
    try:
        scenarios.wait_redundant(cluster, timeout=90)
        yield cluster
    finally:
        kept = tmp_path_factory.mktemp("lab-logs")
        for node in NODES:
            log = cluster.daemon_log(node)
            if log.exists():
                shutil.copy(log, kept / f"{node}-failoverd.log")
        for name in ("prometheus.log", "alertmanager.log", "webhook.log", "webhook.jsonl"):
            path = cluster.monitoring.dir / name
            if path.exists():
                shutil.copy(path, kept / name)
        cluster.down()


def instance(node: str) -> str:
    return f"{ADDRESSES[node]}:{METRICS_PORT}"


def test_prometheus_scrapes_both_nodes_and_the_lab_status_shows_monitoring(lab: Lab) -> None:
    st = lab.status(failoverctl=False)
    assert set(st.monitoring) == set(COMPONENTS)
    assert all(st.monitoring.values()), st.render()
    assert "prometheus" in st.render()

    def both_up() -> bool:
        found = lab.monitoring.query('up{job="failoverd"}')
        return sorted((r["metric"]["instance"], r["value"][1]) for r in found) == [
            (instance("fln1"), "1"),
            (instance("fln2"), "1"),
        ]

    assert wait_for(both_up, 20, step=0.2), lab.monitoring.query("up")
    active = lab.monitoring.query("failoverd_is_active == 1")
    assert [r["metric"]["node"] for r in active] == [scenarios.wait_redundant(lab)]
    # Bringing the lab up is no failover: nothing paged it.
    assert not [p for p in lab.monitoring.pages() if p.alertname == "FailoverdFailoverHappened"]


def test_a_crash_of_the_active_pages_the_failover_the_dead_daemon_and_its_restart(
    lab: Lab,
) -> None:
    active = scenarios.wait_redundant(lab)
    passive = scenarios.other(active)
    mon = lab.monitoring
    crashed_at = time.time()
    lab.crash(active)

    page = mon.wait_page(
        "FailoverdFailoverHappened", FAILOVER_PAGE_BOUND, since=crashed_at, node=passive
    )
    to_failover_page = page.received - crashed_at
    assert page.labels["cluster"] == "lab"
    assert page.annotations["runbook_url"].endswith("#failoverdfailoverhappened")
    down = mon.wait_page(
        "FailoverdDaemonDown", DAEMON_DOWN_PAGE_BOUND, since=crashed_at, instance=instance(active)
    )
    to_down_page = down.received - crashed_at
    assert down.labels["severity"] == "critical"

    # The node comes back as after a reboot; its new daemon is a restart Prometheus sees.
    lab.restore_link(active, drop_vip=True)
    restarted_at = time.time()
    for component in ("sshd", "app", "squid", "failoverd"):
        lab.start_component(active, component)
    restart = mon.wait_page(
        "FailoverdDaemonRestarted",
        RESTART_PAGE_BOUND,
        since=restarted_at,
        instance=instance(active),
    )
    to_restart_page = restart.received - restarted_at
    resolved = mon.wait_page(
        "FailoverdDaemonDown",
        RESTART_PAGE_BOUND,
        since=restarted_at,
        status="resolved",
        instance=instance(active),
    )
    print(
        f"crash of {active}: failover page after {to_failover_page:.2f} s, daemon-down page "
        f"after {to_down_page:.2f} s; restarted daemon paged after {to_restart_page:.2f} s, "
        f"daemon-down resolved after {resolved.received - restarted_at:.2f} s"
    )
    assert scenarios.wait_redundant(lab, timeout=HEAL_BOUND) == passive
    # Only the passive took over, so only it was paged as the new active.
    failovers = [p for p in mon.pages() if p.alertname == "FailoverdFailoverHappened"]
    assert {p.labels["node"] for p in failovers} == {passive}

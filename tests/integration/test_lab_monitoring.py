"""The lab's monitoring on loopback: Debian's Prometheus and Alertmanager and lab/webhook.py,
started by lab/roles/monitoring.sh exactly as in the lab (there inside flcli), scraping a real
``failoverd.metrics.Metrics`` endpoint and evaluating the project's own alerts.yml.

A takeover counted by the real registry becomes a FailoverdFailoverHappened page in the webhook's
file, with its runbook link; a dead target is ``up == 0``; everything stops by PID.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from failoverd.core import Settings
from failoverd.metrics import Metrics
from lab.monitoring import COMPONENTS, Monitoring, MonitoringError
from lab.process import wait_for
from lab.zookeeper import free_port

pytestmark = pytest.mark.integration

VENV = Path(sys.prefix)  # the environment running the tests runs the webhook receiver too
PAGE_BOUND = 30.0  # scrape 1 s + evaluation 1 s + group_wait 1 s, on a loaded 2-core machine


@pytest.fixture(scope="module")
def node_metrics() -> Iterator[Metrics]:
    m = Metrics(Settings(node="n2", peer="n1", self_fence_after=1.0), "prod")
    m.serve("127.0.0.1", 0)
    try:
        yield m
    finally:
        m.close()


@pytest.fixture(scope="module")
def monitoring(
    tmp_path_factory: pytest.TempPathFactory, node_metrics: Metrics
) -> Iterator[Monitoring]:
    mon = Monitoring(
        tmp_path_factory.mktemp("monitoring"),
        venv=VENV,
        namespace=None,
        address="127.0.0.1",
        targets=[f"127.0.0.1:{node_metrics.port}", f"127.0.0.1:{free_port()}"],  # one dead
        ports=(free_port(), free_port(), free_port()),
    )
    mon.up()
    try:
        yield mon
    finally:
        mon.down()


def scraped(mon: Monitoring, promql: str) -> list[dict[str, object]] | None:
    try:
        return mon.query(promql) or None
    except MonitoringError:
        return None


def test_all_three_run_and_a_second_up_restarts_nothing(monitoring: Monitoring) -> None:
    pids = monitoring.pids()
    assert set(pids) == set(COMPONENTS)
    assert all(pids.values()), pids
    monitoring.up()
    assert monitoring.pids() == pids
    conf = (monitoring.dir / "prometheus.yml").read_text()
    assert "scrape_interval: 1s" in conf
    assert str(monitoring.rules) in conf


def test_a_takeover_pages_through_prometheus_and_alertmanager(
    monitoring: Monitoring, node_metrics: Metrics
) -> None:
    # increase() needs a sample before the increment: wait until the counter is scraped at 0.
    series = 'failoverd_failovers_total{job="failoverd",reason="failover"}'
    assert wait_for(lambda: scraped(monitoring, series), 20, step=0.2), "never scraped"
    since = time.time()
    node_metrics.failovers.labels("n2", "prod", "failover").inc()
    page = monitoring.wait_page(
        "FailoverdFailoverHappened", PAGE_BOUND, since=since, node="n2", reason="failover"
    )
    print(f"page {page.received - since:.2f} s after the takeover was counted")
    assert page.labels["severity"] == "warning"
    assert page.labels["cluster"] == "prod"
    assert page.annotations["summary"] == "prod: n2 became active (failover)"
    assert page.annotations["runbook_url"].endswith("README.md#failoverdfailoverhappened")


def test_the_process_collector_and_a_dead_target_are_seen(
    monitoring: Monitoring, node_metrics: Metrics
) -> None:
    live = f"127.0.0.1:{node_metrics.port}"
    up = wait_for(lambda: scraped(monitoring, 'up{job="failoverd"}'), 20, step=0.2)
    assert up is not None
    by_instance = {str(r["metric"]["instance"]): r["value"][1] for r in up}  # type: ignore[index]
    assert by_instance[live] == "1"
    assert [v for i, v in by_instance.items() if i != live] == ["0"]
    started = scraped(monitoring, f'process_start_time_seconds{{instance="{live}"}}')
    assert started is not None and float(started[0]["value"][1]) <= time.time()  # type: ignore[index]


def test_the_webhook_refuses_what_is_not_a_notification_and_writes_nothing(
    monitoring: Monitoring,
) -> None:
    before = monitoring.pages_path.read_bytes() if monitoring.pages_path.exists() else b""
    url = f"http://127.0.0.1:{monitoring.webhook_port}/"
    for body in (b"not json", b"[1, 2]", b'{"alerts": '):
        req = urllib.request.Request(url, data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        assert refused.value.code == 400, body
    after = monitoring.pages_path.read_bytes() if monitoring.pages_path.exists() else b""
    assert after[: len(before)] == before
    assert b"not json" not in after and b"[1, 2]" not in after


def test_a_broken_rule_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yml"
    rules.write_text("groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: up ==\n")
    mon = Monitoring(
        tmp_path / "lab",
        venv=VENV,
        namespace=None,
        address="127.0.0.1",
        targets=["127.0.0.1:9"],
        rules=rules,
        ports=(free_port(), free_port(), free_port()),
    )
    with pytest.raises(MonitoringError, match="promtool check config"):
        mon.up()
    assert mon.pids() == dict.fromkeys(COMPONENTS)


def test_down_stops_all_three_by_pid(tmp_path: Path) -> None:
    mon = Monitoring(
        tmp_path,
        venv=VENV,
        namespace=None,
        address="127.0.0.1",
        targets=["127.0.0.1:9"],
        ports=(free_port(), free_port(), free_port()),
    )
    mon.up()
    pids = mon.pids()
    assert all(pids.values())
    mon.down()
    assert mon.pids() == dict.fromkeys(COMPONENTS)
    for pid in pids.values():
        state = subprocess.run(
            ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False
        ).stdout.strip()
        assert state == "" or state.startswith("Z"), (pid, state)  # gone, or a zombie
    mon.down()  # idempotent

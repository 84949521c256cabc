"""The webhook receiver's file read back as pages (lab/monitoring.py), without any server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.monitoring import Monitoring, monitoring_command, parse_pages


def notification(*alerts: dict[str, object], received: float = 100.0) -> str:
    return json.dumps({"received": received, "payload": {"status": "firing", "alerts": alerts}})


def alert(name: str, status: str = "firing", **labels: str) -> dict[str, object]:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} summary"},
        "startsAt": "2026-12-01T10:00:00Z",
    }


def test_every_alert_of_every_notification_is_a_page_in_order() -> None:
    lines = [
        notification(alert("FailoverdFailoverHappened", node="fln2"), received=10.0),
        notification(
            alert("FailoverdDaemonDown", instance="10.77.0.11:9641"),
            alert("FailoverdDaemonDown", "resolved", instance="10.77.0.12:9641"),
            received=11.0,
        ),
    ]
    pages = parse_pages(lines)
    assert [(p.alertname, p.status, p.received) for p in pages] == [
        ("FailoverdFailoverHappened", "firing", 10.0),
        ("FailoverdDaemonDown", "firing", 11.0),
        ("FailoverdDaemonDown", "resolved", 11.0),
    ]
    assert pages[0].labels["node"] == "fln2"
    assert pages[0].annotations == {"summary": "FailoverdFailoverHappened summary"}
    assert pages[0].starts_at == "2026-12-01T10:00:00Z"


def test_a_torn_or_foreign_line_is_skipped_not_fatal() -> None:
    good = notification(alert("FailoverdStrayVip", node="fln1"))
    lines = [good[: len(good) // 2], "[1, 2]", json.dumps({"received": 1.0}), good]
    assert [p.alertname for p in parse_pages(lines)] == ["FailoverdStrayVip"]


def test_wait_page_filters_by_name_status_time_and_labels(tmp_path: Path) -> None:
    mon = Monitoring(tmp_path, namespace=None, address="127.0.0.1")
    mon.dir.mkdir(parents=True)
    mon.pages_path.write_text(
        "\n".join(
            [
                notification(alert("FailoverdFailoverHappened", node="fln1"), received=5.0),
                notification(alert("FailoverdFailoverHappened", node="fln2"), received=20.0),
            ]
        )
        + "\n"
    )
    assert mon.wait_page("FailoverdFailoverHappened", 0.1, node="fln1").received == 5.0
    assert mon.wait_page("FailoverdFailoverHappened", 0.1, since=10.0).labels["node"] == "fln2"
    with pytest.raises(RuntimeError, match="no resolved FailoverdFailoverHappened"):
        mon.wait_page("FailoverdFailoverHappened", 0.1, status="resolved")
    with pytest.raises(ValueError, match="unknown monitoring action"):
        monitoring_command(mon, "restart")

"""The failover duration, end to end with real daemons and a real ZooKeeper: after SIGKILL of
the active, the new active's `failover_complete` line, its history record and `failoverctl
status` give one number, and it includes the session timeout waited out before the lease
expired (it once read 0.45 s for a 2.4 s outage)."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from lab.process import wait_for
from tests.integration.test_daemon import (  # noqa: F401  (cluster is a fixture)
    SESSION,
    bring_up,
    cluster,
    ctl,
    roles,
)

pytestmark = pytest.mark.integration


def test_a_crash_failover_counts_from_the_last_sign_of_life(
    cluster: dict[str, Any],  # noqa: F811
) -> None:
    active, passive, daemons = bring_up(cluster)
    zk, chroot = cluster["zk"], cluster["chroot"]
    time.sleep(1.5)  # a heartbeat or two of the active seen by the passive
    killed = time.monotonic()
    daemons[active].signal(signal.SIGKILL)
    assert wait_for(lambda: roles(zk, chroot)[passive] == "active", SESSION + 10)
    outage = time.monotonic() - killed  # an upper bound: polled after the VIP step
    done = [e for e in daemons[passive].events() if e.get("event") == "failover_complete"]
    assert len(done) == 1, daemons[passive].log.read_text()[-3000:]
    event = done[0]
    assert event["kind"] == "failover" and event["from_node"] == active
    # The session timeout is inside the duration, the promotion after the lease is not all.
    assert event["duration_s"] >= SESSION * 0.8, event
    assert event["duration_s"] <= outage + 1.5, (event, outage)  # publish_every is 1 s
    assert event["promotion_s"] < event["duration_s"] - SESSION * 0.5, event
    assert event["silence_s"] + event["promotion_s"] == pytest.approx(
        event["duration_s"], abs=0.002
    )
    # The history record and status say the same.
    history = ctl(cluster["configs"][passive], "history", "--json")
    records = [json.loads(line) for line in history.stdout.splitlines()]
    failover = next(r for r in reversed(records) if r.get("kind") == "failover")
    assert failover["phases"]["total"] == pytest.approx(event["duration_s"], abs=0.001)
    table = ctl(cluster["configs"][passive], "status").stdout
    shown = f"in {event['duration_s']:.2f} s ({event['promotion_s']:.2f} s after the lease"
    assert shown in table, table

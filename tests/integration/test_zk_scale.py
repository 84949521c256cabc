"""bench/zk_scale.py end to end on its own loopback ensemble: two clusters, short windows, one
failover and one ZooKeeper leader kill; the report has numbers, and no cluster fails over
when the leader dies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FAILOVER_BOUND_S = 10.0  # generous: session timeout 2 s, then fence and promote


def test_two_clusters_report_rates_resources_a_failover_and_no_failover_on_leader_kill() -> None:
    argv = [
        sys.executable, str(REPO / "bench" / "zk_scale.py"), "--clusters", "2",
        "--seconds", "4", "--failover-runs", "1", "--leader-kills", "1", "--observe", "6",
        "--json",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=100, check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["clusters"] == 2 and report["daemons"] == 4
    assert report["clusters_without_active"] == []
    assert report["zk_requests_per_s"] > 0 and report["zk_requests_per_s_per_cluster"] > 0
    assert report["zk_writes_per_s"] > 0  # the daemons publish their records
    assert report["zk_connections"] >= 4
    assert report["daemon_cpu_percent"]["max"] > 0
    assert report["daemon_rss_mb"]["median"] > 10
    assert report["zookeeper_cpu_percent"] > 0
    [failover] = report["failover_s"]
    assert failover is not None and 0 < failover < FAILOVER_BOUND_S, report
    [kill] = report["leader_kills"]
    assert kill["election_s"] is not None
    assert kill["failovers"] == 0 and kill["epochs_advanced"] == 0, (report, done.stderr)
    assert report["leader_kill_failovers"] == 0

"""bench/zk_scale.py's arithmetic: mntr counters into rates, /proc samples into CPU and memory,
observed lease holders into failovers, and the report a person reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.zk_scale import ClusterState, make_cluster, member_addresses
from bench.zk_scale_report import (
    Window,
    build_report,
    count_failovers,
    counter_rate,
    cpu_percent,
    cpu_ticks,
    epochs_advanced,
    gauge_max,
    gauge_sum,
    host_ticks,
    leases_lost,
    parse_mntr,
    render_table,
    spread,
    status_number,
    task_count,
)
from failoverd.config import load_config

MNTR = (
    "zk_version\t3.8.0-abc, built on 2024-12-29 17:54 UTC\n"
    "zk_server_state\tleader\n"
    "zk_packets_received\t1200\n"
    "zk_avg_latency\t0.25\n"
    "zk_num_alive_connections\t35\n"
    "not a counter line\n"
)


def test_mntr_lines_become_a_dict_of_strings() -> None:
    parsed = parse_mntr(MNTR)
    assert parsed["zk_server_state"] == "leader"
    assert parsed["zk_packets_received"] == "1200"
    assert parsed["zk_version"].startswith("3.8.0")
    assert "not a counter line" not in parsed and len(parsed) == 5
    assert parse_mntr("") == {}


def test_counter_rate_sums_the_servers_and_skips_one_that_restarted_or_went_silent() -> None:
    key = "zk_packets_received"
    before = {"zk1": {key: "100"}, "zk2": {key: "1000"}, "zk3": {key: "50"}}
    after = {"zk1": {key: "300"}, "zk2": {key: "1400"}, "zk3": {key: "5"}}  # zk3 restarted
    assert counter_rate(before, after, key, 20.0) == pytest.approx((200 + 400) / 20)
    assert counter_rate(before, {"zk1": {}, "zk2": {}, "zk3": {}}, key, 20.0) is None
    assert counter_rate(before, after, "zk_no_such_counter", 20.0) is None


def test_gauges_are_summed_per_server_or_taken_from_the_largest_copy() -> None:
    mntr = {"zk1": {"g": "30"}, "zk2": {"g": "40"}, "zk3": {}}
    assert gauge_sum(mntr, "g") == 70
    assert gauge_max(mntr, "g") == 40
    assert gauge_sum(mntr, "missing") is None and gauge_max({}, "g") is None


def test_cpu_ticks_count_the_process_and_its_reaped_children() -> None:
    # The command name may hold spaces and parentheses: fields are counted after the last ')'.
    fields = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "100", "20", "7", "3"]
    stat = "4242 (failoverd (x) run) " + " ".join(fields) + " 20 0 8 0 12345"
    assert cpu_ticks(stat) == 100 + 20 + 7 + 3


def test_rss_and_threads_are_read_from_status_and_are_none_without_them() -> None:
    status = "Name:\tpython\nVmRSS:\t   51234 kB\nVmRSSx:\t1 kB\nThreads:\t9\n"
    assert status_number(status, "VmRSS") == 51234
    assert status_number(status, "Threads") == 9
    assert status_number("Name:\tzombie\nState:\tZ (zombie)\n", "VmRSS") is None


def test_task_count_is_the_total_after_the_slash_in_loadavg() -> None:
    assert task_count("0.52 0.58 0.59 3/1234 56789\n") == 1234


def test_host_ticks_leave_idle_and_iowait_out_of_busy() -> None:
    stat = "cpu  100 5 50 1000 20 1 2 0 0 0\ncpu0 50 2 25 500 10 0 1 0 0 0\n"
    busy, total = host_ticks(stat)
    assert total == 1178 and busy == 1178 - 1000 - 20


def test_cpu_percent_is_of_one_core() -> None:
    assert cpu_percent(1000, 1200, 20.0, 100) == pytest.approx(10.0)  # 2 s of CPU in 20 s
    assert cpu_percent(0, 4000, 20.0, 100) == pytest.approx(200.0)  # both cores
    assert cpu_percent(5, 5, 0.0, 100) == 0.0


def test_spread_gives_median_max_total_or_nothing() -> None:
    assert spread([1.0, 3.0, 2.0, 10.0]) == {"median": 2.5, "max": 10.0, "total": 16.0}
    assert spread([]) == {"median": None, "max": None, "total": None}


def test_failovers_are_changes_of_holder_not_leases_that_come_back() -> None:
    assert count_failovers(["n1", "n1", "n1"]) == 0
    assert count_failovers(["n1", None, "n2"]) == 1
    assert count_failovers(["n1", None, "n1"]) == 0  # lost and taken back by the same node
    assert count_failovers(["n1", "n2", None, "n1"]) == 2
    assert count_failovers([None, None, "n2"]) == 0  # nothing held before: no change seen
    assert count_failovers([]) == 0
    assert leases_lost(["n1", None, "n1", None, None, "n2"]) == 2
    assert leases_lost([None, "n1"]) == 0


def test_epochs_advanced_counts_takeovers_the_watch_missed() -> None:
    assert epochs_advanced([3, 3, 3]) == 0
    assert epochs_advanced([3, None, 5]) == 2  # two acquisitions, one of them never seen
    assert epochs_advanced([None, None]) == 0


def test_a_cluster_is_redundant_with_an_active_lease_holder_and_a_passive_peer() -> None:
    assert ClusterState("n1", 1, {"n1": "active", "n2": "passive"}).redundant
    assert not ClusterState("n1", 1, {"n1": "active", "n2": None}).redundant
    assert not ClusterState("n2", 2, {"n1": "active", "n2": "promoting"}).redundant
    assert not ClusterState(None, None, {"n1": "passive", "n2": "passive"}).redundant


def test_every_cluster_has_addresses_of_its_own() -> None:
    seen = [a for i in range(600) for a in member_addresses(i).values()]
    assert len(seen) == len(set(seen))
    assert member_addresses(7) == {"n1": "127.1.7.1", "n2": "127.1.7.2"}
    assert member_addresses(256)["n1"] == "127.2.0.1"


def test_generated_configs_are_valid_unmanaged_nodes_with_a_command_check(tmp_path: Path) -> None:
    cluster = make_cluster(7, tmp_path, "127.0.0.1:2181,127.0.0.1:2182", 2.0)
    cfg = load_config(cluster.configs["n2"])
    assert cfg.node == "n2" and cfg.cluster.name == "scale-007"
    assert cfg.cluster.chroot == "/failoverd/scale-007"
    assert cfg.cluster.zookeeper_hosts == ("127.0.0.1:2181", "127.0.0.1:2182")
    assert [m.address for m in cfg.members] == ["127.1.7.1", "127.1.7.2"]
    assert cfg.postgres is None and cfg.vip is None and not cfg.metrics.enabled
    assert not cfg.failsafe.enabled
    assert [(c.name, c.type, c.command) for c in cfg.checks] == [("alive", "command", ("true",))]
    assert cfg.fencing.power_command == ("true",)
    assert cfg.timings.session_timeout == 2.0 and cfg.timings.self_fence_after == 1.0
    assert cfg.timings.min_failover_interval == 5.0 and cfg.timings.start_timeout == 5.0


def window() -> Window:
    return Window(
        seconds=20.02,
        rates={"requests": 1500.0, "reads": 1300.0, "writes": 50.0},
        gauges={"connections": 104.0, "znodes": 900.0, "watches": 700.0},
        daemon_cpu=[2.0, 3.0, 4.0, 3.0],
        daemon_rss_kb=[60 * 1024.0, 62 * 1024.0, 61 * 1024.0, 61 * 1024.0],
        daemon_threads=[20.0, 22.0, 20.0, 21.0],
        zookeeper_cpu=30.0,
        zookeeper_rss_kb=600 * 1024.0,
        host_cpu=150.0,
    )


def test_report_and_table_carry_every_number() -> None:
    kills = [
        {"server": "zk3", "election_s": 0.45, "failovers": 0, "leases_lost": 0,
         "epochs_advanced": 0, "daemon_threads_max": 22},
        {"server": "zk1", "election_s": 0.5, "failovers": 1, "leases_lost": 1,
         "epochs_advanced": 1, "daemon_threads_max": 140},
    ]  # fmt: skip
    report = build_report(
        ensemble="loopback",
        clusters=2,
        session=2.0,
        failsafe=True,
        startup_s=12.34,
        without_active=["scale-001"],
        window=window(),
        failovers_s=[2.4, None, 2.6],
        kills=kills,
    )
    assert report["daemons"] == 4 and report["window_s"] == 20.0 and report["failsafe"]
    assert report["zk_requests_per_s"] == 1500.0 and report["zk_requests_per_s_per_cluster"] == 750
    assert report["daemon_cpu_percent"] == {"median": 3.0, "max": 4.0, "total": 12.0}
    assert report["daemon_rss_mb"] == {"median": 61.0, "max": 62.0, "total": 244.0}
    assert report["daemon_threads"] == {"median": 20.5, "max": 22.0, "total": 83.0}
    assert report["zookeeper_rss_mb"] == 600.0
    assert report["failover_s"] == [2.4, None, 2.6] and report["failover_median_s"] == 2.5
    assert report["leader_kill_failovers"] == 1
    text = render_table(report)
    lines = text.splitlines()
    assert lines[0] == (
        "zk_scale: 2 clusters (4 daemons) on the loopback ensemble, session timeout 2 s, "
        "failsafe on, window 20 s"
    )
    rows = {line[:27].strip(): line[27:] for line in lines[1:]}
    assert rows["start-up"] == "12.3 s, 1 without an active node: ['scale-001']"
    assert rows["ZooKeeper requests/s"] == (
        "total 1500.0, per cluster 750.00 (reads 1300.0, writes 50.0)"
    )
    assert rows["daemon CPU % of a core"] == "median 3.0, max 4.0, total 12.0"
    assert rows["failover of cluster 0 s"] == "2.40 - 2.60 (median 2.50)"
    assert rows["daemon threads"] == "median 20, max 22, total 83"
    assert rows["leader zk1 killed"] == (
        "election 0.50 s, failovers 1, leases lost 1, epochs +1, threads of a daemon at most 140"
    )
    assert rows["failovers on leader kills"] == "1 (target 0)"

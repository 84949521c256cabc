"""Tests for failoverd.reload: which keys `systemctl reload` applies live and which it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from failoverd.config import Config, parse_config
from failoverd.reload import LIVE, RULES, config_keys, plan_reload

# Keys other branches of issue 11 add to Config, classified ahead of their merge.
ANNOUNCED = {"postgres.config_file"}

BASE = """
node = "n1"
[cluster]
name = "t"
zookeeper_hosts = ["127.0.0.1:2181"]
[[members]]
name = "n1"
address = "127.0.0.11"
[[members]]
name = "n2"
address = "127.0.0.12"
[vip]
address = "10.9.0.100/24"
interface = "eth0"
[postgres]
data_dir = "/var/lib/postgresql/15/main"
[checks.db]
type = "postgres"
[checks.app]
type = "http"
url = "http://127.0.0.1:8080/health"
interval = 0.5
[failover]
max_lag_on_failover = "16MB"
[metrics]
port = 9641
"""


def load(text: str = BASE) -> Config:
    return parse_config(text, Path("/etc/failoverd/failoverd.toml"))


def with_line(table: str, line: str, text: str = BASE) -> str:
    """BASE with ``line`` set in ``[table]`` (replacing that key's line if there is one)."""
    key = line.split("=", maxsplit=1)[0].strip()
    lines = text.split("\n")
    header = f"[{table}]"
    start = lines.index(header) + 1 if table and header in lines else 0
    if table and header not in lines:
        return text + f"\n{header}\n{line}\n"
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start, end):
        if lines[i].split("=")[0].strip() == key:
            lines[i] = line
            return "\n".join(lines)
    lines.insert(start, line)
    return "\n".join(lines)


def test_every_config_key_is_classified() -> None:
    """A new Config field fails here until RULES says whether a reload may change it."""
    unclassified = [k for k in config_keys() if k not in RULES]
    assert unclassified == [], f"classify these in failoverd/reload.py RULES: {unclassified}"


def test_every_rule_names_a_config_key() -> None:
    stale = set(RULES) - set(config_keys()) - ANNOUNCED
    assert stale == set()


def test_no_change_is_an_empty_plan() -> None:
    plan = plan_reload(load(), load())
    assert plan.ok and not plan.changed


@pytest.mark.parametrize(
    ("table", "line", "key"),
    [
        ("checks.app", "interval = 2.0", "checks"),
        ("checks.app", "fall = 5", "checks"),
        ("failover", "nofailover = true", "failover.nofailover"),
        ("failover", 'max_lag_on_failover = "1MB"', "failover.max_lag_on_failover"),
        ("failover", "max_replication_silence = 30.0", "failover.max_replication_silence"),
        ("replication", "sync_drop_after = 2.0", "replication.sync_drop_after"),
        ("fencing", "connect_timeout = 0.5", "fencing.connect_timeout"),
        ("fencing", 'power_command = ["/bin/true"]', "fencing.power_command"),
        ("hooks", 'on_role_change = ["/usr/local/bin/hook"]', "hooks.on_role_change"),
        ("timings", "min_failover_interval = 60.0", "timings.min_failover_interval"),
        ("timings", "action_timeout = 20.0", "timings.action_timeout"),
        ("postgres", 'rejoin = "manual"', "postgres.rejoin"),
        ("vip", "arp_count = 5", "vip.arp_count"),
    ],
)
def test_safe_keys_are_applied(table: str, line: str, key: str) -> None:
    plan = plan_reload(load(), load(with_line(table, line)))
    assert plan.ok, plan.refused
    assert plan.applied == (key,)
    assert RULES[key] is LIVE


@pytest.mark.parametrize(
    ("table", "line", "key"),
    [
        ("", 'node = "n2"', "node"),
        ("cluster", 'name = "prod"', "cluster.name"),
        ("cluster", 'zookeeper_hosts = ["127.0.0.2:2181"]', "cluster.zookeeper_hosts"),
        ("cluster", 'chroot = "/elsewhere"', "cluster.chroot"),
        ("vip", 'address = "10.9.0.101/24"', "vip.address"),
        ("vip", 'interface = "eth1"', "vip.interface"),
        ("postgres", "port = 5433", "postgres.port"),
        ("postgres", 'data_dir = "/srv/pg"', "postgres.data_dir"),
        ("timings", "session_timeout = 4.0", "timings.session_timeout"),
        ("timings", "loop_interval = 0.2", "timings.loop_interval"),
        ("timings", "publish_every = 0.5", "timings.publish_every"),
        ("metrics", "port = 9700", "metrics.port"),
        ("replication", 'mode = "async"', "replication.mode"),
        ("failsafe", "port = 9700", "failsafe.port"),
    ],
)
def test_unsafe_keys_are_refused_with_a_reason(table: str, line: str, key: str) -> None:
    plan = plan_reload(load(), load(with_line(table, line)))
    assert not plan.ok
    refused = {r.key: r.reason for r in plan.refused}
    assert key in refused and refused[key] == RULES[key]
    assert plan.applied == ()


def test_derived_keys_are_refused_with_what_they_derive_from() -> None:
    # self_fence_after and roundtrip_timeout derive from session_timeout, the chroot from the
    # cluster's name: each changed key is named.
    plan = plan_reload(load(), load(with_line("timings", "session_timeout = 4.0")))
    assert [r.key for r in plan.refused] == [
        "timings.session_timeout",
        "timings.self_fence_after",
        "timings.roundtrip_timeout",
    ]
    plan = plan_reload(load(), load(with_line("cluster", 'name = "prod"')))
    assert [r.key for r in plan.refused] == ["cluster.name", "cluster.chroot"]


def test_one_refused_key_refuses_the_whole_file_and_lists_the_safe_ones_too() -> None:
    text = with_line("", 'node = "n2"', with_line("checks.app", "interval = 2.0"))
    plan = plan_reload(load(), load(text))
    assert not plan.ok
    assert plan.applied == ("checks",)
    assert [str(r) for r in plan.refused] == [f"node: {RULES['node']}"]


def test_members_and_an_optional_table_are_compared_whole() -> None:
    members = BASE.replace('address = "127.0.0.12"', 'address = "127.0.0.13"')
    assert [r.key for r in plan_reload(load(), load(members)).refused] == ["members"]
    without_vip = BASE.replace('[vip]\naddress = "10.9.0.100/24"\ninterface = "eth0"\n', "")
    assert [r.key for r in plan_reload(load(), load(without_vip)).refused] == ["vip"]


def test_removing_the_database_check_is_refused() -> None:
    text = BASE.replace('[checks.db]\ntype = "postgres"\n', "")
    plan = plan_reload(load(), load(text))
    assert not plan.ok
    assert [r.key for r in plan.refused] == ["checks"]
    assert "postgres" in plan.refused[0].reason


def test_adding_a_check_is_applied() -> None:
    text = BASE + '\n[checks.extra]\ntype = "command"\ncommand = ["/bin/true"]\n'
    plan = plan_reload(load(), load(text))
    assert plan.ok and plan.applied == ("checks",)


def test_the_unit_reloads_by_sighup_to_the_main_process() -> None:
    """`systemctl reload failoverd` must reach the daemon (SIGHUP), not restart it."""
    unit = Path(__file__).resolve().parents[2] / "systemd" / "failoverd.service"
    lines = [line.strip() for line in unit.read_text().splitlines()]
    assert [line for line in lines if line.startswith("ExecReload=")] == [
        "ExecReload=/bin/kill -HUP $MAINPID"
    ]

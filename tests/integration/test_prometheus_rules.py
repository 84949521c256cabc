"""The alert rules and the Grafana dashboard against the real promtool and a real registry.

``promtool`` comes with Debian's ``prometheus`` package (scripts/setup installs it). The rule
files are checked, their unit tests (alerts.test.yml) run, and every metric name the rules and the
dashboard use must be one that ``failoverd.metrics.Metrics`` exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failoverd.core import Settings
from failoverd.metrics import Metrics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "config" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "config" / "prometheus" / "alerts.test.yml"
README = REPO / "README.md"
RUNBOOK_BASE = "https://github.com/failoverd/failoverd/blob/main/README.md#"
# The fencing check's metrics come from the "checks" part of issue 11 (the daemon's periodic
# fencing check): until the registry exports them, the rule on them is the only user allowed.
FENCING_CHECK_METRICS = {
    "failoverd_fencing_check_ok",
    "failoverd_fencing_check_timestamp_seconds",
}
DASHBOARD = REPO / "config" / "grafana" / "failoverd.json"
METRIC = re.compile(r"\bfailoverd_\w+")
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$cluster": ".*",
    "$node": ".*",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's `prometheus` package "
            "(apt-get install -y --no-install-recommends prometheus; scripts/setup does)"
        )
    return path


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def exported_names() -> set[str]:
    """Every sample name a real Metrics registry can export, children created or not."""
    m = Metrics(Settings(node="n1", peer="n2", self_fence_after=1.0), "prod")
    names: set[str] = set()
    for family in m.registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}{s}" for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(family.name)
    return names


def rules() -> dict[str, str]:
    """Alert name -> the text of its rule, split loosely on ``- alert:`` (no YAML library)."""
    parts = re.split(r"^\s*- alert: (\w+)\s*$", RULES.read_text(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def expr_of(rule: str) -> str:
    found = re.search(r"^\s+expr: (.*?)^\s+(?:for|labels):", rule, re.MULTILINE | re.DOTALL)
    assert found is not None, rule
    return found.group(1)


def walk(node: object) -> Iterator[tuple[str, object]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def dashboard_queries() -> list[str]:
    """PromQL in panel targets, annotations and template variables."""
    found: list[str] = []
    for key, value in walk(dashboard()):
        if key in ("expr", "definition") and isinstance(value, str):
            found.append(value)
        elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
            found.append(value["query"])
    return found


# --------------------------------------------------------------------------------------------
# promtool
# --------------------------------------------------------------------------------------------


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    shutil.copy(RULES, tmp_path / "alerts.yml")
    done = run_promtool("check", "rules", "alerts.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout
    assert len(rules()) == 14


def test_promtool_unit_tests_of_every_alert_pass(tmp_path: Path) -> None:
    # rule_files paths are relative to the test file: copy both side by side.
    shutil.copy(RULES, tmp_path / "alerts.yml")
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yml")
    done = run_promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_catches_a_broken_expectation(tmp_path: Path) -> None:
    """The rule tests are not vacuous: firing the split-brain alert at once breaks them."""
    text = RULES.read_text()
    broken = re.sub(
        r"(alert: FailoverdTwoActiveNodes\n\s+expr: .*\n\s+)for: \w+", r"\1for: 0s", text
    )
    assert broken != text
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yml")
    done = run_promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FailoverdTwoActiveNodes" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("change", "old", "new"),
    [
        ("fires at once", "for: 1m\n", "for: 0s\n"),
        ("fires in async mode too", 'mode=~"sync|strict"', 'mode=~"async|sync|strict"'),
        ("fires on the passive too", "and on (cluster, node) (failoverd_is_active == 1)\n", ""),
    ],
)
def test_promtool_catches_a_broken_sync_standby_alert(
    tmp_path: Path, change: str, old: str, new: str
) -> None:
    """The rule tests pin what the sync-standby alert must not do: fire within the first
    minute, in async mode, or on a node that is not the active."""
    rule = rules()["FailoverdNoSyncStandby"]
    assert rule.count(old) == 1, change
    text = RULES.read_text()
    (tmp_path / "alerts.yml").write_text(text.replace(rule, rule.replace(old, new)))
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yml")
    done = run_promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert done.returncode == 1, change + "\n" + done.stdout + done.stderr
    assert "FailoverdNoSyncStandby" in done.stdout + done.stderr


def test_the_dashboard_promql_parses(tmp_path: Path) -> None:
    """Each dashboard query, Grafana's variables filled in, as a recording rule for promtool."""
    exprs = []
    for query in dashboard_queries():
        if query.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        q = query
        for var, val in GRAFANA_VARIABLES.items():
            q = q.replace(var, val)
        assert "$" not in q, query
        exprs.append(q)
    assert len(exprs) >= 15
    doc = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(json.dumps(doc, indent=1))  # JSON is YAML
    done = run_promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------------------------
# Names: rules, tests and dashboard agree with the code
# --------------------------------------------------------------------------------------------


def test_every_alert_is_exercised_by_the_rule_tests() -> None:
    alerts = set(rules())
    assert alerts == {
        "FailoverdFailoverHappened",
        "FailoverdNoActiveNode",
        "FailoverdTwoActiveNodes",
        "FailoverdPassiveNotEligible",
        "FailoverdNoSyncStandby",
        "FailoverdZooKeeperUnreachable",
        "FailoverdPausedTooLong",
        "FailoverdDaemonDown",
        "FailoverdFenceFailed",
        "FailoverdStrayVip",
        "FailoverdLagNearLimit",
        "FailoverdCheckFailingOnActive",
        "FailoverdDaemonRestarted",
        "FailoverdFencingCheckFailing",
    }
    text = RULE_TESTS.read_text()
    tested = set(re.findall(r"^\s+alertname: (\w+)\s*$", text, re.MULTILINE))
    fired = set(
        re.findall(r"alertname: (\w+)\s*\n\s+exp_alerts:\s*\n\s+- exp_labels:", text, re.MULTILINE)
    )
    assert alerts - tested == set(), "alerts not in alerts.test.yml"
    assert alerts - fired == set(), "alerts never shown firing in alerts.test.yml"
    assert tested - alerts == set(), "alerts.test.yml tests alerts that do not exist"


def test_every_alert_has_a_severity_and_says_what_to_do() -> None:
    for name, rule in rules().items():
        severity = re.search(r"^\s+severity: (.+?)\s*$", rule, re.MULTILINE)
        assert severity is not None, name
        # A fixed level, or a template choosing between the two (FailoverdNoSyncStandby: strict
        # mode stops writes, sync mode only loses the guarantee).
        levels = re.findall(r"}}(\w+){{", severity.group(1)) or [severity.group(1)]
        assert levels and set(levels) <= {"warning", "critical"}, name
        assert re.search(r"^\s+summary: \S", rule, re.MULTILINE), name
        assert re.search(r"^\s+description: >-\n\s+\S", rule, re.MULTILINE), name
        assert re.search(r"^\s+runbook_url: \S", rule, re.MULTILINE), name


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation but ``-`` and ``_``
    dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def readme_anchors() -> list[str]:
    anchors = []
    in_code = False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        found = None if in_code else re.match(r"^#{1,6} (.+)$", line)
        if found:
            anchors.append(github_anchor(found.group(1)))
    return anchors


def test_github_anchor_follows_githubs_rules() -> None:
    assert github_anchor("Read `failoverctl status`") == "read-failoverctl-status"
    assert github_anchor("The failsafe: serving through a ZooKeeper outage") == (
        "the-failsafe-serving-through-a-zookeeper-outage"
    )
    assert github_anchor("FailoverdStrayVip") == "failoverdstrayvip"


def test_every_runbook_url_points_to_its_own_section_of_the_readme_runbook() -> None:
    anchors = readme_anchors()
    text = README.read_text()
    runbook = text[text.index("\n## Runbook\n") :]
    sections = re.findall(r"^### (\w+)$", runbook, re.MULTILINE)
    seen: dict[str, str] = {}
    for name, rule in rules().items():
        found = re.search(r"^\s+runbook_url: (\S+)\s*$", rule, re.MULTILINE)
        assert found is not None, name
        url = found.group(1)
        assert url.startswith(RUNBOOK_BASE), (name, url)
        anchor = url.removeprefix(RUNBOOK_BASE)
        assert anchors.count(anchor) == 1, f"{name}: #{anchor} is not one heading of README.md"
        assert anchor == github_anchor(name), (name, anchor)  # the section named after the alert
        assert anchor not in seen, f"{name} and {seen.get(anchor)} share #{anchor}"
        seen[anchor] = name
    # ... and the Runbook has a section for every alert, and none for an alert that is gone.
    assert sorted(sections) == sorted(rules())
    for section in sections:
        body = runbook.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**Means.**", "**Check.**", "**Do.**"):
            assert part in body, (section, part)


def test_the_rules_use_only_exported_metrics() -> None:
    names = exported_names()
    used = {name for rule in rules().values() for name in METRIC.findall(expr_of(rule))}
    assert {
        "failoverd_failovers_total",
        "failoverd_is_active",
        "failoverd_eligible",
        "failoverd_role",
        "failoverd_zookeeper_connected",
        "failoverd_paused",
        "failoverd_replication_mode",
        "failoverd_sync_standby_named",
    } <= used
    # Until the registry exports the fencing check's metrics, only they may be missing.
    pending = FENCING_CHECK_METRICS if not FENCING_CHECK_METRICS & names else set()
    assert used - names <= pending
    # Metric names the annotations point operators to must exist too.
    assert set(METRIC.findall(RULES.read_text())) - names <= pending
    # The restart alert's series comes from the process collector on the daemon's registry.
    assert "process_start_time_seconds" in names
    assert "failoverd_max_lag_on_failover_bytes" in used


def test_the_dashboard_is_valid_and_uses_only_exported_metrics() -> None:
    doc = dashboard()
    assert doc["title"] == "failoverd"
    assert doc["schemaVersion"] >= 36
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = doc["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]
    titles = {p["title"] for p in panels}
    for wanted in (
        "Role per node",
        "Failovers, step-downs and fences",
        "Last failover duration",
        "Check latency",
        "Replication lag (bytes)",
        "Replication lag (seconds)",
        "ZooKeeper connection",
        "Paused",
    ):
        assert wanted in titles
    names = exported_names()
    used = {name for q in dashboard_queries() for name in METRIC.findall(q)}
    assert {
        "failoverd_role",
        "failoverd_failovers_total",
        "failoverd_failover_duration_seconds_bucket",
        "failoverd_check_latency_seconds_bucket",
        "failoverd_replication_lag_bytes",
        "failoverd_replication_lag_seconds",
        "failoverd_zookeeper_connected",
        "failoverd_paused",
    } <= used
    assert used - names == set()

"""Tests for failoverd.config: the example file, defaults, the effective TOML and every error.

Error tests assert on the whole message an operator reads: file, dotted key and the problem.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failoverd.config import (
    FENCE_DRY_RUN_COMMAND,
    CheckConfig,
    ClusterConfig,
    Config,
    ConfigError,
    FailoverPolicy,
    FailsafeConfig,
    FencingConfig,
    HooksConfig,
    Member,
    MetricsConfig,
    PostgresConfig,
    Problem,
    ReplicationConfig,
    Timings,
    VipConfig,
    effective_config_toml,
    host_node_name,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "failoverd.toml"
FILE = Path("/etc/failoverd/failoverd.toml")

NODE = 'node = "fln1"\n'
CLUSTER = '[cluster]\nname = "lab"\nzookeeper_hosts = ["10.77.0.5:2181"]\n'
MEMBERS = (
    '[[members]]\nname = "fln1"\naddress = "10.77.0.11"\n\n'
    '[[members]]\nname = "fln2"\naddress = "10.77.0.12"\n'
)
VIP = '[vip]\naddress = "10.77.0.100/24"\ninterface = "eth0"\n'
POSTGRES = "[postgres]\n"


def config_text(
    *extra: str,
    node: str = NODE,
    cluster: str = CLUSTER,
    members: str = MEMBERS,
    vip: str = VIP,
) -> str:
    """A minimal valid config, with sections replaced or added."""
    return "\n".join([node, cluster, members, vip, *extra])


def parse(text: str) -> Config:
    return parse_config(text, FILE)


def problems(text: str) -> list[str]:
    """Every problem reported for `text`, as the operator reads them."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def without_path(cfg: Config) -> Config:
    return dataclasses.replace(cfg, path=Path("-"))


# ---------------------------------------------------------------------------------------------
# The example file and defaults


TEMPLATE_FILLED = {
    "<CLUSTER-NAME>": "shop",
    "<ZOOKEEPER-HOST-1>": "192.0.2.5",
    "<ZOOKEEPER-HOST-2>": "192.0.2.6",
    "<ZOOKEEPER-HOST-3>": "192.0.2.7",
    "<NODE-1-NAME>": "db1",
    "<NODE-1-ADDRESS>": "192.0.2.11",
    "<NODE-2-NAME>": "db2",
    "<NODE-2-ADDRESS>": "192.0.2.12",
    "<SERVICE-IP>": "192.0.2.100",
    "<PREFIX-LENGTH>": "24",
    "<VIP-INTERFACE>": "ens3",
    "<APP-HEALTH-URL>": "http://127.0.0.1:8080/health",
    "<SQUID-HEALTH-URL>": "http://127.0.0.1:80/health",
    "<THIS-NODE-ADDRESS>": "192.0.2.11",
}


def test_template_is_refused_for_its_placeholders_only() -> None:
    """Each unfilled value is named with what goes there, and not again as an invalid value."""
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, hostname="db1")
    found = {p.key: p.message for p in info.value.problems}
    assert set(found) == {
        "cluster.name",
        "cluster.zookeeper_hosts[0]",
        "cluster.zookeeper_hosts[1]",
        "cluster.zookeeper_hosts[2]",
        "members[0].name",
        "members[0].address",
        "members[1].name",
        "members[1].address",
        "vip.address",
        "vip.interface",
        "checks.app.url",
        "checks.squid.url",
        "metrics.listen_address",
    }
    assert all(m.startswith("not filled in: <") for m in found.values()), found
    assert "<SERVICE-IP> is the service IP" in found["vip.address"]
    assert "<PREFIX-LENGTH> is the prefix length" in found["vip.address"]
    assert "this node's own address" in found["metrics.listen_address"]
    # Every placeholder of the template has its own hint.
    assert "a value of this site" not in " ".join(found.values())
    values = "".join(ln for ln in EXAMPLE.read_text().splitlines() if not ln.startswith("#"))
    assert set(re.findall(r"<[A-Z0-9-]+>", values)) == set(TEMPLATE_FILLED)


def test_template_filled_in_loads_with_debian_paths(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    for placeholder, value in TEMPLATE_FILLED.items():
        text = text.replace(placeholder, value)
    file = tmp_path / "failoverd.toml"
    file.write_text(text)
    cfg = load_config(file, hostname="db2")
    assert cfg.node == "db2"
    assert cfg.node_from_host
    assert cfg.peer == Member("db1", "192.0.2.11")
    assert cfg.cluster.zookeeper_hosts == ("192.0.2.5:2181", "192.0.2.6:2181", "192.0.2.7:2181")
    assert cfg.cluster.chroot == "/failoverd/shop"
    assert cfg.vip is not None
    assert cfg.vip.address == ipaddress.ip_interface("192.0.2.100/24")
    assert cfg.postgres is not None
    assert cfg.postgres.data_dir == Path("/var/lib/postgresql/15/main")
    assert cfg.postgres.config_file == Path("/etc/postgresql/15/main/postgresql.conf")
    assert cfg.failsafe.store_dir == Path("/run/failoverd")
    assert cfg.metrics.listen_address == "192.0.2.11"
    assert cfg.fencing.check_interval == 300.0
    assert {c.name for c in cfg.checks} == {"app", "squid", "postgres"}
    # A host named otherwise must say who it is.
    with pytest.raises(ConfigError) as info:
        load_config(file, hostname="web7")
    assert [str(p) for p in info.value.problems] == [
        f"{file}: node: not set, and this host's name 'web7' is not in members: db1, db2 "
        "(set node to this node's member name)"
    ]


def test_node_defaults_to_the_short_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "fln2.example.org")
    assert host_node_name() == "fln2"
    cfg = parse(config_text(node=""))
    assert (cfg.node, cfg.node_from_host, cfg.peer.name) == ("fln2", True, "fln1")
    assert not parse(config_text()).node_from_host
    assert 'node = "fln2"' in effective_config_toml(cfg)


def test_an_unknown_placeholder_is_refused_as_one() -> None:
    assert problems(config_text('[hooks]\non_role_change = ["<NOTIFY-SCRIPT>"]\n')) == [
        f"{FILE}: hooks.on_role_change[0]: not filled in: <NOTIFY-SCRIPT> is a value of this site"
    ]


def test_fencing_check_interval() -> None:
    assert parse(config_text()).fencing.check_interval == 300.0
    assert parse(config_text("[fencing]\ncheck_interval = 0\n")).fencing.check_interval == 0.0
    assert parse(config_text("[fencing]\ncheck_interval = 60\n")).fencing.check_interval == 60.0
    for bad, why in [
        ("5", "must be 0 (never) or at least 10 s, got 5"),
        ("-1", "must be 0 (never) or at least 10 s, got -1"),
        ("inf", "must be 0 (never) or at least 10 s, got inf"),
        ("true", "expected a number of seconds (0: never)"),
    ]:
        found = one_problem(config_text(f"[fencing]\ncheck_interval = {bad}\n"))
        assert found.startswith(f"{FILE}: fencing.check_interval: "), found
        assert why in found, found


def test_fencing_command_must_not_be_the_dry_run() -> None:
    found = one_problem(config_text(f'[fencing]\ncommand = "{FENCE_DRY_RUN_COMMAND}"\n'))
    assert found.startswith(f"{FILE}: fencing.command: 'failoverd fence-self --dry-run' asks")


def test_postgres_config_file_is_an_absolute_path() -> None:
    cfg = parse(
        config_text('[postgres]\nconfig_file = "/etc/postgresql/15/main/postgresql.conf"\n')
    )
    assert cfg.postgres is not None
    assert cfg.postgres.config_file == Path("/etc/postgresql/15/main/postgresql.conf")
    assert parse(config_text(POSTGRES)).postgres == PostgresConfig()
    assert one_problem(config_text('[postgres]\nconfig_file = "postgresql.conf"\n')) == (
        f"{FILE}: postgres.config_file: must be an absolute path, got 'postgresql.conf'"
    )


def test_example_file_documents_every_key_with_its_default() -> None:
    assignment = re.compile(r"#? ?([a-z_]+) = ")
    lines = EXAMPLE.read_text().splitlines()
    documented: set[str] = set()
    for i, line in enumerate(lines):
        match = assignment.match(line)
        if not match:
            continue
        documented.add(match.group(1))
        above: list[str] = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#") and not assignment.match(lines[j]):
            above.insert(0, lines[j])
            j -= 1
        comment = " ".join(above)
        assert "default" in comment or "required" in comment, f"line {i + 1}: {line}"
    sections = {"cluster", "members", "vip", "fencing", "timings", "failover", "postgres"}
    sections |= {"checks", "metrics", "hooks", "replication", "failsafe"}
    every_key = {
        f.name
        for cls in (
            Config,
            ClusterConfig,
            Member,
            VipConfig,
            FencingConfig,
            Timings,
            FailoverPolicy,
            PostgresConfig,
            ReplicationConfig,
            FailsafeConfig,
            CheckConfig,
            MetricsConfig,
            HooksConfig,
        )
        for f in dataclasses.fields(cls)
    }
    # Not keys: the file's own path, the secret read from credentials_file, the check's table
    # name, whether node came from the host name.
    not_keys = {"path", "credentials", "name", "node_from_host"}
    assert every_key - documented - not_keys == sections


def test_load_config_accepts_a_string_path(tmp_path: Path) -> None:
    file = tmp_path / "failoverd.toml"
    file.write_text(config_text())
    assert load_config(str(file)).path == file


def test_minimal_config_gets_every_default() -> None:
    cfg = parse(config_text())
    assert cfg.path == FILE
    assert cfg.cluster.chroot == "/failoverd/lab"
    assert cfg.cluster.credentials_file is None
    assert cfg.cluster.credentials is None
    assert cfg.members[0] == Member("fln1", "10.77.0.11", ssh_port=22, db_port=5432)
    assert cfg.vip.arp_count == 3
    assert cfg.fencing == FencingConfig(
        ssh_user="root",
        identity_file=Path("/etc/failoverd/id_ed25519"),
        known_hosts=Path("/etc/failoverd/known_hosts"),
        connect_timeout=0.3,
        command_timeout=5.0,
        command="failoverd fence-self",
    )
    assert cfg.timings == Timings(
        session_timeout=2.0,
        self_fence_after=1.0,
        loop_interval=0.1,
        roundtrip_timeout=0.25,
        publish_every=1.0,
        min_failover_interval=30.0,
        action_timeout=10.0,
        fence_retry_after=5.0,
        start_timeout=5.0,
    )
    assert cfg.failover == FailoverPolicy(16 * 1024 * 1024, 10.0, False)
    assert cfg.postgres is None
    assert cfg.checks == ()
    assert cfg.metrics == MetricsConfig(True, "127.0.0.1", 9641)
    assert cfg.hooks == HooksConfig((), 10.0)


def test_empty_postgres_section_gets_defaults() -> None:
    cfg = parse(config_text(POSTGRES))
    assert cfg.postgres == PostgresConfig(
        host="127.0.0.1",
        port=5432,
        user="postgres",
        dbname="postgres",
        password_file=None,
        data_dir=None,
        bin_dir=Path("/usr/lib/postgresql/15/bin"),
        service_user="postgres",
    )


def test_derived_timings_follow_session_timeout() -> None:
    cfg = parse(config_text("[timings]\nsession_timeout = 4\n"))
    assert cfg.timings.session_timeout == 4.0
    assert isinstance(cfg.timings.session_timeout, float)
    assert cfg.timings.self_fence_after == 2.0
    assert cfg.timings.roundtrip_timeout == 0.5


def test_roundtrip_timeout_derives_from_an_explicit_self_fence_after() -> None:
    cfg = parse(config_text("[timings]\nself_fence_after = 0.8\n"))
    assert cfg.timings.roundtrip_timeout == pytest.approx(0.2)


def test_self_member_and_peer_for_the_second_node() -> None:
    cfg = parse(config_text(node='node = "fln2"'))
    assert cfg.self_member.name == "fln2"
    assert cfg.peer == Member("fln1", "10.77.0.11")


def test_ipv6_addresses_are_accepted_and_canonical() -> None:
    members = (
        '[[members]]\nname = "a"\naddress = "fd00:0::11"\n\n'
        '[[members]]\nname = "b"\naddress = "fd00::12"\n'
    )
    cfg = parse(
        config_text(
            node='node = "a"',
            members=members,
            vip='[vip]\naddress = "fd00::100/64"\ninterface = "eth0"\n',
            cluster='[cluster]\nname = "v6"\nzookeeper_hosts = ["[fd00::5]:2181"]\n',
        )
    )
    assert cfg.members[0].address == "fd00::11"
    assert cfg.vip.address == ipaddress.IPv6Interface("fd00::100/64")


# ---------------------------------------------------------------------------------------------
# Effective configuration


FULL = config_text(
    """
[fencing]
ssh_user = "failoverd"
connect_timeout = 0.5

[timings]
session_timeout = 3
loop_interval = 0.05
publish_every = 2

[failover]
max_lag_on_failover = "512kB"
nofailover = true

[postgres]
port = 5433
password_file = "/etc/failoverd/pgpass"
data_dir = "/var/lib/failoverd/pg"

[checks.app]
type = "http"
url = "http://127.0.0.1:8080/health"
expect_status = 204
slow_after = 0.4

[checks.squid]
type = "squid"
url = "http://127.0.0.1:80/health"
cache_manager_url = "http://127.0.0.1:80/squid-internal-mgr/info"

[checks.db]
type = "postgres"
rise = 3
fall = 1

[checks."disk.space"]
type = "command"
command = ["/usr/lib/nagios/plugins/check_disk", "-w", "10%", "it's \\"quoted\\"\\ttab"]
interval = 5
timeout = 3

[metrics]
enabled = false
listen_address = "::"
port = 9700

[hooks]
on_role_change = ["/usr/local/bin/notify", "--role"]
timeout = 3.5
"""
)


@pytest.mark.parametrize("source", ["example", "minimal", "full"])
def test_effective_config_round_trips(source: str, tmp_path: Path) -> None:
    if source == "example":
        filled = tmp_path / "filled.toml"
        text = EXAMPLE.read_text()
        for placeholder, value in TEMPLATE_FILLED.items():
            text = text.replace(placeholder, value)
        filled.write_text(text)
        original = load_config(filled, hostname="db1")
    else:
        original = parse(config_text() if source == "minimal" else FULL)
    effective = tmp_path / "effective.toml"
    effective.write_text(effective_config_toml(original))
    reloaded = load_config(effective)
    assert reloaded.path == effective
    assert without_path(reloaded) == without_path(original)


def test_effective_config_fills_in_defaults() -> None:
    text = effective_config_toml(parse(config_text()))
    assert text.startswith(f"# Effective failoverd configuration from {FILE}")
    assert 'chroot = "/failoverd/lab"' in text
    assert "self_fence_after = 1.0" in text
    assert "roundtrip_timeout = 0.25" in text
    assert "max_lag_on_failover = 16777216" in text
    assert 'identity_file = "/etc/failoverd/id_ed25519"' in text
    assert "[postgres]" not in text  # absent section stays absent
    assert "credentials_file" not in text  # None is written as an absent key


def test_effective_config_writes_only_the_keys_of_each_check_type() -> None:
    text = effective_config_toml(parse(FULL))
    db_table = text.split("[checks.db]")[1].split("\n\n")[0]
    assert "expect_status" not in db_table
    assert "url" not in db_table
    assert '[checks."disk.space"]' in text


@settings(max_examples=60, deadline=None)
@given(argv=st.lists(st.text(), min_size=1, max_size=4).filter(lambda a: a[0] != ""))
def test_effective_config_round_trips_any_string(argv: list[str]) -> None:
    hooks = "[hooks]\non_role_change = [" + ", ".join(_basic(a) for a in argv) + "]\n"
    original = parse(config_text(hooks))
    assert original.hooks.on_role_change == tuple(argv)
    assert parse(effective_config_toml(original)) == original


def _basic(text: str) -> str:
    """A TOML literal for `text`, written independently of the module under test."""
    return '"' + "".join(f"\\U{ord(ch):08X}" for ch in text) + '"'


# ---------------------------------------------------------------------------------------------
# Problem and ConfigError


def test_problem_and_error_format() -> None:
    first = Problem(FILE, "timings.loop_interval", "must be greater than 0, got 0")
    second = Problem(FILE, "", "TOML syntax error at line 1, column 2: Invalid value")
    assert str(first) == f"{FILE}: timings.loop_interval: must be greater than 0, got 0"
    assert str(second) == f"{FILE}: TOML syntax error at line 1, column 2: Invalid value"
    error = ConfigError([first, second])
    assert error.problems == (first, second)
    assert str(error) == f"{first}\n{second}"


# ---------------------------------------------------------------------------------------------
# Unknown keys


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "[timings]\nself_fence_afterr = 0.5\n",
            "timings.self_fence_afterr: unknown key (did you mean 'self_fence_after'?)",
        ),
        ("[metrics]\nprot = 1\n", "metrics.prot: unknown key (did you mean 'port'?)"),
        ("[timings]\nbanana = 1\n", "timings.banana: unknown key"),
        ("[timing]\nloop_interval = 1\n", "timing: unknown key (did you mean 'timings'?)"),
        (
            '[checks.app]\ntype = "http"\nurl = "http://x/"\nintervall = 1\n',
            "checks.app.intervall: unknown key (did you mean 'interval'?)",
        ),
        (
            '[postgres]\ndata_directory = "/x"\n',
            "postgres.data_directory: unknown key (did you mean 'data_dir'?)",
        ),
    ],
)
def test_unknown_key_is_reported_with_the_closest_name(extra: str, expected: str) -> None:
    assert one_problem(config_text(extra)) == f"{FILE}: {expected}"


def test_unknown_key_in_a_member() -> None:
    members = MEMBERS + "adress = 1\n"
    assert one_problem(config_text(members=members)) == (
        f"{FILE}: members[1].adress: unknown key (did you mean 'address'?)"
    )


def test_credentials_value_is_not_a_key() -> None:
    cluster = CLUSTER + 'credentials = "u:p"\n'
    assert one_problem(config_text(cluster=cluster)) == (
        f"{FILE}: cluster.credentials: unknown key (did you mean 'credentials_file'?)"
    )


# ---------------------------------------------------------------------------------------------
# Types


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[timings]\nsession_timeout = "2s"\n',
            "timings.session_timeout: expected a number, got string '2s'",
        ),
        (
            "[timings]\nloop_interval = true\n",
            "timings.loop_interval: expected a number, got boolean true",
        ),
        ("[checks.x]\ntype = 1\n", "checks.x.type: expected a string, got integer 1"),
        (
            '[checks.x]\ntype = "postgres"\nrise = 1.5\n' + POSTGRES,
            "checks.x.rise: expected an integer, got float 1.5",
        ),
        (
            '[metrics]\nenabled = "yes"\n',
            "metrics.enabled: expected a boolean (true or false), got string 'yes'",
        ),
        ('[metrics]\nport = "80"\n', "metrics.port: expected an integer port, got string '80'"),
        (
            "[hooks]\ntimeout = 1\non_role_change = [[]]\n",
            "hooks.on_role_change[0]: expected a string, got an array",
        ),
        (
            '[hooks]\non_role_change = "/bin/notify"\n',
            "hooks.on_role_change: expected an array of strings, got string '/bin/notify'",
        ),
        (
            '[hooks]\non_role_change = ["/bin/notify", 2]\n',
            "hooks.on_role_change[1]: expected a string, got integer 2",
        ),
        (
            "[fencing]\nidentity_file = 7\n",
            "fencing.identity_file: expected a path string, got integer 7",
        ),
        (
            "[checks]\napp = 1\n",
            "checks.app: expected a table ([checks.app]), got integer 1",
        ),
        (
            "[timings]\nstart_timeout = 2024-01-01\n",
            "timings.start_timeout: expected a number, got date/time 2024-01-01",
        ),
    ],
)
def test_wrong_type_says_expected_and_got(extra: str, expected: str) -> None:
    assert one_problem(config_text(extra)) == f"{FILE}: {expected}"


def test_integers_are_accepted_for_floats() -> None:
    cfg = parse(config_text("[hooks]\ntimeout = 3\n"))
    assert cfg.hooks.timeout == 3.0
    assert isinstance(cfg.hooks.timeout, float)


def test_members_must_be_an_array_of_tables() -> None:
    members = '[members]\nname = "fln1"\naddress = "10.77.0.11"\n'
    found = problems(config_text(members=members))
    assert found == [
        f"{FILE}: members: expected an array of tables ([[members]]), got a table",
    ]


def test_wrong_type_for_a_section_does_not_also_report_its_missing_keys() -> None:
    text = config_text(node=NODE + 'vip = "10.77.0.100/24"\nhooks = 1\n', vip="")
    assert problems(text) == [
        f"{FILE}: vip: expected a table ([vip]), got string '10.77.0.100/24'",
        f"{FILE}: hooks: expected a table ([hooks]), got integer 1",
    ]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[timings]\nloop_interval = 0\n", "timings.loop_interval: must be greater than 0, got 0"),
        (
            "[timings]\npublish_every = -1.5\n",
            "timings.publish_every: must be greater than 0, got -1.5",
        ),
        (
            "[timings]\naction_timeout = inf\n",
            "timings.action_timeout: must be a finite number, got inf",
        ),
        (
            "[timings]\nstart_timeout = nan\n",
            "timings.start_timeout: must be a finite number, got nan",
        ),
        (
            "[fencing]\nconnect_timeout = 0\n",
            "fencing.connect_timeout: must be greater than 0, got 0",
        ),
        (
            "[failover]\nmax_replication_silence = 0\n",
            "failover.max_replication_silence: must be greater than 0, got 0",
        ),
        ("[hooks]\ntimeout = -1\n", "hooks.timeout: must be greater than 0, got -1"),
    ],
)
def test_durations_must_be_positive_and_finite(extra: str, expected: str) -> None:
    assert one_problem(config_text(extra)) == f"{FILE}: {expected}"


@pytest.mark.parametrize(
    "key",
    [
        "min_failover_interval",
        "fence_retry_after",
        "roundtrip_timeout",
        "self_fence_after",
        "session_timeout",
    ],
)
def test_every_timing_must_be_positive(key: str) -> None:
    found = problems(config_text(f"[timings]\n{key} = 0\n"))
    assert f"{FILE}: timings.{key}: must be greater than 0, got 0" in found


# ---------------------------------------------------------------------------------------------
# Missing required keys


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"cluster": '[cluster]\nzookeeper_hosts = ["10.77.0.5:2181"]\n'}, "cluster.name"),
        ({"cluster": '[cluster]\nname = "lab"\n'}, "cluster.zookeeper_hosts"),
        ({"members": ""}, "members"),
        ({"vip": '[vip]\ninterface = "eth0"\n'}, "vip.address"),
        ({"vip": '[vip]\naddress = "10.77.0.100/24"\n'}, "vip.interface"),
        (
            {"members": MEMBERS.replace('name = "fln2"\n', "")},
            "members[1].name",
        ),
        (
            {"members": MEMBERS.replace('address = "10.77.0.12"\n', "")},
            "members[1].address",
        ),
    ],
)
def test_missing_required_key(kwargs: dict[str, str], key: str) -> None:
    found = problems(config_text(**kwargs))
    assert f"{FILE}: {key}: missing required key" in found
    assert len(found) == 1, found


def test_missing_sections_report_each_required_key() -> None:
    assert problems(NODE) == [
        f"{FILE}: cluster.name: missing required key",
        f"{FILE}: cluster.zookeeper_hosts: missing required key",
        f"{FILE}: members: missing required key",
    ]


def test_vip_is_optional_but_complete_when_present() -> None:
    """A cluster without a service IP omits [vip]; a [vip] table needs both keys."""
    cfg = parse(config_text(vip=""))
    assert cfg.vip is None
    assert "[vip]" not in effective_config_toml(cfg)
    assert problems(config_text(vip="[vip]\n")) == [
        f"{FILE}: vip.address: missing required key",
        f"{FILE}: vip.interface: missing required key",
    ]


def test_empty_file_reports_every_required_key() -> None:
    found = problems("")
    assert f"{FILE}: members: missing required key" in found
    assert len(found) == 3  # node defaults to the host's name


# ---------------------------------------------------------------------------------------------
# Addresses, ports and names


@pytest.mark.parametrize(
    ("vip", "expected"),
    [
        ("10.77.0.100", "VIP must be address/prefix, e.g. 10.77.0.100/24"),
        ("10.77.0.100/33", "invalid address/prefix '10.77.0.100/33', e.g. 10.77.0.100/24"),
        ("10.77.0.300/24", "invalid address/prefix '10.77.0.300/24', e.g. 10.77.0.100/24"),
        ("10.77.0.11/24", "the VIP 10.77.0.11 is also members[0].address"),
    ],
)
def test_vip_address(vip: str, expected: str) -> None:
    text = config_text(vip=f'[vip]\naddress = "{vip}"\ninterface = "eth0"\n')
    assert one_problem(text) == f"{FILE}: vip.address: {expected}"


def test_vip_accepts_a_netmask() -> None:
    text = config_text(vip='[vip]\naddress = "10.77.0.100/255.255.255.0"\ninterface = "eth0"\n')
    assert str(parse(text).vip.address) == "10.77.0.100/24"


@pytest.mark.parametrize("interface", ["eth0/1", "a b", "averyveryverylongname", "eth0:1"])
def test_vip_interface_name(interface: str) -> None:
    text = config_text(vip=f'[vip]\naddress = "10.77.0.100/24"\ninterface = "{interface}"\n')
    assert one_problem(text) == (
        f"{FILE}: vip.interface: invalid network interface name {interface!r}"
    )


def test_vip_arp_count_may_be_zero_but_not_negative() -> None:
    assert parse(config_text(VIP.replace("[vip]", "") + "arp_count = 0\n", vip="[vip]"))
    text = config_text(vip=VIP + "arp_count = -1\n")
    assert one_problem(text) == f"{FILE}: vip.arp_count: must be at least 0, got -1"


def test_invalid_member_address() -> None:
    text = config_text(members=MEMBERS.replace("10.77.0.12", "10.77.0.256"))
    assert one_problem(text) == f"{FILE}: members[1].address: invalid IP address '10.77.0.256'"


@pytest.mark.parametrize(
    ("extra", "members", "key", "value"),
    [
        ("", MEMBERS + "ssh_port = 0\n", "members[1].ssh_port", 0),
        ("", MEMBERS + "db_port = 65536\n", "members[1].db_port", 65536),
        ("[metrics]\nport = 70000\n", MEMBERS, "metrics.port", 70000),
        ("[postgres]\nport = -5\n", MEMBERS, "postgres.port", -5),
    ],
)
def test_port_out_of_range(extra: str, members: str, key: str, value: int) -> None:
    text = config_text(extra, members=members)
    assert one_problem(text) == f"{FILE}: {key}: port must be in 1..65535, got {value}"


def test_metrics_listen_address_must_be_an_ip_address() -> None:
    text = config_text('[metrics]\nlisten_address = "localhost"\n')
    assert one_problem(text) == (f"{FILE}: metrics.listen_address: invalid IP address 'localhost'")


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        ('["10.77.0.5"]', "expected 'host:port', e.g. '10.77.0.5:2181', got '10.77.0.5'"),
        ('["10.77.0.5:0"]', "port must be in 1..65535, got 0 in '10.77.0.5:0'"),
        ('["10.77.0.5:99999"]', "port must be in 1..65535, got 99999 in '10.77.0.5:99999'"),
        ('["zk:21x"]', "port must be a number in 1..65535, got '21x' in 'zk:21x'"),
        ('["::1:2181"]', "an IPv6 host must be in brackets, e.g. '[::1]:2181', got '::1:2181'"),
        (
            '["zk:2181/failoverd"]',
            "expected 'host:port' without a path, got 'zk:2181/failoverd' "
            "(the chroot is cluster.chroot)",
        ),
    ],
)
def test_zookeeper_host_port(hosts: str, expected: str) -> None:
    cluster = f'[cluster]\nname = "lab"\nzookeeper_hosts = {hosts}\n'
    assert one_problem(config_text(cluster=cluster)) == (
        f"{FILE}: cluster.zookeeper_hosts[0]: {expected}"
    )


def test_zookeeper_hosts_must_not_be_empty() -> None:
    cluster = '[cluster]\nname = "lab"\nzookeeper_hosts = []\n'
    assert one_problem(config_text(cluster=cluster)) == (
        f"{FILE}: cluster.zookeeper_hosts: must list at least one host:port"
    )


def test_zookeeper_ensemble() -> None:
    hosts = '["zk1:2181", "zk2.example.com:2181", "[fd00::5]:2181"]'
    cfg = parse(config_text(cluster=f'[cluster]\nname = "prod"\nzookeeper_hosts = {hosts}\n'))
    assert cfg.cluster.zookeeper_hosts == ("zk1:2181", "zk2.example.com:2181", "[fd00::5]:2181")
    assert cfg.cluster.chroot == "/failoverd/prod"


@pytest.mark.parametrize(
    ("chroot", "expected"),
    [
        ("failoverd/lab", "must start with '/', got 'failoverd/lab'"),
        ("/failoverd/lab/", "must not end with '/', got '/failoverd/lab/'"),
        ("/", "must not end with '/', got '/'"),
        ("/a//b", "must not contain empty, '.' or '..' path components, got '/a//b'"),
        ("/a/../b", "must not contain empty, '.' or '..' path components, got '/a/../b'"),
    ],
)
def test_chroot(chroot: str, expected: str) -> None:
    cluster = CLUSTER + f'chroot = "{chroot}"\n'
    assert one_problem(config_text(cluster=cluster)) == f"{FILE}: cluster.chroot: {expected}"


def test_explicit_chroot() -> None:
    cfg = parse(config_text(cluster=CLUSTER + 'chroot = "/ha/stage"\n'))
    assert cfg.cluster.chroot == "/ha/stage"


NAME_RULE = "use letters, digits, '_', '.' and '-', starting with a letter or digit"


@pytest.mark.parametrize("name", ["lab/prod", "-lab", ".x", "a b", "ünï"])
def test_cluster_name_pattern(name: str) -> None:
    cluster = f'[cluster]\nname = "{name}"\nzookeeper_hosts = ["zk:2181"]\n'
    assert one_problem(config_text(cluster=cluster)) == (
        f"{FILE}: cluster.name: invalid name {name!r}: {NAME_RULE}"
    )


def test_node_name_pattern() -> None:
    found = problems(config_text(node='node = "fln/1"'))
    assert found == [f"{FILE}: node: invalid name 'fln/1': {NAME_RULE}"]


def test_names_may_use_dots_dashes_and_underscores() -> None:
    members = MEMBERS.replace('"fln1"', '"web-1.dc_a"')
    cfg = parse(config_text(node='node = "web-1.dc_a"', members=members))
    assert cfg.self_member.name == "web-1.dc_a"


def test_empty_string_is_rejected() -> None:
    assert one_problem(config_text("[fencing]\nssh_user = ''\n")) == (
        f"{FILE}: fencing.ssh_user: must not be empty"
    )


@pytest.mark.parametrize(
    ("extra", "key", "value"),
    [
        ('[fencing]\nidentity_file = "id_ed25519"\n', "fencing.identity_file", "id_ed25519"),
        ('[postgres]\ndata_dir = "pg"\n', "postgres.data_dir", "pg"),
        ('[postgres]\nbin_dir = "./bin"\n', "postgres.bin_dir", "./bin"),
    ],
)
def test_paths_must_be_absolute(extra: str, key: str, value: str) -> None:
    assert one_problem(config_text(extra)) == (
        f"{FILE}: {key}: must be an absolute path, got {value!r}"
    )


# ---------------------------------------------------------------------------------------------
# Members and node


def test_node_not_in_members() -> None:
    assert one_problem(config_text(node='node = "fln3"')) == (
        f"{FILE}: node: node 'fln3' is not in members: fln1, fln2"
    )


def test_duplicate_member_name() -> None:
    members = MEMBERS.replace('"fln2"', '"fln1"')
    assert one_problem(config_text(members=members)) == (
        f"{FILE}: members[1].name: duplicate member name 'fln1' (also members[0].name)"
    )


def test_duplicate_member_address() -> None:
    members = MEMBERS.replace("10.77.0.12", "10.77.0.11")
    assert one_problem(config_text(members=members)) == (
        f"{FILE}: members[1].address: duplicate member address '10.77.0.11' "
        "(also members[0].address)"
    )


def test_one_member_is_not_enough() -> None:
    members = '[[members]]\nname = "fln1"\naddress = "10.77.0.11"\n'
    assert one_problem(config_text(members=members)) == (
        f"{FILE}: members: expected exactly two members, got 1"
    )


def test_node_not_in_a_single_member() -> None:
    members = '[[members]]\nname = "fln1"\naddress = "10.77.0.11"\n'
    assert problems(config_text(members=members, node='node = "fln2"')) == [
        f"{FILE}: members: expected exactly two members, got 1",
        f"{FILE}: node: node 'fln2' is not in members: fln1",
    ]


def test_three_members_are_too_many() -> None:
    members = MEMBERS + '\n[[members]]\nname = "fln3"\naddress = "10.77.0.13"\n'
    assert one_problem(config_text(members=members)) == (
        f"{FILE}: members: expected exactly two members, got 3"
    )


# ---------------------------------------------------------------------------------------------
# Timing relations


@pytest.mark.parametrize(
    ("timings", "fence_after", "session"),
    [
        ("self_fence_after = 2\n", "2", "2"),
        ("self_fence_after = 2.5\n", "2.5", "2"),
        ("session_timeout = 1\nself_fence_after = 1.5\n", "1.5", "1"),
    ],
)
def test_self_fence_after_must_be_below_session_timeout(
    timings: str, fence_after: str, session: str
) -> None:
    found = problems(config_text("[timings]\n" + timings))
    assert found[0] == (
        f"{FILE}: timings.self_fence_after: must be strictly below session_timeout "
        f"(self_fence_after = {fence_after}, session_timeout = {session}): the active must be "
        "down before its ZooKeeper session can expire"
    )
    # Derived roundtrip_timeout and loop_interval are not judged against an invalid value.
    assert len(found) == 1


def test_roundtrip_timeout_must_be_below_self_fence_after() -> None:
    assert one_problem(config_text("[timings]\nroundtrip_timeout = 1\n")) == (
        f"{FILE}: timings.roundtrip_timeout: must be below self_fence_after "
        "(roundtrip_timeout = 1, self_fence_after = 1)"
    )


def test_loop_interval_leaves_room_for_a_round_trip() -> None:
    assert one_problem(config_text("[timings]\nloop_interval = 0.8\n")) == (
        f"{FILE}: timings.loop_interval: loop_interval + roundtrip_timeout (0.8 + 0.25 = 1.05) "
        "must be below self_fence_after (1), or the active self-fences between two healthy "
        "round-trips"
    )


def test_short_session_timeout_with_defaults_is_valid() -> None:
    cfg = parse(config_text("[timings]\nsession_timeout = 0.5\n"))
    assert cfg.timings.self_fence_after == 0.25
    assert cfg.timings.roundtrip_timeout == 0.0625


# ---------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"16MB"', 16 * 1024**2),
        ('"512kB"', 512 * 1024),
        ('"1GB"', 1024**3),
        ('"2TB"', 2 * 1024**4),
        ('"100B"', 100),
        ('"4096"', 4096),
        ('" 8 MB "', 8 * 1024**2),
        ("1048576", 1048576),
        ("0", 0),
        # IEC names mean the same multiples of 1024 as PostgreSQL's kB, MB, GB, TB.
        ('"16 MiB"', 16 * 1024**2),
        ('"512KiB"', 512 * 1024),
        ('"1 GiB"', 1024**3),
        ('"2TiB"', 2 * 1024**4),
    ],
)
def test_max_lag_sizes(value: str, expected: int) -> None:
    cfg = parse(config_text(f"[failover]\nmax_lag_on_failover = {value}\n"))
    assert cfg.failover.max_lag_on_failover == expected


SIZE_UNITS = "B, kB, MB, GB, TB, KiB, MiB, GiB, TiB"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"16mb"', f"invalid size unit 'mb' in '16mb': use {SIZE_UNITS} (multiples of 1024)"),
        ('"16 mib"', f"invalid size unit 'mib' in '16 mib': use {SIZE_UNITS} (multiples of 1024)"),
        ('"16 XB"', f"invalid size unit 'XB' in '16 XB': use {SIZE_UNITS} (multiples of 1024)"),
        ('"1.5GB"', f"invalid size '1.5GB': expected a number and a unit ({SIZE_UNITS})"),
        ('"lots"', f"invalid size 'lots': expected a number and a unit ({SIZE_UNITS})"),
        ("-1", "must be at least 0 bytes, got -1"),
        (
            "1.5",
            "expected bytes as an integer or a size string like '16MB', got float 1.5",
        ),
        (
            "true",
            "expected bytes as an integer or a size string like '16MB', got boolean true",
        ),
    ],
)
def test_max_lag_invalid(value: str, expected: str) -> None:
    text = config_text(f"[failover]\nmax_lag_on_failover = {value}\n")
    assert one_problem(text) == f"{FILE}: failover.max_lag_on_failover: {expected}"


# ---------------------------------------------------------------------------------------------
# ZooKeeper credentials


def _with_credentials(path: Path) -> str:
    return config_text(cluster=CLUSTER + f'credentials_file = "{path}"\n')


def test_credentials_file_is_read(tmp_path: Path) -> None:
    file = tmp_path / "zk.credentials"
    file.write_text("failoverd:s3cr:et\n")
    cfg = parse(_with_credentials(file))
    assert cfg.cluster.credentials_file == file
    assert cfg.cluster.credentials == ("failoverd", "s3cr:et")
    assert "s3cr" not in repr(cfg)
    assert "s3cr" not in effective_config_toml(cfg)


def test_missing_credentials_file(tmp_path: Path) -> None:
    file = tmp_path / "missing"
    assert one_problem(_with_credentials(file)) == (
        f"{FILE}: cluster.credentials_file: cannot read {file}: No such file or directory"
    )


def test_credentials_file_is_a_directory(tmp_path: Path) -> None:
    assert one_problem(_with_credentials(tmp_path)) == (
        f"{FILE}: cluster.credentials_file: cannot read {tmp_path}: Is a directory"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_credentials_file(tmp_path: Path) -> None:
    file = tmp_path / "zk.credentials"
    file.write_text("u:p\n")
    file.chmod(0)
    assert one_problem(_with_credentials(file)) == (
        f"{FILE}: cluster.credentials_file: cannot read {file}: Permission denied"
    )


@pytest.mark.parametrize("content", ["no-colon\n", ":password\n", "user:\n", "u:p\nv:q\n", ""])
def test_malformed_credentials_file(tmp_path: Path, content: str) -> None:
    file = tmp_path / "zk.credentials"
    file.write_text(content)
    message = one_problem(_with_credentials(file))
    assert message == (
        f"{FILE}: cluster.credentials_file: {file} must hold a single line 'user:password'"
    )
    for secret in ("password", "no-colon", "v:q"):
        assert secret not in message.replace("'user:password'", "")


def test_relative_credentials_file_is_rejected() -> None:
    cluster = CLUSTER + 'credentials_file = "zk.credentials"\n'
    assert one_problem(config_text(cluster=cluster)) == (
        f"{FILE}: cluster.credentials_file: must be an absolute path, got 'zk.credentials'"
    )


# ---------------------------------------------------------------------------------------------
# Checks


def test_check_defaults() -> None:
    cfg = parse(config_text('[checks.app]\ntype = "http"\nurl = "http://127.0.0.1:8080/h"\n'))
    assert cfg.checks == (
        CheckConfig(
            name="app",
            type="http",
            interval=0.5,
            timeout=1.0,
            rise=2,
            fall=2,
            slow_after=1.0,
            url="http://127.0.0.1:8080/h",
            expect_status=200,
            command=None,
            cache_manager_url=None,
        ),
    )


def test_slow_after_defaults_to_the_timeout() -> None:
    cfg = parse(config_text("[checks.db]\ntype = 'postgres'\ntimeout = 3\n", POSTGRES))
    assert cfg.checks[0].slow_after == 3.0


def test_slow_after_must_not_exceed_timeout() -> None:
    text = config_text("[checks.db]\ntype = 'postgres'\nslow_after = 2\n", POSTGRES)
    assert one_problem(text) == (
        f"{FILE}: checks.db.slow_after: must not exceed timeout (slow_after = 2, timeout = 1)"
    )


def test_checks_keep_file_order() -> None:
    text = config_text(
        "[checks.z]\ntype = 'command'\ncommand = ['/bin/true']\n",
        "[checks.a]\ntype = 'command'\ncommand = ['/bin/false']\n",
    )
    assert [c.name for c in parse(text).checks] == ["z", "a"]


def test_command_check() -> None:
    text = config_text("[checks.disk]\ntype = 'command'\ncommand = ['/bin/df', '-h']\n")
    check = parse(text).checks[0]
    assert check.type == "command"
    assert check.command == ("/bin/df", "-h")
    assert check.url is None


def test_squid_check_with_cache_manager() -> None:
    text = config_text(
        "[checks.squid]\ntype = 'squid'\nurl = 'http://127.0.0.1:80/health'\n"
        "cache_manager_url = 'http://127.0.0.1:80/squid-internal-mgr/info'\n"
        "expect_status = 204\n"
    )
    check = parse(text).checks[0]
    assert check.cache_manager_url == "http://127.0.0.1:80/squid-internal-mgr/info"
    assert check.expect_status == 204


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("type = 'http'\n", "checks.c.url: missing required key"),
        ("type = 'squid'\n", "checks.c.url: missing required key"),
        ("type = 'command'\n", "checks.c.command: missing required key"),
        (
            "type = 'command'\ncommand = []\n",
            "checks.c.command: must be a non-empty array: the program, then its arguments",
        ),
        (
            "type = 'command'\ncommand = ['', 'x']\n",
            "checks.c.command: must be a non-empty array: the program, then its arguments",
        ),
        (
            "type = 'command'\ncommand = '/bin/true'\n",
            "checks.c.command: expected an array of strings, got string '/bin/true'",
        ),
        ("url = 'http://x/'\n", "checks.c.type: missing required key"),
        (
            "type = 'htp'\n",
            "checks.c.type: unknown check type 'htp' (did you mean 'http'? expected one of "
            "http, postgres, squid, command)",
        ),
        (
            "type = 'ping'\n",
            "checks.c.type: unknown check type 'ping' (expected one of "
            "http, postgres, squid, command)",
        ),
        (
            "type = 'http'\nurl = 'https://127.0.0.1/health'\n",
            "checks.c.url: must be an http:// URL, got 'https://127.0.0.1/health'",
        ),
        (
            "type = 'http'\nurl = '127.0.0.1:8080/health'\n",
            "checks.c.url: must be an http:// URL, got '127.0.0.1:8080/health'",
        ),
        (
            "type = 'http'\nurl = 'http://127.0.0.1:99999/'\n",
            "checks.c.url: invalid port in URL 'http://127.0.0.1:99999/'",
        ),
        (
            "type = 'squid'\nurl = 'http://x/'\ncache_manager_url = 'ftp://x/'\n",
            "checks.c.cache_manager_url: must be an http:// URL, got 'ftp://x/'",
        ),
        (
            "type = 'http'\nurl = 'http://x/'\nexpect_status = 42\n",
            "checks.c.expect_status: must be between 100 and 599, got 42",
        ),
        ("type = 'postgres'\nrise = 0\n", "checks.c.rise: must be at least 1, got 0"),
        ("type = 'postgres'\nfall = -2\n", "checks.c.fall: must be at least 1, got -2"),
        ("type = 'postgres'\ninterval = 0\n", "checks.c.interval: must be greater than 0, got 0"),
        (
            "type = 'postgres'\nurl = 'http://x/'\n",
            "checks.c.url: does not apply to a check of type 'postgres' (only to http, squid)",
        ),
        (
            "type = 'http'\nurl = 'http://x/'\ncommand = ['x']\n",
            "checks.c.command: does not apply to a check of type 'http' (only to command)",
        ),
        (
            "type = 'http'\nurl = 'http://x/'\ncache_manager_url = 'http://x/'\n",
            "checks.c.cache_manager_url: does not apply to a check of type 'http' (only to squid)",
        ),
        (
            "type = 'command'\ncommand = ['x']\nexpect_status = 200\n",
            "checks.c.expect_status: does not apply to a check of type 'command' "
            "(only to http, squid)",
        ),
        (
            "type = 'nope'\nurll = 'http://x/'\n",
            "checks.c.urll: unknown key (did you mean 'url'?)",
        ),
    ],
)
def test_check_errors(table: str, expected: str) -> None:
    found = problems(config_text("[checks.c]\n" + table, POSTGRES))
    assert f"{FILE}: {expected}" in found
    if "'nope'" not in table:
        assert len(found) == 1, found


def test_postgres_check_needs_a_postgres_section() -> None:
    assert one_problem(config_text("[checks.db]\ntype = 'postgres'\n")) == (
        f"{FILE}: checks.db.type: a postgres check needs a [postgres] section"
    )


def test_check_name_pattern() -> None:
    text = config_text("[checks.'my check']\ntype = 'command'\ncommand = ['x']\n")
    assert one_problem(text) == (
        f"{FILE}: checks.my check: invalid check name 'my check': {NAME_RULE}"
    )


# ---------------------------------------------------------------------------------------------
# Several problems at once, syntax and unreadable files


def test_all_problems_are_reported_together() -> None:
    text = config_text(
        "[timings]\nself_fence_afterr = 0.5\nsession_timeout = '2s'\n",
        "[failover]\nmax_lag_on_failover = '16mb'\n",
        "[checks.app]\ntype = 'http'\n",
        node='node = "fln3"',
        vip='[vip]\naddress = "10.77.0.100"\ninterface = "eth0"\n',
    )
    with pytest.raises(ConfigError) as info:
        parse(text)
    keys = [p.key for p in info.value.problems]
    assert sorted(keys) == sorted(
        [
            "node",
            "vip.address",
            "timings.self_fence_afterr",
            "timings.session_timeout",
            "failover.max_lag_on_failover",
            "checks.app.url",
        ]
    )
    assert all(p.path == FILE for p in info.value.problems)
    lines = str(info.value).splitlines()
    assert len(lines) == 6
    assert f"{FILE}: node: node 'fln3' is not in members: fln1, fln2" in lines
    assert f"{FILE}: vip.address: VIP must be address/prefix, e.g. 10.77.0.100/24" in lines


def test_toml_syntax_error_has_line_and_column() -> None:
    text = 'node = "fln1"\n[cluster]\nname = \n'
    assert one_problem(text) == f"{FILE}: TOML syntax error at line 3, column 8: Invalid value"


def test_toml_syntax_error_at_end_of_document() -> None:
    assert one_problem('node = "fln1') == (
        f"{FILE}: TOML syntax error at end of document: Unterminated string"
    )


def test_toml_duplicate_table_is_a_syntax_error() -> None:
    message = one_problem(config_text("[vip]\narp_count = 1\n"))
    assert message.startswith(f"{FILE}: TOML syntax error at line ")
    assert "Cannot declare" in message


def test_syntax_error_through_load_config(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("node = = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert [str(p) for p in info.value.problems] == [
        f"{file}: TOML syntax error at line 1, column 8: Invalid value"
    ]


def test_missing_file(tmp_path: Path) -> None:
    file = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert str(info.value) == f"{file}: cannot read config file: No such file or directory"
    assert info.value.problems == (
        Problem(file, "", "cannot read config file: No such file or directory"),
    )


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read config file: Is a directory"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    file = tmp_path / "latin1.toml"
    file.write_bytes(b'# comment\nnode = "fl\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert str(info.value) == f"{file}: config file is not valid UTF-8 (line 2)"


def test_replication_silence_must_outlast_the_session() -> None:
    """Found by the core's property tests: with silence <= T a crash never fails over."""
    text = config_text(
        "[postgres]\n[failover]\nmax_replication_silence = 2\n[timings]\nsession_timeout = 2\n"
    )
    (problem,) = problems(text)
    assert problem.startswith(f"{FILE}: failover.max_replication_silence: 2 s is not above")
    assert parse(config_text("[failover]\nmax_replication_silence = 2\n")).postgres is None


def test_rejoin_mode_and_reclone() -> None:
    cfg = parse(config_text(POSTGRES))
    assert cfg.postgres is not None
    assert (cfg.postgres.rejoin, cfg.postgres.reclone) == ("auto", True)
    manual = parse(config_text('[postgres]\nrejoin = "manual"\nreclone = false\n'))
    assert manual.postgres is not None
    assert (manual.postgres.rejoin, manual.postgres.reclone) == ("manual", False)
    assert one_problem(config_text('[postgres]\nrejoin = "sometimes"\n')) == (
        f"{FILE}: postgres.rejoin: must be one of auto, manual, got 'sometimes'"
    )


def test_power_command_is_a_second_fencing_level() -> None:
    assert parse(config_text()).fencing.power_command is None
    cfg = parse(config_text('[fencing]\npower_command = ["/usr/sbin/fence_x", "-n", "{node}"]\n'))
    assert cfg.fencing.power_command == ("/usr/sbin/fence_x", "-n", "{node}")
    assert cfg.fencing.power_timeout == 10.0
    assert one_problem(config_text('[fencing]\npower_command = ["x", "{host}"]\n')) == (
        f"{FILE}: fencing.power_command: unknown placeholder {{host}}: only {{node}} and "
        "{address} are replaced"
    )
    assert "must name a program" in one_problem(config_text("[fencing]\npower_command = []\n"))

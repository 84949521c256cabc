"""``lab/lab up`` builds the whole two-node lab, ``down`` removes every trace of it.

One lab per module (the namespace names are fixed, so one per host): brought up once, checked
component by component, brought up again (nothing restarts), and taken down, with the host's
own interfaces and routes compared before and after. The lab is always taken down at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.cluster import (
    ADDRESSES,
    CLIENT_NS,
    COMPONENTS,
    NAMESPACES,
    NODES,
    REPO,
    ZK_SERVERS,
    Lab,
    netns_id,
)
from lab.process import waited

pytestmark = pytest.mark.lab

ROOT = Path("/var/tmp/failoverd-lab-pytest")
UP_BUDGET = 30.0  # the target is < 20 s; the budget leaves room for a loaded machine
DOWN_BUDGET = 10.0
TOOLS = ("ip", "java", "squid", "curl", "ssh", "ssh-keygen", "runuser", "setsid", "shellcheck")


def host_network() -> dict[str, Any]:
    """The host's own addresses and routes, minus the fields that tick by themselves."""

    def ip_json(*args: str) -> Any:
        out = subprocess.run(
            ["ip", "-j", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout
        return json.loads(out or "[]")

    addrs = ip_json("addr", "show")
    for link in addrs:
        for a in link.get("addr_info", []):
            a.pop("valid_life_time", None)
            a.pop("preferred_life_time", None)
    return {
        "addr": addrs,
        "route": ip_json("route", "show", "table", "all"),
        "links": sorted(link["ifname"] for link in ip_json("link", "show")),
    }


class Run:
    """What the module fixture measured."""

    def __init__(
        self, lab: Lab, up_seconds: float, host_before: dict[str, Any], logs: Path
    ) -> None:
        self.lab = lab
        self.logs = logs  # where the lab's logs go before down() removes them
        self.up_seconds = up_seconds
        self.host_before = host_before
        self.netns_ids = {ns: netns_id(f"/run/netns/{ns}") for ns in NAMESPACES}


def keep_logs(lab: Lab, dest: Path) -> None:
    """Copy the lab's logs out before down() removes them (pytest keeps its last tmp dirs)."""
    for ns, comps in COMPONENTS.items():
        for c in comps:
            src = lab.log_path(ns, c)
            if src.exists():
                shutil.copy(src, dest / f"{ns}-{c}.log")
    print(f"lab logs kept in {dest}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")
    existing = [ns for ns in NAMESPACES if Path(f"/run/netns/{ns}").exists()]
    if existing:
        pytest.skip(f"a lab is already up here ({', '.join(existing)}): not taking it down")
    lab = Lab(ROOT, log=print)  # progress lines show with -s, or when a test fails
    before = host_network()
    logs = tmp_path_factory.mktemp("lab-logs")
    try:
        took = lab.up()
        yield Run(lab, took, before, logs)
    finally:
        if lab.root.exists():
            keep_logs(lab, logs)
        lab.down()


@pytest.fixture
def lab(run: Run) -> Lab:
    return run.lab


def listening(lab: Lab, ns: str) -> set[str]:
    """``addr:port`` of every TCP socket listening in ``ns``."""
    out = lab.exec(ns, ["ss", "-Hltn"]).stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


# -- the lab comes up ----------------------------------------------------------------------------


def test_role_scripts_pass_shellcheck() -> None:
    scripts = [REPO / "lab" / "lab", *sorted((REPO / "lab" / "roles").glob("*.sh"))]
    proc = subprocess.run(
        ["shellcheck", "-x", *map(str, scripts)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_up_is_fast_and_every_component_runs_in_its_namespace(run: Run) -> None:
    assert run.up_seconds < UP_BUDGET, f"lab up took {run.up_seconds:.1f} s"
    st = run.lab.status(failoverctl=False)
    assert st.all_up, st.render()
    for c in st.components:
        assert c.pid is not None, f"{c.namespace} {c.name} is down"
        assert c.in_namespace, f"{c.namespace} {c.name} (pid {c.pid}) runs outside {c.namespace}"
    assert {c.namespace for c in st.components} == set(COMPONENTS)


def test_each_node_listens_where_the_design_says(lab: Lab) -> None:
    for node in NODES:
        addr = ADDRESSES[node]
        socks = listening(lab, node)
        assert f"{addr}:5432" in socks and "127.0.0.1:5432" in socks, socks
        assert "127.0.0.1:8080" in socks, socks
        assert socks & {"0.0.0.0:80", "*:80", "[::]:80"}, f"Squid not on all addresses: {socks}"
        assert f"{addr}:22" in socks, socks
    for server in ZK_SERVERS:  # Java binds an IPv4 address as IPv4-mapped IPv6
        addr = ADDRESSES[server]
        zk = listening(lab, server)
        for port in (2181, 3888):  # clients, leader election (2888: the leader only)
            assert zk & {f"{addr}:{port}", f"[::ffff:{addr}]:{port}"}, (server, zk)
    assert listening(lab, CLIENT_NS) == set()


def test_generated_configs_pass_check_config(lab: Lab) -> None:
    for node in NODES:
        proc = subprocess.run(
            [str(lab.failoverd_bin), "check-config", str(lab.config_path(node))],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert f'node = "{node}"' in proc.stdout
        assert '"10.77.0.5:2181", "10.77.0.6:2181", "10.77.0.7:2181"' in proc.stdout
        assert 'dbname = "donations"' in proc.stdout
        assert 'mode = "sync"' in proc.stdout  # the lab's default replication mode


def test_fln1_is_primary_and_fln2_streams_from_it(lab: Lab) -> None:
    assert lab.writable_primaries() == ["fln1"]
    assert lab.database_state("fln2") == "replica (streaming)"
    rows = lab.query("fln1", "SELECT application_name, state FROM pg_stat_replication")
    assert ["fln2", "streaming"] in rows
    tables = lab.query("fln2", "SELECT to_regclass('donations')::text", dbname="donations")
    assert tables == [["donations"]]


def test_a_donation_through_squid_is_acknowledged_by_fln1_and_replicated(lab: Lab) -> None:
    donation_id = str(uuid.uuid4())
    status, body = lab.http(
        CLIENT_NS,
        "POST",
        f"http://{ADDRESSES['fln1']}:80/donate",
        {"id": donation_id, "amount": 12.5, "country": "AU"},
    )
    assert status == 200, body
    assert body["id"] == donation_id and body["node"] == "fln1"
    assert isinstance(body["epoch"], int)
    sql = f"SELECT node FROM donations WHERE id = '{donation_id}'"
    waited(
        lambda: lab.query("fln2", sql, dbname="donations") == [["fln1"]],
        5.0,
        "the donation replicated to fln2",
    )
    # fln2's app is up behind its Squid too, on a read-only replica: a fast 503, never a 200.
    status, body = lab.http(
        CLIENT_NS,
        "POST",
        f"http://{ADDRESSES['fln2']}:80/donate",
        {"id": str(uuid.uuid4()), "amount": 1, "country": "AU"},
    )
    assert status == 503, body


def test_three_zookeeper_servers_one_leading_with_the_lab_session_bounds(lab: Lab) -> None:
    modes = lab.zk.modes()
    assert sorted(modes.values()) == ["follower", "follower", "leader"], modes
    data_dirs = set()
    for server in ZK_SERVERS:
        assert "Mode: " in lab.zk_command("srvr", ns="fln1", server=server)
        conf = lab.zk_command("conf", ns="fln2", server=server)
        assert "minSessionTimeout=1000" in conf and "maxSessionTimeout=10000" in conf
        assert "tickTime=100" in conf and "initLimit=10" in conf and "syncLimit=5" in conf
        for other in ZK_SERVERS:  # every server knows the whole ensemble
            assert f"{ADDRESSES[other]}:2888:3888" in conf, conf
        data_dir = next(line.split("=", 1)[1] for line in conf.splitlines() if "dataDir=" in line)
        fs = subprocess.run(
            ["stat", "-f", "-c", "%T", data_dir], capture_output=True, text=True, check=True
        )
        assert fs.stdout.strip() == "tmpfs", data_dir
        data_dirs.add(data_dir)
    assert len(data_dirs) == 3
    # Both daemons got the 2 s sessions they asked for, wherever they are connected.
    cons = "".join(lab.zk_command("cons", ns="fln1", server=s) for s in ZK_SERVERS)
    assert cons.count("to=2000") >= 2, cons
    sessions = lab.zk.sessions(NODES)
    assert set(sessions) == set(NODES) and all(s in ZK_SERVERS for s in sessions.values())


def test_the_vip_is_on_at_most_one_node(lab: Lab) -> None:
    assert len(lab.vip_holders()) <= 1


def test_the_daemons_settle_with_one_active_holding_the_vip_and_the_primary(lab: Lab) -> None:
    """Not the lab's doing, but what the lab is for: the daemons settle with one node active,
    holding the VIP and the one writable database (fln1, unless they already failed over: on a
    loaded machine a slow check may make fln1 step down, which is theirs to decide)."""
    lab.wait_healthy(timeout=20.0)
    proc = lab.failoverctl("fln1", "status")
    match = re.search(r"^active: (\S+)", proc.stdout, re.MULTILINE)
    assert match and match.group(1) in NODES, proc.stdout
    active = match.group(1)
    waited(lambda: lab.vip_holders() == [active], 5.0, f"the VIP on {active} only")
    assert lab.writable_primaries() == [active]
    status, body = lab.http(CLIENT_NS, "GET", "http://10.77.0.100:80/health")
    assert status == 200 and body["node"] == active, body


def test_failoverctl_status_sees_both_nodes(lab: Lab) -> None:
    proc = lab.failoverctl("fln2", "status", "--json")
    assert proc.returncode in (0, 1, 2), proc.stderr
    text = proc.stdout
    assert "fln1" in text and "fln2" in text


def test_lab_status_command(lab: Lab) -> None:
    proc = subprocess.run(
        [str(REPO / "lab" / "lab"), "--root", str(lab.root), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for ns in NAMESPACES:
        assert ns in out
    for c in ("zookeeper", "postgres", "app", "squid", "sshd", "failoverd"):
        assert c in out
    assert re.search(r"^ZooKeeper: flzk\d? leads \(", out, re.MULTILINE), out
    assert out.count(" leader") + out.count(" follower") >= 6, out  # the rows and the summary
    # fln1 primary, unless the daemons failed over since (see above).
    line = next(line for line in out.splitlines() if line.startswith("PostgreSQL: "))
    assert re.fullmatch(
        r"PostgreSQL: fln1 (primary|replica \(\w+\)), fln2 (primary|replica \(\w+\))", line
    )
    assert line.count("primary") == 1, line
    assert "VIP 10.77.0.100/24 on:" in out
    assert "failoverctl status (from fln1" in out
    assert "down" not in out.split("VIP")[0], out


def test_up_again_changes_nothing(lab: Lab) -> None:
    before = lab.status(failoverctl=False)
    took = lab.up()
    after = lab.status(failoverctl=False)
    assert [(c.namespace, c.name, c.pid) for c in after.components] == [
        (c.namespace, c.name, c.pid) for c in before.components
    ]
    assert took < 5.0, f"a second up took {took:.1f} s"


def test_a_running_lab_switches_replication_mode_with_a_rolling_restart(lab: Lab) -> None:
    """Both configs rewritten, both daemons restarted, the cluster redundant again; asking
    for the mode it already runs changes nothing."""
    assert lab.replication_mode == "sync"
    lab.wait_redundant(timeout=60.0)
    before = {n: lab.pid(n, "failoverd") for n in NODES}
    took = lab.set_replication_mode("async")
    assert took < 90.0, f"the switch took {took:.1f} s"
    assert lab.replication_mode == "async"
    for node in NODES:
        assert 'mode = "async"' in lab.config_path(node).read_text()
        assert lab.pid(node, "failoverd") not in (None, before[node])
    assert lab.redundant() is not None
    assert lab.set_replication_mode("async") == 0.0
    proc = subprocess.run(
        [str(REPO / "lab" / "lab"), "--root", str(lab.root), "-q", "mode"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, "async\n"), proc.stderr
    assert "Replication: async" in lab.status(failoverctl=False).render()


def test_the_ensemble_faults_the_scenarios_use(lab: Lab) -> None:
    """The lab's own ZooKeeper machinery, not failoverd's: a session moved to a chosen server,
    the leader killed and replaced, a server isolated until it stops serving, cuts undone."""
    node = "fln1"
    for target in ZK_SERVERS:
        lab.zk.move_session(node, target)
        assert lab.zk.server_of(node) == target
        assert lab.cuts() == {}  # the moment's blackholes are gone
    leader = lab.zk.wait_serving()
    lab.zk.kill(leader)
    survivors = [s for s in ZK_SERVERS if s != leader]
    took = waited(lambda: lab.zk.leader() in survivors, 5.0, "a new leader", step=0.05)
    print(f"a new leader {took:.2f} s after the old one was killed")
    assert lab.zk.modes()[leader] == "down"
    lab.zk.start(leader)
    assert lab.zk.mode(leader) == "follower"
    isolated = next(s for s in ZK_SERVERS if s != lab.zk.leader())
    lab.zk.isolate(isolated, nodes=["fln2"])
    try:
        assert lab.cuts()[isolated] == sorted(["fln2", *(s for s in ZK_SERVERS if s != isolated)])
        took = waited(
            lambda: lab.zk.mode(isolated) == "not serving", 5.0, "the isolated server to stop"
        )
        print(f"an isolated follower stopped serving after {took:.2f} s")
        others = [s for s in ZK_SERVERS if s != isolated]
        assert lab.zk.wait_serving(others, timeout=5.0) in others
    finally:
        lab.zk.heal_server(isolated)
    assert lab.cuts() == {}
    lab.zk.wait_serving(timeout=10.0)
    lab.partition_from_zk("fln2", servers=[ZK_SERVERS[0]])
    assert lab.cuts()["fln2"] == [ZK_SERVERS[0]]
    assert "fln2" not in lab.status(failoverctl=False).partitioned  # the others are reachable
    lab.heal_cuts()
    assert lab.cuts() == {}


def test_sshd_runs_only_the_forced_fence_command_for_the_peers_key(lab: Lab) -> None:
    """Last before down: once `fence-self` exists, this really fences fln2."""
    ssh_dir = lab.ssh_dir("fln1")
    keys = (lab.ssh_dir("fln2") / "authorized_keys").read_text()
    assert keys.startswith(f'command="{lab.fence_command("fln2")}"'), keys
    assert lab.fence_command("fln2").endswith(
        f"{lab.failoverd_bin} fence-self -c {lab.config_path('fln2')}"
    )
    assert "no-pty" in keys and "no-port-forwarding" in keys
    assert len(keys.splitlines()) == 1

    def ssh(identity: Path, known_hosts: Path, command: str) -> subprocess.CompletedProcess[str]:
        return lab.exec(
            "fln1",
            [
                "ssh", "-F", "/dev/null", "-i", str(identity), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                "-o", "ConnectTimeout=3", f"root@{ADDRESSES['fln2']}", command,
            ],
            timeout=30,
        )  # fmt: skip

    proc = ssh(ssh_dir / "id_ed25519", ssh_dir / "known_hosts", "echo INJECTED")
    out = proc.stdout + proc.stderr
    assert "INJECTED" not in out
    assert "Host key verification failed" not in out and "Permission denied" not in out, out
    assert "fence-self" in out or "failoverd" in out or proc.returncode == 0, out
    log = (lab.node_dir("fln2") / "sshd.log").read_text()
    assert "forced-command" in log and "fence-self" in log

    # An unknown host key is never accepted on first use.
    empty = lab.node_dir("fln1") / "empty_known_hosts"
    empty.write_text("")
    proc = ssh(ssh_dir / "id_ed25519", empty, "true")
    assert proc.returncode == 255 and "Host key verification failed" in proc.stderr

    # Only the peer's key is authorised: fln2's own client key is not.
    proc = ssh(lab.ssh_dir("fln2") / "id_ed25519", ssh_dir / "known_hosts", "true")
    assert proc.returncode == 255 and "Permission denied" in proc.stderr


# -- and goes away without a trace ---------------------------------------------------------------


def test_down_leaves_nothing_behind(run: Run) -> None:
    lab = run.lab
    pids = set()
    for ns in COMPONENTS:
        pids |= {p for c in COMPONENTS[ns] if (p := lab.pid(ns, c)) is not None}
    keep_logs(lab, run.logs)
    took = lab.down()
    assert took < DOWN_BUDGET, f"lab down took {took:.1f} s"
    assert not [ns for ns in NAMESPACES if Path(f"/run/netns/{ns}").exists()]
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    # Exact names: other tests make namespaces of their own (flvip<pid>...).
    assert not [line for line in out.stdout.splitlines() if line.split()[0] in NAMESPACES]
    assert not lab.root.exists() and not lab.zk_data_dir.exists()
    survivors = []
    lab_ns = {i for i in run.netns_ids.values() if i is not None}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if state == "Z":  # dead; where PID 1 does not reap orphans they stay listed
            continue
        if pid in pids or str(lab.root) in cmdline or netns_id(f"/proc/{pid}/ns/net") in lab_ns:
            survivors.append(f"{pid}: {cmdline}")
    assert not survivors
    assert host_network() == run.host_before
    assert lab.down() < DOWN_BUDGET  # idempotent

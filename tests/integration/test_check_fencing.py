"""`failoverctl check-fencing` against a real sshd whose forced command is the real
`failoverd fence-self`, and a peer with a real PostgreSQL and a VIP in a namespace of its own.

What is pinned: the check connects as the fence does and reports each way it can fail in words
an operator acts on; the dry run on the peer changes nothing (the VIP stays, PostgreSQL runs),
while the same sshd and key still fence for real; a dry-run request in any other spelling is a
real fence.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from failoverd.actions.fence import fence_peer
from failoverd.config import FENCE_DRY_RUN_COMMAND, load_config
from failoverd.core import FenceOutcome
from lab.loopback import BIN, NODES, DaemonProcess, start_sshd, write_config
from lab.postgres import BIN_DIR, PostgresServer
from lab.process import wait_for
from lab.sshd import SshServer, keygen, known_hosts_name

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.integration.conftest_servers"]

REPO = Path(__file__).resolve().parents[2]
VIP = "10.0.9.100/24"
MakePostgres = Callable[..., PostgresServer]


@pytest.fixture
def vip_netns() -> Iterator[str]:
    """A throwaway namespace with an interface flvip0 (a veth) (10.0.9.1/24) holding the VIP, as the
    peer's active would; deleted at teardown, the host's interfaces untouched."""
    name = f"flcheck-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot create a network namespace here: {e}")
    try:
        for args in (
            ["link", "add", "flvip0", "type", "veth", "peer", "name", "flvip1"],
            ["addr", "add", "10.0.9.1/24", "dev", "flvip0"],
            ["addr", "add", VIP, "dev", "flvip0"],
            ["link", "set", "flvip0", "up"],
            ["link", "set", "flvip1", "up"],
        ):
            subprocess.run(["ip", "-n", name, *args], check=True, capture_output=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)


def vip_present(netns: str) -> bool:
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "addr", "show", "dev", "flvip0"],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return any(
        f"{a['local']}/{a['prefixlen']}" == VIP
        for link in json.loads(out)
        for a in link["addr_info"]
    )


def peer_config(path: Path, *, interface: str = "flvip0", pg: PostgresServer | None = None) -> Path:
    """n2's own configuration, the one its forced command's fence-self reads."""
    postgres = ""
    if pg is not None:
        postgres = (
            f'[postgres]\nhost = "{pg.host}"\nport = {pg.port}\n'
            f'data_dir = "{pg.data_dir}"\nbin_dir = "{BIN_DIR}"\n'
        )
    path.write_text(
        'node = "n2"\n[cluster]\nname = "t"\nzookeeper_hosts = ["127.0.0.1:1"]\n'
        '[[members]]\nname = "n1"\naddress = "127.0.0.11"\n'
        '[[members]]\nname = "n2"\naddress = "127.0.0.1"\n'
        f'[vip]\naddress = "{VIP}"\ninterface = "{interface}"\n'
        "[fencing]\ncommand_timeout = 5.0\n" + postgres
    )
    return path


def forced_fence_self(config: Path, netns: str | None = None) -> str:
    """The forced command of the peer's authorized_keys: this checkout's fence-self."""
    inside = f"ip netns exec {netns} " if netns else ""
    return f"{inside}/usr/bin/env PYTHONPATH={REPO} {BIN / 'failoverd'} fence-self -c {config}"


def node_config(path: Path, server: SshServer, **fencing: str) -> Path:
    """n1's configuration: its peer n2 is the sshd on loopback."""
    keys = {
        "identity_file": f'"{server.client_key}"',
        "known_hosts": f'"{server.known_hosts}"',
        "connect_timeout": "1.0",
        "command_timeout": "10.0",
        **fencing,
    }
    path.write_text(
        'node = "n1"\n[cluster]\nname = "t"\nzookeeper_hosts = ["127.0.0.1:1"]\n'
        '[[members]]\nname = "n1"\naddress = "127.0.0.11"\n'
        f'[[members]]\nname = "n2"\naddress = "127.0.0.1"\nssh_port = {server.port}\n'
        "[fencing]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
    )
    return path


def check_fencing(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "failoverctl"), "-c", str(config), "check-fencing", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.fixture
def make_sshd(tmp_path: Path) -> Iterator[Callable[..., SshServer]]:
    made: list[SshServer] = []

    def make(forced_command: str | None, name: str = "peer") -> SshServer:
        server = SshServer(tmp_path / f"sshd-{name}", forced_command=forced_command)
        made.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.stop()


def test_ok_and_the_dry_run_changes_nothing_while_the_same_key_still_fences(
    make_sshd: Callable[..., SshServer],
    make_postgres: MakePostgres,
    vip_netns: str,
    tmp_path: Path,
) -> None:
    pg = make_postgres("checkfence")
    server = make_sshd(forced_fence_self(peer_config(tmp_path / "n2.toml", pg=pg), vip_netns))
    config = node_config(tmp_path / "n1.toml", server)
    pid = pg.pid

    done = check_fencing(config)
    assert done.returncode == 0, done.stderr + done.stdout
    line = done.stdout.strip()
    assert line.startswith(f"fencing of n2: root@127.0.0.1:{server.port}: ok: "), line
    assert "fence-self dry run on n2: ok: could fence; changed nothing" in line
    assert line.endswith(" s)")
    assert vip_present(vip_netns)  # the VIP stays
    assert pg.running and pg.pid == pid  # PostgreSQL runs on, the same postmaster
    log = server.log_path.read_text()
    assert "forced-command" in log.lower() or "Accepted publickey" in log

    # The same key, sshd and forced command fence for real: the dry run proved the real thing.
    cfg = load_config(config)
    outcome, detail = fence_peer(cfg.peer, cfg.fencing)
    assert outcome is FenceOutcome.FENCED, detail
    assert not vip_present(vip_netns)
    assert not pg.running


def test_the_dry_run_fails_on_the_peer_with_its_reason(
    make_sshd: Callable[..., SshServer], vip_netns: str, tmp_path: Path
) -> None:
    peer = peer_config(tmp_path / "n2.toml", interface="nosuch0")
    server = make_sshd(forced_fence_self(peer, vip_netns))
    done = check_fencing(node_config(tmp_path / "n1.toml", server))
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("failoverctl: error: fencing of n2: FAILED: "), done.stderr
    assert (
        "dry run failed on the peer: fence-self dry run on n2: FAILED: could not fence: "
        "vip.interface: interface 'nosuch0' does not exist"
    ) in done.stderr
    assert vip_present(vip_netns)


def test_a_missing_key_file(make_sshd: Callable[..., SshServer], tmp_path: Path) -> None:
    server = make_sshd(forced_fence_self(peer_config(tmp_path / "n2.toml")))
    missing = tmp_path / "no_such_key"
    done = check_fencing(node_config(tmp_path / "n1.toml", server, identity_file=f'"{missing}"'))
    assert done.returncode == 1
    assert (
        "FAILED: root@127.0.0.1:" in done.stderr
        and "cannot use the identity file: cannot read identity file: No such file or directory"
        in done.stderr
    ), done.stderr


def test_a_known_hosts_without_the_peer_or_with_another_key(
    make_sshd: Callable[..., SshServer], tmp_path: Path
) -> None:
    server = make_sshd(forced_fence_self(peer_config(tmp_path / "n2.toml")))
    other = make_sshd(None, name="other")
    # ssh-keyscan, as an operator fills known_hosts: here with the other server only.
    scanned = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(other.port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert known_hosts_name("127.0.0.1", other.port) in scanned
    without = tmp_path / "known_hosts.other"
    without.write_text(scanned)
    done = check_fencing(node_config(tmp_path / "n1.toml", server, known_hosts=f'"{without}"'))
    assert done.returncode == 1
    assert "host key unknown (not in known_hosts)" in done.stderr, done.stderr

    # The peer's name with another host's key: a changed host key (or the wrong machine).
    changed = tmp_path / "known_hosts.changed"
    changed.write_text(
        scanned.replace(
            known_hosts_name("127.0.0.1", other.port), known_hosts_name("127.0.0.1", server.port)
        )
    )
    done = check_fencing(node_config(tmp_path / "n1.toml", server, known_hosts=f'"{changed}"'))
    assert done.returncode == 1
    assert "host key changed (not the one in known_hosts)" in done.stderr, done.stderr


def test_a_key_the_peer_refuses(make_sshd: Callable[..., SshServer], tmp_path: Path) -> None:
    server = make_sshd(forced_fence_self(peer_config(tmp_path / "n2.toml")))
    stranger = keygen(tmp_path / "id_stranger")
    done = check_fencing(node_config(tmp_path / "n1.toml", server, identity_file=f'"{stranger}"'))
    assert done.returncode == 1
    assert "authentication refused" in done.stderr, done.stderr


def test_authorized_keys_without_the_forced_command(
    make_sshd: Callable[..., SshServer], tmp_path: Path
) -> None:
    """sshd then runs what was asked in root's shell: not failoverd's dry run, and no fence."""
    server = make_sshd(None)
    done = check_fencing(node_config(tmp_path / "n1.toml", server))
    assert done.returncode == 1
    assert "the peer did not answer with failoverd's dry run" in done.stderr, done.stderr
    assert "must force `failoverd fence-self` for this key" in done.stderr


def test_an_unreachable_peer(tmp_path: Path) -> None:
    """Nothing listens: the check fails (a fence would be UNREACHABLE, which is no proof)."""
    server = SshServer(tmp_path / "never-started")
    server.setup()
    done = check_fencing(node_config(tmp_path / "n1.toml", server))
    assert done.returncode == 1
    assert "cannot connect: connection refused" in done.stderr, done.stderr


def test_an_unknown_node_is_a_usage_error(tmp_path: Path) -> None:
    server = SshServer(tmp_path / "never-started")
    server.setup()
    done = check_fencing(node_config(tmp_path / "n1.toml", server), "--node", "n9")
    assert done.returncode == 64
    assert done.stderr == "failoverctl: error: --node 'n9' is not a member: n1, n2\n"


@pytest.mark.parametrize(
    "original",
    [None, "failoverd fence-self", FENCE_DRY_RUN_COMMAND + " ", "failoverd fence-self --dry-run;"],
)
def test_only_the_exact_dry_run_string_spares_the_node(
    original: str | None, make_postgres: MakePostgres, tmp_path: Path
) -> None:
    """fence-self as sshd starts it for a forced command: anything but the exact string, or no
    $SSH_ORIGINAL_COMMAND at all, is a real fence."""
    pg = make_postgres(f"spare{uuid.uuid4().hex[:6]}")
    config = peer_config(tmp_path / "n2.toml", interface="lo", pg=pg)
    text = config.read_text().replace(VIP, "127.77.0.100/8")  # on lo only to be absent: no change
    config.write_text(text)
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    env["PYTHONPATH"] = str(REPO)

    def fence_self(asked: str | None) -> subprocess.CompletedProcess[str]:
        run_env = dict(env) if asked is None else {**env, "SSH_ORIGINAL_COMMAND": asked}
        return subprocess.run(
            [str(BIN / "failoverd"), "fence-self", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=run_env,
            check=False,
        )

    dry = fence_self(FENCE_DRY_RUN_COMMAND)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout == "fence-self dry run on n2: ok: could fence; changed nothing\n"
    assert pg.running
    real = fence_self(original)
    assert real.stdout.startswith("fence-self on n2: done"), real.stdout + real.stderr
    assert not pg.running


# -- the daemon's periodic check --------------------------------------------------------------


def test_the_daemon_checks_the_fence_at_start_up(zookeeper: Any, tmp_path: Path) -> None:
    """Two daemons on loopback, each peer's sshd forcing the real fence-self: n1's check passes
    as a dry run (n2 keeps running); n2, whose known_hosts lost n1, warns with the reason."""
    chroot = f"/failoverd/checkfence-{uuid.uuid4().hex[:8]}"
    paths = {n: tmp_path / f"{n}.toml" for n in NODES}
    sshd = start_sshd(tmp_path, paths)
    configs = {n: write_config(paths[n], n, zookeeper.hosts, chroot, sshd=sshd) for n in NODES}
    sshd["n1"].known_hosts.write_text("")  # n2 fences n1 with this file
    daemons = [DaemonProcess(configs["n1"]), DaemonProcess(configs["n2"])]
    try:

        def event(daemon: DaemonProcess, name: str) -> dict[str, Any] | None:
            return next((e for e in daemon.events() if e.get("event") == name), None)

        ok = wait_for(lambda: event(daemons[0], "fencing_check_ok"), 30)
        assert ok is not None, daemons[0].log.read_text()[-3000:]
        assert ok["peer"] == "n2"
        assert "fence-self dry run on n2: ok: could fence; changed nothing" in ok["detail"]
        failed = wait_for(lambda: event(daemons[1], "fencing_check_failed"), 30)
        assert failed is not None, daemons[1].log.read_text()[-3000:]
        assert failed["level"] == "warning"
        assert failed["problem"] == "host_key_unknown"
        assert all(d.proc.poll() is None for d in daemons)
    finally:
        for d in daemons:
            d.stop()
        for server in sshd.values():
            server.stop()

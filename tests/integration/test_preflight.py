"""check-config's node-side checks against real files, modes, keys and the host's ``lo``.

Keys and known_hosts are written by ssh-keygen (hashed as ``HashKnownHosts yes`` writes them),
the binaries are Debian's PostgreSQL 15, and the interface is read over netlink, never changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from failoverd.config import Config, load_config
from failoverd.preflight import Finding, preflight
from lab.loopback import BIN
from lab.postgres import BIN_DIR
from lab.sshd import keygen, public_key

pytestmark = pytest.mark.integration

PEER = "127.0.0.12"
PEER_SSH_PORT = 2222


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def hashed_known_hosts(path: Path, host_key: Path, name: str) -> Path:
    """A known_hosts holding ``name``'s key, hashed by ssh-keygen -H (the name is unreadable)."""
    path.write_text(f"{name} {public_key(host_key)}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    assert name not in path.read_text()
    return path


def data_dir(path: Path, mode: int = 0o700, owner: str = "postgres") -> Path:
    path.mkdir(parents=True)
    (path / "PG_VERSION").write_text("15\n")
    shutil.chown(path, owner, owner)
    path.chmod(mode)
    return path


def node_config(tmp_path: Path, **keys: str) -> Config:
    """n1 of two members; ``keys`` as "section.key" = TOML value, added or replacing."""
    sections: dict[str, dict[str, str]] = {
        "cluster": {"name": '"t"', "zookeeper_hosts": '["127.0.0.1:1"]'},
        "fencing": {
            "identity_file": f'"{tmp_path / "id_ed25519"}"',
            "known_hosts": f'"{tmp_path / "known_hosts"}"',
        },
        "postgres": {
            "data_dir": f'"{tmp_path / "pg" / "main"}"',
            "config_file": f'"{tmp_path / "postgresql.conf"}"',
            "bin_dir": f'"{BIN_DIR}"',
        },
        "checks.db": {"type": '"postgres"'},
    }
    for dotted, value in keys.items():
        section, key = dotted.rsplit("__", 1)
        sections.setdefault(section.replace("__", "."), {})[key] = value
    tables = "".join(
        f"\n[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in body.items())
        for name, body in sections.items()
    )
    text = (
        'node = "n1"\n'
        '[[members]]\nname = "n1"\naddress = "127.0.0.11"\n'
        f'[[members]]\nname = "n2"\naddress = "{PEER}"\nssh_port = {PEER_SSH_PORT}\n' + tables
    )
    path = tmp_path / "failoverd.toml"
    path.write_text(text)
    return load_config(path)


@pytest.fixture
def good_node(tmp_path: Path) -> Path:
    """Everything in order: a 0600 key, the peer's hashed host key, a data directory."""
    keygen(tmp_path / "id_ed25519")
    host_key = keygen(tmp_path / "peer_host_key")
    hashed_known_hosts(tmp_path / "known_hosts", host_key, f"[{PEER}]:{PEER_SSH_PORT}")
    data_dir(tmp_path / "pg" / "main")
    write(tmp_path / "postgresql.conf", "port = 5432\n", 0o644)
    return tmp_path


def by_key(found: list[Finding]) -> dict[str, str]:
    return {f.key: f"{f.level}: {f.text}" for f in found}


def test_a_node_in_order_has_no_findings(good_node: Path) -> None:
    assert preflight(node_config(good_node)) == []


def test_every_problem_is_listed_at_once(good_node: Path) -> None:
    tmp = good_node
    (tmp / "id_ed25519").chmod(0o644)
    other_key = keygen(tmp / "other_host_key")
    hashed_known_hosts(tmp / "known_hosts", other_key, f"{PEER}")  # port 22, not 2222
    (tmp / "pg" / "main").chmod(0o755)
    (tmp / "postgresql.conf").unlink()
    credentials = write(tmp / "zk.credentials", "failoverd:secret\n", 0o640)
    password = write(tmp / "pgpass", "secret\n", 0o604)
    bins = tmp / "bin"
    bins.mkdir()
    for name in ("pg_ctl", "postgres", "pg_rewind", "pg_basebackup", "pg_controldata"):
        (bins / name).symlink_to(BIN_DIR / name)
    (bins / "pg_waldump").write_text("#!/bin/sh\n")  # not executable
    cfg = node_config(
        tmp,
        cluster__credentials_file=f'"{credentials}"',
        postgres__password_file=f'"{password}"',
        postgres__bin_dir=f'"{bins}"',
    )
    found = by_key(preflight(cfg))
    key = tmp / "id_ed25519"
    assert found == {
        "fencing.identity_file": (
            f"error: UNPROTECTED: {key} has mode 0644, open to group or others "
            f"(OpenSSH refuses such a key): chmod 600 {key}"
        ),
        "fencing.known_hosts": found["fencing.known_hosts"],
        "cluster.credentials_file": found["cluster.credentials_file"],
        "postgres.password_file": found["postgres.password_file"],
        "postgres.bin_dir": f"error: not executable or missing in {bins}: pg_waldump "
        "(is the PostgreSQL server package of this version installed?)",
        "postgres.config_file": f"error: {tmp / 'postgresql.conf'} is not a file",
        "postgres.data_dir": f"error: {tmp / 'pg' / 'main'}: mode 0755, not 0700 or 0750",
    }
    assert found["fencing.known_hosts"].startswith(
        f"error: {tmp / 'known_hosts'} holds no host key for the peer n2 ([{PEER}]:2222)"
    )
    assert "mode 0640" in found["cluster.credentials_file"]
    assert f"chmod 600 {credentials}" in found["cluster.credentials_file"]
    assert "mode 0604" in found["postgres.password_file"]


def test_missing_key_and_known_hosts_and_a_file_that_is_no_key(good_node: Path) -> None:
    tmp = good_node
    (tmp / "known_hosts").unlink()
    notkey = write(tmp / "notkey", "hello\n")
    found = by_key(preflight(node_config(tmp, fencing__identity_file=f'"{notkey}"')))
    assert found["fencing.known_hosts"] == (
        f"error: cannot read {tmp / 'known_hosts'}: No such file or directory"
    )
    assert found["fencing.identity_file"].startswith(
        f"error: {notkey} is not a usable SSH private key"
    )
    (tmp / "id_ed25519").unlink()
    found = by_key(preflight(node_config(tmp)))
    assert found["fencing.identity_file"] == (
        f"error: cannot read {tmp / 'id_ed25519'}: No such file or directory"
    )


def test_an_encrypted_key_is_refused(good_node: Path) -> None:
    key = good_node / "id_encrypted"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "passphrase", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    found = by_key(preflight(node_config(good_node, fencing__identity_file=f'"{key}"')))
    assert found == {
        "fencing.identity_file": f"error: {key} is encrypted: the fence cannot type a passphrase"
    }


def test_a_node_not_yet_cloned_is_told_what_will_happen(good_node: Path) -> None:
    shutil.rmtree(good_node / "pg" / "main")
    found = preflight(node_config(good_node))
    assert found == [
        Finding(
            "warning",
            "postgres.data_dir",
            f"{good_node / 'pg' / 'main'} does not exist yet: the daemon clones it from the "
            "active (pg_basebackup) when this node joins as passive",
        )
    ]
    found = preflight(node_config(good_node, postgres__rejoin='"manual"'))
    assert "`failoverctl rejoin n1 --reclone`" in found[0].text
    shutil.rmtree(good_node / "pg")
    assert by_key(preflight(node_config(good_node)))["postgres.data_dir"] == (
        f"error: {good_node / 'pg'} does not exist: a clone needs it"
    )


def test_vip_prefix_is_judged_against_the_real_interface(good_node: Path) -> None:
    """``lo`` has 127.0.0.1/8 on every Linux host; it is only read."""
    ok = node_config(good_node, vip__address='"127.77.0.100/8"', vip__interface='"lo"')
    assert preflight(ok) == []
    narrow = node_config(good_node, vip__address='"127.77.0.100/24"', vip__interface='"lo"')
    assert by_key(preflight(narrow))["vip.address"].endswith("write 127.77.0.100/8")
    outside = node_config(good_node, vip__address='"192.0.2.100/24"', vip__interface='"lo"')
    assert "is outside every network of lo" in by_key(preflight(outside))["vip.address"]
    nosuch = node_config(good_node, vip__address='"192.0.2.100/24"', vip__interface='"nosuch0"')
    assert by_key(preflight(nosuch)) == {
        "vip.interface": "error: interface 'nosuch0' does not exist on this host"
    }


def test_the_vip_is_judged_only_on_the_node(good_node: Path) -> None:
    """Off the node (a workstation checking the file) the interface of that name is another
    host's: not judged, and said so."""
    cfg = node_config(good_node, vip__address='"192.0.2.100/24"', vip__interface='"lo"')
    text = cfg.path.read_text().replace('address = "127.0.0.11"', 'address = "192.0.2.11"')
    cfg.path.write_text(text)
    found = by_key(preflight(load_config(cfg.path)))
    assert found["vip.interface"].startswith("info: not checked: this host does not have n1's"), (
        found
    )
    assert "vip.address" not in found


def test_check_config_lists_them_and_exits_78_and_offline_skips_them(good_node: Path) -> None:
    (good_node / "id_ed25519").chmod(0o640)
    cfg = node_config(good_node)

    def check_config(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "failoverd"), "check-config", *flags, str(cfg.path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    done = check_config()
    assert done.returncode == 78, done.stderr
    assert f"error: {cfg.path}: fencing.identity_file: UNPROTECTED:" in done.stderr
    assert f"info: {cfg.path}: node: this node is n1 (set by node)" in done.stderr
    assert 'node = "n1"' in done.stdout  # the effective configuration all the same
    offline = check_config("--offline")
    assert offline.returncode == 0, offline.stderr
    assert "UNPROTECTED" not in offline.stderr
    (good_node / "id_ed25519").chmod(0o600)
    assert check_config().returncode == 0
    assert os.stat(good_node / "id_ed25519").st_mode & 0o777 == 0o600


def test_check_config_refuses_the_template_for_its_placeholders_only() -> None:
    template = Path(__file__).resolve().parents[2] / "config" / "failoverd.toml"
    done = subprocess.run(
        [str(BIN / "failoverd"), "check-config", str(template)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 78
    lines = done.stderr.splitlines()
    assert len(lines) == 13, done.stderr
    assert all(f"{template}: " in ln and ": not filled in: <" in ln for ln in lines), done.stderr
    assert f"{template}: vip.interface: not filled in: <VIP-INTERFACE> is the network" in (
        done.stderr
    )

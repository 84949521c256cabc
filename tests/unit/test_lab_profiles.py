"""Each lab timing profile makes a configuration failoverd accepts (its own rules: the
self-fence deadline below the session, the loop and round-trip below that, pledges at least a
session), so `lab/lab up --profile P` cannot fail at check-config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from failoverd.config import parse_config
from lab.profiles import PROFILES, ZK_MIN_SESSION_MS, parse_profile

TEMPLATE = Path(__file__).resolve().parents[2] / "lab" / "templates" / "failoverd.toml"
OTHERS = {
    "NODE": "fln1", "PEER": "fln2", "ADDR": "10.77.0.11", "PEER_ADDR": "10.77.0.12",
    "CLUSTER": "lab", "CHROOT": "/failoverd/lab", "ZK_HOSTS_TOML": '"10.77.0.5:2181"',
    "SSH_PORT": "22", "PG_PORT": "5432", "VIP": "10.77.0.100/24", "VIP_IFACE": "eth0",
    "SSH_DIR": "/tmp/ssh", "REPO_DIR": "/repo", "LAB_ROOT": "/tmp/lab", "LAB_DIR": "/tmp/lab/fln1",
    "REPLICATION_MODE": "sync", "FAILSAFE": "true", "PG_DB": "donations",
    "PG_DATA": "/tmp/pg", "PG_BIN": "/usr/lib/postgresql/15/bin", "APP_PORT": "8080",
    "SQUID_PORT": "80", "METRICS_ENABLED": "true", "METRICS_PORT": "9641",
}  # fmt: skip


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_profile_makes_a_valid_configuration(profile: str, tmp_path: Path) -> None:
    (tmp_path / "failsafe.key").write_text("k" * 48 + "\n")  # the lab's shared secret
    (tmp_path / "failsafe.key").chmod(0o600)
    text = TEMPLATE.read_text()
    for key, value in {**OTHERS, "LAB_ROOT": str(tmp_path), **PROFILES[profile]}.items():
        text = text.replace(f"@{key}@", value)
    assert re.findall(r"@[A-Z][A-Z0-9_]*@", text) == []
    cfg = parse_config(text, Path(f"{profile}.toml"))
    assert cfg.timings.session_timeout == float(PROFILES[profile]["SESSION_TIMEOUT"])
    # ZooKeeper must grant the session the daemons ask for.
    assert ZK_MIN_SESSION_MS[profile] <= cfg.timings.session_timeout * 1000


def test_every_profile_has_a_zookeeper_minimum_and_an_unknown_one_is_refused() -> None:
    assert set(ZK_MIN_SESSION_MS) == set(PROFILES)
    with pytest.raises(ValueError, match="one of default, fast"):
        parse_profile("warp")

"""scripts/install-node, the README's install step, refuses bad input before it changes
anything (its real runs are the system tier's: tests/system/, inside booted containers)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.cluster import REPO

pytestmark = pytest.mark.integration

SCRIPT = REPO / "scripts" / "install-node"


# The commands that change a host, replaced by stubs that fail loudly: a script that got past its
# checks stops at its first change here instead of installing on the test machine.
MUTATORS = ("dpkg-query", "apt-get", "install", "pg_createcluster", "systemctl")


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name in MUTATORS:
        stub = stubs / name
        stub.write_text("#!/bin/sh\necho STUB REACHED: $0 >&2\nexit 99\n")
        stub.chmod(0o755)
    env = {
        "PATH": f"{stubs}:/usr/sbin:/usr/bin:/sbin:/bin",
        "FAILOVERD_ETC": str(tmp_path / "etc"),
        "FAILOVERD_PREFIX": str(tmp_path / "prefix"),
    }
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("no shellcheck")
    proc = subprocess.run(
        ["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the script wants root before anything else")
@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--peer-address", "10.0.0.2"], "go together"),
        (["--bogus"], "unknown argument '--bogus'"),
        (["--wheels", "/nonexistent"], "is not a directory"),
        (
            ["--peer-address", "not an address", "--peer-host-key", "K", "--peer-fencing-key", "K"],
            "must be an IP address",
        ),
        (
            ["--peer-address", "10.0.0.2", "--peer-host-key", "BAD", "--peer-fencing-key", "BAD"],
            "not an SSH public key",
        ),
        (["--postgres-password-file", "SHORT"], "at least 16 characters"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    tmp_path: Path, args: list[str], error: str
) -> None:
    (tmp_path / "BAD").write_text("ssh-ed25519 not-base64 x\n")
    (tmp_path / "SHORT").write_text("short\n")
    args = [str(tmp_path / a) if a in ("BAD", "SHORT") else a for a in args]
    proc = run(tmp_path, *args)
    assert proc.returncode != 0
    assert error in proc.stderr, proc.stderr
    assert "STUB REACHED" not in proc.stderr, proc.stderr
    assert not (tmp_path / "etc").exists() and not (tmp_path / "prefix").exists()


def test_help_says_what_it_does(tmp_path: Path) -> None:
    proc = run(tmp_path, "--help")
    assert proc.returncode == 0
    assert "--peer-host-key" in proc.stdout and "never" in proc.stdout

"""The Vagrantfile and its provisioning scripts, tested as far as a machine without VirtualBox
allows (COMPONENTS.md, "Vagrant 2.3.4"):

- ``vagrant validate --ignore-provider``: Ruby errors, misspelt keys, provisioner files missing;
- ``VAGRANT_DEFAULT_PROVIDER=virtualbox vagrant validate`` with a stub ``VBoxManage`` first on
  PATH, so that the VirtualBox provider blocks are checked too (a misspelt provider setting is
  caught there and only there: the negative control below shows it);
- ``shellcheck`` on every provisioning script (vagrant/*.sh), the lab's role scripts they call
  (lab/roles/*.sh) and the unit's ExecStopPost helper: no findings at all;
- that the VMs are the lab's cluster: same names, addresses, VIP, initial primary, Debian 12.

``vagrant validate`` writes ``.vagrant/`` next to the Vagrantfile, so it runs in a copy, with
VAGRANT_HOME in the test's temporary directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab import cluster

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VAGRANTFILE = REPO / "Vagrantfile"
PROVISIONING = sorted((REPO / "vagrant").glob("*.sh"))
ROLE_SCRIPTS = sorted((REPO / "lab" / "roles").glob("*.sh"))
STOP_POST = REPO / "systemd" / "failoverd-stop-post"
VBOX_VERSION = "7.0.14r161095"

needs_vagrant = pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant not installed")
needs_shellcheck = pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what the Vagrantfile refers to: it, the provisioning scripts, the unit, the lab."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy2(VAGRANTFILE, root / "Vagrantfile")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".vagrant")
    for name in ("vagrant", "systemd", "lab"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    return root


def vagrant(
    project: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LC_ALL": "C.UTF-8",
        "VAGRANT_HOME": str(tmp_path / "vagrant.d"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",  # no version check over the network
        **(env or {}),
    }
    return subprocess.run(
        ["vagrant", *args, "--no-color"],
        cwd=project,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stub_virtualbox(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(environment, call log): a VBoxManage that answers ``--version`` and records its calls."""
    stub_dir = tmp_path / "stub-bin"
    stub_dir.mkdir()
    calls = tmp_path / "vboxmanage.calls"
    stub = stub_dir / "VBoxManage"
    stub.write_text(f'#!/bin/sh\necho "$*" >>"{calls}"\necho {VBOX_VERSION}\n')
    stub.chmod(0o755)
    env = {
        "PATH": f"{stub_dir}:/usr/local/bin:/usr/bin:/bin",
        "VAGRANT_DEFAULT_PROVIDER": "virtualbox",
    }
    return env, calls


@needs_vagrant
def test_validate_ignoring_the_provider(project: Path, tmp_path: Path) -> None:
    done = vagrant(project, tmp_path, "validate", "--ignore-provider")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Vagrantfile validated successfully" in done.stdout
    assert (project / ".vagrant").is_dir()  # written in the copy, never in the checkout


@needs_vagrant
def test_validate_with_the_virtualbox_provider_blocks(project: Path, tmp_path: Path) -> None:
    env, calls = stub_virtualbox(tmp_path)
    done = vagrant(project, tmp_path, "validate", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Vagrantfile validated successfully" in done.stdout
    assert "--version" in calls.read_text()  # the provider was really loaded


@needs_vagrant
def test_a_misspelt_provider_setting_is_caught_only_with_the_provider(
    project: Path, tmp_path: Path
) -> None:
    """Negative control: the stub is what makes the provider blocks count."""
    text = (project / "Vagrantfile").read_text()
    assert "vb.memory = 768" in text
    (project / "Vagrantfile").write_text(text.replace("vb.memory = 768", "vb.memroy = 768"))
    ignored = vagrant(project, tmp_path, "validate", "--ignore-provider")
    assert ignored.returncode == 0, ignored.stdout + ignored.stderr
    env, _calls = stub_virtualbox(tmp_path)
    checked = vagrant(project, tmp_path, "validate", env=env)
    assert checked.returncode != 0
    assert "memroy" in checked.stdout + checked.stderr


@needs_vagrant
def test_a_missing_provisioning_script_is_caught(project: Path, tmp_path: Path) -> None:
    (project / "vagrant" / "node-up.sh").unlink()
    done = vagrant(project, tmp_path, "validate", "--ignore-provider")
    assert done.returncode != 0
    assert "node-up.sh" in done.stdout + done.stderr


@needs_shellcheck
@pytest.mark.parametrize(
    "script",
    [*PROVISIONING, *ROLE_SCRIPTS, STOP_POST],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_shellcheck_finds_nothing(script: Path) -> None:
    # -x follows the role scripts' `source common.sh` (they name it with source-path=SCRIPTDIR).
    done = subprocess.run(
        ["shellcheck", "-x", "--severity=style", str(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_every_provisioning_script_is_used_and_exists() -> None:
    text = VAGRANTFILE.read_text()
    used = set(re.findall(r'path: "(vagrant/[^"]+)"', text))
    assert used == {str(p.relative_to(REPO)) for p in PROVISIONING}
    for script in PROVISIONING:
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
        assert script.read_text().startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in script.read_text()


def test_the_vms_are_the_lab_cluster() -> None:
    """Same names, addresses, VIP, ZooKeeper port and initial primary as lab/cluster.py."""
    text = VAGRANTFILE.read_text()
    assert 'ENV.fetch("FAILOVERD_BOX", "debian/bookworm64")' in text  # Debian 12
    zk = re.search(r'ZK = \{ name: "(\w+)", ip: "([\d.]+)", port: (\d+) \}', text)
    assert zk is not None
    assert (zk.group(1), zk.group(2), int(zk.group(3))) == (
        cluster.ZK_NS,
        cluster.ADDRESSES[cluster.ZK_NS],
        cluster.ZK_PORT,
    )
    nodes = dict(re.findall(r'"(fln\d)" => "([\d.]+)"', text))
    assert nodes == {n: cluster.ADDRESSES[n] for n in cluster.NODES}
    assert f'VIP = "{cluster.VIP}"' in text
    assert f'INITIAL_PRIMARY = "{cluster.INITIAL_PRIMARY}"' in text
    # failoverd runs under the project's unit, installed by the provisioning.
    install = (REPO / "vagrant" / "install.sh").read_text()
    assert "systemd/failoverd.service" in install and "failoverd-stop-post" in install
    up = (REPO / "vagrant" / "node-up.sh").read_text()
    assert "systemctl start failoverd.service" in up
    for role in ("postgres", "app", "squid", "sshd", "failoverd"):
        assert f"role {role} " in up, role

"""The systemd lab's rootfs and wheelhouse, built once per machine and cached (lab/containers.py).

The rootfs is Debian 12 from ``debootstrap --variant=minbase`` with systemd, from the mirror this
machine's own apt uses (never a hard-coded one), with the node packages installed without
booting (nothing starts) and no identity baked in (machine-id, SSH host keys): each container
gets its own copy. The wheelhouse holds failoverd's dependencies for ``install-node --wheels``:
the lab network has no route out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from lab.cluster import REPO, SYSTEM_PATH, LabError

CACHE: Final = Path(os.environ.get("LAB_CACHE", "/var/cache/failoverd-lab"))
ROOTFS_VERSION: Final = 1  # bump when NODE_PACKAGES or the preparation below change
ROOTFS_TARBALL: Final = CACHE / f"rootfs-bookworm-v{ROOTFS_VERSION}.tar"
SUITE: Final = "bookworm"
BASE_PACKAGES: Final = ("systemd", "systemd-sysv", "dbus", "python3", "ca-certificates")
NODE_PACKAGES: Final = (
    "postgresql", "postgresql-15", "squid", "openssh-server", "openssh-client",
    "iputils-arping", "iproute2", "python3-venv", "curl", "procps", "util-linux",
)  # fmt: skip


class ContainerError(LabError):
    """A container step failed; the message says which, with the command's output."""


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (never a hard-coded one): the first ``URIs:``
    of a deb822 source for the distribution, else the first ``deb`` line of sources.list."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                (k.strip(), v.strip())
                for k, _, v in (line.partition(":") for line in stanza.splitlines())
                if not k.startswith("#") and v
            )
            suites = fields.get("Suites", "").split()
            if SUITE in suites and "deb" in fields.get("Types", "").split():
                return fields["URIs"].split()[0]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and SUITE in parts[2:]:
                uri = next((p for p in parts[1:] if not p.startswith("[")), None)
                if uri:
                    return uri
    raise ContainerError("no Debian bookworm source in /etc/apt: cannot build the rootfs")


def run_host(
    argv: Sequence[str],
    timeout: float,
    *,
    what: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> str:
    """Run a host command; its output, or ContainerError with it."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or {"PATH": SYSTEM_PATH, "LC_ALL": "C", "HOME": "/root"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ContainerError(f"{what}: no result within {timeout:g} s") from None
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise ContainerError(f"{what} failed (exit {proc.returncode}):\n{out[-3000:]}")
    return out


def nspawn_offline(rootfs: Path, argv: Sequence[str], timeout: float, what: str) -> str:
    """A command in the rootfs without booting it (host network: apt reaches the mirror)."""
    return run_host(
        [
            "systemd-nspawn", "-q", "-D", str(rootfs), "--keep-unit", "--register=no",
            "--console=pipe", "--setenv=DEBIAN_FRONTEND=noninteractive", "--setenv=LC_ALL=C",
            *argv,
        ],
        timeout,
        what=what,
    )  # fmt: skip


def build_rootfs(log: Callable[[str], None]) -> Path:
    """The cached rootfs tarball, built when absent (≈ 70 s, once per machine)."""
    if ROOTFS_TARBALL.exists():
        return ROOTFS_TARBALL
    CACHE.mkdir(parents=True, exist_ok=True)
    build = CACHE / f"build-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    t0 = time.monotonic()
    mirror = apt_mirror()
    log(f"rootfs: debootstrap {SUITE} from {mirror} (once per machine)")
    try:
        run_host(
            [
                "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                SUITE, str(build), mirror,
            ],
            600,
            what="debootstrap",
        )  # fmt: skip
        # The machine's own apt sources (debootstrap's default lacks updates and security).
        (build / "etc/apt/sources.list").unlink(missing_ok=True)
        for src in Path("/etc/apt/sources.list.d").glob("*.sources"):
            shutil.copy(src, build / "etc/apt/sources.list.d" / src.name)
        if Path("/etc/apt/sources.list").exists():
            shutil.copy("/etc/apt/sources.list", build / "etc/apt/sources.list")
        policy = build / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        log(f"rootfs: installing {' '.join(NODE_PACKAGES)}")
        nspawn_offline(
            build,
            [
                "sh", "-c",
                "apt-get update -qq && apt-get install -y -qq --no-install-recommends "
                + " ".join(NODE_PACKAGES) + " && apt-get clean && rm -rf /var/lib/apt/lists/*",
            ],
            600,
            "apt-get install in the rootfs",
        )  # fmt: skip
        policy.unlink()
        # Each copy gets its own identity at first boot (machine-id) and from the lab (SSH
        # host keys, its own PostgreSQL cluster): none is baked in.
        (build / "etc/machine-id").write_text("")
        (build / "var/lib/dbus/machine-id").unlink(missing_ok=True)
        for key in (build / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        tmp = ROOTFS_TARBALL.with_suffix(".tmp")
        run_host(
            ["tar", "-C", str(build), "--numeric-owner", "-cf", str(tmp), "."], 300, what="tar"
        )
        tmp.rename(ROOTFS_TARBALL)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    log(f"rootfs: {ROOTFS_TARBALL} in {time.monotonic() - t0:.0f} s")
    return ROOTFS_TARBALL


def build_wheels(venv: Path, log: Callable[[str], None]) -> Path:
    """A wheelhouse with failoverd's dependencies and build backend, for ``install-node
    --wheels`` in containers whose network has no way out; cached by pyproject.toml."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    wheels = CACHE / f"wheels-{digest}"
    if (wheels / ".complete").exists():
        return wheels
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    log(f"wheels: {wheels}")
    src = CACHE / f"src-{os.getpid()}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    try:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        shutil.copytree(REPO / "failoverd", src / "failoverd")
        pip = str(venv / "bin" / "pip")
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        run_host([pip, "wheel", "-q", "-w", str(wheels), str(src)], 600, what="pip wheel", env=env)
        run_host(
            [pip, "download", "-q", "-d", str(wheels), "setuptools>=68", "wheel", "pip"],
            600,
            what="pip download",
            env=env,
        )
    finally:
        shutil.rmtree(src, ignore_errors=True)
    # The project's own wheel is built by install-node from the checkout, not taken from here.
    for stale in wheels.glob("failoverd-*.whl"):
        stale.unlink()
    (wheels / ".complete").touch()
    return wheels

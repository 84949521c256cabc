"""The systemd tier's shared lab: fln1 and fln2 booted as Debian containers with systemd as PID 1,
installed by scripts/install-node (lab/containers.py), one lab for the whole module.

Only one lab can exist on a machine (fixed namespace names): the fixture holds
/tmp/failoverd-lab.lock for as long as the lab is up, and takes it down when the module ends.
On a failure, every container's journal and console log are kept under the test's own
directory in pytest's basetemp.

Helpers for tests (any module of this tier can use them)::

    systemd_lab.run(node, argv)          a command inside the container (nsenter)
    systemd_lab.systemctl(node, ...)     raises on a non-zero exit
    systemd_lab.journal(node, *args)     journalctl in the container (or from its files)
    systemd_lab.failoverctl(node, ...)   the installed failoverctl, its /etc/failoverd config
    systemd_lab.unit_state(node)         ActiveState, SubState, Result, StatusText, ...
    systemd_lab.wait_redundant(timeout)  one active, the other streaming from it
    systemd_lab.psql(node, sql)          as postgres over the local socket
    systemd_lab.poweroff(node), start_container(node)
    systemd_lab.lab                      the namespace lab underneath (network, ZooKeeper)
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cluster import Lab
from lab.containers import SystemdLab

LOCK = Path("/tmp/failoverd-lab.lock")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, systemd-nspawn)"
    for tool in ("systemd-nspawn", "debootstrap"):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/setup installs it)"
    return None


@pytest.fixture(scope="module")
def systemd_lab(request: pytest.FixtureRequest) -> Iterator[SystemdLab]:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        lab = SystemdLab(Lab(log=lambda line: print(line, flush=True)))
        failed_before = request.session.testsfailed
        try:
            lab.down()  # a lab left behind by a killed run
            lab.up()
            yield lab
        finally:
            if request.session.testsfailed > failed_before:
                kept = Path(str(request.config._tmp_path_factory.getbasetemp()))  # type: ignore[attr-defined]
                lab.collect_logs(kept / f"systemd-lab-{request.module.__name__.split('.')[-1]}")
            lab.down()


@pytest.fixture
def keep_logs(
    systemd_lab: SystemdLab, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Path]:
    """The containers' journals into this test's directory when it fails."""
    yield tmp_path
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        systemd_lab.collect_logs(tmp_path / "journals")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep

"""`failoverctl` from an admin host: only the cluster's name and ZooKeeper hosts, against a real
ZooKeeper and real daemons; and `status --json` when ZooKeeper does not answer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from failoverd.core import ClusterView, SwitchoverRequest
from failoverd.zk import ZkCluster
from lab.loopback import BIN
from lab.process import wait_for
from lab.zookeeper import ZooKeeperServer, free_port
from tests.integration.conftest import MakeCluster
from tests.integration.test_daemon import bring_up, cluster, roles  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def admin(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """failoverctl with no node configuration anywhere: no $FAILOVERD_CONFIG, no /etc file."""
    assert not Path("/etc/failoverd/failoverd.toml").exists()
    env = {k: v for k, v in os.environ.items() if k != "FAILOVERD_CONFIG"}
    return subprocess.run(
        [str(BIN / "failoverctl"), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def flags(zookeeper: ZooKeeperServer, chroot: str) -> list[str]:
    return ["--zookeeper", zookeeper.hosts, "--cluster", "t", "--chroot", chroot]


def test_status_and_promote_from_flags_alone(
    cluster: dict[str, Any],  # noqa: F811
    zookeeper: ZooKeeperServer,
) -> None:
    active, passive, daemons = bring_up(cluster)
    zk, chroot = cluster["zk"], cluster["chroot"]
    done = admin(*flags(zookeeper, chroot), "status", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["state"] == "healthy" and doc["lease"]["node"] == active
    assert {m["node"] for m in doc["members"]} == {active, passive}

    # The members come from ZooKeeper: an unknown node is refused once it has been asked.
    unknown = admin(*flags(zookeeper, chroot), "promote", "n9", "--yes")
    assert unknown.returncode == 64, unknown.stderr
    assert "unknown node 'n9' (members: n1, n2)" in unknown.stderr

    # The same flags after the command: a planned switchover, done.
    done = admin("promote", "--yes", "--timeout", "20", *flags(zookeeper, chroot))
    assert done.returncode == 0, done.stdout + done.stderr
    assert roles(zk, chroot) == {active: "passive", passive: "active"}

    # The passive's daemon stops: ZooKeeper still names it (it released the lease last), and
    # the admin host says it is missing rather than calling the cluster healthy.
    daemons[active].signal(signal.SIGTERM)
    assert daemons[active].wait(15) == 0
    done = admin(*flags(zookeeper, chroot), "status")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{active} publishes no status" in done.stdout


def test_an_admin_file_after_the_command(
    cluster: dict[str, Any],  # noqa: F811
    zookeeper: ZooKeeperServer,
    tmp_path: Path,
) -> None:
    active, _passive, _daemons = bring_up(cluster)
    file = tmp_path / "failoverctl.toml"
    file.write_text(
        f'[cluster]\nname = "t"\nzookeeper_hosts = {json.dumps(zookeeper.hosts.split(","))}\n'
        f'chroot = "{cluster["chroot"]}"\n'
    )
    done = admin("status", "--json", "-c", str(file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["lease"]["node"] == active
    history = admin("history", "-c", str(file))
    assert history.returncode == 0 and "bootstrap" in history.stdout, history.stdout


def test_status_json_when_zookeeper_does_not_answer() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    argv = ["--timeout", "1", "--zookeeper", nobody, "--cluster", "t", "status", "--json"]
    done = admin(*argv)
    assert done.returncode == 3, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["state"] == "unknown" and doc["exit_code"] == 3 and doc["cluster"] == "t"
    assert doc["error"].startswith("ZooKeeper unreachable: ")
    assert "Traceback" not in done.stderr
    # Without --json: the same exit code, one line on stderr, nothing on stdout.
    plain = admin(*argv[:-1])
    assert plain.returncode == 3 and plain.stdout == "" and plain.stderr.count("\n") == 1


def test_pause_withdraws_a_pending_switchover(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster, zk_chroot: str
) -> None:
    """A request written before the pause would be acted on after the resume, moving the
    service then, unasked: the pause withdraws it and says so. A pause with none is silent."""
    writer = make_cluster(zookeeper, "ops")
    request = SwitchoverRequest(
        target="n2", from_epoch=3, requested_by="alice@ops", deadline=time.time() + 600, force=True
    )
    writer.request_switchover(request)
    assert wait_for(lambda: current(writer).switchover == request, 5)

    done = admin(*flags(zookeeper, zk_chroot), "pause")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "withdrew the pending switchover (forced) to n2, requested by alice@ops" in done.stdout
    assert wait_for(lambda: current(writer).switchover is None and current(writer).paused, 5)

    again = admin(*flags(zookeeper, zk_chroot), "pause")
    assert again.returncode == 0 and "withdrew" not in again.stdout, again.stdout + again.stderr


def current(zk: ZkCluster) -> ClusterView:
    view = zk.view()
    assert view is not None
    return view

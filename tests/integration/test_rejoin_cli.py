"""`failoverctl rejoin` and the rejoin request in `failoverctl status`, as processes against a
real ZooKeeper. The nodes' daemons are played by ZkCluster clients writing what a daemon would."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from failoverd.core import ClusterView, MemberStatus
from failoverd.core.model import Position
from failoverd.zk import ZkCluster
from lab.loopback import BIN, write_config
from lab.process import wait_for
from lab.zookeeper import ZooKeeperServer, free_port

from .conftest import MakeCluster

pytestmark = pytest.mark.integration


def ctl(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "failoverctl"), "-c", str(config), *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def member(node: str, role: str, db_role: str, reason: str, eligible: bool = False) -> MemberStatus:
    return MemberStatus(
        node=node,
        role=role,
        epoch=1,
        eligible=eligible,
        healthy=True,
        reason=reason,
        db_role=db_role,
    )


class Lines:
    """A child's stdout read line by line as it comes (unbuffered: select and a buffered reader
    do not mix), each wait bounded."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._buffer = b""
        self.seen: list[str] = []

    def expect(self, words: str, timeout: float) -> None:
        """Read lines until one holds ``words``; AssertionError after ``timeout`` or at EOF."""
        deadline = time.monotonic() + timeout
        for _ in range(1000):
            if b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                self.seen.append(line.decode())
                if words in self.seen[-1]:
                    return
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                break
            chunk = os.read(self._fd, 65536)
            if not chunk:
                break  # it exited
            self._buffer += chunk
        raise AssertionError(f"failoverctl never said {words!r}; it said {self.seen}")

    def rest(self, more: bytes) -> str:
        """What was not read yet, with ``more`` (the remainder ``communicate`` returned)."""
        return (self._buffer + more).decode()


def view_of(cluster: ZkCluster) -> ClusterView:
    view = cluster.view()
    assert view is not None
    return view


@pytest.fixture
def config(tmp_path: Path, zookeeper: ZooKeeperServer, zk_chroot: str) -> Path:
    """An operator's configuration for the test's cluster (members n1 and n2)."""
    return write_config(tmp_path / "ctl.toml", "n1", zookeeper.hosts, zk_chroot)


@pytest.fixture
def active(zookeeper: ZooKeeperServer, make_cluster: MakeCluster) -> ZkCluster:
    """n1's daemon: holds the lease at epoch 1 and publishes itself active."""
    n1 = make_cluster(zookeeper, "n1")
    assert n1.acquire(0) == 1
    n1.claim_member(member("n1", "active", "primary", "active (epoch 1)"), wait=1.0)
    return n1


def test_an_unknown_node_is_refused_before_zookeeper_is_contacted(tmp_path: Path) -> None:
    closed = write_config(tmp_path / "n1.toml", "n1", f"127.0.0.1:{free_port()}", "/failoverd/x")
    started = time.monotonic()
    done = ctl(closed, "--timeout", "20", "rejoin", "n9", "--yes")
    took = time.monotonic() - started
    assert done.returncode == 64, done  # a usage error: decided from the configuration alone
    assert (
        done.stderr == "failoverctl: error: rejoin refused: unknown node 'n9' (members: n1, n2)\n"
    )
    assert took < 15, f"took {took:.1f} s: it waited for ZooKeeper (--timeout 20)"
    # The same configuration with a member does go to ZooKeeper: the refusal came first.
    known = ctl(closed, "--timeout", "0.5", "rejoin", "n2", "--yes")
    assert known.returncode == 1 and "ZooKeeper unreachable" in known.stderr, known


def test_the_active_node_and_a_paused_cluster_are_refused_and_nothing_is_written(
    config: Path, active: ZkCluster, raw_client: Callable[..., KazooClient],
    zookeeper: ZooKeeperServer, zk_chroot: str,
) -> None:  # fmt: skip
    raw = raw_client(zookeeper)
    done = ctl(config, "rejoin", "n1", "--yes")
    assert done.returncode == 75, done  # refused by the cluster's state
    assert done.stderr.count("\n") == 1
    assert "rejoin refused: n1 is the active node (it holds the lease, epoch 1)" in done.stderr

    unconfirmed = ctl(config, "rejoin", "n2", stdin="n\n")
    assert unconfirmed.returncode == 1 and "not confirmed; nothing changed" in unconfirmed.stderr
    assert "rejoin n2 as a passive of n1 (epoch 1)?" in unconfirmed.stdout

    active.set_paused(True)
    paused = ctl(config, "rejoin", "n2", "--yes")
    assert paused.returncode == 75, paused
    assert "rejoin refused: the cluster is paused: resume it first" in paused.stderr
    assert raw.get_children(f"{zk_chroot}/rejoin") == []


def test_rejoin_is_followed_until_the_node_streams_and_status_shows_the_request(
    config: Path, active: ZkCluster, zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
) -> None:  # fmt: skip
    position = Position("n1", 1, 0x3000060, 1, time.time())
    active.record_position(position)
    n2 = make_cluster(zookeeper, "n2")
    n2.claim_member(
        member("n2", "fenced", "stopped", "diverged from n1: waiting for a rejoin"), 1.0
    )
    proc = subprocess.Popen(
        [str(BIN / "failoverctl"), "-c", str(config), "rejoin", "n2", "--yes", "--timeout", "30"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = Lines(proc)
    try:
        lines.expect("requested: rejoin n2 as a passive of n1; following for up to 30 s", 20)
        lines.expect("n2 is fenced, database stopped: diverged from n1", 10)
        assert wait_for(lambda: view_of(n2).rejoin_request("n2") is not None, 10), view_of(n2)
        request = view_of(n2).rejoin_request("n2")
        assert request is not None and not request.reclone and "@" in request.requested_by

        status = ctl(config, "status", "--json")
        doc = json.loads(status.stdout)
        assert status.returncode == 1, status  # degraded (n2 fenced): the codes are unchanged
        assert doc["rejoin_requests"] == [dataclasses.asdict(request)]
        assert doc["position"] == dataclasses.asdict(position)
        table = ctl(config, "status")
        assert f"rejoin requested: n2 by {request.requested_by}" in table.stdout

        # n2's daemon acts on it: rewinds, streams from n1, deletes its request.
        n2.publish(member("n2", "fenced", "stopped", "rewinding from n1"))
        lines.expect("n2 is fenced, database stopped: rewinding from n1", 10)
        n2.publish(member("n2", "passive", "replica", "streaming from n1", eligible=True))
        n2.clear_rejoin("n2")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    rest = lines.rest(out)
    assert proc.returncode == 0, [*lines.seen, rest, err.decode()]
    assert re.search(r"done: n2 is passive and streaming from n1, after \d+\.\d s\n", rest), rest
    assert wait_for(lambda: view_of(active).rejoin_requests == (), 5)


def test_a_rejoin_that_does_not_finish_in_time_says_where_the_node_is(
    config: Path, active: ZkCluster, zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
) -> None:  # fmt: skip
    n2 = make_cluster(zookeeper, "n2")
    stuck = "rewind failed: pg_rewind exited 1"
    n2.claim_member(member("n2", "fenced", "stopped", stuck), wait=1.0)
    started = time.monotonic()
    done = ctl(config, "rejoin", "n2", "--reclone", "--yes", "--timeout", "1.5")
    took = time.monotonic() - started
    assert done.returncode == 1, done
    assert "requested: re-clone n2 as a passive of n1" in done.stdout
    assert (
        f"n2 has not rejoined within 1.5 s: n2 is fenced, database stopped: {stuck}; "
        "the request stays until its daemon acts on it" in done.stderr
    ), done.stderr
    assert done.stderr.count("\n") == 1
    assert took >= 1.5
    request = view_of(n2).rejoin_request("n2")
    assert request is not None and request.reclone  # it stays for the daemon

"""The README's main job, for now: a real ZooKeeper and two failoverd daemons on loopback.

It shows the lease holder, kills it with SIGKILL, and shows the other node take over with the
time it took, ``--runs`` times (restarting the killed daemon in between, so it comes back as
passive: no automatic fail-back). The next issues grow this into the two-node lab.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from lab.loopback import BIN, NODES, DaemonProcess, start_sshd, write_config
from lab.process import wait_for
from lab.sshd import SshServer
from lab.zookeeper import ZooKeeperServer

SESSION_TIMEOUT = 2.0
CHROOT = "/failoverd/demo"


class Node:
    """One demo daemon; restartable (a new DaemonProcess each time), its log kept across runs."""

    def __init__(self, name: str, config: Path, logdir: Path) -> None:
        self.name = name
        self.config = config
        self.logfile = logdir / f"{name}.log"
        self.proc: DaemonProcess | None = None

    def start(self) -> None:
        self.proc = DaemonProcess(self.config, log=self.logfile)

    def kill(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            self.proc.signal(sig)

    def wait(self, timeout: float) -> int | None:
        return None if self.proc is None else self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def status(config: Path) -> str:
    done = subprocess.run(
        [str(BIN / "failoverctl"), "-c", str(config), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return (done.stdout + done.stderr).rstrip() + f"\n(exit code {done.returncode})"


def lease_holder(zk: KazooClient) -> tuple[str | None, int]:
    try:
        data, _ = zk.get(f"{CHROOT}/lease")
    except NoNodeError:
        return None, 0
    record: dict[str, Any] = json.loads(data)
    return str(record["node"]), int(record["epoch"])


def member_role(zk: KazooClient, node: str) -> str | None:
    try:
        data, _ = zk.get(f"{CHROOT}/members/{node}")
    except NoNodeError:
        return None
    return str(json.loads(data).get("role"))


def holds_lease(zk: KazooClient, node: str) -> bool:
    return lease_holder(zk)[0] == node


def has_role(zk: KazooClient, node: str, role: str) -> bool:
    return member_role(zk, node) == role


def wait_for_time(predicate: Callable[[], object], timeout: float) -> float | None:
    """The monotonic time at which ``predicate`` became true (polled every 5 ms), or None."""
    return wait_for(lambda: bool(predicate()) and time.monotonic(), timeout, step=0.005) or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="kill/takeover rounds (default 1)")
    parser.add_argument("--quiet", action="store_true", help="only the timings")
    args = parser.parse_args(argv)
    say = (lambda *a: None) if args.quiet else print

    base = Path(tempfile.mkdtemp(prefix="failoverd-demo-"))
    os.chmod(base, 0o755)
    server = ZooKeeperServer(base / "zk", max_session_timeout_ms=20000)
    nodes: dict[str, Node] = {}
    sshd: dict[str, SshServer] = {}
    takeovers: list[float] = []
    try:
        server.start()
        say(f"ZooKeeper 3.8 on {server.hosts} (pid {server.pid}); daemon logs in {base}")
        paths = {n: base / f"{n}.toml" for n in NODES}
        sshd = start_sshd(base, paths)
        for name in NODES:
            config = write_config(
                paths[name],
                name,
                server.hosts,
                CHROOT,
                cluster="demo",
                session=SESSION_TIMEOUT,
                sshd=sshd,
            )
            nodes[name] = Node(name, config, base)
        zk = KazooClient(hosts=server.hosts)
        zk.start(timeout=10)
        for node in nodes.values():
            node.start()
        if (
            wait_for_time(
                lambda: all(member_role(zk, n) in ("active", "passive") for n in nodes), 30
            )
            is None
        ):
            raise SystemExit(f"daemons did not come up; see logs in {base}")
        say("\n== status before ==")
        say(status(nodes["n1"].config))
        for run in range(1, args.runs + 1):
            holder, epoch = lease_holder(zk)
            if holder is None:
                raise SystemExit("no lease holder")
            other = next(n for n in nodes if n != holder)
            say(f"\n== run {run}: SIGKILL the active daemon {holder} (epoch {epoch}) ==")
            killed_at = time.monotonic()
            nodes[holder].kill(signal.SIGKILL)
            nodes[holder].wait(5)
            lease_at = wait_for_time(partial(holds_lease, zk, other), SESSION_TIMEOUT + 15)
            active_at = wait_for_time(partial(has_role, zk, other, "active"), 10)
            if lease_at is None or active_at is None:
                raise SystemExit(f"{other} did not take over; see logs in {base}")
            takeover = active_at - killed_at
            takeovers.append(takeover)
            say(
                f"  +{lease_at - killed_at:6.3f} s  {other} holds the lease "
                f"(the session of {holder} expired after ~{SESSION_TIMEOUT:g} s)"
            )
            say(
                f"  +{takeover:6.3f} s  {other} is active, epoch {lease_holder(zk)[1]} "
                f"(it fenced {holder} over SSH first: the lease had expired)"
            )
            say(f"takeover in {takeover:.3f} s")
            nodes[holder].start()  # comes back as passive: no automatic fail-back
            if wait_for_time(partial(has_role, zk, holder, "passive"), 30) is None:
                raise SystemExit(f"{holder} did not come back as passive; see {base}")
        say("\n== status after ==")
        say(status(nodes["n1"].config))
        zk.stop()
        zk.close()
    finally:
        for node in nodes.values():
            node.stop()
        for ssh in sshd.values():
            ssh.stop()
        server.stop()
    if takeovers:
        print(
            f"\ntakeover after SIGKILL over {len(takeovers)} run(s), session timeout "
            f"{SESSION_TIMEOUT:g} s: min {min(takeovers):.3f} s, "
            f"median {statistics.median(takeovers):.3f} s, max {max(takeovers):.3f} s"
        )
    subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

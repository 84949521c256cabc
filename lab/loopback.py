"""Two failoverd nodes on loopback (127.0.0.11 and .12) for the demo and the daemon tests:
a real ZooKeeper, real daemons, and a real sshd per node whose forced command is
`failoverd fence-self`, so fencing goes over SSH as in production. No VIP and no database:
the host's interfaces stay untouched; the namespace lab (lab/lab) has both."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab.sshd import SshServer, stand_in_fencing

NODES = {"n1": "127.0.0.11", "n2": "127.0.0.12"}
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def start_sshd(base: Path, configs: dict[str, Path]) -> dict[str, SshServer]:
    """One sshd per node, on that node's address, running fence-self with its config."""
    servers = {
        n: SshServer(
            base / f"sshd-{n}",
            host=NODES[n],
            # This checkout's failoverd, as lab/cluster.py does: sshd passes no PYTHONPATH.
            forced_command=f"/usr/bin/env PYTHONPATH={REPO} {BIN / 'failoverd'} fence-self "
            f"-c {configs[n]}",
        )
        for n in NODES
    }
    for server in servers.values():
        server.start()
    return servers


def write_config(
    path: Path,
    node: str,
    hosts: str,
    chroot: str,
    *,
    cluster: str = "t",
    extra: str = "",
    session: float = 1.0,
    sshd: dict[str, SshServer] | None = None,
    addresses: Mapping[str, str] = NODES,
    timings: Mapping[str, float] | None = None,
) -> Path:
    """A node's config; with ``sshd`` (one server per node) fencing goes over real SSH.

    ``hosts``: one ``host:port`` or several joined by commas (an ensemble). ``addresses``: the
    members' names and addresses, for clusters that must not share NODES' (bench/zk_scale.py
    runs many side by side). ``timings``: ``[timings]`` keys added or overriding the short ones of
    the tests; ``extra``: more tables."""
    timing_lines = "".join(
        f"{key} = {value}\n"
        for key, value in {
            "session_timeout": session,
            "start_timeout": 2.0,
            **(timings or {}),
        }.items()
    )
    ports = {n: (sshd[n].port if sshd else 22) for n in addresses}
    members = "\n".join(
        f'[[members]]\nname = "{n}"\naddress = "{a}"\nssh_port = {ports[n]}\n'
        for n, a in addresses.items()
    )
    peer = next(n for n in addresses if n != node)
    if sshd is not None:
        extra += (
            f'\n[fencing]\nidentity_file = "{sshd[peer].client_key}"\n'
            f'known_hosts = "{sshd[peer].known_hosts}"\nconnect_timeout = 0.5\n'
        )
    elif "[fencing]" not in extra:
        # Files that check-config accepts, for a peer that no sshd of the test serves; no
        # periodic fencing check, which could only fail there.
        identity, known = stand_in_fencing(path.parent, list(addresses.values()))
        extra += (
            f'\n[fencing]\nidentity_file = "{identity}"\nknown_hosts = "{known}"\n'
            "check_interval = 0\n"
        )
    path.write_text(
        f'node = "{node}"\n{extra}\n[cluster]\nname = "{cluster}"\n'
        f"zookeeper_hosts = {json.dumps(hosts.split(','))}\n"
        f'chroot = "{chroot}"\n\n{members}\n'
        f"\n[timings]\n{timing_lines}"
        "\n[metrics]\nenabled = false\n"
    )
    return path


class DaemonProcess:
    """``failoverd run -c CONFIG`` as a child: output to a log, signalled and stopped by PID."""

    def __init__(
        self, config: Path, log: Path | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self.log = log if log is not None else config.with_suffix(".log")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "failoverd"), "run", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
                start_new_session=True,  # a Ctrl-C in the terminal hits the caller, who stops it
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """Its exit code, or None if it is still running after ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def events(self) -> list[dict[str, Any]]:
        """Its JSON log lines (structlog writes JSON when stdout is not a terminal)."""
        out = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (an active daemon steps down cleanly), SIGKILL if it outlives ``timeout``."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        if self.wait(timeout) is None:
            self.kill()

    def kill(self) -> None:
        """Thaw (a stopped process does not die until continued) and SIGKILL."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        self.wait(10)

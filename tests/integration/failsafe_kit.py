"""Shared by the failsafe's integration tests: loopback addresses, a secret, a config, a log."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from failoverd.config import Config, parse_config
from failoverd.failsafe import Secret

ACTIVE, PASSIVE = "127.0.0.21", "127.0.0.22"  # n1 asks, n2 grants
KEY = Secret(b"failsafe-test-secret-" * 2)
TTL = 2.0


class RecordingLog:
    """Stands in for the structlog logger: every call kept as (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _record(self, level: str) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))

        return log

    def __getattr__(self, level: str) -> Callable[..., None]:
        return self._record(level)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [f for _, e, f in self.lines if e == name]


def channel_config(tmp_path: Path, node: str, port: int, *, enabled: bool = True) -> Config:
    """A node's config with the failsafe on 127.0.0.21/.22 (no ZooKeeper behind 127.0.0.1:1)."""
    key = tmp_path / "failsafe.key"
    if not key.exists():
        key.write_bytes(KEY.key + b"\n")
        key.chmod(0o600)
    text = (
        f'node = "{node}"\n[cluster]\nname = "prod"\nzookeeper_hosts = ["127.0.0.1:1"]\n'
        'chroot = "/failoverd/prod"\n'
        f'[[members]]\nname = "n1"\naddress = "{ACTIVE}"\n'
        f'[[members]]\nname = "n2"\naddress = "{PASSIVE}"\n'
        "[metrics]\nenabled = false\n"
        f'[failsafe]\nenabled = {"true" if enabled else "false"}\nsecret_file = "{key}"\n'
        f'port = {port}\npledge_ttl = {TTL}\nstore_dir = "{tmp_path / node}"\n'
    )
    return parse_config(text, tmp_path / f"{node}.toml")


def free_udp_port(addresses: tuple[str, ...] = (ACTIVE, PASSIVE)) -> int:
    """A UDP port free on every address (the channel listens on the same port on each node)."""
    for _ in range(20):
        with contextlib.ExitStack() as held:
            first = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            first.bind((addresses[0], 0))
            port = int(first.getsockname()[1])
            try:
                for address in addresses[1:]:
                    other = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    other.bind((address, port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no UDP port free on all of {addresses}")


def wait_until(cond: Callable[[], bool], timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()

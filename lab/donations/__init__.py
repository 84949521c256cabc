"""The donations demo app (``python -m lab.donations``) and a launcher for tests and the lab.

The app itself is in ``app.py``. ``DonationsApp`` here starts it as a child process (by PID, no
shell), waits until ``/health`` answers and stops it with SIGTERM, so every test and lab script
runs the same app the same way. ``request_json`` is the matching small HTTP client: it times each
call, because for this project a slow answer is a failure too.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
from pathlib import Path
from typing import Any

from lab.process import ServerProcess
from lab.zookeeper import free_port

REPO = Path(__file__).resolve().parents[2]


class DonationsError(RuntimeError):
    """The app could not be started or stopped; the message carries its log's tail."""


def request_json(
    host: str,
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """One HTTP request; returns (status, decoded JSON or None if the body is not JSON).

    ``body`` is sent as JSON unless it is ``bytes`` (sent as is, to test malformed input).
    Raises ``OSError`` (``TimeoutError``, ``ConnectionRefusedError``...) when nothing answers.
    """
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, None


class DonationsApp(ServerProcess):
    """One app process on ``host:port`` for node ``node``, against the database at ``dsn``."""

    def __init__(
        self,
        base_dir: Path,
        dsn: str,
        node: str,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        fault_file: Path | None = None,
        init_schema: bool = False,
        db_timeout: float = 2.5,
        python: str = sys.executable,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.dsn = dsn
        self.node = node
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.fault_file = Path(fault_file) if fault_file else self.base_dir / "fault"
        self.init_schema = init_schema
        self.db_timeout = db_timeout
        self.python = python
        self.log_path = self.base_dir / "app.log"

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def command(self) -> list[str]:
        argv = [
            self.python, "-m", "lab.donations",
            "--host", self.host,
            "--port", str(self.port),
            "--dsn", self.dsn,
            "--node", self.node,
            "--fault-file", str(self.fault_file),
            "--db-timeout", str(self.db_timeout),
        ]  # fmt: skip
        if self.init_schema:
            argv.append("--init-schema")
        return argv

    def start(self, timeout: float = 15.0) -> None:
        """Start the app and wait until ``/health`` answers (any status: faults may be set)."""
        if self.running:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        }
        self._spawn(self.command(), self.log_path, REPO, env)

        def probe() -> None:
            self.request("GET", "/health", timeout=1.0)

        self._wait_ready(
            probe, timeout, DonationsError, f"donations app {self.node}", on_timeout=self.kill
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID, wait, SIGKILL after ``timeout``; idempotent."""
        super().stop(timeout)

    def set_fault(self, directives: str) -> None:
        """Make ``/health`` misbehave: ``"slow:2"``, ``"status:500"`` (read on every request)."""
        tmp = self.fault_file.with_name(self.fault_file.name + ".tmp")
        tmp.write_text(directives + "\n")
        tmp.replace(self.fault_file)  # atomic: the app never reads half a file

    def clear_fault(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fault_file.unlink()

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 5.0
    ) -> tuple[int, Any]:
        """``request_json`` against this app directly (not through Squid)."""
        return request_json(self.host, self.port, method, path, body, timeout=timeout)

    def __repr__(self) -> str:
        return f"DonationsApp({self.node}, {self.host}:{self.port}, pid={self.pid})"

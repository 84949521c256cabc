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
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

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


class DonationsApp:
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
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running app, None when stopped."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

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
        with open(self.log_path, "ab") as log:
            log.write(f"--- starting: {' '.join(self.command())}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
                start_new_session=True,  # a Ctrl-C in the test terminal must not hit it first
            )
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        for _ in range(int(timeout / 0.02) + 10):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise DonationsError(
                    f"donations app {self.node} exited with code {code} while starting on "
                    f"{self.host}:{self.port}; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                self.request("GET", "/health", timeout=1.0)
                return
            except OSError as exc:
                last_error = str(exc)
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.kill()
        raise DonationsError(
            f"donations app {self.node} did not answer on {self.host}:{self.port} within "
            f"{timeout} s ({last_error}); log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID, wait, SIGKILL after ``timeout``; idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5.0)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL by PID: a crash, for tests that need one."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5.0)
        self._proc = None

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

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> DonationsApp:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"DonationsApp({self.node}, {self.host}:{self.port}, pid={self.pid})"

"""The process management the lab's server launchers share (ZooKeeper, Squid, sshd, the app).

Each server is one child process in its own session (a Ctrl-C in the test terminal must not hit
it first) with its output in a log file. It is ready once a probe succeeds, polled with a bound
in count and time that also notices an early exit, and it is stopped by PID: SIGTERM, a bounded
wait, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, step: float = 0.02) -> T | None:
    """Poll ``predicate`` until it returns something truthy, bounded in count and time; that
    value, or None. The one polling loop of the lab, the tests and the benchmarks."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(step)
    return None


def waited(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.02) -> float:
    """Like ``wait_for``, for tests: the seconds it took, or TimeoutError saying ``what``."""
    started = time.monotonic()
    if not wait_for(predicate, timeout, step):
        raise TimeoutError(f"not within {timeout:g} s: {what}")
    return time.monotonic() - started


class ServerProcess:
    """Base of a launcher: the child process (``_proc``) and its life cycle, by PID.

    A subclass sets ``host``, ``port`` and ``log_path`` (or overrides ``log_tail``); its
    ``start`` builds the command, then calls ``_spawn`` and ``_wait_ready``.
    """

    host: str
    port: int
    log_path: Path
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running server, None when stopped (``poll`` reaps an exited child, so a
        zombie counts as stopped)."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _spawn(
        self,
        cmd: Sequence[str],
        log_path: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        *,
        header: bool = True,
    ) -> None:
        """Start ``cmd`` with stdout and stderr appended to ``log_path`` (after a ``---
        starting`` line unless ``header`` is false)."""
        with open(log_path, "ab") as log:
            if header:
                log.write(f"--- starting: {' '.join(cmd)}\n".encode())
                log.flush()
            self._proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,  # a Ctrl-C in the test terminal must not hit it first
            )

    def _wait_ready(
        self,
        probe: Callable[[], str | None],
        timeout: float,
        error: type[Exception],
        name: str,
        *,
        verb: str = "answer",
        interval: float = 0.02,
        on_timeout: Callable[[], None] | None = None,
        log_path: Path | None = None,
    ) -> None:
        """Poll ``probe`` until it returns None (ready); a string or an ``OSError`` says why
        not yet. Raises ``error`` with the log's tail when the child exits first or ``timeout``
        passes (after ``on_timeout``, ``stop`` by default)."""
        where = f"{self.host}:{self.port}"
        log = log_path or self.log_path
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        for _ in range(int(timeout / interval) + 10):
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                self._proc = None
                raise error(
                    f"{name} exited with code {code} while starting on {where}; "
                    f"log {log}:\n{self.log_tail()}"
                )
            try:
                why = probe()
                if why is None:
                    return
                last_error = why
            except OSError as exc:
                last_error = str(exc)
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        (on_timeout or self.stop)()
        raise error(
            f"{name} did not {verb} on {where} within {timeout} s ({last_error}); "
            f"log {log}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
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

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""Run an operator's command within a deadline, whatever it spawns.

Hooks and command checks run site scripts. A script that starts a background child keeps its
output pipe open after it exits or is killed, so a plain ``subprocess.run(timeout=...)`` can
wait for ever. The command gets a session of its own and, on timeout, its whole process group
is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Finished:
    returncode: int | None  # None: killed at the deadline
    output: str  # stdout and stderr, at most the last 64 KiB
    seconds: float


def run_bounded(
    argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
) -> Finished:
    """Run ``argv``; raises OSError only when it cannot be started at all."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=None if env is None else dict(env),
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        # The group is dead, so the pipe closes; still bounded in case of an unkillable child.
        try:
            out, _ = proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            out = b""
        code = None
    return Finished(code, out[-65536:].decode(errors="replace"), time.monotonic() - started)

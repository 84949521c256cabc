"""A site's own check: any executable; exit 0 within the timeout is healthy."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from failoverd.checks.base import Probe, judge_latency
from failoverd.config import CheckConfig


class CommandCheck:
    def __init__(self, cfg: CheckConfig) -> None:
        if not cfg.command:
            raise ValueError(f"check {cfg.name}: no command")
        self.cfg = cfg
        self.argv = list(cfg.command)

    def probe(self) -> Probe:
        started = time.monotonic()
        try:
            # A new session, so a timeout kills the whole process group, grandchildren too.
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            return Probe(False, 0.0, f"cannot run {self.argv[0]}: {e}")
        try:
            out, _ = proc.communicate(timeout=self.cfg.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return Probe(
                False,
                time.monotonic() - started,
                f"no result within timeout {self.cfg.timeout:g} s",
            )
        latency = time.monotonic() - started
        tail = out.decode(errors="replace").strip().splitlines()[-1:] if out else []
        why = f"exit {proc.returncode}" + (f": {tail[0][:200]}" if tail else "")
        return judge_latency(proc.returncode == 0, latency, self.cfg.slow_after, why)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=2)

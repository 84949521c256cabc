"""A site's own check: any executable; exit 0 within the timeout is healthy."""

from __future__ import annotations

from failoverd.checks.base import Probe, judge_latency
from failoverd.config import CheckConfig
from failoverd.subproc import run_bounded


class CommandCheck:
    def __init__(self, cfg: CheckConfig) -> None:
        if not cfg.command:
            raise ValueError(f"check {cfg.name}: no command")
        self.cfg = cfg
        self.argv = list(cfg.command)

    def probe(self) -> Probe:
        try:
            done = run_bounded(self.argv, self.cfg.timeout)
        except OSError as e:
            return Probe(False, 0.0, f"cannot run {self.argv[0]}: {e}")
        if done.returncode is None:
            return Probe(False, done.seconds, f"no result within timeout {self.cfg.timeout:g} s")
        tail = done.output.strip().splitlines()[-1:]
        why = f"exit {done.returncode}" + (f": {tail[0][:200]}" if tail else "")
        return judge_latency(done.returncode == 0, done.seconds, self.cfg.slow_after, why)

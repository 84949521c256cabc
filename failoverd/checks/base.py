"""What every check shares: the outcome of one probe, and rise/fall hysteresis."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Probe:
    """One measurement. ``facts`` carries what a check learned beyond pass/fail (the database's
    role and LSNs, Squid's own state), for the core and for ``failoverctl status``."""

    ok: bool
    latency: float | None
    reason: str = ""  # why it failed, in words; empty when ok
    facts: Mapping[str, object] = field(default_factory=dict)


class Checker(Protocol):
    """A check type. ``probe`` blocks at most about the check's timeout; the runner still guards
    against one that hangs."""

    def probe(self) -> Probe: ...


def judge_latency(
    ok: bool,
    latency: float,
    slow_after: float | None,
    reason: str,
    facts: Mapping[str, object] | None = None,
) -> Probe:
    """A slow answer is a failure: the user waiting for it sees the site down."""
    facts = facts or {}
    if ok and slow_after is not None and latency > slow_after:
        why = f"slow: answered in {latency:.3f} s > slow_after {slow_after:g} s"
        return Probe(False, latency, why, facts)
    return Probe(ok, latency, "" if ok else reason, facts)


@dataclass(frozen=True)
class Hysteresis:
    """Rise/fall: ``rise`` passes in a row make a check healthy, ``fall`` failures unhealthy.

    Until either happens the state is unknown (None): the node has not been judged yet.
    """

    rise: int
    fall: int
    healthy: bool | None = None
    successes: int = 0  # consecutive passes
    failures: int = 0  # consecutive failures

    def feed(self, ok: bool) -> Hysteresis:
        successes = self.successes + 1 if ok else 0
        failures = 0 if ok else self.failures + 1
        healthy = self.healthy
        if ok and successes >= self.rise:
            healthy = True
        elif not ok and failures >= self.fall:
            healthy = False
        return Hysteresis(self.rise, self.fall, healthy, successes, failures)

"""Runs every check concurrently, each on its own schedule, behind rise/fall hysteresis.

A check runs in a worker of its own; its scheduler thread waits for the result at most
``timeout`` (plus a small grace). A probe that hangs past that counts as a failure, and one more
for each further timeout it keeps hanging (not one per interval: a single slow answer must not
count as ``fall`` failures); no second probe of that check starts until the hung one returns, so
a stuck check costs one thread, never the daemon loop or the other checks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from failoverd.checks.base import Checker, Hysteresis, Probe
from failoverd.checks.command import CommandCheck
from failoverd.checks.http import HttpCheck
from failoverd.checks.postgres import PeerDatabaseProbe, PostgresCheck
from failoverd.checks.squid import SquidCheck
from failoverd.clock import boottime
from failoverd.config import CheckConfig, Config
from failoverd.core import CheckStatus, PeerDb, PeerProbe

GRACE = 0.05  # on top of a check's timeout before the runner stops waiting for it


@dataclass(frozen=True)
class ChecksSnapshot:
    checks: tuple[CheckStatus, ...]
    complete: bool  # every check has reached a state (rise or fall)
    facts: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


@dataclass
class _Slot:
    cfg: CheckConfig
    checker: Checker
    hysteresis: Hysteresis
    executor: ThreadPoolExecutor
    judges_health: bool = True  # False for observers (the peer's database): facts only
    last: Probe | None = None
    future: Future[Probe] | None = None
    hung_since: float | None = None
    probed_at: float = 0.0  # when the latest probe was started


class CheckRunner:
    def __init__(
        self,
        checks: Sequence[tuple[CheckConfig, Checker]],
        log: Any,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = boottime,
        observers: Sequence[tuple[CheckConfig, Checker]] = (),
    ) -> None:
        self._log = log
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._slots = [
            _Slot(
                cfg,
                checker,
                Hysteresis(cfg.rise, cfg.fall),
                ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"check-{cfg.name}"),
            )
            for cfg, checker in checks
        ] + [
            _Slot(
                cfg,
                checker,
                Hysteresis(cfg.rise, cfg.fall),
                ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"observe-{cfg.name}"),
                judges_health=False,
            )
            for cfg, checker in observers
        ]
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for slot in self._slots:
            t = threading.Thread(
                target=self._schedule, args=(slot,), name=f"sched-{slot.cfg.name}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self, wait: bool = True) -> None:
        """Stop every schedule; ``wait=False`` (a reload, from the daemon's loop) does not wait
        for a probe in flight: its result lands in this retired runner and is dropped."""
        self._stop.set()
        if wait:
            for t in self._threads:
                t.join(timeout=2.0)
        for slot in self._slots:
            slot.executor.shutdown(wait=False, cancel_futures=True)

    def carry_over(self, previous: CheckRunner) -> None:
        """Before ``start``: each check kept from ``previous`` (same name and type) keeps its
        last probe and its pass/fail run under the new rise/fall, so a reload neither forgets a
        failing check nor makes a healthy one unjudged. New checks start unjudged."""
        with previous._lock:
            old = {(s.cfg.name, s.cfg.type, s.judges_health): s for s in previous._slots}
        for slot in self._slots:
            before = old.get((slot.cfg.name, slot.cfg.type, slot.judges_health))
            if before is None:
                continue
            h = before.hysteresis
            slot.hysteresis = Hysteresis(
                slot.cfg.rise, slot.cfg.fall, h.healthy, h.successes, h.failures
            )
            slot.last, slot.probed_at = before.last, before.probed_at

    def _schedule(self, slot: _Slot) -> None:
        while not self._stop.is_set():
            started = self._clock()
            probe = self._probe_once(slot, started)
            with self._lock:
                before = (slot.hysteresis.healthy, slot.last.reason if slot.last else None)
                slot.hysteresis = slot.hysteresis.feed(probe.ok)
                slot.last = probe
                slot.probed_at = started
                after = (slot.hysteresis.healthy, probe.reason)
            if before[0] != after[0] and after[0] is not None and self._log is not None:
                # A check that goes down says why, with the probe that took it there: the
                # decision it leads to names only the state the check is in by then.
                say = self._log.info if after[0] else self._log.warning
                say(
                    "check_up" if after[0] else "check_down",
                    check=slot.cfg.name,
                    probe=probe.reason,
                    latency_s=None if probe.latency is None else round(probe.latency, 3),
                    observer=not slot.judges_health,
                )
            if before != after:
                self._on_change()
            self._stop.wait(max(0.0, started + slot.cfg.interval - self._clock()))

    def _probe_once(self, slot: _Slot, started: float) -> Probe:
        if slot.future is not None and not slot.future.done():
            # The probe that timed out is still running. It failed once already; it fails again
            # only after another whole timeout. Failing at each interval made one answer slower
            # than the timeout count as `fall` failures: under load, a false failover.
            since = slot.hung_since if slot.hung_since is not None else started
            done, _ = wait([slot.future], timeout=slot.cfg.timeout + GRACE)
            if not done:
                return Probe(
                    False,
                    None,
                    f"hung: previous probe still running after {self._clock() - since:.1f} s",
                )
            started = self._clock()  # it ended late (its outcome counted already): probe afresh
        slot.hung_since = None
        try:
            slot.future = slot.executor.submit(slot.checker.probe)
        except RuntimeError as e:  # executor shut down while stopping
            return Probe(False, None, f"not run: {e}")
        try:
            return slot.future.result(timeout=slot.cfg.timeout + GRACE)
        except FutureTimeout:
            slot.hung_since = started
            return Probe(
                False,
                self._clock() - started,
                f"no result within timeout {slot.cfg.timeout:g} s (check hung)",
            )
        except Exception as e:  # a bug in a check is a failed check, said with context
            self._log.exception("check_crashed", check=slot.cfg.name)
            return Probe(False, self._clock() - started, f"check crashed: {e!r}")

    def snapshot(self) -> ChecksSnapshot:
        """Non-blocking: the latest state of every check."""
        with self._lock:
            statuses = []
            facts: dict[str, Mapping[str, object]] = {}
            complete = True
            for slot in self._slots:
                h = slot.hysteresis
                last = slot.last
                if last is not None:
                    facts[slot.cfg.name] = {**last.facts, "probed_at": slot.probed_at}
                if not slot.judges_health:
                    continue
                if h.healthy is None:
                    complete = False
                reason = ""
                if last is not None and not last.ok:
                    reason = last.reason
                elif h.healthy is False:
                    reason = "recovering: " + f"{h.successes}/{h.rise} passes"
                statuses.append(
                    CheckStatus(
                        name=slot.cfg.name,
                        healthy=bool(h.healthy),
                        reason=reason if h.healthy is not None else reason or "not judged yet",
                        latency=None if last is None else last.latency,
                        successes=h.successes,
                        failures=h.failures,
                    )
                )
            return ChecksSnapshot(tuple(statuses), complete, facts)


def build_checks(cfg: Config) -> list[tuple[CheckConfig, Checker]]:
    """One checker per [checks.<name>] table."""
    built: list[tuple[CheckConfig, Checker]] = []
    for c in cfg.checks:
        checker: Checker
        if c.type == "http":
            checker = HttpCheck(c)
        elif c.type == "squid":
            checker = SquidCheck(c)
        elif c.type == "command":
            checker = CommandCheck(c)
        else:
            if cfg.postgres is None:  # the config loader refuses this; keep the type honest
                raise ValueError(f"check {c.name}: type postgres needs a [postgres] section")
            checker = PostgresCheck(c, cfg.postgres)
        built.append((c, checker))
    return built


PEER_DB = "peer-database"


def build_observers(cfg: Config) -> list[tuple[CheckConfig, Checker]]:
    """The direct probe of the peer's PostgreSQL, when this cluster manages a database."""
    if cfg.postgres is None:
        return []
    # Cheap (one connection, one query), and a takeover may wait for a fresh answer: often,
    # and given up as soon as the node's own checks give up (at most 1 s): a crashed peer
    # answers nothing, and that answer is what a takeover waits for.
    interval = min(0.25, *(c.interval for c in cfg.checks))
    timeout = min(1.0, *(c.timeout for c in cfg.checks))
    probe_cfg = CheckConfig(
        name=PEER_DB,
        type="postgres",
        interval=interval,
        timeout=timeout,
        rise=1,
        fall=1,
        slow_after=None,
    )
    return [
        (
            probe_cfg,
            PeerDatabaseProbe(cfg.peer.address, cfg.peer.db_port, cfg.postgres, probe_cfg.timeout),
        )
    ]


def peer_probe(facts: Mapping[str, object] | None) -> PeerProbe:
    """The core's view of the peer's database from the latest direct probe.

    A probe that gave no answer in time means the peer is unreachable: that is what it saw.
    """
    if facts is None:
        return PeerProbe(PeerDb.UNKNOWN, 0.0)
    probed_at = facts.get("probed_at")
    at = float(probed_at) if isinstance(probed_at, int | float) else 0.0
    value = facts.get("peer_db")
    if value is None:
        return PeerProbe(PeerDb.UNREACHABLE, at)
    try:
        return PeerProbe(PeerDb(str(value)), at)
    except ValueError:
        return PeerProbe(PeerDb.UNKNOWN, at)

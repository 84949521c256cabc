"""Does the ZooKeeper ensemble's timing let the active self-fence before its session expires?

Pure: the servers' ``conf`` answers and the timings in, findings out (the daemon's start-up and
``failoverd check-config`` report them; an error refuses the start).

Theory. The active self-fences ``self_fence_after`` after the send time s of its last
successful round-trip, and must be down before the quorum side can expire its session. The
round-trip is a ``sync``, which succeeds only once the leader has answered it, so the leader
was alive and leading after s. The leader expires a session T after the last time it *heard*
of it, and it hears of a session connected to a follower only through that follower's answers
to its pings, sent every tickTime / 2 and checked at tick granularity: the leader's record may
lag s by up to about one tickTime. So the session lives until at least s + T - tickTime, and
the self-fence comes first when

    tickTime < T - self_fence_after        (the exposure, below the margin)

A leader cut off from its followers answers syncs until it notices the lost quorum, after
syncLimit x tickTime; its followers need as long to give up on it and elect a new leader, which
gives every session a fresh T: no condition on syncLimit. (A *read* round-trip would need
syncLimit x tickTime < T - self_fence_after: a follower cut off from the leader answers reads
that long. The stock settings, tickTime 2 s and syncLimit 10, make that 20 s.)

Measured on three servers on loopback (tests/integration/test_zk_quorum.py): T 4 s,
self_fence_after 2 s, tickTime 100 ms. A follower cut off with the client on it: the last good
sync was the one sent before the cut; reads kept succeeding 4.4 s after it, and the peer took
the expired lease at 4.0 s. An isolated leader (syncLimit 2 s): the last good sync at 1.9 s,
the peer took the lease at 6.3 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Level = Literal["error", "warning", "note"]

NOT_ALLOWED = "is not executed because it is not in the whitelist"


@dataclass(frozen=True)
class ServerSettings:
    """What one server's ``conf`` says about timing (milliseconds, as ZooKeeper counts)."""

    tick_time_ms: int
    min_session_timeout_ms: int | None = None
    max_session_timeout_ms: int | None = None
    sync_limit: int | None = None  # None: a standalone server
    init_limit: int | None = None
    server_id: int | None = None

    @property
    def standalone(self) -> bool:
        return self.sync_limit is None


@dataclass(frozen=True)
class ConfAnswer:
    """One server's answer to ``conf``: its settings, or why there are none."""

    address: str
    settings: ServerSettings | None
    problem: str | None = None


@dataclass(frozen=True)
class Finding:
    level: Level
    key: str  # the configuration key it concerns (``timings.self_fence_after``, ...)
    text: str


@dataclass(frozen=True)
class Assessment:
    """What was learnt of the ensemble, and what it means for this node's timings."""

    answered: int  # servers whose settings are known
    asked: int
    tick_time: float | None  # seconds, the largest any server uses
    sync_limit: int | None
    session_timeout: float  # negotiated, or as the servers would negotiate the request
    margin: float  # session_timeout - self_fence_after
    findings: tuple[Finding, ...]

    @property
    def exposure(self) -> float | None:
        """How late the leader may hear of a successful round-trip: about one tickTime."""
        return self.tick_time

    @property
    def follower_read_window(self) -> float | None:
        """How long a follower cut off from its leader keeps answering reads."""
        if self.tick_time is None or self.sync_limit is None:
            return None
        return self.tick_time * self.sync_limit

    @property
    def refused(self) -> bool:
        return any(f.level == "error" for f in self.findings)


_INT_KEYS = {
    "tickTime": "tick_time_ms",
    "minSessionTimeout": "min_session_timeout_ms",
    "maxSessionTimeout": "max_session_timeout_ms",
    "syncLimit": "sync_limit",
    "initLimit": "init_limit",
    "serverId": "server_id",
}


def parse_conf(text: str) -> ServerSettings:
    """The timing settings in a ``conf`` answer; ValueError saying why there are none."""
    if NOT_ALLOWED in text:
        raise ValueError("'conf' is not in the server's 4lw.commands.whitelist")
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        field = _INT_KEYS.get(key.strip())
        if sep and field is not None and re.fullmatch(r"-?\d+", value.strip()):
            values[field] = int(value.strip())
    tick = values.pop("tick_time_ms", None)
    if tick is None or tick <= 0:
        first = text.strip().splitlines()[0] if text.strip() else "(empty)"
        raise ValueError(f"not a 'conf' answer with a tickTime: {first[:80]!r}")
    return ServerSettings(tick_time_ms=tick, **values)


def negotiated(requested: float, servers: list[ServerSettings]) -> float:
    """The session timeout these servers grant for ``requested`` seconds (they clamp it into
    [minSessionTimeout, maxSessionTimeout], by default [2, 20] x tickTime)."""
    if not servers:
        return requested
    low = max(s.min_session_timeout_ms or 2 * s.tick_time_ms for s in servers)
    high = min(s.max_session_timeout_ms or 20 * s.tick_time_ms for s in servers)
    return min(max(requested * 1000, low), high) / 1000


def assess(
    answers: list[ConfAnswer],
    *,
    requested_timeout: float,
    self_fence_after: float,
    negotiated_timeout: float | None = None,
) -> Assessment:
    """Judge the ensemble's timing against the node's; ``negotiated_timeout`` when connected
    (what T really is), else T is predicted from the servers' session bounds."""
    known = [a.settings for a in answers if a.settings is not None]
    findings: list[Finding] = []
    t = negotiated(requested_timeout, known) if negotiated_timeout is None else negotiated_timeout
    margin = t - self_fence_after
    unanswered = "; ".join(f"{a.address}: {a.problem}" for a in answers if a.settings is None)
    if not known:
        findings.append(
            Finding(
                "warning",
                "cluster.zookeeper_hosts",
                "could not read the ensemble's timing from any server "
                f"({unanswered or 'none asked'}): whether a session can outlive this node's "
                "self-fence deadline is unchecked; allow 'conf' in the servers' "
                "4lw.commands.whitelist",
            )
        )
        return Assessment(0, len(answers), None, None, t, margin, tuple(findings))

    ticks = sorted({s.tick_time_ms for s in known})
    limits = sorted({s.sync_limit for s in known if s.sync_limit is not None})
    tick = ticks[-1] / 1000
    sync_limit = limits[-1] if limits else None
    if len(ticks) > 1 or len(limits) > 1:
        findings.append(
            Finding(
                "warning",
                "cluster.zookeeper_hosts",
                f"the servers disagree: tickTime {', '.join(map(str, ticks))} ms, syncLimit "
                f"{', '.join(map(str, limits)) or '-'}; judging by the largest",
            )
        )
    if unanswered:
        findings.append(Finding("note", "cluster.zookeeper_hosts", f"no timing from {unanswered}"))

    if negotiated_timeout is None and abs(t - requested_timeout) > 1e-3:
        findings.append(
            Finding(
                "warning",
                "timings.session_timeout",
                f"{requested_timeout:g} s would be negotiated to {t:g} s by the servers' "
                "minSessionTimeout/maxSessionTimeout",
            )
        )
    if self_fence_after >= t:
        findings.append(
            Finding(
                "error",
                "timings.self_fence_after",
                f"{self_fence_after:g} s is not below the session timeout the servers grant, "
                f"{t:g} s: the node could not fence itself before its session expires",
            )
        )
    elif tick >= margin:
        findings.append(
            Finding(
                "error",
                "timings.self_fence_after",
                f"ZooKeeper's tickTime is {tick:g} s: the leader may hear of this node's last "
                f"round-trip up to about one tickTime late, which is not below session timeout "
                f"- self_fence_after = {t:g} - {self_fence_after:g} = {margin:g} s, so the "
                "session could expire before the node fences itself; lower tickTime, raise "
                "timings.session_timeout or lower timings.self_fence_after",
            )
        )
    elif tick > margin / 2:
        findings.append(
            Finding(
                "warning",
                "timings.self_fence_after",
                f"ZooKeeper's tickTime {tick:g} s takes more than half of session timeout - "
                f"self_fence_after = {margin:g} s: only {margin - tick:g} s are left for the "
                "self-fence to finish before the session may expire",
            )
        )

    if sync_limit is None:
        shape = f"{len(known)} standalone server{'s' if len(known) > 1 else ''}"
        reads = "no follower to be cut off (and a single point of failure)"
    else:
        shape = f"{len(known)} of {len(answers)} ensemble servers"
        reads = (
            f"syncLimit {sync_limit}: a follower cut off from the leader answers reads for "
            f"{tick * sync_limit:g} s, which the round-trip's sync does not trust"
        )
    findings.append(
        Finding(
            "note",
            "cluster.zookeeper_hosts",
            f"{shape}: tickTime {tick:g} s, {reads}; the leader's record of a round-trip may "
            f"lag by about one tickTime against a margin of session timeout {t:g} s - "
            f"self_fence_after {self_fence_after:g} s = {margin:g} s",
        )
    )
    return Assessment(len(known), len(answers), tick, sync_limit, t, margin, tuple(findings))

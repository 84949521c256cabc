"""structlog set-up: JSON lines for journald and pipes, key=value on a terminal.

Under systemd, stdout is a stream to the journal, which reads a line's priority only from a
``<N>`` prefix (``SyslogLevelPrefix=yes``, the default): without it every line, "fencing
exhausted" too, is priority 6 and ``journalctl -p warning`` shows nothing. So each line gets the
prefix of its level, but only when stdout is that stream (``JOURNAL_STREAM``), never on a
terminal or in a pipe, where ``<4>`` would be noise.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final, TextIO

import structlog

if TYPE_CHECKING:
    from failoverd.core import State, Step

SYSLOG_PRIORITY: Final = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
"""syslog(3) priorities for the logging levels, as journald stores them (``PRIORITY=``)."""

DECISION_LEVELS: Final[Mapping[str, int]] = {
    # error: a person must act now, or two primaries may take writes.
    "two_primaries": logging.ERROR,  # both databases answer as primary, no lease to decide
    "fencing_exhausted": logging.ERROR,  # every fencing level reached the peer and failed
    "peer_left_serving": logging.ERROR,  # the peer serves without its daemon, no fence reaches
    "epoch_regressed": logging.ERROR,  # ZooKeeper's epoch went back: its state was lost
    # warning: safety held, but by giving something up, or an action failed and is retried.
    "fence_failed": logging.WARNING,  # the fence reached the peer and failed: not promoting
    "fence_blocked": logging.WARNING,  # the fence could not be run or reach: not taking over
    "fence_incomplete": logging.WARNING,  # fenced, but stopping the database or VIP failed
    "self_fenced": logging.WARNING,  # it could no longer prove its lease: VIP off, database down
    "stale_primary": logging.WARNING,  # fenced as a stale primary: must rejoin
    "must_rejoin": logging.WARNING,  # its data cannot follow the active as it is
    "rejoin_failed": logging.WARNING,
    "rejoin_needs_clone": logging.WARNING,  # only a clone helps, and reclone = false
    "replica_stalled": logging.WARNING,  # the replica stopped following the active
    "sync_dropped": logging.WARNING,  # no synchronous standby: commits on the primary only
    "sync_failed": logging.WARNING,
    "not_sync_standby": logging.WARNING,  # sync mode: not taking over, it may lose writes
    "stop_failed": logging.WARNING,  # keeping the lease while a primary may still take writes
    "restart_failed": logging.WARNING,
    "vip_removal_failed": logging.WARNING,
    "database_hung": logging.WARNING,  # PostgreSQL runs but does not answer: killing it
    "leased_action_late": logging.WARNING,  # an action ran past its lease: ignored
    "failsafe_failed": logging.WARNING,
    "resume_failed": logging.WARNING,  # serving again on a new pledge failed: fenced until ZK
    "resume_ended": logging.WARNING,  # what serving again had started is stopped again
}
"""The level of each decision by its reason code (the core's ``Reason.code``); info for every
other code. One table, so what pages and what merely narrates is decided in one place."""


def decision_level(code: str) -> int:
    """The logging level to log a decision with this reason code at."""
    return DECISION_LEVELS.get(code, logging.INFO)


def log_decisions(log: Any, before: State, result: Step) -> None:
    """Each decision once, by its reason code, also one superseded within the step; at the level
    its code has in ``DECISION_LEVELS``, so a failed fence is a warning in the journal."""
    previous = before.reason.code
    for decision in result.decisions:
        if decision.code != previous:
            log.log(
                decision_level(decision.code),
                decision.code,
                reason=decision.text,
                role=result.state.role.value,
                previous_role=before.role.value,
                epoch=result.state.epoch,
            )
        previous = decision.code


def stdout_is_journal(env: Mapping[str, str], stream: TextIO) -> bool:
    """Is ``stream`` the journal's stream? systemd sets ``JOURNAL_STREAM`` to its
    ``device:inode`` (systemd.exec(5)); a child whose stdout was redirected inherits the
    variable, so it is compared, not just looked for."""
    expected = env.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class _PriorityPrefix:
    """Wraps a renderer: ``<N>`` before each line, N the syslog priority of its level."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        level = str(event_dict.get("level", method_name)).lower()
        line = self.renderer(logger, method_name, event_dict)
        return f"<{SYSLOG_PRIORITY.get(level, 6)}>{line}"


def configure(level: str = "info", json: bool | None = None) -> None:
    """Route structlog and the stdlib ``logging`` (kazoo, paramiko) to stdout in one format."""
    if json is None:
        json = not sys.stdout.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    if stdout_is_journal(os.environ, sys.stdout):
        renderer = _PriorityPrefix(renderer)
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO) if numeric < logging.INFO else numeric)
    logging.getLogger("kazoo").setLevel(logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.WARNING)


def get(name: str = "failoverd") -> Any:
    return structlog.get_logger(name)

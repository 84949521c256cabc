"""Synchronous replication on the local primary: name the standbys whose flush a commit waits
for (``synchronous_standby_names``, with ``synchronous_commit = on``), and keep the adapter's own
writes from ever waiting for one.

Why apart: the core decides whom to name and in which order against the ``sync`` record
(``SetSyncStandby``), and a promotion names its first standbys before the new primary takes a
commit; both set the names the same way, here.

How: ``ALTER SYSTEM`` (it writes ``postgresql.auto.conf``, never WAL: it is not transactional and
cannot wait for a standby), ``pg_reload_conf()``, then ``SHOW`` until this session sees the new
values, bounded. The names are written double-quoted, so ``first``, ``a b`` or ``x"y`` are
taken literally, and the whole value goes in as an SQL literal (utility statements take no
parameters). ``ALTER SYSTEM`` works on a standby too: a promotion uses that to have the names
in place from the new primary's first commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import psycopg
from psycopg import sql

from failoverd.actions.postgres.service import QUICK_POLL, Service, scalar
from failoverd.core import ActionResult
from failoverd.pgconn import Unavailable, describe, format_sync_standby_names

SYNCHRONOUS_COMMIT: Final = "on"
"""A commit waits until the named standby has flushed it: safe from the loss of the primary."""

LOCAL_COMMIT: Final = "SET LOCAL synchronous_commit = local"
"""For the adapter's own writes (the epoch): flushed here, never waiting for a standby, which
may be named but gone (a promoted ex-replica inherits its old primary's postgresql.auto.conf)."""


class SyncResult(NamedTuple):
    """How setting the synchronous standbys went; ``detail`` says what was set, or why not."""

    ok: bool
    detail: str

    def action_result(self, action_id: int) -> ActionResult:
        return ActionResult(action_id, ok=self.ok, detail=self.detail)


def _setting(value: str) -> str:
    return f"synchronous_standby_names = {value!r}" if value else "synchronous_standby_names = ''"


def set_sync_names(
    conn: psycopg.Connection[Any],
    names: Sequence[str],
    deadline: float,
    clock: Callable[[], float],
) -> SyncResult:
    """On an open autocommit connection: set ``synchronous_standby_names`` to ``names`` and
    ``synchronous_commit`` to on, reload, and wait (until ``deadline``) for this session to
    report both. Never raises for a server's refusal: the result says it."""
    try:
        value = format_sync_standby_names(names)
    except ValueError as e:
        return SyncResult(False, f"refused: {e}")
    t0 = clock()
    try:
        conn.execute(
            sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(value))
        )
        conn.execute(
            sql.SQL("ALTER SYSTEM SET synchronous_commit = {}").format(
                sql.Literal(SYNCHRONOUS_COMMIT)
            )
        )
        if scalar(conn, "SELECT pg_reload_conf()") is not True:
            return SyncResult(False, f"{_setting(value)} written, but the reload failed")
        seen: tuple[str, str] = ("", "")
        for _ in range(int(max(0.0, deadline - clock()) / QUICK_POLL) + 2):
            seen = (
                str(scalar(conn, "SHOW synchronous_standby_names")),
                str(scalar(conn, "SHOW synchronous_commit")),
            )
            if seen == (value, SYNCHRONOUS_COMMIT):
                took = clock() - t0
                return SyncResult(
                    True,
                    f"{_setting(value)}, synchronous_commit = {SYNCHRONOUS_COMMIT}"
                    f" (in effect after {took:.3f} s)",
                )
            if clock() >= deadline:
                break
            time.sleep(QUICK_POLL)  # a reload reaches this session within milliseconds
        return SyncResult(
            False,
            f"{_setting(value)} written and reloaded, but the server still reports "
            f"synchronous_standby_names = {seen[0]!r}, synchronous_commit = {seen[1]!r} "
            f"after {clock() - t0:.3f} s{_overridden(conn)}",
        )
    except psycopg.Error as e:
        return SyncResult(False, f"setting {_setting(value)} failed: {describe(e)}")


def _overridden(conn: psycopg.Connection[Any]) -> str:
    """Why a reload may not take: a source above postgresql.auto.conf (the command line), or
    an error in a configuration file."""
    try:
        rows = conn.execute(
            "SELECT name, source FROM pg_settings"
            " WHERE name IN ('synchronous_standby_names', 'synchronous_commit')"
            " AND source NOT IN ('default', 'configuration file')"
        ).fetchall()
        errors = scalar(conn, "SELECT count(*) FROM pg_file_settings WHERE error IS NOT NULL")
    except psycopg.Error:
        return ""
    said = [f"{name} comes from {source}" for name, source in rows]
    if errors:
        said.append(f"{errors} error(s) in the configuration files (see pg_file_settings)")
    return f" ({'; '.join(said)})" if said else ""


class SyncStandby:
    """Set the local primary's synchronous standbys (see the module's docstring)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.clock = svc.clock

    def set(self, names: Sequence[str], timeout: float) -> SyncResult:
        """``synchronous_standby_names`` = ``names`` (() clears it) and ``synchronous_commit``
        = on, in effect within ``timeout``; ok once the server reports both."""
        deadline = self.clock() + timeout
        try:
            with self.svc.connect(deadline) as conn:
                return set_sync_names(conn, names, deadline, self.clock)
        except Unavailable as e:
            return SyncResult(False, f"cannot connect: {e}")

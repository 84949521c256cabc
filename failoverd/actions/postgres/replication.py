"""Following a primary: start the local server as its streaming replica, write the standby
configuration, and check that it really is a replica.

Why apart from the life cycle: a replica's configuration (``standby.signal``, one
``primary_conninfo`` line) is written the same way whether the node follows after a clean stop,
after a rewind or after a clone; this module is that one way.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import conninfo as pg_conninfo

from failoverd.actions.postgres.lifecycle import Lifecycle
from failoverd.actions.postgres.service import POLL, Service, scalar
from failoverd.core import ActionResult
from failoverd.pgconn import Unavailable, describe


class StartResult(NamedTuple):
    """How starting as a replica went."""

    ok: bool
    detail: str

    def action_result(self, action_id: int) -> ActionResult:
        return ActionResult(action_id, ok=self.ok, detail=self.detail)


class Replication:
    """Start as a replica of a given primary (see the module's docstring)."""

    def __init__(self, svc: Service, lifecycle: Lifecycle) -> None:
        self.svc = svc
        self.lifecycle = lifecycle
        self.pg = svc.pg
        self.clock = svc.clock
        self.data_dir = svc.data_dir

    # -- start as a replica -------------------------------------------------------------------

    def start_replica(self, primary_host: str, primary_port: int, timeout: float) -> StartResult:
        """Start this (cleanly stopped) server as a streaming replica of the given primary.

        Only from a clean stop, or from a directory that ``pg_rewind`` or ``pg_basebackup`` has
        just made (its ``backup_label`` says where recovery must begin): a crashed ex-primary
        may hold writes the new primary never had, and following it would silently fork
        history (that needs pg_rewind). Writes ``standby.signal`` and ``primary_conninfo``;
        ``recovery_target_timeline`` stays 'latest', so it follows the new primary's timeline
        switch."""
        started = self.clock()
        deadline = started + timeout
        if self.data_dir is None:
            return StartResult(False, "no data_dir configured")
        if self.lifecycle.postmaster_pid() is not None:
            return self._already_running(primary_host, primary_port, deadline)
        control = self.lifecycle.control_data(max(0.5, timeout))
        if control.state is None:
            return StartResult(False, f"cannot tell how it stopped: {control.describe()}")
        prepared = (self.data_dir / "backup_label").is_file()
        if not control.clean and not prepared:
            return StartResult(
                False, f"did not stop cleanly ({control.describe()}): needs pg_rewind"
            )
        try:
            self.write_standby_config(primary_host, primary_port)
        except (OSError, KeyError, psycopg.ProgrammingError) as e:
            return StartResult(False, f"cannot write the standby configuration: {e}")
        ok, detail = self.lifecycle.pg_ctl_start(deadline)
        if not ok:
            return StartResult(False, f"start as a replica failed: {detail}")
        verified = self.verify_replica(deadline)
        if verified is not None:
            return StartResult(False, f"started, but {verified}")
        receiver = self.receiver_status(deadline)
        took = self.clock() - started
        origin = "a rewind or base backup" if prepared else control.describe()
        return StartResult(
            True,
            f"started as a replica of {primary_host}:{primary_port} in {took:.3f} s "
            f"(from {origin}; WAL receiver {receiver})",
        )

    def _already_running(self, host: str, port: int, deadline: float) -> StartResult:
        """Idempotence: a replica already following this primary is success; anything else
        must be stopped first."""
        try:
            with self.svc.connect(deadline) as conn:
                in_recovery = bool(scalar(conn, "SELECT pg_is_in_recovery()"))
                current = str(scalar(conn, "SHOW primary_conninfo") or "")
        except Unavailable as e:
            return StartResult(False, f"already running, but does not answer: {e}")
        except psycopg.Error as e:
            return StartResult(False, f"already running: {describe(e)}")
        if not in_recovery:
            return StartResult(False, "running as a primary: stop it first")
        try:
            have = pg_conninfo.conninfo_to_dict(current)
        except psycopg.ProgrammingError:
            have = {}
        if have.get("host") == host and str(have.get("port")) == str(port):
            return StartResult(True, f"already a replica of {host}:{port}")
        return StartResult(False, f"running as a replica of something else ({current!r})")

    def write_standby_config(self, host: str, port: int, data_dir: Path | None = None) -> None:
        """``standby.signal`` plus one ``primary_conninfo`` line in ``postgresql.auto.conf``
        (other connection options there, such as sslmode or passfile, are kept), in
        ``data_dir`` (default: the configured one; a clone is configured before it is moved
        into place)."""
        data_dir = data_dir or self.data_dir
        assert data_dir is not None
        auto = data_dir / "postgresql.auto.conf"
        try:
            lines = auto.read_text().splitlines()
        except FileNotFoundError:
            lines = [
                "# Do not edit this file manually!",
                "# It will be overwritten by ALTER SYSTEM.",
            ]
        old: dict[str, Any] = {}
        kept: list[str] = []
        for line in lines:
            name = line.split("=", 1)[0].strip().lower()
            if name == "primary_conninfo":
                old = _conninfo_setting(line)
                continue
            kept.append(line)
        params = {k: v for k, v in old.items() if k not in ("host", "hostaddr", "port", "user")}
        params.update(host=host, port=str(port), user=self.pg.user, application_name=self.svc.node)
        conninfo = pg_conninfo.make_conninfo(**params)
        kept.append(f"primary_conninfo = {_conf_quote(conninfo)}")
        self.svc.write_owned(auto, "\n".join(kept) + "\n")
        self.svc.write_owned(data_dir / "standby.signal", "")

    def verify_replica(self, deadline: float) -> str | None:
        """None when the server answers as a replica; else what is wrong."""
        last = "no attempt"
        for _ in range(int(max(0.0, deadline - self.clock()) / POLL) + 2):
            try:
                with self.svc.connect(deadline) as conn:
                    if scalar(conn, "SELECT pg_is_in_recovery()"):
                        return None
                    return "it is not in recovery (a primary): standby.signal was not honoured"
            except Unavailable as e:
                if "hot standby mode is disabled" in e.full.lower():
                    return None  # a replica with hot_standby off: in recovery by definition
                last = str(e)
            except psycopg.Error as e:
                last = describe(e)
            if self.clock() >= deadline:
                break
            time.sleep(POLL)
        return f"cannot confirm it is a replica: {last}"

    def receiver_status(self, deadline: float) -> str:
        """``pg_stat_wal_receiver.status`` in words ("streaming", "not running yet"...)."""
        try:
            with self.svc.connect(deadline) as conn:
                status = scalar(conn, "SELECT status FROM pg_stat_wal_receiver")
        except (Unavailable, psycopg.Error):
            return "unknown"
        return "not running yet" if status is None else str(status)

    def wait_streaming(self, deadline: float) -> str | None:
        """None once the WAL receiver streams (bounded by ``deadline``); else its last status.
        A replica that only answers is not enough where the old copy of the data waits on it."""
        status = "no attempt"
        for _ in range(int(max(0.0, deadline - self.clock()) / POLL) + 2):
            status = self.receiver_status(deadline)
            if status == "streaming":
                return None
            if self.clock() >= deadline:
                break
            time.sleep(POLL)
        return f"its WAL receiver is not streaming (last seen: {status})"


def _conf_quote(value: str) -> str:
    """A postgresql.conf string literal, escaped as ALTER SYSTEM does (quotes, backslashes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _conf_unquote(value: str) -> str:
    """The inverse of ``_conf_quote`` for a quoted value (GUC_scanstr's escapes)."""
    value = value.strip()
    if len(value) < 2 or value[0] != "'" or value[-1] != "'":
        return value
    out: list[str] = []
    chars = iter(value[1:-1])
    for ch in chars:
        if ch in ("\\", "'"):
            out.append(next(chars, ""))  # \x -> x, '' -> '
        else:
            out.append(ch)
    return "".join(out)


def _conninfo_setting(line: str) -> dict[str, Any]:
    """The connection options of a ``primary_conninfo = '...'`` line (empty if unparsable)."""
    try:
        return dict(pg_conninfo.conninfo_to_dict(_conf_unquote(line.split("=", 1)[1])))
    except psycopg.ProgrammingError:
        return {}

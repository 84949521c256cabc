"""The local PostgreSQL, driven for failover: promote (and record the epoch), stop, start as a
replica of the new primary.

Why an adapter of its own: these are the steps that make or unmake a primary, so each one is
bounded by its timeout, checks its lease deadline where it has one, and reports what happened
(ok, a sentence, the LSN) as data. A server that is down, hung or refusing is an answer, not an
exception; the core decides what to do about it. Nothing here picks a role.

Processes are handled by PID: the postmaster's PID comes from ``postmaster.pid`` and is trusted
only when that process is alive (a zombie is not: PID 1 may reap orphans late) and runs in our
data directory. ``pg_ctl`` runs as the service user (PostgreSQL refuses root), through
``runuser`` when failoverd is root.
"""

from __future__ import annotations

import contextlib
import math
import os
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import psycopg
from psycopg import conninfo as pg_conninfo

from failoverd.checks.postgres import read_password, tcp_reachable
from failoverd.clock import boottime
from failoverd.config import PostgresConfig
from failoverd.core import ActionResult

StopMode = Literal["fast", "immediate", "kill"]

CLEAN_STATES: Final = ("shut down", "shut down in recovery")
"""pg_controldata cluster states after a clean shutdown: nothing to recover, safe to follow."""

EPOCH_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS failoverd_epoch (epoch bigint NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS failoverd_epoch_one_row ON failoverd_epoch ((true))",
)
"""The same as lab/donations/schema.sql: one row at most (a unique index on a constant)."""

EPOCH_UPSERT: Final = (
    "INSERT INTO failoverd_epoch VALUES (%s)"
    " ON CONFLICT ((true)) DO UPDATE SET epoch = EXCLUDED.epoch"
)

_LSN_RE: Final = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_POLL: Final = 0.05  # seconds between polls of a process or a server
_MIN_CONNECT: Final = 2  # libpq will not wait less than 2 s to connect (PostgreSQL 15)


def lsn_to_int(text: str) -> int:
    """``"0/3000028"`` -> ``0x3000028``: the byte position the core compares LSNs by."""
    match = _LSN_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an LSN: {text!r}")
    high, low = match.groups()
    return (int(high, 16) << 32) | int(low, 16)


def int_to_lsn(value: int) -> str:
    """The inverse of ``lsn_to_int``, for messages people compare with PostgreSQL's own."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


# --------------------------------------------------------------------------------------------
# Results


class PromoteResult(NamedTuple):
    """How a promotion went; ``lsn`` is the write position after the epoch was recorded."""

    ok: bool
    detail: str
    lsn: int | None = None
    epoch: int | None = None  # the epoch now recorded in the database, when ok

    def action_result(self, action_id: int) -> ActionResult:
        return ActionResult(action_id, ok=self.ok, detail=self.detail)


class StopResult(NamedTuple):
    """How a stop went. ``clean`` is False whenever it cannot be shown to be clean;
    ``final_lsn`` is the control file's latest checkpoint (the shutdown checkpoint after a clean
    stop, only a lower bound after a crash)."""

    ok: bool
    clean: bool
    final_lsn: int | None
    detail: str
    timeline: int | None = None  # the timeline final_lsn is on

    def action_result(self, action_id: int) -> ActionResult:
        return ActionResult(
            action_id,
            ok=self.ok,
            detail=self.detail,
            final_lsn=self.final_lsn,
            clean=self.clean,
            timeline=self.timeline,
        )


class StartResult(NamedTuple):
    """How starting as a replica went."""

    ok: bool
    detail: str

    def action_result(self, action_id: int) -> ActionResult:
        return ActionResult(action_id, ok=self.ok, detail=self.detail)


class ControlData(NamedTuple):
    """What ``pg_controldata`` says; ``state`` is None when it could not be read."""

    state: str | None
    checkpoint_lsn: int | None
    error: str = ""
    timeline: int | None = None  # the latest checkpoint's timeline

    @property
    def clean(self) -> bool:
        return self.state in CLEAN_STATES

    def describe(self) -> str:
        if self.state is None:
            return f"control data unreadable ({self.error})"
        at = "" if self.checkpoint_lsn is None else f" at {int_to_lsn(self.checkpoint_lsn)}"
        return f"cluster state {self.state!r}{at}"


class _UnavailableError(Exception):
    """An expected failure inside this module (server down, timeout); becomes a result."""

    def __init__(self, text: str, cause: psycopg.Error | None = None) -> None:
        super().__init__(text)
        self.cause = cause


# --------------------------------------------------------------------------------------------
# Process helpers


def _process_state(pid: int) -> str | None:
    """The state letter in /proc (R, S, T, Z...), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    """A zombie is dead: it only waits for a (slow) PID 1 to reap it."""
    state = _process_state(pid)
    return state is not None and state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``: the postmaster's backends and auxiliary processes."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def _tail(text: str, lines: int = 5, chars: int = 600) -> str:
    kept = "\n".join(text.strip().splitlines()[-lines:])
    return kept[-chars:]


# --------------------------------------------------------------------------------------------
# The adapter


class LocalDatabase:
    """The node's own PostgreSQL: SQL through ``pg``'s host/port/user/dbname/password_file,
    ``pg_ctl``/``pg_controldata`` from ``bin_dir`` on ``data_dir`` as ``service_user``.

    ``node`` is the ``application_name`` this server uses when it streams from the peer (the
    primary's ``pg_stat_replication`` shows it). ``server_log`` receives the postmaster's output
    when this adapter starts it (default: ``postgres.log`` beside the data directory).
    """

    def __init__(
        self,
        pg: PostgresConfig,
        clock: Callable[[], float] = boottime,
        *,
        node: str,
        server_log: Path | None = None,
    ) -> None:
        self.pg = pg
        self.clock = clock
        self.node = node
        self.data_dir = pg.data_dir
        self.server_log = server_log or (
            None if pg.data_dir is None else pg.data_dir.parent / "postgres.log"
        )

    # -- promote ------------------------------------------------------------------------------

    def promote(self, epoch: int, not_after: float, timeout: float) -> PromoteResult:
        """Make this server a writable primary and record ``epoch`` in it; refuse to begin
        after ``not_after`` (the lease deadline). Already a primary: only record the epoch. Stopped
        cleanly as a primary: start it (a clean ex-primary re-adopting), then record the epoch."""
        started = self.clock()
        if started > not_after:
            return PromoteResult(
                False, f"refused: {started - not_after:.3f} s past its not_after deadline"
            )
        deadline = started + timeout
        steps: list[str] = []
        try:
            conn = self._connect(deadline)
        except _UnavailableError as down:
            late = self.clock() - not_after
            if late > 0:
                return PromoteResult(
                    False, f"refused: the deadline passed while connecting ({down}; {late:.3f} s)"
                )
            started_it = self._start_stopped_primary(not_after, deadline, str(down))
            if isinstance(started_it, PromoteResult):
                return started_it
            steps.append(started_it)
            try:
                conn = self._connect(deadline)
            except _UnavailableError as e:
                return PromoteResult(False, f"{started_it}, but cannot connect: {e}")
        with conn:
            late = self.clock() - not_after
            if late > 0:
                return PromoteResult(
                    False, f"refused: the deadline passed while connecting ({late:.3f} s late)"
                )
            try:
                in_recovery = bool(_scalar(conn, "SELECT pg_is_in_recovery()"))
                if in_recovery:
                    wait_s = max(1, math.floor(deadline - self.clock()))
                    t0 = self.clock()
                    done = _scalar(
                        conn,
                        "SELECT pg_promote(wait => true, wait_seconds => %s)",
                        (wait_s,),
                    )
                    if done is not True:
                        return PromoteResult(
                            False, f"pg_promote() did not finish within {wait_s} s"
                        )
                    steps.append(f"promoted in {self.clock() - t0:.3f} s")
                elif not steps:
                    steps.append("already a primary")
            except psycopg.Error as e:
                return PromoteResult(False, f"promotion failed: {_describe(e)}")
            recorded = self._record_epoch(conn, epoch, deadline)
        if isinstance(recorded, str):
            return PromoteResult(False, "; ".join([*steps, recorded]))
        lsn = recorded
        steps.append(f"epoch {epoch} recorded, writable at {int_to_lsn(lsn)}")
        steps.append(f"{self.clock() - started:.3f} s in all")
        return PromoteResult(True, "; ".join(steps), lsn=lsn, epoch=epoch)

    def _start_stopped_primary(
        self, not_after: float, deadline: float, why_down: str
    ) -> str | PromoteResult:
        """Start a server that was shut down cleanly as a primary; any other state is refused.

        Returns a sentence on success, the failed result otherwise."""
        if self.data_dir is None:
            return PromoteResult(False, f"cannot connect ({why_down}) and no data_dir configured")
        pid = self.postmaster_pid()
        if pid is not None:
            return PromoteResult(
                False, f"postmaster {pid} is running but does not answer: {why_down}"
            )
        control = self.control_data(max(0.5, deadline - self.clock()))
        if control.state != "shut down":
            return PromoteResult(
                False,
                f"not running ({why_down}) and not a cleanly stopped primary "
                f"({control.describe()}): refusing to start it as a primary",
            )
        if (self.data_dir / "standby.signal").exists():
            return PromoteResult(
                False,
                "cleanly stopped primary, but standby.signal is present: would start as "
                "a replica; refusing",
            )
        late = self.clock() - not_after
        if late > 0:
            return PromoteResult(False, f"refused: {late:.3f} s past its not_after deadline")
        ok, detail = self._pg_ctl_start(deadline)
        if not ok:
            return PromoteResult(False, f"starting the stopped primary failed: {detail}")
        return f"started the cleanly stopped primary ({detail})"

    def _record_epoch(
        self, conn: psycopg.Connection[Any], epoch: int, deadline: float
    ) -> int | str:
        """Write the epoch as soon as the server takes writes (bounded); the LSN after it, or
        why not."""
        last = "no attempt"
        for _ in range(int(max(0.0, deadline - self.clock()) / _POLL) + 2):
            try:
                with conn.transaction():
                    for statement in EPOCH_SCHEMA:
                        conn.execute(statement)
                    conn.execute(EPOCH_UPSERT, (epoch,))
                lsn = _scalar(conn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
                return int(lsn)
            except (
                psycopg.errors.ReadOnlySqlTransaction,
                psycopg.errors.UniqueViolation,  # a concurrent CREATE ... IF NOT EXISTS
            ) as e:
                last = _describe(e)
            except psycopg.Error as e:
                return f"recording epoch {epoch} failed: {_describe(e)}"
            if self.clock() >= deadline:
                break
            time.sleep(_POLL)
        return f"not writable within the timeout: {last}"

    # -- stop ---------------------------------------------------------------------------------

    def stop(self, mode: StopMode, timeout: float) -> StopResult:
        """Stop the server within ``timeout``: ``fast`` (clean: checkpoint, replicas get the
        end of WAL), ``immediate`` if that does not finish, SIGKILL by PID as the last resort.
        Already stopped is success. The control file says whether it ended clean, and where."""
        started = self.clock()
        deadline = started + timeout
        if self.data_dir is None:
            return StopResult(False, False, None, "no data_dir configured")
        pid = self.postmaster_pid()
        if pid is None:
            control = self.control_data(max(0.5, timeout))
            return self._stopped(control, f"already stopped: {control.describe()}")
        # kill: a hung server is not asked to stop; its processes are killed at once.
        ladder: dict[StopMode, list[tuple[StopMode, float]]] = {
            "fast": [("fast", 0.5), ("immediate", 0.3)],
            "immediate": [("immediate", 0.7)],
            "kill": [],
        }
        phases = ladder[mode]
        steps: list[str] = []
        stopped = False
        for phase_mode, share in phases:
            phase_end = min(deadline, self.clock() + timeout * share)
            signalled = self._pg_ctl_stop_signal(phase_mode, phase_end)
            if self._wait_gone([pid], phase_end):
                steps.append(f"{phase_mode} stop")
                stopped = True
                break
            steps.append(f"{phase_mode} stop did not finish in time ({signalled})")
        if not stopped:
            victims = self._kill_all(pid)
            if self._wait_gone(victims, max(deadline, self.clock() + 0.5)):
                steps.append(f"SIGKILL of postmaster {pid} and {len(victims) - 1} children")
                stopped = True
            else:
                steps.append(f"postmaster {pid} survived SIGKILL")
        took = self.clock() - started
        if not stopped:
            return StopResult(False, False, None, f"{'; '.join(steps)} ({took:.3f} s)")
        control = self.control_data(max(0.5, deadline - self.clock()))
        return self._stopped(control, f"{'; '.join(steps)} in {took:.3f} s: {control.describe()}")

    def _stopped(self, control: ControlData, detail: str) -> StopResult:
        """The result once no postmaster of ours runs. Not ok when the control file cannot be
        read (a wrong data_dir would otherwise pass for "stopped") or when something still
        accepts connections on the configured address (a server we do not know about)."""
        ok = control.state is not None
        if tcp_reachable(self.pg.host, self.pg.port, 0.5) is None and not self.pg.host.startswith(
            "/"
        ):
            ok = False
            detail += (
                f"; but something still accepts connections on {self.pg.host}:{self.pg.port} "
                "(is data_dir right?)"
            )
        return StopResult(ok, control.clean, control.checkpoint_lsn, detail, control.timeline)

    def _pg_ctl_stop_signal(self, mode: StopMode, until: float) -> str:
        """``pg_ctl stop -m MODE -W``: send the signal; this module waits with its own clock
        (``pg_ctl -t`` takes whole seconds only)."""
        assert self.data_dir is not None
        argv = [self._bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode, "-W", "-s"]
        ok, out = self._run(argv, max(0.5, until - self.clock()))
        return "signalled" if ok else f"pg_ctl: {out}"

    def _kill_all(self, pid: int) -> list[int]:
        """SIGKILL the postmaster and its children by PID; it is stopped first so that it cannot
        fork while they are listed. Killing the children too frees its shared memory at once."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        return victims

    def _wait_gone(self, pids: list[int], until: float) -> bool:
        for _ in range(int(max(0.0, until - self.clock()) / _POLL) + 2):
            if not any(_alive(p) for p in pids):
                return True
            if self.clock() >= until:
                break
            time.sleep(_POLL)
        return not any(_alive(p) for p in pids)

    # -- start as a replica -------------------------------------------------------------------

    def start_replica(self, primary_host: str, primary_port: int, timeout: float) -> StartResult:
        """Start this (cleanly stopped) server as a streaming replica of the given primary.

        Only from a clean stop: a crashed ex-primary may hold writes the new primary never had,
        and following it would silently fork history (that needs pg_rewind). Writes
        ``standby.signal`` and ``primary_conninfo``; ``recovery_target_timeline`` stays
        'latest', so it follows the new primary's timeline switch."""
        started = self.clock()
        deadline = started + timeout
        if self.data_dir is None:
            return StartResult(False, "no data_dir configured")
        if self.postmaster_pid() is not None:
            return self._already_running(primary_host, primary_port, deadline)
        control = self.control_data(max(0.5, timeout))
        if control.state is None:
            return StartResult(False, f"cannot tell how it stopped: {control.describe()}")
        if not control.clean:
            return StartResult(
                False, f"did not stop cleanly ({control.describe()}): needs pg_rewind"
            )
        try:
            self._write_standby_config(primary_host, primary_port)
        except (OSError, KeyError, psycopg.ProgrammingError) as e:
            return StartResult(False, f"cannot write the standby configuration: {e}")
        ok, detail = self._pg_ctl_start(deadline)
        if not ok:
            return StartResult(False, f"start as a replica failed: {detail}")
        verified = self._verify_replica(deadline)
        if verified is not None:
            return StartResult(False, f"started, but {verified}")
        receiver = self._receiver_status(deadline)
        took = self.clock() - started
        return StartResult(
            True,
            f"started as a replica of {primary_host}:{primary_port} in {took:.3f} s "
            f"(from {control.describe()}; WAL receiver {receiver})",
        )

    def _already_running(self, host: str, port: int, deadline: float) -> StartResult:
        """Idempotence: a replica already following this primary is success; anything else
        must be stopped first."""
        try:
            with self._connect(deadline) as conn:
                in_recovery = bool(_scalar(conn, "SELECT pg_is_in_recovery()"))
                current = str(_scalar(conn, "SHOW primary_conninfo") or "")
        except _UnavailableError as e:
            return StartResult(False, f"already running, but does not answer: {e}")
        except psycopg.Error as e:
            return StartResult(False, f"already running: {_describe(e)}")
        if not in_recovery:
            return StartResult(False, "running as a primary: stop it first")
        try:
            have = pg_conninfo.conninfo_to_dict(current)
        except psycopg.ProgrammingError:
            have = {}
        if have.get("host") == host and str(have.get("port")) == str(port):
            return StartResult(True, f"already a replica of {host}:{port}")
        return StartResult(False, f"running as a replica of something else ({current!r})")

    def _write_standby_config(self, host: str, port: int) -> None:
        """``standby.signal`` plus one ``primary_conninfo`` line in ``postgresql.auto.conf``
        (other connection options there, such as sslmode or passfile, are kept)."""
        assert self.data_dir is not None
        auto = self.data_dir / "postgresql.auto.conf"
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
        params.update(host=host, port=str(port), user=self.pg.user, application_name=self.node)
        conninfo = pg_conninfo.make_conninfo(**params)
        kept.append(f"primary_conninfo = {_conf_quote(conninfo)}")
        self._write_owned(auto, "\n".join(kept) + "\n")
        self._write_owned(self.data_dir / "standby.signal", "")

    def _verify_replica(self, deadline: float) -> str | None:
        """None when the server answers as a replica; else what is wrong."""
        last = "no attempt"
        for _ in range(int(max(0.0, deadline - self.clock()) / _POLL) + 2):
            try:
                with self._connect(deadline) as conn:
                    if _scalar(conn, "SELECT pg_is_in_recovery()"):
                        return None
                    return "it is not in recovery (a primary): standby.signal was not honoured"
            except _UnavailableError as e:
                if isinstance(e.cause, psycopg.errors.CannotConnectNow) and (
                    "hot standby" in str(e.cause).lower()
                ):
                    return None  # a replica with hot_standby off: in recovery by definition
                last = str(e)
            except psycopg.Error as e:
                last = _describe(e)
            if self.clock() >= deadline:
                break
            time.sleep(_POLL)
        return f"cannot confirm it is a replica: {last}"

    def _receiver_status(self, deadline: float) -> str:
        try:
            with self._connect(deadline) as conn:
                status = _scalar(conn, "SELECT status FROM pg_stat_wal_receiver")
        except (_UnavailableError, psycopg.Error):
            return "unknown"
        return "not running yet" if status is None else str(status)

    # -- reading ------------------------------------------------------------------------------

    def recorded_epoch(self, timeout: float = 2.0) -> int | None:
        """The epoch the last promotion wrote; None when there is none (no table, no row) or the
        server cannot be asked within ``timeout``."""
        deadline = self.clock() + timeout
        try:
            with self._connect(deadline) as conn:
                value = _scalar(conn, "SELECT max(epoch) FROM failoverd_epoch")
        except (_UnavailableError, psycopg.Error):
            return None
        return None if value is None else int(value)

    def control_data(self, timeout: float = 5.0) -> ControlData:
        """``pg_controldata``: the cluster state and the latest checkpoint's LSN."""
        if self.data_dir is None:
            return ControlData(None, None, "no data_dir configured")
        try:
            done = subprocess.run(
                [self._bin("pg_controldata"), "-D", str(self.data_dir)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return ControlData(None, None, str(e))
        if done.returncode != 0:
            return ControlData(None, None, _tail(done.stderr or done.stdout, 2))
        state: str | None = None
        lsn: int | None = None
        timeline: int | None = None
        for line in done.stdout.splitlines():
            key, _, value = line.partition(":")
            if key == "Database cluster state":
                state = value.strip()
            elif key == "Latest checkpoint location":
                with contextlib.suppress(ValueError):
                    lsn = lsn_to_int(value)
            elif key == "Latest checkpoint's TimeLineID":
                with contextlib.suppress(ValueError):
                    timeline = int(value.strip())
        if state is None:
            return ControlData(None, lsn, "no cluster state in pg_controldata's output", timeline)
        return ControlData(state, lsn, timeline=timeline)

    def postmaster_pid(self) -> int | None:
        """The live postmaster of our data directory, None when there is none (no pid file, a
        dead or zombie process, or a reused PID that belongs to a stranger)."""
        if self.data_dir is None:
            return None
        info = self._pid_file()
        if info is None:
            return None
        pid = info[0]
        if not _alive(pid):
            return None
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return pid  # not ours to inspect: trust the pid file
        return pid if Path(cwd) == self.data_dir.resolve() else None

    # -- starting -----------------------------------------------------------------------------

    def _pg_ctl_start(self, deadline: float) -> tuple[bool, str]:
        """``pg_ctl start -w`` as the service user, after removing lock files that a killed
        postmaster left behind (a zombie's PID passes ``kill(pid, 0)``, so PostgreSQL itself
        would refuse to start: "lock file already exists")."""
        assert self.data_dir is not None
        removed = self._remove_stale_locks()
        log = self._prepare_log()
        remaining = max(1.0, deadline - self.clock())
        argv = [
            self._bin("pg_ctl"), "start",
            "-D", str(self.data_dir),
            "-l", log,
            "-w", "-t", str(max(1, math.ceil(remaining))),
            "-s",
        ]  # fmt: skip
        t0 = self.clock()
        ok, out = self._run(argv, remaining + 2.0, kill_group=False)
        if not ok:
            return False, f"pg_ctl start: {out}; server log {log}:\n{self._log_tail(log)}"
        extra = f"; removed stale {', '.join(removed)}" if removed else ""
        return True, f"pg_ctl start took {self.clock() - t0:.3f} s{extra}"

    def _pid_file(self) -> tuple[int, list[str]] | None:
        assert self.data_dir is not None
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[0]), lines
        except (OSError, ValueError, IndexError):
            return None

    def _remove_stale_locks(self) -> list[str]:
        """Remove ``postmaster.pid`` and its socket lock files when their postmaster is dead."""
        assert self.data_dir is not None
        info = self._pid_file()
        if info is None or self.postmaster_pid() is not None:
            return []
        pid, lines = info
        stale = [self.data_dir / "postmaster.pid"]
        # Line 4 is the port, line 5 the first socket directory (postmaster.pid's layout).
        if len(lines) >= 5 and lines[3].strip().isdigit() and lines[4].strip():
            stale.append(Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock")
        removed: list[str] = []
        for path in stale:
            if path.name.endswith(".lock"):
                try:
                    owner = int(path.read_text().split("\n", 1)[0])
                except (OSError, ValueError):
                    continue
                if owner != pid and _alive(owner):
                    continue  # another live server's lock: not ours to remove
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path.name)
        return removed

    def _prepare_log(self) -> str:
        """The server log ``pg_ctl -l`` appends to, writable by the service user."""
        if self.server_log is None:
            return "/dev/null"
        try:
            self.server_log.touch(exist_ok=True)
            self._chown(self.server_log)
        except (OSError, KeyError):
            return "/dev/null"
        return str(self.server_log)

    @staticmethod
    def _log_tail(log: str) -> str:
        if log == "/dev/null":
            return "(no log)"
        try:
            return _tail(Path(log).read_text(errors="replace"), 8, 1500)
        except OSError as e:
            return f"(cannot read: {e})"

    # -- plumbing -----------------------------------------------------------------------------

    def _connect(self, deadline: float) -> psycopg.Connection[Any]:
        """A connection, or _UnavailableError. libpq cannot time out a connect in under 2 s, so a
        TCP probe first answers "refused" or "no answer" within the budget."""
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise _UnavailableError("out of time before connecting")
        gone = tcp_reachable(self.pg.host, self.pg.port, min(remaining, 1.0))
        if gone is not None:
            why = "connection refused" if gone == "down" else "no answer"
            raise _UnavailableError(f"{why} on {self.pg.host}:{self.pg.port}")
        statement_ms = max(1, int((deadline - self.clock() + 1.0) * 1000))
        try:
            password = read_password(self.pg.password_file)
        except OSError as e:
            raise _UnavailableError(f"cannot read password_file: {e.strerror or e}") from None
        try:
            return psycopg.connect(
                host=self.pg.host,
                port=self.pg.port,
                user=self.pg.user,
                dbname=self.pg.dbname,
                password=password,
                connect_timeout=max(_MIN_CONNECT, math.ceil(remaining)),
                options=f"-c statement_timeout={statement_ms}",
                application_name="failoverd",
                autocommit=True,
            )
        except psycopg.Error as e:
            raise _UnavailableError(_describe(e), e) from None

    def _bin(self, name: str) -> str:
        return str(self.pg.bin_dir / name)

    def _account(self) -> pwd.struct_passwd:
        return pwd.getpwnam(self.pg.service_user)

    def _as_service_user(self, argv: list[str]) -> list[str]:
        """``runuser`` when root; directly when already the service user."""
        account = self._account()
        if os.geteuid() == account.pw_uid:
            return argv
        return ["runuser", "-u", self.pg.service_user, "--", *argv]

    def _run(self, argv: list[str], timeout: float, *, kill_group: bool = True) -> tuple[bool, str]:
        """Run as the service user, bounded; (ok, output tail). On timeout the process group is
        killed by its id (``pg_ctl start`` is spared that: the postmaster is its grandchild)."""
        try:
            account = self._account()
            cmd = self._as_service_user(argv)
        except KeyError:
            return False, f"service user {self.pg.service_user!r} does not exist"
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": account.pw_dir}
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=env,
                start_new_session=True,  # a Ctrl-C at the terminal must not reach it
            )
        except OSError as e:
            return False, f"cannot run {argv[0]}: {e}"
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                if kill_group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=2.0)
            return False, f"{Path(argv[0]).name} did not finish within {timeout:.1f} s"
        text = _tail(out.decode(errors="replace"))
        if proc.returncode != 0:
            return False, f"exit {proc.returncode}: {text}"
        return True, text

    def _write_owned(self, path: Path, text: str) -> None:
        """Replace a file atomically, owned by the service user, mode 0600 (as PostgreSQL's)."""
        tmp = path.with_name(path.name + ".failoverd-tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        self._chown(tmp)
        tmp.replace(path)

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            account = self._account()
            os.chown(path, account.pw_uid, account.pw_gid)


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


def _scalar(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _describe(e: psycopg.Error) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

"""The server's life: promote it (and record the epoch), stop it, start it, read its control
file, and handle its postmaster by PID.

Why these belong together: they are the steps that make or unmake a primary, so each one is
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
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import psycopg

from failoverd.actions.postgres.service import POLL, QUICK_POLL, Service, scalar, tail
from failoverd.actions.postgres.sync import LOCAL_COMMIT, set_sync_names
from failoverd.core import ActionResult
from failoverd.pgconn import (
    ControlData,
    Unavailable,
    child_pids,
    describe,
    int_to_lsn,
    postmaster_pid,
    process_alive,
    read_control_data,
    tcp_reachable,
)

StopMode = Literal["fast", "immediate", "kill"]

CHECKPOINT_SHARE: Final = 0.3
"""Of a stop's timeout, what a CHECKPOINT before it may take: the stop itself needs the rest."""

EPOCH_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS failoverd_epoch (epoch bigint NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS failoverd_epoch_one_row ON failoverd_epoch ((true))",
)
"""The same as lab/donations/schema.sql: one row at most (a unique index on a constant)."""

EPOCH_UPSERT: Final = (
    "INSERT INTO failoverd_epoch VALUES (%s)"
    " ON CONFLICT ((true)) DO UPDATE SET epoch = EXCLUDED.epoch"
)


PRIMARY_STATES: Final = ("shut down", "in production", "shutting down", "in crash recovery")
"""pg_controldata states of a former primary: cleanly stopped, or crashed (crash recovery at
the next start replays everything it wrote)."""
REPLICA_STATES: Final = ("shut down in recovery", "in archive recovery")
"""... and of a former replica, cleanly stopped or not."""


class PromoteResult(NamedTuple):
    """How a promotion went; ``lsn`` is the write position after the epoch was recorded."""

    ok: bool
    detail: str
    lsn: int | None = None
    epoch: int | None = None  # the epoch now recorded in the database, when ok
    late: bool = False  # refused because not_after had passed, before anything was changed
    overran: bool = False  # refused because not_after passed after the server was started

    def action_result(self, action_id: int) -> ActionResult:
        return ActionResult(
            action_id, ok=self.ok, detail=self.detail, late=self.late, overran=self.overran
        )


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


class Lifecycle:
    """Promote, stop, start and read the local server (see the module's docstring)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.pg = svc.pg
        self.clock = svc.clock
        self.data_dir = svc.data_dir

    # -- promote ------------------------------------------------------------------------------

    def promote(
        self, epoch: int, not_after: float, timeout: float, sync_names: Sequence[str] = ()
    ) -> PromoteResult:
        """Make this server a writable primary and record ``epoch`` in it; refuse to begin
        after ``not_after`` (the lease deadline). Already a primary: only record the epoch.
        Stopped: start it first, a former primary as it is (crash recovery keeps every write
        it had; the core asks only when this node is the latest primary), a replica in
        recovery, which is then promoted.

        ``synchronous_standby_names`` becomes ``sync_names`` before the epoch is recorded, and
        on a replica before ``pg_promote()``: the names it inherited (pg_basebackup copies
        ``postgresql.auto.conf``) may name a standby that will never connect, and the first
        commit the new primary acknowledges must already wait for the standbys the core chose.
        The epoch itself is written with ``synchronous_commit = local``: it never waits."""
        return self._make_primary(
            epoch, not_after, timeout, promote_replica=True, sync_names=tuple(sync_names)
        )

    def start_primary(self, epoch: int, not_after: float, timeout: float) -> PromoteResult:
        """Start our own stopped primary again (crash recovery keeps every write it had) and
        record ``epoch`` (with ``synchronous_commit = local``). Never a promotion: a replica,
        stopped or running, is refused. Its synchronous standbys stay as they were: the core
        sets them (``SetSyncStandby``)."""
        return self._make_primary(epoch, not_after, timeout, promote_replica=False, sync_names=None)

    def _make_primary(
        self,
        epoch: int,
        not_after: float,
        timeout: float,
        *,
        promote_replica: bool,
        sync_names: tuple[str, ...] | None,
    ) -> PromoteResult:
        started = self.clock()
        if started > not_after:
            return PromoteResult(
                False,
                f"refused: {started - not_after:.3f} s past its not_after deadline",
                late=True,
            )
        deadline = started + timeout
        steps: list[str] = []
        try:
            conn = self.svc.connect(deadline)
        except Unavailable as down:
            late = self.clock() - not_after
            if late > 0:
                return PromoteResult(
                    False,
                    f"refused: the deadline passed while connecting ({down}; {late:.3f} s)",
                    late=True,
                )
            started_it = self._start_stopped(
                not_after, deadline, str(down), replica_ok=promote_replica
            )
            if isinstance(started_it, PromoteResult):
                return started_it
            steps.append(started_it)
            try:
                conn = self.svc.connect(deadline)
            except Unavailable as e:
                return PromoteResult(False, f"{started_it}, but cannot connect: {e}")
        with conn:
            late = self.clock() - not_after
            if late > 0:
                refused = f"refused: the deadline passed while connecting ({late:.3f} s late)"
                return PromoteResult(
                    False,
                    "; ".join([*steps, refused]),
                    late=not steps,  # nothing started yet: nothing was done
                    overran=bool(steps),  # started: the same action sent again finishes it
                )
            try:
                in_recovery = bool(scalar(conn, "SELECT pg_is_in_recovery()"))
                if in_recovery and not promote_replica:
                    return PromoteResult(
                        False, "the server is a replica: starting it is not promoting it"
                    )
                if not in_recovery and not steps:
                    steps.append("already a primary")
                if sync_names is not None:
                    # On a replica too (ALTER SYSTEM writes a file, not WAL): in place before
                    # its first commit; a failure leaves the replica unpromoted.
                    named = set_sync_names(conn, sync_names, deadline, self.clock)
                    unchanged = "; not promoted" if in_recovery else ""
                    if not named.ok:
                        return PromoteResult(False, "; ".join([*steps, named.detail + unchanged]))
                    steps.append(named.detail)
                    late = self.clock() - not_after
                    if in_recovery and late > 0:
                        why = f"then {late:.3f} s past its not_after deadline{unchanged}"
                        return PromoteResult(False, "; ".join([*steps, why]), overran=True)
                if in_recovery:
                    t0 = self.clock()
                    if scalar(conn, "SELECT pg_promote(wait => false)") is not True:
                        return PromoteResult(False, "pg_promote() could not signal the promotion")
                    if not self._wait_out_of_recovery(conn, deadline):
                        return PromoteResult(
                            False,
                            f"still in recovery {self.clock() - t0:.3f} s after pg_promote()",
                        )
                    steps.append(f"promoted in {self.clock() - t0:.3f} s")
            except psycopg.Error as e:
                return PromoteResult(False, f"promotion failed: {describe(e)}")
            recorded = self._record_epoch(conn, epoch, deadline)
        if isinstance(recorded, str):
            return PromoteResult(False, "; ".join([*steps, recorded]))
        lsn = recorded
        steps.append(f"epoch {epoch} recorded, writable at {int_to_lsn(lsn)}")
        steps.append(f"{self.clock() - started:.3f} s in all")
        return PromoteResult(True, "; ".join(steps), lsn=lsn, epoch=epoch)

    def _start_stopped(
        self, not_after: float, deadline: float, why_down: str, *, replica_ok: bool
    ) -> str | PromoteResult:
        """Start a stopped server: a former primary (cleanly stopped, or crashed: crash recovery
        runs first), or, with ``replica_ok``, a replica, which starts in recovery for the caller
        to promote. Returns a sentence on success, the failed result otherwise."""
        if self.data_dir is None:
            return PromoteResult(False, f"cannot connect ({why_down}) and no data_dir configured")
        pid = self.postmaster_pid()
        if pid is not None:
            return PromoteResult(
                False, f"postmaster {pid} is running but does not answer: {why_down}"
            )
        control = self.control_data(max(0.5, deadline - self.clock()))
        standby = (self.data_dir / "standby.signal").exists()
        primary = control.state in PRIMARY_STATES and not standby
        replica = control.state in REPLICA_STATES or (control.state in PRIMARY_STATES and standby)
        if not primary and not (replica_ok and replica):
            wanted = "a stopped server" if replica_ok else "a stopped primary"
            return PromoteResult(
                False,
                f"not running ({why_down}) and not {wanted} ({control.describe()}"
                + (", standby.signal present" if standby else "")
                + "): refusing to start it",
            )
        late = self.clock() - not_after
        if late > 0:
            return PromoteResult(
                False, f"refused: {late:.3f} s past its not_after deadline", late=True
            )
        ok, detail = self.pg_ctl_start(deadline)
        what = "the stopped primary" if primary else "the stopped replica"
        if not ok:
            return PromoteResult(False, f"starting {what} failed: {detail}")
        recovered = "" if control.clean else ", after crash recovery"
        return f"started {what} ({control.describe()}{recovered}; {detail})"

    def _wait_out_of_recovery(self, conn: psycopg.Connection[Any], deadline: float) -> bool:
        """Poll until the promotion has ended (bounded by ``deadline``). Not pg_promote(wait =>
        true): it looks only every 100 ms, and a promotion takes 10-20 ms here."""
        for _ in range(int(max(0.0, deadline - self.clock()) / QUICK_POLL) + 2):
            if not scalar(conn, "SELECT pg_is_in_recovery()"):
                return True
            if self.clock() >= deadline:
                break
            time.sleep(QUICK_POLL)
        return False

    def _record_epoch(
        self, conn: psycopg.Connection[Any], epoch: int, deadline: float
    ) -> int | str:
        """Write the epoch as soon as the server takes writes (bounded); the LSN after it, or
        why not. The transaction is ``synchronous_commit = local``: the commit never waits for
        a standby, named or not, connected or not."""
        last = "no attempt"
        for _ in range(int(max(0.0, deadline - self.clock()) / POLL) + 2):
            try:
                with conn.transaction():
                    conn.execute(LOCAL_COMMIT)
                    for statement in EPOCH_SCHEMA:
                        conn.execute(statement)
                    conn.execute(EPOCH_UPSERT, (epoch,))
                lsn = scalar(conn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
                return int(lsn)
            except (
                psycopg.errors.ReadOnlySqlTransaction,
                psycopg.errors.UniqueViolation,  # a concurrent CREATE ... IF NOT EXISTS
            ) as e:
                last = describe(e)
            except psycopg.Error as e:
                return f"recording epoch {epoch} failed: {describe(e)}"
            if self.clock() >= deadline:
                break
            time.sleep(POLL)
        return f"not writable within the timeout: {last}"

    # -- stop ---------------------------------------------------------------------------------

    def stop(self, mode: StopMode, timeout: float, checkpoint: bool = False) -> StopResult:
        """Stop the server within ``timeout``: ``fast`` (clean: checkpoint, replicas get the
        end of WAL), ``immediate`` if that does not finish, SIGKILL by PID as the last resort;
        ``kill`` goes straight to SIGKILL (a hung server is not asked). Already stopped is
        success. The control file says whether it ended clean, and where.

        ``checkpoint``: run ``CHECKPOINT`` first, within a share of the timeout, so that the
        shutdown checkpoint has little left to write and a voluntary stop stays clean under
        load. A CHECKPOINT that fails or runs late is reported and the stop goes on."""
        started = self.clock()
        deadline = started + timeout
        if self.data_dir is None:
            return StopResult(False, False, None, "no data_dir configured")
        pid = self.postmaster_pid()
        if pid is None:
            control = self.control_data(max(0.5, timeout))
            return self._stopped(control, f"already stopped: {control.describe()}")
        steps: list[str] = []
        if checkpoint and mode != "kill":
            steps.append(self._checkpoint(started + timeout * CHECKPOINT_SHARE))
        # kill: a hung server is not asked to stop; its processes are killed at once.
        ladder: dict[StopMode, list[tuple[StopMode, float]]] = {
            "fast": [("fast", 0.5), ("immediate", 0.3)],
            "immediate": [("immediate", 0.7)],
            "kill": [],
        }
        budget = deadline - self.clock()  # what the CHECKPOINT left
        stopped = False
        for phase_mode, share in ladder[mode]:
            phase_end = min(deadline, self.clock() + budget * share)
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

    def _checkpoint(self, until: float) -> str:
        """``CHECKPOINT`` bounded by ``until`` (statement_timeout, and the connection's own
        deadline); a sentence either way, never an exception: the stop must go on."""
        t0 = self.clock()
        try:
            with self.svc.connect(until, grace=0.0) as conn:
                conn.execute("CHECKPOINT")
        except Unavailable as e:
            return f"CHECKPOINT skipped ({e}); stopping anyway"
        except psycopg.Error as e:
            took = self.clock() - t0
            return f"CHECKPOINT failed after {took:.3f} s ({describe(e)}); stopping anyway"
        return f"CHECKPOINT in {self.clock() - t0:.3f} s"

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
        argv = [self.svc.bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode, "-W", "-s"]
        ok, out = self.svc.run(argv, max(0.5, until - self.clock()))
        return "signalled" if ok else f"pg_ctl: {out}"

    def _kill_all(self, pid: int) -> list[int]:
        """SIGKILL the postmaster and its children by PID; it is stopped first so that it cannot
        fork while they are listed. Killing the children too frees its shared memory at once."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        victims = [pid, *child_pids(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        return victims

    def _wait_gone(self, pids: list[int], until: float) -> bool:
        for _ in range(int(max(0.0, until - self.clock()) / POLL) + 2):
            if not any(process_alive(p) for p in pids):
                return True
            if self.clock() >= until:
                break
            time.sleep(POLL)
        return not any(process_alive(p) for p in pids)

    # -- start as a replica -------------------------------------------------------------------
    # -- reading ------------------------------------------------------------------------------

    def recorded_epoch(self, timeout: float = 2.0) -> int | None:
        """The epoch the last promotion wrote; None when there is none (no table, no row) or the
        server cannot be asked within ``timeout``."""
        deadline = self.clock() + timeout
        try:
            with self.svc.connect(deadline) as conn:
                value = scalar(conn, "SELECT max(epoch) FROM failoverd_epoch")
        except (Unavailable, psycopg.Error):
            return None
        return None if value is None else int(value)

    def control_data(self, timeout: float = 5.0) -> ControlData:
        """``pg_controldata``: the cluster state, the latest checkpoint, and every other field."""
        if self.data_dir is None:
            return ControlData(None, None, "no data_dir configured")
        return read_control_data(self.pg.bin_dir, self.data_dir, timeout)

    def postmaster_pid(self) -> int | None:
        """The live postmaster of our data directory, None when there is none."""
        return None if self.data_dir is None else postmaster_pid(self.data_dir)

    # -- starting -----------------------------------------------------------------------------

    def pg_ctl_start(self, deadline: float) -> tuple[bool, str]:
        """``pg_ctl start -w`` as the service user, after removing lock files that a killed
        postmaster left behind (a zombie's PID passes ``kill(pid, 0)``, so PostgreSQL itself
        would refuse to start: "lock file already exists")."""
        assert self.data_dir is not None
        removed = self.remove_stale_locks()
        log = self._prepare_log()
        remaining = max(1.0, deadline - self.clock())
        argv = [
            self.svc.bin("pg_ctl"), "start",
            "-D", str(self.data_dir),
            "-l", log,
            "-w", "-t", str(max(1, math.ceil(remaining))),
            "-s",
            *self.svc.server_options(),
        ]  # fmt: skip
        t0 = self.clock()
        ok, out = self.svc.run(argv, remaining + 2.0, kill_group=False)
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

    def remove_stale_locks(self) -> list[str]:
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
                if owner != pid and process_alive(owner):
                    continue  # another live server's lock: not ours to remove
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path.name)
        return removed

    def _prepare_log(self) -> str:
        """The server log ``pg_ctl -l`` appends to, writable by the service user."""
        if self.svc.server_log is None:
            return "/dev/null"
        try:
            self.svc.server_log.touch(exist_ok=True)
            self.svc.chown(self.svc.server_log)
        except (OSError, KeyError):
            return "/dev/null"
        return str(self.svc.server_log)

    @staticmethod
    def _log_tail(log: str) -> str:
        if log == "/dev/null":
            return "(no log)"
        try:
            return tail(Path(log).read_text(errors="replace"), 8, 1500)
        except OSError as e:
            return f"(cannot read: {e})"

    # -- plumbing -----------------------------------------------------------------------------

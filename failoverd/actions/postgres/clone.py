"""Cloning the primary: a fresh copy of its data directory with ``pg_basebackup``, swapped in
for ours only once it streams.

Why it is its own path: when a rewind cannot work (the WAL it needs is gone, no checksums,
another initdb) or the node is new (a missing or empty data directory), a full copy is the way
back. It is the one operation here that replaces a data directory, so it never leaves the node
with less than it had: the old directory stays aside until the copy streams, and comes back
when anything fails.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from pathlib import Path
from typing import Final, NamedTuple

import psycopg
from psycopg import conninfo as pg_conninfo

from failoverd.actions.postgres.lifecycle import Lifecycle
from failoverd.actions.postgres.replication import Replication
from failoverd.actions.postgres.service import Service
from failoverd.core import ActionResult
from failoverd.pgconn import Unavailable, connect, describe

START_RESERVE: Final = 0.4
"""Of a clone's timeout, what is kept for starting the copy and seeing it stream (at most
``START_RESERVE_MAX`` seconds): the base backup gets the rest."""
START_RESERVE_MAX: Final = 15.0


class CloneResult(NamedTuple):
    """How a clone went; on success the node streams from the primary."""

    ok: bool
    detail: str

    def action_result(self, action_id: int) -> ActionResult:
        return ActionResult(action_id, ok=self.ok, detail=self.detail)


class Clone:
    """Clone the primary into this node (see the module's docstring)."""

    def __init__(self, svc: Service, lifecycle: Lifecycle, replication: Replication) -> None:
        self.svc = svc
        self.lifecycle = lifecycle
        self.replication = replication
        self.pg = svc.pg
        self.clock = svc.clock
        self.data_dir = svc.data_dir

    def clone(self, primary_host: str, primary_port: int, timeout: float) -> CloneResult:
        """``pg_basebackup`` from the primary into a fresh sibling directory, then swap it in,
        start it as a replica and see it stream; only then is the old directory removed. A
        failure before the swap removes the partial copy and leaves the old directory as it
        was; a failure after it puts the old directory back. Works for a missing or empty
        data directory too (a new or replaced node)."""
        started = self.clock()
        deadline = started + timeout
        where = f"{primary_host}:{primary_port}"
        data_dir = self.data_dir
        if data_dir is None:
            return CloneResult(False, "no data_dir configured")
        pid = self.lifecycle.postmaster_pid()
        if pid is not None:
            return CloneResult(False, f"postmaster {pid} is running: stop it before cloning")
        if not data_dir.parent.is_dir():
            return CloneResult(False, f"{data_dir.parent} does not exist")
        # Ask the primary first: an unreachable one leaves nothing behind, not even a directory.
        try:
            with connect(
                primary_host,
                primary_port,
                user=self.pg.user,
                dbname=self.pg.dbname,
                password=self.svc.password(),
                timeout=min(5.0, max(0.1, (deadline - self.clock()) / 4)),
                application_name="failoverd-clone",
                replication="database",
            ) as conn:
                conn.execute("IDENTIFY_SYSTEM")
        except Unavailable as e:
            return CloneResult(False, f"cannot reach the primary at {where}: {e}")
        except psycopg.Error as e:
            return CloneResult(False, f"the primary at {where} said: {describe(e)}")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        clone_dir = data_dir.with_name(f"{data_dir.name}.clone-{stamp}")
        old_dir = data_dir.with_name(f"{data_dir.name}.old-{stamp}")
        if clone_dir.exists() or old_dir.exists():
            return CloneResult(False, f"{clone_dir} or {old_dir} already exists: try again")
        reserve = min(START_RESERVE_MAX, timeout * START_RESERVE)
        ok, copied = self._base_backup(primary_host, primary_port, clone_dir, deadline - reserve)
        if not ok:
            shutil.rmtree(clone_dir, ignore_errors=True)
            return CloneResult(False, f"{copied}; {data_dir} untouched")
        steps = [copied]
        try:
            steps.extend(self.svc.restore_config(clone_dir, self.svc.keep_config(data_dir)))
            self.replication.write_standby_config(primary_host, primary_port, clone_dir)
            _make_private(clone_dir)
            self.svc.chown(clone_dir)
        except (OSError, KeyError, psycopg.ProgrammingError) as e:
            shutil.rmtree(clone_dir, ignore_errors=True)
            return CloneResult(False, f"{copied}; preparing the copy failed: {e}")
        was_empty = data_dir.is_dir() and not any(data_dir.iterdir())
        try:
            steps.append(self._swap_in(clone_dir, data_dir, old_dir))
        except OSError as e:
            shutil.rmtree(clone_dir, ignore_errors=True)
            return CloneResult(False, f"{copied}; could not move the copy into place: {e}")
        failed = self._start_streaming(deadline)
        if failed is not None:
            steps.append(failed)
            steps.append(self._swap_back(data_dir, old_dir, was_empty))
            return CloneResult(False, "; ".join(steps))
        if old_dir.exists():
            shutil.rmtree(old_dir, ignore_errors=True)
            steps.append(
                f"could not remove all of {old_dir}"
                if old_dir.exists()
                else f"removed {old_dir.name} once the copy streamed"
            )
        steps.append(f"{self.clock() - started:.3f} s in all")
        return CloneResult(True, "; ".join(steps))

    def _base_backup(self, host: str, port: int, target: Path, until: float) -> tuple[bool, str]:
        """pg_basebackup into ``target`` (made here, empty, owned by the service user, so the
        parent directory need not be writable by it); (ok, what happened)."""
        t0 = self.clock()
        try:
            target.mkdir(mode=0o700)
            self.svc.chown(target)
        except (OSError, KeyError) as e:
            return False, f"cannot create {target}: {e}"
        argv = [
            self.svc.bin("pg_basebackup"),
            "-D", str(target),
            "-d", self._replication_conninfo(host, port, until),
            "-X", "stream",
            "-R",
            "-c", "fast",
            "-w",
        ]  # fmt: skip
        ok, out = self.svc.run(
            argv, max(0.5, until - self.clock()), env=self.svc.password_env(), lines=8
        )
        took = self.clock() - t0
        if not ok:
            return False, f"pg_basebackup from {host}:{port} failed after {took:.3f} s: {out}"
        size = _size_mb(target)
        return True, f"pg_basebackup from {host}:{port} in {took:.3f} s ({size:.0f} MB)"

    def _swap_in(self, clone_dir: Path, data_dir: Path, old_dir: Path) -> str:
        """Move the old data directory aside (nothing to move when it is missing or empty)
        and the copy into its place."""
        if data_dir.is_dir() and any(data_dir.iterdir()):
            data_dir.rename(old_dir)
            said = f"moved the old data directory aside to {old_dir.name}"
        elif data_dir.is_dir():
            data_dir.rmdir()
            said = "the data directory was empty"
        else:
            said = "there was no data directory"
        try:
            clone_dir.rename(data_dir)
        except OSError:
            if old_dir.exists():
                old_dir.rename(data_dir)
            raise
        return said

    def _start_streaming(self, deadline: float) -> str | None:
        """Start the swapped-in copy as a replica and see it stream; None when it does."""
        ok, detail = self.lifecycle.pg_ctl_start(max(deadline, self.clock() + 1.0))
        if not ok:
            return f"starting the copy failed: {detail}"
        wrong = self.replication.verify_replica(deadline)
        if wrong is None:
            wrong = self.replication.wait_streaming(deadline)
        if wrong is not None:
            return f"the copy started, but {wrong}"
        return None

    def _swap_back(self, data_dir: Path, old_dir: Path, was_empty: bool) -> str:
        """Undo the swap: stop the copy, remove it, put the old directory (or the empty one)
        back."""
        stopped = self.lifecycle.stop("immediate", 5.0)
        if self.lifecycle.postmaster_pid() is not None:
            return f"could not stop the copy ({stopped.detail}): {old_dir} left aside"
        shutil.rmtree(data_dir, ignore_errors=True)
        if data_dir.exists():
            return f"could not remove the copy in {data_dir}: {old_dir} left aside"
        try:
            if old_dir.exists():
                old_dir.rename(data_dir)
                return f"put the old data directory back from {old_dir.name}"
            if was_empty:
                data_dir.mkdir(mode=0o700)
                self.svc.chown(data_dir)
        except (OSError, KeyError) as e:
            return f"removed the copy, but could not restore {data_dir}: {e}"
        return "removed the copy"

    def _replication_conninfo(self, host: str, port: int, until: float) -> str:
        """As ``primary_conninfo`` will say it (``-R`` writes it from this): the node's name as
        application_name."""
        return pg_conninfo.make_conninfo(
            host=host,
            port=str(port),
            user=self.pg.user,
            application_name=self.svc.node,
            connect_timeout=str(max(2, math.ceil(min(10.0, until - self.clock())))),
        )


def _make_private(path: Path) -> None:
    """Mode 0700, as PostgreSQL wants its data directory. Under the unit, root has no
    CAP_FOWNER: it cannot chmod what the service user owns, so it takes the directory back
    first (CAP_CHOWN); the caller gives it to the service user again."""
    if path.stat().st_mode & 0o777 == 0o700:
        return
    os.chown(path, os.geteuid(), os.getegid())
    path.chmod(0o700)


def _size_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total / (1024 * 1024)

"""A real PostgreSQL 15 server (primary or streaming replica) for tests, the lab and benchmarks.

Why real servers: failover hinges on PostgreSQL's own behaviour (streaming replication, promotion,
what a fast or an immediate stop leaves behind, a read-only standby refusing writes), which a fake
would only imitate. Each server lives entirely under ``base_dir`` (data, unix socket, logs), listens
on one loopback (or lab) address on a free port, runs as the ``postgres`` user (PostgreSQL refuses
to run as root) and is stopped by PID or through ``pg_ctl``.

The settings are tuned for a fast lab, not for production: trust authentication, tiny buffers and
``fsync=off`` (see ``LAB_SETTINGS``).
"""

from __future__ import annotations

import contextlib
import math
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, dict_row

from failoverd.pgconn import child_pids, process_alive
from lab.process import wait_for
from lab.zookeeper import free_port

BIN_DIR = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"  # the database superuser created by initdb (not the OS user)
# The node's own settings (address, port, socket): beside the data directory, not in it, and
# included from postgresql.conf by a relative path. pg_basebackup and pg_rewind copy the data
# directory's files from the peer, so a node's settings in there would become the peer's.
LAB_CONF = "failoverd_lab.conf"
StopMode = Literal["smart", "fast", "immediate"]

# Lab-only settings. fsync=off is safe for what the lab simulates: a killed process never loses
# the OS page cache, only a host crash would, and the lab never crashes the host.
LAB_SETTINGS: dict[str, str] = {
    "wal_level": "replica",
    "max_wal_senders": "5",
    "max_replication_slots": "5",
    "wal_keep_size": "'128MB'",  # a paused replica can catch up without a slot
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "wal_receiver_status_interval": "'1s'",
    "wal_retrieve_retry_interval": "'200ms'",  # reconnect quickly after the primary comes back
    "wal_sender_timeout": "'5s'",
    "wal_receiver_timeout": "'5s'",
    "shared_buffers": "'16MB'",
    "max_connections": "50",
    "max_wal_size": "'128MB'",
    "min_wal_size": "'32MB'",
    "jit": "off",
    "fsync": "off",  # LAB ONLY (see above)
    "log_line_prefix": "'%m [%p] %q%a '",
}


class PostgresError(RuntimeError):
    """A server could not be set up, started, stopped or promoted; the message says why."""


def _wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    return bool(wait_for(predicate, timeout, interval))


class PostgresServer:
    """One PostgreSQL 15 server under ``base_dir``: ``data/``, ``socket/``, ``postgres.log``."""

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        bin_dir: Path = BIN_DIR,
        os_user: str = "postgres",
        *,
        name: str | None = None,
        trust_from: Sequence[str] = ("127.0.0.1/32",),
        data_checksums: bool = True,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.data_checksums = data_checksums  # off only to show what pg_rewind cannot do
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.bin_dir = Path(bin_dir)
        self.os_user = os_user
        self.name = name or self.base_dir.name  # application_name on the primary's side
        self.trust_from = tuple(trust_from)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "socket"
        self.log_path = self.base_dir / "postgres.log"
        self.pg_ctl_log = self.base_dir / "pg_ctl.log"
        # stop_wal_receiver() keeps the real primary_conninfo here (a file: the lab may resume
        # from another process than the one that stopped it).
        self.saved_conninfo_path = self.base_dir / "primary_conninfo.saved"
        try:
            self._pw = pwd.getpwnam(os_user)
        except KeyError:
            raise PostgresError(f"OS user {os_user!r} does not exist") from None

    # -- properties -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the running postmaster (from ``postmaster.pid``), None when it is not running.

        The PID is trusted only if that process lives in our data directory (the postmaster
        chdirs there), so a stale pid file whose number was reused never points at a stranger.
        """
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        if not process_alive(pid):
            return None
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return pid  # not ours to inspect (not root): trust the pid file
        return pid if Path(cwd) == self.data_dir else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string over TCP (what the app, checks and replicas use)."""
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={dbname}"

    # -- set-up -----------------------------------------------------------------------------

    def init_primary(self) -> None:
        """``initdb`` a fresh cluster, configured as a lab primary (trust auth, replication),
        with data checksums: pg_rewind needs them (or wal_log_hints) to rejoin a diverged node."""
        self._prepare_dirs()
        if self.initialised:
            raise PostgresError(f"{self.data_dir} is already initialised")
        self._run(
            [
                "initdb",
                "-D", str(self.data_dir),
                "-A", "trust",
                "-U", SUPERUSER,
                "-E", "UTF8",
                "--locale=C",
                *(["--data-checksums"] if self.data_checksums else []),
                "--no-sync",
                "--no-instructions",
            ],
            timeout=120,
        )  # fmt: skip
        conf = self.data_dir / "postgresql.conf"
        with open(conf, "a") as f:
            f.write(
                f"\n# failoverd lab: this node's settings live beside the data directory\n"
                f"include '../{LAB_CONF}'\n"
            )
        self._write_lab_conf()
        self._write_hba()

    def prepare_node(self) -> None:
        """The node's directories and its own settings, but no cluster: a new or replaced node
        before failoverd clones the primary into it."""
        self._prepare_dirs()
        self._write_lab_conf()

    def init_replica(self, primary: PostgresServer, timeout: float = 120.0) -> None:
        """Clone ``primary`` with ``pg_basebackup -R -X stream``; its own port and socket come
        from its own ``failoverd_lab.conf`` beside the data directory."""
        self._prepare_dirs()
        if self.initialised:
            raise PostgresError(f"{self.data_dir} is already initialised")
        conninfo = (
            f"host={primary.host} port={primary.port} user={SUPERUSER} application_name={self.name}"
        )
        self._run(
            [
                "pg_basebackup",
                "-D", str(self.data_dir),
                "-d", conninfo,
                "-R",
                "-X", "stream",
                "-c", "fast",
                "--no-sync",
                "-w",
            ],
            timeout=timeout,
        )  # fmt: skip
        self._write_lab_conf()

    # -- life cycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """``pg_ctl start -w`` as the OS user; returns once the server accepts connections."""
        if self.running:
            return
        if not self.initialised:
            raise PostgresError(f"{self.data_dir}: not initialised (init_primary/init_replica)")
        deadline = time.monotonic() + timeout
        self._remove_stale_files()
        argv = [
            "pg_ctl", "start",
            "-D", str(self.data_dir),
            "-l", str(self.log_path),
            "-w", "-t", str(max(1, math.ceil(timeout))),
            "-s",
        ]  # fmt: skip
        # Output to a file, not a pipe: the postmaster must never hold our pipe open.
        with open(self.pg_ctl_log, "ab") as out:
            try:
                proc = subprocess.run(
                    self._as_user(self._bin(argv)),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.base_dir,
                    env=self._env(),
                    timeout=timeout + 5,
                    start_new_session=True,  # a Ctrl-C in the test terminal must not hit it
                    check=False,
                )
                code: int | None = proc.returncode
            except subprocess.TimeoutExpired:
                code = None
        if code != 0:
            self.kill()
            raise PostgresError(
                f"PostgreSQL on {self.host}:{self.port} did not start "
                f"(pg_ctl exit {code}); log {self.log_path}:\n{self.log_tail()}"
            )
        last_error = "no connection attempt yet"

        def accepts() -> bool:
            nonlocal last_error
            try:
                with self.connect(timeout=2.0) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.Error as exc:
                last_error = str(exc).strip()
                return False

        if not _wait(accepts, max(0.5, deadline - time.monotonic()), 0.05):
            self.kill()
            raise PostgresError(
                f"PostgreSQL on {self.host}:{self.port} started but refuses connections "
                f"({last_error}); log {self.log_path}:\n{self.log_tail()}"
            )

    def stop(self, mode: StopMode = "fast", timeout: float = 30.0) -> None:
        """``pg_ctl stop -m MODE``; raises if the server is still up after ``timeout``.

        ``fast`` is a clean shutdown (checkpoint, ``pg_controldata`` says "shut down");
        ``immediate`` is a crash as far as the data directory is concerned.
        """
        if not self.running:
            return
        argv = [
            "pg_ctl", "stop",
            "-D", str(self.data_dir),
            "-m", mode,
            "-w", "-t", str(max(1, math.ceil(timeout))),
            "-s",
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                self._as_user(self._bin(argv)),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=self.base_dir,
                env=self._env(),
                timeout=timeout + 5,
                check=False,
            )
            detail = (proc.stdout + proc.stderr).decode(errors="replace").strip()
        except subprocess.TimeoutExpired:
            detail = "pg_ctl itself did not return"
        if self.running:
            raise PostgresError(
                f"PostgreSQL on {self.host}:{self.port} still running after "
                f"pg_ctl stop -m {mode} ({detail}); log {self.log_path}:\n{self.log_tail()}"
            )

    def kill(self) -> None:
        """SIGKILL the postmaster and all its processes, by PID: a crash of the node's database.

        The postmaster is frozen first so it cannot fork while we list its children; killing
        every child too means the server can be started again at once (no backend still holding
        the old shared memory).
        """
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        children = child_pids(pid)
        for victim in (pid, *children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        if not _wait(lambda: not any(process_alive(p) for p in (pid, *children)), 10.0, 0.02):
            raise PostgresError(f"processes of PostgreSQL {pid} survived SIGKILL")
        self._remove_stale_files()

    def freeze(self) -> None:
        """SIGSTOP the postmaster and its processes: a hung database (answers nothing, but TCP
        connections still open). ``thaw()`` undoes it."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def close(self) -> None:
        """Stop however it takes (thaw, fast, then SIGKILL): for clean-ups that must not leak."""
        self.thaw()  # a frozen server cannot even shut down
        try:
            self.stop("fast", timeout=15.0)
        except PostgresError:
            self.kill()

    # -- replication ------------------------------------------------------------------------

    def promote(self, timeout: float = 30.0) -> None:
        """``pg_promote(wait => true)``; returns once the server accepts writes."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT pg_promote(wait => true, wait_seconds => %s)",
                (max(1, math.ceil(timeout)),),
            ).fetchone()
        if not row or row[0] is not True:
            raise PostgresError(
                f"promotion of {self.host}:{self.port} did not finish within {timeout} s; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )
        if self.is_in_recovery():
            raise PostgresError(f"{self.host}:{self.port} still in recovery after pg_promote()")

    def is_in_recovery(self) -> bool:
        return bool(self._scalar("SELECT pg_is_in_recovery()"))

    def wal_receiver_status(self) -> str | None:
        """``pg_stat_wal_receiver.status`` (``streaming``, ``starting``...), None if no receiver."""
        value = self._scalar("SELECT status FROM pg_stat_wal_receiver")
        return None if value is None else str(value)

    def replication_clients(self) -> list[dict[str, Any]]:
        """The primary's ``pg_stat_replication`` rows (application_name, state, LSNs)."""
        with self.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT application_name, client_addr::text, state, sync_state,"
                " sent_lsn::text, replay_lsn::text FROM pg_stat_replication"
                " ORDER BY application_name"
            )
            return list(cur.fetchall())

    def lsn(self) -> str:
        """Current WAL position: written on a primary, replayed on a replica."""
        value = self._scalar(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
            " ELSE pg_current_wal_lsn() END::text"
        )
        return str(value)

    def wait_caught_up(self, primary: PostgresServer, timeout: float = 10.0) -> None:
        """Wait until this replica has replayed everything the primary had written when called."""
        target = primary.lsn()

        def replayed() -> bool:
            return bool(self._scalar("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)))

        if not _wait(replayed, timeout, 0.02):
            raise PostgresError(
                f"{self.name} did not replay up to {target} within {timeout} s "
                f"(replayed {self.lsn()}, receiver {self.wal_receiver_status()})"
            )

    def stop_wal_receiver(self, timeout: float = 10.0) -> None:
        """Point ``primary_conninfo`` at a port where nothing listens and reload: streaming stops
        and the receiver keeps failing to reconnect, like a replica cut off from its primary."""
        current = str(self._scalar("SHOW primary_conninfo") or "")
        if not current:
            raise PostgresError(f"{self.name} has no primary_conninfo: not a streaming replica")
        if not self.saved_conninfo_path.exists():  # a second stop keeps the real one
            self._write_owned(self.saved_conninfo_path, current)
        dead = f"host=127.0.0.1 port={free_port()} user={SUPERUSER} application_name={self.name}"
        self._set_conninfo(dead)
        if not _wait(lambda: self.wal_receiver_status() != "streaming", timeout, 0.05):
            raise PostgresError(f"{self.name}: WAL receiver still streaming after {timeout} s")

    def resume_wal_receiver(self, timeout: float = 10.0) -> None:
        """Restore the ``primary_conninfo`` saved by ``stop_wal_receiver()``; wait for streaming."""
        try:
            saved = self.saved_conninfo_path.read_text()
        except FileNotFoundError:
            raise PostgresError(f"{self.name}: stop_wal_receiver() was not called") from None
        self._set_conninfo(saved)
        self.saved_conninfo_path.unlink()
        if not _wait(lambda: self.wal_receiver_status() == "streaming", timeout, 0.05):
            raise PostgresError(
                f"{self.name}: WAL receiver not streaming {timeout} s after resume; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    # -- helpers ----------------------------------------------------------------------------

    def connect(
        self, dbname: str = "postgres", timeout: float = 5.0
    ) -> psycopg.Connection[TupleRow]:
        """An autocommit connection (libpq cannot time out a connect in under 2 s)."""
        return psycopg.connect(
            self.dsn(dbname), autocommit=True, connect_timeout=max(2, math.ceil(timeout))
        )

    def cluster_state(self) -> str:
        """``pg_controldata``'s "Database cluster state" (``shut down``, ``in production``,
        ``shut down in recovery``, ``in archive recovery``...)."""
        out = self._run(["pg_controldata", "-D", str(self.data_dir)], timeout=30)
        for line in out.splitlines():
            if line.startswith("Database cluster state:"):
                return line.split(":", 1)[1].strip()
        raise PostgresError(f"pg_controldata printed no cluster state:\n{out}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def _scalar(self, query: LiteralString, params: tuple[Any, ...] = ()) -> Any:
        with self.connect() as conn:
            row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def _set_conninfo(self, conninfo: str) -> None:
        # ALTER SYSTEM works on a standby and edits postgresql.auto.conf, where -R put it;
        # PostgreSQL 15 re-reads primary_conninfo on reload and restarts the receiver.
        with self.connect() as conn:
            conn.execute(
                sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(conninfo))
            )
            conn.execute("SELECT pg_reload_conf()")

    def _remove_stale_files(self) -> None:
        """Remove ``postmaster.pid`` and the socket lock left by a killed postmaster.

        Orphans are reaped by PID 1, which here can take seconds: until then the dead
        postmaster is a zombie, ``kill(pid, 0)`` succeeds on it, and a new postmaster refuses
        to start ("lock file already exists"). ``pid`` has checked that our postmaster is
        really gone, and the socket directory is this server's alone.
        """
        if self.pid is not None:
            return
        for stale in (
            self.data_dir / "postmaster.pid",
            self.socket_dir / f".s.PGSQL.{self.port}.lock",
        ):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    def _signal_all(self, sig: signal.Signals) -> None:
        pid = self.pid
        if pid is None:
            return
        for target in (pid, *child_pids(pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, sig)

    def _prepare_dirs(self) -> None:
        """Create ``base_dir`` and ``socket/`` owned by the OS user, and check it can reach them
        (pytest's ``tmp_path`` lives under a 0700 directory of root's: it cannot)."""
        sock = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(str(sock)) > 100:
            raise PostgresError(f"unix socket path too long for the kernel: {sock}")
        for d in (self.base_dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            self._chown(d)
        probe = subprocess.run(
            self._as_user(["test", "-w", str(self.base_dir), "-a", "-x", str(self.base_dir)]),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=self._env(),
            cwd="/",
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            raise PostgresError(
                f"user {self.os_user!r} cannot write {self.base_dir}: every parent directory "
                "must be searchable by it (use a directory under /tmp made with mode 0755, "
                "not pytest's tmp_path)"
            )

    def _write_lab_conf(self) -> None:
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "cluster_name": f"'{self.name}'",
            **LAB_SETTINGS,
        }
        text = "# Written by lab/postgres.py for a fast lab: NOT production settings.\n"
        text += "".join(f"{key} = {value}\n" for key, value in settings.items())
        self._write_owned(self.base_dir / LAB_CONF, text)

    def _write_hba(self) -> None:
        lines = [
            "# Written by lab/postgres.py: trust, for the lab only.",
            "local all all trust",
            "local replication all trust",
        ]
        for net in self.trust_from:
            lines.append(f"host all all {net} trust")
            lines.append(f"host replication all {net} trust")
        self._write_owned(self.data_dir / "pg_hba.conf", "\n".join(lines) + "\n")

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)
        self._chown(path)

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self._pw.pw_uid, self._pw.pw_gid)

    def _bin(self, argv: list[str]) -> list[str]:
        return [str(self.bin_dir / argv[0]), *argv[1:]]

    def _as_user(self, argv: list[str]) -> list[str]:
        """Run as the OS user: ``runuser`` when we are root, directly when we already are it."""
        if os.geteuid() == self._pw.pw_uid:
            return argv
        if os.geteuid() != 0:
            raise PostgresError(f"must be root or {self.os_user!r} to run {argv[0]}")
        return ["runuser", "-u", self.os_user, "--", *argv]

    def _env(self) -> dict[str, str]:
        """A clean environment: no PGDATA/PGPORT from the caller, messages in English."""
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL": "C",
            "HOME": self._pw.pw_dir,
        }

    def _run(self, argv: list[str], timeout: float) -> str:
        try:
            proc = subprocess.run(
                self._as_user(self._bin(argv)),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=self.base_dir,
                env=self._env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PostgresError(f"{argv[0]} did not finish within {timeout} s") from None
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        if proc.returncode != 0:
            raise PostgresError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{out}")
        return out

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresServer({self.name}, {self.host}:{self.port}, pid={self.pid})"

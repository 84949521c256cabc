"""What every PostgreSQL concern shares: the node's server as configuration, commands run as the
service user, connections and files it owns.

Why it is apart: lifecycle, replication and rewind all run ``pg_*`` programs as the service user
(PostgreSQL refuses root), connect within a deadline and write files PostgreSQL must own; one
implementation keeps them doing it the same way.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg

from failoverd import pgconn
from failoverd.config import PostgresConfig

POLL = 0.05  # seconds between polls of a process or a server
# Seconds between looks at a change the server makes within milliseconds (a reload taking effect,
# a promotion ending): one local query each, and a failover waits on them.
QUICK_POLL = 0.005


class Service:
    """The node's own PostgreSQL: SQL through ``pg``'s host/port/user/dbname/password_file,
    ``pg_*`` programs from ``bin_dir`` on ``data_dir`` as ``service_user``.

    ``node`` is the ``application_name`` this server uses when it streams from the peer (the
    primary's ``pg_stat_replication`` shows it). ``server_log`` receives the postmaster's output
    when this adapter starts it (default: ``postgres.log`` beside the data directory).
    """

    def __init__(
        self,
        pg: PostgresConfig,
        clock: Callable[[], float],
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

    def connect(self, deadline: float, *, grace: float = 1.0) -> psycopg.Connection[Any]:
        """A connection to the local server, or ``pgconn.Unavailable``. The session may last
        ``grace`` seconds past the deadline, so that the statement_timeout's own error, in
        PostgreSQL's words, arrives before the cut; ``grace=0`` keeps to the deadline."""
        remaining = deadline - self.clock()
        try:
            password = pgconn.read_password(self.pg.password_file)
        except OSError as e:
            raise pgconn.Unavailable(f"cannot read password_file: {e.strerror or e}") from None
        return pgconn.connect(
            self.pg.host,
            self.pg.port,
            user=self.pg.user,
            dbname=self.pg.dbname,
            password=password,
            timeout=remaining + grace if remaining > 0 else 0.0,
            statement_timeout=remaining + grace / 2 if grace > 0 else None,
            application_name="failoverd",
        )

    def password(self) -> str | None:
        """The configured password, or ``pgconn.Unavailable`` when its file cannot be read."""
        try:
            return pgconn.read_password(self.pg.password_file)
        except OSError as e:
            raise pgconn.Unavailable(f"cannot read password_file: {e.strerror or e}") from None

    def password_env(self) -> dict[str, str]:
        """The password reaches pg_rewind and pg_basebackup through their environment, never
        their command line (which every user can read in /proc)."""
        try:
            password = pgconn.read_password(self.pg.password_file)
        except OSError:
            return {}
        return {} if password is None else {"PGPASSWORD": password}

    @staticmethod
    def keep_config(data_dir: Path) -> dict[str, tuple[bytes, int]]:
        """The node's own configuration files (top-level ``*.conf`` but
        ``postgresql.auto.conf``): content and mode, by name. pg_rewind and pg_basebackup copy
        the source's, which would give this node the source's port and socket when they live
        in the data directory; ``restore_config`` puts these back over them (as Patroni does).
        ``postgresql.auto.conf`` comes from the source: the standby configuration is written
        into it afterwards."""
        kept: dict[str, tuple[bytes, int]] = {}
        with contextlib.suppress(OSError):
            for path in sorted(data_dir.glob("*.conf")):
                if path.name == "postgresql.auto.conf" or not path.is_file():
                    continue
                kept[path.name] = (path.read_bytes(), path.stat().st_mode & 0o777)
        return kept

    def restore_config(self, data_dir: Path, kept: dict[str, tuple[bytes, int]]) -> list[str]:
        """Put the node's configuration files back over the source's copies; what it did, in
        words (nothing when there was nothing to keep)."""
        if not kept:
            return []
        for name, (content, mode) in kept.items():
            path = data_dir / name
            tmp = path.with_name(name + ".failoverd-tmp")
            tmp.write_bytes(content)
            tmp.chmod(mode)
            self.chown(tmp)
            tmp.replace(path)
        return [f"kept this node's {', '.join(kept)}"]

    def bin(self, name: str) -> str:
        return str(self.pg.bin_dir / name)

    def server_options(self) -> list[str]:
        """``pg_ctl -o`` for a postgresql.conf outside the data directory (Debian keeps it in
        /etc/postgresql/VERSION/CLUSTER): without it the server finds no configuration."""
        if self.pg.config_file is None:
            return []
        return ["-o", f"-c config_file={_quote_option(str(self.pg.config_file))}"]

    def rewind_options(self) -> list[str]:
        """pg_rewind runs the server in single-user mode to finish crash recovery of the
        target; it needs the same configuration file to do so."""
        if self.pg.config_file is None:
            return []
        return [f"--config-file={self.pg.config_file}"]

    def account(self) -> pwd.struct_passwd:
        return pwd.getpwnam(self.pg.service_user)

    def as_service_user(self, argv: list[str]) -> list[str]:
        """``runuser`` when root; directly when already the service user."""
        account = self.account()
        if os.geteuid() == account.pw_uid:
            return argv
        return ["runuser", "-u", self.pg.service_user, "--", *argv]

    def run(
        self,
        argv: list[str],
        timeout: float,
        *,
        kill_group: bool = True,
        env: Mapping[str, str] | None = None,
        lines: int = 5,
    ) -> tuple[bool, str]:
        """Run as the service user, bounded; (ok, the last ``lines`` of its output). On timeout
        the process group is killed by its id (``pg_ctl start`` is spared that: the postmaster
        is its grandchild)."""
        try:
            account = self.account()
            cmd = self.as_service_user(argv)
        except KeyError:
            return False, f"service user {self.pg.service_user!r} does not exist"
        environ = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL": "C",
            "HOME": account.pw_dir,
            **(env or {}),
        }
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=environ,
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
        text = tail(out.decode(errors="replace"), lines, 200 * lines)
        if proc.returncode != 0:
            return False, f"exit {proc.returncode}: {text}"
        return True, text

    def write_owned(self, path: Path, text: str) -> None:
        """Replace a file atomically, owned by the service user, mode 0600 (as PostgreSQL's)."""
        tmp = path.with_name(path.name + ".failoverd-tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        self.chown(tmp)
        tmp.replace(path)

    def chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            account = self.account()
            os.chown(path, account.pw_uid, account.pw_gid)


def tail(text: str, lines: int = 5, chars: int = 600) -> str:
    kept = "\n".join(text.strip().splitlines()[-lines:])
    return kept[-chars:]


def scalar(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _quote_option(value: str) -> str:
    """A value for ``pg_ctl -o``, which passes its text through a shell: single-quoted."""
    return "'" + value.replace("'", "'\\''") + "'"

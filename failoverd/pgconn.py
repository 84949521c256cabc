"""PostgreSQL helpers shared by the checks and the actions: passwords, a quick TCP probe, LSNs,
``synchronous_standby_names``, connections that keep their deadline, and the postmaster's
processes.

Why a module of its own: the check measures and the adapter acts, and both need the same small
facts about a server (is something listening, is its postmaster alive, what LSN is this, whom
does ``synchronous_standby_names`` name). Neither should borrow them from the other.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import pq

_LSN_RE: Final = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


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
# synchronous_standby_names, read and written as PostgreSQL's own parser (syncrep_gram.y) does


def parse_sync_standby_names(text: str) -> tuple[str, ...] | None:
    """The standby names in a ``synchronous_standby_names`` value, unquoted, in order: ``()``
    when it is empty, ``("*",)`` for any standby; None when PostgreSQL would not accept it.

    The grammar: ``list``, ``NUM (list)``, ``FIRST NUM (list)`` or ``ANY NUM (list)``, where a
    list is names separated by commas and a name is an identifier (letters, digits, ``_``, ``$``;
    its case kept), a number, ``*``, or a double-quoted string with ``""`` for a quote.
    ``FIRST`` and ``ANY`` are keywords in any case, so a standby called ``first`` must be
    quoted. PostgreSQL matches the names against ``application_name`` ignoring case.
    """
    if not text.strip():
        return ()
    tokens = _sync_tokens(text)
    if tokens is None:
        return None
    kinds = "".join(kind for kind, _ in tokens)
    # One letter per token: n a name, d a number, k FIRST or ANY, and the punctuation itself.
    if _SYNC_LIST.fullmatch(kinds):
        return tuple(value for kind, value in tokens if kind in "nd")
    grouped = _SYNC_GROUPED.fullmatch(kinds)
    if grouped is None:
        return None
    start = len(grouped.group(1)) + 1  # past the keyword, the count and "("
    return tuple(value for kind, value in tokens[start:-1] if kind in "nd")


_SYNC_LIST: Final = re.compile(r"[nd](,[nd])*")
_SYNC_GROUPED: Final = re.compile(r"(k?d)\([nd](,[nd])*\)")
_SYNC_IDENT_START: Final = re.compile(r"[A-Za-z_\u0080-\U0010FFFF]")
_SYNC_IDENT: Final = re.compile(r"[A-Za-z_\u0080-\U0010FFFF][A-Za-z0-9_$\u0080-\U0010FFFF]*")


def _sync_tokens(text: str) -> list[tuple[str, str]] | None:
    """syncrep_scanner.l: (kind, value) per token, None on a character it rejects."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in " \t\n\r\f\v":
            i += 1
        elif c == '"':
            name: list[str] = []
            i += 1
            while True:
                end = text.find('"', i)
                if end < 0:
                    return None  # unterminated quoted name
                name.append(text[i:end])
                if text.startswith('""', end):
                    name.append('"')
                    i = end + 2
                    continue
                i = end + 1
                break
            tokens.append(("n", "".join(name)))
        elif c.isascii() and c.isdigit():
            j = i
            while j < len(text) and text[j].isascii() and text[j].isdigit():
                j += 1
            tokens.append(("d", text[i:j]))
            i = j
        elif _SYNC_IDENT_START.match(c):
            match = _SYNC_IDENT.match(text, i)
            assert match is not None  # it starts with an identifier's first character
            word = match.group()
            tokens.append(("k" if word.lower() in ("first", "any") else "n", word))
            i = match.end()
        elif c == "*":
            tokens.append(("n", "*"))
            i += 1
        elif c in ",()":
            tokens.append((c, c))
            i += 1
        else:
            return None
    return tokens


def format_sync_standby_names(names: Sequence[str]) -> str:
    """The ``synchronous_standby_names`` value naming ``names`` (the first that streams is the
    synchronous one): each double-quoted with its quotes doubled, so that any name is taken
    literally (``first``, ``a b``, ``x"y``); ``*`` bare, meaning any standby; ``''`` for none.
    ValueError for a name PostgreSQL cannot hold (empty, or with a NUL)."""
    quoted: list[str] = []
    for name in names:
        if not name or "\0" in name:
            raise ValueError(f"not a standby name: {name!r}")
        quoted.append("*" if name == "*" else '"' + name.replace('"', '""') + '"')
    return ", ".join(quoted)


def read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text().strip() or None


def tcp_reachable(host: str, port: int, timeout: float) -> str | None:
    """None when something accepts on host:port; else "down" (refused) or "unreachable".

    libpq and psycopg never wait less than 2 s to connect; this answers within the budget.
    """
    if host.startswith("/"):
        return None  # a Unix socket directory: psycopg's own error says what is wrong
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "down"
    except OSError:
        return "unreachable"


class Unavailable(Exception):  # noqa: N818 - an answer, not a bug: "the server is unavailable"
    """An expected failure to reach a server (down, no answer, refused, out of time); callers
    turn it into a result, never let it escape. ``timed_out``: nothing answered in time (as
    opposed to a refusal, which is an answer)."""

    def __init__(self, text: str, *, timed_out: bool = False, full: str = "") -> None:
        super().__init__(text)
        self.timed_out = timed_out
        self.full = full or text  # libpq's whole message (its DETAIL lines too)


class DeadlineExceeded(psycopg.OperationalError):
    """The server did not answer before the connection's deadline, which then cut it."""


def describe(e: psycopg.Error) -> str:
    """PostgreSQL's own words, first line only."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class BoundedConnection(psycopg.Connection[Any]):
    """A connection that cannot outlive its deadline: its socket is shut down then, so a server
    that stops answering mid-query (frozen, partitioned) ends the wait with ``DeadlineExceeded``
    instead of blocking for ever (statement_timeout needs a live backend to act)."""

    cut: bool = False
    _budget: float = 0.0
    _cutter: threading.Timer | None = None
    _sock: socket.socket | None = None  # a duplicate of libpq's socket, for shutdown() only
    _sock_lock: threading.Lock | None = None

    def _arm(self, budget: float) -> None:
        self._budget = budget
        self._sock_lock = threading.Lock()
        self._sock = socket.socket(fileno=os.dup(self.fileno()))
        self._cutter = threading.Timer(budget, self._cut)
        self._cutter.daemon = True
        self._cutter.start()

    def _cut(self) -> None:
        assert self._sock_lock is not None
        with self._sock_lock:
            if self._sock is None:
                return
            self.cut = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool = False,
    ) -> psycopg.Cursor[Any]:
        """``Connection.execute``; a failure caused by the deadline says so."""
        try:
            return super().execute(query, params, prepare=prepare, binary=binary)
        except psycopg.OperationalError as e:
            if self.cut:
                raise DeadlineExceeded(
                    f"no answer within {self._budget:.2f} s: the connection was cut"
                ) from e
            raise

    def close(self) -> None:
        super().close()
        if self._cutter is not None:
            self._cutter.cancel()
        if self._sock_lock is not None:
            with self._sock_lock:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None


def connect(
    host: str,
    port: int,
    *,
    user: str,
    dbname: str,
    password: str | None,
    timeout: float,
    statement_timeout: float | None = None,
    application_name: str,
    replication: str | None = None,
    row_factory: Any = None,
) -> BoundedConnection:
    """An autocommit connection that keeps to ``timeout`` seconds from now, for connecting and
    for everything done on it; else ``Unavailable``.

    libpq's ``connect_timeout`` cannot go below 2 s (and psycopg enforces the same floor), so
    the connection is polled here with our own deadline. ``statement_timeout`` (default: 90 % of
    ``timeout``) lets a live server end a slow statement with its own words first.
    ``replication="database"`` opens a walsender connection (IDENTIFY_SYSTEM,
    TIMELINE_HISTORY); psycopg sends a query without parameters through the simple protocol,
    which is what a walsender accepts.
    """
    if timeout <= 0:
        raise Unavailable("out of time before connecting", timed_out=True)
    end = time.monotonic() + timeout
    # By default a live server ends a slow statement, in its own words, just before the cut.
    statement = 0.9 * timeout if statement_timeout is None else statement_timeout
    statement_ms = max(1, int(statement * 1000))
    params: dict[str, Any] = {
        "host": host,
        "port": port,
        "user": user,
        "dbname": dbname,
        "application_name": application_name,
        "options": f"-c statement_timeout={statement_ms}",
        # Text as str even from a SQL_ASCII database (a cluster made under the C locale),
        # for which psycopg would otherwise return bytes.
        "client_encoding": "UTF8",
    }
    if password is not None:
        params["password"] = password
    if replication is not None:
        params["replication"] = replication
    pgconn = _poll_connection(pg_conninfo.make_conninfo(**params), end, f"{host}:{port}")
    conn = BoundedConnection(pgconn)
    try:
        conn.autocommit = True
        if row_factory is not None:
            conn.row_factory = row_factory
        conn._arm(max(0.0, end - time.monotonic()))
    except psycopg.Error as e:
        conn.close()
        raise Unavailable(describe(e)) from None
    return conn


def _poll_connection(conninfo: str, end: float, where: str) -> pq.abc.PGconn:
    """libpq's asynchronous connect, waited for with our own deadline."""
    pgconn = pq.PGconn.connect_start(conninfo.encode())
    status = pq.PollingStatus.WRITING  # what libpq says to assume before the first poll
    budget = end - time.monotonic()
    try:
        for _ in range(100_000):  # a connection takes a handful of round-trips
            if pgconn.status == pq.ConnStatus.BAD or status == pq.PollingStatus.FAILED:
                said = pgconn.get_error_message()
                raise Unavailable(_first_line(said) or f"cannot connect to {where}", full=said)
            if status == pq.PollingStatus.OK:
                pgconn.nonblocking = 1  # as psycopg's own connect leaves it
                return pgconn
            left = end - time.monotonic()
            if left <= 0:
                break
            poller = select.poll()
            poller.register(
                pgconn.socket,
                select.POLLIN if status == pq.PollingStatus.READING else select.POLLOUT,
            )
            if poller.poll(left * 1000):
                status = pq.PollingStatus(pgconn.connect_poll())
    except psycopg.Error as e:
        pgconn.finish()
        raise Unavailable(describe(e)) from None
    except BaseException:
        pgconn.finish()
        raise
    pgconn.finish()
    raise Unavailable(f"no answer from {where} within {budget:.2f} s", timed_out=True)


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0].strip() if text else ""


# --------------------------------------------------------------------------------------------
# Processes, by PID: /proc is the truth, a zombie is dead


def process_state(pid: int) -> str | None:
    """The state letter in /proc (R, S, T, Z...), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def process_alive(pid: int) -> bool:
    """A zombie is dead: it only waits for a (slow) PID 1 to reap it."""
    state = process_state(pid)
    return state is not None and state not in ("Z", "X")


def child_pids(pid: int) -> list[int]:
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


def postmaster_pid(data_dir: Path) -> int | None:
    """The live postmaster of ``data_dir``, None when there is none (no pid file, a dead or
    zombie process, or a reused PID that belongs to a stranger: the postmaster chdirs to its
    data directory, so a PID whose cwd is elsewhere is not ours)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    if not process_alive(pid):
        return None
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return pid  # not ours to inspect: trust the pid file
    return pid if Path(cwd) == data_dir.resolve() else None


# --------------------------------------------------------------------------------------------
# The control file, as pg_controldata prints it

CLEAN_STATES: Final = ("shut down", "shut down in recovery")
"""pg_controldata cluster states after a clean shutdown: nothing to recover, safe to follow."""


class ControlData(NamedTuple):
    """What ``pg_controldata`` says; ``state`` is None when it could not be read. ``fields``
    holds every line, by its label, for the facts a rejoin needs."""

    state: str | None
    checkpoint_lsn: int | None
    error: str = ""
    timeline: int | None = None  # the latest checkpoint's timeline
    fields: Mapping[str, str] = MappingProxyType({})

    @property
    def clean(self) -> bool:
        return self.state in CLEAN_STATES

    def lsn(self, label: str) -> int | None:
        """An LSN field (``"Minimum recovery ending location"``), None if absent or malformed."""
        try:
            return lsn_to_int(self.fields[label])
        except (KeyError, ValueError):
            return None

    def number(self, label: str) -> int | None:
        """An integer field (``"Data page checksum version"``), None if absent or malformed."""
        try:
            return int(self.fields[label])
        except (KeyError, ValueError):
            return None

    def describe(self) -> str:
        if self.state is None:
            return f"control data unreadable ({self.error})"
        at = "" if self.checkpoint_lsn is None else f" at {int_to_lsn(self.checkpoint_lsn)}"
        return f"cluster state {self.state!r}{at}"


def run_pg_tool(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """A PostgreSQL program that reads a data directory (pg_controldata, pg_waldump), in the C
    locale its output is parsed in, bounded by ``timeout``. Raises OSError or
    subprocess.TimeoutExpired."""
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
    )


def read_control_data(bin_dir: Path, data_dir: Path, timeout: float) -> ControlData:
    """``pg_controldata`` on ``data_dir``, bounded by ``timeout``."""
    try:
        done = run_pg_tool([str(bin_dir / "pg_controldata"), "-D", str(data_dir)], timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return ControlData(None, None, str(e))
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        return ControlData(None, None, " ".join(said[-2:])[-300:])
    fields: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    data = ControlData(
        fields.get("Database cluster state"),
        None,
        "" if "Database cluster state" in fields else "no cluster state in pg_controldata's output",
        None,
        MappingProxyType(fields),
    )
    return data._replace(
        checkpoint_lsn=data.lsn("Latest checkpoint location"),
        timeline=data.number("Latest checkpoint's TimeLineID"),
    )


# --------------------------------------------------------------------------------------------
# Where a stopped server's WAL ends

# pg_waldump reads until the first record that is not there and says where that was: "error in
# WAL record at A: invalid record length at B: wanted 24, got 0" (or another reason "at B").
_WAL_END_AT: Final = re.compile(
    r"error in WAL record at [0-9A-F]+/[0-9A-F]+: .*? at ([0-9A-F]+/[0-9A-F]+)"
)
# ... or names a page of a segment (a bad page header), or the segment that is not there.
_WAL_END_IN_PAGE: Final = re.compile(r"in (?:log|WAL) segment ([0-9A-F]{24}), .*?offset (\d+)")
_WAL_END_NO_FILE: Final = re.compile(r'could not find file "([0-9A-F]{24})"')


def wal_end(bin_dir: Path, data_dir: Path, control: ControlData, timeout: float) -> int | None:
    """Where a stopped server's WAL ends, read by ``pg_waldump`` on its newest timeline up to
    the first record that is not there; None when that cannot be told (then only the
    checkpoint is known, a lower bound). The control file alone cannot say: a crashed
    primary's WAL goes on past its latest checkpoint with every commit it acknowledged since,
    and a replica's checkpoint is its last restartpoint, behind what it received.

    Not from the checkpoint's own timeline: a primary promoted minutes ago still has its latest
    checkpoint on the timeline before (the first checkpoint after a promotion is spread out),
    and read there its WAL would seem to end where it was promoted."""
    segment_size = control.number("Bytes per WAL segment")
    start, timeline = control.checkpoint_lsn, control.timeline
    if start is None or timeline is None or not segment_size:
        return None
    segments = _newest_segments(data_dir / "pg_wal", segment_size)
    if segments is None:
        return None
    newest, first, last_end = segments
    if newest > timeline:
        timeline, start = newest, max(start, first)
    if last_end <= start:
        return None
    # --end at the last segment there is: past it, pg_waldump waits 5 s for a next one.
    argv = [
        str(bin_dir / "pg_waldump"),
        "--path", str(data_dir / "pg_wal"),
        "--start", int_to_lsn(start),
        "--end", int_to_lsn(last_end),
        "--timeline", str(timeline),
        "--quiet",
    ]  # fmt: skip
    try:
        done = run_pg_tool(argv, timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # Read to the end without a bad record: WAL fills its last segment (a switch, say).
    end = last_end if done.returncode == 0 else wal_end_from_waldump(done.stderr, segment_size)
    return end if end is not None and start < end <= last_end else None


_SEGMENT_NAME: Final = re.compile(r"^[0-9A-F]{24}$")


def _newest_segments(wal_dir: Path, segment_size: int) -> tuple[int, int, int] | None:
    """(the newest timeline with a WAL segment in ``wal_dir``, where its first segment begins,
    where its last one ends), None when there is none to read."""
    try:
        names = [p.name for p in wal_dir.iterdir() if _SEGMENT_NAME.match(p.name)]
    except OSError:
        return None
    if not names:
        return None
    newest = max(int(n[:8], 16) for n in names)
    mine = sorted(n for n in names if int(n[:8], 16) == newest)
    return (
        newest,
        _segment_start(mine[0], segment_size),
        _segment_start(mine[-1], segment_size) + segment_size,
    )


def wal_end_from_waldump(said: str, segment_size: int | None) -> int | None:
    """Where WAL ends, from what pg_waldump said when it stopped reading (its stderr); None
    when it does not say. The segment size turns a page or a missing file into an LSN."""
    found = _WAL_END_AT.search(said)
    if found:
        return lsn_to_int(found.group(1))
    if not segment_size:
        return None
    in_page = _WAL_END_IN_PAGE.search(said)
    if in_page:
        return _segment_start(in_page.group(1), segment_size) + int(in_page.group(2))
    missing = _WAL_END_NO_FILE.search(said)
    if missing:
        return _segment_start(missing.group(1), segment_size)
    return None


def _segment_start(name: str, segment_size: int) -> int:
    """The LSN a WAL segment file (TTTTTTTTXXXXXXXXYYYYYYYY) begins at."""
    per_id = 0x100000000 // segment_size
    return (int(name[8:16], 16) * per_id + int(name[16:24], 16)) * segment_size

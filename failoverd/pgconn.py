"""PostgreSQL helpers shared by the checks and the actions: passwords, a quick TCP probe, LSNs,
connections that keep their deadline, and the postmaster's processes.

Why a module of its own: the check measures and the adapter acts, and both need the same small
facts about a server (is something listening, is its postmaster alive, what LSN is this). Neither
should borrow them from the other.
"""

from __future__ import annotations

import math
import re
import socket
from pathlib import Path
from typing import Any, Final

import psycopg

_LSN_RE: Final = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
MIN_CONNECT_TIMEOUT: Final = 2  # libpq will not wait less than 2 s to connect (PostgreSQL 15)


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
    turn it into a result, never let it escape."""

    def __init__(self, text: str, cause: psycopg.Error | None = None) -> None:
        super().__init__(text)
        self.cause = cause


def describe(e: psycopg.Error) -> str:
    """PostgreSQL's own words, first line only."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def connect(
    host: str,
    port: int,
    *,
    user: str,
    dbname: str,
    password: str | None,
    remaining: float,
    statement_timeout: float,
    application_name: str,
) -> psycopg.Connection[Any]:
    """An autocommit connection, or ``Unavailable``. libpq cannot time out a connect in under
    2 s, so a TCP probe first answers "refused" or "no answer" within ``remaining`` seconds."""
    if remaining <= 0:
        raise Unavailable("out of time before connecting")
    gone = tcp_reachable(host, port, min(remaining, 1.0))
    if gone is not None:
        why = "connection refused" if gone == "down" else "no answer"
        raise Unavailable(f"{why} on {host}:{port}")
    statement_ms = max(1, int(statement_timeout * 1000))
    try:
        return psycopg.connect(
            host=host,
            port=port,
            user=user,
            dbname=dbname,
            password=password,
            connect_timeout=max(MIN_CONNECT_TIMEOUT, math.ceil(remaining)),
            options=f"-c statement_timeout={statement_ms}",
            application_name=application_name,
            autocommit=True,
        )
    except psycopg.Error as e:
        raise Unavailable(describe(e), e) from None


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

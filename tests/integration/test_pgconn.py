"""The PostgreSQL helpers checks and actions share, against a real server: connections that keep
their deadline (libpq alone waits at least 2 s to connect and for ever on a frozen backend), a
walsender connection, and what the data directory says when the server is down."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from failoverd import pgconn
from lab.postgres import PostgresServer
from lab.zookeeper import free_port

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.integration.conftest_servers"]


def connect(port: int, timeout: float, **kwargs: object) -> pgconn.BoundedConnection:
    return pgconn.connect(
        "127.0.0.1",
        port,
        user="postgres",
        dbname="postgres",
        password=None,
        timeout=timeout,
        application_name="test-pgconn",
        **kwargs,  # type: ignore[arg-type]
    )


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """Completes TCP handshakes, never answers: what a frozen postmaster looks like."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_connect_keeps_its_deadline(make_postgres: Callable[..., PostgresServer]) -> None:
    server = make_postgres("pc")
    t0 = time.monotonic()
    with pytest.raises(pgconn.Unavailable, match="Connection refused") as refused:
        connect(free_port(), 0.5)
    assert time.monotonic() - t0 < 0.3 and not refused.value.timed_out

    with silent_port() as port:
        t0 = time.monotonic()
        with pytest.raises(pgconn.Unavailable, match="no answer from") as silent:
            connect(port, 0.4)
        took = time.monotonic() - t0
    assert silent.value.timed_out
    assert 0.35 < took < 0.8, took  # its own 0.4 s, not libpq's 2 s

    with connect(server.port, 2.0) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.autocommit

    # A backend that stops answering mid-session: the connection is cut at its deadline.
    conn = connect(server.port, 0.6)
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        server.freeze()
        t0 = time.monotonic()
        with pytest.raises(
            pgconn.DeadlineExceeded, match=r"no answer within 0\.\d+ s: the connection was cut"
        ):
            conn.execute("SELECT 2")
        assert time.monotonic() - t0 < 1.0
    finally:
        server.thaw()
        conn.close()

    # A live server ends a slow statement itself, in its own words, before the cut.
    with (
        connect(server.port, 1.0) as conn,
        pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"),
    ):
        conn.execute("SELECT pg_sleep(5)")


def test_walsender_connection_and_the_data_directory(
    make_postgres: Callable[..., PostgresServer],
) -> None:
    server = make_postgres("pw")
    with connect(server.port, 2.0, replication="database") as conn:
        row = conn.execute("IDENTIFY_SYSTEM").fetchone()
    assert row is not None
    system_id, timeline = str(row[0]), int(row[1])
    assert timeline == 1

    running = pgconn.postmaster_pid(server.data_dir)
    assert running == server.pid
    server.stop("fast")
    assert pgconn.postmaster_pid(server.data_dir) is None
    control = pgconn.read_control_data(server.bin_dir, server.data_dir, 5.0)
    assert control.state == "shut down" and control.clean
    assert control.fields["Database system identifier"] == system_id
    assert control.number("Data page checksum version") == 1  # the lab initdbs with checksums
    assert control.timeline == 1
    assert control.checkpoint_lsn == control.lsn("Latest checkpoint location")
    assert control.checkpoint_lsn is not None and control.checkpoint_lsn > 0

    # A pid file naming a live process that is not our postmaster (this test) is not ours.
    (server.data_dir / "postmaster.pid").write_text(f"{os.getpid()}\n")
    try:
        assert pgconn.postmaster_pid(server.data_dir) is None
    finally:
        (server.data_dir / "postmaster.pid").unlink()
    missing = pgconn.read_control_data(server.bin_dir, server.data_dir / "nope", 5.0)
    assert missing.state is None and missing.error


def test_text_comes_back_as_text_from_a_sql_ascii_database(
    make_postgres: Callable[..., PostgresServer],
) -> None:
    """A cluster created under the C locale (a Debian node without LANG) is SQL_ASCII, and
    psycopg returns bytes for its text unless the client asks for UTF-8: settings compared
    with strings (synchronous_standby_names) then never matched, and promotions failed."""
    server = make_postgres("pa")
    with server.connect() as conn:
        conn.autocommit = True
        conn.execute(
            "CREATE DATABASE ascii TEMPLATE template0 ENCODING 'SQL_ASCII'"
            " LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    with pgconn.connect(
        "127.0.0.1",
        server.port,
        user="postgres",
        dbname="ascii",
        password=None,
        timeout=5.0,
        application_name="test-pgconn",
    ) as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
    assert row is not None
    assert row[0] == "on"

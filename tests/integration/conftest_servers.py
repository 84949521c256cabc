"""Fixtures for real PostgreSQL, Squid and donations-app servers (always stopped, dirs removed).

A plain module: import its fixtures from ``conftest.py`` (or list it in a test module's
``pytest_plugins``). The servers run as other users (``postgres``, ``proxy``), who cannot enter
pytest's ``tmp_path`` (under a 0700 directory of root's), so everything lives in one directory
made under /tmp with mode 0755 and removed at the end of the module.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.donations import DonationsApp
from lab.postgres import PostgresServer
from lab.squid import SquidServer


@pytest.fixture(scope="module")
def lab_root() -> Iterator[Path]:
    """A directory the ``postgres`` and ``proxy`` users can reach; removed with everything in it."""
    root = Path(tempfile.mkdtemp(prefix="failoverd-lab-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


MakePostgres = Callable[..., PostgresServer]


@pytest.fixture(scope="module")
def make_postgres(lab_root: Path) -> Iterator[MakePostgres]:
    """``make_postgres(name, primary=None)``: an initialised server, started; a replica of
    ``primary`` when given. Stopped (fast, else SIGKILL) at the end of the module."""
    made: list[PostgresServer] = []

    def make(name: str, primary: PostgresServer | None = None, **kwargs: Any) -> PostgresServer:
        server = PostgresServer(lab_root / name, name=name, **kwargs)
        made.append(server)
        if primary is None:
            server.init_primary()
        else:
            server.init_replica(primary)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in reversed(made):
            server.close()


@pytest.fixture(scope="module")
def pg_primary(make_postgres: MakePostgres) -> PostgresServer:
    return make_postgres("pg1")


@pytest.fixture(scope="module")
def pg_replica(make_postgres: MakePostgres, pg_primary: PostgresServer) -> PostgresServer:
    return make_postgres("pg2", primary=pg_primary)


MakeApp = Callable[..., DonationsApp]


@pytest.fixture(scope="module")
def make_app(lab_root: Path) -> Iterator[MakeApp]:
    """``make_app(name, dsn, node, **kwargs)``: a started donations app; stopped at the end."""
    made: list[DonationsApp] = []

    def make(name: str, dsn: str, node: str, **kwargs: Any) -> DonationsApp:
        app = DonationsApp(lab_root / name, dsn, node, **kwargs)
        made.append(app)
        app.start()
        return app

    try:
        yield make
    finally:
        for app in made:
            app.stop()


MakeSquid = Callable[..., SquidServer]


@pytest.fixture(scope="module")
def make_squid(lab_root: Path) -> Iterator[MakeSquid]:
    """``make_squid(name, app_port)``: a started Squid in front of the app; stopped at the end."""
    made: list[SquidServer] = []

    def make(name: str, app_port: int, **kwargs: Any) -> SquidServer:
        squid = SquidServer(lab_root / name, app_port, **kwargs)
        made.append(squid)
        squid.start()
        return squid

    try:
        yield make
    finally:
        for squid in made:
            squid.stop()

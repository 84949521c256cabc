"""Synchronous replication against real PostgreSQL 15 servers: what the check reports of it,
setting ``synchronous_standby_names`` (the adapter and the runner), and promotions that must
not wait for a standby that will never come.

What these pin down is what the zero-loss promise rests on: a named standby that streams is
``sync`` and the check says so; with it gone a commit waits (it is not acknowledged), and
clearing the names lets it through; the adapter's own writes never wait, even when the names it
inherited name a ghost; and any name is quoted so that PostgreSQL reads it literally.

Waits are bounded; a commit left waiting is cancelled at the end of its test; servers are
stopped by the fixtures (by PID when they do not stop).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from failoverd.actions.postgres import LocalDatabase
from failoverd.actions.runner import ActionRunner
from failoverd.checks.postgres import PostgresCheck, database_status
from failoverd.clock import boottime
from failoverd.config import CheckConfig, Config, PostgresConfig, parse_config
from failoverd.core import (
    Action,
    ActionResult,
    DatabaseStatus,
    DbRole,
    Promote,
    Reason,
    SetSyncStandby,
)
from failoverd.pgconn import parse_sync_standby_names
from failoverd.zk import ZkCluster
from lab.postgres import BIN_DIR, PostgresServer
from lab.process import wait_for

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.integration.conftest_servers"]

MakePostgres = Callable[..., PostgresServer]
WHY = Reason("test", "asked by the test")


# -- helpers --------------------------------------------------------------------------------------


def local(server: PostgresServer) -> LocalDatabase:
    pg = PostgresConfig(
        host=server.host,
        port=server.port,
        data_dir=server.data_dir,
        bin_dir=BIN_DIR,
        service_user=server.os_user,
    )
    return LocalDatabase(pg, node=server.name)


def checked(server: PostgresServer) -> DatabaseStatus:
    """What the postgres check reports of the server, as the core sees it."""
    cfg = CheckConfig(name="db", type="postgres", interval=0.1, timeout=2.0, rise=1, fall=1)
    pg = PostgresConfig(host=server.host, port=server.port, data_dir=server.data_dir)
    probe = PostgresCheck(cfg, pg).probe()
    assert (probe.ok, probe.reason) == (True, ""), probe
    return database_status(probe.facts)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    value = wait_for(predicate, timeout, 0.05)
    if not value:
        raise TimeoutError(f"not within {timeout:g} s: {what}")
    return value


def show(server: PostgresServer, setting: str) -> str:
    with server.connect() as conn:
        row = conn.execute(f"SHOW {setting}").fetchone()
    assert row is not None
    return str(row[0])


def sync_state(primary: PostgresServer, name: str) -> str | None:
    with primary.connect() as conn:
        row = conn.execute(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s", (name,)
        ).fetchone()
    return None if row is None else str(row[0])


def auto_conf(server: PostgresServer) -> str:
    return (server.data_dir / "postgresql.auto.conf").read_text()


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start


class Commit:
    """One INSERT in autocommit on a thread of its own, so that a test can watch it wait for a
    standby (pg_stat_activity says ``SyncRep``) and see it finish; ``cancel()`` ends a wait
    left over (the commit is local by then: PostgreSQL only warns)."""

    def __init__(self, server: PostgresServer, table: str) -> None:
        self.server = server
        self.conn = server.connect()
        self.conn.autocommit = True
        self.pid = self.conn.info.backend_pid
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(table,), daemon=True)
        self.thread.start()

    def _run(self, table: str) -> None:
        try:
            self.conn.execute(f"INSERT INTO {table} VALUES (1)")
        except BaseException as e:
            self.error = e

    def done(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def wait_event(self) -> str | None:
        with self.server.connect() as conn:
            row = conn.execute(
                "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (self.pid,)
            ).fetchone()
        return None if row is None else row[0]

    def cancel(self) -> None:
        if self.thread.is_alive():
            with self.server.connect() as conn:
                conn.execute("SELECT pg_cancel_backend(%s)", (self.pid,))
            self.thread.join(10.0)
        self.conn.close()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[Callable[[str, float], None]]:
    lines: list[str] = []
    yield lambda what, seconds: lines.append(f"{what}: {seconds:.3f} s")
    if lines:
        print(f"\n{request.node.name}: " + "; ".join(lines))


@pytest.fixture
def unnamed(pg_primary: PostgresServer, pg_replica: PostgresServer) -> Iterator[PostgresServer]:
    """The module's primary with no synchronous standby, before and after the test (the other
    tests' commits must not wait for whatever a test named)."""
    pg_replica.wait_caught_up(pg_primary)
    assert local(pg_primary).set_sync_standby((), 5.0).ok
    try:
        yield pg_primary
    finally:
        cleared = local(pg_primary).set_sync_standby((), 5.0)
        assert cleared.ok, cleared.detail


def runner_for(server: PostgresServer, tmp_path: Path) -> tuple[ActionRunner, list[ActionResult]]:
    """The daemon's action runner for a node whose database is ``server``: no ZooKeeper is
    needed for database actions."""
    text = (
        'node = "n1"\n[cluster]\nname = "t"\nzookeeper_hosts = ["127.0.0.1:1"]\n'
        'chroot = "/failoverd/t"\n'
        '[[members]]\nname = "n1"\naddress = "127.0.0.11"\n'
        '[[members]]\nname = "n2"\naddress = "127.0.0.12"\n'
        f'[postgres]\nhost = "{server.host}"\nport = {server.port}\n'
        f'data_dir = "{server.data_dir}"\nbin_dir = "{BIN_DIR}"\n'
    )
    cfg: Config = parse_config(text, tmp_path / "failoverd.toml")
    results: list[ActionResult] = []

    class Log:
        def info(self, event: str, **kw: Any) -> None:
            pass

        def exception(self, event: str, **kw: Any) -> None:
            pass

    runner = ActionRunner(cfg, cast(ZkCluster, None), Log(), results.append)
    return runner, results


def run(runner: ActionRunner, results: list[ActionResult], action: Action) -> ActionResult:
    runner.submit(action)
    wait_until(lambda: any(r.action_id == action.id for r in results), 30.0, action.name)
    return next(r for r in results if r.action_id == action.id)


# -- the check ------------------------------------------------------------------------------------


def test_check_reports_the_streaming_replica_and_the_settings(
    unnamed: PostgresServer, pg_replica: PostgresServer
) -> None:
    primary = unnamed

    # A standby that has just connected has sent no flush position yet: wait for one.
    def flushed() -> DatabaseStatus | None:
        db = checked(primary)
        standby = db.standby(pg_replica.name)
        return db if standby is not None and standby.flush_lsn is not None else None

    db = wait_until(flushed, 10.0, "the replica's first feedback")
    assert db.role is DbRole.PRIMARY
    assert (db.sync_standby_names, db.synchronous_commit) == ((), "on")
    standby = db.standby(pg_replica.name)
    assert standby is not None
    assert (standby.name, standby.state, standby.sync_state) == (
        pg_replica.name,
        "streaming",
        "async",
    )
    assert isinstance(standby.flush_lsn, int) and 0 < standby.flush_lsn <= (db.lsn or 0)

    on_replica = checked(pg_replica)
    assert on_replica.role is DbRole.REPLICA
    assert (on_replica.sync_standby_names, on_replica.synchronous_commit) == (None, None)
    assert on_replica.standbys == ()


# -- SetSyncStandby -------------------------------------------------------------------------------


def test_naming_the_replica_makes_it_sync_and_the_check_sees_it(
    unnamed: PostgresServer, pg_replica: PostgresServer, tmp_path: Path, report: Any
) -> None:
    primary = unnamed
    runner, results = runner_for(primary, tmp_path)
    try:
        named = run(runner, results, SetSyncStandby(1, WHY, names=(pg_replica.name,)))
        assert named.ok, named.detail
        assert f"synchronous_standby_names = '\"{pg_replica.name}\"'" in named.detail
        assert "synchronous_commit = on" in named.detail
        assert show(primary, "synchronous_standby_names") == f'"{pg_replica.name}"'
        assert show(primary, "synchronous_commit") == "on"

        t0 = time.monotonic()
        wait_until(lambda: sync_state(primary, pg_replica.name) == "sync", 5.0, "sync")
        report("named to sync", time.monotonic() - t0)
        db = checked(primary)
        assert db.sync_standby_names == (pg_replica.name,)
        assert db.synchronous_commit == "on"
        standby = db.standby(pg_replica.name)
        assert standby is not None and (standby.state, standby.sync_state) == ("streaming", "sync")

        # A commit now waits for the replica's flush, and it streams: it goes through.
        with primary.connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS named_sync (v int)")
            conn.execute("INSERT INTO named_sync VALUES (1)")

        cleared = run(runner, results, SetSyncStandby(2, WHY, names=()))
        assert cleared.ok, cleared.detail
        assert "synchronous_standby_names = ''" in cleared.detail
        assert show(primary, "synchronous_standby_names") == ""
        wait_until(lambda: sync_state(primary, pg_replica.name) == "async", 5.0, "async again")
        assert checked(primary).sync_standby_names == ()
    finally:
        runner.close()


def test_a_commit_waits_for_a_stopped_named_standby_until_the_names_are_cleared(
    unnamed: PostgresServer, make_postgres: MakePostgres, report: Any
) -> None:
    primary = unnamed
    standby = make_postgres("pg3", primary=primary)
    db = local(primary)
    with primary.connect() as conn:
        conn.execute("CREATE TABLE waits (v int)")
    named = db.set_sync_standby((standby.name,), 5.0)
    assert named.ok, named.detail
    wait_until(lambda: sync_state(primary, standby.name) == "sync", 5.0, "pg3 sync")

    standby.kill()  # by PID: gone without a goodbye
    wait_until(lambda: sync_state(primary, standby.name) is None, 10.0, "pg3 gone")
    commit = Commit(primary, "waits")
    try:
        assert not commit.done(1.0), commit.error  # still waiting after a second
        assert commit.wait_event() == "SyncRep"
        # The check still answers, and says who is named and missing.
        seen = checked(primary)
        assert seen.sync_standby_names == (standby.name,)
        assert seen.standby(standby.name) is None

        cleared, took = timed(db.set_sync_standby, (), 5.0)
        report("clearing the names", took)
        assert cleared.ok, cleared.detail
        assert took < 2.0  # the adapter itself never waits for a commit
        t0 = time.monotonic()
        assert commit.done(5.0), "the commit still waits after the names were cleared"
        report("commit released", time.monotonic() - t0)
        assert commit.error is None, commit.error
        with primary.connect() as conn:
            row = conn.execute("SELECT count(*) FROM waits").fetchone()
        assert row == (1,)
    finally:
        commit.cancel()


def test_names_are_quoted_so_postgresql_reads_them_literally(
    unnamed: PostgresServer, pg_replica: PostgresServer
) -> None:
    primary = unnamed
    db = local(primary)
    odd = ('we"ird', "it's", "first", "two words", "x'); DROP TABLE t; --")
    result = db.set_sync_standby((*odd, pg_replica.name), 5.0)
    assert result.ok, result.detail
    value = show(primary, "synchronous_standby_names")
    assert value == (
        f'"we""ird", "it\'s", "first", "two words", "x\'); DROP TABLE t; --", "{pg_replica.name}"'
    )
    assert parse_sync_standby_names(value) == (*odd, pg_replica.name)
    # PostgreSQL read the same list: none of the odd names streams, the last one is sync.
    wait_until(lambda: sync_state(primary, pg_replica.name) == "sync", 5.0, "sync by priority")
    assert checked(primary).sync_standby_names == (*odd, pg_replica.name)

    # What PostgreSQL cannot hold is refused, and nothing changes.
    for bad in ("", "nul\0here"):
        refused = db.set_sync_standby(("n2", bad), 5.0)
        assert not refused.ok
        assert "refused: not a standby name" in refused.detail
        assert show(primary, "synchronous_standby_names") == value


# -- promotion ------------------------------------------------------------------------------------


def ghost_replica(
    make_postgres: MakePostgres, primary: PostgresServer, name: str
) -> PostgresServer:
    """A replica whose postgresql.auto.conf names a standby that will never connect, as one
    cloned from a primary that named it would (pg_basebackup copies the file)."""
    replica = make_postgres(name, primary=primary)
    with replica.connect() as conn:
        conn.autocommit = True
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (ghost)'")
        conn.execute("SELECT pg_reload_conf()")
    assert "ghost" in auto_conf(replica)
    wait_until(
        lambda: show(replica, "synchronous_standby_names") == "FIRST 1 (ghost)", 5.0, "reload"
    )
    assert replica.is_in_recovery()
    return replica


def test_promotion_of_a_replica_naming_a_ghost_does_not_block_and_names_sync_names(
    pg_primary: PostgresServer, make_postgres: MakePostgres, tmp_path: Path, report: Any
) -> None:
    """The strict case: the new primary names its peer, which does not stream yet. The epoch
    write must not wait for it (nor for the inherited ghost); the app's first commit must."""
    replica = ghost_replica(make_postgres, pg_primary, "pg4")
    runner, results = runner_for(replica, tmp_path)
    try:
        action = Promote(1, WHY, epoch=4, not_after=boottime() + 30.0, sync_names=("n2",))
        (result, took) = timed(run, runner, results, action)
    finally:
        runner.close()
    report("promotion", took)
    assert result.ok, result.detail
    assert took < 10.0
    assert "synchronous_standby_names = '\"n2\"'" in result.detail
    assert "epoch 4 recorded" in result.detail
    assert not replica.is_in_recovery()
    assert local(replica).recorded_epoch() == 4
    assert show(replica, "synchronous_standby_names") == '"n2"'
    assert show(replica, "synchronous_commit") == "on"
    assert "ghost" not in auto_conf(replica)
    db = checked(replica)
    assert (db.role, db.sync_standby_names, db.recorded_epoch) == (DbRole.PRIMARY, ("n2",), 4)

    # The names are in effect: a commit waits for n2 (it is not acknowledged without it).
    with replica.connect() as conn:
        conn.execute("SET synchronous_commit = local")  # the test's own set-up must not wait
        conn.execute("CREATE TABLE first_commits (v int)")
    commit = Commit(replica, "first_commits")
    try:
        assert not commit.done(1.0), commit.error
        assert commit.wait_event() == "SyncRep"
    finally:
        commit.cancel()

    # Started again as our own primary, with the names as they are: the epoch write still
    # never waits for n2.
    replica.stop("fast")
    restarted, took = timed(local(replica).start_primary, 5, boottime() + 30.0, 20.0)
    report("start_primary", took)
    assert restarted.ok, restarted.detail
    assert took < 15.0
    assert local(replica).recorded_epoch() == 5
    assert show(replica, "synchronous_standby_names") == '"n2"'  # start_primary leaves them


def test_promotion_to_no_sync_names_clears_an_inherited_ghost(
    pg_primary: PostgresServer, make_postgres: MakePostgres, report: Any
) -> None:
    """The async and sync case: a new active starts with no standby named; the ghost its
    auto.conf names must not hold up a single commit."""
    replica = ghost_replica(make_postgres, pg_primary, "pg5")
    result, took = timed(local(replica).promote, 6, boottime() + 30.0, 10.0)
    report("promotion", took)
    assert result.ok, result.detail
    assert "synchronous_standby_names = ''" in result.detail
    assert show(replica, "synchronous_standby_names") == ""
    assert "ghost" not in auto_conf(replica)
    assert checked(replica).sync_standby_names == ()
    with replica.connect() as conn:
        conn.execute("CREATE TABLE free (v int)")
    commit = Commit(replica, "free")
    try:
        assert commit.done(5.0), "a commit waits on a primary that names no standby"
        assert commit.error is None, commit.error
    finally:
        commit.cancel()

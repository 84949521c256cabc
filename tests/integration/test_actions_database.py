"""The database adapter against real PostgreSQL 15 servers: promote (with the epoch), stop
(fast, escalating, idempotent) and start as a replica of the new primary.

What these pin down is what failover correctness rests on: a promotion refused after its lease
deadline changes nothing; a fast stop's final LSN is what the replica has received; a cleanly
stopped ex-primary follows the new primary across the timeline switch; a crashed one is refused.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from failoverd.actions.postgres import LocalDatabase, StopResult, lsn_to_int
from failoverd.clock import boottime
from failoverd.config import PostgresConfig
from failoverd.pgconn import child_pids, process_alive
from lab.postgres import BIN_DIR, PostgresServer
from lab.process import waited

pytestmark = pytest.mark.integration
# Not imported: a module imported before pytest loads it as a plugin is not assert-rewritten.
pytest_plugins = ["tests.integration.conftest_servers"]

MakePostgres = Callable[..., PostgresServer]


def db_config(server: PostgresServer) -> PostgresConfig:
    """``[postgres]`` for a lab server, as failoverd.toml would configure it."""
    return PostgresConfig(
        host=server.host,
        port=server.port,
        user="postgres",
        dbname="postgres",
        data_dir=server.data_dir,
        bin_dir=BIN_DIR,
        service_user=server.os_user,
    )


def local(server: PostgresServer, clock: Callable[[], float] = boottime) -> LocalDatabase:
    """The adapter, configured for a lab server as failoverd.toml would configure it."""
    return LocalDatabase(db_config(server), clock, node=f"node-{server.name}")


def one(pg: PostgresServer, query: Any, params: tuple[Any, ...] = ()) -> Any:
    with pg.connect() as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def checkpoint_lsn(server: PostgresServer) -> int:
    """pg_controldata's "Latest checkpoint location", read independently of the adapter."""
    out = subprocess.run(
        [str(BIN_DIR / "pg_controldata"), "-D", str(server.data_dir)],
        capture_output=True,
        text=True,
        env={"LC_ALL": "C"},
        timeout=10,
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Latest checkpoint location:"):
            return lsn_to_int(line.split(":", 1)[1])
    raise AssertionError(f"no checkpoint location in:\n{out}")


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[Callable[[str, float], None]]:
    """Print measured durations at the end of a test (shown with -s or on failure)."""
    lines: list[str] = []
    yield lambda what, seconds: lines.append(f"{what}: {seconds:.3f} s")
    if lines:
        print(f"\n{request.node.name}: " + "; ".join(lines))


def test_lsn_to_int() -> None:
    assert lsn_to_int("0/3000028") == 0x3000028
    assert lsn_to_int(" 1/0 ") == 1 << 32
    assert lsn_to_int("16/B374D848") == (0x16 << 32) | 0xB374D848
    with pytest.raises(ValueError, match="not an LSN"):
        lsn_to_int("3000028")


def test_promote_is_refused_past_not_after_and_changes_nothing(
    pg_primary: PostgresServer, pg_replica: PostgresServer
) -> None:
    db = local(pg_replica)
    result = db.promote(5, not_after=boottime() - 0.01, timeout=5.0)
    assert not result.ok and result.late  # nothing done: the core may send it again
    assert "refused" in result.detail and "not_after" in result.detail
    assert pg_replica.is_in_recovery()

    # The deadline passes while connecting: a clock that jumps past it after the first reading.
    readings = iter([100.0])

    def jumping() -> float:
        return next(readings, 110.0)

    result = local(pg_replica, jumping).promote(5, not_after=105.0, timeout=30.0)
    assert not result.ok and result.late
    assert "deadline passed while connecting" in result.detail
    assert pg_replica.is_in_recovery()
    # Still a replica that streams (a fresh one may not have connected yet: bounded wait).
    waited(lambda: pg_replica.wal_receiver_status() == "streaming", 10.0, "pg2 streaming")
    assert local(pg_replica).recorded_epoch() is None  # no table: nothing was ever recorded


def test_promote_a_replica_records_the_epoch_and_is_idempotent(
    pg_primary: PostgresServer, make_postgres: MakePostgres, report: Any
) -> None:
    replica = make_postgres("pg3", primary=pg_primary)
    db = local(replica)
    assert replica.is_in_recovery()
    assert db.recorded_epoch() is None

    result, took = timed(db.promote, 7, boottime() + 10.0, 10.0)
    report("promote", took)
    assert result.ok, result.detail
    assert result.epoch == 7
    assert "promoted" in result.detail and "epoch 7 recorded" in result.detail
    assert took < 5.0
    assert not replica.is_in_recovery()
    assert isinstance(result.lsn, int) and result.lsn > 0
    with replica.connect() as conn:  # writable
        conn.execute("CREATE TABLE after_promotion (v int)")
        conn.execute("INSERT INTO after_promotion VALUES (1)")
    assert db.recorded_epoch() == 7
    assert not pg_primary.is_in_recovery()  # the old primary knows nothing of it

    again = db.promote(7, boottime() + 10.0, 10.0)
    assert again.ok, again.detail
    assert "already a primary" in again.detail
    assert again.lsn is not None and again.lsn >= result.lsn
    assert db.recorded_epoch() == 7

    newer = db.promote(8, boottime() + 10.0, 10.0)
    assert newer.ok, newer.detail
    assert db.recorded_epoch() == 8
    assert one(replica, "SELECT count(*) FROM failoverd_epoch") == 1  # one row, ever


def test_switchover_fast_stop_promote_and_the_old_primary_follows(
    make_postgres: MakePostgres, report: Any
) -> None:
    """The planned hand-over: stop the primary cleanly, the replica has everything up to the
    final LSN, promote it, and the old primary comes back as its streaming replica."""
    old = make_postgres("sw1")
    new = make_postgres("sw2", primary=old)
    old_db, new_db = local(old), local(new)
    with old.connect() as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    waited(lambda: new.wal_receiver_status() == "streaming", 10.0, "sw2 streaming")

    stopped, took = timed(old_db.stop, "fast", 10.0)
    report("fast stop", took)
    assert isinstance(stopped, StopResult)
    assert stopped.ok and stopped.clean, stopped.detail
    assert old.pid is None
    assert old.cluster_state() == "shut down"
    assert stopped.final_lsn == checkpoint_lsn(old)
    assert stopped.timeline == 1  # LSNs compare only within a timeline: the hand-over says which
    assert stopped.action_result(7).timeline == 1
    assert took < 5.0
    final = stopped.final_lsn
    assert final is not None
    # The replica was streaming: the shutdown checkpoint reached it and is replayed.
    received = int(one(new, "SELECT pg_last_wal_receive_lsn() - '0/0'::pg_lsn"))
    assert received >= final
    waited(
        lambda: int(one(new, "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn")) >= final,
        5.0,
        "sw2 replays up to the final LSN",
    )
    assert one(new, "SELECT count(*) FROM t") == 1000

    again = old_db.stop("fast", 10.0)  # idempotent: already stopped, same control data
    assert again.ok and again.clean and again.final_lsn == final, again.detail
    assert "already stopped" in again.detail

    promoted = new_db.promote(2, boottime() + 10.0, 10.0)
    assert promoted.ok, promoted.detail

    started, took = timed(old_db.start_replica, new.host, new.port, 15.0)
    report("start_replica", took)
    assert started.ok, started.detail
    assert old.is_in_recovery()
    assert one(old, "SHOW recovery_target_timeline") == "latest"
    assert (old.data_dir / "standby.signal").exists()
    conninfo = one(old, "SHOW primary_conninfo")
    assert f"port={new.port}" in conninfo and "application_name=node-sw1" in conninfo
    waited(lambda: old.wal_receiver_status() == "streaming", 10.0, "sw1 streams from sw2")
    with new.connect() as conn:
        conn.execute("INSERT INTO t VALUES (-1)")
    waited(
        lambda: one(old, "SELECT count(*) FROM t WHERE v = -1") == 1,
        10.0,
        "a row written on the new primary appears on the old one",
    )
    assert local(old).recorded_epoch() == 2  # replicated from the new primary
    names = [c["application_name"] for c in new.replication_clients()]
    assert names == ["node-sw1"]
    assert int(one(old, "SELECT received_tli FROM pg_stat_wal_receiver")) == 2  # new timeline

    repeat = old_db.start_replica(new.host, new.port, 10.0)
    assert repeat.ok and "already a replica" in repeat.detail, repeat.detail

    # And back: sw2 (a pg_basebackup clone, so its postgresql.auto.conf already has a
    # primary_conninfo, pointing at itself's old primary) follows sw1 after a third timeline.
    waited(
        lambda: one(old, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (new.lsn(),)),
        5.0,
        "sw1 caught up",
    )
    back = new_db.stop("fast", 10.0)
    assert back.ok and back.clean, back.detail
    assert back.final_lsn is not None
    assert back.timeline == 2
    waited(
        lambda: int(one(old, "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn")) >= back.final_lsn,
        5.0,
        "sw1 replays up to sw2's final LSN",
    )
    assert old_db.promote(3, boottime() + 10.0, 10.0).ok
    rejoined = new_db.start_replica(old.host, old.port, 15.0)
    assert rejoined.ok, rejoined.detail
    auto = (new.data_dir / "postgresql.auto.conf").read_text()
    conninfo_lines = [ln for ln in auto.splitlines() if ln.startswith("primary_conninfo")]
    assert len(conninfo_lines) == 1, auto
    assert f"port={old.port}" in conninfo_lines[0] and "application_name=node-sw2" in auto
    with old.connect() as conn:
        conn.execute("INSERT INTO t VALUES (-2)")
    waited(
        lambda: one(new, "SELECT count(*) FROM t WHERE v = -2") == 1,
        10.0,
        "a row written on sw1 appears on sw2 again",
    )
    assert local(new).recorded_epoch() == 3


def test_stop_of_a_frozen_postmaster_escalates_within_its_bound(
    make_postgres: MakePostgres, report: Any
) -> None:
    server = make_postgres("fz")
    pid = server.pid
    assert pid is not None
    family = [pid, *child_pids(pid)]
    server.freeze()  # answers nothing, signals queue up: fast and immediate cannot finish

    stopped, took = timed(local(server).stop, "fast", 2.0)
    report("frozen stop", took)
    assert took < 2.0 + 1.0, stopped.detail
    assert stopped.ok, stopped.detail
    assert "fast stop did not finish" in stopped.detail
    assert "immediate stop did not finish" in stopped.detail
    assert "SIGKILL" in stopped.detail
    assert not stopped.clean
    assert server.pid is None
    assert not any(process_alive(p) for p in family)  # no backend left holding shared memory
    server.start()  # crash recovery; the stale lock files are no obstacle
    assert one(server, "SELECT 1") == 1


def test_a_crashed_primary_is_not_started_as_a_replica_but_may_lead_again(
    pg_primary: PostgresServer, make_postgres: MakePostgres
) -> None:
    """Following the peer as it is could fork history silently (that needs pg_rewind); starting
    it as the primary it was keeps every write (crash recovery), and the core asks for that only
    when this node is the latest primary."""
    server = make_postgres("cr")
    db = local(server)
    server.kill()  # SIGKILL: as a crash leaves it
    stopped = db.stop("fast", 5.0)  # stopping a stopped server: success, and says how it ended
    assert stopped.ok and not stopped.clean, stopped.detail
    assert "already stopped" in stopped.detail and "in production" in stopped.detail
    assert stopped.final_lsn == checkpoint_lsn(server)

    result = db.start_replica(pg_primary.host, pg_primary.port, 10.0)
    assert not result.ok
    assert "did not stop cleanly" in result.detail and "needs pg_rewind" in result.detail
    assert server.pid is None
    assert not (server.data_dir / "standby.signal").exists()

    # Re-adopting the primary role: crash recovery, then the epoch recorded.
    started = db.start_primary(3, boottime() + 10.0, 10.0)
    assert started.ok, started.detail
    assert "after crash recovery" in started.detail
    assert not server.is_in_recovery()
    assert db.recorded_epoch() == 3


def slow_start(server: PostgresServer) -> Callable[[], float]:
    """A clock that leaps 100 s once the server has a pid file: a start that outlasts the
    deadline it was sent under (a long crash recovery, a loaded host)."""
    pid_file = server.data_dir / "postmaster.pid"
    return lambda: boottime() + (100.0 if pid_file.exists() else 0.0)


def test_a_start_that_overruns_its_deadline_is_finished_by_the_same_action_sent_again(
    pg_primary: PostgresServer, make_postgres: MakePostgres
) -> None:
    """The server is up but not primary under the epoch: the result says it overran (not that
    it failed, not that nothing was done), so the core sends it again under a fresh lease or
    pledge instead of giving up (CI: a self-fenced active never served again on its peer's
    new pledges, because its database took longer to start than one pledge lasts)."""
    server = make_postgres("ov")
    db = local(server)
    assert db.stop("fast", 10.0).ok
    overran = local(server, slow_start(server)).start_primary(3, boottime() + 5.0, 200.0)
    assert not overran.ok and overran.overran and not overran.late, overran.detail
    assert "started the stopped primary" in overran.detail, overran.detail
    assert "deadline passed while connecting" in overran.detail, overran.detail
    assert server.pid is not None and not server.is_in_recovery()
    assert db.recorded_epoch() != 3
    finished = db.start_primary(3, boottime() + 10.0, 10.0)
    assert finished.ok and "already a primary" in finished.detail, finished.detail
    assert db.recorded_epoch() == 3

    # A stopped replica that Promote starts: up in recovery, not promoted; sent again, promoted.
    replica = make_postgres("ovr", primary=pg_primary)
    rdb = local(replica)
    assert rdb.stop("fast", 10.0).ok
    overran = local(replica, slow_start(replica)).promote(4, boottime() + 5.0, 200.0)
    assert not overran.ok and overran.overran and not overran.late, overran.detail
    assert replica.pid is not None and replica.is_in_recovery()
    promoted = rdb.promote(4, boottime() + 10.0, 15.0)
    assert promoted.ok, promoted.detail
    assert not replica.is_in_recovery() and rdb.recorded_epoch() == 4


def test_start_primary_never_promotes_a_replica(
    pg_primary: PostgresServer, make_postgres: MakePostgres
) -> None:
    replica = make_postgres("sp", primary=pg_primary)
    db = local(replica)
    refused = db.start_primary(4, boottime() + 10.0, 10.0)
    assert not refused.ok and "is a replica" in refused.detail, refused.detail
    assert replica.is_in_recovery()
    assert db.stop("fast", 10.0).ok
    refused = db.start_primary(4, boottime() + 10.0, 10.0)
    assert not refused.ok and "not a stopped primary" in refused.detail, refused.detail
    assert replica.pid is None
    # Promote, by contrast, starts the stopped replica and promotes it (the most advanced
    # of two stopped nodes may be a replica).
    promoted = db.promote(4, boottime() + 10.0, 15.0)
    assert promoted.ok, promoted.detail
    assert "started the stopped replica" in promoted.detail and not replica.is_in_recovery()


def test_promote_starts_a_cleanly_stopped_primary(make_postgres: MakePostgres) -> None:
    """Re-adoption: the node that ended the last epoch cleanly starts its primary again."""
    server = make_postgres("ra")
    db = local(server)
    pid_file = server.data_dir / "postmaster.pid"
    lock_file = server.socket_dir / f".s.PGSQL.{server.port}.lock"
    pid_text, lock_text = pid_file.read_text(), lock_file.read_text()
    assert db.stop("fast", 10.0).clean
    assert not pid_file.exists() and not lock_file.exists()

    # Lock files naming a zombie, as a killed postmaster leaves them while PID 1 has not reaped
    # it yet: kill(pid, 0) succeeds on a zombie, so PostgreSQL alone would refuse to start.
    zombie = subprocess.Popen(["true"])
    try:
        waited(
            lambda: (
                Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            ),
            5.0,
            "a zombie",
        )
        for path, text in ((pid_file, pid_text), (lock_file, lock_text)):
            path.write_text(text.replace(text.split("\n", 1)[0], str(zombie.pid), 1))
        result = db.promote(4, boottime() + 10.0, 15.0)
    finally:
        zombie.wait(5)
    assert result.ok, result.detail
    assert "started the stopped primary (cluster state 'shut down'" in result.detail
    assert f"removed stale postmaster.pid, .s.PGSQL.{server.port}.lock" in result.detail
    assert not server.is_in_recovery()
    assert db.recorded_epoch() == 4


def test_postgresql_conf_outside_the_data_directory_as_debian_keeps_it(
    make_postgres: MakePostgres,
) -> None:
    """Debian keeps postgresql.conf in /etc/postgresql/VERSION/CLUSTER: without
    ``[postgres] config_file`` a start finds no configuration; with it, the daemon starts the
    server on that file (``pg_ctl -o '-c config_file=...'``)."""
    server = make_postgres("dl")
    db = local(server)
    assert db.stop("fast", 10.0).clean
    etc = server.data_dir.parent / "etc dir"  # a space: the path goes through pg_ctl's shell
    etc.mkdir()
    conf = etc / "postgresql.conf"
    shutil.move(server.data_dir / "postgresql.conf", conf)
    subprocess.run(["chown", "-R", f"{server.os_user}:", str(etc)], check=True, timeout=10)

    refused = db.promote(5, boottime() + 10.0, 15.0)
    assert not refused.ok
    assert "postgresql.conf" in refused.detail or "configuration file" in refused.detail, (
        refused.detail
    )

    pg = replace(db_config(server), config_file=conf)
    debian = LocalDatabase(pg, boottime, node="node-dl")
    result = debian.promote(5, boottime() + 10.0, 15.0)
    assert result.ok, result.detail
    assert "started the stopped primary" in result.detail
    assert one(server, "SHOW config_file") == str(conf)
    assert debian.recorded_epoch() == 5

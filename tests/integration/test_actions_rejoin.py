"""Healing a node whose primary moved on, against real PostgreSQL 15 servers: inspect where its
WAL ends against the new primary's history, follow, pg_rewind or clone, and the stops that come
before (kill for a hung server, CHECKPOINT first for a voluntary one).

What these pin down is what issue 8's "no one-way doors" rests on: the facts ``inspect`` reports
give ``fork_verdict`` the right answer for a clean hand-over, a diverged and a crashed
ex-primary; a rewind really removes the diverged writes; a clone replaces the directory only
once the copy streams and otherwise puts the old one back; and nothing changes on disk when the
primary cannot be reached.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from failoverd.actions.postgres import LocalDatabase, lsn_to_int, rewind_readiness
from failoverd.actions.postgres.rewind import parse_history
from failoverd.clock import boottime
from failoverd.config import PostgresConfig
from failoverd.core.model import RejoinFacts
from failoverd.core.policy import fork_verdict
from failoverd.pgconn import child_pids, process_alive
from lab.postgres import BIN_DIR, PostgresServer
from lab.process import waited
from lab.zookeeper import free_port

pytestmark = pytest.mark.integration
# Not imported: a module imported before pytest loads it as a plugin is not assert-rewritten.
pytest_plugins = ["tests.integration.conftest_servers"]

MakePostgres = Callable[..., PostgresServer]


def config(server: PostgresServer) -> PostgresConfig:
    """How failoverd.toml would configure the adapter for a lab server."""
    return PostgresConfig(
        host=server.host,
        port=server.port,
        user="postgres",
        dbname="postgres",
        data_dir=server.data_dir,
        bin_dir=BIN_DIR,
        service_user=server.os_user,
    )


def local(server: PostgresServer) -> LocalDatabase:
    return LocalDatabase(config(server), boottime, node=f"node-{server.name}")


def one(pg: PostgresServer, query: Any, params: tuple[Any, ...] = ()) -> Any:
    with pg.connect() as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def run(pg: PostgresServer, *statements: Any) -> None:
    with pg.connect() as conn:
        for statement in statements:
            conn.execute(statement)


def values(pg: PostgresServer) -> list[int]:
    with pg.connect() as conn:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v").fetchall()]


def streaming(server: PostgresServer) -> bool:
    try:
        return server.wal_receiver_status() == "streaming"
    except psycopg.Error:
        return False


def history_file(server: PostgresServer, timeline: int) -> tuple[tuple[int, int], ...]:
    """The new primary's timeline history, read from its own file, not through the adapter."""
    text = (server.data_dir / "pg_wal" / f"{timeline:08X}.history").read_text()
    entries = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[0].strip().isdigit():
            entries.append((int(fields[0]), lsn_to_int(fields[1])))
    return tuple(entries)


def disk_state(server: PostgresServer) -> dict[str, Any]:
    """Everything a failed rejoin must leave as it was: the base directory's entries, the data
    directory's top-level entries with their sizes and times, and the control file's bytes."""
    data = server.data_dir
    top = (
        {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in data.iterdir()}
        if data.exists()
        else None
    )
    control = (data / "global" / "pg_control").read_bytes() if data.exists() else None
    return {"base": sorted(p.name for p in server.base_dir.iterdir()), "top": top, "pg": control}


@pytest.fixture
def servers(make_postgres: MakePostgres) -> Iterator[MakePostgres]:
    """``make_postgres`` whose servers are stopped when the test ends (the module's fixture
    would keep them running to its end: many idle servers on two shared cores)."""
    made: list[PostgresServer] = []

    def make(name: str, primary: PostgresServer | None = None, **kwargs: Any) -> PostgresServer:
        server = make_postgres(name, primary, **kwargs)
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in reversed(made):
            server.close()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[Callable[[str, float], None]]:
    """Print measured durations at the end of a test (shown with -s or on failure)."""
    lines: list[str] = []
    yield lambda what, seconds: lines.append(f"{what}: {seconds:.3f} s")
    if lines:
        print(f"\n{request.node.name}: " + "; ".join(lines))


def pair(servers: MakePostgres, name: str) -> tuple[PostgresServer, PostgresServer]:
    """A primary with table t (1..100) and its streaming replica, caught up."""
    primary = servers(f"{name}1")
    run(primary, "CREATE TABLE t (v int)", "INSERT INTO t SELECT generate_series(1, 100)")
    replica = servers(f"{name}2", primary)
    waited(lambda: streaming(replica), 10.0, f"{name}2 streams")
    replica.wait_caught_up(primary)
    return primary, replica


def diverge(old: PostgresServer, new: PostgresServer) -> None:
    """A split: the replica is promoted while the old primary still takes writes."""
    new.promote()
    run(new, "INSERT INTO t VALUES (201), (202)")
    run(old, "INSERT INTO t VALUES (-1), (-2)")


# -- inspect, then follow ------------------------------------------------------------------------


def test_clean_ex_primary_whose_shutdown_checkpoint_reached_the_replica_follows(
    servers: MakePostgres, report: Callable[[str, float], None]
) -> None:
    old, new = pair(servers, "cf")
    db = local(old)
    stopped = db.stop("fast", 10.0)
    assert stopped.ok and stopped.clean, stopped.detail
    final = stopped.final_lsn
    assert final is not None
    waited(
        lambda: int(one(new, "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn")) > final,
        10.0,
        "the replica replays the shutdown checkpoint",
    )
    new.promote()

    t0 = time.monotonic()
    inspected = db.inspect(new.host, new.port, 5.0)
    report("inspect", time.monotonic() - t0)
    assert inspected.ok, inspected.detail
    facts = inspected.facts
    assert facts is not None
    assert inspected.action_result(4).rejoin == facts
    assert (facts.was_primary, facts.clean, facts.same_system, facts.rewindable) == (
        True,
        True,
        True,
        True,
    )
    assert (facts.local_timeline, facts.local_lsn, facts.primary_timeline) == (1, final, 2)
    # The new timeline forked exactly where the shutdown checkpoint record ends.
    assert facts.primary_history == history_file(new, 2)
    ((parent, switchpoint),) = facts.primary_history
    assert parent == 1
    assert facts.local_checkpoint_end == switchpoint
    assert final < switchpoint < final + 8192
    assert fork_verdict(facts)[0] == "follow", fork_verdict(facts)
    assert "shutdown checkpoint ending at" in inspected.detail

    started = db.start_replica(new.host, new.port, 15.0)
    assert started.ok, started.detail
    waited(lambda: streaming(old), 10.0, "the old primary streams from the new one")
    run(new, "INSERT INTO t VALUES (301)")
    waited(lambda: 301 in values(old), 10.0, "a row of the new primary arrives")

    # A replica's own facts: stopped cleanly in recovery, its minimum recovery end on timeline 2.
    again = db.stop("fast", 10.0)
    assert again.ok and again.clean, again.detail
    as_replica = db.inspect(new.host, new.port, 5.0)
    assert as_replica.ok, as_replica.detail
    replica_facts = as_replica.facts
    assert replica_facts is not None
    assert (replica_facts.was_primary, replica_facts.clean) == (False, True)
    assert replica_facts.local_timeline == 2 and replica_facts.local_checkpoint_end is None
    assert fork_verdict(replica_facts)[0] == "follow", fork_verdict(replica_facts)


# -- rewind --------------------------------------------------------------------------------------


def test_diverged_ex_primary_is_rewound_and_loses_only_its_diverged_rows(
    servers: MakePostgres, report: Callable[[str, float], None]
) -> None:
    old, new = pair(servers, "dv")
    # Pages the replica dirties while replaying make the checkpoint it requests on promotion a
    # slow, spread one: until it ends, its control file still names timeline 1, and pg_rewind
    # alone would read that as "no rewind required".
    run(old, "CREATE TABLE bulk AS SELECT g AS v FROM generate_series(1, 200000) g")
    new.wait_caught_up(old)
    diverge(old, new)
    assert one(new, "SELECT timeline_id FROM pg_control_checkpoint()") == 1
    db = local(old)
    assert db.stop("fast", 10.0).clean
    # A node's own configuration files in its data directory stay its own.
    with open(old.data_dir / "pg_hba.conf", "a") as hba:
        hba.write("# dv1's own line\n")
    inspected = db.inspect(new.host, new.port, 5.0)
    assert inspected.ok and inspected.facts is not None, inspected.detail
    verdict, why = fork_verdict(inspected.facts)
    assert verdict == "rewind", why
    assert "diverged" in why

    t0 = time.monotonic()
    rewound = db.rewind(new.host, new.port, 30.0)
    report("rewind", time.monotonic() - t0)
    assert rewound.ok and rewound.rewound, rewound.detail
    assert rewound.detail.startswith("ran CHECKPOINT on the source"), rewound.detail
    assert "(its control file said timeline 1, its WAL is on 2)" in rewound.detail
    assert f"pg_rewind from {new.host}:{new.port}" in rewound.detail
    assert "standby configuration written" in rewound.detail
    assert "# dv1's own line" in (old.data_dir / "pg_hba.conf").read_text()
    assert old.pid is None  # rewind does not start it
    assert (old.data_dir / "standby.signal").exists()
    auto = (old.data_dir / "postgresql.auto.conf").read_text()
    conninfo = [ln for ln in auto.splitlines() if ln.startswith("primary_conninfo")]
    assert len(conninfo) == 1 and f"port={new.port}" in conninfo[0], auto
    assert "application_name=node-dv1" in conninfo[0]

    started = db.start_replica(new.host, new.port, 15.0)
    assert started.ok, started.detail
    assert "from a rewind or base backup" in started.detail
    waited(lambda: streaming(old), 10.0, "the rewound server streams")
    waited(lambda: values(old) == values(new), 10.0, "the same rows as the new primary")
    assert values(old) == [*range(1, 101), 201, 202]  # -1 and -2 are gone with the fork
    assert old.port != new.port and one(old, "SHOW port") == str(old.port)  # its own config


def test_killed_ex_primary_is_rewound(
    servers: MakePostgres, report: Callable[[str, float], None]
) -> None:
    old, new = pair(servers, "kx")
    diverge(old, new)
    old.kill()  # SIGKILL of every process: as a crash leaves it
    db = local(old)
    inspected = db.inspect(new.host, new.port, 5.0)
    assert inspected.ok and inspected.facts is not None, inspected.detail
    assert (inspected.facts.clean, inspected.facts.was_primary) == (False, True)
    assert "not stopped cleanly" in inspected.detail
    assert fork_verdict(inspected.facts)[0] == "rewind"

    t0 = time.monotonic()
    rewound = db.rewind(new.host, new.port, 30.0)
    report("rewind after SIGKILL (with crash recovery)", time.monotonic() - t0)
    assert rewound.ok and rewound.rewound, rewound.detail
    started = db.start_replica(new.host, new.port, 15.0)
    assert started.ok, started.detail
    waited(lambda: values(old) == [*range(1, 101), 201, 202], 10.0, "the new primary's rows")


def test_rewind_that_cannot_work_fails_then_clone_replaces_the_directory(
    servers: MakePostgres, report: Callable[[str, float], None]
) -> None:
    old, new = pair(servers, "rc")
    diverge(old, new)
    db = local(old)
    assert db.stop("fast", 10.0).clean
    # The new primary recycles the WAL from before the fork: nothing keeps it.
    run(new, "ALTER SYSTEM SET wal_keep_size = 0", "SELECT pg_reload_conf()")
    for i in range(6):
        run(
            new,
            f"INSERT INTO t SELECT 1000 + {i} FROM generate_series(1, 10)",
            "SELECT pg_switch_wal()",
            "CHECKPOINT",
        )
    assert one(new, "SELECT count(*) FROM t WHERE v >= 1000") == 60

    # pg_rewind itself succeeds (it never reads the source's WAL); the rewound directory could
    # never recover, and the result says so instead of leaving a replica waiting for ever.
    failed = db.rewind(new.host, new.port, 30.0)
    assert not failed.ok, failed.detail
    assert failed.rewound
    assert "the rewound server cannot recover: WAL segment 00000002" in failed.detail
    assert "is no longer on the source" in failed.detail and "re-clone" in failed.detail
    print(f"\nrewind that cannot work: {failed.detail}")

    # The clone: the old directory stays aside until the copy streams, then goes.
    seen_when_streaming: list[list[str]] = []
    verify = db.replication.wait_streaming

    def watching(deadline: float) -> str | None:
        outcome = verify(deadline)
        seen_when_streaming.append(sorted(p.name for p in old.base_dir.iterdir()))
        return outcome

    db.replication.wait_streaming = watching  # type: ignore[method-assign]
    with open(old.data_dir / "pg_hba.conf", "a") as hba:
        hba.write("# rc1's own line\n")
    t0 = time.monotonic()
    cloned = db.clone(new.host, new.port, 60.0)
    report("clone", time.monotonic() - t0)
    assert cloned.ok, cloned.detail
    assert "moved the old data directory aside" in cloned.detail
    assert "once the copy streamed" in cloned.detail
    (names,) = seen_when_streaming
    assert any(n.startswith("data.old-") for n in names), names
    left = sorted(p.name for p in old.base_dir.iterdir())
    assert not any(".old-" in n or ".clone-" in n for n in left), left
    assert streaming(old)
    assert "# rc1's own line" in (old.data_dir / "pg_hba.conf").read_text()
    assert (old.data_dir.stat().st_mode & 0o777) == 0o700
    assert old.data_dir.stat().st_uid == old._pw.pw_uid
    assert values(old) == values(new)
    assert -1 not in values(old)
    conninfo = one(old, "SHOW primary_conninfo")
    assert "application_name=node-rc1" in conninfo and f"port={new.port}" in conninfo
    assert [c["application_name"] for c in new.replication_clients()] == ["node-rc1"]


def test_clone_that_cannot_start_puts_the_old_directory_back(servers: MakePostgres) -> None:
    """A failure after the swap: the copy cannot start (its configuration asks for a port the
    primary holds), so the old directory comes back, unchanged."""
    old, new = pair(servers, "cb")
    db = local(old)
    assert db.stop("fast", 10.0).clean
    conf = old.base_dir / "failoverd_lab.conf"
    conf.write_text(conf.read_text().replace(f"port = {old.port}", f"port = {new.port}"))
    before = disk_state(old)
    cloned = db.clone(new.host, new.port, 30.0)
    assert not cloned.ok, cloned.detail
    assert "starting the copy failed" in cloned.detail
    assert "put the old data directory back" in cloned.detail
    assert disk_state(old) == before
    assert old.pid is None


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_a_new_node_is_cloned_into_a_missing_or_empty_data_directory(
    servers: MakePostgres,
    lab_root: Path,
    state: str,
    report: Callable[[str, float], None],
) -> None:
    primary = servers(f"np-{state}")
    run(primary, "CREATE TABLE t (v int)", "INSERT INTO t SELECT generate_series(1, 50)")
    node = PostgresServer(lab_root / f"nn-{state}", name=f"nn-{state}")
    node.prepare_node()  # its own settings beside the data directory, no cluster
    if state == "empty":
        node.data_dir.mkdir(mode=0o700)
        os.chown(node.data_dir, node._pw.pw_uid, node._pw.pw_gid)
    try:
        t0 = time.monotonic()
        cloned = local(node).clone(primary.host, primary.port, 60.0)
        report(f"clone into the {state} data directory", time.monotonic() - t0)
        assert cloned.ok, cloned.detail
        said = "was empty" if state == "empty" else "there was no data directory"
        assert said in cloned.detail
        assert node.is_in_recovery() and streaming(node)
        assert values(node) == list(range(1, 51))
        assert one(node, "SHOW port") == str(node.port)
    finally:
        node.close()


# -- the primary cannot be reached: nothing changes -----------------------------------------------


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that completes TCP handshakes and then never says a word: a frozen server."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_unreachable_primary_changes_nothing(
    servers: MakePostgres, report: Callable[[str, float], None]
) -> None:
    server = servers("ur")
    db = local(server)
    assert db.stop("fast", 10.0).clean
    before = disk_state(server)
    refused = free_port()
    with silent_port() as silent:
        for port, why in ((refused, "Connection refused"), (silent, "no answer from")):
            for name in ("inspect", "rewind", "clone"):
                t0 = time.monotonic()
                result = getattr(db, name)("127.0.0.1", port, 2.0)
                took = time.monotonic() - t0
                report(f"{name} against {why!r}", took)
                assert not result.ok, (name, result.detail)
                assert f"127.0.0.1:{port}" in result.detail, result.detail
                assert why in result.detail, result.detail
                assert took < 3.0, (name, took)
                assert disk_state(server) == before, name
                assert server.pid is None


# -- rewind needs checksums or wal_log_hints -------------------------------------------------------


def test_without_checksums_rewind_readiness_says_so_and_rewind_fails(
    servers: MakePostgres,
) -> None:
    old = servers("nc1", data_checksums=False)
    run(old, "CREATE TABLE t (v int)", "INSERT INTO t SELECT generate_series(1, 100)")
    new = servers("nc2", old)
    waited(lambda: streaming(new), 10.0, "nc2 streams")
    diverge(old, new)
    db = local(old)
    assert db.stop("fast", 10.0).clean

    said = rewind_readiness(config(old))
    assert said is not None and said.startswith(f"pg_rewind cannot work on {old.data_dir}")
    assert "wal_log_hints = on" in said
    assert rewind_readiness(config(new)) is not None  # a copy of it: no checksums either

    inspected = db.inspect(new.host, new.port, 5.0)
    assert inspected.ok and inspected.facts is not None
    assert inspected.facts.rewindable is False

    failed = db.rewind(new.host, new.port, 30.0)
    assert not failed.ok
    assert "pg_rewind failed" in failed.detail
    assert "wal_log_hints" in failed.detail, failed.detail  # pg_rewind's own words


def test_rewind_readiness_with_checksums_and_without_a_cluster(
    servers: MakePostgres, lab_root: Path
) -> None:
    server = servers("rr")
    assert rewind_readiness(config(server)) is None
    nothing = PostgresConfig(data_dir=lab_root / "no-such-node" / "data")
    assert rewind_readiness(nothing) is None  # a clone brings the primary's settings


def test_parse_history() -> None:
    text = "1\t0/3000060\tno recovery target specified\n\n2\t0/5000A28\tafter a switchover\n"
    assert parse_history(text) == ((1, 0x3000060), (2, 0x5000A28))
    assert parse_history("") == ()
    facts = RejoinFacts(True, True, 1, 0x3000028, 0x30000A0, 2, parse_history("1\t0/30000A0\tx"))
    assert fork_verdict(facts)[0] == "follow"


# -- stops: kill, and a checkpoint first ----------------------------------------------------------


def test_kill_of_a_stopped_postmaster_is_quick_and_unclean(
    servers: MakePostgres, report: Callable[[str, float], None]
) -> None:
    server = servers("kq")
    pid = server.pid
    assert pid is not None
    family = [pid, *child_pids(pid)]
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    stopped = local(server).stop("kill", 5.0)
    took = time.monotonic() - t0
    report("kill stop of a SIGSTOPped postmaster", took)
    assert stopped.ok, stopped.detail
    assert took < 3.0, took
    assert stopped.detail.startswith("SIGKILL of postmaster"), stopped.detail  # no pg_ctl
    assert not stopped.clean
    assert server.pid is None
    assert not any(process_alive(p) for p in family)
    assert server.cluster_state() == "in production"


def test_checkpoint_first_keeps_a_stop_under_write_load_clean(
    servers: MakePostgres, report: Callable[[str, float], None]
) -> None:
    server = servers("ck")
    run(server, "CREATE TABLE load (v int, pad text)")
    committed = 0
    stop_writing = threading.Event()

    def write() -> None:
        nonlocal committed
        with contextlib.suppress(psycopg.Error), server.connect() as conn:
            for _ in range(100_000):  # ends when the server goes away, or when told
                if stop_writing.is_set():
                    return
                conn.execute(
                    "INSERT INTO load SELECT g, repeat('x', 200) FROM generate_series(1, 200) g"
                )
                committed += 1

    writer = threading.Thread(target=write, name="load", daemon=True)
    writer.start()
    try:
        waited(lambda: committed >= 20, 10.0, "the load runs")
        t0 = time.monotonic()
        stopped = local(server).stop("fast", 10.0, checkpoint=True)
        report("fast stop with CHECKPOINT first, under load", time.monotonic() - t0)
    finally:
        stop_writing.set()
        writer.join(10.0)
    assert not writer.is_alive()
    assert stopped.ok and stopped.clean, stopped.detail
    assert stopped.detail.startswith("CHECKPOINT in "), stopped.detail
    assert "; fast stop in " in stopped.detail
    assert server.cluster_state() == "shut down"


def test_checkpoint_that_cannot_run_does_not_hold_up_the_stop(
    servers: MakePostgres, report: Callable[[str, float], None]
) -> None:
    server = servers("cx")
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # answers nothing: the CHECKPOINT cannot even connect
    t0 = time.monotonic()
    stopped = local(server).stop("fast", 3.0, checkpoint=True)
    took = time.monotonic() - t0
    report("fast stop with CHECKPOINT first, frozen server", took)
    assert stopped.ok, stopped.detail
    assert stopped.detail.startswith("CHECKPOINT skipped ("), stopped.detail
    assert "stopping anyway" in stopped.detail and "SIGKILL" in stopped.detail
    assert took < 3.0 + 1.0, took
    assert server.pid is None

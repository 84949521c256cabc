"""Health checks against real servers: what each check sees when the app, PostgreSQL or Squid
fails, the reason an operator reads, and what the runner and the daemon make of it.

Every server here is real (PostgreSQL 15 primary and streaming replica, the donations app, Squid
5 in accel mode, ZooKeeper for the end-to-end test), started once per module on loopback; each
test breaks one thing and puts it back. Timing bounds are generous on purpose: they only catch
what a real bug does (libpq's 2 s connect wait, a hung check stalling the others), never noise.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from failoverd.checks.base import Checker, Probe
from failoverd.checks.command import CommandCheck
from failoverd.checks.http import HttpCheck
from failoverd.checks.postgres import (
    PeerDatabaseProbe,
    PostgresCheck,
    database_status,
)
from failoverd.checks.runner import CheckRunner, peer_probe
from failoverd.checks.squid import SquidCheck
from failoverd.clock import boottime
from failoverd.config import CheckConfig, CheckType, PostgresConfig
from failoverd.core import (
    ClusterView,
    DbRole,
    LeaseInfo,
    LocalHealth,
    MemberStatus,
    Observation,
    PeerDb,
    Settings,
    State,
    ZkState,
    ZkStatus,
    eligibility,
    policy,
)
from failoverd.pgconn import read_control_data, wal_end
from lab.donations import DonationsApp
from lab.loopback import DaemonProcess
from lab.postgres import PostgresServer
from lab.process import wait_for
from lab.squid import SquidServer
from lab.sshd import stand_in_fencing
from lab.zookeeper import ZooKeeperServer, free_port

pytestmark = pytest.mark.integration
# lab_root, make_postgres, pg_primary, pg_replica, make_app, make_squid (see test_lab_servers.py).
pytest_plugins = ["tests.integration.conftest_servers"]

MB = 1024 * 1024
BIN = Path(sys.executable).parent  # failoverd and failoverctl of this virtual environment


# -- helpers --------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll until ``predicate`` returns something true (bounded in count and time); return it."""
    value = wait_for(predicate, timeout, step)
    if not value:
        raise TimeoutError(f"not within {timeout:g} s: {what}")
    return value


def check_cfg(name: str, check_type: CheckType, **kwargs: Any) -> CheckConfig:
    """A check as the config loader would build it, with short lab timings."""
    defaults: dict[str, Any] = {"interval": 0.1, "timeout": 1.0, "rise": 1, "fall": 1}
    return CheckConfig(name=name, type=check_type, **{**defaults, **kwargs})


def pg_config(server: PostgresServer, *, data_dir: bool = True, **kwargs: Any) -> PostgresConfig:
    return PostgresConfig(
        host=server.host,
        port=server.port,
        data_dir=server.data_dir if data_dir else None,
        bin_dir=server.bin_dir,
        **kwargs,
    )


def checkpoint_lsn(server: PostgresServer) -> int:
    """pg_controldata's "Latest checkpoint location", read independently of the check."""
    out = subprocess.run(
        [str(server.bin_dir / "pg_controldata"), "-D", str(server.data_dir)],
        capture_output=True,
        text=True,
        env={"LC_ALL": "C"},
        timeout=10,
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Latest checkpoint location:"):
            high, low = line.split(":", 1)[1].strip().split("/")
            return (int(high, 16) << 32) | int(low, 16)
    raise AssertionError(f"no checkpoint location in:\n{out}")


def commit_rows(server: PostgresServer, table: str, rows: int) -> int:
    """Commit ``rows`` rows into ``table`` (created if need be); the flushed LSN after them."""
    with server.connect() as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (x int)")
        conn.execute(f"INSERT INTO {table} SELECT generate_series(1, %s)", (rows,))
        row = conn.execute("SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def process_gone(pid: int) -> bool:
    """No such process, or a zombie waiting to be reaped (it runs nothing any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class Counting:
    """A checker that counts its probes and keeps every outcome (in order)."""

    def __init__(self, inner: Checker, after: Callable[[Probe], None] = lambda p: None) -> None:
        self.inner = inner
        self.after = after
        self.outcomes: list[Probe] = []
        self.in_flight = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def probe(self) -> Probe:
        with self._lock:
            self.in_flight += 1
        try:
            result = self.inner.probe()
        finally:
            with self._lock:
                self.in_flight -= 1
        with self._lock:
            self.outcomes.append(result)
        self.after(result)
        return result


@contextlib.contextmanager
def running(runner: CheckRunner) -> Iterator[CheckRunner]:
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


class NullLog:
    """The runner logs a check going down or up, and a crashed check; none of these crash."""

    def info(self, event: str, **kw: Any) -> None:
        pass

    def warning(self, event: str, **kw: Any) -> None:
        pass

    def exception(self, event: str, **kw: Any) -> None:
        raise AssertionError(f"a check crashed: {event} {kw}")


# -- servers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_solo(make_postgres: Callable[..., PostgresServer]) -> PostgresServer:
    """A primary of its own, for the tests that stop and kill it."""
    return make_postgres("pg-solo")


@pytest.fixture(scope="module")
def app(make_app: Callable[..., DonationsApp], pg_primary: PostgresServer) -> DonationsApp:
    return make_app("app", pg_primary.dsn(), "node-a")


@pytest.fixture(scope="module")
def squid(make_squid: Callable[..., SquidServer], app: DonationsApp) -> SquidServer:
    return make_squid("squid", app.port)


@pytest.fixture
def app_ok(app: DonationsApp) -> Iterator[DonationsApp]:
    """The app running without faults, before and after the test."""
    app.clear_fault()
    app.start()
    try:
        yield app
    finally:
        app.clear_fault()
        app.start()


@pytest.fixture
def squid_ok(squid: SquidServer, app_ok: DonationsApp) -> Iterator[SquidServer]:
    squid.start()
    try:
        yield squid
    finally:
        squid.start()


@pytest.fixture
def streaming_pair(
    pg_primary: PostgresServer, pg_replica: PostgresServer
) -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """Primary and replica running, the replica streaming and caught up, before and after."""

    def settle() -> None:
        pg_primary.start()
        pg_replica.start()
        if pg_replica.saved_conninfo_path.exists():
            pg_replica.resume_wal_receiver()
        wait_until(
            lambda: [c["state"] for c in pg_primary.replication_clients()] == ["streaming"],
            15.0,
            "the primary sees its standby streaming",
        )
        pg_replica.wait_caught_up(pg_primary)

    settle()
    try:
        yield pg_primary, pg_replica
    finally:
        settle()


# -- 1. the app over HTTP -------------------------------------------------------------------------


def test_http_check_says_why_the_app_fails(app_ok: DonationsApp) -> None:
    url = app_ok.url("/health")
    check = HttpCheck(check_cfg("app", "http", url=url, timeout=2.0, slow_after=0.3))
    healthy = check.probe()
    assert (healthy.ok, healthy.reason) == (True, "")

    app_ok.set_fault("slow:0.8")
    slow = check.probe()
    assert not slow.ok
    assert slow.reason.startswith("slow: answered in "), slow.reason
    assert slow.reason.endswith(" s > slow_after 0.3 s"), slow.reason
    assert slow.latency is not None and slow.latency >= 0.3

    app_ok.set_fault("status:500")
    error = check.probe()
    assert (error.ok, error.reason) == (False, "HTTP 500, expected 200")

    app_ok.set_fault("slow:5")  # beyond the hard timeout
    hard = HttpCheck(check_cfg("app", "http", url=url, timeout=0.5, slow_after=0.3))
    started = time.monotonic()
    hung = hard.probe()
    took = time.monotonic() - started
    assert (hung.ok, hung.reason) == (False, "no answer within timeout 0.5 s")
    assert 0.4 < took < 3.0, took  # gave up at its timeout, not when the app answered (5 s)

    app_ok.clear_fault()
    app_ok.stop()
    down = check.probe()
    assert (down.ok, down.reason) == (False, "connection refused")

    app_ok.start()
    assert check.probe().ok


# -- 2. PostgreSQL: down, and what it is when up ------------------------------------------------


def test_postgres_check_fails_fast_when_stopped_and_reads_how_it_stopped(
    pg_solo: PostgresServer,
) -> None:
    cfg = check_cfg("db", "postgres", timeout=1.0)
    check = PostgresCheck(cfg, pg_config(pg_solo))
    blind = PostgresCheck(cfg, pg_config(pg_solo, data_dir=False))  # no data_dir configured
    try:
        up = check.probe()
        assert up.ok, up.reason
        assert up.facts["role"] == "primary"

        pg_solo.stop("fast")
        started = time.monotonic()
        stopped = check.probe()
        took = time.monotonic() - started
        assert (stopped.ok, stopped.reason) == (False, "PostgreSQL connection refused")
        # Within its own timeout: libpq alone would not give up in under 2 s.
        assert took < cfg.timeout, took
        end = stopped.facts.pop("lsn")
        assert stopped.facts == {
            "role": "stopped",
            "cluster_state": "shut down",
            "lsn_exact": True,
            "timeline": 1,
        }
        # Just past the shutdown checkpoint record: the last thing a clean stop writes.
        assert isinstance(end, int) and 0 < end - checkpoint_lsn(pg_solo) < 8192, end
        db = database_status({**stopped.facts, "lsn": end})
        assert (db.role, db.was_primary, db.stopped_cleanly) == (DbRole.STOPPED, True, True)
        assert (db.lsn, db.lsn_exact, db.timeline) == (end, True, 1)
        # Without data_dir the check cannot tell how it stopped, and says so.
        assert database_status(blind.probe().facts).role is DbRole.UNKNOWN

        pg_solo.start()
        assert check.probe().ok
        # Commits after the latest checkpoint: a crashed primary's WAL goes on past it, and
        # the check reads where (the peer compares its own position with this).
        committed = commit_rows(pg_solo, "crashed", 1000)
        pg_solo.kill()  # a crash: SIGKILL of every process of the server
        started = time.monotonic()
        crashed = check.probe()
        took = time.monotonic() - started
        assert (crashed.ok, crashed.reason) == (False, "PostgreSQL connection refused")
        assert took < cfg.timeout, took
        end = crashed.facts.pop("lsn")
        assert crashed.facts == {
            "role": "stopped",
            "cluster_state": "in production",
            "lsn_exact": True,
            "timeline": 1,
        }
        assert isinstance(end, int) and end >= committed > checkpoint_lsn(pg_solo), end
        db = database_status({**crashed.facts, "lsn": end})
        assert (db.role, db.was_primary, db.stopped_cleanly) == (DbRole.STOPPED, True, False)
        assert policy.wal_end_known(db)
        # Where pg_waldump cannot tell, the checkpoint is reported, and said to be a floor.
        shutil.move(pg_solo.data_dir / "pg_wal", pg_solo.data_dir / "pg_wal.away")
        try:
            unreadable = PostgresCheck(cfg, pg_config(pg_solo)).probe()
        finally:
            shutil.move(pg_solo.data_dir / "pg_wal.away", pg_solo.data_dir / "pg_wal")
        assert (unreadable.facts["lsn"], unreadable.facts["lsn_exact"]) == (
            checkpoint_lsn(pg_solo),
            False,
        )
        assert not policy.wal_end_known(database_status(unreadable.facts))
    finally:
        pg_solo.start()


def test_a_primary_crashed_soon_after_its_promotion_reports_the_end_of_its_new_timeline(
    make_postgres: Callable[..., PostgresServer],
) -> None:
    """Until the first checkpoint after a promotion completes (it is spread out), the control
    file's latest checkpoint is on the timeline before: read there, the WAL of a primary that
    crashed meanwhile would seem to end where it was promoted, and a peer with less would take
    over from it. Its newest timeline is read instead."""
    first = make_postgres("pg-tl-old")
    promoted = make_postgres("pg-tl-new", primary=first)
    promoted.wait_caught_up(first)
    first.stop("fast")
    before = read_control_data(promoted.bin_dir, promoted.data_dir, 10.0)
    assert before.timeline == 1 and before.checkpoint_lsn is not None, before
    promoted.promote()
    committed = commit_rows(promoted, "after_promotion", 5000)
    promoted.kill()
    # The control file as it is until that checkpoint: the one before the promotion.
    assert wal_end(promoted.bin_dir, promoted.data_dir, before, 10.0) == wal_end(
        promoted.bin_dir,
        promoted.data_dir,
        read_control_data(promoted.bin_dir, promoted.data_dir, 10.0),
        10.0,
    )
    end = wal_end(promoted.bin_dir, promoted.data_dir, before, 10.0)
    assert end is not None and end >= committed, (end, committed)
    facts = PostgresCheck(check_cfg("db", "postgres", timeout=1.0), pg_config(promoted)).probe()
    assert (facts.facts["lsn"], facts.facts["lsn_exact"]) == (end, True), facts.facts


def test_wal_that_ends_at_a_segment_boundary_is_read_at_once(
    make_postgres: Callable[..., PostgresServer],
) -> None:
    """A replica stopped right after a WAL switch has nothing past its last segment. Asked to
    read on, pg_waldump waits 5 s for a next segment, longer than the check's budget: the end
    is read up to the last segment there is."""
    primary = make_postgres("pg-switch-src")
    replica = make_postgres("pg-switch-rep", primary=primary)
    with primary.connect() as conn:
        conn.execute("SELECT pg_switch_wal()")
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    replica.wait_caught_up(primary)
    replica.stop("fast")  # its WAL ends where the switch left it, at a segment boundary
    control = read_control_data(replica.bin_dir, replica.data_dir, 10.0)
    started = time.monotonic()
    end = wal_end(replica.bin_dir, replica.data_dir, control, 10.0)
    took = time.monotonic() - started
    assert end is not None and end >= int(row[0]), (end, row[0])
    assert took < 2.0, took  # not the 5 s pg_waldump waits for a segment that is not there


def test_postgres_check_reports_a_hung_postmaster_and_an_empty_data_dir(
    make_postgres: Callable[..., PostgresServer], lab_root: Path
) -> None:
    """A frozen postmaster still completes TCP handshakes (the kernel does), so only a
    connection with a real deadline sees it: hung, within the check's own budget. A node with
    no cluster in its data directory is empty (a clone builds it), not merely unknown."""
    server = make_postgres("pg-hung")
    cfg = check_cfg("db", "postgres", timeout=1.0)
    check = PostgresCheck(cfg, pg_config(server))
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the postmaster only: its backends live on
    try:
        started = time.monotonic()
        hung = check.probe()
        took = time.monotonic() - started
        runner = CheckRunner([(cfg, check)], NullLog())
        with running(runner):
            snap = wait_until(
                lambda: (s := runner.snapshot()).facts.get("db") and s,
                5.0,
                "the runner's first probe",
            )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert not hung.ok
    assert hung.reason.startswith("cannot connect to PostgreSQL: no answer from"), hung.reason
    assert took < cfg.timeout, took  # its own deadline, not libpq's 2 s
    assert hung.facts == {"role": "unknown", "postmaster": "running", "hung": True}
    db = database_status(hung.facts)
    assert (db.role, db.hung) == (DbRole.UNKNOWN, True)
    # Under the runner, whose patience ends at the check's timeout, the facts still arrive.
    assert database_status(snap.facts["db"]).hung, snap
    thawed = check.probe()
    assert thawed.ok, thawed.reason
    assert database_status(thawed.facts).hung is False

    provisioned = lab_root / "pg-provisioned" / "data"  # configuration, but no cluster
    provisioned.mkdir(parents=True)
    (provisioned / "postgresql.conf").write_text("# provisioned, not initialised\n")
    free = free_port()
    for data_dir in (lab_root / "pg-never" / "data", provisioned):
        cfg_empty = PostgresConfig(host="127.0.0.1", port=free, data_dir=data_dir)
        empty = PostgresCheck(cfg, cfg_empty).probe()
        assert not empty.ok
        assert empty.facts == {"role": "empty"}, (data_dir, empty.facts)
        assert database_status(empty.facts).role is DbRole.EMPTY
    # The cluster's own data directory is not empty: stopped, it reads as stopped.
    server.stop("fast")
    assert database_status(check.probe().facts).role is DbRole.STOPPED


def test_postgres_check_reports_roles_lsns_and_standbys(
    streaming_pair: tuple[PostgresServer, PostgresServer],
) -> None:
    primary, replica = streaming_pair
    cfg = check_cfg("db", "postgres")
    # A standby that has just (re)connected has sent no replay position yet: pg_stat_replication
    # shows NULL and the check reports None. Wait (bounded) for its first feedback.
    on_primary = PostgresCheck(cfg, pg_config(primary)).probe()
    for _ in range(50):
        standbys_now = on_primary.facts.get("standbys")
        if (
            isinstance(standbys_now, list)
            and standbys_now
            and (standbys_now[0].get("replay_lag_bytes") is not None)
        ):
            break
        time.sleep(0.1)
        on_primary = PostgresCheck(cfg, pg_config(primary)).probe()
    assert (on_primary.ok, on_primary.reason) == (True, "")
    facts = on_primary.facts
    assert facts["role"] == "primary"
    assert isinstance(facts["lsn"], int) and facts["lsn"] > 0
    standbys = facts["standbys"]
    assert isinstance(standbys, list) and len(standbys) == 1, standbys
    standby = standbys[0]
    assert standby["application_name"] == replica.name
    assert standby["client_addr"] == "127.0.0.1"
    assert (standby["state"], standby["sync_state"]) == ("streaming", "async")
    assert isinstance(standby["replay_lag_bytes"], int) and standby["replay_lag_bytes"] >= 0
    db = database_status(facts)
    assert (db.role, db.lsn, db.timeline) == (DbRole.PRIMARY, facts["lsn"], 1)

    on_replica = PostgresCheck(cfg, pg_config(replica)).probe()
    assert (on_replica.ok, on_replica.reason) == (True, "")
    facts = on_replica.facts
    assert facts["role"] == "replica"
    assert (facts["wal_receiver"], facts["streaming"]) == ("streaming", True)
    received, replayed = facts["lsn"], facts["replayed_lsn"]
    assert isinstance(received, int) and isinstance(replayed, int)
    primary_lsn = on_primary.facts["lsn"]
    assert isinstance(primary_lsn, int)
    assert received >= replayed >= primary_lsn
    age = facts["last_received_age"]
    assert isinstance(age, float) and 0.0 <= age < 30.0  # keepalives come every few seconds
    db = database_status(facts)
    assert (db.role, db.lsn, db.replayed_lsn, db.streaming, db.timeline) == (
        DbRole.REPLICA,
        received,
        replayed,
        True,
        1,
    )

    # A replica stopped cleanly says so too: never a primary, clean.
    replica.stop("fast")
    stopped = PostgresCheck(cfg, pg_config(replica)).probe()
    assert stopped.reason == "PostgreSQL connection refused"
    assert {k: stopped.facts[k] for k in ("role", "cluster_state", "timeline")} == {
        "role": "stopped",
        "cluster_state": "shut down in recovery",
        "timeline": 1,
    }
    # What it received, read from its WAL: its checkpoint is only its last restartpoint.
    assert isinstance(stopped.facts["lsn"], int) and stopped.facts["lsn"] >= received
    assert stopped.facts["lsn_exact"] is True
    db = database_status(stopped.facts)
    assert (db.role, db.was_primary, db.stopped_cleanly) == (DbRole.STOPPED, False, True)


# -- 3. a replica cut off from its primary ------------------------------------------------------


def observation(db_facts: dict[str, object], active_lsn: int, now: float) -> Observation:
    """What the passive node's daemon would hand the core: its own checks passing, its database
    as the check saw it, and the active's record with its last published LSN."""
    active = MemberStatus(
        node="n1",
        role="active",
        epoch=1,
        eligible=False,
        healthy=True,
        reason="active",
        lsn=active_lsn,
        db_role="primary",
    )
    return Observation(
        now=now,
        wall_now=time.time(),
        zk=ZkStatus(ZkState.CONNECTED, 0.0, now),
        cluster=ClusterView(
            epoch=1,
            lease=LeaseInfo("n1", 1, time.time(), mine=False),
            last_leader=None,
            members=(active,),
        ),
        local=LocalHealth(checks=(), complete=True),
        database=database_status(db_facts),
    )


def write_wal(primary: PostgresServer, megabytes: int) -> None:
    table = f"wal_{uuid.uuid4().hex[:8]}"
    with primary.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (v text)")
        conn.execute(
            f"INSERT INTO {table} SELECT repeat('x', 1000) "
            f"FROM generate_series(1, {megabytes * 1000})"
        )


def test_a_replica_restarted_without_its_primary_reports_what_it_replayed(
    streaming_pair: tuple[PostgresServer, PostgresServer],
) -> None:
    """Restarted, a replica asks for streaming from the start of the segment it replays in:
    pg_last_wal_receive_lsn() says that segment's start until WAL arrives again, below what it
    holds. Its position is what it received or replayed, whichever is further (the lab: an
    old active, cut off and started as a replica after a switchover, reported 0/3000000
    against 0/300F6xx replayed, was "behind" its peer, and the stalled switchover left the
    site dark for 21 s instead of leading again)."""
    primary, replica = streaming_pair
    written = commit_rows(primary, "restart_position", 500)
    replica.wait_caught_up(primary)
    replica.stop_wal_receiver()
    replica.stop("fast")
    replica.start()
    facts = PostgresCheck(check_cfg("db", "postgres"), pg_config(replica)).probe().facts
    assert facts["role"] == "replica" and facts["streaming"] is False, facts
    replayed = facts["replayed_lsn"]
    assert isinstance(replayed, int) and replayed >= written, facts
    assert facts["lsn"] == replayed, facts
    assert database_status(facts).lsn == replayed


def test_replica_cut_off_from_its_primary_is_not_eligible(
    streaming_pair: tuple[PostgresServer, PostgresServer],
) -> None:
    primary, replica = streaming_pair
    cfg = check_cfg("db", "postgres")
    on_primary = PostgresCheck(cfg, pg_config(primary))
    on_replica = PostgresCheck(cfg, pg_config(replica))  # one instance: it remembers
    lag_only = Settings(
        node="n2",
        peer="n1",
        self_fence_after=1.0,
        max_replication_silence=3600.0,
        max_lag_on_failover=1 * MB,
    )
    silence_only = replace(lag_only, max_replication_silence=0.3, max_lag_on_failover=1 << 40)

    before = on_replica.probe()
    assert before.facts["streaming"] is True
    primary_lsn = on_primary.probe().facts["lsn"]
    assert isinstance(primary_lsn, int)
    obs = observation(dict(before.facts), primary_lsn, boottime())
    assert eligibility(lag_only, State(), obs) == (
        True,
        "replica streaming within max_lag_on_failover",
    )

    replica.stop_wal_receiver()
    write_wal(primary, 4)  # about 4.5 MB of WAL that never reaches the replica
    primary_lsn = on_primary.probe().facts["lsn"]
    assert isinstance(primary_lsn, int)

    first = on_replica.probe()
    time.sleep(0.5)
    second = on_replica.probe()
    for cut in (first, second):
        assert cut.ok, cut.reason  # the replica itself answers: the check passes
        assert cut.facts["role"] == "replica"
        assert cut.facts["streaming"] is False
        assert cut.facts["wal_receiver"] != "streaming"
    first_age, second_age = first.facts["last_received_age"], second.facts["last_received_age"]
    assert isinstance(first_age, float) and isinstance(second_age, float), (first, second)
    assert second_age >= first_age + 0.4, (first_age, second_age)  # silence grows with time
    received = second.facts["lsn"]
    assert isinstance(received, int) and primary_lsn - received > 4 * MB

    ok, why = eligibility(lag_only, State(), observation(dict(second.facts), primary_lsn, 0.0))
    assert not ok
    assert why.startswith("replica lag "), why
    assert why.endswith(" > max_lag_on_failover 1 MB"), why

    ok, why = eligibility(silence_only, State(), observation(dict(second.facts), primary_lsn, 0.0))
    assert not ok
    assert why.startswith("WAL receiver not streaming, last WAL received "), why
    assert why.endswith(" s ago (max_replication_silence 0.3 s)"), why

    replica.resume_wal_receiver()

    def caught_up() -> Probe | None:
        p = on_replica.probe()
        lsn = p.facts.get("lsn")
        return p if isinstance(lsn, int) and lsn >= primary_lsn else None

    back = wait_until(caught_up, 15.0, "the replica catches up once its WAL receiver is back")
    assert back.facts["streaming"] is True
    assert eligibility(lag_only, State(), observation(dict(back.facts), primary_lsn, 0.0))[0]


def test_replica_of_a_crashed_primary_stays_eligible_within_max_replication_silence(
    streaming_pair: tuple[PostgresServer, PostgresServer],
) -> None:
    """The case max_replication_silence exists for: the primary dies, the replica's WAL receiver
    goes with it, and the replica must still be able to take over for a while."""
    primary, replica = streaming_pair
    cfg = check_cfg("db", "postgres")
    on_replica = PostgresCheck(cfg, pg_config(replica))
    settings = Settings(node="n2", peer="n1", self_fence_after=1.0, max_replication_silence=30.0)
    primary_lsn = PostgresCheck(cfg, pg_config(primary)).probe().facts["lsn"]
    assert isinstance(primary_lsn, int)
    replica.wait_caught_up(primary)
    assert on_replica.probe().facts["streaming"] is True

    primary.kill()
    try:
        wait_until(
            lambda: replica.wal_receiver_status() != "streaming", 10.0, "the receiver notices"
        )
        cut = on_replica.probe()
        assert cut.facts["streaming"] is False
        age = cut.facts["last_received_age"]
        assert isinstance(age, float) and age < 30.0, cut.facts
        obs = observation(dict(cut.facts), primary_lsn, boottime())
        assert eligibility(settings, State(), obs) == (
            True,
            "replica within max_lag_on_failover of the active's last known position",
        )
        # A replica the check never saw receive anything is not vouched for.
        fresh = PostgresCheck(cfg, pg_config(replica)).probe()
        assert fresh.facts["last_received_age"] is None
        ok, why = eligibility(
            settings, State(), observation(dict(fresh.facts), primary_lsn, boottime())
        )
        assert not ok and "last WAL received never" in why, why
    finally:
        primary.start()


# -- 4. Squid, and the app behind it ------------------------------------------------------------


def test_squid_check_tells_squid_down_from_app_behind_it_down(
    squid_ok: SquidServer, app_ok: DonationsApp
) -> None:
    squid = squid_ok
    check = SquidCheck(
        check_cfg(
            "squid",
            "squid",
            url=squid.url("/health"),
            cache_manager_url=squid.mgr_url("info"),
            timeout=0.5,
        )
    )
    healthy = check.probe()
    assert (healthy.ok, healthy.reason, dict(healthy.facts)) == (True, "", {"squid": "up"})

    app_ok.stop()
    app_down = check.probe()
    assert not app_down.ok
    assert app_down.reason.startswith("app behind Squid down: Squid answered HTTP 503 ("), (
        app_down.reason
    )
    assert app_down.facts["squid"] == "up"
    for number in ("uptime_s", "http_requests", "clients", "file_descriptors_in_use"):
        assert isinstance(app_down.facts[number], float), app_down.facts  # Squid's mgr:info
    app_ok.start()

    app_ok.set_fault("status:500")
    error = check.probe()
    assert (error.ok, error.reason) == (False, "app answered HTTP 500 through Squid, expected 200")
    assert error.facts["squid"] == "up"

    app_ok.set_fault("slow:3")  # Squid waits for the app longer than the check does
    slow = check.probe()
    assert not slow.ok
    assert slow.reason == (
        "app behind Squid slow or hung: no answer within timeout 0.5 s (Squid itself answers)"
    )
    assert slow.facts["squid"] == "up" and "uptime_s" in slow.facts
    app_ok.clear_fault()

    squid.stop()
    down = check.probe()
    assert (down.ok, down.reason) == (False, "Squid down: connection refused")
    assert dict(down.facts) == {"squid": "down", "squid_error": "connection refused"}

    squid.start()
    assert check.probe().ok


# -- 5. a hung check never stalls the others ----------------------------------------------------


def test_a_hung_check_fails_without_stalling_the_others_and_is_killed(
    app_ok: DonationsApp, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    # sh and a sleeping child in one process group, both named in the pid file.
    argv = ("sh", "-c", f"sleep 30 & echo $$ $! > {pids}; wait")
    hung_cfg = check_cfg("hung", "command", command=argv, timeout=0.3)
    # Its own timeout is longer than the 0.3 s the runner waits: a check that overruns its
    # budget, which is what the runner guards against.
    hung = Counting(CommandCheck(replace(hung_cfg, timeout=2.0)))
    app_cfg = check_cfg("app", "http", url=app_ok.url("/health"))
    other = Counting(HttpCheck(app_cfg))
    reasons: list[str] = []  # every reason the hung check reported, in order
    runner_box: list[CheckRunner] = []

    def on_change() -> None:  # runs on the scheduler thread, right after each change
        for c in runner_box[0].snapshot().checks:
            if c.name != "hung" or c.reason in ("", "not judged yet"):
                continue
            if not reasons or reasons[-1] != c.reason:
                reasons.append(c.reason)

    runner = CheckRunner([(hung_cfg, hung), (app_cfg, other)], NullLog(), on_change=on_change)
    runner_box.append(runner)
    slowest_snapshot = 0.0

    def hung_reason() -> str:
        nonlocal slowest_snapshot
        started = time.monotonic()
        snap = runner.snapshot()
        slowest_snapshot = max(slowest_snapshot, time.monotonic() - started)
        return {c.name: c for c in snap.checks}["hung"].reason

    with running(runner):
        wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, 5.0, "started")
        group = [int(p) for p in pids.read_text().split()]
        wait_until(lambda: "hung: previous probe" in hung_reason(), 3.0, "reported as hung")
        counted = other.count
        assert not any(process_gone(p) for p in group), "killed before its own timeout"
        wait_until(lambda: other.count >= counted + 3, 3.0, "the other check goes on")
        for _ in range(10):  # the snapshot never waits for a probe
            hung_reason()
            time.sleep(0.02)
        snap = runner.snapshot()
        assert {c.name: c.healthy for c in snap.checks} == {"hung": False, "app": True}
        # The command's own timeout (2 s) kills its whole process group.
        wait_until(lambda: all(process_gone(p) for p in group), 6.0, "the hung group killed")
    assert reasons[0] == "no result within timeout 0.3 s (check hung)", reasons
    assert any(r.startswith("hung: previous probe still running after ") for r in reasons), reasons
    assert slowest_snapshot < 0.1, slowest_snapshot
    assert all(p.ok for p in other.outcomes), [p.reason for p in other.outcomes if not p.ok]
    # A probe still running at stop() runs out its own timeout and kills its group too.
    wait_until(lambda: hung.in_flight == 0, 6.0, "the last hung probe returned")
    last = [int(p) for p in pids.read_text().split()]
    assert last and all(process_gone(p) for p in last), last


def test_a_command_check_is_killed_at_its_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    argv = ("sh", "-c", f"sleep 30 & echo $$ $! > {pids}; wait")
    check = CommandCheck(check_cfg("cmd", "command", command=argv, timeout=0.3))
    started = time.monotonic()
    result = check.probe()
    took = time.monotonic() - started
    assert (result.ok, result.reason) == (False, "no result within timeout 0.3 s")
    assert took < 2.0, took
    group = [int(p) for p in pids.read_text().split()]
    assert len(group) == 2
    wait_until(lambda: all(process_gone(p) for p in group), 2.0, "sh and its child killed")

    failing = CommandCheck(check_cfg("cmd", "command", command=("sh", "-c", "echo oops; exit 3")))
    assert (failing.probe().ok, failing.probe().reason) == (False, "exit 3: oops")


# -- 6. rise/fall with a real flapping app ------------------------------------------------------


def test_rise_fall_rides_out_a_flapping_app_then_follows_a_real_failure(
    app_ok: DonationsApp,
) -> None:
    cfg = check_cfg("app", "http", url=app_ok.url("/health"), rise=2, fall=2, interval=0.1)
    flaps_left = [0]
    flapped: list[bool] = []

    def toggle(result: Probe) -> None:
        # While flapping, the app's answer flips after every probe: 200, 500, 200, 500... a
        # failure never comes twice in a row, which is below fall = 2. Driven by the probes,
        # not by a timer, so that a noisy machine cannot turn it into a real outage.
        if flaps_left[0] > 0:
            flapped.append(result.ok)
            flaps_left[0] -= 1
            if result.ok and flaps_left[0] > 0:
                app_ok.set_fault("status:500")
            else:
                app_ok.clear_fault()

    checker = Counting(HttpCheck(cfg), after=toggle)
    # (judged, healthy, reason, successes, failures) at every change the runner reports
    changes: list[tuple[bool, bool, str, int, int]] = []
    runner_box: list[CheckRunner] = []

    def on_change() -> None:
        snap = runner_box[0].snapshot()
        (s,) = snap.checks
        changes.append((snap.complete, s.healthy, s.reason, s.successes, s.failures))

    runner = CheckRunner([(cfg, checker)], NullLog(), on_change=on_change)
    runner_box.append(runner)

    def status() -> Any:
        (s,) = runner.snapshot().checks
        return s

    with running(runner):
        wait_until(lambda: status().healthy, 5.0, "healthy after rise passes")
        flaps_left[0] = 12
        for _ in range(500):  # bounded: 12 probes at 0.1 s
            assert status().healthy, status()
            if flaps_left[0] == 0:
                break
            time.sleep(0.01)
        assert flaps_left[0] == 0, "the app did not flap 12 times"
        assert flapped.count(False) >= 5, flapped  # it did flap, for real
        assert all(a or b for a, b in itertools.pairwise(flapped)), flapped
        judged = [c for c in changes if c[0]]
        assert judged and all(c[1] for c in judged), changes
        assert any(c[2] == "HTTP 500, expected 200" for c in judged), changes  # seen, ridden out

        mark = len(changes)
        app_ok.set_fault("status:500")  # a sustained failure
        wait_until(lambda: not status().healthy, 5.0, "unhealthy after fall failures")
        app_ok.clear_fault()
        wait_until(lambda: status().healthy, 5.0, "healthy again after rise passes")

    after = changes[mark:]
    fell = next(i for i, c in enumerate(after) if not c[1])
    assert after[fell] == (True, False, "HTTP 500, expected 200", 0, 2), after  # `fall` failures
    rose = next(i for i, c in enumerate(after) if i > fell and c[1])
    # One pass is not enough, and the operator reads why it is still down.
    assert (True, False, "recovering: 1/2 passes", 1, 0) in after[fell:rose], after
    assert after[rose][1:] == (True, "", 2, 0), after  # exactly `rise` passes


# -- 7. the direct probe of the peer's database -------------------------------------------------


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port whose SYNs go unanswered: a listener with a full accept queue that never accepts.

    Linux drops a SYN when the listener's accept queue is full, so a connect gets no answer at
    all, as from a host behind a blackhole route; this one needs no namespace and no firewall.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        first = socket.create_connection(("127.0.0.1", port), timeout=2.0)  # fills the queue
        fillers.append(first)
        extra = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        extra.setblocking(False)
        fillers.append(extra)
        with contextlib.suppress(BlockingIOError):
            extra.connect(("127.0.0.1", port))
        yield port
    finally:
        for s in (*fillers, listener):
            s.close()


def test_peer_database_probe(
    streaming_pair: tuple[PostgresServer, PostgresServer], pg_solo: PostgresServer
) -> None:
    primary, replica = streaming_pair
    pg = PostgresConfig()

    def probe(host: str, port: int, timeout: float = 1.0, cfg: PostgresConfig = pg) -> Probe:
        return PeerDatabaseProbe(host, port, cfg, timeout).probe()

    def seen(result: Probe) -> PeerDb:
        return peer_probe({**result.facts, "probed_at": 1.0}).state  # as the daemon reads it

    as_primary = probe(primary.host, primary.port)
    assert (as_primary.ok, as_primary.facts["peer_db"]) == (True, "primary")
    assert seen(as_primary) is PeerDb.PRIMARY
    as_replica = probe(replica.host, replica.port)
    assert (as_replica.ok, as_replica.facts["peer_db"]) == (True, "replica")
    assert seen(as_replica) is PeerDb.REPLICA

    # It answers, but not what it is: never to be read as "not a primary".
    unknown = probe(primary.host, primary.port, cfg=PostgresConfig(dbname="no_such_db"))
    assert not unknown.ok and unknown.facts["peer_db"] == "unknown"
    assert unknown.reason.startswith("cannot query PostgreSQL: "), unknown.reason
    assert "no_such_db" in unknown.reason
    assert seen(unknown) is PeerDb.UNKNOWN

    pg_solo.stop("fast")
    try:
        started = time.monotonic()
        down = probe(pg_solo.host, pg_solo.port)
        took = time.monotonic() - started
    finally:
        pg_solo.start()
    assert (down.ok, down.reason, dict(down.facts)) == (
        False,
        "peer database down",
        {"peer_db": "down"},
    )
    assert took < 1.0, took  # refused at once, not after libpq's 2 s
    assert seen(down) is PeerDb.DOWN

    with silent_listener() as port:
        started = time.monotonic()
        unreachable = probe("127.0.0.1", port, timeout=0.5)
        took = time.monotonic() - started
    assert (unreachable.ok, unreachable.reason, dict(unreachable.facts)) == (
        False,
        "peer database unreachable",
        {"peer_db": "unreachable"},
    )
    assert 0.4 < took < 1.9, took  # waited its own timeout, not libpq's
    assert seen(unreachable) is PeerDb.UNREACHABLE


# -- 8. end to end: a daemon, its checks, failoverctl status --------------------------------------


def daemon_config(
    path: Path,
    *,
    zk: ZooKeeperServer,
    chroot: str,
    pg: PostgresServer,
    app: DonationsApp,
    squid: SquidServer,
) -> Path:
    """One node, n1, on the fixtures' servers. Its peer n2 has no daemon and no database: the
    peer probe finds nothing on its port. No [vip]: nothing on the host's interfaces changes."""
    checks = {
        "app": {"type": '"http"', "url": f'"{app.url("/health")}"'},
        "proxy": {
            "type": '"squid"',
            "url": f'"{squid.url("/health")}"',
            "cache_manager_url": f'"{squid.mgr_url("info")}"',
        },
        "db": {"type": '"postgres"'},
    }
    tables = "".join(
        f"\n[checks.{name}]\n"
        + "".join(f"{k} = {v}\n" for k, v in keys.items())
        + "interval = 0.2\ntimeout = 1.0\nrise = 1\nfall = 1\n"
        for name, keys in checks.items()
    )
    identity, known = stand_in_fencing(path.parent, ["127.0.0.12"])
    path.write_text(
        f"""node = "n1"

[fencing]
identity_file = "{identity}"
known_hosts = "{known}"

[cluster]
name = "t"
zookeeper_hosts = ["{zk.hosts}"]
chroot = "{chroot}"

[[members]]
name = "n1"
address = "127.0.0.11"
db_port = {pg.port}

[[members]]
name = "n2"
address = "127.0.0.12"
db_port = {free_port("127.0.0.12")}

[timings]
session_timeout = 2.0
start_timeout = 5.0
publish_every = 0.5

[metrics]
enabled = false

[postgres]
host = "{pg.host}"
port = {pg.port}
data_dir = "{pg.data_dir}"
bin_dir = "{pg.bin_dir}"
{tables}"""
    )
    return path


def status_json(config: Path) -> tuple[int, dict[str, Any]]:
    """``failoverctl status --json``: (exit code, document); the document is {"error": ...} when
    there is none (the cluster not created yet)."""
    done = subprocess.run(
        [str(BIN / "failoverctl"), "-c", str(config), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        doc = json.loads(done.stdout)
    except json.JSONDecodeError:
        doc = {"error": done.stdout + done.stderr, "members": []}
    return done.returncode, doc


def n1_checks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    for member in doc.get("members", []):  # an error document has none
        if member["node"] == "n1":
            return {c["name"]: c for c in member.get("checks", [])}
    return {}


def test_daemon_publishes_each_failing_check_in_status(
    zookeeper: ZooKeeperServer,
    make_postgres: Callable[..., PostgresServer],
    squid_ok: SquidServer,
    app_ok: DonationsApp,
    tmp_path: Path,
) -> None:
    # A database of its own: the daemon manages it (it may stop it, or restart it as a replica),
    # so it must not be one the other tests rely on.
    primary = make_postgres("pg-daemon")
    chroot = f"/failoverd/checks-{uuid.uuid4().hex[:8]}"
    config = daemon_config(
        tmp_path / "n1.toml", zk=zookeeper, chroot=chroot, pg=primary, app=app_ok, squid=squid_ok
    )
    checked = subprocess.run(
        [str(BIN / "failoverd"), "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr

    def until(
        what: str, predicate: Callable[[dict[str, dict[str, Any]]], bool]
    ) -> tuple[int, dict[str, Any]]:
        last: list[Any] = []

        def ok() -> tuple[int, dict[str, Any]] | None:
            code, doc = status_json(config)
            last[:] = [code, doc]
            return (code, doc) if predicate(n1_checks(doc)) else None

        try:
            result: tuple[int, dict[str, Any]] = wait_until(ok, 20.0, what, step=0.1)
        except AssertionError:
            raise AssertionError(
                f"{what}; last status {last}; daemon log:\n{daemon.log.read_text()[-3000:]}"
            ) from None
        return result

    def all_healthy(checks: dict[str, dict[str, Any]]) -> bool:
        return set(checks) == {"app", "proxy", "db"} and all(c["healthy"] for c in checks.values())

    def failing(name: str, reason: str) -> Callable[[dict[str, dict[str, Any]]], bool]:
        # Texts ride on the member's heartbeat: the first failure's own words (a server caught
        # half-way through stopping) may show first; wait for the steady one.
        return lambda checks: not checks[name]["healthy"] and checks[name]["reason"] == reason

    daemon = DaemonProcess(config)
    try:
        code, doc = until("all three checks healthy", all_healthy)
        assert code == 1, doc  # degraded: n2 publishes nothing
        assert any("n2 publishes no status" in w for w in doc["warnings"]), doc["warnings"]

        app_ok.set_fault("status:500")
        code, doc = until("the app check failing", failing("app", "HTTP 500, expected 200"))
        assert code in (1, 2), code
        assert any("n1 check app failing: HTTP 500, expected 200" in w for w in doc["warnings"])
        # The same answer through Squid: Squid is fine, the app behind it is not.
        until(
            "the proxy check failing",
            failing("proxy", "app answered HTTP 500 through Squid, expected 200"),
        )
        app_ok.clear_fault()
        until("healthy again", all_healthy)

        squid_ok.stop()
        code, doc = until(
            "the proxy check failing", failing("proxy", "Squid down: connection refused")
        )
        checks = n1_checks(doc)
        assert checks["app"]["healthy"] and checks["db"]["healthy"], checks
        assert code in (1, 2), code
        squid_ok.start()
        until("healthy again", all_healthy)

        # Its database crashes, and no peer can take over (n2 publishes nothing): the active
        # does not serve nothing for ever, it starts its own database again (crash recovery).
        # (A `pg_ctl stop` here would wait for a server the daemon starts again at once.)
        primary.kill()
        # Not all_healthy at once: the status read just after the kill may still be the old one
        # (the suite saw the daemon stopped before it had noticed the crash).
        wait_until(
            lambda: '"event": "restarting_database"' in daemon.log.read_text(),
            20.0,
            "the daemon starting its crashed database again",
            step=0.1,
        )
        until("healthy again, its database started by the daemon", all_healthy)
    finally:
        daemon.stop()
    log = daemon.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert '"event": "restarting_database"' in log, log[-3000:]

"""The lab's real servers: PostgreSQL primary and streaming replica, the donations app, Squid.

These are the building blocks of every failover test, so each behaviour the failover tests rely
on is pinned here first, against real processes: replication and its interruption, promotion,
clean and unclean stops, the app's acknowledge-after-commit contract and its fast 503s, and
Squid's fast 503 when the app is gone.
"""

from __future__ import annotations

import http.client
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from lab.donations import DonationsApp, request_json
from lab.postgres import PostgresServer
from lab.process import waited
from lab.squid import SquidServer

pytestmark = pytest.mark.integration
# The fixtures (lab_root, make_postgres, pg_primary, pg_replica, make_app, make_squid). Not
# imported here: a module imported before pytest loads it as a plugin is not assert-rewritten.
pytest_plugins = ["tests.integration.conftest_servers"]

MakePostgres = Callable[..., PostgresServer]
MakeApp = Callable[..., DonationsApp]
MakeSquid = Callable[..., SquidServer]


def one(pg: PostgresServer, query: Any, params: tuple[Any, ...] = ()) -> Any:
    with pg.connect() as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def set_epoch(pg: PostgresServer, epoch: int | None) -> None:
    """What failoverd does on promotion: the single-row upsert the schema asks for."""
    with pg.connect() as conn:
        if epoch is None:
            conn.execute("DELETE FROM failoverd_epoch")
        else:
            conn.execute(
                "INSERT INTO failoverd_epoch VALUES (%s)"
                " ON CONFLICT ((true)) DO UPDATE SET epoch = EXCLUDED.epoch",
                (epoch,),
            )


def donation(amount: Any = 10, country: Any = "AU", **extra: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "amount": amount, "country": country, **extra}


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - start


# -- PostgreSQL -----------------------------------------------------------------------------------


def test_replica_receives_rows_written_on_the_primary(
    pg_primary: PostgresServer, pg_replica: PostgresServer
) -> None:
    with pg_primary.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS repl_probe (v text)")
        conn.execute("INSERT INTO repl_probe VALUES ('hello')")

    def arrived() -> bool:
        with pg_replica.connect() as conn:
            if conn.execute("SELECT to_regclass('repl_probe')").fetchone() == (None,):
                return False
            return bool(conn.execute("SELECT count(*) FROM repl_probe").fetchone() == (1,))

    waited(arrived, 10.0, "the row written on the primary is on the replica")


def test_primary_shows_the_standby_streaming(
    pg_primary: PostgresServer, pg_replica: PostgresServer
) -> None:
    assert pg_replica.is_in_recovery()
    assert not pg_primary.is_in_recovery()
    assert pg_replica.wal_receiver_status() == "streaming"
    clients = pg_primary.replication_clients()
    assert [(c["application_name"], c["state"]) for c in clients] == [("pg2", "streaming")]
    with pytest.raises(Exception, match="read-only"), pg_replica.connect() as conn:
        conn.execute("CREATE TABLE not_here (v int)")


def test_stop_and_resume_wal_receiver(
    pg_primary: PostgresServer, pg_replica: PostgresServer
) -> None:
    with pg_primary.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS cut_probe (v int)")
    pg_replica.wait_caught_up(pg_primary)

    pg_replica.stop_wal_receiver()
    try:
        assert pg_replica.wal_receiver_status() != "streaming"
        waited(lambda: pg_primary.replication_clients() == [], 5.0, "the walsender is gone")
        with pg_primary.connect() as conn:
            conn.execute("INSERT INTO cut_probe VALUES (1)")
        time.sleep(0.5)  # streaming would deliver this in a few ms
        assert one(pg_replica, "SELECT count(*) FROM cut_probe") == 0
        assert pg_replica.is_in_recovery()
    finally:
        pg_replica.resume_wal_receiver()

    assert pg_replica.wal_receiver_status() == "streaming"
    pg_replica.wait_caught_up(pg_primary)
    assert one(pg_replica, "SELECT count(*) FROM cut_probe") == 1
    waited(
        lambda: [c["state"] for c in pg_primary.replication_clients()] == ["streaming"],
        5.0,
        "the primary sees the standby streaming again",
    )


def test_promote_then_fast_stop_is_clean_and_kill_is_a_crash(
    pg_primary: PostgresServer, make_postgres: MakePostgres
) -> None:
    """On a replica of its own, so the shared pair stays as it is."""
    standby = make_postgres("pg3", primary=pg_primary)
    assert standby.is_in_recovery()
    with pytest.raises(Exception, match="read-only"), standby.connect() as conn:
        conn.execute("CREATE TABLE promoted (v int)")

    _, took = timed(standby.promote)
    assert took < 5.0
    assert not standby.is_in_recovery()
    assert standby.wal_receiver_status() is None
    with standby.connect() as conn:
        conn.execute("CREATE TABLE promoted (v int)")
        conn.execute("INSERT INTO promoted VALUES (42)")
    assert not pg_primary.is_in_recovery()  # the old primary knows nothing of it

    standby.stop("fast")
    assert standby.pid is None
    assert standby.cluster_state() == "shut down"  # a clean stop: nothing to recover

    standby.start()
    assert not standby.is_in_recovery()
    assert one(standby, "SELECT v FROM promoted") == 42
    standby.kill()
    assert standby.pid is None
    assert standby.cluster_state() == "in production"  # as a crash leaves it
    standby.start()  # crash recovery; the pid and socket locks of the dead one are no obstacle
    assert one(standby, "SELECT v FROM promoted") == 42
    standby.stop("immediate")
    assert standby.pid is None
    assert standby.cluster_state() == "in production"


# -- the donations app ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(make_app: MakeApp, pg_primary: PostgresServer) -> DonationsApp:
    return make_app("app-a", pg_primary.dsn(), "node-a", init_schema=True)


@pytest.fixture
def no_epoch(pg_primary: PostgresServer, app: DonationsApp) -> Iterator[None]:
    set_epoch(pg_primary, None)
    yield
    set_epoch(pg_primary, None)


def count_donations(pg: PostgresServer) -> int:
    return int(one(pg, "SELECT count(*) FROM donations"))


@pytest.mark.usefixtures("no_epoch")
def test_donate_answers_after_commit_with_node_and_epoch(
    app: DonationsApp, pg_primary: PostgresServer
) -> None:
    body = donation(12.5, "AU")
    status, answer = app.request("POST", "/donate", body)
    assert (status, answer) == (200, {"id": body["id"], "node": "node-a", "epoch": 0})
    # Committed before the answer: another session sees it at once.
    with pg_primary.connect() as conn:
        row = conn.execute(
            "SELECT amount, country, node, epoch FROM donations WHERE id = %s", (body["id"],)
        ).fetchone()
    assert row == (Decimal("12.50"), "AU", "node-a", 0)

    set_epoch(pg_primary, 7)
    body = donation(3, "NZ")
    status, answer = app.request("POST", "/donate", body)
    assert (status, answer) == (200, {"id": body["id"], "node": "node-a", "epoch": 7})
    assert one(pg_primary, "SELECT epoch FROM donations WHERE id = %s", (body["id"],)) == 7


@pytest.mark.usefixtures("no_epoch")
def test_a_repeated_id_is_idempotent(app: DonationsApp, pg_primary: PostgresServer) -> None:
    set_epoch(pg_primary, 3)
    body = donation(5, "FR")
    first = app.request("POST", "/donate", body)
    set_epoch(pg_primary, 4)
    again = app.request("POST", "/donate", body)
    assert first == again == (200, {"id": body["id"], "node": "node-a", "epoch": 3})
    assert one(pg_primary, "SELECT count(*) FROM donations WHERE id = %s", (body["id"],)) == 1

    other = {**body, "amount": 6}
    status, answer = app.request("POST", "/donate", other)
    assert status == 409, answer
    assert one(pg_primary, "SELECT amount FROM donations WHERE id = %s", (body["id"],)) == 5


BAD_BODIES: list[tuple[str, Any]] = [
    ("not json", b"{nope"),
    ("not an object", [1, 2]),
    ("missing id", {"amount": 1, "country": "AU"}),
    ("missing amount", {"id": str(uuid.uuid4()), "country": "AU"}),
    ("missing country", {"id": str(uuid.uuid4()), "amount": 1}),
    ("id not a uuid", donation(id="12345")),
    ("id a number", donation(id=12345)),
    ("amount zero", donation(0)),
    ("amount negative", donation(-5)),
    ("amount a string", donation("10")),
    ("amount a bool", donation(True)),
    ("amount NaN", b'{"id": "%s", "amount": NaN, "country": "AU"}' % str(uuid.uuid4()).encode()),
    ("amount in tenths of cents", donation(1.001)),
    ("amount too large", donation(10**12)),
    ("country lower case", donation(country="au")),
    ("country three letters", donation(country="AUS")),
    ("country a number", donation(country=36)),
]


@pytest.mark.parametrize("body", [b for _, b in BAD_BODIES], ids=[n for n, _ in BAD_BODIES])
def test_bad_input_is_a_400_and_writes_nothing(
    app: DonationsApp, pg_primary: PostgresServer, body: Any
) -> None:
    before = count_donations(pg_primary)
    status, answer = app.request("POST", "/donate", body)
    assert status == 400
    assert isinstance(answer, dict)
    assert answer["error"]
    assert count_donations(pg_primary) == before


def test_wrong_method_and_path(app: DonationsApp) -> None:
    assert app.request("GET", "/donate")[0] == 405
    assert app.request("POST", "/totals", {})[0] == 405
    assert app.request("GET", "/nowhere")[0] == 404


def test_totals_sum_right(app: DonationsApp, pg_primary: PostgresServer) -> None:
    for amount in (1.1, 2.2, 3.3):
        assert app.request("POST", "/donate", donation(amount, "ZX"))[0] == 200
    assert app.request("POST", "/donate", donation(100, "ZY"))[0] == 200

    status, answer = app.request("GET", "/totals")
    assert status == 200
    assert answer["node"] == "node-a"
    by_country = {t["country"]: t for t in answer["totals"]}
    assert by_country["ZX"] == {"country": "ZX", "count": 3, "sum": "6.60"}
    assert by_country["ZY"] == {"country": "ZY", "count": 1, "sum": "100.00"}
    assert sum(t["count"] for t in answer["totals"]) == count_donations(pg_primary)


def test_app_on_the_replica_refuses_writes_with_503(
    make_app: MakeApp, app: DonationsApp, pg_primary: PostgresServer, pg_replica: PostgresServer
) -> None:
    pg_replica.wait_caught_up(pg_primary)  # the schema the primary's app created
    on_replica = make_app("app-b", pg_replica.dsn(), "node-b")
    before = count_donations(pg_primary)

    (status, answer), took = timed(on_replica.request, "POST", "/donate", donation())
    assert status == 503
    assert "read-only" in answer["error"]
    assert took < 2.0
    status, answer = on_replica.request("GET", "/totals")  # reads work on a standby
    assert status == 200
    assert answer["node"] == "node-b"
    assert count_donations(pg_primary) == before


def test_app_answers_503_fast_when_its_database_is_down_or_hung(
    make_postgres: MakePostgres, make_app: MakeApp
) -> None:
    pg = make_postgres("pg-lone")
    lone = make_app("app-lone", pg.dsn(), "node-z", init_schema=True, db_timeout=1.5)
    assert lone.request("POST", "/donate", donation())[0] == 200  # warms the pool
    pg.stop("fast")
    pg.start()  # every pooled connection is stale now: replaced without a failed request
    assert lone.request("POST", "/donate", donation())[0] == 200

    pg.stop("fast")
    for _ in range(3):
        (status, answer), took = timed(lone.request, "POST", "/donate", donation())
        assert status == 503, answer
        assert "unavailable" in answer["error"]
        assert took < 3.0
    assert lone.request("GET", "/health") == (200, {"ok": True, "node": "node-z"})

    pg.start()
    assert lone.request("POST", "/donate", donation())[0] == 200

    pg.freeze()  # a hung server: TCP still accepts, nothing answers
    try:
        (status, answer), took = timed(lone.request, "POST", "/donate", donation())
        assert status == 503, answer
        assert took < 3.0
    finally:
        pg.thaw()
    waited(
        lambda: lone.request("POST", "/donate", donation())[0] == 200,
        10.0,
        "the app writes again once the server is thawed",
    )


def test_fault_file_makes_health_slow_or_fail(app: DonationsApp) -> None:
    try:
        app.set_fault("slow:1.0")
        (status, answer), took = timed(app.request, "GET", "/health")
        assert (status, answer) == (200, {"ok": True, "node": "node-a"})
        assert took >= 1.0

        app.set_fault("status:500")
        (status, answer), took = timed(app.request, "GET", "/health")
        assert status == 500
        assert answer["ok"] is False
        assert took < 0.5
    finally:
        app.clear_fault()
    (status, _), took = timed(app.request, "GET", "/health")
    assert status == 200
    assert took < 0.5


# -- Squid ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def squid_app(make_app: MakeApp, pg_primary: PostgresServer) -> DonationsApp:
    return make_app("app-s", pg_primary.dsn(), "node-s", init_schema=True)


@pytest.fixture(scope="module")
def squid(make_squid: MakeSquid, squid_app: DonationsApp) -> SquidServer:
    return make_squid("squid", squid_app.port)


def via_squid(squid: SquidServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return request_json(squid.host, squid.port, method, path, body, timeout=5.0)


def test_a_request_through_squid_reaches_the_app(
    squid: SquidServer, pg_primary: PostgresServer
) -> None:
    assert via_squid(squid, "GET", "/health") == (200, {"ok": True, "node": "node-s"})
    body = donation(2, "DE")
    status, answer = via_squid(squid, "POST", "/donate", body)
    assert status == 200
    assert answer["node"] == "node-s"
    assert one(pg_primary, "SELECT node FROM donations WHERE id = %s", (body["id"],)) == "node-s"


def test_squid_answers_503_fast_when_the_app_is_down(
    squid: SquidServer, squid_app: DonationsApp
) -> None:
    assert via_squid(squid, "GET", "/health")[0] == 200  # Squid has seen the app up
    squid_app.stop()
    try:
        # More than Squid's default connect-fail-limit (10), after which it would call the peer
        # dead and answer 502 without trying: every request must still be a fast 503.
        for _ in range(15):
            (status, _), took = timed(via_squid, squid, "GET", "/health")
            assert status == 503
            assert took < 1.0
    finally:
        squid_app.start()
    assert via_squid(squid, "GET", "/health")[0] == 200  # at once: no dead-peer probe to wait for


def test_cache_manager_answers_info_from_localhost_only(squid: SquidServer) -> None:
    assert squid.mgr_url("info") == f"http://127.0.0.1:{squid.port}/squid-internal-mgr/info"
    assert "Squid Object Cache" in squid.mgr("info")

    conn = http.client.HTTPConnection(
        squid.host, squid.port, timeout=5.0, source_address=("127.0.0.2", 0)
    )
    try:
        conn.request("GET", "/squid-internal-mgr/info")
        assert conn.getresponse().status == 403
    finally:
        conn.close()

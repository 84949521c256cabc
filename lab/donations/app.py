"""The donations demo app: a small WSGI service on PostgreSQL, the lab's stand-in for "the site".

Tests and the benchmark use its answers as their oracle, so it is strict about two things:

- ``POST /donate`` answers 200 only after the COMMIT, with the node that wrote the row and the
  failoverd epoch read in the same transaction; anything it cannot commit is a 503, never a 200.
- It never hangs: every database operation runs on a small pool of worker threads and the
  request gives up after ``db_timeout`` seconds (libpq's own connect_timeout cannot go below 2 s,
  and a frozen server would hold a statement for ever), answering 503.

``GET /health`` never touches the database (failoverd checks PostgreSQL separately); a fault file
lets tests make it slow or fail for real: it holds directives such as ``slow:2.5`` or
``status:500`` (several may be given, separated by spaces, commas or newlines).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from pathlib import Path
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any, Generic, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.rows import TupleRow

SCHEMA_PATH = Path(__file__).with_name("schema.sql")
MAX_BODY = 64 * 1024
MAX_AMOUNT = Decimal("9999999999.99")  # numeric(12,2)
MAX_SLOW = 300.0
COUNTRY = re.compile(r"[A-Z]{2}")
SCHEMA_LOCK = 0x646F6E61  # advisory lock: two apps initialising the schema at once

T = TypeVar("T")
Conn = psycopg.Connection[TupleRow]


class UnavailableError(Exception):
    """The database cannot take this request now (down, hung, read-only): a 503."""


class InvalidRequestError(ValueError):
    """The request is malformed: a 400."""


# -- the database ------------------------------------------------------------------------------


class _Job(Generic[T]):
    def __init__(self, fn: Callable[[Conn], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.abandoned = False  # the request gave up: skip it if it has not started
        self.result: T | None = None
        self.error: BaseException | None = None


class Database:
    """Bounded access to PostgreSQL: a few worker threads, a few idle connections, a deadline.

    Workers are daemon threads, so a worker stuck on a frozen server never keeps the process
    from exiting. A pooled connection found broken (the server restarted, was promoted or
    failed over) is replaced once, transparently: donations are idempotent on their id, so the
    retry is safe even if the first attempt's COMMIT went through unseen.
    """

    def __init__(
        self,
        dsn: str,
        node: str,
        *,
        timeout: float = 2.5,
        workers: int = 8,
        max_idle: int = 4,
    ) -> None:
        self.dsn = dsn
        self.node = node
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: list[Conn] = []
        self._lock = threading.Lock()
        self._jobs: queue.Queue[_Job[Any] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._worker, name=f"db-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn(connection)`` on a worker; ``UnavailableError`` after ``timeout`` seconds."""
        job: _Job[T] = _Job(fn)
        self._jobs.put(job)
        if not job.done.wait(self.timeout):
            job.abandoned = True
            raise UnavailableError(f"database did not answer within {self.timeout} s")
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _worker(self) -> None:
        while True:  # a service loop: ends on the None sentinel from close()
            job = self._jobs.get()
            if job is None:
                return
            if job.abandoned:
                continue
            try:
                job.result = self._attempt(job.fn)
            except psycopg.Error as exc:
                job.error = self._translate(exc)
            except BaseException as exc:
                job.error = exc
            job.done.set()

    def _attempt(self, fn: Callable[[Conn], T]) -> T:
        conn, pooled = self._checkout()
        try:
            return self._call(conn, fn)
        except psycopg.Error:
            if not (pooled and conn.broken):
                raise
        self._drop_idle()  # a stale pooled connection: the others most likely are too
        return self._call(self._connect(), fn)

    def _call(self, conn: Conn, fn: Callable[[Conn], T]) -> T:
        try:
            result = fn(conn)
        except BaseException:
            self._checkin(conn)  # closes it unless it is idle and healthy
            raise
        self._checkin(conn)
        return result

    def _checkout(self) -> tuple[Conn, bool]:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not (conn.closed or conn.broken):
                    return conn, True
                conn.close()
        return self._connect(), False

    def _checkin(self, conn: Conn) -> None:
        healthy = not (conn.closed or conn.broken) and (
            conn.info.transaction_status == pq.TransactionStatus.IDLE
        )
        with self._lock:
            if healthy and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _connect(self) -> Conn:
        try:
            return psycopg.connect(
                self.dsn,
                autocommit=True,  # transactions are explicit: conn.transaction()
                connect_timeout=2,  # libpq's minimum; the job deadline is the real bound
                application_name=f"donations-{self.node}",
                options="-c statement_timeout=2000 -c lock_timeout=1000"
                " -c idle_in_transaction_session_timeout=10000",
                tcp_user_timeout=2000,  # ms: unacknowledged data means the peer is gone
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=1,
                keepalives_count=3,
            )
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    @staticmethod
    def _translate(exc: psycopg.Error) -> Exception:
        """What means "not now" (down, hung, read-only) becomes ``UnavailableError``: a 503."""
        if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
            unavailable = UnavailableError("database is read-only (in recovery)")
        elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            unavailable = UnavailableError(f"database unavailable: {first}")
        else:
            return exc
        unavailable.__cause__ = exc
        return unavailable


def init_schema(dsn: str, node: str = "init") -> None:
    """Create the tables if missing (idempotent; serialised by an advisory lock)."""
    script = SCHEMA_PATH.read_text()
    with (
        psycopg.connect(
            dsn, autocommit=True, connect_timeout=2, application_name=f"donations-{node}"
        ) as conn,
        conn.transaction(),
    ):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(script.encode())  # a trusted file of several statements, no parameters


# -- the requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Donation:
    id: uuid.UUID
    amount: Decimal
    country: str


def _reject_constant(name: str) -> Any:
    raise InvalidRequestError(f"{name} is not a number JSON allows")


def parse_donation(body: bytes) -> Donation:
    """Validate a ``POST /donate`` body; ``InvalidRequestError`` says what to fix.

    Any form ``uuid.UUID`` reads is accepted for the id; answers carry its canonical form.
    """
    try:
        data = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("body must be a JSON object")
    missing = [key for key in ("id", "amount", "country") if key not in data]
    if missing:
        raise InvalidRequestError(f"missing field(s): {', '.join(missing)}")
    raw_id, raw_amount, country = data["id"], data["amount"], data["country"]
    if not isinstance(raw_id, str):
        raise InvalidRequestError("id must be a UUID string")
    try:
        donation_id = uuid.UUID(raw_id)
    except ValueError:
        raise InvalidRequestError(f"id is not a UUID: {raw_id!r}") from None
    if isinstance(raw_amount, bool) or not isinstance(raw_amount, int | Decimal):
        raise InvalidRequestError("amount must be a number")
    try:
        amount = Decimal(raw_amount)
        if amount != amount.quantize(Decimal("0.01")):
            raise InvalidRequestError("amount has more than 2 decimal places")
    except InvalidOperation:
        raise InvalidRequestError("amount is out of range") from None
    if not Decimal(0) < amount <= MAX_AMOUNT:
        raise InvalidRequestError(f"amount must be > 0 and <= {MAX_AMOUNT}")
    if not isinstance(country, str) or not COUNTRY.fullmatch(country):
        raise InvalidRequestError("country must be two uppercase letters (ISO 3166-1 alpha-2)")
    return Donation(donation_id, amount, country)


def donate(conn: Conn, donation: Donation, node: str) -> tuple[int, dict[str, Any]]:
    """Insert (idempotent on id) and read the epoch in one transaction; return after COMMIT."""
    with conn.transaction():
        epoch_row = conn.execute("SELECT COALESCE(max(epoch), 0) FROM failoverd_epoch").fetchone()
        epoch = int(epoch_row[0]) if epoch_row else 0
        row = conn.execute(
            "INSERT INTO donations (id, amount, country, node, epoch)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING node, epoch",
            (donation.id, donation.amount, donation.country, node, epoch),
        ).fetchone()
        if row is None:  # a retry: answer what the first attempt wrote
            existing = conn.execute(
                "SELECT node, epoch, amount, country FROM donations WHERE id = %s",
                (donation.id,),
            ).fetchone()
            if existing is None:  # deleted in between: cannot happen in the demo
                raise UnavailableError("donation vanished during its retry")
            if existing[2] != donation.amount or existing[3] != donation.country:
                return 409, {"error": f"id {donation.id} already used for another donation"}
            row = existing[:2]
    # The transaction block has committed here: only now is the donation acknowledged.
    return 200, {"id": str(donation.id), "node": row[0], "epoch": int(row[1])}


def totals(conn: Conn) -> list[dict[str, Any]]:
    """The per-country report; sums as exact decimal strings (``"12.50"``)."""
    rows = conn.execute(
        "SELECT country, count(*), sum(amount) FROM donations GROUP BY country ORDER BY country"
    ).fetchall()
    return [{"country": c, "count": int(n), "sum": f"{s:.2f}"} for c, n, s in rows]


def read_faults(path: Path | None) -> tuple[float, int | None]:
    """(delay seconds, forced status) from the fault file; (0, None) when absent or empty."""
    if path is None:
        return 0.0, None
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        return 0.0, None
    delay, status = 0.0, None
    for item in re.split(r"[\s,]+", text.strip()):
        kind, _, value = item.partition(":")
        try:
            if kind == "slow":
                delay = min(max(float(value), 0.0), MAX_SLOW)
            elif kind == "status" and 100 <= int(value) <= 599:
                status = int(value)
        except ValueError:
            continue  # a half-written file: ignore the directive, not the request
    return delay, status


class DonationsApp:
    """The WSGI application; one instance per process, shared by the request threads."""

    def __init__(self, db: Database, node: str, fault_file: Path | None = None) -> None:
        self.db = db
        self.node = node
        self.fault_file = fault_file

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        routes: dict[str, tuple[str, Callable[[WSGIEnvironment], tuple[int, Any]]]] = {
            "/donate": ("POST", self.post_donate),
            "/totals": ("GET", self.get_totals),
            "/health": ("GET", self.get_health),
        }
        if path not in routes:
            return self._reply(start_response, 404, {"error": f"no such path: {path}"})
        allowed, handler = routes[path]
        if method != allowed:
            return self._reply(
                start_response, 405, {"error": f"use {allowed}"}, [("Allow", allowed)]
            )
        try:
            status, payload = handler(environ)
        except InvalidRequestError as exc:
            status, payload = 400, {"error": str(exc)}
        except UnavailableError as exc:
            status, payload = 503, {"error": str(exc)}
        except psycopg.Error as exc:  # a bug or a broken schema, not an outage
            print(f"donations: {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            status, payload = 500, {"error": f"database error: {type(exc).__name__}"}
        return self._reply(start_response, status, payload)

    def post_donate(self, environ: WSGIEnvironment) -> tuple[int, Any]:
        donation = parse_donation(self._body(environ))
        return self.db.run(lambda conn: donate(conn, donation, self.node))

    def get_totals(self, environ: WSGIEnvironment) -> tuple[int, Any]:
        report = self.db.run(totals)
        return 200, {"node": self.node, "totals": report}

    def get_health(self, environ: WSGIEnvironment) -> tuple[int, Any]:
        delay, status = read_faults(self.fault_file)
        if delay:
            time.sleep(delay)
        if status is not None:
            return status, {"ok": status < 400, "node": self.node, "fault": f"status:{status}"}
        return 200, {"ok": True, "node": self.node}

    def _body(self, environ: WSGIEnvironment) -> bytes:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise InvalidRequestError("bad Content-Length") from None
        if length > MAX_BODY:
            raise InvalidRequestError(f"body larger than {MAX_BODY} bytes")
        body: bytes = environ["wsgi.input"].read(length) if length > 0 else b""
        return body

    def _reply(
        self,
        start_response: StartResponse,
        status: int,
        payload: Any,
        extra: Sequence[tuple[str, str]] = (),
    ) -> list[bytes]:
        if isinstance(payload, dict) and "error" in payload:
            payload = {**payload, "node": self.node}
        body = json.dumps(payload).encode() + b"\n"
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *extra,
        ]
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:  # a fault file may ask for any code
            reason = "Status"
        start_response(f"{status} {reason}", headers)
        return [body]


# -- the server --------------------------------------------------------------------------------


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow /health or a stuck database never blocks the others."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class QuietHandler(WSGIRequestHandler):
    """Access lines go to stderr (the app's log); a socket timeout frees threads of idle clients."""

    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def serve(
    host: str,
    port: int,
    app: WSGIApplication,
    stop: threading.Event,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until ``stop`` is set, then close the listening socket."""
    server = make_server(
        host, port, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
    )
    thread.start()
    if on_ready is not None:
        on_ready(server.server_port)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.donations", description="The donations demo app (failoverd lab)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--dsn", required=True, help="libpq connection string")
    parser.add_argument("--node", required=True, help="node name put into every answer")
    parser.add_argument(
        "--fault-file",
        type=Path,
        default=Path(os.environ["DONATIONS_FAULT_FILE"])
        if os.environ.get("DONATIONS_FAULT_FILE")
        else None,
        help="file with 'slow:SECONDS' and/or 'status:CODE' for /health (env DONATIONS_FAULT_FILE)",
    )
    parser.add_argument("--init-schema", action="store_true", help="create the tables first")
    parser.add_argument(
        "--db-timeout", type=float, default=2.5, help="seconds before a database call is a 503"
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.init_schema:
        try:
            init_schema(args.dsn, args.node)
        except psycopg.Error as exc:
            print(f"donations: cannot initialise the schema: {exc}", file=sys.stderr)
            return 2
    db = Database(args.dsn, args.node, timeout=args.db_timeout)
    app = DonationsApp(db, args.node, args.fault_file)

    def ready(port: int) -> None:
        print(f"donations: node {args.node} listening on {args.host}:{port}", file=sys.stderr)

    try:
        serve(args.host, args.port, app, stop, ready)
    except OSError as exc:
        print(f"donations: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()
    print("donations: stopped", file=sys.stderr)
    return 0

"""PostgreSQL: can a client connect and run a trivial query within budget, and what is the
server (primary or replica, LSNs, WAL receiver, lag, standbys, and on a primary its synchronous
replication: ``synchronous_standby_names``, ``synchronous_commit``, who is ``sync``)? What it
learns feeds the core's DatabaseStatus, which decides eligibility and manages the synchronous
standby; this module only measures and reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from failoverd import pgconn
from failoverd.checks.base import Probe, judge_latency
from failoverd.clock import boottime
from failoverd.config import CheckConfig, PostgresConfig
from failoverd.core import DatabaseStatus, DbRole, StandbyStatus
from failoverd.pgconn import (
    ControlData,
    parse_sync_standby_names,
    postmaster_pid,
    read_control_data,
    read_password,
    tcp_reachable,
    wal_end,
)

STATE_QUERY = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery()
            THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) - '0/0'::pg_lsn
            ELSE pg_current_wal_lsn() - '0/0'::pg_lsn END AS lsn,
       pg_last_wal_replay_lsn() - '0/0'::pg_lsn AS replayed_lsn,
       (SELECT status FROM pg_stat_wal_receiver) AS wal_receiver,
       (SELECT extract(epoch FROM now() - last_msg_receipt_time) FROM pg_stat_wal_receiver)
           AS last_received_age,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp()) AS replay_delay,
       CASE WHEN pg_is_in_recovery()
            THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                          (SELECT max(('x' || substr(name, 1, 8))::bit(32)::int)
                             FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'),
                          (SELECT timeline_id FROM pg_control_checkpoint()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS timeline,
       current_setting('synchronous_standby_names') AS synchronous_standby_names,
       current_setting('synchronous_commit') AS synchronous_commit
"""
"""A replica's ``lsn`` is what it received or replayed, whichever is further: restarted, it
asks for streaming from the start of the segment it replays in, and pg_last_wal_receive_lsn()
says that start until WAL arrives again (greatest() skips a NULL).

``timeline``: a primary's from the name of its current WAL segment (the checkpoint's lags a
promotion). A replica's is the one its WAL receiver receives; with none running, the latest
timeline among its WAL segments (it has segments of a timeline only once it received WAL of
it), which the last restartpoint's timeline would understate after a promotion.

The two settings are this new session's, that is the server's configuration as last reloaded
(the check sets neither); they matter only on a primary."""

# The epoch the last promotion wrote (failoverd_epoch, see lab/donations/schema.sql); NULL when
# the table does not exist, without an error that would abort the probe.
EPOCH_QUERY = """
SELECT CASE WHEN to_regclass('failoverd_epoch') IS NULL THEN NULL
            ELSE (xpath('/row/m/text()',
                        query_to_xml('SELECT max(epoch) AS m FROM failoverd_epoch', false, true, '')
                  ))[1]::text::bigint END AS epoch
"""

STANDBYS_QUERY = """
SELECT application_name, host(client_addr) AS client_addr, state, sync_state,
       flush_lsn - '0/0'::pg_lsn AS flush_lsn,
       pg_current_wal_lsn() - replay_lsn AS replay_lag_bytes,
       extract(epoch FROM replay_lag) AS replay_lag_s
FROM pg_stat_replication ORDER BY application_name
"""
"""``flush_lsn``: what the standby has flushed, so what survives the loss of the primary; NULL
until its first feedback."""

LSN_COLUMNS = ("flush_lsn", "replay_lag_bytes")  # numeric in SQL: ints in the facts

NETWORK_SHARE = 0.8  # of a check's timeout, for connecting and querying

CONTROL_STATES = {
    # pg_controldata "Database cluster state" -> (was_primary, stopped_cleanly)
    "shut down": (True, True),
    "shut down in recovery": (False, True),
    "in production": (True, False),
    "in archive recovery": (False, False),
    "in crash recovery": (True, False),
    "shutting down": (True, False),
}


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


class PostgresCheck:
    def __init__(
        self, cfg: CheckConfig, pg: PostgresConfig, clock: Callable[[], float] = boottime
    ) -> None:
        self.cfg = cfg
        self.pg = pg
        self.password = read_password(pg.password_file)
        self._clock = clock
        # When WAL last reached this replica, as far as this check has seen (see _wal_age).
        self._wal_seen_at: float | None = None
        self._received: tuple[float, int] | None = None  # (when probed, received LSN)
        self._wal_end_for: tuple[tuple[object, ...], int | None] | None = None  # (key, end)

    def probe(self) -> Probe:
        started = time.monotonic()
        # The network gets most of the budget; the rest reads the data directory when the
        # server does not answer (how it stopped, whether its postmaster lives).
        end = started + self.cfg.timeout * NETWORK_SHARE
        gone = tcp_reachable(self.pg.host, self.pg.port, self.cfg.timeout * NETWORK_SHARE)
        if gone is not None:
            why = (
                "connection refused"
                if gone == "down"
                else f"no answer within {self.cfg.timeout:g} s"
            )
            # No handshake in time from a live postmaster (its accept queue full, say) is hung.
            facts = self._down_facts(silent=gone == "unreachable")
            return Probe(False, time.monotonic() - started, f"PostgreSQL {why}", facts)
        try:
            with pgconn.connect(
                self.pg.host,
                self.pg.port,
                user=self.pg.user,
                dbname=self.pg.dbname,
                password=self.password,
                timeout=end - time.monotonic(),
                application_name="failoverd-check",
                row_factory=dict_row,
            ) as conn:
                state = conn.execute(STATE_QUERY).fetchone()
                assert state is not None  # a SELECT without FROM returns one row
                recorded = conn.execute(EPOCH_QUERY).fetchone()
                standbys: list[dict[str, Any]] = []
                if not state["in_recovery"]:
                    standbys = [
                        {
                            k: (float(v) if k.endswith("_s") and v is not None else v)
                            for k, v in row.items()
                        }
                        for row in conn.execute(STANDBYS_QUERY).fetchall()
                    ]
        except pgconn.Unavailable as e:
            return Probe(
                False,
                time.monotonic() - started,
                f"cannot connect to PostgreSQL: {e}",
                self._down_facts(silent=e.timed_out),
            )
        except psycopg.Error as e:
            silent = isinstance(e, psycopg.errors.QueryCanceled | pgconn.DeadlineExceeded)
            return Probe(
                False, time.monotonic() - started, _describe(e), self._down_facts(silent=silent)
            )
        latency = time.monotonic() - started
        facts = self._facts(state, standbys)
        facts["recorded_epoch"] = None if recorded is None else _int(recorded["epoch"])
        return judge_latency(True, latency, self.cfg.slow_after, "", facts)

    def _facts(self, state: Mapping[str, Any], standbys: list[dict[str, Any]]) -> dict[str, object]:
        in_recovery = bool(state["in_recovery"])
        lsn = _int(state["lsn"])
        replayed = _int(state["replayed_lsn"])
        facts: dict[str, object] = {
            "role": "replica" if in_recovery else "primary",
            "lsn": lsn,
            "replayed_lsn": replayed,
            "timeline": _int(state.get("timeline")),
        }
        if in_recovery:
            streaming = state["wal_receiver"] == "streaming"
            facts.update(
                wal_receiver=state["wal_receiver"],
                streaming=streaming,
                last_received_age=self._wal_age(streaming, _num(state["last_received_age"]), lsn),
                replay_delay=_num(state["replay_delay"]),
                lag_bytes=None if lsn is None or replayed is None else max(0, lsn - replayed),
            )
        else:
            facts["standbys"] = [
                {k: (int(v) if k in LSN_COLUMNS and v is not None else v) for k, v in s.items()}
                for s in standbys
            ]
            # As PostgreSQL says it; database_status() reads the names out of it.
            facts["synchronous_standby_names"] = state.get("synchronous_standby_names")
            facts["synchronous_commit"] = state.get("synchronous_commit")
        return facts

    def _wal_age(self, streaming: bool, receipt_age: float | None, lsn: int | None) -> float | None:
        """Seconds since WAL last arrived, None if this check never saw any arrive.

        pg_stat_wal_receiver cannot say it once streaming stops: its row vanishes with the
        receiver, and every reconnect attempt resets ``last_msg_receipt_time`` to the attempt's
        start. So the check remembers when it last saw the receiver streaming (minus the age
        PostgreSQL reported then), or the received LSN advance since its previous probe.
        """
        now = self._clock()
        if streaming and receipt_age is not None:
            self._wal_seen_at = now - max(0.0, receipt_age)
        elif lsn is not None and self._received is not None and lsn > self._received[1]:
            self._wal_seen_at = max(self._wal_seen_at or 0.0, self._received[0])  # arrived since
        if lsn is not None:
            self._received = (now, lsn)
        return None if self._wal_seen_at is None else max(0.0, now - self._wal_seen_at)

    def _down_facts(self, *, silent: bool = False) -> dict[str, object]:
        """Why no answer: a stopped server says how it stopped and where its WAL ends (that
        matters for rejoin); an empty data directory needs a clone; a postmaster that lives but
        stayed ``silent`` past the budget is hung."""
        data_dir = self.pg.data_dir
        if data_dir is None:
            return {"role": "unknown"}
        if postmaster_pid(data_dir) is not None:
            return {"role": "unknown", "postmaster": "running", "hung": silent}
        if not (data_dir / "PG_VERSION").is_file():
            return {"role": "empty"}
        control = read_control_data(self.pg.bin_dir, data_dir, max(0.2, self.cfg.timeout / 4))
        end = self._wal_end(data_dir, control)
        return {
            "role": "stopped",
            "cluster_state": control.state,
            # Where its WAL ends; failing that its latest checkpoint, which only a primary's
            # clean shutdown ends WAL at (a lower bound otherwise: the peer must not count on it).
            "lsn": control.checkpoint_lsn if end is None else end,
            "lsn_exact": end is not None or control.state == "shut down",
            "timeline": control.timeline,
        }

    def _wal_end(self, data_dir: Path, control: ControlData) -> int | None:
        """``pg_waldump``'s end of WAL, once per stop: a stopped server's WAL does not change
        until something (a start, a rewind, a clone) changes its control file or pg_wal."""
        if control.state is None:
            return None
        try:
            key = (
                control.checkpoint_lsn,
                control.state,
                (data_dir / "global" / "pg_control").stat().st_mtime_ns,
                (data_dir / "pg_wal").stat().st_mtime_ns,
            )
        except OSError:
            return None
        if self._wal_end_for is None or self._wal_end_for[0] != key:
            end = wal_end(self.pg.bin_dir, data_dir, control, max(0.2, self.cfg.timeout / 2))
            self._wal_end_for = (key, end)
        return self._wal_end_for[1]


def _describe(e: psycopg.Error) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, psycopg.errors.QueryCanceled):
        return f"query exceeded its budget: {text}"
    return f"cannot query PostgreSQL: {text}"


def database_status(facts: Mapping[str, object] | None) -> DatabaseStatus:
    """The core's view of the local database, from the postgres check's latest facts."""
    if not facts:
        return DatabaseStatus(role=DbRole.UNKNOWN)
    return replace(_database_status(facts), observed_at=_as_float(facts.get("probed_at")))


def _database_status(facts: Mapping[str, object]) -> DatabaseStatus:
    role = facts.get("role")
    if role == "primary":
        names = facts.get("synchronous_standby_names")
        commit = facts.get("synchronous_commit")
        return DatabaseStatus(
            role=DbRole.PRIMARY,
            lsn=_as_int(facts.get("lsn")),
            recorded_epoch=_as_int(facts.get("recorded_epoch")),
            timeline=_as_int(facts.get("timeline")),
            sync_standby_names=parse_sync_standby_names(names) if isinstance(names, str) else None,
            synchronous_commit=commit if isinstance(commit, str) else None,
            standbys=_standbys(facts.get("standbys")),
        )
    if role == "replica":
        return DatabaseStatus(
            role=DbRole.REPLICA,
            lsn=_as_int(facts.get("lsn")),
            replayed_lsn=_as_int(facts.get("replayed_lsn")),
            streaming=bool(facts.get("streaming")),
            last_received_age=_as_float(facts.get("last_received_age")),
            recorded_epoch=_as_int(facts.get("recorded_epoch")),
            timeline=_as_int(facts.get("timeline")),
        )
    if role == "stopped":
        state = facts.get("cluster_state")
        if isinstance(state, str) and state in CONTROL_STATES:
            was_primary, clean = CONTROL_STATES[state]
            return DatabaseStatus(
                role=DbRole.STOPPED,
                was_primary=was_primary,
                stopped_cleanly=clean,
                lsn=_as_int(facts.get("lsn")),
                lsn_exact=facts.get("lsn_exact") is True,
                timeline=_as_int(facts.get("timeline")),
            )
    if role == "empty":
        return DatabaseStatus(role=DbRole.EMPTY)
    return DatabaseStatus(role=DbRole.UNKNOWN, hung=facts.get("hung") is True)


def _standbys(rows: object) -> tuple[StandbyStatus, ...]:
    """pg_stat_replication's rows as the core's StandbyStatus; a row without a name or a state
    (not this check's) is left out rather than guessed."""
    if not isinstance(rows, list):
        return ()
    found: list[StandbyStatus] = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        name, state, sync_state = (row.get(k) for k in ("application_name", "state", "sync_state"))
        if not (isinstance(name, str) and isinstance(state, str) and isinstance(sync_state, str)):
            continue
        found.append(StandbyStatus(name, state, sync_state, _as_int(row.get("flush_lsn"))))
    return tuple(found)


def _as_int(v: object) -> int | None:
    return int(v) if isinstance(v, int | float) else None


def _as_float(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) else None


class PeerDatabaseProbe:
    """Asks the peer's PostgreSQL over the network whether it is a primary. Its ZooKeeper record
    is not enough: that vanishes with its daemon while the database may still take writes."""

    def __init__(self, host: str, port: int, pg: PostgresConfig, timeout: float) -> None:
        self.host = host
        self.port = port
        self.pg = pg
        self.timeout = timeout
        self.password = read_password(pg.password_file)

    def probe(self) -> Probe:
        started = time.monotonic()
        gone = tcp_reachable(self.host, self.port, self.timeout)
        if gone is not None:
            return Probe(
                False, time.monotonic() - started, f"peer database {gone}", {"peer_db": gone}
            )
        try:
            with pgconn.connect(
                self.host,
                self.port,
                user=self.pg.user,
                dbname=self.pg.dbname,
                password=self.password,
                timeout=started + self.timeout - time.monotonic(),
                application_name="failoverd-peer-probe",
            ) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        # It answers, but we cannot tell what it is: that must not read as "not a primary".
        except pgconn.Unavailable as e:
            reason = f"cannot query PostgreSQL: {e}"
            return Probe(False, time.monotonic() - started, reason, {"peer_db": "unknown"})
        except psycopg.Error as e:
            return Probe(False, time.monotonic() - started, _describe(e), {"peer_db": "unknown"})
        role = "replica" if row and row[0] else "primary"
        return Probe(True, time.monotonic() - started, "", {"peer_db": role})

"""Rejoining a primary that moved on: inspect where our WAL ends against the primary's timeline
history, and ``pg_rewind`` from it.

Why these belong together: both read the same history, the fork between this node and the
active. ``inspect`` only reads and reports ``RejoinFacts``; ``policy.fork_verdict`` in the core
decides from them whether the node follows, is rewound or is cloned (``clone.py``). ``rewind``
then does it, bounded by its timeout, and leaves the node configured as a replica of the
primary, not started; it reports failure, in pg_rewind's words, when the result could not work.
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
from typing import Final, NamedTuple

import psycopg
from psycopg import conninfo as pg_conninfo

from failoverd.actions.postgres.lifecycle import Lifecycle
from failoverd.actions.postgres.replication import Replication
from failoverd.actions.postgres.service import Service
from failoverd.config import PostgresConfig
from failoverd.core import ActionResult
from failoverd.core.model import RejoinFacts
from failoverd.pgconn import (
    ControlData,
    Unavailable,
    connect,
    describe,
    int_to_lsn,
    lsn_to_int,
    read_control_data,
    run_pg_tool,
    wal_end_from_waldump,
)

UNCLEAN_WAS_PRIMARY: Final = {
    # pg_controldata states after an unclean stop -> did it run as a primary?
    "in production": True,
    "in crash recovery": True,
    "shutting down": True,
    "in archive recovery": False,
    "shutting down in recovery": False,
}

SOURCE_TIMELINES: Final = """
SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_timeline,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS wal_timeline
"""
"""The source's control file names its timeline only after a checkpoint; its current WAL
segment's name already does."""


class InspectResult(NamedTuple):
    """What ``inspect`` found; ``facts`` is None when it could not find out."""

    ok: bool
    detail: str
    facts: RejoinFacts | None = None

    def action_result(self, action_id: int) -> ActionResult:
        return ActionResult(action_id, ok=self.ok, detail=self.detail, rejoin=self.facts)


class RewindResult(NamedTuple):
    """How a rewind went; ``rewound`` is False when pg_rewind found nothing to do."""

    ok: bool
    detail: str
    rewound: bool = False

    def action_result(self, action_id: int) -> ActionResult:
        return ActionResult(action_id, ok=self.ok, detail=self.detail)


def rewind_readiness(pg: PostgresConfig, timeout: float = 5.0) -> str | None:
    """None when pg_rewind can work on ``pg.data_dir`` (data checksums or wal_log_hints on),
    or when there is no cluster there yet (a clone brings the primary's settings); else one
    sentence an operator can act on, for start-up and check-config."""
    data_dir = pg.data_dir
    if data_dir is None or not (data_dir / "PG_VERSION").is_file():
        return None
    control = read_control_data(pg.bin_dir, data_dir, timeout)
    if control.state is None:
        return f"cannot tell whether pg_rewind can work on {data_dir}: {control.describe()}"
    if _rewindable(control):
        return None
    return (
        f"pg_rewind cannot work on {data_dir}: neither data checksums nor wal_log_hints are "
        "on; set wal_log_hints = on in postgresql.conf and restart PostgreSQL (or enable "
        "checksums with pg_checksums --enable while it is stopped), or a diverged node can "
        "only be re-cloned"
    )


def _rewindable(control: ControlData) -> bool:
    return (control.number("Data page checksum version") or 0) != 0 or (
        control.fields.get("wal_log_hints setting") == "on"
    )


class _LocalEnd(NamedTuple):
    """Where this node's WAL ends, as the control file (and pg_waldump) tell it."""

    was_primary: bool
    clean: bool
    timeline: int | None
    lsn: int | None
    checkpoint_end: int | None
    how: str  # in words, for the detail


class Rewind:
    """Inspect and rewind (see the module's docstring)."""

    def __init__(self, svc: Service, lifecycle: Lifecycle, replication: Replication) -> None:
        self.svc = svc
        self.lifecycle = lifecycle
        self.replication = replication
        self.pg = svc.pg
        self.clock = svc.clock
        self.data_dir = svc.data_dir

    # -- inspect ------------------------------------------------------------------------------

    def inspect(self, primary_host: str, primary_port: int, timeout: float) -> InspectResult:
        """Where this stopped node's WAL ends (control file, and pg_waldump for the end of a
        shutdown checkpoint), and the primary's timeline and history over a replication
        connection. Reads only; writes nothing anywhere."""
        started = self.clock()
        deadline = started + timeout
        if self.data_dir is None:
            return InspectResult(False, "no data_dir configured")
        pid = self.lifecycle.postmaster_pid()
        if pid is not None:
            return InspectResult(False, f"postmaster {pid} is running: inspect a stopped server")
        if not (self.data_dir / "PG_VERSION").is_file():
            return InspectResult(False, f"no cluster in {self.data_dir}: nothing to inspect")
        control = self.lifecycle.control_data(max(0.5, timeout / 4))
        if control.state is None:
            return InspectResult(False, f"cannot read the local cluster: {control.describe()}")
        local = self._local_facts(control, deadline)
        try:
            primary = self._primary_facts(primary_host, primary_port, deadline)
        except Unavailable as e:
            return InspectResult(
                False, f"cannot ask the primary at {primary_host}:{primary_port}: {e}"
            )
        except psycopg.Error as e:
            return InspectResult(
                False, f"the primary at {primary_host}:{primary_port} said: {describe(e)}"
            )
        system_id, timeline, history = primary
        facts = RejoinFacts(
            was_primary=local.was_primary,
            clean=local.clean,
            local_timeline=local.timeline,
            local_lsn=local.lsn,
            local_checkpoint_end=local.checkpoint_end,
            primary_timeline=timeline,
            primary_history=history,
            rewindable=_rewindable(control),
            same_system=system_id == control.fields.get("Database system identifier"),
        )
        took = self.clock() - started
        return InspectResult(True, self._describe_facts(facts, local.how, took), facts)

    def _local_facts(self, control: ControlData, deadline: float) -> _LocalEnd:
        state = control.state or ""
        if state == "shut down in recovery":
            lsn = control.lsn("Minimum recovery ending location")
            timeline = control.number("Min recovery ending loc's timeline")
            if lsn and timeline:
                how = f"a replica, stopped cleanly, recovered up to {int_to_lsn(lsn)}"
                return _LocalEnd(False, True, timeline, lsn, None, how)
            state = "shut down"  # no minimum recovery point: it was a primary when it stopped
        if state == "shut down":
            lsn, timeline = control.checkpoint_lsn, control.timeline
            end = None
            if lsn is not None and timeline is not None:
                segment_size = control.number("Bytes per WAL segment")
                end = self._checkpoint_end(timeline, lsn, segment_size, deadline)
            ends = "unknown" if end is None else int_to_lsn(end)
            how = f"a primary, stopped cleanly, its shutdown checkpoint ending at {ends}"
            return _LocalEnd(True, True, timeline, lsn, end, how)
        was_primary = UNCLEAN_WAS_PRIMARY.get(state, True)
        how = f"not stopped cleanly ({control.describe()})"
        return _LocalEnd(was_primary, False, control.timeline, control.checkpoint_lsn, None, how)

    def _checkpoint_end(
        self, timeline: int, lsn: int, segment_size: int | None, deadline: float
    ) -> int | None:
        """Where the checkpoint record at ``lsn`` ends. Only pg_waldump knows its length: asked
        for two records, it reads the checkpoint and either the next one (which starts where it
        ends) or stops where WAL ends, and says where. None when it says neither."""
        assert self.data_dir is not None
        argv = [
            self.svc.bin("pg_waldump"),
            "-p", str(self.data_dir / "pg_wal"),
            "-t", str(timeline),
            "-s", int_to_lsn(lsn),
            "-n", "2",
        ]  # fmt: skip
        try:
            done = run_pg_tool(argv, max(0.5, min(5.0, deadline - self.clock())))
        except (OSError, subprocess.TimeoutExpired):
            return None
        records = [ln for ln in done.stdout.splitlines() if ln.startswith("rmgr:")]
        if len(records) == 2:  # something follows it: the next record starts where it ends
            match = re.search(r"lsn: ([0-9A-Fa-f]+/[0-9A-Fa-f]+)", records[1])
            return lsn_to_int(match.group(1)) if match else None
        return wal_end_from_waldump(done.stderr, segment_size) if len(records) == 1 else None

    def _primary_facts(
        self, host: str, port: int, deadline: float
    ) -> tuple[str, int, tuple[tuple[int, int], ...]]:
        """(system identifier, timeline, history) over a walsender connection."""
        with connect(
            host,
            port,
            user=self.pg.user,
            dbname=self.pg.dbname,
            password=self.svc.password(),
            timeout=deadline - self.clock(),
            application_name="failoverd-inspect",
            replication="database",
        ) as conn:
            row = conn.execute("IDENTIFY_SYSTEM").fetchone()
            assert row is not None  # IDENTIFY_SYSTEM always answers one row
            system_id, timeline = str(row[0]), int(row[1])
            if timeline <= 1:
                return system_id, timeline, ()
            found = conn.execute(f"TIMELINE_HISTORY {timeline}").fetchone()
        content = b"" if found is None else found[1]
        text = bytes(content).decode() if isinstance(content, bytes | memoryview) else str(content)
        return system_id, timeline, parse_history(text)

    @staticmethod
    def _describe_facts(facts: RejoinFacts, how: str, took: float) -> str:
        history = ", ".join(
            f"timeline {tli} until {int_to_lsn(at)}" for tli, at in facts.primary_history
        )
        parts = [
            f"local: {how}, timeline {facts.local_timeline}",
            f"primary: timeline {facts.primary_timeline}"
            + (f" (history: {history})" if history else ""),
        ]
        if not facts.same_system:
            parts.append("different system identifiers (another initdb)")
        if not facts.rewindable:
            parts.append("neither data checksums nor wal_log_hints: pg_rewind cannot work")
        return "; ".join(parts) + f" ({took:.3f} s)"

    # -- rewind -------------------------------------------------------------------------------

    def rewind(self, primary_host: str, primary_port: int, timeout: float) -> RewindResult:
        """``pg_rewind`` from the primary, then the standby configuration; it does not start
        the server. The local server must be stopped; an unclean one is brought to a clean
        state by pg_rewind itself (PostgreSQL 15 runs crash recovery first)."""
        started = self.clock()
        deadline = started + timeout
        where = f"{primary_host}:{primary_port}"
        if self.data_dir is None:
            return RewindResult(False, "no data_dir configured")
        pid = self.lifecycle.postmaster_pid()
        if pid is not None:
            return RewindResult(False, f"postmaster {pid} is running: stop it before pg_rewind")
        if not (self.data_dir / "PG_VERSION").is_file():
            return RewindResult(False, f"nothing to rewind: no cluster in {self.data_dir}")
        # Nothing on disk changes before the source has answered.
        steps: list[str] = []
        try:
            checkpointed = self._source_checkpoint(primary_host, primary_port, deadline)
        except Unavailable as e:
            return RewindResult(False, f"cannot reach the source at {where}: {e}")
        except psycopg.Error as e:
            return RewindResult(False, f"the source at {where} said: {describe(e)}")
        if checkpointed is None:
            why = "is in recovery, not a primary: rewind from the primary"
            return RewindResult(False, f"the source at {where} {why}")
        if checkpointed:
            steps.append(checkpointed)
        kept = self.svc.keep_config(self.data_dir)
        removed = self.lifecycle.remove_stale_locks()
        if removed:
            steps.append(f"removed stale {', '.join(removed)}")
        t0 = self.clock()
        argv = [
            self.svc.bin("pg_rewind"),
            "--target-pgdata", str(self.data_dir),
            "--source-server", self._source_conninfo(primary_host, primary_port, deadline),
            *self.svc.rewind_options(),
        ]  # fmt: skip
        ok, out = self.svc.run(
            argv, max(0.5, deadline - self.clock()), env=self.svc.password_env(), lines=8
        )
        took = self.clock() - t0
        try:
            restored = self.svc.restore_config(self.data_dir, kept)
        except (OSError, KeyError) as e:
            ran = f"pg_rewind ran ({took:.3f} s)" if ok else f"pg_rewind failed: {out}"
            steps.append(f"{ran}; this node's configuration files could not be put back: {e}")
            return RewindResult(False, "; ".join(steps))
        if not ok:
            steps.append(f"pg_rewind failed after {took:.3f} s: {out}")
            return RewindResult(False, "; ".join([*steps, *restored]))
        rewound = "no rewind required" not in out
        steps.append(
            f"pg_rewind from {where} in {took:.3f} s"
            if rewound
            else f"no rewind was required (pg_rewind from {where}, {took:.3f} s)"
        )
        steps.extend(restored)
        gap = self._wal_gap(max(0.5, deadline - self.clock())) if rewound else None
        if gap is not None:
            steps.append(f"but the rewound server cannot recover: {gap}")
            return RewindResult(False, "; ".join(steps), rewound)
        try:
            self.replication.write_standby_config(primary_host, primary_port)
        except (OSError, KeyError, psycopg.ProgrammingError) as e:
            steps.append(f"cannot write the standby configuration: {e}")
            return RewindResult(False, "; ".join(steps), rewound)
        steps.append(f"standby configuration written; {self.clock() - started:.3f} s in all")
        return RewindResult(True, "; ".join(steps), rewound)

    def _source_checkpoint(self, host: str, port: int, deadline: float) -> str | None:
        """Make the source's control file show its current timeline: right after a promotion
        it does not until a checkpoint, and pg_rewind then compares the wrong timelines and
        says "no rewind required". Returns what it did ("" when nothing was needed), None when
        the source is not a primary."""
        with connect(
            host,
            port,
            user=self.pg.user,
            dbname=self.pg.dbname,
            password=self.svc.password(),
            timeout=max(0.1, (deadline - self.clock()) / 2),
            application_name="failoverd-rewind",
        ) as conn:
            row = conn.execute(SOURCE_TIMELINES).fetchone()
            assert row is not None  # a SELECT without FROM returns one row
            in_recovery, in_control, current = row
            if in_recovery:
                return None
            if in_control == current:
                return ""
            t0 = self.clock()
            conn.execute("CHECKPOINT")
        return (
            f"ran CHECKPOINT on the source in {self.clock() - t0:.3f} s (its control file "
            f"said timeline {in_control}, its WAL is on {current})"
        )

    def _wal_gap(self, timeout: float) -> str | None:
        """pg_rewind does not read the source's WAL, so it succeeds even when the source has
        already removed what the rewound server must replay: from the checkpoint in
        ``backup_label`` along the source's history to the minimum recovery point. It copied
        the source's pg_wal; a segment of that path missing there is gone for good (short of
        an archive), and the server would wait for it for ever. None when the path is whole,
        else which segment is missing."""
        assert self.data_dir is not None
        wal = self.data_dir / "pg_wal"
        try:
            label = (self.data_dir / "backup_label").read_text()
        except OSError:
            return None  # nothing to replay from a backup label: nothing to check
        found = re.search(r"START WAL LOCATION: (\S+) \(file ([0-9A-F]{8})", label)
        control = read_control_data(self.pg.bin_dir, self.data_dir, timeout)
        end = control.lsn("Minimum recovery ending location")
        end_tli = control.number("Min recovery ending loc's timeline")
        seg_size = control.number("Bytes per WAL segment")
        if found is None or not end or not end_tli or not seg_size:
            return None  # not what pg_rewind writes: leave it to recovery to say
        start, start_tli = lsn_to_int(found.group(1)), int(found.group(2), 16)
        history: tuple[tuple[int, int], ...] = ()
        if end_tli > 1:
            try:
                history = parse_history((wal / f"{end_tli:08X}.history").read_text())
            except OSError:
                return f"the source's timeline history {end_tli:08X}.history is missing"
        # The timelines recovery walks from the label's to the last, each read from where it
        # begins (the label's start, then each switchpoint) to where it was left; a segment
        # holding a switchpoint is read from the newer timeline's copy of it.
        walk: list[tuple[int, int, int | None]] = []  # (timeline, from, left at)
        begin, tli = start, start_tli
        children = [child for child, _ in history[1:]] + [end_tli]
        for (parent, switchpoint), child in zip(history, children, strict=True):
            if parent == tli and tli != end_tli:
                walk.append((tli, begin, switchpoint))
                begin, tli = switchpoint, child
        walk.append((tli, begin, None))
        if tli != end_tli:
            return None  # the history does not lead from its checkpoint: recovery will say so
        per_id = 0x1_0000_0000 // seg_size
        for timeline, first, left in walk:
            last = end // seg_size if left is None else left // seg_size - 1
            for segno in range(first // seg_size, last + 1):
                name = f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"
                if not (wal / name).exists():
                    return (
                        f"WAL segment {name} (timeline {timeline} from {int_to_lsn(first)}) is "
                        "no longer on the source, and nothing can replay past it: re-clone"
                    )
        return None

    # -- plumbing -----------------------------------------------------------------------------

    def _source_conninfo(self, host: str, port: int, until: float) -> str:
        return pg_conninfo.make_conninfo(
            host=host,
            port=str(port),
            user=self.pg.user,
            dbname=self.pg.dbname,
            connect_timeout=str(max(2, math.ceil(min(10.0, until - self.clock())))),
            application_name="failoverd-rewind",
        )


def parse_history(text: str) -> tuple[tuple[int, int], ...]:
    """A timeline history file ("parentTLI<TAB>switchpoint<TAB>reason" per line, oldest
    first) as (parent, switchpoint) pairs; comments and blank lines are skipped."""
    entries: list[tuple[int, int]] = []
    for line in text.splitlines():
        fields = line.strip().split("\t")
        if not fields[0] or fields[0].startswith("#") or len(fields) < 2:
            continue
        with contextlib.suppress(ValueError):
            entries.append((int(fields[0]), lsn_to_int(fields[1])))
    return tuple(entries)

"""The local PostgreSQL, driven for failover: ``LocalDatabase`` is the one class callers use.

The work is split by concern, as Patroni splits its ``postgresql/`` package: ``lifecycle``
(promote, stop, start, control data, the postmaster's processes), ``replication`` (start as a
replica, the standby configuration, is it streaming), ``sync`` (synchronous_standby_names),
``rewind`` (inspect where a node's history forked, pg_rewind), ``clone`` (pg_basebackup,
swapped in once it streams) and ``service`` (commands as the service user, connections, owned
files), which the others share.
Every operation is bounded by a timeout, never raises for an expected failure, and returns a
result with ``action_result()`` for the core. Nothing here decides; the core does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from failoverd.actions.postgres.clone import Clone, CloneResult
from failoverd.actions.postgres.lifecycle import (
    Lifecycle,
    PromoteResult,
    StopMode,
    StopResult,
)
from failoverd.actions.postgres.replication import Replication, StartResult
from failoverd.actions.postgres.rewind import (
    InspectResult,
    Rewind,
    RewindResult,
    rewind_readiness,
)
from failoverd.actions.postgres.service import Service
from failoverd.actions.postgres.sync import SyncResult, SyncStandby
from failoverd.clock import boottime
from failoverd.config import PostgresConfig
from failoverd.pgconn import ControlData, int_to_lsn, lsn_to_int

__all__ = [
    "CloneResult",
    "ControlData",
    "InspectResult",
    "LocalDatabase",
    "PromoteResult",
    "RewindResult",
    "StartResult",
    "StopMode",
    "StopResult",
    "SyncResult",
    "int_to_lsn",
    "lsn_to_int",
    "rewind_readiness",
]


class LocalDatabase:
    """The node's own PostgreSQL: SQL through ``pg``'s host/port/user/dbname/password_file,
    ``pg_*`` programs from ``bin_dir`` on ``data_dir`` as ``service_user``.

    ``node`` is the ``application_name`` this server uses when it streams from the peer.
    ``server_log`` receives the postmaster's output when this adapter starts it (default:
    ``postgres.log`` beside the data directory).
    """

    def __init__(
        self,
        pg: PostgresConfig,
        clock: Callable[[], float] = boottime,
        *,
        node: str,
        server_log: Path | None = None,
    ) -> None:
        self.service = Service(pg, clock, node=node, server_log=server_log)
        self.lifecycle = Lifecycle(self.service)
        self.replication = Replication(self.service, self.lifecycle)
        self.rewinding = Rewind(self.service, self.lifecycle, self.replication)
        self.cloning = Clone(self.service, self.lifecycle, self.replication)
        self.sync = SyncStandby(self.service)

    @property
    def pg(self) -> PostgresConfig:
        return self.service.pg

    @property
    def data_dir(self) -> Path | None:
        return self.service.data_dir

    def promote(
        self, epoch: int, not_after: float, timeout: float, sync_names: Sequence[str] = ()
    ) -> PromoteResult:
        """Make it a writable primary with ``synchronous_standby_names`` = ``sync_names`` from
        its first commit, and record ``epoch`` (a write that never waits for a standby);
        refused after ``not_after``."""
        return self.lifecycle.promote(epoch, not_after, timeout, sync_names)

    def start_primary(self, epoch: int, not_after: float, timeout: float) -> PromoteResult:
        """Start our own stopped primary again and record ``epoch`` (a write that never waits
        for a standby); never promotes, and leaves its synchronous standbys as they were."""
        return self.lifecycle.start_primary(epoch, not_after, timeout)

    def set_sync_standby(self, names: Sequence[str], timeout: float) -> SyncResult:
        """``synchronous_standby_names`` = ``names`` (quoted; () clears it) with
        ``synchronous_commit = on``; ok once the server reports both, within ``timeout``."""
        return self.sync.set(names, timeout)

    def stop(self, mode: StopMode, timeout: float, checkpoint: bool = False) -> StopResult:
        """Stop it within ``timeout``, escalating (``kill``: SIGKILL at once); ``checkpoint``
        runs CHECKPOINT first. The control file says how it ended."""
        return self.lifecycle.stop(mode, timeout, checkpoint)

    def start_replica(self, primary_host: str, primary_port: int, timeout: float) -> StartResult:
        """Start the cleanly stopped server as a streaming replica of the given primary."""
        return self.replication.start_replica(primary_host, primary_port, timeout)

    def recorded_epoch(self, timeout: float = 2.0) -> int | None:
        """The epoch the last promotion wrote into the database, None when unknown."""
        return self.lifecycle.recorded_epoch(timeout)

    def control_data(self, timeout: float = 5.0) -> ControlData:
        """What ``pg_controldata`` says about the data directory."""
        return self.lifecycle.control_data(timeout)

    def postmaster_pid(self) -> int | None:
        """The live postmaster of our data directory, None when there is none."""
        return self.lifecycle.postmaster_pid()

    def inspect(self, primary_host: str, primary_port: int, timeout: float) -> InspectResult:
        """Where this stopped node's WAL ends and the primary's timeline history, as
        ``RejoinFacts`` for ``policy.fork_verdict``; reads only."""
        return self.rewinding.inspect(primary_host, primary_port, timeout)

    def rewind(self, primary_host: str, primary_port: int, timeout: float) -> RewindResult:
        """``pg_rewind`` the stopped server from the primary and configure it as its replica
        (not started)."""
        return self.rewinding.rewind(primary_host, primary_port, timeout)

    def clone(self, primary_host: str, primary_port: int, timeout: float) -> CloneResult:
        """Replace the data directory with a ``pg_basebackup`` of the primary and start it as
        a streaming replica; the old directory is kept aside until then."""
        return self.cloning.clone(primary_host, primary_port, timeout)

"""The ``sync`` record: which standby holds every commit the active acknowledged (DESIGN.md,
"Zero loss"). Persistent, like ``position``: a passive that finds the active gone decides from
it whether it may take over without losing acknowledged writes.

Only the active of an epoch writes it, and the core orders the writes against
``synchronous_standby_names``; this module makes the first half hold in ZooKeeper itself. One
transaction checks, with the write, that the epoch counter still has the version read for that
epoch (nobody acquired since) and that the lease of that epoch, held by this session, still
exists (it did not expire). Anything else fails and changes nothing: a late write of an old
active must never replace the record of the active that took over, or claim a standby for an
epoch whose lease already went.

Blocking, bounded by a timeout: ``RecordSync`` is a sequencing action, and the core waits for its
result before the next step of the order (clearing ``synchronous_standby_names`` after dropping).
"""

from __future__ import annotations

import logging
from typing import Any

from kazoo.exceptions import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
    RuntimeInconsistency,
)

from failoverd.core.model import SyncRecord
from failoverd.zk.errors import LeaseConflict, MalformedRecord, ZkOperationFailed
from failoverd.zk.lease import txn_stat
from failoverd.zk.records import epoch_from_bytes, lease_from_json, sync_to_json
from failoverd.zk.session import KAZOO_ERRORS, Session
from failoverd.zk.view import ClusterWatch

log = logging.getLogger(__name__)


class SyncWriter:
    """Writes ``sync`` for this node, only while it holds the lease of the epoch it names."""

    def __init__(self, session: Session, watch: ClusterWatch, node: str) -> None:
        self._s = session
        self._watch = watch
        self._node = node

    def record(self, standby: str | None, epoch: int, timeout: float) -> SyncRecord:
        """Write ``sync = {standby, epoch}``; returns what was written.

        LeaseConflict (nothing changed) when the epoch counter is not ``epoch``, the lease is
        not this session's lease of ``epoch``, or either changed while writing;
        ZkOperationFailed when ZooKeeper cannot be asked or the outcome is unknown.
        """
        if standby is not None and (not standby or "/" in standby):
            raise ValueError(f"standby must be a node name or None: {standby!r}")
        s = self._s
        named = standby if standby is not None else "none"
        what = f"record sync = {named} at epoch {epoch}"
        s.require_connected(what)
        deadline = s.clock() + timeout
        epoch_version, lease_version = self._read_holder(epoch, deadline, what)
        record = SyncRecord(standby=standby, epoch=epoch, written_at=s.wallclock())
        data = sync_to_json(record)
        create = False
        for _ in range(2):  # set; create instead on a cluster laid out before ``sync`` existed
            txn = s.client.transaction()
            txn.check(s.path("epoch"), version=epoch_version)
            txn.check(s.path("lease"), version=lease_version)
            if create:
                txn.create(s.path("sync"), data, acl=s.acl)
            else:
                txn.set_data(s.path("sync"), data)
            try:
                results = list(s.wait(txn.commit_async(), deadline, what))
            except KAZOO_ERRORS as exc:
                raise s.wrap(exc, what) from None
            failures = [r for r in results if isinstance(r, Exception)]
            if not failures:
                written = txn_stat(results)
                self._watch.show_sync(record, written.mzxid if written is not None else 0)
                log.info("sync recorded: standby=%s epoch=%d", named, epoch)
                return record
            index, cause = _cause(results)
            if index == 0 and isinstance(cause, BadVersionError | NoNodeError):
                raise LeaseConflict(
                    f"{what}: refused, the epoch moved on while writing; nothing changed"
                )
            if index == 1 and isinstance(cause, BadVersionError | NoNodeError):
                raise LeaseConflict(
                    f"{what}: refused, the lease of epoch {epoch} went while writing; "
                    "nothing changed"
                )
            if index == 2 and isinstance(cause, NoNodeError | NodeExistsError):
                create = isinstance(cause, NoNodeError)
                continue
            raise s.wrap(cause, what)
        raise ZkOperationFailed(f"{what}: {s.path('sync')} kept appearing and vanishing")

    def _read_holder(self, epoch: int, deadline: float, what: str) -> tuple[int, int]:
        """Read the epoch counter and the lease together; their versions if this session holds
        the lease of ``epoch``, else LeaseConflict saying who does."""
        s = self._s
        epoch_read = s.client.get_async(s.path("epoch"))
        lease_read = s.client.get_async(s.path("lease"))
        try:
            raw_epoch, epoch_stat = s.wait(epoch_read, deadline, f"{what}: read epoch")
        except NoNodeError:
            raise ZkOperationFailed(
                f"{what}: {s.path('epoch')} is missing: run failoverctl init"
            ) from None
        except KAZOO_ERRORS as exc:
            raise s.wrap(exc, f"{what}: read epoch") from None
        try:
            current = epoch_from_bytes(raw_epoch)
        except MalformedRecord as exc:
            raise ZkOperationFailed(f"{what}: {exc}") from None
        if current != epoch:
            raise LeaseConflict(
                f"{what}: refused, the epoch counter is at {current}: only the active of "
                f"epoch {epoch} may write it; nothing changed"
            )
        try:
            raw_lease, lease_stat = s.wait(lease_read, deadline, f"{what}: read lease")
        except NoNodeError:
            raise LeaseConflict(
                f"{what}: refused, the lease of epoch {epoch} is gone (expired or released); "
                "nothing changed"
            ) from None
        except KAZOO_ERRORS as exc:
            raise s.wrap(exc, f"{what}: read lease") from None
        try:
            held = lease_from_json(raw_lease)
        except MalformedRecord as exc:
            raise LeaseConflict(f"{what}: refused, the lease record is malformed: {exc}") from None
        if lease_stat.ephemeralOwner != s.sid or held.node != self._node or held.epoch != epoch:
            raise LeaseConflict(
                f"{what}: refused, the lease is held by {held.node!r} with epoch {held.epoch} "
                f"(session {lease_stat.ephemeralOwner:#x}), not by this session with epoch "
                f"{epoch}; nothing changed"
            )
        return int(epoch_stat.version), int(lease_stat.version)


def _cause(results: list[Any]) -> tuple[int, Exception]:
    """The operation that failed in a transaction and its index; the others only say they were
    rolled back."""
    for index, r in enumerate(results):
        if isinstance(r, Exception) and not isinstance(r, RolledBackError | RuntimeInconsistency):
            return index, r
    for index, r in enumerate(results):
        if isinstance(r, Exception):
            return index, r
    raise AssertionError("no failure in a failed transaction")

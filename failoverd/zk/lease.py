"""The lease and the epoch: acquire and release, each one ZooKeeper transaction.

Acquire creates the ephemeral ``lease`` and sets ``epoch`` to n+1 against the version read, so
two nodes can never both win, and every acquisition gets a new fencing token. Release deletes
the lease and writes ``last_leader`` together, so a lease that vanished without a
``last_leader`` for its epoch is known to have expired (the next holder must fence).
"""

from __future__ import annotations

import logging
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from failoverd.core import LastLeader, LeaseInfo
from failoverd.zk.errors import LeaseConflict, MalformedRecord, ZkOperationFailed
from failoverd.zk.records import (
    epoch_from_bytes,
    epoch_to_bytes,
    last_leader_to_json,
    lease_from_json,
    lease_to_json,
)
from failoverd.zk.session import KAZOO_ERRORS, Session
from failoverd.zk.view import ClusterWatch

log = logging.getLogger(__name__)


class Lease:
    """This node's hand on the lease."""

    def __init__(self, session: Session, watch: ClusterWatch, node: str) -> None:
        self._s = session
        self._watch = watch
        self._node = node

    def acquire(self, expected_epoch: int, timeout: float) -> int:
        """Take the free lease in one transaction with epoch n -> n+1; returns the new epoch.

        LeaseConflict when the epoch is not ``expected_epoch`` or the lease exists or the epoch
        moved under us; ZkOperationFailed when the outcome is unknown (the view will tell).
        """
        s = self._s
        s.require_connected("acquire the lease")
        deadline = s.clock() + timeout
        epoch_path = s.path("epoch")
        try:
            data, stat = s.wait(s.client.get_async(epoch_path), deadline, "read epoch")
        except NoNodeError:
            raise ZkOperationFailed(f"{epoch_path} is missing: run failoverctl init") from None
        except KAZOO_ERRORS as exc:
            raise s.wrap(exc, "read epoch") from None
        try:
            current = epoch_from_bytes(data)
        except MalformedRecord as exc:
            raise ZkOperationFailed(f"cannot acquire: {exc}") from None
        if current != expected_epoch:
            raise LeaseConflict(
                f"epoch is {current}, not {expected_epoch}: the lease changed hands meanwhile"
            )
        new_epoch = current + 1
        lease = LeaseInfo(node=self._node, epoch=new_epoch, since=s.wallclock(), mine=True)
        txn = s.client.transaction()
        txn.create(s.path("lease"), lease_to_json(lease), acl=s.acl, ephemeral=True)
        txn.set_data(epoch_path, epoch_to_bytes(new_epoch), version=stat.version)
        results = _commit(s, txn, deadline, "acquire the lease")
        failures = [r for r in results if isinstance(r, Exception)]
        if any(isinstance(r, NodeExistsError) for r in failures):
            holder = self._watch.lease_holder or "another node"
            raise LeaseConflict(f"the lease is already held (by {holder})")
        if any(isinstance(r, BadVersionError) for r in failures):
            raise LeaseConflict(f"epoch {current} moved on while acquiring: lost the race")
        if failures:
            raise s.wrap(failures[-1], "acquire the lease")
        written = txn_stat(results)  # the epoch node's, as the set_data left it
        self._watch.show_acquired(
            lease,
            new_epoch,
            written.mzxid if written is not None else 0,
            epoch_version=written.version if written is not None else None,
        )
        log.info("lease acquired: node=%s epoch=%d", self._node, new_epoch)
        return new_epoch

    def release(
        self,
        epoch: int,
        final_lsn: int | None,
        clean: bool,
        timeout: float,
        *,
        left_serving: bool = False,
        timeline: int | None = None,
    ) -> None:
        """Give up our lease: delete it and write ``last_leader`` in one transaction.

        ``left_serving``: this node's daemon stops while paused and leaves it serving; with no
        lease to delete (it went with an earlier session), ``last_leader`` is written alone,
        provided the epoch is still ``epoch``."""
        s = self._s
        s.require_connected("release the lease")
        deadline = s.clock() + timeout
        lease_path = s.path("lease")
        try:
            data, stat = s.wait(s.client.get_async(lease_path), deadline, "read lease")
        except NoNodeError:
            if left_serving:
                self._record_left_serving(epoch, deadline)
                return
            raise LeaseConflict(f"no lease to release (epoch {epoch})") from None
        except KAZOO_ERRORS as exc:
            raise s.wrap(exc, "read lease") from None
        try:
            held = lease_from_json(data)
        except MalformedRecord as exc:
            raise LeaseConflict(
                f"the lease record is malformed, not ours to release: {exc}"
            ) from None
        if stat.ephemeralOwner != s.sid or held.node != self._node or held.epoch != epoch:
            raise LeaseConflict(
                f"the lease is held by {held.node!r} with epoch {held.epoch} "
                f"(session {stat.ephemeralOwner:#x}), not by us with epoch {epoch}"
            )
        last = LastLeader(
            node=self._node,
            epoch=epoch,
            final_lsn=final_lsn,
            clean=clean,
            left_serving=left_serving,
            timeline=timeline,
        )
        txn = s.client.transaction()
        txn.delete(lease_path, version=stat.version)
        txn.set_data(s.path("last_leader"), last_leader_to_json(last))
        results = _commit(s, txn, deadline, "release the lease")
        failures = [r for r in results if isinstance(r, Exception)]
        if any(isinstance(r, BadVersionError | NoNodeError) for r in failures):
            raise LeaseConflict(f"the lease of epoch {epoch} changed while releasing it")
        if failures:
            raise s.wrap(failures[-1], "release the lease")
        self._watch.show_released(last, txn_zxid(results), lease_gone=True)
        log.info(
            "lease released: node=%s epoch=%d clean=%s left_serving=%s",
            self._node,
            epoch,
            clean,
            left_serving,
        )

    def _record_left_serving(self, epoch: int, deadline: float) -> None:
        """No lease of ours to delete: write ``last_leader`` alone, checked against ``epoch``."""
        s = self._s
        try:
            raw, epoch_stat = s.wait(s.client.get_async(s.path("epoch")), deadline, "read epoch")
        except KAZOO_ERRORS as exc:
            raise s.wrap(exc, "read epoch") from None
        current = epoch_from_bytes(raw)
        if current != epoch:
            raise LeaseConflict(f"the epoch moved on to {current}: not recording epoch {epoch}")
        last = LastLeader(self._node, epoch, final_lsn=None, clean=False, left_serving=True)
        txn = s.client.transaction()
        txn.check(s.path("epoch"), version=epoch_stat.version)
        txn.set_data(s.path("last_leader"), last_leader_to_json(last))
        results = _commit(s, txn, deadline, "record that this node is left serving")
        failures = [r for r in results if isinstance(r, Exception)]
        if any(isinstance(r, BadVersionError | NoNodeError) for r in failures):
            raise LeaseConflict(f"the epoch changed while recording epoch {epoch}")
        if failures:
            raise s.wrap(failures[-1], "record that this node is left serving")
        self._watch.show_released(last, txn_zxid(results), lease_gone=False)
        log.info("recorded: node=%s left serving at epoch %d without its daemon", self._node, epoch)


def txn_stat(results: list[Any]) -> Any:
    """The stat its set_data answered in a committed transaction (None if it had none)."""
    for r in results:
        if isinstance(getattr(r, "mzxid", None), int):
            return r
    return None


def txn_zxid(results: list[Any]) -> int:
    """The zxid of a committed transaction: the mzxid of the node its set_data wrote."""
    stat = txn_stat(results)
    return stat.mzxid if stat is not None else 0


def _commit(s: Session, txn: Any, deadline: float, what: str) -> list[Any]:
    try:
        results = s.wait(txn.commit_async(), deadline, what)
    except KAZOO_ERRORS as exc:
        raise s.wrap(exc, what) from None
    return list(results)

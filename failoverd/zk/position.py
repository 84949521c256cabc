"""The active's persisted WAL position (``position``, persistent): unlike its member record it
survives the active's session, so a passive judges its lag after a crash, or after its own
restart, from it.

Written fire-and-forget from the daemon's loop, at most every ``publish_every``: it never blocks
and never raises; a write that fails is logged with what it was, and the next one replaces it.
"""

from __future__ import annotations

import logging
from typing import Any

from kazoo.exceptions import (
    BadVersionError,
    NoNodeError,
    RolledBackError,
    RuntimeInconsistency,
)

from failoverd.core import ZkState
from failoverd.core.model import Position
from failoverd.zk.records import position_to_json
from failoverd.zk.session import KAZOO_ERRORS, Session
from failoverd.zk.view import ClusterWatch

log = logging.getLogger(__name__)


class PositionRecord:
    """Writes ``position``, only ever under the epoch the position names."""

    def __init__(self, session: Session, watch: ClusterWatch) -> None:
        self._s = session
        self._watch = watch

    def record(self, position: Position) -> None:
        """Rewrite ``position``; returns at once, failures are logged.

        One transaction checks the epoch counter's version with the write: kazoo may deliver
        a write late (it queues requests while the link is down), and a late write of an old
        active must not replace the record of the active that took over since. Nothing is
        sent while disconnected, for the same reason: the next call brings a fresher position.
        """
        s = self._s
        what = (
            f"position not recorded (node={position.node} epoch={position.epoch} "
            f"lsn={position.lsn} timeline={position.timeline})"
        )
        if s.closed:
            log.warning("%s: client closed", what)
            return
        if s.state != ZkState.CONNECTED:
            log.warning("%s: ZooKeeper connection is %s", what, s.state.value)
            return
        version = self._watch.epoch_version(position.epoch)
        if version is None:
            log.warning(
                "%s: the epoch counter is at %d, not %d", what, self._watch.epoch, position.epoch
            )
            return
        self._send(position, version, what, create=False)

    def _send(self, position: Position, version: int, what: str, *, create: bool) -> None:
        s = self._s
        data = position_to_json(position)
        txn = s.client.transaction()
        txn.check(s.path("epoch"), version=version)
        if create:  # a cluster laid out before the position record existed
            txn.create(s.path("position"), data, acl=s.acl)
        else:
            txn.set_data(s.path("position"), data)
        try:
            result = txn.commit_async()
        except KAZOO_ERRORS as exc:
            log.warning("%s: %r", what, exc)
            return
        result.rawlink(lambda res: self._done(res, position, version, what, create))

    def _done(
        self, result: Any, position: Position, version: int, what: str, created: bool
    ) -> None:
        """kazoo's thread: log what went wrong; never raises."""
        try:
            results = result.get_nowait()
        except Exception as exc:
            log.warning("%s: %r", what, exc)
            return
        failures = [r for r in results if isinstance(r, Exception)]
        if not failures:
            log.debug("position recorded: epoch=%d lsn=%d", position.epoch, position.lsn)
            return
        # The operation that failed; the others only say they were rolled back.
        cause = next(
            (r for r in failures if not isinstance(r, RolledBackError | RuntimeInconsistency)),
            failures[0],
        )
        if isinstance(cause, BadVersionError):
            log.warning("%s: the epoch moved on meanwhile", what)
        elif isinstance(cause, NoNodeError) and results.index(cause) == 1 and not created:
            try:
                self._send(position, version, what, create=True)
            except Exception as exc:
                log.warning("%s: %r", what, exc)
        else:
            log.warning("%s: %r", what, cause)

"""This node's member record (``members/<node>``, ephemeral): claimed once at start, so that a
duplicate node name is refused, then published fire-and-forget from the daemon's loop."""

from __future__ import annotations

import logging
import threading
from typing import Any

from kazoo.exceptions import NodeExistsError, NoNodeError

from failoverd.core import MemberStatus, ZkState
from failoverd.zk.errors import DuplicateNode
from failoverd.zk.records import member_to_json
from failoverd.zk.session import KAZOO_ERRORS, MAX_LOOP, Session

log = logging.getLogger(__name__)


class Member:
    """This node's hand on its own member record."""

    def __init__(self, session: Session, node: str) -> None:
        self._s = session
        self._node = node
        self._path = session.path(f"members/{node}")

    def claim(self, initial: MemberStatus, wait: float, timeout: float) -> None:
        """Create our ephemeral ``members/<node>``, waiting up to ``wait`` s for a previous life.

        A record owned by another session that vanishes within ``wait`` was our own previous
        life (its session expiring). One that changes meanwhile, or outlives ``wait``, belongs
        to another live daemon using the same node name: DuplicateNode.
        """
        s = self._s
        path = self._path
        s.require_connected(f"claim members/{self._node}")
        data = member_to_json(initial)
        deadline = s.clock() + wait
        changed = threading.Event()
        first: Any = None
        for _ in range(MAX_LOOP):
            op_deadline = s.clock() + timeout
            try:
                s.wait(
                    s.client.create_async(path, data, acl=s.acl, ephemeral=True),
                    op_deadline,
                    f"create {path}",
                )
                log.info("claimed %s", path)
                return
            except NodeExistsError:
                pass
            except KAZOO_ERRORS as exc:
                raise s.wrap(exc, f"create {path}") from None
            changed.clear()
            try:
                stat = s.wait(
                    s.client.exists_async(path, watch=lambda _e: changed.set()),
                    op_deadline,
                    f"read {path}",
                )
            except KAZOO_ERRORS as exc:
                raise s.wrap(exc, f"read {path}") from None
            if stat is None:
                continue  # vanished between create and exists: try again
            owner = stat.ephemeralOwner
            if owner == s.sid:
                self.publish(initial)
                return
            if first is None:
                first = stat
                log.warning(
                    "%s is held by session %#x: waiting up to %.1f s for it to expire",
                    path,
                    owner,
                    wait,
                )
            elif stat.mzxid != first.mzxid or owner != first.ephemeralOwner:
                raise DuplicateNode(
                    f"another live daemon is publishing as node {self._node!r} "
                    f"(session {owner:#x}): duplicate node name?"
                )
            remaining = deadline - s.clock()
            if remaining <= 0:
                raise DuplicateNode(
                    f"another live daemon is publishing as node {self._node!r} "
                    f"(session {owner:#x}, still there after {wait:.1f} s): duplicate node name?"
                )
            changed.wait(remaining)
        raise DuplicateNode(f"could not claim {path}: gave up after {MAX_LOOP} attempts")

    def publish(self, status: MemberStatus) -> None:
        """Write our member record, fire and forget (created if missing); failures are logged."""
        s = self._s
        if s.state != ZkState.CONNECTED or s.closed:
            log.debug("not publishing %s: connection %s", self._path, s.state.value)
            return
        # No ownership check here: claim() refused duplicates at start, and the cached
        # owner lags behind a fresh claim or a new session (it would refuse our own record).
        data = member_to_json(status)
        try:
            result = s.client.set_async(self._path, data)
        except KAZOO_ERRORS as exc:
            log.warning("publish %s failed: %r", self._path, exc)
            return
        result.rawlink(lambda res: self._published(res, data))

    def _published(self, result: Any, data: bytes) -> None:
        exc = result.exception
        if exc is None:
            return
        if isinstance(exc, NoNodeError):
            s = self._s
            try:
                created = s.client.create_async(self._path, data, acl=s.acl, ephemeral=True)
            except KAZOO_ERRORS as err:
                log.warning("publish: create %s failed: %r", self._path, err)
                return
            created.rawlink(self._publish_created)
            return
        log.warning("publish %s failed: %r", self._path, exc)

    def _publish_created(self, result: Any) -> None:
        if result.exception is not None:
            log.warning("publish: create %s failed: %r", self._path, result.exception)

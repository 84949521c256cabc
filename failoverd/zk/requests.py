"""Operators' requests to the daemons: the pause flag, the switchover request and the rejoin
requests (``rejoin/<node>``).

Written by ``failoverctl`` (blocking: the operator waits for the answer); cleared by whoever
completes or aborts them (a rejoin request by its node, fire-and-forget from the daemon's
loop). The daemons only ever read them through the view.
"""

from __future__ import annotations

import logging
from typing import Any

from kazoo.exceptions import NodeExistsError, NoNodeError

from failoverd.core import SwitchoverRequest, ZkState
from failoverd.core.model import RejoinRequest
from failoverd.zk.errors import LeaseConflict, ZkOperationFailed
from failoverd.zk.records import rejoin_to_json, switchover_to_json
from failoverd.zk.session import KAZOO_ERRORS, Session
from failoverd.zk.view import ClusterWatch

log = logging.getLogger(__name__)


class Requests:
    """Writes ``paused``, ``switchover`` and ``rejoin/<node>``."""

    def __init__(self, session: Session, watch: ClusterWatch) -> None:
        self._s = session
        self._watch = watch

    def set_paused(self, paused: bool, timeout: float) -> None:
        """Create or delete ``paused`` (idempotent)."""
        s = self._s
        s.require_connected("change the pause flag")
        deadline = s.clock() + timeout
        path = s.path("paused")
        try:
            if paused:
                s.wait(s.client.create_async(path, b"", acl=s.acl), deadline, "pause")
            else:
                s.wait(s.client.delete_async(path), deadline, "resume")
        except (NodeExistsError, NoNodeError):
            pass
        except KAZOO_ERRORS as exc:
            raise s.wrap(exc, "change the pause flag") from None

    def request_switchover(self, req: SwitchoverRequest, timeout: float) -> None:
        """Create the switchover request; LeaseConflict if one is pending already."""
        s = self._s
        s.require_connected("request a switchover")
        deadline = s.clock() + timeout
        path = s.path("switchover")
        try:
            s.wait(
                s.client.create_async(path, switchover_to_json(req), acl=s.acl),
                deadline,
                "request a switchover",
            )
        except NodeExistsError:
            pending = self._watch.switchover
            raise LeaseConflict(
                f"a switchover request is pending already: {pending}"
                if pending is not None
                else "a switchover request is pending already"
            ) from None
        except KAZOO_ERRORS as exc:
            raise s.wrap(exc, "request a switchover") from None

    def clear_switchover(self, timeout: float) -> None:
        """Delete the switchover request (idempotent)."""
        s = self._s
        s.require_connected("clear the switchover request")
        try:
            s.wait(
                s.client.delete_async(s.path("switchover")),
                s.clock() + timeout,
                "clear the switchover request",
            )
        except NoNodeError:
            pass
        except KAZOO_ERRORS as exc:
            raise s.wrap(exc, "clear the switchover request") from None

    def request_rejoin(
        self, node: str, reclone: bool, requested_by: str, timeout: float
    ) -> RejoinRequest:
        """Write ``rejoin/<node>``, replacing a pending one (the operator's latest word counts:
        a plain request that cannot be done can be re-asked with ``reclone``)."""
        if not node or "/" in node:
            raise ValueError(f"node name must be non-empty without '/': {node!r}")
        s = self._s
        what = f"request a rejoin of {node}"
        s.require_connected(what)
        deadline = s.clock() + timeout
        request = RejoinRequest(node, reclone, requested_by, s.wallclock())
        data = rejoin_to_json(request)
        path = s.path(f"rejoin/{node}")
        for _ in range(3):  # create, or replace; again if the node cleared it in between
            try:
                # makepath: a cluster laid out before rejoin requests existed lacks ``rejoin``.
                create = s.client.create_async(path, data, acl=s.acl, makepath=True)
                s.wait(create, deadline, what)
                return request
            except NodeExistsError:
                pass
            except KAZOO_ERRORS as exc:
                raise s.wrap(exc, what) from None
            try:
                s.wait(s.client.set_async(path, data), deadline, what)
                return request
            except NoNodeError:
                continue
            except KAZOO_ERRORS as exc:
                raise s.wrap(exc, what) from None
        raise ZkOperationFailed(f"{what}: {path} kept appearing and vanishing; try again")

    def clear_rejoin(self, node: str) -> None:
        """Delete ``rejoin/<node>`` once the node acted on it; returns at once. A request that
        is gone already is fine; any other failure is logged (the request stays, and is seen
        again on the next step)."""
        s = self._s
        path = s.path(f"rejoin/{node}")
        if s.closed or s.state != ZkState.CONNECTED:
            state = "closed" if s.closed else s.state.value
            log.warning("rejoin request %s not cleared: ZooKeeper connection is %s", path, state)
            return
        try:
            result = s.client.delete_async(path)
        except KAZOO_ERRORS as exc:
            log.warning("rejoin request %s not cleared: %r", path, exc)
            return
        result.rawlink(lambda res: _rejoin_cleared(res, path))


def _rejoin_cleared(result: Any, path: str) -> None:
    exc = result.exception
    if exc is None:
        log.info("rejoin request %s cleared", path)
    elif isinstance(exc, NoNodeError):
        log.debug("rejoin request %s was cleared already", path)
    else:
        log.warning("rejoin request %s not cleared: %r", path, exc)

"""Operators' requests to the daemons: the pause flag and the switchover request.

Written by ``failoverctl`` (blocking: the operator waits for the answer); cleared by whoever
completes or aborts them. The daemons only ever read them through the view.
"""

from __future__ import annotations

from kazoo.exceptions import NodeExistsError, NoNodeError

from failoverd.core import SwitchoverRequest
from failoverd.zk.errors import LeaseConflict
from failoverd.zk.records import switchover_to_json
from failoverd.zk.session import KAZOO_ERRORS, Session
from failoverd.zk.view import ClusterWatch


class Requests:
    """Writes ``paused`` and ``switchover``."""

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

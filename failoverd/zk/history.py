"""The event history (``history/event-<seq>``, persistent sequential): one record per failover,
switchover, step-down or fence. Appended fire-and-forget by the daemons (a lost record must
never hold up a failover), read by ``failoverctl history`` and ``status``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kazoo.exceptions import NoNodeError

from failoverd.zk.errors import MalformedRecord
from failoverd.zk.records import history_to_json, load_object
from failoverd.zk.session import KAZOO_ERRORS, Session

log = logging.getLogger(__name__)


class History:
    """Appends to and reads ``history``."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def append(self, record: Mapping[str, object]) -> None:
        """Append a ``history/event-`` record, fire and forget (failures are logged)."""
        s = self._s
        if s.closed:
            return
        data = history_to_json(record, s.wallclock())
        try:
            result = s.client.create_async(s.path("history/event-"), data, acl=s.acl, sequence=True)
        except KAZOO_ERRORS as exc:
            log.warning("history record lost: %r (%s)", exc, data[:200])
            return
        result.rawlink(lambda res: _history_done(res, data))

    def read(self, limit: int, timeout: float) -> list[dict[str, object]]:
        """The last ``limit`` history records, oldest first, each with its ``id``."""
        s = self._s
        s.require_connected("read the history")
        deadline = s.clock() + timeout
        try:
            names = s.wait(s.client.get_children_async(s.path("history")), deadline, "list history")
            names = sorted(names, key=lambda n: n.rpartition("-")[2])[-limit:] if limit > 0 else []
            pending = [(n, s.client.get_async(s.path(f"history/{n}"))) for n in names]
            records: list[dict[str, object]] = []
            for name, res in pending:
                try:
                    data, _stat = s.wait(res, deadline, f"read history/{name}")
                except NoNodeError:
                    continue
                try:
                    rec: dict[str, object] = load_object(data, f"history/{name}")
                except MalformedRecord as exc:
                    rec = {"error": str(exc)}
                rec.setdefault("id", name)
                records.append(rec)
            return records
        except KAZOO_ERRORS as exc:
            raise s.wrap(exc, "read the history") from None


def _history_done(result: Any, data: bytes) -> None:
    if result.exception is not None:
        log.warning("history record lost: %r (%s)", result.exception, data[:200])

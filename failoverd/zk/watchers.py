"""kazoo's DataWatch and ChildrenWatch, with at most one re-read per watch in flight.

kazoo starts a thread to re-read a watched node at every CONNECTED, and that thread retries
without end, queued behind the watch's own lock. A daemon reconnects often when ZooKeeper is
slow (its round-trip moves the session to another server after a stalled sync, an election,
an overloaded host): every move added one thread per watch, none of them ending while the
servers did not answer. With 50 clusters on a 2-core machine the daemons ran the host out of
process ids (bench/zk_scale.py). One pending re-read per watch is enough: it reads as soon as
the session is connected again, whichever connection that is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kazoo.protocol.states import KazooState
from kazoo.recipe import watchers


class _OneReread:
    """The guard both watches share: start ``read`` unless one is pending already."""

    def _init_reread(self) -> None:
        self._reread_lock = threading.Lock()
        self._reread_pending = False

    def _reread_once(self, client: Any, read: Callable[[], object]) -> None:
        with self._reread_lock:
            if self._reread_pending:
                return
            self._reread_pending = True

        def run() -> None:
            try:
                read()
            finally:
                with self._reread_lock:
                    self._reread_pending = False

        client.handler.spawn(run)


class DataWatch(watchers.DataWatch, _OneReread):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._init_reread()
        super().__init__(*args, **kwargs)

    def _session_watcher(self, state: str) -> None:
        if state == KazooState.CONNECTED:
            self._reread_once(self._client, self._get_data)


class ChildrenWatch(watchers.ChildrenWatch, _OneReread):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._init_reread()
        super().__init__(*args, **kwargs)

    def _session_watcher(self, state: str) -> None:
        # As kazoo's, but for the one re-read: the watch is re-set only when it was lost.
        if state in (KazooState.LOST, KazooState.SUSPENDED):
            self._watch_established = False
        elif state == KazooState.CONNECTED and not self._watch_established and not self._stopped:
            self._reread_once(self._client, self._get_children)

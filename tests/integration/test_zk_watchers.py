"""One re-read per watch in flight, however often the session reconnects (failoverd/zk/watchers.py).

bench/zk_scale.py ran 50 clusters on one ensemble: the daemons reconnected again and again,
kazoo started a re-read thread per watch at every reconnect, each retrying while nothing
answered, and the host ran out of process ids. Here: the server stopped, thirty reconnects
announced to each watch; kazoo's own watch starts thirty threads, ours one. Back, ours still
delivers changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState
from kazoo.recipe import watchers

from failoverd.zk.watchers import ChildrenWatch, DataWatch
from lab.process import wait_for
from lab.zookeeper import ZooKeeperServer

RECONNECTS = 30


def threads_started_by(announce: Callable[[], None]) -> int:
    before = threading.active_count()
    for _ in range(RECONNECTS):
        announce()
    time.sleep(0.3)
    return threading.active_count() - before


def test_a_watch_rereads_once_however_often_the_session_reconnects(
    fresh_zookeeper: ZooKeeperServer, raw_client: Callable[..., KazooClient]
) -> None:
    client = raw_client(fresh_zookeeper)
    client.ensure_path("/w/kids")
    seen: list[bytes | None] = []
    ours = DataWatch(client, "/w", lambda data, _stat: seen.append(data))
    kids = ChildrenWatch(client, "/w/kids", lambda _children: None)
    stock = watchers.DataWatch(client, "/w", lambda _data, _stat: None)
    fresh_zookeeper.stop()  # every re-read now retries until the server is back
    assert threads_started_by(lambda: ours._session_watcher(KazooState.CONNECTED)) <= 1
    kids._session_watcher(KazooState.SUSPENDED)  # a lost watch is re-set once too
    assert threads_started_by(lambda: kids._session_watcher(KazooState.CONNECTED)) <= 1
    # The test can fail: kazoo's own watch starts one thread per reconnect.
    assert threads_started_by(lambda: stock._session_watcher(KazooState.CONNECTED)) >= 20
    fresh_zookeeper.start()
    assert wait_for(lambda: client.connected, 20.0)
    client.set("/w", b"after")
    assert wait_for(lambda: seen and seen[-1] == b"after", 10.0), seen

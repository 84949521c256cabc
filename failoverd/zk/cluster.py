"""``ZkCluster``: the one class callers use. It composes the parts (session, watches, lease,
member record, position, sync record, requests, history) and adds no behaviour of its own, so
each concern can be read and tested in its module while the daemon and the CLI keep a single
handle."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from failoverd.clock import boottime, walltime
from failoverd.core import ClusterView, MemberStatus, SwitchoverRequest, ZkStatus
from failoverd.core.model import Position, RejoinRequest, SyncRecord
from failoverd.zk.history import History
from failoverd.zk.layout import ensure_layout
from failoverd.zk.lease import Lease
from failoverd.zk.members import Member
from failoverd.zk.position import PositionRecord
from failoverd.zk.requests import Requests
from failoverd.zk.session import Session
from failoverd.zk.sync import SyncWriter
from failoverd.zk.view import ClusterWatch


class ZkCluster:
    """One daemon's (or one CLI's) view of and hand on one cluster's ZooKeeper subtree."""

    def __init__(
        self,
        hosts: Sequence[str],
        chroot: str,
        node: str,
        session_timeout: float,
        credentials: tuple[str, str] | None = None,
        clock: Callable[[], float] = boottime,
        wallclock: Callable[[], float] = walltime,
    ) -> None:
        if not chroot.startswith("/") or chroot.endswith("/") or "//" in chroot:
            raise ValueError(f"chroot must be an absolute path like /failoverd/prod: {chroot!r}")
        if not node or "/" in node:
            raise ValueError(f"node name must be non-empty without '/': {node!r}")
        self.node = node
        self._session = Session(hosts, chroot, session_timeout, credentials, clock, wallclock)
        self._watch = ClusterWatch(self._session)
        self._session.on_state_locked = self._watch.on_state_locked
        self._lease = Lease(self._session, self._watch, node)
        self._member = Member(self._session, node)
        self._position = PositionRecord(self._session, self._watch)
        self._sync = SyncWriter(self._session, self._watch, node)
        self._requests = Requests(self._session, self._watch)
        self._history = History(self._session)

    @property
    def hosts(self) -> tuple[str, ...]:
        return self._session.hosts

    @property
    def chroot(self) -> str:
        return self._session.chroot

    @property
    def session_timeout(self) -> float:
        """The session timeout asked for; ``negotiated_timeout`` is the one granted."""
        return self._session.session_timeout

    def path(self, suffix: str = "") -> str:
        """Absolute path of ``suffix`` under the chroot."""
        return self._session.path(suffix)

    # -- connection ---------------------------------------------------------------------------

    def start(self, timeout: float) -> None:
        """Connect; raise ZkUnreachable naming the hosts if no session within ``timeout``."""
        self._session.start(timeout)

    def connect(self, wait: float, *, quiet: bool = True) -> bool:
        """Start connecting unless under way and wait up to ``wait`` s: True once there is a
        session. kazoo keeps trying meanwhile; never raises for want of an answer."""
        return self._session.connect(wait, quiet=quiet)

    @property
    def last_connect_error(self) -> str | None:
        """The latest failed connection attempt as kazoo described it, None before any."""
        return self._session.last_connect_error

    @property
    def negotiated_timeout(self) -> float:
        """The session timeout (seconds) the server granted: what T really is."""
        return self._session.negotiated_timeout

    @property
    def session_id(self) -> int | None:
        """The live session's id (for logs and tests), None when not connected or lost."""
        return self._session.sid

    def status(self) -> ZkStatus:
        """Connection state and round-trip freshness; non-blocking."""
        return self._session.status()

    @property
    def roundtrip_failures(self) -> int:
        """Round-trips that failed or were abandoned at their deadline (for metrics)."""
        return self._session.roundtrip_failures

    @property
    def roundtrip_moves(self) -> int:
        """Connections given up because a round-trip stalled on them (the session moved on)."""
        return self._session.moves

    def roundtrip(self, deadline: float) -> None:
        """Keep one ``sync`` in flight (non-blocking, every tick): its success proves contact
        with a quorum at about its send time; see ``Session.roundtrip``."""
        self._session.roundtrip(deadline)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs on kazoo's threads after any view or connection change."""
        self._session.add_listener(callback)

    # -- layout and view ----------------------------------------------------------------------

    def ensure_layout(self, timeout: float = 5.0) -> None:
        """Create the chroot and its fixed nodes if missing (idempotent), then start watching."""
        ensure_layout(self._session, timeout)
        self.watch()

    def watch(self) -> None:
        """Start the watches behind ``view()`` (idempotent, non-blocking)."""
        self._watch.watch()

    def view(self) -> ClusterView | None:
        """The latest snapshot, None until every watched node was read once; non-blocking."""
        return self._watch.view()

    def wait_view(self, timeout: float) -> ClusterView:
        """Block until ``view()`` is available (for the CLI and tests); bounded by ``timeout``."""
        return self._watch.wait_view(timeout)

    # -- this node's member record ------------------------------------------------------------

    def claim_member(self, initial: MemberStatus, wait: float, timeout: float = 2.0) -> None:
        """Create our ephemeral ``members/<node>``, waiting up to ``wait`` s for a previous
        life; DuplicateNode if another live daemon publishes under our name."""
        self._member.claim(initial, wait, timeout)

    def publish(self, status: MemberStatus) -> None:
        """Write our member record, fire and forget (created if missing); failures are logged."""
        self._member.publish(status)

    # -- the lease ----------------------------------------------------------------------------

    def acquire(self, expected_epoch: int, timeout: float = 2.0) -> int:
        """Take the free lease with epoch n -> n+1 in one transaction; returns the new epoch."""
        return self._lease.acquire(expected_epoch, timeout)

    def release(
        self,
        epoch: int,
        final_lsn: int | None,
        clean: bool,
        timeout: float = 2.0,
        *,
        left_serving: bool = False,
        timeline: int | None = None,
    ) -> None:
        """Give up our lease: delete it and write ``last_leader`` in one transaction."""
        self._lease.release(
            epoch, final_lsn, clean, timeout, left_serving=left_serving, timeline=timeline
        )

    def record_position(self, position: Position) -> None:
        """Rewrite ``position``, fire and forget: returns at once, failures are logged. Only
        written while the epoch counter is still ``position.epoch``."""
        self._position.record(position)

    def record_sync(self, standby: str | None, epoch: int, timeout: float = 2.0) -> SyncRecord:
        """Write ``sync = {standby, epoch}`` in one transaction that checks this session still
        holds the lease of ``epoch``; returns what was written. LeaseConflict (nothing changed)
        when it does not; ZkOperationFailed when the outcome is unknown."""
        return self._sync.record(standby, epoch, timeout)

    # -- requests, pause, history -------------------------------------------------------------

    def set_paused(self, paused: bool, timeout: float = 2.0) -> None:
        """Create or delete ``paused`` (idempotent)."""
        self._requests.set_paused(paused, timeout)

    def request_switchover(self, req: SwitchoverRequest, timeout: float = 2.0) -> None:
        """Create the switchover request; LeaseConflict if one is pending already."""
        self._requests.request_switchover(req, timeout)

    def clear_switchover(self, timeout: float = 2.0) -> None:
        """Delete the switchover request (idempotent)."""
        self._requests.clear_switchover(timeout)

    def request_rejoin(
        self, node: str, reclone: bool, requested_by: str, timeout: float = 2.0
    ) -> RejoinRequest:
        """Write ``rejoin/<node>`` (replacing a pending one) and return what was written."""
        return self._requests.request_rejoin(node, reclone, requested_by, timeout)

    def clear_rejoin(self, node: str) -> None:
        """Delete ``rejoin/<node>``, fire and forget (gone already is fine; failures logged)."""
        self._requests.clear_rejoin(node)

    def append_history(self, record: Mapping[str, object]) -> None:
        """Append a ``history/event-`` record, fire and forget (failures are logged)."""
        self._history.append(record)

    def read_history(self, limit: int, timeout: float = 5.0) -> list[dict[str, object]]:
        """The last ``limit`` history records, oldest first, each with its ``id``."""
        return self._history.read(limit, timeout)

    # -- shutdown -----------------------------------------------------------------------------

    def close(self) -> None:
        """End the session (our ephemeral nodes vanish at once); idempotent, never raises."""
        self._session.close()

    def __enter__(self) -> ZkCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

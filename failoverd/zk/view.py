"""The watches behind ``ClusterView``: every record of the cluster, kept current by kazoo watches
and published as one immutable snapshot.

Threads: kazoo runs watch callbacks on its own threads. They only take the session's lock for a
moment, rebuild a frozen snapshot and wake the listeners; they never block and never raise (bad
data becomes a reported problem, not a dead watcher).

Our own writes are shown at once (``show_acquired``, ``show_released``, ``show_sync``); a watch
answer older than such a write is then ignored, so the view never steps back behind what this
process did.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from kazoo.exceptions import ConnectionClosedError

from failoverd.core import (
    ClusterView,
    LastLeader,
    LeaseInfo,
    MalformedMember,
    MemberStatus,
    SwitchoverRequest,
    ZkState,
)
from failoverd.core.model import Position, RejoinRequest, SyncRecord
from failoverd.zk.errors import MalformedRecord, ZkOperationFailed
from failoverd.zk.records import (
    MALFORMED_LEASE_NODE,
    UNKNOWN_EPOCH,
    epoch_from_bytes,
    last_leader_from_json,
    lease_from_json,
    member_from_json,
    position_from_json,
    rejoin_from_json,
    switchover_from_json,
    sync_from_json,
)
from failoverd.zk.session import MAX_LOOP, Session
from failoverd.zk.watchers import ChildrenWatch, DataWatch

log = logging.getLogger(__name__)

SINGLE_WATCHES = ("lease", "epoch", "last_leader", "switchover", "paused", "position", "sync")
DIRECTORIES = ("members", "rejoin")

T = TypeVar("T")


@dataclasses.dataclass
class _Entry(Generic[T]):
    record: T
    seen_at: float  # reader's boottime when this content was first seen


@dataclasses.dataclass(frozen=True)
class _Unreadable:
    """A per-node record that does not parse (or cannot be read): reported, never trusted."""

    node: str
    error: str


class _Directory(Generic[T]):
    """One directory of per-node records (``members``, ``rejoin``): the child names, and one
    DataWatch per name, kept for the client's life (names are node names: few).

    ``parse`` never raises: a bad record becomes a value saying so (``unreadable`` makes one
    for a child that cannot even be watched), so one bad child never silences the others.
    """

    def __init__(
        self,
        session: Session,
        name: str,
        parse: Callable[[str, bytes], T],
        unreadable: Callable[[str, str], T],
        rebuild_locked: Callable[[], None],
    ) -> None:
        self._s = session
        self.name = name
        self._parse = parse
        self._unreadable = unreadable
        self._rebuild_locked = rebuild_locked
        self.listed = False  # the child list was read once
        self.names: frozenset[str] = frozenset()
        self.entries: dict[str, _Entry[T]] = {}
        self._read: set[str] = set()
        self._watches: dict[str, Any] = {}  # name -> DataWatch (None while installing)

    def complete_locked(self) -> bool:
        """Listed, and every child listed was read once."""
        return self.listed and all(n in self._read for n in self.names)

    def records_locked(self) -> list[T]:
        """The records read, sorted by node name."""
        return [self.entries[n].record for n in sorted(self.names) if n in self.entries]

    def listed_empty_locked(self) -> None:
        """The directory does not exist: nothing in it (until it is created and watched)."""
        self.listed = True
        self.names = frozenset()

    def on_children(self, children: list[str]) -> None:
        """The child list changed (kazoo thread): watch newcomers from another thread."""
        try:
            with self._s.lock:
                self.names = frozenset(children)
                self.listed = True
                new = [c for c in children if c not in self._watches]
                for child in new:
                    self._watches[child] = None
                self._rebuild_locked()
            for child in new:
                self._s.client.handler.spawn(self._watch, child)
        except Exception:
            log.exception("failoverd: %s watch callback failed", self.name)
            return
        self._s.notify()

    def _watch(self, child: str) -> None:
        path = f"{self.name}/{child}"
        try:
            watch = DataWatch(
                self._s.client,
                self._s.path(path),
                lambda data, stat, _event=None: self._on_data(child, data, stat),
            )
            with self._s.lock:
                self._watches[child] = watch
        except ConnectionClosedError:
            return
        except Exception as exc:
            log.error("failoverd: cannot watch %s: %r", path, exc)
            with self._s.lock:
                self.entries[child] = _Entry(
                    self._unreadable(child, f"cannot read {path}: {exc!r}"), self._s.clock()
                )
                self._read.add(child)
                self._rebuild_locked()
            self._s.notify()

    def _on_data(self, child: str, data: bytes | None, stat: Any) -> None:
        try:
            with self._s.lock:
                if data is None or stat is None:
                    self.entries.pop(child, None)
                else:
                    self.entries[child] = _Entry(self._parse(child, data), self._s.clock())
                self._read.add(child)
                self._rebuild_locked()
        except Exception:
            log.exception("failoverd: watch callback for %s/%s failed", self.name, child)
            return
        self._s.notify()


def _parse_rejoin(node: str, data: bytes) -> RejoinRequest | _Unreadable:
    try:
        return rejoin_from_json(node, data)
    except MalformedRecord as exc:
        return _Unreadable(node, str(exc))


class ClusterWatch:
    """Watched state of one cluster and the snapshot made from it."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._watch_installed: set[str] = set()
        self._watch_thread_running = False
        self._watch_again = False
        self._layout_missing: str | None = None
        self._seen: set[str] = set()
        # Our own writes are shown at once; watch answers older than them are then ignored.
        # floor = zxid of our last write (lease: compared with czxid, others with mzxid).
        self._floors: dict[str, int] = dict.fromkeys(SINGLE_WATCHES, 0)
        self._confirmed: dict[str, int | None] = dict.fromkeys(SINGLE_WATCHES)
        self._lease_unconfirmed = False  # we acquired; the watch has not seen our lease yet
        self._lease: LeaseInfo | None = None
        self._lease_owner: int | None = None
        self._lease_changed_at: float | None = None  # boottime the lease watch last fired
        self._epoch = UNKNOWN_EPOCH
        self._epoch_version: int | None = None  # znode version of the epoch counter read
        self._last_leader: LastLeader | None = None
        self._switchover: SwitchoverRequest | None = None
        self._paused = False
        self._position: Position | None = None
        self._sync: SyncRecord | None = None
        self._problems: dict[str, str] = {}
        self._members: _Directory[MemberStatus | MalformedMember] = _Directory(
            session, "members", member_from_json, MalformedMember, self.rebuild_locked
        )
        self._rejoin: _Directory[RejoinRequest | _Unreadable] = _Directory(
            session, "rejoin", _parse_rejoin, _Unreadable, self.rebuild_locked
        )
        self._watchers: list[Any] = []
        self._base_view: ClusterView | None = None
        self._view_changed = threading.Condition(session.lock)

    # -- what the writers need to know ----------------------------------------------------------

    @property
    def lease_holder(self) -> str | None:
        """The node the last seen lease names (for error messages)."""
        lease = self._lease
        return lease.node if lease is not None else None

    @property
    def switchover(self) -> SwitchoverRequest | None:
        """The pending switchover request last seen (for error messages)."""
        return self._switchover

    def epoch_version(self, epoch: int) -> int | None:
        """The znode version of the epoch counter if it was last seen at ``epoch``: what a write
        made under that epoch checks, so that it fails once the epoch moved on."""
        with self._s.lock:
            if self._epoch == epoch:
                return self._epoch_version
            return None

    @property
    def epoch(self) -> int:
        """The epoch counter last seen (UNKNOWN_EPOCH when missing or unreadable)."""
        return self._epoch

    # -- our own writes -------------------------------------------------------------------------

    def show_acquired(
        self, lease: LeaseInfo, epoch: int, zxid: int, epoch_version: int | None
    ) -> None:
        """Show our fresh lease and epoch at once, unless a watch reported something newer."""
        with self._s.lock:
            if (self._confirmed["lease"] or 0) < zxid:
                self._lease, self._lease_owner = lease, self._s.sid
                self._lease_unconfirmed = True
                self._floors["lease"] = zxid
                self._problems.pop("lease", None)
            if (self._confirmed["epoch"] or 0) < zxid:
                self._epoch = epoch
                self._epoch_version = epoch_version
                self._floors["epoch"] = zxid
                self._problems.pop("epoch", None)
            self.rebuild_locked()
        self._s.notify()

    def show_released(self, last: LastLeader, zxid: int, *, lease_gone: bool) -> None:
        """Show our own release at once; older watch answers are then ignored."""
        with self._s.lock:
            if lease_gone and (self._confirmed["lease"] or 0) < zxid:
                self._lease, self._lease_owner = None, None
                self._lease_unconfirmed = False
                self._floors["lease"] = zxid
                self._problems.pop("lease", None)
            if (self._confirmed["last_leader"] or 0) < zxid:
                self._last_leader = last
                self._floors["last_leader"] = zxid
                self._problems.pop("last_leader", None)
            self.rebuild_locked()
        self._s.notify()

    def show_sync(self, record: SyncRecord, zxid: int) -> None:
        """Show the sync record we just wrote at once; older watch answers are then ignored
        (the core must not decide again on the record this write replaced)."""
        with self._s.lock:
            if (self._confirmed["sync"] or 0) < zxid:
                self._sync = record
                self._floors["sync"] = zxid
                self._problems.pop("sync", None)
            self.rebuild_locked()
        self._s.notify()

    def on_state_locked(self, state: ZkState) -> None:
        """The connection changed (lock held): a lost session took our unconfirmed lease."""
        if state == ZkState.LOST and self._lease_unconfirmed:
            self._lease, self._lease_owner = None, None
            self._lease_changed_at = self._s.clock()
            self._lease_unconfirmed = False
        self.rebuild_locked()

    # -- watches ------------------------------------------------------------------------------

    def watch(self) -> None:
        """Start the watches behind ``view()`` (idempotent, non-blocking).

        Installed from a separate thread: kazoo's watch constructors read synchronously and
        retry for ever while disconnected, which must not stall the caller.
        """
        with self._s.lock:
            if self._s.closed or self._watch_installed >= {*SINGLE_WATCHES, *DIRECTORIES}:
                return
            if self._watch_thread_running:
                self._watch_again = True  # the running installer takes another pass
                return
            self._watch_thread_running = True
        threading.Thread(
            target=self._install_watches, name="failoverd-zk-watch", daemon=True
        ).start()

    def _install_watches(self) -> None:
        for _ in range(10):  # bounded: one pass per watch() call that raced with this thread
            with self._s.lock:
                self._watch_again = False
            try:
                self._install_watches_once()
            except ConnectionClosedError:
                pass
            except Exception as exc:
                log.error("failoverd: cannot watch %s: %r", self._s.chroot, exc)
            with self._s.lock:
                if not self._watch_again or self._s.closed:
                    self._watch_thread_running = False
                    return
        with self._s.lock:
            self._watch_thread_running = False

    def _install_watches_once(self) -> None:
        client = self._s.client
        for name in SINGLE_WATCHES:
            if name in self._watch_installed:
                continue
            self._watchers.append(
                DataWatch(
                    client,
                    self._s.path(name),
                    lambda data, stat, _event=None, name=name: self._on_data(name, data, stat),
                )
            )
            self._watch_installed.add(name)
        if "members" not in self._watch_installed:
            members = self._s.path("members")
            if client.exists(members) is None:
                # A ChildrenWatch on a missing node stops silently. No cluster here: the view
                # stays None (wait_view says why) until ensure_layout() calls watch() again.
                with self._s.lock:
                    self._layout_missing = f"{members} does not exist: run failoverctl init"
                return
            self._watchers.append(ChildrenWatch(client, members, self._members.on_children))
            self._watch_installed.add("members")
        if "rejoin" not in self._watch_installed:
            rejoin = self._s.path("rejoin")
            if client.exists(rejoin, watch=lambda _event: self.watch()) is None:
                # A cluster laid out before rejoin requests existed: none is pending. The
                # exists-watch installs the ChildrenWatch once the first request creates it.
                with self._s.lock:
                    self._rejoin.listed_empty_locked()
                    self.rebuild_locked()
                self._s.notify()
                return
            self._watchers.append(ChildrenWatch(client, rejoin, self._rejoin.on_children))
            self._watch_installed.add("rejoin")

    def _on_data(self, name: str, data: bytes | None, stat: Any) -> None:
        """One of the fixed nodes changed (kazoo thread). Never raises: bad data is a problem."""
        try:
            with self._s.lock:
                if self._stale_locked(name, stat):
                    log.debug("ignoring a watch answer on %s older than our own write", name)
                else:
                    self._apply_data_locked(name, data, stat)
                self._seen.add(name)
                self.rebuild_locked()
        except Exception:
            log.exception("failoverd: watch callback for %s failed", name)
            return
        self._s.notify()

    def _stale_locked(self, name: str, stat: Any) -> bool:
        """Is this watch answer older than a write of ours already shown in the view?

        A missing lease cannot be dated: while our fresh lease is unconfirmed, "missing" is the
        answer to a read made before our transaction (our session is alive, and only our own
        release deletes it; the session's loss clears this state).
        """
        if stat is None:
            return name == "lease" and self._lease_unconfirmed
        zxid = stat.czxid if name == "lease" else stat.mzxid
        return bool(zxid < self._floors[name])

    def _apply_data_locked(self, name: str, data: bytes | None, stat: Any) -> None:
        self._problems.pop(name, None)
        if stat is None:
            self._confirmed[name] = None
        else:
            self._confirmed[name] = stat.czxid if name == "lease" else stat.mzxid
            if name == "lease":
                self._lease_unconfirmed = False
        if name == "paused":
            self._paused = stat is not None
        elif name == "lease":
            self._lease_owner = stat.ephemeralOwner if stat is not None else None
            self._lease_changed_at = self._s.clock()
            if data is None:
                self._lease = None
            else:
                try:
                    self._lease = lease_from_json(data)
                except MalformedRecord as exc:
                    self._problems[name] = f"malformed lease record, nobody may take it: {exc}"
                    self._lease = LeaseInfo(MALFORMED_LEASE_NODE, UNKNOWN_EPOCH, 0.0, False)
        elif name == "epoch":
            self._epoch = UNKNOWN_EPOCH
            self._epoch_version = None
            if data is None:
                self._problems[name] = f"{self._s.path('epoch')} is missing: run failoverctl init"
            else:
                try:
                    self._epoch = epoch_from_bytes(data)
                    self._epoch_version = stat.version
                except MalformedRecord as exc:
                    self._problems[name] = f"malformed epoch counter, ignored: {exc}"
        elif name == "last_leader":
            self._last_leader = None
            if data is not None:
                try:
                    self._last_leader = last_leader_from_json(data)
                except MalformedRecord as exc:
                    self._problems[name] = f"malformed last_leader record, ignored: {exc}"
        elif name == "switchover":
            self._switchover = None
            if data is not None:
                try:
                    self._switchover = switchover_from_json(data)
                except MalformedRecord as exc:
                    self._problems[name] = f"malformed switchover request, ignored: {exc}"
        elif name == "position":
            self._position = None
            if data is not None:
                try:
                    self._position = position_from_json(data)
                except MalformedRecord as exc:
                    self._problems[name] = f"malformed position record, ignored: {exc}"
        elif name == "sync":
            self._sync = None
            if data is not None:
                try:
                    self._sync = sync_from_json(data)
                except MalformedRecord as exc:
                    self._problems[name] = (
                        "malformed sync record, read as none (no standby is trusted to hold "
                        f"every commit): {exc}"
                    )

    # -- the snapshot -------------------------------------------------------------------------

    def rebuild_locked(self) -> None:
        """Make the new frozen snapshot (member ages are filled in by ``view()``).

        The first one waits until every watched node was read once; after that the view never
        goes back to None: a member that appeared but was not read yet is simply not in it.
        Watches answer independently, so the epoch shown is the highest one any record proves
        (the counter is set in the same transaction that creates the lease).
        """
        if self._base_view is None and not (
            all(n in self._seen for n in SINGLE_WATCHES)
            and self._members.complete_locked()
            and self._rejoin.complete_locked()
        ):
            return
        lease = self._lease
        if lease is not None and lease.node != MALFORMED_LEASE_NODE:
            mine = self._s.sid is not None and self._lease_owner == self._s.sid
            lease = dataclasses.replace(lease, mine=mine)
        epoch = self._epoch
        if epoch != UNKNOWN_EPOCH:
            for record in (self._lease, self._last_leader):
                if record is not None:
                    epoch = max(epoch, record.epoch)
        problems = dict(self._problems)
        requests: list[RejoinRequest] = []
        for request in self._rejoin.records_locked():
            if isinstance(request, _Unreadable):
                problems[f"rejoin/{request.node}"] = (
                    f"malformed rejoin request, ignored: {request.error}"
                )
            else:
                requests.append(request)
        self._base_view = ClusterView(
            epoch=epoch,
            lease=lease,
            last_leader=self._last_leader,
            members=tuple(self._members.records_locked()),
            switchover=self._switchover,
            paused=self._paused,
            problems=tuple(problems[k] for k in sorted(problems)),
            lease_changed_at=self._lease_changed_at,
            position=self._position,
            rejoin_requests=tuple(requests),
            sync=self._sync,
        )
        self._view_changed.notify_all()

    def view(self) -> ClusterView | None:
        """The latest snapshot, None until every watched node was read once; non-blocking."""
        with self._s.lock:
            base = self._base_view
            if base is None:
                return None
            now = self._s.clock()
            entries = self._members.entries
            members = tuple(
                dataclasses.replace(m, age=max(0.0, now - entries[m.node].seen_at))
                if isinstance(m, MemberStatus) and m.node in entries
                else m
                for m in base.members
            )
        return dataclasses.replace(base, members=members)

    def wait_view(self, timeout: float) -> ClusterView:
        """Block until ``view()`` is available (for the CLI and tests); bounded by ``timeout``."""
        deadline = self._s.clock() + timeout
        with self._s.lock:
            for _ in range(MAX_LOOP):
                if self._base_view is not None:
                    break
                remaining = deadline - self._s.clock()
                if remaining <= 0:
                    break
                self._view_changed.wait(min(remaining, 0.5))
        view = self.view()
        if view is None:
            missing = None if self._members.listed else self._layout_missing
            why = missing or f"connection {self._s.state.value}"
            raise ZkOperationFailed(
                f"no complete view of {self._s.chroot} within {timeout} s ({why})"
            )
        return view

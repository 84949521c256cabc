"""The watches behind ``ClusterView``: every record of the cluster, kept current by kazoo watches
and published as one immutable snapshot.

Threads: kazoo runs watch callbacks on its own threads. They only take the session's lock for a
moment, rebuild a frozen snapshot and wake the listeners; they never block and never raise (bad
data becomes a reported problem, not a dead watcher).

Our own writes are shown at once (``show_acquired``, ``show_released``); a watch answer older
than such a write is then ignored, so the view never steps back behind what this process did.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from kazoo.exceptions import ConnectionClosedError
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from failoverd.core import (
    ClusterView,
    LastLeader,
    LeaseInfo,
    MalformedMember,
    MemberStatus,
    SwitchoverRequest,
    ZkState,
)
from failoverd.zk.errors import MalformedRecord, ZkOperationFailed
from failoverd.zk.records import (
    MALFORMED_LEASE_NODE,
    UNKNOWN_EPOCH,
    epoch_from_bytes,
    last_leader_from_json,
    lease_from_json,
    member_from_json,
    switchover_from_json,
)
from failoverd.zk.session import MAX_LOOP, Session

log = logging.getLogger(__name__)

SINGLE_WATCHES = ("lease", "epoch", "last_leader", "switchover", "paused")


@dataclasses.dataclass
class _MemberEntry:
    record: MemberStatus | MalformedMember
    seen_at: float  # reader's boottime when this content was first seen


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
        self._last_leader: LastLeader | None = None
        self._switchover: SwitchoverRequest | None = None
        self._paused = False
        self._problems: dict[str, str] = {}
        self._member_names: frozenset[str] = frozenset()
        self._members: dict[str, _MemberEntry] = {}
        self._member_watches: dict[str, Any] = {}  # name -> DataWatch (None while installing)
        self._member_read: set[str] = set()
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

    # -- our own writes -------------------------------------------------------------------------

    def show_acquired(self, lease: LeaseInfo, epoch: int, zxid: int) -> None:
        """Show our fresh lease and epoch at once, unless a watch reported something newer."""
        with self._s.lock:
            if (self._confirmed["lease"] or 0) < zxid:
                self._lease, self._lease_owner = lease, self._s.sid
                self._lease_unconfirmed = True
                self._floors["lease"] = zxid
                self._problems.pop("lease", None)
            if (self._confirmed["epoch"] or 0) < zxid:
                self._epoch = epoch
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
            if self._s.closed or self._watch_installed >= {*SINGLE_WATCHES, "members"}:
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
        if "members" in self._watch_installed:
            return
        members = self._s.path("members")
        if client.exists(members) is None:
            # A ChildrenWatch on a missing node stops silently. No cluster here: the view stays
            # None (wait_view says why) until ensure_layout() calls watch() again.
            with self._s.lock:
                self._layout_missing = f"{members} does not exist: run failoverctl init"
            return
        self._watchers.append(ChildrenWatch(client, members, self._on_children))
        self._watch_installed.add("members")

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
            if data is None:
                self._problems[name] = f"{self._s.path('epoch')} is missing: run failoverctl init"
            else:
                try:
                    self._epoch = epoch_from_bytes(data)
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

    def _on_children(self, children: list[str]) -> None:
        """The member list changed (kazoo thread): watch newcomers from another thread."""
        try:
            with self._s.lock:
                self._member_names = frozenset(children)
                self._seen.add("members")
                self._layout_missing = None
                new = [c for c in children if c not in self._member_watches]
                for name in new:
                    self._member_watches[name] = None
                self.rebuild_locked()
            for name in new:
                self._s.client.handler.spawn(self._watch_member, name)
        except Exception:
            log.exception("failoverd: members watch callback failed")
            return
        self._s.notify()

    def _watch_member(self, name: str) -> None:
        """One DataWatch per member name, kept for the client's life (names are few)."""
        try:
            watch = DataWatch(
                self._s.client,
                self._s.path(f"members/{name}"),
                lambda data, stat, _event=None: self._on_member(name, data, stat),
            )
            with self._s.lock:
                self._member_watches[name] = watch
        except ConnectionClosedError:
            return
        except Exception as exc:
            log.error("failoverd: cannot watch member %s: %r", name, exc)
            with self._s.lock:
                self._members[name] = _MemberEntry(
                    MalformedMember(name, f"cannot read members/{name}: {exc!r}"), self._s.clock()
                )
                self._member_read.add(name)
                self.rebuild_locked()
            self._s.notify()

    def _on_member(self, name: str, data: bytes | None, stat: Any) -> None:
        try:
            with self._s.lock:
                if data is None or stat is None:
                    self._members.pop(name, None)
                else:
                    self._members[name] = _MemberEntry(
                        record=member_from_json(name, data),
                        seen_at=self._s.clock(),
                    )
                self._member_read.add(name)
                self.rebuild_locked()
        except Exception:
            log.exception("failoverd: watch callback for member %s failed", name)
            return
        self._s.notify()

    # -- the snapshot -------------------------------------------------------------------------

    def rebuild_locked(self) -> None:
        """Make the new frozen snapshot (member ages are filled in by ``view()``).

        The first one waits until every watched node was read once; after that the view never
        goes back to None: a member that appeared but was not read yet is simply not in it.
        Watches answer independently, so the epoch shown is the highest one any record proves
        (the counter is set in the same transaction that creates the lease).
        """
        if self._base_view is None and not (
            all(n in self._seen for n in (*SINGLE_WATCHES, "members"))
            and all(n in self._member_read for n in self._member_names)
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
        members = tuple(
            self._members[n].record for n in sorted(self._member_names) if n in self._members
        )
        self._base_view = ClusterView(
            epoch=epoch,
            lease=lease,
            last_leader=self._last_leader,
            members=members,
            switchover=self._switchover,
            paused=self._paused,
            problems=tuple(self._problems[k] for k in sorted(self._problems)),
            lease_changed_at=self._lease_changed_at,
        )
        self._view_changed.notify_all()

    def view(self) -> ClusterView | None:
        """The latest snapshot, None until every watched node was read once; non-blocking."""
        with self._s.lock:
            base = self._base_view
            if base is None:
                return None
            now = self._s.clock()
            members = tuple(
                dataclasses.replace(m, age=max(0.0, now - self._members[m.node].seen_at))
                if isinstance(m, MemberStatus) and m.node in self._members
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
            why = self._layout_missing or f"connection {self._s.state.value}"
            raise ZkOperationFailed(
                f"no complete view of {self._s.chroot} within {timeout} s ({why})"
            )
        return view

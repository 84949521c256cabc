"""ZooKeeper adapter (kazoo): the lease, the epoch, member records, requests and history.

It decides nothing: it does I/O and reports what it saw as the core's types (``ZkStatus``,
``ClusterView``). Everything kazoo raises is turned into a ``LeaseError`` at this edge.

Layout under the cluster's chroot (``/failoverd/<cluster>``; paths are prefixed here rather than
with kazoo's chroot, so that the chroot node itself can be created with its ACL)::

    lease          ephemeral  {"node", "epoch", "since"}
    epoch          persistent ASCII integer, +1 on every acquisition
    last_leader    persistent {"node", "epoch", "final_lsn", "clean"} (empty: none yet)
    members/<node> ephemeral  a MemberStatus (without ``age``)
    switchover     persistent {"target", "from_epoch", "requested_by", "deadline", "force"}
    paused         persistent, present while in maintenance
    history/event- persistent sequential records

Threads: kazoo runs watch callbacks and state listeners on its own threads. They only take
``_lock`` for a moment, rebuild a frozen snapshot and wake the daemon's listeners; they never
block and never raise (bad data becomes a reported problem, not a dead watcher).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import Connect
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.retry import KazooRetry
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

from failoverd.clock import boottime, walltime
from failoverd.core import (
    CheckStatus,
    ClusterView,
    LastLeader,
    LeaseInfo,
    MalformedMember,
    MemberStatus,
    SwitchoverRequest,
    ZkState,
    ZkStatus,
)

log = logging.getLogger(__name__)

MALFORMED_LEASE_NODE = "<malformed>"
UNKNOWN_EPOCH = -1  # the epoch node is missing or unreadable: nobody can acquire against it

_KAZOO_ERRORS: tuple[type[BaseException], ...] = (KazooException, KazooTimeoutError, OSError)
_EPOCH_RE = re.compile(rb"\s*(\d{1,18})\s*")
_MAX_LOOP = 10_000  # hard bound on every wait loop, on top of its time bound


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


class LeaseError(Exception):
    """Base of everything this adapter raises: callers never see a kazoo exception."""


class ZkUnreachable(LeaseError):  # noqa: N818 (names fixed by the design)
    """Could not connect to ZooKeeper in time."""


class DuplicateNode(LeaseError):  # noqa: N818 (names fixed by the design)
    """Another live session publishes as this node: two daemons share a node name."""


class LeaseConflict(LeaseError):  # noqa: N818 (names fixed by the design)
    """Lost the race for the lease, the epoch moved on, or the lease is not ours."""


class ZkOperationFailed(LeaseError):  # noqa: N818 (names fixed by the design)
    """Any other ZooKeeper failure (connection loss, timeout, permission), with context."""


class MalformedRecord(LeaseError, ValueError):  # noqa: N818 (names fixed by the design)
    """A record that does not parse; the message says which field and why."""


# ------------------------------------------------------------------------------------------
# Records: JSON in and out. Strict on types (a wrong type is as bad as a missing field),
# tolerant of unknown fields (a newer daemon may add some).
# ------------------------------------------------------------------------------------------


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedRecord(f"{what}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise MalformedRecord(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _missing(what: str, key: str) -> MalformedRecord:
    return MalformedRecord(f"{what}: missing field {key!r}")


def _wrong(what: str, key: str, expected: str, value: object) -> MalformedRecord:
    return MalformedRecord(f"{what}: field {key!r} must be {expected}, got {value!r}")


def _str(obj: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str:
    if key not in obj:
        if default is None:
            raise _missing(what, key)
        return default
    value = obj[key]
    if not isinstance(value, str):
        raise _wrong(what, key, "a string", value)
    return value


def _opt_str(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _wrong(what, key, "a string or null", value)
    return value


def _int(obj: Mapping[str, Any], key: str, what: str) -> int:
    if key not in obj:
        raise _missing(what, key)
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(what, key, "an integer", value)
    return value


def _opt_int(obj: Mapping[str, Any], key: str, what: str) -> int | None:
    value = obj.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _wrong(what, key, "an integer or null", value)
    return value


def _num(obj: Mapping[str, Any], key: str, what: str, default: float | None = None) -> float:
    if key not in obj:
        if default is None:
            raise _missing(what, key)
        return default
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _wrong(what, key, "a finite number", value)
    return float(value)


def _opt_num(obj: Mapping[str, Any], key: str, what: str) -> float | None:
    if obj.get(key) is None:
        return None
    return _num(obj, key, what)


def _bool(obj: Mapping[str, Any], key: str, what: str, default: bool | None = None) -> bool:
    if key not in obj:
        if default is None:
            raise _missing(what, key)
        return default
    value = obj[key]
    if not isinstance(value, bool):
        raise _wrong(what, key, "true or false", value)
    return value


def _dump(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def member_to_json(status: MemberStatus) -> bytes:
    """A member record; ``age`` is the reader's notion and is not stored."""
    return _dump(
        {
            "node": status.node,
            "role": status.role,
            "epoch": status.epoch,
            "eligible": status.eligible,
            "healthy": status.healthy,
            "reason": status.reason,
            "reason_code": status.reason_code,
            "lsn": status.lsn,
            "db_role": status.db_role,
            "checks": [
                {
                    "name": c.name,
                    "healthy": c.healthy,
                    "reason": c.reason,
                    "latency": c.latency,
                    "successes": c.successes,
                    "failures": c.failures,
                }
                for c in status.checks
            ],
            "published_at": status.published_at,
            "version": status.version,
        }
    )


def _check_from_obj(obj: object, index: int, what: str) -> CheckStatus:
    where = f"{what}: checks[{index}]"
    if not isinstance(obj, dict):
        raise MalformedRecord(f"{where}: expected an object, got {obj!r}")
    return CheckStatus(
        name=_str(obj, "name", where),
        healthy=_bool(obj, "healthy", where),
        reason=_str(obj, "reason", where, default=""),
        latency=_opt_num(obj, "latency", where),
        successes=_opt_int(obj, "successes", where) or 0,
        failures=_opt_int(obj, "failures", where) or 0,
    )


def member_from_json(node: str, data: bytes) -> MemberStatus | MalformedMember:
    """Parse ``members/<node>``; anything wrong becomes a ``MalformedMember`` saying what."""
    what = f"members/{node}"
    try:
        obj = _load_object(data, what)
        recorded = _str(obj, "node", what)
        if recorded != node:
            raise MalformedRecord(f"{what}: record names node {recorded!r}")
        checks = obj.get("checks", [])
        if not isinstance(checks, list):
            raise _wrong(what, "checks", "a list", checks)
        return MemberStatus(
            node=node,
            role=_str(obj, "role", what),
            epoch=_int(obj, "epoch", what),
            eligible=_bool(obj, "eligible", what),
            healthy=_bool(obj, "healthy", what),
            reason=_str(obj, "reason", what),
            reason_code=_str(obj, "reason_code", what, default=""),
            lsn=_opt_int(obj, "lsn", what),
            db_role=_str(obj, "db_role", what, default="unknown"),
            checks=tuple(_check_from_obj(c, i, what) for i, c in enumerate(checks)),
            published_at=_num(obj, "published_at", what, default=0.0),
            version=_str(obj, "version", what, default=""),
        )
    except MalformedRecord as exc:
        return MalformedMember(node=node, error=str(exc))


def lease_to_json(lease: LeaseInfo) -> bytes:
    """The lease record; ``mine`` is the reader's notion and is not stored."""
    return _dump({"node": lease.node, "epoch": lease.epoch, "since": lease.since})


def lease_from_json(data: bytes, mine: bool = False) -> LeaseInfo:
    """Parse ``lease``; raises ``MalformedRecord``."""
    obj = _load_object(data, "lease")
    return LeaseInfo(
        node=_str(obj, "node", "lease"),
        epoch=_int(obj, "epoch", "lease"),
        since=_num(obj, "since", "lease"),
        mine=mine,
    )


def last_leader_to_json(last: LastLeader) -> bytes:
    return _dump(
        {
            "node": last.node,
            "epoch": last.epoch,
            "final_lsn": last.final_lsn,
            "clean": last.clean,
            "left_serving": last.left_serving,
            "timeline": last.timeline,
        }
    )


def last_leader_from_json(data: bytes) -> LastLeader | None:
    """Parse ``last_leader``; empty data means no voluntary release yet."""
    if not data.strip():
        return None
    obj = _load_object(data, "last_leader")
    return LastLeader(
        node=_str(obj, "node", "last_leader"),
        epoch=_int(obj, "epoch", "last_leader"),
        final_lsn=_opt_int(obj, "final_lsn", "last_leader"),
        clean=_bool(obj, "clean", "last_leader"),
        left_serving=_bool(obj, "left_serving", "last_leader", default=False),
        timeline=_opt_int(obj, "timeline", "last_leader"),
    )


def switchover_to_json(req: SwitchoverRequest) -> bytes:
    return _dump(
        {
            "target": req.target,
            "from_epoch": req.from_epoch,
            "requested_by": req.requested_by,
            "deadline": req.deadline,
            "force": req.force,
        }
    )


def switchover_from_json(data: bytes) -> SwitchoverRequest:
    obj = _load_object(data, "switchover")
    return SwitchoverRequest(
        target=_opt_str(obj, "target", "switchover"),
        from_epoch=_int(obj, "from_epoch", "switchover"),
        requested_by=_str(obj, "requested_by", "switchover"),
        deadline=_num(obj, "deadline", "switchover"),
        force=_bool(obj, "force", "switchover", default=False),
    )


def epoch_to_bytes(epoch: int) -> bytes:
    return str(epoch).encode("ascii")


def epoch_from_bytes(data: bytes) -> int:
    """The epoch counter: a non-negative ASCII integer and nothing else."""
    match = _EPOCH_RE.fullmatch(data)
    if match is None:
        raise MalformedRecord(f"epoch: expected a non-negative integer, got {data[:40]!r}")
    return int(match.group(1))


def history_to_json(record: Mapping[str, object], now: float) -> bytes:
    """A history record, stamped with the wall clock unless it carries a time already."""
    rec = dict(record)
    rec.setdefault("time", now)
    return _dump(rec)


# ------------------------------------------------------------------------------------------
# The adapter
# ------------------------------------------------------------------------------------------

_STATE_MAP = {
    KazooState.CONNECTED: ZkState.CONNECTED,
    KazooState.SUSPENDED: ZkState.SUSPENDED,
    KazooState.LOST: ZkState.LOST,
}
_SINGLE_WATCHES = ("lease", "epoch", "last_leader", "switchover", "paused")


@dataclasses.dataclass
class _MemberEntry:
    record: MemberStatus | MalformedMember
    seen_at: float  # reader's boottime when this content was first seen


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
        self.hosts = tuple(hosts)
        self.chroot = chroot
        self.node = node
        self.session_timeout = session_timeout
        self._clock = clock
        self._wallclock = wallclock
        if credentials is None:
            self._acl: list[Any] = list(OPEN_ACL_UNSAFE)
            auth_data = None
        else:
            user, password = credentials
            self._acl = [make_digest_acl(user, password, all=True)]
            auth_data = [("digest", f"{user}:{password}")]
        # Reconnect quickly: a slow back-off after a ZooKeeper restart could outlast the session.
        retry = KazooRetry(
            max_tries=-1,
            delay=0.05,
            backoff=1.5,
            max_jitter=0.2,
            max_delay=max(0.2, min(1.0, session_timeout / 4)),
        )
        self._client = KazooClient(
            hosts=",".join(self.hosts),
            timeout=session_timeout,
            auth_data=auth_data,
            connection_retry=retry,
        )

        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._closed = False
        self._started = False
        self._state = ZkState.LOST
        self._changed_at = clock()
        self._session: int | None = None  # id of the live session, None once it is lost
        self._negotiated_ms: int | None = None
        # round-trips
        self._rt_token = 0
        self._rt_outstanding: tuple[int, float] | None = None  # (token, send time)
        self._rt_last_ok: float | None = None
        self._rt_failures = 0
        # watched state
        self._watch_installed: set[str] = set()
        self._watch_thread_running = False
        self._watch_again = False
        self._layout_missing: str | None = None
        self._seen: set[str] = set()
        # Our own writes are shown at once; watch answers older than them are then ignored.
        # floor = zxid of our last write (lease: compared with czxid, others with mzxid).
        self._floors: dict[str, int] = dict.fromkeys(_SINGLE_WATCHES, 0)
        self._confirmed: dict[str, int | None] = dict.fromkeys(_SINGLE_WATCHES)
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
        self._view_changed = threading.Condition(self._lock)

        self._client.add_listener(self._on_state)
        self._hook_negotiation()

    # -- paths --------------------------------------------------------------------------------

    def path(self, suffix: str = "") -> str:
        """Absolute path of ``suffix`` under the chroot."""
        return f"{self.chroot}/{suffix}" if suffix else self.chroot

    @property
    def _member_path(self) -> str:
        return self.path(f"members/{self.node}")

    # -- connection ---------------------------------------------------------------------------

    def _hook_negotiation(self) -> None:
        """Catch the session timeout the server granted: kazoo keeps only the requested one.

        The Connect answer passes through the connection handler's ``_invoke`` (kazoo 2.x);
        wrapping it there records the value before kazoo reports CONNECTED. ``start`` falls
        back to the ``cons`` four-letter command if a future kazoo changes this.
        """
        conn = getattr(self._client, "_connection", None)
        original = getattr(conn, "_invoke", None)
        if conn is None or original is None:
            return

        def invoke(timeout: float, request: Any, xid: Any = None) -> Any:
            result = original(timeout, request, xid)
            if isinstance(request, Connect) and isinstance(result, tuple) and result:
                granted = getattr(result[0], "time_out", None)
                if isinstance(granted, int) and granted > 0:
                    with self._lock:
                        self._negotiated_ms = granted
            return result

        conn._invoke = invoke

    def _negotiated_from_cons(self) -> int | None:
        """Fallback: find our session in ``cons`` of each host and read its ``to=``."""
        session = self._session
        if session is None:
            return None
        wanted = f"sid={session:#x},"
        for hostport in self.hosts:
            host, _, port = hostport.rpartition(":")
            try:
                chunks: list[bytes] = []
                with socket.create_connection((host, int(port)), timeout=1.0) as sock:
                    sock.sendall(b"cons")
                    for _ in range(_MAX_LOOP):
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        chunks.append(chunk)
            except (OSError, ValueError):
                continue
            answer = b"".join(chunks).decode(errors="replace")
            for line in answer.splitlines():
                if wanted in line:
                    match = re.search(r"[,(]to=(\d+)", line)
                    if match:
                        return int(match.group(1))
        return None

    def start(self, timeout: float) -> None:
        """Connect; raise ZkUnreachable naming the hosts if no session within ``timeout``."""
        if self._closed:
            raise ZkOperationFailed("this ZkCluster was closed; make a new one")
        if self._started:
            return
        try:
            self._client.start(timeout=timeout)
        except KazooTimeoutError:
            raise ZkUnreachable(
                f"could not connect to ZooKeeper at {','.join(self.hosts)} within {timeout} s"
            ) from None
        except _KAZOO_ERRORS as exc:
            self._safe_stop()
            raise ZkUnreachable(
                f"could not connect to ZooKeeper at {','.join(self.hosts)}: {exc!r}"
            ) from None
        self._started = True
        with self._lock:
            if self._session is None:  # the listener may have run before client_id was set
                self._session = self._session_id_now()
            known = self._negotiated_ms
        if known is None:
            known = self._negotiated_from_cons()
            if known is None:
                self.close()
                raise ZkOperationFailed(
                    "connected, but could not learn the negotiated session timeout "
                    "(kazoo internals changed and 'cons' is not allowed by the server)"
                )
            with self._lock:
                self._negotiated_ms = known
        log.info(
            "zookeeper connected: hosts=%s session=%#x requested_timeout=%.3fs negotiated=%.3fs",
            ",".join(self.hosts),
            self._session or 0,
            self.session_timeout,
            known / 1000,
        )

    def _session_id_now(self) -> int | None:
        cid = self._client.client_id
        if cid is None:
            return None
        sid: int = cid[0]
        return sid

    @property
    def negotiated_timeout(self) -> float:
        """The session timeout (seconds) the server granted: what T really is."""
        ms = self._negotiated_ms
        if ms is None:
            raise ZkOperationFailed("not connected yet: no session timeout negotiated")
        return ms / 1000

    @property
    def session_id(self) -> int | None:
        """The live session's id (for logs and tests), None when not connected or lost."""
        return self._session

    def _on_state(self, kstate: Any) -> None:
        """kazoo's state listener (its connection thread): record, rebuild, wake; never block."""
        state = _STATE_MAP.get(kstate, ZkState.LOST)
        with self._lock:
            if state == ZkState.CONNECTED:
                self._session = self._session_id_now()
            elif state == ZkState.LOST:
                self._session = None
                if self._lease_unconfirmed:  # our ephemeral lease died with the session
                    self._lease, self._lease_owner = None, None
                    self._lease_changed_at = self._clock()
                    self._lease_unconfirmed = False
            if state != self._state:
                self._state = state
                self._changed_at = self._clock()
            self._rebuild_locked()
        log.info("zookeeper state: %s", state.value)
        self._notify()

    def status(self) -> ZkStatus:
        """Connection state and round-trip freshness; non-blocking."""
        with self._lock:
            return ZkStatus(
                state=self._state,
                changed_at=self._changed_at,
                last_roundtrip_sent_at=self._rt_last_ok,
                negotiated_timeout=(
                    self._negotiated_ms / 1000 if self._negotiated_ms is not None else None
                ),
            )

    @property
    def roundtrip_failures(self) -> int:
        """Round-trips that failed or were abandoned at their deadline (for metrics)."""
        return self._rt_failures

    def roundtrip(self, deadline: float) -> None:
        """Keep one cheap read in flight; its success proves the session alive at send time.

        Non-blocking, called every tick. An outstanding read older than ``deadline`` seconds is
        abandoned (counted as failed, its late answer ignored) so a new one can be sent.
        """
        now = self._clock()
        with self._lock:
            if self._closed or self._state != ZkState.CONNECTED:
                return
            if self._rt_outstanding is not None:
                if now - self._rt_outstanding[1] <= deadline:
                    return
                self._rt_outstanding = None
                self._rt_failures += 1
            self._rt_token += 1
            token = self._rt_token
            self._rt_outstanding = (token, now)
        try:
            result = self._client.exists_async(self.path("epoch"))
        except _KAZOO_ERRORS as exc:
            with self._lock:
                if self._rt_outstanding is not None and self._rt_outstanding[0] == token:
                    self._rt_outstanding = None
                    self._rt_failures += 1
            log.debug("zookeeper round-trip not sent: %r", exc)
            return
        result.rawlink(lambda res: self._roundtrip_done(token, now, res))

    def _roundtrip_done(self, token: int, sent_at: float, result: Any) -> None:
        ok = result.exception is None
        with self._lock:
            if self._rt_outstanding is None or self._rt_outstanding[0] != token:
                return  # abandoned at its deadline: counted as failed already
            self._rt_outstanding = None
            if ok:
                if self._rt_last_ok is None or sent_at > self._rt_last_ok:
                    self._rt_last_ok = sent_at
            else:
                self._rt_failures += 1

    # -- listeners ----------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs on kazoo's threads after any view or connection change."""
        with self._lock:
            self._listeners.append(callback)

    def _notify(self) -> None:
        with self._lock:
            callbacks = list(self._listeners)
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("failoverd zookeeper listener failed")

    # -- helpers for blocking calls ------------------------------------------------------------

    def _require_connected(self, what: str) -> None:
        """Refuse to queue writes while disconnected: kazoo would send them after a reconnect,
        long after the caller gave up on them."""
        if self._closed:
            raise ZkOperationFailed(f"cannot {what}: client closed")
        state = self._state
        if state != ZkState.CONNECTED:
            raise ZkOperationFailed(f"cannot {what}: ZooKeeper connection is {state.value}")

    def _wait(self, async_result: Any, deadline: float, what: str) -> Any:
        """Wait for one async result until ``deadline`` (boottime); kazoo errors are wrapped."""
        remaining = max(0.0, deadline - self._clock())
        try:
            return async_result.get(timeout=remaining)
        except KazooTimeoutError:
            raise ZkOperationFailed(
                f"{what}: no answer from ZooKeeper within the time left ({remaining:.2f} s); "
                "the outcome is unknown"
            ) from None
        except NoAuthError:
            raise ZkOperationFailed(
                f"{what}: not allowed (NoAuth) under {self.chroot}: wrong credentials "
                "for this cluster?"
            ) from None

    def _wrap(self, exc: BaseException, what: str) -> ZkOperationFailed:
        if isinstance(exc, NoAuthError):
            return ZkOperationFailed(
                f"{what}: not allowed (NoAuth) under {self.chroot}: wrong credentials "
                "for this cluster?"
            )
        return ZkOperationFailed(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))

    # -- layout -------------------------------------------------------------------------------

    def ensure_layout(self, timeout: float = 5.0) -> None:
        """Create the chroot and its fixed nodes if missing (idempotent), then start watching.

        With credentials every node created here (and every node this adapter creates later)
        carries the digest ACL, so another cluster's daemon can neither read nor write it. The
        chroot's parents keep the open ACL: several clusters share them.
        """
        self._require_connected("create the cluster layout")
        deadline = self._clock() + timeout
        parts = self.chroot.strip("/").split("/")
        parents = ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
        nodes: list[tuple[str, bytes, list[Any]]] = [
            (p, b"", list(OPEN_ACL_UNSAFE)) for p in parents
        ]
        nodes += [
            (self.chroot, b"", self._acl),
            (self.path("epoch"), epoch_to_bytes(0), self._acl),
            (self.path("last_leader"), b"", self._acl),
            (self.path("members"), b"", self._acl),
            (self.path("history"), b"", self._acl),
        ]
        for path, data, acl in nodes:
            try:
                self._wait(
                    self._client.create_async(path, data, acl=acl), deadline, f"create {path}"
                )
                log.info("zookeeper layout: created %s", path)
            except NodeExistsError:
                if path == self.chroot:
                    self._check_chroot_acl(deadline)
            except _KAZOO_ERRORS as exc:
                raise self._wrap(exc, f"create {path}") from None
        self.watch()

    def _check_chroot_acl(self, deadline: float) -> None:
        """Refuse a chroot we may not read (another cluster's); warn when an existing chroot is
        less protected than configured: the isolation between clusters then does not hold."""
        try:
            acls, _stat = self._wait(
                self._client.get_acls_async(self.chroot), deadline, f"read the ACL of {self.chroot}"
            )
        except _KAZOO_ERRORS as exc:
            log.warning("cannot check the ACL of %s: %r", self.chroot, exc)
            return
        if sorted(map(str, acls)) != sorted(map(str, self._acl)):
            log.warning(
                "%s exists with ACL %s, not the configured %s: created with other credentials?",
                self.chroot,
                acls,
                self._acl,
            )

    # -- watches ------------------------------------------------------------------------------

    def watch(self) -> None:
        """Start the watches behind ``view()`` (idempotent, non-blocking).

        Installed from a separate thread: kazoo's watch constructors read synchronously and
        retry for ever while disconnected, which must not stall the caller.
        """
        with self._lock:
            if self._closed or self._watch_installed >= {*_SINGLE_WATCHES, "members"}:
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
            with self._lock:
                self._watch_again = False
            try:
                self._install_watches_once()
            except ConnectionClosedError:
                pass
            except Exception as exc:
                log.error("failoverd: cannot watch %s: %r", self.chroot, exc)
            with self._lock:
                if not self._watch_again or self._closed:
                    self._watch_thread_running = False
                    return
        with self._lock:
            self._watch_thread_running = False

    def _install_watches_once(self) -> None:
        for name in _SINGLE_WATCHES:
            if name in self._watch_installed:
                continue
            self._watchers.append(
                DataWatch(
                    self._client,
                    self.path(name),
                    lambda data, stat, _event=None, name=name: self._on_data(name, data, stat),
                )
            )
            self._watch_installed.add(name)
        if "members" in self._watch_installed:
            return
        members = self.path("members")
        if self._client.exists(members) is None:
            # A ChildrenWatch on a missing node stops silently. No cluster here: the view stays
            # None (wait_view says why) until ensure_layout() calls watch() again.
            with self._lock:
                self._layout_missing = f"{members} does not exist: run failoverctl init"
            return
        self._watchers.append(ChildrenWatch(self._client, members, self._on_children))
        self._watch_installed.add("members")

    def _on_data(self, name: str, data: bytes | None, stat: Any) -> None:
        """One of the fixed nodes changed (kazoo thread). Never raises: bad data is a problem."""
        try:
            with self._lock:
                if self._stale_locked(name, stat):
                    log.debug("ignoring a watch answer on %s older than our own write", name)
                else:
                    self._apply_data_locked(name, data, stat)
                self._seen.add(name)
                self._rebuild_locked()
        except Exception:
            log.exception("failoverd: watch callback for %s failed", name)
            return
        self._notify()

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
            self._lease_changed_at = self._clock()
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
                self._problems[name] = f"{self.path('epoch')} is missing: run failoverctl init"
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
            with self._lock:
                self._member_names = frozenset(children)
                self._seen.add("members")
                self._layout_missing = None
                new = [c for c in children if c not in self._member_watches]
                for name in new:
                    self._member_watches[name] = None
                self._rebuild_locked()
            for name in new:
                self._client.handler.spawn(self._watch_member, name)
        except Exception:
            log.exception("failoverd: members watch callback failed")
            return
        self._notify()

    def _watch_member(self, name: str) -> None:
        """One DataWatch per member name, kept for the client's life (names are few)."""
        try:
            watch = DataWatch(
                self._client,
                self.path(f"members/{name}"),
                lambda data, stat, _event=None: self._on_member(name, data, stat),
            )
            with self._lock:
                self._member_watches[name] = watch
        except ConnectionClosedError:
            return
        except Exception as exc:
            log.error("failoverd: cannot watch member %s: %r", name, exc)
            with self._lock:
                self._members[name] = _MemberEntry(
                    MalformedMember(name, f"cannot read members/{name}: {exc!r}"), self._clock()
                )
                self._member_read.add(name)
                self._rebuild_locked()
            self._notify()

    def _on_member(self, name: str, data: bytes | None, stat: Any) -> None:
        try:
            with self._lock:
                if data is None or stat is None:
                    self._members.pop(name, None)
                else:
                    self._members[name] = _MemberEntry(
                        record=member_from_json(name, data),
                        seen_at=self._clock(),
                    )
                self._member_read.add(name)
                self._rebuild_locked()
        except Exception:
            log.exception("failoverd: watch callback for member %s failed", name)
            return
        self._notify()

    def _rebuild_locked(self) -> None:
        """Make the new frozen snapshot (member ages are filled in by ``view()``).

        The first one waits until every watched node was read once; after that the view never
        goes back to None: a member that appeared but was not read yet is simply not in it.
        Watches answer independently, so the epoch shown is the highest one any record proves
        (the counter is set in the same transaction that creates the lease).
        """
        if self._base_view is None and not (
            all(n in self._seen for n in (*_SINGLE_WATCHES, "members"))
            and all(n in self._member_read for n in self._member_names)
        ):
            return
        lease = self._lease
        if lease is not None and lease.node != MALFORMED_LEASE_NODE:
            mine = self._session is not None and self._lease_owner == self._session
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
        with self._lock:
            base = self._base_view
            if base is None:
                return None
            now = self._clock()
            members = tuple(
                dataclasses.replace(m, age=max(0.0, now - self._members[m.node].seen_at))
                if isinstance(m, MemberStatus) and m.node in self._members
                else m
                for m in base.members
            )
        return dataclasses.replace(base, members=members)

    def wait_view(self, timeout: float) -> ClusterView:
        """Block until ``view()`` is available (for the CLI and tests); bounded by ``timeout``."""
        deadline = self._clock() + timeout
        with self._lock:
            for _ in range(_MAX_LOOP):
                if self._base_view is not None:
                    break
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._view_changed.wait(min(remaining, 0.5))
        view = self.view()
        if view is None:
            why = self._layout_missing or f"connection {self._state.value}"
            raise ZkOperationFailed(f"no complete view of {self.chroot} within {timeout} s ({why})")
        return view

    # -- members ------------------------------------------------------------------------------

    def claim_member(self, initial: MemberStatus, wait: float, timeout: float = 2.0) -> None:
        """Create our ephemeral ``members/<node>``, waiting up to ``wait`` s for a previous life.

        A record owned by another session that vanishes within ``wait`` was our own previous
        life (its session expiring). One that changes meanwhile, or outlives ``wait``, belongs
        to another live daemon using the same node name: DuplicateNode.
        """
        self._require_connected(f"claim members/{self.node}")
        path = self._member_path
        data = member_to_json(initial)
        deadline = self._clock() + wait
        changed = threading.Event()
        first: Any = None
        for _ in range(_MAX_LOOP):
            op_deadline = self._clock() + timeout
            try:
                self._wait(
                    self._client.create_async(path, data, acl=self._acl, ephemeral=True),
                    op_deadline,
                    f"create {path}",
                )
                log.info("claimed %s", path)
                return
            except NodeExistsError:
                pass
            except _KAZOO_ERRORS as exc:
                raise self._wrap(exc, f"create {path}") from None
            changed.clear()
            try:
                stat = self._wait(
                    self._client.exists_async(path, watch=lambda _e: changed.set()),
                    op_deadline,
                    f"read {path}",
                )
            except _KAZOO_ERRORS as exc:
                raise self._wrap(exc, f"read {path}") from None
            if stat is None:
                continue  # vanished between create and exists: try again
            owner = stat.ephemeralOwner
            if owner == self._session:
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
                    f"another live daemon is publishing as node {self.node!r} "
                    f"(session {owner:#x}): duplicate node name?"
                )
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise DuplicateNode(
                    f"another live daemon is publishing as node {self.node!r} "
                    f"(session {owner:#x}, still there after {wait:.1f} s): duplicate node name?"
                )
            changed.wait(remaining)
        raise DuplicateNode(f"could not claim {path}: gave up after {_MAX_LOOP} attempts")

    def publish(self, status: MemberStatus) -> None:
        """Write our member record, fire and forget (created if missing); failures are logged."""
        if self._state != ZkState.CONNECTED or self._closed:
            log.debug("not publishing %s: connection %s", self._member_path, self._state.value)
            return
        # No ownership check here: claim_member() refused duplicates at start, and the cached
        # owner lags behind a fresh claim or a new session (it would refuse our own record).
        data = member_to_json(status)
        try:
            result = self._client.set_async(self._member_path, data)
        except _KAZOO_ERRORS as exc:
            log.warning("publish %s failed: %r", self._member_path, exc)
            return
        result.rawlink(lambda res: self._published(res, data))

    def _published(self, result: Any, data: bytes) -> None:
        exc = result.exception
        if exc is None:
            return
        if isinstance(exc, NoNodeError):
            try:
                created = self._client.create_async(
                    self._member_path, data, acl=self._acl, ephemeral=True
                )
            except _KAZOO_ERRORS as err:
                log.warning("publish: create %s failed: %r", self._member_path, err)
                return
            created.rawlink(self._publish_created)
            return
        log.warning("publish %s failed: %r", self._member_path, exc)

    def _publish_created(self, result: Any) -> None:
        if result.exception is not None:
            log.warning("publish: create %s failed: %r", self._member_path, result.exception)

    # -- the lease ----------------------------------------------------------------------------

    def acquire(self, expected_epoch: int, timeout: float = 2.0) -> int:
        """Take the free lease in one transaction with epoch n -> n+1; returns the new epoch.

        LeaseConflict when the epoch is not ``expected_epoch`` or the lease exists or the epoch
        moved under us; ZkOperationFailed when the outcome is unknown (the view will tell).
        """
        self._require_connected("acquire the lease")
        deadline = self._clock() + timeout
        epoch_path = self.path("epoch")
        try:
            data, stat = self._wait(self._client.get_async(epoch_path), deadline, "read epoch")
        except NoNodeError:
            raise ZkOperationFailed(f"{epoch_path} is missing: run failoverctl init") from None
        except _KAZOO_ERRORS as exc:
            raise self._wrap(exc, "read epoch") from None
        try:
            current = epoch_from_bytes(data)
        except MalformedRecord as exc:
            raise ZkOperationFailed(f"cannot acquire: {exc}") from None
        if current != expected_epoch:
            raise LeaseConflict(
                f"epoch is {current}, not {expected_epoch}: the lease changed hands meanwhile"
            )
        new_epoch = current + 1
        lease = LeaseInfo(node=self.node, epoch=new_epoch, since=self._wallclock(), mine=True)
        txn = self._client.transaction()
        txn.create(self.path("lease"), lease_to_json(lease), acl=self._acl, ephemeral=True)
        txn.set_data(epoch_path, epoch_to_bytes(new_epoch), version=stat.version)
        results = self._commit(txn, deadline, "acquire the lease")
        failures = [r for r in results if isinstance(r, Exception)]
        if any(isinstance(r, NodeExistsError) for r in failures):
            holder = self._lease.node if self._lease is not None else "another node"
            raise LeaseConflict(f"the lease is already held (by {holder})")
        if any(isinstance(r, BadVersionError) for r in failures):
            raise LeaseConflict(f"epoch {current} moved on while acquiring: lost the race")
        if failures:
            raise self._wrap(failures[-1], "acquire the lease")
        zxid = self._txn_zxid(results)
        with self._lock:
            # Show the result at once, unless a watch already reported something newer.
            if (self._confirmed["lease"] or 0) < zxid:
                self._lease, self._lease_owner = lease, self._session
                self._lease_unconfirmed = True
                self._floors["lease"] = zxid
                self._problems.pop("lease", None)
            if (self._confirmed["epoch"] or 0) < zxid:
                self._epoch = new_epoch
                self._floors["epoch"] = zxid
                self._problems.pop("epoch", None)
            self._rebuild_locked()
        self._notify()
        log.info("lease acquired: node=%s epoch=%d", self.node, new_epoch)
        return new_epoch

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
        """Give up our lease: delete it and write ``last_leader`` in one transaction.

        ``left_serving``: this node's daemon stops while paused and leaves it serving; with no
        lease to delete (it went with an earlier session), ``last_leader`` is written alone,
        provided the epoch is still ``epoch``."""
        self._require_connected("release the lease")
        deadline = self._clock() + timeout
        lease_path = self.path("lease")
        try:
            data, stat = self._wait(self._client.get_async(lease_path), deadline, "read lease")
        except NoNodeError:
            if left_serving:
                self._record_left_serving(epoch, deadline)
                return
            raise LeaseConflict(f"no lease to release (epoch {epoch})") from None
        except _KAZOO_ERRORS as exc:
            raise self._wrap(exc, "read lease") from None
        try:
            held = lease_from_json(data)
        except MalformedRecord as exc:
            raise LeaseConflict(
                f"the lease record is malformed, not ours to release: {exc}"
            ) from None
        if stat.ephemeralOwner != self._session or held.node != self.node or held.epoch != epoch:
            raise LeaseConflict(
                f"the lease is held by {held.node!r} with epoch {held.epoch} "
                f"(session {stat.ephemeralOwner:#x}), not by us with epoch {epoch}"
            )
        last = LastLeader(
            node=self.node,
            epoch=epoch,
            final_lsn=final_lsn,
            clean=clean,
            left_serving=left_serving,
            timeline=timeline,
        )
        txn = self._client.transaction()
        txn.delete(lease_path, version=stat.version)
        txn.set_data(self.path("last_leader"), last_leader_to_json(last))
        results = self._commit(txn, deadline, "release the lease")
        failures = [r for r in results if isinstance(r, Exception)]
        if any(isinstance(r, BadVersionError | NoNodeError) for r in failures):
            raise LeaseConflict(f"the lease of epoch {epoch} changed while releasing it")
        if failures:
            raise self._wrap(failures[-1], "release the lease")
        self._released(last, self._txn_zxid(results), lease_gone=True)
        log.info(
            "lease released: node=%s epoch=%d clean=%s left_serving=%s",
            self.node,
            epoch,
            clean,
            left_serving,
        )

    def _record_left_serving(self, epoch: int, deadline: float) -> None:
        """No lease of ours to delete: write ``last_leader`` alone, checked against ``epoch``."""
        try:
            raw, epoch_stat = self._wait(
                self._client.get_async(self.path("epoch")), deadline, "read epoch"
            )
        except _KAZOO_ERRORS as exc:
            raise self._wrap(exc, "read epoch") from None
        current = epoch_from_bytes(raw)
        if current != epoch:
            raise LeaseConflict(f"the epoch moved on to {current}: not recording epoch {epoch}")
        last = LastLeader(self.node, epoch, final_lsn=None, clean=False, left_serving=True)
        txn = self._client.transaction()
        txn.check(self.path("epoch"), version=epoch_stat.version)
        txn.set_data(self.path("last_leader"), last_leader_to_json(last))
        results = self._commit(txn, deadline, "record that this node is left serving")
        failures = [r for r in results if isinstance(r, Exception)]
        if any(isinstance(r, BadVersionError | NoNodeError) for r in failures):
            raise LeaseConflict(f"the epoch changed while recording epoch {epoch}")
        if failures:
            raise self._wrap(failures[-1], "record that this node is left serving")
        self._released(last, self._txn_zxid(results), lease_gone=False)
        log.info("recorded: node=%s left serving at epoch %d without its daemon", self.node, epoch)

    def _released(self, last: LastLeader, zxid: int, *, lease_gone: bool) -> None:
        """Show our own release at once; older watch answers are then ignored."""
        with self._lock:
            if lease_gone and (self._confirmed["lease"] or 0) < zxid:
                self._lease, self._lease_owner = None, None
                self._lease_unconfirmed = False
                self._floors["lease"] = zxid
                self._problems.pop("lease", None)
            if (self._confirmed["last_leader"] or 0) < zxid:
                self._last_leader = last
                self._floors["last_leader"] = zxid
                self._problems.pop("last_leader", None)
            self._rebuild_locked()
        self._notify()

    @staticmethod
    def _txn_zxid(results: list[Any]) -> int:
        """The zxid of a committed transaction: the mzxid of the node its set_data wrote."""
        for r in results:
            mzxid = getattr(r, "mzxid", None)
            if isinstance(mzxid, int):
                return mzxid
        return 0

    def _commit(self, txn: Any, deadline: float, what: str) -> list[Any]:
        try:
            results = self._wait(txn.commit_async(), deadline, what)
        except _KAZOO_ERRORS as exc:
            raise self._wrap(exc, what) from None
        return list(results)

    # -- requests, pause, history ----------------------------------------------------------------

    def set_paused(self, paused: bool, timeout: float = 2.0) -> None:
        """Create or delete ``paused`` (idempotent)."""
        self._require_connected("change the pause flag")
        deadline = self._clock() + timeout
        path = self.path("paused")
        try:
            if paused:
                self._wait(self._client.create_async(path, b"", acl=self._acl), deadline, "pause")
            else:
                self._wait(self._client.delete_async(path), deadline, "resume")
        except (NodeExistsError, NoNodeError):
            pass
        except _KAZOO_ERRORS as exc:
            raise self._wrap(exc, "change the pause flag") from None

    def request_switchover(self, req: SwitchoverRequest, timeout: float = 2.0) -> None:
        """Create the switchover request; LeaseConflict if one is pending already."""
        self._require_connected("request a switchover")
        deadline = self._clock() + timeout
        path = self.path("switchover")
        try:
            self._wait(
                self._client.create_async(path, switchover_to_json(req), acl=self._acl),
                deadline,
                "request a switchover",
            )
        except NodeExistsError:
            pending = self._switchover
            raise LeaseConflict(
                f"a switchover request is pending already: {pending}"
                if pending is not None
                else "a switchover request is pending already"
            ) from None
        except _KAZOO_ERRORS as exc:
            raise self._wrap(exc, "request a switchover") from None

    def clear_switchover(self, timeout: float = 2.0) -> None:
        """Delete the switchover request (idempotent)."""
        self._require_connected("clear the switchover request")
        try:
            self._wait(
                self._client.delete_async(self.path("switchover")),
                self._clock() + timeout,
                "clear the switchover request",
            )
        except NoNodeError:
            pass
        except _KAZOO_ERRORS as exc:
            raise self._wrap(exc, "clear the switchover request") from None

    def append_history(self, record: Mapping[str, object]) -> None:
        """Append a ``history/event-`` record, fire and forget (failures are logged)."""
        if self._closed:
            return
        data = history_to_json(record, self._wallclock())
        try:
            result = self._client.create_async(
                self.path("history/event-"), data, acl=self._acl, sequence=True
            )
        except _KAZOO_ERRORS as exc:
            log.warning("history record lost: %r (%s)", exc, data[:200])
            return
        result.rawlink(lambda res: self._history_done(res, data))

    @staticmethod
    def _history_done(result: Any, data: bytes) -> None:
        if result.exception is not None:
            log.warning("history record lost: %r (%s)", result.exception, data[:200])

    def read_history(self, limit: int, timeout: float = 5.0) -> list[dict[str, object]]:
        """The last ``limit`` history records, oldest first, each with its ``id``."""
        self._require_connected("read the history")
        deadline = self._clock() + timeout
        try:
            names = self._wait(
                self._client.get_children_async(self.path("history")), deadline, "list history"
            )
            names = sorted(names, key=lambda n: n.rpartition("-")[2])[-limit:] if limit > 0 else []
            pending = [(n, self._client.get_async(self.path(f"history/{n}"))) for n in names]
            records: list[dict[str, object]] = []
            for name, res in pending:
                try:
                    data, _stat = self._wait(res, deadline, f"read history/{name}")
                except NoNodeError:
                    continue
                try:
                    rec: dict[str, object] = _load_object(data, f"history/{name}")
                except MalformedRecord as exc:
                    rec = {"error": str(exc)}
                rec.setdefault("id", name)
                records.append(rec)
            return records
        except _KAZOO_ERRORS as exc:
            raise self._wrap(exc, "read the history") from None

    # -- shutdown -----------------------------------------------------------------------------

    def close(self) -> None:
        """End the session (our ephemeral nodes vanish at once); idempotent, never raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._safe_stop()

    def _safe_stop(self) -> None:
        try:
            self._client.stop()
        except Exception as exc:
            log.warning("zookeeper client stop failed: %r", exc)
        try:
            self._client.close()
        except Exception as exc:
            log.warning("zookeeper client close failed: %r", exc)

    def __enter__(self) -> ZkCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""The ZooKeeper session: the kazoo client, the negotiated timeout, the connection state, the
listeners and the liveness round-trip (a quorum-proof ``sync``); plus the helpers every blocking
call shares.

The session's lock is the adapter's one lock: the watches (``view.py``) take the same one, so a
connection change and the snapshot it affects are updated together.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NoAuthError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import Connect
from kazoo.retry import KazooRetry
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

from failoverd.core import ZkState, ZkStatus
from failoverd.zk.errors import ZkOperationFailed, ZkUnreachable
from failoverd.zk.fourletter import four_letter, split_host_port

log = logging.getLogger(__name__)

KAZOO_ERRORS: tuple[type[BaseException], ...] = (KazooException, KazooTimeoutError, OSError)
MAX_LOOP = 10_000  # hard bound on every wait loop, on top of its time bound

_STATE_MAP = {
    KazooState.CONNECTED: ZkState.CONNECTED,
    KazooState.SUSPENDED: ZkState.SUSPENDED,
    KazooState.LOST: ZkState.LOST,
}


class _ConnectionNoise(logging.Filter):
    """kazoo says ``Connection dropped: ...`` at WARNING for every failed attempt on every
    host. Before the first session the daemon reports its wait itself, at growing intervals;
    meanwhile these are only remembered (``quiet``). Every other record passes."""

    PREFIXES = ("Connection dropped", "Connection time-out", "Failed connecting")

    def __init__(self) -> None:
        super().__init__()
        self.quiet = False
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        if not message.startswith(self.PREFIXES):
            return True
        self.last = message.removeprefix("Connection dropped: ")
        return not self.quiet


class Session:
    """One kazoo client and what is known of its session; shared by every part of the adapter."""

    def __init__(
        self,
        hosts: Sequence[str],
        chroot: str,
        session_timeout: float,
        credentials: tuple[str, str] | None,
        clock: Callable[[], float],
        wallclock: Callable[[], float],
    ) -> None:
        self.hosts = tuple(hosts)
        self.chroot = chroot
        self.session_timeout = session_timeout
        self.clock = clock
        self.wallclock = wallclock
        if credentials is None:
            self.acl: list[Any] = list(OPEN_ACL_UNSAFE)
            auth_data = None
        else:
            user, password = credentials
            self.acl = [make_digest_acl(user, password, all=True)]
            auth_data = [("digest", f"{user}:{password}")]
        # Reconnect quickly: a slow back-off after a ZooKeeper restart could outlast the session.
        retry = KazooRetry(
            max_tries=-1,
            delay=0.05,
            backoff=1.5,
            max_jitter=0.2,
            max_delay=max(0.2, min(1.0, session_timeout / 4)),
        )
        # kazoo logs through a logger of this session's own, so that its complaints about
        # failed connection attempts can be counted and held back (``connect(quiet=True)``).
        self._noise = _ConnectionNoise()
        kazoo_log = logging.Logger("kazoo.client")
        kazoo_log.parent = logging.getLogger("kazoo.client")
        kazoo_log.addFilter(self._noise)
        self.client = KazooClient(
            hosts=",".join(self.hosts),
            timeout=session_timeout,
            auth_data=auth_data,
            connection_retry=retry,
            logger=kazoo_log,
        )
        self._live: threading.Event | None = None  # kazoo's "connected" event, once started

        self.lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self.closed = False
        self._started = False
        self.state = ZkState.LOST
        self._changed_at = clock()
        self.sid: int | None = None  # id of the live session, None once it is lost
        self._negotiated_ms: int | None = None
        # round-trips
        self._rt_token = 0
        self._rt_outstanding: tuple[int, float] | None = None  # (token, send time)
        self._rt_last_ok: float | None = None
        self._rt_failures = 0
        self._moves = 0
        # Called with the lock held on every connection state change, before listeners run:
        # the watches drop what died with the session and rebuild the view.
        self.on_state_locked: Callable[[ZkState], None] | None = None

        self.client.add_listener(self._on_state)
        self._hook_negotiation()

    # -- paths --------------------------------------------------------------------------------

    def path(self, suffix: str = "") -> str:
        """Absolute path of ``suffix`` under the chroot."""
        return f"{self.chroot}/{suffix}" if suffix else self.chroot

    # -- connection ---------------------------------------------------------------------------

    def _hook_negotiation(self) -> None:
        """Catch the session timeout the server granted: kazoo keeps only the requested one.

        The Connect answer passes through the connection handler's ``_invoke`` (kazoo 2.x);
        wrapping it there records the value before kazoo reports CONNECTED. ``start`` falls
        back to the ``cons`` four-letter command if a future kazoo changes this.
        """
        conn = getattr(self.client, "_connection", None)
        original = getattr(conn, "_invoke", None)
        if conn is None or original is None:
            return

        def invoke(timeout: float, request: Any, xid: Any = None) -> Any:
            result = original(timeout, request, xid)
            if isinstance(request, Connect) and isinstance(result, tuple) and result:
                granted = getattr(result[0], "time_out", None)
                if isinstance(granted, int) and granted > 0:
                    with self.lock:
                        self._negotiated_ms = granted
            return result

        conn._invoke = invoke

    def _negotiated_from_cons(self) -> int | None:
        """Fallback: find our session in ``cons`` of each host and read its ``to=``."""
        session = self.sid
        if session is None:
            return None
        wanted = f"sid={session:#x},"
        for hostport in self.hosts:
            try:
                host, port = split_host_port(hostport)
                answer = four_letter(host, port, "cons", timeout=1.0)
            except (OSError, ValueError):
                continue
            for line in answer.splitlines():
                if wanted in line:
                    match = re.search(r"[,(]to=(\d+)", line)
                    if match:
                        return int(match.group(1))
        return None

    def start(self, timeout: float) -> None:
        """Connect; raise ZkUnreachable naming the hosts if no session within ``timeout``."""
        if self.connect(timeout, quiet=False):
            return
        self._stop_connecting()
        raise ZkUnreachable(
            f"could not connect to ZooKeeper at {','.join(self.hosts)} within {timeout} s"
            + (f" ({self._noise.last})" if self._noise.last else "")
        )

    def connect(self, wait: float, *, quiet: bool = True) -> bool:
        """Start connecting unless under way, and wait up to ``wait`` s for the session: True
        once there is one and its negotiated timeout is known, False while there is none yet.

        Without an answer kazoo keeps trying every host, for ever, under the connection retry
        above (its pause grows to at most one second): the caller decides how long to wait
        and says so. ``quiet`` keeps kazoo's line per failed attempt out of the log (several a
        second while no server answers); ``last_connect_error`` holds the latest.
        """
        if self.closed:
            raise ZkOperationFailed("this ZkCluster was closed; make a new one")
        if self._started:
            return True
        self._noise.quiet = quiet
        if self._live is None:
            try:
                self._live = self.client.start_async()
            except KAZOO_ERRORS as exc:
                self.safe_stop()
                raise ZkUnreachable(
                    f"could not connect to ZooKeeper at {','.join(self.hosts)}: {exc!r}"
                ) from None
        self._live.wait(wait)
        if not self.client.connected:
            return False
        self._noise.quiet = False
        self._started = True
        with self.lock:
            if self.sid is None:  # the listener may have run before client_id was set
                self.sid = self._session_id_now()
            known = self._negotiated_ms
        if known is None:
            known = self._negotiated_from_cons()
            if known is None:
                self.close()
                raise ZkOperationFailed(
                    "connected, but could not learn the negotiated session timeout "
                    "(kazoo internals changed and 'cons' is not allowed by the server)"
                )
            with self.lock:
                self._negotiated_ms = known
        log.info(
            "zookeeper connected: hosts=%s session=%#x requested_timeout=%.3fs negotiated=%.3fs",
            ",".join(self.hosts),
            self.sid or 0,
            self.session_timeout,
            known / 1000,
        )
        return True

    @property
    def last_connect_error(self) -> str | None:
        """kazoo's latest complaint about a connection attempt, e.g. ``socket connection
        error: Connection refused``; None before any."""
        return self._noise.last

    def _stop_connecting(self) -> None:
        """Give up a connection under way (kazoo would retry for ever); it may start again."""
        self._live = None
        self._noise.quiet = False
        try:
            self.client.stop()
        except Exception as exc:
            log.warning("zookeeper client stop failed: %r", exc)

    def _session_id_now(self) -> int | None:
        cid = self.client.client_id
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

    def _on_state(self, kstate: Any) -> None:
        """kazoo's state listener (its connection thread): record, rebuild, wake; never block."""
        state = _STATE_MAP.get(kstate, ZkState.LOST)
        with self.lock:
            if state == ZkState.CONNECTED:
                self.sid = self._session_id_now()
            elif state == ZkState.LOST:
                self.sid = None
            if state != self.state:
                self.state = state
                self._changed_at = self.clock()
            if self.on_state_locked is not None:
                self.on_state_locked(state)
        log.info("zookeeper state: %s", state.value)
        self.notify()

    def status(self) -> ZkStatus:
        """Connection state and round-trip freshness; non-blocking."""
        with self.lock:
            return ZkStatus(
                state=self.state,
                changed_at=self._changed_at,
                last_roundtrip_sent_at=self._rt_last_ok,
                negotiated_timeout=(
                    self._negotiated_ms / 1000 if self._negotiated_ms is not None else None
                ),
            )

    # -- the liveness round-trip ----------------------------------------------------------------

    @property
    def roundtrip_failures(self) -> int:
        """Round-trips that failed or were abandoned at their deadline (for metrics)."""
        return self._rt_failures

    def roundtrip(self, deadline: float) -> None:
        """Keep one ``sync`` in flight; its success proves a quorum knew the session alive at
        about its send time.

        Why a sync and not a read: a follower cut off from its leader keeps answering reads and
        pings for syncLimit x tickTime, while the leader's side expires the session after T. A
        sync is forwarded to the leader and answered only once the leader has answered it, so
        through a cut-off follower it never succeeds. A leader cut off from its followers does
        answer it, until it notices the lost quorum (syncLimit x tickTime); the other side needs
        as long to elect a new leader, which gives every session a fresh T: the self-fence still
        comes first. What remains is how late the leader hears of the session's activity, about
        one tickTime (``failoverd.quorum``). A sync writes nothing: one request per tick, like
        the read it replaces, where a write would be a transaction on every server.

        Non-blocking, called every tick. An outstanding sync older than ``deadline`` seconds is
        abandoned (counted as failed, its late answer ignored) so a new one can be sent. The
        server that let it stall while the connection looks fine has most likely lost its
        leader: with other servers to go to, the connection is dropped so that the session
        moves on (``_move_on``) while it is still alive.
        """
        now = self.clock()
        stalled = False
        with self.lock:
            if self.closed or self.state != ZkState.CONNECTED:
                return
            if self._rt_outstanding is not None:
                if now - self._rt_outstanding[1] <= deadline:
                    return
                self._rt_outstanding = None
                self._rt_failures += 1
                stalled = True
            self._rt_token += 1
            token = self._rt_token
            self._rt_outstanding = (token, now)
        if stalled and len(",".join(self.hosts).split(",")) > 1:
            self._move_on(deadline)
            return  # a sync sent now would only queue behind the stalled one
        try:
            result = self.client.sync_async(self.path("epoch"))
        except KAZOO_ERRORS as exc:
            with self.lock:
                if self._rt_outstanding is not None and self._rt_outstanding[0] == token:
                    self._rt_outstanding = None
                    self._rt_failures += 1
            log.debug("zookeeper round-trip not sent: %r", exc)
            return
        result.rawlink(lambda res: self._roundtrip_done(token, now, res))

    @property
    def moves(self) -> int:
        """Connections dropped because a round-trip stalled on them (for tests and metrics)."""
        return self._moves

    def _move_on(self, deadline: float) -> None:
        """Leave a server that answers pings but not syncs: drop the connection, and kazoo
        reconnects the same session to the next server, which revalidates it with the leader.

        A follower cut off from its leader keeps a client for syncLimit x tickTime (20 s with
        the stock settings, past any usual T): waiting for it to let go costs the session, and
        the active its role, although two servers of three could serve both. kazoo has no call
        for this, so its socket is shut down, as a server closing the connection would; the
        requests in flight then fail with a connection loss, as on any reconnect.
        """
        with self.lock:
            self._rt_outstanding = None  # the stalled sync dies with the connection
        sock = getattr(getattr(self.client, "_connection", None), "_socket", None)
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return
        self._moves += 1
        log.warning(
            "zookeeper round-trip: no answer to a sync within %.2fs while the connection is up "
            "(server cut off from its leader?): reconnecting the session to another server",
            deadline,
        )

    def _roundtrip_done(self, token: int, sent_at: float, result: Any) -> None:
        ok = result.exception is None
        with self.lock:
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
        with self.lock:
            self._listeners.append(callback)

    def notify(self) -> None:
        """Wake every listener; one that raises is logged and does not stop the others."""
        with self.lock:
            callbacks = list(self._listeners)
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("failoverd zookeeper listener failed")

    # -- helpers for blocking calls ------------------------------------------------------------

    def require_connected(self, what: str) -> None:
        """Refuse to queue writes while disconnected: kazoo would send them after a reconnect,
        long after the caller gave up on them."""
        if self.closed:
            raise ZkOperationFailed(f"cannot {what}: client closed")
        state = self.state
        if state != ZkState.CONNECTED:
            raise ZkOperationFailed(f"cannot {what}: ZooKeeper connection is {state.value}")

    def wait(self, async_result: Any, deadline: float, what: str) -> Any:
        """Wait for one async result until ``deadline`` (boottime); kazoo errors are wrapped."""
        remaining = max(0.0, deadline - self.clock())
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

    def wrap(self, exc: BaseException, what: str) -> ZkOperationFailed:
        """A kazoo failure as this adapter's error, saying what was being done."""
        if isinstance(exc, NoAuthError):
            return ZkOperationFailed(
                f"{what}: not allowed (NoAuth) under {self.chroot}: wrong credentials "
                "for this cluster?"
            )
        return ZkOperationFailed(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))

    # -- shutdown -----------------------------------------------------------------------------

    def close(self) -> None:
        """End the session (our ephemeral nodes vanish at once); idempotent, never raises."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
        self.safe_stop()

    def safe_stop(self) -> None:
        try:
            self.client.stop()
        except Exception as exc:
            log.warning("zookeeper client stop failed: %r", exc)
        try:
            self.client.close()
        except Exception as exc:
            log.warning("zookeeper client close failed: %r", exc)

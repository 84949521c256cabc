"""The passive's end: grant pledges to the active of one epoch, and never forget one.

Invariants, each with its why:

1. **A pledge is granted only while ``granting`` is the request's epoch.** The core decides whom
   to grant (``SetGranting``); this end decides nothing more.
2. **Every pledge granted is counted in ``pledged_until`` before it is answered**, and the store
   holds a time no earlier than its end before that. The promise runs from r, this node's
   boottime when the request was received (later than the active's send time s, from which the
   active counts), to r + ttl. A pledge the store could not keep is not answered: nothing was
   promised.
3. **``set_granting`` is atomic with respect to grants.** Grants hold the same lock from the
   granting check to the in-memory update, so once ``set_granting(None)`` returns no further
   pledge is granted and every earlier one is in ``pledged_until``: the core may then trust it.
4. **A refused message changes nothing** but the counts (and the replay guard, for a signed
   request: its nonce is spent). Requests refused for their epoch, or because the channel grants
   none, get a signed refusal so the active need not wait out its timeout; every other refused
   message gets no answer (an unauthenticated sender learns nothing and cannot use the passive
   to reflect traffic).
5. **No answer waits for the disk while the store is ahead.** The store is written ``ttl``
   ahead of the promise (one write per ttl while the active asks, not one per request), and
   extended in the background once less than half of that lead is left. A disk that stalls
   for less than ttl / 2 then delays no pledge: the active, on the pledges alone while
   ZooKeeper is out, would otherwise self-fence on a stall of one self_fence_after (the lab
   saw it: a rename on a busy ext4 stalled past 1 s, and the site was down until ZooKeeper
   came back). What the store holds beyond the promise costs only a restarted passive that
   much more waiting; ``pledged_until``, which the core reads, is the promise itself. No lock
   the loop takes is held across a write.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any, Final

from failoverd.clock import boottime
from failoverd.failsafe.errors import FailsafeError
from failoverd.failsafe.protocol import (
    MAX_DATAGRAM,
    Kind,
    Message,
    Refused,
    ReplayGuard,
    addressed,
    decode,
    encode,
)
from failoverd.failsafe.refusals import Refusals
from failoverd.failsafe.secret import Secret
from failoverd.failsafe.store import PromiseStore, restored_until

REPLAY_CAPACITY: Final = 16384  # nonces; an active asking ten times a second fills it in 27 min
_POLL: Final = 0.2  # seconds the receive loop waits before it looks whether it should stop


def replay_retention(ttl: float) -> float:
    """How long request nonces are remembered: far longer than any pledge can matter."""
    return max(60.0, 30.0 * ttl)


class PledgeServer:
    def __init__(
        self,
        *,
        secret: Secret,
        cluster: str,
        node: str,
        peer: str,
        address: str,
        port: int,
        ttl: float,
        store: PromiseStore,
        log: Any,
        clock: Callable[[], float] = boottime,
    ) -> None:
        self._secret = secret
        self.cluster, self.node, self.peer = cluster, node, peer
        self.address, self._port = address, port
        self.ttl = ttl
        self.store = store
        self.log = log
        self.clock = clock
        self.refusals = Refusals(log, "server")
        self._lock = threading.Lock()
        self._granting: int | None = None
        self._until: float | None = None
        self._granted = 0
        self._store_failed_at: float | None = None
        self._stored: float | None = None  # the time the store holds (>= self._until)
        self._store_lock = threading.Lock()  # one write at a time; never under self._lock
        self._extend = threading.Condition(threading.Lock())  # wakes the background writer
        self._extend_to: float | None = None
        self._extending = False  # an extension asked for and not written yet
        self._writer: threading.Thread | None = None
        self._guard = ReplayGuard(replay_retention(ttl), REPLAY_CAPACITY)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- life cycle -----------------------------------------------------------------------------

    def restore(self) -> None:
        """Read back what an earlier run promised, and write it for this boot at once (which
        also proves the store writable); FailsafeError when the store cannot be used."""
        stored = self.store.load()
        now = self.clock()
        until = restored_until(stored, self.store.boot_id, now, self.ttl)
        if stored is not None and stored.problem is not None:
            self.log.warning("failsafe_store_unreadable", problem=stored.problem)
        if stored is not None and stored.boot_id != self.store.boot_id and until is not None:
            self.log.warning("failsafe_pledges_from_another_boot", pledged_for_s=until - now)
        with self._lock:
            self.store.save(until, self.ttl)
            self._until = self._stored = until
        if until is not None and until > now:
            self.log.info("failsafe_pledge_restored", pledged_for_s=round(until - now, 3))

    def start(self) -> None:
        """Restore the promises, bind, serve from a daemon thread; FailsafeError on failure."""
        self.restore()
        try:
            infos = socket.getaddrinfo(self.address, self._port, type=socket.SOCK_DGRAM)
            family, _, _, _, where = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as e:
            raise FailsafeError(
                f"cannot listen on {self.address}:{self._port}: {e.strerror or e}", key="port"
            ) from None
        try:
            sock.bind(where)
        except OSError as e:
            sock.close()
            raise FailsafeError(
                f"cannot listen on {self.address}:{self._port}/udp: {e.strerror or e} (is "
                "another process using the port?)",
                key="port",
            ) from None
        sock.settimeout(_POLL)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="failsafe-server", daemon=True)
        self._writer = threading.Thread(
            target=self._write_ahead, name="failsafe-store", daemon=True
        )
        self._thread.start()
        self._writer.start()
        self.log.info("failsafe_listening", address=self.address, port=self.port)

    @property
    def port(self) -> int:
        """The port listened on (the configured one, or the one picked for port 0)."""
        return self._port if self._sock is None else int(self._sock.getsockname()[1])

    def close(self) -> None:
        self._stop.set()
        with self._extend:
            self._extend.notify()
        for thread in (self._thread, self._writer):
            if thread is not None:
                thread.join(timeout=5.0)
        if self._sock is not None:
            self._sock.close()
        self._thread = self._writer = None

    # -- what the loop sees and sets --------------------------------------------------------------

    def set_granting(self, epoch: int | None) -> None:
        """From now on grant pledges to the active of ``epoch`` only (None: to nobody). Returns
        once no grant under the old setting can still be under way."""
        with self._lock:
            before, self._granting = self._granting, epoch
        if before != epoch:
            self.log.info("failsafe_granting", epoch=epoch, previous=before)

    @property
    def granting(self) -> int | None:
        with self._lock:
            return self._granting

    @property
    def pledged_until(self) -> float | None:
        """Boottime until which this node promised not to take the lease (None: never)."""
        with self._lock:
            return self._until

    @property
    def granted(self) -> int:
        with self._lock:
            return self._granted

    # -- serving --------------------------------------------------------------------------------

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                data, source = sock.recvfrom(MAX_DATAGRAM + 1)
            except TimeoutError:
                continue
            except OSError as e:
                if self._stop.is_set():
                    return
                self.log.warning("failsafe_receive_failed", error=str(e))
                continue
            received_at = self.clock()
            try:
                answer = self.handle(data, received_at, source)
                if answer is not None:
                    sock.sendto(answer, source)
            except OSError as e:
                self.log.warning("failsafe_answer_failed", error=str(e), source=str(source))
            except Exception:  # a bug here must not end the channel
                self.log.exception("failsafe_server_crashed")

    def handle(self, datagram: bytes, received_at: float, source: object = None) -> bytes | None:
        """One datagram in, the answer (if any) out; ``received_at`` is r."""
        msg = decode(self._secret.key, datagram)
        if isinstance(msg, Refused):
            return self._refuse(msg, received_at, source)
        why = addressed(msg, self.cluster, self.peer, self.node)
        if why is None and msg.kind is not Kind.REQUEST:
            why = Refused.MALFORMED  # an answer sent back at us
        if why is not None:
            return self._refuse(why, received_at, source)
        until = received_at + self.ttl
        with self._lock:
            if not self._guard.admit(msg.nonce, received_at):
                why = Refused.REPLAY
            elif self._granting is None:
                why = Refused.NOT_GRANTING
            elif self._granting != msg.epoch:
                why = Refused.WRONG_EPOCH
            elif self._stored is not None and until <= self._stored:
                return self._grant(msg, until)
        if why is not None:
            return self._refuse(why, received_at, source, msg)
        # The store is behind (the first request in a while, or a writer that stalls): write
        # it ahead here, outside the lock, then look again whether we still grant this epoch.
        if not self._store_ahead(until + self.ttl, received_at):
            return None
        with self._lock:
            if self._granting != msg.epoch:
                why = Refused.NOT_GRANTING if self._granting is None else Refused.WRONG_EPOCH
            else:
                return self._grant(msg, until)
        return self._refuse(why, received_at, source, msg)

    def _grant(self, msg: Message, until: float) -> bytes:
        """Under the lock, the store ahead of ``until``: count, then answer (invariant 2)."""
        if self._until is None or until > self._until:
            self._until = until
        self._granted += 1
        assert self._stored is not None and self._stored >= until
        if self._stored - until < self.ttl / 2:
            with self._extend:  # less than half the lead left: extend it in the background
                if not self._extending:
                    self._extending = True
                    self._extend_to = until + self.ttl
                    self._extend.notify()
        return encode(
            self._secret.key,
            Message(
                Kind.PLEDGE,
                self.cluster,
                self.node,
                self.peer,
                msg.epoch,
                msg.nonce,
                ttl=self.ttl,
            ),
        )

    def _store_ahead(self, horizon: float, now: float) -> bool:
        """Make the store hold at least ``horizon``; False (logged) when it cannot be written."""
        with self._store_lock:
            with self._lock:
                if self._stored is not None and self._stored >= horizon:
                    return True
            try:
                self.store.save(horizon, self.ttl)
            except FailsafeError as e:
                if self._store_failed_at is None or now - self._store_failed_at > 60:
                    self.log.error("failsafe_store_failed", error=str(e))
                    self._store_failed_at = now
                return False
            with self._lock:
                if self._stored is None or horizon > self._stored:
                    self._stored = horizon
            return True

    def _write_ahead(self) -> None:
        """The background writer of invariant 5."""
        while not self._stop.is_set():
            with self._extend:
                while self._extend_to is None and not self._stop.is_set():
                    self._extend.wait()
                horizon, self._extend_to = self._extend_to, None
            if horizon is not None and not self._stop.is_set():
                self._store_ahead(horizon, self.clock())
            with self._extend:
                self._extending = False

    def _refuse(
        self, why: Refused, now: float, source: object, msg: Message | None = None
    ) -> bytes | None:
        self.refusals.note(why, now, source)
        if msg is None or why not in (Refused.NOT_GRANTING, Refused.WRONG_EPOCH):
            return None
        with contextlib.suppress(ValueError):
            return encode(
                self._secret.key,
                Message(
                    Kind.REFUSAL,
                    self.cluster,
                    self.node,
                    self.peer,
                    msg.epoch,
                    msg.nonce,
                    reason=why.value,
                ),
            )
        return None

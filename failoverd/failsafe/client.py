"""The active's end: ask the peer for a pledge, wait a bounded time, believe only its answer.

``ask`` blocks for at most ``timeout`` (default min(0.3 s, ttl / 4): a pledge asked for must be
worth having when it comes) after the request left. Its answer must carry our secret's MAC, come
from the peer to us in our cluster, echo the request's nonce and name the epoch asked for;
anything else is counted, refused and ignored, and the wait goes on until the deadline (a forged
datagram cannot cut short a real answer). A pledge is counted from ``sent_at``, our boottime
taken just before the request left: earlier than the peer's receipt, from which the peer counts.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from failoverd.clock import boottime
from failoverd.core import Pledge
from failoverd.failsafe.protocol import (
    MAX_DATAGRAM,
    Kind,
    Message,
    Refused,
    addressed,
    decode,
    encode,
    new_nonce,
)
from failoverd.failsafe.refusals import Refusals
from failoverd.failsafe.secret import Secret

AskResult = Literal["pledged", "refused", "unanswered"]


def default_timeout(ttl: float) -> float:
    return min(0.3, ttl / 4)


@dataclass(frozen=True)
class AskOutcome:
    result: AskResult
    pledge: Pledge | None = None
    detail: str = ""  # the peer's refusal reason, or why no answer counted


class PledgeClient:
    def __init__(
        self,
        *,
        secret: Secret,
        cluster: str,
        node: str,
        peer: str,
        peer_address: str,
        port: int,
        ttl: float,
        log: Any,
        bind_address: str | None = None,
        timeout: float | None = None,
        clock: Callable[[], float] = boottime,
    ) -> None:
        self._secret = secret
        self.cluster, self.node, self.peer = cluster, node, peer
        self.peer_address, self.port = peer_address, port
        self.bind_address = bind_address
        self.ttl = ttl
        self.timeout = default_timeout(ttl) if timeout is None else timeout
        self.log = log
        self.clock = clock
        self.refusals = Refusals(log, "client")
        self._lock = threading.Lock()
        self._results: Counter[str] = Counter()
        self._target: tuple[int, Any] | None = None  # resolved (family, sockaddr) of the peer

    def results(self) -> dict[str, int]:
        with self._lock:
            return dict(self._results)

    def ask(self, epoch: int) -> AskOutcome:
        """One request, one answer awaited: at most ``timeout`` after sending (blocking)."""
        outcome = self._ask(epoch)
        with self._lock:
            self._results[outcome.result] += 1
        return outcome

    def _ask(self, epoch: int) -> AskOutcome:
        nonce = new_nonce()
        request = encode(
            self._secret.key,
            Message(Kind.REQUEST, self.cluster, self.node, self.peer, epoch, nonce),
        )
        try:
            family, where = self._resolve()
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                if self.bind_address is not None:
                    sock.bind((self.bind_address, 0))
                # Connected: the kernel drops datagrams from anyone else, and a peer with no
                # listener says so at once (ECONNREFUSED) rather than after the timeout.
                sock.connect(where)
                sent_at = self.clock()
                sock.send(request)
                return self._await(sock, epoch, nonce, sent_at)
        except OSError as e:
            return AskOutcome("unanswered", detail=f"{type(e).__name__}: {e.strerror or e}")

    def _await(self, sock: socket.socket, epoch: int, nonce: str, sent_at: float) -> AskOutcome:
        deadline = sent_at + self.timeout
        while True:
            left = deadline - self.clock()
            if left <= 0:
                return AskOutcome("unanswered", detail=f"no answer in {self.timeout:g} s")
            sock.settimeout(left)
            try:
                data = sock.recv(MAX_DATAGRAM + 1)
            except TimeoutError:
                return AskOutcome("unanswered", detail=f"no answer in {self.timeout:g} s")
            verdict = self._check(data, epoch, nonce)
            if isinstance(verdict, Refused):
                self.refusals.note(verdict, self.clock(), self.peer_address)
                continue
            if verdict.kind is Kind.REFUSAL:
                return AskOutcome("refused", detail=verdict.reason or "")
            assert verdict.ttl is not None  # decode guarantees it for a pledge
            # The peer promised its ttl; we count no more than ours either.
            pledge = Pledge(epoch=epoch, sent_at=sent_at, ttl=min(verdict.ttl, self.ttl))
            return AskOutcome("pledged", pledge=pledge)

    def _check(self, data: bytes, epoch: int, nonce: str) -> Message | Refused:
        msg = decode(self._secret.key, data)
        if isinstance(msg, Refused):
            return msg
        why = addressed(msg, self.cluster, self.peer, self.node)
        if why is not None:
            return why
        if msg.kind is Kind.REQUEST:
            return Refused.MALFORMED  # a request bounced back at us is no answer
        if msg.nonce != nonce:
            return Refused.REPLAY  # an answer, but not to this request
        if msg.epoch != epoch:
            return Refused.WRONG_EPOCH
        return msg

    def _resolve(self) -> tuple[int, Any]:
        """The peer's address (resolved on this worker, never in the loop); kept once found."""
        if self._target is None:
            infos = socket.getaddrinfo(self.peer_address, self.port, type=socket.SOCK_DGRAM)
            family, _, _, _, where = infos[0]
            self._target = (family, where)
        return self._target

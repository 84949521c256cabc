"""The failsafe's wire format: one signed datagram each way. Pure: no socket, no clock.

A datagram is at most ``MAX_DATAGRAM`` bytes: 64 lowercase hex digits (HMAC-SHA256 of the body
under the shared secret), one newline, then the body, compact JSON in UTF-8::

    3f9c...e1\\n{"cluster":"prod","epoch":7,"from":"n1","kind":"request","nonce":"<32 hex>",
                 "to":"n2","v":1}

The MAC covers the exact body bytes, and every field is in the body: the version ``v``, ``kind``
(``request``, ``pledge`` or ``refusal``), ``cluster``, ``from`` and ``to`` (member names),
``epoch`` (the lease epoch the active asks for) and ``nonce`` (16 random bytes in hex, fresh per
request; an answer echoes its request's nonce). A pledge adds ``ttl`` (seconds the sender
promised, counted from its receipt of the request); a refusal adds ``reason``.

Reading is a sequence of checks, each with its reason code (``Refused``): the size first (a larger
datagram is refused unread), the framing, the MAC (before anything of the body is believed), the
JSON and its shape, then the addressing (``addressed``). What a message means to its reader (is
this the answer I wait for, may I grant this) is the server's and the client's business.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final, TypeGuard

__all__ = [
    "MAX_DATAGRAM",
    "NONCE_HEX",
    "VERSION",
    "Kind",
    "Message",
    "Refused",
    "ReplayGuard",
    "addressed",
    "check_fits",
    "decode",
    "encode",
    "new_nonce",
]

MAX_DATAGRAM: Final = 1024
"""Bytes. A request and its answer are a few hundred; anything larger is refused unread."""
VERSION: Final = 1
NONCE_HEX: Final = 32  # 16 random bytes
_MAC_HEX: Final = 64
_HEX: Final = frozenset("0123456789abcdef")


class Kind(StrEnum):
    REQUEST = "request"  # active -> passive: pledge not to take the lease
    PLEDGE = "pledge"  # passive -> active: promised until my receipt + ttl
    REFUSAL = "refusal"  # passive -> active: signed no (not granting that epoch)


class Refused(StrEnum):
    """Why a message was refused; each is counted (``failoverd_failsafe_refused_total``)."""

    BAD_MAC = "bad_mac"  # not signed with our secret, or altered
    REPLAY = "replay"  # a nonce seen before (or, to the asker, not the one it waits for)
    WRONG_CLUSTER = "wrong_cluster"
    WRONG_NODE = "wrong_node"  # not from our peer, or not to us
    WRONG_EPOCH = "wrong_epoch"  # granting another epoch (to the asker: not the epoch asked)
    MALFORMED = "malformed"  # framing, JSON, a field, or a kind this end does not take
    OVERSIZED = "oversized"  # over MAX_DATAGRAM: not read
    NOT_GRANTING = "not_granting"  # the channel grants no pledge now


@dataclass(frozen=True)
class Message:
    kind: Kind
    cluster: str
    sender: str  # "from"
    recipient: str  # "to"
    epoch: int
    nonce: str
    ttl: float | None = None  # pledge only
    reason: str | None = None  # refusal only


_REQUIRED: Final = frozenset({"v", "kind", "cluster", "from", "to", "epoch", "nonce"})
_EXTRA: Final[dict[Kind, frozenset[str]]] = {
    Kind.REQUEST: frozenset(),
    Kind.PLEDGE: frozenset({"ttl"}),
    Kind.REFUSAL: frozenset({"reason"}),
}


def new_nonce() -> str:
    return secrets.token_hex(NONCE_HEX // 2)


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")


def encode(secret: bytes, msg: Message) -> bytes:
    """The signed datagram; ValueError when it would exceed MAX_DATAGRAM (very long names)."""
    doc: dict[str, Any] = {
        "v": VERSION,
        "kind": msg.kind.value,
        "cluster": msg.cluster,
        "from": msg.sender,
        "to": msg.recipient,
        "epoch": msg.epoch,
        "nonce": msg.nonce,
    }
    if msg.kind is Kind.PLEDGE:
        doc["ttl"] = msg.ttl
    elif msg.kind is Kind.REFUSAL:
        doc["reason"] = msg.reason
    body = json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    datagram = _mac(secret, body) + b"\n" + body
    if len(datagram) > MAX_DATAGRAM:
        raise ValueError(f"a {msg.kind.value} would take {len(datagram)} bytes > {MAX_DATAGRAM}")
    return datagram


def check_fits(cluster: str, node: str, peer: str) -> None:
    """ValueError unless the longest message between these names fits in a datagram (names
    are not bounded in the config)."""
    for kind in Kind:
        for sender, recipient in ((node, peer), (peer, node)):
            longest = Message(kind, cluster, sender, recipient, 2**63, "0" * NONCE_HEX, 1e300)
            encode(b"k" * 32, replace(longest, reason=max(Refused, key=len).value))


def decode(secret: bytes, datagram: bytes) -> Message | Refused:
    """The message, or why it is refused; nothing of an unauthenticated body is parsed."""
    if len(datagram) > MAX_DATAGRAM:
        return Refused.OVERSIZED
    mac, sep, body = datagram.partition(b"\n")
    if not sep or len(mac) != _MAC_HEX or not _is_hex(mac):
        return Refused.MALFORMED
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return Refused.BAD_MAC
    try:
        doc = json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        return Refused.MALFORMED
    return _message(doc)


def _message(doc: object) -> Message | Refused:
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        return Refused.MALFORMED
    try:
        kind = Kind(str(doc.get("kind")))
    except ValueError:
        return Refused.MALFORMED
    if set(doc) != _REQUIRED | _EXTRA[kind]:
        return Refused.MALFORMED
    cluster, sender, recipient = doc["cluster"], doc["from"], doc["to"]
    epoch, nonce = doc["epoch"], doc["nonce"]
    if not all(isinstance(x, str) and x for x in (cluster, sender, recipient)):
        return Refused.MALFORMED
    if not _is_int(epoch) or epoch < 0:
        return Refused.MALFORMED
    if not isinstance(nonce, str) or len(nonce) != NONCE_HEX or not _is_hex(nonce.encode()):
        return Refused.MALFORMED
    ttl = doc.get("ttl")
    reason = doc.get("reason")
    if kind is Kind.PLEDGE and not (_is_number(ttl) and math.isfinite(ttl) and ttl > 0):
        return Refused.MALFORMED
    if kind is Kind.REFUSAL and not isinstance(reason, str):
        return Refused.MALFORMED
    return Message(
        kind=kind,
        cluster=cluster,
        sender=sender,
        recipient=recipient,
        epoch=epoch,
        nonce=nonce,
        ttl=None if ttl is None else float(ttl),
        reason=reason,
    )


def addressed(msg: Message, cluster: str, sender: str, recipient: str) -> Refused | None:
    """None when ``msg`` is of ``cluster``, from ``sender`` and to ``recipient``."""
    if msg.cluster != cluster:
        return Refused.WRONG_CLUSTER
    if msg.sender != sender or msg.recipient != recipient:
        return Refused.WRONG_NODE
    return None


def _is_hex(text: bytes) -> bool:
    return all(chr(c) in _HEX for c in text)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ReplayGuard:
    """Nonces seen in the last ``retention`` seconds, at most ``capacity`` of them (the oldest
    go first): a nonce admitted once is refused while remembered. Time is passed in."""

    def __init__(self, retention: float, capacity: int) -> None:
        if retention <= 0 or capacity <= 0:
            raise ValueError("retention and capacity must be positive")
        self.retention = retention
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> when, oldest first

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, nonce: str, now: float) -> bool:
        """True, and remember it, if ``nonce`` was not seen; False for a replay."""
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at <= self.retention:
                break
            del self._seen[oldest]
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

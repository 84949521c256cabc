"""The failsafe's wire format, its checks and its replay guard: pure, no socket, no clock."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from pathlib import Path

import pytest

from failoverd.failsafe import FailsafeError, Secret, read_secret
from failoverd.failsafe.protocol import (
    MAX_DATAGRAM,
    NONCE_HEX,
    Kind,
    Message,
    Refused,
    ReplayGuard,
    addressed,
    check_fits,
    decode,
    encode,
    new_nonce,
)
from failoverd.failsafe.store import PromiseStore, StoredPromise, restored_until

KEY = b"k" * 40
OTHER_KEY = b"o" * 40
NONCE = "ab" * (NONCE_HEX // 2)
REQUEST = Message(Kind.REQUEST, "prod", "n1", "n2", 7, NONCE)
PLEDGE = Message(Kind.PLEDGE, "prod", "n2", "n1", 7, NONCE, ttl=2.0)
REFUSAL = Message(Kind.REFUSAL, "prod", "n2", "n1", 7, NONCE, reason="not_granting")


def signed(body: bytes, key: bytes = KEY) -> bytes:
    return hmac.new(key, body, hashlib.sha256).hexdigest().encode() + b"\n" + body


def body_of(msg: Message) -> dict[str, object]:
    return json.loads(encode(KEY, msg).partition(b"\n")[2])  # type: ignore[no-any-return]


# -- the format -------------------------------------------------------------------------------


@pytest.mark.parametrize("msg", [REQUEST, PLEDGE, REFUSAL], ids=lambda m: m.kind.value)
def test_every_kind_round_trips(msg: Message) -> None:
    assert decode(KEY, encode(KEY, msg)) == msg


def test_the_datagram_is_a_hex_mac_a_newline_and_the_json_body_it_covers() -> None:
    datagram = encode(KEY, REQUEST)
    mac, sep, body = datagram.partition(b"\n")
    assert sep == b"\n" and len(mac) == 64
    assert mac == hmac.new(KEY, body, hashlib.sha256).hexdigest().encode()
    assert json.loads(body) == {
        "v": 1,
        "kind": "request",
        "cluster": "prod",
        "from": "n1",
        "to": "n2",
        "epoch": 7,
        "nonce": NONCE,
    }
    assert body_of(PLEDGE)["ttl"] == 2.0
    assert body_of(REFUSAL)["reason"] == "not_granting"
    assert len(datagram) < 300


def test_nonces_are_fresh_hex() -> None:
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(n) == NONCE_HEX and int(n, 16) >= 0 for n in nonces)


def test_a_message_too_long_for_a_datagram_is_not_built() -> None:
    with pytest.raises(ValueError, match="bytes >"):
        encode(KEY, Message(Kind.REQUEST, "c" * MAX_DATAGRAM, "n1", "n2", 1, NONCE))
    check_fits("prod", "n1", "n2")
    with pytest.raises(ValueError):
        check_fits("prod", "n" * 900, "n2")


# -- refusals ---------------------------------------------------------------------------------


def test_another_secret_or_an_altered_body_is_a_bad_mac() -> None:
    assert decode(OTHER_KEY, encode(KEY, REQUEST)) is Refused.BAD_MAC
    forged = encode(KEY, REQUEST).replace(b'"epoch":7', b'"epoch":8')
    assert decode(KEY, forged) is Refused.BAD_MAC
    mac, _, body = encode(KEY, REQUEST).partition(b"\n")
    assert decode(KEY, mac.upper() + b"\n" + body) is Refused.MALFORMED  # framing, not a MAC


def test_oversized_is_refused_unread() -> None:
    # Even a correctly signed body is not read once the datagram is over the limit.
    body = json.dumps({**body_of(REQUEST), "pad": "x" * MAX_DATAGRAM}).encode()
    assert decode(KEY, signed(body)) is Refused.OVERSIZED
    assert decode(KEY, b"\0" * (MAX_DATAGRAM + 1)) is Refused.OVERSIZED
    assert decode(KEY, encode(KEY, REQUEST)) == REQUEST


@pytest.mark.parametrize(
    "datagram",
    [b"", b"garbage", b"\n", b"z" * 64 + b"\n{}", b"\xff" * 200, b"0" * 63 + b"\n{}"],
    ids=["empty", "text", "newline", "not-hex", "binary", "short-mac"],
)
def test_garbage_is_malformed(datagram: bytes) -> None:
    assert decode(KEY, datagram) is Refused.MALFORMED


def _variant(**change: object) -> bytes:
    doc = {**body_of(REQUEST), **change}
    return signed(json.dumps({k: v for k, v in doc.items() if v is not ...}).encode())


@pytest.mark.parametrize(
    "datagram",
    [
        signed(b"not json"),
        signed(b"\xff\xfe"),
        signed(b"[1, 2]"),
        _variant(v=2),
        _variant(kind="grant"),
        _variant(epoch="7"),
        _variant(epoch=True),
        _variant(epoch=-1),
        _variant(epoch=7.0),
        _variant(nonce="short"),
        _variant(nonce="Z" * NONCE_HEX),
        _variant(nonce=...),
        _variant(cluster=""),
        _variant(to=3),
        _variant(extra=1),
        _variant(ttl=2.0),  # a request carries no ttl
        _variant(kind="pledge"),  # a pledge without its ttl
        _variant(kind="pledge", ttl=0),
        _variant(kind="pledge", ttl=-1.0),
        _variant(kind="pledge", ttl=True),
        _variant(kind="pledge", ttl="2"),
        _variant(kind="refusal", reason=None),
    ],
)
def test_a_signed_body_of_the_wrong_shape_is_malformed(datagram: bytes) -> None:
    """A valid MAC vouches for the sender, not for the shape (another version, a bug)."""
    assert decode(KEY, datagram) is Refused.MALFORMED


def test_non_finite_numbers_are_malformed() -> None:
    body = json.dumps({**body_of(PLEDGE), "ttl": math.inf}).encode()  # Infinity in JSON
    assert decode(KEY, signed(body)) is Refused.MALFORMED


def test_addressing() -> None:
    assert addressed(REQUEST, "prod", "n1", "n2") is None
    assert addressed(REQUEST, "stage", "n1", "n2") is Refused.WRONG_CLUSTER
    assert addressed(REQUEST, "prod", "n3", "n2") is Refused.WRONG_NODE
    assert addressed(REQUEST, "prod", "n1", "n3") is Refused.WRONG_NODE
    assert addressed(REQUEST, "prod", "n2", "n1") is Refused.WRONG_NODE  # not a reflection


# -- the replay guard -------------------------------------------------------------------------


def test_a_nonce_is_admitted_once_while_remembered() -> None:
    g = ReplayGuard(retention=60.0, capacity=10)
    assert g.admit("a", 0.0)
    assert not g.admit("a", 1.0)
    assert not g.admit("a", 60.0)
    assert g.admit("b", 60.0)
    assert g.admit("a", 60.5)  # forgotten after the retention: 60 s old at 60.5 - 0.0 > 60
    assert len(g) == 2


def test_the_guard_is_bounded_and_forgets_the_oldest_first() -> None:
    g = ReplayGuard(retention=1e9, capacity=3)
    for i, n in enumerate("abcd"):
        assert g.admit(n, float(i))
    assert len(g) == 3
    assert g.admit("a", 5.0)  # evicted, so admitted again
    assert not g.admit("c", 5.0) and not g.admit("d", 5.0)


# -- the promise across restarts (pure part) ----------------------------------------------------


def test_a_promise_restored_in_the_same_boot_is_kept_as_it_was() -> None:
    stored = StoredPromise("boot-a", 150.0, 2.0)
    assert restored_until(stored, "boot-a", 100.0, 2.0) == 150.0
    lapsed = StoredPromise("boot-a", 90.0, 2.0)
    assert restored_until(lapsed, "boot-a", 100.0, 2.0) == 90.0
    assert restored_until(None, "boot-a", 100.0, 2.0) is None
    assert restored_until(StoredPromise("boot-a", None, 2.0), "boot-a", 100.0, 2.0) is None


def test_a_promise_from_another_boot_counts_as_made_just_now() -> None:
    stored = StoredPromise("boot-a", 1e6, 2.0)  # a boottime of the old boot: meaningless now
    assert restored_until(stored, "boot-b", 5.0, 2.0) == 7.0
    assert restored_until(StoredPromise("boot-a", 3.0, 4.0), "boot-b", 5.0, 2.0) == 9.0
    assert restored_until(StoredPromise("boot-a", None, 2.0), "boot-b", 5.0, 2.0) is None
    unreadable = StoredPromise("", None, 0.0, problem="garbled")
    assert restored_until(unreadable, "boot-b", 5.0, 2.0) == 7.0


def test_the_store_writes_atomically_and_reads_back(tmp_path: Path) -> None:
    store = PromiseStore(tmp_path / "run", "prod", "n2", "boot-a")
    assert store.load() is None
    store.save(12.5, 2.0)
    assert store.load() == StoredPromise("boot-a", 12.5, 2.0)
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["failsafe-prod-n2.json"]
    store.path.write_text("{not json")
    loaded = store.load()
    assert loaded is not None and loaded.problem is not None


def test_an_unwritable_store_is_a_failsafe_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FailsafeError, match="cannot write") as e:
        PromiseStore(blocker / "run", "prod", "n2", "boot-a").save(1.0, 2.0)
    assert e.value.key == "store_dir"


# -- the secret -------------------------------------------------------------------------------


def test_the_secret_is_read_stripped_and_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"s3cr3t-" * 6 + b"\n")
    path.chmod(0o600)
    secret = read_secret(path)
    assert secret.key == b"s3cr3t-" * 6
    assert "s3cr3t" not in repr(secret) and str(path) in repr(secret)
    with pytest.raises(ValueError):
        Secret(b"short")


@pytest.mark.parametrize(
    ("content", "mode", "problem"),
    [
        (b"x" * 40, 0o640, "open to group or others"),
        (b"x" * 40, 0o604, "open to group or others"),
        (b"x" * 20 + b"\n", 0o600, "holds 20 bytes"),
        (None, 0o600, "cannot read"),
    ],
)
def test_a_bad_secret_is_refused_by_name_without_its_content(
    tmp_path: Path, content: bytes | None, mode: int, problem: str
) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_bytes(content)
        path.chmod(mode)
    with pytest.raises(FailsafeError, match=problem) as e:
        read_secret(path)
    assert e.value.key == "secret_file"
    assert "xxxx" not in str(e.value)

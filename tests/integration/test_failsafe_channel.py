"""The failsafe channel on loopback: two real endpoints, real UDP, a real store.

The active asks from 127.0.0.21 (n1), the passive grants on 127.0.0.22 (n2), ports picked by
the kernel. What the core relies on is pinned here: a pledge only while granting that epoch;
once ``set_granting(None)`` returns, no pledge more and ``pledged_until`` covers every pledge
given; every refused message is counted and changes nothing; a promise survives a restart (a
reboot counts as now + ttl); the asker never waits past its bound.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from failoverd.clock import boottime
from failoverd.core import Pledge
from failoverd.failsafe import (
    FailsafeChannel,
    FailsafeError,
    Kind,
    Message,
    PledgeClient,
    PledgeServer,
    PromiseStore,
    Refused,
)
from failoverd.failsafe.protocol import MAX_DATAGRAM, decode, encode, new_nonce
from failoverd.failsafe.server import REPLAY_CAPACITY, replay_retention
from tests.integration.failsafe_kit import (
    ACTIVE,
    KEY,
    PASSIVE,
    TTL,
    RecordingLog,
    channel_config,
    free_udp_port,
    wait_until,
)

pytestmark = pytest.mark.integration

BOUND = 0.3  # min(0.3, TTL / 4)
SLACK = 0.2  # scheduling on two shared cores
PATIENT = 1.0  # the wait of clients whose bound is not under test: loaded machines are slow


def make_server(
    store_dir: Path, boot_id: str = "boot-a", log: RecordingLog | None = None
) -> PledgeServer:
    return PledgeServer(
        secret=KEY,
        cluster="prod",
        node="n2",
        peer="n1",
        address=PASSIVE,
        port=0,
        ttl=TTL,
        store=PromiseStore(store_dir, "prod", "n2", boot_id),
        log=log if log is not None else RecordingLog(),
    )


def client_for(port: int, **kw: Any) -> PledgeClient:
    options: dict[str, Any] = {
        "secret": KEY,
        "cluster": "prod",
        "node": "n1",
        "peer": "n2",
        "peer_address": PASSIVE,
        "port": port,
        "ttl": TTL,
        "bind_address": ACTIVE,
        "log": RecordingLog(),
        "timeout": PATIENT,
    }
    options.update(kw)
    return PledgeClient(**options)


@pytest.fixture
def passive(tmp_path: Path) -> Iterator[PledgeServer]:
    server = make_server(tmp_path / "run")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def active(passive: PledgeServer) -> PledgeClient:
    return client_for(passive.port)


def test_loopback_addresses_are_usable() -> None:
    for address in (ACTIVE, PASSIVE):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))


# -- granting ---------------------------------------------------------------------------------


def test_a_pledge_is_granted_only_while_granting_that_epoch(
    passive: PledgeServer, active: PledgeClient
) -> None:
    refused = active.ask(7)
    assert (refused.result, refused.detail, refused.pledge) == ("refused", "not_granting", None)
    assert passive.pledged_until is None and passive.granted == 0

    passive.set_granting(7)
    before = boottime()
    got = active.ask(7)
    after = boottime()
    assert got.result == "pledged", got
    assert got.pledge is not None
    assert got.pledge.epoch == 7 and got.pledge.ttl == TTL
    assert before <= got.pledge.sent_at <= after
    until = passive.pledged_until
    assert until is not None
    # r (the passive's receipt) lies between the send and the answer.
    assert got.pledge.sent_at + TTL <= until <= after + TTL
    assert passive.granted == 1

    wrong = active.ask(6)
    assert (wrong.result, wrong.detail) == ("refused", "wrong_epoch")
    assert passive.pledged_until == until and passive.granted == 1
    assert passive.refusals.counts() == {"not_granting": 1, "wrong_epoch": 1}
    assert active.results() == {"refused": 2, "pledged": 1}


def test_the_promise_is_stored_before_the_pledge_is_answered(
    passive: PledgeServer, active: PledgeClient
) -> None:
    passive.set_granting(3)
    got = active.ask(3)
    assert got.pledge is not None
    stored = passive.store.load()  # read the moment the answer is in: it must be there
    assert stored is not None and stored.until is not None
    assert stored.until >= got.pledge.sent_at + TTL
    # Written one ttl ahead of the promise (invariant 5); the promise itself is what the core
    # reads.
    assert passive.pledged_until is not None
    assert stored.until == passive.pledged_until + TTL


def test_a_stalling_store_delays_no_pledge_while_it_is_ahead(
    passive: PledgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write takes ttl / 4 from the second on (a busy disk): with a write per request
    every answer would miss the asker's bound; written ahead in the background, none does."""
    passive.set_granting(3)
    asker = client_for(passive.port, timeout=BOUND)
    assert asker.ask(3).result == "pledged"  # the first write, at disk speed
    save = passive.store.save
    writes: list[float] = []

    def slow(until: float | None, ttl: float) -> None:
        time.sleep(TTL / 4)
        save(until, ttl)
        writes.append(boottime())

    monkeypatch.setattr(passive.store, "save", slow)
    results = []
    deadline = boottime() + 2.5 * TTL
    while boottime() < deadline:
        results.append(asker.ask(3).result)
        time.sleep(0.1)
    assert results and set(results) == {"pledged"}, results
    assert 1 <= len(writes) <= 4, writes  # about one per ttl, not one per request
    stored = passive.store.load()
    assert stored is not None and stored.until is not None and passive.pledged_until is not None
    assert stored.until >= passive.pledged_until


def test_after_set_granting_none_no_pledge_and_pledged_until_counts_every_one_given(
    passive: PledgeServer,
) -> None:
    passive.set_granting(7)
    clients = [client_for(passive.port) for _ in range(4)]
    pledges: list[Pledge] = []
    lock = threading.Lock()
    stop = threading.Event()

    def hammer(client: PledgeClient) -> None:
        while not stop.is_set():
            got = client.ask(7)
            if got.pledge is not None:
                with lock:
                    pledges.append(got.pledge)

    threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    time.sleep(0.3)
    passive.set_granting(None)
    returned_at = boottime()
    until = passive.pledged_until
    # Asks go on after it returned, until the passive has refused a few of them.
    refused = wait_until(lambda: passive.refusals.counts().get("not_granting", 0) >= 4, 5.0)
    stop.set()
    for t in threads:
        t.join()

    assert pledges, "the hammering clients got no pledge before granting stopped"
    assert until is not None
    # Every pledge given, also one in flight when granting stopped, is covered...
    assert all(p.sent_at + p.ttl <= until for p in pledges)
    # ...no request sent after set_granting returned was granted...
    assert all(p.sent_at < returned_at for p in pledges)
    # ...and the promise did not move since.
    assert passive.pledged_until == until
    # A pledge answered after its asker gave up counts on the passive only: never fewer there.
    assert passive.granted >= len(pledges)
    assert refused


# -- refusals ---------------------------------------------------------------------------------


def request(
    epoch: int = 7,
    cluster: str = "prod",
    sender: str = "n1",
    recipient: str = "n2",
    nonce: str | None = None,
    kind: Kind = Kind.REQUEST,
) -> Message:
    return Message(
        kind,
        cluster,
        sender,
        recipient,
        epoch,
        nonce or new_nonce(),
        ttl=TTL if kind is Kind.PLEDGE else None,
    )


REPLAYED = request()

CASES: dict[str, tuple[Refused, bytes, bool]] = {
    # name: (reason, datagram, answered with a signed refusal)
    "bad_signature": (
        Refused.BAD_MAC,
        encode(b"another-secret-of-32-bytes-or-more", request()),
        False,
    ),
    "replayed": (Refused.REPLAY, encode(KEY.key, REPLAYED), False),
    "another_epoch": (Refused.WRONG_EPOCH, encode(KEY.key, request(epoch=8)), True),
    "another_cluster": (Refused.WRONG_CLUSTER, encode(KEY.key, request(cluster="stage")), False),
    "from_another_node": (Refused.WRONG_NODE, encode(KEY.key, request(sender="n3")), False),
    "to_another_node": (Refused.WRONG_NODE, encode(KEY.key, request(recipient="n1")), False),
    "an_answer_sent_back": (
        Refused.MALFORMED,
        encode(KEY.key, request(sender="n1", recipient="n2", kind=Kind.PLEDGE)),
        False,
    ),
    "oversized": (Refused.OVERSIZED, encode(KEY.key, request()) + b" " * MAX_DATAGRAM, False),
    "garbage": (Refused.MALFORMED, b"\x00garbage\xff" * 20, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_message_is_refused_counted_and_changes_nothing(
    passive: PledgeServer, active: PledgeClient, case: str
) -> None:
    reason, datagram, answered = CASES[case]
    passive.set_granting(7)
    assert active.ask(7).result == "pledged"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.bind((ACTIVE, 0))
        raw.settimeout(0.5)
        if case == "replayed":  # the original goes through once, and moves the promise
            raw.sendto(datagram, (PASSIVE, passive.port))
            first = decode(KEY.key, raw.recv(MAX_DATAGRAM))
            assert isinstance(first, Message) and first.kind is Kind.PLEDGE
        until, granted = passive.pledged_until, passive.granted
        raw.sendto(datagram, (PASSIVE, passive.port))
        assert wait_until(lambda: passive.refusals.counts().get(reason.value) == 1)
        if answered:
            answer = decode(KEY.key, raw.recv(MAX_DATAGRAM))
            assert isinstance(answer, Message)
            assert answer.kind is Kind.REFUSAL and answer.reason == reason.value
            sent = decode(KEY.key, datagram)
            assert isinstance(sent, Message) and answer.nonce == sent.nonce
        else:
            raw.settimeout(0.2)
            with pytest.raises(TimeoutError):
                raw.recv(MAX_DATAGRAM)
    assert passive.refusals.counts() == {reason.value: 1}
    assert passive.pledged_until == until
    assert passive.granted == granted
    assert passive.granting == 7


def test_refusals_are_logged_once_then_throttled(tmp_path: Path) -> None:
    log = RecordingLog()
    server = make_server(tmp_path, log=log)
    server.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            for _ in range(50):
                raw.sendto(b"junk", (PASSIVE, server.port))
        assert wait_until(lambda: server.refusals.counts().get("malformed") == 50)
    finally:
        server.close()
    lines = log.events("failsafe_refused")
    assert len(lines) == 1 and lines[0]["reason"] == "malformed"


def test_the_replay_guard_outlives_any_pledge_and_holds_ten_asks_a_second() -> None:
    for ttl in (0.5, 2.0, 10.0):
        assert replay_retention(ttl) >= 30 * ttl
    assert 10 * replay_retention(TTL) <= REPLAY_CAPACITY


# -- restarts ---------------------------------------------------------------------------------


def test_pledges_survive_a_restart_of_the_server(tmp_path: Path) -> None:
    first = make_server(tmp_path)
    first.start()
    try:
        first.set_granting(4)
        assert client_for(first.port).ask(4).result == "pledged"
        until = first.pledged_until
    finally:
        first.close()
    assert until is not None
    again = make_server(tmp_path)
    again.start()
    try:
        # Never less than promised; at most the one ttl the store is written ahead.
        restored = again.pledged_until
        assert restored is not None and until <= restored <= until + TTL
        assert again.granting is None  # grants nothing until the core says so
        assert client_for(again.port).ask(4).detail == "not_granting"
        assert again.pledged_until == restored
    finally:
        again.close()


def test_a_changed_boot_id_means_pledged_until_now_plus_ttl(tmp_path: Path) -> None:
    first = make_server(tmp_path, boot_id="boot-a")
    first.start()
    try:
        first.set_granting(4)
        assert client_for(first.port).ask(4).result == "pledged"
    finally:
        first.close()
    log = RecordingLog()
    rebooted = make_server(tmp_path, boot_id="boot-b", log=log)
    before = boottime()
    rebooted.start()
    after = boottime()
    try:
        until = rebooted.pledged_until
        assert until is not None and before + TTL <= until <= after + TTL
        assert log.events("failsafe_pledges_from_another_boot")
        # Written back at once for this boot: a daemon restart now keeps it as it is.
        stored = rebooted.store.load()
        assert stored is not None and (stored.boot_id, stored.until) == ("boot-b", until)
    finally:
        rebooted.close()


def test_a_node_that_never_promised_restarts_free(tmp_path: Path) -> None:
    for boot_id in ("boot-a", "boot-a", "boot-b"):
        server = make_server(tmp_path, boot_id=boot_id)
        server.start()
        server.close()
        assert server.pledged_until is None


def test_a_pledge_the_store_cannot_keep_is_not_given(
    passive: PledgeServer, active: PledgeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    passive.set_granting(7)

    def fail(until: float | None, ttl: float) -> None:
        raise FailsafeError("cannot write: disk gone", key="store_dir")

    monkeypatch.setattr(passive.store, "save", fail)
    got = active.ask(7)
    assert got.result == "unanswered" and got.pledge is None
    assert passive.pledged_until is None and passive.granted == 0


def test_an_unusable_store_or_a_taken_port_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FailsafeError) as e:
        make_server(blocker / "run").start()
    assert e.value.key == "store_dir"
    taken = make_server(tmp_path / "a")
    taken.start()
    try:
        other = make_server(tmp_path / "b")
        other._port = taken.port  # the same address and port
        with pytest.raises(FailsafeError, match="cannot listen") as e:
            other.start()
        assert e.value.key == "port"
    finally:
        taken.close()


# -- the asker's bound ------------------------------------------------------------------------


@pytest.fixture
def silent_peer() -> Iterator[socket.socket]:
    """A socket where the passive should listen, that reads and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((PASSIVE, 0))
        yield s


def test_the_asker_never_waits_past_its_bound_when_the_peer_is_silent(
    silent_peer: socket.socket,
) -> None:
    client = client_for(silent_peer.getsockname()[1], timeout=None)  # the default bound
    assert client.timeout == BOUND
    started = time.monotonic()
    got = client.ask(7)
    took = time.monotonic() - started
    assert got.result == "unanswered" and got.pledge is None
    assert BOUND - 0.01 <= took <= BOUND + SLACK, took
    request_seen = decode(KEY.key, silent_peer.recv(MAX_DATAGRAM))
    assert isinstance(request_seen, Message) and request_seen.kind is Kind.REQUEST
    assert (request_seen.sender, request_seen.recipient, request_seen.epoch) == ("n1", "n2", 7)


def test_the_bound_is_a_quarter_of_a_short_ttl() -> None:
    assert client_for(1, ttl=0.8, timeout=None).timeout == pytest.approx(0.2)
    assert client_for(1, ttl=10.0, timeout=None).timeout == 0.3


def test_no_listener_is_known_at_once(silent_peer: socket.socket) -> None:
    port = silent_peer.getsockname()[1]
    silent_peer.close()  # nothing listens there now: the kernel says so
    started = time.monotonic()
    got = client_for(port).ask(7)
    assert got.result == "unanswered"
    assert time.monotonic() - started < BOUND  # well before even the default bound


def answering_peer(
    sock: socket.socket, answers: Callable[[Message], list[bytes]]
) -> threading.Thread:
    """Answer every request on ``sock`` with ``answers(request)``."""

    def serve() -> None:
        sock.settimeout(2.0)
        try:
            data, source = sock.recvfrom(MAX_DATAGRAM + 1)
        except (TimeoutError, OSError):
            return
        req = decode(KEY.key, data)
        assert isinstance(req, Message)
        for datagram in answers(req):
            sock.sendto(datagram, source)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def pledge_for(req: Message, **change: Any) -> bytes:
    fields = {
        "kind": Kind.PLEDGE,
        "cluster": "prod",
        "sender": "n2",
        "recipient": "n1",
        "epoch": req.epoch,
        "nonce": req.nonce,
        "ttl": TTL,
    }
    fields.update(change)
    return encode(change.pop("key", KEY.key), Message(**fields))


def test_forged_answers_are_refused_and_do_not_cut_the_wait_short(
    silent_peer: socket.socket,
) -> None:
    def flood(req: Message) -> list[bytes]:
        return [
            b"junk" * 10,
            encode(b"x" * 40, Message(Kind.PLEDGE, "prod", "n2", "n1", req.epoch, req.nonce, TTL)),
            pledge_for(req, nonce=new_nonce()),  # an answer, but to another request
            pledge_for(req, epoch=req.epoch + 1),
            pledge_for(req, sender="n3"),
            pledge_for(req, cluster="stage"),
            # A request from the peer to us (it asks in turn) is not an answer.
            encode(KEY.key, replace(req, sender="n2", recipient="n1")),
        ] * 20

    client = client_for(silent_peer.getsockname()[1], timeout=None)
    peer = answering_peer(silent_peer, flood)
    started = time.monotonic()
    got = client.ask(7)
    took = time.monotonic() - started
    peer.join()
    assert got.result == "unanswered" and got.pledge is None
    assert took <= BOUND + SLACK
    assert client.refusals.counts() == {
        "malformed": 40,
        "bad_mac": 20,
        "replay": 20,
        "wrong_epoch": 20,
        "wrong_node": 20,
        "wrong_cluster": 20,
    }


def test_the_real_answer_after_forged_ones_is_believed(silent_peer: socket.socket) -> None:
    client = client_for(silent_peer.getsockname()[1])
    peer = answering_peer(
        silent_peer, lambda req: [pledge_for(req, epoch=99), pledge_for(req, ttl=5.0)]
    )
    got = client.ask(7)
    peer.join()
    assert got.result == "pledged" and got.pledge is not None
    assert got.pledge.ttl == TTL  # the peer promised 5 s; we count no more than our own ttl
    assert client.refusals.counts() == {"wrong_epoch": 1}


# -- the daemon's channel ---------------------------------------------------------------------


@pytest.fixture
def channels(tmp_path: Path) -> Iterator[dict[str, FailsafeChannel]]:
    port = free_udp_port()
    made = {
        n: FailsafeChannel(channel_config(tmp_path, n, port), RecordingLog()) for n in ("n1", "n2")
    }
    try:
        for c in made.values():
            c.start()
        yield made
    finally:
        for c in made.values():
            c.close()


def test_the_channel_asks_in_the_background_and_keeps_the_latest_pledge(
    channels: dict[str, FailsafeChannel],
) -> None:
    n1, n2 = channels["n1"], channels["n2"]
    assert n1.observed() == (None, None, None)
    assert n1.ask(5)  # not granting: refused, nothing kept
    assert wait_until(lambda: n1.stats().asks.get("refused") == 1)
    assert n1.observed()[0] is None

    n2.set_granting(5)
    assert n2.observed() == (None, None, 5)
    before = boottime()
    assert n1.ask(5)
    assert wait_until(lambda: n1.observed()[0] is not None)
    pledge, _, _ = n1.observed()
    assert pledge is not None and pledge.epoch == 5 and pledge.sent_at >= before
    _, until, granting = n2.observed()
    assert granting == 5 and until is not None and until >= pledge.sent_at + TTL

    n2.set_granting(None)
    assert n1.ask(5)
    assert wait_until(lambda: n1.stats().asks.get("refused") == 2)
    assert n1.observed()[0] == pledge  # a refusal does not take the pledge away
    assert n2.observed() == (None, until, None)
    stats1, stats2 = n1.stats(), n2.stats()
    assert (stats1.received, stats1.granted) == (1, 0)
    assert (stats2.received, stats2.granted) == (0, 1)
    assert stats2.refused == {"not_granting": 2}
    assert stats1.asks == {"refused": 2, "pledged": 1, "dropped": 0}


def test_an_ask_while_one_is_in_flight_is_dropped(tmp_path: Path) -> None:
    port = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((PASSIVE, port))  # the peer is there but never answers
        n1 = FailsafeChannel(channel_config(tmp_path, "n1", port), RecordingLog())
        n1.start()
        try:
            started = time.monotonic()
            assert n1.ask(5)
            assert not n1.ask(5)  # in flight: dropped, and ask returned at once
            assert not n1.ask(6)
            assert time.monotonic() - started < 0.1  # at once: the bound is 0.3 s
            assert wait_until(lambda: n1.stats().asks.get("unanswered") == 1)
            assert n1.ask(5)  # free again
            assert wait_until(lambda: n1.stats().asks.get("unanswered") == 2)
            assert n1.stats().asks["dropped"] == 2
        finally:
            n1.close()


def test_a_too_open_secret_stops_the_channel(tmp_path: Path) -> None:
    cfg = channel_config(tmp_path, "n1", free_udp_port())
    assert cfg.failsafe.secret_file is not None
    cfg.failsafe.secret_file.chmod(0o644)  # after the config was loaded
    channel = FailsafeChannel(cfg, RecordingLog())
    with pytest.raises(FailsafeError, match="chmod 600") as e:
        channel.start()
    assert e.value.key == "secret_file"
    assert channel.server is None

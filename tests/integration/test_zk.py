"""The ZooKeeper adapter (failoverd.zk) against a real ZooKeeper 3.8 server."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from failoverd.clock import boottime
from failoverd.core import (
    CheckStatus,
    ClusterView,
    LastLeader,
    MalformedMember,
    MemberStatus,
    SwitchoverRequest,
    ZkState,
)
from failoverd.core.model import Position, RejoinRequest
from failoverd.zk import (
    DuplicateNode,
    LeaseConflict,
    LeaseError,
    ZkCluster,
    ZkOperationFailed,
    ZkUnreachable,
    member_from_json,
    member_to_json,
    position_from_json,
    position_to_json,
    rejoin_from_json,
    rejoin_to_json,
)
from failoverd.zk.session import Session
from lab.process import wait_for
from lab.zookeeper import ZooKeeperServer, free_port

from .conftest import Child, MakeCluster
from .relay import Relay

pytestmark = pytest.mark.integration

CHILD_T = 1.0  # session timeout of child processes: short, to keep the suite fast


def view_of(cluster: ZkCluster) -> ClusterView:
    view = cluster.view()
    assert view is not None
    return view


def member(node: str, reason: str = "ok", **kw: Any) -> MemberStatus:
    return MemberStatus(node=node, role="passive", epoch=0, eligible=True, healthy=True,
                        reason=reason, **kw)  # fmt: skip


def cons_timeout_ms(server: ZooKeeperServer, session_id: int) -> int:
    """The session timeout the server itself reports for a session (``cons``)."""
    for line in server.four_letter("cons").splitlines():
        if f"sid={session_id:#x}," in line:
            match = re.search(r"[,(]to=(\d+)", line)
            assert match, line
            return int(match.group(1))
    raise AssertionError(f"session {session_id:#x} not in cons")


# ------------------------------------------------------------------------------------------


def test_member_record_round_trips_every_field() -> None:
    """Guards the JSON helpers against fields added to MemberStatus later."""
    full = MemberStatus(
        node="n1", role="active", epoch=7, eligible=False, healthy=False, reason="app down",
        reason_code="checks_failed", lsn=123456, db_role="stopped", timeline=3, lsn_exact=False,
        checks=(CheckStatus("app", False, "HTTP 503", 0.25), CheckStatus("pg", True)),
        published_at=1700000000.5, version="1.2.3",
    )  # fmt: skip
    for f in dataclasses.fields(MemberStatus):
        if f.name not in ("age",):
            assert getattr(full, f.name) != f.default, f"test must set {f.name} to a non-default"
    assert member_from_json("n1", member_to_json(full)) == full
    assert "age" not in json.loads(member_to_json(full))


def test_an_older_record_without_lsn_exact_counts_a_stopped_database_as_a_lower_bound() -> None:
    """A stopped database's LSN is its checkpoint: only a clean primary stop ends WAL there, and
    a record that does not say which never lets the peer overtake it."""
    for db_role, exact in (("stopped", False), ("replica", True), ("primary", True)):
        data = json.dumps(
            {"node": "n1", "role": "fenced", "epoch": 3, "eligible": False, "healthy": True,
             "reason": "", "lsn": 7000, "db_role": db_role}
        ).encode()  # fmt: skip
        member = member_from_json("n1", data)
        assert isinstance(member, MemberStatus) and member.lsn_exact is exact, (db_role, member)
    wrong = member_from_json("n1", data.replace(b'"lsn": 7000', b'"lsn": 7000, "lsn_exact": 1'))
    assert isinstance(wrong, MalformedMember) and "lsn_exact" in wrong.error, wrong


def test_negotiated_timeout_is_what_the_server_granted(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster
) -> None:
    within = make_cluster(zookeeper, "n1", session_timeout=3.0, layout=False)
    above = make_cluster(zookeeper, "n2", session_timeout=60.0, layout=False)
    below = make_cluster(zookeeper, "n3", session_timeout=0.05, layout=False)
    for cluster, expected in ((within, 3.0), (above, 20.0), (below, 0.2)):
        assert cluster.negotiated_timeout == expected
        assert cluster.status().negotiated_timeout == expected
        assert cluster.session_id is not None
        assert cons_timeout_ms(zookeeper, cluster.session_id) == expected * 1000


def test_negotiated_timeout_falls_back_to_cons(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a future kazoo route the Connect answer elsewhere, ``cons`` still tells."""
    monkeypatch.setattr(Session, "_hook_negotiation", lambda self: None)
    cluster = make_cluster(zookeeper, "n1", session_timeout=60.0, layout=False)
    assert cluster.negotiated_timeout == 20.0


def test_two_clients_race_for_the_lease_one_winner_per_round(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster
) -> None:
    a, b = make_cluster(zookeeper, "a"), make_cluster(zookeeper, "b")
    rounds = 30
    winners: list[str] = []
    for expected in range(rounds):
        barrier = threading.Barrier(2, timeout=5)
        outcome: dict[str, object] = {}

        def race(cluster: ZkCluster, expected: int = expected, barrier: threading.Barrier = barrier,
                 outcome: dict[str, object] = outcome) -> None:  # fmt: skip
            barrier.wait()
            try:
                outcome[cluster.node] = cluster.acquire(expected)
            except LeaseError as exc:
                outcome[cluster.node] = exc

        threads = [threading.Thread(target=race, args=(c,)) for c in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        won = {n: r for n, r in outcome.items() if isinstance(r, int)}
        lost = {n: r for n, r in outcome.items() if not isinstance(r, int)}
        assert len(won) == 1, outcome
        assert all(isinstance(r, LeaseConflict) for r in lost.values()), outcome
        (winner, epoch), = won.items()  # fmt: skip
        assert epoch == expected + 1
        holder = a if winner == "a" else b
        lease = view_of(holder).lease
        assert lease is not None
        assert (lease.node, lease.epoch, lease.mine) == (winner, epoch, True)
        holder.release(epoch, final_lsn=None, clean=True)
        winners.append(winner)
    for cluster in (a, b):

        def converged(c: ZkCluster = cluster) -> bool:
            v = view_of(c)
            return v.epoch == rounds and v.lease is None

        assert wait_for(converged, 5), view_of(cluster)
    assert len(winners) == rounds


def test_frozen_holder_loses_the_lease_after_its_session_timeout(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster, spawn_child: Callable[..., Child],
    zk_chroot: str,
) -> None:  # fmt: skip
    other = make_cluster(zookeeper, "b")
    child = spawn_child(zookeeper, zk_chroot, "a", CHILD_T, "lease")
    _session, negotiated = child.expect("READY").split()
    assert float(negotiated) == CHILD_T
    epoch = int(child.expect("EPOCH"))
    seen = wait_for(lambda: (v := other.view()) and v.lease and v.lease.epoch == epoch, 5)
    assert seen, other.view()
    lease = view_of(other).lease
    assert lease is not None
    assert (lease.node, lease.mine) == ("a", False)

    child.signal(signal.SIGSTOP)
    frozen_at = boottime()
    gone = wait_for(lambda: view_of(other).lease is None, CHILD_T + 2.0)
    elapsed = boottime() - frozen_at
    assert gone, f"lease still held {elapsed:.2f} s after SIGSTOP"
    assert elapsed >= 0.8 * CHILD_T, f"lease vanished after {elapsed:.2f} s, before the timeout"
    # It expired: no last_leader record says it was given back.
    assert view_of(other).last_leader is None

    assert other.acquire(epoch) == epoch + 1
    lease = view_of(other).lease
    assert lease is not None
    assert (lease.node, lease.epoch, lease.mine) == ("b", epoch + 1, True)
    child.kill()


def test_malformed_records_are_reported_and_the_reader_recovers(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    raw_client: Callable[..., KazooClient], zk_chroot: str,
) -> None:  # fmt: skip
    writer, reader = make_cluster(zookeeper, "n1"), make_cluster(zookeeper, "n2")
    wakeups = threading.Semaphore(0)
    reader.add_listener(wakeups.release)
    raw = raw_client(zookeeper)
    path = f"{zk_chroot}/members/n1"

    writer.claim_member(member("n1", "first"), wait=1.0)
    assert wait_for(lambda: isinstance(view_of(reader).member("n1"), MemberStatus), 5)
    assert wakeups.acquire(timeout=1), "listener was not called on a view change"

    def malformed() -> MalformedMember | None:
        m = view_of(reader).member("n1")
        return m if isinstance(m, MalformedMember) else None

    for garbage, words in (
        (b"\xff\x00 not json", "JSON"),
        (b'{"node": "n1", "epoch": 1}', "'role'"),
        (json.dumps({**json.loads(member_to_json(member("n1"))), "epoch": "7"}).encode(),
         "'epoch' must be an integer"),
        (member_to_json(member("n9")), "names node 'n9'"),
    ):  # fmt: skip
        raw.set(path, garbage)

        def reported(words: str = words) -> MalformedMember | None:
            m = malformed()
            return m if m is not None and words in m.error else None

        bad = wait_for(reported, 5)
        assert bad, (words, view_of(reader).member("n1"))
        assert bad.node == "n1"

    writer.publish(member("n1", "second"))
    fixed = wait_for(lambda: (m := view_of(reader).member("n1")) and
                     isinstance(m, MemberStatus) and m.reason == "second" and m, 5)  # fmt: skip
    assert fixed
    time.sleep(0.3)
    aged = view_of(reader).member("n1")
    assert isinstance(aged, MemberStatus)
    assert aged.age >= 0.3

    # Malformed cluster records: reported as problems, never trusted.
    raw.set(f"{zk_chroot}/epoch", b"seven")
    raw.set(f"{zk_chroot}/last_leader", b'{"node": "n1"}')
    raw.create(f"{zk_chroot}/switchover", b"[]")
    raw.create(f"{zk_chroot}/lease", b"{oops", ephemeral=True)
    assert wait_for(lambda: len(view_of(reader).problems) == 4, 5), view_of(reader).problems
    view = view_of(reader)
    assert view.epoch == -1
    assert view.last_leader is None and view.switchover is None
    assert view.lease is not None and view.lease.node == "<malformed>" and not view.lease.mine
    text = " ".join(view.problems)
    for words in ("epoch", "last_leader", "switchover", "lease"):
        assert words in text
    with pytest.raises(ZkOperationFailed, match="epoch"):
        reader.acquire(0)
    raw.set(f"{zk_chroot}/epoch", b"0")
    with pytest.raises(LeaseConflict, match="already held"):
        reader.acquire(0)

    raw.delete(f"{zk_chroot}/lease")
    raw.delete(f"{zk_chroot}/switchover")
    raw.set(f"{zk_chroot}/last_leader", b"")
    assert wait_for(lambda: view_of(reader).problems == (), 5), view_of(reader).problems
    assert reader.acquire(0) == 1


def test_another_cluster_can_neither_see_nor_take_the_lease(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    raw_client: Callable[..., KazooClient], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    prod_root, stage_root = "/failoverd/prod-acl", "/failoverd/stage-acl"
    prod_creds, stage_creds = ("prod", "prod-secret"), ("stage", "stage-secret")
    prod = make_cluster(zookeeper, "n1", chroot=prod_root, credentials=prod_creds)
    prod.claim_member(member("n1"), wait=1.0)
    assert prod.acquire(0) == 1

    stage = make_cluster(zookeeper, "n1", chroot=stage_root, credentials=stage_creds)
    view = view_of(stage)
    assert (view.epoch, view.lease, view.members, view.problems) == (0, None, (), ())
    assert stage.acquire(0) == 1  # its own lease, in its own chroot
    assert view_of(prod).lease is not None and view_of(prod).lease.mine  # type: ignore[union-attr]

    # A stage daemon pointed at the prod chroot by mistake gets nowhere.
    lost = make_cluster(zookeeper, "n2", chroot=prod_root, credentials=stage_creds, layout=False)
    with pytest.raises(ZkOperationFailed, match="NoAuth"):
        lost.ensure_layout()
    with pytest.raises(ZkOperationFailed, match="NoAuth"):
        lost.acquire(1)
    with pytest.raises(ZkOperationFailed):
        lost.wait_view(0.5)

    raw: Any = raw_client(zookeeper, auth=stage_creds)
    for method, args in (
        (raw.get, (f"{prod_root}/lease",)),
        (raw.get_children, (f"{prod_root}/members",)),
        (raw.get, (f"{prod_root}/epoch",)),
        (raw.set, (f"{prod_root}/epoch", b"5")),
        (raw.delete, (f"{prod_root}/lease",)),
        (raw.create, (f"{prod_root}/switchover", b"{}")),
    ):
        with pytest.raises(NoAuthError):
            method(*args)
    assert prod.view() is not None and view_of(prod).epoch == 1

    with caplog.at_level(logging.WARNING, logger="failoverd.zk"):
        prod.ensure_layout()  # idempotent, and its own ACL is recognised
        assert "ACL" not in caplog.text
        # A chroot created without credentials does not protect the cluster: said loudly.
        open_root = "/failoverd/open-acl"
        raw_client(zookeeper).create(open_root, b"", makepath=True)
        make_cluster(zookeeper, "n1", chroot=open_root, credentials=prod_creds)
        assert f"{open_root} exists with ACL" in caplog.text


def test_zookeeper_restart_under_a_connected_client(
    fresh_zookeeper: ZooKeeperServer, make_cluster: MakeCluster
) -> None:
    zk = fresh_zookeeper
    # Long enough that the restarted server, a JVM starting on a busy machine, sees the client
    # back before the session it restored expires: that is what this test is about.
    session_timeout = 6.0
    holder = make_cluster(zk, "n1", session_timeout=session_timeout)
    assert holder.acquire(0) == 1
    session = holder.session_id
    holder.roundtrip(1.0)
    assert wait_for(lambda: holder.status().last_roundtrip_sent_at, 2)
    before = holder.status()
    assert before.state == ZkState.CONNECTED

    zk.stop()
    assert wait_for(lambda: holder.status().state == ZkState.SUSPENDED, 3), holder.status()
    suspended = holder.status()
    assert suspended.changed_at > before.changed_at
    ticks = int((session_timeout + 0.5) / 0.05)
    for _ in range(ticks):  # ticks for longer than the session: nothing proves liveness
        holder.roundtrip(0.2)
        time.sleep(0.05)
    assert holder.status().last_roundtrip_sent_at == before.last_roundtrip_sent_at
    assert holder.status().state == ZkState.SUSPENDED  # kazoo cannot know the session's fate
    for attempt in (
        lambda: holder.acquire(1),
        lambda: holder.release(1, None, True),
        lambda: holder.set_paused(True),
        lambda: holder.read_history(1),
    ):
        with pytest.raises(LeaseError):
            attempt()
    holder.publish(member("n1"))  # fire and forget: must not raise either
    holder.append_history({"kind": "test"})

    zk.start()
    assert wait_for(lambda: holder.status().state == ZkState.CONNECTED, 8), holder.status()
    after = holder.status()
    assert after.changed_at > suspended.changed_at
    resumed_from = boottime()
    for _ in range(200):
        holder.roundtrip(0.5)
        if (holder.status().last_roundtrip_sent_at or 0) >= resumed_from:
            break
        time.sleep(0.01)
    assert (holder.status().last_roundtrip_sent_at or 0) >= resumed_from

    # A restarted server restores its sessions with a fresh timeout, however long it was down:
    # same session, the lease survived, and it was never acquired twice.
    assert holder.session_id == session
    assert wait_for(lambda: (lease := view_of(holder).lease) and lease.mine and lease.epoch == 1, 3)
    with pytest.raises(LeaseConflict):
        holder.acquire(1)
    assert view_of(holder).epoch == 1


def test_partition_longer_than_the_session_loses_the_lease_safely(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    zk_proxy: Callable[[ZooKeeperServer], Relay],
) -> None:  # fmt: skip
    t = 1.0
    proxy = zk_proxy(zookeeper)
    holder = make_cluster(proxy, "n1", session_timeout=t)
    peer = make_cluster(zookeeper, "n2", session_timeout=4.0)
    assert holder.acquire(0) == 1
    session = holder.session_id
    states: list[ZkState] = []
    holder.add_listener(lambda: states.append(holder.status().state))
    assert wait_for(lambda: view_of(peer).lease is not None, 5)

    def tick() -> None:
        holder.roundtrip(0.2)
        time.sleep(0.02)

    for _ in range(10):
        tick()
    proxy.blackhole()
    cut_at = boottime()
    # The peer sees the lease expire and takes it; the holder keeps ticking meanwhile.
    acquired_at = None
    for _ in range(400):
        tick()
        if view_of(peer).lease is None:
            assert peer.acquire(1) == 2
            acquired_at = boottime()
            break
    assert acquired_at is not None, "the lease never expired"
    last_ok = holder.status().last_roundtrip_sent_at
    assert last_ok is not None and last_ok <= cut_at
    # The basis of self-fencing: a session outlives its last successful round-trip by >= T.
    assert acquired_at - last_ok >= 0.9 * t, acquired_at - last_ok
    assert holder.roundtrip_failures > 0
    assert holder.status().state == ZkState.SUSPENDED
    view = view_of(holder)  # stale, and says so only through the connection state
    assert view.lease is not None and view.lease.mine

    proxy.heal()
    assert wait_for(lambda: holder.status().state == ZkState.CONNECTED, 8), holder.status()
    assert ZkState.LOST in states, states
    assert holder.session_id not in (None, session)
    assert wait_for(
        lambda: (lease := view_of(holder).lease) and lease.node == "n2" and not lease.mine, 5
    ), view_of(holder)
    assert view_of(holder).epoch == 2
    with pytest.raises(LeaseConflict):
        holder.acquire(1)
    with pytest.raises(LeaseConflict):
        holder.release(1, None, True)


def test_duplicate_node_name_is_refused_while_the_other_keeps_publishing(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster
) -> None:
    first = make_cluster(zookeeper, "dup")
    first.claim_member(member("dup", "first"), wait=1.0)
    stop = threading.Event()

    def keep_publishing() -> None:
        for i in range(100):
            if stop.wait(0.1):
                return
            first.publish(member("dup", f"tick {i}"))

    publisher = threading.Thread(target=keep_publishing)
    publisher.start()
    try:
        second = make_cluster(zookeeper, "dup")
        started = boottime()
        with pytest.raises(DuplicateNode, match="duplicate node name"):
            second.claim_member(member("dup", "second"), wait=5.0)
        assert boottime() - started < 2.0  # refused on the first update, not after the wait
    finally:
        stop.set()
        publisher.join(5)

    # A silent record that outlives the wait is refused as well.
    third = make_cluster(zookeeper, "dup")
    started = boottime()
    with pytest.raises(DuplicateNode, match="still there"):
        third.claim_member(member("dup", "third"), wait=0.5)
    assert 0.5 <= boottime() - started < 2.0


def test_claim_waits_for_the_previous_life_to_expire(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster, spawn_child: Callable[..., Child],
    zk_chroot: str, raw_client: Callable[..., KazooClient],
) -> None:  # fmt: skip
    new_life = make_cluster(zookeeper, "ghost")
    child = spawn_child(zookeeper, zk_chroot, "ghost", CHILD_T, "member")
    old_session = int(child.expect("READY").split()[0], 16)
    child.expect("CLAIMED")
    child.signal(signal.SIGKILL)
    killed_at = boottime()
    new_life.claim_member(member("ghost", "new life"), wait=CHILD_T + 3.0)
    elapsed = boottime() - killed_at
    assert 0.8 * CHILD_T <= elapsed <= CHILD_T + 2.0, elapsed
    _data, stat = raw_client(zookeeper).get(f"{zk_chroot}/members/ghost")
    assert stat.ephemeralOwner == new_life.session_id != old_session
    assert wait_for(
        lambda: (m := view_of(new_life).member("ghost")) and getattr(m, "reason", "") == "new life",
        5,
    )


def test_release_writes_last_leader_and_only_the_holder_may_release(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster
) -> None:
    a, b = make_cluster(zookeeper, "a"), make_cluster(zookeeper, "b")
    epoch = a.acquire(0)
    assert wait_for(lambda: view_of(b).lease is not None, 5)
    with pytest.raises(LeaseConflict, match="not by us"):
        b.release(epoch, final_lsn=1, clean=True)
    with pytest.raises(LeaseConflict):
        a.release(epoch + 1, final_lsn=1, clean=True)

    a.release(epoch, final_lsn=0x3000060, clean=False)
    expected = LastLeader(node="a", epoch=epoch, final_lsn=0x3000060, clean=False)
    assert view_of(a).lease is None  # at once, without waiting for the watch
    assert view_of(a).last_leader == expected
    assert wait_for(lambda: view_of(b).last_leader == expected and view_of(b).lease is None, 5)
    with pytest.raises(LeaseConflict, match="no lease"):
        a.release(epoch, final_lsn=None, clean=True)


def test_a_node_left_serving_is_recorded_with_or_without_its_lease(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster
) -> None:
    """A daemon stopping while paused and serving says so in last_leader: in the transaction
    that deletes its lease, or alone, checked against the epoch, once its lease is gone."""
    a, b = make_cluster(zookeeper, "a"), make_cluster(zookeeper, "b")
    epoch = a.acquire(0)
    a.release(epoch, final_lsn=None, clean=False, timeline=None, left_serving=True)
    left = LastLeader(node="a", epoch=epoch, final_lsn=None, clean=False, left_serving=True)
    assert wait_for(lambda: view_of(b).last_leader == left and view_of(b).lease is None, 5)
    # Its next life, still paused, stops again: no lease to delete, the record alone.
    b.release(epoch, final_lsn=None, clean=False, left_serving=True)
    by_b = dataclasses.replace(left, node="b")
    assert wait_for(lambda: view_of(a).last_leader == by_b, 5)
    # Not for an epoch that has moved on, and never without left_serving.
    next_epoch = a.acquire(epoch)
    a.release(next_epoch, final_lsn=7, clean=True, timeline=3)
    assert view_of(a).last_leader == LastLeader("a", next_epoch, 7, True, timeline=3)
    with pytest.raises(LeaseConflict, match="moved on"):
        b.release(epoch, final_lsn=None, clean=False, left_serving=True)
    with pytest.raises(LeaseConflict, match="no lease"):
        b.release(next_epoch, final_lsn=None, clean=False)
    assert wait_for(lambda: view_of(b).last_leader == view_of(a).last_leader, 5)


def test_pause_switchover_and_history(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster
) -> None:
    ctl, daemon = make_cluster(zookeeper, "ctl"), make_cluster(zookeeper, "n1")
    ctl.set_paused(True)
    ctl.set_paused(True)  # idempotent
    assert wait_for(lambda: view_of(daemon).paused, 5)
    ctl.set_paused(False)
    assert wait_for(lambda: not view_of(daemon).paused, 5)

    req = SwitchoverRequest(target="n2", from_epoch=3, requested_by="ops@host", deadline=1e10)
    ctl.request_switchover(req)
    assert wait_for(lambda: view_of(daemon).switchover == req, 5)
    with pytest.raises(LeaseConflict, match="pending"):
        ctl.request_switchover(dataclasses.replace(req, target=None, force=True))
    daemon.clear_switchover()
    daemon.clear_switchover()
    assert wait_for(lambda: view_of(ctl).switchover is None, 5)

    for i in range(5):
        daemon.append_history({"kind": "failover", "epoch": i})
    assert wait_for(lambda: len(ctl.read_history(10)) == 5, 5)  # appended asynchronously
    records = ctl.read_history(3)
    assert [r["epoch"] for r in records] == [2, 3, 4]
    assert all(isinstance(r["time"], float) and str(r["id"]).startswith("event-") for r in records)


def test_view_of_a_missing_cluster_waits_for_its_layout(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster
) -> None:
    reader = make_cluster(zookeeper, "ctl", layout=False)
    reader.watch()
    with pytest.raises(ZkOperationFailed, match="run failoverctl init"):
        reader.wait_view(0.5)
    assert reader.view() is None
    make_cluster(zookeeper, "n1").claim_member(member("n1"), wait=1.0)  # creates the layout
    reader.ensure_layout()  # idempotent; resumes the watches
    assert wait_for(lambda: (v := reader.view()) and v.member("n1"), 5)
    assert view_of(reader).problems == ()


def test_unreachable_zookeeper_at_start(tmp_path: Any) -> None:
    port = free_port()
    cluster = ZkCluster([f"127.0.0.1:{port}"], "/failoverd/none", "n1", 2.0)
    started = time.monotonic()
    try:
        with pytest.raises(ZkUnreachable, match=rf"127\.0\.0\.1:{port}.*within 1\.0 s"):
            cluster.start(timeout=1.0)
        assert time.monotonic() - started < 2.5
        assert cluster.status().state == ZkState.LOST
        with pytest.raises(ZkOperationFailed):
            cluster.acquire(0)
    finally:
        cluster.close()


# -- the position record and rejoin requests -------------------------------------------------------


def rejoin_request(node: str, reclone: bool = True) -> RejoinRequest:
    return RejoinRequest(node, reclone, "ops@host", 1700000000.25)


def test_position_and_rejoin_records_round_trip_every_field() -> None:
    """Guards the JSON helpers against fields added to Position or RejoinRequest later."""
    position = Position(node="n1", epoch=7, lsn=0x3000060, timeline=2, written_at=1700000000.5)
    request = rejoin_request("n2", reclone=True)
    for record in (position, request):
        for f in dataclasses.fields(record):
            value = getattr(record, f.name)
            assert value not in (None, 0, False, ""), f"test must set {f.name} to a non-default"
    assert position_from_json(position_to_json(position)) == position
    assert position_from_json(b"") is None  # created empty: none recorded yet
    assert json.loads(position_to_json(position)).keys() == {
        "node", "epoch", "lsn", "timeline", "written_at"
    }  # fmt: skip
    assert rejoin_from_json("n2", rejoin_to_json(request)) == request
    assert json.loads(rejoin_to_json(request)).keys() == {
        "node", "reclone", "requested_by", "requested_at"
    }  # fmt: skip
    no_timeline = dataclasses.replace(position, timeline=None)
    assert position_from_json(position_to_json(no_timeline)) == no_timeline


def test_position_is_recorded_under_its_epoch_and_shown_to_every_reader(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    raw_client: Callable[..., KazooClient], zk_chroot: str, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    active, reader = make_cluster(zookeeper, "n1"), make_cluster(zookeeper, "n2")
    raw = raw_client(zookeeper)
    assert view_of(reader).position is None  # ensure_layout created it empty
    assert raw.get(f"{zk_chroot}/position")[0] == b""
    epoch = active.acquire(0)
    first = Position("n1", epoch, 0x3000060, 1, 1700000000.5)
    active.record_position(first)
    assert wait_for(lambda: view_of(reader).position == first, 5), view_of(reader)
    assert view_of(reader).problems == ()
    second = dataclasses.replace(first, lsn=0x3000100, written_at=1700000001.5)
    active.record_position(second)
    assert wait_for(lambda: view_of(reader).position == second, 5), view_of(reader)

    # Never under an epoch that is not the counter's: the record of a newer active stays.
    with caplog.at_level(logging.WARNING, logger="failoverd.zk"):
        active.record_position(dataclasses.replace(second, epoch=epoch - 1, lsn=1))
        assert "the epoch counter is at 1, not 0" in caplog.text
        assert "lsn=1 " in caplog.text and "position not recorded" in caplog.text
        caplog.clear()
        # The epoch moves on behind the writer's back: refused by the watch or, if the writer
        # has not seen it yet, by the transaction's version check. Either way, said and kept.
        raw.set(f"{zk_chroot}/epoch", b"2")
        active.record_position(dataclasses.replace(second, lsn=0x4000000))
        assert wait_for(lambda: "position not recorded" in caplog.text, 5), caplog.text
        assert "lsn=67108864" in caplog.text
    assert wait_for(lambda: view_of(reader).epoch == 2, 5)
    assert view_of(reader).position == second
    assert position_from_json(raw.get(f"{zk_chroot}/position")[0]) == second


def test_record_position_never_blocks_while_zookeeper_is_stopped(
    fresh_zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    holder = make_cluster(fresh_zookeeper, "n1", session_timeout=2.0)
    epoch = holder.acquire(0)
    position = Position("n1", epoch, 0x5000000, 1, 1700000000.0)
    fresh_zookeeper.stop()
    assert wait_for(lambda: holder.status().state == ZkState.SUSPENDED, 3), holder.status()
    with caplog.at_level(logging.WARNING, logger="failoverd.zk"):
        started = boottime()
        holder.record_position(position)
        holder.clear_rejoin("n2")
        took = boottime() - started
    assert took < 0.2, f"blocked for {took:.3f} s"
    assert "position not recorded (node=n1 epoch=1 lsn=83886080 timeline=1)" in caplog.text
    assert "ZooKeeper connection is suspended" in caplog.text
    assert "rejoin/n2 not cleared" in caplog.text


def test_record_position_never_blocks_while_partitioned_and_its_loss_is_logged(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    zk_proxy: Callable[[ZooKeeperServer], Relay], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    proxy = zk_proxy(zookeeper)
    holder = make_cluster(proxy, "n1", session_timeout=1.0)
    reader = make_cluster(zookeeper, "n2")
    epoch = holder.acquire(0)
    before = Position("n1", epoch, 100, 1, 1700000000.0)
    holder.record_position(before)
    assert wait_for(lambda: view_of(reader).position == before, 5)
    with caplog.at_level(logging.WARNING, logger="failoverd.zk"):
        proxy.blackhole()  # kazoo does not know yet: the write is queued, and lost
        lost = dataclasses.replace(before, lsn=200)
        started = boottime()
        holder.record_position(lost)
        took = boottime() - started
        assert took < 0.2, f"blocked for {took:.3f} s"
        assert wait_for(lambda: "lsn=200 " in caplog.text, 5), caplog.text
        assert "position not recorded (node=n1 epoch=1 lsn=200 timeline=1)" in caplog.text
    assert view_of(reader).position == before
    proxy.heal()


def test_malformed_position_and_rejoin_records_are_reported_and_the_reader_recovers(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    raw_client: Callable[..., KazooClient], zk_chroot: str,
) -> None:  # fmt: skip
    reader = make_cluster(zookeeper, "n1")
    raw = raw_client(zookeeper)
    good = Position("n1", 0, 42, None, 1700000000.0)

    for garbage, words in (
        (b"{oops", "JSON"),
        (b'{"node": "n1", "epoch": 0, "lsn": "42", "written_at": 1}', "'lsn' must be an integer"),
        (b'{"node": "n1", "epoch": 0, "lsn": -1, "written_at": 1}', "non-negative"),
        (b'{"node": "n1", "epoch": 0, "lsn": 42}', "'written_at'"),
    ):
        raw.set(f"{zk_chroot}/position", garbage)

        def reported(words: str = words) -> bool:
            v = view_of(reader)
            return v.position is None and any(
                "malformed position record" in p and words in p for p in v.problems
            )

        assert wait_for(reported, 5), (words, view_of(reader).problems)
    raw.set(f"{zk_chroot}/position", position_to_json(good))
    assert wait_for(lambda: view_of(reader).position == good, 5), view_of(reader)
    assert view_of(reader).problems == ()

    one, two = rejoin_request("n1"), rejoin_request("n2", reclone=False)
    raw.create(f"{zk_chroot}/rejoin/n2", rejoin_to_json(two))
    raw.create(f"{zk_chroot}/rejoin/n1", b'{"node": "n1", "reclone": "yes"}')
    raw.create(f"{zk_chroot}/rejoin/n3", rejoin_to_json(one))  # names n1: filed under n3
    expected_problems = ("'reclone' must be true or false", "record names node 'n1'")

    def bad_ones_reported() -> bool:
        v = view_of(reader)
        return v.rejoin_requests == (two,) and all(
            any(words in p for p in v.problems) for words in expected_problems
        )

    assert wait_for(bad_ones_reported, 5), view_of(reader)
    assert all("malformed rejoin request" in p for p in view_of(reader).problems)
    raw.set(f"{zk_chroot}/rejoin/n1", rejoin_to_json(one))
    raw.delete(f"{zk_chroot}/rejoin/n3")
    healed = wait_for(
        lambda: (v := view_of(reader)).rejoin_requests == (one, two) and v.problems == (), 5
    )
    assert healed, view_of(reader)


def test_request_replace_and_clear_a_rejoin(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    ctl, daemon = make_cluster(zookeeper, "ctl"), make_cluster(zookeeper, "n2")
    written = ctl.request_rejoin("n2", reclone=False, requested_by="ops@host")
    assert (written.node, written.reclone, written.requested_by) == ("n2", False, "ops@host")
    assert abs(written.requested_at - time.time()) < 60
    assert wait_for(lambda: view_of(daemon).rejoin_requests == (written,), 5), view_of(daemon)
    # The operator's latest word replaces a pending request; requests are sorted by node.
    again = ctl.request_rejoin("n2", reclone=True, requested_by="dba@host")
    other = ctl.request_rejoin("n1", reclone=False, requested_by="ops@host")
    assert again.reclone
    assert wait_for(lambda: view_of(daemon).rejoin_requests == (other, again), 5)
    assert view_of(daemon).rejoin_request("n2") == again

    with caplog.at_level(logging.WARNING, logger="failoverd.zk"):
        daemon.clear_rejoin("n2")
        assert wait_for(lambda: view_of(ctl).rejoin_requests == (other,), 5), view_of(ctl)
        daemon.clear_rejoin("n2")  # gone already: fine, and not a warning
        daemon.clear_rejoin("n1")
        assert wait_for(lambda: view_of(ctl).rejoin_requests == (), 5), view_of(ctl)
    assert "not cleared" not in caplog.text
    with pytest.raises(ValueError, match="node name"):
        ctl.request_rejoin("a/b", reclone=False, requested_by="ops@host")


def test_a_cluster_laid_out_before_position_and_rejoin_records_gains_them(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    raw_client: Callable[..., KazooClient], zk_chroot: str,
) -> None:  # fmt: skip
    """A reader of an older layout sees no requests (not no cluster), and picks up the first
    request, which creates ``rejoin``; the first position creates its record."""
    raw = raw_client(zookeeper)
    for node, data in (("", b""), ("epoch", b"0"), ("last_leader", b""), ("members", b""),
                       ("history", b"")):  # fmt: skip
        raw.create(f"{zk_chroot}/{node}".rstrip("/"), data, makepath=True)
    reader = make_cluster(zookeeper, "n2", layout=False)
    reader.watch()
    view = reader.wait_view(5.0)
    assert (view.rejoin_requests, view.position, view.problems) == ((), None, ())
    ctl = make_cluster(zookeeper, "ctl", layout=False)
    written = ctl.request_rejoin("n2", reclone=True, requested_by="ops@host")
    assert wait_for(lambda: view_of(reader).rejoin_requests == (written,), 5), view_of(reader)

    active = make_cluster(zookeeper, "n1", layout=False)
    active.watch()
    active.wait_view(5.0)
    epoch = active.acquire(0)
    position = Position("n1", epoch, 7, 1, 1700000000.0)
    active.record_position(position)
    assert wait_for(lambda: view_of(reader).position == position, 5), view_of(reader)

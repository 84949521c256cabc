"""The liveness round-trip must prove contact with a quorum, not with one server.

On a real three-server ensemble (``ensemble.py``) whose quorum traffic goes through relays the
test controls, one server is cut off from the other two while a client stays connected to it.
A follower cut off from its leader keeps answering reads and pings for syncLimit x tickTime,
while the leader's side expires the session after T and the peer takes the lease: a read is no
proof of life. The round-trip's ``sync`` is forwarded to the leader, so it stops succeeding at
the cut; with other servers configured, the session then moves to one that reaches the leader.
Also: an isolated leader, the cost (no transaction), what start-up and check-config report.
Timings: T = 4 s, self_fence_after = 2 s (the default 0.5 T), tickTime 100 ms.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from failoverd.clock import boottime
from failoverd.core import ClusterView
from failoverd.zk import ZkCluster
from lab.loopback import BIN, DaemonProcess, write_config
from lab.process import wait_for

from .conftest import MakeCluster
from .ensemble import Ensemble, EnsembleTiming, QuorumServer

pytestmark = pytest.mark.integration

T = 4.0
SELF_FENCE_AFTER = 0.5 * T
TICK = 0.1
# A cut-off follower serves reads for syncLimit x tickTime = 5 s: longer than T, as with the
# stock settings (tickTime 2000, syncLimit 10: 20 s) against any session timeout below 20 s.
FOLLOWER_TIMING = EnsembleTiming(tick_time_ms=int(TICK * 1000), sync_limit=50)
# An isolated leader gives up after syncLimit x tickTime = 2 s (kept short: the test waits for
# that, an election and T).
LEADER_TIMING = EnsembleTiming(tick_time_ms=int(TICK * 1000), sync_limit=20)
ROUNDTRIP_DEADLINE = 0.5  # the default roundtrip_timeout for T = 4 s (self_fence_after / 4)


def start_ensemble(base: Path, timing: EnsembleTiming) -> Ensemble:
    ensemble = Ensemble(base, timing)
    ensemble.start()
    return ensemble


@pytest.fixture
def follower_ensemble(tmp_path: Path) -> Iterator[Ensemble]:
    ensemble = start_ensemble(tmp_path / "zk", FOLLOWER_TIMING)
    try:
        yield ensemble
    finally:
        ensemble.stop()


@pytest.fixture
def leader_ensemble(tmp_path: Path) -> Iterator[Ensemble]:
    ensemble = start_ensemble(tmp_path / "zk", LEADER_TIMING)
    try:
        yield ensemble
    finally:
        ensemble.stop()


def view_of(cluster: ZkCluster) -> ClusterView:
    view = cluster.view()
    assert view is not None
    return view


class ReadProbe:
    """The round-trip failoverd made before: one ``exists`` in flight, abandoned at its
    deadline, the send time of the last success kept. Evidence of what a read proves."""

    def __init__(self, server: QuorumServer) -> None:
        self.client = KazooClient(hosts=server.hosts, timeout=T)
        self.client.start(timeout=5.0)
        self.last_ok: float | None = None
        self._outstanding: float | None = None
        self._lock = threading.Lock()

    def tick(self) -> None:
        now = boottime()
        with self._lock:
            if self._outstanding is not None and now - self._outstanding <= ROUNDTRIP_DEADLINE:
                return
            self._outstanding = now
        try:
            result = self.client.exists_async("/")
        except Exception:  # the connection is going: that is a failed round-trip
            return
        result.rawlink(lambda res: self._done(now, res))

    def _done(self, sent_at: float, result: Any) -> None:
        with self._lock:
            if self._outstanding != sent_at:
                return
            self._outstanding = None
            if result.exception is None:
                self.last_ok = sent_at

    def close(self) -> None:
        self.client.stop()
        self.client.close()


@dataclass
class Outcome:
    cut_at: float
    acquired_at: float  # when the peer, on the other side, took the free lease
    holder_last_ok: float  # send time of the holder's last successful round-trip
    holder_failures: int


def cut_and_wait_for_takeover(
    ensemble: Ensemble,
    cut: QuorumServer,
    holder: ZkCluster,
    peer: ZkCluster,
    also_tick: list[ReadProbe],
    wait: float,
) -> Outcome:
    """Tick the holder (and ``also_tick``) like a daemon's loop, cut ``cut`` off, and keep
    ticking until the peer sees the lease expire and takes it."""

    def tick() -> None:
        holder.roundtrip(ROUNDTRIP_DEADLINE)
        for probe in also_tick:
            probe.tick()
        time.sleep(0.05)

    for _ in range(20):  # a second of healthy round-trips first
        tick()
    last = holder.status().last_roundtrip_sent_at
    assert last is not None and boottime() - last < 0.3, "round-trips are not succeeding"
    failures_before = holder.roundtrip_failures
    ensemble.cut(cut.sid)
    cut_at = boottime()
    acquired_at = None
    for _ in range(int(wait / 0.05)):
        tick()
        if view_of(peer).lease is None:
            assert peer.acquire(1) == 2
            acquired_at = boottime()
            break
    assert acquired_at is not None, f"the lease did not expire within {wait} s of the cut"
    for _ in range(10):  # half a second more: a late success would show here
        tick()
    holder_last_ok = holder.status().last_roundtrip_sent_at
    assert holder_last_ok is not None
    return Outcome(cut_at, acquired_at, holder_last_ok, holder.roundtrip_failures - failures_before)


def test_round_trip_through_a_cut_off_follower_stops_at_the_cut(
    follower_ensemble: Ensemble, make_cluster: MakeCluster
) -> None:
    ensemble = follower_ensemble
    follower, leader = ensemble.a_follower(), ensemble.leader()
    holder = make_cluster(follower, "n1", session_timeout=T)
    peer = make_cluster(leader, "n2", session_timeout=T)
    assert holder.negotiated_timeout == T
    assert holder.acquire(0) == 1
    reads = ReadProbe(follower)  # the old round-trip, on the same server, for comparison
    try:
        out = cut_and_wait_for_takeover(ensemble, follower, holder, peer, [reads], wait=T + 3)
        assert reads.last_ok is not None
        read_last_ok = reads.last_ok
    finally:
        reads.close()
    report = (
        f"cut at 0: holder's last good round-trip sent at {out.holder_last_ok - out.cut_at:+.3f} s,"
        f" last good read at {read_last_ok - out.cut_at:+.3f} s, "
        f"peer took the lease at {out.acquired_at - out.cut_at:+.3f} s"
    )
    print(report)
    # The failure the round-trip had: reads kept succeeding past T - self_fence_after, so an
    # active counting from them would still be serving when the peer took the lease.
    assert read_last_ok - out.cut_at > T - SELF_FENCE_AFTER, report
    assert read_last_ok + SELF_FENCE_AFTER > out.acquired_at, report
    # The round-trip now: nothing sent after the cut succeeds (the sync waits for the leader),
    assert out.holder_last_ok <= out.cut_at, report
    assert out.holder_failures > 0
    # so the active is down (last good send + self_fence_after) well before the peer leads.
    assert out.acquired_at - (out.holder_last_ok + SELF_FENCE_AFTER) > 0.5 * (T - SELF_FENCE_AFTER)


def test_round_trip_through_an_isolated_leader_fails_before_the_new_leader_expires_it(
    leader_ensemble: Ensemble, make_cluster: MakeCluster
) -> None:
    """A leader cut off from both followers answers a sync itself until it notices, after
    syncLimit x tickTime, that it lost its quorum. That is safe: the other side elects a new
    leader only after the same syncLimit x tickTime, and a new leader gives every session a
    fresh T. So the holder's last good round-trip plus self_fence_after still comes first."""
    ensemble = leader_ensemble
    leader, follower = ensemble.leader(), ensemble.a_follower()
    holder = make_cluster(leader, "n1", session_timeout=T)
    peer = make_cluster(follower, "n2", session_timeout=T)
    assert holder.acquire(0) == 1
    sync_limit = LEADER_TIMING.sync_limit * TICK
    out = cut_and_wait_for_takeover(ensemble, leader, holder, peer, [], wait=sync_limit + T + 5)
    report = (
        f"cut at 0: holder's last good round-trip sent at {out.holder_last_ok - out.cut_at:+.3f} s,"
        f" peer took the lease at {out.acquired_at - out.cut_at:+.3f} s"
    )
    print(report)
    assert out.holder_last_ok - out.cut_at <= sync_limit + TICK, report
    assert out.acquired_at - out.cut_at >= sync_limit + T - TICK, report
    assert out.acquired_at - (out.holder_last_ok + SELF_FENCE_AFTER) > T - SELF_FENCE_AFTER, report


def test_round_trip_writes_nothing(follower_ensemble: Ensemble, make_cluster: MakeCluster) -> None:
    """Many clusters share one ensemble: a round-trip is one request, and never a transaction
    (a write would be one proposal and a log append on every server, each tick, per node)."""
    ensemble = follower_ensemble
    holder = make_cluster(ensemble.a_follower(), "n1", session_timeout=T)
    leader = ensemble.leader()

    def proposals() -> int:
        for line in leader.four_letter("mntr").splitlines():
            key, _, value = line.partition("\t")
            if key == "zk_proposal_count":
                return int(value)
        raise AssertionError("mntr shows no zk_proposal_count")

    before, failures = proposals(), holder.roundtrip_failures
    sent = []
    for _ in range(30):
        holder.roundtrip(ROUNDTRIP_DEADLINE)
        time.sleep(0.03)
        sent.append(holder.status().last_roundtrip_sent_at)
    assert len({s for s in sent if s is not None}) >= 20  # one round-trip after another
    assert holder.roundtrip_failures == failures
    assert proposals() == before


def test_start_up_and_check_config_say_what_they_learnt_of_the_ensemble(
    follower_ensemble: Ensemble, tmp_path: Path
) -> None:
    ensemble = follower_ensemble
    hosts = [s.hosts for s in ensemble.servers.values()]
    config = write_config(tmp_path / "n1.toml", "n1", hosts[0], "/failoverd/quorum", session=T)
    config.write_text(config.read_text().replace(f'["{hosts[0]}"]', json.dumps(hosts)))
    checked = subprocess.run(
        [str(BIN / "failoverd"), "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert (
        "3 of 3 ensemble servers: tickTime 0.1 s, syncLimit 50: a follower cut off from the "
        "leader answers reads for 5 s, which the round-trip's sync does not trust"
    ) in checked.stderr
    daemon = DaemonProcess(config)
    try:
        seen = wait_for(
            lambda: [e for e in daemon.events() if e.get("event") == "zookeeper_ensemble"], 20
        )
        assert seen, daemon.log.read_text()[-3000:]
        found = seen[0]
        assert found["servers_answered"] == 3 and found["servers_asked"] == 3
        assert found["tick_time_s"] == TICK and found["sync_limit"] == 50
        assert found["follower_read_window_s"] == pytest.approx(5.0)
        assert found["session_timeout_s"] == T and found["self_fence_margin_s"] == T / 2
        daemon.stop()
        assert daemon.proc.returncode == 0
    finally:
        daemon.kill()


def serving(ensemble: Ensemble, session_id: int | None) -> QuorumServer | None:
    """The server a session is connected to, by its ``cons``."""
    assert session_id is not None
    for server in ensemble.servers.values():
        try:
            if f"sid={session_id:#x}," in server.four_letter("cons"):
                return server
        except OSError:
            continue
    return None


def test_a_stalled_round_trip_moves_the_session_to_a_server_that_reaches_the_leader(
    follower_ensemble: Ensemble, make_cluster: MakeCluster
) -> None:
    """With all three servers configured, the session does not wait for the cut-off follower
    to let go (syncLimit x tickTime = 5 s, past T): the first sync that stalls drops the
    connection, kazoo reconnects the same session elsewhere, and round-trips resume before
    self_fence_after: no self-fence, no failover."""
    ensemble = follower_ensemble
    leader = ensemble.leader()
    everyone = ",".join(s.hosts for s in ensemble.servers.values())

    class Hosts:  # make_cluster takes anything with ``hosts``
        hosts = everyone

    holder = None
    for attempt in range(12):  # kazoo picks a server at random: until it is a follower
        holder = make_cluster(Hosts(), f"n1-{attempt}", session_timeout=T, layout=attempt == 0)
        on = serving(ensemble, holder.session_id)
        if on is not None and on is not leader:
            break
        holder.close()
    assert holder is not None and on is not None and on is not leader
    holder.ensure_layout()
    holder.wait_view(5.0)
    peer = make_cluster(leader, "n2", session_timeout=T)
    assert holder.acquire(0) == 1
    session = holder.session_id

    oks: list[float] = []

    def tick() -> None:
        holder.roundtrip(ROUNDTRIP_DEADLINE)
        last = holder.status().last_roundtrip_sent_at
        if last is not None and (not oks or last > oks[-1]):
            oks.append(last)
        time.sleep(0.05)

    for _ in range(20):
        tick()
    ensemble.cut(on.sid)
    cut_at = boottime()
    for _ in range(int((T + 2) / 0.05)):
        tick()
        assert view_of(peer).lease is not None, "the lease expired: the session did not move"
    gaps = [b - a for a, b in itertools.pairwise(oks) if b > cut_at - 0.5]
    print(f"longest gap between good round-trips around the cut: {max(gaps):.3f} s")
    assert holder.session_id == session
    assert holder.roundtrip_moves >= 1
    assert serving(ensemble, session) not in (None, on)
    assert max(gaps) < SELF_FENCE_AFTER, gaps
    lease = view_of(peer).lease
    assert lease is not None and lease.node == holder.node and lease.epoch == 1

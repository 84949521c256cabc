"""The ``sync`` record (who holds every acknowledged commit) against a real ZooKeeper 3.8:
written only under the lease of its epoch, read through the watches, never trusted malformed."""

from __future__ import annotations

import dataclasses
import json
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kazoo.client import KazooClient

from failoverd.actions.runner import ActionRunner
from failoverd.config import load_config
from failoverd.core import ActionResult, Reason, RecordSync, SyncRecord
from failoverd.ctl import failoverctl_main
from failoverd.zk import LeaseConflict, ZkCluster, sync_from_json, sync_to_json
from failoverd.zk.sync import SyncWriter
from lab.loopback import write_config
from lab.process import wait_for
from lab.zookeeper import ZooKeeperServer

from .conftest import MakeCluster

pytestmark = pytest.mark.integration


def sync_of(cluster: ZkCluster) -> SyncRecord | None:
    view = cluster.view()
    assert view is not None
    return view.sync


def problems_of(cluster: ZkCluster) -> tuple[str, ...]:
    view = cluster.view()
    assert view is not None
    return view.problems


def stored(raw: KazooClient, chroot: str) -> bytes:
    data: bytes = raw.get(f"{chroot}/sync")[0]
    return data


# -- the codec ---------------------------------------------------------------------------------


def test_sync_record_round_trips_every_field() -> None:
    """Guards the JSON helpers against fields added to SyncRecord later."""
    record = SyncRecord(standby="n2", epoch=7, written_at=1700000000.5)
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        assert value not in (None, 0, False, ""), f"test must set {f.name} to a non-default"
    assert sync_from_json(sync_to_json(record)) == record
    assert json.loads(sync_to_json(record)).keys() == {"standby", "epoch", "written_at"}
    none = dataclasses.replace(record, standby=None)
    assert sync_from_json(sync_to_json(none)) == none
    assert json.loads(sync_to_json(none))["standby"] is None
    assert sync_from_json(b"") is None  # created empty by the layout: never written
    # The design's minimal record, without the time for humans, is still a record.
    assert sync_from_json(b'{"standby": "n1", "epoch": 3}') == SyncRecord("n1", 3, 0.0)


# -- written and read --------------------------------------------------------------------------


def test_sync_written_by_the_active_is_shown_to_it_at_once_and_to_every_reader(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    raw_client: Callable[..., KazooClient], zk_chroot: str,
) -> None:  # fmt: skip
    active, reader = make_cluster(zookeeper, "n1"), make_cluster(zookeeper, "n2")
    raw = raw_client(zookeeper)
    assert sync_of(reader) is None  # ensure_layout created it empty: never written
    assert stored(raw, zk_chroot) == b""
    epoch = active.acquire(0)

    named = active.record_sync("n2", epoch)
    assert (named.standby, named.epoch) == ("n2", epoch)
    assert named.written_at > 1.6e9  # the writer's wall clock
    assert sync_of(active) == named  # its own write, before any watch fired
    assert wait_for(lambda: sync_of(reader) == named, 5), sync_of(reader)
    assert sync_from_json(stored(raw, zk_chroot)) == named
    assert problems_of(reader) == ()

    dropped = active.record_sync(None, epoch)
    assert dropped.standby is None and dropped.epoch == epoch
    assert sync_of(active) == dropped
    assert wait_for(lambda: sync_of(reader) == dropped, 5), sync_of(reader)
    # The watch confirming the earlier write never steps the writer's view back.
    assert wait_for(lambda: sync_of(active) == dropped, 1)


def test_a_write_under_a_stale_epoch_or_without_the_lease_is_refused_and_changes_nothing(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    raw_client: Callable[..., KazooClient], zk_chroot: str,
) -> None:  # fmt: skip
    old, new = make_cluster(zookeeper, "n1"), make_cluster(zookeeper, "n2")
    raw = raw_client(zookeeper)
    first = old.acquire(0)
    kept = old.record_sync("n2", first)
    before = stored(raw, zk_chroot)

    def unchanged() -> None:
        assert stored(raw, zk_chroot) == before
        assert wait_for(lambda: sync_of(new) == kept, 5), sync_of(new)

    # An epoch that is not the counter's.
    with pytest.raises(LeaseConflict, match=r"epoch counter is at 1: only the active of epoch 0"):
        old.record_sync(None, first - 1)
    unchanged()
    # The counter's epoch, but another session holds its lease.
    with pytest.raises(LeaseConflict, match=r"held by 'n1' with epoch 1 .* not by this session"):
        new.record_sync("n2", first)
    unchanged()
    # The lease of the epoch went (released; expired is the same), the counter did not move.
    old.release(first, final_lsn=None, clean=True)
    with pytest.raises(LeaseConflict, match=r"the lease of epoch 1 is gone"):
        old.record_sync(None, first)
    unchanged()
    # The other node takes over: the old active's write under its epoch is refused ...
    second = new.acquire(first)
    with pytest.raises(LeaseConflict, match=r"epoch counter is at 2: only the active of epoch 1"):
        old.record_sync(None, first)
    unchanged()
    # ... while the new active's is not.
    reset = new.record_sync(None, second)
    assert wait_for(lambda: sync_of(old) == reset, 5), sync_of(old)


@pytest.mark.parametrize("change", ["epoch", "lease"])
def test_the_transaction_itself_refuses_once_the_epoch_or_the_lease_changed_after_reading(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    raw_client: Callable[..., KazooClient], zk_chroot: str,
    monkeypatch: pytest.MonkeyPatch, change: str,
) -> None:  # fmt: skip
    """The checks that matter are in the transaction, not in the reads before it: another
    node's acquisition (or the lease's expiry) between the two must still fail the write."""
    active, reader = make_cluster(zookeeper, "n1"), make_cluster(zookeeper, "n2")
    raw = raw_client(zookeeper)
    epoch = active.acquire(0)
    kept = active.record_sync("n2", epoch)
    before = stored(raw, zk_chroot)
    read_holder = SyncWriter._read_holder

    def then_change(self: SyncWriter, *args: Any) -> tuple[int, int]:
        versions = read_holder(self, *args)
        if change == "epoch":
            raw.set(f"{zk_chroot}/epoch", str(epoch + 1).encode())
        else:
            raw.delete(f"{zk_chroot}/lease")
        return versions

    monkeypatch.setattr(SyncWriter, "_read_holder", then_change)
    words = "the epoch moved on" if change == "epoch" else "the lease of epoch 1 went"
    with pytest.raises(LeaseConflict, match=rf"{words} while writing; nothing changed"):
        active.record_sync(None, epoch)
    assert stored(raw, zk_chroot) == before
    assert sync_of(active) == kept
    assert wait_for(lambda: sync_of(reader) == kept, 5), sync_of(reader)


def test_malformed_sync_records_are_reported_read_as_none_and_the_reader_recovers(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    raw_client: Callable[..., KazooClient], zk_chroot: str,
) -> None:  # fmt: skip
    reader = make_cluster(zookeeper, "n1")
    raw = raw_client(zookeeper)
    good = SyncRecord("n1", 0, 1700000000.0)
    raw.set(f"{zk_chroot}/sync", sync_to_json(good))
    assert wait_for(lambda: sync_of(reader) == good, 5), sync_of(reader)

    for garbage, words in (
        (b"{oops", "JSON"),
        (b'["n1", 0]', "expected a JSON object"),
        (b'{"epoch": 0, "written_at": 1}', "missing field 'standby'"),
        (b'{"standby": 2, "epoch": 0}', "'standby' must be a string or null"),
        (b'{"standby": "", "epoch": 0}', "'standby' must be a node name or null"),
        (b'{"standby": "n1", "epoch": "0"}', "'epoch' must be an integer"),
        (b'{"standby": "n1", "epoch": -1}', "non-negative"),
        (b'{"standby": "n1"}', "missing field 'epoch'"),
        (b'{"standby": "n1", "epoch": 0, "written_at": "now"}', "'written_at'"),
    ):
        raw.set(f"{zk_chroot}/sync", garbage)

        def reported(words: str = words) -> bool:
            return sync_of(reader) is None and any(
                p.startswith("malformed sync record, read as none") and words in p
                for p in problems_of(reader)
            )

        assert wait_for(reported, 5), (garbage, problems_of(reader))
    raw.set(f"{zk_chroot}/sync", sync_to_json(good))
    assert wait_for(lambda: sync_of(reader) == good, 5), sync_of(reader)
    assert problems_of(reader) == ()


def test_a_cluster_laid_out_before_the_sync_record_gains_it_on_the_first_write(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster,
    raw_client: Callable[..., KazooClient], zk_chroot: str,
) -> None:  # fmt: skip
    raw = raw_client(zookeeper)
    for node, data in (("", b""), ("epoch", b"0"), ("last_leader", b""), ("members", b""),
                       ("history", b"")):  # fmt: skip
        raw.create(f"{zk_chroot}/{node}".rstrip("/"), data, makepath=True)
    reader = make_cluster(zookeeper, "n2", layout=False)
    reader.watch()
    view = reader.wait_view(5.0)
    assert (view.sync, view.problems) == (None, ())  # missing reads as never written
    active = make_cluster(zookeeper, "n1", layout=False)
    active.watch()
    active.wait_view(5.0)
    epoch = active.acquire(0)
    written = active.record_sync(None, epoch)
    assert wait_for(lambda: sync_of(reader) == written, 5), sync_of(reader)
    again = active.record_sync("n2", epoch)  # and from then on it is rewritten in place
    assert wait_for(lambda: sync_of(reader) == again, 5), sync_of(reader)
    # init on such a cluster adds it (and keeps what is there)
    active.ensure_layout()
    assert sync_from_json(stored(raw, zk_chroot)) == again


# -- the action --------------------------------------------------------------------------------


class NullLog:
    def info(self, *args: object, **kw: object) -> None:
        pass

    def exception(self, *args: object, **kw: object) -> None:
        pass


def test_record_sync_action_reports_ok_or_a_clear_refusal(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster, zk_chroot: str, tmp_path: Path,
) -> None:  # fmt: skip
    cfg = load_config(write_config(tmp_path / "n1.toml", "n1", zookeeper.hosts, zk_chroot))
    zk, reader = make_cluster(zookeeper, "n1"), make_cluster(zookeeper, "n2")
    results: queue.SimpleQueue[ActionResult] = queue.SimpleQueue()
    runner = ActionRunner(cfg, zk, NullLog(), results.put)
    try:
        epoch = zk.acquire(0)
        runner.submit(RecordSync(5, Reason("sync_named", "n2 streams in sync"), "n2", epoch))
        done = results.get(timeout=10)
        assert (done.action_id, done.ok, done.detail) == (5, True, "sync = n2 at epoch 1")
        assert wait_for(lambda: (s := sync_of(reader)) is not None and s.standby == "n2", 5)

        stale = RecordSync(6, Reason("sync_dropped", "n2 left commits waiting"), None, epoch - 1)
        runner.submit(stale)
        refused = results.get(timeout=10)
        assert (refused.action_id, refused.ok) == (6, False)
        assert "refused, the epoch counter is at 1" in refused.detail
        assert "nothing changed" in refused.detail
        assert sync_of(zk) == sync_of(reader)
        assert (s := sync_of(reader)) is not None and s.standby == "n2"
    finally:
        runner.close()


# -- failoverctl status ------------------------------------------------------------------------


def test_status_shows_the_mode_of_the_node_and_the_sync_record(
    zookeeper: ZooKeeperServer, make_cluster: MakeCluster, zk_chroot: str, tmp_path: Path,
) -> None:  # fmt: skip
    strict = '\n[postgres]\nport = 5432\n\n[replication]\nmode = "strict"\n'
    cfg = write_config(tmp_path / "n2.toml", "n2", zookeeper.hosts, zk_chroot, extra=strict)
    plain = write_config(tmp_path / "n1.toml", "n1", zookeeper.hosts, zk_chroot)  # no database

    def status(config: Path, *args: str) -> Any:
        return CliRunner().invoke(failoverctl_main, ["-c", str(config), "status", *args])

    active = make_cluster(zookeeper, "n1")
    epoch = active.acquire(0)
    unnamed = status(cfg, "--json")
    doc = json.loads(unnamed.output)
    assert doc["replication"] == {"mode": "strict", "sync_standby": None}
    assert doc["sync"] is None
    assert any(
        w.startswith("replication mode strict, but no synchronous standby is named at epoch 1")
        and "no automatic failover after a crash" in w
        for w in doc["warnings"]
    ), doc["warnings"]
    assert unnamed.exit_code == 1  # degraded

    written = active.record_sync("n2", epoch)
    table = status(cfg)
    assert "replication: strict    sync standby: n2 (epoch 1, written " in table.output
    assert "no synchronous standby" not in table.output
    doc = json.loads(status(cfg, "--json").output)
    assert doc["replication"] == {"mode": "strict", "sync_standby": "n2"}
    assert doc["sync"]["standby"] == "n2" and doc["sync"]["written_at"] == written.written_at
    # A node without a managed database runs async, whatever the record says.
    assert json.loads(status(plain, "--json").output)["replication"]["mode"] == "async"

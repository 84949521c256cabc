"""Watches the order of the two synchronous-replication writes from outside, inside ``flcli``.

The invariant failoverd keeps: the standby the ZooKeeper ``sync`` record names is one the
active's PostgreSQL waits for (``synchronous_standby_names``, ``synchronous_commit = on``).
Two reads can never be taken at one instant, so each sample brackets the PostgreSQL read
between two reads of the record: when both show the same version naming a standby and
PostgreSQL, read in between, does not wait for it, the record named a standby PostgreSQL was
not waiting for at that moment: a violation, whatever the timing. One JSON line per sample.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError

from failoverd.clock import boottime
from failoverd.pgconn import parse_sync_standby_names
from failoverd.zk.errors import MalformedRecord
from failoverd.zk.records import lease_from_json, sync_from_json

NODES = {"fln1": "10.77.0.11", "fln2": "10.77.0.12"}
WAITING_COMMITS = ("on", "remote_apply")


def read_sync(zk: KazooClient, chroot: str) -> tuple[str | None, int, int] | None:
    """(standby, epoch, version) of the record; None when absent or empty."""
    try:
        data, stat = zk.get(f"{chroot}/sync")
    except NoNodeError:
        return None
    record = sync_from_json(data) if data else None
    if record is None:
        return None
    return record.standby, record.epoch, stat.version


def active_node(zk: KazooClient, chroot: str) -> str | None:
    try:
        data, _ = zk.get(f"{chroot}/lease")
    except NoNodeError:
        return None
    return lease_from_json(data).node


class Settings:
    """One connection per node: what its PostgreSQL waits for, right now."""

    def __init__(self) -> None:
        self.conns: dict[str, psycopg.Connection[Any]] = {}

    def read(self, node: str) -> tuple[tuple[str, ...] | None, str | None]:
        try:
            conn = self.conns.get(node)
            if conn is None or conn.closed:
                conn = psycopg.connect(
                    host=NODES[node], port=5432, user="postgres", dbname="postgres",
                    connect_timeout=2, autocommit=True, tcp_user_timeout=1000,
                    options="-c statement_timeout=500",
                )  # fmt: skip
                self.conns[node] = conn
            row = conn.execute(
                "SELECT current_setting('synchronous_standby_names'), "
                "current_setting('synchronous_commit')"
            ).fetchone()
        except psycopg.Error:
            conn = self.conns.pop(node, None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            return None, None
        assert row is not None
        return parse_sync_standby_names(str(row[0])), str(row[1])


def sample(zk: KazooClient, chroot: str, pg: Settings) -> dict[str, Any]:
    before = read_sync(zk, chroot)
    node = active_node(zk, chroot)
    names, commit = pg.read(node) if node is not None else (None, None)
    after = read_sync(zk, chroot)
    stable = before is not None and before == after
    named = before[0] if stable and before is not None else None
    out: dict[str, Any] = {
        "t": boottime(),
        "active": node,
        "record": None if before is None else list(before),
        "stable": stable,
        "names": None if names is None else list(names),
        "commit": commit,
    }
    if named is not None and names is not None:
        waits = (named in names or "*" in names) and commit in WAITING_COMMITS
        out["violation"] = not waits
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--zk", required=True, help="host:port")
    parser.add_argument("--chroot", required=True)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args(argv)
    stop_file = args.out.with_suffix(".stop")
    zk = KazooClient(hosts=args.zk, timeout=5.0)
    zk.start(timeout=10)
    pg = Settings()
    deadline = boottime() + args.duration
    try:
        with args.out.open("a") as f:
            for _ in range(int(args.duration / args.interval) + 1):
                if boottime() > deadline or stop_file.exists():
                    break
                started = boottime()
                try:
                    record = sample(zk, args.chroot, pg)
                except (KazooException, MalformedRecord) as e:
                    record = {"t": boottime(), "error": f"{type(e).__name__}: {e}"}
                f.write(json.dumps(record) + "\n")
                f.flush()
                time.sleep(max(0.0, started + args.interval - boottime()))
    finally:
        zk.stop()
        zk.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

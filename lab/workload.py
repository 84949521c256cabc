"""The failover tests' client and sampler, run inside the lab's client namespace `flcli`.

The client posts a donation with a fresh client-generated id through the VIP every
``--interval`` seconds (short timeouts, bounded in count and time) and records every answer; the
sampler records, every ``--interval`` too, which nodes hold the VIP and which PostgreSQL accepts
writes. Both write JSON lines; ``analyze`` turns them into the verdicts the tests assert:
client-observed outage, split-brain samples, epoch ordering of acknowledgements, lost writes.

Times are CLOCK_BOOTTIME seconds, which every namespace shares, so the test process can place
its fault on the same time line.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from failoverd.clock import boottime

VIP = "10.77.0.100"
NODES = {"fln1": "10.77.0.11", "fln2": "10.77.0.12"}
FRESH = 0.5  # seconds: how recent a "writable" answer must be to count in a sample


# -- the client ------------------------------------------------------------------------------------


def post_donation(host: str, timeout: float) -> dict[str, Any]:
    """One POST /donate; what happened, never an exception."""
    donation_id = str(uuid.uuid4())
    body = json.dumps({"id": donation_id, "amount": 1, "country": "AU"})
    sent = boottime()
    record: dict[str, Any] = {"id": donation_id, "sent": sent}
    conn = http.client.HTTPConnection(host, 80, timeout=timeout)
    try:
        conn.request("POST", "/donate", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        record["status"] = response.status
        if response.status == 200:
            answer = json.loads(payload)
            record.update(ok=True, node=answer.get("node"), epoch=answer.get("epoch"))
        else:
            record["ok"] = False
    except (OSError, http.client.HTTPException, ValueError) as e:
        record.update(ok=False, error=f"{type(e).__name__}: {e}")
    finally:
        conn.close()
    record["done"] = boottime()
    return record


def run_client(
    out: Path, host: str, interval: float, duration: float, timeout: float, stop: threading.Event
) -> None:
    count = int(duration / interval)
    started = boottime()
    lock = threading.Lock()
    with out.open("a") as f, ThreadPoolExecutor(max_workers=32) as pool:

        def one() -> None:
            rec = post_donation(host, timeout)
            with lock:
                f.write(json.dumps(rec) + "\n")
                f.flush()

        for k in range(count):
            if stop.is_set():
                break
            pool.submit(one)
            delay = started + (k + 1) * interval - boottime()
            if delay > 0:
                stop.wait(delay)


# -- the sampler -----------------------------------------------------------------------------------


def vip_holders(vip: str, nodes: Iterable[str]) -> list[str]:
    holders = []
    for node in nodes:
        done = subprocess.run(
            # Only interfaces that are up: a crashed node's downed link keeps its addresses but
            # serves nothing.
            ["ip", "-n", node, "-o", "-4", "addr", "show", "up"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
        if f" {vip}/" in done.stdout:
            holders.append(node)
    return holders


class WritableProbe:
    """Keeps one connection per node; a node whose database does not answer is not writable."""

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self.conn: psycopg.Connection[Any] | None = None
        self.writable = False
        self.at = 0.0

    def poll(self) -> None:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(
                    host=self.address,
                    port=5432,
                    user="postgres",
                    dbname="postgres",
                    connect_timeout=2,
                    autocommit=True,
                    tcp_user_timeout=1000,  # a dead peer errors out in 1 s, not minutes
                    options=f"-c statement_timeout={int(self.timeout * 1000)}",
                )
            row = self.conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()
            self.writable = bool(row and row[0])
        except psycopg.Error:
            self.writable = False
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    self.conn.close()
            self.conn = None
        self.at = boottime()


def run_sampler(
    out: Path,
    vip: str,
    nodes: Mapping[str, str],
    interval: float,
    duration: float,
    stop: threading.Event,
) -> None:
    probes = {n: WritableProbe(a, timeout=0.5) for n, a in nodes.items()}
    threads = []

    def keep_polling(p: WritableProbe) -> None:
        for _ in range(int(duration / interval) + 1):
            if stop.is_set():
                return
            t0 = boottime()
            p.poll()
            stop.wait(max(0.0, t0 + interval - boottime()))

    for p in probes.values():
        t = threading.Thread(target=keep_polling, args=(p,), daemon=True)
        t.start()
        threads.append(t)
    started = boottime()
    with out.open("a") as f:
        for k in range(int(duration / interval)):
            if stop.is_set():
                break
            sample = {
                "t": boottime(),
                "vip": vip_holders(vip, nodes),
                # Only a recent answer counts: a probe stuck on a dead node keeps its last value.
                "writable": [
                    n for n, p in probes.items() if p.writable and boottime() - p.at < FRESH
                ],
            }
            f.write(json.dumps(sample) + "\n")
            f.flush()
            stop.wait(max(0.0, started + (k + 1) * interval - boottime()))
    stop.set()
    for t in threads:
        t.join(timeout=3)


# -- analysis --------------------------------------------------------------------------------------


@dataclass
class Verdict:
    acknowledged: int
    failed: int
    outage_s: float | None  # from the fault to the first acknowledgement after it
    split_brain_samples: int
    epoch_order_violations: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    nodes_after: list[str] = field(default_factory=list)
    served_after: str | None = None  # the node of the first acknowledgement under a new epoch


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def analyze(
    acks: Sequence[Mapping[str, Any]],
    samples: Sequence[Mapping[str, Any]],
    fault_at: float,
    surviving_ids: set[str] | None,
) -> Verdict:
    ok = [a for a in acks if a.get("ok")]
    # Service is back when a write is acknowledged under a newer epoch than any before the fault
    # (a failing node may still acknowledge a few writes while it shuts down gracefully).
    before = [int(a["epoch"]) for a in ok if a["done"] < fault_at]
    old_epoch = max(before) if before else -1
    recovered = sorted(
        (a["done"], str(a["node"]))
        for a in ok
        if a["sent"] >= fault_at and int(a["epoch"]) > old_epoch
    )
    outage = (recovered[0][0] - fault_at) if recovered else None
    split = sum(1 for s in samples if len(s["vip"]) > 1 or len(s["writable"]) > 1)
    violations = []
    by_epoch: dict[int, list[float]] = {}
    for a in ok:
        by_epoch.setdefault(int(a["epoch"]), []).append(a["done"])
    epochs = sorted(by_epoch)
    for e, later in itertools.pairwise(epochs):
        overlap = max(by_epoch[e]) - min(by_epoch[later])
        if overlap > 0:
            violations.append(
                f"a write of epoch {e} was acknowledged {overlap:.3f} s "
                f"after the first acknowledgement of epoch {later}"
            )
    lost = sorted(a["id"] for a in ok if surviving_ids is not None and a["id"] not in surviving_ids)
    return Verdict(
        acknowledged=len(ok),
        failed=len(acks) - len(ok),
        outage_s=outage,
        split_brain_samples=split,
        epoch_order_violations=violations,
        lost=lost,
        nodes_after=sorted({str(a["node"]) for a in ok if a["sent"] >= fault_at}),
        served_after=recovered[0][1] if recovered else None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lab client and sampler (run inside flcli)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON lines")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=0.5, help="per request")
    parser.add_argument("--vip", default=VIP)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    stop_file = args.out / "stop"

    def watch_stop() -> None:
        for _ in range(int(args.duration / 0.05) + 1):
            if stop_file.exists() or stop.is_set():
                break
            time.sleep(0.05)
        stop.set()

    threading.Thread(target=watch_stop, daemon=True).start()
    sampler = threading.Thread(
        target=run_sampler,
        args=(args.out / "samples.jsonl", args.vip, NODES, args.interval, args.duration, stop),
        daemon=True,
    )
    sampler.start()
    (args.out / "ready").write_text(str(boottime()))
    run_client(args.out / "acks.jsonl", args.vip, args.interval, args.duration, args.timeout, stop)
    stop.set()
    sampler.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The failover tests' client and sampler, run inside the lab's client namespace `flcli`.

The client posts donations, each with a fresh client-generated id, through the VIP (short
timeouts, bounded in count and time) and records every answer with when it was sent and when
it came back. It takes a number of writers:

- one writer (``--writers 1``, the default) is the paced probe the failover tests and the
  README's outage table use: a donation every ``--interval`` seconds whether or not the last
  one was answered, so the outage is resolved to the interval and the load stays light;
- N writers (``--writers N``, or one with ``--interval 0``) are N threads in a closed loop, each
  posting its next donation as soon as it has the answer to the last: the load the site can
  take, so latency and donations per second show what a replication mode costs. A writer whose
  request failed waits ``RETRY_AFTER`` before the next, as a client would, so a node answering
  503 at once is not hammered during an outage.

The sampler records, every ``--interval``, which nodes hold the VIP and which PostgreSQL accepts
writes. Both write JSON lines; ``analyze`` turns them into the verdicts the tests assert
(client-observed outage, split-brain samples, epoch ordering of acknowledgements, lost writes,
failovers the client saw, the longest time without an acknowledged write) and what the
benchmark reports (latency percentiles, donations per second over the whole run and outside
the outage).

Times are CLOCK_BOOTTIME seconds, which every namespace shares, so the test process can place
its fault on the same time line.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from failoverd.clock import boottime

VIP = "10.77.0.100"
NODES = {"fln1": "10.77.0.11", "fln2": "10.77.0.12"}
FRESH = 0.5  # seconds: how recent a "writable" answer must be to count in a sample
RETRY_AFTER = 0.05  # seconds a closed-loop writer waits after a failed request
MAX_POSTS_PER_S = 1000  # bound on a closed-loop writer's count: duration x this


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
    out: Path,
    host: str,
    interval: float,
    duration: float,
    timeout: float,
    stop: threading.Event,
    writers: int = 1,
) -> None:
    """Post donations for ``duration`` seconds (or until ``stop``), one JSON line per answer:
    paced by ``interval`` with one writer, N closed-loop writers otherwise (module docstring)."""
    lock = threading.Lock()
    with out.open("a") as f:

        def record(rec: dict[str, Any]) -> None:
            with lock:
                f.write(json.dumps(rec) + "\n")
                f.flush()

        if writers == 1 and interval > 0:
            _paced(record, host, interval, duration, timeout, stop)
            return
        threads = [
            threading.Thread(
                target=_closed_loop,
                args=(k, record, host, duration, timeout, stop),
                name=f"writer-{k}",
                daemon=True,
            )
            for k in range(writers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=duration + timeout + 5)


def _paced(
    record: Callable[[dict[str, Any]], None],
    host: str,
    interval: float,
    duration: float,
    timeout: float,
    stop: threading.Event,
) -> None:
    """A donation every ``interval`` seconds, answered or not (requests may overlap)."""
    count = int(duration / interval)
    started = boottime()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for k in range(count):
            if stop.is_set():
                break
            pool.submit(lambda: record(post_donation(host, timeout) | {"writer": 0}))
            delay = started + (k + 1) * interval - boottime()
            if delay > 0:
                stop.wait(delay)


def _closed_loop(
    writer: int,
    record: Callable[[dict[str, Any]], None],
    host: str,
    duration: float,
    timeout: float,
    stop: threading.Event,
) -> None:
    """One writer: the next donation as soon as the last is answered, for ``duration``."""
    deadline = boottime() + duration
    for _ in range(int(duration * MAX_POSTS_PER_S) + 1):
        if stop.is_set() or boottime() >= deadline:
            return
        rec = post_donation(host, timeout) | {"writer": writer}
        record(rec)
        if not rec["ok"]:
            stop.wait(RETRY_AFTER)


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
    # Of acknowledged donations, from sent to answered; None without any.
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    # Acknowledged donations per second, over the run (first sent to last answer), and over
    # the run less the outage window (the fault to the first acknowledgement after it, or to
    # the end of the run when none came); the two are equal without a fault.
    rate_per_s: float | None = None
    rate_outside_outage_per_s: float | None = None
    run_s: float = 0.0
    writers: int = 0  # distinct writers seen in the records
    # Changes of the node acknowledging writes, in the order the answers came: a failover the
    # client saw (the same node leading again at a new epoch is none).
    failovers: int = 0
    # The longest time without an acknowledged write, from the first request sent to the last
    # answer (a run that ends without the service back counts to its end); None without records.
    max_gap_s: float | None = None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


class JsonlFollower:
    """The records of a JSON-lines file another process appends to, read incrementally: each
    ``read()`` parses only complete lines written since the last (a busy closed-loop client
    writes thousands, and the scenarios poll them every 50 ms)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.records: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.records
        complete = chunk.rfind(b"\n") + 1
        for line in chunk[:complete].splitlines():
            with contextlib.suppress(ValueError):
                self.records.append(json.loads(line))
        self.offset += complete
        return self.records


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0 < q <= 100) by nearest rank: the smallest value with at least
    q % of the values at or below it; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def analyze(
    acks: Sequence[Mapping[str, Any]],
    samples: Sequence[Mapping[str, Any]],
    fault_at: float | None,
    surviving_ids: set[str] | None,
) -> Verdict:
    """The verdict on one run's records, from any number of writers. ``fault_at`` None: a run
    without a fault (no outage, nothing served "after")."""
    ok = [a for a in acks if a.get("ok")]
    latencies = [a["done"] - a["sent"] for a in ok]
    start = min((a["sent"] for a in acks), default=0.0)
    end = max((a["done"] for a in acks), default=0.0)
    run_s = max(0.0, end - start)
    if fault_at is None:
        verdict = _without_fault(ok, acks, samples, surviving_ids)
        window = (end, end)
    else:
        verdict = _with_fault(ok, acks, samples, fault_at, surviving_ids)
        window = (fault_at, end if verdict.outage_s is None else fault_at + verdict.outage_s)
    # The outage window, clipped to the run.
    lo, hi = max(window[0], start), min(window[1], end)
    outage_in_run = max(0.0, hi - lo)
    outside = sum(1 for a in ok if not lo <= a["done"] <= hi) if outage_in_run else len(ok)
    verdict.latency_p50_s = percentile(latencies, 50)
    verdict.latency_p99_s = percentile(latencies, 99)
    verdict.rate_per_s = len(ok) / run_s if run_s > 0 else None
    rest = run_s - outage_in_run
    verdict.rate_outside_outage_per_s = outside / rest if rest > 0 else None
    verdict.run_s = run_s
    verdict.writers = len({a.get("writer", 0) for a in acks})
    verdict.failovers = failovers(ok)
    verdict.max_gap_s = max_gap(ok, start, end) if acks else None
    return verdict


def failovers(ok: Sequence[Mapping[str, Any]]) -> int:
    """How often the node acknowledging writes changed, in the order the answers came."""
    nodes = [str(a.get("node")) for a in sorted(ok, key=lambda a: a["done"])]
    return sum(1 for before, after in itertools.pairwise(nodes) if before != after)


def max_gap(ok: Sequence[Mapping[str, Any]], start: float, end: float) -> float:
    """The longest time in [start, end] between acknowledgements (their answers), counting
    from ``start`` to the first and from the last to ``end``."""
    times = [start, *sorted(float(a["done"]) for a in ok), end]
    return max(0.0, *(b - a for a, b in itertools.pairwise(times)))


def _without_fault(
    ok: Sequence[Mapping[str, Any]],
    acks: Sequence[Mapping[str, Any]],
    samples: Sequence[Mapping[str, Any]],
    surviving_ids: set[str] | None,
) -> Verdict:
    return Verdict(
        acknowledged=len(ok),
        failed=len(acks) - len(ok),
        outage_s=None,
        split_brain_samples=_split_brain(samples),
        epoch_order_violations=epoch_order_violations(ok),
        lost=_lost(ok, surviving_ids),
    )


def _with_fault(
    ok: Sequence[Mapping[str, Any]],
    acks: Sequence[Mapping[str, Any]],
    samples: Sequence[Mapping[str, Any]],
    fault_at: float,
    surviving_ids: set[str] | None,
) -> Verdict:
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
    return Verdict(
        acknowledged=len(ok),
        failed=len(acks) - len(ok),
        outage_s=outage,
        split_brain_samples=_split_brain(samples),
        epoch_order_violations=epoch_order_violations(ok),
        lost=_lost(ok, surviving_ids),
        nodes_after=sorted({str(a["node"]) for a in ok if a["sent"] >= fault_at}),
        served_after=recovered[0][1] if recovered else None,
    )


def _split_brain(samples: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for s in samples if len(s["vip"]) > 1 or len(s["writable"]) > 1)


def epoch_order_violations(ok: Sequence[Mapping[str, Any]]) -> list[str]:
    """A write of epoch e acknowledged after the first acknowledgement of a later epoch."""
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
    return violations


def _lost(ok: Sequence[Mapping[str, Any]], surviving_ids: set[str] | None) -> list[str]:
    """Acknowledged ids the surviving primary does not have (none known: nothing counted)."""
    if surviving_ids is None:
        return []
    return sorted(a["id"] for a in ok if a["id"] not in surviving_ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lab client and sampler (run inside flcli)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON lines")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=0.5, help="per request")
    parser.add_argument("--vip", default=VIP)
    parser.add_argument(
        "--writers",
        type=int,
        default=1,
        help="1: one donation every --interval (the paced probe); N: N closed-loop writers",
    )
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
    if args.writers < 1:
        parser.error("--writers must be at least 1")
    run_client(
        args.out / "acks.jsonl",
        args.vip,
        args.interval,
        args.duration,
        args.timeout,
        stop,
        writers=args.writers,
    )
    stop.set()
    sampler.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())

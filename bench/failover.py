"""Failover benchmark in the two-node lab: client-observed outage, lost writes, split brain, and
what a replication mode costs in latency and donations per second.

    python bench/failover.py --scenario NAME [--runs N] [--writers N] [--modes async,sync]
                             [--seconds S] [--json]

NAME is one of lab/scenarios.py's SCENARIOS (crash, app, postgres, squid, freeze,
switchover, pause-partition, pg-freeze, zk-down, and ZooKeeper trouble on the lab's three
servers: zk-leader, zk-isolated-follower, zk-cut-active, zk-cut-both; the scenarios module says
what each does and what is expected), all of them (``all``), or ``steady``: no fault,
the workload alone for --seconds (default 20), so the cost of a mode is measured without a
failover in the way. --runs defaults to 5 per fault scenario and 1 for steady.

--writers 1 (the default) is the paced client of the failover tests (a donation every 50 ms,
answered or not); N > 1 runs N closed-loop writers (lab/workload.py), each posting as soon as
it has its last answer, with 2 s of traffic before each fault and after the takeover so that
the rates are measured on both sides of the outage.

--modes runs everything in each replication mode in turn, in one lab (lab/cluster.py's
set_replication_mode: both configs rewritten, a rolling restart of the daemons); the default is
the lab's current mode. The lab is brought up if it is not up, in the first mode, and taken down
at the end; a lab that was up is left as found, in its mode.

After each run the fault is healed as the world would heal it (the crashed node powered on, the
app restarted, ...) and nothing else is done: failoverd must bring the old active back as a
streaming replica by itself, and the time that takes is measured, so runs follow each other on
a redundant cluster. Prints min/median/max outage, time to redundancy, failovers the client saw,
the longest time without an acknowledged write and the median of each phase per scenario and
mode, then per scenario a side-by-side table of the modes: outage median, acknowledged writes
lost per run, latency p50/p99, donations per second. With --json, one JSON object per scenario
and mode instead: {"scenario", "mode", "writers", "outages_s": [...], "failovers": [...],
"max_gap_s": [...], "failed_writes": [...], "split_brain_samples_per_run": [...],
"redundant_s": [...], "healed_to_redundant_s": [...], "lost_acknowledged",
"lost_acknowledged_per_run": [...], "split_brain_samples", "epoch_order_violations",
"phases_s", "latency_p50_s": [...], "latency_p99_s": [...], "donations_per_s": [...],
"donations_per_s_outside_outage": [...], "faults": [...]} (lists: one value per run; failovers:
changes of the node acknowledging writes; max_gap_s: the longest time without an acknowledged
write; faults: what each run did, e.g. which ZooKeeper server it killed); steady's has no
outage, redundancy or phases, and "seconds".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from failoverd.config import SyncMode
from lab import scenarios
from lab.cluster import Lab, LabError, parse_replication_mode

PHASES = ("detection", "wait", "lease", "fence", "promote", "vip", "promotion", "total")
STEADY = "steady"
TRAFFIC_AROUND_FAULT_S = 2.0  # with N > 1 writers: before the fault, and after the takeover
FAULT_RUNS = 5
STEADY_RUNS = 1


def run_scenario(
    lab: Lab,
    name: str,
    runs: int,
    workdir: Path,
    say: Callable[[str], None],
    *,
    writers: int = 1,
) -> dict[str, Any]:
    outages: list[float | None] = []
    failovers: list[int] = []
    gaps: list[float | None] = []
    failed: list[int] = []
    split_per_run: list[int] = []
    faults: list[dict[str, Any]] = []
    redundant: list[float | None] = []
    healed: list[float | None] = []
    lost: list[int] = []
    split = 0
    violations = 0
    phases: dict[str, list[float]] = {}
    load: dict[str, list[float | None]] = {k: [] for k in _LOAD_KEYS}
    # The paced probe keeps the tests' timing; closed-loop writers get steady traffic on both
    # sides of the outage, for the rates.
    before, after = (TRAFFIC_AROUND_FAULT_S,) * 2 if writers > 1 else (0.0, 1.0)
    for i in range(1, runs + 1):
        result = scenarios.run(
            lab,
            name,
            workdir / f"{name}-{i}",
            writers=writers,
            traffic_before=before,
            traffic_after=after,
        )
        outages.append(result.outage_s)
        failovers.append(result.verdict.failovers)
        gaps.append(result.verdict.max_gap_s)
        failed.append(result.verdict.failed)
        split_per_run.append(result.verdict.split_brain_samples)
        faults.append(result.fault)
        lost.append(len(result.verdict.lost))
        split += result.verdict.split_brain_samples
        violations += len(result.verdict.epoch_order_violations)
        for k, v in result.phases_s.items():
            phases.setdefault(k, []).append(v)
        _add_load(load, result)
        try:
            scenarios.restore(lab, result)
        except scenarios.ScenarioError as e:
            result.notes.append(f"not redundant again: {e}")
        redundant.append(result.redundant_s)
        healed.append(result.healed_to_redundant_s)
        say(
            f"{name} run {i}/{runs}: {result.active_before} -> {result.active_after}, "
            f"outage {_seconds(result.outage_s)}, failovers {result.verdict.failovers}, "
            f"longest without an ack {_seconds(result.verdict.max_gap_s)}, "
            f"failed writes {result.verdict.failed}, "
            f"redundant after {_seconds(result.redundant_s)}"
            f" ({_seconds(result.healed_to_redundant_s)} after the heal), "
            f"lost {len(result.verdict.lost)}, "
            f"split-brain samples {result.verdict.split_brain_samples}, "
            f"{_load_line(result)}" + (f", notes: {result.notes}" if result.notes else "")
        )
        if result.redundant_at is None:
            scenarios.wait_redundant(lab, timeout=120)  # the next run needs a redundant cluster
    return {
        "scenario": name,
        "writers": writers,
        "outages_s": [_round(o) for o in outages],
        "failovers": failovers,
        "max_gap_s": [_round(g) for g in gaps],
        "failed_writes": failed,
        "split_brain_samples_per_run": split_per_run,
        "redundant_s": [_round(r) for r in redundant],
        "healed_to_redundant_s": [_round(h) for h in healed],
        "lost_acknowledged": sum(lost),
        "lost_acknowledged_per_run": lost,
        "split_brain_samples": split,
        "epoch_order_violations": violations,
        "phases_s": {k: round(statistics.median(v), 3) for k, v in phases.items()},
        **{k: [_round(v, 4) for v in vs] for k, vs in load.items()},
        "faults": faults,
    }


def run_steady(
    lab: Lab,
    runs: int,
    seconds: float,
    workdir: Path,
    say: Callable[[str], None],
    *,
    writers: int = 1,
) -> dict[str, Any]:
    """The workload without a fault, ``runs`` times ``seconds``."""
    lost: list[int] = []
    split = 0
    violations = 0
    notes: list[str] = []
    load: dict[str, list[float | None]] = {k: [] for k in _LOAD_KEYS}
    for i in range(1, runs + 1):
        result = scenarios.steady(lab, workdir / f"{STEADY}-{i}", seconds, writers=writers)
        lost.append(len(result.verdict.lost))
        split += result.verdict.split_brain_samples
        violations += len(result.verdict.epoch_order_violations)
        notes += result.notes
        _add_load(load, result)
        say(
            f"{STEADY} run {i}/{runs}: {seconds:g} s on {result.active_before}, "
            f"{result.verdict.acknowledged} acknowledged, {result.verdict.failed} failed, "
            f"lost {len(result.verdict.lost)}, {_load_line(result)}"
            + (f", notes: {result.notes}" if result.notes else "")
        )
    return {
        "scenario": STEADY,
        "writers": writers,
        "seconds": seconds,
        "lost_acknowledged": sum(lost),
        "lost_acknowledged_per_run": lost,
        "split_brain_samples": split,
        "epoch_order_violations": violations,
        **{k: [_round(v, 4) for v in vs] for k, vs in load.items()},
        "notes": notes,
    }


_LOAD_KEYS = (
    "latency_p50_s",
    "latency_p99_s",
    "donations_per_s",
    "donations_per_s_outside_outage",
)


def _add_load(load: dict[str, list[float | None]], result: scenarios.ScenarioResult) -> None:
    v = result.verdict
    load["latency_p50_s"].append(v.latency_p50_s)
    load["latency_p99_s"].append(v.latency_p99_s)
    load["donations_per_s"].append(v.rate_per_s)
    load["donations_per_s_outside_outage"].append(v.rate_outside_outage_per_s)


def _load_line(result: scenarios.ScenarioResult) -> str:
    v = result.verdict
    return (
        f"latency p50 {_ms(v.latency_p50_s)} p99 {_ms(v.latency_p99_s)}, "
        f"{_rate(v.rate_per_s)} donations/s ({_rate(v.rate_outside_outage_per_s)} outside "
        "the outage)"
    )


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f} s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _median(values: Sequence[float | None]) -> str:
    done = [v for v in values if v is not None]
    missing = len(values) - len(done)
    text = f"{statistics.median(done):.3f}" if done else "-"
    return text + (f" ({missing} never)" if missing else "")


def _max(values: Sequence[float | None]) -> str:
    done = [v for v in values if v is not None]
    return f"{max(done):.3f}" if done else "-"


def _median_of(values: Sequence[float | None], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    done = [v for v in values if v is not None]
    return fmt.format(statistics.median(done) * scale) if done else "-"


def table(rows: list[dict[str, Any]]) -> str:
    """One line per fault scenario (and mode): outage, redundancy, losses, phases."""
    rows = [r for r in rows if r["scenario"] != STEADY]
    if not rows:
        return ""
    modes = {r.get("mode") for r in rows}
    head = ["scenario", "runs", "min", "median", "max", "failovers", "max gap", "redundant"]
    head += ["healed", "lost", "split", *PHASES]
    width = max(9, *(len(_label(r, modes)) for r in rows))
    lines = [f"{head[0]:>{width}}  " + "  ".join(f"{h:>9}" for h in head[1:])]
    for r in rows:
        done = [o for o in r["outages_s"] if o is not None]
        stats = [min(done), statistics.median(done), max(done)] if done else []
        cells = [
            str(len(r["outages_s"])),
            *((f"{s:.3f}" for s in stats) if stats else ["-"] * 3),  # no takeover: no outage
            " ".join(str(n) for n in r.get("failovers", [])) or "-",
            _max(r.get("max_gap_s", [])),
            _median(r["redundant_s"]),
            _median(r["healed_to_redundant_s"]),
            str(r["lost_acknowledged"]),
            str(r["split_brain_samples"]),
        ]
        cells += [f"{r['phases_s'][p]:.3f}" if p in r["phases_s"] else "-" for p in PHASES]
        lines.append(f"{_label(r, modes):>{width}}  " + "  ".join(f"{c:>9}" for c in cells))
    lines.append(
        "seconds; outage: fault to the first write acknowledged under a new epoch after it "
        "(min/median/max); failovers: changes of the node acknowledging writes, per run; max gap: "
        "the longest time without an acknowledged write, worst run; redundant: fault to one "
        "active and one streaming passive again (median); healed: the same from the moment the "
        "fault was gone; phases: medians, from failoverd's history"
    )
    return "\n".join(lines)


def _label(row: dict[str, Any], modes: set[Any]) -> str:
    return f"{row['scenario']}/{row['mode']}" if len(modes) > 1 else str(row["scenario"])


def comparison(scenario: str, rows: list[dict[str, Any]]) -> str:
    """The modes side by side for one scenario (rows: one per mode, in the order run)."""
    first = rows[0]
    runs = len(first["lost_acknowledged_per_run"])
    what = f"{first['seconds']:g} s without a fault" if scenario == STEADY else "outage and load"
    title = (
        f"{scenario}: {what}, {first['writers']} writer{'s' if first['writers'] > 1 else ''}, "
        f"{runs} run{'s' if runs > 1 else ''} per mode"
    )
    lines: list[tuple[str, list[str]]] = []
    if scenario != STEADY:
        lines.append(("outage median (s)", [_median(r["outages_s"]) for r in rows]))
        lines.append(
            ("failovers per run",
             [" ".join(str(n) for n in r.get("failovers", [])) or "-" for r in rows])
        )  # fmt: skip
        lines.append(("longest without an ack (s)", [_max(r.get("max_gap_s", [])) for r in rows]))
    lines += [
        (
            "lost acknowledged per run",
            [" ".join(str(n) for n in r["lost_acknowledged_per_run"]) for r in rows],
        ),
        ("latency p50 (ms)", [_median_of(r["latency_p50_s"], 1000) for r in rows]),
        ("latency p99 (ms)", [_median_of(r["latency_p99_s"], 1000) for r in rows]),
        ("donations/s", [_median_of(r["donations_per_s"]) for r in rows]),
    ]
    if scenario != STEADY:
        lines.append(
            ("donations/s outside the outage",
             [_median_of(r["donations_per_s_outside_outage"]) for r in rows])
        )  # fmt: skip
        lines.append(("redundant again (s)", [_median(r["redundant_s"]) for r in rows]))
    lines.append(("split-brain samples", [str(r["split_brain_samples"]) for r in rows]))
    width = max(len(label) for label, _ in lines)
    col = max(12, *(len(c) + 2 for _, cells in lines for c in cells))
    out = [title, f"  {'':<{width}}" + "".join(f"{r['mode']:>{col}}" for r in rows)]
    out += [f"  {label:<{width}}" + "".join(f"{c:>{col}}" for c in cells) for label, cells in lines]
    out.append("  latency and donations/s: medians over the runs of each run's figure")
    return "\n".join(out)


def parse_modes(text: str) -> list[SyncMode]:
    modes = [parse_replication_mode(m.strip()) for m in text.split(",") if m.strip()]
    if not modes:
        raise ValueError("no replication mode given")
    if len(set(modes)) != len(modes):
        raise ValueError(f"a mode is given twice: {text}")
    return modes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="all", choices=[*scenarios.SCENARIOS, "all", STEADY])
    parser.add_argument(
        "--runs",
        type=int,
        help=f"runs per scenario and mode (default {FAULT_RUNS}; {STEADY_RUNS} for steady)",
    )
    parser.add_argument(
        "--writers",
        type=int,
        default=1,
        help="1: the paced client (default); N: N closed-loop writers",
    )
    parser.add_argument(
        "--modes",
        help="replication modes to compare, run in this order, e.g. async,sync "
        "(default: the lab's current mode)",
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="steady: seconds per run (default 20)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per scenario and mode")
    args = parser.parse_args(argv)
    if args.writers < 1:
        parser.error("--writers must be at least 1")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    try:
        modes = parse_modes(args.modes) if args.modes else None
    except ValueError as e:
        parser.error(f"--modes: {e}")

    def say(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    names = list(scenarios.SCENARIOS) if args.scenario == "all" else [args.scenario]
    runs = args.runs or (STEADY_RUNS if args.scenario == STEADY else FAULT_RUNS)
    lab = Lab()
    brought_up = False
    found_mode = lab.replication_mode
    if modes is None:
        modes = [found_mode]
    if not lab.is_up():
        say(f"bringing the lab up (replication {modes[0]})")
        lab.up(replication_mode=modes[0])
        brought_up = True
    workdir = Path(tempfile.mkdtemp(prefix="failoverd-bench-", dir="/var/tmp"))
    rows: list[dict[str, Any]] = []
    try:
        for mode in modes:
            if lab.replication_mode != mode:
                say(f"switching the lab to {mode} replication")
                took = lab.set_replication_mode(mode)
                say(f"replication {mode} after {took:.1f} s (both daemons restarted)")
            scenarios.wait_redundant(lab, timeout=90)
            for name in names:
                if name == STEADY:
                    row = run_steady(
                        lab, runs, args.seconds, workdir / mode, say, writers=args.writers
                    )
                else:
                    row = run_scenario(lab, name, runs, workdir / mode, say, writers=args.writers)
                row = {"scenario": row["scenario"], "mode": mode, **row}
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
    finally:
        if brought_up:
            lab.down()
        elif lab.replication_mode != found_mode:
            say(f"switching the lab back to {found_mode} replication, as found")
            try:
                lab.set_replication_mode(found_mode)
            except LabError as e:
                print(f"bench: the lab stays in {lab.replication_mode}: {e}", file=sys.stderr)
    if not args.json:
        classic = table(rows)
        if classic:
            print(classic)
        for name in names:
            print()
            print(comparison(name, [r for r in rows if r["scenario"] == name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Failover benchmark in the two-node lab: client-observed outage, lost writes, split brain.

    python bench/failover.py --scenario NAME --runs N [--json]

NAME is crash, app, postgres, squid, zk-partition, freeze, or all. The lab is brought up if it
is not up (and left as found otherwise). After each run the faulty node is brought back as a
streaming replica, so runs follow each other on a redundant cluster. Prints min/median/max
outage and the median of each phase per scenario, or with --json one JSON object per scenario:
{"scenario", "outages_s": [...], "lost_acknowledged", "split_brain_samples", "phases_s"}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab import scenarios
from lab.cluster import Lab

PHASES = ("detection", "wait", "lease", "fence", "promote", "vip", "total")


def run_scenario(
    lab: Lab, name: str, runs: int, workdir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    outages: list[float | None] = []
    lost = 0
    split = 0
    violations = 0
    phases: dict[str, list[float]] = {}
    for i in range(1, runs + 1):
        result = scenarios.run(lab, name, workdir / f"{name}-{i}")
        outages.append(result.outage_s)
        lost += len(result.verdict.lost)
        split += result.verdict.split_brain_samples
        violations += len(result.verdict.epoch_order_violations)
        for k, v in result.phases_s.items():
            phases.setdefault(k, []).append(v)
        shown = "none" if result.outage_s is None else f"{result.outage_s:.3f} s"
        say(
            f"{name} run {i}/{runs}: {result.active_before} -> {result.active_after}, "
            f"outage {shown}, lost {len(result.verdict.lost)}, "
            f"split-brain samples {result.verdict.split_brain_samples}"
            + (f", notes: {result.notes}" if result.notes else "")
        )
        scenarios.restore(lab, name, result.active_before)
    return {
        "scenario": name,
        "outages_s": [None if o is None else round(o, 3) for o in outages],
        "lost_acknowledged": lost,
        "split_brain_samples": split,
        "epoch_order_violations": violations,
        "phases_s": {k: round(statistics.median(v), 3) for k, v in phases.items()},
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ["scenario", "runs", "min", "median", "max", "lost", "split", *PHASES]
    lines = ["  ".join(f"{h:>9}" for h in head)]
    for r in rows:
        done = [o for o in r["outages_s"] if o is not None]
        stats = [min(done), statistics.median(done), max(done)] if done else [float("nan")] * 3
        cells = [
            r["scenario"],
            str(len(r["outages_s"])),
            *(f"{s:.3f}" for s in stats),
            str(r["lost_acknowledged"]),
            str(r["split_brain_samples"]),
        ]
        cells += [f"{r['phases_s'][p]:.3f}" if p in r["phases_s"] else "-" for p in PHASES]
        lines.append("  ".join(f"{c:>9}" for c in cells))
    lines.append("outage and phases in seconds (phases: medians, from failoverd's history)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="all", choices=[*scenarios.SCENARIOS, "all"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON object per scenario")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    names = list(scenarios.SCENARIOS) if args.scenario == "all" else [args.scenario]
    lab = Lab()
    brought_up = False
    if not lab.is_up():
        say("bringing the lab up")
        lab.up()
        brought_up = True
    workdir = Path(tempfile.mkdtemp(prefix="failoverd-bench-", dir="/var/tmp"))
    rows = []
    try:
        scenarios.wait_redundant(lab, timeout=90)
        for name in names:
            row = run_scenario(lab, name, args.runs, workdir, say)
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    finally:
        if brought_up:
            lab.down()
    if not args.json:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Failover benchmark in the two-node lab: client-observed outage, lost writes, split brain.

    python bench/failover.py --scenario NAME --runs N [--json]

NAME is one of lab/scenarios.py's SCENARIOS (crash, app, postgres, squid, zk-partition, freeze,
switchover, pause-partition, pg-freeze, zk-down) or all. The lab is brought up if it is not up
(and left as found otherwise). After each run the fault is healed as the world would heal it
(the crashed node powered on, the app restarted, ...) and nothing else is done: failoverd must
bring the old active back as a streaming replica by itself, and the time that takes is measured,
so runs follow each other on a redundant cluster. Prints min/median/max outage, time to
redundancy and the median of each phase per scenario, or with --json one JSON object per
scenario: {"scenario", "outages_s": [...], "redundant_s": [...], "healed_to_redundant_s": [...],
"lost_acknowledged", "split_brain_samples", "phases_s"}.
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
    redundant: list[float | None] = []
    healed: list[float | None] = []
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
        try:
            scenarios.restore(lab, result)
        except scenarios.ScenarioError as e:
            result.notes.append(f"not redundant again: {e}")
        redundant.append(result.redundant_s)
        healed.append(result.healed_to_redundant_s)
        say(
            f"{name} run {i}/{runs}: {result.active_before} -> {result.active_after}, "
            f"outage {_seconds(result.outage_s)}, redundant after {_seconds(result.redundant_s)}"
            f" ({_seconds(result.healed_to_redundant_s)} after the heal), "
            f"lost {len(result.verdict.lost)}, "
            f"split-brain samples {result.verdict.split_brain_samples}"
            + (f", notes: {result.notes}" if result.notes else "")
        )
        if result.redundant_at is None:
            scenarios.wait_redundant(lab, timeout=120)  # the next run needs a redundant cluster
    return {
        "scenario": name,
        "outages_s": [None if o is None else round(o, 3) for o in outages],
        "redundant_s": [None if r is None else round(r, 3) for r in redundant],
        "healed_to_redundant_s": [None if h is None else round(h, 3) for h in healed],
        "lost_acknowledged": lost,
        "split_brain_samples": split,
        "epoch_order_violations": violations,
        "phases_s": {k: round(statistics.median(v), 3) for k, v in phases.items()},
    }


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f} s"


def _median(values: list[float | None]) -> str:
    done = [v for v in values if v is not None]
    missing = len(values) - len(done)
    text = f"{statistics.median(done):.3f}" if done else "-"
    return text + (f" ({missing} never)" if missing else "")


def table(rows: list[dict[str, Any]]) -> str:
    head = ["scenario", "runs", "min", "median", "max", "redundant", "healed", "lost", "split"]
    head += list(PHASES)
    lines = ["  ".join(f"{h:>9}" for h in head)]
    for r in rows:
        done = [o for o in r["outages_s"] if o is not None]
        stats = [min(done), statistics.median(done), max(done)] if done else [float("nan")] * 3
        cells = [
            r["scenario"],
            str(len(r["outages_s"])),
            *(f"{s:.3f}" for s in stats),
            _median(r["redundant_s"]),
            _median(r["healed_to_redundant_s"]),
            str(r["lost_acknowledged"]),
            str(r["split_brain_samples"]),
        ]
        cells += [f"{r['phases_s'][p]:.3f}" if p in r["phases_s"] else "-" for p in PHASES]
        lines.append("  ".join(f"{c:>9}" for c in cells))
    lines.append(
        "seconds; outage: fault to the first write acknowledged after it; redundant: fault to one "
        "active and one streaming passive again (median); healed: the same from the moment the "
        "fault was gone; phases: medians, from failoverd's history"
    )
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

"""Chaos run on the lab: random faults one after another, judged over the whole history.

    python bench/chaos.py --faults N --seed S [--profile default|fast] [--writers N] [--json]
                          [--out DIR]
    python bench/chaos.py --judge HISTORY.json [--json]
    python bench/chaos.py --load cpu|report|writes|all [--seconds 60] [--profile P] [--json]
    python bench/chaos.py --crashes N [--profile P] [--json]

The nemesis (lab/chaos.py) draws each fault from a seeded random source: every kind once in a
shuffled order, then kinds at random; each is held for a random time, healed, and the cluster
must be healthy again (one active, the other streaming) within 60 s before the next. Writers
post donations through the VIP all along and a sampler records, every 50 ms, who holds the VIP
and which database takes writes. The judge (lab/chaos_check.py) then checks the whole history:
never two VIP holders or two primaries, no write of an old epoch acknowledged after a newer
one, every acknowledged donation on the primary at the end, healthy again after each heal,
no move for faults that must not move the service, no operator wait without data at risk.

Exit 0 with no violation, 1 with any (printed with the seed and the fault history that
reproduce them), 2 when the lab could not run. The whole history is written to
``OUT/history.json`` (default: a temporary directory, printed) so that ``--judge`` can judge it
again. ``--json`` prints one summary document: seed, faults, violations, per kind the count,
median outage, median time to healthy and failovers, and per fault what it cost.

``--load`` runs no fault: a load that must not move the service, for ``--seconds`` on a
redundant cluster (lab/loads.py): ``cpu``, every core saturated by stress-ng from the active's
namespace; ``report``, GET /totals in four loops through the VIP; ``writes``, 16 closed-loop
writers. Exit 1 when any load moved the service (a false failover).

``--profile`` (lab/profiles.py) runs the lab in that timing profile: ``default`` (ZooKeeper
session 2 s, checks every 0.5 s) or ``fast`` (session 0.5 s, checks every 0.1 s); a lab already
up in another profile is refused. ``--crashes N`` crashes the active N times (the crash
scenario of bench/failover.py, healed and redundant again between runs) and reports the
outages: the fast profile's number to put beside keepalived's.

The lab is brought up if it is not up (and taken down again at the end); one that was up is
left as found.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab import scenarios
from lab.chaos import KIND_NAMES, ChaosRun, history_from_record, history_record
from lab.chaos_check import History, Judgement, judge
from lab.cluster import Lab, LabError
from lab.ensemble import ZooKeeperFaultError
from lab.loads import LOADS, LoadResult, run_load
from lab.profiles import PROFILES


def summary(history: History, verdict: Judgement) -> dict[str, Any]:
    return {
        "seed": history.seed,
        "profile": history.profile,
        "faults": len(history.faults),
        "acknowledged": sum(1 for a in history.acks if a.get("ok")),
        "samples": len(history.samples),
        "violations": [v.line() for v in verdict.violations],
        "by_kind": verdict.by_kind(),
        "per_fault": [
            {
                "index": r.index,
                "kind": r.kind,
                "target": f.target,
                "outage_s": r.outage_s,
                "to_healthy_s": r.to_healthy_s,
                "failovers": r.failovers,
                "detail": f.detail,
            }
            for r, f in zip(
                verdict.faults, sorted(history.faults, key=lambda f: f.started), strict=True
            )
        ],
    }


def report(history: History, verdict: Judgement) -> str:
    lines = [f"chaos run, seed {history.seed}: {len(history.faults)} faults"]
    lines.append(f"{'kind':<22} {'n':>3} {'outage med':>11} {'healthy med':>12} {'failovers':>9}")
    for kind, row in sorted(verdict.by_kind().items()):
        healthy = row["to_healthy_median_s"]
        lines.append(
            f"{kind:<22} {row['faults']:>3} {row['outage_median_s']:>10.2f}s "
            f"{'-' if healthy is None else f'{healthy:.2f}s':>12} {row['failovers']:>9}"
        )
    if verdict.ok:
        lines.append("0 violations")
    else:
        lines.append(f"{len(verdict.violations)} VIOLATIONS (seed {history.seed}):")
        lines += [f"  {v.line()}" for v in verdict.violations]
        lines.append("fault history:")
        lines += [
            f"  #{f.index} {f.kind} on {f.target} started {f.started:.2f} healed "
            f"{f.healed if f.healed is None else round(f.healed, 2)} healthy "
            f"{f.healthy_at if f.healthy_at is None else round(f.healthy_at, 2)} "
            f"{f.active_before}@{f.epoch_before} -> {f.active_after}@{f.epoch_after} {f.detail}"
            for f in history.faults
        ]
    return "\n".join(lines)


class LabRunError(Exception):
    """The lab could not be brought up or driven; the message says why (exit 2)."""


@contextmanager
def lab_in(profile: str | None) -> Iterator[Lab]:
    """The lab, up in ``profile`` (None: as it is, or the default); taken down afterwards
    when it was not up before. Lab trouble becomes LabRunError."""
    lab = Lab()
    was_up = lab.is_up()
    try:
        if not was_up or profile is not None:
            lab.up(profile=profile)
        yield lab
    except (LabError, ZooKeeperFaultError, scenarios.ScenarioError) as e:
        raise LabRunError(str(e)) from e
    finally:
        if not was_up:
            lab.down()


def crashes(runs: int, profile: str | None, out: Path | None, as_json: bool) -> int:
    """The active crashed ``runs`` times, healed and redundant again between runs."""
    workdir = out or Path(tempfile.mkdtemp(prefix="failoverd-crashes-"))
    outages: list[float | None] = []
    with lab_in(profile) as lab:
        for k in range(runs):
            result = scenarios.run(lab, "crash", workdir / f"run-{k}")
            scenarios.restore(lab, result)
            outages.append(result.outage_s)
            print(f"crash {k + 1}/{runs}: outage {result.outage_s} s", file=sys.stderr)
        ran_in = lab.profile
    measured = [o for o in outages if o is not None]
    doc = {
        "profile": ran_in,
        "runs": runs,
        "outages_s": [None if o is None else round(o, 3) for o in outages],
        "outage_median_s": round(statistics.median(measured), 3) if measured else None,
    }
    print(
        json.dumps(doc, indent=2)
        if as_json
        else f"crash outage median {doc['outage_median_s']} s over {len(measured)} runs "
        f"({doc['profile']} profile)"
    )
    return 0 if len(measured) == runs else 1


def loads(
    names: tuple[str, ...], seconds: float, out: Path | None, as_json: bool, profile: str | None
) -> int:
    """Each load in turn on one lab; 1 when any moved the service."""
    workdir = out or Path(tempfile.mkdtemp(prefix="failoverd-loads-"))
    results: list[LoadResult] = []
    with lab_in(profile) as lab:
        for name in names:
            print(f"load {name} for {seconds:g} s", file=sys.stderr)
            results.append(run_load(lab, name, seconds, workdir))
    if as_json:
        print(json.dumps([r.summary() for r in results], indent=2, sort_keys=True))
    else:
        for r in results:
            print(
                f"{r.load:<7} {'MOVED' if r.moved else 'stayed'} on {r.active_before}: "
                f"epoch {r.epoch_before} -> {r.epoch_after}, {r.acknowledged} acknowledged, "
                f"{r.failed} failed, longest gap {r.max_gap_s} s, load {r.load_done} done "
                f"{r.load_failed} failed {'; '.join(n for n in r.notes if n)}"
            )
    return 1 if any(r.moved for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except LabRunError as e:
        print(f"chaos: the lab could not run: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=len(KIND_NAMES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--out", type=Path, help="directory for the history and the workload")
    parser.add_argument("--judge", type=Path, help="judge a recorded history.json again")
    parser.add_argument("--profile", choices=tuple(PROFILES), help="the lab's timing profile")
    parser.add_argument("--crashes", type=int, help="crash the active N times; the outages")
    parser.add_argument("--load", choices=(*LOADS, "all"), help="a load, no fault")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each load runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.faults < 1 or args.writers < 1 or args.seconds <= 0:
        parser.error("--faults and --writers must be at least 1, --seconds positive")
    if args.crashes is not None:
        if args.crashes < 1:
            parser.error("--crashes must be at least 1")
        return crashes(args.crashes, args.profile, args.out, args.json)
    if args.load is not None:
        names = LOADS if args.load == "all" else (args.load,)
        return loads(names, args.seconds, args.out, args.json, args.profile)
    if args.judge is not None:
        history = history_from_record(json.loads(args.judge.read_text()))
    else:
        out = args.out or Path(tempfile.mkdtemp(prefix="failoverd-chaos-"))
        out.mkdir(parents=True, exist_ok=True)
        with lab_in(args.profile) as lab:
            run = ChaosRun(
                lab, out / "workload", args.seed, say=lambda s: print(s, file=sys.stderr)
            )
            history = run.run(args.faults, writers=args.writers)
        (out / "history.json").write_text(json.dumps(history_record(history)))
        print(f"chaos: history in {out / 'history.json'}", file=sys.stderr)
        for note in run.notes:
            print(f"chaos: {note}", file=sys.stderr)
    verdict = judge(history)
    if args.json:
        print(json.dumps(summary(history, verdict), indent=2, sort_keys=True))
    else:
        print(report(history, verdict))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())

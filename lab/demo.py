"""The README's main job: the two-node lab fails over before your eyes.

Brings the lab up (network namespaces, three ZooKeeper servers, PostgreSQL primary and replica,
the donations app, Squid, sshd and failoverd on each node), shows the cluster, crashes the
active node while a client writes through the VIP every 50 ms, shows the takeover with each
phase and what the client saw, shows the cluster after, and tears the lab down (``--keep``
leaves it up for exploring with ``lab/lab status`` and ``lab/lab failoverctl fln1 status``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from lab import scenarios
from lab.cluster import Lab

PHASE_TEXT = {
    "detection": "the active's ZooKeeper session expired (detection)",
    "wait": "waited for the peer's database to be safe to replace",
    "lease": "took the lease (new epoch)",
    "fence": "fenced the old active over SSH",
    "promote": "promoted PostgreSQL and recorded the epoch",
    "vip": "added the VIP and sent gratuitous ARP",
}


def show_status(lab: Lab, node: str) -> None:
    proc = lab.failoverctl(node, "status", timeout=15)
    print(proc.stdout.rstrip() or proc.stderr.rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parser.add_argument(
        "--scenario", default="crash", choices=scenarios.SCENARIOS, help="the fault (crash)"
    )
    args = parser.parse_args(argv)
    lab = Lab(log=print)
    try:
        print("== bringing the two-node lab up")
        lab.up()
        active = scenarios.wait_redundant(lab, timeout=90)
        print("\n== before")
        show_status(lab, active)
        print(
            f"\n== a client posts a donation through the VIP every 50 ms; {args.scenario} "
            f"of the active node {active}"
        )
        work = Path(tempfile.mkdtemp(prefix="failoverd-demo-", dir="/var/tmp"))
        result = scenarios.run(lab, args.scenario, work)
        new = result.active_after or scenarios.other(active)
        print(f"\n== takeover by {new}, from failoverd's own record of it")
        at = 0.0
        for phase in ("detection", "wait", "lease", "fence", "promote", "vip"):
            seconds = result.phases_s.get(phase)
            if seconds is None or (phase == "wait" and seconds < 0.001):
                continue
            at += seconds
            print(f"  +{at:6.3f} s  {PHASE_TEXT[phase]} ({seconds:.3f} s)")
        v = result.verdict
        outage = (
            "no write acknowledged after the fault"
            if v.outage_s is None
            else (f"{v.outage_s:.3f} s from the fault to the first write acknowledged by {new}")
        )
        print(f"\n== what the client saw: {outage}")
        print(f"  acknowledged writes: {v.acknowledged}, failed attempts: {v.failed}")
        print(
            f"  acknowledged writes missing on {new}: {len(v.lost)} "
            "(asynchronous replication: a crash may lose what was not yet streamed)"
        )
        print(f"  samples with two VIP holders or two writable primaries: {v.split_brain_samples}")
        print("\n== after")
        show_status(lab, new)
        print("\n== history")
        print(lab.failoverctl(new, "history", "--limit", "6").stdout.rstrip())
        if args.keep:
            print(
                "\nthe lab stays up: lab/lab status, lab/lab failoverctl fln1 status, lab/lab down"
            )
    finally:
        if not args.keep:
            print("\n== tearing the lab down")
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())

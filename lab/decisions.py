"""The daemons' own account, read back from their logs: what each decided, and when.

A failed lab test prints both daemons' decisions over its span (tests/lab/conftest.py), so a
failure on a machine whose logs are gone (CI) still says what the cluster did and why; the
chaos run looks in the same records for decisions that wait for a person.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

# Worth a line in a failure's timeline besides the decisions (which carry a "reason").
NOTABLE: Final = frozenset(
    {
        "check_down",
        "check_up",
        "failsafe_ask",
        "failsafe_refused",
        "failsafe_store_failed",
        "failover_complete",
        "zookeeper state: suspended",
        "zookeeper state: connected",
        "zookeeper state: lost",
    }
)


@dataclass(frozen=True)
class Decision:
    wall: float  # seconds since the epoch
    node: str
    event: str  # the reason code, or the event's name
    text: str  # the reason, or the event's other fields


def read_decisions(path: Path, node: str, since_wall: float = 0.0) -> list[Decision]:
    """The decisions and notable events in one daemon's log (JSON lines), oldest first;
    lines that are not JSON records (a start banner, a traceback) are skipped."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        if '"event"' not in line or "{" not in line:
            continue
        try:
            rec = json.loads(line[line.index("{") :])
            event = str(rec["event"])
            wall = datetime.fromisoformat(str(rec["timestamp"])).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if wall < since_wall:
            continue
        if "reason" in rec and "action" not in rec:
            out.append(Decision(wall, node, event, str(rec["reason"])))
        elif event in NOTABLE:
            rest = {
                k: v
                for k, v in rec.items()
                if k not in ("event", "timestamp", "node", "cluster", "level", "logger")
            }
            out.append(Decision(wall, node, event, json.dumps(rest, sort_keys=True)))
    return out


def timeline(decisions: Iterable[Decision], limit: int = 120) -> str:
    """Both nodes' decisions merged by time, the last ``limit`` of them, one per line."""
    merged = sorted(decisions, key=lambda d: d.wall)
    if not merged:
        return "(no decisions logged)"
    shown = merged[-limit:]
    t0 = shown[0].wall
    head = [f"... {len(merged) - limit} earlier lines left out"] if len(merged) > limit else []
    stamp = datetime.fromtimestamp(t0).isoformat(timespec="milliseconds")
    return "\n".join(
        [*head, f"t=0 is {stamp}"]
        + [f"{d.wall - t0:8.3f} {d.node} {d.event}: {d.text[:300]}" for d in shown]
    )

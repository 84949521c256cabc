"""What the failsafe channel counted so far: a pure snapshot the loop hands to the metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

ASK_RESULTS: Final = ("pledged", "refused", "unanswered", "dropped")
"""How an ask ended: a pledge; a signed refusal; no valid answer in time; not sent, because one
was still in flight."""


@dataclass(frozen=True)
class FailsafeStats:
    refused: Mapping[str, int] = field(default_factory=dict)  # by Refused reason, both ends
    granted: int = 0  # pledges this node granted (passive)
    received: int = 0  # pledges granted to this node (active)
    asks: Mapping[str, int] = field(default_factory=dict)  # by ASK_RESULTS

"""Counting refused messages, and saying so in the log without letting a flood flood it."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Final

from failoverd.failsafe.protocol import Refused

LOG_EVERY: Final = 60.0  # seconds: at most one log line per reason this often


class Refusals:
    """Thread-safe counts by reason; the first refusal of a reason is logged, then at most one
    line per reason every LOG_EVERY seconds with how many were refused meanwhile."""

    def __init__(self, log: Any, side: str) -> None:
        self.log = log
        self.side = side  # "server" or "client": which end refused
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def note(self, reason: Refused, now: float, source: object = None) -> None:
        with self._lock:
            self._counts[reason.value] += 1
            last = self._logged_at.get(reason.value)
            if last is not None and now - last < LOG_EVERY:
                self._unlogged[reason.value] += 1
                return
            self._logged_at[reason.value] = now
            also = self._unlogged.pop(reason.value, 0)
        self.log.warning(
            "failsafe_refused",
            reason=reason.value,
            side=self.side,
            source=None if source is None else str(source),
            also_refused_since_last_line=also,
        )

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

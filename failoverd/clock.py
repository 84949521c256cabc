"""Clocks. Timing uses CLOCK_BOOTTIME: it keeps counting while a VM is suspended, monotonic does
not, and a node that slept must not believe its lease is still fresh. Wall time only labels
things for humans (and deadlines written by other hosts)."""

import time


def boottime() -> float:
    """Seconds on CLOCK_BOOTTIME."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def walltime() -> float:
    """Seconds since the epoch, for humans and cross-host deadlines."""
    return time.time()

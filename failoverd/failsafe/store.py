"""Where a passive keeps its promises across a daemon restart.

One small JSON file per cluster and node in ``[failsafe] store_dir`` (``/run/failoverd``):
the latest boottime until which this node promised not to take the lease, and the boot it was
measured in (``/proc/sys/kernel/random/boot_id``). Boottime restarts at a reboot, so a promise
read back in another boot cannot be compared with the clock: it counts as made just now
(now + ttl), which is never shorter than what was promised.

Written atomically (a temporary file, then a rename) before the pledge is answered. No fsync:
the file only has to outlive the daemon, not the machine; a machine that crashes reboots, and
the new boot id takes the conservative branch above.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from failoverd.failsafe.errors import FailsafeError

BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")
_VERSION: Final = 1


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    try:
        boot_id = path.read_text().strip()
    except OSError as e:
        raise FailsafeError(f"cannot read the boot id from {path}: {e.strerror or e}") from None
    if not boot_id:
        raise FailsafeError(f"{path} is empty: no boot id to date pledges with")
    return boot_id


@dataclass(frozen=True)
class StoredPromise:
    boot_id: str  # "" when the record could not be understood
    until: float | None  # boottime of that boot; None: never promised
    ttl: float  # the pledge_ttl in force when it was written
    problem: str | None = None  # why the record could not be understood


def restored_until(
    stored: StoredPromise | None, boot_id: str, now: float, ttl: float
) -> float | None:
    """Until when (boottime, now) this node is bound by what it promised before a restart."""
    if stored is None:
        return None
    if stored.problem is None and stored.boot_id == boot_id:
        return stored.until
    if stored.problem is None and stored.until is None:
        return None  # another boot, but nothing was ever promised
    # Another boot (boottime restarted) or a record we cannot read: as if promised just now.
    return now + max(ttl, stored.ttl)


class PromiseStore:
    def __init__(self, directory: Path, cluster: str, node: str, boot_id: str) -> None:
        self.directory = directory
        self.path = directory / f"failsafe-{cluster}-{node}.json"
        self.boot_id = boot_id

    def load(self) -> StoredPromise | None:
        """None when no record exists; FailsafeError when the record cannot be read at all."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise FailsafeError(
                f"cannot read {self.path}: {e.strerror or e}", key="store_dir"
            ) from None
        try:
            doc = json.loads(text)
            boot_id, until, ttl = doc["boot_id"], doc["pledged_until"], doc["ttl"]
            if doc["v"] != _VERSION or not isinstance(boot_id, str):
                raise ValueError("unknown layout")
            if until is not None:
                until = float(until)
                if not math.isfinite(until):
                    raise ValueError("pledged_until is not finite")
            return StoredPromise(boot_id, until, float(ttl))
        except (ValueError, KeyError, TypeError) as e:
            return StoredPromise("", None, 0.0, problem=f"{self.path}: {e}")

    def save(self, until: float | None, ttl: float) -> None:
        """Replace the record atomically; FailsafeError when it cannot be written."""
        doc = {"v": _VERSION, "boot_id": self.boot_id, "pledged_until": until, "ttl": ttl}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(doc, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as e:
            raise FailsafeError(
                f"cannot write {self.path}: {e.strerror or e}", key="store_dir"
            ) from None

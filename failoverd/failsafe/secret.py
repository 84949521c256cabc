"""The shared secret: read once at start, checked as the config loader checks it, never shown."""

from __future__ import annotations

import stat
from pathlib import Path

from failoverd.config import FAILSAFE_SECRET_MIN_BYTES
from failoverd.failsafe.errors import FailsafeError

_KEY = "secret_file"


class Secret:
    """The key bytes (the file's content without surrounding whitespace, so a trailing newline
    from ``base64 > FILE`` does not matter). Its repr names the file only."""

    __slots__ = ("_key", "path")

    def __init__(self, key: bytes, path: Path | None = None) -> None:
        if len(key) < FAILSAFE_SECRET_MIN_BYTES:
            raise ValueError(f"a failsafe secret needs {FAILSAFE_SECRET_MIN_BYTES}+ bytes")
        self._key = key
        self.path = path

    @property
    def key(self) -> bytes:
        return self._key

    def __repr__(self) -> str:
        return f"Secret(path={str(self.path)!r})"


def read_secret(path: Path) -> Secret:
    """FailsafeError (naming the file and the problem, never the content) unless ``path`` is a
    regular file, readable, not readable or writable by group or others, of 32+ bytes."""
    try:
        st = path.stat()
        key = path.read_bytes().strip()
    except OSError as e:
        raise FailsafeError(f"cannot read {path}: {e.strerror or e}", key=_KEY) from None
    if not stat.S_ISREG(st.st_mode):
        raise FailsafeError(f"{path} is not a regular file", key=_KEY)
    if st.st_mode & 0o077:
        raise FailsafeError(
            f"{path} is open to group or others (mode {st.st_mode & 0o777:o}): chmod 600 it",
            key=_KEY,
        )
    if len(key) < FAILSAFE_SECRET_MIN_BYTES:
        raise FailsafeError(
            f"{path} holds {len(key)} bytes; at least {FAILSAFE_SECRET_MIN_BYTES} are needed "
            "(e.g. head -c 32 /dev/urandom | base64 > FILE)",
            key=_KEY,
        )
    return Secret(key, path)

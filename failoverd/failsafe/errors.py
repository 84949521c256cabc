"""The failsafe channel's own error type: what its adapters raise at their edge."""

from __future__ import annotations


class FailsafeError(Exception):
    """The channel cannot run (secret, store, socket); the message is one line for the operator
    and never shows the secret. ``key`` names the ``[failsafe]`` key to look at, if one."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

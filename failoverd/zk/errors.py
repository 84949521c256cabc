"""What the ZooKeeper adapter raises: its own types, never kazoo's (errors are turned at the edge,
so callers, and only the command-line modules for exit codes, depend on these names alone)."""

from __future__ import annotations


class LeaseError(Exception):
    """Base of everything this adapter raises: callers never see a kazoo exception."""


class ZkUnreachable(LeaseError):  # noqa: N818 (names fixed by the design)
    """Could not connect to ZooKeeper in time."""


class DuplicateNode(LeaseError):  # noqa: N818 (names fixed by the design)
    """Another live session publishes as this node: two daemons share a node name."""


class LeaseConflict(LeaseError):  # noqa: N818 (names fixed by the design)
    """Lost the race for the lease, the epoch moved on, or the lease is not ours."""


class ZkOperationFailed(LeaseError):  # noqa: N818 (names fixed by the design)
    """Any other ZooKeeper failure (connection loss, timeout, permission), with context."""


class MalformedRecord(LeaseError, ValueError):  # noqa: N818 (names fixed by the design)
    """A record that does not parse; the message says which field and why."""

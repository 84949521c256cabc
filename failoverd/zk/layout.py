"""The cluster's fixed nodes: created once (``failoverctl init`` or the first daemon), with the
cluster's ACL, so that every later write finds its parent and another cluster finds a wall."""

from __future__ import annotations

import logging
from typing import Any

from kazoo.exceptions import NodeExistsError
from kazoo.security import OPEN_ACL_UNSAFE

from failoverd.zk.records import epoch_to_bytes
from failoverd.zk.session import KAZOO_ERRORS, Session

log = logging.getLogger(__name__)


def ensure_layout(s: Session, timeout: float) -> None:
    """Create the chroot and its fixed nodes if missing (idempotent).

    With credentials every node created here (and every node the adapter creates later)
    carries the digest ACL, so another cluster's daemon can neither read nor write it. The
    chroot's parents keep the open ACL: several clusters share them.
    """
    s.require_connected("create the cluster layout")
    deadline = s.clock() + timeout
    parts = s.chroot.strip("/").split("/")
    parents = ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
    nodes: list[tuple[str, bytes, list[Any]]] = [(p, b"", list(OPEN_ACL_UNSAFE)) for p in parents]
    nodes += [
        (s.chroot, b"", s.acl),
        (s.path("epoch"), epoch_to_bytes(0), s.acl),
        (s.path("last_leader"), b"", s.acl),
        (s.path("members"), b"", s.acl),
        (s.path("history"), b"", s.acl),
        (s.path("position"), b"", s.acl),
        (s.path("sync"), b"", s.acl),
        (s.path("rejoin"), b"", s.acl),
    ]
    for path, data, acl in nodes:
        try:
            s.wait(s.client.create_async(path, data, acl=acl), deadline, f"create {path}")
            log.info("zookeeper layout: created %s", path)
        except NodeExistsError:
            if path == s.chroot:
                _check_chroot_acl(s, deadline)
        except KAZOO_ERRORS as exc:
            raise s.wrap(exc, f"create {path}") from None


def _check_chroot_acl(s: Session, deadline: float) -> None:
    """Refuse a chroot we may not read (another cluster's); warn when an existing chroot is
    less protected than configured: the isolation between clusters then does not hold."""
    try:
        acls, _stat = s.wait(
            s.client.get_acls_async(s.chroot), deadline, f"read the ACL of {s.chroot}"
        )
    except KAZOO_ERRORS as exc:
        log.warning("cannot check the ACL of %s: %r", s.chroot, exc)
        return
    if sorted(map(str, acls)) != sorted(map(str, s.acl)):
        log.warning(
            "%s exists with ACL %s, not the configured %s: created with other credentials?",
            s.chroot,
            acls,
            s.acl,
        )

"""The records under the cluster's chroot, as JSON in and out.

Strict on types (a wrong type is as bad as a missing field: a record that parses is one the core
may trust), tolerant of unknown fields (a newer daemon may add some). Parsers raise
``MalformedRecord`` saying which field and why; the watches turn that into a reported problem.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from failoverd.core import (
    CheckStatus,
    DbRole,
    LastLeader,
    LeaseInfo,
    MalformedMember,
    MemberStatus,
    SwitchoverRequest,
)
from failoverd.core.model import Position, RejoinRequest, SyncRecord
from failoverd.zk.errors import MalformedRecord

MALFORMED_LEASE_NODE = "<malformed>"
UNKNOWN_EPOCH = -1  # the epoch node is missing or unreadable: nobody can acquire against it

_EPOCH_RE = re.compile(rb"\s*(\d{1,18})\s*")


def load_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedRecord(f"{what}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise MalformedRecord(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _missing(what: str, key: str) -> MalformedRecord:
    return MalformedRecord(f"{what}: missing field {key!r}")


def _wrong(what: str, key: str, expected: str, value: object) -> MalformedRecord:
    return MalformedRecord(f"{what}: field {key!r} must be {expected}, got {value!r}")


def _str(obj: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str:
    if key not in obj:
        if default is None:
            raise _missing(what, key)
        return default
    value = obj[key]
    if not isinstance(value, str):
        raise _wrong(what, key, "a string", value)
    return value


def _opt_str(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _wrong(what, key, "a string or null", value)
    return value


def _int(obj: Mapping[str, Any], key: str, what: str) -> int:
    if key not in obj:
        raise _missing(what, key)
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(what, key, "an integer", value)
    return value


def _opt_int(obj: Mapping[str, Any], key: str, what: str) -> int | None:
    value = obj.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _wrong(what, key, "an integer or null", value)
    return value


def _num(obj: Mapping[str, Any], key: str, what: str, default: float | None = None) -> float:
    if key not in obj:
        if default is None:
            raise _missing(what, key)
        return default
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _wrong(what, key, "a finite number", value)
    return float(value)


def _opt_num(obj: Mapping[str, Any], key: str, what: str) -> float | None:
    if obj.get(key) is None:
        return None
    return _num(obj, key, what)


def _bool(obj: Mapping[str, Any], key: str, what: str, default: bool | None = None) -> bool:
    if key not in obj:
        if default is None:
            raise _missing(what, key)
        return default
    value = obj[key]
    if not isinstance(value, bool):
        raise _wrong(what, key, "true or false", value)
    return value


def _dump(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def member_to_json(status: MemberStatus) -> bytes:
    """A member record; ``age`` is the reader's notion and is not stored."""
    return _dump(
        {
            "node": status.node,
            "role": status.role,
            "epoch": status.epoch,
            "eligible": status.eligible,
            "healthy": status.healthy,
            "reason": status.reason,
            "reason_code": status.reason_code,
            "lsn": status.lsn,
            "timeline": status.timeline,
            "lsn_exact": status.lsn_exact,
            "db_role": status.db_role,
            "checks": [
                {
                    "name": c.name,
                    "healthy": c.healthy,
                    "reason": c.reason,
                    "latency": c.latency,
                    "successes": c.successes,
                    "failures": c.failures,
                }
                for c in status.checks
            ],
            "published_at": status.published_at,
            "version": status.version,
        }
    )


def _check_from_obj(obj: object, index: int, what: str) -> CheckStatus:
    where = f"{what}: checks[{index}]"
    if not isinstance(obj, dict):
        raise MalformedRecord(f"{where}: expected an object, got {obj!r}")
    return CheckStatus(
        name=_str(obj, "name", where),
        healthy=_bool(obj, "healthy", where),
        reason=_str(obj, "reason", where, default=""),
        latency=_opt_num(obj, "latency", where),
        successes=_opt_int(obj, "successes", where) or 0,
        failures=_opt_int(obj, "failures", where) or 0,
    )


def member_from_json(node: str, data: bytes) -> MemberStatus | MalformedMember:
    """Parse ``members/<node>``; anything wrong becomes a ``MalformedMember`` saying what."""
    what = f"members/{node}"
    try:
        obj = load_object(data, what)
        recorded = _str(obj, "node", what)
        if recorded != node:
            raise MalformedRecord(f"{what}: record names node {recorded!r}")
        checks = obj.get("checks", [])
        if not isinstance(checks, list):
            raise _wrong(what, "checks", "a list", checks)
        db_role = _str(obj, "db_role", what, default="unknown")
        return MemberStatus(
            node=node,
            role=_str(obj, "role", what),
            epoch=_int(obj, "epoch", what),
            eligible=_bool(obj, "eligible", what),
            healthy=_bool(obj, "healthy", what),
            reason=_str(obj, "reason", what),
            reason_code=_str(obj, "reason_code", what, default=""),
            lsn=_opt_int(obj, "lsn", what),
            timeline=_opt_int(obj, "timeline", what),
            db_role=db_role,
            # An older daemon's record does not say: a stopped database's is a checkpoint.
            lsn_exact=_bool(obj, "lsn_exact", what, default=db_role != DbRole.STOPPED.value),
            checks=tuple(_check_from_obj(c, i, what) for i, c in enumerate(checks)),
            published_at=_num(obj, "published_at", what, default=0.0),
            version=_str(obj, "version", what, default=""),
        )
    except MalformedRecord as exc:
        return MalformedMember(node=node, error=str(exc))


def lease_to_json(lease: LeaseInfo) -> bytes:
    """The lease record; ``mine`` is the reader's notion and is not stored."""
    return _dump({"node": lease.node, "epoch": lease.epoch, "since": lease.since})


def lease_from_json(data: bytes, mine: bool = False) -> LeaseInfo:
    """Parse ``lease``; raises ``MalformedRecord``."""
    obj = load_object(data, "lease")
    return LeaseInfo(
        node=_str(obj, "node", "lease"),
        epoch=_int(obj, "epoch", "lease"),
        since=_num(obj, "since", "lease"),
        mine=mine,
    )


def last_leader_to_json(last: LastLeader) -> bytes:
    return _dump(
        {
            "node": last.node,
            "epoch": last.epoch,
            "final_lsn": last.final_lsn,
            "clean": last.clean,
            "left_serving": last.left_serving,
            "timeline": last.timeline,
        }
    )


def last_leader_from_json(data: bytes) -> LastLeader | None:
    """Parse ``last_leader``; empty data means no voluntary release yet."""
    if not data.strip():
        return None
    obj = load_object(data, "last_leader")
    return LastLeader(
        node=_str(obj, "node", "last_leader"),
        epoch=_int(obj, "epoch", "last_leader"),
        final_lsn=_opt_int(obj, "final_lsn", "last_leader"),
        clean=_bool(obj, "clean", "last_leader"),
        left_serving=_bool(obj, "left_serving", "last_leader", default=False),
        timeline=_opt_int(obj, "timeline", "last_leader"),
    )


def switchover_to_json(req: SwitchoverRequest) -> bytes:
    return _dump(
        {
            "target": req.target,
            "from_epoch": req.from_epoch,
            "requested_by": req.requested_by,
            "deadline": req.deadline,
            "force": req.force,
        }
    )


def switchover_from_json(data: bytes) -> SwitchoverRequest:
    obj = load_object(data, "switchover")
    return SwitchoverRequest(
        target=_opt_str(obj, "target", "switchover"),
        from_epoch=_int(obj, "from_epoch", "switchover"),
        requested_by=_str(obj, "requested_by", "switchover"),
        deadline=_num(obj, "deadline", "switchover"),
        force=_bool(obj, "force", "switchover", default=False),
    )


def position_to_json(position: Position) -> bytes:
    return _dump(
        {
            "node": position.node,
            "epoch": position.epoch,
            "lsn": position.lsn,
            "timeline": position.timeline,
            "written_at": position.written_at,
        }
    )


def position_from_json(data: bytes) -> Position | None:
    """Parse ``position``; empty data means no active has recorded one yet."""
    if not data.strip():
        return None
    obj = load_object(data, "position")
    lsn = _int(obj, "lsn", "position")
    if lsn < 0:
        raise _wrong("position", "lsn", "a non-negative integer", lsn)
    return Position(
        node=_str(obj, "node", "position"),
        epoch=_int(obj, "epoch", "position"),
        lsn=lsn,
        timeline=_opt_int(obj, "timeline", "position"),
        written_at=_num(obj, "written_at", "position"),
    )


def sync_to_json(record: SyncRecord) -> bytes:
    return _dump(
        {"standby": record.standby, "epoch": record.epoch, "written_at": record.written_at}
    )


def sync_from_json(data: bytes) -> SyncRecord | None:
    """Parse ``sync``; empty data means it was never written (no standby named yet).

    ``standby`` must be present: a record that lost it is not read as "none" by accident, it is
    reported. ``written_at`` is only for humans: a record without it still parses.
    """
    if not data.strip():
        return None
    obj = load_object(data, "sync")
    if "standby" not in obj:
        raise _missing("sync", "standby")
    standby = _opt_str(obj, "standby", "sync")
    if standby is not None and (not standby or "/" in standby):
        raise _wrong("sync", "standby", "a node name or null", standby)
    epoch = _int(obj, "epoch", "sync")
    if epoch < 0:
        raise _wrong("sync", "epoch", "a non-negative integer", epoch)
    return SyncRecord(
        standby=standby, epoch=epoch, written_at=_num(obj, "written_at", "sync", default=0.0)
    )


def rejoin_to_json(req: RejoinRequest) -> bytes:
    return _dump(
        {
            "node": req.node,
            "reclone": req.reclone,
            "requested_by": req.requested_by,
            "requested_at": req.requested_at,
        }
    )


def rejoin_from_json(node: str, data: bytes) -> RejoinRequest:
    """Parse ``rejoin/<node>``; the record must name the node it is filed under (a request
    copied to the wrong name must not make another node rejoin)."""
    what = f"rejoin/{node}"
    obj = load_object(data, what)
    recorded = _str(obj, "node", what)
    if recorded != node:
        raise MalformedRecord(f"{what}: record names node {recorded!r}")
    return RejoinRequest(
        node=node,
        reclone=_bool(obj, "reclone", what),
        requested_by=_str(obj, "requested_by", what),
        requested_at=_num(obj, "requested_at", what),
    )


def epoch_to_bytes(epoch: int) -> bytes:
    return str(epoch).encode("ascii")


def epoch_from_bytes(data: bytes) -> int:
    """The epoch counter: a non-negative ASCII integer and nothing else."""
    match = _EPOCH_RE.fullmatch(data)
    if match is None:
        raise MalformedRecord(f"epoch: expected a non-negative integer, got {data[:40]!r}")
    return int(match.group(1))


def history_to_json(record: Mapping[str, object], now: float) -> bytes:
    """A history record, stamped with the wall clock unless it carries a time already."""
    rec = dict(record)
    rec.setdefault("time", now)
    return _dump(rec)

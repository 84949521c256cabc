"""``failoverd fence-self``: take this node out of service, whatever state it is in.

Used by the peer over SSH (it has taken, or is taking, the lease) and by the daemon itself when
it must self-fence. It removes the VIP first (clients stop arriving at once), then stops the
local PostgreSQL: fast (clean, replicas get the end of WAL), immediate if that hangs, SIGKILL as
the last resort. It never needs ZooKeeper (the node being fenced may have lost it), never asks
anything, and is idempotent: no VIP, a database already stopped, or no [postgres] section at all
are all success. A failed step does not stop the next one: a fence does all it can.

The one exception is the dry run (failoverd/fencecheck.py): under the forced command of the
peer's key sshd puts what the peer asked for in ``$SSH_ORIGINAL_COMMAND``; when that is exactly
``FENCE_DRY_RUN_COMMAND``, fence-self checks that it could fence and changes nothing. Anything
else, or nothing, is a real fence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from failoverd.actions.postgres import LocalDatabase
from failoverd.actions.vip import remove_vip as _remove_vip
from failoverd.config import FENCE_DRY_RUN_COMMAND, Config, VipConfig

RemoveVip = Callable[[VipConfig], tuple[bool, str]]

MIN_STOP_TIMEOUT = 1.0


def stop_timeout(cfg: Config) -> float:
    """Most of the peer's SSH command budget, so the stop ends (escalating as needed) before
    the peer gives up on the fence and calls it FAILED."""
    return max(MIN_STOP_TIMEOUT, 0.8 * cfg.fencing.command_timeout)


def fence_self(
    cfg: Config,
    log: Any,
    remove_vip: RemoveVip = _remove_vip,
    *,
    timeout: float | None = None,
) -> tuple[bool, str]:
    """Remove the VIP, then stop PostgreSQL; (all steps ok, what each did)."""
    ok = True
    parts: list[str] = []
    if cfg.vip is None:
        parts.append("VIP: none configured")
    else:
        try:
            vip_ok, vip_detail = remove_vip(cfg.vip)
        except Exception as e:  # a bug there must not keep the database running
            vip_ok, vip_detail = False, f"remove_vip crashed: {e!r}"
        (log.info if vip_ok else log.error)(
            "fence_self_vip", node=cfg.node, ok=vip_ok, detail=vip_detail
        )
        ok = ok and vip_ok
        parts.append(f"VIP: {vip_detail}")
    if cfg.postgres is None:
        parts.append("database: none managed")
    else:
        db = LocalDatabase(cfg.postgres, node=cfg.node)
        stopped = db.stop("fast", stop_timeout(cfg) if timeout is None else timeout)
        (log.info if stopped.ok else log.error)(
            "fence_self_database",
            node=cfg.node,
            ok=stopped.ok,
            clean=stopped.clean,
            final_lsn=stopped.final_lsn,
            detail=stopped.detail,
        )
        ok = ok and stopped.ok
        parts.append(f"database: {stopped.detail}")
    return ok, "; ".join(parts)


def dry_run_requested(environ: Mapping[str, str]) -> bool:
    """Whether the peer asked for a dry run: exactly the dry-run string in
    ``$SSH_ORIGINAL_COMMAND``, which only sshd sets, for a forced command."""
    return environ.get("SSH_ORIGINAL_COMMAND") == FENCE_DRY_RUN_COMMAND


def fence_self_dry_run(cfg: Config) -> tuple[bool, str]:
    """Could ``fence_self`` do its work here? Reads only; (could, the line the peer shows)."""
    from failoverd.fencecheck import dry_run_line  # noqa: PLC0415  (no cycle at import)
    from failoverd.preflight import fence_readiness  # noqa: PLC0415

    problems = fence_readiness(cfg)
    return not problems, dry_run_line(cfg.node, problems)

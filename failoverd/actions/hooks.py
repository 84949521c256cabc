"""Notify hooks: run the operator's command on role changes, with the event as arguments and as
FAILOVERD_* environment variables (so a hook written in any language can read it either way)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from failoverd.core import ActionResult, RunHook
from failoverd.subproc import run_bounded


def run_hook(
    action: RunHook, argv: Sequence[str], node: str, cluster: str, timeout: float
) -> ActionResult:
    """Run one hook to completion or its timeout; its failure is reported, never raised."""
    if not argv:
        return ActionResult(action.id, ok=True, detail="no hook configured")
    env = dict(os.environ)
    env.update(
        FAILOVERD_NODE=node,
        FAILOVERD_CLUSTER=cluster,
        FAILOVERD_ROLE=action.role.value,
        FAILOVERD_EPOCH=str(action.epoch),
        FAILOVERD_REASON=action.reason.text,
        FAILOVERD_REASON_CODE=action.reason.code,
    )
    args = [*argv, action.role.value, str(action.epoch), action.reason.code]
    try:
        done = run_bounded(args, timeout, env)
    except OSError as e:
        return ActionResult(action.id, ok=False, detail=f"hook {argv[0]} could not run: {e}")
    if done.returncode is None:
        return ActionResult(
            action.id, ok=False, detail=f"hook {argv[0]} timed out after {timeout:g} s"
        )
    if done.returncode != 0:
        tail = done.output.strip()[-200:]
        return ActionResult(
            action.id, ok=False, detail=f"hook {argv[0]} exited {done.returncode}: {tail}"
        )
    return ActionResult(action.id, ok=True, detail=f"hook {argv[0]} ran")

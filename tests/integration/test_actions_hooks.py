"""Notify hooks run for real: the event arrives as arguments and as FAILOVERD_* variables."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from failoverd.actions.hooks import run_hook
from failoverd.core import Reason, Role, RunHook

pytestmark = pytest.mark.integration

HOOK = """#!/bin/sh
python3 - "$@" <<'PY' > "$OUT"
import json, os, sys
print(json.dumps({"args": sys.argv[1:],
                  "env": {k: v for k, v in os.environ.items() if k.startswith("FAILOVERD_")}}))
PY
exit "${EXIT:-0}"
"""


def hook(tmp_path: Path) -> Path:
    path = tmp_path / "hook.sh"
    path.write_text(HOOK)
    path.chmod(0o755)
    return path


ACTION = RunHook(
    id=3,
    reason=Reason("active", "active (epoch 4) after failover in 2.1 s"),
    role=Role.ACTIVE,
    epoch=4,
)


def test_hook_gets_the_event_as_arguments_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.json"
    monkeypatch.setenv("OUT", str(out))
    result = run_hook(ACTION, [str(hook(tmp_path))], node="fln2", cluster="lab", timeout=10)
    assert result.ok and result.action_id == 3, result
    seen = json.loads(out.read_text())
    assert seen["args"] == ["active", "4", "active"]
    assert seen["env"] == {
        "FAILOVERD_NODE": "fln2",
        "FAILOVERD_CLUSTER": "lab",
        "FAILOVERD_ROLE": "active",
        "FAILOVERD_EPOCH": "4",
        "FAILOVERD_REASON": "active (epoch 4) after failover in 2.1 s",
        "FAILOVERD_REASON_CODE": "active",
    }


def test_failing_missing_and_hanging_hooks_are_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUT", str(tmp_path / "out.json"))
    monkeypatch.setenv("EXIT", "3")
    failed = run_hook(ACTION, [str(hook(tmp_path))], "fln2", "lab", timeout=10)
    assert not failed.ok and "exited 3" in failed.detail
    missing = run_hook(ACTION, [str(tmp_path / "nope")], "fln2", "lab", timeout=10)
    assert not missing.ok and "could not run" in missing.detail
    started = time.monotonic()
    # A hook whose background child keeps the output pipe open must not hang the worker.
    hung = run_hook(ACTION, ["sh", "-c", "sleep 30 & sleep 30"], "fln2", "lab", timeout=0.5)
    assert not hung.ok and "timed out after 0.5 s" in hung.detail
    assert time.monotonic() - started < 5
    assert run_hook(ACTION, [], "fln2", "lab", timeout=1).ok  # none configured

"""What ``ExecStopPost=`` does after failoverd.service stops: fence this node, or leave it be.

The watchdog (``WatchdogSec=`` below ``self_fence_after``) closes the one hole fencing over SSH
leaves: a daemon that hangs while active, on a node its peer cannot reach. systemd kills it, and
this runs ``failoverd fence-self`` (remove the VIP, stop PostgreSQL) before the peer, which waits
for the lease to expire, can promote. The same goes for any other abnormal end of an active
daemon: a crash, an unhandled exception, a stop that timed out.

It must never fence otherwise: a clean stop already stepped down (or, paused, deliberately left
the VIP and the database where they were), and a passive node has nothing to give up. The daemon
records its current role in a role file (``$RUNTIME_DIRECTORY/role``: systemd removes that
directory after ``ExecStopPost=``, so every life of the daemon starts without one) the moment
the core decides it, before any of that step's actions run. The rule, ``decide``:

    fence  <=>  systemd says the service ended abnormally ($SERVICE_RESULT is set and is not
                "success")
           and  the last role recorded is one that may hold the VIP or a writable primary:
                active, promoting, demoting, fenced (a self-fence that may not have finished;
                fence-self is idempotent), or paused-serving (paused while serving: pause does
                not suspend self-fencing)

Paused (not serving), passive, starting, no role file, an unreadable one, or no
``$SERVICE_RESULT`` at all (not run by systemd): no fence. A clean stop while paused and serving
leaves the node serving, and ``last_leader`` records it, so that the peer fences it first.

A fence that fails is run again every FENCE_RETRY_EVERY seconds for FENCE_RETRY_WITHIN. If it
still fails, the node may serve on without a daemon, and the peer may take over once the session
expires, on a fence of its own that may not reach it. So it leaves ``unfenced`` beside the role
file (kept across a restart, as ``ExecStartPre=`` removes only the role file): the next life of
the daemon then fences at once if it finds itself serving, without the start-up grace it
otherwise has to make its first ZooKeeper round-trip.

Run as ``python -m failoverd.stoppost`` (the script ``systemd/failoverd-stop-post`` does that);
it finds ``failoverd`` on ``PATH``, and fence-self finds its configuration in
``$FAILOVERD_CONFIG`` as the daemon did.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from failoverd.log import SYSLOG_PRIORITY, stdout_is_journal

ROLE_FILE_ENV = "FAILOVERD_ROLE_FILE"
ROLE_FILE_NAME = "role"
FENCE_ROLES = frozenset({"active", "promoting", "demoting", "fenced", "paused-serving"})
"""Roles in which the node may hold the VIP or run a writable primary (or be part-way through
giving them up): an abnormal end in one of them leaves the node to be fenced. ``paused-serving``
is a paused node that serves: pause does not suspend self-fencing, and once its daemon is gone
nothing else would stop it serving beside a peer that takes over after the pause."""
FENCE_TIMEOUT = 50.0
"""Seconds all attempts of fence-self may take (it bounds its own steps well within this):
below the unit's TimeoutStopSec=60s, which bounds ExecStopPost too."""
FENCE_RETRY_WITHIN = 3.0
"""Seconds in which a failed fence-self is started again. ``$FAILOVERD_FENCE_RETRY_WITHIN``
overrides it."""
RETRY_WITHIN_ENV = "FAILOVERD_FENCE_RETRY_WITHIN"
FENCE_RETRY_EVERY = 0.5  # seconds between two attempts
UNFENCED_FILE_ENV = "FAILOVERD_UNFENCED_FILE"
UNFENCED_FILE_NAME = "unfenced"


def role_file_path(environ: Mapping[str, str]) -> Path | None:
    """``$FAILOVERD_ROLE_FILE``, else ``role`` in the first of ``$RUNTIME_DIRECTORY``
    (systemd's ``RuntimeDirectory=``), else None: no role file outside systemd."""
    return _runtime_file(environ, ROLE_FILE_ENV, ROLE_FILE_NAME)


def unfenced_marker_path(environ: Mapping[str, str]) -> Path | None:
    """``$FAILOVERD_UNFENCED_FILE``, else ``unfenced`` in the runtime directory (kept across a
    restart); None outside systemd."""
    return _runtime_file(environ, UNFENCED_FILE_ENV, UNFENCED_FILE_NAME)


def _runtime_file(environ: Mapping[str, str], explicit_env: str, name: str) -> Path | None:
    explicit = environ.get(explicit_env)
    if explicit:
        return Path(explicit)
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime) / name if runtime else None


def write_role(path: Path, role: str) -> None:
    """Replace the role file atomically (readers see the old role or the new one)."""
    write_line(path, role)


def write_line(path: Path, line: str) -> None:
    """Replace ``path`` with one line, atomically (readers see the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(f"{line}\n")
        f.flush()
    os.replace(tmp, path)


def read_role(path: Path | None) -> str | None:
    """The role recorded, None when there is no readable role file."""
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    words = text.split()
    return words[0] if words else None


@dataclass(frozen=True)
class Decision:
    fence: bool
    why: str


def decide(environ: Mapping[str, str], role: str | None) -> Decision:
    """Whether to fence, from what systemd says about the stop and the last role recorded."""
    result = environ.get("SERVICE_RESULT")
    how = (
        f"SERVICE_RESULT={result or '-'} EXIT_CODE={environ.get('EXIT_CODE') or '-'} "
        f"EXIT_STATUS={environ.get('EXIT_STATUS') or '-'}"
    )
    if not result:
        return Decision(False, f"not fencing: not run by systemd after a stop ({how})")
    if result == "success":
        return Decision(False, f"not fencing: clean stop ({how})")
    if role is None:
        return Decision(False, f"not fencing: no role recorded by the daemon ({how})")
    if role not in FENCE_ROLES:
        return Decision(False, f"not fencing: last role was {role} ({how})")
    return Decision(True, f"fencing: abnormal end while {role} ({how})")


def main(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    path = role_file_path(env)
    decision = decide(env, read_role(path))
    # A fence is what an operator must see (journalctl -p warning); a failed one, an error.
    say = _journal_printer(env)
    say(f"failoverd-stop-post: {decision.why}", "warning" if decision.fence else "info")
    if not decision.fence:
        return 0
    failoverd = shutil.which("failoverd", path=env.get("PATH"))
    status = 1
    if failoverd is None:
        say("failoverd-stop-post: error: failoverd not found on PATH", "error")
    else:
        command = failoverd

        def fence_self(timeout: float) -> tuple[int, str]:
            try:
                done = subprocess.run(
                    [command, "fence-self"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    env=dict(env),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return 1, f"failoverd-stop-post: fence-self took over {timeout:.1f} s"
            return done.returncode, done.stdout + done.stderr

        status = fence_until_done(fence_self, say, retry_within(env, say))
    if status != 0:
        mark_unfenced(unfenced_marker_path(env), decision.why, say)
    return status


def retry_within(env: Mapping[str, str], say: Callable[[str, str], None]) -> float:
    try:
        return float(env.get(RETRY_WITHIN_ENV, FENCE_RETRY_WITHIN))
    except ValueError:
        say(
            f"failoverd-stop-post: {RETRY_WITHIN_ENV} is not a number: using the default", "warning"
        )
        return FENCE_RETRY_WITHIN


def fence_until_done(
    fence_self: Callable[[float], tuple[int, str]],
    say: Callable[[str, str], None],
    within: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run ``fence_self(timeout)`` until it succeeds, starting attempts for ``within`` seconds
    (each bounded so that all end within FENCE_TIMEOUT); the last exit status. A fence that fails
    once may succeed a moment later (a netlink call refused, a stop out of time). Not longer:
    systemd starts the daemon again only after this returns, and a new daemon told its previous
    life ended unfenced fences at once."""
    started = clock()
    status, attempts = 1, 0
    for attempts in range(1, int(within / FENCE_RETRY_EVERY) + 2):
        left = started + FENCE_TIMEOUT - clock()
        if left <= 0:
            break
        status, output = fence_self(left)
        for line in output.splitlines():
            say(line, "warning" if status == 0 else "error")
        if status == 0:
            return 0
        say(
            f"failoverd-stop-post: error: fence-self failed (exit {status}, attempt {attempts})",
            "error",
        )
        if clock() - started + FENCE_RETRY_EVERY > within:
            break
        sleep(FENCE_RETRY_EVERY)
    say(
        f"failoverd-stop-post: error: fence-self failed {attempts} time(s): this node may still "
        "hold the VIP or a primary; the daemon's next life fences it at once",
        "error",
    )
    return status


def mark_unfenced(path: Path | None, why: str, say: Callable[[str, str], None]) -> None:
    """Tell the daemon's next life that this one ended unfenced (it reads and removes it)."""
    if path is None:
        return
    try:
        write_line(path, why)
    except OSError as e:
        say(f"failoverd-stop-post: error: cannot leave {path} for the next start: {e}", "error")


def _journal_printer(env: Mapping[str, str]) -> Callable[[str, str], None]:
    """Print to stderr; with the journal's ``<N>`` priority prefix when stderr is its stream
    (failoverd/log.py), so that journald files each line at its level."""
    journal = stdout_is_journal(env, sys.stderr)

    def say(line: str, level: str) -> None:
        prefix = f"<{SYSLOG_PRIORITY[level]}>" if journal else ""
        print(f"{prefix}{line}", file=sys.stderr, flush=True)

    return say


if __name__ == "__main__":
    sys.exit(main())

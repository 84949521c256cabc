"""Prove the SSH fence works, without fencing: `failoverctl check-fencing` and the daemon's
periodic check.

Why a dry run and not a probe of port 22: what fails at 3 a.m. is the whole chain (the key, the
peer's host key in known_hosts, the user, the forced command in the peer's authorized_keys, and
whether `failoverd fence-self` could do its work there). So the check connects exactly as the fence
does (``failoverd.actions.fence.connect``) and sends ``FENCE_DRY_RUN_COMMAND``. The peer's
authorized_keys forces `failoverd fence-self` whatever is asked; fence-self reads what was asked
from ``$SSH_ORIGINAL_COMMAND`` and, for exactly that string, checks that it could fence and
changes nothing. Anything else, a missing ``$SSH_ORIGINAL_COMMAND`` included, fences as ever, and
the configuration refuses the dry-run string as ``fencing.command``: a dry-run request can never
weaken a real fence.

It cannot interfere with a real fence of the same peer either: on the peer it only reads, and here
it has an SSH connection of its own on a thread of its own, sharing nothing with the action that
fences. The daemon still does not start one while it is taking over or stepping down (promoting,
demoting, fenced), so that the peer's log tells a fence from a check.

One hazard remains: a peer whose failoverd predates the dry run (before ``DRY_RUN_SINCE``) fences
itself for real when asked for one. The daemon therefore checks only a peer whose member record
shows a version that knows the dry run (a rolling upgrade from an older one is quiet until both
are upgraded); `failoverctl check-fencing`, run by a person, recognises that answer and says so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from failoverd.actions.fence import (
    AUTHENTICATION,
    HOST_KEY_CHANGED,
    HOST_KEY_UNKNOWN,
    IDENTITY,
    KNOWN_HOSTS,
    SshConnectError,
    connect,
    run_command,
)
from failoverd.clock import boottime, walltime
from failoverd.config import FENCE_DRY_RUN_COMMAND, FencingConfig, Member
from failoverd.core import MemberStatus, Role

__all__ = [
    "DRY_RUN_PREFIX",
    "DRY_RUN_SINCE",
    "FENCING_CHECK_PAUSED",
    "FencingCheck",
    "FencingChecker",
    "check_fencing",
    "dry_run_line",
    "knows_dry_run",
    "why_not_check",
]

DRY_RUN_PREFIX: Final = "fence-self dry run on "
DRY_RUN_SINCE: Final = (0, 2, 0)  # the first failoverd whose fence-self knows the dry run
RETRY_SKIPPED_AFTER: Final = 5.0  # seconds: a check skipped during a takeover is tried again soon
FENCING_CHECK_PAUSED: Final = frozenset({Role.PROMOTING, Role.DEMOTING, Role.FENCED})
"""Roles in which the daemon starts no check: taking over, stepping down, fenced itself."""

# FencingCheck.problem values, beside the connect kinds of failoverd.actions.fence
OK: Final = "ok"
NOT_FAILOVERD: Final = "not_failoverd"
FENCED_FOR_REAL: Final = "fenced_for_real"
DRY_RUN_FAILED: Final = "dry_run_failed"
NO_ANSWER_IN_TIME: Final = "command_failed"

_CONNECT_WHAT: Final = {
    IDENTITY: "cannot use the identity file",
    KNOWN_HOSTS: "cannot read known_hosts",
    HOST_KEY_UNKNOWN: "host key unknown (not in known_hosts)",
    HOST_KEY_CHANGED: "host key changed (not the one in known_hosts)",
    AUTHENTICATION: "authentication refused",
}


def why_not_check(role: Role, peer_name: str, peer: object) -> str | None:
    """Why the daemon must not run the dry run now, or None when it may. Not while taking over
    or stepping down (roles in FENCING_CHECK_PAUSED: "" is returned, nothing worth saying), and
    only against a peer whose member record shows a failoverd that answers the dry run without
    fencing: a check must never fence the peer. ``peer`` is the peer's member record, if any."""
    if role in FENCING_CHECK_PAUSED:
        return ""
    if not isinstance(peer, MemberStatus):
        return f"{peer_name} has no member record: its version is unknown"
    if not knows_dry_run(peer.version):
        return (
            f"{peer_name} runs failoverd {peer.version or '(no version)'}, which fences for "
            "real when asked for a dry run: upgrade it"
        )
    return None


def knows_dry_run(version: str) -> bool:
    """Does a failoverd of ``version`` (a member record's) answer the dry run without fencing?
    An unreadable version does not: asking it could fence the peer for real."""
    try:
        parts = tuple(int(p) for p in version.split(".")[:3])
    except ValueError:
        return False
    return len(parts) == 3 and parts >= DRY_RUN_SINCE


@dataclass(frozen=True)
class FencingCheck:
    """One dry run of the fence of ``node``: ok or not, a problem code, one line for people."""

    node: str
    ok: bool
    problem: str  # OK, a connect kind of failoverd.actions.fence, or one of the codes above
    detail: str
    seconds: float


def dry_run_line(node: str, problems: list[str]) -> str:
    """What the peer's fence-self prints for a dry run: the check recognises it by its start."""
    if problems:
        return f"{DRY_RUN_PREFIX}{node}: FAILED: could not fence: {'; '.join(problems)}"
    return f"{DRY_RUN_PREFIX}{node}: ok: could fence; changed nothing"


def check_fencing(
    peer: Member,
    fencing: FencingConfig,
    *,
    clock: Callable[[], float] = boottime,
) -> FencingCheck:
    """Connect to ``peer`` as the fence does and ask it for a dry run of fence-self."""
    started = clock()
    where = f"{fencing.ssh_user}@{peer.address}:{peer.ssh_port}"

    def result(ok: bool, problem: str, why: str) -> FencingCheck:
        took = clock() - started
        return FencingCheck(peer.name, ok, problem, f"{where}: {why} ({took:.3f} s)", took)

    try:
        client = connect(peer, fencing)
    except SshConnectError as e:
        what = _CONNECT_WHAT.get(e.kind, "cannot connect")
        return result(False, e.kind, f"{what}: {e.why}")
    try:
        ran = run_command(client, FENCE_DRY_RUN_COMMAND, fencing.command_timeout, clock)
    finally:
        client.close()
    text = ran.output.decode(errors="replace").strip()
    lines = text.splitlines()
    said = next((ln for ln in lines if ln.startswith(DRY_RUN_PREFIX)), None)
    if ran.error is not None or ran.status is None:
        why = ran.error or f"no answer within {fencing.command_timeout:g} s"
        return result(False, NO_ANSWER_IN_TIME, f"the dry run did not complete: {why}")
    if said is None:
        if any(ln.startswith("fence-self on ") for ln in lines):
            return result(
                False,
                FENCED_FOR_REAL,
                "the peer's failoverd does not know the dry run and FENCED ITSELF: "
                f"{lines[-1]} (upgrade it, then bring it back: failoverctl rejoin {peer.name})",
            )
        return result(
            False,
            NOT_FAILOVERD,
            "the peer did not answer with failoverd's dry run: its authorized_keys must force "
            '`failoverd fence-self` for this key (command="/opt/failoverd/bin/failoverd '
            f'fence-self",restrict ...); exit {ran.status}'
            + (f", output: {text[-300:]}" if text else ", no output"),
        )
    if ran.status != 0:
        return result(False, DRY_RUN_FAILED, f"dry run failed on the peer: {said}")
    return result(True, OK, f"ok: {said}")


class FencingChecker:
    """The daemon's periodic check on a thread of its own: it never delays the main loop or
    its watchdog pings. ``may_check`` (the daemon's role) says whether now is a time to check;
    ``on_result`` gets every result with the wall time it completed at."""

    def __init__(
        self,
        peer: Member,
        fencing: FencingConfig,
        log: Any,
        on_result: Callable[[FencingCheck, float], None],
        may_check: Callable[[], bool],
        *,
        check: Callable[[Member, FencingConfig], FencingCheck] = check_fencing,
        wall: Callable[[], float] = walltime,
    ) -> None:
        self.peer = peer
        self.fencing = fencing
        self.log = log
        self.on_result = on_result
        self.may_check = may_check
        self.check = check
        self.wall = wall
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """The first check now, then every ``fencing.check_interval`` seconds."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._loop, name="failoverd-fencing-check", daemon=True
        )
        self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        """Stop; a check under way is not waited for beyond ``timeout`` (the thread is a
        daemon thread, and a check only reads)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> FencingCheck | None:
        """One check unless now is not the time (None): log it, hand it on."""
        if not self.may_check():
            return None
        try:
            found = self.check(self.peer, self.fencing)
        except Exception as e:  # a bug here must not end the checks, nor go unseen
            self.log.error("fencing_check_crashed", peer=self.peer.name, error=repr(e))
            found = FencingCheck(self.peer.name, False, "crashed", repr(e), 0.0)
        if found.ok:
            self.log.info("fencing_check_ok", peer=found.node, detail=found.detail)
        else:
            self.log.warning(
                "fencing_check_failed", peer=found.node, problem=found.problem, detail=found.detail
            )
        self.on_result(found, self.wall())
        return found

    def _loop(self) -> None:
        while not self._stop.is_set():
            done = self.run_once()
            wait = self.fencing.check_interval if done is not None else RETRY_SKIPPED_AFTER
            self._stop.wait(wait)

"""Fence the peer over SSH (paramiko): run ``failoverd fence-self`` there and say how it went.

Why three outcomes and not two: the core may promote after a fence that never reached the peer
(no TCP answer at all: the peer is dead or cut off, and has passed its own self-fence deadline),
but never after one that reached a live host and did not succeed (refused, wrong host key,
rejected key, the command failed or hung): that host may still be serving. So the line is drawn
at "did anything on the peer's side answer": a refused connection is the peer's kernel answering,
and counts as FAILED.

Host keys are checked against ``fencing.known_hosts`` only, and an unknown key is rejected
(never learned): a fence that runs on the wrong machine fences nothing.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import paramiko

from failoverd.clock import boottime
from failoverd.config import FencingConfig, Member
from failoverd.core import ActionResult, FenceOutcome
from failoverd.subproc import run_bounded

# connect() errors that mean nothing on the peer's side answered: no route (ours or a router's),
# a blackhole route here (EINVAL), the host does not answer ARP, or the SYN timed out.
NO_ANSWER_ERRNOS: Final = frozenset(
    {errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.EINVAL}
)
OUTPUT_KEEP: Final = 4096  # bytes of the command's output kept (its tail)
OUTPUT_SHOW: Final = 400  # characters of that tail put into the detail
MIN_HANDSHAKE: Final = 1.0  # seconds for the banner, key exchange and auth once TCP is up


def handshake_timeout(fencing: FencingConfig) -> float:
    """Banner and auth timeouts: a host that accepted TCP is alive, so waiting a little longer
    than the connect timeout costs nothing when it is healthy and only delays a FAILED."""
    return max(MIN_HANDSHAKE, 3 * fencing.connect_timeout)


class SshConnectError(Exception):
    """The fence's SSH connection could not be made: the outcome a fence would have, why, and
    which kind of failure it is (for `failoverctl check-fencing`'s report)."""

    def __init__(self, outcome: FenceOutcome, why: str, kind: str) -> None:
        super().__init__(why)
        self.outcome = outcome
        self.why = why
        self.kind = kind


# SshConnectError.kind values
IDENTITY = "identity_file"
KNOWN_HOSTS = "known_hosts"
NO_ANSWER = "no_answer"
CONNECTION = "cannot_connect"
HOST_KEY_UNKNOWN = "host_key_unknown"
HOST_KEY_CHANGED = "host_key_changed"
AUTHENTICATION = "authentication"


def connect(peer: Member, fencing: FencingConfig) -> paramiko.SSHClient:
    """The fence's SSH connection to ``peer``, made exactly as every fence makes it: as
    ``fencing.ssh_user`` with ``fencing.identity_file`` only, host key from
    ``fencing.known_hosts`` only (never learned), our own TCP connect bounded by
    ``connect_timeout``. SshConnectError says why not; the caller closes the client."""
    try:
        with open(fencing.identity_file, "rb"):
            pass
    except OSError as e:
        raise SshConnectError(
            FenceOutcome.FAILED, f"cannot read identity file: {e.strerror or e}", IDENTITY
        ) from e

    client = paramiko.SSHClient()
    try:
        try:
            client.load_host_keys(str(fencing.known_hosts))
        except OSError as e:
            raise SshConnectError(
                FenceOutcome.FAILED, f"cannot read known_hosts: {e.strerror or e}", KNOWN_HOSTS
            ) from e
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        handshake = handshake_timeout(fencing)
        try:
            # Our own TCP connect: paramiko would apply its ``timeout`` to the key exchange as
            # well, and a kex slower than the 0.3 s connect budget on a busy host would turn a
            # healthy peer into a FAILED fence.
            sock = socket.create_connection(
                (peer.address, peer.ssh_port), timeout=fencing.connect_timeout
            )
        except OSError as e:
            raise SshConnectError(*_connect_failure(e, fencing.connect_timeout), _kind(e)) from e
        try:
            client.connect(
                peer.address,
                port=peer.ssh_port,
                username=fencing.ssh_user,
                key_filename=str(fencing.identity_file),
                sock=sock,
                timeout=handshake,
                banner_timeout=handshake,
                auth_timeout=handshake,
                channel_timeout=handshake,
                allow_agent=False,
                look_for_keys=False,
            )
        except (paramiko.SSHException, EOFError) as e:
            sock.close()
            raise SshConnectError(*_connect_failure(e, fencing.connect_timeout), _kind(e)) from e
        except OSError as e:  # after the TCP connection was accepted: the host is alive
            sock.close()
            raise SshConnectError(
                FenceOutcome.FAILED,
                f"SSH failed after the TCP connection was accepted: {e!r}",
                CONNECTION,
            ) from e
    except SshConnectError:
        client.close()
        raise
    return client


def fence_peer(
    peer: Member,
    fencing: FencingConfig,
    command_timeout: float | None = None,
    *,
    clock: Callable[[], float] = boottime,
) -> tuple[FenceOutcome, str]:
    """SSH to ``peer`` as ``fencing.ssh_user`` with ``fencing.identity_file`` and run
    ``fencing.command`` (default timeout ``fencing.command_timeout``). FENCED when it exits 0;
    UNREACHABLE when nothing answered; FAILED otherwise. The detail says why and how long."""
    started = clock()
    timeout = fencing.command_timeout if command_timeout is None else command_timeout
    where = f"{fencing.ssh_user}@{peer.address}:{peer.ssh_port}"

    def done(outcome: FenceOutcome, why: str) -> tuple[FenceOutcome, str]:
        return outcome, f"{where}: {why} ({clock() - started:.3f} s)"

    try:
        client = connect(peer, fencing)
    except SshConnectError as e:
        return done(e.outcome, e.why)
    try:
        ran = run_command(client, fencing.command, timeout, clock)
        return done(*judge(fencing.command, ran, timeout))
    finally:
        client.close()


def fence_action_result(action_id: int, outcome: FenceOutcome, detail: str) -> ActionResult:
    """The core's view: ``ok`` unless the fence reached the peer and failed."""
    return ActionResult(
        action_id, ok=outcome is not FenceOutcome.FAILED, detail=detail, fence=outcome
    )


def _kind(e: BaseException) -> str:
    """Which SshConnectError kind an exception of the connect is."""
    if isinstance(e, paramiko.BadHostKeyException):
        return HOST_KEY_CHANGED
    if isinstance(e, paramiko.AuthenticationException):
        return AUTHENTICATION
    if isinstance(e, paramiko.SSHException) and "not found in known_hosts" in str(e):
        return HOST_KEY_UNKNOWN
    if _connect_failure(e, 0.0)[0] is FenceOutcome.UNREACHABLE:
        return NO_ANSWER
    return CONNECTION


def _connect_failure(e: BaseException, connect_timeout: float) -> tuple[FenceOutcome, str]:
    """Classify a failed connect: did anything on the peer's side answer?"""
    if isinstance(e, paramiko.BadHostKeyException):
        return FenceOutcome.FAILED, f"host key mismatch: {e} (not the host in known_hosts)"
    if isinstance(e, paramiko.AuthenticationException):
        return FenceOutcome.FAILED, f"authentication failed: {e}"
    if isinstance(e, paramiko.SSHException):
        # Includes the RejectPolicy's "not found in known_hosts" and banner/kex timeouts: the
        # host accepted the TCP connection, so it is alive.
        return FenceOutcome.FAILED, f"SSH failed after the TCP connection was accepted: {e}"
    if isinstance(e, EOFError):
        return FenceOutcome.FAILED, "the peer closed the connection during the handshake"
    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
        codes = {getattr(err, "errno", None) for err in e.errors.values()}
        if errno.ECONNREFUSED in codes:
            return FenceOutcome.FAILED, "connection refused: the host is up but sshd is not"
        return FenceOutcome.UNREACHABLE, f"no route to the host ({e}): dead or cut off"
    if isinstance(e, socket.gaierror):
        return FenceOutcome.FAILED, f"cannot resolve the peer's address: {e}"
    if isinstance(e, TimeoutError) or getattr(e, "errno", None) == errno.ETIMEDOUT:
        return (
            FenceOutcome.UNREACHABLE,
            f"no TCP answer within {connect_timeout:g} s: dead or cut off",
        )
    if isinstance(e, OSError) and e.errno in NO_ANSWER_ERRNOS:
        return FenceOutcome.UNREACHABLE, f"unreachable ({e.strerror or e}): dead or cut off"
    if isinstance(e, OSError) and e.errno == errno.ECONNREFUSED:
        return FenceOutcome.FAILED, "connection refused: the host is up but sshd is not"
    return FenceOutcome.FAILED, f"connection failed: {e!r}"


@dataclass(frozen=True)
class CommandRun:
    """How a command over SSH went: its exit status (None: it did not finish in time; -1: it
    ended without one), the tail of its output, or the error that cut it short."""

    status: int | None
    output: bytes
    error: str | None = None


def run_command(
    client: paramiko.SSHClient, command: str, timeout: float, clock: Callable[[], float]
) -> CommandRun:
    """Run the command with a deadline on everything (paramiko's recv_exit_status has none)."""
    deadline = clock() + timeout
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        return CommandRun(None, b"", "the SSH connection closed before the command could start")
    output = bytearray()
    try:
        channel = transport.open_session(timeout=max(0.1, deadline - clock()))
        channel.set_combine_stderr(True)
        channel.settimeout(0.1)
        channel.exec_command(command)
        for _ in range(int(timeout / 0.1) + 100):  # bounded: each recv waits at most 0.1 s
            if clock() >= deadline:
                break
            try:
                chunk = channel.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                break  # EOF: the command closed its output
            output += chunk
            del output[:-OUTPUT_KEEP]
        finished = channel.status_event.wait(max(0.0, deadline - clock()))
    except (paramiko.SSHException, OSError, EOFError) as e:
        return CommandRun(None, bytes(output), f"running {command!r} failed: {e!r}")
    if not finished:
        return CommandRun(None, bytes(output))
    return CommandRun(channel.recv_exit_status(), bytes(output))  # ready: status_event is set


def judge(command: str, ran: CommandRun, timeout: float) -> tuple[FenceOutcome, str]:
    """A fence command's outcome: FENCED only when it exited 0."""
    shown = _shown(ran.output)
    if ran.error is not None:
        return FenceOutcome.FAILED, f"{ran.error}{shown}"
    if ran.status is None:
        return FenceOutcome.FAILED, f"{command!r} did not finish within {timeout:g} s{shown}"
    if ran.status == 0:
        return FenceOutcome.FENCED, f"{command!r} succeeded{shown}"
    how = "ended without an exit status" if ran.status == -1 else f"exited {ran.status}"
    return FenceOutcome.FAILED, f"{command!r} {how}{shown}"


def _shown(output: bytes) -> str:
    text = output.decode(errors="replace").strip()
    if not text:
        return ""
    if len(text) > OUTPUT_SHOW:
        text = "..." + text[-OUTPUT_SHOW:]
    return f"; output: {text}"


def power_fence(peer: Member, fencing: FencingConfig) -> tuple[FenceOutcome, str]:
    """The second level: ``fencing.power_command`` with ``{node}`` and ``{address}`` replaced
    (also in ``FAILOVERD_FENCE_NODE``/``FAILOVERD_FENCE_ADDRESS``), bounded by
    ``fencing.power_timeout``, its process group killed at the deadline. Exit 0 means the peer
    is off: FENCED. Anything else is FAILED: a power switch that did not confirm proves nothing,
    and "unreachable" has no meaning for it."""
    argv = fencing.power_command
    if not argv:
        return FenceOutcome.FAILED, "no power_command configured"
    args = [a.replace("{node}", peer.name).replace("{address}", peer.address) for a in argv]
    env = dict(os.environ)
    env.update(FAILOVERD_FENCE_NODE=peer.name, FAILOVERD_FENCE_ADDRESS=peer.address)
    try:
        done = run_bounded(args, fencing.power_timeout, env)
    except OSError as e:
        return FenceOutcome.FAILED, f"power_command {args[0]} could not run: {e}"
    tail = done.output.strip()[-OUTPUT_SHOW:]
    took = f"{done.seconds:.3f} s"
    if done.returncode is None:
        return FenceOutcome.FAILED, f"power_command timed out after {fencing.power_timeout:g} s"
    if done.returncode != 0:
        return FenceOutcome.FAILED, f"power_command exited {done.returncode} ({took}): {tail}"
    return FenceOutcome.FENCED, f"power_command switched {peer.name} off ({took})" + (
        f": {tail}" if tail else ""
    )

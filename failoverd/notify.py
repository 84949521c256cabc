"""A small sd_notify(3) client: tell systemd we are ready, alive, what we are doing, that the
start takes longer, stopping.

The protocol is one datagram per message on the AF_UNIX socket named by ``NOTIFY_SOCKET`` (a
filesystem path, or ``@name`` for the abstract namespace), newline-separated ``KEY=VALUE``
fields: ``READY=1``, ``WATCHDOG=1``, ``STATUS=...``, ``EXTEND_TIMEOUT_USEC=...``,
``RELOADING=1`` (then ``READY=1`` once the reload is done), ``STOPPING=1``. The kernel
attaches the sender's credentials, so systemd (``NotifyAccess=main``) accepts only the main
process's.

``WATCHDOG_USEC`` is the watchdog interval systemd expects pings within (``WatchdogSec=``); when
``WATCHDOG_PID`` is set it names the process meant to ping, and any other process must ignore it.

``Notifier.from_environ`` takes these variables out of the environment (as sd_notify's
``unset_environment`` does), so that nothing the daemon starts (pg_ctl and the postmaster,
hooks, arping) inherits them and talks to systemd on its behalf. Sending never raises: a lost
datagram is a lost ping, never a reason to stop the daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import MutableMapping

NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
SEND_WAIT = 0.5
"""Seconds READY/STATUS/STOPPING wait for room at a receiver whose queue is full (systemd reads
its socket at once; this only bounds a stuck one). A watchdog ping never waits: the loop must
not stall on it, and a ping that finds no room is as good as late."""


class NotifyError(ValueError):
    """A notification variable that cannot be used; the message names it."""


def socket_address(value: str) -> str:
    """``NOTIFY_SOCKET`` as an address for ``sendto``: a path, or ``@name`` -> ``\\0name``."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise NotifyError(
        f"NOTIFY_SOCKET={value!r}: expected an absolute path or @abstract-name "
        "(other transports such as vsock: are not supported)"
    )


def parse_watchdog_usec(usec: str | None, pid: str | None, own_pid: int) -> int | None:
    """The watchdog interval in microseconds, or None when there is no watchdog for us."""
    if usec is None or usec == "":
        return None
    if pid:
        try:
            meant_for = int(pid)
        except ValueError:
            raise NotifyError(f"WATCHDOG_PID={pid!r} is not a process id") from None
        if meant_for != own_pid:
            return None  # a watchdog for another process (our parent's)
    try:
        value = int(usec)
    except ValueError:
        raise NotifyError(f"WATCHDOG_USEC={usec!r} is not a whole number of microseconds") from None
    if value <= 0:
        raise NotifyError(f"WATCHDOG_USEC={usec!r} must be positive")
    return value


class Notifier:
    """Sends notifications to ``address`` (None: not run by systemd, every call is a no-op)."""

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        *,
        problem: str | None = None,
    ) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.problem = problem  # why the environment could not be used, for the daemon to report
        self.last_error: str | None = None
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @classmethod
    def from_environ(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        """From ``NOTIFY_SOCKET``/``WATCHDOG_USEC``/``WATCHDOG_PID``; removed from ``environ``
        (default ``os.environ``) when ``unset``. Never raises: a bad value disables what it
        configures and is kept in ``problem``."""
        env = os.environ if environ is None else environ
        raw = {name: env.get(name) for name in NOTIFY_VARS}
        if unset:
            for name in NOTIFY_VARS:
                env.pop(name, None)
        problems: list[str] = []
        address: str | None = None
        if raw["NOTIFY_SOCKET"]:
            try:
                address = socket_address(raw["NOTIFY_SOCKET"])
            except NotifyError as e:
                problems.append(str(e))
        watchdog: int | None = None
        try:
            watchdog = parse_watchdog_usec(raw["WATCHDOG_USEC"], raw["WATCHDOG_PID"], os.getpid())
        except NotifyError as e:
            problems.append(str(e))
        return cls(address, watchdog, problem="; ".join(problems) or None)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_enabled(self) -> bool:
        return self.enabled and self.watchdog_usec is not None

    def send(self, *fields: str, wait: float = SEND_WAIT) -> bool:
        """One datagram with ``fields`` (``"READY=1"``, ``"STATUS=..."``); False if it failed
        (``last_error`` says why) or there is nowhere to send it. The socket never blocks: a
        full queue at the receiver is retried for up to ``wait`` seconds, then given up."""
        if self._sock is None or self.address is None or not fields:
            return False
        data = "\n".join(fields).encode("utf-8", errors="replace")
        deadline = time.monotonic() + wait
        while True:
            try:
                self._sock.sendto(data, self.address)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.last_error = "the notification socket's queue is full"
                    return False
                time.sleep(0.01)
                continue
            except OSError as e:
                self.last_error = f"{type(e).__name__}: {e}"
                return False
            self.last_error = None
            return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *_status_field(status))

    def watchdog(self) -> bool:
        """A watchdog ping, only when systemd asked for them (``WATCHDOG_USEC``)."""
        return self.send("WATCHDOG=1", wait=0.0) if self.watchdog_usec is not None else False

    def status(self, text: str) -> bool:
        return self.send(*_status_field(text))

    def extend_timeout(self, seconds: float, status: str | None = None) -> bool:
        """``EXTEND_TIMEOUT_USEC``: the current phase (here, the start) may take ``seconds``
        more from now, beyond ``TimeoutStartSec=``; to be sent again before that runs out."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}", *_status_field(status))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1``: a reload began (``systemctl reload``, SIGHUP); ``ready`` ends it.
        MONOTONIC_USEC= dates it, as systemd >= 253 wants (older ones ignore the field)."""
        usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status_field(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *_status_field(status))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_field(text: str | None) -> list[str]:
    """``STATUS=`` is one line: a newline would start another field."""
    if text is None:
        return []
    return ["STATUS=" + " ".join(text.split("\n"))]

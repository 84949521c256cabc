"""ZooKeeper's four-letter words, asked of each server over a connection of their own (never
through the session): ``cons`` for the negotiated timeout, ``conf`` for the timing settings the
safety of self-fencing depends on (``failoverd.quorum``). A server answers only the words its
``4lw.commands.whitelist`` allows; anything else is reported, never raised."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence

from failoverd.quorum import ConfAnswer, parse_conf

MAX_CHUNKS = 10_000  # the server closes the connection after answering; this bounds the loop


def split_host_port(entry: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as a pair; ValueError when it is not one."""
    host, sep, port = entry.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {entry!r}")
    return host.strip("[]"), int(port)


def four_letter(host: str, port: int, word: str, timeout: float) -> str:
    """Send ``word`` and return the whole answer; OSError (a TimeoutError too) when the server
    cannot be reached or does not finish answering within ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(word.encode("ascii"))
        for _ in range(MAX_CHUNKS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{word!r} to {host}:{port}: no end of answer in {timeout} s")
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def read_conf(hosts: Sequence[str], timeout: float) -> list[ConfAnswer]:
    """Every server's ``conf`` (one connection each, ``timeout`` seconds at most per server)."""
    answers = []
    for entry in hosts:
        try:
            host, port = split_host_port(entry)
            text = four_letter(host, port, "conf", timeout)
            answers.append(ConfAnswer(entry, parse_conf(text)))
        except (OSError, ValueError) as exc:
            problem = str(exc) or type(exc).__name__
            answers.append(ConfAnswer(entry, None, problem))
    return answers

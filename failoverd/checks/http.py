"""The app over HTTP: the expected status within ``slow_after``, with a hard ``timeout``."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from failoverd.checks.base import Probe, judge_latency
from failoverd.config import CheckConfig


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    latency: float


def http_get(url: str, timeout: float) -> HttpAnswer:
    """GET ``url``. Each socket operation is bounded by ``timeout``; the runner bounds the whole."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", "User-Agent": "failoverd"})
        response = conn.getresponse()
        body = response.read(65536)
        headers = {k.lower(): v for k, v in response.getheaders()}
        return HttpAnswer(response.status, headers, body, time.monotonic() - started)
    finally:
        conn.close()


def describe_error(e: BaseException, timeout: float) -> str:
    if isinstance(e, TimeoutError | socket.timeout):
        return f"no answer within timeout {timeout:g} s"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    return f"{type(e).__name__}: {e}"


class HttpCheck:
    def __init__(self, cfg: CheckConfig) -> None:
        if cfg.url is None:
            raise ValueError(f"check {cfg.name}: no url")
        self.cfg = cfg
        self.url = cfg.url

    def probe(self) -> Probe:
        started = time.monotonic()
        try:
            answer = http_get(self.url, self.cfg.timeout)
        except (OSError, http.client.HTTPException) as e:
            return Probe(False, time.monotonic() - started, describe_error(e, self.cfg.timeout))
        ok = answer.status == self.cfg.expect_status
        why = f"HTTP {answer.status}, expected {self.cfg.expect_status}"
        return judge_latency(ok, answer.latency, self.cfg.slow_after, why)

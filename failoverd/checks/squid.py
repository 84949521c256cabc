"""Squid: a request through it to the app, the same path a request to the service IP takes,
plus Squid's own state from its cache manager, so "Squid down" and "app behind Squid down" are
told apart."""

from __future__ import annotations

import http.client
import re
import time

from failoverd.checks.base import Probe, judge_latency
from failoverd.checks.http import describe_error, http_get
from failoverd.config import CheckConfig

MGR_FIELDS = {
    "uptime_s": re.compile(r"UP Time:\s*([\d.]+) seconds"),
    "clients": re.compile(r"Number of clients accessing cache:\s*(\d+)"),
    "http_requests": re.compile(r"Number of HTTP requests received:\s*(\d+)"),
    "file_descriptors_in_use": re.compile(r"Number of file desc currently in use:\s*(\d+)"),
}


def parse_mgr_info(text: str) -> dict[str, float]:
    """The few mgr:info numbers worth publishing."""
    facts: dict[str, float] = {}
    for key, pattern in MGR_FIELDS.items():
        m = pattern.search(text)
        if m:
            facts[key] = float(m.group(1))
    return facts


class SquidCheck:
    def __init__(self, cfg: CheckConfig) -> None:
        if cfg.url is None:
            raise ValueError(f"check {cfg.name}: no url")
        self.cfg = cfg
        self.url = cfg.url

    def _squid_state(self) -> tuple[str, dict[str, object]]:
        """("up" | "down" | "not configured", facts) from the cache manager."""
        if self.cfg.cache_manager_url is None:
            return "not configured", {}
        try:
            answer = http_get(self.cfg.cache_manager_url, self.cfg.timeout)
        except (OSError, http.client.HTTPException) as e:
            return "down", {"squid_error": describe_error(e, self.cfg.timeout)}
        if answer.status != 200:
            return "up", {"squid_error": f"cache manager answered HTTP {answer.status}"}
        return "up", dict(parse_mgr_info(answer.body.decode(errors="replace")))

    def probe(self) -> Probe:
        started = time.monotonic()
        try:
            answer = http_get(self.url, self.cfg.timeout)
        except (OSError, http.client.HTTPException) as e:
            latency = time.monotonic() - started
            state, facts = self._squid_state()
            what = describe_error(e, self.cfg.timeout)
            if state == "up" and isinstance(e, TimeoutError):
                # Squid took the request and is alive: it is still waiting for the app.
                facts["squid"] = "up"
                why = f"app behind Squid slow or hung: {what} (Squid itself answers)"
                return Probe(False, latency, why, facts)
            facts["squid"] = "down"
            why = f"Squid down: {what}"
            if state == "up":
                why = f"Squid's cache manager answers but the proxy port does not: {why}"
            return Probe(False, latency, why, facts)
        if answer.status == self.cfg.expect_status:
            return judge_latency(True, answer.latency, self.cfg.slow_after, "", {"squid": "up"})
        # Squid answered, but not what the app should say: name who failed.
        _, facts = self._squid_state()
        facts["squid"] = "up"
        squid_error = answer.headers.get("x-squid-error")
        if squid_error:
            why = f"app behind Squid down: Squid answered HTTP {answer.status} ({squid_error})"
        else:
            expected = self.cfg.expect_status
            why = f"app answered HTTP {answer.status} through Squid, expected {expected}"
        return Probe(False, answer.latency, why, facts)

"""The lab's timing profiles: the values its failoverd.toml template and ZooKeeper take.

``default`` is the lab as every test and number so far knows it (session timeout 2 s, checks
every 0.5 s); ``fast`` is issue 12's "fast profile": a 0.5 s ZooKeeper session and everything
scaled to match, to see how fast a crash can be taken over on this machine and what it costs in
false failovers under load. Each profile must pass check-config's own rules (self_fence_after
below the session, loop_interval + roundtrip_timeout below self_fence_after, pledge_ttl at
least the session): tests/unit/test_lab_profiles.py loads the template with each.
"""

from __future__ import annotations

from typing import Final

PROFILE_FILE: Final = "profile"  # in the lab directory: the profile the lab was brought up in

PROFILES: Final[dict[str, dict[str, str]]] = {
    "default": {
        "SESSION_TIMEOUT": "2.0",
        "SELF_FENCE_AFTER": "1.0",
        "LOOP_INTERVAL": "0.1",
        "ROUNDTRIP_TIMEOUT": "0.25",
        "CHECK_INTERVAL": "0.5",
        "CHECK_TIMEOUT": "1.0",
        "CHECK_SLOW_AFTER": "0.5",
        "PLEDGE_TTL": "2.0",
        "PLEDGE_MARGIN": "0.2",
        "FENCE_CONNECT_TIMEOUT": "0.3",
    },
    "fast": {
        "SESSION_TIMEOUT": "0.5",
        "SELF_FENCE_AFTER": "0.25",
        "LOOP_INTERVAL": "0.05",
        "ROUNDTRIP_TIMEOUT": "0.06",
        "CHECK_INTERVAL": "0.1",
        "CHECK_TIMEOUT": "0.25",
        "CHECK_SLOW_AFTER": "0.2",
        "PLEDGE_TTL": "0.5",
        "PLEDGE_MARGIN": "0.05",
        # The lab's network is one bridge: a live peer answers a connect in well under 1 ms.
        "FENCE_CONNECT_TIMEOUT": "0.1",
    },
}

# ZooKeeper's minSessionTimeout (ms) per profile: it must grant the session asked for.
ZK_MIN_SESSION_MS: Final[dict[str, int]] = {"default": 1000, "fast": 400}


def parse_profile(name: str) -> str:
    """A known profile name, or ValueError naming the known ones."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (one of {', '.join(PROFILES)})")
    return name

"""What `systemctl reload` (SIGHUP) may change in a running daemon: pure, no I/O.

A reload re-reads the configuration file and compares it with the one the daemon runs on. Each
changed key is either *applied live* or *refused with a reason*; the daemon applies all or
nothing: one refused key (or a file that does not load) and nothing changes, so a half-applied
configuration never exists. The reasons are written for the operator who typed the reload.

Every key of ``Config`` is classified in ``RULES`` (a unit test fails on a new field that is
not). A key missing from the table is refused at run time, the safe default.

Why these are live: they are read afresh by the core (``Settings``) or by an adapter at each use
(the fence, the hooks, the action runner), or they only pace or judge the node's own checks,
whose runner is rebuilt with its rise/fall state carried over. Why the rest is refused: it names
the node or the cluster (a changed identity is a different daemon), was bound or negotiated at
start-up (sockets, the ZooKeeper session, the database adapters, the failsafe's secret), or is
a timing that the watchdog, the session and the peer's judgement of this node were checked
against when the daemon started.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from failoverd.config import Config

__all__ = ["RESTART_HINT", "RULES", "Refusal", "ReloadPlan", "config_keys", "plan_reload"]

RESTART_HINT: Final = (
    "a refused key takes a restart (`systemctl restart failoverd`; on the active, "
    "`failoverctl pause` first, or the restart is a switchover)"
)

LIVE: Final = None
"""The rule of a key that a reload applies."""

RULES: Final[dict[str, str | None]] = {
    # Identity and coordination: a different value is a different daemon.
    "node": "the node's name is its identity in ZooKeeper, the peer's config and the metrics",
    # Whether the name was written or taken from the host name: the same node either way (a
    # different name is refused as "node").
    "node_from_host": LIVE,
    "cluster.name": "the cluster's name labels its metrics and history; the session is bound",
    "cluster.zookeeper_hosts": "the ZooKeeper session was opened on these hosts at start-up",
    "cluster.chroot": "the lease, epoch and member records live under the chroot in use",
    "cluster.credentials_file": "the session authenticated with these credentials at start-up",
    "cluster.credentials": "the session authenticated with these credentials at start-up",
    "members": "both daemons must agree on the members; the peer's probes and fence are bound",
    # The service IP: moving it while it may be configured here would leave a stray address.
    "vip": "the VIP may be configured on this node: changing it live could leave a stray address",
    "vip.address": "the VIP may be configured on this node: changing it live could leave it behind",
    "vip.interface": "the VIP may be configured on this interface: it would be left behind",
    "vip.arp_count": LIVE,  # read at each AddVip
    # Fencing: read from the configuration at each fence.
    "fencing.ssh_user": LIVE,
    "fencing.identity_file": LIVE,
    "fencing.known_hosts": LIVE,
    "fencing.connect_timeout": LIVE,
    "fencing.command_timeout": LIVE,
    "fencing.command": LIVE,
    "fencing.power_command": LIVE,  # also Settings.power_fence
    "fencing.power_timeout": LIVE,
    "fencing.check_interval": LIVE,  # the periodic dry run is restarted with the new settings
    # Timings the safety argument rests on were checked against each other, the negotiated
    # session and systemd's WatchdogSec= at start-up.
    "timings.session_timeout": "the ZooKeeper session was negotiated with it at start-up",
    "timings.self_fence_after": "checked at start-up against the negotiated session timeout, "
    "the ensemble's timing and WatchdogSec=",
    "timings.loop_interval": "checked at start-up against WatchdogSec= and self_fence_after",
    "timings.roundtrip_timeout": "checked at start-up against WatchdogSec= and self_fence_after",
    "timings.publish_every": "the peer judges this node's liveness by it (a record older than "
    "3 x publish_every + 1 s no longer vouches for it): change it on both nodes by restarts",
    "timings.min_failover_interval": LIVE,  # anti-flap pacing in the core
    "timings.action_timeout": LIVE,  # each action's bound, read when it starts
    "timings.fence_retry_after": LIVE,
    "timings.start_timeout": LIVE,  # paces only the start-up's reports (next start)
    "timings.rejoin_timeout": LIVE,
    # Failover policy: the core's Settings, judged afresh every tick.
    "failover.max_lag_on_failover": LIVE,
    "failover.max_replication_silence": LIVE,
    "failover.nofailover": LIVE,
    # The database adapters (local server, peer probe, checks) are built once at start-up.
    "postgres": "the daemon manages a database or not from start-up",
    "postgres.host": "the database adapters are built at start-up",
    "postgres.port": "the database adapters are built at start-up",
    "postgres.user": "the database adapters are built at start-up",
    "postgres.dbname": "the database adapters are built at start-up",
    "postgres.password_file": "the database adapters are built at start-up",
    "postgres.data_dir": "the database adapters are built at start-up; the server runs on it",
    "postgres.config_file": "the database adapters are built at start-up; the server runs on it",
    "postgres.bin_dir": "the database adapters are built at start-up",
    "postgres.service_user": "the database adapters are built at start-up",
    "postgres.rejoin": LIVE,  # Settings.rejoin_auto
    "postgres.reclone": LIVE,  # Settings.reclone
    # Replication: the mode decides what an acknowledged commit promises and what the sync
    # record means; both nodes must switch together, by a rolling restart.
    "replication.mode": "both nodes must run the same mode: switch by restarting the passive, "
    "then the active (what `lab/lab mode` does)",
    "replication.sync_drop_after": LIVE,
    # The checks: the runner is rebuilt, each kept check keeping its rise/fall state.
    "checks": LIVE,
    # Sockets bound at start-up.
    "metrics.enabled": "the /metrics listener is bound at start-up",
    "metrics.listen_address": "the /metrics listener is bound at start-up",
    "metrics.port": "the /metrics listener is bound at start-up",
    # Hooks: read at each run.
    "hooks.on_role_change": LIVE,
    "hooks.timeout": LIVE,
    # The failsafe channel: secret, port and store are taken at start-up, and both nodes'
    # pledge timings must agree for a pledge to mean what the active counts on.
    "failsafe.enabled": "the peer channel is started (or not) at start-up",
    "failsafe.secret_file": "the peer channel read its secret at start-up",
    "failsafe.port": "the peer channel's port is bound at start-up",
    "failsafe.pledge_ttl": "both nodes must agree on pledge timing; a live pledge counts on it",
    "failsafe.pledge_margin": "both nodes must agree on pledge timing; a live pledge counts on it",
    "failsafe.store_dir": "granted pledges are kept there: moving it could forget a live pledge",
}
"""Every key of ``Config``, dotted: ``LIVE`` (None) or why a reload refuses to change it."""

_NOT_KEYS: Final = frozenset({"path"})  # the file itself, not a setting
_WHOLE: Final = frozenset({"members", "checks"})  # compared as one value (tables of tables)


@dataclass(frozen=True)
class Refusal:
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


@dataclass(frozen=True)
class ReloadPlan:
    """The changed keys, in the file's order; ``ok`` when every change can be applied live."""

    applied: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.refused

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.refused)


def config_keys(cls: type[Any] = Config, prefix: str = "") -> Iterator[str]:
    """Every dotted key of the configuration tree, as ``RULES`` names them: an optional table
    (vip, postgres) both as itself (its presence) and by its keys."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if not prefix and f.name in _NOT_KEYS:
            continue
        tables = [t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if _is_table(t)]
        if not tables or key in _WHOLE:
            yield key
            continue
        if type(None) in typing.get_args(hints[f.name]):
            yield key
        yield from config_keys(tables[0], f"{key}.")


def _is_table(t: object) -> bool:
    return isinstance(t, type) and dataclasses.is_dataclass(t)


def _changes(old: Any, new: Any, prefix: str) -> Iterator[str]:
    """Dotted keys whose values differ between two instances of one dataclass."""
    for f in dataclasses.fields(old):
        key = f"{prefix}{f.name}"
        if not prefix and f.name in _NOT_KEYS:
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if key in _WHOLE or not (dataclasses.is_dataclass(a) or dataclasses.is_dataclass(b)):
            yield key
        elif a is None or b is None:
            yield key  # an optional table appeared or went away
        else:
            yield from _changes(a, b, f"{key}.")


def plan_reload(running: Config, loaded: Config) -> ReloadPlan:
    """Sort every key that differs between the running and the newly loaded configuration."""
    applied: list[str] = []
    refused: list[Refusal] = []
    for key in _changes(running, loaded, ""):
        rule = RULES.get(key, "not known to be safe to change while running")
        if rule is LIVE:
            applied.append(key)
        else:
            refused.append(Refusal(key, rule))
    observed = any(c.type == "postgres" for c in loaded.checks)
    if "checks" in applied and loaded.postgres is not None and not observed:
        refused.append(
            Refusal("checks", "a managed database needs a check of type postgres to observe it")
        )
    return ReloadPlan(tuple(applied), tuple(refused))

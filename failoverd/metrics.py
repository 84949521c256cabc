"""Prometheus metrics: one registry per daemon, served on ``/metrics``.

Everything here is derived from the pure values of one loop tick: the state before the step, the
core's ``Step`` and the ``Observation`` it was given. The daemon calls ``Metrics.update`` once per
tick; nothing here reaches into an adapter or reads a clock, so what the metrics say is exactly
what the core saw and decided.

Naming (DESIGN.md, "Interfaces"): every name begins ``failoverd_``, counters end ``_total``,
durations ``_seconds``, and every series carries ``node`` and ``cluster`` labels. Values that do
not apply (replication lag on a primary, a round-trip that never succeeded) are NaN rather than a
misleading zero. Counters whose first increment matters to an alert (``increase()`` needs a
sample before the increment) are created at zero for every known label value.

The fencing check runs on a thread of its own and hands each result to ``fencing_checked``.

The failsafe channel counts what it refused, granted and received on its own threads; the
daemon hands a snapshot of those counts (``FailsafeStats``, pure values) to ``update_failsafe``
each tick, and the counters move by the difference.

The registry also carries prometheus_client's process collector (``process_start_time_seconds``
and the other standard ``process_*`` series, which have no ``node`` or ``cluster`` label): a
restarted daemon shows as a new start time, which FailoverdDaemonRestarted alerts on.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from failoverd.core import (
    ActionResult,
    DbRole,
    FenceOutcome,
    FencePeer,
    Observation,
    RecordEvent,
    RecordSync,
    ReplicationMode,
    Role,
    Settings,
    State,
    Step,
    ZkState,
    eligibility,
)
from failoverd.failsafe.protocol import Refused
from failoverd.failsafe.stats import ASK_RESULTS, FailsafeStats
from failoverd.status import sync_standby

__all__ = [
    "FAILOVER_KINDS",
    "RELOAD_RESULTS",
    "STEPDOWN_KINDS",
    "Metrics",
    "MetricsError",
]

FAILOVER_KINDS = ("failover", "stepdown", "switchover")
"""Takeover kinds that count as a failover (bootstrap and readopt do not: nothing moved)."""

RELOAD_RESULTS = ("applied", "refused")
"""How a configuration reload ended: every changed key applied, or nothing changed."""

STEPDOWN_KINDS = ("stepdown", "switchover", "shutdown", "lease_lost", "aborted")
"""Demotion kinds: how this node gave up (or never finished taking) the active role."""

# fmt: off
CHECK_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
FAILOVER_DURATION_BUCKETS = (
    0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
)
# fmt: on

_BASE = ("node", "cluster")
_REMEMBERED_RESULTS = 1024  # result ids remembered so that none is counted twice
SYNC_DROPPED = "sync_dropped"  # the core's reason code for dropping a standby that held commits
_NAN = math.nan


class MetricsError(Exception):
    """The metrics endpoint cannot be served; the message is one line for the operator."""


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class Metrics:
    """The daemon's metrics on a registry of its own (never prometheus_client's global one)."""

    def __init__(
        self,
        settings: Settings,
        cluster: str,
        registry: CollectorRegistry | None = None,
        *,
        process: bool = True,
    ) -> None:
        """``process=False`` leaves the process collector out: for a registry that already
        has one (a second Metrics on a shared registry)."""
        self.settings = settings
        self.node = settings.node
        self.cluster = cluster
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._last_probe: dict[str, tuple[float | None, int, int]] = {}
        self._fence_ids: dict[int, None] = {}  # FencePeer actions whose result is still due
        self._counted: dict[int, None] = {}  # fence result ids already counted (insertion order)
        self._drop_ids: dict[int, None] = {}  # RecordSync drops whose result is still due
        self._failsafe_seen = FailsafeStats()  # the counts already added to the counters
        r = self.registry
        base = _BASE

        self.info = Gauge(
            "failoverd_info", "Always 1; labels say the version.", (*base, "version"), registry=r
        )
        self.info.labels(self.node, self.cluster, settings.version or "unknown").set(1)
        if process:
            ProcessCollector(registry=r)  # process_start_time_seconds: restarts are visible

        # -- role and lease -----------------------------------------------------------------
        self.role = Gauge(
            "failoverd_role",
            "1 for the node's current role, 0 for the others.",
            (*base, "role"),
            registry=r,
        )
        self.is_active = Gauge(
            "failoverd_is_active",
            "1 while this node is the active one (also while paused from active).",
            base,
            registry=r,
        )
        self.lease_epoch = Gauge(
            "failoverd_lease_epoch",
            "Highest lease epoch (fencing token) this node has seen.",
            base,
            registry=r,
        )
        self.lease_held = Gauge(
            "failoverd_lease_held",
            "1 while this node's ZooKeeper session holds the lease.",
            base,
            registry=r,
        )
        self.eligible = Gauge(
            "failoverd_eligible",
            "1 while this node is passive and eligible to take over (as it publishes).",
            base,
            registry=r,
        )
        self.paused = Gauge(
            "failoverd_paused", "1 while the cluster is paused (maintenance).", base, registry=r
        )
        self.vip_present = Gauge(
            "failoverd_vip_present",
            "1 if the service IP is on this node's interface, 0 if not, NaN if not looked.",
            base,
            registry=r,
        )
        self.last_tick = Gauge(
            "failoverd_last_tick_timestamp_seconds",
            "Wall-clock time of the last loop tick (a frozen loop stops moving it).",
            base,
            registry=r,
        )

        # -- ZooKeeper ----------------------------------------------------------------------
        self.zk_connected = Gauge(
            "failoverd_zookeeper_connected",
            "1 while the ZooKeeper connection is CONNECTED.",
            base,
            registry=r,
        )
        self.zk_state = Gauge(
            "failoverd_zookeeper_state",
            "1 for the current ZooKeeper connection state, 0 for the others.",
            (*base, "state"),
            registry=r,
        )
        self.zk_roundtrip_age = Gauge(
            "failoverd_zookeeper_roundtrip_age_seconds",
            "Seconds since the send time of the last successful ZooKeeper round-trip "
            "(NaN before the first one); the active self-fences past self_fence_after.",
            base,
            registry=r,
        )
        self.zk_session_timeout = Gauge(
            "failoverd_zookeeper_session_timeout_seconds",
            "Session timeout negotiated with ZooKeeper (NaN until known).",
            base,
            registry=r,
        )

        # -- checks -------------------------------------------------------------------------
        self.check_up = Gauge(
            "failoverd_check_up",
            "1 while a health check passes (after rise/fall), 0 while it fails.",
            (*base, "check"),
            registry=r,
        )
        self.check_latency = Histogram(
            "failoverd_check_latency_seconds",
            "How long health-check probes took (each probe seen by the loop counted once).",
            (*base, "check"),
            buckets=CHECK_LATENCY_BUCKETS,
            registry=r,
        )

        # -- database and replication ---------------------------------------------------------
        self.database_role = Gauge(
            "failoverd_database_role",
            "1 for the local PostgreSQL's observed role, 0 for the others.",
            (*base, "role"),
            registry=r,
        )
        self.lag_bytes = Gauge(
            "failoverd_replication_lag_bytes",
            "Replica: the active's last published LSN minus the LSN received here (what "
            "max_lag_on_failover judges); NaN when not a replica or unknown.",
            base,
            registry=r,
        )
        self.replay_lag_bytes = Gauge(
            "failoverd_replication_replay_lag_bytes",
            "Replica: WAL received but not yet replayed, in bytes; NaN when not a replica.",
            base,
            registry=r,
        )
        self.lag_seconds = Gauge(
            "failoverd_replication_lag_seconds",
            "Replica: seconds since WAL last arrived (what max_replication_silence judges); "
            "NaN when not a replica or unknown.",
            base,
            registry=r,
        )
        self.max_lag = Gauge(
            "failoverd_max_lag_on_failover_bytes",
            "The max_lag_on_failover setting: a replica further behind than this is not "
            "eligible (alerts compare failoverd_replication_lag_bytes with it).",
            base,
            registry=r,
        )
        self.replication_mode = Gauge(
            "failoverd_replication_mode",
            "1 for the replication mode this node runs in ([replication] mode; async without "
            "a managed database), 0 for the others.",
            (*base, "mode"),
            registry=r,
        )
        self.sync_standby_named = Gauge(
            "failoverd_sync_standby_named",
            "1 while the sync record names a standby at the current epoch (it holds every "
            "commit the active acknowledged), else 0; what matters is the active's value.",
            base,
            registry=r,
        )
        self.sync_dropped = Counter(
            "failoverd_sync_dropped",
            "Times this node, active, dropped its synchronous standby because it left commits "
            "waiting (the sync record set to none; commits then went through on the primary).",
            base,
            registry=r,
        )

        # -- decisions and events -------------------------------------------------------------
        self.decisions = Counter(
            "failoverd_decisions",
            "Decisions of the core by reason code (counted when role or reason code changes).",
            (*base, "decision"),
            registry=r,
        )
        self.failovers = Counter(
            "failoverd_failovers",
            "Times this node became active by a takeover, by kind.",
            (*base, "reason"),
            registry=r,
        )
        self.failover_duration = Histogram(
            "failoverd_failover_duration_seconds",
            "Takeover duration to the VIP: from the old active's last sign of life seen here "
            "(failover, step-down), or from the lease going free (switchover).",
            (*base, "reason"),
            buckets=FAILOVER_DURATION_BUCKETS,
            registry=r,
        )
        self.last_failover = Gauge(
            "failoverd_last_failover_timestamp_seconds",
            "Wall-clock time this node last became active by a takeover (0: not since start).",
            base,
            registry=r,
        )
        self.last_failover_duration = Gauge(
            "failoverd_last_failover_duration_seconds",
            "Duration of this node's last takeover, as failoverd_failover_duration_seconds "
            "counts it (NaN: none since start).",
            base,
            registry=r,
        )
        self.stepdowns = Counter(
            "failoverd_stepdowns",
            "Times this node gave up the active role (or an unfinished takeover), by kind.",
            (*base, "reason"),
            registry=r,
        )
        self.fences = Counter(
            "failoverd_fences",
            "Fences of the peer attempted by this node, by result.",
            (*base, "result"),
            registry=r,
        )

        # -- the failsafe ([failsafe]) ---------------------------------------------------------
        self.failsafe_refused = Counter(
            "failoverd_failsafe_refused",
            "Failsafe channel messages this node refused, by reason (bad_mac, replay, "
            "wrong_cluster, wrong_node, wrong_epoch, malformed, oversized, not_granting); a "
            "refused message changed nothing.",
            (*base, "reason"),
            registry=r,
        )
        self.failsafe_granted = Counter(
            "failoverd_failsafe_pledges_granted",
            "Pledges this node granted its peer: promises not to take the lease for pledge_ttl.",
            base,
            registry=r,
        )
        self.failsafe_received = Counter(
            "failoverd_failsafe_pledges_received",
            "Pledges the peer granted this node.",
            base,
            registry=r,
        )
        self.failsafe_asks = Counter(
            "failoverd_failsafe_asks",
            "Pledge requests of this node by how they ended: pledged, refused (signed no), "
            "unanswered (no valid answer within the bound), dropped (one still in flight).",
            (*base, "result"),
            registry=r,
        )
        self.failsafe_pledged_remaining = Gauge(
            "failoverd_failsafe_pledged_until_remaining_seconds",
            "Seconds until this node's promise not to take the lease lapses (0: none live; "
            "NaN: failsafe disabled).",
            base,
            registry=r,
        )
        self.failsafe_pledge_remaining = Gauge(
            "failoverd_failsafe_pledge_remaining_seconds",
            "Seconds the latest pledge granted to this node still covers, from its send time "
            "less pledge_margin (0: none live; NaN: failsafe disabled).",
            base,
            registry=r,
        )

        # -- the fencing check (failoverd/fencecheck.py): no sample before the first one -----
        self.fencing_check_ok = Gauge(
            "failoverd_fencing_check_ok",
            "1 when the last dry run of the SSH fence of the peer passed, 0 when it failed.",
            base,
            registry=r,
        )
        self.fencing_check_time = Gauge(
            "failoverd_fencing_check_timestamp_seconds",
            "Wall time the last dry run of the SSH fence completed at.",
            base,
            registry=r,
        )
        self.config_reloads = Counter(
            "failoverd_config_reloads",
            "Configuration reloads (SIGHUP) by result: applied, or refused (nothing changed).",
            (*base, "result"),
            registry=r,
        )
        self.config_loaded = Gauge(
            "failoverd_config_loaded_timestamp_seconds",
            "Wall time the configuration in force was loaded (start-up or applied reload).",
            base,
            registry=r,
        )
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(self.node, self.cluster, result)

        # Known label values exist from the start: increase() sees the first event, and
        # dashboards show every role and state.
        for kind in FAILOVER_KINDS:
            self.failovers.labels(self.node, self.cluster, kind)
            self.failover_duration.labels(self.node, self.cluster, kind)
        for kind in STEPDOWN_KINDS:
            self.stepdowns.labels(self.node, self.cluster, kind)
        for outcome in FenceOutcome:
            self.fences.labels(self.node, self.cluster, outcome.value)
        self.sync_dropped.labels(self.node, self.cluster)
        if settings.failsafe:
            for reason in Refused:
                self.failsafe_refused.labels(self.node, self.cluster, reason.value)
            for result in ASK_RESULTS:
                self.failsafe_asks.labels(self.node, self.cluster, result)
            self.failsafe_granted.labels(self.node, self.cluster)
            self.failsafe_received.labels(self.node, self.cluster)
        self._set_enum(
            self.replication_mode, (x.value for x in ReplicationMode), settings.replication.value
        )
        self.last_failover_duration.labels(self.node, self.cluster).set(_NAN)
        self.last_failover.labels(self.node, self.cluster).set(0)
        self._one(self.max_lag, settings.max_lag_on_failover)
        self._set_enum(self.role, (x.value for x in Role), Role.STARTING.value)
        self._set_enum(self.zk_state, (x.value for x in ZkState), None)
        self._set_enum(self.database_role, (x.value for x in DbRole), None)
        for g in (
            self.is_active,
            self.lease_epoch,
            self.lease_held,
            self.eligible,
            self.paused,
            self.sync_standby_named,
        ):
            g.labels(self.node, self.cluster).set(0)
        self.zk_connected.labels(self.node, self.cluster).set(0)
        for g in (
            self.vip_present,
            self.zk_roundtrip_age,
            self.zk_session_timeout,
            self.lag_bytes,
            self.replay_lag_bytes,
            self.lag_seconds,
            self.failsafe_pledged_remaining,
            self.failsafe_pledge_remaining,
        ):
            g.labels(self.node, self.cluster).set(_NAN)

    def config_loaded_at(self, wall: float) -> None:
        """The configuration in force took effect at ``wall`` (start-up, an applied reload)."""
        self.config_loaded.labels(self.node, self.cluster).set(wall)

    def config_reload(self, result: str, settings: Settings | None, wall: float) -> None:
        """One reload's outcome (``RELOAD_RESULTS``) at ``wall``; ``settings``: the core's new
        settings when it was applied (None: the old configuration stays)."""
        self.config_reloads.labels(self.node, self.cluster, result).inc()
        if settings is not None:
            self.settings = settings
            self.config_loaded_at(wall)

    # -- the endpoint -----------------------------------------------------------------------

    def serve(self, listen_address: str, port: int) -> None:
        """Serve /metrics from a daemon thread; MetricsError when the address cannot be bound.

        Port 0 picks a free port (see ``port``).
        """
        if self._server is not None:
            raise MetricsError(f"metrics already served on {_hostport(listen_address, self.port)}")
        where = _hostport(listen_address, port)
        try:
            server, thread = start_http_server(port, addr=listen_address, registry=self.registry)
        except OSError as e:
            why = e.strerror or str(e)
            raise MetricsError(
                f"cannot serve metrics on {where}: {why} "
                "(metrics.listen_address / metrics.port: is another process using the port?)"
            ) from e
        self._server, self._thread = server, thread

    @property
    def port(self) -> int:
        """The port actually listened on (0 when not serving)."""
        return 0 if self._server is None else int(self._server.server_port)

    def close(self) -> None:
        """Stop serving; idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    # -- one tick ---------------------------------------------------------------------------

    def update(self, before: State, step: Step, obs: Observation) -> None:
        """Derive every metric from one tick: the state before, the core's step, its input."""
        state = step.state
        one = self._one
        role = state.role
        self._set_enum(self.role, (x.value for x in Role), role.value)
        active = role is Role.ACTIVE or (role is Role.PAUSED and state.paused_from is Role.ACTIVE)
        one(self.is_active, active)
        cluster = obs.cluster
        one(self.lease_epoch, max(state.highest_epoch, cluster.epoch if cluster else 0))
        one(
            self.lease_held,
            cluster is not None and cluster.lease is not None and cluster.lease.mine,
        )
        one(self.sync_standby_named, cluster is not None and sync_standby(cluster) is not None)
        paused = role is Role.PAUSED or (cluster is not None and cluster.paused)
        one(self.paused, paused)
        eligible = role is Role.PASSIVE and eligibility(self.settings, state, obs)[0]
        one(self.eligible, eligible)
        one(self.vip_present, _NAN if obs.vip_present is None else obs.vip_present)
        one(self.last_tick, obs.wall_now)

        zk = obs.zk
        one(self.zk_connected, zk.state is ZkState.CONNECTED)
        self._set_enum(self.zk_state, (x.value for x in ZkState), zk.state.value)
        sent = zk.last_roundtrip_sent_at
        one(self.zk_roundtrip_age, _NAN if sent is None else max(0.0, obs.now - sent))
        timeout = zk.negotiated_timeout
        one(self.zk_session_timeout, _NAN if timeout is None else timeout)

        self._update_checks(obs)
        self._update_database(state, obs)
        self._update_pledges(obs)

        # Every decision of the step (one may be taken and superseded within a step, e.g. a
        # blocked fence followed by the retry wait), except a repeat of the standing one.
        previous = before.reason.code
        for decision in step.decisions:
            if decision.code != previous:
                self.decisions.labels(self.node, self.cluster, decision.code).inc()
            previous = decision.code
        if not step.decisions and (before.role, before.reason.code) != (role, step.reason.code):
            self.decisions.labels(self.node, self.cluster, step.reason.code).inc()
        self._update_events(step, obs)
        self._update_fences(step, obs.results)
        self._update_sync_drops(step, obs.results)

    def fencing_checked(self, ok: bool, completed_at: float) -> None:
        """One fencing check's result, from the checker's thread (gauges are thread-safe);
        ``completed_at`` is the wall time it ended, read by the caller."""
        self._one(self.fencing_check_ok, ok)
        self._one(self.fencing_check_time, completed_at)

    def _update_pledges(self, obs: Observation) -> None:
        if not self.settings.failsafe:
            return  # NaN since the start
        promised = 0.0
        if obs.pledged_until is not None:
            promised = max(0.0, obs.pledged_until - obs.now)
        held = 0.0
        if obs.pledge is not None:
            p = obs.pledge
            held = max(0.0, p.sent_at + p.ttl - self.settings.pledge_margin - obs.now)
        self._one(self.failsafe_pledged_remaining, promised)
        self._one(self.failsafe_pledge_remaining, held)

    def update_failsafe(self, stats: FailsafeStats) -> None:
        """Move the failsafe counters to ``stats``, the channel's counts since it started."""
        seen = self._failsafe_seen
        for reason, n in stats.refused.items():
            more = n - seen.refused.get(reason, 0)
            if more > 0:
                self.failsafe_refused.labels(self.node, self.cluster, reason).inc(more)
        for result, n in stats.asks.items():
            more = n - seen.asks.get(result, 0)
            if more > 0:
                self.failsafe_asks.labels(self.node, self.cluster, result).inc(more)
        if stats.granted > seen.granted:
            self.failsafe_granted.labels(self.node, self.cluster).inc(stats.granted - seen.granted)
        if stats.received > seen.received:
            more = stats.received - seen.received
            self.failsafe_received.labels(self.node, self.cluster).inc(more)
        self._failsafe_seen = stats

    def _update_checks(self, obs: Observation) -> None:
        for c in obs.local.checks:
            self.check_up.labels(self.node, self.cluster, c.name).set(1 if c.healthy else 0)
            probe = (c.latency, c.successes, c.failures)
            if self._last_probe.get(c.name) == probe:
                continue  # the same probe seen again on a later tick
            self._last_probe[c.name] = probe
            if c.latency is not None:
                self.check_latency.labels(self.node, self.cluster, c.name).observe(c.latency)

    def _update_database(self, state: State, obs: Observation) -> None:
        db = obs.database
        self._set_enum(self.database_role, (x.value for x in DbRole), db.role.value)
        lag = replay = age = _NAN
        if db.role is DbRole.REPLICA:
            if db.lsn is not None and state.active_lsn is not None:
                lag = float(max(0, state.active_lsn - db.lsn))
            if db.lsn is not None and db.replayed_lsn is not None:
                replay = float(max(0, db.lsn - db.replayed_lsn))
            if db.last_received_age is not None:
                age = db.last_received_age
        self._one(self.lag_bytes, lag)
        self._one(self.replay_lag_bytes, replay)
        self._one(self.lag_seconds, age)
        self._one(self.max_lag, self.settings.max_lag_on_failover)  # follows a reload

    def _update_events(self, step: Step, obs: Observation) -> None:
        for a in step.actions:
            if not isinstance(a, RecordEvent):
                continue
            if a.to_node == self.node and a.kind in FAILOVER_KINDS:
                self.failovers.labels(self.node, self.cluster, a.kind).inc()
                phases = dict(a.phases)
                total = phases.get("total")
                if total is not None:
                    self.failover_duration.labels(self.node, self.cluster, a.kind).observe(total)
                    self._one(self.last_failover_duration, total)
                self._one(self.last_failover, obs.wall_now)
            elif a.from_node == self.node and a.kind in STEPDOWN_KINDS:
                self.stepdowns.labels(self.node, self.cluster, a.kind).inc()

    def _update_fences(self, step: Step, results: Iterable[ActionResult]) -> None:
        for r in results:
            expected = r.action_id in self._fence_ids
            if r.fence is None and not expected:
                continue
            self._fence_ids.pop(r.action_id, None)
            if r.action_id in self._counted:
                continue
            self._counted[r.action_id] = None
            while len(self._counted) > _REMEMBERED_RESULTS:
                del self._counted[next(iter(self._counted))]
            outcome = r.fence.value if r.fence is not None else FenceOutcome.FAILED.value
            self.fences.labels(self.node, self.cluster, outcome).inc()
        for a in step.actions:
            if isinstance(a, FencePeer):
                self._fence_ids[a.id] = None
        while len(self._fence_ids) > 64:  # fences that never reported: forget the oldest
            del self._fence_ids[next(iter(self._fence_ids))]

    def _update_sync_drops(self, step: Step, results: Iterable[ActionResult]) -> None:
        """A drop counts once it is recorded: the RecordSync that set the record to none for
        ``sync_dropped`` came back ok (a refused write dropped nothing)."""
        for r in results:
            if r.action_id not in self._drop_ids:
                continue
            del self._drop_ids[r.action_id]  # once: the same result seen again is not counted
            if r.ok:
                self.sync_dropped.labels(self.node, self.cluster).inc()
        for a in step.actions:
            if isinstance(a, RecordSync) and a.standby is None and a.reason.code == SYNC_DROPPED:
                self._drop_ids[a.id] = None
        while len(self._drop_ids) > 64:  # drops that never reported: forget the oldest
            del self._drop_ids[next(iter(self._drop_ids))]

    # -- helpers ----------------------------------------------------------------------------

    def _one(self, gauge: Gauge, value: float) -> None:
        gauge.labels(self.node, self.cluster).set(float(value))

    def _set_enum(self, gauge: Gauge, values: Iterable[str], current: str | None) -> None:
        for v in values:
            gauge.labels(self.node, self.cluster, v).set(1 if v == current else 0)

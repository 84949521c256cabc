"""The daemon loop: gather an observation, ask the core, run its actions, repeat.

It wakes every ``loop_interval``, at once when ZooKeeper or an action reports something, and at
the self-fence deadline even if nothing else happens. Nothing here decides: the core does.

Before the loop, start-up: no ZooKeeper is a state, not an exit. Until the first session the
daemon takes no role and touches nothing; it keeps trying (kazoo's connection retry, its pause
bounded by one second), says so in systemd's STATUS= and, at growing intervals, in the log, and
stretches systemd's start timeout (EXTEND_TIMEOUT_USEC) while it does. READY=1 still means a
session and a first full observation judged. SIGTERM while waiting exits cleanly.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from failoverd import __version__
from failoverd import log as logmod
from failoverd.actions.postgres import rewind_readiness
from failoverd.actions.runner import ActionRunner, rounded_phases
from failoverd.actions.vip import VipError, has_vip, verify_interface
from failoverd.checks.postgres import database_status
from failoverd.checks.runner import PEER_DB, CheckRunner, build_checks, build_observers, peer_probe
from failoverd.clock import boottime, walltime
from failoverd.config import Config, ConfigError, load_config
from failoverd.core import (
    UNMANAGED_DB,
    ActionResult,
    DatabaseStatus,
    LocalHealth,
    MemberStatus,
    Observation,
    PeerDb,
    PeerProbe,
    Publish,
    RecordEvent,
    ReplicationMode,
    Role,
    Settings,
    State,
    Step,
    step,
)
from failoverd.failsafe import FailsafeChannel, FailsafeError
from failoverd.fencecheck import FencingChecker, why_not_check
from failoverd.metrics import FAILOVER_KINDS, Metrics, MetricsError
from failoverd.notify import Notifier
from failoverd.quorum import assess
from failoverd.reload import RESTART_HINT, plan_reload
from failoverd.runfiles import RunFiles
from failoverd.zk import DuplicateNode, LeaseError, ZkCluster
from failoverd.zk.fourletter import read_conf

WAIT_SLICE = 0.2
"""Seconds between two looks at the connection (and at SIGTERM) while waiting for ZooKeeper."""
STATUS_EVERY = 10.0
"""While waiting: STATUS= and EXTEND_TIMEOUT_USEC= this often (the STATUS says for how long)."""
START_EXTENSION = 60.0
"""Each EXTEND_TIMEOUT_USEC= gives systemd's start job this much more, from when it is sent:
well over STATUS_EVERY, and after the wait it is the budget for the rest of the start (the
previous life's member record, the first observation), as TimeoutStartSec= is without a wait."""
LOG_EVERY_MAX = 60.0
"""The wait is logged after start_timeout, then at doubling intervals up to this."""
CONF_TIMEOUT = 1.0
"""Seconds for each server's answer to ``conf`` at start-up (failoverd.quorum)."""


class StartupError(Exception):
    """The daemon cannot start; the message is one line for the operator."""


def settings_from(cfg: Config) -> Settings:
    return Settings(
        node=cfg.node,
        peer=cfg.peer.name,
        self_fence_after=cfg.timings.self_fence_after,
        min_failover_interval=cfg.timings.min_failover_interval,
        max_lag_on_failover=cfg.failover.max_lag_on_failover,
        max_replication_silence=cfg.failover.max_replication_silence,
        nofailover=cfg.failover.nofailover,
        publish_every=cfg.timings.publish_every,
        action_timeout=cfg.timings.action_timeout,
        fence_retry_after=cfg.timings.fence_retry_after,
        rejoin_timeout=cfg.timings.rejoin_timeout,
        version=__version__,
        rejoin_auto=cfg.postgres is None or cfg.postgres.rejoin == "auto",
        reclone=cfg.postgres is not None and cfg.postgres.reclone,
        power_fence=cfg.fencing.power_command is not None,
        replication=ReplicationMode(cfg.replication_mode),
        sync_drop_after=cfg.replication.sync_drop_after,
        failsafe=cfg.failsafe.enabled,
        pledge_ttl=cfg.failsafe.pledge_ttl,
        pledge_margin=cfg.failsafe.pledge_margin,
    )


class Daemon:
    def __init__(
        self,
        cfg: Config,
        clock: Callable[[], float] = boottime,
        wall: Callable[[], float] = walltime,
        notifier: Notifier | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.wall = wall
        self.settings = settings_from(cfg)
        self.log: Any = logmod.get().bind(node=cfg.node, cluster=cfg.cluster.name)
        self.zk = ZkCluster(
            cfg.cluster.zookeeper_hosts,
            cfg.cluster.chroot,
            cfg.node,
            cfg.timings.session_timeout,
            credentials=cfg.cluster.credentials,
            clock=clock,
        )
        self.state = State()
        self._wake = threading.Event()
        self._results: queue.SimpleQueue[ActionResult] = queue.SimpleQueue()
        self._shutdown = threading.Event()
        self._reload = threading.Event()  # SIGHUP: re-read the configuration between two ticks
        self._reload_note = ""  # the last reload's outcome, kept in systemd's STATUS=
        # The failsafe's peer channel ([failsafe]); None when disabled, and then the
        # observation's pledge, pledged_until and granting stay None.
        self.failsafe = FailsafeChannel(cfg, self.log, clock) if cfg.failsafe.enabled else None
        self.runner = ActionRunner(
            cfg, self.zk, self.log, self._on_result, clock=clock, failsafe=self.failsafe
        )
        self.checks = CheckRunner(
            build_checks(cfg),
            self.log,
            on_change=self._wake.set,
            clock=clock,
            observers=build_observers(cfg),
        )
        postgres_checks = [c.name for c in cfg.checks if c.type == "postgres"]
        self._postgres_check = postgres_checks[0] if postgres_checks else None
        # systemd: sd_notify (READY, WATCHDOG, STATUS, STOPPING); the role file ExecStopPost
        # fences by and its marker of a failed fence are in self.run_files (failoverd/runfiles.py).
        self.notifier = notifier if notifier is not None else Notifier.from_environ()
        self.metrics = Metrics(self.settings, cfg.cluster.name)
        # A dry run of the SSH fence of the peer at start-up and every check_interval, on its
        # own thread (failoverd/fencecheck.py); None when disabled.
        self._fencing_skipped: str | None = None  # why the last fencing check was not made
        self.fencing_checker = self._fencing_checker(cfg)
        self.metrics.config_loaded_at(wall())
        self.run_files = RunFiles(os.environ, self.log)
        self._ready_sent = False
        self._status_sent: str | None = None
        self._notify_error: str | None = None

    # -- start-up -------------------------------------------------------------------------------

    def start(self) -> bool:
        """Connect and verify what only the running node can; StartupError says what is wrong.

        Without ZooKeeper it waits, saying so, for as long as it takes (``wait_for_zookeeper``);
        False when asked to stop meanwhile (everything is closed then: exit cleanly).
        """
        path = self.cfg.path
        self._check_watchdog()
        if self.cfg.postgres is not None and self._postgres_check is None:
            raise StartupError(
                f"{path}: postgres: a managed database needs a [checks.<name>] of type "
                "postgres to observe it"
            )
        if self.cfg.vip is not None:
            try:
                verify_interface(self.cfg.vip)
            except VipError as e:
                raise StartupError(f"{path}: vip.interface: {e}") from e
        if self.cfg.metrics.enabled:
            # First, before ZooKeeper: a taken port fails with nothing to clean up.
            try:
                self.metrics.serve(self.cfg.metrics.listen_address, self.cfg.metrics.port)
            except MetricsError as e:
                raise StartupError(str(e)) from e
        self._start_failsafe()
        try:
            connected = self.wait_for_zookeeper()
        except LeaseError as e:
            self.zk.close()
            self._close_failsafe()
            self.metrics.close()
            raise StartupError(f"ZooKeeper: {e}") from e
        if not connected:
            self.zk.close()
            self._close_failsafe()
            self.runner.close()
            self.notifier.close()
            self.metrics.close()
            self.log.info("exited", role=self.state.role.value, reason="stopped while waiting")
            return False
        try:
            self._check_session_timeout()
            self._check_ensemble()
            self.zk.ensure_layout()
            self.zk.add_listener(self._wake.set)
            self.zk.claim_member(self._initial_status(), wait=self.zk.negotiated_timeout + 1.0)
        except DuplicateNode as e:
            self._close_started()
            raise StartupError(f"refusing to start: {e}") from e
        except LeaseError as e:
            self._close_started()
            raise StartupError(f"ZooKeeper: {e}") from e
        except StartupError:
            self._close_started()
            raise
        self.log.info(
            "started",
            version=__version__,
            zookeeper=",".join(self.cfg.cluster.zookeeper_hosts),
            chroot=self.cfg.cluster.chroot,
            session_timeout_s=self.zk.negotiated_timeout,
            self_fence_after_s=self.cfg.timings.self_fence_after,
        )
        if self.cfg.postgres is not None:
            unable = rewind_readiness(self.cfg.postgres)
            if unable is not None:
                self.log.warning(
                    "rewind_impossible", reason=unable, data_dir=str(self.cfg.postgres.data_dir)
                )
        self.checks.start()
        if self.fencing_checker is not None:
            self.fencing_checker.start()
        return True

    def wait_for_zookeeper(self) -> bool:
        """Until the first session: True once there is one, False when SIGTERM came first.

        kazoo tries every host meanwhile, its pause bounded (``Session``); its line per failed
        attempt is held back, and this says instead, after ``start_timeout`` and then at
        doubling intervals up to LOG_EVERY_MAX, how long it has waited and the last error.
        systemd hears it every STATUS_EVERY, with more time for the start job each time.
        """
        hosts = ",".join(self.cfg.cluster.zookeeper_hosts)
        since = self.clock()
        log_every = self.cfg.timings.start_timeout
        next_log = next_status = since + log_every
        reported = False
        while not self._shutdown.is_set():
            if self.zk.connect(WAIT_SLICE):
                if reported:
                    waited = self.clock() - since
                    self.log.info("zookeeper_reachable", hosts=hosts, waited_s=round(waited, 1))
                    self._notified(
                        self.notifier.extend_timeout(
                            START_EXTENSION, f"ZooKeeper answered after {waited:.0f} s: starting"
                        )
                    )
                return True
            now = self.clock()
            error = self.zk.last_connect_error or "no answer yet"
            if now >= next_status:
                reported = True
                status = (
                    f"waiting for ZooKeeper at {hosts} for {now - since:.0f} s, taking no role: "
                    f"{error}"
                )
                self._notified(self.notifier.extend_timeout(START_EXTENSION, status))
                next_status = now + STATUS_EVERY
            if now >= next_log:
                log_every = min(2 * log_every, LOG_EVERY_MAX)
                self.log.warning(
                    "waiting_for_zookeeper",
                    hosts=hosts,
                    waited_s=round(now - since, 1),
                    error=error,
                    next_report_in_s=log_every,
                    role=self.state.role.value,
                )
                next_log = now + log_every
        return False

    def _check_ensemble(self) -> None:
        """Ask every server's ``conf`` and judge the ensemble's timing against ours (refused
        when a session could expire before the self-fence); log what was found."""
        t = self.cfg.timings
        found = assess(
            read_conf(self.cfg.cluster.zookeeper_hosts, CONF_TIMEOUT),
            requested_timeout=t.session_timeout,
            self_fence_after=t.self_fence_after,
            negotiated_timeout=self.zk.negotiated_timeout,
        )
        self.log.info(
            "zookeeper_ensemble",
            servers_answered=found.answered,
            servers_asked=found.asked,
            tick_time_s=found.tick_time,
            sync_limit=found.sync_limit,
            follower_read_window_s=found.follower_read_window,
            session_timeout_s=found.session_timeout,
            self_fence_margin_s=round(found.margin, 3),
            note="; ".join(f.text for f in found.findings if f.level == "note"),
        )
        for f in found.findings:
            if f.level == "warning":
                self.log.warning("zookeeper_ensemble_warning", key=f.key, problem=f.text)
        for f in found.findings:
            if f.level == "error":
                raise StartupError(f"{self.cfg.path}: {f.key}: {f.text}")

    def _start_failsafe(self) -> None:
        """Before ZooKeeper, like metrics: an unusable secret, store or port fails with little
        to clean up. The channel reads the secret here, once; messages never show it."""
        if self.failsafe is None:
            return
        try:
            self.failsafe.start()
        except FailsafeError as e:
            self.failsafe.close()
            self.metrics.close()
            key = "failsafe" if e.key is None else f"failsafe.{e.key}"
            raise StartupError(
                f"{self.cfg.path}: {key}: {e} (the failsafe is enabled: fix this or set "
                "[failsafe] enabled = false)"
            ) from e
        fs = self.cfg.failsafe
        self.log.info(
            "failsafe_started",
            port=fs.port,
            peer=self.cfg.peer.name,
            pledge_ttl_s=fs.pledge_ttl,
            store=str(fs.store_dir),
        )

    def _close_failsafe(self) -> None:
        if self.failsafe is not None:
            self.failsafe.close()

    def _close_started(self) -> None:
        self.zk.close()
        self._close_failsafe()
        self.metrics.close()

    def _check_session_timeout(self) -> None:
        t = self.cfg.timings
        negotiated = self.zk.negotiated_timeout
        if t.self_fence_after >= negotiated:
            raise StartupError(
                f"{self.cfg.path}: timings.self_fence_after: {t.self_fence_after:g} s is not below "
                f"the session timeout ZooKeeper negotiated, {negotiated:g} s (requested "
                f"{t.session_timeout:g} s; the server's minSessionTimeout/maxSessionTimeout "
                "bound it): the node could not fence itself before its session expires"
            )
        if abs(negotiated - t.session_timeout) > 1e-3:
            self.log.warning(
                "session_timeout_negotiated",
                requested_s=t.session_timeout,
                negotiated_s=negotiated,
            )

    def _check_watchdog(self) -> None:
        """systemd's watchdog must fire before the self-fence deadline, yet spare a healthy loop."""
        if self.notifier.problem is not None:
            raise StartupError(f"systemd environment: {self.notifier.problem}")
        usec = self.notifier.watchdog_usec
        if usec is None:
            return
        t = self.cfg.timings
        if usec >= t.self_fence_after * 1e6:
            raise StartupError(
                f"{self.cfg.path}: timings.self_fence_after: WATCHDOG_USEC={usec} "
                f"({usec / 1e6:g} s, the unit's WatchdogSec=) is not below "
                f"timings.self_fence_after ({t.self_fence_after:g} s): a hung daemon would outlive "
                "its own self-fence deadline; lower WatchdogSec="
            )
        busiest = t.loop_interval + t.roundtrip_timeout
        if usec <= busiest * 1e6:
            raise StartupError(
                f"{self.cfg.path}: timings.loop_interval: WATCHDOG_USEC={usec} "
                f"({usec / 1e6:g} s, the unit's WatchdogSec=) is not above loop_interval + "
                f"roundtrip_timeout ({busiest:g} s): a healthy loop could miss its ping"
            )

    def _initial_status(self) -> MemberStatus:
        return MemberStatus(
            node=self.cfg.node,
            role=Role.STARTING.value,
            epoch=0,
            eligible=False,
            healthy=False,
            reason="starting",
            reason_code="starting",
            db_role=UNMANAGED_DB.role.value,
            published_at=self.wall(),
            version=__version__,
        )

    # -- the loop -------------------------------------------------------------------------------

    def _on_result(self, result: ActionResult) -> None:
        self._results.put(result)
        self._wake.set()

    def request_shutdown(self) -> None:
        if not self._shutdown.is_set():
            st = self.state
            status = f"role {st.role.value}, epoch {st.epoch}, stopping"
            self._notified(self.notifier.stopping(status))
        self._shutdown.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.log.info("signal", signal=signal.Signals(signum).name)
            self.request_shutdown()

        def reload_handler(signum: int, frame: FrameType | None) -> None:
            self._reload.set()  # handled by the loop, between two ticks
            self._wake.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGHUP, reload_handler)

    def reload(self) -> None:
        """SIGHUP: re-read the configuration file and apply it all, or nothing (failoverd/reload.py
        says which keys are safe live). systemd hears RELOADING=1, then READY=1 with the
        outcome in STATUS=; the log one event, config_reloaded or config_reload_refused."""
        if self._ready_sent:  # before READY=1 systemd knows of no reload to wait for
            self._notified(self.notifier.reloading(f"reloading {self.cfg.path}"))
        try:
            loaded = load_config(self.cfg.path)
            plan = plan_reload(self.cfg, loaded)
            refused = [str(r) for r in plan.refused]
            if plan.ok and plan.changed:
                self._apply(loaded, plan.applied)
        except ConfigError as e:
            refused = [str(p) for p in e.problems]
        except Exception as e:  # a bug must not end an active daemon (ExecStopPost would fence)
            self.log.exception("config_reload_failed", path=str(self.cfg.path))
            refused = [f"the reload failed before anything changed: {e!r}"]
        if refused:
            self.log.warning(
                "config_reload_refused",
                path=str(self.cfg.path),
                refused=refused,
                note="nothing changed: the running configuration stays; " + RESTART_HINT,
                role=self.state.role.value,
            )
            self.metrics.config_reload("refused", None, self.wall())
            self._reload_note = f"reload refused: {'; '.join(refused)}"
        else:
            self.metrics.config_reload("applied", self.settings, self.wall())
            self.log.info(
                "config_reloaded",
                path=str(self.cfg.path),
                applied=list(plan.applied),
                role=self.state.role.value,
            )
            self._reload_note = f"reload applied: {', '.join(plan.applied) or 'no change'}"
        self._status_sent = self._status(self.state)
        if self._ready_sent:
            self._notified(self.notifier.ready(self._status_sent))
        else:
            self._notified(self.notifier.status(self._status_sent))

    def _fencing_checker(self, cfg: Config) -> FencingChecker | None:
        """The periodic dry run of the peer's fence with ``cfg``'s settings; None when off."""
        if cfg.fencing.check_interval <= 0:
            return None
        return FencingChecker(
            cfg.peer,
            cfg.fencing,
            self.log,
            lambda found, at: self.metrics.fencing_checked(found.ok, at),
            self._may_check_fencing,
        )

    def _may_check_fencing(self) -> bool:
        """fencecheck.why_not_check decides; a reason to skip is logged once per change."""
        view = self.zk.view()
        peer = None if view is None else view.member(self.cfg.peer.name)
        why = why_not_check(self.state.role, self.cfg.peer.name, peer)
        if why is None:
            self._fencing_skipped = None
            return True
        if why and why != self._fencing_skipped:
            self._fencing_skipped = why
            self.log.info("fencing_check_skipped", peer=self.cfg.peer.name, reason=why)
        return False

    def _apply(self, cfg: Config, applied: tuple[str, ...]) -> None:
        """Swap in a configuration whose every change is safe live: the core's settings, the
        action runner's (fence, hooks, timeouts: read at each use) and, if they changed, the
        checks, rebuilt with their rise/fall state carried over. Everything that can fail is
        built before anything is swapped."""
        settings = settings_from(cfg)
        checks = None
        if "checks" in applied:
            checks = CheckRunner(
                build_checks(cfg),
                self.log,
                on_change=self._wake.set,
                clock=self.clock,
                observers=build_observers(cfg),
            )
            checks.carry_over(self.checks)
        fencing_checker = self.fencing_checker
        if any(key.startswith("fencing.") for key in applied):
            fencing_checker = self._fencing_checker(cfg)  # started below, checking at once
        self.cfg, self.settings, self.runner.cfg = cfg, settings, cfg
        if fencing_checker is not self.fencing_checker:
            if self.fencing_checker is not None:
                self.fencing_checker.close(timeout=0)
            self.fencing_checker = fencing_checker
            if fencing_checker is not None:
                fencing_checker.start()
        if checks is not None:
            self.checks.stop(wait=False)
            self.checks = checks
            self._postgres_check = next((c.name for c in cfg.checks if c.type == "postgres"), None)
            checks.start()

    def observe(self) -> Observation:
        results: list[ActionResult] = []
        while True:
            try:
                results.append(self._results.get_nowait())
            except queue.Empty:
                break
        now = self.clock()
        snap = self.checks.snapshot()
        database: DatabaseStatus = UNMANAGED_DB
        peer = PeerProbe(PeerDb.UNMANAGED, now)
        if self.cfg.postgres is not None:
            database = database_status(snap.facts.get(self._postgres_check or ""))
            peer = peer_probe(snap.facts.get(PEER_DB))
        pledge, pledged_until, granting = (
            (None, None, None) if self.failsafe is None else self.failsafe.observed()
        )
        return Observation(
            now=now,
            wall_now=self.wall(),
            zk=self.zk.status(),
            cluster=self.zk.view(),
            local=LocalHealth(
                checks=snap.checks,
                complete=snap.complete,
                database_check=self._postgres_check,
            ),
            database=database,
            peer_database=peer,
            results=tuple(results),
            shutdown_requested=self._shutdown.is_set(),
            vip_present=self._vip_present(),
            pledge=pledge,
            pledged_until=pledged_until,
            granting=granting,
            started_unfenced=self.run_files.started_unfenced,
        )

    def _vip_present(self) -> bool | None:
        """One netlink dump per tick (about a millisecond); None when it cannot be read."""
        if self.cfg.vip is None:
            return None
        try:
            return has_vip(self.cfg.vip)
        except (OSError, NetlinkError) as e:
            self.log.warning("vip_unreadable", error=str(e))
            return None

    def tick(self) -> Step:
        """One round: round-trip, observe, decide, act."""
        self.zk.roundtrip(deadline=self.cfg.timings.roundtrip_timeout)
        obs = self.observe()
        before = self.state
        result = step(self.settings, before, obs)
        self.state = result.state
        self.metrics.update(before, result, obs)
        if self.failsafe is not None:
            self.metrics.update_failsafe(self.failsafe.stats())
        logmod.log_decisions(self.log, before, result)
        self._report(result.state)
        for action in result.actions:
            if isinstance(action, RecordEvent) and action.to_node == self.cfg.node:
                log_takeover(self.log, action)
            if not isinstance(action, Publish):
                self.log.info(
                    "action",
                    action=action.name,
                    id=action.id,
                    reason_code=action.reason.code,
                    role=result.state.role.value,
                    epoch=result.state.epoch,
                )
            self.runner.submit(action)
        return result

    def _report(self, state: State) -> None:
        """Before this step's actions run: the role file, then STATUS on change and READY once."""
        self.run_files.record(state)
        status = self._status(state)
        if not self._ready_sent and settled(state):
            self._ready_sent = self.notifier.ready(status)
            self._notified(self._ready_sent)
            self._status_sent = status
        elif status != self._status_sent:
            self._notified(self.notifier.status(status))
            self._status_sent = status

    def _status(self, state: State) -> str:
        """systemd's STATUS=: role, epoch, reason, and the last reload's outcome if any."""
        note = f"; {self._reload_note}" if self._reload_note else ""
        return f"role {state.role.value}, epoch {state.epoch}, {state.reason.text}{note}"

    def _notified(self, ok: bool) -> None:
        """Log a failing notification socket once, not on every ping."""
        error = None if ok else self.notifier.last_error
        if error is not None and error != self._notify_error:
            self.log.warning("sd_notify_failed", error=error)
        self._notify_error = error

    def _sleep_until_next(self) -> None:
        """Sleep one interval, but wake at the self-fence deadline, when the pledge this node
        holds lapses, when its own promise to the peer lapses, and on any report."""
        now = self.clock()
        timeout = self.cfg.timings.loop_interval
        deadlines: list[float] = []
        sent = self.zk.status().last_roundtrip_sent_at
        if sent is not None:
            deadlines.append(sent + self.settings.self_fence_after)
        if self.failsafe is not None:
            pledge, pledged_until, _ = self.failsafe.observed()
            if pledge is not None:
                deadlines.append(pledge.sent_at + pledge.ttl - self.settings.pledge_margin)
            if pledged_until is not None:
                deadlines.append(pledged_until)
        for deadline in deadlines:
            if deadline > now:
                timeout = min(timeout, deadline - now + 0.001)
        self._wake.wait(timeout)
        self._wake.clear()

    def run(self) -> int:
        """Loop until the core says the daemon may exit; returns the process exit code."""
        try:
            while not self.state.exit:
                if self._reload.is_set() and not self._shutdown.is_set():
                    self._reload.clear()
                    self.reload()
                self.tick()
                # The only watchdog ping: a loop that stalls stops pinging, and systemd kills it.
                self._notified(self.notifier.watchdog())
                if self.state.exit:
                    break
                self._sleep_until_next()
        finally:
            self.checks.stop()
            if self.fencing_checker is not None:
                self.fencing_checker.close()
            self.runner.close()
            self._close_failsafe()
            self.zk.close()
            self.notifier.close()
            self.metrics.close()
        self.log.info("exited", role=self.state.role.value, reason=self.state.reason.text)
        return 0


def log_takeover(log: Any, event: RecordEvent) -> None:
    """``failover_complete`` for a takeover that moved the service here: ``duration_s`` from the
    old active's last sign of life this node saw (a switchover: from the lease going free),
    ``promotion_s`` from the lease going free; the same numbers as the history and metrics."""
    if event.kind not in FAILOVER_KINDS:
        return
    phases = rounded_phases(event.phases)
    log.info(
        "failover_complete",
        kind=event.kind,
        from_node=event.from_node,
        epoch=event.epoch,
        duration_s=phases.get("total"),
        promotion_s=phases.get("promotion"),
        silence_s=phases.get("silence"),
        phases=phases,
    )


def settled(state: State) -> bool:
    """The core has judged a full observation (systemd's READY=1): it left ``starting``, or stays
    there for a reason of its own (two primaries: an operator must act), not for want of one."""
    return state.role is not Role.STARTING or state.reason.code not in (
        "starting",
        "waiting_for_observation",
    )

"""Runs the core's actions on worker threads and hands their results back to the loop.

The loop never blocks on an action: sequencing actions run on one worker (the core keeps at most
one in flight), hooks on another so a slow hook cannot delay a promotion, and every result goes
through ``on_result`` to become part of the next observation.

Failsafe pledges: ``AskPledge`` is handed to the channel's own asker and returns at once (a pledge
granted shows up in a later observation); ``SetGranting`` runs in order with the other
sequencing actions, and its result comes only once the channel grants under the new setting.

The VIP has a worker of its own. A self-fence removes the VIP while something else may still be
running (a ZooKeeper call waiting out its timeout, a database stop): queued behind it, the
removal could come after the peer took over. Address changes stay in order among themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from failoverd.actions.fence import fence_action_result, fence_peer, power_fence
from failoverd.actions.hooks import run_hook
from failoverd.actions.postgres import LocalDatabase
from failoverd.actions.vip import add_vip, remove_vip
from failoverd.clock import boottime
from failoverd.config import Config, Member
from failoverd.core import (
    AcquireLease,
    Action,
    ActionResult,
    AddVip,
    AskPledge,
    ClearRejoinRequest,
    ClearSwitchover,
    CloneDatabase,
    FencePeer,
    InspectRejoin,
    Promote,
    Publish,
    RecordEvent,
    RecordPosition,
    RecordSync,
    ReleaseLease,
    RemoveVip,
    RewindDatabase,
    RunHook,
    SetGranting,
    SetSyncStandby,
    StartPrimary,
    StartReplica,
    StopDatabase,
)
from failoverd.failsafe import FailsafeChannel, FailsafeError
from failoverd.zk import LeaseError, ZkCluster

DATABASE_ACTIONS = (
    Promote,
    StartPrimary,
    StopDatabase,
    StartReplica,
    InspectRejoin,
    RewindDatabase,
    CloneDatabase,
    SetSyncStandby,
)


class ActionRunner:
    def __init__(
        self,
        cfg: Config,
        zk: ZkCluster,
        log: Any,
        on_result: Callable[[ActionResult], None],
        clock: Callable[[], float] = boottime,
        failsafe: FailsafeChannel | None = None,
    ) -> None:
        self.cfg = cfg
        self.zk = zk
        self.failsafe = failsafe  # None: [failsafe] disabled
        self.log = log
        self.on_result = on_result
        self.clock = clock
        self.db = (
            None if cfg.postgres is None else LocalDatabase(cfg.postgres, clock, node=cfg.node)
        )
        self._sequencing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="action")
        self._vip = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vip")
        self._hooks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hook")

    def submit(self, action: Action) -> None:
        """Start an action; fire-and-forget ones that only queue I/O run inline."""
        if isinstance(action, Publish):
            self.zk.publish(action.status)
        elif isinstance(action, RecordPosition):
            self.zk.record_position(action.position)
        elif isinstance(action, ClearRejoinRequest):
            self.zk.clear_rejoin(action.node)
        elif isinstance(action, RecordEvent):
            self.zk.append_history(_event_record(action, self.cfg.node))
        elif isinstance(action, AskPledge):
            if self.failsafe is not None:  # dropped, not queued, while one is in flight
                self.failsafe.ask(action.epoch)
        elif isinstance(action, RunHook):
            self._hooks.submit(self._run, action)
        elif isinstance(action, AddVip | RemoveVip):
            self._vip.submit(self._run, action)
        else:
            self._sequencing.submit(self._run, action)

    def _run(self, action: Action) -> None:
        started = self.clock()
        try:
            result = self._execute(action)
        except Exception as e:  # an adapter bug must not kill the worker or lose the result
            self.log.exception("action_crashed", action=action.name, id=action.id)
            result = ActionResult(action.id, ok=False, detail=f"{action.name} crashed: {e!r}")
        self.log.info(
            "action_done" if result.ok else "action_failed",
            action=action.name,
            id=action.id,
            detail=result.detail,
            duration_s=round(self.clock() - started, 4),
        )
        self.on_result(result)

    def _execute(self, action: Action) -> ActionResult:
        if isinstance(action, AcquireLease):
            try:
                epoch = self.zk.acquire(action.expected_epoch)
            except LeaseError as e:
                return ActionResult(action.id, ok=False, detail=str(e))
            return ActionResult(action.id, ok=True, epoch=epoch, detail=f"epoch {epoch}")
        if isinstance(action, ReleaseLease):
            try:
                self.zk.release(
                    action.epoch,
                    action.final_lsn,
                    action.clean,
                    left_serving=action.left_serving,
                    timeline=action.timeline,
                )
            except LeaseError as e:
                return ActionResult(action.id, ok=False, detail=str(e))
            return ActionResult(action.id, ok=True, detail=f"released epoch {action.epoch}")
        if isinstance(action, ClearSwitchover):
            try:
                self.zk.clear_switchover()
            except LeaseError as e:
                return ActionResult(action.id, ok=False, detail=str(e))
            return ActionResult(action.id, ok=True, detail="switchover request cleared")
        if isinstance(action, RecordSync):
            return self._record_sync(action)
        if isinstance(action, SetGranting):
            return self._set_granting(action)
        if isinstance(action, RunHook):
            return run_hook(
                action,
                self.cfg.hooks.on_role_change,
                self.cfg.node,
                self.cfg.cluster.name,
                self.cfg.hooks.timeout,
            )
        if isinstance(action, AddVip):
            if self.cfg.vip is None:
                return ActionResult(action.id, ok=True, detail="no VIP configured")
            added = add_vip(self.cfg.vip, action.not_after, self.clock)
            return ActionResult(action.id, ok=added.ok, detail=added.detail, late=added.late)
        if isinstance(action, RemoveVip):
            if self.cfg.vip is None:
                return ActionResult(action.id, ok=True, detail="no VIP configured")
            ok, detail = remove_vip(self.cfg.vip)
            return ActionResult(action.id, ok=ok, detail=detail)
        if isinstance(action, FencePeer):
            peer = self._member(action.peer)
            if action.method == "power":
                return fence_action_result(action.id, *power_fence(peer, self.cfg.fencing))
            return fence_action_result(
                action.id, *fence_peer(peer, self.cfg.fencing, clock=self.clock)
            )
        if isinstance(action, DATABASE_ACTIONS):
            if self.db is None:
                return ActionResult(action.id, ok=True, detail="no database managed")
            return self._database(self.db, action)
        return ActionResult(action.id, ok=False, detail=f"no adapter for {action.name}")

    def _record_sync(self, action: RecordSync) -> ActionResult:
        """The sync record, written only under the lease of ``action.epoch``: refused (and
        nothing changed) once the epoch moved on or the lease went."""
        try:
            record = self.zk.record_sync(action.standby, action.epoch)
        except LeaseError as e:
            return ActionResult(action.id, ok=False, detail=str(e))
        named = record.standby if record.standby is not None else "none"
        return ActionResult(action.id, ok=True, detail=f"sync = {named} at epoch {record.epoch}")

    def _set_granting(self, action: SetGranting) -> ActionResult:
        """Returns once the channel grants under the new setting (no grant of the old one can
        still be under way), so a result of None means ``pledged_until`` is final."""
        whom = "none" if action.epoch is None else f"epoch {action.epoch}"
        if self.failsafe is None:
            # Granting nothing is what a disabled channel does; granting something it cannot.
            ok = action.epoch is None
            return ActionResult(action.id, ok=ok, detail=f"failsafe disabled: granting {whom}")
        try:
            self.failsafe.set_granting(action.epoch)
        except FailsafeError as e:
            return ActionResult(action.id, ok=False, detail=str(e))
        return ActionResult(action.id, ok=True, detail=f"granting pledges to {whom}")

    def _database(self, db: LocalDatabase, action: Action) -> ActionResult:
        timeout = self.cfg.timings.action_timeout
        if isinstance(action, Promote):
            result = db.promote(action.epoch, action.not_after, timeout, action.sync_names)
            return result.action_result(action.id)
        if isinstance(action, SetSyncStandby):
            return db.set_sync_standby(action.names, timeout).action_result(action.id)
        if isinstance(action, StartPrimary):
            result = db.start_primary(action.epoch, action.not_after, timeout)
            return result.action_result(action.id)
        if isinstance(action, StopDatabase):
            return db.stop(action.mode, timeout, action.checkpoint).action_result(action.id)
        primary = self._member(getattr(action, "primary", ""))
        where = (primary.address, primary.db_port)
        if isinstance(action, StartReplica):
            return db.start_replica(*where, timeout).action_result(action.id)
        if isinstance(action, InspectRejoin):
            return db.inspect(*where, timeout).action_result(action.id)
        # A rewind copies what changed, a clone the whole database: rejoin_timeout, not
        # action_timeout (the core waits as long for them).
        rejoin_timeout = self.cfg.timings.rejoin_timeout
        if isinstance(action, RewindDatabase):
            return db.rewind(*where, rejoin_timeout).action_result(action.id)
        if isinstance(action, CloneDatabase):
            return db.clone(*where, rejoin_timeout).action_result(action.id)
        return ActionResult(action.id, ok=False, detail=f"no adapter for {action.name}")

    def _member(self, name: str) -> Member:
        for m in self.cfg.members:
            if m.name == name:
                return m
        raise LookupError(f"{name!r} is not a configured member")

    def close(self, timeout: float = 5.0) -> None:
        """Let running actions finish (bounded by their own timeouts), start no new ones."""
        self._vip.shutdown(wait=True, cancel_futures=False)
        self._sequencing.shutdown(wait=True, cancel_futures=True)
        self._hooks.shutdown(wait=False, cancel_futures=True)


def _event_record(action: RecordEvent, node: str) -> dict[str, object]:
    return {
        "kind": action.kind,
        "epoch": action.epoch,
        "from": action.from_node,
        "to": action.to_node,
        "by": node,
        "reason": action.reason.text,
        "reason_code": action.reason.code,
        "phases": rounded_phases(action.phases),
    }


def rounded_phases(phases: Iterable[tuple[str, float]]) -> dict[str, float]:
    """A takeover's phases as every record of it shows them (history, the log line): one
    rounding, or the same phase prints 0.76 in one place and 0.77 in another."""
    return {name: round(seconds, 4) for name, seconds in phases}

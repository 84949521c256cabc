"""`failoverctl init`, `pause`, `resume`, `promote` and `rejoin`: the commands that change the
cluster, each through a record in ZooKeeper that the daemons act on, then followed to its end."""

from __future__ import annotations

import getpass
import socket
import threading
import time
from collections.abc import Sequence
from typing import Final

import click

from failoverd.cli_common import EXIT_FAILED, EXIT_REFUSED, EXIT_USAGE, POSITIVE, fail
from failoverd.clock import boottime, walltime
from failoverd.core import MemberStatus, SwitchoverRequest
from failoverd.ctl.group import (
    connected,
    failoverctl_main,
    members_view,
    read_view,
    where_options,
)
from failoverd.rejoin import (
    RejoinPlan,
    RejoinProgress,
    RejoinRefusedError,
    advance,
    check_node,
    plan_rejoin,
    start_progress,
)
from failoverd.switchover import (
    ABORTED,
    DONE,
    PHASE_TEXT,
    REQUESTED,
    Plan,
    SwitchoverRefusedError,
    check_target,
    phase_of,
    plan_switchover,
)
from failoverd.zk import ZkCluster


@failoverctl_main.command("init")
@where_options(after=True)
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the cluster's ZooKeeper layout (idempotent)."""
    with connected(ctx) as (target, zk):
        zk.ensure_layout()
        click.echo(f"cluster {target.cluster.name} ready under {target.cluster.chroot}")


@failoverctl_main.command("pause")
@where_options(after=True)
@click.pass_context
def pause(ctx: click.Context) -> None:
    """Maintenance mode: daemons observe and publish, and change nothing. A pending switchover
    is withdrawn: acted on after the resume, it would move the service then, unasked."""
    with connected(ctx) as (target, zk):
        zk.set_paused(True)
        click.echo(f"cluster {target.cluster.name} paused: VIP and primary stay where they are")
        view = read_view(zk, ctx.obj.timeout)
        pending = None if view is None else view.switchover
        if pending is not None:
            zk.clear_switchover()
            forced = " (forced)" if pending.force else ""
            click.echo(
                f"withdrew the pending switchover{forced} to {pending.target or 'the peer'}, "
                f"requested by {pending.requested_by}: request it again after the resume"
            )


@failoverctl_main.command("resume")
@where_options(after=True)
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Leave maintenance mode: daemons re-evaluate the cluster from scratch."""
    with connected(ctx) as (target, zk):
        zk.set_paused(False)
        click.echo(f"cluster {target.cluster.name} resumed")


@failoverctl_main.command("promote")
@where_options(after=True)
@click.argument("node", required=False)
@click.option("--force", is_flag=True, help="even if the target is not eligible or no active")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option(
    "--timeout",
    "wait_s",
    default=30.0,
    show_default=True,
    type=POSITIVE,
    help="seconds the request stays valid and the command waits",
)
@click.pass_context
def promote(ctx: click.Context, node: str | None, force: bool, yes: bool, wait_s: float) -> None:
    """Planned switchover to NODE (default: the passive), losing no acknowledged write.

    With a node's configuration an unknown NODE is refused before ZooKeeper is asked; from an
    admin host the members are those that publish a record in ZooKeeper.
    """

    def known(members: Sequence[str]) -> None:
        try:
            check_target(members, node)
        except SwitchoverRefusedError as e:
            fail(f"switchover refused: {e}", EXIT_USAGE)

    with members_view(ctx, known) as (target, zk, view, members):
        try:
            plan = plan_switchover(view, members, node, force, target.mode(view).value)
        except SwitchoverRefusedError as e:
            fail(f"switchover refused: {e}", EXIT_REFUSED)
        for warning in plan.warnings:
            click.echo(f"! {warning}")
        what = (
            f"switch over from {plan.source} to {plan.target}"
            if plan.source
            else (f"promote {plan.target}")
        )
        if not yes and not click.confirm(f"{what} (epoch {plan.epoch})?", default=False):
            fail("not confirmed; nothing changed", EXIT_FAILED)
        request = SwitchoverRequest(
            target=plan.target,
            from_epoch=plan.epoch,
            requested_by=f"{getpass.getuser()}@{socket.gethostname()}",
            deadline=walltime() + wait_s,
            force=force,
        )
        zk.request_switchover(request)
        started, wall_started = boottime(), walltime()
        click.echo(f"requested: {what}, valid for {wait_s:g} s")
        phase = _follow_switchover(zk, plan, started, wait_s)
        if phase != DONE:
            _report_unfinished(zk, plan, phase)
        _report_window(zk, plan, wall_started)
        _wait_redundant(zk, plan, min(15.0, wait_s))


@failoverctl_main.command("rejoin")
@where_options(after=True)
@click.argument("node")
@click.option(
    "--reclone", is_flag=True, help="rebuild its data directory from the active (pg_basebackup)"
)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option(
    "--timeout",
    "wait_s",
    default=120.0,
    show_default=True,
    type=POSITIVE,
    help="seconds to follow progress (the request stays until the node acts on it)",
)
@click.pass_context
def rejoin(ctx: click.Context, node: str, reclone: bool, yes: bool, wait_s: float) -> None:
    """Ask NODE to rejoin as a streaming passive of the active (rewinding or re-cloning it)."""

    def known(members: Sequence[str]) -> None:
        try:
            check_node(members, node)
        except RejoinRefusedError as e:
            fail(f"rejoin refused: {e}", EXIT_USAGE)

    with members_view(ctx, known) as (_, zk, view, members):
        try:
            plan = plan_rejoin(view, members, node, reclone)
        except RejoinRefusedError as e:
            fail(f"rejoin refused: {e}", EXIT_REFUSED)
        for warning in plan.warnings:
            click.echo(f"! {warning}")
        what = f"{'re-clone' if reclone else 'rejoin'} {node}" + (
            f" as a passive of {plan.active}" if plan.active else ""
        )
        if not yes and not click.confirm(f"{what} (epoch {plan.epoch})?", default=False):
            fail("not confirmed; nothing changed", EXIT_FAILED)
        zk.request_rejoin(node, reclone, f"{getpass.getuser()}@{socket.gethostname()}")
        started = boottime()
        click.echo(f"requested: {what}; following for up to {wait_s:g} s")
        progress = _follow_rejoin(zk, plan, started, wait_s)
        took = boottime() - started
        if not progress.done:
            request = (
                "its daemon took the request"
                if progress.taken
                else "the request stays until its daemon acts on it"
            )
            fail(
                f"{node} has not rejoined within {wait_s:g} s: {progress.state}; {request} "
                "(see `failoverctl status`)",
                EXIT_FAILED,
            )
        now = zk.view()
        active = now.lease.node if now is not None and now.lease is not None else plan.active
        source = f" from {active}" if active else ""
        click.echo(f"done: {node} is passive and streaming{source}, after {took:.1f} s")


def _follow_rejoin(
    zk: ZkCluster, plan: RejoinPlan, started: float, wait_s: float
) -> RejoinProgress:
    """Print the node's state each time it changes; the progress when done or out of time."""
    changed = threading.Event()
    zk.add_listener(changed.set)
    progress = start_progress(plan)
    said = ""
    while not progress.done:
        view = zk.view()
        if view is not None:
            before = progress.taken
            progress = advance(progress, view, plan)
            if progress.taken and not before:
                click.echo(f"  +{boottime() - started:6.3f} s  {plan.node} took the request")
            if progress.state != said:
                said = progress.state
                click.echo(f"  +{boottime() - started:6.3f} s  {said}")
            if progress.done:
                break
        left = started + wait_s - boottime()
        if left <= 0:
            break
        changed.wait(min(0.05, left))
        changed.clear()
    return progress


def _follow_switchover(zk: ZkCluster, plan: Plan, started: float, wait_s: float) -> str:
    """Print each phase as it is reached; the last phase seen."""
    changed = threading.Event()
    zk.add_listener(changed.set)
    seen_request = False
    phase = REQUESTED
    while (left := started + wait_s - boottime()) > 0:
        view = zk.view()
        if view is not None:
            seen_request = seen_request or view.switchover is not None
            now_phase = phase_of(view, plan, seen_request)
            if now_phase != phase:
                phase = now_phase
                click.echo(f"  +{boottime() - started:6.3f} s  {PHASE_TEXT[phase]}")
            if phase in (DONE, ABORTED):
                return phase
        changed.wait(min(0.02, left))
        changed.clear()
    return phase


def _report_unfinished(zk: ZkCluster, plan: Plan, phase: str) -> None:
    refused = [r for r in zk.read_history(5) if r.get("kind") == "switchover_refused"]
    why = f": {refused[-1].get('reason')}" if phase == ABORTED and refused else ""
    view = zk.view()
    holder = view.lease.node if view is not None and view.lease is not None else "nobody"
    fail(
        f"switchover not completed (last phase: {phase}{why}); {holder} holds the lease. "
        "The request is ignored once its deadline passes; see `failoverctl status`.",
        EXIT_FAILED,
    )


RECORDS_WAIT_S: Final = 3.0  # how long the two switchover records may trail the phase seen


def _report_window(zk: ZkCluster, plan: Plan, wall_started: float) -> None:
    """The write-unavailability window from the daemons' own records: from the old active's
    step-down start to the new active's VIP. Each daemon appends its record on its own after
    its part is done, in either order (the new active's may come first): both are waited for,
    a bounded time."""

    def when(rec: dict[str, object]) -> float:
        t = rec.get("time")
        return float(t) if isinstance(t, int | float) else 0.0

    deadline = boottime() + RECORDS_WAIT_S
    while True:
        recent = [r for r in zk.read_history(10) if when(r) >= wall_started - 1]
        up = [r for r in recent if r.get("kind") == "switchover" and r.get("to") == plan.target]
        down = [
            r
            for r in recent
            if r.get("kind") == "switchover"
            and r.get("from") == plan.source
            and r.get("to") is None
        ]
        if (up and (down or plan.source is None)) or boottime() >= deadline:
            break
        time.sleep(0.05)
    if not up:
        click.echo("done")
        return
    end = when(up[-1])
    phases = down[-1].get("phases") if down else None
    took = phases.get("stepdown") if isinstance(phases, dict) else None
    if down and isinstance(took, int | float):
        click.echo(f"done: writes were unavailable for {end - (when(down[-1]) - took):.3f} s")
    else:
        click.echo(f"done in {end - wall_started:.3f} s")


def _wait_redundant(zk: ZkCluster, plan: Plan, wait_s: float) -> None:
    if plan.source is None:
        return
    deadline = boottime() + wait_s
    record = None
    while boottime() < deadline:
        view = zk.view()
        record = view.member(plan.source) if view is not None else None
        if (
            isinstance(record, MemberStatus)
            and record.role == "passive"
            and record.db_role in ("replica", "unmanaged")
        ):
            click.echo(f"{plan.source} is back as a {record.db_role} passive: redundant again")
            return
        time.sleep(0.1)
    state = "no status" if record is None else getattr(record, "reason", str(record))
    click.echo(f"! {plan.source} is not back as a passive replica yet: {state}")

"""`failoverctl`: inspect and steer a cluster through ZooKeeper, from a node or an admin host."""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

import click

from failoverd import __version__
from failoverd.cli_common import (
    ADMIN_CONFIG,
    CTL_CONFIG_HELP,
    DEFAULT_CONFIG,
    EXIT_FAILED,
    EXIT_REFUSED,
    EXIT_USAGE,
    JSON_ERRORS,
    POSITIVE,
    F,
    Group,
    config_failed,
    fail,
    load_or_exit,
)
from failoverd.clock import boottime, walltime
from failoverd.config import (
    ClusterConfig,
    ConfigError,
    Timings,
    is_cluster_only,
    parse_cluster,
)
from failoverd.core import ClusterView, MemberStatus, ReplicationMode, SwitchoverRequest
from failoverd.rejoin import (
    RejoinPlan,
    RejoinProgress,
    RejoinRefusedError,
    advance,
    check_node,
    plan_rejoin,
    start_progress,
)
from failoverd.status import UNKNOWN, as_json, as_table, assess, member_names, mode_of
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
from failoverd.zk import LeaseError, ZkCluster, ZkUnreachable

# -- failoverctl --------------------------------------------------------------------------------


@dataclass
class CtlOptions:
    """Where failoverctl finds its cluster: -c FILE (before or after the command) or flags."""

    config_path: str | None = None
    zookeeper: str | None = None
    cluster: str | None = None
    chroot: str | None = None
    credentials_file: str | None = None
    timeout: float = 3.0


@dataclass(frozen=True)
class Target:
    """The cluster failoverctl talks to. From a node's configuration it also knows the members
    and the replication mode; from an admin host's file or flags those come from ZooKeeper (the
    members' records; the mode from the sync record: present means sync)."""

    cluster: ClusterConfig
    session_timeout: float = Timings().session_timeout
    members: tuple[str, ...] | None = None
    replication_mode: str | None = None

    def member_names(self, view: ClusterView) -> list[str]:
        return list(self.members) if self.members is not None else member_names(view)

    def mode(self, view: ClusterView) -> ReplicationMode:
        if self.replication_mode is not None:
            return ReplicationMode(self.replication_mode)
        return mode_of(view)


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> object:
    """An option given after the command lands where the group's own would."""
    if value is not None and param.name is not None:
        setattr(ctx.ensure_object(CtlOptions), param.name, value)
    return value


def _where_options(*, after: bool) -> Callable[[F], F]:
    """-c and the admin-host flags, on the group (before the command) and on each command
    (after it): ``failoverctl status -c FILE`` works as ``failoverctl -c FILE status``. After
    the command only -c shows in its help; the group's help explains the flags."""
    callback = _remember if after else None

    def decorate(f: F) -> F:
        for opt in reversed(
            [
                click.option(
                    "-c",
                    "--config",
                    "config_path",
                    envvar=None if after else "FAILOVERD_CONFIG",
                    default=None,
                    metavar="FILE",
                    expose_value=not after,
                    callback=callback,
                    help="as before the command" if after else CTL_CONFIG_HELP,
                ),
                click.option(
                    "--zookeeper",
                    hidden=after,
                    metavar="HOSTS",
                    expose_value=not after,
                    callback=callback,
                    help="ZooKeeper host:port list (comma-separated); with --cluster, instead of "
                    "a file: all an admin host needs",
                ),
                click.option(
                    "--cluster",
                    hidden=after,
                    metavar="NAME",
                    expose_value=not after,
                    callback=callback,
                    help="the cluster's name (with --zookeeper)",
                ),
                click.option(
                    "--chroot",
                    hidden=after,
                    expose_value=not after,
                    callback=callback,
                    help="with --zookeeper: the cluster's chroot (default /failoverd/NAME)",
                ),
                click.option(
                    "--credentials-file",
                    hidden=after,
                    type=click.Path(dir_okay=False),
                    expose_value=not after,
                    callback=callback,
                    help="with --zookeeper: a file holding user:password for ZooKeeper",
                ),
            ]
        ):
            f = opt(f)
        return f

    return decorate


@click.group("failoverctl", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="failoverctl")
@_where_options(after=False)
@click.option(
    "--timeout", default=3.0, show_default=True, type=POSITIVE, help="seconds to wait for ZooKeeper"
)
@click.pass_context
def failoverctl_main(
    ctx: click.Context,
    config_path: str | None,
    zookeeper: str | None,
    cluster: str | None,
    chroot: str | None,
    credentials_file: str | None,
    timeout: float,
) -> None:
    """Inspect and steer a failoverd cluster through ZooKeeper, from any host that reaches it.

    On a node it reads the node's configuration. On an admin host it needs only the cluster's
    name and ZooKeeper hosts: --zookeeper HOSTS --cluster NAME, or a file with just a [cluster]
    table (/etc/failoverd/failoverctl.toml). The members then come from their records in
    ZooKeeper (a node whose daemon is down shows as missing), the replication mode from the
    sync record, and failoverctl's own session timeout is 2 s. These options work after the
    command too (failoverctl status -c FILE).
    """
    # kazoo narrates every failed connection attempt; the command says what matters in one line.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    ctx.obj = CtlOptions(config_path, zookeeper, cluster, chroot, credentials_file, timeout)


def _target(ctx: click.Context) -> Target:
    """The cluster to talk to, from the flags or the file; refused (64, 78) before ZooKeeper."""
    opts: CtlOptions = ctx.obj
    if opts.zookeeper is not None or opts.cluster is not None:
        if opts.zookeeper is None or opts.cluster is None:
            fail("--zookeeper and --cluster go together (or give -c FILE)", EXIT_USAGE)
        table: dict[str, object] = {
            "name": opts.cluster,
            "zookeeper_hosts": [h.strip() for h in opts.zookeeper.split(",") if h.strip()],
        }
        if opts.chroot is not None:
            table["chroot"] = opts.chroot
        if opts.credentials_file is not None:
            table["credentials_file"] = opts.credentials_file
        try:
            return Target(parse_cluster({"cluster": table}, Path("command line")))
        except ConfigError as e:
            config_failed(e.problems)
    if opts.chroot is not None or opts.credentials_file is not None:
        fail("--chroot and --credentials-file go with --zookeeper and --cluster", EXIT_USAGE)
    path = opts.config_path
    if path is None:
        path = DEFAULT_CONFIG
        if not Path(DEFAULT_CONFIG).exists() and Path(ADMIN_CONFIG).exists():
            path = ADMIN_CONFIG
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        data = None  # load_config says what is wrong, as for any node configuration
    if data is not None and is_cluster_only(data):
        try:
            return Target(parse_cluster(data, Path(path)))
        except ConfigError as e:
            config_failed(e.problems)
    cfg = load_or_exit(path)
    return Target(
        cfg.cluster,
        cfg.timings.session_timeout,
        tuple(m.name for m in cfg.members),
        cfg.replication_mode,
    )


@contextmanager
def _connected(
    ctx: click.Context, unknown_exit: int = EXIT_FAILED, target: Target | None = None
) -> Iterator[tuple[Target, ZkCluster]]:
    """A started client for the cluster (``target`` when resolved already), closed after."""
    if target is None:
        target = _target(ctx)
    ctx.meta[JSON_ERRORS + ".target"] = target
    zk = ZkCluster(
        target.cluster.zookeeper_hosts,
        target.cluster.chroot,
        f"failoverctl-{os.getpid()}",
        target.session_timeout,
        credentials=target.cluster.credentials,
    )
    try:
        zk.start(timeout=ctx.obj.timeout)
    except ZkUnreachable as e:
        fail(f"ZooKeeper unreachable: {e}", unknown_exit)
    try:
        yield target, zk
    except LeaseError as e:
        fail(str(e), unknown_exit)
    finally:
        zk.close()


def _read_view(zk: ZkCluster, timeout: float) -> ClusterView | None:
    """The first complete view, or None when the cluster was never initialised."""
    changed = threading.Event()
    zk.add_listener(changed.set)
    zk.watch()
    deadline = boottime() + timeout
    while (left := deadline - boottime()) > 0:
        view = zk.view()
        if view is not None:
            return view
        changed.wait(min(0.05, left))
        changed.clear()
    return None


@failoverctl_main.command("status")
@_where_options(after=True)
@click.option("--json", "as_json_flag", is_flag=True, help="machine-readable output")
@click.option("--watch", is_flag=True, help="redraw every --interval seconds until Ctrl-C")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="seconds between redraws",
)
@click.pass_context
def status(ctx: click.Context, as_json_flag: bool, watch: bool, interval: float) -> None:
    """Cluster state; exit 0 healthy, 1 degraded, 2 critical, 3 unknown.

    Ctrl-C ends --watch with exit 0: it is the only way out of a view that has no end, not a
    verdict on the cluster. A one-shot status interrupted before its verdict exits 3, unknown.
    """
    ctx.meta[JSON_ERRORS] = as_json_flag
    try:
        _status(ctx, as_json_flag, watch, interval)
    except KeyboardInterrupt:
        if watch:
            sys.exit(0)
        if as_json_flag:
            fail("interrupted before a verdict", UNKNOWN)
        sys.exit(UNKNOWN)


def _status(ctx: click.Context, as_json_flag: bool, watch: bool, interval: float) -> NoReturn:
    with _connected(ctx, unknown_exit=UNKNOWN) as (target, zk):
        cluster = target.cluster
        view = _read_view(zk, ctx.obj.timeout)
        if view is None:
            fail(
                f"cluster {cluster.name!r} not found under {cluster.chroot} "
                "(run `failoverctl init`, or check cluster.chroot and credentials)",
                UNKNOWN,
            )
        while True:
            # A node's configuration names the members and its mode (both nodes should run the
            # same); an admin host takes both from ZooKeeper.
            members = target.member_names(view)
            result = assess(view, members, target.mode(view), from_records=target.members is None)
            if as_json_flag:
                click.echo(as_json(view, result, cluster.name, cluster.chroot, walltime()))
            else:
                if watch:
                    click.clear()
                history = zk.read_history(20)
                click.echo(
                    as_table(view, result, cluster.name, cluster.chroot, walltime(), history)
                )
            if not watch:
                break
            time.sleep(interval)
            view = zk.view() or view
    sys.exit(result.code)


@failoverctl_main.command("check-fencing")
@click.option("--node", "node", help="the member whose fence to check (default: the peer)")
@_where_options(after=True)
@click.pass_context
def check_fencing_command(ctx: click.Context, node: str | None) -> None:
    """Prove the SSH fence of the peer works, without fencing it: connect as the fence does and
    ask the peer's `failoverd fence-self` for a dry run. Exit 0 ok, 1 failed. Runs on a node:
    it needs the node's configuration (the keys), not an admin host's file or flags."""
    from failoverd.fencecheck import check_fencing  # noqa: PLC0415  (paramiko)

    opts: CtlOptions = ctx.obj
    if opts.zookeeper is not None or opts.cluster is not None:
        fail("check-fencing runs on a node, with its configuration (-c FILE)", EXIT_USAGE)
    cfg = load_or_exit(opts.config_path or DEFAULT_CONFIG)
    members = {m.name: m for m in cfg.members}
    if node is not None and node not in members:
        fail(f"--node {node!r} is not a member: {', '.join(members)}", EXIT_USAGE)
    try:
        target = members[node] if node is not None else cfg.peer
    except LookupError as e:
        fail(f"{cfg.path}: node: {e}; name the member with --node", EXIT_USAGE)
    found = check_fencing(target, cfg.fencing)
    if found.ok:
        click.echo(f"fencing of {found.node}: {found.detail}")
        return
    fail(f"fencing of {found.node}: FAILED: {found.detail}", EXIT_FAILED)


@failoverctl_main.command("init")
@_where_options(after=True)
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the cluster's ZooKeeper layout (idempotent)."""
    with _connected(ctx) as (target, zk):
        zk.ensure_layout()
        click.echo(f"cluster {target.cluster.name} ready under {target.cluster.chroot}")


@failoverctl_main.command("pause")
@_where_options(after=True)
@click.pass_context
def pause(ctx: click.Context) -> None:
    """Maintenance mode: daemons observe and publish, and change nothing."""
    with _connected(ctx) as (target, zk):
        zk.set_paused(True)
        click.echo(f"cluster {target.cluster.name} paused: VIP and primary stay where they are")


@failoverctl_main.command("resume")
@_where_options(after=True)
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Leave maintenance mode: daemons re-evaluate the cluster from scratch."""
    with _connected(ctx) as (target, zk):
        zk.set_paused(False)
        click.echo(f"cluster {target.cluster.name} resumed")


@failoverctl_main.command("history")
@_where_options(after=True)
@click.option("--json", "as_json_flag", is_flag=True, help="one JSON object per line")
@click.option(
    "-n",
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="how many events, newest last",
)
@click.pass_context
def history(ctx: click.Context, as_json_flag: bool, limit: int) -> None:
    """Failovers, switchovers, step-downs and fences: when, epoch, from, to, why, phases."""
    with _connected(ctx) as (_target, zk):
        records = zk.read_history(limit)
    if as_json_flag:
        for rec in records:
            click.echo(json.dumps(rec, sort_keys=True))
        return
    if not records:
        click.echo("no events recorded")
        return
    for rec in records:
        when = rec.get("time")
        stamp = (
            time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(when))
            if isinstance(when, int | float)
            else "?"
        )
        phases = rec.get("phases")
        timing = ""
        if isinstance(phases, dict) and phases:
            timing = (
                "  ["
                + ", ".join(
                    f"{k} {v:.3f}s" for k, v in phases.items() if isinstance(v, int | float)
                )
                + "]"
            )
        click.echo(
            f"{stamp}  epoch {rec.get('epoch')}  {rec.get('kind')}  "
            f"{rec.get('from') or '-'} -> {rec.get('to') or '-'}  {rec.get('reason', '')}{timing}"
        )


@contextmanager
def _members_view(
    ctx: click.Context, known: Callable[[Sequence[str]], None]
) -> Iterator[tuple[Target, ZkCluster, ClusterView, list[str]]]:
    """For a command naming a node: ``known`` judges it against the configured members before
    ZooKeeper is asked (a typo neither waits nor writes), then against the members ZooKeeper
    knows (an admin host has no others); yields the client, the view and those members."""
    target = _target(ctx)
    if target.members is not None:
        known(target.members)
    with _connected(ctx, target=target) as (target, zk):
        view = _read_view(zk, ctx.obj.timeout)
        if view is None:
            fail(f"cluster {target.cluster.name!r} not found under {target.cluster.chroot}")
        members = target.member_names(view)
        known(members)
        yield target, zk, view, members


@failoverctl_main.command("promote")
@_where_options(after=True)
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

    with _members_view(ctx, known) as (target, zk, view, members):
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
@_where_options(after=True)
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

    with _members_view(ctx, known) as (_, zk, view, members):
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

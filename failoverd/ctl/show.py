"""`failoverctl status`, `history` and `check-fencing`: what the cluster is and did, changing
nothing."""

from __future__ import annotations

import json
import sys
import time
from typing import NoReturn

import click

from failoverd.cli_common import (
    DEFAULT_CONFIG,
    EXIT_FAILED,
    EXIT_USAGE,
    JSON_ERRORS,
    fail,
    load_or_exit,
)
from failoverd.clock import walltime
from failoverd.ctl.group import CtlOptions, connected, failoverctl_main, read_view, where_options
from failoverd.status import UNKNOWN, as_json, as_table, assess


@failoverctl_main.command("status")
@where_options(after=True)
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
    with connected(ctx, unknown_exit=UNKNOWN) as (target, zk):
        cluster = target.cluster
        view = read_view(zk, ctx.obj.timeout)
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
@where_options(after=True)
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


@failoverctl_main.command("history")
@where_options(after=True)
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
    with connected(ctx) as (_target, zk):
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

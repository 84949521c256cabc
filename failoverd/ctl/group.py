"""`failoverctl`'s command group and what its commands share: where the cluster is (-c FILE
or the admin-host flags, before or after the command) and a connection to its ZooKeeper."""

from __future__ import annotations

import logging
import os
import threading
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click

from failoverd import __version__
from failoverd.cli_common import (
    ADMIN_CONFIG,
    CTL_CONFIG_HELP,
    DEFAULT_CONFIG,
    EXIT_FAILED,
    EXIT_USAGE,
    JSON_ERRORS,
    POSITIVE,
    F,
    Group,
    config_failed,
    fail,
    load_or_exit,
)
from failoverd.clock import boottime
from failoverd.config import ClusterConfig, ConfigError, Timings, is_cluster_only, parse_cluster
from failoverd.core import ClusterView, ReplicationMode
from failoverd.status import member_names, mode_of
from failoverd.zk import LeaseError, ZkCluster, ZkUnreachable


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


def where_options(*, after: bool) -> Callable[[F], F]:
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
@where_options(after=False)
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


def resolve_target(ctx: click.Context) -> Target:
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
def connected(
    ctx: click.Context, unknown_exit: int = EXIT_FAILED, target: Target | None = None
) -> Iterator[tuple[Target, ZkCluster]]:
    """A started client for the cluster (``target`` when resolved already), closed after."""
    if target is None:
        target = resolve_target(ctx)
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


def read_view(zk: ZkCluster, timeout: float) -> ClusterView | None:
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


@contextmanager
def members_view(
    ctx: click.Context, known: Callable[[Sequence[str]], None]
) -> Iterator[tuple[Target, ZkCluster, ClusterView, list[str]]]:
    """For a command naming a node: ``known`` judges it against the configured members before
    ZooKeeper is asked (a typo neither waits nor writes), then against the members ZooKeeper
    knows (an admin host has no others); yields the client, the view and those members."""
    target = resolve_target(ctx)
    if target.members is not None:
        known(target.members)
    with connected(ctx, target=target) as (target, zk):
        view = read_view(zk, ctx.obj.timeout)
        if view is None:
            fail(f"cluster {target.cluster.name!r} not found under {target.cluster.chroot}")
        members = target.member_names(view)
        known(members)
        yield target, zk, view, members

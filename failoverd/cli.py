"""`failoverd`: the daemon and the node's own commands (check-config, run, fence-self)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import NoReturn

import click

from failoverd import __version__, quorum
from failoverd import log as logmod
from failoverd.actions.postgres import rewind_readiness
from failoverd.cli_common import (
    CONFIG_HELP,
    DEFAULT_CONFIG,
    EXIT_CONFIG,
    EXIT_STARTUP,
    Group,
    fail,
    load_or_exit,
)
from failoverd.config import (
    Config,
    ConfigError,
    effective_config_toml,
    load_config,
)
from failoverd.zk.fourletter import read_conf

# -- failoverd ----------------------------------------------------------------------------------


@click.group("failoverd", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="failoverd")
def failoverd_main() -> None:
    """failoverd: active/passive failover on a ZooKeeper lease."""


@failoverd_main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--offline",
    is_flag=True,
    help="check the file only: not this node's files and interface, nor ZooKeeper's timing",
)
def check_config(file: str, offline: bool) -> None:
    """Print every problem in FILE and exit non-zero, or print the effective configuration.

    Then, unless --offline, check on this node what the file names (fencing key and
    known_hosts holding the peer, secret files' modes, PostgreSQL's binaries, data directory and
    config_file, the VIP inside its interface's network), ask each ZooKeeper server for its
    timing and say whether a session could expire before this node's self-fence. Any error:
    exit 78, as `failoverd run` would refuse it or fail at the first failover.
    """
    cfg = load_or_exit(file)
    click.echo(effective_config_toml(cfg), nl=False)
    how = "this host's name, as node is not set" if cfg.node_from_host else "set by node"
    click.echo(f"info: {cfg.path}: node: this node is {cfg.node} ({how})", err=True)
    if cfg.postgres is not None:
        # Not an error in the file: the node works, but a diverged ex-primary can only be
        # rejoined by a clone. Said where the operator looks, before it is needed.
        unable = rewind_readiness(cfg.postgres)
        if unable is not None:
            click.echo(f"warning: {cfg.path}: postgres.data_dir: {unable}", err=True)
    if offline:
        return
    from failoverd.preflight import preflight  # noqa: PLC0415  (paramiko, netlink)

    on_node = preflight(cfg)
    for checked in on_node:
        click.echo(f"{checked.level}: {cfg.path}: {checked.key}: {checked.text}", err=True)
    found = quorum.assess(
        read_conf(cfg.cluster.zookeeper_hosts, timeout=1.0),
        requested_timeout=cfg.timings.session_timeout,
        self_fence_after=cfg.timings.self_fence_after,
    )
    for finding in found.findings:
        click.echo(f"{finding.level}: {cfg.path}: {finding.key}: {finding.text}", err=True)
    if found.refused or any(f.level == "error" for f in on_node):
        sys.exit(EXIT_CONFIG)


@failoverd_main.command("run")
@click.option(
    "-c",
    "--config",
    "config_path",
    envvar="FAILOVERD_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    help=CONFIG_HELP,
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def run(config_path: str, log_level: str) -> None:
    """Run the daemon in the foreground until SIGTERM."""
    from failoverd.daemon import Daemon, StartupError  # noqa: PLC0415  (keeps check-config light)

    cfg = load_or_exit(config_path)
    logmod.configure(log_level)
    daemon = Daemon(cfg)
    daemon.install_signal_handlers()  # first: SIGTERM while waiting for ZooKeeper is a clean stop
    try:
        started = daemon.start()
    except StartupError as e:
        fail(str(e), EXIT_STARTUP)
    sys.exit(daemon.run() if started else 0)


@failoverd_main.command("fence-self")
@click.option(
    "-c",
    "--config",
    "config_path",
    envvar="FAILOVERD_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    help=CONFIG_HELP,
)
def fence_self_command(config_path: str) -> None:
    """Remove the VIP, then stop the local PostgreSQL. Idempotent; needs no ZooKeeper.

    Run by the peer over SSH before it promotes, and safe on a node in any state. When sshd's
    $SSH_ORIGINAL_COMMAND is exactly "failoverd fence-self --dry-run" (`failoverctl
    check-fencing`), it only checks that it could fence, and changes nothing.
    """
    from failoverd.fencing import (  # noqa: PLC0415  (keeps other commands light)
        dry_run_requested,
        fence_self,
        fence_self_dry_run,
    )

    if dry_run_requested(os.environ):
        _fence_self_dry_run(config_path, fence_self_dry_run)
    cfg = load_or_exit(config_path)
    logmod.configure("warning", json=False)
    ok, detail = fence_self(cfg, logmod.get().bind(node=cfg.node))
    click.echo(f"fence-self on {cfg.node}: {'done' if ok else 'FAILED'}: {detail}")
    sys.exit(0 if ok else 1)


def _fence_self_dry_run(
    config_path: str, dry_run: Callable[[Config], tuple[bool, str]]
) -> NoReturn:
    """The peer's side of check-fencing: one line, exit 0 when this node could fence itself."""
    from failoverd.fencecheck import dry_run_line  # noqa: PLC0415

    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        problems = [f"configuration: {p}" for p in e.problems]
        click.echo(dry_run_line(socket.gethostname(), problems))
        sys.exit(1)
    ok, line = dry_run(cfg)
    click.echo(line)
    sys.exit(0 if ok else 1)

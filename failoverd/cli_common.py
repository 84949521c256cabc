"""What both command-line programs share: the exit codes, one-line errors, usage errors that
exit EXIT_USAGE, and loading a configuration or exiting 78. Only the programs map errors to exit
codes; this is where they do it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from failoverd.config import (
    Config,
    ConfigError,
    Problem,
    load_config,
)

DEFAULT_CONFIG = "/etc/failoverd/failoverd.toml"
ADMIN_CONFIG = "/etc/failoverd/failoverctl.toml"
CONFIG_HELP = "configuration file (default $FAILOVERD_CONFIG or /etc/failoverd/failoverd.toml)"
CTL_CONFIG_HELP = (
    "a node's configuration, or an admin host's file with only [cluster] (name, "
    "zookeeper_hosts, chroot, credentials_file); default $FAILOVERD_CONFIG, else "
    f"{DEFAULT_CONFIG} if it exists, else {ADMIN_CONFIG}. Also after the command"
)

# Exit codes, one table for both programs. `failoverctl status` owns 0-3 (the monitoring-plugin
# convention: healthy, degraded, critical, unknown), so the tools' own errors stay out of that
# range: a typo run as a check must not read as "critical" (click's usage code is 2).
EXIT_FAILED = 1  # tried and not done: not confirmed, not completed in time, ZooKeeper unreachable
EXIT_STARTUP = 1  # the daemon could not start
EXIT_USAGE = 64  # EX_USAGE: the command line is wrong, judged from it and the configuration alone
EXIT_REFUSED = 75  # EX_TEMPFAIL: the cluster's state refuses it (paused, active already...); retry
EXIT_CONFIG = 78  # EX_CONFIG: the configuration file has problems


def prog() -> str:
    """The program's name as the user typed it."""
    ctx = click.get_current_context(silent=True)
    name = ctx.find_root().info_name if ctx is not None else None
    return name or Path(sys.argv[0]).name


JSON_ERRORS = "failoverctl.json_errors"
"""ctx.meta key: the command promised a JSON document on stdout (status --json), errors too."""


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """One clear line on stderr, never a traceback; with status --json also a JSON document
    with ``error`` on stdout, so a monitoring script always has something to parse."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(JSON_ERRORS):
        target = ctx.meta.get(JSON_ERRORS + ".target")
        cluster = getattr(target, "cluster", None)  # failoverctl's Target, once resolved
        doc = {
            "cluster": None if cluster is None else cluster.name,
            "chroot": None if cluster is None else cluster.chroot,
            "state": "unknown",
            "exit_code": code,
            "error": message,
        }
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    click.echo(f"{prog()}: error: {message}", err=True)
    sys.exit(code)


# click >= 8.2 raises this for a bare group (`failoverctl`): its help is the right answer.
_NO_ARGS_IS_HELP: tuple[type[Exception], ...] = tuple(
    t for t in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if t is not None
)


class UsageExit(click.ClickException):
    """click's usage error, said in one line like every other error, and with EXIT_USAGE."""

    exit_code = EXIT_USAGE

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(error.format_message().rstrip("."))
        self.error = error
        self.ctx = error.ctx

    def show(self, file: Any = None) -> None:
        if isinstance(self.error, _NO_ARGS_IS_HELP):
            self.error.show(file)
            return
        if self.ctx is None:
            click.echo(f"{prog()}: error: {self.message}", err=True)
            return
        name = self.ctx.find_root().info_name
        help_hint = f"{self.ctx.command_path} -h"
        click.echo(f"{name}: error: {self.message} (see '{help_hint}')", err=True)


class Group(click.Group):
    """A command group whose usage errors exit EXIT_USAGE, not click's 2 ("critical")."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:
            raise UsageExit(e) from e

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise UsageExit(e) from e


POSITIVE = click.FloatRange(min=0, min_open=True)
F = TypeVar("F", bound=Callable[..., Any])


def load_or_exit(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        config_failed(e.problems)


def config_failed(problems: tuple[Problem, ...]) -> NoReturn:
    """Every problem on stderr, exit 78 (in JSON mode also the document, via _fail)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(JSON_ERRORS):
        fail("; ".join(str(p) for p in problems), EXIT_CONFIG)
    for problem in problems:
        click.echo(str(problem), err=True)
    sys.exit(EXIT_CONFIG)

"""Typed configuration for failoverd, loaded from a TOML file.

Why so strict: a typo in a failover daemon's configuration otherwise surfaces at 3 a.m., in the
middle of the outage it was meant to handle. So every key is known, every value is typed and
range-checked, defaults are filled in wherever a safe one exists, and every problem names the
file, the dotted key and what is wrong. All problems are collected and reported together, so an
operator fixes the file in one pass instead of one error per restart.

The result is a tree of frozen dataclasses (tuples, not lists): the rest of the daemon can share it
between threads and compare it without defensive copies.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import math
import re
import tomllib
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

__all__ = [
    "CHECK_TYPES",
    "CheckConfig",
    "CheckType",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "FailoverPolicy",
    "FailsafeConfig",
    "FencingConfig",
    "HooksConfig",
    "Member",
    "MetricsConfig",
    "PostgresConfig",
    "Problem",
    "ReplicationConfig",
    "Timings",
    "VipConfig",
    "effective_config_toml",
    "load_config",
    "parse_config",
]

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
CheckType = Literal["http", "postgres", "squid", "command"]
RejoinMode = Literal["auto", "manual"]
REJOIN_MODES: Final[tuple[RejoinMode, ...]] = ("auto", "manual")
SyncMode = Literal["async", "sync", "strict"]
SYNC_MODES: Final[tuple[SyncMode, ...]] = ("async", "sync", "strict")
CHECK_TYPES: Final[tuple[CheckType, ...]] = ("http", "postgres", "squid", "command")
_CHECK_TYPE_NAMES: Final[dict[str, CheckType]] = {name: name for name in CHECK_TYPES}

DEFAULT_IDENTITY_FILE: Final = Path("/etc/failoverd/id_ed25519")
DEFAULT_KNOWN_HOSTS: Final = Path("/etc/failoverd/known_hosts")
DEFAULT_PG_BIN_DIR: Final = Path("/usr/lib/postgresql/15/bin")
DEFAULT_MAX_LAG: Final = 16 * 1024 * 1024

# Node, cluster and check names end up in ZooKeeper paths, metric labels and log lines.
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NAME_RULE: Final = "letters, digits, '_', '.' and '-', starting with a letter or digit"
# Sizes: PostgreSQL's memory units as postgresql.conf writes them (kB, MB, GB, TB: multiples of
# 1024, not of 1000) and their IEC names (KiB, MiB, GiB, TiB), which say the same unambiguously.
# Case-sensitive, as in postgresql.conf: "16mb" is refused rather than guessed at.
_SIZE_RE: Final = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")
_SIZE_UNITS: Final = {
    "": 1,
    "B": 1,
    "kB": 1024,
    "MB": 1024**2,
    "GB": 1024**3,
    "TB": 1024**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}
_IFNAMSIZ: Final = 16  # Linux interface names are at most IFNAMSIZ - 1 bytes
_NO_VIP: Final = ipaddress.IPv4Interface("0.0.0.0/32")  # placeholder while [vip] has a problem


# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file; `key` is a dotted path, empty for the whole file."""

    path: Path
    key: str
    message: str

    def __str__(self) -> str:
        if self.key:
            return f"{self.path}: {self.key}: {self.message}"
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a config file, so all of them can be fixed in one pass."""

    problems: tuple[Problem, ...]

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


# --------------------------------------------------------------------------------------------
# The configuration tree


@dataclass(frozen=True)
class Member:
    """One of the two nodes; `address` is where the peer reaches it (SSH, PostgreSQL)."""

    name: str
    address: str
    ssh_port: int = 22
    db_port: int = 5432


@dataclass(frozen=True)
class ClusterConfig:
    """Which ZooKeeper ensemble and chroot hold this cluster's lease (prod and stage differ)."""

    name: str
    zookeeper_hosts: tuple[str, ...]
    chroot: str
    credentials_file: Path | None = None
    # Read from credentials_file at load time; kept out of repr and of the effective TOML.
    credentials: tuple[str, str] | None = field(default=None, repr=False, metadata={"toml": False})


@dataclass(frozen=True)
class VipConfig:
    """The service IP that only the active node may hold."""

    address: IPInterface
    interface: str
    arp_count: int = 3


@dataclass(frozen=True)
class FencingConfig:
    """How the new active reaches the old one over SSH to run `fence-self` there."""

    ssh_user: str = "root"
    identity_file: Path = DEFAULT_IDENTITY_FILE
    known_hosts: Path = DEFAULT_KNOWN_HOSTS
    connect_timeout: float = 0.3
    command_timeout: float = 5.0
    command: str = "failoverd fence-self"
    # The second level, tried when SSH reaches the peer but fence-self fails: a command in the
    # style of fence-agents (fence_ipmilan, a PDU, the lab's power switch). argv, no shell;
    # "{node}" and "{address}" are replaced by the peer's name and address. Exit 0: it is off.
    power_command: tuple[str, ...] | None = None
    power_timeout: float = 10.0


@dataclass(frozen=True)
class FailsafeConfig:
    """The direct peer channel for pledges: an active cut off from ZooKeeper but not from its
    peer keeps serving while the peer promises not to take the lease (DESIGN, "ZooKeeper
    trouble"). Messages carry an HMAC over the shared secret in secret_file (mode 0600)."""

    enabled: bool = False
    secret_file: Path | None = None
    port: int = 9642
    pledge_ttl: float = 2.0
    pledge_margin: float = 0.2
    store_dir: Path = Path("/run/failoverd")  # granted pledges, kept across daemon restarts


@dataclass(frozen=True)
class Timings:
    """Seconds. The loader derives self_fence_after (0.5 x session_timeout) and
    roundtrip_timeout (self_fence_after / 4) when they are not given; the class defaults below
    are those values for the default session_timeout."""

    session_timeout: float = 2.0
    self_fence_after: float = 1.0
    loop_interval: float = 0.1
    roundtrip_timeout: float = 0.25
    publish_every: float = 1.0
    min_failover_interval: float = 30.0
    action_timeout: float = 10.0
    fence_retry_after: float = 5.0
    start_timeout: float = 5.0
    rejoin_timeout: float = 600.0


@dataclass(frozen=True)
class FailoverPolicy:
    """When the passive may take over: how much data it may lose, how stale it may be."""

    max_lag_on_failover: int = DEFAULT_MAX_LAG
    max_replication_silence: float = 10.0
    nofailover: bool = False


@dataclass(frozen=True)
class PostgresConfig:
    """The managed local PostgreSQL; absent when the cluster manages no database."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    dbname: str = "postgres"
    password_file: Path | None = None
    data_dir: Path | None = None
    # postgresql.conf lives here, not in data_dir (Debian: /etc/postgresql/15/main/postgresql.conf)
    config_file: Path | None = None
    bin_dir: Path = DEFAULT_PG_BIN_DIR
    service_user: str = "postgres"
    # auto: a stopped or diverged node rejoins by itself (follow, pg_rewind, or a clone);
    # manual: it waits for `failoverctl rejoin NODE`.
    rejoin: RejoinMode = "auto"
    # A clone (pg_basebackup) may replace the data directory when a rewind cannot work; the old
    # directory is kept aside until the clone streams.
    reclone: bool = True


@dataclass(frozen=True)
class ReplicationConfig:
    """What an acknowledged commit promises. async: it is on the primary. sync: also on the
    named standby while one is healthy; one that leaves commits waiting sync_drop_after seconds
    is dropped, and the commits go through. strict: never acknowledged without the standby."""

    mode: SyncMode = "sync"
    sync_drop_after: float = 5.0


@dataclass(frozen=True)
class CheckConfig:
    """One health check ([checks.<name>]); the loader always sets slow_after (default timeout)."""

    name: str = field(metadata={"toml": False})  # it is the table's key
    type: CheckType
    interval: float = 0.5
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2
    slow_after: float | None = None
    url: str | None = None
    expect_status: int = 200
    command: tuple[str, ...] | None = None
    cache_manager_url: str | None = None


@dataclass(frozen=True)
class MetricsConfig:
    """Where Prometheus scrapes this daemon."""

    enabled: bool = True
    listen_address: str = "127.0.0.1"
    port: int = 9641


@dataclass(frozen=True)
class HooksConfig:
    """An operator's command run on role changes (argv, no shell)."""

    on_role_change: tuple[str, ...] = ()
    timeout: float = 10.0


@dataclass(frozen=True)
class Config:
    """The whole validated configuration of one node."""

    path: Path = field(metadata={"toml": False})
    node: str
    cluster: ClusterConfig
    members: tuple[Member, ...]
    vip: VipConfig | None  # None: no service IP to manage
    fencing: FencingConfig
    timings: Timings
    failover: FailoverPolicy
    postgres: PostgresConfig | None
    checks: tuple[CheckConfig, ...]
    metrics: MetricsConfig
    hooks: HooksConfig
    replication: ReplicationConfig = ReplicationConfig()
    failsafe: FailsafeConfig = FailsafeConfig()

    @property
    def self_member(self) -> Member:
        """The member this daemon runs as."""
        for member in self.members:
            if member.name == self.node:
                return member
        raise LookupError(f"node {self.node!r} is not in members")

    @property
    def replication_mode(self) -> SyncMode:
        """The mode in force: without a managed database there is nothing to replicate, and the
        node runs as async whatever ``[replication] mode`` says."""
        return self.replication.mode if self.postgres is not None else "async"

    @property
    def peer(self) -> Member:
        """The other member: the one to fence, probe and replicate from."""
        others = [m for m in self.members if m.name != self.node]
        if len(others) != 1:
            raise LookupError(f"node {self.node!r} has no single peer in members")
        return others[0]


# --------------------------------------------------------------------------------------------
# Allowed keys, one tuple per table (also the order of the effective TOML)


def _keys(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("toml", True))


_TOP_KEYS: Final = _keys(Config)
_CLUSTER_KEYS: Final = _keys(ClusterConfig)
_MEMBER_KEYS: Final = _keys(Member)
_VIP_KEYS: Final = _keys(VipConfig)
_FENCING_KEYS: Final = _keys(FencingConfig)
_TIMINGS_KEYS: Final = _keys(Timings)
_FAILOVER_KEYS: Final = _keys(FailoverPolicy)
_POSTGRES_KEYS: Final = _keys(PostgresConfig)
_REPLICATION_KEYS: Final = _keys(ReplicationConfig)
_METRICS_KEYS: Final = _keys(MetricsConfig)
_HOOKS_KEYS: Final = _keys(HooksConfig)
_FAILSAFE_KEYS: Final = _keys(FailsafeConfig)
FAILSAFE_SECRET_MIN_BYTES: Final = 32
_CHECK_COMMON_KEYS: Final = ("type", "interval", "timeout", "rise", "fall", "slow_after")
_CHECK_TYPE_KEYS: Final[dict[CheckType, tuple[str, ...]]] = {
    "http": ("url", "expect_status"),
    "postgres": (),
    "squid": ("url", "expect_status", "cache_manager_url"),
    "command": ("command",),
}


def _check_keys(check_type: CheckType) -> tuple[str, ...]:
    return _CHECK_COMMON_KEYS + _CHECK_TYPE_KEYS[check_type]


_ALL_CHECK_KEYS: Final = _CHECK_COMMON_KEYS + tuple(
    dict.fromkeys(k for keys in _CHECK_TYPE_KEYS.values() for k in keys)
)


# --------------------------------------------------------------------------------------------
# Reading tables: every getter records a problem and returns a placeholder instead of raising,
# so that validation goes on and reports everything. A Config is only returned when no problem
# was recorded, so placeholders never escape.

_MISSING: Final = object()


def _describe(value: object) -> str:
    """How a TOML value is named in messages ("string '2s'", "boolean true")."""
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {shown!r}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return f"date/time {value.isoformat()}"
    return type(value).__name__


def _expected(what: str, value: object) -> str:
    return f"expected {what}, got {_describe(value)}"


def _num(value: float) -> str:
    """A number as an operator wrote it: 2 rather than 2.0."""
    return f"{value:g}"


class _Collector:
    """The problems found so far in one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def add(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.path, key, message))


class _Table:
    """One TOML table being read, with its dotted prefix for messages.

    `quiet` tables stand in for a table that had the wrong type: its missing keys are not worth
    reporting on top of that.
    """

    def __init__(
        self, out: _Collector, prefix: str, data: Mapping[str, Any], *, quiet: bool = False
    ) -> None:
        self.out = out
        self.prefix = prefix
        self.data = data
        self.quiet = quiet
        self.failed: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def problem(self, name: str, message: str) -> None:
        self.failed.add(name)
        self.out.add(self.key(name), message)

    def ok(self, *names: str) -> bool:
        """Whether these keys were read without a problem (cross-checks need valid inputs)."""
        return not self.failed.intersection(names)

    def reject_unknown(
        self, allowed: Sequence[str], foreign: Mapping[str, str] | None = None
    ) -> None:
        """Unknown keys are errors, with the closest valid name: typos must not be ignored."""
        for name in self.data:
            if name in allowed:
                continue
            if foreign and name in foreign:
                self.problem(name, foreign[name])
                continue
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problem(name, f"unknown key{hint}")

    def get(self, name: str, *, required: bool = False) -> Any:
        if name not in self.data:
            if required:
                self.failed.add(name)
                if not self.quiet:
                    self.out.add(self.key(name), "missing required key")
            return _MISSING
        return self.data[name]

    def table(self, name: str) -> _Table:
        """A sub-table; an absent one reads as empty, so its required keys get reported."""
        value = self.get(name)
        if value is _MISSING:
            return _Table(self.out, self.key(name), {}, quiet=self.quiet)
        if not isinstance(value, dict):
            self.problem(name, _expected(f"a table ([{self.key(name)}])", value))
            return _Table(self.out, self.key(name), {}, quiet=True)
        return _Table(self.out, self.key(name), value, quiet=self.quiet)

    def string(
        self, name: str, default: str | None = None, *, pattern: re.Pattern[str] | None = None
    ) -> str:
        """A non-empty string; required when there is no default."""
        value = self.get(name, required=default is None)
        if value is _MISSING:
            return default or ""
        if not isinstance(value, str):
            self.problem(name, _expected("a string", value))
            return default or ""
        if not value:
            self.problem(name, "must not be empty")
        elif pattern is not None and not pattern.fullmatch(value):
            self.problem(name, f"invalid name {value!r}: use {_NAME_RULE}")
        return value

    def number(self, name: str, default: float) -> float:
        """A finite number of seconds (or similar) above zero; ints are fine, bools are not."""
        value = self.get(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(name, _expected("a number", value))
            return default
        number = float(value)
        if not math.isfinite(number):
            self.problem(name, f"must be a finite number, got {value}")
            return default
        if number <= 0:
            self.problem(name, f"must be greater than 0, got {_num(number)}")
            return default
        return number

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        value = self.get(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, _expected("an integer", value))
            return default
        if maximum is not None and not minimum <= value <= maximum:
            self.problem(name, f"must be between {minimum} and {maximum}, got {value}")
            return default
        if value < minimum:
            self.problem(name, f"must be at least {minimum}, got {value}")
            return default
        return value

    def port(self, name: str, default: int) -> int:
        value = self.get(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, _expected("an integer port", value))
            return default
        if not 1 <= value <= 65535:
            self.problem(name, f"port must be in 1..65535, got {value}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(name, _expected("a boolean (true or false)", value))
            return default
        return value

    def optional_path(self, name: str) -> Path | None:
        """An absolute path: the daemon runs with cwd '/', check-config from a shell."""
        value = self.get(name)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            self.problem(name, _expected("a path string", value))
            return None
        if not value.startswith("/"):
            self.problem(name, f"must be an absolute path, got {value!r}")
            return None
        return Path(value)

    def path(self, name: str, default: Path) -> Path:
        value = self.optional_path(name)
        return default if value is None else value

    def strings(self, name: str, *, required: bool = False) -> tuple[str, ...] | None:
        """An array of strings (None when absent)."""
        value = self.get(name, required=required)
        if value is _MISSING:
            return None
        if not isinstance(value, list):
            self.problem(name, _expected("an array of strings", value))
            return None
        result: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.problem(f"{name}[{i}]", _expected("a string", item))
                self.failed.add(name)
            else:
                result.append(item)
        return tuple(result) if self.ok(name) else None

    def ip_address(self, name: str, default: str | None = None) -> str:
        """An IP address in canonical form, so that comparisons between addresses work."""
        value = self.string(name, default)
        if not self.ok(name) or value == default:
            return value
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            self.problem(name, f"invalid IP address {value!r}")
            return value

    def http_url(self, name: str, *, required: bool) -> str | None:
        if name not in self.data and not required:
            return None
        value = self.string(name)
        if not self.ok(name):
            return None
        parts = urllib.parse.urlsplit(value)
        if parts.scheme != "http" or not parts.netloc:
            self.problem(name, f"must be an http:// URL, got {value!r}")
            return None
        try:
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            self.problem(name, f"invalid port in URL {value!r}")
            return None
        return value


# --------------------------------------------------------------------------------------------
# Sections


def _read_cluster(top: _Table) -> ClusterConfig:
    t = top.table("cluster")
    t.reject_unknown(_CLUSTER_KEYS)
    name = t.string("name", pattern=_NAME_RE)
    hosts = _read_zookeeper_hosts(t)
    chroot = t.string("chroot", f"/failoverd/{name}")
    if t.ok("chroot") and "chroot" in t.data:
        error = _chroot_error(chroot)
        if error:
            t.problem("chroot", error)
    credentials_file = t.optional_path("credentials_file")
    credentials = None
    if credentials_file is not None:
        credentials = _read_credentials(t, credentials_file)
    return ClusterConfig(name, hosts, chroot, credentials_file, credentials)


def _read_zookeeper_hosts(t: _Table) -> tuple[str, ...]:
    hosts = t.strings("zookeeper_hosts", required=True)
    if hosts is None:
        return ()
    if not hosts:
        t.problem("zookeeper_hosts", "must list at least one host:port")
    for i, entry in enumerate(hosts):
        error = _host_port_error(entry)
        if error:
            t.problem(f"zookeeper_hosts[{i}]", error)
    return hosts


def _host_port_error(entry: str) -> str | None:
    host, sep, port = entry.rpartition(":")
    if not sep or not host:
        return f"expected 'host:port', e.g. '10.77.0.5:2181', got {entry!r}"
    if "/" in entry:
        return f"expected 'host:port' without a path, got {entry!r} (the chroot is cluster.chroot)"
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        return f"an IPv6 host must be in brackets, e.g. '[::1]:2181', got {entry!r}"
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"invalid IPv6 address in {entry!r}"
    if any(ch.isspace() for ch in host):
        return f"invalid host in {entry!r}"
    if not port.isascii() or not port.isdigit():
        return f"port must be a number in 1..65535, got {port!r} in {entry!r}"
    if not 1 <= int(port) <= 65535:
        return f"port must be in 1..65535, got {int(port)} in {entry!r}"
    return None


def _chroot_error(chroot: str) -> str | None:
    """ZooKeeper paths: absolute, no trailing '/', no empty, '.' or '..' components."""
    if not chroot.startswith("/"):
        return f"must start with '/', got {chroot!r}"
    if chroot.endswith("/"):
        return f"must not end with '/', got {chroot!r}"
    if any(part in ("", ".", "..") for part in chroot[1:].split("/")):
        return f"must not contain empty, '.' or '..' path components, got {chroot!r}"
    return None


def _read_failsafe(top: _Table, timings: Timings) -> FailsafeConfig:
    t = top.table("failsafe")
    t.reject_unknown(_FAILSAFE_KEYS)
    d = FailsafeConfig()
    enabled = t.boolean("enabled", d.enabled)
    secret_file = t.optional_path("secret_file")
    ttl = t.number("pledge_ttl", d.pledge_ttl)
    margin = t.number("pledge_margin", d.pledge_margin)
    if enabled and secret_file is None:
        t.problem("secret_file", "required when the failsafe is enabled")
    elif enabled and secret_file is not None:
        _check_secret_file(t, secret_file)
    if t.ok("pledge_ttl", "pledge_margin") and margin >= ttl / 2:
        t.problem(
            "pledge_margin",
            f"must be below half of pledge_ttl ({_num(margin)} >= {_num(ttl)} / 2): the active "
            "would hold each pledge for less time than it takes to renew it",
        )
    if enabled and t.ok("pledge_ttl") and ttl < timings.session_timeout:
        t.problem(
            "pledge_ttl",
            f"must be at least timings.session_timeout ({_num(ttl)} < "
            f"{_num(timings.session_timeout)}): an active whose daemon freezes while it serves on "
            "a pledge is stopped by the watchdog and ExecStopPost, and that must be done before "
            "the pledge lapses, as it must be before a session expires",
        )
    if enabled and t.ok("pledge_ttl") and ttl <= timings.loop_interval * 4:
        t.problem(
            "pledge_ttl",
            f"must be above 4 x timings.loop_interval ({_num(ttl)} <= 4 x "
            f"{_num(timings.loop_interval)}): a pledge must outlive several renewals",
        )
    return FailsafeConfig(
        enabled=enabled,
        secret_file=secret_file,
        port=t.port("port", d.port),
        pledge_ttl=ttl,
        pledge_margin=margin,
        store_dir=t.path("store_dir", d.store_dir),
    )


def _check_secret_file(t: _Table, path: Path) -> None:
    """The shared secret: readable, only by its owner, long enough; never shown."""
    try:
        st = path.stat()
        size = len(path.read_bytes().strip())
    except OSError as exc:
        t.problem("secret_file", f"cannot read {path}: {exc.strerror or exc}")
        return
    if st.st_mode & 0o077:
        t.problem(
            "secret_file",
            f"{path} is readable by others (mode {st.st_mode & 0o777:o}): chmod 600 it",
        )
    if size < FAILSAFE_SECRET_MIN_BYTES:
        t.problem(
            "secret_file",
            f"{path} holds {size} bytes; at least {FAILSAFE_SECRET_MIN_BYTES} are needed "
            "(e.g. head -c 32 /dev/urandom | base64 > FILE)",
        )


def _read_credentials(t: _Table, path: Path) -> tuple[str, str] | None:
    """Read "user:password" for ZooKeeper digest auth; messages never show the content."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        t.problem("credentials_file", f"cannot read {path}: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError:
        t.problem("credentials_file", f"{path} is not valid UTF-8")
        return None
    line = text.rstrip("\r\n")
    user, sep, password = line.partition(":")
    if "\n" in line or not sep or not user or not password:
        t.problem("credentials_file", f"{path} must hold a single line 'user:password'")
        return None
    return user, password


def _read_members(top: _Table) -> tuple[Member, ...]:
    raw = top.get("members", required=True)
    if raw is _MISSING:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        top.problem("members", _expected("an array of tables ([[members]])", raw))
        return ()
    if len(raw) != 2:
        top.problem("members", f"expected exactly two members, got {len(raw)}")
    read: list[tuple[_Table, Member]] = []
    for i, item in enumerate(raw):
        t = _Table(top.out, f"members[{i}]", item)
        t.reject_unknown(_MEMBER_KEYS)
        member = Member(
            name=t.string("name", pattern=_NAME_RE),
            address=t.ip_address("address"),
            ssh_port=t.port("ssh_port", 22),
            db_port=t.port("db_port", 5432),
        )
        read.append((t, member))
    for attr in ("name", "address"):
        seen: dict[str, str] = {}
        for t, member in read:
            value = getattr(member, attr)
            if not t.ok(attr):
                continue
            if value in seen:
                t.problem(attr, f"duplicate member {attr} {value!r} (also {seen[value]})")
            else:
                seen[value] = t.key(attr)
    return tuple(member for _, member in read)


def _read_vip(top: _Table) -> VipConfig | None:
    """The service IP; a cluster without one (clients find the primary otherwise) omits it."""
    if "vip" not in top.data:
        return None
    t = top.table("vip")
    t.reject_unknown(_VIP_KEYS)
    text = t.string("address")
    address: IPInterface = _NO_VIP
    if t.ok("address"):
        if "/" not in text:
            t.problem("address", "VIP must be address/prefix, e.g. 10.77.0.100/24")
        else:
            try:
                address = ipaddress.ip_interface(text)
            except ValueError:
                t.problem("address", f"invalid address/prefix {text!r}, e.g. 10.77.0.100/24")
    interface = t.string("interface")
    if t.ok("interface") and (
        len(interface.encode()) >= _IFNAMSIZ
        or interface in (".", "..")
        or any(ch in "/:" or ch.isspace() for ch in interface)
    ):
        t.problem("interface", f"invalid network interface name {interface!r}")
    arp_count = t.integer("arp_count", 3, minimum=0)
    return VipConfig(address, interface, arp_count)


def _read_fencing(top: _Table) -> FencingConfig:
    t = top.table("fencing")
    t.reject_unknown(_FENCING_KEYS)
    d = FencingConfig()
    return FencingConfig(
        ssh_user=t.string("ssh_user", d.ssh_user),
        identity_file=t.path("identity_file", d.identity_file),
        known_hosts=t.path("known_hosts", d.known_hosts),
        connect_timeout=t.number("connect_timeout", d.connect_timeout),
        command_timeout=t.number("command_timeout", d.command_timeout),
        command=t.string("command", d.command),
        power_command=_read_power_command(t),
        power_timeout=t.number("power_timeout", d.power_timeout),
    )


def _read_power_command(t: _Table) -> tuple[str, ...] | None:
    argv = t.strings("power_command")
    if argv is None:
        return None
    if not argv or not argv[0]:
        t.problem("power_command", 'must name a program: an array like ["fence_ipmilan", ...]')
        return None
    unknown = sorted(
        {f for arg in argv for f in re.findall(r"\{(\w*)\}", arg)} - {"node", "address"}
    )
    if unknown:
        t.problem(
            "power_command",
            f"unknown placeholder {{{unknown[0]}}}: only {{node}} and {{address}} are replaced",
        )
        return None
    return argv


def _read_timings(top: _Table) -> Timings:
    """Timings, derived defaults and the relations the safety argument rests on."""
    t = top.table("timings")
    t.reject_unknown(_TIMINGS_KEYS)
    d = Timings()
    session = t.number("session_timeout", d.session_timeout)
    fence_after = t.number("self_fence_after", 0.5 * session)
    if t.ok("session_timeout", "self_fence_after") and fence_after >= session:
        t.problem(
            "self_fence_after",
            f"must be strictly below session_timeout (self_fence_after = {_num(fence_after)}, "
            f"session_timeout = {_num(session)}): the active must be down before its "
            "ZooKeeper session can expire",
        )
    roundtrip = t.number("roundtrip_timeout", fence_after / 4)
    if t.ok("session_timeout", "self_fence_after", "roundtrip_timeout") and (
        roundtrip >= fence_after
    ):
        t.problem(
            "roundtrip_timeout",
            f"must be below self_fence_after (roundtrip_timeout = {_num(roundtrip)}, "
            f"self_fence_after = {_num(fence_after)})",
        )
    loop = t.number("loop_interval", d.loop_interval)
    if (
        t.ok("session_timeout", "self_fence_after", "roundtrip_timeout", "loop_interval")
        and loop + roundtrip >= fence_after
    ):
        t.problem(
            "loop_interval",
            f"loop_interval + roundtrip_timeout ({_num(loop)} + {_num(roundtrip)} = "
            f"{_num(loop + roundtrip)}) must be below self_fence_after ({_num(fence_after)}), "
            "or the active self-fences between two healthy round-trips",
        )
    return Timings(
        session_timeout=session,
        self_fence_after=fence_after,
        loop_interval=loop,
        roundtrip_timeout=roundtrip,
        publish_every=t.number("publish_every", d.publish_every),
        min_failover_interval=t.number("min_failover_interval", d.min_failover_interval),
        action_timeout=t.number("action_timeout", d.action_timeout),
        fence_retry_after=t.number("fence_retry_after", d.fence_retry_after),
        start_timeout=t.number("start_timeout", d.start_timeout),
        rejoin_timeout=t.number("rejoin_timeout", d.rejoin_timeout),
    )


def _read_size(t: _Table, name: str, default: int) -> int:
    """Bytes, as an integer or a PostgreSQL-style size string ("16MB", "512kB", "1GB")."""
    value = t.get(name)
    if value is _MISSING:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            t.problem(name, f"must be at least 0 bytes, got {value}")
            return default
        return value
    if not isinstance(value, str):
        t.problem(name, _expected("bytes as an integer or a size string like '16MB'", value))
        return default
    match = _SIZE_RE.fullmatch(value)
    units = ", ".join(u for u in _SIZE_UNITS if u)
    if match is None:
        t.problem(name, f"invalid size {value!r}: expected a number and a unit ({units})")
        return default
    digits, unit = match.groups()
    if unit not in _SIZE_UNITS:
        t.problem(name, f"invalid size unit {unit!r} in {value!r}: use {units} (multiples of 1024)")
        return default
    return int(digits) * _SIZE_UNITS[unit]


def _read_failover(top: _Table) -> FailoverPolicy:
    t = top.table("failover")
    t.reject_unknown(_FAILOVER_KEYS)
    d = FailoverPolicy()
    return FailoverPolicy(
        max_lag_on_failover=_read_size(t, "max_lag_on_failover", d.max_lag_on_failover),
        max_replication_silence=t.number("max_replication_silence", d.max_replication_silence),
        nofailover=t.boolean("nofailover", d.nofailover),
    )


def _read_postgres(top: _Table) -> PostgresConfig | None:
    if "postgres" not in top.data:
        return None
    t = top.table("postgres")
    t.reject_unknown(_POSTGRES_KEYS)
    d = PostgresConfig()
    return PostgresConfig(
        host=t.string("host", d.host),
        port=t.port("port", d.port),
        user=t.string("user", d.user),
        dbname=t.string("dbname", d.dbname),
        password_file=t.optional_path("password_file"),
        data_dir=t.optional_path("data_dir"),
        config_file=t.optional_path("config_file"),
        bin_dir=t.path("bin_dir", d.bin_dir),
        service_user=t.string("service_user", d.service_user),
        rejoin=_read_rejoin_mode(t, d.rejoin),
        reclone=t.boolean("reclone", d.reclone),
    )


def _read_replication(top: _Table, postgres: PostgresConfig | None) -> ReplicationConfig:
    t = top.table("replication")
    t.reject_unknown(_REPLICATION_KEYS)
    d = ReplicationConfig()
    text = t.string("mode", d.mode)
    mode = next((m for m in SYNC_MODES if m == text), None)
    if mode is None:
        t.problem("mode", f"must be one of {', '.join(SYNC_MODES)}, got {text!r}")
        mode = d.mode
    if "replication" in top.data and postgres is None and mode != "async":
        t.problem("mode", f"{mode!r} needs a [postgres] table: there is no database to replicate")
    return ReplicationConfig(
        mode=mode, sync_drop_after=t.number("sync_drop_after", d.sync_drop_after)
    )


def _read_rejoin_mode(t: _Table, default: RejoinMode) -> RejoinMode:
    text = t.string("rejoin", default)
    for mode in REJOIN_MODES:
        if text == mode:
            return mode
    if t.ok("rejoin"):
        t.problem("rejoin", f"must be one of {', '.join(REJOIN_MODES)}, got {text!r}")
    return default


def _read_checks(top: _Table, postgres: PostgresConfig | None) -> tuple[CheckConfig, ...]:
    checks = top.table("checks")
    result: list[CheckConfig] = []
    for name, raw in checks.data.items():
        if not _NAME_RE.fullmatch(name):
            checks.problem(name, f"invalid check name {name!r}: use {_NAME_RULE}")
            continue
        if not isinstance(raw, dict):
            checks.problem(name, _expected(f"a table ([checks.{name}])", raw))
            continue
        result.append(_read_check(_Table(top.out, checks.key(name), raw), name, postgres))
    return tuple(result)


def _read_check(t: _Table, name: str, postgres: PostgresConfig | None) -> CheckConfig:
    type_text = t.string("type")
    check_type: CheckType = "command"  # placeholder on error
    if t.ok("type"):
        known = _CHECK_TYPE_NAMES.get(type_text)
        if known is not None:
            check_type = known
        else:
            close = difflib.get_close_matches(type_text, CHECK_TYPES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            t.problem(
                "type",
                f"unknown check type {type_text!r} ({hint}expected one of "
                f"{', '.join(CHECK_TYPES)})",
            )
    if not t.ok("type"):
        # Without a type we cannot tell which keys belong; check spelling against all of them.
        t.reject_unknown(_ALL_CHECK_KEYS)
        return CheckConfig(name=name, type=check_type)

    allowed = _check_keys(check_type)
    foreign = {
        key: f"does not apply to a check of type {check_type!r} (only to "
        f"{', '.join(ct for ct in CHECK_TYPES if key in _CHECK_TYPE_KEYS[ct])})"
        for key in _ALL_CHECK_KEYS
        if key not in allowed
    }
    t.reject_unknown(allowed, foreign)
    if check_type == "postgres" and postgres is None:
        t.problem("type", "a postgres check needs a [postgres] section")

    d = CheckConfig(name=name, type=check_type)
    timeout = t.number("timeout", d.timeout)
    slow_after = t.number("slow_after", timeout)
    if t.ok("timeout", "slow_after") and slow_after > timeout:
        t.problem(
            "slow_after",
            f"must not exceed timeout (slow_after = {_num(slow_after)}, timeout = {_num(timeout)})",
        )
    url = cache_manager_url = None
    command = None
    expect_status = d.expect_status
    if "url" in allowed:
        url = t.http_url("url", required=True)
        expect_status = t.integer("expect_status", d.expect_status, minimum=100, maximum=599)
    if "cache_manager_url" in allowed:
        cache_manager_url = t.http_url("cache_manager_url", required=False)
    if "command" in allowed:
        command = t.strings("command", required=True)
        if command is not None and (not command or not command[0]):
            t.problem("command", "must be a non-empty array: the program, then its arguments")
    return CheckConfig(
        name=name,
        type=check_type,
        interval=t.number("interval", d.interval),
        timeout=timeout,
        rise=t.integer("rise", d.rise, minimum=1),
        fall=t.integer("fall", d.fall, minimum=1),
        slow_after=slow_after,
        url=url,
        expect_status=expect_status,
        command=command,
        cache_manager_url=cache_manager_url,
    )


def _read_metrics(top: _Table) -> MetricsConfig:
    t = top.table("metrics")
    t.reject_unknown(_METRICS_KEYS)
    d = MetricsConfig()
    return MetricsConfig(
        enabled=t.boolean("enabled", d.enabled),
        listen_address=t.ip_address("listen_address", d.listen_address),
        port=t.port("port", d.port),
    )


def _read_hooks(top: _Table) -> HooksConfig:
    t = top.table("hooks")
    t.reject_unknown(_HOOKS_KEYS)
    d = HooksConfig()
    argv = t.strings("on_role_change")
    if argv and not argv[0]:
        t.problem("on_role_change", "the program (first element) must not be empty")
    return HooksConfig(
        on_role_change=d.on_role_change if argv is None else argv,
        timeout=t.number("timeout", d.timeout),
    )


def _read_config(out: _Collector, data: Mapping[str, Any]) -> Config:
    top = _Table(out, "", data)
    top.reject_unknown(_TOP_KEYS)
    node = top.string("node", pattern=_NAME_RE)
    cluster = _read_cluster(top)
    members = _read_members(top)
    if top.ok("node") and members and all(m.name for m in members):
        names = [m.name for m in members]
        if node not in names:
            top.problem("node", f"node {node!r} is not in members: {', '.join(names)}")
    vip = _read_vip(top)
    for i, member in enumerate(members):
        if vip is not None and vip.address is not _NO_VIP and member.address == str(vip.address.ip):
            top.out.add("vip.address", f"the VIP {member.address} is also members[{i}].address")
    postgres = _read_postgres(top)
    timings = _read_timings(top)
    failover = _read_failover(top)
    if postgres is not None and failover.max_replication_silence <= timings.session_timeout:
        # After a crash the replica hears nothing for at least T before the lease expires.
        top.out.add(
            "failover.max_replication_silence",
            f"{_num(failover.max_replication_silence)} s is not above timings.session_timeout "
            f"{_num(timings.session_timeout)} s: after a crash of the active the replica would "
            "never be eligible, since its WAL stops at least a session timeout before the lease "
            "expires",
        )
    return Config(
        path=out.path,
        node=node,
        cluster=cluster,
        members=members,
        vip=vip,
        fencing=_read_fencing(top),
        timings=timings,
        failover=failover,
        postgres=postgres,
        checks=_read_checks(top, postgres),
        metrics=_read_metrics(top),
        hooks=_read_hooks(top),
        replication=_read_replication(top, postgres),
        failsafe=_read_failsafe(top, timings),
    )


# --------------------------------------------------------------------------------------------
# Public entry points

_TOML_WHERE_RE: Final = re.compile(r"(?s)(.*) \((at [^()]*)\)")


def parse_config(text: str, path: Path) -> Config:
    """Parse and validate config text; `path` names the file in messages."""
    out = _Collector(Path(path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_WHERE_RE.fullmatch(str(exc))
        if match:
            out.add("", f"TOML syntax error {match.group(2)}: {match.group(1)}")
        else:
            out.add("", f"TOML syntax error: {exc}")
        raise ConfigError(out.problems) from None
    config = _read_config(out, data)
    if out.problems:
        raise ConfigError(out.problems)
    return config


def load_config(path: str | Path) -> Config:
    """Load and validate a config file; ConfigError lists every problem at once."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            [Problem(path, "", f"cannot read config file: {exc.strerror or exc}")]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [Problem(path, "", f"config file is not valid UTF-8 (line {line})")]
        ) from None
    return parse_config(text, path)


# --------------------------------------------------------------------------------------------
# Effective configuration as TOML (for `failoverd check-config` and support tickets)

_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_TOML_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    chars: list[str] = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            chars.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            chars.append(f"\\u{ord(ch):04X}")
        else:
            chars.append(ch)
    return '"' + "".join(chars) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Path | ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return _toml_string(str(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_table(lines: list[str], header: str, obj: object, keys: Iterable[str]) -> None:
    lines += ["", header]
    for key in keys:
        value = getattr(obj, key)
        if value is not None:  # TOML has no null: an absent key means None
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")


def effective_config_toml(cfg: Config) -> str:
    """The configuration with every default filled in, as TOML that load_config accepts.

    Secrets are not included: the credentials stay in their file.
    """
    origin = str(cfg.path).replace("\n", " ")
    lines = [
        f"# Effective failoverd configuration from {origin} (defaults filled in).",
        "",
        f"node = {_toml_value(cfg.node)}",
    ]
    _toml_table(lines, "[cluster]", cfg.cluster, _CLUSTER_KEYS)
    for member in cfg.members:
        _toml_table(lines, "[[members]]", member, _MEMBER_KEYS)
    if cfg.vip is not None:
        _toml_table(lines, "[vip]", cfg.vip, _VIP_KEYS)
    _toml_table(lines, "[fencing]", cfg.fencing, _FENCING_KEYS)
    _toml_table(lines, "[timings]", cfg.timings, _TIMINGS_KEYS)
    _toml_table(lines, "[failover]", cfg.failover, _FAILOVER_KEYS)
    if cfg.postgres is not None:
        _toml_table(lines, "[postgres]", cfg.postgres, _POSTGRES_KEYS)
        _toml_table(lines, "[replication]", cfg.replication, _REPLICATION_KEYS)
    for check in cfg.checks:
        header = f"[checks.{_toml_key(check.name)}]"
        _toml_table(lines, header, check, _check_keys(check.type))
    _toml_table(lines, "[metrics]", cfg.metrics, _METRICS_KEYS)
    _toml_table(lines, "[hooks]", cfg.hooks, _HOOKS_KEYS)
    _toml_table(lines, "[failsafe]", cfg.failsafe, _FAILSAFE_KEYS)
    return "\n".join(lines) + "\n"

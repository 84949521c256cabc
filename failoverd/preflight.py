"""Node-side checks of what the configuration names: files, modes, binaries, the VIP's network.

Why: the fence, a clone and the VIP are first used in an outage. A missing key, a known_hosts
without the peer or a VIP outside its interface's network then turns a failover into "reached it
but failed" at the worst moment. `failoverd check-config` runs these on the node (unless
``--offline``), and `failoverd fence-self` runs ``fence_readiness`` for the peer's dry run.

The judgements are pure functions of what was read (a mode, a list of addresses), tested without
files; ``preflight`` and ``fence_readiness`` read the system and collect every finding at once.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import paramiko

from failoverd.config import Config, FencingConfig, Member, PostgresConfig, VipConfig

__all__ = [
    "PG_PROGRAMS",
    "Finding",
    "fence_readiness",
    "known_hosts_name",
    "preflight",
    "unprotected",
    "vip_network_problem",
]

Level = Literal["error", "warning", "info"]
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# What the daemon runs from postgres.bin_dir: start/stop/promote, the server pg_ctl starts, a
# rewind and its WAL inspection, a clone, and the control file read.
PG_PROGRAMS: Final = (
    "pg_ctl",
    "postgres",
    "pg_rewind",
    "pg_waldump",
    "pg_basebackup",
    "pg_controldata",
)
_GROUP_OR_OTHERS: Final = 0o077
_DATA_DIR_MODES: Final = (0o700, 0o750)  # what PostgreSQL itself accepts (initdb -g: 0750)
# Capability bits (linux/capability.h) fence-self needs: the VIP, and pg_ctl as postgres.
_CAP_KILL: Final = 5
_CAP_SETGID: Final = 6
_CAP_SETUID: Final = 7
_CAP_NET_ADMIN: Final = 12


@dataclass(frozen=True)
class Finding:
    """One thing found; errors make check-config exit 78, warnings are said and let pass."""

    level: Level
    key: str  # the configuration key it concerns
    text: str


# -- pure judgements --------------------------------------------------------------------------


def unprotected(path: Path, mode: int) -> str | None:
    """OpenSSH's rule for private keys, for every secret: nobody but the owner may read or write
    it. The text shows the mode and the chmod that fixes it."""
    if not mode & _GROUP_OR_OTHERS:
        return None
    return (
        f"UNPROTECTED: {path} has mode {stat.S_IMODE(mode):04o}, open to group or others "
        f"(OpenSSH refuses such a key): chmod 600 {path}"
    )


def known_hosts_name(host: str, port: int) -> str:
    """How ssh and paramiko name a host in known_hosts: ``[host]:port`` unless the port is 22."""
    return host if port == 22 else f"[{host}]:{port}"


def vip_network_problem(vip: VipConfig, addresses: Sequence[IPInterface]) -> str | None:
    """The VIP's network must be a network of its interface (one of its own addresses, not the
    VIP itself, with the same prefix): otherwise neighbours cannot reach it, or it shadows a
    different subnet."""
    own = [a for a in addresses if a.ip != vip.address.ip and a.version == vip.address.version]
    if any(a.network == vip.address.network for a in own):
        return None
    have = ", ".join(str(a) for a in own) or "no address of its family"
    containing = [a for a in own if vip.address.ip in a.network]
    if containing:
        a = containing[0]
        return (
            f"{vip.address} has prefix /{vip.address.network.prefixlen}, but {vip.interface}'s "
            f"network is {a.network} ({a}): write {vip.address.ip}/{a.network.prefixlen}"
        )
    return f"{vip.address} is outside every network of {vip.interface} (it has {have})"


def data_dir_problem(mode: int, owner: str, service_user: str) -> str | None:
    """PostgreSQL refuses to start on a data directory that is not its own, or is open."""
    why = []
    if owner != service_user:
        why.append(f"owned by {owner}, not by postgres.service_user {service_user!r}")
    if stat.S_IMODE(mode) not in _DATA_DIR_MODES:
        why.append(f"mode {stat.S_IMODE(mode):04o}, not 0700 or 0750")
    return "; ".join(why) or None


def missing_capabilities(effective: int, need: Iterable[tuple[int, str]]) -> list[str]:
    """Names of the capabilities in ``need`` that the effective set lacks."""
    return [name for bit, name in need if not effective >> bit & 1]


# -- reading the node ------------------------------------------------------------------------


def preflight(cfg: Config) -> list[Finding]:
    """Every finding about the files and interface that ``cfg`` names, on this node."""
    found: list[Finding] = []
    found += _identity_file(cfg.fencing)
    found += _known_hosts(cfg.fencing, cfg.peer)
    secrets = [
        ("cluster.credentials_file", cfg.cluster.credentials_file),
        ("failsafe.secret_file", cfg.failsafe.secret_file),
    ]
    if cfg.postgres is not None:
        secrets.append(("postgres.password_file", cfg.postgres.password_file))
    for key, path in secrets:
        if path is not None:
            found += _secret_mode(key, path)
    if cfg.postgres is not None:
        found += _postgres(cfg.postgres, cfg.node)
    if cfg.vip is not None:
        found += _vip(cfg.vip, cfg.self_member)
    return found


def _secret_mode(key: str, path: Path) -> list[Finding]:
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return [Finding("error", key, f"cannot read {path}: {e.strerror or e}")]
    problem = unprotected(path, mode)
    return [Finding("error", key, problem)] if problem else []


def _identity_file(fencing: FencingConfig) -> list[Finding]:
    key, path = "fencing.identity_file", fencing.identity_file
    found = _secret_mode(key, path)
    if found and "cannot read" in found[0].text:
        return found
    try:
        paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, TypeError):  # TypeError: from cryptography
        found.append(
            Finding("error", key, f"{path} is encrypted: the fence cannot type a passphrase")
        )
    except (paramiko.SSHException, OSError, ValueError) as e:
        found.append(Finding("error", key, f"{path} is not a usable SSH private key: {e}"))
    return found


def _known_hosts(fencing: FencingConfig, peer: Member) -> list[Finding]:
    key, path = "fencing.known_hosts", fencing.known_hosts
    name = known_hosts_name(peer.address, peer.ssh_port)
    try:
        keys = paramiko.HostKeys(str(path))
    except OSError as e:
        return [Finding("error", key, f"cannot read {path}: {e.strerror or e}")]
    except paramiko.SSHException as e:
        return [Finding("error", key, f"{path} is not a known_hosts file: {e}")]
    if keys.lookup(name) is None:
        return [
            Finding(
                "error",
                key,
                f"{path} holds no host key for the peer {peer.name} ({name}): the fence would "
                f"refuse it. Add it from a trusted source, e.g. "
                f"ssh-keyscan -p {peer.ssh_port} {peer.address} >> {path}, and compare the "
                "fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the peer",
            )
        ]
    return []


def _postgres(pg: PostgresConfig, node: str) -> list[Finding]:
    found: list[Finding] = []
    missing = [name for name in PG_PROGRAMS if not os.access(pg.bin_dir / name, os.X_OK)]
    if missing:
        found.append(
            Finding(
                "error",
                "postgres.bin_dir",
                f"not executable or missing in {pg.bin_dir}: {', '.join(missing)} "
                "(is the PostgreSQL server package of this version installed?)",
            )
        )
    if pg.config_file is not None and not pg.config_file.is_file():
        found.append(Finding("error", "postgres.config_file", f"{pg.config_file} is not a file"))
    if pg.data_dir is not None:
        found += _data_dir(pg, pg.data_dir, node)
    return found


def _data_dir(pg: PostgresConfig, data_dir: Path, node: str) -> list[Finding]:
    key = "postgres.data_dir"
    if not data_dir.parent.is_dir():
        return [Finding("error", key, f"{data_dir.parent} does not exist: a clone needs it")]
    try:
        st = data_dir.stat()
        empty = data_dir.is_dir() and not any(data_dir.iterdir())
    except FileNotFoundError:
        st, empty = None, True
    except OSError as e:
        return [Finding("error", key, f"cannot read {data_dir}: {e.strerror or e}")]
    if empty:
        how = (
            "the daemon clones it from the active (pg_basebackup) when this node joins as passive"
            if pg.rejoin == "auto"
            else f"clone it with `failoverctl rejoin {node} --reclone` once the active runs"
        )
        state = "is empty" if st is not None else "does not exist yet"
        return [Finding("warning", key, f"{data_dir} {state}: {how}")]
    assert st is not None
    if not stat.S_ISDIR(st.st_mode):
        return [Finding("error", key, f"{data_dir} is not a directory")]
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    problem = data_dir_problem(st.st_mode, owner, pg.service_user)
    return [Finding("error", key, f"{data_dir}: {problem}")] if problem else []


def _vip(vip: VipConfig, me: Member) -> list[Finding]:
    """The VIP inside a network of its interface, judged only on the node itself (a host that
    has the member's address): elsewhere, a workstation checking the file, the interface of
    that name is another one."""
    from failoverd.actions.vip import (  # noqa: PLC0415 (netlink)
        VipError,
        interface_addresses,
        is_local,
    )

    try:
        on_node = is_local(me.address)
    except VipError as e:
        return [Finding("warning", "vip.interface", f"not checked: {e}")]
    if not on_node:
        return [
            Finding(
                "info",
                "vip.interface",
                f"not checked: this host does not have {me.name}'s address {me.address} "
                "(run check-config on the node to check the interface and the VIP's network)",
            )
        ]
    try:
        addresses = interface_addresses(vip.interface)
    except VipError as e:
        return [Finding("error", "vip.interface", f"{e} on this host")]
    problem = vip_network_problem(vip, addresses)
    return [Finding("error", "vip.address", problem)] if problem else []


# -- could this node fence itself? (the peer's dry run) --------------------------------------


def effective_capabilities() -> int:
    """This process's effective capability set (CapEff in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise OSError("no CapEff line in /proc/self/status")


def fence_readiness(cfg: Config) -> list[str]:
    """Why ``failoverd fence-self`` could not do its work here, read-only; empty when it could:
    the privileges, the VIP's interface, pg_ctl and the data directory."""
    problems: list[str] = []
    need: list[tuple[int, str]] = []
    if cfg.vip is not None:
        need.append((_CAP_NET_ADMIN, "CAP_NET_ADMIN (remove the VIP)"))
    if cfg.postgres is not None:
        need += [(_CAP_KILL, "CAP_KILL (stop a hung postmaster)")]
        if pwd.getpwuid(os.geteuid()).pw_name != cfg.postgres.service_user:
            need += [(_CAP_SETUID, "CAP_SETUID"), (_CAP_SETGID, "CAP_SETGID")]
    try:
        lacking = missing_capabilities(effective_capabilities(), need)
    except (OSError, ValueError) as e:
        problems.append(f"cannot read this process's capabilities: {e}")
    else:
        if lacking:
            problems.append(f"runs as uid {os.geteuid()} without {', '.join(lacking)}")
    if cfg.vip is not None:
        from failoverd.actions.vip import VipError, interface_addresses  # noqa: PLC0415

        try:
            interface_addresses(cfg.vip.interface)
        except VipError as e:
            problems.append(f"vip.interface: {e}")
    if cfg.postgres is not None:
        pg_ctl = cfg.postgres.bin_dir / "pg_ctl"
        if not os.access(pg_ctl, os.X_OK):
            problems.append(f"postgres.bin_dir: {pg_ctl} is not executable")
        data_dir = cfg.postgres.data_dir
        if data_dir is not None and not data_dir.is_dir():
            problems.append(f"postgres.data_dir: {data_dir} is not a directory")
    return problems

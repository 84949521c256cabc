"""What the systemd lab writes into a node's container (lab/containers.py): the lab's Squid,
the demo app's unit, and failoverd's configuration with an installed node's paths."""

from __future__ import annotations

import re
from typing import Final

from lab.cluster import (
    ADDRESSES,
    APP_PORT,
    CHROOT,
    CLUSTER,
    METRICS_PORT,
    NODES,
    PG_DB,
    PG_PORT,
    REPO,
    SQUID_PORT,
    VIP,
    ZK_HOSTS,
)
from lab.profiles import PROFILES
from lab.rootfs import ContainerError

SRC_IN_CONTAINER: Final = "/opt/failoverd-src"  # this checkout, read-only


def squid_conf(node: str) -> str:
    """The lab's Squid (lab/templates/squid.conf) as Debian's squid.service runs it."""
    text = (REPO / "lab" / "templates" / "squid.conf").read_text()
    values = {
        "NODE": node,
        "SQUID_PORT": str(SQUID_PORT),
        "APP_HOST": "127.0.0.1",
        "APP_PORT": str(APP_PORT),
        "SQUID_DIR": "/var/log/squid",
    }
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z][A-Z0-9_]*@", text)
    if left:
        raise ContainerError(f"squid.conf template: no value for {', '.join(left)}")
    text = text.replace("pid_filename none", "pid_filename /run/squid.pid")
    text = text.replace("coredump_dir /var/log/squid", "coredump_dir /var/spool/squid")
    # No DNS wait at start (COMPONENTS.md); a quick poweroff.
    return text + f"visible_hostname {node}\n"


def app_unit(node: str) -> str:
    return f"""\
# The lab's demo app (lab/donations) on {node}, from the checkout mounted at {SRC_IN_CONTAINER},
# with the interpreter of failoverd's virtual environment (it has psycopg). Written by
# lab/containers.py.
[Unit]
Description=donations demo app (failoverd lab)
After=network.target

[Service]
User=postgres
Environment=PYTHONPATH={SRC_IN_CONTAINER} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
ExecStart=/opt/failoverd/bin/python -m lab.donations --host 127.0.0.1 --port {APP_PORT} \
  --dsn "host=/var/run/postgresql user=postgres dbname={PG_DB}" --node {node} \
  --fault-file /var/lib/postgresql/app.fault
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


def failoverd_toml(node: str) -> str:
    """The lab's template (lab/templates/failoverd.toml) with a container node's paths."""
    peer = next(n for n in NODES if n != node)
    text = (REPO / "lab" / "templates" / "failoverd.toml").read_text()
    hosts = ", ".join(f'"{h}"' for h in ZK_HOSTS.split(","))
    values = {
        "NODE": node,
        "PEER": peer,
        "ADDR": ADDRESSES[node],
        "PEER_ADDR": ADDRESSES[peer],
        "CLUSTER": CLUSTER,
        "CHROOT": CHROOT,
        "ZK_HOSTS_TOML": hosts,
        "SSH_PORT": "22",
        "PG_PORT": str(PG_PORT),
        "VIP": VIP,
        "VIP_IFACE": "eth0",
        "SSH_DIR": "/etc/failoverd",
        "REPLICATION_MODE": "sync",
        "FAILSAFE": "true",
        "LAB_DIR": "/run/failoverd",
        "PG_DB": PG_DB,
        "PG_DATA": "/var/lib/postgresql/15/main",
        "PG_BIN": "/usr/lib/postgresql/15/bin",
        "APP_PORT": str(APP_PORT),
        "SQUID_PORT": str(SQUID_PORT),
        "METRICS_ENABLED": "true",
        "METRICS_PORT": str(METRICS_PORT),
        **PROFILES["default"],  # the systemd lab runs the default timings
    }
    lines = []
    for line in text.splitlines():
        # No power switch in a container: the lab's is a host command.
        if line.startswith(("power_command", "power_timeout")):
            continue
        lines.append(line)
    text = "\n".join(lines) + "\n"
    text = text.replace('"@LAB_ROOT@/failsafe.key"', '"/etc/failoverd/failsafe.key"')
    text = text.replace('store_dir = "@LAB_DIR@/failsafe"', 'store_dir = "/run/failoverd"')
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    text = text.replace(
        'data_dir = "/var/lib/postgresql/15/main"',
        'data_dir = "/var/lib/postgresql/15/main"\n'
        'config_file = "/etc/postgresql/15/main/postgresql.conf"\n'
        'password_file = "/etc/failoverd/postgres.password"',
    )
    left = re.findall(r"@[A-Z][A-Z0-9_]*@", text)
    if left:
        raise ContainerError(
            f"failoverd.toml template: no value for {', '.join(sorted(set(left)))}"
        )
    header = (
        f"# Written by lab/containers.py for {node} (systemd lab): lab/templates/failoverd.toml"
    )
    return header + " with the paths of an installed node.\n" + text

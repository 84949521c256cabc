"""A real OpenSSH server for fencing tests and the lab.

Why a real sshd: fencing depends on what the real server does (host keys, key-only root login, a
forced command in authorized_keys, refusing a wrong key, closing the channel when the command
exits), which a fake would only imitate. Each server keeps everything under ``base_dir`` (host
key, a client key pair, authorized_keys, known_hosts, config, pid file, log), listens on one
loopback (or lab) address on a free port and is stopped by PID.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from lab.process import ServerProcess
from lab.zookeeper import free_port

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it (Debian's privsep path)
RESTRICTIONS = "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding"


class SshError(RuntimeError):
    """The server could not be set up, started or stopped; the message says why."""


def keygen(path: Path, comment: str = "failoverd-lab") -> Path:
    """An ed25519 key pair without a passphrase at ``path`` (and ``path.pub``); kept if there."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise SshError(f"ssh-keygen for {path} failed: {e}") from e
    return path


def known_hosts_name(host: str, port: int) -> str:
    """How ssh (and paramiko's HostKeys) name a host: ``[host]:port`` unless the port is 22."""
    return host if port == 22 else f"[{host}]:{port}"


def public_key(path: Path) -> str:
    """``type base64`` of a key pair's public half (the comment dropped)."""
    kind, blob, *_ = Path(f"{path}.pub").read_text().split()
    return f"{kind} {blob}"


def stand_in_fencing(base: Path, hosts: list[str]) -> tuple[Path, Path]:
    """(identity file, known_hosts) that pass check-config's file checks for peers at ``hosts``
    (port 22) where no sshd of the test runs: a real key pair, and a generated host key
    standing in for each peer's. A fence through them reaches nothing it trusts."""
    identity = keygen(base / "stand-in-fencing" / "id_ed25519", "failoverd-test-client")
    host_key = keygen(base / "stand-in-fencing" / "host_ed25519_key", "failoverd-test-host")
    known = base / "stand-in-fencing" / "known_hosts"
    lines = known.read_text().splitlines() if known.exists() else []
    lines += [f"{known_hosts_name(h, 22)} {public_key(host_key)}" for h in hosts]
    known.write_text("".join(f"{line}\n" for line in dict.fromkeys(lines)))
    return identity, known


class SshServer(ServerProcess):
    """One ``sshd -D`` on ``host:port``, accepting only ``client_key`` (for root, key only).

    With ``forced_command`` every login runs that command instead of the one asked for (the
    requested one is in ``$SSH_ORIGINAL_COMMAND``), as the lab's fencing keys do. ``stop`` ends
    the listener only: sessions already open live on in their own processes until their clients
    go (as with any sshd).
    """

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        forced_command: str | None = None,
    ) -> None:
        if forced_command is not None and "\n" in forced_command:
            raise SshError("forced_command must be one line")
        self.base_dir = Path(base_dir).absolute()
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.forced_command = forced_command
        self.host_key = self.base_dir / "ssh_host_ed25519_key"
        self.client_key = self.base_dir / "id_ed25519"
        self.authorized_keys = self.base_dir / "authorized_keys"
        self.known_hosts = self.base_dir / "known_hosts"
        self.config_path = self.base_dir / "sshd_config"
        self.pid_path = self.base_dir / "sshd.pid"
        self.log_path = self.base_dir / "sshd.log"

    # -- properties -------------------------------------------------------------------------

    def known_hosts_line(self) -> str:
        """This server's entry in a known_hosts file."""
        return f"{known_hosts_name(self.host, self.port)} {public_key(self.host_key)}\n"

    # -- set-up -----------------------------------------------------------------------------

    def setup(self) -> None:
        """Keys, authorized_keys, known_hosts and sshd_config; idempotent (keys are kept)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        keygen(self.host_key, "failoverd-lab-host")
        keygen(self.client_key, "failoverd-lab-client")
        options = ""
        if self.forced_command is not None:
            escaped = self.forced_command.replace("\\", "\\\\").replace('"', '\\"')
            options = f'command="{escaped}",{RESTRICTIONS} '
        self.authorized_keys.write_text(f"{options}{public_key(self.client_key)}\n")
        self.known_hosts.write_text(self.known_hosts_line())
        settings = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_path}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",  # the files live in a temp dir, not ~/.ssh
            "UseDNS no",
            "SetEnv SHLVL=1",  # no ~/.bashrc for the command (lab/templates/sshd_config)
            "PrintMotd no",
            "PermitTTY no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "LoginGraceTime 10",
            "LogLevel VERBOSE",
        ]
        self.config_path.write_text("\n".join(settings) + "\n")

    # -- life cycle -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start ``sshd -D -e`` and wait until the port answers with an SSH banner."""
        if self.running:
            return
        self.setup()
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        cmd = [SSHD, "-D", "-e", "-f", str(self.config_path)]
        self._spawn(cmd, self.log_path, self.base_dir)

        def probe() -> str | None:
            banner = self.banner(timeout=0.5)
            return None if banner.startswith("SSH-") else f"unexpected banner {banner!r}"

        self._wait_ready(probe, timeout, SshError, "sshd")

    # -- helpers ----------------------------------------------------------------------------

    def banner(self, timeout: float = 2.0) -> str:
        """The first line the server sends (``SSH-2.0-OpenSSH_...``)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            data = b""
            deadline = time.monotonic() + timeout
            for _ in range(100):  # bounded: a banner is one short line
                if b"\n" in data or time.monotonic() > deadline:
                    break
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
        return data.split(b"\n", 1)[0].decode("ascii", "replace").strip()

    def __repr__(self) -> str:
        return f"SshServer({self.host}:{self.port}, pid={self.pid}, dir={self.base_dir})"
